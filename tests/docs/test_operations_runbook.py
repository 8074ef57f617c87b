"""The operations runbook is executed: every `bash` block of docs/operations.md runs, in order,
against a live gateway with a SQLite store, and every command in it must succeed (curl fails on
any HTTP error status). Then the effects the runbook promises are checked."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.loopback import GatewayFactory

ROOT = Path(__file__).parents[2]
RUNBOOK = (ROOT / "docs" / "operations.md").read_text()
TOKEN = "runbook-admin-token-0123456789"
# Every curl fails on an HTTP error status, showing the body (the runbook's curls do not say so).
PRELUDE = 'curl() { command curl --fail-with-body "$@"; }\n'


def _bash_blocks() -> list[str]:
    return re.findall(r"```bash\n(.*?)```", RUNBOOK, flags=re.DOTALL)


def test_the_runbook_has_the_seed_procedures():
    text = RUNBOOK
    for endpoint in (
        "/admin/feature-flags/bedrock",
        "/admin/feature-flags/bedrock/update",
        "/admin/feature-flags/bedrock/disable-all",
        "/admin/metrics/routing-distribution",
        "/admin/metrics/provider-latencies",
        "/admin/metrics/cache-performance",
        "/admin/metrics/error-breakdown",
        "/admin/health/circuit-breakers",
        "/admin/config/routing-rules",
        "/admin/config/validate-routing",
        "/admin/config/slo-thresholds",
        "/admin/compliance/gdpr-status",
        "/admin/compliance/data-residency",
        "/admin/audit/trail-integrity",
        "/admin/audit/export?format=json&period=daily",
    ):
        assert endpoint in text, endpoint
    for command in ("rollback --level 1", "rollback --level 2", "rollback --level 3"):
        assert f"hybridroute {command}" in text


def test_every_runbook_command_runs(
    start_gateway: GatewayFactory, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("HYBRIDROUTE_ADMIN_TOKEN", TOKEN)

    config_file = tmp_path / "gateway.yaml"

    def changes(data: dict[str, Any]) -> None:
        data["storage"] = {
            "backend": "sqlite",
            "sqlite_path": str(tmp_path / "runbook.sqlite3"),
            "flush_interval_ms": 20,
        }
        config_file.write_text(yaml.safe_dump(data))  # what `deploy check` checks

    gateway = start_gateway(changes)
    bindir = Path(sys.executable).parent
    env = {
        **os.environ,
        "GATEWAY": gateway.url,
        "ADMIN_TOKEN": TOKEN,
        "HYBRIDROUTE_CONFIG": str(config_file),
        "PATH": f"{bindir}{os.pathsep}{os.environ.get('PATH', '')}",
    }
    setup, *blocks = _bash_blocks()  # the first block sets the shell up for the others
    assert "export HYBRIDROUTE_URL" in setup
    assert len(blocks) >= 15
    for number, block in enumerate(blocks, 2):
        result = subprocess.run(
            ["bash", "-euo", "pipefail", "-c", PRELUDE + setup + block],
            cwd=tmp_path,
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        assert result.returncode == 0, (
            f"runbook block {number} failed ({result.returncode}):\n{block}\n"
            f"stdout:\n{result.stdout[-3000:]}\nstderr:\n{result.stderr[-3000:]}"
        )

    # The runbook's changes happened, and were audited under the token's name.
    runtime = gateway.runtime
    current = runtime.control.routing.current
    assert current is not None
    assert current.version == 4  # level-3 rollback, PUT, rules rollback
    assert runtime.matrix.rules["standard"].latency_budget_ms == 30_000  # rolled back to v1
    assert not any(runtime.control.flags.current().as_mapping().values())  # the rollbacks
    # The incident's actions were undone; the 2-hour aggressive caching of issue 1 runs on.
    assert [a.action for a in runtime.control.actions.active()] == ["cache_aggressive"]
    exported = (tmp_path / "audit-today.json").read_text()
    for kind in ("flags_changed", "config_applied", "operator_action", "rollback"):
        assert f'"kind":"{kind}"' in exported, kind
    assert "hybridroute_admin_token" in exported
    assert TOKEN not in exported
    (deployment,) = (tmp_path / "deploy-reports").glob("hybrid-routing-deve-*.md")
    assert "- **Status**: PASSED" in deployment.read_text()
