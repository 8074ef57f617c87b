"""The health board: readiness, probes (only while monitoring is on) and the breaker."""

from __future__ import annotations

from hybridroute.resilience.breaker import BreakerSettings, CircuitBreaker
from hybridroute.resilience.health import HealthBoard
from hybridroute.resilience.probes import ProbeResult
from hybridroute.signals import HealthStatus, RouteHealth
from hybridroute.testing import FakeClock

READY = RouteHealth(HealthStatus.HEALTHY)


def board(monitoring: list[bool], readiness: RouteHealth = READY) -> HealthBoard:
    clock = FakeClock()
    breaker = CircuitBreaker("direct_bedrock", BreakerSettings(), clock)
    return HealthBoard(
        {"direct_bedrock": breaker},
        {"direct_bedrock": lambda: readiness},
        monitoring=lambda: monitoring[0],
        unhealthy_after=2,
    )


def failed(error: str = "ThrottlingException: slow down") -> ProbeResult:
    return ProbeResult(ok=False, latency_s=0.01, at=0.0, error=error)


def test_probe_failures_make_a_route_unhealthy_after_the_threshold():
    health = board([True])
    health.record_probe("direct_bedrock", failed())
    assert health.route_health("direct_bedrock").status is HealthStatus.HEALTHY
    health.record_probe("direct_bedrock", failed())
    result = health.route_health("direct_bedrock")
    assert result.status is HealthStatus.UNHEALTHY
    assert result.detail == "health probes failing (2 in a row): ThrottlingException: slow down"


def test_a_passing_probe_ends_the_run_of_failures():
    health = board([True])
    for _ in range(3):
        health.record_probe("direct_bedrock", failed())
    health.record_probe("direct_bedrock", ProbeResult(ok=True, latency_s=0.01, at=1.0))
    assert health.route_health("direct_bedrock").status is HealthStatus.HEALTHY


def test_with_monitoring_off_probes_are_not_consulted():
    switch = [True]
    health = board(switch)
    for _ in range(3):
        health.record_probe("direct_bedrock", failed())
    switch[0] = False
    assert health.route_health("direct_bedrock").status is HealthStatus.HEALTHY


def test_readiness_wins_over_everything():
    down = RouteHealth(HealthStatus.UNHEALTHY, "no credentials")
    assert board([True], down).route_health("direct_bedrock") == down
