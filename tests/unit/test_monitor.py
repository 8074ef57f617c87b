"""The Hybrid Health Monitor: the window, the DESIGN.md §4 metrics, the score and recommendations.

Records are built by hand here so each figure can be checked against its definition; the
integration tests check that a running gateway produces the same records from real traffic.
"""

from __future__ import annotations

import random
from typing import Any

import pytest

from hybridroute.config.schema import GatewayConfig
from hybridroute.monitoring import HybridHealthMonitor, RequestOutcome, RequestRecord
from hybridroute.monitoring.histogram import LatencyHistogram
from hybridroute.monitoring.monitor import MonitorSettings
from hybridroute.monitoring.report import RouteStatus, ScoreParts
from hybridroute.monitoring.score import score
from hybridroute.resilience.breaker import BreakerSettings, CircuitBreaker
from hybridroute.resilience.health import HealthBoard
from hybridroute.resilience.probes import ProbeResult
from hybridroute.routing.matrix import RoutingMatrix, Topology
from hybridroute.signals import HealthStatus, RouteHealth
from hybridroute.testing import FakeClock
from hybridroute.types import Attempt, AttemptOutcome, Priority

D, M = "direct_bedrock", "mcp"
OK, FAILED, SKIPPED = AttemptOutcome.OK, AttemptOutcome.FAILED, AttemptOutcome.SKIPPED
READY = RouteHealth(HealthStatus.HEALTHY)


class Setup:
    def __init__(self, *, monitoring: bool = True, window_s: float = 300.0) -> None:
        config = GatewayConfig(
            routes={
                D: {"type": "bedrock", "region": "eu-central-1", "model_id": "m"},
                M: {"type": "mcp", "transport": "stdio", "command": ["srv"]},
            }
        )
        self.clock = FakeClock()
        self.matrix = RoutingMatrix.from_config(config)
        self.breakers = {r: CircuitBreaker(r, BreakerSettings(), self.clock) for r in (D, M)}
        self.switch = [monitoring]
        self.board = HealthBoard(
            self.breakers,
            {D: lambda: READY, M: lambda: READY},
            monitoring=lambda: self.switch[0],
            unhealthy_after=2,
        )
        self.monitor = HybridHealthMonitor(
            health=self.board,
            matrix=self.matrix,
            topology=Topology.from_config(config),
            monitoring=lambda: self.switch[0],
            clock=self.clock,
            settings=MonitorSettings(
                window_s=window_s, probe_kinds={D: "validation", M: "tools_list"}
            ),
        )

    def record(self, operation_type: str = "infrastructure", n: int = 1, **fields: Any) -> None:
        rule = self.matrix.rules[operation_type]
        served_route = fields.pop("served_route", rule.primary)
        latency_s = fields.pop("latency_s", 0.5)
        attempts = fields.pop("attempts", ((served_route, OK, latency_s * 1000),))
        values: dict[str, Any] = {
            "operation_type": operation_type,
            "priority": rule.priority,
            "primary": rule.primary,
            "primary_eligible": True,
            "first_route": rule.primary,
            "outcome": RequestOutcome.SERVED,
            "served_route": served_route,
            "latency_s": latency_s,
            "budget_s": rule.latency_budget_ms / 1000,
            "attempts": tuple(Attempt(r, o, ms) for r, o, ms in attempts),
        }
        values.update(fields)
        for _ in range(n):
            self.monitor.record(RequestRecord(**values))


# -- the histogram ---------------------------------------------------------------------------


def test_histogram_percentiles_are_within_three_percent():
    rng = random.Random(7)
    values = sorted(rng.lognormvariate(-1.0, 1.2) for _ in range(20_000))
    histogram = LatencyHistogram()
    for value in values:
        histogram.add(value)
    for q in (0.5, 0.95, 0.99):
        exact = values[int(q * len(values)) - 1]
        assert histogram.quantile(q) == pytest.approx(exact, rel=0.03)
    assert histogram.count == len(values)
    assert LatencyHistogram().quantile(0.5) is None


def test_histograms_merge_to_the_histogram_of_the_union():
    a, b, both = LatencyHistogram(), LatencyHistogram(), LatencyHistogram()
    for i in range(1, 200):
        (a if i % 3 else b).add(i / 100)
        both.add(i / 100)
    merged = LatencyHistogram.merged([a, b])
    assert merged.bins == both.bins
    assert merged.quantile(0.9) == both.quantile(0.9)


# -- the metrics, exactly as DESIGN.md §4 defines them ---------------------------------------


def test_routing_accuracy_counts_only_decisions_with_an_eligible_primary():
    s = Setup()
    s.record(n=8)  # primary first, primary eligible
    s.record(n=2, first_route=M, served_route=M, attempts=((M, OK, 400),))  # deviated
    # primary down: not eligible, so not in the denominator whatever happened
    s.record(n=10, primary_eligible=False, first_route=M, served_route=M, attempts=((M, OK, 4),))
    report = s.monitor.report()
    assert report.routing_accuracy == pytest.approx(8 / 10)


