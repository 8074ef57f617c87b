"""The Hybrid Health Monitor in a running gateway: real traffic in, the report and CLI out."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from typing import Any

import pytest
from click.testing import CliRunner
from openai import OpenAI

from hybridroute.cli import cli
from tests.loopback import GatewayFactory, RunningGateway, Simulator


def ask(gateway: RunningGateway, operation_type: str, n: int = 1) -> None:
    api = OpenAI(base_url=f"{gateway.url}/v1", api_key="x", max_retries=0)
    for _ in range(n):
        api.chat.completions.create(
            model="default",
            messages=[{"role": "user", "content": "status?"}],
            extra_headers={"X-Operation-Type": operation_type},
        )


def status(gateway: RunningGateway) -> dict[str, Any]:
    code, body = gateway.get("/admin/health/status")
    assert code == 200, body
    return body


def test_report_counts_real_traffic_and_its_fallbacks(
    start_gateway: GatewayFactory, bedrock_sim: Simulator
):
    # a breaker that stays closed, so every request tries the primary first
    gateway = start_gateway(
        lambda d: d.update(breaker={"consecutive_failures": 100, "failure_rate": 1.0})
    )
    ask(gateway, "infrastructure", 15)
    ask(gateway, "standard", 5)
    bedrock_sim.set(outage=True)
    ask(gateway, "infrastructure", 10)  # each: direct_bedrock fails, mcp serves

    report = status(gateway)
    assert report["requests"] == 30
    assert report["served"] == 30
    assert report["fallback_rate"] == pytest.approx(10 / 30)
    assert report["routing_efficiency"] == pytest.approx(20 / 30)
    assert report["routing_accuracy"] == 1.0  # every eligible decision put the primary first
    infra = next(o for o in report["operations"] if o["operation_type"] == "infrastructure")
    assert infra["requests"] == 25
    assert infra["fallback_rate"] == pytest.approx(10 / 25)
    direct = next(r for r in report["routes"] if r["route"] == "direct_bedrock")
    assert direct["attempts"] == 25
    assert direct["success_rate"] == pytest.approx(15 / 25)
    assert direct["status"] == "degraded"
    assert direct["last_error"].startswith("ServiceUnavailableException")
    assert direct["p95_ms"] is not None
    codes = {r["code"] for r in report["recommendations"]}
    assert {"high-fallback-rate", "low-efficiency", "no-fallback"} <= codes
    assert direct["detail"] == "10 of its last 25 attempts failed (breaker window)"


def test_cli_prints_the_report_as_tables(gateway: RunningGateway):
    ask(gateway, "emergency", 3)
    result = CliRunner().invoke(cli, ["health", "--url", gateway.url])
    assert result.exit_code == 0, result.output
    out = result.output
    assert out.startswith("Health score 100/100 (healthy); window 5.0 min")
    assert "requests 3, served 3" in out
    assert "routing accuracy 100.0 %, routing efficiency 100.0 %, fallback rate 0.0 %" in out
    direct_row = next(line for line in out.splitlines() if line.startswith("direct_bedrock"))
    assert direct_row.split()[1:3] == ["healthy", "closed"]
    emergency_row = next(line for line in out.splitlines() if line.startswith("emergency "))
    assert emergency_row.split()[:4] == ["emergency", "critical", "5", "s"]
    assert "Recommendations: none" in out

    as_json = CliRunner().invoke(cli, ["health", "--url", gateway.url, "--json"])
    assert json.loads(as_json.output)["requests"] == 3


def test_cli_explains_an_unreachable_gateway():
    result = CliRunner().invoke(cli, ["health", "--url", "http://127.0.0.1:9"])
    assert result.exit_code == 1
    assert "cannot reach the gateway at http://127.0.0.1:9" in result.output
    assert "hybridroute demo" in result.output


def test_admin_token_is_required_once_set(
    start_gateway: GatewayFactory, monkeypatch: pytest.MonkeyPatch
):
    monkeypatch.setenv("HYBRIDROUTE_ADMIN_TOKEN", "s3cret-token")
    gateway = start_gateway()
    code, body = gateway.get("/admin/health/status")
    assert code == 401
    assert body["error"]["code"] == "unauthorized"

    def get(token: str) -> int:
        request = urllib.request.Request(
            f"{gateway.url}/admin/health/status", headers={"authorization": f"Bearer {token}"}
        )
        try:
            with urllib.request.urlopen(request, timeout=10) as response:
                return int(response.status)
        except urllib.error.HTTPError as error:
            return error.code

    assert get("wrong") == 401
    assert get("s3cret-token") == 200
    refused = CliRunner().invoke(cli, ["health", "--url", gateway.url, "--token", "nope"])
    assert refused.exit_code == 1
    assert "answered 401: the bearer token is not valid" in refused.output
    allowed = CliRunner().invoke(cli, ["health", "--url", gateway.url])  # token from env
    assert allowed.exit_code == 0, allowed.output
