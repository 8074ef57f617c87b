"""The command line as operators use it: config checks, one-off routing, serve and demo."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from click.testing import CliRunner

from hybridroute.cli import cli
from hybridroute.simulators.bedrock import DEMO_ACCESS_KEY_ID, DEMO_SECRET_ACCESS_KEY
from tests.loopback import RunningGateway, Simulator

REPO = Path(__file__).parents[2]
EXAMPLE = REPO / "docs" / "example-config.yaml"
HYBRIDROUTE = [sys.executable, "-m", "hybridroute"]


def run(*args: str) -> Any:
    return CliRunner().invoke(cli, list(args), catch_exceptions=False)


def test_config_validate_accepts_the_documented_example():
    result = run("config", "validate", str(EXAMPLE))
    assert result.exit_code == 0
    assert "is valid: 2 routes (direct_bedrock, mcp), 7 operation types" in result.output


def test_config_validate_refuses_the_seeds_failed_deployment(tmp_path: Path):
    data = yaml.safe_load(EXAMPLE.read_text())
    data["matrix"]["emergency"]["primary"] = "direct"
    bad = tmp_path / "seed-failure.yaml"
    bad.write_text(yaml.safe_dump(data))
    result = run("config", "validate", str(bad))
    assert result.exit_code == 2
    assert f"{bad} is invalid (1 problem):" in result.output
    assert (
        "matrix.emergency.primary: unknown route 'direct'; did you mean 'direct_bedrock'?"
        in result.output
    )


def test_config_show_prints_the_effective_matrix():
    result = run("config", "show", str(EXAMPLE))
    assert result.exit_code == 0
    lines = result.output.splitlines()
    emergency = next(line for line in lines if line.startswith("emergency "))
    assert emergency.split()[:6] == ["emergency", "critical", "5", "s", "direct_bedrock", "-"]
    standard = next(line for line in lines if line.startswith("standard "))
    assert standard.split()[:6] == ["standard", "medium", "30", "s", "mcp", "direct_bedrock"]
    assert "ENABLE_BEDROCK_SUPPORT_MODE" in result.output


def test_config_show_without_a_file_shows_the_embedded_default():
    result = run("config", "show")
    assert result.exit_code == 0
    assert "Embedded default" in result.output
    assert "Routing matrix (7 operation types" in result.output


def test_route_prints_decision_and_answer(gateway: RunningGateway):
    result = run("route", "--url", gateway.url, "--op", "emergency", "Is the database down?")
    assert result.exit_code == 0, result.output
    assert "route      direct_bedrock\n" in result.output
    assert "reason     matrix: direct_bedrock, no fallback; direct_bedrock healthy" in result.output
    assert "Simulated answer from" in result.output
    assert "Is the database down?" in result.output


def test_route_streams(gateway: RunningGateway):
    result = run("route", "--url", gateway.url, "--op", "background", "--stream", "hello")
    assert result.exit_code == 0, result.output
    assert "route      mcp\n" in result.output
    assert "answer (streamed)" in result.output


def test_route_reports_a_failure_and_exits_1(gateway: RunningGateway, bedrock_sim: Simulator):
    bedrock_sim.set(outage=True)
    result = CliRunner().invoke(cli, ["route", "--url", gateway.url, "--op", "emergency", "x"])
    assert result.exit_code == 1
    assert "status     503" in result.output
    assert "all_routes_failed" in result.output


def test_route_explains_an_unreachable_gateway():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    result = CliRunner().invoke(cli, ["route", "--url", f"http://127.0.0.1:{port}", "x"])
    assert result.exit_code == 1
    assert "cannot reach the gateway" in result.output
    assert "hybridroute demo" in result.output


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _wait_for(url: str, timeout: float = 30.0) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    last: Exception | None = None
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                body: dict[str, Any] = json.loads(response.read())
                if all(r["ready"] for r in body.get("routes", {"x": {"ready": True}}).values()):
                    return body
        except OSError as error:
            last = error
        time.sleep(0.1)  # noqa: TID251 - polling a subprocess from the test thread
    raise AssertionError(f"{url} not ready within {timeout}s: {last}")


def _chat(base: str, operation_type: str) -> tuple[dict[str, Any], dict[str, str]]:
    request = urllib.request.Request(
        f"{base}/v1/chat/completions",
        data=json.dumps(
            {"model": "default", "messages": [{"role": "user", "content": "hi"}]}
        ).encode(),
        headers={"content-type": "application/json", "x-operation-type": operation_type},
    )
    with urllib.request.urlopen(request, timeout=30) as response:
        return json.loads(response.read()), dict(response.headers)


@pytest.fixture
def processes() -> Iterator[list[subprocess.Popen[str]]]:
    started: list[subprocess.Popen[str]] = []
    yield started
    for process in started:
        if process.poll() is None:
            process.kill()
        process.communicate(timeout=10)  # reaps the process and closes its pipe


def _spawn(processes: list[subprocess.Popen[str]], *args: str) -> subprocess.Popen[str]:
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    process = subprocess.Popen(
        [*HYBRIDROUTE, *args], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env
    )
    processes.append(process)
    return process


@pytest.mark.slow
def test_serve_a_config_file_with_separate_simulator_processes(
    tmp_path: Path, processes: list[subprocess.Popen[str]]
):
    """`hybridroute sim bedrock` + an MCP server over stdio + `hybridroute serve --config`."""
    sim_port, gateway_port = _free_port(), _free_port()
    _spawn(processes, "sim", "bedrock", "--port", str(sim_port))
    config = yaml.safe_load(EXAMPLE.read_text())
    config["server"]["port"] = gateway_port
    config["routes"]["direct_bedrock"]["endpoint_url"] = f"http://127.0.0.1:{sim_port}"
    config["routes"]["direct_bedrock"]["credentials"] = {
        "source": "static",
        "access_key_id": "env:SIM_KEY_ID",
        "secret_access_key": "env:SIM_SECRET",
    }
    del config["routes"]["direct_bedrock"]["model_ids"]
    del config["pricing"]["routes"]["direct_bedrock"]["models"]  # priced the model just removed
    config["routes"]["mcp"] = {
        "type": "mcp",
        "transport": "stdio",
        "command": [sys.executable, "-m", "hybridroute.simulators.mcp_server", "--stdio"],
        "region": "eu-central-1",
    }
    config["storage"] = {"backend": "sqlite", "sqlite_path": str(tmp_path / "ledger.sqlite3")}
    path = tmp_path / "gateway.yaml"
    path.write_text(yaml.safe_dump(config))
    os.environ["SIM_KEY_ID"], os.environ["SIM_SECRET"] = DEMO_ACCESS_KEY_ID, DEMO_SECRET_ACCESS_KEY
    try:
        gateway = _spawn(processes, "serve", "--config", str(path))
        base = f"http://127.0.0.1:{gateway_port}"
        _wait_for(f"{base}/ready")
        body, headers = _chat(base, "emergency")
        assert headers["x-hybridroute-route"] == "direct_bedrock"
        body, headers = _chat(base, "standard")
        assert headers["x-hybridroute-route"] == "mcp"
        assert body["choices"][0]["message"]["content"].startswith("Simulated answer from MCP")
        gateway.send_signal(signal.SIGTERM)
        output, _ = gateway.communicate(timeout=30)
        assert gateway.returncode == 0, output
        assert f"hybridroute serving on {base}" in output
    finally:
        del os.environ["SIM_KEY_ID"], os.environ["SIM_SECRET"]


@pytest.mark.slow
def test_demo_starts_serves_and_stops(processes: list[subprocess.Popen[str]], tmp_path: Path):
    port = _free_port()
    demo = _spawn(
        processes, "demo", "--port", str(port), "--no-traffic", "--data-dir", str(tmp_path)
    )
    base = f"http://127.0.0.1:{port}"
    _wait_for(f"{base}/ready")
    for op, route in (("emergency", "direct_bedrock"), ("background", "mcp")):
        _, headers = _chat(base, op)
        assert headers["x-hybridroute-route"] == route
    demo.send_signal(signal.SIGINT)
    output, _ = demo.communicate(timeout=30)
    assert demo.returncode == 0, output
    assert "hybridroute demo is running" in output
    assert f"gateway             {base}" in output
    assert "stopping the demo" in output
    assert (tmp_path / "demo.sqlite3").exists()  # spend was kept where the demo was told


def test_a_taken_port_is_explained(processes: list[subprocess.Popen[str]]):
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        port = sock.getsockname()[1]
        demo = _spawn(processes, "demo", "--port", str(port), "--no-traffic")
        output, _ = demo.communicate(timeout=60)
    assert demo.returncode == 1
    assert f"cannot listen on 127.0.0.1:{port}" in output
    assert "pass a different --port" in output