def test_routing_efficiency_is_served_in_budget_by_the_first_route_tried():
    s = Setup()
    s.record(n=6)  # efficient
    s.record(n=1, latency_s=12.0)  # over infrastructure's 10 s budget
    s.record(  # primary failed, fallback served: not by the first route tried
        n=2, served_route=M, attempts=((D, FAILED, 100), (M, OK, 300))
    )
    s.record(n=1, outcome=RequestOutcome.FAILED, served_route=None, attempts=((D, FAILED, 9),))
    # the primary's breaker refused it (skipped): the first route *tried* is the fallback
    s.record(n=2, served_route=M, attempts=((D, SKIPPED, 0), (M, OK, 300)))
    report = s.monitor.report()
    assert report.routing_efficiency == pytest.approx((6 + 2) / 12)
    assert report.requests == 12


def test_fallback_rate_is_served_elsewhere_than_the_primary_over_served():
    s = Setup()
    s.record(n=6)
    s.record(n=3, served_route=M, attempts=((D, FAILED, 100), (M, OK, 300)))
    s.record(n=1, outcome=RequestOutcome.FAILED, served_route=None, attempts=((D, FAILED, 9),))
    report = s.monitor.report()
    assert report.fallback_rate == pytest.approx(3 / 9)
    assert report.error_rate == pytest.approx(1 / 10)
    assert report.operation("infrastructure").fallback_rate == pytest.approx(3 / 9)


def test_no_traffic_means_no_figures_not_zeros():
    report = Setup().monitor.report()
    assert report.requests == 0
    assert report.routing_accuracy is None
    assert report.routing_efficiency is None
    assert report.fallback_rate is None
    assert report.route(D).p95_ms is None
    assert report.score == 100
    assert report.recommendations == ()


def test_the_window_forgets_old_requests():
    s = Setup(window_s=60)
    s.record(n=5, served_route=M, attempts=((D, FAILED, 100), (M, OK, 300)))
    s.clock.advance(30)
    s.record(n=5)
    assert s.monitor.report().requests == 10
    s.clock.advance(45)  # the first five are now 75 s old
    report = s.monitor.report()
    assert report.requests == 5
    assert report.fallback_rate == 0.0
    s.clock.advance(61)
    assert s.monitor.report().requests == 0


def test_route_latency_and_throughput_come_from_its_attempts():
    s = Setup()
    for ms in range(1, 101):
        s.record(latency_s=ms / 1000)
    s.clock.advance(10)
    route = s.monitor.report().route(D)
    assert route.p50_ms == pytest.approx(50, rel=0.03)
    assert route.p95_ms == pytest.approx(95, rel=0.03)
    assert route.p99_ms == pytest.approx(99, rel=0.03)
    assert route.attempts == 100
    assert route.success_rate == 1.0
    assert route.throughput_rps == pytest.approx(100 / 10)


# -- route status ------------------------------------------------------------------------------


def test_route_status_merges_breaker_probes_and_traffic():
    s = Setup()
    assert s.monitor.report().route(D).status is RouteStatus.HEALTHY
    s.board.record_probe(D, ProbeResult(ok=False, latency_s=0.1, at=1.0, error="Throttled"))
    degraded = s.monitor.report().route(D)
    assert degraded.status is RouteStatus.DEGRADED
    assert degraded.detail == "last probe failed (1 in a row): Throttled"
    assert degraded.last_check == 1.0
    s.board.record_probe(D, ProbeResult(ok=False, latency_s=0.1, at=2.0, error="Throttled"))
    assert s.monitor.report().route(D).status is RouteStatus.UNHEALTHY
    s.board.record_probe(D, ProbeResult(ok=True, latency_s=0.1, at=3.0))
    assert s.monitor.report().route(D).status is RouteStatus.HEALTHY
    # recent real traffic failing one attempt in five (the breaker's window) degrades it
    breaker = s.breakers[D]
    for i in range(10):
        permit = breaker.try_acquire()
        assert permit is not None
        if i % 5:
            breaker.record_success(permit, 0.1)
        else:
            breaker.record_failure(permit, "ThrottlingException")
    route = s.monitor.report().route(D)
    assert route.status is RouteStatus.DEGRADED
    assert route.detail == "2 of its last 10 attempts failed (breaker window)"
    s.clock.advance(31)  # the breaker's window has moved on
    assert s.monitor.report().route(D).status is RouteStatus.HEALTHY


# -- the score ---------------------------------------------------------------------------------


def test_score_formula():
    assert score(ScoreParts(1.0, 1.0, 1.0, 1.0)) == 100
    assert score(ScoreParts(0.0, 0.0, 0.0, 0.0)) == 0
    assert score(ScoreParts(0.5, 1.0, 1.0, 1.0)) == 80
    assert score(ScoreParts(1.0, 0.9, 0.8, 0.7)) == round(100 * (0.4 + 0.27 + 0.16 + 0.07))


