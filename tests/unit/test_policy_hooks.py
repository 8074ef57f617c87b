"""The policy's other inputs: residency, budget state, caller budgets, half-open probes."""

from __future__ import annotations

import pytest

from hybridroute.config.schema import GatewayConfig
from hybridroute.errors import BudgetRefused, RequestError, ResidencyUnsatisfiable
from hybridroute.routing.matrix import RoutingMatrix, Topology
from hybridroute.routing.policy import decide
from hybridroute.signals import BudgetLevel, BudgetView, FlagState, HealthStatus, RouteHealth

D, M = "direct_bedrock", "mcp"


def _setup(bedrock_region: str = "us-east-1", mcp_region: str | None = "eu-central-1"):
    config = GatewayConfig(
        routes={
            D: {"type": "bedrock", "region": bedrock_region, "model_id": "m"},
            M: {"type": "mcp", "transport": "stdio", "command": ["srv"], "region": mcp_region},
        }
    )
    return RoutingMatrix.from_config(config), Topology.from_config(config)


def _decide(op: str, *, matrix, topology, **kwargs):
    kwargs.setdefault("health", {})
    kwargs.setdefault("flags", FlagState())
    return decide(matrix.rule_for(op), topology=topology, now=0.0, decision_id="d", **kwargs)


def test_residency_excludes_routes_outside_the_region_set():
    matrix, topology = _setup(bedrock_region="us-east-1")
    decision = _decide("infrastructure", matrix=matrix, topology=topology, residency="eu")
    assert decision.routes == (M,)
    assert "residency eu excludes direct_bedrock (us-east-1)" in decision.reason


def test_residency_keeps_eu_routes():
    matrix, topology = _setup(bedrock_region="eu-west-1")
    decision = _decide("infrastructure", matrix=matrix, topology=topology, residency="eu")
    assert decision.routes == (D, M)


@pytest.mark.parametrize("region", ["eu-west-2", "eu-central-2", "us-east-1"])
def test_london_zurich_and_us_are_not_eu(region: str):
    matrix, topology = _setup(bedrock_region=region, mcp_region=region)
    with pytest.raises(ResidencyUnsatisfiable) as info:
        _decide("standard", matrix=matrix, topology=topology, residency="eu")
    assert "no route satisfies residency 'eu'" in info.value.message
    assert "sent nowhere" in info.value.message
    assert info.value.http_status() == 422


def test_residency_fails_closed_when_no_route_is_left():
    matrix, topology = _setup(bedrock_region="us-east-1", mcp_region=None)
    with pytest.raises(ResidencyUnsatisfiable) as info:
        _decide("emergency", matrix=matrix, topology=topology, residency="eu")
    assert info.value.excluded == {D: "us-east-1"}


def test_unknown_residency_is_a_request_error():
    matrix, topology = _setup()
    with pytest.raises(RequestError, match="unknown residency 'mars'"):
        _decide("standard", matrix=matrix, topology=topology, residency="mars")


@pytest.mark.parametrize(
    ("level", "operation_type", "refused"),
    [
        (BudgetLevel.CRITICAL, "background", True),
        (BudgetLevel.CRITICAL, "standard", False),
        (BudgetLevel.CRITICAL, "emergency", False),
        (BudgetLevel.EXHAUSTED, "standard", True),
        (BudgetLevel.EXHAUSTED, "meta_monitor", True),
        (BudgetLevel.EXHAUSTED, "infrastructure", False),
        (BudgetLevel.EXHAUSTED, "emergency", False),
        (BudgetLevel.ELEVATED, "background", False),
    ],
)
def test_budget_levels_refuse_by_priority(level, operation_type, refused):
    matrix, topology = _setup(bedrock_region="eu-central-1")
    budget = BudgetView(level=level, utilisation=0.97, retry_after_s=120)
    if refused:
        with pytest.raises(BudgetRefused) as info:
            _decide(operation_type, matrix=matrix, topology=topology, budget=budget)
        assert info.value.headers() == {"retry-after": "120"}
        assert info.value.http_status() == 429
    else:
        assert _decide(operation_type, matrix=matrix, topology=topology, budget=budget).routes


