"""Admission control per route: a concurrency limit and a bounded priority queue in front of it.

A route takes at most `max_in_flight` attempts at once. An attempt that finds it full waits in
the route's queue; a freed slot goes to the most important waiter (critical, then high, medium,
low; first come first served within a priority). The queue is bounded, and each priority may
only fill part of it:

| priority | may queue while the queue holds fewer than | when it does not fit |
|---|---|---|
| low | 50 % of `max_queue` | refused |
| medium | 75 % | takes the place of the newest queued `low`, else refused |
| high | 100 % | takes the place of the newest queued `low`, else `medium`, else refused |
| critical | 100 % | takes the place of the newest lower-priority waiter, else refused |

So under overload `low` is shed first, then `medium`, and `critical` is refused only when the
queue is full of critical work — never for lower-priority work. A waiter that loses its place is
refused at once (it does not wait to time out).

Deadlines: before queueing, the wait is estimated from the waiters ahead and the route's usual
latency (`max_in_flight` slots each turning over once per usual latency); an attempt that
could not start in time to finish is refused at once instead of timing out late. A queued
attempt also gives up when the time it needs to finish is all that remains.

Everything runs on the event loop; no locks.
"""

from __future__ import annotations

import asyncio
import math
from collections import deque
from dataclasses import dataclass
from enum import StrEnum

from hybridroute._clock import Clock
from hybridroute.types import Priority, RouteId

__all__ = [
    "QUEUE_SHARE",
    "AdmissionControl",
    "AdmissionRefused",
    "AdmissionSettings",
    "AdmissionSnapshot",
    "Refusal",
    "Slot",
]

QUEUE_SHARE = {
    Priority.CRITICAL: 1.0,
    Priority.HIGH: 1.0,
    Priority.MEDIUM: 0.75,
    Priority.LOW: 0.5,
}
_BY_RANK = sorted(Priority, key=lambda p: p.rank)  # critical … low


class Refusal(StrEnum):
    SATURATED = "saturated"  # no slot, and no room for this priority in the queue
    DISPLACED = "displaced"  # was queued, gave its place to more important work
    DEADLINE = "deadline"  # could not start in time to finish


class AdmissionRefused(Exception):
    """The route will not take this attempt now."""

    def __init__(self, route: RouteId, reason: Refusal, detail: str, retry_after_s: float) -> None:
        super().__init__(detail)
        self.route = route
        self.reason = reason
        self.detail = detail
        self.retry_after_s = retry_after_s


@dataclass(frozen=True, slots=True)
class AdmissionSettings:
    max_in_flight: int = 256
    max_queue: int = 512


@dataclass(frozen=True, slots=True)
class AdmissionSnapshot:
    route: RouteId
    in_flight: int
    max_in_flight: int
    queued: dict[str, int]
    max_queue: int
    admitted: int
    refused: dict[str, int]


class Slot:
    """One admitted attempt's place on a route; give it back with `release()` (idempotent)."""

    __slots__ = ("_control", "_released")

    def __init__(self, control: AdmissionControl) -> None:
        self._control = control
        self._released = False

    def release(self) -> None:
        if not self._released:
            self._released = True
            self._control._free()

    @property
    def released(self) -> bool:
        return self._released


@dataclass(slots=True)
class _Waiter:
    priority: Priority
    future: asyncio.Future[Slot]


