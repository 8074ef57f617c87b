"""`hybridroute cost` against a live gateway: the figures it prints are the traffic's figures.

The gateway serves real requests on loopback; the expected spend is worked out from the usage
each response reports and the configured prices, then compared with the command's text and JSON.
"""

from __future__ import annotations

import json
import socket
from collections import defaultdict
from dataclasses import dataclass, field
from decimal import ROUND_HALF_EVEN, Decimal
from typing import Any

import httpx2 as httpx
import pytest
from click.testing import CliRunner, Result

from hybridroute.cli import cli
from hybridroute.cli.cost_cmd import render_cost
from tests.loopback import GatewayFactory, RunningGateway

PRICES = {
    "direct_bedrock": {"input_per_1k": "0.003", "output_per_1k": "0.015"},
    "mcp": {"input_per_1k": "0.00025", "output_per_1k": "0.00125"},
}
LIMIT = Decimal("0.004")  # the two standard requests at 80 % still fit their worst case
ADMIN_TOKEN = "cost-cli-admin-token"


@dataclass
class Figures:
    requests: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    cost: Decimal = Decimal(0)


@dataclass
class Traffic:
    total: Figures = field(default_factory=Figures)
    by_route: dict[str, Figures] = field(default_factory=lambda: defaultdict(Figures))

    def add(self, response: httpx.Response) -> None:
        assert response.status_code == 200, response.text
        route = response.headers["x-hybridroute-route"]
        usage = response.json()["usage"]
        inp, out = usage["prompt_tokens"], usage["completion_tokens"]
        price = PRICES[route]
        cost = (
            (inp * Decimal(price["input_per_1k"]) + out * Decimal(price["output_per_1k"])) / 1000
        ).quantize(Decimal("0.0000000001"), rounding=ROUND_HALF_EVEN)
        assert Decimal(response.headers["x-hybridroute-cost"]) == cost
        for figures in (self.total, self.by_route[route]):
            figures.requests += 1
            figures.input_tokens += inp
            figures.output_tokens += out
            figures.cost += cost


def budgeted(data: dict[str, Any]) -> None:
    data["pricing"] = {"currency": "USD", "routes": PRICES}
    data["budgets"] = {"global": {"daily": str(LIMIT)}}


def send_traffic(gateway: RunningGateway) -> Traffic:
    """Emergency requests (Direct Bedrock) until 80 % of the budget is spent, then two
    standard ones (MCP): spend ends between 80 % and 95 %, with the info threshold fired."""
    traffic = Traffic()
    with httpx.Client(base_url=gateway.url, timeout=30.0) as http:

        def ask(operation_type: str, content: str) -> None:
            body = {
                "model": "default",
                "messages": [{"role": "user", "content": content}],
                "max_tokens": 8,
            }
            response = http.post(
                "/v1/chat/completions", json=body, headers={"x-operation-type": operation_type}
            )
            traffic.add(response)

        while traffic.total.cost < LIMIT * Decimal("0.8"):
            ask("emergency", "disk full on db-1")
        for _ in range(2):
            ask("standard", "weekly summary please")
    assert traffic.total.cost < LIMIT * Decimal("0.95")
    return traffic


def run(*args: str) -> Result:
    return CliRunner().invoke(cli, ["cost", *args], catch_exceptions=False)


def money(amount: Decimal, places: int = 6) -> str:
    return f"{amount:.{places}f}"


def row(output: str, first: str) -> list[str]:
    """The whitespace-separated cells of the one line that starts with `first`."""
    lines = [line for line in output.splitlines() if line.split()[:1] == [first]]
    assert len(lines) == 1, (first, output)
    return lines[0].split()


