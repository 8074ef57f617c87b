"""`hybridroute serve --workers N`: one port shared by N gateway processes, metrics merged.

The gateway runs as an operator runs it: `hybridroute serve --config FILE --workers 3` in a
subprocess, with `hybridroute sim bedrock` as a separate process and the MCP simulator over
stdio (each worker starts its own). The parent makes its metrics directory under `TMPDIR`,
which the test points into `tmp_path` so it can look at the directory and check that it is
removed on exit.

Worker 0 is the leader: the other workers ship their request events to it (every 0.5 s) and
forward every `/admin/*` request to it, so the admin API answers alike whichever worker a
connection lands on.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
import yaml
from click.testing import CliRunner
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.parser import text_string_to_metric_families

from hybridroute.cli import cli
from hybridroute.simulators.bedrock import DEMO_ACCESS_KEY_ID, DEMO_SECRET_ACCESS_KEY
from tests.loopback import wait_for

REPO = Path(__file__).parents[2]
EXAMPLE = REPO / "docs" / "example-config.yaml"
HYBRIDROUTE = [sys.executable, "-m", "hybridroute"]
WORKERS = 3


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
def processes() -> Iterator[list[subprocess.Popen[str]]]:
    started: list[subprocess.Popen[str]] = []
    yield started
    for process in reversed(started):
        _stop(process)


def _stop(process: subprocess.Popen[str]) -> None:
    """Stop a process the way an operator would (SIGTERM), and its workers with it; kill what
    is left after 20 s, descendants first (a killed parent would leave its workers running
    and holding our pipe)."""
    if process.poll() is None:
        family = _descendants(process.pid)
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            for pid in family:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            process.kill()
    process.communicate(timeout=30)  # reaps the process and closes its pipe


def _spawn(
    processes: list[subprocess.Popen[str]], *args: str, env: dict[str, str] | None = None
) -> subprocess.Popen[str]:
    process = subprocess.Popen(
        [*HYBRIDROUTE, *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})},
    )
    processes.append(process)
    return process


def _config(tmp_path: Path, gateway_port: int, sim_port: int) -> Path:
    """The documented example on the simulators: no budgets, no cache, SQLite in tmp_path."""
    config = yaml.safe_load(EXAMPLE.read_text())
    config["server"]["port"] = gateway_port
    bedrock = config["routes"]["direct_bedrock"]
    bedrock["endpoint_url"] = f"http://127.0.0.1:{sim_port}"
    bedrock["credentials"] = {
        "source": "static",
        "access_key_id": "env:SIM_KEY_ID",
        "secret_access_key": "env:SIM_SECRET",
    }
    del bedrock["model_ids"]
    del config["pricing"]["routes"]["direct_bedrock"]["models"]  # priced the model just removed
    config["routes"]["mcp"] = {
        "type": "mcp",
        "transport": "stdio",
        "command": [sys.executable, "-m", "hybridroute.simulators.mcp_server", "--stdio"],
        "region": "eu-central-1",
    }
    del config["budgets"]  # each worker would keep its own count: refused with --workers > 1
    del config["admin"]  # no admin token: the test's loopback calls are answered
    config["cache"] = {"enabled": False}  # every request is answered by a route
    config["health"] = {"probe_interval_s": 3600, "probe_timeout_s": 2}
    config["storage"] = {"backend": "sqlite", "sqlite_path": str(tmp_path / "ledger.sqlite3")}
    path = tmp_path / "gateway.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def _children(pid: int) -> set[int]:
    """The live (not zombie) child processes of `pid`, from /proc."""
    found = set()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        # pid (comm) state ppid ...: comm may hold spaces, so split after its closing paren
        state, ppid = stat.rpartition(")")[2].split()[:2]
        if int(ppid) == pid and state != "Z":
            found.add(int(entry.name))
    return found


def _descendants(pid: int) -> set[int]:
    found = set()
    for child in _children(pid):
        found |= {child, *_descendants(child)}
    return found


def _get(url: str) -> tuple[int, bytes]:
    """One GET on a fresh connection (so the next one may land on another worker)."""
    request = urllib.request.Request(url, headers={"Connection": "close"})
    with urllib.request.urlopen(request, timeout=30) as response:
        return response.status, response.read()


def _call(
    method: str, url: str, body: Any = None, headers: dict[str, str] | None = None
) -> tuple[int, Any]:
    """One request on a fresh connection (so the next one may land on another worker); the
    status and the JSON answer, error statuses included."""
    request = urllib.request.Request(
        url,
        data=None if body is None else json.dumps(body).encode(),
        method=method,
        headers={"Connection": "close", "content-type": "application/json", **(headers or {})},
    )
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        with error:
            return error.code, json.loads(error.read())


def _answer(base: str, operation_type: str) -> tuple[int, str]:
    """One chat request on a fresh connection: its status and the route that served it."""
    request = urllib.request.Request(
        f"{base}/v1/chat/completions",
        data=json.dumps(
            {"model": "default", "messages": [{"role": "user", "content": "hi"}]}
        ).encode(),
        headers={
            "content-type": "application/json",
            "x-operation-type": operation_type,
            "Connection": "close",
        },
    )
    with urllib.request.urlopen(request, timeout=30) as response:
        response.read()
        return int(response.status), str(response.headers["x-hybridroute-route"])


def _chat(base: str, operation_type: str) -> int:
    return _answer(base, operation_type)[0]


def _route_of(base: str, operation_type: str) -> str:
    return _answer(base, operation_type)[1]


def _send(base: str, count: int) -> None:
    operations = ["emergency", "standard"] * (count // 2)
    with ThreadPoolExecutor(max_workers=6) as pool:
        statuses = list(pool.map(lambda op: _chat(base, op), operations))
    assert statuses == [200] * count


def _requests_total(base: str) -> dict[str, float]:
    """Scrape /metrics: the request counter's total and per outcome."""
    status, body = _get(f"{base}/metrics")
    assert status == 200
    outcomes: dict[str, float] = {}
    for family in text_string_to_metric_families(body.decode()):
        if family.name == "hybridroute_requests":
            for sample in family.samples:
                if sample.name == "hybridroute_requests_total":
                    outcome = sample.labels["outcome"]
                    outcomes[outcome] = outcomes.get(outcome, 0.0) + sample.value
    return outcomes


