"""LiteLLM's proxy as a benchmark peer (bench/litellm_peer.py).

The config, environment and strace-log checks need nothing installed. The rest run the real
proxy (one worker, loopback) from `bench/.litellm-venv` against the session's Bedrock simulator
(which verifies SigV4 with its demo key) and a small OpenAI-format upstream defined here; they
are slow and skip when LiteLLM is not installed, so the normal suite never installs it. Install
it with: `.venv/bin/python -c 'from bench.litellm_peer import *; ensure_litellm(DEFAULT_VENV)'`.
"""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import time
import urllib.request
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import pytest
import yaml
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route as StarletteRoute

from bench.litellm_peer import (
    BEDROCK_MODEL_ID,
    DEFAULT_VENV,
    MODEL_NAME,
    Route,
    child_env,
    litellm_config,
    litellm_env,
    non_loopback_connects,
    start_litellm,
    stop,
    wait_ready,
)
from hybridroute.serving import ThreadedServer
from tests.loopback import Simulator

LITELLM = DEFAULT_VENV / "bin" / "litellm"
ROUTES: tuple[Route, ...] = ("bedrock", "openai")

needs_litellm = pytest.mark.skipif(
    not LITELLM.is_file(),
    reason=f"LiteLLM is not installed in {DEFAULT_VENV} (bench.litellm_peer.ensure_litellm)",
)
_Test = TypeVar("_Test", bound=Callable[..., object])


def slow_proxy(test: _Test) -> _Test:
    """Marks a test that runs the real proxy: slow, skipped without LiteLLM, a generous timeout."""
    for mark in (pytest.mark.slow, needs_litellm, pytest.mark.timeout(300)):
        test = mark(test)
    return test


# --- Needs nothing installed ---------------------------------------------------------------------


def _model(config_text: str) -> dict[str, Any]:
    config = yaml.safe_load(config_text)
    assert isinstance(config, dict)
    models = config["model_list"]
    assert len(models) == 1
    assert models[0]["model_name"] == MODEL_NAME == "bench"
    return config


def test_config_forwards_bench_over_bedrock_converse() -> None:
    config = _model(litellm_config("http://127.0.0.1:9101/", route="bedrock"))
    params = config["model_list"][0]["litellm_params"]
    assert params["model"] == f"bedrock/converse/{BEDROCK_MODEL_ID}"
    assert params["aws_bedrock_runtime_endpoint"] == "http://127.0.0.1:9101"
    assert params["aws_region_name"] == "eu-central-1"
    assert params["aws_access_key_id"]
    assert params["aws_secret_access_key"]


def test_config_forwards_bench_over_openai() -> None:
    config = _model(litellm_config("http://127.0.0.1:9300", route="openai"))
    params = config["model_list"][0]["litellm_params"]
    assert params == {
        "model": "openai/bench-model",
        "api_base": "http://127.0.0.1:9300/v1",
        "api_key": params["api_key"],
    }


@pytest.mark.parametrize("route", ROUTES)
def test_config_is_lean(route: Route) -> None:
    config = _model(litellm_config("http://127.0.0.1:1", route=route))
    general, settings = config["general_settings"], config["litellm_settings"]
    assert "master_key" not in general
    assert "database_url" not in general
    assert general["dangerously_permit_weak_or_unset_master_key"] is True
    assert general["disable_spend_logs"] is True
    assert settings["set_verbose"] is False
    assert settings["callbacks"] == settings["success_callback"] == settings["failure_callback"]
    assert settings["callbacks"] == []


def test_config_rejects_an_unknown_route() -> None:
    with pytest.raises(ValueError, match="unknown route"):
        litellm_config("http://127.0.0.1:1", route="grpc")  # type: ignore[arg-type]


def test_environment_keeps_the_proxy_offline() -> None:
    env = litellm_env()
    assert env["LITELLM_LOCAL_MODEL_COST_MAP"] == "True"
    assert env["LITELLM_OFFLINE_MODE"] == "true"
    assert env["LITELLM_TELEMETRY_DISABLED"] == "true"
    assert env["AWS_EC2_METADATA_DISABLED"] == "true"


def test_child_environment_inherits_only_basics() -> None:
    ambient = {
        "PATH": "/usr/bin",
        "HOME": "/root",
        "DATABASE_URL": "postgresql://db/litellm",
        "LITELLM_MASTER_KEY": "sk-ambient",
        "HTTPS_PROXY": "http://10.0.0.1:3128",
        "AWS_PROFILE": "prod",
    }
    env = child_env(ambient)
    assert env["PATH"] == "/usr/bin"
    assert env["HOME"] == "/root"
    for name in ("DATABASE_URL", "LITELLM_MASTER_KEY", "HTTPS_PROXY", "AWS_PROFILE"):
        assert name not in env
    assert env.items() >= litellm_env().items()


