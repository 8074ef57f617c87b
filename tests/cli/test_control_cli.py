"""The control-plane commands against a live gateway: what they print, what they change, and
how they fail."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from hybridroute.cli import cli
from tests.loopback import RunningGateway


def run(gateway: RunningGateway, *args: str) -> tuple[int, str]:
    result = CliRunner().invoke(cli, [*args, "--url", gateway.url])
    return result.exit_code, result.output


def test_flags_commands_change_routing_and_print_the_state(gateway: RunningGateway):
    code, out = run(gateway, "flags", "list")
    assert code == 0, out
    assert "ENABLE_BEDROCK_SUPPORT_MODE" in out
    assert "mode: hybrid" in out

    code, out = run(
        gateway, "flags", "set", "enable_direct_bedrock_fallback", "off", "--reason", "x"
    )
    assert code == 0, out
    assert gateway.runtime.flags.current().direct_bedrock_fallback is False
    assert "last change: update by loopback (x)" in out

    code, out = run(gateway, "flags", "disable-all", "--reason", "drill")
    assert code == 0, out
    assert "mode: mcp_only" in out
    code, out = run(gateway, "flags", "enable-all")
    assert code == 0, out
    assert all(gateway.runtime.flags.current().as_mapping().values())


def test_rollback_prints_steps_validation_and_elapsed_time(gateway: RunningGateway):
    code, out = run(gateway, "rollback", "--level", "2", "--reason", "drill")
    assert code == 0, out
    for step in ("disable_all_flags", "check_mcp_health", "sample_request"):
        assert step in out
    assert "flags: all off (MCP-only)" in out
    assert "Rollback succeeded:" in out
    assert "the seed allows 5 minutes" in out

    code, out = run(gateway, "rollback", "--level", "3")
    assert code == 1
    assert "level 3 restores a routing-configuration version" in out


def test_rollback_reports_a_failed_step_and_exits_1(gateway: RunningGateway, mcp_sim):
    mcp_sim.set(outage=True)
    code, out = run(gateway, "rollback", "--level", "2", "--json")
    assert code == 1, out
    report = json.loads(out)["rollback"]
    assert report["ok"] is False
    failed = [s["name"] for s in report["steps"] if not s["ok"]]
    assert "check_mcp_health" in failed


def test_rules_commands_apply_preview_list_and_roll_back(gateway: RunningGateway, tmp_path: Path):
    code, out = run(gateway, "rules", "show")
    assert code == 0, out
    document = json.loads(out)
    assert document["version"] == 1
    document["matrix"]["standard"]["latency_budget_ms"] = 20_000
    path = tmp_path / "rules.json"
    path.write_text(json.dumps(document))

    code, out = run(gateway, "rules", "apply", str(path), "--dry-run")
    assert code == 0, out
    preview = json.loads(out)
    assert preview["dry_run"] is True
    assert preview["diff"]["changed"] == {"standard": {"latency_budget_ms": [30_000, 20_000]}}
    assert gateway.runtime.matrix.rules["standard"].latency_budget_ms == 30_000

    code, out = run(gateway, "rules", "apply", str(path), "--comment", "tighter")
    assert code == 0, out
    assert gateway.runtime.matrix.rules["standard"].latency_budget_ms == 20_000
    code, out = run(gateway, "rules", "apply", str(path))  # edited from version 1: stale
    assert code == 1
    assert "409" in out

    code, out = run(gateway, "rules", "versions")
    assert code == 0, out
    assert "tighter" in out
    assert "2 *" in out
    code, out = run(gateway, "rules", "validate")
    assert code == 0, out
    assert "version 2: valid" in out
    code, out = run(gateway, "rules", "rollback", "1")
    assert code == 0, out
    assert "version 1 restored as version 3" in out
    assert gateway.runtime.matrix.rules["standard"].latency_budget_ms == 30_000


def test_rules_apply_refuses_a_file_that_is_not_json(gateway: RunningGateway, tmp_path: Path):
    path = tmp_path / "rules.json"
    path.write_text("matrix: {}")
    code, out = run(gateway, "rules", "apply", str(path))
    assert code == 1
    assert "is not valid JSON" in out


def test_action_commands(gateway: RunningGateway):
    code, out = run(gateway, "action", "maintenance", "on", "--for", "15m", "--reason", "upgrade")
    assert code == 0, out
    assert "maintenance: on" in out
    assert "upgrade" in out
    code, out = run(gateway, "action", "route-disable", "direct_bedrock", "--for", "1h")
    assert code == 0, out
    assert "disabled routes: direct_bedrock" in out
    code, out = run(gateway, "action", "list")
    assert code == 0, out
    assert "route_disable" in out
    code, out = run(gateway, "action", "route-enable", "direct_bedrock")
    assert code == 0, out
    code, out = run(gateway, "action", "maintenance", "off")
    assert code == 0, out
    assert "no operator action in force" in out

    code, out = run(gateway, "action", "breaker-open", "nowhere")
    assert code == 1
    assert "needs 'route', one of direct_bedrock, mcp" in out
    code, out = run(gateway, "action", "maintenance", "on", "--for", "soon")
    assert code == 2
    assert "is not a duration" in out


@pytest.mark.parametrize("fmt", ["json", "csv"])
def test_audit_export_and_offline_verify(gateway: RunningGateway, tmp_path: Path, fmt: str):
    run(gateway, "flags", "disable-all", "--reason", "for the record")
    out_file = tmp_path / f"audit.{fmt}"
    code, out = run(gateway, "audit", "export", "--format", fmt, "--period", "all",
                    "--out", str(out_file))  # fmt: skip
    assert code == 0, out
    result = CliRunner().invoke(cli, ["audit", "verify", "--offline", str(out_file)])
    assert result.exit_code == 0, result.output
    assert "audit trail intact" in result.output
    code, out = run(gateway, "audit", "verify")
    assert code == 0, out
    assert "audit trail intact" in out
