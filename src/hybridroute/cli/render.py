"""Plain-text tables and config summaries for the CLI."""

from __future__ import annotations

from collections.abc import Sequence

from hybridroute.config.schema import BedrockRouteConfig, GatewayConfig

__all__ = ["budget_text", "config_summary", "table"]


def table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """Left-aligned columns separated by two spaces."""
    widths = [len(h) for h in headers]
    for row in rows:
        widths = [max(w, len(cell)) for w, cell in zip(widths, row, strict=True)]
    lines = ["  ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True)).rstrip()]
    lines.append("  ".join("-" * w for w in widths))
    lines += [
        "  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip() for row in rows
    ]
    return "\n".join(lines)


def budget_text(ms: int) -> str:
    """A latency budget: `5 s`, `1500 ms`."""
    return f"{ms / 1000:g} s" if ms % 1000 == 0 else f"{ms} ms"


def config_summary(config: GatewayConfig) -> str:
    """The effective matrix, routes and flags of a config."""
    rows = []
    for op, rule in config.matrix.items():
        primary = config.routes[rule.primary]
        model = (
            primary.model_for(op)
            if isinstance(primary, BedrockRouteConfig)
            else primary.model_name()
        )
        rows.append(
            [
                op,
                rule.priority.value,
                budget_text(rule.latency_budget_ms),
                rule.primary,
                rule.fallback or "-",
                str(rule.effective_retries()),
                "yes" if rule.hedged() else "no",
                model,
            ]
        )
    matrix = table(
        [
            "operation type",
            "priority",
            "budget",
            "primary",
            "fallback",
            "retries",
            "hedge",
            "model (primary)",
        ],
        rows,
    )
    route_rows = []
    for route_id, route in config.routes.items():
        if isinstance(route, BedrockRouteConfig):
            target = route.endpoint_url or f"https://bedrock-runtime.{route.region}.amazonaws.com"
            detail = f"model {route.model_id}, credentials {route.credentials.source}"
            route_rows.append([route_id, "bedrock", route.region, target, detail])
        else:
            target = (
                " ".join(route.command or ()) if route.transport == "stdio" else route.url or ""
            )
            detail = f"{route.transport}, tool {route.tool}"
            route_rows.append([route_id, "mcp", route.region or "-", target, detail])
    routes = table(["route", "type", "region", "target", "detail"], route_rows)
    flags = table(
        ["flag", "initial value"],
        [[name, "on" if on else "off"] for name, on in config.flags.model_dump().items()],
    )
    return (
        f"Routing matrix ({len(config.matrix)} operation types; default operation type: "
        f"{config.routing.default_operation_type})\n{matrix}\n\nRoutes\n{routes}\n\n"
        f"Feature flags\n{flags}\n"
    )
