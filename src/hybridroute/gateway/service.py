"""The gateway service: a chat request in, a decision and a served answer out. No HTTP here.

`plan()` looks up the operation's rule, reads the flags and the health board, asks the pure
policy for a decision, and applies the operation's model parameters (system prompt, temperature,
max tokens) to build the route-independent `GenerationRequest`. `complete()` and `open_stream()`
hand the decision to the executor.
"""

from __future__ import annotations

import itertools
import secrets
from collections.abc import Mapping

from hybridroute._clock import Clock
from hybridroute.config.schema import OperationParams
from hybridroute.gateway.executor import Executor, Served
from hybridroute.gateway.streams import OpenStream
from hybridroute.resilience.health import HealthBoard
from hybridroute.routing.flags import FlagStore
from hybridroute.routing.matrix import RoutingMatrix, Topology
from hybridroute.routing.policy import Decision, decide
from hybridroute.types import ChatRequest, GenerationRequest

__all__ = ["DEFAULT_MAX_TOKENS", "DecisionIds", "Gateway"]

DEFAULT_MAX_TOKENS = 1024
_NO_PARAMS = OperationParams()


class DecisionIds:
    """Decision ids: a random per-process prefix and a counter (cheap, unique, sortable)."""

    __slots__ = ("_counter", "_prefix")

    def __init__(self) -> None:
        self._prefix = secrets.token_hex(4)
        self._counter = itertools.count(1)

    def next(self) -> str:
        return f"dec-{self._prefix}-{next(self._counter):08x}"


class Gateway:
    """Decides and serves chat requests."""

    def __init__(
        self,
        *,
        matrix: RoutingMatrix,
        topology: Topology,
        flags: FlagStore,
        health: HealthBoard,
        executor: Executor,
        operations: Mapping[str, OperationParams],
        clock: Clock,
    ) -> None:
        self.matrix = matrix
        self.topology = topology
        self.flags = flags
        self.health = health
        self._executor = executor
        self._operations = dict(operations)
        self._clock = clock
        self._ids = DecisionIds()

    def plan(self, request: ChatRequest) -> tuple[Decision, GenerationRequest]:
        """Decide how to serve a request, and what to ask the routes for."""
        rule = self.matrix.rule_for(request.operation_type)
        decision = decide(
            rule,
            topology=self.topology,
            health=self.health.view(),
            flags=self.flags.current(),
            now=self._clock.monotonic(),
            decision_id=self._ids.next(),
            residency=request.residency,
            requested_budget_ms=request.latency_budget_ms,
        )
        return decision, self._generation(request, decision)

    def _generation(self, request: ChatRequest, decision: Decision) -> GenerationRequest:
        params = self._operations.get(request.operation_type, _NO_PARAMS)
        system: list[str] = []
        if params.system_prompt:
            system.append(params.system_prompt)
        system.extend(m.content for m in request.messages if m.role == "system")
        return GenerationRequest(
            operation_type=request.operation_type,
            priority=decision.rule.priority,
            system=tuple(system),
            messages=tuple(m for m in request.messages if m.role != "system"),
            max_tokens=request.max_tokens or params.max_tokens or DEFAULT_MAX_TOKENS,
            temperature=request.temperature
            if request.temperature is not None
            else params.temperature,
            top_p=request.top_p if request.top_p is not None else params.top_p,
            stop=request.stop,
            decision_id=decision.decision_id,
            requested_model=request.model,
        )

    async def complete(self, decision: Decision, request: GenerationRequest) -> Served:
        return await self._executor.complete(decision, request)

    async def open_stream(self, decision: Decision, request: GenerationRequest) -> OpenStream:
        return await self._executor.open_stream(decision, request)
