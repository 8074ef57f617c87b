"""`hybridroute sim bedrock|mcp`: run one upstream simulator on its own (for `serve`, benches)."""

from __future__ import annotations

import asyncio
import contextlib

import click
import uvloop

from hybridroute.serving import EmbeddedServer
from hybridroute.simulators import mcp_server
from hybridroute.simulators.bedrock import (
    DEMO_ACCESS_KEY_ID,
    DEMO_SECRET_ACCESS_KEY,
    create_bedrock_app,
)
from hybridroute.simulators.knobs import Knobs

__all__ = ["sim_group"]


@click.group("sim")
def sim_group() -> None:
    """Local upstream simulators (test and demo peers, never real upstreams)."""


async def _serve_forever(server: EmbeddedServer, label: str) -> None:
    async with server:
        click.echo(f"{label} listening on {server.url} (knobs: {server.url}/_sim/knobs)")
        await asyncio.Event().wait()


@sim_group.command("bedrock")
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", type=int, default=9001, show_default=True)
@click.option("--latency-ms", type=float, default=0.0, show_default=True)
@click.option(
    "--verify-signatures/--no-verify-signatures",
    default=True,
    show_default=True,
    help=f"Require SigV4 signatures made with the demo key {DEMO_ACCESS_KEY_ID}.",
)
def bedrock(host: str, port: int, latency_ms: float, verify_signatures: bool) -> None:
    """A Bedrock Runtime Converse/ConverseStream simulator."""
    credentials = {DEMO_ACCESS_KEY_ID: DEMO_SECRET_ACCESS_KEY} if verify_signatures else None
    app = create_bedrock_app(Knobs(latency_ms=latency_ms), credentials=credentials)
    server = EmbeddedServer(app, host=host, port=port, name="bedrock-simulator", lifespan="on")
    with contextlib.suppress(KeyboardInterrupt):
        uvloop.run(_serve_forever(server, "Bedrock simulator"))


@sim_group.command("mcp", context_settings={"ignore_unknown_options": True})
@click.argument("args", nargs=-1, type=click.UNPROCESSED)
def mcp(args: tuple[str, ...]) -> None:
    """An MCP server with a `generate` tool (--stdio, or --port N for streamable HTTP)."""
    raise SystemExit(mcp_server.main(list(args)))
