"""The inputs of the decision policy: route health, feature flags and budget state.

They are produced by different parts of the gateway (breakers and probes, the flag store, the
budget ledger) and read by the pure policy in `routing.policy`. Keeping their value types here,
below every producer, lets each producer build them without importing the policy.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from enum import Enum, StrEnum

from hybridroute.types import RouteId

__all__ = [
    "NO_BUDGET_PRESSURE",
    "NO_OVERRIDES",
    "BudgetLevel",
    "BudgetView",
    "Flag",
    "FlagState",
    "HealthStatus",
    "HealthView",
    "Overrides",
    "RouteHealth",
]


class HealthStatus(StrEnum):
    """How usable a route is right now."""

    HEALTHY = "healthy"
    PROBING = "probing"  # breaker half-open: a few trial requests may go through
    UNHEALTHY = "unhealthy"


@dataclass(frozen=True, slots=True)
class RouteHealth:
    """One route's health as the policy sees it, with a short human-readable detail."""

    status: HealthStatus
    detail: str = ""

    @property
    def usable(self) -> bool:
        """Whether the policy may put this route first (healthy, or half-open for a probe)."""
        return self.status is not HealthStatus.UNHEALTHY


HealthView = Mapping[RouteId, RouteHealth]
"""Health of every route at one instant."""


class Flag(StrEnum):
    """The five feature flags of Bedrock Support Mode."""

    BEDROCK_SUPPORT_MODE = "ENABLE_BEDROCK_SUPPORT_MODE"
    INTELLIGENT_ROUTING = "ENABLE_INTELLIGENT_ROUTING"
    DIRECT_BEDROCK_FALLBACK = "ENABLE_DIRECT_BEDROCK_FALLBACK"
    HYBRID_HEALTH_MONITORING = "ENABLE_HYBRID_HEALTH_MONITORING"
    PERFORMANCE_OPTIMIZATION = "ENABLE_PERFORMANCE_OPTIMIZATION"


@dataclass(frozen=True, slots=True)
class FlagState:
    """The value of every flag at one instant."""

    bedrock_support_mode: bool = True
    intelligent_routing: bool = True
    direct_bedrock_fallback: bool = True
    hybrid_health_monitoring: bool = True
    performance_optimization: bool = True

    @classmethod
    def from_mapping(cls, values: Mapping[str, bool]) -> FlagState:
        """Build from flag names (ENABLE_…) to values; missing flags are on."""
        return cls(
            bedrock_support_mode=values.get(Flag.BEDROCK_SUPPORT_MODE, True),
            intelligent_routing=values.get(Flag.INTELLIGENT_ROUTING, True),
            direct_bedrock_fallback=values.get(Flag.DIRECT_BEDROCK_FALLBACK, True),
            hybrid_health_monitoring=values.get(Flag.HYBRID_HEALTH_MONITORING, True),
            performance_optimization=values.get(Flag.PERFORMANCE_OPTIMIZATION, True),
        )

    @classmethod
    def all_off(cls) -> FlagState:
        """The emergency rollback state: every flag off (MCP-only routing)."""
        return cls(False, False, False, False, False)

    def as_mapping(self) -> dict[str, bool]:
        """Flag names (ENABLE_…) to values."""
        return {
            Flag.BEDROCK_SUPPORT_MODE.value: self.bedrock_support_mode,
            Flag.INTELLIGENT_ROUTING.value: self.intelligent_routing,
            Flag.DIRECT_BEDROCK_FALLBACK.value: self.direct_bedrock_fallback,
            Flag.HYBRID_HEALTH_MONITORING.value: self.hybrid_health_monitoring,
            Flag.PERFORMANCE_OPTIMIZATION.value: self.performance_optimization,
        }


class BudgetLevel(Enum):
    """Where spend stands against its budget."""

    NORMAL = 0  # below 80 %
    ELEVATED = 1  # 80 % or more: prefer the cheaper route for medium/low work
    CRITICAL = 2  # 95 % or more: throttle low-priority work
    EXHAUSTED = 3  # 100 %: only critical work is served


@dataclass(frozen=True, slots=True)
class BudgetView:
    """The budget state the policy reads for one request."""

    level: BudgetLevel = BudgetLevel.NORMAL
    utilisation: float = 0.0
    retry_after_s: int = 60
    cheaper_route: RouteId | None = None


NO_BUDGET_PRESSURE = BudgetView()
"""The budget view when no budget is configured or spend is low."""


@dataclass(frozen=True, slots=True)
class Overrides:
    """What operators imposed on routing right now (operator actions): routes isolated from
    all traffic, and maintenance mode (new non-critical work refused with 503)."""

    disabled_routes: frozenset[RouteId] = frozenset()
    maintenance: bool = False
    maintenance_retry_after_s: int = 60
    maintenance_reason: str = ""


NO_OVERRIDES = Overrides()
"""No operator action in force."""
