"""The decision policy: a pure function from (rule, health, flags, budget, residency, clock) to a
`Decision` — the ordered routes to try, the deadline, and the reason in words.

No I/O, no randomness, no hidden state: the same inputs give the same decision, which is why the
whole matrix × health × flag space is covered by table-driven tests. The executor carries the
decision out; this module only decides. The semantics are DESIGN.md §4:

- flags: support mode off → no bedrock route at all (MCP-only mode); intelligent routing off →
  everything to the MCP-only route; direct-bedrock fallback off → bedrock is never a fallback;
- residency: only routes whose region is in the requested region set; none left → refused;
- operator overrides: a disabled (isolated) route is never tried; none left → refused (503);
  in maintenance mode only critical rows are served, the rest get 503 with Retry-After;
- budget: ≥ 95 % refuses low priority, 100 % refuses everything but critical, 80–95 % prefers the
  cheaper route for medium/low rows when both are healthy;
- health: an unhealthy first route yields to a usable one; when none is usable, the first is
  tried anyway (it is `forced`). A decision with a single route always forces it — with nothing
  to fall back to, trying beats refusing — which is how an emergency with no fallback still gets
  its attempts even while its breaker is open or half-open;
- deadline: the row's latency budget, or a smaller one the caller asked for;
- hedging: with performance optimisation on, a row that hedges (by default critical and high
  rows with a fallback) may start its fallback while the primary is still working — only when
  both are usable and the primary is first.
"""

from __future__ import annotations

from dataclasses import dataclass

from hybridroute.errors import (
    BudgetRefused,
    InMaintenance,
    RequestError,
    ResidencyUnsatisfiable,
    RoutesDisabled,
)
from hybridroute.routing.matrix import RoutingRule, Topology
from hybridroute.signals import (
    NO_BUDGET_PRESSURE,
    NO_OVERRIDES,
    BudgetLevel,
    BudgetView,
    FlagState,
    HealthStatus,
    HealthView,
    Overrides,
    RouteHealth,
)
from hybridroute.types import Priority, RouteId, RouteKind

__all__ = ["Decision", "decide"]

_HEALTHY = RouteHealth(HealthStatus.HEALTHY)


@dataclass(frozen=True, slots=True)
class Decision:
    """The result of the policy for one request."""

    decision_id: str
    rule: RoutingRule
    routes: tuple[RouteId, ...]
    forced: RouteId | None
    deadline: float
    budget_ms: int
    reason: str
    decided_at: float
    # The primary was allowed (flags, residency) and healthy when deciding: the decisions that
    # routing accuracy is measured over (DESIGN.md §4).
    primary_eligible: bool
    # Start the second route too if the first is slow (performance optimisation on, the row
    # hedges, both routes usable and in matrix order).
    hedge: bool = False
    # The region set the request was held to (None: unconstrained).
    residency: str | None = None

    @property
    def primary(self) -> RouteId:
        """The matrix primary of the rule (a request served elsewhere is a fallback)."""
        return self.rule.primary