class AdmissionControl:
    """One route's concurrency limit and priority queue."""

    def __init__(self, route: RouteId, settings: AdmissionSettings, clock: Clock) -> None:
        self.route = route
        self.settings = settings
        self._clock = clock
        self._in_flight = 0
        self._queues: dict[Priority, deque[_Waiter]] = {p: deque() for p in _BY_RANK}
        self._queued = 0
        self._admitted = 0
        self._refused = {p: 0 for p in _BY_RANK}

    # -- reading -------------------------------------------------------------------------------

    @property
    def in_flight(self) -> int:
        return self._in_flight

    @property
    def queued(self) -> int:
        return self._queued

    def snapshot(self) -> AdmissionSnapshot:
        return AdmissionSnapshot(
            route=self.route,
            in_flight=self._in_flight,
            max_in_flight=self.settings.max_in_flight,
            queued={p.value: len(q) for p, q in self._queues.items()},
            max_queue=self.settings.max_queue,
            admitted=self._admitted,
            refused={p.value: n for p, n in self._refused.items()},
        )

    # -- entering ------------------------------------------------------------------------------

    def try_enter(self) -> Slot | None:
        """A slot now if one is free and nobody is waiting for it; never waits."""
        if self._in_flight < self.settings.max_in_flight and not self._queued:
            self._in_flight += 1
            self._admitted += 1
            return Slot(self)
        return None

    async def enter(
        self, priority: Priority, deadline: float, needed_s: float, usual_s: float | None
    ) -> Slot:
        """A slot, after queueing if need be; `AdmissionRefused` when the route will not take it.

        `needed_s` is how long the attempt needs once started; `usual_s` the route's usual
        latency (None before it has one), used to estimate the queue's turnover.
        """
        slot = self.try_enter()
        if slot is not None:
            return slot
        now = self._clock.monotonic()
        self._check_wait(priority, deadline - now, needed_s, usual_s)
        self._make_room(priority, usual_s)
        waiter = _Waiter(priority, asyncio.get_running_loop().create_future())
        self._queues[priority].append(waiter)
        self._queued += 1
        patience = deadline - now - needed_s
        try:
            async with asyncio.timeout(patience):
                return await waiter.future
        except TimeoutError:
            self._abandon(waiter)
            self._refused[priority] += 1
            raise AdmissionRefused(
                self.route,
                Refusal.DEADLINE,
                f"{self.route} saturated: queued {patience * 1000:.0f} ms without a slot, "
                "leaving too little time to finish",
                self.retry_after_s(usual_s),
            ) from None
        except asyncio.CancelledError:
            self._abandon(waiter)
            raise

    def _abandon(self, waiter: _Waiter) -> None:
        """A waiter stopped waiting: take it out of the queue, or give back a slot it was
        handed in the same instant."""
        future = waiter.future
        if not future.done() or future.cancelled():
            future.cancel()
            self._forget(waiter)
        elif future.exception() is None:
            future.result().release()

    def _check_wait(
        self, priority: Priority, remaining: float, needed_s: float, usual_s: float | None
    ) -> None:
        limit = math.floor(self.settings.max_queue * QUEUE_SHARE[priority])
        if self._queued >= limit and self._lowest_below(priority) is None:
            raise self._saturated(priority, usual_s)
        if needed_s >= remaining:
            self._refused[priority] += 1
            raise AdmissionRefused(
                self.route,
                Refusal.DEADLINE,
                f"{self.route} saturated and only {remaining * 1000:.0f} ms left, less than the "
                f"{needed_s * 1000:.0f} ms an attempt needs",
                self.retry_after_s(usual_s),
            )
        if usual_s is None:
            return
        ahead = sum(len(self._queues[p]) for p in _BY_RANK if p.rank <= priority.rank)
        wait = (ahead + 1) * usual_s / self.settings.max_in_flight
        if wait + needed_s > remaining:
            self._refused[priority] += 1
            raise AdmissionRefused(
                self.route,
                Refusal.DEADLINE,
                f"{self.route} saturated: about {wait * 1000:.0f} ms in the queue plus "
                f"{needed_s * 1000:.0f} ms to answer exceed the {remaining * 1000:.0f} ms left",
                self.retry_after_s(usual_s),
            )

    def _saturated(self, priority: Priority, usual_s: float | None) -> AdmissionRefused:
        self._refused[priority] += 1
        return AdmissionRefused(
            self.route,
            Refusal.SATURATED,
            f"{self.route} saturated: {self._in_flight} in flight, {self._queued} queued; "
            f"{priority.value} work may fill {QUEUE_SHARE[priority] * 100:.0f} % of the "
            f"{self.settings.max_queue}-place queue",
            self.retry_after_s(usual_s),
        )

    def _lowest_below(self, priority: Priority) -> Priority | None:
        """The least important priority under `priority` that has waiters."""
        for candidate in reversed(_BY_RANK):
            if candidate.rank <= priority.rank:
                return None
            if self._queues[candidate]:
                return candidate
        return None

    def _make_room(self, priority: Priority, usual_s: float | None) -> None:
        """Displace the newest lower-priority waiter when `priority` has no room in the queue.

        A waiter whose future is already done (its task was cancelled — the client went away,
        or its patience ran out — and has not yet run to take itself out) holds a place it will
        never use: it is dropped, and the search goes on to the next one.
        """
        limit = math.floor(self.settings.max_queue * QUEUE_SHARE[priority])
        while self._queued >= limit:
            victim_priority = self._lowest_below(priority)
            if victim_priority is None:  # only dead waiters were below it, and none is left
                raise self._saturated(priority, usual_s)
            victim = self._queues[victim_priority].pop()  # the newest: it has waited least
            self._queued -= 1
            if victim.future.done():
                continue
            self._refused[victim_priority] += 1
            self._displace(victim, priority)
            return

    def _displace(self, victim: _Waiter, priority: Priority) -> None:
        victim_priority = victim.priority
        victim.future.set_exception(
            AdmissionRefused(
                self.route,
                Refusal.DISPLACED,
                f"{self.route} saturated: {victim_priority.value} work gave its place in the "
                f"queue to {priority.value} work",
                self.retry_after_s(None),
            )
        )

    def _forget(self, waiter: _Waiter) -> None:
        queue = self._queues[waiter.priority]
        try:
            queue.remove(waiter)
        except ValueError:
            return
        self._queued -= 1

    # -- leaving -------------------------------------------------------------------------------

    def _free(self) -> None:
        """A slot was released: hand it to the most important waiter, else free it."""
        for priority in _BY_RANK:
            queue = self._queues[priority]
            while queue:
                waiter = queue.popleft()
                self._queued -= 1
                if waiter.future.done():
                    continue
                self._admitted += 1
                waiter.future.set_result(Slot(self))
                return
        self._in_flight -= 1

    def retry_after_s(self, usual_s: float | None) -> float:
        """A hint for a refused caller: roughly how long the queue takes to turn over."""
        turnover = (usual_s or 1.0) * max(1, self._queued) / self.settings.max_in_flight
        return max(1.0, turnover)

    def __repr__(self) -> str:
        return (
            f"<AdmissionControl {self.route} in_flight={self._in_flight}/"
            f"{self.settings.max_in_flight} queued={self._queued}/{self.settings.max_queue}>"
        )
