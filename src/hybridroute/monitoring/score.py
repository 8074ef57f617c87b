"""The overall health score, 0–100, from four parts that each run from 0 (bad) to 1 (good):

    score = round(100 × (0.4 × H + 0.3 × S + 0.2 × E + 0.1 × (1 − F)))

- H, route health: the mean over routes of 1 (healthy), 0.5 (degraded) or 0 (unhealthy);
- S, success: 1 − error rate (requests that failed or were interrupted, over all requests);
- E, routing efficiency (DESIGN.md §4);
- F, fallback rate (DESIGN.md §4).

With no traffic in the window S and E count as 1 and F as 0: no evidence of trouble, so the
score is the routes' health alone. Bands: ≥ 90 healthy, ≥ 70 degraded, below that critical.
"""

from __future__ import annotations

from collections.abc import Iterable

from hybridroute.monitoring.report import RouteStatus, ScoreParts

__all__ = ["WEIGHTS", "score", "score_parts", "status_for"]

WEIGHTS = (0.4, 0.3, 0.2, 0.1)
_ROUTE_VALUE = {RouteStatus.HEALTHY: 1.0, RouteStatus.DEGRADED: 0.5, RouteStatus.UNHEALTHY: 0.0}


def score_parts(
    route_statuses: Iterable[RouteStatus],
    error_rate: float | None,
    efficiency: float | None,
    fallback_rate: float | None,
) -> ScoreParts:
    values = [_ROUTE_VALUE[s] for s in route_statuses]
    return ScoreParts(
        route_health=sum(values) / len(values) if values else 1.0,
        success=1.0 - (error_rate or 0.0),
        efficiency=1.0 if efficiency is None else efficiency,
        no_fallback=1.0 - (fallback_rate or 0.0),
    )


def score(parts: ScoreParts) -> int:
    h, s, e, f = WEIGHTS
    raw = h * parts.route_health + s * parts.success + e * parts.efficiency + f * parts.no_fallback
    return round(100 * raw)


def status_for(value: int) -> str:
    if value >= 90:
        return "healthy"
    if value >= 70:
        return "degraded"
    return "critical"
