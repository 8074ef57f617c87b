"""An open stream: the route that answered first, its first event, and the rest on demand.

Once the first event has gone to the client there is no fallback: a failure after that point, a
silence longer than the rule's `stream_idle_timeout_ms`, or the request's deadline passing, ends
the stream with `StreamInterrupted`. The winning attempt, until then recorded as OK, is then
recorded as FAILED with what went wrong (`attempts`, and what `on_end` hears), so the monitor
counts it against the route's success rate. On the route's breaker a route failure or silence
counts as a failure; a deadline cut is the request's budget running out, not the route's fault,
so it gives the permit back without an outcome (its attempt still reads FAILED, code
`deadline`). A stream the client abandons gives its permit back too. However it ends, `on_end`
hears how, once.

The breaker's latency sample for a stream is its time to first event (`first_event_s`), not
the whole stream: that is what patience, fallback time and queue estimates are about.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from hybridroute._aio import Deadline
from hybridroute._clock import Clock
from hybridroute.errors import (
    StreamInterrupted,
    UpstreamError,
    UpstreamProtocolError,
    UpstreamTimeout,
)
from hybridroute.monitoring.records import RequestOutcome
from hybridroute.resilience.admission import Slot
from hybridroute.resilience.breaker import CircuitBreaker, Permit
from hybridroute.types import Attempt, AttemptOutcome, RouteId, StreamEnd, StreamEvent

if TYPE_CHECKING:
    from hybridroute.providers import Route
    from hybridroute.routing.policy import Decision

__all__ = ["OpenStream", "StreamEnded"]

StreamEnded = Callable[
    ["Decision", RequestOutcome, "RouteId | None", Sequence[Attempt], bool], None
]


@dataclass(eq=False)
class OpenStream:
    """A stream that has produced its first event."""

    decision: Decision
    route_client: Route
    model: str
    events_source: AsyncIterator[StreamEvent]
    first: StreamEvent | None
    breaker: CircuitBreaker
    permit: Permit
    attempts: tuple[Attempt, ...]
    clock: Clock
    loop: asyncio.AbstractEventLoop
    started: float
    upstream_s: float
    on_end: StreamEnded | None = None
    slot: Slot | None = None  # the route's admission slot, held until the stream ends
    hedged: bool = False
    first_event_s: float | None = None  # the winning attempt's time to its first event
    _settled: bool = field(default=False, init=False)

    @property
    def route(self) -> RouteId:
        return self.route_client.id

    @property
    def fallback(self) -> bool:
        return self.route_client.id != self.decision.primary

    async def events(self) -> AsyncIterator[StreamEvent]:
        """Every event, the first included; the last is a `StreamEnd`."""
        first, self.first = self.first, None
        if first is not None:
            yield first
            if isinstance(first, StreamEnd):
                self._succeed()
                return
        while True:
            event = await self._next()
            yield event
            if isinstance(event, StreamEnd):
                self._succeed()
                return

    async def _next(self) -> StreamEvent:
        remaining = self.decision.deadline - self.clock.monotonic()
        idle = self.decision.rule.stream_idle_timeout_s
        route = self.route_client.id
        try:
            if remaining <= 0:
                raise TimeoutError
            limit = remaining if idle is None or idle >= remaining else idle
            async with Deadline(self.loop, limit):
                return await anext(self.events_source)
        except TimeoutError:
            if idle is not None and idle < remaining:
                # The route went silent mid-stream: that is the route's failure.
                raise self._fail(
                    f"{route} sent nothing for {idle * 1000:.0f} ms after the stream started "
                    "(stream_idle_timeout_ms)",
                    UpstreamTimeout.code,
                    UpstreamTimeout,
                ) from None
            budget = self.decision.budget_ms
            # The request's budget ran out, not the route: no outcome for its breaker, but the
            # attempt did not succeed either.
            message = f"{route} was still streaming when the {budget} ms latency budget ran out"
            self._interrupted(message, "deadline", None)
            self._release(RequestOutcome.INTERRUPTED)
            raise StreamInterrupted(message, route=route) from None
        except StopAsyncIteration:
            raise self._fail(
                f"{route} ended the stream without a final event",
                UpstreamProtocolError.code,
                UpstreamProtocolError,
            ) from None
        except UpstreamError as exc:
            raise self._fail(
                f"{route} failed after the stream started: {exc.summary()}", exc.code, type(exc)
            ) from exc

    def _succeed(self) -> None:
        if not self._settled:
            self._settled = True
            latency = self.first_event_s
            if latency is None:
                latency = self.clock.monotonic() - self.started
            self.breaker.record_success(self.permit, latency)
            self._ended(RequestOutcome.SERVED)

    def _fail(
        self, message: str, code: str, error_class: type[Exception] | None
    ) -> StreamInterrupted:
        if not self._settled:
            self._interrupted(message, code, error_class)
            self._settled = True
            self.breaker.record_failure(self.permit, message)
            self._ended(RequestOutcome.INTERRUPTED)
        return StreamInterrupted(message, route=self.route_client.id)

    def _interrupted(self, message: str, code: str, error_class: type[Exception] | None) -> None:
        """Record the winning attempt as failed: it stopped before the stream's end."""
        if self._settled:
            return
        route = self.route_client.id
        elapsed_ms = (self.clock.monotonic() - self.started) * 1000.0
        failed = Attempt(route, AttemptOutcome.FAILED, elapsed_ms, message, code, error_class)
        self.attempts = tuple(
            failed if a.route == route and a.outcome is AttemptOutcome.OK else a
            for a in self.attempts
        )

    def _release(self, outcome: RequestOutcome) -> None:
        if not self._settled:
            self._settled = True
            self.breaker.release(self.permit)
            self._ended(outcome)

    def _ended(self, outcome: RequestOutcome) -> None:
        if self.slot is not None:
            self.slot.release()
        if self.on_end is not None:
            served = self.route_client.id if outcome is RequestOutcome.SERVED else None
            self.on_end(self.decision, outcome, served, self.attempts, self.hedged)

    async def aclose(self) -> None:
        """Stop reading (the client went away, or the stream is done)."""
        self._release(RequestOutcome.ABANDONED)
        aclose = getattr(self.events_source, "aclose", None)
        if aclose is not None:
            await aclose()

    def __repr__(self) -> str:
        state = "settled" if self._settled else "open"
        return f"<OpenStream {self.route_client.id} {self.decision.decision_id} {state}>"
