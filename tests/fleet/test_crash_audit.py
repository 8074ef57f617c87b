"""A gateway killed with SIGKILL right after answering loses no audit record: every answered
request's decision is in the chain once the gateway is started again, and the chain verifies."""

from __future__ import annotations

import json
import signal
import subprocess
import urllib.request
from pathlib import Path

import pytest
import yaml

from hybridroute.simulators.bedrock import DEMO_ACCESS_KEY_ID, DEMO_SECRET_ACCESS_KEY
from tests.cli.test_workers import _config, _free_port, _spawn, _wait_ready, processes
from tests.loopback import wait_for

__all__ = ["processes"]

ENV = {"SIM_KEY_ID": DEMO_ACCESS_KEY_ID, "SIM_SECRET": DEMO_SECRET_ACCESS_KEY}
pytestmark = pytest.mark.slow


def _get(url: str) -> dict[str, object]:
    with urllib.request.urlopen(url, timeout=30) as response:
        body: dict[str, object] = json.loads(response.read())
        return body


def _decision_ids(base: str) -> list[str]:
    export = _get(f"{base}/admin/audit/export?period=all")
    records = export["records"]
    assert isinstance(records, list)
    return [json.loads(r["data"])["decision_id"] for r in records if r["kind"] == "decision"]


def test_sigkill_loses_no_audit_record(tmp_path: Path, processes: list[subprocess.Popen[str]]):
    sim_port, port = _free_port(), _free_port()
    _spawn(processes, "sim", "bedrock", "--port", str(sim_port))
    path = _config(tmp_path, port, sim_port)
    config = yaml.safe_load(path.read_text())
    config.pop("admin", None)
    config["audit"] = {"flush_interval_ms": 60_000}  # nothing is written before the kill
    path.write_text(yaml.safe_dump(config))
    base = f"http://127.0.0.1:{port}"
    gateway = _spawn(processes, "serve", "--config", str(path), env=ENV)
    _wait_ready(base)

    answered = []
    for n in range(12):
        request = urllib.request.Request(
            f"{base}/v1/chat/completions",
            data=json.dumps(
                {"model": "default", "messages": [{"role": "user", "content": f"q{n}"}]}
            ).encode(),
            headers={"content-type": "application/json", "x-operation-type": "standard"},
        )
        with urllib.request.urlopen(request, timeout=30) as response:
            answered.append(response.headers["x-hybridroute-decision-id"])
    spool = tmp_path / "ledger.audit-spool.jsonl"
    wait_for(lambda: spool.exists() and spool.read_text().count("\n") >= 12, timeout=5)
    gateway.send_signal(signal.SIGKILL)
    gateway.wait(timeout=10)

    again = _spawn(processes, "serve", "--config", str(path), env=ENV)
    _wait_ready(base)
    wait_for(lambda: set(answered) <= set(_decision_ids(base)), timeout=10)
    ids = _decision_ids(base)
    assert sorted(ids) == sorted(answered)  # each one, once
    integrity = _get(f"{base}/admin/audit/trail-integrity")
    assert integrity["ok"], integrity
    assert again.poll() is None