def _scrapes(base: str, times: int) -> list[float]:
    return [sum(_requests_total(base).values()) for _ in range(times)]


def _served_per_pid(metrics_dir: Path) -> dict[int, float]:
    """Requests each worker process counted, read from its own counter file."""
    served: dict[int, float] = {}
    for path in metrics_dir.glob("counter_*.db"):
        pid = int(path.stem.removeprefix("counter_"))
        merged = MultiProcessCollector.merge([str(path)], accumulate=False)  # type: ignore[no-untyped-call]
        served[pid] = sum(
            s.value
            for metric in merged
            for s in metric.samples
            if s.name == "hybridroute_requests_total"
        )
    return served


def _wait_ready(base: str, timeout: float = 60.0) -> None:
    def ready() -> bool:
        try:
            status, body = _get(f"{base}/ready")
        except OSError:
            return False
        routes: dict[str, Any] = json.loads(body).get("routes", {})
        return status == 200 and all(r["ready"] for r in routes.values())

    wait_for(ready, timeout=timeout)


@pytest.mark.slow
def test_three_workers_share_one_port_and_metrics_count_every_request(
    tmp_path: Path, processes: list[subprocess.Popen[str]]
):
    sim_port, port = _free_port(), _free_port()
    _spawn(processes, "sim", "bedrock", "--port", str(sim_port))
    path = _config(tmp_path, port, sim_port)
    temp = tmp_path / "tmp"
    temp.mkdir()
    env = {
        "SIM_KEY_ID": DEMO_ACCESS_KEY_ID,
        "SIM_SECRET": DEMO_SECRET_ACCESS_KEY,
        "TMPDIR": str(temp),  # where the parent makes its metrics directory
    }
    parent = _spawn(processes, "serve", "--config", str(path), "--workers", str(WORKERS), env=env)
    base = f"http://127.0.0.1:{port}"
    _wait_ready(base)
    wait_for(lambda: len(_children(parent.pid)) == WORKERS, timeout=30)
    workers = _children(parent.pid)
    (metrics_dir,) = temp.glob("hybridroute-metrics-*")

    # 120 requests on fresh connections, 6 at a time. Which worker accepts a connection is
    # the kernel's choice on a shared socket (one may well take them all), so the files say.
    _send(base, 120)
    # A request is counted just after its answer is sent: wait for the last one.
    wait_for(lambda: sum(_served_per_pid(metrics_dir).values()) == 120, timeout=10)
    served = _served_per_pid(metrics_dir)
    assert set(served) <= workers
    assert sum(served.values()) == 120
    assert _scrapes(base, 12) == [120.0] * 12
    assert _requests_total(base) == {"served": 120.0}

    # A worker that dies is started again, and what it counted is kept: with the busiest
    # worker gone, other processes answer the scrapes and still count its requests.
    victim = max(served, key=lambda pid: served[pid])
    os.kill(victim, signal.SIGKILL)
    wait_for(lambda: victim not in _children(parent.pid), timeout=10)
    wait_for(lambda: len(_children(parent.pid)) == WORKERS, timeout=15)  # after 1 s of backoff
    restarted = _children(parent.pid) - workers
    assert len(restarted) == 1
    _wait_ready(base)
    assert _scrapes(base, 12) == [120.0] * 12
    _send(base, 30)
    wait_for(lambda: sum(_served_per_pid(metrics_dir).values()) == 150, timeout=10)
    # A worker reuses a rendered body for up to a second; then every scrape agrees.
    wait_for(lambda: _scrapes(base, 12) == [150.0] * 12, timeout=5)
    after = _served_per_pid(metrics_dir)
    assert after[victim] == served[victim]
    assert sum(after.values()) == 150
    assert len([pid for pid, n in after.items() if n > 0]) >= 2, after
    assert set(after) <= workers | restarted

    # SIGTERM: every worker stops, the parent exits 0 and removes the metrics directory.
    parent.send_signal(signal.SIGTERM)
    output, _ = parent.communicate(timeout=60)
    assert parent.returncode == 0, output
    assert f"hybridroute serving on {base} ({WORKERS} worker processes)" in output
    assert f"(pid {victim}) exited with status -9; starting it again in 1 s" in output
    assert not metrics_dir.exists()
    assert list(temp.iterdir()) == []
    for pid in (workers - {victim}) | restarted:
        assert not Path(f"/proc/{pid}").exists() or "Z" in _proc_state(pid)


