"""The dashboard in a real browser: Debian's Chromium driven by Playwright, against a gateway on
the loopback simulators with real traffic.

Each view must show the numbers the admin API gives, charts must move when traffic does, an
alert raised by a simulator outage must appear and be acknowledged from the page, a flag turned
off on the controls page must change routing, and the page must work on a narrow screen with
labelled controls and no console error. The screenshots in docs/ are taken here.
"""

from __future__ import annotations

import math
import re
import shutil
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx2 as httpx
import pytest
from playwright.sync_api import Browser, ConsoleMessage, Page, sync_playwright

from tests.loopback import GatewayFactory, RunningGateway, Simulator, wait_for

CHROMIUM = "/usr/bin/chromium"
DOCS = Path(__file__).parents[2] / "docs"
VIEWER, OPERATOR = "dash-viewer-token-000000001", "dash-operator-token-00000002"
ADMIN = "dash-admin-token-000000003"
VIEWS = ("overview", "performance", "routing", "cost", "controls")
CHAT = {"model": "default", "messages": [{"role": "user", "content": "status of the fleet?"}]}


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    if shutil.which(CHROMIUM) is None:
        pytest.fail(f"{CHROMIUM} is missing: scripts/install installs Debian's chromium package")
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(
            executable_path=CHROMIUM,
            args=[
                "--no-sandbox",
                "--disable-gpu",
                "--disable-quic",
                "--no-first-run",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
            ],
        )
        yield launched
        launched.close()


class Console:
    """Console errors and uncaught exceptions of a page (there must be none)."""

    def __init__(self, page: Page) -> None:
        self.problems: list[str] = []
        page.on("console", self._message)
        page.on("pageerror", lambda error: self.problems.append(f"uncaught: {error}"))

    def _message(self, message: ConsoleMessage) -> None:
        if message.type in ("error", "warning"):
            self.problems.append(f"{message.type}: {message.text}")


@pytest.fixture
def dashboard_gateway(
    start_gateway: GatewayFactory, monkeypatch: pytest.MonkeyPatch
) -> RunningGateway:
    monkeypatch.setenv("DASH_VIEWER", VIEWER)
    monkeypatch.setenv("DASH_OPERATOR", OPERATOR)
    monkeypatch.setenv("DASH_ADMIN", ADMIN)

    def changes(data: dict[str, Any]) -> None:
        data["admin"] = {
            "tokens": [
                {"name": "vera", "role": "viewer", "token": "env:DASH_VIEWER"},
                {"name": "otto", "role": "operator", "token": "env:DASH_OPERATOR"},
                {"name": "ada", "role": "admin", "token": "env:DASH_ADMIN"},
            ]
        }
        data["alerts"] = {"evaluate_every_s": 0.3}
        data["slo"] = {"min_requests": 5}
        data["budgets"] = {"global": {"daily": "5.00"}}
        data["cache"] = {"enabled": True}

    return start_gateway(changes)


def admin(gateway: RunningGateway, path: str, token: str = VIEWER) -> Any:
    response = httpx.get(
        gateway.url + path, headers={"authorization": f"Bearer {token}"}, timeout=10
    )
    assert response.status_code == 200, response.text
    return response.json()


def send(gateway: RunningGateway, operation: str, count: int) -> list[httpx.Response]:
    with httpx.Client(base_url=gateway.url, timeout=30) as http:
        return [
            http.post("/v1/chat/completions", json=CHAT, headers={"x-operation-type": operation})
            for _ in range(count)
        ]


def open_dashboard(browser: Browser, gateway: RunningGateway, token: str, **size: int) -> Page:
    context = browser.new_context(viewport={"width": size.get("width", 1280),
                                            "height": size.get("height", 800)})  # fmt: skip
    page = context.new_page()
    page.goto(f"{gateway.url}/dashboard")
    page.get_by_label("Admin token").fill(token)
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_selector("body[data-loaded='overview']")
    return page


def go(page: Page, view: str) -> None:
    page.get_by_role("link", name=view.capitalize()).click()
    page.wait_for_selector(f"body[data-loaded='{view}']")


def pct(value: float | None, digits: int = 1) -> str:
    """A ratio as the page writes it."""
    return "–" if value is None else f"{value * 100:.{digits}f} %"


