"""Optimization recommendations: rules over the monitor's figures, each naming its evidence.

A rule fires only on enough data (`MIN_REQUESTS` in the window for traffic-based rules), so a
quiet gateway is not told to change anything on the strength of three requests. Thresholds that
DESIGN.md §5 sets for alerts (fallback rate 20 %, efficiency 90 %, error rate 2 % / 5 %) are the
ones used here, so a recommendation and an alert never disagree about what is bad.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from hybridroute.monitoring.report import (
    OperationReport,
    Recommendation,
    RouteReport,
    RouteStatus,
    Severity,
)

__all__ = ["MIN_REQUESTS", "RecommendationInputs", "recommend"]

MIN_REQUESTS = 20
FALLBACK_RATE_WARNING = 0.20
EFFICIENCY_INFO = 0.90
ERROR_RATE_WARNING = 0.02
ERROR_RATE_CRITICAL = 0.05
ACCURACY_INFO = 0.95
PROBE_SLOW_SHARE = 0.5
HEDGE_LOSS_WARNING = 0.80  # a primary losing this share of its hedge races ...
MIN_HEDGE_RACES = 20  # ... out of at least this many in the window
_ORDER = {Severity.CRITICAL: 0, Severity.WARNING: 1, Severity.INFO: 2}


@dataclass(frozen=True, slots=True)
class RecommendationInputs:
    routes: Sequence[RouteReport]
    operations: Sequence[OperationReport]
    span_s: float
    monitoring: bool
    attempt_share: float
    probe_timeout_s: float
    breaker_open_s: float
    requests: int
    served: int
    eligible: int
    routing_accuracy: float | None
    routing_efficiency: float | None
    fallback_rate: float | None
    error_rate: float | None
    inefficient_fallback: int
    inefficient_over_budget: int
    inefficient_unserved: int
    shed: dict[str, int]


def recommend(inputs: RecommendationInputs) -> tuple[Recommendation, ...]:
    found: list[Recommendation] = []
    for rule in _RULES:
        found.extend(rule(inputs))
    found.sort(key=lambda r: (_ORDER[r.severity], r.code))
    return tuple(found)


def _pct(value: float) -> str:
    return f"{value * 100:.0f} %" if value >= 0.01 or value == 0 else f"{value * 100:.1f} %"


def _secs(ms: float) -> str:
    return f"{ms / 1000:.1f} s" if ms >= 1000 else f"{ms:.0f} ms"


def _window(span_s: float) -> str:
    return f"{span_s / 60:.0f} min" if span_s >= 120 else f"{span_s:.0f} s"


def _unhealthy_routes(inputs: RecommendationInputs) -> list[Recommendation]:
    found = []
    for route in inputs.routes:
        if route.status is not RouteStatus.UNHEALTHY:
            continue
        primaries = [op for op in inputs.operations if op.primary == route.route]
        covered = [op.operation_type for op in primaries if op.fallback is not None]
        exposed = [op.operation_type for op in primaries if op.fallback is None]
        consequence = []
        if covered:
            verb = "is" if len(covered) == 1 else "are"
            consequence.append(f"{', '.join(covered)} {verb} served by a fallback")
        if exposed:
            verbs = (
                "has no fallback and depends"
                if len(exposed) == 1
                else "have no fallback and depend"
            )
            consequence.append(f"{', '.join(exposed)} {verbs} on it")
        evidence = f"{route.route} is unhealthy: {route.detail}"
        if route.last_error and route.last_error not in route.detail:
            evidence += f"; last error: {route.last_error}"
        found.append(
            Recommendation(
                "route-unhealthy",
                Severity.CRITICAL,
                f"Restore {route.route}'s upstream"
                + (f" ({'; '.join(consequence)})" if consequence else ""),
                evidence,
            )
        )
    return found


def _exposed_without_fallback(inputs: RecommendationInputs) -> list[Recommendation]:
    status = {r.route: r for r in inputs.routes}
    found = []
    for op in inputs.operations:
        route = status.get(op.primary)
        if op.fallback is not None or route is None or route.status is RouteStatus.HEALTHY:
            continue
        severity = Severity.CRITICAL if route.status is RouteStatus.UNHEALTHY else Severity.WARNING
        evidence = f"{op.primary} is {route.status.value} ({route.detail})"
        if op.requests:
            evidence += (
                f"; {op.operation_type}: {op.failed} of {op.requests} requests failed in the "
                f"last {_window(inputs.span_s)}"
            )
        found.append(
            Recommendation(
                "no-fallback",
                severity,
                f"Give {op.operation_type} a fallback route, or restore {op.primary}: "
                f"{op.operation_type} ({op.priority}) has no other route",
                evidence,
            )
        )
    return found


def _slow_primaries(inputs: RecommendationInputs) -> list[Recommendation]:
    routes = {r.route: r for r in inputs.routes}
    found = []
    for op in inputs.operations:
        route = routes.get(op.primary)
        if (
            route is None
            or route.p95_ms is None
            or route.attempts < MIN_REQUESTS
            or op.requests < MIN_REQUESTS
        ):
            continue
        share = inputs.attempt_share if op.fallback is not None else 1.0
        share_ms = op.budget_ms * share
        if route.p95_ms <= share_ms:
            continue
        what = "budget share" if op.fallback is not None else "budget"
        evidence = (
            f"{op.primary} p95 {_secs(route.p95_ms)} exceeds {op.operation_type}'s "
            f"{_secs(share_ms)} {what}"
        )
        if op.fallback is not None:
            evidence += f" ({_pct(share)} of {_secs(op.budget_ms)})"
        if op.fallback_rate is not None and op.served:
            evidence += (
                f"; {_pct(op.fallback_rate)} of {op.operation_type} traffic fell back in the "
                f"last {_window(inputs.span_s)}"
            )
        suggested = route.p95_ms / share * 1.2
        action = f"Raise {op.operation_type}'s latency_budget_ms to at least {suggested:.0f}"
        if op.fallback is not None:
            action += f", or make {op.fallback} its primary"
        found.append(Recommendation("slow-primary", Severity.WARNING, action, evidence))
    return found


def _hedge_losing_primaries(inputs: RecommendationInputs) -> list[Recommendation]:
    """A primary that keeps losing its hedge races is started — and billed — for every hedged
    request while the fallback does the work. Grouped by (primary, fallback) pair, since the
    suggested swap is per pair; the operation types are named."""
    routes = {r.route: r for r in inputs.routes}
    pairs: dict[tuple[str, str], list[OperationReport]] = {}
    for op in inputs.operations:
        if op.fallback is not None and op.hedged:
            pairs.setdefault((op.primary, op.fallback), []).append(op)
    found = []
    for (primary, fallback), ops in pairs.items():
        races = sum(op.hedged for op in ops)
        lost = sum(op.hedges_lost for op in ops)
        if races < MIN_HEDGE_RACES or lost < races * HEDGE_LOSS_WARNING:
            continue
        names = (
            ", ".join(op.operation_type for op in ops if op.hedges_lost) or ops[0].operation_type
        )
        evidence = (
            f"{primary} lost {lost} of {races} hedge races to {fallback} in the last "
            f"{_window(inputs.span_s)}"
        )
        mine, theirs = routes.get(primary), routes.get(fallback)
        if mine is not None and mine.p95_ms is not None:
            evidence += f"; its p95 {_secs(mine.p95_ms)}"
            if theirs is not None and theirs.p95_ms is not None:
                evidence += f" against {fallback}'s {_secs(theirs.p95_ms)}"
        else:
            evidence += "; none of its attempts succeeded in the window"
        evidence += f"; each hedged request still starts (and may be billed on) {primary}"
        found.append(
            Recommendation(
                "hedge-losing-primary",
                Severity.WARNING,
                f"Consider making {fallback} the primary for {names}, or check {primary}'s latency",
                evidence,
            )
        )
    return found


def _high_fallback_rate(inputs: RecommendationInputs) -> list[Recommendation]:
    rate = inputs.fallback_rate
    if rate is None or inputs.served < MIN_REQUESTS or rate <= FALLBACK_RATE_WARNING:
        return []
    worst = sorted(
        (op for op in inputs.operations if op.fallback_rate),
        key=lambda op: op.fallback_rate or 0.0,
        reverse=True,
    )[:3]
    listing = ", ".join(
        f"{op.operation_type} {_pct(op.fallback_rate or 0.0)} ({op.primary} → {op.fallback})"
        for op in worst
    )
    return [
        Recommendation(
            "high-fallback-rate",
            Severity.WARNING,
            "Find out why primaries fail over (see the routes' last errors and latencies)",
            f"fallback rate {_pct(rate)} exceeds {_pct(FALLBACK_RATE_WARNING)} over "
            f"{inputs.served} served requests; by operation: {listing}",
        )
    ]


def _low_efficiency(inputs: RecommendationInputs) -> list[Recommendation]:
    value = inputs.routing_efficiency
    if value is None or inputs.requests < MIN_REQUESTS or value >= EFFICIENCY_INFO:
        return []
    causes = {
        "fell back": inputs.inefficient_fallback,
        "over budget": inputs.inefficient_over_budget,
        "not served": inputs.inefficient_unserved,
    }
    main = max(causes, key=lambda k: causes[k])
    actions = {
        "fell back": "Look at the primaries' health: most misses were served by a fallback",
        "over budget": "Look at latency: most misses were served, but over their budget",
        "not served": "Look at errors and shedding: most misses were never served",
    }
    listing = ", ".join(f"{n} {cause}" for cause, n in causes.items() if n)
    return [
        Recommendation(
            "low-efficiency",
            Severity.INFO,
            actions[main],
            f"routing efficiency {_pct(value)} is below {_pct(EFFICIENCY_INFO)} over "
            f"{inputs.requests} requests; of the misses: {listing}",
        )
    ]


def _error_rate(inputs: RecommendationInputs) -> list[Recommendation]:
    rate = inputs.error_rate
    if rate is None or inputs.requests < MIN_REQUESTS or rate <= ERROR_RATE_WARNING:
        return []
    severity = Severity.CRITICAL if rate > ERROR_RATE_CRITICAL else Severity.WARNING
    failing = [
        f"{r.route}: {r.last_error}"
        for r in inputs.routes
        if r.last_error and (r.success_rate is not None and r.success_rate < 1.0)
    ]
    evidence = f"{_pct(rate)} of {inputs.requests} requests failed in the last " + _window(
        inputs.span_s
    )
    if failing:
        evidence += "; " + "; ".join(failing)
    return [
        Recommendation(
            "error-rate",
            severity,
            "Investigate the failing routes: requests are failing after every allowed attempt",
            evidence,
        )
    ]


def _shedding(inputs: RecommendationInputs) -> list[Recommendation]:
    if not any(inputs.shed.values()):
        return []
    listing = ", ".join(f"{priority} {n}" for priority, n in inputs.shed.items() if n)
    return [
        Recommendation(
            "load-shedding",
            Severity.WARNING,
            "Add upstream capacity or raise the saturated routes' max_in_flight: the gateway "
            "is refusing lower-priority work to keep critical work inside its budget",
            f"requests shed with 429 in the last {_window(inputs.span_s)}: {listing}",
        )
    ]


def _monitoring_off(inputs: RecommendationInputs) -> list[Recommendation]:
    if inputs.monitoring:
        return []
    return [
        Recommendation(
            "monitoring-off",
            Severity.INFO,
            "Turn ENABLE_HYBRID_HEALTH_MONITORING on",
            "active probes are paused: a dead route is found only by failing requests, and a "
            f"recovered one only when its breaker's open time (from {inputs.breaker_open_s:g} s, "
            "doubling) runs out",
        )
    ]


def _slow_probes(inputs: RecommendationInputs) -> list[Recommendation]:
    if not inputs.monitoring:
        return []
    limit_ms = inputs.probe_timeout_s * 1000 * PROBE_SLOW_SHARE
    return [
        Recommendation(
            "slow-probe",
            Severity.INFO,
            f"Check {r.route}'s latency, or raise health.probe_timeout_s "
            f"(now {inputs.probe_timeout_s:g} s)",
            f"{r.route}'s last probe took {_secs(r.probe_latency_ms)}, over half the probe timeout",
        )
        for r in inputs.routes
        if r.probe_latency_ms is not None and r.last_probe_ok and r.probe_latency_ms > limit_ms
    ]


def _low_accuracy(inputs: RecommendationInputs) -> list[Recommendation]:
    value = inputs.routing_accuracy
    if value is None or inputs.eligible < MIN_REQUESTS or value >= ACCURACY_INFO:
        return []
    return [
        Recommendation(
            "low-accuracy",
            Severity.INFO,
            "Check budget pressure: with budget over 80 % medium and low work is sent to the "
            "cheaper route first, which lowers routing accuracy by design",
            f"routing accuracy {_pct(value)} over {inputs.eligible} decisions whose primary "
            "was healthy and allowed",
        )
    ]


_RULES = (
    _unhealthy_routes,
    _exposed_without_fallback,
    _slow_primaries,
    _hedge_losing_primaries,
    _high_fallback_rate,
    _low_efficiency,
    _error_rate,
    _shedding,
    _monitoring_off,
    _slow_probes,
    _low_accuracy,
)
