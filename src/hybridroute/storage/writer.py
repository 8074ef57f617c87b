"""`BatchWriter`: records from the request path to a store, in batches, without waiting on it.

`submit()` only appends to a buffer and wakes the writer task. The task writes what has
gathered at most `flush_interval_s` later (sooner when a batch fills). A write that fails is
logged and retried with backoff, the same batch first, so nothing is lost while the store is
away; the buffer then grows, and a warning says how far behind it is. `flush()` writes
everything now (shutdown, tests, and readers that must see the latest records). A writer task
flushes when it is cancelled; one cancelled before it ever ran cannot, so its owner calls
`flush()` once more after stopping it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from typing import Generic, TypeVar

from hybridroute._clock import Clock

__all__ = ["BatchWriter"]

log = logging.getLogger("hybridroute.storage")

R = TypeVar("R")

_BACKOFF_START_S = 0.1
_BACKOFF_MAX_S = 5.0


class BatchWriter(Generic[R]):
    """Buffers records and writes them to `sink` in batches from one background task."""

    def __init__(
        self,
        name: str,
        sink: Callable[[Sequence[R]], Awaitable[None]],
        clock: Clock,
        *,
        flush_interval_s: float = 0.2,
        max_batch: int = 1000,
        warn_backlog: int = 100_000,
    ) -> None:
        self.name = name
        self._sink = sink
        self._clock = clock
        self._interval = flush_interval_s
        self._max_batch = max_batch
        self._warn_backlog = warn_backlog
        self._buffer: deque[R] = deque()
        self._wake = asyncio.Event()
        self._write_lock = asyncio.Lock()
        self.written = 0
        self.failures = 0
        self.last_error: str | None = None

    @property
    def pending(self) -> int:
        return len(self._buffer)

    def submit(self, record: R) -> None:
        """Queue one record (never blocks, never drops)."""
        self._buffer.append(record)
        if len(self._buffer) >= self._max_batch:
            self._wake.set()
        if len(self._buffer) % self._warn_backlog == 0:  # every so many records behind
            log.warning(
                "%s: %d records are waiting to be written (last error: %s)",
                self.name,
                len(self._buffer),
                self.last_error or "none",
            )

    async def run(self) -> None:
        """The writer task: write what gathers until cancelled (then flush what is left)."""
        backoff = _BACKOFF_START_S
        try:
            while True:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), self._interval)
                self._wake.clear()
                if await self._write_some():
                    backoff = _BACKOFF_START_S
                else:
                    await self._clock.sleep(backoff)
                    backoff = min(backoff * 2, _BACKOFF_MAX_S)
        except asyncio.CancelledError:
            await asyncio.shield(self._final_flush())
            raise

    async def _final_flush(self) -> None:
        try:
            await self.flush()
        except Exception:  # the store is away at shutdown: say what is lost
            log.exception(
                "%s: %d records could not be written at shutdown", self.name, self.pending
            )

    async def flush(self) -> None:
        """Write everything buffered now; raises the store's error if a write fails."""
        while self._buffer:
            if not await self._write_some(raise_errors=True):
                return

    async def _write_some(self, *, raise_errors: bool = False) -> bool:
        """Write one batch; False when the write failed (the batch stays buffered)."""
        async with self._write_lock:
            if not self._buffer:
                return True
            batch = [self._buffer[i] for i in range(min(self._max_batch, len(self._buffer)))]
            try:
                await self._sink(batch)
            except Exception as exc:
                self.failures += 1
                self.last_error = f"{type(exc).__name__}: {exc}"
                log.warning(
                    "%s: writing %d records failed (%s); %d waiting, retrying",
                    self.name,
                    len(batch),
                    self.last_error,
                    len(self._buffer),
                )
                if raise_errors:
                    raise
                return False
            for _ in batch:
                self._buffer.popleft()
            self.written += len(batch)
            return True

    def __repr__(self) -> str:
        return f"<BatchWriter {self.name} pending={self.pending} written={self.written}>"
