"""An in-process fake route and helpers for executor tests.

The fake implements the gateway's own route seam; real upstreams are exercised against the
simulators in tests/integration.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

from hybridroute._clock import SystemClock
from hybridroute.errors import UpstreamError, UpstreamUnavailable
from hybridroute.gateway import Executor, ExecutorSettings
from hybridroute.resilience.admission import AdmissionControl
from hybridroute.resilience.breaker import BreakerSettings, CircuitBreaker
from hybridroute.resilience.health import HealthBoard
from hybridroute.routing.matrix import RoutingRule
from hybridroute.routing.policy import Decision
from hybridroute.signals import HealthStatus, RouteHealth
from hybridroute.types import (
    ChatMessage,
    Completion,
    GenerationRequest,
    Priority,
    RouteKind,
    StreamEnd,
    StreamEvent,
    TextDelta,
    Usage,
)

D, M = "direct_bedrock", "mcp"
REQUEST = GenerationRequest(
    operation_type="infrastructure",
    priority=Priority.CRITICAL,
    system=(),
    messages=(ChatMessage("user", "hi"),),
    max_tokens=10,
    temperature=None,
    top_p=None,
    stop=(),
    decision_id="dec-1",
    requested_model="default",
)


class FakeRoute:
    """Answers from a script: each call takes the next step: "ok", "hang", a number of seconds
    to take before answering, or an error to raise. A stream takes a second step after its
    first chunk: "ok", "hang", seconds to wait before the rest, or an error."""

    def __init__(self, route_id: str, script: list[object], *, min_attempt_s: float = 0.01):
        self.id = route_id
        self.kind = RouteKind.BEDROCK if route_id == D else RouteKind.MCP
        self.region = "eu-central-1"
        self.min_attempt_s = min_attempt_s
        self.timeout_s = 60.0
        self.script = list(script)
        self.calls = 0
        self.cancelled = 0
        self.budgets: list[float] = []

    def model_for(self, operation_type: str) -> str:
        return f"{self.id}-model"

    def readiness(self) -> RouteHealth:
        return RouteHealth(HealthStatus.HEALTHY)

    probe_kind = "none"

    async def probe(self, *, budget_s: float) -> None: ...

    async def start(self) -> None: ...

    async def aclose(self) -> None: ...

    async def _step(self, budget_s: float) -> None:
        self.calls += 1
        self.budgets.append(budget_s)
        step = self.script.pop(0) if self.script else "ok"
        try:
            if step == "hang":
                await asyncio.Event().wait()
            if isinstance(step, float):
                await asyncio.sleep(step)
        except asyncio.CancelledError:
            self.cancelled += 1
            raise
        if isinstance(step, UpstreamError):
            raise step

    async def complete(self, request: GenerationRequest, *, budget_s: float) -> Completion:
        await self._step(budget_s)
        return Completion(f"answer from {self.id}", self.model_for(""), "stop", Usage(1, 2))

    async def stream(
        self, request: GenerationRequest, *, budget_s: float
    ) -> AsyncIterator[StreamEvent]:
        await self._step(budget_s)
        yield TextDelta("one ")
        step = self.script.pop(0) if self.script else "ok"
        if isinstance(step, UpstreamError):
            raise step
        if step == "hang":
            await asyncio.Event().wait()
        if isinstance(step, float):
            await asyncio.sleep(step)
        yield TextDelta("two")
        yield StreamEnd("stop", Usage(1, 2))


def setup(
    routes: list[FakeRoute],
    settings: BreakerSettings | None = None,
    admission: dict[str, AdmissionControl] | None = None,
):
    clock = SystemClock()
    breakers = {r.id: CircuitBreaker(r.id, settings or BreakerSettings(), clock) for r in routes}
    health = HealthBoard(breakers, {r.id: r.readiness for r in routes})
    executor = Executor(
        {r.id: r for r in routes},
        health,
        clock,
        ExecutorSettings(retry_backoff_s=0.001),
        admission=admission,
    )
    return executor, breakers


def decision(
    routes: tuple[str, ...],
    *,
    budget_ms: int = 5000,
    fallback: str | None = M,
    retries: int = 0,
    forced: str | None = None,
    priority: Priority = Priority.CRITICAL,
    ttft_timeout_s: float | None = None,
    stream_idle_timeout_s: float | None = None,
    hedge: bool = False,
    hedge_after_fraction: float | None = None,
) -> Decision:
    rule = RoutingRule(
        "infrastructure",
        priority,
        budget_ms,
        D,
        fallback,
        retries,
        ttft_timeout_s=ttft_timeout_s,
        stream_idle_timeout_s=stream_idle_timeout_s,
        hedge=hedge,
        hedge_after_fraction=hedge_after_fraction,
    )
    now = SystemClock().monotonic()
    return Decision(
        decision_id="dec-1",
        rule=rule,
        routes=routes,
        forced=forced,
        deadline=now + budget_ms / 1000,
        budget_ms=budget_ms,
        reason="test",
        decided_at=now,
        primary_eligible=routes[:1] == (D,),
        hedge=hedge,
    )


def unavailable(route: str = D) -> UpstreamUnavailable:
    return UpstreamUnavailable(
        route, "Bedrock is unavailable", upstream_code="ServiceUnavailableException"
    )