def ms(value: float | None) -> str:
    """Milliseconds as the page writes them (JavaScript's Math.round)."""
    return "–" if value is None else f"{math.floor(value + 0.5)} ms"


def shown(page: Page, test_id: str) -> str:
    return page.get_by_test_id(test_id).inner_text().strip()


def test_the_views_show_what_the_admin_api_says(
    browser: Browser, dashboard_gateway: RunningGateway, bedrock_sim: Simulator, mcp_sim: Simulator
):
    gateway = dashboard_gateway
    bedrock_sim.set(latency_ms=120.0, jitter_ms=40.0)  # upstreams that take their time
    mcp_sim.set(latency_ms=80.0, jitter_ms=30.0)
    # Traffic over three of the charts' 10-second steps, so they draw lines, not dots.
    for burst in range(3):
        for operation, count in (("standard", 4), ("emergency", 2), ("infrastructure", 2)):
            assert {r.status_code for r in send(gateway, operation, count)} == {200}
        send(gateway, "meta_monitor", 4)  # one question, asked again: cache hits
        if burst < 2:
            time.sleep(10.0 - time.time() % 10.0 + 0.1)  # noqa: TID251 - the next step

    page = open_dashboard(browser, gateway, VIEWER)
    console = Console(page)
    page.reload()  # the token is kept for the tab: no second sign-in
    page.wait_for_selector("body[data-loaded='overview']")

    # Overview: the health score, the SLO figures and the budget, as the API gives them.
    health = admin(gateway, "/admin/health/status")
    slo = admin(gateway, "/admin/slo?window=5m")
    cost = admin(gateway, "/admin/cost?days=1")
    page.wait_for_timeout(2300)  # one refresh after the API calls above
    assert shown(page, "health-score") == str(health["score"])
    assert shown(page, "health-status").lower() == health["status"]
    assert shown(page, "metric-requests") == f"{slo['requests']} requests"
    assert shown(page, "metric-error-rate") == pct(slo["figures"]["error_rate"], 2)
    assert slo["figures"]["generation_p95_ms"] is not None
    assert shown(page, "metric-p95") == ms(slo["figures"]["generation_p95_ms"])
    assert slo["figures"]["cache_hit_rate"] is not None
    assert shown(page, "metric-cache-hit") == pct(slo["figures"]["cache_hit_rate"])
    budget = cost["budgets"]["budgets"][0]
    assert shown(page, "metric-budget") == pct(budget["utilisation"])
    assert shown(page, "no-alerts") == "No active alerts."
    page.screenshot(path=str(DOCS / "dashboard-overview.png"), full_page=True)

    # Performance: the latency table is the provider-latencies endpoint over the same window.
    go(page, "performance")
    latencies = admin(gateway, "/admin/metrics/provider-latencies?window=10m")
    table = page.get_by_test_id("latency-table")
    for route, figures in latencies["routes"].items():
        row = table.locator("tr", has_text=route)
        assert row.locator("td").nth(1).inner_text() == str(figures["count"])
    cached_row = table.locator("tr", has_text="cache hits")
    assert cached_row.locator("td").nth(1).inner_text() == str(latencies["cached"]["count"])
    assert page.get_by_test_id("chart-latency").locator("svg[role='img']").count() == 1
    page.screenshot(path=str(DOCS / "dashboard-performance.png"), full_page=True)

    # Routing: accuracy, efficiency, fallback rate and breaker states.
    go(page, "routing")
    health = admin(gateway, "/admin/health/status")
    assert shown(page, "routing-accuracy") == pct(health["routing_accuracy"])
    assert shown(page, "routing-efficiency") == pct(health["routing_efficiency"])
    for breaker in admin(gateway, "/admin/health/circuit-breakers")["routes"]:
        assert shown(page, f"breaker-state-{breaker['route']}") == breaker["state"]
    page.screenshot(path=str(DOCS / "dashboard-routing.png"), full_page=True)

    # Cost: budgets with their marks, the spend total and the breakdowns.
    go(page, "cost")
    cost = admin(gateway, "/admin/cost?days=1")
    total = cost["spend"]["total"]
    assert shown(page, "cost-total") == f"{total['cost']} USD over {total['requests']} requests"
    assert shown(page, "budget-utilisation").startswith(
        pct(cost["budgets"]["budgets"][0]["utilisation"]) + " used"
    )
    assert "projected at the end of the day" in shown(page, "budget-projection")
    by_route = page.get_by_test_id("cost-by-route")
    for route, figures in cost["spend"]["by"]["route"].items():
        assert (
            by_route.locator("tr", has_text=route).locator("td").nth(3).inner_text()
            == (figures["cost"])
        )
    page.screenshot(path=str(DOCS / "dashboard-cost.png"), full_page=True)

    # Controls: the flags as the API has them.
    go(page, "controls")
    for name, on in admin(gateway, "/admin/feature-flags/bedrock")["flags"].items():
        assert shown(page, f"flag-state-{name}") == ("on" if on else "off")
    page.screenshot(path=str(DOCS / "dashboard-controls.png"), full_page=True)
    assert console.problems == []


