"""The decision policy over the whole default matrix: every row × health × flag set.

A decision left with a single route always forces it (tried even past its breaker).

The expected route orders are written out by hand per row shape (direct primary with an MCP
fallback, direct primary with no fallback, MCP primary with a direct fallback), so a change in
the policy's semantics shows up here as a failing case rather than being mirrored by the test.
"""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from hybridroute.config.schema import GatewayConfig, McpRouteConfig
from hybridroute.routing.matrix import RoutingMatrix, Topology
from hybridroute.routing.policy import decide
from hybridroute.signals import FlagState, HealthStatus, RouteHealth
from hybridroute.types import BUILTIN_OPERATION_TYPES

D, M = "direct_bedrock", "mcp"


def _config() -> GatewayConfig:
    return GatewayConfig(
        routes={
            D: {"type": "bedrock", "region": "eu-central-1", "model_id": "m"},
            M: McpRouteConfig(
                type="mcp", transport="stdio", command=["srv"], region="eu-central-1"
            ),
        }
    )


CONFIG = _config()
MATRIX = RoutingMatrix.from_config(CONFIG)
TOPOLOGY = Topology.from_config(CONFIG)

SHAPE = {
    "emergency": "direct-only",
    "infrastructure": "direct-then-mcp",
    "meta_monitor": "direct-then-mcp",
    "implementation": "direct-then-mcp",
    "kiro_communication": "mcp-then-direct",
    "standard": "mcp-then-direct",
    "background": "mcp-then-direct",
}

FLAG_SETS = {
    "all on": FlagState(),
    "support mode off": FlagState(bedrock_support_mode=False),
    "intelligent routing off": FlagState(intelligent_routing=False),
    "direct fallback off": FlagState(direct_bedrock_fallback=False),
    "health monitoring off": FlagState(hybrid_health_monitoring=False),
    "performance optimization off": FlagState(performance_optimization=False),
    "disable all": FlagState.all_off(),
}

DOWN = RouteHealth(HealthStatus.UNHEALTHY, "breaker open, retry in 4.0s")


@dataclass(frozen=True)
class Expect:
    routes: tuple[str, ...]
    forced: str | None
    reason: tuple[str, ...]


# (shape, health) → expectation with the matrix followed (flags that do not change routing).
PLAIN = {
    ("direct-then-mcp", "healthy"): Expect(
        (D, M), None, ("matrix: direct_bedrock, fallback mcp", "direct_bedrock healthy")
    ),
    ("direct-then-mcp", "primary down"): Expect(
        (M, D), None, ("direct_bedrock unhealthy (breaker open, retry in 4.0s): mcp first",)
    ),
    ("direct-then-mcp", "both down"): Expect(
        (D, M), D, ("all routes unhealthy", "trying direct_bedrock anyway")
    ),
    ("direct-only", "healthy"): Expect(
        (D,), D, ("matrix: direct_bedrock, no fallback", "direct_bedrock healthy")
    ),
    ("direct-only", "primary down"): Expect(
        (D,), D, ("direct_bedrock unhealthy", "no other route allowed, trying it anyway")
    ),
    ("direct-only", "both down"): Expect(
        (D,), D, ("direct_bedrock unhealthy", "no other route allowed, trying it anyway")
    ),
    ("mcp-then-direct", "healthy"): Expect(
        (M, D), None, ("matrix: mcp, fallback direct_bedrock", "mcp healthy")
    ),
    ("mcp-then-direct", "primary down"): Expect(
        (D, M), None, ("mcp unhealthy (breaker open, retry in 4.0s): direct_bedrock first",)
    ),
    ("mcp-then-direct", "both down"): Expect(
        (M, D), M, ("all routes unhealthy", "trying mcp anyway")
    ),
}


def _mcp_only(shape: str, health: str, why: str) -> Expect:
    mcp_down = health == "both down" or (health == "primary down" and shape == "mcp-then-direct")
    if mcp_down:
        return Expect((M,), M, (why, "mcp unhealthy", "no other route allowed, trying it anyway"))
    return Expect((M,), M, (why, "mcp healthy"))


def expected(shape: str, health: str, flags: str) -> Expect:
    if flags in ("intelligent routing off", "disable all"):
        return _mcp_only(
            shape, health, "ENABLE_INTELLIGENT_ROUTING off: every operation goes to mcp"
        )
    if flags == "support mode off":
        return _mcp_only(shape, health, "MCP-only mode (ENABLE_BEDROCK_SUPPORT_MODE off)")
    if flags == "direct fallback off" and shape == "mcp-then-direct":
        why = "fallback direct_bedrock disabled (ENABLE_DIRECT_BEDROCK_FALLBACK off)"
        if health == "healthy":
            return Expect((M,), M, (why, "mcp healthy"))
        return Expect((M,), M, (why, "no other route allowed, trying it anyway"))
    return PLAIN[(shape, health)]


def _health(operation_type: str, health: str) -> dict[str, RouteHealth]:
    primary = MATRIX.rule_for(operation_type).primary
    other = M if primary == D else D
    if health == "healthy":
        return {}
    if health == "primary down":
        return {primary: DOWN}
    return {primary: DOWN, other: DOWN}


CASES = [
    (op, health, flags)
    for op in BUILTIN_OPERATION_TYPES
    for health in ("healthy", "primary down", "both down")
    for flags in FLAG_SETS
]


@pytest.mark.parametrize(("operation_type", "health", "flags"), CASES)
def test_decision_for_every_row_health_and_flag(operation_type: str, health: str, flags: str):
    """Route order, the forced route and the reason follow DESIGN.md §4 for every combination."""
    want = expected(SHAPE[operation_type], health, flags)
    decision = decide(
        MATRIX.rule_for(operation_type),
        topology=TOPOLOGY,
        health=_health(operation_type, health),
        flags=FLAG_SETS[flags],
        now=100.0,
        decision_id="dec-test",
    )
    assert decision.routes == want.routes
    assert decision.forced == want.forced
    for fragment in want.reason:
        assert fragment in decision.reason, decision.reason


def test_case_table_covers_the_whole_space():
    """7 rows × 3 health states × 7 flag sets."""
    assert len(CASES) == 7 * 3 * 7
    assert set(SHAPE) == set(BUILTIN_OPERATION_TYPES)


@pytest.mark.parametrize("operation_type", BUILTIN_OPERATION_TYPES)
def test_deadline_is_the_rows_latency_budget(operation_type: str):
    rule = MATRIX.rule_for(operation_type)
    decision = decide(
        rule, topology=TOPOLOGY, health={}, flags=FlagState(), now=50.0, decision_id="d"
    )
    assert decision.budget_ms == rule.latency_budget_ms
    assert decision.deadline == pytest.approx(50.0 + rule.latency_budget_ms / 1000)


def test_the_seed_matrix_budgets_and_priorities():
    """The default matrix is the seed's seven rows."""
    rows = {
        op: (r.priority.value, r.latency_budget_ms, r.primary, r.fallback)
        for op, r in MATRIX.rules.items()
    }
    assert rows == {
        "emergency": ("critical", 5000, D, None),
        "infrastructure": ("critical", 10000, D, M),
        "meta_monitor": ("high", 15000, D, M),
        "implementation": ("high", 15000, D, M),
        "kiro_communication": ("medium", 30000, M, D),
        "standard": ("medium", 30000, M, D),
        "background": ("low", 60000, M, D),
    }
