"""MCP failures → the gateway's typed errors.

Three kinds of failure reach an MCP route: a JSON-RPC error from the server (`MCPError` with a
code), a tool result flagged `is_error`, and a transport that broke (the connection closed, the
subprocess died, the HTTP endpoint refused). Each becomes one `UpstreamError` naming the route.
"""

from __future__ import annotations

from mcp.shared.exceptions import MCPError
from mcp_types import (
    CONNECTION_CLOSED,
    INTERNAL_ERROR,
    INVALID_PARAMS,
    METHOD_NOT_FOUND,
    REQUEST_TIMEOUT,
)

from hybridroute.errors import (
    UpstreamError,
    UpstreamModelError,
    UpstreamProtocolError,
    UpstreamTimeout,
    UpstreamUnavailable,
)

__all__ = ["from_mcp_error", "tool_error"]


def from_mcp_error(route: str, tool: str, exc: MCPError) -> UpstreamError:
    """The gateway error for a JSON-RPC error answered to tools/call."""
    code, message = exc.code, exc.message
    label = f"MCP error {code}"
    if code == CONNECTION_CLOSED:
        return UpstreamUnavailable(
            route, f"the MCP connection closed: {message}", upstream_code=label
        )
    if code == REQUEST_TIMEOUT:
        return UpstreamTimeout(
            route, f"tools/call {tool} timed out: {message}", upstream_code=label
        )
    if code == INVALID_PARAMS:
        return UpstreamModelError(
            route,
            f"the server rejected the arguments of tool {tool!r}: {message}; check the route's "
            "'arguments' mapping against the tool's input schema",
            upstream_code=label,
        )
    if code == METHOD_NOT_FOUND:
        return UpstreamProtocolError(
            route, f"the server does not support tools/call: {message}", upstream_code=label
        )
    if code == INTERNAL_ERROR:
        return UpstreamUnavailable(route, f"server error: {message}", upstream_code=label)
    return UpstreamUnavailable(route, message or "MCP server error", upstream_code=label)


def tool_error(route: str, tool: str, text: str) -> UpstreamError:
    """The gateway error for a tool result flagged `is_error`."""
    detail = text.strip() or "no message"
    return UpstreamModelError(
        route, f"tool {tool!r} reported an error: {detail[:300]}", upstream_code="tool_error"
    )
