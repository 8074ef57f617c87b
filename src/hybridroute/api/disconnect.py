"""Noticing that the client went away.

uvicorn's `send()` returns silently once a client has disconnected, so a handler left to itself
would keep an upstream call or stream running for nobody (and hold a breaker permit). A
`DisconnectWatch` listens for `http.disconnect` beside the handler and cancels the handler's task
when it comes; the cancellation unwinds through the executor, which closes upstream streams and
gives permits back. Start it only after the request body has been read.

Most requests finish in a few milliseconds, so the listener is not started at once: a timer arms
it after `ARM_AFTER_S`. A request that ends sooner costs one timer instead of a task.
"""

from __future__ import annotations

import asyncio
from types import TracebackType

from hybridroute.api.http import Receive

__all__ = ["ARM_AFTER_S", "DisconnectWatch"]

ARM_AFTER_S = 0.05


class DisconnectWatch:
    """Context manager: cancels the current task if the client disconnects inside it."""

    __slots__ = ("_done", "_loop", "_receive", "_target", "_timer", "_watcher", "client_gone")

    def __init__(self, receive: Receive, loop: asyncio.AbstractEventLoop) -> None:
        self._receive = receive
        self._loop = loop
        self._target: asyncio.Task[object] | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._watcher: asyncio.Task[None] | None = None
        self._done = False
        self.client_gone = False

    def __enter__(self) -> DisconnectWatch:
        self._target = asyncio.current_task(self._loop)
        self._timer = self._loop.call_later(ARM_AFTER_S, self._arm)
        return self

    def _arm(self) -> None:
        if not self._done:
            self._watcher = self._loop.create_task(self._watch())

    async def _watch(self) -> None:
        while True:
            message = await self._receive()
            if message["type"] == "http.disconnect":
                if not self._done and self._target is not None:
                    self.client_gone = True
                    self._target.cancel()
                return

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> bool:
        self._done = True
        if self._timer is not None:
            self._timer.cancel()
        if self._watcher is not None:
            self._watcher.cancel()
        if exc_type is asyncio.CancelledError and self.client_gone and self._target is not None:
            self._target.uncancel()
            return True  # the cancellation was ours: the request simply ends
        return False
