"""One long-lived MCP client session per route, kept alive by a supervised task.

The session task connects (spawning the server command for stdio, or opening the streamable HTTP
endpoint), checks that the configured tool exists, and then holds the connection open. When the
transport ends (the server exited), a call finds the connection closed, or a connect attempt
fails, the task reconnects with exponential backoff and jitter. Each connection has a generation
number, so a late failure reported by a call on an old connection cannot tear down a new one.

Calls made while disconnected fail at once with `UpstreamUnavailable` (so the executor can fall
back) unless a connect attempt is under way, in which case they wait for it, never longer than
their own budget.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import sys
from collections.abc import Iterator
from contextlib import AsyncExitStack
from enum import StrEnum
from typing import Any

import anyio
import httpx2
from mcp import Client
from mcp.client.stdio import StdioServerParameters, stdio_client
from mcp.client.streamable_http import streamable_http_client
from mcp.shared.exceptions import MCPError
from mcp_types import CONNECTION_CLOSED, CallToolResult, Implementation
from mcp_types.version import HANDSHAKE_PROTOCOL_VERSIONS
from pydantic import ValidationError

from hybridroute._clock import Clock
from hybridroute._tasks import TaskSupervisor
from hybridroute.config.schema import McpRouteConfig
from hybridroute.errors import UpstreamProtocolError, UpstreamUnavailable
from hybridroute.providers.mcp.errors import from_mcp_error
from hybridroute.providers.mcp.transport import watch_end

__all__ = ["McpSession", "SessionState"]

log = logging.getLogger("hybridroute.routes.mcp")

_CLIENT_INFO = Implementation(name="hybridroute", version="0.1.0")


class SessionState(StrEnum):
    CONNECTING = "connecting"
    CONNECTED = "connected"
    BACKOFF = "backoff"
    CLOSED = "closed"


class _ToolMissing(Exception):
    pass


def _describe(exc: BaseException) -> str:
    if isinstance(exc, BaseExceptionGroup):
        return "; ".join(_describe(e) for e in exc.exceptions)
    if isinstance(exc, MCPError):
        return f"MCP error {exc.code}: {exc.message}"
    text = str(exc) or type(exc).__name__
    return f"{type(exc).__name__}: {text}" if str(exc) else text


class McpSession:
    """A reconnecting MCP client connection for one route."""

    def __init__(
        self,
        route_id: str,
        config: McpRouteConfig,
        *,
        clock: Clock,
        supervisor: TaskSupervisor,
    ) -> None:
        self._route = route_id
        self._config = config
        self._clock = clock
        self._supervisor = supervisor
        self._client: Client | None = None
        self._state = SessionState.CONNECTING
        self._changed = asyncio.Event()
        self._broken = asyncio.Event()
        self._closing = False
        self._task: asyncio.Task[None] | None = None
        self._rng = random.Random()
        self._generation = 0
        self.last_error: str | None = None
        self.retry_at: float | None = None
        self.connects = 0
        self.tools: tuple[str, ...] = ()

    @property
    def state(self) -> SessionState:
        return self._state

    def _set_state(self, state: SessionState) -> None:
        self._state = state
        self._changed.set()
        self._changed = asyncio.Event()

    async def start(self) -> None:
        """Start the session task and wait (bounded) for the first connect attempt to finish."""
        self._task = self._supervisor.spawn(self._run(), name=f"mcp-session-{self._route}")
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(self._config.connect_timeout_ms / 1000.0 + 1.0):
                while self._state is SessionState.CONNECTING:
                    await self._changed.wait()

    async def aclose(self) -> None:
        self._closing = True
        self._broken.set()
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        self._set_state(SessionState.CLOSED)

    async def _run(self) -> None:
        backoff = self._config.reconnect_initial_ms / 1000.0
        ceiling = self._config.reconnect_max_ms / 1000.0
        while not self._stopping():
            self._set_state(SessionState.CONNECTING)
            try:
                await self._hold_connection()
                backoff = self._config.reconnect_initial_ms / 1000.0
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - any connect failure means: back off, retry
                self.last_error = _describe(exc)
                log.warning("MCP route %s: connection failed: %s", self._route, self.last_error)
            finally:
                self._client = None
                self._broken.clear()
            if self._stopping():
                break
            delay = backoff * self._rng.uniform(0.8, 1.2)
            self.retry_at = self._clock.monotonic() + delay
            self._set_state(SessionState.BACKOFF)
            await self._clock.sleep(delay)
            backoff = min(backoff * 2, ceiling)

    def _stopping(self) -> bool:
        # A method, not the attribute, so type narrowing does not freeze it across awaits.
        return self._closing

    def _lost(self, generation: int) -> None:
        """The connection of `generation` is gone; reconnect if it is still the current one."""
        if generation == self._generation and self._state is SessionState.CONNECTED:
            self._broken.set()

    async def _hold_connection(self) -> None:
        generation = self._generation + 1
        async with AsyncExitStack() as stack:
            client = await stack.enter_async_context(self._new_client(stack, generation))
            listing = await client.list_tools()
            self.tools = tuple(tool.name for tool in listing.tools)
            if self._config.tool not in self.tools:
                raise _ToolMissing(
                    f"the server offers no tool {self._config.tool!r} "
                    f"(it offers: {', '.join(self.tools) or 'none'}); fix the route's 'tool'"
                )
            self._client = client
            self._generation = generation
            self.connects += 1
            self.last_error = None
            self.retry_at = None
            self._set_state(SessionState.CONNECTED)
            await self._broken.wait()
            if not self._closing:
                log.warning("MCP route %s: connection lost, reconnecting", self._route)

    def _new_client(self, stack: AsyncExitStack, generation: int) -> Client:
        config = self._config

        def ended() -> None:
            self._lost(generation)

        if config.transport == "stdio":
            command = config.command or []
            params = StdioServerParameters(
                command=command[0], args=command[1:], env=config.env or None, cwd=config.cwd
            )
            return Client(
                watch_end(stdio_client(params, errlog=sys.stderr), ended),
                mode=config.protocol,
                client_info=_CLIENT_INFO,
                cache=None,
            )
        http = httpx2.AsyncClient(
            headers=config.headers,
            timeout=httpx2.Timeout(
                config.timeout_ms / 1000.0, connect=config.connect_timeout_ms / 1000.0
            ),
        )
        stack.push_async_callback(http.aclose)
        return Client(
            watch_end(streamable_http_client(config.url or "", http_client=http), ended),
            mode=config.protocol,
            client_info=_CLIENT_INFO,
            cache=None,
        )

    async def call_tool(self, arguments: dict[str, Any], *, budget_s: float) -> CallToolResult:
        """Call the route's tool, or raise a typed error."""
        client = self._client
        if client is None:
            client = await self._wait_for_connection(budget_s)
        tool = self._config.tool
        with self._mapped_errors(f"tools/call {tool}"):
            return await client.call_tool(tool, arguments, read_timeout_seconds=budget_s)

    async def probe(self, kind: str, *, budget_s: float) -> None:
        """A cheap check of the server: `tools_list` (which also re-checks the tool), or `ping`
        where the connection's protocol revision still has it (2026-07-28 removed it)."""
        client = self._client
        if client is None:
            raise UpstreamUnavailable(
                self._route, f"not connected to the MCP server ({self.describe()})"
            )
        with self._mapped_errors(kind):
            if kind == "ping" and client.protocol_version in HANDSHAKE_PROTOCOL_VERSIONS:
                await client.send_ping()
                return
            listing = await client.list_tools()
            names = [tool.name for tool in listing.tools]
            if self._config.tool not in names:
                raise UpstreamProtocolError(
                    self._route, f"the server no longer offers tool {self._config.tool!r}"
                )

    @contextlib.contextmanager
    def _mapped_errors(self, what: str) -> Iterator[None]:
        """The SDK's and the transport's exceptions → typed errors; a broken connection is
        reported so the session reconnects."""
        generation = self._generation
        try:
            yield
        except MCPError as exc:
            if exc.code == CONNECTION_CLOSED:
                self._lost(generation)
            raise from_mcp_error(self._route, self._config.tool, exc) from exc
        except (anyio.ClosedResourceError, anyio.BrokenResourceError, anyio.EndOfStream) as exc:
            self._lost(generation)
            raise UpstreamUnavailable(
                self._route, f"the MCP connection broke during {what}; reconnecting"
            ) from exc
        except httpx2.TransportError as exc:
            self._lost(generation)
            raise UpstreamUnavailable(self._route, f"cannot reach the MCP server: {exc}") from exc
        except httpx2.HTTPError as exc:
            raise UpstreamUnavailable(self._route, f"MCP HTTP error: {exc}") from exc
        except (ValidationError, RuntimeError) as exc:
            # The SDK's result checks: a result that breaks the protocol's schema, input the
            # server demands and the gateway cannot give, an extension's unexpected result.
            raise UpstreamProtocolError(
                self._route, f"{what} returned an unusable result: {exc}"
            ) from exc

    async def _wait_for_connection(self, budget_s: float) -> Client:
        if self._state is SessionState.CONNECTING:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(budget_s):  # rare: only while (re)connecting
                    while self._state is SessionState.CONNECTING:
                        await self._changed.wait()
        client = self._client
        if client is None:
            raise UpstreamUnavailable(
                self._route, f"not connected to the MCP server ({self.describe()})"
            )
        return client

    def describe(self) -> str:
        """The session's state in words (for readiness and errors)."""
        if self._state is SessionState.CONNECTED:
            return f"connected, tool {self._config.tool!r}"
        if self._state is SessionState.BACKOFF and self.retry_at is not None:
            wait = max(0.0, self.retry_at - self._clock.monotonic())
            return f"disconnected: {self.last_error}; reconnecting in {wait:.1f}s"
        if self._state is SessionState.CONNECTING:
            return "connecting" + (f" (last error: {self.last_error})" if self.last_error else "")
        return self._state.value

    def __repr__(self) -> str:
        return f"<McpSession {self._route} {self._state.value} connects={self.connects}>"
