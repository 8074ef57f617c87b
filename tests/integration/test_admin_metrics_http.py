"""The admin metrics, SLO, breaker and alert endpoints over loopback HTTP.

One gateway (module scope) takes a planned mix — JSON and streamed answers on both routes,
cache misses, hits and a bypass (the cache is on for `meta_monitor` alone), a residency
refusal, one slow answer, fallbacks in a Direct Bedrock outage and a failed emergency — and
each view is compared with the figures the mix implies, exactly. `slo.min_requests` is lowered
to 2 so that a short mix is judged, and alert rules are evaluated at every sample (1 s).
Access from a non-loopback address is not testable over loopback and is left out.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

import httpx2 as httpx
import pytest

from hybridroute.app import create_app
from hybridroute.config.load import parse_config
from hybridroute.serving import ThreadedServer
from tests.integration.test_metrics_http import (
    CACHED_OPERATION,
    Sent,
    chat,
    configure,
    expect,
    scrape,
)
from tests.loopback import (
    GatewayFactory,
    RunningGateway,
    Simulator,
    gateway_config_data,
    wait_for,
)

SLOW_MS = 300
WINDOWED = (
    "/admin/metrics/routing-distribution",
    "/admin/metrics/provider-latencies",
    "/admin/metrics/cache-performance",
    "/admin/metrics/error-breakdown",
)


def _configure(data: dict[str, Any]) -> None:
    configure(data)
    data["routes"]["direct_bedrock"].pop("max_in_flight")  # nothing is shed in this mix
    data["routes"]["direct_bedrock"].pop("max_queue")
    data["slo"] = {"min_requests": 2}
    data["alerts"] = {"evaluate_every_s": 0.2}


def _drive(gateway: RunningGateway, bedrock: Simulator) -> list[Sent]:
    b, m = "direct_bedrock", "mcp"
    op = CACHED_OPERATION
    sent = [expect(chat(gateway, "emergency"), 200, b, "off") for _ in range(3)]
    sent += [expect(chat(gateway, "standard"), 200, m, "off") for _ in range(2)]
    sent.append(expect(chat(gateway, "background", stream=True), 200, m, "off"))
    sent.append(expect(chat(gateway, op, "q"), 200, b, "miss"))
    sent.append(expect(chat(gateway, op, "q"), 200, b, "hit"))
    sent.append(expect(chat(gateway, op, "q", stream=True), 200, b, "hit"))
    no_cache = {"Cache-Control": "no-cache"}
    sent.append(expect(chat(gateway, op, "q", headers=no_cache), 200, b, "bypass"))
    us = {"X-Data-Residency": "us"}
    sent.append(
        expect(chat(gateway, "standard", headers=us), 422, "none", None, "residency_unsatisfiable")
    )
    bedrock.set(latency_ms=SLOW_MS)
    sent.append(expect(chat(gateway, "emergency", "slow"), 200, b, "off"))
    bedrock.set(latency_ms=0, outage=True)
    sent += [expect(chat(gateway, "infrastructure"), 200, m, "off") for _ in range(6)]
    sent.append(expect(chat(gateway, "emergency"), 503, "none", None, "all_routes_failed"))
    return sent


@dataclass
class Mix:
    gateway: RunningGateway
    sent: list[Sent]

    def get(self, path: str, status: int = 200) -> dict[str, Any]:
        code, body = self.gateway.get(path)
        assert code == status, body
        return body

    def cost(self, route: str | None = None) -> Decimal:
        return sum((s.cost for s in self.sent if route is None or s.route == route), Decimal(0))

    def efficient(self) -> int:
        """Served by the first route tried (all well within their budgets here)."""
        return sum(
            1
            for s in self.sent
            if s.status == 200 and s.cache != "hit" and s.first_tried == s.route
        )


@pytest.fixture(scope="module")
def mix(bedrock_sim: Simulator, mcp_sim: Simulator) -> Iterator[Mix]:
    for sim in (bedrock_sim, mcp_sim):
        sim.knobs.reset()
        sim.stats.clear()
    data = gateway_config_data(bedrock_sim, mcp_sim)
    _configure(data)
    app = create_app(parse_config(data))
    with ThreadedServer(app, name="gateway") as server:
        gateway = RunningGateway(server.url, app)
        gateway.wait_ready()
        try:
            sent = _drive(gateway, bedrock_sim)
        finally:
            bedrock_sim.knobs.reset()
        # A request is counted just after its answer is sent: wait for the last one.
        path = "/admin/metrics/error-breakdown"
        wait_for(lambda: gateway.get(path)[1]["requests"] >= len(sent), timeout=10)
        yield Mix(gateway, sent)


def _without_frame(body: dict[str, Any], window_s: float = 3600.0) -> dict[str, Any]:
    assert body["window_s"] == window_s
    assert 0 < body["span_s"] <= 60  # the gateway has run for seconds, not minutes
    return {k: v for k, v in body.items() if k not in ("window_s", "span_s")}


# -- the traffic views -----------------------------------------------------------------------


def test_routing_distribution_counts_what_each_route_served(mix: Mix):
    body = _without_frame(mix.get("/admin/metrics/routing-distribution"))
    generated = [s for s in mix.sent if s.status == 200 and s.cache != "hit"]

    def tokens(route: str, kind: str) -> int:
        return sum(getattr(s, f"{kind}_tokens") for s in generated if s.route == route)

    answered = [s for s in mix.sent if s.status == 200]
    assert Decimal(body.pop("cost")) == mix.cost() > 0
    routes = body.pop("routes")
    for route in ("direct_bedrock", "mcp"):
        assert Decimal(routes[route].pop("cost")) == mix.cost(route)
    assert routes == {
        "direct_bedrock": {
            "served": 6,
            "share": 0.4,
            "fallbacks": 0,
            "input_tokens": tokens("direct_bedrock", "input"),
            "output_tokens": tokens("direct_bedrock", "output"),
        },
        "mcp": {
            "served": 9,
            "share": 0.6,
            "fallbacks": 6,
            "input_tokens": tokens("mcp", "input"),
            "output_tokens": tokens("mcp", "output"),
        },
    }
    # The totals' tokens include what the cache hits reported (they cost nothing).
    assert body == {
        "served": 15,
        "fallbacks": 6,
        "fallback_rate": 0.4,
        "input_tokens": sum(s.input_tokens for s in answered),
        "output_tokens": sum(s.output_tokens for s in answered),
        "operations": {
            "background": {
                "requests": 1,
                "served": {"mcp": 1},
                "fallbacks": 0,
                "fallback_rate": 0.0,
            },
            "emergency": {
                "requests": 5,
                "served": {"direct_bedrock": 4},
                "fallbacks": 0,
                "fallback_rate": 0.0,
            },
            "infrastructure": {
                "requests": 6,
                "served": {"mcp": 6},
                "fallbacks": 6,
                "fallback_rate": 1.0,
            },
            "meta_monitor": {
                "requests": 4,
                "served": {"direct_bedrock": 2},
                "fallbacks": 0,
                "fallback_rate": 0.0,
            },
            "standard": {
                "requests": 3,
                "served": {"mcp": 2},
                "fallbacks": 0,
                "fallback_rate": 0.0,
            },
        },
    }


def _ordered(figures: dict[str, Any]) -> list[float]:
    keys = ("p50_ms", "p90_ms", "p95_ms", "p99_ms", "max_ms")
    values = [figures[k] for k in keys]
    assert all(isinstance(v, float) for v in values), figures
    assert values == sorted(values), figures
    assert 0 < figures["mean_ms"] <= figures["max_ms"] * 1.03
    return values


def test_provider_latencies_count_answers_per_route_with_ordered_percentiles(mix: Mix):
    body = _without_frame(mix.get("/admin/metrics/provider-latencies"))
    assert set(body) == {"routes", "cached", "ttft"}
    routes = body["routes"]
    assert {name: (r["count"], r["errors"]) for name, r in routes.items()} == {
        "direct_bedrock": (6, 1),  # the failed emergency counts against its first route
        "mcp": (9, 0),
    }
    assert body["cached"]["count"] == 2
    assert body["ttft"]["count"] == 1  # one stream generated by a route
    for figures in (*routes.values(), body["cached"], body["ttft"]):
        _ordered(figures)
    # The slowest Bedrock answer is the slow one: reported to within its bin (±2.5 %) and
    # never longer than the caller waited.
    (slow,) = [s for s in mix.sent if s.operation_type == "emergency" and s.elapsed_s > 0.25]
    assert SLOW_MS * 0.97 <= routes["direct_bedrock"]["max_ms"] <= slow.elapsed_s * 1000 * 1.03
    assert routes["mcp"]["max_ms"] < SLOW_MS


def test_cache_performance_counts_lookups_hits_misses_and_the_store(mix: Mix):
    body = _without_frame(mix.get("/admin/metrics/cache-performance"))
    # The cached-answer percentiles are provider-latencies' figures for cache hits.
    cached = mix.get("/admin/metrics/provider-latencies")["cached"]
    percentiles = [body.pop(f"cached_{p}_ms") for p in ("p50", "p95", "p99")]
    assert percentiles == [cached[f"{p}_ms"] for p in ("p50", "p95", "p99")]
    assert all(isinstance(p, float) for p in percentiles)
    (miss,) = [s for s in mix.sent if s.cache == "miss"]
    assert Decimal(body.pop("saved")) == 2 * miss.cost > 0  # two hits on the stored answer
    store = body.pop("store")
    assert store["entries"] == 1
    assert 0 < store["bytes"] <= store["max_bytes"] == 64 * 1024 * 1024
    assert store["max_entries"] == 10_000
    assert store["evictions"] == {"lru": 0, "expired": 0, "invalidated": 0, "refused_too_big": 0}
    none = {"hits": 0, "misses": 0, "hit_rate": None}
    assert body == {
        "lookups": 3,
        "hits": 2,
        "misses": 1,
        "bypasses": 1,
        "uncacheable": 15,
        "hit_rate": 0.6667,
        "operations": {
            "background": none,
            "emergency": none,
            "infrastructure": none,
            "meta_monitor": {"hits": 2, "misses": 1, "hit_rate": 0.6667},
            "standard": none,
        },
    }


def test_error_breakdown_counts_codes_routes_operations_and_outcomes(mix: Mix):
    body = _without_frame(mix.get("/admin/metrics/error-breakdown"))
    quiet = {"errors": 0, "error_rate": 0.0, "codes": {}}
    assert body == {
        "requests": 19,
        "errors": 1,
        "error_rate": 0.0526,
        "codes": {
            "all_routes_failed": {"count": 1, "share": 0.5},
            "residency_unsatisfiable": {"count": 1, "share": 0.5},
        },
        "routes": {
            "direct_bedrock": {"errors": 1, "codes": {"all_routes_failed": 1}},
            "mcp": {"errors": 0, "codes": {}},
        },
        "operations": {
            "background": {"requests": 1, **quiet},
            "emergency": {
                "requests": 5,
                "errors": 1,
                "error_rate": 0.2,
                "codes": {"all_routes_failed": 1},
            },
            "infrastructure": {"requests": 6, **quiet},
            "meta_monitor": {"requests": 4, **quiet},
            "standard": {
                "requests": 3,
                "errors": 0,
                "error_rate": 0.0,
                "codes": {"residency_unsatisfiable": 1},
            },
        },
        "outcomes": {
            "served": 15,
            "cached": 2,
            "refused": 1,
            "shed": 0,
            "failed": 1,
            "interrupted": 0,
            "abandoned": 0,
        },
    }


def test_the_views_agree_with_the_prometheus_counters(mix: Mix):
    _, families = scrape(mix.gateway.url)
    counted = sum(
        s.value for s in families["hybridroute_requests"].samples if s.name.endswith("_total")
    )
    assert counted == mix.get("/admin/metrics/error-breakdown")["requests"] == len(mix.sent)


# -- the SLO ---------------------------------------------------------------------------------


def test_slo_figures_and_compliance_after_the_mix(mix: Mix):
    body = mix.get("/admin/slo")
    assert body["window_s"] == 300  # the SLO window (config default)
    span = body.pop("span_s")
    figures = body.pop("figures")
    slos = body.pop("slos")
    assert body == {"window_s": 300, "min_requests": 2, "requests": 19, "compliant": False}
    throughput = figures.pop("throughput_rps")
    assert 19 / (span + 0.06) <= throughput <= 19 / max(span - 0.06, 0.01)
    generation = figures.pop("generation_p95_ms")
    cached = figures.pop("cached_p95_ms")
    assert 0 < generation <= SLOW_MS * 1.03
    assert 0 < cached < generation
    decided = 16  # everything but the two cache hits and the residency refusal
    assert figures == {
        "error_rate": 0.0526,
        "cache_hit_rate": 0.6667,
        "fallback_rate": 0.4,
        "routing_efficiency": round(10 / decided, 4),
    }
    # Efficient: the 9 healthy answers, and the 6th infrastructure request, which found
    # Bedrock's breaker open (5 failures in a row) and so was first tried on MCP.
    assert mix.efficient() == 10
    assert slos == {
        "generation_p95": {
            "figure": generation,
            "target": 1500,
            "unit": "ms",
            "comparison": "<=",
            "sample": 15,
            "met": True,
        },
        "cached_p95": {
            "figure": cached,
            "target": 300,
            "unit": "ms",
            "comparison": "<=",
            "sample": 2,
            "met": True,
        },
        "error_rate": {
            "figure": 0.0526,
            "target": 0.01,
            "unit": "ratio",
            "comparison": "<=",
            "sample": 19,
            "met": False,
        },
        "cache_hit_rate": {
            "figure": 0.6667,
            "target": 0.8,
            "unit": "ratio",
            "comparison": ">=",
            "sample": 3,
            "met": False,
        },
    }


def test_slo_is_compliant_when_every_target_is_met_and_unknown_without_traffic(
    start_gateway: GatewayFactory,
):
    def lowered(data: dict[str, Any]) -> None:
        configure(data)
        data["slo"] = {"min_requests": 2}

    idle = start_gateway(lowered)
    status, body = idle.get("/admin/slo")
    assert status == 200
    assert body["requests"] == 0
    assert body["compliant"] is None
    assert {k: v for k, v in body["figures"].items() if k != "throughput_rps"} == dict.fromkeys(
        (
            "generation_p95_ms",
            "cached_p95_ms",
            "error_rate",
            "cache_hit_rate",
            "fallback_rate",
            "routing_efficiency",
        )
    )
    assert [(s["sample"], s["met"]) for s in body["slos"].values()] == [(0, None)] * 4

    busy = start_gateway(lowered)
    for question in ("a", "b"):
        for _ in range(5):
            chat(busy, CACHED_OPERATION, question)
    status, body = busy.get("/admin/slo")
    assert status == 200
    assert body["requests"] == 10
    assert body["figures"]["cache_hit_rate"] == 0.8  # 8 hits of 10 lookups: the target
    assert body["figures"]["error_rate"] == 0.0
    assert {name: (s["sample"], s["met"]) for name, s in body["slos"].items()} == {
        "generation_p95": (2, True),
        "cached_p95": (8, True),
        "error_rate": (10, True),
        "cache_hit_rate": (10, True),
    }
    assert body["compliant"] is True


# -- breakers --------------------------------------------------------------------------------


_NO_PROBES = {
    "last_ok": None,
    "last_at": None,
    "last_latency_ms": None,
    "consecutive_failures": 0,
    "consecutive_successes": 0,
    "last_error": None,
}


def test_circuit_breakers_show_state_availability_and_probes(mix: Mix):
    routes = mix.get("/admin/health/circuit-breakers")["routes"]
    assert [r["route"] for r in routes] == ["direct_bedrock", "mcp"]
    bedrock, mcp = routes
    assert bedrock["state"] == "open"
    assert bedrock["times_opened"] == 1
    assert bedrock["availability"]["status"] == "unhealthy"
    assert bedrock["availability"]["detail"].startswith("breaker open, retry in ")
    assert 0 < bedrock["reopens_in_s"] <= 60
    assert "simulated outage" in bedrock["last_error"]
    assert bedrock["opened_because"].endswith(bedrock["last_error"])
    assert bedrock["probes"] == _NO_PROBES  # probes run once an hour in this config
    assert (mcp["state"], mcp["times_opened"], mcp["failures"]) == ("closed", 0, 0)
    assert mcp["requests"] == 9
    assert mcp["availability"] == {"status": "healthy", "detail": ""}
    assert mcp["reopens_in_s"] is None
    assert mcp["opened_because"] is None
    assert mcp["probes"] == _NO_PROBES


def test_circuit_breakers_report_the_health_probes(
    start_gateway: GatewayFactory, bedrock_sim: Simulator
):
    gateway = start_gateway(
        lambda d: d.update(
            health={"probe_interval_s": 0.3, "probe_timeout_s": 0.25, "probe_jitter": 0}
        )
    )

    def probes() -> dict[str, dict[str, Any]]:
        status, body = gateway.get("/admin/health/circuit-breakers")
        assert status == 200
        return {r["route"]: r for r in body["routes"]}

    wait_for(
        lambda: all(r["probes"]["consecutive_successes"] >= 2 for r in probes().values()),
        timeout=10,
    )
    for route in probes().values():
        block = route["probes"]
        assert block["last_ok"] is True
        assert block["consecutive_failures"] == 0
        assert block["last_error"] is None
        assert isinstance(block["last_at"], float)
        assert block["last_at"] > 0
        assert 0 <= block["last_latency_ms"] < 1000
    bedrock_sim.set(outage=True)
    wait_for(lambda: probes()["direct_bedrock"]["probes"]["consecutive_failures"] >= 2, timeout=10)
    bedrock = probes()["direct_bedrock"]
    assert bedrock["probes"]["last_ok"] is False
    assert bedrock["probes"]["consecutive_successes"] == 0
    assert bedrock["probes"]["last_error"]
    assert bedrock["availability"]["status"] == "unhealthy"
    assert bedrock["availability"]["detail"].startswith("health probes failing")
    assert probes()["mcp"]["availability"] == {"status": "healthy", "detail": ""}


# -- alerts ----------------------------------------------------------------------------------


def test_alerts_after_the_mix_fire_and_pend_by_rule(mix: Mix):
    firing = ["bedrock_connection_failure", "fallback_rate_warning", "routing_efficiency_info"]
    pending = [
        "error_rate_critical",
        "error_rate_warning",
        "cache_hit_rate_warning",
        "cache_hit_rate_info",
    ]

    def settled() -> bool:
        body = mix.get("/admin/alerts")
        return [a["rule"] for a in body["active"]] == firing and sorted(
            a["rule"] for a in body["pending"]
        ) == sorted(pending)

    wait_for(settled, timeout=10)
    body = mix.get("/admin/alerts")
    assert body["resolved"] == []
    assert body["alerting"] is True
    assert body["evaluations"] >= 1
    assert set(body["rules"]) >= set(firing) | set(pending)
    connection, fallback, efficiency = body["active"]
    assert connection["labels"] == {"route": "direct_bedrock"}
    assert (connection["severity"], connection["status"], connection["value"]) == (
        "critical",
        "firing",
        1.0,
    )
    assert (fallback["labels"], fallback["value"], fallback["threshold"]) == ({}, 0.4, 0.2)
    assert efficiency["severity"] == "info"
    assert [t["transition"] for t in fallback["transitions"]] == ["firing"]
    errors = next(a for a in body["pending"] if a["rule"] == "error_rate_critical")
    assert (errors["status"], errors["started_at"]) == ("pending", None)
    assert errors["value"] == pytest.approx(1 / 19)
    (sink,) = body["notifications"]
    assert (sink["name"], sink["type"], sink["failures"]) == ("log", "log", 0)


# -- the window parameter --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("window", "seconds"),
    [
        ("30s", 30.0),
        ("5m", 300.0),
        ("1h", 3600.0),
        ("24h", 86_400.0),
        ("900", 900.0),
        ("1.5m", 90.0),
        ("5M", 300.0),
    ],
)
def test_the_window_parameter_takes_durations_and_seconds(mix: Mix, window: str, seconds: float):
    for path in (*WINDOWED, "/admin/slo"):
        assert mix.get(f"{path}?window={window}")["window_s"] == seconds, path


def test_the_window_defaults_to_an_hour_and_the_slo_window(mix: Mix):
    for path in WINDOWED:
        assert mix.get(path)["window_s"] == 3600.0
    assert mix.get("/admin/slo")["window_s"] == 300


@pytest.mark.parametrize("window", ["0", "0s", "0.5", "25h", "86401", "1d", "abc", "-5", "1e3"])
def test_a_bad_window_is_a_400_naming_the_parameter(mix: Mix, window: str):
    for path in (*WINDOWED, "/admin/slo"):
        error = mix.get(f"{path}?window={window}", status=400)["error"]
        assert error["param"] == "window", path
        assert error["code"] == "invalid_request"
        assert error["message"].startswith("'window' must be a duration from 1s to 24h")
        assert repr(window) in error["message"]


# -- access ----------------------------------------------------------------------------------


ADMIN_GETS = (
    *WINDOWED,
    "/admin/slo",
    "/admin/health/circuit-breakers",
    "/admin/alerts",
)


def test_an_admin_token_guards_the_admin_endpoints_but_not_metrics(
    start_gateway: GatewayFactory, monkeypatch: pytest.MonkeyPatch
):
    monkeypatch.setenv("HYBRIDROUTE_ADMIN_TOKEN", "s3cret-admin-token")
    gateway = start_gateway()  # the guard reads the environment when the app is built
    for path in ADMIN_GETS:
        url = gateway.url + path
        bare = httpx.get(url, timeout=10)
        assert bare.status_code == 401, path
        assert bare.json()["error"]["code"] == "unauthorized"
        wrong = httpx.get(url, headers={"Authorization": "Bearer nope"}, timeout=10)
        assert wrong.status_code == 401, path
        right = httpx.get(url, headers={"Authorization": "Bearer s3cret-admin-token"}, timeout=10)
        assert right.status_code == 200, path
    acknowledge = httpx.post(
        gateway.url + "/admin/alerts/alert-x/acknowledge", json={"by": "alice"}, timeout=10
    )
    assert acknowledge.status_code == 401
    metrics = httpx.get(gateway.url + "/metrics", timeout=10)
    assert metrics.status_code == 200
    assert "hybridroute_requests" in metrics.text
