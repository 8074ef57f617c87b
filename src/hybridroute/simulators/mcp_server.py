"""A local MCP server with one `generate` tool, over stdio or streamable HTTP, with fault knobs.

`create_mcp_server` builds the `MCPServer` ("hybridroute-sim-mcp"). Its `generate` tool answers
with `answers.simulated_answer` and reports usage in `structured_content`; the knobs turn calls
into protocol-level errors (JSON-RPC error responses), tool errors (`is_error` results), empty
results, hangs or slow answers.

`create_mcp_http_app` serves it at `/mcp` (streamable HTTP) next to the `/_sim/*` control routes;
with `outage` on, `/mcp` answers HTTP 503 before the MCP layer sees the request.

Command line (stdout carries only MCP traffic in stdio mode):

    python -m hybridroute.simulators.mcp_server --stdio [--control-port N] [--latency-ms X]
    python -m hybridroute.simulators.mcp_server --port N [--host 127.0.0.1] [--latency-ms X]
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import random
import signal
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass

import anyio
import orjson
from mcp.server import MCPServer
from mcp.server.transport_security import TransportSecuritySettings
from mcp.shared.exceptions import MCPError
from mcp.types import INTERNAL_ERROR, CallToolResult, TextContent
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.responses import Response
from starlette.routing import Mount
from starlette.types import ASGIApp, Receive, Scope, Send

from hybridroute.serving import EmbeddedServer
from hybridroute.simulators.answers import count_tokens, simulated_answer
from hybridroute.simulators.control import control_routes
from hybridroute.simulators.knobs import Knobs
from hybridroute.simulators.stats import Stats

__all__ = [
    "MCP_PATH",
    "MODEL_NAME",
    "SERVER_NAME",
    "SERVER_UNAVAILABLE",
    "create_mcp_http_app",
    "create_mcp_server",
    "main",
]

SERVER_NAME = "hybridroute-sim-mcp"
MODEL_NAME = "sim-mcp-generate"
TOOL_NAME = "generate"
MCP_PATH = "/mcp"
# JSON-RPC reserves -32000…-32099 for implementation-defined server errors.
SERVER_UNAVAILABLE = -32000
LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "::1")

_logger = logging.getLogger("hybridroute.simulators.mcp_server")

_TOOL_ERRORS: dict[str, str] = {
    "throttling": "throttled: too many requests (simulated)",
    "validation": "invalid arguments (simulated)",
    "model_error": "simulated model_error",
    "access_denied": "simulated access_denied",
    "model_timeout": "simulated model_timeout",
    "model_not_ready": "simulated model_not_ready",
}
_PROTOCOL_ERRORS: dict[str, int] = {
    "unavailable": SERVER_UNAVAILABLE,
    "internal": INTERNAL_ERROR,
}
_EMPTY_RESULTS = ("garbage", "truncate")

_TOOL_DESCRIPTION = (
    "Generate a (simulated) model answer for a chat conversation. "
    "messages: [{role, content}], the last user message is answered; "
    "operation_type: free-form label echoed in the answer; max_tokens: answer word limit."
)


@dataclass(frozen=True)
class GenerateCall:
    """The `generate` tool's arguments."""

    messages: list[dict[str, str]]
    system: str
    operation_type: str
    max_tokens: int


def _tool_error(text: str) -> CallToolResult:
    return CallToolResult(content=[TextContent(type="text", text=text)], is_error=True)


def _injected_failure(kind: str) -> CallToolResult:
    """The result for an injected failure, or raise it as a JSON-RPC error."""
    if kind in _PROTOCOL_ERRORS:
        raise MCPError(code=_PROTOCOL_ERRORS[kind], message=f"simulated {kind}")
    if kind in _EMPTY_RESULTS:
        return CallToolResult(content=[])
    return _tool_error(_TOOL_ERRORS.get(kind, f"simulated {kind}"))


def _argument_problem(call: GenerateCall) -> str | None:
    if call.max_tokens < 1:
        return f"max_tokens must be >= 1, got {call.max_tokens}"
    if not any(message.get("role") == "user" for message in call.messages):
        return "messages must include at least one message with role 'user'"
    return None


