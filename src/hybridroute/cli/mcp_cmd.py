"""`hybridroute mcp serve`: a running gateway offered to agents as MCP tools (see mcp_face.py)."""

from __future__ import annotations

import contextlib
from typing import Literal

import anyio
import click

from hybridroute.cli.admin_client import admin_token_option
from hybridroute.cli.mcp_face import (
    CHANGE_TOOLS,
    DEFAULT_MCP_PORT,
    LOOPBACK_HOSTS,
    MCP_PATH,
    READ_TOOLS,
    FaceSettings,
    serve_face,
)
from hybridroute.cli.options import gateway_url_option

__all__ = ["mcp_group"]

_SERVE_HELP = (
    "Serve MCP tools over a running gateway's HTTP API. Always offered (viewer role): "
    f"{', '.join(READ_TOOLS)}. With --allow-changes also {', '.join(CHANGE_TOOLS)} (operator "
    "role). In stdio mode stdout carries only MCP traffic; messages go to stderr."
)


@click.group("mcp")
def mcp_group() -> None:
    """The gateway as an MCP server, for agents."""


@mcp_group.command("serve", help=_SERVE_HELP)
@gateway_url_option
@admin_token_option
@click.option(
    "--transport",
    type=click.Choice(["stdio", "http"]),
    default="stdio",
    show_default=True,
    help=f"stdio (the agent host spawns this command) or streamable HTTP at {MCP_PATH}.",
)
@click.option(
    "--host",
    type=click.Choice(LOOPBACK_HOSTS),
    default="127.0.0.1",
    show_default=True,
    help="Loopback address for --transport http (the server acts with the token's role).",
)
@click.option(
    "--port",
    type=click.IntRange(0, 65535),
    default=DEFAULT_MCP_PORT,
    show_default=True,
    help="Port for --transport http (0: any free port).",
)
@click.option(
    "--allow-changes",
    is_flag=True,
    help=(
        f"Also offer {', '.join(CHANGE_TOOLS)} (when the gateway accepts the token at start; "
        "the gateway's role check decides each change: they need the operator role)."
    ),
)
@click.option(
    "--api-key",
    envvar="HYBRIDROUTE_API_KEY",
    default=None,
    help="Data-plane API key for route_operation, naming the tenant (env HYBRIDROUTE_API_KEY).",
)
@click.option(
    "--timeout",
    "timeout_s",
    type=click.FloatRange(0.1, 600.0),
    default=60.0,
    show_default=True,
    help="Seconds to wait for the gateway's answer to one tool call.",
)
def serve_command(  # noqa: PLR0913 - one parameter per command-line option
    url: str,
    token: str | None,
    transport: Literal["stdio", "http"],
    host: str,
    port: int,
    allow_changes: bool,
    api_key: str | None,
    timeout_s: float,
) -> None:
    settings = FaceSettings(
        url=url,
        token=token,
        transport=transport,
        host=host,
        port=port,
        allow_changes=allow_changes,
        api_key=api_key,
        timeout_s=timeout_s,
        connect_timeout_s=min(5.0, timeout_s),
    )
    with contextlib.suppress(KeyboardInterrupt):
        anyio.run(serve_face, settings)
