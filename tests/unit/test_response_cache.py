"""The gateway's response cache: what it does for a request, and invalidation in flight."""

from __future__ import annotations

from decimal import Decimal

import pytest

from hybridroute.caching import CachedResponse, CacheSettings
from hybridroute.gateway.cache import ResponseCache
from hybridroute.testing import FakeClock
from hybridroute.types import (
    CacheDirective,
    ChatMessage,
    ChatRequest,
    GenerationRequest,
    Priority,
    Usage,
)

pytestmark = pytest.mark.anyio


def chat(tenant: str = "acme", cache: CacheDirective = CacheDirective.DEFAULT) -> ChatRequest:
    return ChatRequest(
        messages=(ChatMessage("user", "status?"),),
        operation_type="standard",
        model="default",
        tenant=tenant,
        cache=cache,
    )


def generation(decision_id: str = "dec-1") -> GenerationRequest:
    return GenerationRequest(
        operation_type="standard",
        priority=Priority.MEDIUM,
        system=(),
        messages=(ChatMessage("user", "status?"),),
        max_tokens=16,
        temperature=0.0,
        top_p=None,
        stop=(),
        decision_id=decision_id,
        requested_model="default",
    )


def answer(clock: FakeClock) -> CachedResponse:
    return CachedResponse(
        chunks=("all good",),
        model="m",
        finish_reason="stop",
        usage=Usage(3, 2),
        route="mcp",
        region=None,
        cost=Decimal("0.001"),
        created_at=clock.now(),
    )


def make() -> tuple[ResponseCache, FakeClock]:
    clock = FakeClock()
    return ResponseCache(CacheSettings(ttl_s={"standard": 60}), clock), clock


@pytest.mark.parametrize(
    ("tenant", "operation"),
    [(None, None), ("acme", None), (None, "standard"), ("acme", "standard")],
)
async def test_an_answer_made_before_an_invalidation_that_covers_it_is_not_stored(
    tenant, operation
):
    cache, clock = make()
    lookup = cache.prepare(chat(), generation(), cost_controls=False)
    assert lookup.status == "miss"
    # the answer is still being made when an operator invalidates ...
    await cache.invalidate(tenant=tenant, operation_type=operation)
    # ... so when it arrives it is not kept
    assert await cache.store_answer(lookup, chat(), answer(clock)) is False
    fresh = cache.prepare(chat(), generation("dec-2"), cost_controls=False)
    assert await cache.lookup(fresh, chat()) is None
    # a request looked up after the invalidation stores as usual
    assert await cache.store_answer(fresh, chat(), answer(clock)) is True
    assert await cache.lookup(fresh, chat()) is not None


async def test_an_invalidation_of_another_scope_does_not_stop_an_answer():
    cache, clock = make()
    lookup = cache.prepare(chat("acme"), generation(), cost_controls=False)
    await cache.invalidate(tenant="beta")
    await cache.invalidate(tenant="acme", operation_type="background")
    assert await cache.store_answer(lookup, chat("acme"), answer(clock)) is True


async def test_no_store_neither_reads_nor_writes_and_no_cache_only_writes():
    cache, clock = make()
    no_store = cache.prepare(chat(cache=CacheDirective.NO_STORE), generation(), cost_controls=False)
    assert (no_store.status, no_store.read, no_store.write) == ("bypass", False, False)
    no_cache = cache.prepare(chat(cache=CacheDirective.NO_CACHE), generation(), cost_controls=False)
    assert (no_cache.status, no_cache.read, no_cache.write) == ("bypass", False, True)
    assert await cache.store_answer(no_cache, chat(), answer(clock)) is True