def test_elevated_budget_prefers_the_cheaper_route_for_medium_work():
    matrix, topology = _setup(bedrock_region="eu-central-1")
    budget = BudgetView(level=BudgetLevel.ELEVATED, utilisation=0.85, cheaper_route=M)
    medium = _decide("standard", matrix=matrix, topology=topology, budget=budget)
    assert medium.routes == (M, D)  # already cheaper first
    critical = _decide("infrastructure", matrix=matrix, topology=topology, budget=budget)
    assert critical.routes == (D, M)  # critical work keeps its primary
    cheaper_direct = BudgetView(level=BudgetLevel.ELEVATED, utilisation=0.85, cheaper_route=D)
    swapped = _decide("standard", matrix=matrix, topology=topology, budget=cheaper_direct)
    assert swapped.routes == (D, M)
    assert "budget 85% used: preferring cheaper route direct_bedrock" in swapped.reason


def test_caller_can_only_lower_the_budget():
    matrix, topology = _setup()
    lower = _decide("standard", matrix=matrix, topology=topology, requested_budget_ms=2000)
    assert lower.budget_ms == 2000
    assert lower.deadline == pytest.approx(2.0)
    assert "caller budget 2000 ms" in lower.reason
    higher = _decide("emergency", matrix=matrix, topology=topology, requested_budget_ms=90_000)
    assert higher.budget_ms == 5000


def test_half_open_primary_gets_a_probe_first():
    matrix, topology = _setup()
    health = {D: RouteHealth(HealthStatus.PROBING, "breaker half-open")}
    decision = _decide("infrastructure", matrix=matrix, topology=topology, health=health)
    assert decision.routes == (D, M)
    assert decision.forced is None
    assert "direct_bedrock half-open, sending a probe" in decision.reason


def test_primary_eligibility_is_allowed_and_healthy():
    """Routing accuracy counts only decisions whose primary was allowed and healthy."""
    matrix, topology = _setup(bedrock_region="us-east-1")
    plain = _decide("infrastructure", matrix=matrix, topology=topology)
    assert plain.primary_eligible
    down = {D: RouteHealth(HealthStatus.UNHEALTHY, "breaker open")}
    assert not _decide(
        "infrastructure", matrix=matrix, topology=topology, health=down
    ).primary_eligible
    probing = {D: RouteHealth(HealthStatus.PROBING, "breaker half-open")}
    assert not _decide(
        "infrastructure", matrix=matrix, topology=topology, health=probing
    ).primary_eligible
    outside = _decide("infrastructure", matrix=matrix, topology=topology, residency="eu")
    assert not outside.primary_eligible  # residency excludes the us-east-1 primary
    mcp_only = FlagState(intelligent_routing=False)
    assert not _decide(
        "infrastructure", matrix=matrix, topology=topology, flags=mcp_only
    ).primary_eligible
    # a budget-driven reorder keeps the primary eligible: that decision is a deviation
    cheaper = BudgetView(level=BudgetLevel.ELEVATED, utilisation=0.85, cheaper_route=D)
    swapped = _decide("standard", matrix=matrix, topology=topology, budget=cheaper)
    assert swapped.primary_eligible
    assert swapped.routes[0] != swapped.primary


def test_hedging_needs_the_flag_the_row_and_two_usable_routes_in_matrix_order():
    matrix, topology = _setup(bedrock_region="eu-central-1")
    assert _decide("infrastructure", matrix=matrix, topology=topology).hedge
    assert _decide("implementation", matrix=matrix, topology=topology).hedge  # high
    assert not _decide("standard", matrix=matrix, topology=topology).hedge  # medium: opt-in
    assert not _decide("emergency", matrix=matrix, topology=topology).hedge  # no fallback
    off = FlagState(performance_optimization=False)
    assert not _decide("infrastructure", matrix=matrix, topology=topology, flags=off).hedge
    down = {D: RouteHealth(HealthStatus.UNHEALTHY, "breaker open")}
    swapped = _decide("infrastructure", matrix=matrix, topology=topology, health=down)
    assert swapped.routes == (M, D)
    assert not swapped.hedge  # the fallback is already first
    backup_down = {M: RouteHealth(HealthStatus.UNHEALTHY, "breaker open")}
    assert not _decide("infrastructure", matrix=matrix, topology=topology, health=backup_down).hedge
    no_bedrock_fallback = FlagState(direct_bedrock_fallback=False)
    assert not _decide(
        "standard", matrix=matrix, topology=topology, flags=no_bedrock_fallback
    ).hedge