def _answer(call: GenerateCall) -> CallToolResult:
    last_user = next(m for m in reversed(call.messages) if m.get("role") == "user")
    source = f"MCP tool {TOOL_NAME} ({call.operation_type})"
    text, finish_reason, output_tokens = simulated_answer(
        source, last_user.get("content", ""), call.max_tokens
    )
    texts = [message.get("content", "") for message in call.messages] + [call.system]
    input_tokens = sum(count_tokens(text) for text in texts)
    return CallToolResult(
        content=[TextContent(type="text", text=text)],
        structured_content={
            "model": MODEL_NAME,
            "finish_reason": finish_reason,
            "usage": {"input_tokens": input_tokens, "output_tokens": output_tokens},
        },
    )


class _GenerateTool:
    """The `generate` tool's behaviour under the knobs."""

    def __init__(self, knobs: Knobs, stats: Stats, rng: random.Random) -> None:
        self.knobs = knobs
        self.stats = stats
        self.rng = rng

    def _record(self, call: GenerateCall, outcome: str) -> None:
        self.stats.record(tool=TOOL_NAME, operation_type=call.operation_type, outcome=outcome)

    async def __call__(self, call: GenerateCall) -> CallToolResult:
        if self.knobs.outage:
            self._record(call, "error:outage")
            raise MCPError(code=SERVER_UNAVAILABLE, message="simulated outage")
        if self.knobs.hang:
            self._record(call, "hang")
            await anyio.sleep_forever()
        await self.knobs.delay(self.rng)
        failure = self.knobs.pick_failure(self.rng)
        if failure is not None:
            self._record(call, f"error:{failure}")
            return _injected_failure(failure)
        problem = _argument_problem(call)
        if problem is not None:
            self._record(call, "invalid_request")
            return _tool_error(f"invalid arguments: {problem}")
        self._record(call, "ok")
        return _answer(call)


def create_mcp_server(
    knobs: Knobs | None = None, stats: Stats | None = None, *, seed: int | None = None
) -> MCPServer:
    """The MCP simulator: server "hybridroute-sim-mcp" with the `generate` tool."""
    tool = _GenerateTool(
        knobs if knobs is not None else Knobs(),
        stats if stats is not None else Stats(),
        random.Random(seed),
    )
    # log_level: MCPServer calls logging.basicConfig; keep a host process's root logger quiet.
    server: MCPServer = MCPServer(
        SERVER_NAME, instructions="Local simulator of an MCP model tool.", log_level="WARNING"
    )

    async def generate(
        messages: list[dict[str, str]],
        system: str = "",
        operation_type: str = "standard",
        max_tokens: int = 256,
        temperature: float | None = None,
    ) -> CallToolResult:
        return await tool(GenerateCall(messages, system, operation_type, max_tokens))

    server.add_tool(generate, name=TOOL_NAME, description=_TOOL_DESCRIPTION)
    return server


class _OutageGuard:
    """ASGI middleware: while `knobs.outage` is on, `/mcp` gets an HTTP 503 (transport failure)."""

    def __init__(self, app: ASGIApp, knobs: Knobs, stats: Stats) -> None:
        self.app = app
        self.knobs = knobs
        self.stats = stats

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = str(scope.get("path", ""))
        if scope["type"] == "http" and self.knobs.outage and path.startswith(MCP_PATH):
            self.stats.record(tool=None, operation_type=None, outcome="error:outage")
            body = orjson.dumps({"error": "simulated outage"})
            response = Response(body, status_code=503, media_type="application/json")
            await response(scope, receive, send)
            return
        await self.app(scope, receive, send)


def _loopback_security() -> TransportSecuritySettings:
    return TransportSecuritySettings(
        enable_dns_rebinding_protection=True,
        allowed_hosts=["127.0.0.1:*", "localhost:*", "[::1]:*"],
        allowed_origins=["http://127.0.0.1:*", "http://localhost:*", "http://[::1]:*"],
    )


