"""Admission control under random sequences of events (Hypothesis).

Each example drives one `AdmissionControl` through a random mix of: attempts entering with a
random priority, deadline, needed time and usual latency (each as a task); releases of a held
slot (also of one already released); cancellations of a waiting task; `try_enter()`; and the
clock moving on. A small reference model states the module docstring's rules — a freed slot goes
to the most important waiter, oldest first; the priority table for queueing and displacement;
the up-front deadline estimate; a queued attempt gives up when only `needed_s` remains — and
after every step the control must agree with it exactly. On top of the model, each step checks:

- never more than `max_in_flight` slots held (the slots the test holds equal `in_flight`), never
  more than `max_queue` waiters, and no waiter queued while a slot is free;
- no starvation of critical work: a freed slot goes to the oldest critical waiter whenever one
  waits; a critical waiter is never displaced, and is refused as saturated only when the queue
  is full of critical work; at the end, releasing slots one by one serves every waiter left;
- no deadline overrun: a queued waiter is handed a slot no later than `deadline - needed_s`,
  never waits past it, and does not give up before it.

Time is deterministic: the control reads a `FakeClock`, and the event loop each example runs on
reads the same clock (`_FakeTimeLoop.time()`), so the `asyncio.timeout(patience)` inside
`enter()` fires exactly when the fake clock reaches `deadline - needed_s`. Nothing waits in real
time. All times are multiples of 1/4 s and `max_in_flight` is a power of two, so every sum and
quotient is exact in binary and boundaries compare exactly. After moving the clock the test lets
the loop run (`settle`) before anything else happens, as time passes only while the loop is idle;
releases and cancellations may also be chained without settling in between, so a slot handed to
a waiter that is cancelled in the same instant is exercised too.
"""

from __future__ import annotations

import asyncio
import math
from dataclasses import dataclass

from hypothesis import given, settings
from hypothesis import strategies as st

from hybridroute.resilience.admission import (
    AdmissionControl,
    AdmissionRefused,
    AdmissionSettings,
    Refusal,
    Slot,
)
from hybridroute.testing import FakeClock
from hybridroute.types import Priority

C = Priority.CRITICAL
FAR = 1e9  # a deadline that never matters
SETTLE_ROUNDS = 12  # loop iterations that let every woken task run to its next wait
# The module docstring's table: the share of the queue each priority may fill.
SHARE = {Priority.CRITICAL: 1.0, Priority.HIGH: 1.0, Priority.MEDIUM: 0.75, Priority.LOW: 0.5}

QUEUED, GRANTED, CANCELLED = "queued", "granted", "cancelled"


class _FakeTimeLoop(asyncio.SelectorEventLoop):
    """An event loop whose clock is a `FakeClock`: timers fire when the fake time passes them."""

    def __init__(self, clock: FakeClock) -> None:
        super().__init__()
        self._fake_clock = clock

    def time(self) -> float:
        return self._fake_clock.monotonic()


# -- the events ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Enter:
    priority: Priority
    time_left: float
    needed_s: float
    usual_s: float | None


@dataclass(frozen=True)
class Release:
    pick: int
    settle: bool


@dataclass(frozen=True)
class ReleaseAgain:
    pick: int


@dataclass(frozen=True)
class Cancel:
    pick: int
    settle: bool


@dataclass(frozen=True)
class ReleaseToCancelled:
    """Release a slot and cancel the waiter it went to, in the same instant."""

    pick: int


@dataclass(frozen=True)
class TryEnter:
    pass


@dataclass(frozen=True)
class Advance:
    seconds: float


Event = Enter | Release | ReleaseAgain | ReleaseToCancelled | Cancel | TryEnter | Advance

TIME_LEFT = st.sampled_from([0.0, 0.25, 0.5, 1.0, 1.5, 2.0, 3.0, 4.0, 6.0, 8.0])
PICK = st.integers(min_value=0, max_value=63)
OTHER_EVENTS: dict[str, st.SearchStrategy[Event]] = {
    "release": st.builds(Release, PICK, st.booleans()),
    "cancel": st.builds(Cancel, PICK, st.booleans()),
    "release_again": st.builds(ReleaseAgain, PICK),
    "release_to_cancelled": st.builds(ReleaseToCancelled, PICK),
    "try_enter": st.just(TryEnter()),
    "advance": st.builds(Advance, st.sampled_from([0.25, 0.5, 1.0, 2.0])),
}


@st.composite
def event_lists(draw: st.DrawFn) -> list[Event]:
    """Swarm-style: each example enables a random subset of priorities and event kinds, so
    rarer situations (a queue full of one priority, displacement, tight deadlines) come up."""
    priorities = draw(st.sets(st.sampled_from(Priority), min_size=1))
    kinds = draw(st.sets(st.sampled_from(sorted(OTHER_EVENTS))))
    tight = draw(st.booleans())
    if tight:
        kinds.add("advance")  # tight deadlines are only interesting if time moves
    enter = st.builds(
        Enter,
        priority=st.sampled_from(sorted(priorities, key=lambda p: p.rank)),
        time_left=st.one_of(TIME_LEFT, st.just(FAR)) if tight else st.just(FAR),
        needed_s=st.sampled_from([0.0, 0.25, 0.5, 1.0]),
        usual_s=st.sampled_from([None, 0.25, 0.5, 1.0, 2.0]),
    )
    events = st.one_of(enter, enter, *(OTHER_EVENTS[k] for k in sorted(kinds)))
    return draw(st.lists(events, min_size=12, max_size=60))


