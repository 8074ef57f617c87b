"""Smoke tests: each component of a started runtime does its basic job against the configured,
running routes.

- `IntelligentRouter.routing_decision_basic`: every matrix row, decided with every route healthy
  and the environment's flags, goes first to its configured primary — and every built-in
  operation type's primary is the canonical route id of the original matrix (`emergency` →
  `direct_bedrock`, `standard` → `mcp`, …): the original deployment failed because one route was
  known as `direct` in one place and `direct_bedrock` in another;
- `DirectBedrockClient.direct_connection`: a real Converse round trip on every Bedrock route;
- `MCPRouter.mcp_connection`: the session initialised, `tools/list` offers the tool, one
  `tools/call` answers, on every MCP route;
- `HybridHealthMonitor.health_check_basic`: an active probe of every route succeeds and the
  monitor's report is not critical;
- `BedrockSupportManager.support_mode_basic`: the support manager's mode follows the flag and
  no emergency is declared.

Each check returns a detail on success and raises `CheckFailed` with the precise error
otherwise.
"""

from __future__ import annotations

from hybridroute.config.defaults import DEFAULT_MATRIX
from hybridroute.providers.bedrock.route import DirectBedrockRoute
from hybridroute.providers.mcp.route import McpRoute
from hybridroute.routing.policy import decide
from hybridroute.runtime import Runtime
from hybridroute.signals import FlagState, HealthStatus, RouteHealth
from hybridroute.types import ChatMessage, GenerationRequest, Priority

__all__ = [
    "CheckFailed",
    "bedrock_connection",
    "health_check",
    "mcp_connection",
    "routing_decisions",
    "support_mode",
]

_HEALTHY = RouteHealth(HealthStatus.HEALTHY)
_ROUND_TRIP_BUDGET_S = 10.0


class CheckFailed(Exception):
    """A check found something wrong; the message is the report's error line."""


def _request(operation_type: str, decision_id: str) -> GenerationRequest:
    return GenerationRequest(
        operation_type=operation_type,
        priority=Priority.MEDIUM,
        system=(),
        messages=(ChatMessage("user", "Deployment smoke test: reply with OK."),),
        max_tokens=16,
        temperature=0.0,
        top_p=None,
        stop=(),
        decision_id=decision_id,
        requested_model="default",
    )


def routing_decisions(runtime: Runtime, flags: FlagState) -> str:
    matrix, topology = runtime.matrix, runtime.topology
    healthy = dict.fromkeys(runtime.routes, _HEALTHY)
    problems: list[str] = []
    for op, rule in matrix.rules.items():
        canonical = DEFAULT_MATRIX.get(op, {}).get("primary")
        if canonical is not None and rule.primary != canonical:
            problems.append(f"Expected {op} to route to {canonical}, got {rule.primary}")
            continue
        decision = decide(
            rule,
            topology=topology,
            health=healthy,
            flags=flags,
            now=runtime.clock.monotonic(),
            decision_id=f"deploy-check-{op}",
        )
        expected = (
            rule.primary if flags.intelligent_routing and flags.bedrock_support_mode else None
        )
        if expected is not None and decision.routes[0] != expected:
            problems.append(
                f"Expected {op} to route to {expected}, got {decision.routes[0]} "
                f"({decision.reason})"
            )
    if problems:
        raise CheckFailed("Routing decision matrix validation failed: " + "; ".join(problems))
    return f"{len(matrix.rules)} matrix rows decide as configured"


async def bedrock_connection(runtime: Runtime) -> str:
    routes = [r for r in runtime.routes.values() if isinstance(r, DirectBedrockRoute)]
    if not routes:
        raise CheckFailed("Direct Bedrock connection failed: no Bedrock route is configured")
    done = []
    for route in routes:
        op = next(iter(runtime.matrix.rules))
        try:
            completion = await route.complete(
                _request(op, "deploy-check-bedrock"), budget_s=_ROUND_TRIP_BUDGET_S
            )
        except Exception as exc:  # noqa: BLE001 - any failure is the check's finding
            raise CheckFailed(
                f"Direct Bedrock connection failed on route {route.id}: {_describe(exc)}"
            ) from None
        done.append(f"{route.id}: {completion.model} answered")
    return "; ".join(done)


async def mcp_connection(runtime: Runtime) -> str:
    routes = [r for r in runtime.routes.values() if isinstance(r, McpRoute)]
    if not routes:
        raise CheckFailed("MCP connection failed: no MCP route is configured")
    done = []
    for route in routes:
        try:
            await route.session.probe("tools_list", budget_s=_ROUND_TRIP_BUDGET_S)
            completion = await route.complete(
                _request("standard", "deploy-check-mcp"), budget_s=_ROUND_TRIP_BUDGET_S
            )
        except Exception as exc:  # noqa: BLE001 - any failure is the check's finding
            raise CheckFailed(
                f"MCP connection failed on route {route.id}: {_describe(exc)}"
            ) from None
        done.append(f"{route.id}: initialize, tools/list and tools/call answered")
    if not completion.text:
        raise CheckFailed("MCP connection failed: tools/call returned no text")
    return "; ".join(done)


async def health_check(runtime: Runtime) -> str:
    failed = []
    for route_id in runtime.routes:
        result = await runtime.prober.probe(route_id)
        if not result.ok:
            failed.append(f"{route_id}: {result.error}")
    if failed:
        raise CheckFailed("Health check failed: " + "; ".join(failed))
    report = runtime.monitor.report()
    if report.status == "critical":
        raise CheckFailed(f"Health check failed: health score {report.score} ({report.status})")
    return f"every route answered its probe; health score {report.score} ({report.status})"


def support_mode(runtime: Runtime, flags: FlagState) -> str:
    status = runtime.support.status()
    expected = "active" if flags.bedrock_support_mode else "inactive"
    if status.mode != expected:
        raise CheckFailed(
            f"Bedrock support mode is {status.mode}, expected {expected} "
            f"(ENABLE_BEDROCK_SUPPORT_MODE={'true' if flags.bedrock_support_mode else 'false'})"
        )
    if status.emergency:
        raise CheckFailed("Bedrock support manager has declared an emergency: " + status.status)
    return f"support mode {status.mode}, status {status.status}"


def _describe(exc: Exception) -> str:
    summary = getattr(exc, "summary", None)
    if callable(summary):
        text = summary()
        if isinstance(text, str):
            return text
    return f"{type(exc).__name__}: {exc}"