def create_mcp_http_app(
    knobs: Knobs | None = None, stats: Stats | None = None, *, seed: int | None = None
) -> Starlette:
    """The MCP simulator over streamable HTTP at `/mcp`, plus `/_sim/*` control routes.

    The SDK's app is mounted inside this one; this app's lifespan runs the SDK app's lifespan
    (the MCP session manager), so serve it with lifespan "on" or "auto". It can be served once.
    """
    knobs = knobs if knobs is not None else Knobs()
    stats = stats if stats is not None else Stats()
    mcp_app = create_mcp_server(knobs, stats, seed=seed).streamable_http_app(
        streamable_http_path=MCP_PATH, transport_security=_loopback_security()
    )

    @contextlib.asynccontextmanager
    async def lifespan(_app: Starlette) -> AsyncIterator[None]:
        async with mcp_app.router.lifespan_context(mcp_app):
            yield

    app = Starlette(
        routes=[*control_routes(knobs, stats), Mount("/", app=mcp_app)],
        middleware=[Middleware(_OutageGuard, knobs=knobs, stats=stats)],
        lifespan=lifespan,
    )
    app.state.knobs = knobs
    app.state.stats = stats
    return app


async def _serve_stdio(knobs: Knobs, control_port: int | None, seed: int | None) -> None:
    stats = Stats()
    server = create_mcp_server(knobs, stats, seed=seed)
    if control_port is None:
        await server.run_stdio_async()
        return
    control = Starlette(routes=control_routes(knobs, stats))
    async with EmbeddedServer(control, port=control_port, name="sim-mcp-control", lifespan="off"):
        _logger.info("MCP simulator control routes on http://127.0.0.1:%d/_sim/", control_port)
        await server.run_stdio_async()


async def _stop_on_signal(server: EmbeddedServer) -> None:
    with anyio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        async for signum in signals:
            _logger.info("received %s, shutting down", signal.Signals(signum).name)
            await server.stop()
            return


async def _serve_http(knobs: Knobs, host: str, port: int, seed: int | None) -> None:
    app = create_mcp_http_app(knobs, seed=seed)
    async with EmbeddedServer(app, host=host, port=port, name="sim-mcp", lifespan="on") as server:
        _logger.info("MCP simulator on %s%s (control: %s/_sim/)", server.url, MCP_PATH, server.url)
        async with anyio.create_task_group() as group:
            group.start_soon(_stop_on_signal, server)
            # Never cancel this wait: cancelling an `await` on the server task cancels the
            # server itself. A signal stops the server (graceful), which ends the wait.
            await server.wait()
            group.cancel_scope.cancel()


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m hybridroute.simulators.mcp_server",
        description=(
            "Local MCP server simulator (tool 'generate') with fault knobs. "
            "Loopback only; for tests and demos."
        ),
    )
    mode = parser.add_mutually_exclusive_group(required=True)
    mode.add_argument(
        "--stdio", action="store_true", help="serve MCP on stdin/stdout (stdout is MCP only)"
    )
    mode.add_argument(
        "--port", type=int, help="serve MCP over streamable HTTP at /mcp on this port"
    )
    parser.add_argument(
        "--host",
        default="127.0.0.1",
        choices=LOOPBACK_HOSTS,
        help="loopback address for --port (default: %(default)s)",
    )
    parser.add_argument(
        "--control-port",
        type=int,
        help="with --stdio: also serve the /_sim/* control routes on 127.0.0.1:PORT",
    )
    parser.add_argument(
        "--latency-ms", type=float, default=0.0, help="initial latency knob in ms (default: 0)"
    )
    parser.add_argument("--seed", type=int, help="seed for injected failures (reproducible runs)")
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run the simulator until stdin closes (--stdio) or the process is interrupted (--port)."""
    parser = _parser()
    args = parser.parse_args(argv)
    if args.control_port is not None and not args.stdio:
        parser.error("--control-port is only for --stdio (HTTP mode serves /_sim/* on --port)")
    logging.basicConfig(
        level=logging.WARNING, stream=sys.stderr, format="%(asctime)s %(name)s %(message)s"
    )
    knobs = Knobs()
    try:
        knobs.update({"latency_ms": args.latency_ms})
    except ValueError as exc:
        parser.error(str(exc))
    try:
        if args.stdio:
            anyio.run(_serve_stdio, knobs, args.control_port, args.seed)
        else:
            anyio.run(_serve_http, knobs, args.host, args.port, args.seed)
    except KeyboardInterrupt:
        return 130
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
