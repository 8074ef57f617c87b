"""HybridHealthMonitor: the gateway's view of itself over a rolling window.

The executor records every request (`record`, O(1)); `report()` merges the window with the
routes' live health (readiness, probes, breakers) into a `HealthReport`: the overall score
(`monitoring.score`), routing accuracy, routing efficiency and fallback rate exactly as DESIGN.md
§4 defines them, per-route latency percentiles, success rate and throughput, per-operation
figures, and the recommendations that follow from them (`monitoring.recommendations`).

A route's status in the report (from `HealthBoard.availability`):
- unhealthy — not ready, its probes failing `unhealthy_after` times in a row, or its breaker
  open;
- degraded — usable but not well: breaker half-open (also while its trial request is in flight,
  when the policy puts another route first meanwhile), its last probe failed, or over 5 % of its
  recent attempts failed (the breaker's sliding window, once it holds 10) — recent, so that a
  route that has recovered reads healthy again well before the monitor's window forgets;
- healthy — otherwise.

Hedging feedback: per route, the hedge races it won and lost over the window; per operation
type, the races whose primary lost — the `hedge-losing-primary` recommendation names a primary
that loses most of them (routing is not changed automatically).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from hybridroute._clock import Clock
from hybridroute.monitoring.histogram import LatencyHistogram
from hybridroute.monitoring.recommendations import RecommendationInputs, recommend
from hybridroute.monitoring.records import RequestRecord
from hybridroute.monitoring.report import (
    HealthReport,
    OperationReport,
    RouteReport,
    RouteStatus,
)
from hybridroute.monitoring.score import score, score_parts, status_for
from hybridroute.monitoring.window import OperationCounts, RollingWindow, RouteCounts, WindowTotals
from hybridroute.resilience.admission import AdmissionControl
from hybridroute.resilience.health import HealthBoard
from hybridroute.routing.matrix import RoutingMatrix, Topology
from hybridroute.signals import HealthStatus
from hybridroute.types import RouteId

__all__ = ["HybridHealthMonitor", "MonitorSettings"]

DEGRADED_FAILURE_RATE = 0.05
DEGRADED_MIN_ATTEMPTS = 10
P95_MIN_SAMPLES = 20  # fewer successful attempts than this: no observed p95 yet
P95_REFRESH_S = 1.0


@dataclass(frozen=True, slots=True)
class MonitorSettings:
    window_s: float = 300.0
    probe_kinds: Mapping[RouteId, str] = field(default_factory=dict)  # route → its probe
    attempt_share: float = 0.5
    probe_timeout_s: float = 2.0
    breaker_open_s: float = 5.0


def _ms(seconds: float | None) -> float | None:
    return None if seconds is None else round(seconds * 1000.0, 3)


def _ratio(part: int, whole: int) -> float | None:
    return part / whole if whole else None


class HybridHealthMonitor:
    """Records requests and reports on the gateway's health."""

    def __init__(
        self,
        *,
        health: HealthBoard,
        matrix: RoutingMatrix,
        topology: Topology,
        monitoring: Callable[[], bool],
        clock: Clock,
        settings: MonitorSettings | None = None,
        admission: Mapping[RouteId, AdmissionControl] | None = None,
    ) -> None:
        self._health = health
        self._matrix = matrix
        self._topology = topology
        self._admission = dict(admission or {})
        self._monitoring = monitoring
        self._clock = clock
        self.settings = settings or MonitorSettings()
        self._window = RollingWindow(self.settings.window_s, clock.monotonic())
        self._p95: dict[RouteId, tuple[float, float | None]] = {}  # route → (computed at, p95)

    def record(self, record: RequestRecord) -> None:
        """One finished request (served or not)."""
        self._window.add(record, self._clock.monotonic())

    def route_latency(self, route: RouteId) -> LatencyHistogram:
        """The route's successful-attempt latencies over the window."""
        return self._window.route_latency(route, self._clock.monotonic())

    def route_p95_s(self, route: RouteId) -> float | None:
        """The route's observed p95 over the window (None on too little data), recomputed at
        most once a second: the request path may ask on every request."""
        now = self._clock.monotonic()
        cached = self._p95.get(route)
        if cached is not None and now - cached[0] < P95_REFRESH_S:
            return cached[1]
        latency = self._window.route_latency(route, now)
        value = latency.quantile(0.95) if latency.count >= P95_MIN_SAMPLES else None
        self._p95[route] = (now, value)
        return value

    def use_matrix(self, matrix: RoutingMatrix) -> None:
        """Report against a new routing matrix (an applied routing-configuration version)."""
        self._matrix = matrix

    def report(self) -> HealthReport:
        """The whole picture now."""
        totals = self._window.totals(self._clock.monotonic())
        monitoring = self._monitoring()
        routes = tuple(
            self._route_report(route, totals, monitoring) for route in self._topology.kinds
        )
        operations = tuple(self._operation_report(op, totals) for op in self._matrix.rules)
        whole = totals.total()
        accuracy = _ratio(whole.accurate, whole.eligible)
        efficiency = _ratio(whole.efficient, whole.requests)
        fallback_rate = _ratio(whole.fallback, whole.served)
        error_rate = _ratio(whole.failed + whole.interrupted, whole.requests)
        parts = score_parts((r.status for r in routes), error_rate, efficiency, fallback_rate)
        value = score(parts)
        shed = {priority.value: n for priority, n in sorted(totals.shed_by_priority.items())}
        settings = self.settings
        recommendations = recommend(
            RecommendationInputs(
                routes=routes,
                operations=operations,
                span_s=totals.span_s,
                monitoring=monitoring,
                attempt_share=settings.attempt_share,
                probe_timeout_s=settings.probe_timeout_s,
                breaker_open_s=settings.breaker_open_s,
                requests=whole.requests,
                served=whole.served,
                eligible=whole.eligible,
                routing_accuracy=accuracy,
                routing_efficiency=efficiency,
                fallback_rate=fallback_rate,
                error_rate=error_rate,
                inefficient_fallback=whole.served_elsewhere,
                inefficient_over_budget=whole.served - whole.served_elsewhere - whole.efficient,
                inefficient_unserved=whole.requests - whole.served,
                shed=shed,
            )
        )
        return HealthReport(
            generated_at=time.time(),
            window_s=settings.window_s,
            span_s=round(totals.span_s, 3),
            monitoring=monitoring,
            score=value,
            status=status_for(value),
            score_parts=parts,
            requests=whole.requests,
            served=whole.served,
            throughput_rps=round(whole.served / totals.span_s, 3),
            routing_accuracy=accuracy,
            routing_efficiency=efficiency,
            fallback_rate=fallback_rate,
            error_rate=error_rate,
            shed=shed,
            routes=routes,
            operations=operations,
            recommendations=recommendations,
        )

    def _route_report(self, route: RouteId, totals: WindowTotals, monitoring: bool) -> RouteReport:
        counts = totals.routes.get(route) or RouteCounts()
        breaker = self._health.breaker(route).snapshot()
        probes = self._health.probes(route)
        last_probe = probes.last if monitoring else None
        decided = self._health.availability(route)
        judged = counts.ok + counts.failed
        success = _ratio(counts.ok, judged)
        status, detail = RouteStatus.HEALTHY, "ok"
        if decided.status is HealthStatus.UNHEALTHY:
            status, detail = RouteStatus.UNHEALTHY, decided.detail
        elif decided.status is HealthStatus.PROBING:
            status, detail = RouteStatus.DEGRADED, decided.detail
        elif last_probe is not None and not last_probe.ok:
            status = RouteStatus.DEGRADED
            detail = (
                f"last probe failed ({probes.consecutive_failures} in a row): {last_probe.error}"
            )
        elif (
            breaker.requests >= DEGRADED_MIN_ATTEMPTS
            and breaker.failure_rate > DEGRADED_FAILURE_RATE
        ):
            status = RouteStatus.DEGRADED
            detail = (
                f"{breaker.failures} of its last {breaker.requests} attempts failed "
                f"(breaker window)"
            )
        if last_probe is not None and not last_probe.ok:
            last_error = last_probe.error
        else:
            last_error = breaker.last_error or probes.last_error()
        latency = counts.latency
        control = self._admission.get(route)
        return RouteReport(
            route=route,
            kind=self._topology.kinds[route].value,
            region=self._topology.regions.get(route),
            status=status,
            detail=detail,
            breaker=breaker.state.value,
            latency_ewma_ms=breaker.latency_ewma_ms,
            p50_ms=_ms(latency.quantile(0.50)),
            p95_ms=_ms(latency.quantile(0.95)),
            p99_ms=_ms(latency.quantile(0.99)),
            attempts=counts.attempts,
            success_rate=success,
            throughput_rps=round(counts.served / totals.span_s, 3),
            consecutive_failures=breaker.consecutive_failures,
            probe=self.settings.probe_kinds.get(route, "none") if monitoring else "off",
            last_check=probes.last.at if probes.last else None,
            last_probe_ok=last_probe.ok if last_probe else None,
            probe_latency_ms=_ms(last_probe.latency_s) if last_probe else None,
            probe_consecutive_failures=probes.consecutive_failures,
            last_error=last_error,
            in_flight=control.in_flight if control else 0,
            max_in_flight=control.settings.max_in_flight if control else None,
            queued=control.queued if control else 0,
            hedges_won=counts.hedges_won,
            hedges_lost=counts.hedges_lost,
        )

    def _operation_report(self, operation_type: str, totals: WindowTotals) -> OperationReport:
        rule = self._matrix.rules[operation_type]
        counts = totals.operations.get(operation_type) or OperationCounts()
        latency = counts.latency
        return OperationReport(
            operation_type=operation_type,
            priority=rule.priority.value,
            budget_ms=rule.latency_budget_ms,
            primary=rule.primary,
            fallback=rule.fallback,
            requests=counts.requests,
            served=counts.served,
            failed=counts.failed + counts.interrupted,
            shed=counts.shed,
            fallback_rate=_ratio(counts.fallback, counts.served),
            efficiency=_ratio(counts.efficient, counts.requests),
            within_budget=_ratio(counts.within_budget, counts.served),
            p50_ms=_ms(latency.quantile(0.50)),
            p95_ms=_ms(latency.quantile(0.95)),
            p99_ms=_ms(latency.quantile(0.99)),
            hedged=counts.hedged,
            hedges_lost=counts.hedges_lost,
        )

    def __repr__(self) -> str:
        return f"<HybridHealthMonitor window={self.settings.window_s:g}s>"
