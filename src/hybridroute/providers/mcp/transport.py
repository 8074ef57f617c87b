"""Knowing when an MCP transport has ended.

The MCP SDK's client keeps its session object alive after the server goes away (a stdio server
that exits, a stream that closes); it only fails the next call. Wrapping the transport's read
stream lets the session learn of the end as it happens, so readiness turns false and the session
reconnects before a request has to pay for a failed attempt.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from types import TracebackType
from typing import Any, Generic, TypeVar

import anyio
from mcp.client._transport import TransportStreams
from mcp.shared._stream_protocols import ReadStream

__all__ = ["EndWatchedStream", "watch_end"]

T = TypeVar("T")

_ENDED = (anyio.EndOfStream, anyio.ClosedResourceError, anyio.BrokenResourceError)


class EndWatchedStream(Generic[T]):
    """A read stream that calls `on_end` once its transport stops delivering."""

    def __init__(self, inner: ReadStream[T], on_end: Callable[[], None]) -> None:
        self._inner = inner
        self._on_end = on_end

    @property
    def last_context(self) -> Any:
        # The SDK reads the sender's context snapshot from the stream, when it has one.
        return getattr(self._inner, "last_context", None)

    async def receive(self) -> T:
        try:
            return await self._inner.receive()
        except _ENDED:
            self._on_end()
            raise

    async def aclose(self) -> None:
        await self._inner.aclose()

    def __aiter__(self) -> EndWatchedStream[T]:
        return self

    async def __anext__(self) -> T:
        try:
            return await self.receive()
        except anyio.EndOfStream:
            raise StopAsyncIteration from None

    async def __aenter__(self) -> EndWatchedStream[T]:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()


def watch_end(
    transport: AbstractAsyncContextManager[TransportStreams], on_end: Callable[[], None]
) -> AbstractAsyncContextManager[TransportStreams]:
    """The same transport, reporting the end of its read stream to `on_end`."""

    @asynccontextmanager
    async def watched() -> AsyncIterator[TransportStreams]:
        async with transport as (read, write):
            yield EndWatchedStream(read, on_end), write

    return watched()