# -- one run ---------------------------------------------------------------------------------------


@dataclass(eq=False)
class Waiter:
    """One `enter()` call: what the model expects of it, and what actually happened."""

    seq: int
    priority: Priority
    deadline: float
    needed_s: float
    usual_s: float | None
    expected: str = QUEUED  # queued | granted | cancelled | a Refusal value
    queued_at_all: bool = False  # the model put it in the queue (it did not get a slot at once)
    task: asyncio.Task[None] | None = None
    slot: Slot | None = None
    granted_at: float | None = None
    refusal: Refusal | None = None
    refused_at: float | None = None
    cancelled: bool = False

    @property
    def last_moment(self) -> float:
        """The latest time at which it can still start and finish in time."""
        return self.deadline - self.needed_s

    @property
    def actual(self) -> str:
        if self.slot is not None:
            return GRANTED
        if self.refusal is not None:
            return self.refusal.value
        return CANCELLED if self.cancelled else QUEUED

    @property
    def key(self) -> tuple[int, int]:
        """Who is served first: the most important, then the oldest."""
        return (self.priority.rank, self.seq)


class Run:
    def __init__(self, limits: AdmissionSettings, clock: FakeClock) -> None:
        self.limits = limits
        self.clock = clock
        self.control = AdmissionControl("r", limits, clock)
        self.waiters: list[Waiter] = []
        self.held: list[Slot] = []  # slots given to the test, not yet released
        self.released: list[Slot] = []
        # the model
        self.in_flight = 0
        self.queue: list[Waiter] = []
        self.unsettled = False

    # -- driving -------------------------------------------------------------------------------

    async def settle(self) -> None:
        for _ in range(SETTLE_ROUNDS):
            await asyncio.sleep(0)
        self.unsettled = False
        self.check()

    async def wait_for_slot(self, waiter: Waiter) -> None:
        try:
            slot = await self.control.enter(
                waiter.priority, waiter.deadline, waiter.needed_s, waiter.usual_s
            )
        except AdmissionRefused as refused:
            waiter.refusal = refused.reason
            waiter.refused_at = self.clock.monotonic()
            return
        except asyncio.CancelledError:
            waiter.cancelled = True
            raise
        waiter.slot = slot
        waiter.granted_at = self.clock.monotonic()
        self.held.append(slot)

    async def play(self, event: Event) -> None:
        if isinstance(event, Release | Cancel):
            if isinstance(event, Release):
                self.release(event.pick)
            else:
                self.cancel(event.pick)
            if event.settle:
                await self.settle()
            else:
                self.unsettled = True
            return
        if self.unsettled:
            await self.settle()
        if isinstance(event, Enter):
            await self.enter(event)
        elif isinstance(event, ReleaseToCancelled):
            recipient = self.release(event.pick)
            if recipient is not None:
                self.cancel_waiter(recipient)
            await self.settle()
        elif isinstance(event, ReleaseAgain):
            if self.released:
                before = self.control.in_flight, self.control.queued
                self.released[event.pick % len(self.released)].release()
                assert (self.control.in_flight, self.control.queued) == before
        elif isinstance(event, TryEnter):
            slot = self.control.try_enter()
            free = self.in_flight < self.limits.max_in_flight and not self.queue
            assert (slot is not None) == free
            if slot is not None:
                self.in_flight += 1
                self.held.append(slot)
            self.check()
        else:
            self.clock.advance(event.seconds)
            now = self.clock.monotonic()
            for waiter in [w for w in self.queue if w.last_moment <= now]:
                self.queue.remove(waiter)
                waiter.expected = Refusal.DEADLINE.value
            await self.settle()

    async def enter(self, event: Enter) -> None:
        now = self.clock.monotonic()
        waiter = Waiter(
            len(self.waiters), event.priority, now + event.time_left, event.needed_s, event.usual_s
        )
        self.waiters.append(waiter)
        queued_before = self.control.snapshot().queued
        self.expect_entry(waiter, now)
        waiter.task = asyncio.get_running_loop().create_task(self.wait_for_slot(waiter))
        await self.settle()
        if waiter.refusal is Refusal.SATURATED and waiter.priority is C:
            # refused only when the queue is entirely critical (and full)
            assert queued_before[C.value] == sum(queued_before.values())
            assert queued_before[C.value] == self.limits.max_queue

    def expect_entry(self, waiter: Waiter, now: float) -> None:
        """The model: what `enter()` does with a new attempt (module docstring)."""
        limits = self.limits
        if self.in_flight < limits.max_in_flight and not self.queue:
            waiter.expected = GRANTED
            self.in_flight += 1
            return
        limit = math.floor(limits.max_queue * SHARE[waiter.priority])
        lower = [w for w in self.queue if w.priority.rank > waiter.priority.rank]
        if len(self.queue) >= limit and not lower:
            waiter.expected = Refusal.SATURATED.value
            return
        remaining = waiter.deadline - now
        ahead = sum(1 for w in self.queue if w.priority.rank <= waiter.priority.rank)
        too_late = waiter.needed_s >= remaining
        if waiter.usual_s is not None:
            wait = (ahead + 1) * waiter.usual_s / limits.max_in_flight
            too_late = too_late or wait + waiter.needed_s > remaining
        if too_late:
            waiter.expected = Refusal.DEADLINE.value
            return
        if len(self.queue) >= limit:
            lowest = max(w.priority.rank for w in lower)
            victim = max((w for w in lower if w.priority.rank == lowest), key=lambda w: w.seq)
            assert victim.priority is not C
            self.queue.remove(victim)
            victim.expected = Refusal.DISPLACED.value
        waiter.queued_at_all = True
        self.queue.append(waiter)

    def hand_on(self) -> Waiter | None:
        """The model: a slot came back; the most important, oldest waiter gets it."""
        if not self.queue:
            self.in_flight -= 1
            return None
        best = min(self.queue, key=lambda w: w.key)
        if any(w.priority is C for w in self.queue):
            oldest_critical = min((w for w in self.queue if w.priority is C), key=lambda w: w.seq)
            assert best is oldest_critical
        self.queue.remove(best)
        best.expected = GRANTED
        return best

    def release(self, pick: int) -> Waiter | None:
        """Release one held slot; the waiter the model says gets it (if any)."""
        if not self.held:
            return None
        slot = self.held.pop(pick % len(self.held))
        recipient = self.hand_on()
        slot.release()
        self.released.append(slot)
        return recipient

    def cancel(self, pick: int) -> None:
        waiting = [
            w
            for w in self.waiters
            if w.task is not None and not w.task.done() and w.expected != CANCELLED
        ]
        if waiting:
            self.cancel_waiter(waiting[pick % len(waiting)])

    def cancel_waiter(self, waiter: Waiter) -> None:
        if waiter in self.queue:
            self.queue.remove(waiter)
        else:  # handed a slot in this very instant: it passes the slot on
            assert waiter.expected == GRANTED
            self.hand_on()
        waiter.expected = CANCELLED
        assert waiter.task is not None
        waiter.task.cancel()

    async def drain(self) -> None:
        """Release every slot in turn: everyone still waiting must be served."""
        if self.unsettled:
            await self.settle()
        while self.held:
            self.hand_on()
            slot = self.held.pop(0)
            slot.release()
            await self.settle()
        assert not self.queue
        assert self.control.in_flight == 0
        assert self.control.queued == 0
        for waiter in self.waiters:
            assert waiter.actual != QUEUED

    # -- checking ------------------------------------------------------------------------------

    def check(self) -> None:
        control, limits = self.control, self.limits
        now = self.clock.monotonic()
        for waiter in self.waiters:
            assert waiter.actual == waiter.expected, waiter
            if waiter.expected == Refusal.DISPLACED.value:
                assert waiter.priority is not C
            if waiter.queued_at_all and waiter.granted_at is not None:
                assert waiter.granted_at <= waiter.last_moment
            if waiter.queued_at_all and waiter.refusal is Refusal.DEADLINE:
                assert waiter.refused_at is not None
                assert waiter.refused_at >= waiter.last_moment  # did not give up early
            if waiter.actual == QUEUED:
                assert now < waiter.last_moment
        assert len(self.held) == control.in_flight == self.in_flight
        assert control.in_flight <= limits.max_in_flight
        assert control.queued == len(self.queue) <= limits.max_queue
        if control.in_flight < limits.max_in_flight:
            assert control.queued == 0
        by_priority = control.snapshot().queued
        for priority in Priority:
            assert by_priority[priority.value] == sum(
                1 for w in self.queue if w.priority is priority
            )


async def play(run: Run, events: list[Event], *, start_full: bool) -> None:
    if start_full:  # every slot taken: the first entries queue
        for _ in range(run.limits.max_in_flight):
            await run.play(TryEnter())
    for event in events:
        await run.play(event)
    await run.drain()


def run_on_fake_time(limits: AdmissionSettings, events: list[Event], *, start_full: bool) -> None:
    clock = FakeClock(start=0.0)
    with asyncio.Runner(loop_factory=lambda: _FakeTimeLoop(clock)) as runner:
        runner.run(play(Run(limits, clock), events, start_full=start_full))


@settings(max_examples=400, deadline=None)
@given(
    max_in_flight=st.sampled_from([1, 2, 4]),
    max_queue=st.integers(min_value=0, max_value=6),
    events=event_lists(),
    start_full=st.booleans(),
)
def test_random_traffic_keeps_limits_priorities_and_deadlines(
    max_in_flight, max_queue, events, start_full
):
    run_on_fake_time(AdmissionSettings(max_in_flight, max_queue), events, start_full=start_full)