def decide(  # noqa: PLR0913 - the policy's inputs are exactly DESIGN.md §4's list
    rule: RoutingRule,
    *,
    topology: Topology,
    health: HealthView,
    flags: FlagState,
    now: float,
    decision_id: str,
    budget: BudgetView = NO_BUDGET_PRESSURE,
    residency: str | None = None,
    requested_budget_ms: int | None = None,
    overrides: Overrides = NO_OVERRIDES,
) -> Decision:
    """Decide which routes serve a request, in which order, by when, and why."""
    _admit(rule, budget, overrides)
    candidates, clause = _candidates(rule, topology, flags)
    clauses = [clause]
    if residency is not None:
        candidates, residency_clause = _within_residency(candidates, residency, topology)
        if residency_clause:
            clauses.append(residency_clause)
    if overrides.disabled_routes:
        candidates, disabled_clause = _without_disabled(candidates, overrides.disabled_routes)
        if disabled_clause:
            clauses.append(disabled_clause)
    candidates, cost_clause = _prefer_cheaper(candidates, rule, budget, health)
    if cost_clause:
        clauses.append(cost_clause)
    primary_eligible = (
        rule.primary in candidates
        and health.get(rule.primary, _HEALTHY).status is HealthStatus.HEALTHY
    )
    routes, forced, health_clause = _order_by_health(candidates, health)
    clauses.append(health_clause)
    hedge = (
        flags.performance_optimization
        and rule.hedge
        and forced is None
        and len(routes) >= 2
        and routes[0] == rule.primary
        and health.get(routes[0], _HEALTHY).status is HealthStatus.HEALTHY
        and health.get(routes[1], _HEALTHY).usable
    )
    budget_ms = rule.latency_budget_ms
    if requested_budget_ms is not None and requested_budget_ms < budget_ms:
        budget_ms = requested_budget_ms
        clauses.append(f"caller budget {budget_ms} ms")
    return Decision(
        decision_id=decision_id,
        rule=rule,
        routes=routes,
        forced=forced,
        deadline=now + budget_ms / 1000.0,
        budget_ms=budget_ms,
        reason="; ".join(clauses),
        decided_at=now,
        primary_eligible=primary_eligible,
        hedge=hedge,
        residency=residency,
    )


def _admit(rule: RoutingRule, budget: BudgetView, overrides: Overrides) -> None:
    if overrides.maintenance and rule.priority is not Priority.CRITICAL:
        why = f" ({overrides.maintenance_reason})" if overrides.maintenance_reason else ""
        raise InMaintenance(
            f"the gateway is in maintenance mode{why}: only critical operations are served; "
            f"{rule.operation_type} is {rule.priority.value} priority, retry later",
            retry_after_s=overrides.maintenance_retry_after_s,
        )
    # DESIGN.md §4.7 says non-critical work is throttled at 95 %; the cost issue that builds the
    # ledger narrows it (and is newer): at 95 % low-priority work is throttled, at 100 % only
    # critical work is served.
    level = budget.level
    if level is BudgetLevel.NORMAL or level is BudgetLevel.ELEVATED:
        return
    used = f"{budget.utilisation * 100:.0f}%"
    if level is BudgetLevel.EXHAUSTED and rule.priority is not Priority.CRITICAL:
        raise BudgetRefused(
            f"budget exhausted ({used} used): only critical operations are served until the "
            f"window resets; {rule.operation_type} is {rule.priority.value} priority",
            retry_after_s=budget.retry_after_s,
        )
    if level is BudgetLevel.CRITICAL and rule.priority is Priority.LOW:
        raise BudgetRefused(
            f"budget at {used}: emergency cost controls throttle low-priority work; "
            f"{rule.operation_type} is low priority, retry later",
            retry_after_s=budget.retry_after_s,
        )


def _candidates(
    rule: RoutingRule, topology: Topology, flags: FlagState
) -> tuple[list[RouteId], str]:
    mcp_only = topology.mcp_only_route
    if not flags.intelligent_routing:
        return [mcp_only], f"ENABLE_INTELLIGENT_ROUTING off: every operation goes to {mcp_only}"
    kinds = topology.kinds
    if not flags.bedrock_support_mode:
        kept = [
            r
            for r in (rule.primary, rule.fallback)
            if r is not None and kinds.get(r) is not RouteKind.BEDROCK
        ]
        routes = kept or [mcp_only]
        return routes, (
            f"MCP-only mode (ENABLE_BEDROCK_SUPPORT_MODE off): {', '.join(routes)}, "
            "no bedrock route"
        )
    if rule.fallback is None:
        return [rule.primary], f"matrix: {rule.primary}, no fallback"
    if kinds.get(rule.fallback) is RouteKind.BEDROCK and not flags.direct_bedrock_fallback:
        return [rule.primary], (
            f"matrix: {rule.primary}, fallback {rule.fallback} disabled "
            "(ENABLE_DIRECT_BEDROCK_FALLBACK off)"
        )
    return [rule.primary, rule.fallback], f"matrix: {rule.primary}, fallback {rule.fallback}"


