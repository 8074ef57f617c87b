"""`hybridroute deploy check` against the loopback simulators: a healthy deployment passes and
writes its report; the original deployment's route-id mismatch, a dead MCP server and missing
production settings fail with the right check and message."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml
from click.testing import CliRunner

from hybridroute.cli import cli
from hybridroute.config.defaults import DEFAULT_MATRIX
from tests.loopback import Simulator, gateway_config_data, wait_for

SMOKE = [
    "IntelligentRouter.routing_decision_basic",
    "DirectBedrockClient.direct_connection",
    "MCPRouter.mcp_connection",
    "HybridHealthMonitor.health_check_basic",
    "BedrockSupportManager.support_mode_basic",
]
INTEGRATION = [
    "feature_flags_system",
    "audit_trail_system",
    "monitoring_system",
    "compliance_system",
    "circuit_breaker_system",
]


def check(tmp_path: Path, data: dict[str, Any], *args: str) -> tuple[int, dict[str, Any], str]:
    path = tmp_path / "gateway.yaml"
    path.write_text(yaml.safe_dump(data))
    out = tmp_path / "reports"
    result = CliRunner().invoke(
        cli, ["deploy", "check", "--config", str(path), "--out", str(out), *args]
    )
    (report_file,) = out.glob("*.json")
    (markdown,) = out.glob("*.md")
    assert markdown.read_text().startswith("# Hybrid Routing Deployment Documentation")
    return result.exit_code, json.loads(report_file.read_text()), result.output


def results(report: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {r["name"]: r for r in report["results"]}


@pytest.fixture
def data(bedrock_sim: Simulator, mcp_sim: Simulator) -> dict[str, Any]:
    return gateway_config_data(bedrock_sim, mcp_sim)


def test_a_healthy_development_deployment_passes(tmp_path: Path, data: dict[str, Any]):
    code, report, output = check(tmp_path, data, "--env", "development")
    assert code == 0, output
    assert report["status"] == "PASSED"
    assert report["deployment_id"].startswith("hybrid-routing-deve-")
    found = results(report)
    assert [r["name"] for r in report["results"] if r["kind"] == "smoke"] == SMOKE
    assert [r["name"] for r in report["results"] if r["kind"] == "integration"] == INTEGRATION
    assert [n for n, r in found.items() if not r["passed"]] == []
    assert found["DirectBedrockClient.direct_connection"]["duration_ms"] > 0
    assert "7 matrix rows decide as configured" in found[SMOKE[0]]["detail"]
    # The Markdown is the original report's layout, with measured durations.
    assert "- **Status**: PASSED" in output
    assert "## Smoke Test Results" in output
    assert "- IntelligentRouter.routing_decision_basic: PASS (" in output
    assert "- ENABLE_DIRECT_BEDROCK_FALLBACK=true" in output
    # Development gates nothing, but says what staging and production would refuse.
    assert any(w.startswith("admin_access:") for w in report["warnings"])


def test_the_seeds_route_id_mismatch_fails_the_routing_check(tmp_path: Path, data: dict[str, Any]):
    # One route known as `direct` where the canonical matrix says `direct_bedrock`.
    data["routes"]["direct"] = data["routes"].pop("direct_bedrock")
    data["matrix"] = {
        op: {k: ("direct" if v == "direct_bedrock" else v) for k, v in row.items()}
        for op, row in DEFAULT_MATRIX.items()
    }
    pricing = data.get("pricing", {}).get("routes", {})
    if "direct_bedrock" in pricing:
        pricing["direct"] = pricing.pop("direct_bedrock")
    code, report, output = check(tmp_path, data)
    assert code == 1
    assert report["status"] == "FAILED"
    routing = results(report)["IntelligentRouter.routing_decision_basic"]
    assert routing["passed"] is False
    assert routing["error"].startswith(
        "Routing decision matrix validation failed: "
        "Expected emergency to route to direct_bedrock, got direct"
    )
    assert "- IntelligentRouter.routing_decision_basic: FAIL (" in output
    assert "- Routing decision matrix validation failed: Expected emergency" in output
    assert results(report)["DirectBedrockClient.direct_connection"]["passed"] is True


def test_a_dead_mcp_server_fails_the_mcp_check(tmp_path: Path, data: dict[str, Any]):
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # closed again: nothing listens there
    data["routes"]["mcp"]["url"] = f"http://127.0.0.1:{port}/mcp"
    code, report, _ = check(tmp_path, data)
    assert code == 1
    found = results(report)
    assert found["MCPRouter.mcp_connection"]["passed"] is False
    assert found["MCPRouter.mcp_connection"]["error"].startswith(
        "MCP connection failed on route mcp:"
    )
    assert found["HybridHealthMonitor.health_check_basic"]["passed"] is False
    assert found["DirectBedrockClient.direct_connection"]["passed"] is True


def test_staging_refuses_an_open_admin_api_and_memory_storage(tmp_path: Path, data: dict[str, Any]):
    code, report, _ = check(tmp_path, data, "--env", "staging")
    assert code == 1
    gates = {r["name"]: r for r in report["results"] if r["kind"] == "gate"}
    assert set(gates) == {"flags_profile", "admin_access", "durable_storage", "slo_latency"}
    assert gates["admin_access"]["passed"] is False
    assert gates["durable_storage"]["passed"] is False
    assert gates["flags_profile"]["passed"] is True
    assert gates["slo_latency"]["passed"] is True
    assert "durable_storage: storage.backend is memory" in "\n".join(report["errors"])


def test_production_passes_with_everything_it_asks_for(
    tmp_path: Path, data: dict[str, Any], monkeypatch: pytest.MonkeyPatch
):
    monkeypatch.setenv("DEPLOY_AUDIT_KEY", "a-long-random-audit-key-0123456789")
    data["admin"] = {"tokens": [{"name": "ops", "role": "admin", "sha256": "0" * 64}]}
    data["storage"] = {"backend": "sqlite", "sqlite_path": str(tmp_path / "prod.sqlite3")}
    data["budgets"] = {"global": {"daily": "100.00"}}
    data["audit"] = {"hmac_key": "env:DEPLOY_AUDIT_KEY"}
    data["alerts"] = {"sinks": [{"type": "webhook", "url": "http://127.0.0.1:9/hook"}]}
    code, report, output = check(tmp_path, data, "--env", "production")
    assert code == 0, output
    gates = [r["name"] for r in report["results"] if r["kind"] == "gate"]
    assert gates == [
        "flags_profile",
        "admin_access",
        "durable_storage",
        "slo_latency",
        "budgets",
        "audit_trail",
        "audit_trail_keyed",
        "pii_redaction",
        "alert_notifications",
    ]
    assert report["warnings"] == []
    # The check wrote nothing into the deployment's database.
    assert not (tmp_path / "prod.sqlite3").exists()


def test_without_a_config_it_needs_a_running_demo(tmp_path: Path):
    result = CliRunner().invoke(cli, ["deploy", "check", "--demo-dir", str(tmp_path)])
    assert result.exit_code == 1
    assert "no running demo found" in result.output


def test_the_running_demo_passes_its_deploy_check(tmp_path: Path):
    """`hybridroute demo`, then `hybridroute deploy check` with no configuration: it finds the
    demo's simulators through `<data-dir>/demo.json`."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    data_dir = tmp_path / "data"
    demo = subprocess.Popen(
        [str(Path(sys.executable).with_name("hybridroute")), "demo", "--no-traffic",
         "--port", str(port), "--data-dir", str(data_dir)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        wait_for(lambda: (data_dir / "demo.json").exists(), timeout=60)
        out = tmp_path / "reports"
        result = CliRunner().invoke(
            cli, ["deploy", "check", "--demo-dir", str(data_dir), "--out", str(out)]
        )
        assert result.exit_code == 0, result.output
        assert "- **Status**: PASSED" in result.output
        assert "- **Configuration**: the running demo (" in result.output
        assert len(list(out.glob("hybrid-routing-deve-*.md"))) == 1
    finally:
        demo.terminate()
        demo.wait(timeout=30)
