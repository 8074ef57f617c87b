"""Cross-reference checks: rules that relate one part of a configuration to another.

The seed's failed deployment ("Expected emergency to route to direct_bedrock, got direct") was
one upstream known by two names. These checks make that configuration impossible to load: a
matrix row must name a defined route, a canonical id must have its canonical kind, and one
upstream may not be defined twice under different ids. Each issue names its path.
"""

from __future__ import annotations

import difflib
from collections.abc import Mapping

from hybridroute.config.platform import DEFAULT_TENANT
from hybridroute.config.schema import (
    ID_PATTERN,
    REGION_PATTERN,
    BedrockRouteConfig,
    GatewayConfig,
    McpRouteConfig,
    RouteConfig,
    RoutingRuleConfig,
)
from hybridroute.errors import ConfigIssue
from hybridroute.types import BUILTIN_OPERATION_TYPES, CANONICAL_ROUTE_KINDS

__all__ = ["check_config", "check_matrix", "upstream_identity"]


def _did_you_mean(name: str, candidates: list[str]) -> str:
    close = difflib.get_close_matches(name, candidates, n=1, cutoff=0.5)
    return f"; did you mean {close[0]!r}?" if close else ""


def upstream_identity(route: RouteConfig) -> tuple[str, ...]:
    """What makes two route definitions the same upstream."""
    if isinstance(route, BedrockRouteConfig):
        endpoint = route.endpoint_url or f"https://bedrock-runtime.{route.region}.amazonaws.com"
        per_op = ",".join(f"{k}={v}" for k, v in sorted(route.model_ids.items()))
        return ("bedrock", endpoint, route.region, route.model_id, per_op)
    target = " ".join(route.command or ()) if route.transport == "stdio" else (route.url or "")
    return ("mcp", route.transport, target, route.tool)


def _describe(identity: tuple[str, ...]) -> str:
    if identity[0] == "bedrock":
        return f"bedrock {identity[2]} model {identity[3]} at {identity[1]}"
    return f"mcp {identity[1]} {identity[2]} tool {identity[3]}"


def _check_routes(routes: Mapping[str, RouteConfig]) -> list[ConfigIssue]:
    issues: list[ConfigIssue] = []
    seen: dict[tuple[str, ...], str] = {}
    for route_id, route in routes.items():
        path = f"routes.{route_id}"
        if not ID_PATTERN.match(route_id):
            issues.append(
                ConfigIssue(
                    path,
                    f"route id {route_id!r} is not allowed",
                    "use lower-case letters, digits and '_', starting with a letter",
                )
            )
        canonical = CANONICAL_ROUTE_KINDS.get(route_id)
        if route.timeout_ms < route.min_attempt_ms:
            issues.append(
                ConfigIssue(
                    f"{path}.timeout_ms",
                    f"timeout_ms ({route.timeout_ms}) is below min_attempt_ms "
                    f"({route.min_attempt_ms}): every attempt would be cut short",
                    "make timeout_ms at least min_attempt_ms",
                )
            )
        if canonical is not None and route.type != canonical.value:
            issues.append(
                ConfigIssue(
                    f"{path}.type",
                    f"{route_id!r} is a canonical route id and must be of type "
                    f"{canonical.value!r}, not {route.type!r}",
                    "give this route another id",
                )
            )
        identity = upstream_identity(route)
        first = seen.get(identity)
        if first is not None:
            issues.append(
                ConfigIssue(
                    path,
                    f"routes {first!r} and {route_id!r} are two ids for one upstream "
                    f"({_describe(identity)})",
                    f"keep one id for it and use that id everywhere; remove routes.{route_id} "
                    f"or routes.{first}",
                )
            )
        else:
            seen[identity] = route_id
        region = route.region if isinstance(route, McpRouteConfig) else None
        if region is not None and not REGION_PATTERN.match(region):
            issues.append(
                ConfigIssue(
                    f"{path}.region",
                    f"{region!r} is not a region name",
                    "write it like 'eu-central-1'",
                )
            )
    return issues