def test_a_chart_moves_when_traffic_does(browser: Browser, dashboard_gateway: RunningGateway):
    gateway = dashboard_gateway
    page = open_dashboard(browser, gateway, VIEWER)
    console = Console(page)
    go(page, "performance")
    line = page.get_by_test_id("chart-throughput").locator("path[data-series]")
    before = line.get_attribute("d")
    send(gateway, "standard", 20)
    wait_for(lambda: line.get_attribute("d") != before, timeout=10)
    page.get_by_label("Percentile by route and operation type").select_option("p99")
    by_route = page.get_by_test_id("chart-route-p95").locator("svg")
    wait_for(
        lambda: by_route.get_attribute("aria-label") == ("P99 latency by route in milliseconds"),
        timeout=5,
    )
    requests = page.get_by_test_id("chart-distribution")
    go(page, "routing")
    assert requests.locator("path[data-series='mcp']").count() == 1
    assert console.problems == []


def test_an_outage_alert_appears_and_is_acknowledged(
    browser: Browser, dashboard_gateway: RunningGateway, bedrock_sim: Simulator
):
    gateway = dashboard_gateway
    page = open_dashboard(browser, gateway, OPERATOR)
    console = Console(page)
    bedrock_sim.set(outage=True)
    send(gateway, "emergency", 3)  # two attempts each: the breaker opens
    row = page.get_by_test_id("alert-row").filter(has_text="bedrock_connection_failure")
    row.wait_for(timeout=15_000)
    assert row.get_by_test_id("alert-status").inner_text() == "firing"
    row.get_by_role("button", name="Acknowledge alert bedrock_connection_failure").click()
    page.get_by_label("Reason (kept in the audit trail)").fill("looking into the outage")
    page.get_by_role("button", name="Confirm").click()
    status = row.get_by_test_id("alert-status")
    wait_for(lambda: status.inner_text() == "acknowledged by otto", timeout=10)
    alerts = admin(gateway, "/admin/alerts")
    (alert,) = [a for a in alerts["active"] if a["rule"] == "bedrock_connection_failure"]
    assert alert["status"] == "acknowledged"
    assert alert["acknowledge_note"] == "looking into the outage"
    assert console.problems == []


def test_a_flag_turned_off_on_the_page_changes_routing(
    browser: Browser, dashboard_gateway: RunningGateway, mcp_sim: Simulator
):
    gateway = dashboard_gateway
    (first,) = send(gateway, "emergency", 1)
    assert first.headers["x-hybridroute-route"] == "direct_bedrock"
    page = open_dashboard(browser, gateway, OPERATOR)
    console = Console(page)
    go(page, "controls")
    page.get_by_role("button", name="Turn ENABLE_INTELLIGENT_ROUTING off").click()
    page.get_by_label("Reason (kept in the audit trail)").fill("drill")
    page.get_by_role("button", name="Confirm").click()
    state = page.get_by_test_id("flag-state-ENABLE_INTELLIGENT_ROUTING")
    wait_for(lambda: state.inner_text() == "off", timeout=10)
    (after,) = send(gateway, "emergency", 1)
    assert after.headers["x-hybridroute-route"] == "mcp"
    flags = admin(gateway, "/admin/feature-flags/bedrock")
    assert flags["last_change"]["by"] == "otto"
    assert flags["last_change"]["reason"] == "drill"

    # A routing version rolled back from the page: an admin applied version 2 ...
    rules = admin(gateway, "/admin/config/routing-rules")
    rules["matrix"]["standard"]["latency_budget_ms"] = 20_000
    applied = httpx.put(
        gateway.url + "/admin/config/routing-rules",
        json={**rules, "comment": "tighter standard budget"},
        headers={"authorization": f"Bearer {ADMIN}"},
        timeout=10,
    )
    assert applied.status_code == 200, applied.text
    versions = page.get_by_test_id("versions")
    versions.locator("tr", has_text="tighter standard budget").wait_for(timeout=5000)
    # ... and the operator rolls back to version 1 from the controls page.
    page.get_by_role("button", name="Roll back to version 1").click()
    page.get_by_label("Reason (kept in the audit trail)").fill("back to the file")
    page.get_by_role("button", name="Confirm").click()
    versions.locator("tr", has_text="3 (in force)").wait_for(timeout=5000)
    assert gateway.runtime.matrix.rules["standard"].latency_budget_ms == 30_000
    assert admin(gateway, "/admin/config/routing-rules")["comment"] == "back to the file"
    assert console.problems == []