def test_strace_log_check_flags_only_non_loopback_connects() -> None:
    def ipv4(fd: int, port: int, address: str) -> str:
        return (
            f"7 connect({fd}, {{sa_family=AF_INET, sin_port=htons({port}), "
            f'sin_addr=inet_addr("{address}")}}, 16) = -1 EINPROGRESS'
        )

    log = "\n".join(
        [
            ipv4(14, 9101, "127.0.0.1"),
            '7 connect(5, {sa_family=AF_UNIX, sun_path="/var/run/nscd/socket"}, 110) = -1 ENOENT',
            "7 connect(6, {sa_family=AF_INET6, sin6_port=htons(80), sin6_flowinfo=htonl(0), "
            'inet_pton(AF_INET6, "::1", &sin6_addr), sin6_scope_id=0}, 28) = 0',
            ipv4(9, 443, "185.199.108.133"),
            ipv4(3, 53, "10.0.0.2"),
            "7 +++ exited with 0 +++",
        ]
    )
    offending = non_loopback_connects(log)
    assert len(offending) == 2
    assert "185.199.108.133" in offending[0]
    assert "10.0.0.2" in offending[1]


# --- Runs the real proxy --------------------------------------------------------------------------


@dataclass
class OpenAIUpstream:
    """An OpenAI chat-completions upstream that records what reached it."""

    url: str = ""
    received: list[tuple[dict[str, str], dict[str, Any]]] = field(default_factory=list)


ANSWER = ["Hello ", "from the ", "OpenAI upstream"]


def _openai_app(upstream: OpenAIUpstream) -> Starlette:
    async def chat(request: Request) -> Response:
        body = await request.json()
        upstream.received.append((dict(request.headers), body))
        created = int(time.time())
        if not body.get("stream"):
            return JSONResponse(
                {
                    "id": "chatcmpl-upstream",
                    "object": "chat.completion",
                    "created": created,
                    "model": body["model"],
                    "choices": [
                        {
                            "index": 0,
                            "message": {"role": "assistant", "content": "".join(ANSWER)},
                            "finish_reason": "stop",
                        }
                    ],
                    "usage": {"prompt_tokens": 5, "completion_tokens": 4, "total_tokens": 9},
                }
            )

        async def events() -> AsyncIterator[bytes]:
            deltas: list[dict[str, str]] = [{"role": "assistant", "content": ANSWER[0]}]
            deltas += [{"content": piece} for piece in ANSWER[1:]]
            for index, delta in enumerate([*deltas, {}]):
                chunk = {
                    "id": "chatcmpl-upstream",
                    "object": "chat.completion.chunk",
                    "created": created,
                    "model": body["model"],
                    "choices": [
                        {
                            "index": 0,
                            "delta": delta,
                            "finish_reason": "stop" if index == len(deltas) else None,
                        }
                    ],
                }
                yield b"data: " + json.dumps(chunk).encode() + b"\n\n"
            yield b"data: [DONE]\n\n"

        return StreamingResponse(events(), media_type="text/event-stream")

    return Starlette(routes=[StarletteRoute("/v1/chat/completions", chat, methods=["POST"])])


@pytest.fixture(scope="module")
def openai_upstream() -> Iterator[OpenAIUpstream]:
    upstream = OpenAIUpstream()
    with ThreadedServer(_openai_app(upstream), name="openai-upstream") as server:
        upstream.url = server.url
        yield upstream


@dataclass
class RunningProxy:
    route: Route
    port: int
    ready_s: float
    process: subprocess.Popen[bytes]
    log: Path


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _tail(path: Path, lines: int = 30) -> str:
    text = path.read_text(errors="replace") if path.exists() else "(no log)"
    return "\n".join(text.splitlines()[-lines:])


def _launch(
    directory: Path, route: Route, upstream_url: str, prefix: list[str] | None = None
) -> RunningProxy:
    config = directory / f"litellm-{route}.yaml"
    config.write_text(litellm_config(upstream_url, route=route))
    port = _free_port()
    started = time.monotonic()
    process = start_litellm(LITELLM, config, port, prefix=prefix or ())
    log = config.with_suffix(".log")
    try:
        ready_s = wait_ready(port, 240, process=process, since=started)
    except (RuntimeError, TimeoutError) as exc:
        stop(process)
        raise AssertionError(f"litellm did not start: {exc}\n{_tail(log)}") from exc
    return RunningProxy(route, port, ready_s, process, log)


@pytest.fixture(scope="module", params=ROUTES)
def proxy(
    request: pytest.FixtureRequest,
    tmp_path_factory: pytest.TempPathFactory,
    bedrock_sim: Simulator,
    openai_upstream: OpenAIUpstream,
) -> Iterator[RunningProxy]:
    route: Route = request.param
    upstream_url = bedrock_sim.url if route == "bedrock" else openai_upstream.url
    running = _launch(tmp_path_factory.mktemp(f"litellm-{route}"), route, upstream_url)
    yield running
    stop(running.process)


