"""Deadline behaves like asyncio.timeout, without looking the loop up on every use."""

from __future__ import annotations

import asyncio

import pytest

from hybridroute._aio import Deadline, LoopCache

pytestmark = pytest.mark.anyio


async def test_the_block_finishes_when_there_is_time():
    loop = LoopCache().get()
    finished = False
    async with Deadline(loop, 1.0):
        await asyncio.sleep(0)
        finished = True
    assert finished


async def test_expiry_becomes_timeout_error():
    loop = LoopCache().get()
    with pytest.raises(TimeoutError):
        async with Deadline(loop, 0.01):
            await asyncio.sleep(1)
    assert asyncio.current_task(loop).cancelling() == 0  # type: ignore[union-attr]


async def test_an_outside_cancellation_stays_a_cancellation():
    loop = LoopCache().get()

    async def guarded() -> None:
        async with Deadline(loop, 5.0):
            await asyncio.sleep(5)

    task = loop.create_task(guarded())
    await asyncio.sleep(0.01)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


async def test_an_inner_expiry_leaves_the_outer_deadline_running():
    loop = LoopCache().get()
    caught = False
    async with Deadline(loop, 5.0):
        try:
            async with Deadline(loop, 0.01):
                await asyncio.sleep(1)
        except TimeoutError:
            caught = True
        await asyncio.sleep(0.01)  # no cancellation is left pending on the task
    assert caught


async def test_loop_cache_returns_the_running_loop():
    cache = LoopCache()
    assert cache.get() is asyncio.get_running_loop()
    assert cache.get() is cache.get()
