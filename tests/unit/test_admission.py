"""Admission control: the concurrency limit, the priority queue, shedding and deadlines."""

from __future__ import annotations

import asyncio

import pytest

from hybridroute.resilience.admission import (
    AdmissionControl,
    AdmissionRefused,
    AdmissionSettings,
    Refusal,
    Slot,
)
from hybridroute.testing import FakeClock
from hybridroute.types import Priority

pytestmark = pytest.mark.anyio

C, H, MED, L = Priority.CRITICAL, Priority.HIGH, Priority.MEDIUM, Priority.LOW
FAR = 1e9  # a deadline that never matters


def control(in_flight: int = 1, queue: int = 4) -> AdmissionControl:
    return AdmissionControl("r", AdmissionSettings(in_flight, queue), FakeClock(start=0.0))


def full(in_flight: int = 1, queue: int = 4) -> tuple[AdmissionControl, list[Slot]]:
    c = control(in_flight, queue)
    held = [c.try_enter() for _ in range(in_flight)]
    assert all(held)
    return c, [s for s in held if s is not None]


async def queue_up(c: AdmissionControl, priority: Priority) -> asyncio.Task[Slot]:
    task = asyncio.get_running_loop().create_task(c.enter(priority, FAR, 0.0, None))
    await asyncio.sleep(0)
    return task


async def test_free_slots_are_taken_at_once_up_to_the_limit():
    c = control(in_flight=2)
    a, b = c.try_enter(), c.try_enter()
    assert a is not None
    assert b is not None
    assert c.try_enter() is None
    a.release()
    a.release()  # idempotent
    assert c.in_flight == 1


async def test_a_freed_slot_goes_to_the_most_important_waiter_first_in_first_out():
    c, (held,) = full(queue=8)
    order: list[str] = []

    async def wait_then_pass_on(name: str, priority: Priority) -> None:
        slot = await c.enter(priority, FAR, 0.0, None)
        order.append(name)
        slot.release()

    loop = asyncio.get_running_loop()
    tasks = []
    for name, priority in [("low1", L), ("med", MED), ("crit1", C), ("high", H), ("crit2", C)]:
        tasks.append(loop.create_task(wait_then_pass_on(name, priority)))
        await asyncio.sleep(0)
    assert c.queued == 5
    held.release()
    await asyncio.gather(*tasks)
    assert order == ["crit1", "crit2", "high", "med", "low1"]
    assert c.in_flight == 0


async def test_low_fills_half_the_queue_medium_three_quarters():
    c, _ = full(queue=4)
    await queue_up(c, L)
    await queue_up(c, L)
    with pytest.raises(AdmissionRefused) as info:
        await c.enter(L, FAR, 0.0, None)
    assert info.value.reason is Refusal.SATURATED
    assert "low work may fill 50 % of the 4-place queue" in info.value.detail
    await queue_up(c, MED)  # 2 < 3: fits
    assert c.queued == 3


async def test_more_important_work_displaces_the_newest_less_important_waiter():
    c, _ = full(queue=4)
    low1, low2 = await queue_up(c, L), await queue_up(c, L)
    medium = await queue_up(c, MED)  # 2 queued < 3 (75 %): fits
    await queue_up(c, C)  # 3 < 4: fits; the queue is now full
    await queue_up(c, C)  # displaces the newest low
    with pytest.raises(AdmissionRefused) as info:
        await low2
    assert info.value.reason is Refusal.DISPLACED
    assert info.value.detail == "r saturated: low work gave its place in the queue to critical work"
    await queue_up(c, C)  # then the other low
    with pytest.raises(AdmissionRefused):
        await low1
    await queue_up(c, C)  # then medium
    with pytest.raises(AdmissionRefused):
        await medium
    with pytest.raises(AdmissionRefused) as full_of_critical:
        await c.enter(C, FAR, 0.0, None)
    assert full_of_critical.value.reason is Refusal.SATURATED  # only critical work is left
    assert c.snapshot().queued == {"critical": 4, "high": 0, "medium": 0, "low": 0}


async def test_medium_displaces_low_but_low_never_displaces_anyone():
    c, _ = full(queue=4)
    low1, low2 = await queue_up(c, L), await queue_up(c, L)
    await queue_up(c, MED)
    second_medium = await queue_up(c, MED)  # 3 queued = 75 %: takes low2's place
    with pytest.raises(AdmissionRefused):
        await low2
    assert not second_medium.done()
    assert not low1.done()
    with pytest.raises(AdmissionRefused) as info:
        await c.enter(L, FAR, 0.0, None)
    assert info.value.reason is Refusal.SATURATED


async def test_a_wait_that_cannot_end_in_time_is_refused_at_once():
    c, _ = full(in_flight=2, queue=8)
    for _ in range(3):
        await queue_up(c, C)
    # 4 ahead-or-equal positions x 1 s usual latency / 2 slots = 2 s of queueing + 1 s to answer
    with pytest.raises(AdmissionRefused) as info:
        await c.enter(C, deadline=2.5, needed_s=1.0, usual_s=1.0)
    assert info.value.reason is Refusal.DEADLINE
    assert info.value.detail == (
        "r saturated: about 2000 ms in the queue plus 1000 ms to answer exceed the 2500 ms left"
    )


async def test_lower_priority_waiters_do_not_delay_critical_work_in_the_estimate():
    c, _ = full(in_flight=2, queue=8)
    for _ in range(3):
        await queue_up(c, L)
    task = asyncio.get_running_loop().create_task(c.enter(C, 2.5, 1.0, 1.0))
    await asyncio.sleep(0)
    assert not task.done()  # 1 position x 1 s / 2 slots = 0.5 s: it fits, so it waits
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert c.queued == 3


async def test_no_time_left_is_refused_even_without_a_latency_estimate():
    c, _ = full()
    with pytest.raises(AdmissionRefused) as info:
        await c.enter(C, deadline=0.5, needed_s=1.0, usual_s=None)
    assert info.value.reason is Refusal.DEADLINE


async def test_a_cancelled_waiter_leaves_the_queue_and_takes_no_slot():
    c, (held,) = full()
    task = await queue_up(c, H)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert c.queued == 0
    held.release()
    assert c.in_flight == 0


async def test_snapshot_counts_admissions_and_refusals():
    c, _ = full(queue=2)
    await queue_up(c, L)
    with pytest.raises(AdmissionRefused):
        await c.enter(L, FAR, 0.0, None)
    snap = c.snapshot()
    assert snap.in_flight == 1
    assert snap.queued == {"critical": 0, "high": 0, "medium": 0, "low": 1}
    assert snap.refused["low"] == 1
    assert snap.admitted == 1