def check_matrix(
    matrix: Mapping[str, RoutingRuleConfig],
    routes: Mapping[str, RouteConfig],
    *,
    path: str = "matrix",
) -> list[ConfigIssue]:
    """Check a routing matrix against the defined routes. Used at load and on admin updates."""
    issues: list[ConfigIssue] = []
    defined = sorted(routes)
    for op in BUILTIN_OPERATION_TYPES:
        if op not in matrix:
            issues.append(
                ConfigIssue(
                    f"{path}.{op}",
                    f"the matrix has no row for operation type {op!r}",
                    "every built-in operation type needs a row: "
                    + ", ".join(BUILTIN_OPERATION_TYPES),
                )
            )
    for op, rule in matrix.items():
        row = f"{path}.{op}"
        if not ID_PATTERN.match(op):
            issues.append(
                ConfigIssue(
                    row,
                    f"operation type {op!r} is not allowed",
                    "use lower-case letters, digits and '_', starting with a letter",
                )
            )
        for field, route_id in (("primary", rule.primary), ("fallback", rule.fallback)):
            if route_id is not None and route_id not in routes:
                issues.append(
                    ConfigIssue(
                        f"{row}.{field}",
                        f"unknown route {route_id!r}{_did_you_mean(route_id, defined)}",
                        f"defined routes: {', '.join(defined)}",
                    )
                )
        if rule.fallback is not None and rule.fallback == rule.primary:
            issues.append(
                ConfigIssue(
                    f"{row}.fallback",
                    f"fallback {rule.fallback!r} is the same route as the primary",
                    "name a different route, or null for no fallback",
                )
            )
        issues += _check_route_fits_budget(row, rule, routes)
    return issues


def _check_route_fits_budget(
    row: str, rule: RoutingRuleConfig, routes: Mapping[str, RouteConfig]
) -> list[ConfigIssue]:
    """A route that needs more time than a row's whole budget could never serve that row."""
    issues: list[ConfigIssue] = []
    for route_id in (rule.primary, rule.fallback):
        route = routes.get(route_id) if route_id is not None else None
        if route is not None and route.min_attempt_ms > rule.latency_budget_ms:
            issues.append(
                ConfigIssue(
                    f"{row}.latency_budget_ms",
                    f"{rule.latency_budget_ms} ms is less than route {route_id!r} needs for one "
                    f"attempt (min_attempt_ms {route.min_attempt_ms}), so it would never be tried",
                    f"raise the budget or lower routes.{route_id}.min_attempt_ms",
                )
            )
    return issues


def check_config(config: GatewayConfig) -> list[ConfigIssue]:
    """Every cross-reference rule of a whole configuration."""
    issues = _check_routes(config.routes)
    issues += check_matrix(config.matrix, config.routes)
    ops = sorted(config.matrix)
    for op in config.operations:
        if op not in config.matrix:
            issues.append(
                ConfigIssue(
                    f"operations.{op}",
                    f"operation type {op!r} has parameters but no matrix row"
                    + _did_you_mean(op, ops),
                    "add a row to 'matrix' or remove these parameters",
                )
            )
    for route_id, route in config.routes.items():
        if isinstance(route, BedrockRouteConfig):
            for op in route.model_ids:
                if op not in config.matrix:
                    issues.append(
                        ConfigIssue(
                            f"routes.{route_id}.model_ids.{op}",
                            f"unknown operation type {op!r}" + _did_you_mean(op, ops),
                            f"operation types: {', '.join(ops)}",
                        )
                    )
    issues += _check_routing(config, ops)
    issues += _check_residency(config)
    issues += _check_economy(config, ops)
    return issues


def _check_routing(config: GatewayConfig, ops: list[str]) -> list[ConfigIssue]:
    issues: list[ConfigIssue] = []
    default_op = config.routing.default_operation_type
    if default_op not in config.matrix:
        issues.append(
            ConfigIssue(
                "routing.default_operation_type",
                f"{default_op!r} has no matrix row" + _did_you_mean(default_op, ops),
                f"operation types: {', '.join(ops)}",
            )
        )
    mcp_only = config.routing.mcp_only_route
    target = config.routes.get(mcp_only)
    if target is None:
        issues.append(
            ConfigIssue(
                "routing.mcp_only_route",
                f"unknown route {mcp_only!r}" + _did_you_mean(mcp_only, sorted(config.routes)),
                "MCP-only mode (flags off) needs an MCP route to send every operation to",
            )
        )
    elif target.type != "mcp":
        issues.append(
            ConfigIssue(
                "routing.mcp_only_route",
                f"route {mcp_only!r} is of type {target.type!r}, not 'mcp'",
                "name a route of type 'mcp'",
            )
        )
    return issues


