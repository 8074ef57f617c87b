"""The routing matrix as the runtime holds it: operation type → routing rule, plus the static
facts about routes (kind, region) the policy needs. Built once from a validated config."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from hybridroute.config.schema import BedrockRouteConfig, GatewayConfig, McpRouteConfig
from hybridroute.errors import UnknownOperationType
from hybridroute.types import Priority, RouteId, RouteKind

__all__ = ["RoutingMatrix", "RoutingRule", "Topology"]


@dataclass(frozen=True, slots=True)
class RoutingRule:
    """One matrix row: priority, latency budget, primary and fallback route, retries, stream
    timeouts and hedging."""

    operation_type: str
    priority: Priority
    latency_budget_ms: int
    primary: RouteId
    fallback: RouteId | None
    retries: int
    ttft_timeout_s: float | None = None
    stream_idle_timeout_s: float | None = None
    hedge: bool = False
    hedge_after_fraction: float | None = None


def _seconds(ms: int | None) -> float | None:
    return None if ms is None else ms / 1000.0


@dataclass(frozen=True, slots=True)
class Topology:
    """What the policy knows about routes independent of their health."""

    kinds: Mapping[RouteId, RouteKind]
    regions: Mapping[RouteId, str | None]
    mcp_only_route: RouteId
    region_sets: Mapping[str, frozenset[str]]

    @classmethod
    def from_config(cls, config: GatewayConfig) -> Topology:
        kinds: dict[RouteId, RouteKind] = {}
        regions: dict[RouteId, str | None] = {}
        for route_id, route in config.routes.items():
            if isinstance(route, BedrockRouteConfig):
                kinds[route_id] = RouteKind.BEDROCK
                regions[route_id] = route.region
            elif isinstance(route, McpRouteConfig):
                kinds[route_id] = RouteKind.MCP
                regions[route_id] = route.region
        return cls(
            kinds=kinds,
            regions=regions,
            mcp_only_route=config.routing.mcp_only_route,
            region_sets={k: frozenset(v) for k, v in config.residency.region_sets.items()},
        )


@dataclass(frozen=True, slots=True)
class RoutingMatrix:
    """Operation type → rule, with the operation type used when a request names none."""

    rules: Mapping[str, RoutingRule]
    default_operation_type: str

    @classmethod
    def from_config(cls, config: GatewayConfig) -> RoutingMatrix:
        rules = {
            op: RoutingRule(
                operation_type=op,
                priority=row.priority,
                latency_budget_ms=row.latency_budget_ms,
                primary=row.primary,
                fallback=row.fallback,
                retries=row.effective_retries(),
                ttft_timeout_s=_seconds(row.ttft_timeout_ms),
                stream_idle_timeout_s=_seconds(row.stream_idle_timeout_ms),
                hedge=row.hedged(),
                hedge_after_fraction=row.hedge_after_fraction,
            )
            for op, row in config.matrix.items()
        }
        return cls(rules=rules, default_operation_type=config.routing.default_operation_type)

    @property
    def operation_types(self) -> tuple[str, ...]:
        return tuple(self.rules)

    def rule_for(self, operation_type: str) -> RoutingRule:
        """The rule of an operation type; `UnknownOperationType` lists the valid ones."""
        rule = self.rules.get(operation_type)
        if rule is None:
            raise UnknownOperationType(operation_type, tuple(self.rules))
        return rule
