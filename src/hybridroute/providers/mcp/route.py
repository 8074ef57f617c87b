"""The MCP route: an operation becomes `tools/call` on a configured tool of an MCP server.

Arguments come from the route's mapping (`mapping.py`); the tool's text content becomes the
completion. Token usage is read from the structured result (`usage` with input/output token
counts) when the tool provides it, and otherwise estimated and marked as estimated.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Mapping
from typing import Any

from mcp_types import CallToolResult, TextContent

from hybridroute._clock import Clock
from hybridroute._tasks import TaskSupervisor
from hybridroute.config.schema import McpRouteConfig
from hybridroute.errors import UpstreamProtocolError
from hybridroute.providers.base import estimate_tokens
from hybridroute.providers.mcp.errors import tool_error
from hybridroute.providers.mcp.mapping import ArgumentMapper, flatten_prompt
from hybridroute.providers.mcp.session import McpSession, SessionState
from hybridroute.signals import HealthStatus, RouteHealth
from hybridroute.types import (
    Completion,
    GenerationRequest,
    RouteId,
    RouteKind,
    StreamEnd,
    StreamEvent,
    StreamStart,
    TextDelta,
    Usage,
)

__all__ = ["McpRoute"]

_READY = RouteHealth(HealthStatus.HEALTHY)
_FINISH_REASONS = frozenset({"stop", "length", "content_filter", "tool_calls"})


def _usage_from(
    structured: Mapping[str, Any] | None, request: GenerationRequest, answer: str
) -> Usage:
    usage = structured.get("usage") if structured else None
    if isinstance(usage, Mapping):
        for inp_key, out_key in (
            ("input_tokens", "output_tokens"),
            ("inputTokens", "outputTokens"),
            ("prompt_tokens", "completion_tokens"),
        ):
            inp, out = usage.get(inp_key), usage.get(out_key)
            if isinstance(inp, int) and isinstance(out, int):
                return Usage(inp, out)
    # Only when the tool reported no usage: estimate from the text sent and received.
    sent = "\n".join([*request.system, flatten_prompt(request)])
    return Usage(estimate_tokens(sent), estimate_tokens(answer), estimated=True)


class McpRoute:
    """A route to one tool of an MCP server."""

    kind = RouteKind.MCP

    def __init__(
        self,
        route_id: RouteId,
        config: McpRouteConfig,
        *,
        clock: Clock,
        supervisor: TaskSupervisor,
    ) -> None:
        self._id = route_id
        self._config = config
        self._clock = clock
        self._mapper = ArgumentMapper(config.arguments)
        self._model = config.model_name()
        self.session = McpSession(route_id, config, clock=clock, supervisor=supervisor)

    @property
    def id(self) -> RouteId:
        return self._id

    @property
    def region(self) -> str | None:
        return self._config.region

    @property
    def min_attempt_s(self) -> float:
        return self._config.min_attempt_ms / 1000.0

    @property
    def timeout_s(self) -> float:
        return self._config.timeout_ms / 1000.0

    def model_for(self, operation_type: str) -> str:
        return self._model

    def readiness(self) -> RouteHealth:
        if self.session.state is SessionState.CONNECTED:
            return _READY
        return RouteHealth(HealthStatus.UNHEALTHY, f"MCP session {self.session.describe()}")

    @property
    def probe_kind(self) -> str:
        return self._config.probe

    async def probe(self, *, budget_s: float) -> None:
        await self.session.probe(self._config.probe, budget_s=budget_s)

    async def start(self) -> None:
        await self.session.start()

    async def aclose(self) -> None:
        await self.session.aclose()

    async def complete(self, request: GenerationRequest, *, budget_s: float) -> Completion:
        arguments = self._mapper.build(request, deadline_ms=int(budget_s * 1000))
        sent = time.perf_counter()
        result = await self.session.call_tool(arguments, budget_s=budget_s)
        return self._completion(request, result, time.perf_counter() - sent)

    async def stream(
        self, request: GenerationRequest, *, budget_s: float
    ) -> AsyncIterator[StreamEvent]:
        # tools/call answers in one piece: the stream is that answer, then its end.
        completion = await self.complete(request, budget_s=budget_s)
        yield StreamStart(completion.model)
        if completion.text:
            yield TextDelta(completion.text)
        yield StreamEnd(completion.finish_reason, completion.usage)

    def _completion(
        self, request: GenerationRequest, result: CallToolResult, waited: float
    ) -> Completion:
        texts = [block.text for block in result.content if isinstance(block, TextContent)]
        tool = self._config.tool
        if result.is_error:
            raise tool_error(self._id, tool, "\n".join(texts))
        if not texts:
            kinds = ", ".join(sorted({block.type for block in result.content})) or "nothing"
            raise UpstreamProtocolError(
                self._id, f"tool {tool!r} returned no text content (it returned {kinds})"
            )
        text = "\n".join(texts)
        structured = result.structured_content
        model = structured.get("model") if structured else None
        finish = structured.get("finish_reason") if structured else None
        return Completion(
            text=text,
            model=model if isinstance(model, str) and model else self._model,
            finish_reason=finish if finish in _FINISH_REASONS else "stop",
            usage=_usage_from(structured, request, text),
            upstream_s=waited,
        )

    def __repr__(self) -> str:
        target = " ".join(self._config.command or ()) or self._config.url
        return f"<McpRoute {self._id} {self._config.transport} {target} tool={self._config.tool}>"