def test_score_follows_route_health_and_traffic():
    s = Setup()
    s.record(n=10)
    assert s.monitor.report().score == 100
    for _ in range(2):
        s.board.record_probe(M, ProbeResult(ok=False, latency_s=0.1, at=1.0, error="down"))
    s.record(n=10, served_route=M, attempts=((D, FAILED, 100), (M, OK, 300)))
    report = s.monitor.report()
    # mcp fails its probes (0), direct_bedrock is healthy (1):
    # H = (1 + 0) / 2, S = 1, E = 10/20, F = 10/20
    assert report.score == round(100 * (0.4 * 0.5 + 0.3 + 0.2 * 0.5 + 0.1 * 0.5))
    assert report.status == "critical"


# -- recommendations ---------------------------------------------------------------------------


def codes(s: Setup) -> list[str]:
    return [r.code for r in s.monitor.report().recommendations]


def test_slow_primary_names_its_p95_budget_share_and_fallback_share():
    s = Setup()
    # mcp answers standard (30 s budget, fallback direct) in ~18 s: over the 15 s share
    s.record("standard", n=77, served_route=M, latency_s=18.2, attempts=((M, OK, 18_200),))
    s.record(
        "standard",
        n=23,
        served_route=D,
        latency_s=16.0,
        attempts=((M, FAILED, 15_000), (D, OK, 1_000)),
    )
    s.clock.advance(60)
    (slow,) = [r for r in s.monitor.report().recommendations if r.code == "slow-primary"]
    # 18.4: the histogram reports the middle of 18.2's bin (at most 2.5 % off)
    assert slow.evidence == (
        "mcp p95 18.4 s exceeds standard's 15.0 s budget share (50 % of 30.0 s); 23 % of "
        "standard traffic fell back in the last 60 s"
    )
    assert slow.action.startswith("Raise standard's latency_budget_ms to at least")
    assert slow.action.endswith("or make direct_bedrock its primary")
    assert slow.severity.value == "warning"


def test_high_fallback_rate_and_low_efficiency_fire_on_enough_data_only():
    s = Setup()
    s.record(n=5, served_route=M, attempts=((D, FAILED, 100), (M, OK, 300)))
    assert codes(s) == []  # five requests are no evidence
    s.record(n=30, served_route=M, attempts=((D, FAILED, 100), (M, OK, 300)))
    s.record(n=65)
    found = {r.code: r for r in s.monitor.report().recommendations}
    assert set(found) == {"high-fallback-rate", "low-efficiency"}
    assert found["high-fallback-rate"].evidence == (
        "fallback rate 35 % exceeds 20 % over 100 served requests; by operation: "
        "infrastructure 35 % (direct_bedrock → mcp)"
    )
    assert "of the misses: 35 fell back" in found["low-efficiency"].evidence


def test_unhealthy_routes_and_unprotected_operations_are_critical():
    s = Setup()
    for at in (1.0, 2.0):
        s.board.record_probe(D, ProbeResult(ok=False, latency_s=0.1, at=at, error="AccessDenied"))
    found = {r.code: r for r in s.monitor.report().recommendations}
    assert found["route-unhealthy"].severity.value == "critical"
    assert found["route-unhealthy"].action == (
        "Restore direct_bedrock's upstream (infrastructure, meta_monitor, implementation are "
        "served by a fallback; emergency has no fallback and depends on it)"
    )
    assert found["no-fallback"].action.startswith("Give emergency a fallback route")
    assert "AccessDenied" in found["route-unhealthy"].evidence


def test_monitoring_off_is_pointed_out():
    s = Setup(monitoring=False)
    (rec,) = s.monitor.report().recommendations
    assert rec.code == "monitoring-off"
    assert s.monitor.report().route(D).probe == "off"


def test_error_rate_and_shedding_recommendations():
    s = Setup()
    s.record("background", n=20)
    s.record("background", n=10, outcome=RequestOutcome.SHED, served_route=None, attempts=())
    s.record("standard", n=3, outcome=RequestOutcome.FAILED, served_route=None, attempts=())
    report = s.monitor.report()
    found = {r.code: r for r in report.recommendations}
    assert found["load-shedding"].evidence.endswith(": low 10")
    assert found["error-rate"].severity.value == "critical"  # 3 of 33 > 5 %
    assert report.shed == {"low": 10}
    assert report.operation("background").shed == 10


def test_report_as_dict_is_plain_json():
    import orjson

    s = Setup()
    s.record(n=3)
    data = orjson.loads(orjson.dumps(s.monitor.report().as_dict()))
    assert data["routes"][0]["route"] == D
    assert data["operations"][1]["operation_type"] == "infrastructure"
    assert set(data["score_parts"]) == {"route_health", "success", "efficiency", "no_fallback"}
    assert Priority.LOW.value == "low"