def _check_residency(config: GatewayConfig) -> list[ConfigIssue]:
    issues: list[ConfigIssue] = []
    for name, regions in config.residency.region_sets.items():
        if not ID_PATTERN.match(name):
            issues.append(
                ConfigIssue(
                    f"residency.region_sets.{name}",
                    f"region set name {name!r} is not allowed",
                    "use lower-case letters, digits and '_'",
                )
            )
        for region in regions:
            if not REGION_PATTERN.match(region):
                issues.append(
                    ConfigIssue(
                        f"residency.region_sets.{name}",
                        f"{region!r} is not a region name",
                        "write it like 'eu-central-1'",
                    )
                )
    sets = sorted(config.residency.region_sets)
    tenants = sorted(config.tenants.tenant_names())
    for tenant, region_set in config.compliance.tenant_residency.items():
        where = f"compliance.tenant_residency.{tenant}"
        if region_set not in config.residency.region_sets:
            issues.append(
                ConfigIssue(
                    where,
                    f"no region set named {region_set!r}{_did_you_mean(region_set, sets)}",
                    f"use one of {', '.join(sets) or '(none configured)'} or add it under "
                    "residency.region_sets",
                )
            )
        if tenant not in tenants:
            issues.append(
                ConfigIssue(
                    where,
                    f"no API key belongs to tenant {tenant!r}{_did_you_mean(tenant, tenants)}",
                    f"tenants: {', '.join(tenants)} (add a key under tenants.api_keys)",
                )
            )
    return issues


def _check_economy(config: GatewayConfig, ops: list[str]) -> list[ConfigIssue]:
    """Prices, tenants, budgets, output limits and cache TTLs name things that exist."""
    issues = _check_pricing(config)
    issues += _check_tenants(config)
    tenants = sorted(config.tenants.tenant_names())
    for tenant in config.budgets.tenants:
        if tenant not in tenants:
            issues.append(
                ConfigIssue(
                    f"budgets.tenants.{tenant}",
                    f"no API key belongs to tenant {tenant!r}{_did_you_mean(tenant, tenants)}",
                    f"tenants: {', '.join(tenants)} (add a key under tenants.api_keys)",
                )
            )
    limit = config.routing.max_output_tokens
    for op, params in config.operations.items():
        if params.max_tokens is not None and params.max_tokens > limit:
            issues.append(
                ConfigIssue(
                    f"operations.{op}.max_tokens",
                    f"{params.max_tokens} is above routing.max_output_tokens ({limit})",
                    "lower it, or raise routing.max_output_tokens",
                )
            )
    for op in config.cache.ttl_s:
        if op not in config.matrix:
            issues.append(
                ConfigIssue(
                    f"cache.ttl_s.{op}",
                    f"unknown operation type {op!r}" + _did_you_mean(op, ops),
                    f"operation types: {', '.join(ops)}",
                )
            )
    return issues


def _check_pricing(config: GatewayConfig) -> list[ConfigIssue]:
    """Prices name defined routes and models those routes use; with budgets, every route has
    a price."""
    issues: list[ConfigIssue] = []
    defined = sorted(config.routes)
    for route_id, price in config.pricing.routes.items():
        route = config.routes.get(route_id)
        if route is None:
            issues.append(
                ConfigIssue(
                    f"pricing.routes.{route_id}",
                    f"unknown route {route_id!r}{_did_you_mean(route_id, defined)}",
                    f"defined routes: {', '.join(defined)}",
                )
            )
        elif isinstance(route, BedrockRouteConfig):
            used = {route.model_id, *route.model_ids.values()}
            for model in price.models:
                if model not in used:
                    issues.append(
                        ConfigIssue(
                            f"pricing.routes.{route_id}.models.{model}",
                            f"route {route_id!r} never uses model {model!r}"
                            + _did_you_mean(model, sorted(used)),
                            f"models it uses: {', '.join(sorted(used))}",
                        )
                    )
    if config.budgets.configured:
        for route_id in defined:
            if route_id not in config.pricing.routes:
                issues.append(
                    ConfigIssue(
                        f"pricing.routes.{route_id}",
                        f"budgets are configured but route {route_id!r} has no price, so its "
                        "spend could not be counted",
                        "add input_per_1k and output_per_1k for it (0 if it is free)",
                    )
                )
    return issues


def _check_tenants(config: GatewayConfig) -> list[ConfigIssue]:
    """One key, one tenant; tenant budgets only where a caller cannot shed its tenant."""
    issues: list[ConfigIssue] = []
    seen: dict[str, int] = {}
    for index, entry in enumerate(config.tenants.api_keys):
        if entry.sha256 is None:
            continue
        first = seen.setdefault(entry.sha256, index)
        if first != index:
            issues.append(
                ConfigIssue(
                    f"tenants.api_keys[{index}].sha256",
                    f"the same key is already configured at tenants.api_keys[{first}]",
                    "give each tenant its own key",
                )
            )
    budgeted = [t for t in config.budgets.tenants if t != DEFAULT_TENANT]
    if budgeted and not config.tenants.require_api_key:
        issues.append(
            ConfigIssue(
                "tenants.require_api_key",
                f"budgets are set for tenant(s) {', '.join(sorted(budgeted))}, but a caller may "
                "leave its key out and spend as tenant 'default' instead",
                "set tenants.require_api_key: true",
            )
        )
    return issues