def _chat(port: int, *, stream: bool) -> tuple[int, str, bytes]:
    body = {
        "model": "bench",
        "stream": stream,
        "max_tokens": 64,
        "messages": [
            {"role": "system", "content": "Answer briefly."},
            {"role": "user", "content": "Is the primary database healthy?"},
        ],
    }
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}/v1/chat/completions",
        data=json.dumps(body).encode(),
        headers={"content-type": "application/json"},
        method="POST",
    )
    with urllib.request.urlopen(request, timeout=60) as response:
        return response.status, response.headers.get("content-type", ""), response.read()


def _streamed_text(raw: bytes) -> str:
    events = [line[len(b"data: ") :] for line in raw.splitlines() if line.startswith(b"data: ")]
    assert events, raw
    assert events[-1] == b"[DONE]"
    text = ""
    for event in events[:-1]:
        chunk = json.loads(event)
        assert chunk["object"] == "chat.completion.chunk"
        assert chunk["model"] == "bench"
        for choice in chunk["choices"]:
            text += choice["delta"].get("content") or ""
    return text


@slow_proxy
def test_proxy_becomes_ready(proxy: RunningProxy) -> None:
    assert 0 < proxy.ready_s < 240
    assert proxy.process.poll() is None, _tail(proxy.log)


@slow_proxy
def test_json_request(
    proxy: RunningProxy, bedrock_sim: Simulator, openai_upstream: OpenAIUpstream
) -> None:
    openai_upstream.received.clear()
    status, content_type, raw = _chat(proxy.port, stream=False)
    assert status == 200, raw
    assert content_type.startswith("application/json")
    answer = json.loads(raw)
    assert answer["object"] == "chat.completion"
    assert answer["model"] == "bench"
    text = answer["choices"][0]["message"]["content"]
    if proxy.route == "bedrock":
        # The simulator refuses anything not SigV4-signed with its demo key, and reads the
        # region back from the signature's credential scope.
        assert "eu-central-1" in text
        (record,) = bedrock_sim.stats.recent
        assert record["operation"] == "converse"
        assert record["model_id"] == BEDROCK_MODEL_ID
        assert record["region"] == "eu-central-1"
        assert record["outcome"] == "ok"
    else:
        assert text == "".join(ANSWER)
        ((headers, body),) = openai_upstream.received
        assert body["model"] == "bench-model"
        assert headers["authorization"] == "Bearer sk-bench-dummy"


@slow_proxy
def test_streamed_request(
    proxy: RunningProxy, bedrock_sim: Simulator, openai_upstream: OpenAIUpstream
) -> None:
    openai_upstream.received.clear()
    status, content_type, raw = _chat(proxy.port, stream=True)
    assert status == 200, raw
    assert content_type.startswith("text/event-stream")
    text = _streamed_text(raw)
    if proxy.route == "bedrock":
        assert "eu-central-1" in text
        (record,) = bedrock_sim.stats.recent
        assert record["operation"] == "converse-stream"
        assert record["outcome"] == "ok"
    else:
        assert text == "".join(ANSWER)
        ((_, body),) = openai_upstream.received
        assert body["stream"] is True


def _strace_prefix(log: Path) -> list[str]:
    strace = shutil.which("strace")
    if strace is None:
        pytest.skip("strace is not installed (apt-get install strace)")
    probe = subprocess.run(
        [strace, "-f", "-e", "trace=connect", "-o", "/dev/null", "true"],
        capture_output=True,
        check=False,
    )
    if probe.returncode != 0:
        pytest.skip(f"strace cannot trace here: {probe.stderr.decode(errors='replace')}")
    return [strace, "-f", "--seccomp-bpf", "-e", "trace=connect", "-o", str(log)]


@slow_proxy
@pytest.mark.parametrize("route", ROUTES)
def test_proxy_contacts_only_loopback(
    route: Route,
    tmp_path: Path,
    bedrock_sim: Simulator,
    openai_upstream: OpenAIUpstream,
) -> None:
    """Every connect() the proxy makes, from startup through a JSON and a streamed request
    to shutdown, goes to a loopback address."""
    trace = tmp_path / "connect.strace"
    prefix = _strace_prefix(trace)
    upstream_url = bedrock_sim.url if route == "bedrock" else openai_upstream.url
    running = _launch(tmp_path, route, upstream_url, prefix)
    try:
        assert _chat(running.port, stream=False)[0] == 200
        assert _chat(running.port, stream=True)[0] == 200
    finally:
        stop(running.process)
    log = trace.read_text()
    upstream_port = upstream_url.rsplit(":", 1)[1]
    assert f"htons({upstream_port})" in log, "strace saw no connect() to the upstream"
    assert non_loopback_connects(log) == []