@pytest.fixture
def no_admin_token(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("HYBRIDROUTE_ADMIN_TOKEN", raising=False)


@pytest.mark.usefixtures("no_admin_token")
def test_cost_prints_total_budgets_and_routes_of_the_traffic(start_gateway: GatewayFactory):
    gateway = start_gateway(budgeted)
    traffic = send_traffic(gateway)
    total = traffic.total

    result = run("--url", gateway.url)
    assert result.exit_code == 0, result.output
    out = result.output
    lines = out.splitlines()
    assert lines[0].startswith("Spend over the last 7 day(s) (")
    assert lines[0].endswith(", UTC), USD")
    assert lines[1] == (
        f"  total {money(total.cost)} for {total.requests} requests ({total.requests} charged "
        f"attempts; {total.input_tokens} tokens in, {total.output_tokens} out); 0.000000 of it "
        f"from estimated token counts; cost per request {money(total.cost / total.requests)}"
    )
    assert lines[2] == "  the response cache saved 0.000000 USD"

    assert "Budgets (thresholds: info 80 %, critical 95 %, exhausted 100 %)" in lines
    budget = row(out, "global")
    used = f"{float(total.cost / LIMIT) * 100:.1f}"
    assert budget[:9] == [
        "global",
        "daily",
        budget[2],  # today's window
        money(LIMIT, 2),
        money(total.cost),
        "0.000000",
        used,
        "%",
        "elevated",
    ]
    assert budget[-1] == "info"  # the fired column

    for route in ("direct_bedrock", "mcp"):
        figures = traffic.by_route[route]
        share = f"{figures.cost / total.cost * 100:.1f}"
        assert row(out, route) == [
            route,
            str(figures.requests),
            str(figures.input_tokens),
            str(figures.output_tokens),
            money(figures.cost),
            money(figures.cost / figures.requests),
            share,
            "%",
        ]
    assert row(out, "default")[:2] == ["default", str(total.requests)]  # the tenant table
    assert "Budget events (latest last):" in lines
    events = [line for line in lines if "[info]" in line]
    assert len(events) == 1
    assert "global daily budget" in events[0]
    assert "passed 80 %" in events[0]
    assert lines[-1] == "Spend is kept in memory (nothing survives a restart)"


@pytest.mark.usefixtures("no_admin_token")
def test_cost_json_is_the_admin_report(start_gateway: GatewayFactory):
    gateway = start_gateway(budgeted)
    traffic = send_traffic(gateway)

    result = run("--url", gateway.url, "--json", "--days", "2")
    assert result.exit_code == 0, result.output
    report = json.loads(result.output)
    assert report["days"] == 2
    spend = report["spend"]
    assert Decimal(spend["total"]["cost"]) == traffic.total.cost
    assert spend["total"]["requests"] == traffic.total.requests
    assert spend["by"]["route"].keys() == traffic.by_route.keys()
    for route, figures in traffic.by_route.items():
        assert Decimal(spend["by"]["route"][route]["cost"]) == figures.cost
        assert spend["by"]["route"][route]["input_tokens"] == figures.input_tokens
    (budget,) = report["budgets"]["budgets"]
    assert (budget["budget"], budget["period"], budget["level"]) == ("global", "daily", "elevated")
    assert Decimal(budget["spent"]) == traffic.total.cost
    assert budget["fired"] == ["info"]
    _, direct = gateway.get("/admin/cost?days=2")
    assert report["spend"] == direct["spend"]
    assert report["budgets"]["events"] == direct["budgets"]["events"]
    # the endpoint itself refuses what the option refuses
    status, error = gateway.get("/admin/cost?days=0")
    assert status == 400
    assert error["error"]["message"] == "'days' must be a whole number from 1 to 366, got '0'"


def test_cost_needs_the_admin_token_once_one_is_set(
    start_gateway: GatewayFactory, monkeypatch: pytest.MonkeyPatch
):
    monkeypatch.setenv("HYBRIDROUTE_ADMIN_TOKEN", ADMIN_TOKEN)
    gateway = start_gateway(budgeted)
    monkeypatch.delenv("HYBRIDROUTE_ADMIN_TOKEN")

    refused = run("--url", gateway.url)
    assert refused.exit_code == 1
    assert (
        f"Error: {gateway.url} answered 401: admin endpoints need 'Authorization: Bearer <token>'"
        in refused.output
    )
    allowed = run("--url", gateway.url, "--token", ADMIN_TOKEN, "--json")
    assert allowed.exit_code == 0, allowed.output
    assert json.loads(allowed.output)["spend"]["total"]["requests"] == 0


def test_cost_says_when_it_cannot_reach_the_gateway():
    with socket.socket() as probe:  # a loopback port nothing listens on once closed
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    url = f"http://127.0.0.1:{port}"
    result = run("--url", url)
    assert result.exit_code == 1
    assert f"Error: cannot reach the gateway at {url}" in result.output
    assert "is it running?" in result.output


@pytest.mark.parametrize("days", ["0", "367", "-1"])
def test_cost_refuses_days_out_of_range(days: str):
    result = run("--url", "http://127.0.0.1:9", "--days", days)
    assert result.exit_code == 2
    assert "Invalid value for '--days'" in result.output
    assert "cannot reach" not in result.output  # refused before any request


def test_cost_says_why_spend_is_missing_and_still_shows_the_budgets():
    report = {
        "days": 1,
        "spend": None,
        "spend_error": "SQLite store /srv/ledger.sqlite3: disk I/O error",
        "budgets": {
            "currency": "USD",
            "thresholds": {"info": 0.8, "critical": 0.95, "exhausted": 1.0},
            "budgets": [
                {
                    "budget": "global",
                    "period": "daily",
                    "window": "2026-12-04",
                    "limit": "10",
                    "spent": "2.5",
                    "reserved": "0",
                    "utilisation": 0.25,
                    "level": "normal",
                    "resets_in_s": 3600,
                    "fired": [],
                }
            ],
            "events": [],
            "store": {
                "where": "SQLite file /srv/ledger.sqlite3",
                "pending_writes": 3,
                "write_failures": 2,
                "last_write_error": "StorageError: disk I/O error",
            },
        },
        "cache_saved": "0",
    }
    text = render_cost(report, now=0.0)
    assert text.splitlines()[0] == (
        "Spend: not available: SQLite store /srv/ledger.sqlite3: disk I/O error"
    )
    assert row(text, "global")[:5] == ["global", "daily", "2026-12-04", "10.00", "2.500000"]
    assert "WARNING: 2 failed writes, 3 records waiting" in text
