"""One contract for the response cache's stores, in process and in Redis (the machine's real
server): get and put, TTL expiry, the entry and byte caps with least-recently-used eviction, a
too-big entry refused, tag invalidation, and everything invalidated."""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import AsyncIterator, Callable
from decimal import Decimal

import pytest
import redis.asyncio as aioredis

from hybridroute._clock import SystemClock
from hybridroute.caching.entry import CachedResponse
from hybridroute.caching.redis_store import RedisCacheStore
from hybridroute.caching.store import CacheStore, MemoryCacheStore
from hybridroute.types import Usage

pytestmark = pytest.mark.anyio

REDIS = "redis://127.0.0.1:6379/0"
Make = Callable[..., CacheStore]


def answer(text: str = "cached answer") -> CachedResponse:
    return CachedResponse(
        chunks=(text,), model="m", finish_reason="stop", usage=Usage(3, 2), route="mcp",
        region="eu-central-1", cost=Decimal("0.0002"), created_at=1_800_000_000.0,
    )  # fmt: skip


@pytest.fixture(params=["memory", "redis"])
async def make(request: pytest.FixtureRequest) -> AsyncIterator[Make]:
    prefix = f"cache-test-{secrets.token_hex(4)}"
    made: list[RedisCacheStore] = []

    def build(max_entries: int = 100, max_bytes: int = 1 << 20, max_entry_bytes: int = 1 << 16):
        if request.param == "memory":
            return MemoryCacheStore(
                SystemClock(), max_entries=max_entries, max_bytes=max_bytes,
                max_entry_bytes=max_entry_bytes,
            )  # fmt: skip
        store = RedisCacheStore.connect(
            REDIS, SystemClock(), prefix=prefix, max_entries=max_entries, max_bytes=max_bytes,
            max_entry_bytes=max_entry_bytes,
        )  # fmt: skip
        made.append(store)
        return store

    yield build
    client = aioredis.Redis.from_url(REDIS)
    keys = [k async for k in client.scan_iter(f"{prefix}:*")]
    if keys:
        await client.delete(*keys)
    await client.aclose()
    for store in made:
        await store.aclose()


async def test_put_get_replace_and_expiry(make: Make):
    store = make()
    assert await store.get("k") is None
    assert await store.put("k", answer("first"), ttl_s=60)
    assert await store.put("k", answer("second"), ttl_s=0.3)
    found = await store.get("k")
    assert found == answer("second")
    assert not await store.put("z", answer(), ttl_s=0)
    await asyncio.sleep(0.45)
    assert await store.get("k") is None


async def test_the_least_recently_used_entry_goes_first(make: Make):
    store = make(max_entries=3)
    for key in ("a", "b", "c"):
        assert await store.put(key, answer(key), ttl_s=60)
        await asyncio.sleep(0.01)
    assert await store.get("a") is not None  # "b" is now the least recently used
    await asyncio.sleep(0.01)
    assert await store.put("d", answer("d"), ttl_s=60)
    assert await store.get("b") is None
    assert [await store.get(k) is not None for k in ("a", "c", "d")] == [True, True, True]
    assert store.snapshot().evictions["lru"] == 1
    assert store.snapshot().entries == 3


async def test_the_byte_cap_and_a_too_big_entry(make: Make):
    one = answer("x" * 200).size_bytes
    store = make(max_bytes=one * 2 + 10, max_entry_bytes=one + 10)
    assert await store.put("a", answer("x" * 200), ttl_s=60)
    await asyncio.sleep(0.01)
    assert await store.put("b", answer("y" * 200), ttl_s=60)
    await asyncio.sleep(0.01)
    assert await store.put("c", answer("z" * 200), ttl_s=60)  # evicts "a"
    assert await store.get("a") is None
    assert not await store.put("big", answer("w" * 400), ttl_s=60)
    assert store.snapshot().evictions["refused_too_big"] == 1
    assert store.snapshot().bytes <= one * 2 + 10


async def test_invalidation_by_tag_and_of_everything(make: Make):
    store = make()
    await store.put("a", answer(), ttl_s=60, tags=("tenant:acme", "operation:standard"))
    await store.put("b", answer(), ttl_s=60, tags=("tenant:acme",))
    await store.put("c", answer(), ttl_s=60, tags=("tenant:other",))
    assert await store.invalidate(tags=["tenant:acme"]) == 2
    assert await store.get("a") is None
    assert await store.get("c") is not None
    assert await store.invalidate(tags=["tenant:acme"]) == 0
    with pytest.raises(TypeError):
        await store.invalidate(tags="tenant:other")
    assert await store.invalidate(everything=True) == 1
    assert await store.get("c") is None
