"""The clock: one injectable source of time for breakers, deadlines and backoff.

`SystemClock` is the real one. Tests use `hybridroute.testing.FakeClock` to move time by hand
instead of sleeping.
"""

from __future__ import annotations

import asyncio
import time
from typing import Protocol

__all__ = ["Clock", "SystemClock"]


class Clock(Protocol):
    """Monotonic time for durations, wall time for records, and an awaitable sleep."""

    def monotonic(self) -> float:
        """Seconds on a monotonic scale (only differences are meaningful)."""
        ...

    def now(self) -> float:
        """Wall-clock seconds since the Unix epoch."""
        ...

    async def sleep(self, seconds: float) -> None:
        """Wait for `seconds` of this clock's time."""
        ...


class SystemClock:
    """The process's real clocks."""

    __slots__ = ()

    def monotonic(self) -> float:
        return time.monotonic()

    def now(self) -> float:
        return time.time()

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(seconds)

    def __repr__(self) -> str:
        return "<SystemClock>"