def test_a_viewer_cannot_change_anything_and_sees_why(
    browser: Browser, dashboard_gateway: RunningGateway
):
    page = open_dashboard(browser, dashboard_gateway, VIEWER)
    go(page, "controls")
    page.get_by_role("button", name="Turn ENABLE_DIRECT_BEDROCK_FALLBACK off").click()
    page.get_by_role("button", name="Confirm").click()
    banner = page.get_by_role("alert").filter(has_text="needs operator")
    banner.wait_for(timeout=5000)
    assert admin(dashboard_gateway, "/admin/feature-flags/bedrock")["flags"][
        "ENABLE_DIRECT_BEDROCK_FALLBACK"
    ]


def test_signing_in_with_a_wrong_token_says_so(browser: Browser, dashboard_gateway: RunningGateway):
    page = browser.new_page()
    page.goto(f"{dashboard_gateway.url}/dashboard")
    page.get_by_label("Admin token").fill("not-a-token")
    page.get_by_role("button", name="Sign in").click()
    error = page.locator("#login-error")
    wait_for(lambda: "not valid" in error.inner_text(), timeout=5)
    assert page.get_by_role("heading", name="Sign in").is_visible()


@pytest.mark.parametrize("view", VIEWS)
def test_every_view_fits_a_narrow_screen_with_labelled_controls(
    browser: Browser, dashboard_gateway: RunningGateway, view: str
):
    send(dashboard_gateway, "standard", 3)
    page = open_dashboard(browser, dashboard_gateway, OPERATOR, width=390, height=844)
    console = Console(page)
    if view != "overview":
        page.goto(f"{dashboard_gateway.url}/dashboard#{view}")
        page.wait_for_selector(f"body[data-loaded='{view}']")
    overflow = page.evaluate(
        "document.documentElement.scrollWidth - document.documentElement.clientWidth"
    )
    assert overflow <= 0, f"{view} scrolls sideways by {overflow}px at 390px"
    unlabelled = page.evaluate(
        """() => [...document.querySelectorAll('button, input, select, a[href]')]
            .filter((el) => el.offsetParent !== null)
            .filter((el) => !(el.getAttribute('aria-label') || (el.labels && el.labels.length)
                              || el.textContent.trim()))
            .map((el) => el.outerHTML)"""
    )
    assert unlabelled == []
    assert re.fullmatch(r"live · updated .+", page.locator("#live").inner_text())
    assert console.problems == []


def test_the_page_is_served_with_security_headers(dashboard_gateway: RunningGateway):
    response = httpx.get(dashboard_gateway.url + "/dashboard", timeout=10)
    assert response.status_code == 200
    assert "default-src 'none'" in response.headers["content-security-policy"]
    assert response.headers["x-frame-options"] == "DENY"
    assert response.headers["x-content-type-options"] == "nosniff"
    assert httpx.get(dashboard_gateway.url + "/dashboard/../pyproject.toml").status_code == 404
    assert httpx.get(dashboard_gateway.url + "/dashboard/nope.js").status_code == 404
    session = httpx.get(dashboard_gateway.url + "/dashboard/session").json()
    assert session == {"token_required": True}
