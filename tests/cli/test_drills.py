"""`hybridroute drill` end to end: `hybridroute demo` runs in one subprocess, each drill in
another, and the test plays the operator — it waits for the drill to announce a step, then does
that step through the CLI or the admin API, as a person at a terminal would. The drill only ever
learns what happened from the gateway, so these runs also show it believes nothing else.

Every drill must end with the simulators' knobs exactly as they were before it, whether it was
completed, timed out or interrupted."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, ClassVar

import pytest
from click.testing import CliRunner

from hybridroute.cli import cli

HYBRIDROUTE = [sys.executable, "-m", "hybridroute"]
ALERT_RULE = "bedrock_connection_failure"

pytestmark = pytest.mark.slow


def _env() -> dict[str, str]:
    """The subprocesses' environment: no admin token or gateway URL from the caller's shell."""
    drop = {"HYBRIDROUTE_ADMIN_TOKEN", "HYBRIDROUTE_URL"}
    return {k: v for k, v in os.environ.items() if k not in drop}


def _pause(seconds: float) -> None:
    threading.Event().wait(seconds)


def _http(method: str, url: str, body: Any = None) -> Any:
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(
        url, data=data, method=method, headers={"content-type": "application/json"}
    )
    with urllib.request.urlopen(request, timeout=30) as response:
        return json.loads(response.read())


@dataclass(frozen=True)
class Demo:
    gateway: str
    bedrock_sim: str
    mcp_sim: str
    data_dir: Path

    def knobs(self) -> dict[str, dict[str, Any]]:
        return {
            "bedrock": _http("GET", f"{self.bedrock_sim}/_sim/knobs"),
            "mcp": _http("GET", f"{self.mcp_sim}/_sim/knobs"),
        }

    def admin(self, method: str, path: str, body: Any = None) -> Any:
        return _http(method, f"{self.gateway}{path}", body)

    def operate(self, *args: str) -> str:
        """One operator command, as typed (with the gateway's URL)."""
        result = CliRunner().invoke(cli, [*args, "--url", self.gateway])
        assert result.exit_code == 0, result.output
        return result.output


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _wait_ready(gateway: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            body = _http("GET", f"{gateway}/ready")
            if all(r["ready"] for r in body.get("routes", {}).values()):
                return
        except OSError:
            pass
        _pause(0.1)
    raise AssertionError(f"{gateway} not ready within {timeout} s")


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Demo]:
    data_dir = tmp_path_factory.mktemp("demo")
    state = data_dir / "demo.json"
    with (data_dir / "demo.log").open("w") as log:
        process = subprocess.Popen(
            [*HYBRIDROUTE, "demo", "--port", str(_free_port()), "--no-traffic",
             "--data-dir", str(data_dir)],
            stdout=log, stderr=subprocess.STDOUT, text=True, env=_env(),
        )  # fmt: skip
        try:
            deadline = time.monotonic() + 30
            while not state.exists():
                assert process.poll() is None, (data_dir / "demo.log").read_text()
                assert time.monotonic() < deadline, "the demo wrote no demo.json in 30 s"
                _pause(0.1)
            where = json.loads(state.read_text())
            assert where["pid"] == process.pid
            _wait_ready(where["gateway"])
            yield Demo(where["gateway"], where["bedrock_sim"], where["mcp_sim"], data_dir)
        finally:
            process.send_signal(signal.SIGINT)
            process.wait(timeout=30)
    assert process.returncode == 0, (data_dir / "demo.log").read_text()
    assert not state.exists(), "the demo leaves no demo.json behind when it stops"


class Drill:
    """A drill running in its own process; its output is read as it comes."""

    running: ClassVar[list[Drill]] = []

    def __init__(self, demo: Demo, name: str, *args: str, as_json: bool = True) -> None:
        command = [*HYBRIDROUTE, "drill", name, "--demo-dir", str(demo.data_dir),
                   "--poll-interval", "0.1", *args, *(["--json"] if as_json else [])]  # fmt: skip
        self.process = subprocess.Popen(
            command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=_env()
        )
        self.lines: list[str] = []
        self.stdout: list[str] = []
        self._seen = threading.Condition()
        assert self.process.stdout is not None
        assert self.process.stderr is not None
        self._readers = [
            threading.Thread(target=self._read, args=(self.process.stdout, True), daemon=True),
            threading.Thread(target=self._read, args=(self.process.stderr, False), daemon=True),
        ]
        for reader in self._readers:
            reader.start()
        Drill.running.append(self)

    def _read(self, stream: IO[str], is_stdout: bool) -> None:
        for line in stream:
            with self._seen:
                self.lines.append(line)
                if is_stdout:
                    self.stdout.append(line)
                self._seen.notify_all()

    def output(self) -> str:
        with self._seen:
            return "".join(self.lines)

    def wait_for(self, text: str, timeout: float = 30.0) -> None:
        """Wait until the drill has printed `text` (an operator reading the screen)."""
        with self._seen:
            found = self._seen.wait_for(
                lambda: any(text in line for line in self.lines) or self.process.poll() is not None,
                timeout,
            )
            printed = "".join(self.lines)
        assert found, f"the drill did not print {text!r} within {timeout} s:\n{printed}"
        assert text in printed, f"the drill ended without printing {text!r}:\n{printed}"

    def finish(self, timeout: float = 60.0) -> tuple[int, str]:
        code = self.process.wait(timeout=timeout)
        self.close()
        return code, "".join(self.stdout)

    def close(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait(timeout=30)
        for reader in self._readers:
            reader.join(timeout=10)
        for stream in (self.process.stdout, self.process.stderr):
            if stream is not None:
                stream.close()

    def report(self, timeout: float = 60.0) -> tuple[int, dict[str, Any]]:
        code, stdout = self.finish(timeout)
        try:
            return code, json.loads(stdout)
        except ValueError:
            raise AssertionError(f"no JSON report:\n{self.output()}") from None


@pytest.fixture(autouse=True)
def _no_drill_left_running() -> Iterator[None]:
    yield
    while Drill.running:
        Drill.running.pop().close()


def _assert_completed(report: dict[str, Any], steps: list[str]) -> None:
    assert report["outcome"] == "completed", report
    assert report["completed"] is True
    assert report["passed"] is True
    assert [s["step"] for s in report["steps"]] == steps
    for step in report["steps"]:
        assert step["status"] == "done", step
        assert isinstance(step["seconds"], float)
        assert 0 <= step["seconds"] <= report["total_s"]
    assert report["total_s"] > 0
    assert report["fault_removed"] is True


# -- the four drills, completed --------------------------------------------------------------------


def test_alert_response_drill_completed_by_acknowledging_resetting_and_confirming(demo: Demo):
    before = demo.knobs()
    drill = Drill(demo, "alert-response")
    drill.wait_for("Step 1/3: Acknowledge the alert")
    drill.wait_for("/acknowledge")
    # The drill made Direct Bedrock fail until the alert fired; the operator sees it firing.
    assert demo.knobs()["bedrock"]["outage"] is True
    (alert,) = [a for a in demo.admin("GET", "/admin/alerts")["active"] if a["rule"] == ALERT_RULE]
    assert alert["status"] == "firing"
    assert f"$GATEWAY/admin/alerts/{alert['id']}/acknowledge" in drill.output()  # filled in
    demo.admin(
        "POST", f"/admin/alerts/{alert['id']}/acknowledge", {"by": "trainee", "note": "on it"}
    )

    drill.wait_for("Step 2/3")
    assert demo.knobs()["bedrock"]["outage"] is False  # the upstream was "fixed" by the drill
    demo.operate("action", "breaker-reset", "direct_bedrock", "--reason", "upstream fixed")

    drill.wait_for("Step 3/3")
    demo.operate("route", "--op", "emergency", "Is the primary database down?")

    code, report = drill.report()
    assert code == 0, drill.output()
    _assert_completed(report, ["acknowledge", "reset-breaker", "confirm-recovery"])
    assert report["steps"][0]["detail"] == "acknowledged by trainee ('on it')"
    assert "by loopback: 'upstream fixed'" in report["steps"][1]["detail"]
    assert "served by direct_bedrock" in report["steps"][2]["detail"]
    assert report["injected"] == {"bedrock": {"outage": True}}
    assert demo.knobs() == before


def test_emergency_rollback_drill_wants_level_2_then_the_flags_back(demo: Demo):
    before = demo.knobs()
    drill = Drill(demo, "emergency-rollback")
    drill.wait_for("Step 1/2: Execute the level-2 rollback")
    drill.wait_for("hybridroute rollback --level 2")
    # A level-1 rollback turns the flags off too, but it is not what the drill asks for.
    demo.operate("rollback", "--level", "1", "--reason", "wrong level")
    drill.wait_for("seen a level-1 rollback by loopback; this drill asks for level 2")
    demo.operate("rollback", "--level", "2", "--reason", "error rate above 50%")

    drill.wait_for("Step 2/2: The cause is fixed: turn the flags back on")
    assert demo.knobs()["bedrock"]["outage"] is False
    demo.operate("flags", "enable-all", "--reason", "incident closed")

    code, report = drill.report()
    assert code == 0, drill.output()
    _assert_completed(report, ["rollback-level-2", "restore-flags"])
    assert "level-2 rollback by loopback" in report["steps"][0]["detail"]
    assert "all five flags off" in report["steps"][0]["detail"]
    assert report["steps"][1]["detail"] == "all five flags on (restore by loopback)"
    assert demo.knobs() == before
    assert all(demo.admin("GET", "/admin/feature-flags/bedrock")["flags"].values())


def test_health_check_drill_prints_the_steps_and_a_timed_report(demo: Demo):
    before = demo.knobs()
    drill = Drill(demo, "health-check", as_json=False)
    drill.wait_for("Step 1/2")
    drill.wait_for("waiting for it")
    assert demo.knobs()["mcp"]["latency_ms"] == 1800.0  # MCP made slow: P95 above the SLO
    for command in ("hybridroute health", "hybridroute audit verify", "/admin/slo?window=5m"):
        assert command in drill.output()
    # A mitigation without a reason documents nothing: the drill keeps waiting and says why.
    demo.operate("action", "cache-aggressive", "on", "--for", "2h")
    drill.wait_for("but without --reason")
    demo.operate("action", "cache-aggressive", "on", "--for", "2h", "--reason", "mcp P95 1.8 s")

    drill.wait_for("Step 2/2: The route is fixed: end the mitigation")
    assert demo.knobs() == before
    demo.operate("action", "cache-aggressive", "off", "--reason", "mcp fast again")

    code, stdout = drill.finish()
    assert code == 0, drill.output()
    assert stdout.count("✓ step done in") == 2
    assert "Report: drill health-check (the seed's Exercise 1: System Health Check)" in stdout
    assert "aggressive caching on by loopback: 'mcp P95 1.8 s'" in stdout
    assert "total: " in stdout
    assert "the guide allows 15 minutes" in stdout
    assert "fault removed: yes" in stdout
    assert "result: PASS — every step observed done" in stdout
    assert demo.knobs() == before


def test_config_update_drill_sees_the_applied_change_and_the_rollback(demo: Demo, tmp_path: Path):
    before = demo.knobs()
    drill = Drill(demo, "config-update")
    drill.wait_for("Step 1/2")
    document = json.loads(demo.operate("rules", "show"))
    start = document["version"]
    document["matrix"]["meta_monitor"].update(primary="mcp", fallback="direct_bedrock")
    rules = tmp_path / "new-routing-rules.json"
    rules.write_text(json.dumps(document))
    preview = json.loads(demo.operate("rules", "apply", str(rules), "--dry-run"))
    assert preview["dry_run"] is True
    demo.operate("rules", "apply", str(rules), "--comment", "meta_monitor off slow Bedrock")

    drill.wait_for(f"Step 2/2: Roll back to version {start}")
    drill.wait_for(f"hybridroute rules rollback {start} ")  # the command, filled in
    demo.operate("rules", "rollback", str(start), "--reason", "Bedrock is fast again")

    code, report = drill.report()
    assert code == 0, drill.output()
    _assert_completed(report, ["apply-change", "roll-back"])
    assert report["steps"][0]["detail"] == (
        f"version {start + 1} applied by loopback ('meta_monitor off slow Bedrock'): "
        "changed meta_monitor"
    )
    assert f"(a rollback to version {start}, by loopback)" in report["steps"][1]["detail"]
    assert report["steps"][1]["title"] == f"Roll back to version {start}"
    assert demo.knobs() == before


# -- drills that are not completed ---------------------------------------------------------------


def test_a_drill_not_done_in_time_exits_1_and_still_removes_its_fault(demo: Demo):
    before = demo.knobs()
    code, report = Drill(demo, "config-update", "--timeout", "3s").report()
    assert code == 1
    assert report["outcome"] == "timed out"
    assert report["completed"] is False
    assert [s["status"] for s in report["steps"]] == ["timed out", "not reached"]
    assert report["injected"] == {"bedrock": {"latency_ms": 2000.0, "jitter_ms": 0.0}}
    assert report["restored"] == {"bedrock": {"latency_ms": 120.0, "jitter_ms": 40.0}}
    assert report["fault_removed"] is True
    assert demo.knobs() == before


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["ctrl-c", "sigterm"])
def test_an_interrupted_drill_exits_1_and_removes_its_fault(demo: Demo, sig: signal.Signals):
    before = demo.knobs()
    drill = Drill(demo, "health-check")
    drill.wait_for("Step 1/2")
    assert demo.knobs() != before
    drill.process.send_signal(sig)
    code, report = drill.report()
    assert code == 1
    assert report["outcome"] == "interrupted"
    assert report["steps"][0]["status"] == "interrupted"
    assert report["fault_removed"] is True
    assert demo.knobs() == before


def test_a_drill_without_a_demo_environment_says_how_to_get_one(tmp_path: Path):
    result = CliRunner().invoke(cli, ["drill", "health-check", "--demo-dir", str(tmp_path)])
    assert result.exit_code == 1
    assert f"no demo environment found: {tmp_path / 'demo.json'} does not exist" in result.output
    assert f"hybridroute demo --data-dir {tmp_path}" in result.output
    assert "--url, --bedrock-sim, --mcp-sim" in result.output

    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    stale = {"gateway": "http://127.0.0.1:9", "bedrock_sim": "x", "mcp_sim": "y", "pid": gone.pid}
    (tmp_path / "demo.json").write_text(json.dumps(stale))
    result = CliRunner().invoke(cli, ["drill", "health-check", "--demo-dir", str(tmp_path)])
    assert result.exit_code == 1
    assert "was left by a demo that is no longer running" in result.output
