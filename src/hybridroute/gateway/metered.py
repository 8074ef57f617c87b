"""A stream that is charged and cached as it is relayed.

`MeteredStream` wraps the executor's `OpenStream`: it passes every event on, keeps the text for
the cache (up to the cache's entry limit) and a count of what it relayed, and when the stream
ends it settles the request's budget reservation. A stream that reaches its final event is
charged the usage its route reported and may be stored in the cache; one that ends early (the
route failed, the deadline passed, the client left) is charged an estimate for what was relayed
and is never cached. The charge is settled before the final event is handed on, so the caller
can report the cost.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from decimal import Decimal

from hybridroute.caching import StreamRecorder
from hybridroute.gateway.streams import OpenStream
from hybridroute.routing.policy import Decision
from hybridroute.types import Attempt, StreamEnd, StreamEvent, TextDelta

__all__ = ["MeteredStream", "StreamFinished"]

# (characters relayed, the final event or None when it ended early, recorder) -> the cost
StreamFinished = Callable[[int, StreamEnd | None, StreamRecorder | None], Awaitable[Decimal]]


class MeteredStream:
    """An open stream whose cost is settled when it ends."""

    def __init__(
        self,
        opened: OpenStream,
        finished: StreamFinished,
        *,
        record_for_cache: int | None,
    ) -> None:
        self._opened = opened
        self._finished = finished
        self._relayed = 0  # characters of text passed on
        self._recorder = StreamRecorder(record_for_cache) if record_for_cache else None
        self._done = False
        self.cost: Decimal | None = None
        # What the executor reported when the stream opened (before any later outcome).
        self.attempts: tuple[Attempt, ...] = opened.attempts

    # The open stream's facts, for the response headers.
    @property
    def decision(self) -> Decision:
        return self._opened.decision

    @property
    def route(self) -> str:
        return self._opened.route

    @property
    def model(self) -> str:
        return self._opened.model

    @property
    def fallback(self) -> bool:
        return self._opened.fallback

    @property
    def hedged(self) -> bool:
        return self._opened.hedged

    @property
    def upstream_s(self) -> float:
        return self._opened.upstream_s

    async def events(self) -> AsyncIterator[StreamEvent]:
        """Every event of the stream; the cost is known once the final event arrives."""
        async for event in self._opened.events():
            if isinstance(event, TextDelta):
                self._relayed += len(event.text)
                if self._recorder is not None:
                    self._recorder.add(event.text)
            elif isinstance(event, StreamEnd):
                await self._finish(event)
            yield event

    async def _finish(self, end: StreamEnd | None) -> None:
        if self._done:
            return
        self._done = True
        self.cost = await self._finished(self._relayed, end, self._recorder)

    async def aclose(self) -> None:
        """Stop reading; a stream that did not reach its end is charged as cut off."""
        try:
            await self._opened.aclose()
        finally:
            await self._finish(None)
