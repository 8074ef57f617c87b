"""The monitor's report: plain frozen values, with `as_dict()` for JSON and the CLI table.

Latencies are milliseconds; rates are fractions (0–1); a figure with no data behind it is None
(shown as "—"), never a made-up zero.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from enum import StrEnum
from typing import Any

from hybridroute.types import RouteId

__all__ = [
    "HealthReport",
    "OperationReport",
    "Recommendation",
    "RouteReport",
    "RouteStatus",
    "ScoreParts",
    "Severity",
]


class RouteStatus(StrEnum):
    HEALTHY = "healthy"
    DEGRADED = "degraded"
    UNHEALTHY = "unhealthy"


class Severity(StrEnum):
    CRITICAL = "critical"
    WARNING = "warning"
    INFO = "info"


@dataclass(frozen=True, slots=True)
class RouteReport:
    """One route's health snapshot: readiness, probes and breaker merged with real traffic."""

    route: RouteId
    kind: str
    region: str | None
    status: RouteStatus
    detail: str
    breaker: str
    latency_ewma_ms: float | None
    p50_ms: float | None
    p95_ms: float | None
    p99_ms: float | None
    attempts: int
    success_rate: float | None
    throughput_rps: float
    consecutive_failures: int
    probe: str  # the probe kind, or "off" while monitoring is off
    last_check: float | None  # epoch seconds of the last probe
    last_probe_ok: bool | None
    probe_latency_ms: float | None
    probe_consecutive_failures: int
    last_error: str | None
    in_flight: int  # admission control: attempts running now ...
    max_in_flight: int | None
    queued: int  # ... and waiting for a slot
    hedges_won: int = 0  # hedge races in the window it answered first in ...
    hedges_lost: int = 0  # ... and those it was cancelled in because the other side answered


@dataclass(frozen=True, slots=True)
class OperationReport:
    """One operation type over the window."""

    operation_type: str
    priority: str
    budget_ms: int
    primary: RouteId
    fallback: RouteId | None
    requests: int
    served: int
    failed: int
    shed: int
    fallback_rate: float | None
    efficiency: float | None
    within_budget: float | None
    p50_ms: float | None
    p95_ms: float | None
    p99_ms: float | None
    hedged: int  # hedge races: requests whose fallback was started alongside the primary
    hedges_lost: int = 0  # ... of which the primary lost (cancelled: the fallback answered)


@dataclass(frozen=True, slots=True)
class Recommendation:
    """Something an operator should change, and the figures that show why."""

    code: str
    severity: Severity
    action: str
    evidence: str


@dataclass(frozen=True, slots=True)
class ScoreParts:
    """The score's four inputs, each 0–1 (see `monitoring.score`)."""

    route_health: float
    success: float
    efficiency: float
    no_fallback: float


@dataclass(frozen=True, slots=True)
class HealthReport:
    """The whole picture at one instant."""

    generated_at: float  # epoch seconds
    window_s: float
    span_s: float  # how much of the window has data (less than window_s after a start)
    monitoring: bool  # ENABLE_HYBRID_HEALTH_MONITORING
    score: int
    status: str  # healthy (≥ 90), degraded (≥ 70) or critical
    score_parts: ScoreParts
    requests: int
    served: int
    throughput_rps: float
    routing_accuracy: float | None
    routing_efficiency: float | None
    fallback_rate: float | None
    error_rate: float | None
    shed: dict[str, int]
    routes: tuple[RouteReport, ...]
    operations: tuple[OperationReport, ...]
    recommendations: tuple[Recommendation, ...]

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    def route(self, route_id: RouteId) -> RouteReport:
        for report in self.routes:
            if report.route == route_id:
                return report
        raise KeyError(route_id)

    def operation(self, operation_type: str) -> OperationReport:
        for report in self.operations:
            if report.operation_type == operation_type:
                return report
        raise KeyError(operation_type)
