"""The route seam: what the executor needs from an upstream client.

A route turns a `GenerationRequest` into a `Completion` (or a stream of events) and raises a
typed `UpstreamError` when it cannot — never a "successful" result that hides a failure. It owns
its connections (`start` / `aclose`) and reports its own readiness (credentials found, session
connected), which the health view merges with the route's circuit breaker.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Protocol

from hybridroute.signals import RouteHealth
from hybridroute.types import (
    Completion,
    GenerationRequest,
    RouteId,
    RouteKind,
    StreamEvent,
    estimate_tokens,
)

__all__ = ["Route", "estimate_tokens"]


class Route(Protocol):
    """An upstream the gateway can send operations to."""

    @property
    def id(self) -> RouteId: ...

    @property
    def kind(self) -> RouteKind: ...

    @property
    def region(self) -> str | None: ...

    @property
    def min_attempt_s(self) -> float:
        """The least time an attempt needs; with less left, the executor does not start one."""
        ...

    @property
    def timeout_s(self) -> float:
        """The longest a single attempt may take, whatever the deadline allows."""
        ...

    def model_for(self, operation_type: str) -> str:
        """The model name that answers this operation type on this route."""
        ...

    def readiness(self) -> RouteHealth:
        """Whether the route can take calls at all (independent of its breaker)."""
        ...

    @property
    def probe_kind(self) -> str:
        """How `probe()` checks the upstream; "none" when the route is not probed."""
        ...

    async def probe(self, *, budget_s: float) -> None:
        """Check the upstream cheaply; raise an `UpstreamError` when it is not healthy."""
        ...

    async def start(self) -> None:
        """Open connections or sessions. Must not raise for an unreachable upstream."""
        ...

    async def aclose(self) -> None:
        """Close connections, sessions and subprocesses."""
        ...

    async def complete(self, request: GenerationRequest, *, budget_s: float) -> Completion:
        """Generate a whole answer. `budget_s` is the time this attempt has."""
        ...

    def stream(self, request: GenerationRequest, *, budget_s: float) -> AsyncIterator[StreamEvent]:
        """Generate an answer as events; the last event is a `StreamEnd`."""
        ...