@pytest.mark.slow
def test_followers_ship_events_and_forward_admin_requests_to_the_leader(
    tmp_path: Path, processes: list[subprocess.Popen[str]]
):
    sim_port, port = _free_port(), _free_port()
    _spawn(processes, "sim", "bedrock", "--port", str(sim_port))
    path = _config(tmp_path, port, sim_port)
    temp = tmp_path / "tmp"
    temp.mkdir()
    env = {
        "SIM_KEY_ID": DEMO_ACCESS_KEY_ID,
        "SIM_SECRET": DEMO_SECRET_ACCESS_KEY,
        "TMPDIR": str(temp),
    }
    parent = _spawn(processes, "serve", "--config", str(path), "--workers", str(WORKERS), env=env)
    base = f"http://127.0.0.1:{port}"
    _wait_ready(base)
    wait_for(lambda: len(_children(parent.pid)) == WORKERS, timeout=30)
    (metrics_dir,) = temp.glob("hybridroute-metrics-*")

    # 90 requests on fresh connections: the kernel spreads them, so followers serve some.
    _send(base, 90)
    wait_for(lambda: sum(_served_per_pid(metrics_dir).values()) == 90, timeout=10)
    served = _served_per_pid(metrics_dir)
    assert len([pid for pid, n in served.items() if n > 0]) >= 2, served

    # Every worker's requests reach the leader's traffic window (shipped every 0.5 s), and
    # every admin answer comes from there, whichever worker takes the connection.
    distribution = f"{base}/admin/metrics/routing-distribution?window=5m"

    def served_now() -> int:
        status, body = _call("GET", distribution)
        assert status == 200, body
        return int(body["served"])

    wait_for(lambda: served_now() == 90, timeout=5)
    answers = [_call("GET", distribution) for _ in range(12)]
    assert [status for status, _ in answers] == [200] * 12
    assert [body["served"] for _, body in answers] == [90] * 12
    assert [body["window_s"] for _, body in answers] == [300] * 12
    assert [{op: o["requests"] for op, o in body["operations"].items()} for _, body in answers] == [
        {"emergency": 45, "standard": 45}
    ] * 12

    # A threshold changed through any worker is the leader's, and every worker shows it.
    status, _ = _call("GET", f"{base}/admin/alerts")
    assert status == 200
    status, changed = _call(
        "PUT",
        f"{base}/admin/config/slo-thresholds",
        {"rules": {"latency_p95_critical": {"threshold": 2.5}}},
    )
    assert status == 200, changed
    assert changed["rules"]["latency_p95_critical"]["threshold"] == 2.5
    listed = [_call("GET", f"{base}/admin/alerts") for _ in range(12)]
    assert [status for status, _ in listed] == [200] * 12
    assert [body["rules"]["latency_p95_critical"]["threshold"] for _, body in listed] == [2.5] * 12
    assert [body["alerting"] for _, body in listed] == [True] * 12  # the leader evaluates

    # The daily report (written by the leader) counts every worker's requests, the one start
    # the leader recorded and the threshold change.
    status, report = _call("GET", f"{base}/admin/reports/daily?format=json")
    assert status == 200, report
    assert report["slo"]["figures"]["requests"] == 90
    assert report["slo"]["figures"]["served"] == 90
    assert [c["kind"] for c in report["configuration"]] == ["started", "thresholds_changed"]
    assert report["configuration"][1]["detail"]["rules"] == {
        "latency_p95_critical": {"threshold": 2.5}
    }

    # The leader's event intake is no public endpoint: without the workers' token (or with a
    # wrong one) it is not there, on any worker; nothing is recorded.
    events = f"{base}/internal/events"
    batch = [{"at": 0, "operation_type": "standard", "outcome": "served", "cost": "0"}]
    attempts: list[dict[str, str]] = [{}] * 6 + [{"x-hybridroute-worker-token": "guess"}] * 6
    for headers in attempts:
        status, body = _call("POST", events, batch, headers)
        assert (status, body["error"]["code"]) == (404, "not_found"), body
    assert served_now() == 90

    # A flag changed through any worker is in force on every worker within about a second:
    # after disable-all, emergency requests on fresh connections (spread over the workers) are
    # all served by mcp.
    status, flags = _call("POST", f"{base}/admin/feature-flags/bedrock/disable-all", {})
    assert status == 200, flags
    assert not any(flags["flags"].values())
    took = wait_for(lambda: all(_route_of(base, "emergency") == "mcp" for _ in range(12)), 5)
    assert took < 3.0
    routes = {_route_of(base, "emergency") for _ in range(24)}
    assert routes == {"mcp"}
    status, _ = _call("POST", f"{base}/admin/feature-flags/bedrock/enable-all", {})
    assert status == 200
    wait_for(lambda: all(_route_of(base, "emergency") == "direct_bedrock" for _ in range(12)), 5)


def _proc_state(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0]
    except OSError:
        return "gone"


def test_workers_are_refused_when_budgets_are_configured():
    result = CliRunner().invoke(cli, ["serve", "--config", str(EXAMPLE), "--workers", "2"])
    assert result.exit_code == 1
    assert result.output == (
        "Error: budgets are configured, and each worker process would keep its own count: "
        "serve them with one process (--workers 1)\n"
    )


@pytest.mark.slow
def test_a_refusal_of_workers_starts_nothing(
    tmp_path: Path, processes: list[subprocess.Popen[str]]
):
    """The refusal comes before the port is bound or a worker is started."""
    port = _free_port()
    config = yaml.safe_load(EXAMPLE.read_text())
    config["server"]["port"] = port
    path = tmp_path / "budgets.yaml"
    path.write_text(yaml.safe_dump(config))
    parent = _spawn(
        processes, "serve", "--config", str(path), "--workers", "2", env={"TMPDIR": str(tmp_path)}
    )
    output, _ = parent.communicate(timeout=60)
    assert parent.returncode == 1
    assert "budgets are configured" in output
    assert "--workers 1" in output
    assert list(tmp_path.glob("hybridroute-metrics-*")) == []
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", port))  # still free
