"""Test doubles that ship with the package: a clock you move by hand.

Kept in the package (not only under tests/) so operators' own tests and the drills can use them.
"""

from __future__ import annotations

import asyncio

__all__ = ["FakeClock"]


class FakeClock:
    """A clock that only moves when told to.

    `sleep()` suspends until `advance()` has moved time past the wake-up point, so code that
    backs off or waits can be driven step by step without real waiting.
    """

    def __init__(self, start: float = 1000.0, wall_start: float = 1_800_000_000.0) -> None:
        self._mono = start
        self._wall_offset = wall_start - start
        self._sleepers: list[tuple[float, asyncio.Future[None]]] = []

    def monotonic(self) -> float:
        return self._mono

    def now(self) -> float:
        return self._mono + self._wall_offset

    async def sleep(self, seconds: float) -> None:
        if seconds <= 0:
            await asyncio.sleep(0)
            return
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._sleepers.append((self._mono + seconds, future))
        await future

    def advance(self, seconds: float) -> None:
        """Move time forward and wake every sleeper whose time has come."""
        if seconds < 0:
            raise ValueError("a clock cannot go backwards; advance() takes seconds >= 0")
        self._mono += seconds
        due = [f for at, f in self._sleepers if at <= self._mono]
        self._sleepers = [(at, f) for at, f in self._sleepers if at > self._mono]
        for future in due:
            if not future.done():
                future.set_result(None)

    def __repr__(self) -> str:
        return f"<FakeClock t={self._mono:.3f} sleepers={len(self._sleepers)}>"