def _within_residency(
    candidates: list[RouteId], residency: str, topology: Topology
) -> tuple[list[RouteId], str]:
    allowed = topology.region_sets.get(residency)
    if allowed is None:
        raise RequestError(
            f"unknown residency {residency!r}; configured region sets: "
            f"{', '.join(sorted(topology.region_sets)) or 'none'}",
            param="residency",
        )
    excluded = {r: topology.regions.get(r) for r in candidates}
    excluded = {r: region for r, region in excluded.items() if region not in allowed}
    kept = [r for r in candidates if r not in excluded]
    if not kept:
        listing = ", ".join(f"{r} ({region or 'no region'})" for r, region in excluded.items())
        raise ResidencyUnsatisfiable(
            f"no route satisfies residency {residency!r}: {listing} are outside "
            f"{{{', '.join(sorted(allowed))}}}; the request was refused and sent nowhere",
            residency=residency,
            excluded=excluded,
        )
    if not excluded:
        return kept, ""
    listing = ", ".join(f"{r} ({region or 'no region'})" for r, region in excluded.items())
    return kept, f"residency {residency} excludes {listing}"


def _without_disabled(
    candidates: list[RouteId], disabled: frozenset[RouteId]
) -> tuple[list[RouteId], str]:
    kept = [r for r in candidates if r not in disabled]
    gone = [r for r in candidates if r in disabled]
    if not kept:
        raise RoutesDisabled(
            f"every route allowed for this request is disabled by an operator "
            f"({', '.join(gone)}); the request was refused and sent nowhere",
            disabled=gone,
        )
    return kept, (f"disabled by an operator: {', '.join(gone)}" if gone else "")


def _prefer_cheaper(
    candidates: list[RouteId], rule: RoutingRule, budget: BudgetView, health: HealthView
) -> tuple[list[RouteId], str]:
    cheaper = budget.cheaper_route
    if (
        budget.level is not BudgetLevel.ELEVATED
        or rule.priority not in (Priority.MEDIUM, Priority.LOW)
        or cheaper is None
        or len(candidates) < 2
        or candidates[0] == cheaper
        or cheaper not in candidates
        or any(health.get(r, _HEALTHY).status is not HealthStatus.HEALTHY for r in candidates)
    ):
        return candidates, ""
    reordered = [cheaper] + [r for r in candidates if r != cheaper]
    return reordered, (
        f"budget {budget.utilisation * 100:.0f}% used: preferring cheaper route {cheaper}"
    )


def _order_by_health(
    candidates: list[RouteId], health: HealthView
) -> tuple[tuple[RouteId, ...], RouteId | None, str]:
    first = candidates[0]
    first_state = health.get(first, _HEALTHY)
    only = first if len(candidates) == 1 else None
    if first_state.status is HealthStatus.HEALTHY:
        return tuple(candidates), only, f"{first} healthy"
    if first_state.status is HealthStatus.PROBING:
        return tuple(candidates), only, f"{first} half-open, sending a probe"
    states = {r: health.get(r, _HEALTHY) for r in candidates}
    usable = [r for r in candidates if states[r].usable]
    if usable:
        rest = [r for r in candidates if r not in usable]
        return (
            tuple(usable + rest),
            None,
            f"{first} unhealthy ({_detail(first_state)}): {usable[0]} first",
        )
    if len(candidates) == 1:
        return (
            (first,),
            first,
            f"{first} unhealthy ({_detail(first_state)}): no other route allowed, trying it anyway",
        )
    listing = "; ".join(f"{r}: {_detail(states[r])}" for r in candidates)
    return (
        tuple(candidates),
        first,
        f"all routes unhealthy ({listing}): trying {first} anyway",
    )


def _detail(state: RouteHealth) -> str:
    return state.detail or state.status.value
