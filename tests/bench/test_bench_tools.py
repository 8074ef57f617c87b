"""The benchmark tools against real peers: the upstream as a subprocess, stock SDK clients.

The upstream's answers must parse with the OpenAI SDK and botocore exactly as the real services'
do, and the load tools must report sensible figures (counts, errors, rates) against it.
"""

from __future__ import annotations

import asyncio
import contextlib
import http.client
import json
import math
import os
import re
import select
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import botocore.config
import botocore.session
import pytest
from openai import OpenAI

from bench import loadgen, payloads

ANSWER_TEXT = payloads.ANSWER_TEXT
OPERATION_HEADER = payloads.OPERATION_HEADER
openai_body = payloads.openai_body
split_answer = payloads.split_answer
REPO = Path(__file__).resolve().parents[2]
CHUNKS = 4
CHUNK_DELAY_MS = 5
MODEL_ID = "anthropic.claude-3-5-haiku-20241022-v1:0"


def _start_upstream(*args: str) -> tuple[subprocess.Popen[str], str]:
    process = subprocess.Popen(
        [sys.executable, "-m", "bench.upstream", "--port", "0", *args],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    assert process.stdout is not None
    ready, _, _ = select.select([process.stdout], [], [], 10.0)
    line = process.stdout.readline() if ready else ""
    if not line.startswith("ready "):
        process.kill()
        rest, _ = process.communicate(timeout=10)
        pytest.fail(f"upstream did not start: {line!r}{rest!r}")
    return process, f"http://127.0.0.1:{int(line.split()[1])}"


def _stop_upstream(process: subprocess.Popen[str]) -> None:
    process.terminate()
    try:
        output, _ = process.communicate(timeout=10)
    except subprocess.TimeoutExpired:
        process.kill()
        process.communicate(timeout=10)
        pytest.fail("upstream ignored SIGTERM")
    assert process.returncode == 0, output


@pytest.fixture(scope="module")
def upstream() -> Iterator[str]:
    """An upstream whose streams send CHUNKS content chunks CHUNK_DELAY_MS apart."""
    process, url = _start_upstream(
        "--stream-chunks", str(CHUNKS), "--chunk-delay-ms", str(CHUNK_DELAY_MS)
    )
    yield url
    _stop_upstream(process)


@pytest.fixture(scope="module")
def slow_upstream() -> Iterator[str]:
    process, url = _start_upstream("--latency-ms", "20")
    yield url
    _stop_upstream(process)


def _get_json(url: str, path: str) -> tuple[int, Any]:
    host, port = url.removeprefix("http://").split(":")
    connection = http.client.HTTPConnection(host, int(port), timeout=5)
    try:
        connection.request("GET", path)
        response = connection.getresponse()
        return response.status, json.loads(response.read())
    finally:
        connection.close()


def _bedrock_client(url: str) -> Any:
    return botocore.session.get_session().create_client(
        "bedrock-runtime",
        region_name="eu-central-1",
        endpoint_url=url,
        aws_access_key_id="a",
        aws_secret_access_key="b",
        config=botocore.config.Config(retries={"total_max_attempts": 1}),
    )


@pytest.fixture
def bedrock(upstream: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    client = _bedrock_client(upstream)
    yield client
    client.close()


# ---- payloads ------------------------------------------------------------------------------


def test_answer_splits_into_exact_non_empty_pieces():
    for pieces in (1, 4, 8, len(ANSWER_TEXT.split()), 60):
        parts = split_answer(pieces)
        assert len(parts) == pieces
        assert all(parts)
        assert "".join(parts) == ANSWER_TEXT
    assert split_answer(8) == split_answer(8)
    with pytest.raises(ValueError, match="at least 1"):
        split_answer(0)


def test_openai_body_is_a_small_realistic_request():
    plain = json.loads(openai_body(stream=False))
    assert plain["model"] == "bench-model"
    assert plain["max_tokens"] == 64
    assert [m["role"] for m in plain["messages"]] == ["system", "user"]
    assert 25 <= len(plain["messages"][1]["content"].split()) <= 35
    assert "stream" not in plain
    streamed = json.loads(openai_body(stream=True, include_usage=True, model="m"))
    assert streamed["stream"] is True
    assert streamed["stream_options"] == {"include_usage": True}
    assert streamed["model"] == "m"
    assert OPERATION_HEADER == "x-operation-type"


# ---- the upstream with stock clients -------------------------------------------------------


def test_openai_json_parses_with_the_openai_sdk(upstream: str):
    with OpenAI(base_url=f"{upstream}/v1", api_key="x", max_retries=0) as client:
        completion = client.chat.completions.create(
            model="my-model", messages=[{"role": "user", "content": "hello"}], max_tokens=64
        )
    assert completion.model == "my-model"
    assert completion.choices[0].message.content == ANSWER_TEXT
    assert completion.choices[0].finish_reason == "stop"
    assert completion.usage is not None
    assert completion.usage.completion_tokens == len(ANSWER_TEXT.split())


def test_openai_stream_parses_with_the_openai_sdk(upstream: str):
    with OpenAI(base_url=f"{upstream}/v1", api_key="x", max_retries=0) as client:
        stream = client.chat.completions.create(
            model='quoted "model"',
            messages=[{"role": "user", "content": "hello"}],
            stream=True,
            stream_options={"include_usage": True},
        )
        chunks = list(stream)
    contents = [c.choices[0].delta.content for c in chunks if c.choices]
    assert [c for c in contents if c] == split_answer(CHUNKS)
    assert {c.model for c in chunks} == {'quoted "model"'}
    assert chunks[-2].choices[0].finish_reason == "stop"
    assert chunks[-1].choices == []
    assert chunks[-1].usage is not None
    assert chunks[-1].usage.total_tokens > 0


def test_openai_stream_without_usage_has_no_usage_chunk(upstream: str):
    with OpenAI(base_url=f"{upstream}/v1", api_key="x", max_retries=0) as client:
        chunks = list(
            client.chat.completions.create(
                model="m", messages=[{"role": "user", "content": "hi"}], stream=True
            )
        )
    assert all(chunk.choices for chunk in chunks)
    assert chunks[-1].choices[0].finish_reason == "stop"


def test_converse_parses_with_botocore(bedrock: Any):
    response = bedrock.converse(
        modelId=MODEL_ID, messages=[{"role": "user", "content": [{"text": "hello"}]}]
    )
    assert response["output"]["message"]["content"][0]["text"] == ANSWER_TEXT
    assert response["stopReason"] == "end_turn"
    usage = response["usage"]
    assert usage["totalTokens"] == usage["inputTokens"] + usage["outputTokens"]
    assert response["metrics"]["latencyMs"] == 0
    assert response["ResponseMetadata"]["RequestId"]


def test_converse_stream_parses_with_botocore(bedrock: Any):
    response = bedrock.converse_stream(
        modelId=MODEL_ID, messages=[{"role": "user", "content": [{"text": "hello"}]}]
    )
    with contextlib.closing(response["stream"]) as stream:
        events = list(stream)
    names = [name for event in events for name in event]
    assert names == [
        "messageStart",
        *["contentBlockDelta"] * CHUNKS,
        "contentBlockStop",
        "messageStop",
        "metadata",
    ]
    text = "".join(e["contentBlockDelta"]["delta"]["text"] for e in events[1 : CHUNKS + 1])
    assert text == ANSWER_TEXT
    assert events[-2]["messageStop"]["stopReason"] == "end_turn"
    assert events[-1]["metadata"]["usage"]["outputTokens"] > 0
    assert response["ResponseMetadata"]["RequestId"]


def test_health_stats_and_unknown_paths(upstream: str):
    assert _get_json(upstream, "/health") == (200, {"ok": True})
    status, stats = _get_json(upstream, "/stats")
    assert status == 200
    assert isinstance(stats["requests"], int)
    status, body = _get_json(upstream, "/nope")
    assert status == 404
    assert body["error"]["type"] == "not_found"


def test_pipelined_and_partial_requests_are_answered_in_order(upstream: str):
    host, port = upstream.removeprefix("http://").split(":")
    body = openai_body(stream=False, model="first")
    first = (
        b"POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n"
        b"content-length: %d\r\n\r\n%b" % (len(body), body)
    )
    second = b"GET /health HTTP/1.1\r\nhost: x\r\n\r\n"
    third = b"GET /nope HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n"
    with socket.create_connection((host, int(port)), timeout=5) as sock:
        sock.sendall(first[:37])  # a partial request line and headers
        sock.sendall(first[37:-10])
        sock.sendall(first[-10:] + second + third)  # the body's end and two pipelined requests
        received = b""
        while chunk := sock.recv(65536):  # the server closes after the third
            received += chunk
    assert re.findall(rb"HTTP/1\.1 (\d{3}) ", received) == [b"200", b"200", b"404"]
    assert b'"model":"first"' in received
    assert received.index(b'"model":"first"') < received.index(b'{"ok":true}')


# ---- the load tools ------------------------------------------------------------------------


def test_sequential_measures_every_request(upstream: str):
    result = loadgen.run_async(
        loadgen.sequential(
            f"{upstream}/v1/chat/completions",
            openai_body(stream=False),
            {OPERATION_HEADER: "standard"},
            n=200,
            warmup=20,
        )
    )
    assert (result.ok, result.errors) == (200, 0)
    assert result.statuses == {200: 200}
    assert len(result.latencies_s) == 200
    assert result.latencies_s == result.totals_s
    assert all(0 < latency < 1 for latency in result.latencies_s)
    assert result.last_headers["content-type"] == "application/json"
    assert result.overhead_ms == []  # the upstream sends no overhead header
    assert result.elapsed_s >= sum(result.latencies_s)


def test_sequential_counts_a_404_as_an_error(upstream: str):
    result = loadgen.run_async(
        loadgen.sequential(f"{upstream}/nope", openai_body(stream=False), {}, n=5, warmup=1)
    )
    assert (result.ok, result.errors) == (0, 5)
    assert result.error_kinds == {"status 404": 5}
    assert result.latencies_s == []


def test_sequential_counts_connection_failures_as_errors():
    with socket.socket() as sock:  # a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    result = loadgen.run_async(
        loadgen.sequential(f"http://127.0.0.1:{port}/x", b"{}", {}, n=3, warmup=0)
    )
    assert (result.ok, result.errors) == (0, 3)
    assert result.error_kinds == {"connect: ConnectionRefusedError": 3}


def test_latency_option_delays_responses(slow_upstream: str):
    result = loadgen.run_async(
        loadgen.sequential(
            f"{slow_upstream}/v1/chat/completions", openai_body(stream=False), {}, n=5, warmup=1
        )
    )
    assert result.ok == 5
    assert min(result.latencies_s) >= 0.018  # libuv timers have millisecond resolution


@pytest.mark.parametrize("path", ["/v1/chat/completions", f"/model/{MODEL_ID}/converse-stream"])
def test_ttft_is_the_first_content_chunk(upstream: str, path: str):
    result = loadgen.run_async(
        loadgen.ttft(f"{upstream}{path}", openai_body(stream=True), {}, n=10, warmup=2)
    )
    assert (result.ok, result.errors) == (10, 0)
    assert len(result.latencies_s) == len(result.totals_s) == 10
    spread = (CHUNKS - 1) * CHUNK_DELAY_MS / 1000
    for first, total in zip(result.latencies_s, result.totals_s, strict=True):
        assert 0 < first < total
        assert total - first >= spread * 0.7  # millisecond timer resolution


def test_ttft_without_streamed_content_is_an_error(upstream: str):
    result = loadgen.run_async(
        loadgen.ttft(
            f"{upstream}/v1/chat/completions", openai_body(stream=False), {}, n=2, warmup=0
        )
    )
    assert (result.ok, result.errors) == (0, 2)
    assert result.error_kinds == {"no streamed content": 2}


def test_open_loop_holds_its_rate(upstream: str):
    result = loadgen.run_async(
        loadgen.open_loop(
            f"{upstream}/v1/chat/completions",
            openai_body(stream=False),
            {},
            rate_per_s=200,
            duration_s=1.0,
        )
    )
    assert result.scheduled == 200
    assert (result.errors, result.dropped) == (0, 0)
    assert result.ok == result.sent == 200
    assert abs(result.achieved_rate - 200) <= 20
    assert len(result.latencies_s) == len(result.service_s) == 200
    for latency, service in zip(result.latencies_s, result.service_s, strict=True):
        assert 0 < service <= latency < 1
    assert 1 <= result.connections_opened <= 256


def test_open_loop_counts_errors_without_aborting(upstream: str):
    result = loadgen.run_async(
        loadgen.open_loop(f"{upstream}/nope", b"{}", {}, rate_per_s=100, duration_s=0.2)
    )
    assert result.scheduled == 20
    assert (result.ok, result.errors) == (0, 20)
    assert result.statuses == {404: 20}


# ---- the load tools against a scripted peer ------------------------------------------------


async def _with_scripted_server(responses: list[bytes], work: Any) -> Any:
    """Serve `responses` in turn (one per request, then close) while `work(url)` runs."""
    queue = list(responses)

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while queue:
                head = await reader.readuntil(b"\r\n\r\n")
                length = next(
                    int(line.split(b":")[1])
                    for line in head.split(b"\r\n")
                    if line.lower().startswith(b"content-length:")
                )
                await reader.readexactly(length)
                writer.write(queue.pop(0))
                await writer.drain()
                if b"connection: close" in head.lower() or not queue:
                    break
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()
            with contextlib.suppress(ConnectionError):
                await writer.wait_closed()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        return await work(f"http://127.0.0.1:{port}/v1/chat/completions")
    finally:
        server.close()
        await server.wait_closed()


def test_overhead_header_chunked_and_close_delimited_responses():
    header = loadgen.OVERHEAD_HEADER
    responses = [
        f"HTTP/1.1 200 OK\r\n{header}: 0.25\r\ncontent-length: 2\r\n\r\nok".encode(),
        f"HTTP/1.1 200 OK\r\n{header}: 0.5\r\ntransfer-encoding: chunked\r\n\r\n".encode()
        + b"2\r\nok\r\n0\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nconnection: close\r\nX-Last: yes\r\n\r\nuntil the end",
    ]

    async def work(url: str) -> loadgen.LatencyResult:
        return await loadgen.sequential(url, b"{}", {}, n=3, warmup=0, timeout_s=5)

    result = loadgen.run_async(_with_scripted_server(responses, work))
    assert (result.ok, result.errors) == (3, 0)
    assert result.overhead_ms == [0.25, 0.5]
    assert result.last_headers == {"connection": "close", "x-last": "yes"}


def test_summarise_reports_milliseconds():
    figures = loadgen.summarise([0.001 * (i + 1) for i in range(100)])  # 1 … 100 ms
    assert figures["p50"] == pytest.approx(50.5)
    assert figures["p90"] == pytest.approx(90.1)
    assert figures["max"] == pytest.approx(100.0)
    assert figures["mean"] == pytest.approx(50.5)
    assert figures["p50"] <= figures["p99"] <= figures["p999"] <= figures["max"]
    empty = loadgen.summarise([])
    assert empty["count"] == 0
    assert math.isnan(empty["p50"])


# ---- wrk -----------------------------------------------------------------------------------

needs_wrk = pytest.mark.skipif(
    not os.access(loadgen.WRK_PATH, os.X_OK),
    reason=f"wrk is not installed at {loadgen.WRK_PATH} (apt-get install wrk)",
)


@needs_wrk
def test_run_wrk_returns_parsed_figures(upstream: str):
    result = loadgen.run_wrk(
        f"{upstream}/v1/chat/completions",
        openai_body(stream=False),
        {OPERATION_HEADER: "standard", "x-extra": "1"},
        connections=4,
        duration_s=1,
    )
    assert result.requests > 100
    assert result.errors == 0
    assert result.rps > 100
    assert 0.9 < result.duration_s < 2
    assert 0 < result.p50_us <= result.p90_us <= result.p99_us <= result.p999_us
    assert result.p999_us <= result.max_us
    assert result.mean_us > 0


@needs_wrk
def test_run_wrk_counts_error_statuses(upstream: str):
    cpu = min(os.sched_getaffinity(0))
    result = loadgen.run_wrk(f"{upstream}/nope", b"{}", {}, connections=2, duration_s=1, cpu=cpu)
    assert result.requests > 0
    assert result.errors == result.requests
    assert result.error_detail["status"] == result.requests
    assert result.command[:3] == ["/usr/bin/taskset", "-c", str(cpu)]


def test_run_wrk_rejects_fractional_durations():
    with pytest.raises(ValueError, match="whole seconds"):
        loadgen.run_wrk("http://127.0.0.1:1/", b"", {}, connections=1, duration_s=0.5)
