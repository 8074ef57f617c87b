"""The in-memory cache store (TTL, LRU, caps, tags), the cached entry and its stream recorder,
and the cache's counters."""

from __future__ import annotations

import asyncio
from decimal import Decimal

import orjson
import pytest

from hybridroute.caching import (
    ENTRY_OVERHEAD_BYTES,
    OTHER,
    CachedResponse,
    CacheStats,
    CacheStore,
    MemoryCacheStore,
    StreamRecorder,
)
from hybridroute.testing import FakeClock
from hybridroute.types import Usage

pytestmark = pytest.mark.anyio

TTL = 300.0
USAGE = Usage(input_tokens=10, output_tokens=5)


def entry(text: str = "hello", *, model: str = "m", cost: str = "0.01") -> CachedResponse:
    return CachedResponse(
        chunks=(text,),
        model=model,
        finish_reason="stop",
        usage=USAGE,
        route="direct_bedrock",
        region="eu-west-1",
        cost=Decimal(cost),
        created_at=1_800_000_000.0,
    )


def sized(total: int) -> CachedResponse:
    """An entry whose `size_bytes` is exactly `total` (model "m", finish reason "stop")."""
    text_bytes = total - ENTRY_OVERHEAD_BYTES - len("m") - len("stop")
    assert text_bytes >= 0
    made = entry("x" * text_bytes)
    assert made.size_bytes == total
    return made


def make_store(
    *, entries: int = 100, total: int = 1_000_000, per_entry: int = 100_000
) -> tuple[MemoryCacheStore, FakeClock]:
    clock = FakeClock(start=1000.0)
    store = MemoryCacheStore(clock, max_entries=entries, max_bytes=total, max_entry_bytes=per_entry)
    return store, clock


def evictions(store: MemoryCacheStore) -> dict[str, int]:
    return {cause: n for cause, n in store.snapshot().evictions.items() if n}


# -- the entry -------------------------------------------------------------------------------


async def test_entry_text_joins_chunks_and_size_counts_utf8_bytes_plus_the_overhead():
    streamed = CachedResponse(
        chunks=("Hé", "llo", " ✓"),
        model="claude",
        finish_reason="stop",
        usage=USAGE,
        route="mcp",
        region=None,
        cost=Decimal("0.002"),
        created_at=0.0,
    )
    assert streamed.text == "Héllo ✓"
    # "Hé" 3 bytes, "llo" 3, " ✓" 4; "claude" 6; "stop" 4
    assert streamed.size_bytes == 3 + 3 + 4 + 6 + 4 + ENTRY_OVERHEAD_BYTES


# -- hits, misses and expiry -------------------------------------------------------------------


async def test_the_store_satisfies_the_protocol():
    store, _ = make_store()
    as_protocol: CacheStore = store
    assert await as_protocol.get("k") is None


async def test_a_put_entry_is_a_hit_and_an_unknown_key_a_miss():
    store, _ = make_store()
    stored = entry()
    assert await store.put("k", stored, ttl_s=TTL) is True
    assert await store.get("k") is stored
    assert await store.get("other") is None


async def test_an_entry_is_live_until_exactly_its_ttl_and_then_a_removed_miss():
    store, clock = make_store()
    await store.put("k", entry(), ttl_s=10.0)
    clock.advance(9.75)
    assert await store.get("k") is not None
    clock.advance(0.25)  # exactly 10 s after the put
    assert await store.get("k") is None
    assert len(store) == 0
    assert store.snapshot().bytes == 0
    assert evictions(store) == {"expired": 1}


async def test_puts_with_no_positive_ttl_are_refused_and_change_nothing():
    store, _ = make_store()
    await store.put("k", entry("old"), ttl_s=TTL)
    for ttl in (0.0, -1.0, float("nan")):
        assert await store.put("k", entry("new"), ttl_s=ttl) is False
    found = await store.get("k")
    assert found is not None
    assert found.text == "old"


async def test_purge_expired_removes_only_the_expired_entries():
    store, clock = make_store()
    await store.put("short", entry(), ttl_s=5.0, tags=("t",))
    await store.put("long", entry(), ttl_s=50.0, tags=("t",))
    assert store.purge_expired() == 0
    clock.advance(5.0)
    assert store.purge_expired() == 1
    assert store.keys() == ["long"]
    assert store.tag_index() == {"t": frozenset({"long"})}
    clock.advance(45.0)
    assert store.purge_expired() == 1
    assert store.tag_index() == {}
    assert store.snapshot().bytes == 0
    assert evictions(store) == {"expired": 2}


# -- LRU and the caps --------------------------------------------------------------------------


async def test_the_entry_cap_evicts_the_least_recently_used_and_a_get_refreshes_recency():
    store, _ = make_store(entries=3)
    for k in ("a", "b", "c"):
        await store.put(k, entry(k), ttl_s=TTL)
    assert await store.get("a") is not None  # a is now the most recently used
    await store.put("d", entry("d"), ttl_s=TTL)
    assert store.keys() == ["c", "a", "d"]
    assert await store.get("b") is None
    assert evictions(store) == {"lru": 1}


async def test_the_byte_cap_evicts_as_many_entries_as_it_takes():
    store, _ = make_store(total=3000, per_entry=2000)
    await store.put("a", sized(1000), ttl_s=TTL)
    await store.put("b", sized(1000), ttl_s=TTL)
    await store.put("c", sized(1000), ttl_s=TTL)
    assert store.snapshot().bytes == 3000
    await store.put("big", sized(1900), ttl_s=TTL)  # needs 1900 of the 3000: two must go
    assert store.keys() == ["c", "big"]
    assert store.snapshot().bytes == 2900
    assert evictions(store) == {"lru": 2}


async def test_an_expired_entry_evicted_for_room_is_counted_as_expired():
    store, clock = make_store(entries=1)
    await store.put("a", entry(), ttl_s=1.0)
    clock.advance(1.0)
    await store.put("b", entry(), ttl_s=1.0)
    assert evictions(store) == {"expired": 1}


async def test_an_entry_larger_than_the_per_entry_limit_is_refused():
    store, _ = make_store(per_entry=1000)
    assert await store.put("fits", sized(1000), ttl_s=TTL) is True
    assert await store.put("big", sized(1001), ttl_s=TTL) is False
    assert store.keys() == ["fits"]
    assert store.snapshot().bytes == 1000
    assert evictions(store) == {"refused_too_big": 1}


async def test_an_entry_larger_than_the_whole_byte_cap_is_refused_without_evicting_anything():
    store, _ = make_store(total=1500, per_entry=10_000)
    await store.put("a", sized(1000), ttl_s=TTL)
    assert await store.put("big", sized(1501), ttl_s=TTL) is False
    assert store.keys() == ["a"]


async def test_replacing_a_key_keeps_the_byte_accounting_exact_and_refreshes_recency():
    store, _ = make_store()
    await store.put("a", sized(2000), ttl_s=TTL, tags=("t1", "t2"))
    await store.put("b", sized(600), ttl_s=TTL)
    await store.put("a", sized(800), ttl_s=TTL, tags=("t2", "t3"))
    snap = store.snapshot()
    assert (snap.entries, snap.bytes) == (2, 1400)
    assert store.keys() == ["b", "a"]
    assert store.tag_index() == {"t2": frozenset({"a"}), "t3": frozenset({"a"})}
    assert evictions(store) == {}


async def test_a_replacement_restarts_the_ttl():
    store, clock = make_store()
    await store.put("k", entry("old"), ttl_s=10.0)
    clock.advance(8.0)
    await store.put("k", entry("new"), ttl_s=10.0)
    clock.advance(8.0)
    found = await store.get("k")
    assert found is not None
    assert found.text == "new"


# -- invalidation and the tag index ------------------------------------------------------------


async def test_invalidate_removes_every_entry_carrying_any_of_the_tags():
    store, _ = make_store()
    await store.put("a", entry(), ttl_s=TTL, tags=("tenant:acme", "operation:standard"))
    await store.put("b", entry(), ttl_s=TTL, tags=("tenant:acme", "operation:background"))
    await store.put("c", entry(), ttl_s=TTL, tags=("tenant:globex", "operation:standard"))
    await store.put("d", entry(), ttl_s=TTL, tags=("tenant:globex", "operation:implementation"))
    await store.put("e", entry(), ttl_s=TTL)
    removed = await store.invalidate(tags=["operation:background", "tenant:globex", "nope"])
    assert removed == 3
    assert sorted(store.keys()) == ["a", "e"]
    assert store.tag_index() == {
        "tenant:acme": frozenset({"a"}),
        "operation:standard": frozenset({"a"}),
    }
    assert store.snapshot().bytes == 2 * entry().size_bytes
    assert await store.invalidate(tags=()) == 0
    assert evictions(store) == {"invalidated": 3}


async def test_invalidate_everything_empties_the_store_and_the_index():
    store, _ = make_store()
    await store.put("a", entry(), ttl_s=TTL, tags=("x",))
    await store.put("b", entry(), ttl_s=TTL, tags=("y",))
    assert await store.invalidate(everything=True) == 2
    snap = store.snapshot()
    assert (snap.entries, snap.bytes, snap.tags) == (0, 0, 0)
    assert store.tag_index() == {}


async def test_a_single_string_is_not_taken_for_a_list_of_one_letter_tags():
    store, _ = make_store()
    with pytest.raises(TypeError):
        await store.invalidate(tags="tenant:acme")


async def test_the_tag_index_is_empty_once_every_entry_has_gone_whichever_way_it_went():
    store, clock = make_store(entries=2)
    await store.put("first", entry(), ttl_s=TTL, tags=("t", "first"))
    await store.put("replaced", entry(), ttl_s=TTL, tags=("t", "old"))
    await store.put("replaced", entry(), ttl_s=TTL, tags=("t", "new"))  # replacement
    await store.put("kept", entry(), ttl_s=TTL, tags=("t", "kept"))  # evicts "first"
    await store.put("short", entry(), ttl_s=1.0, tags=("t", "short"))  # evicts "replaced"
    clock.advance(1.0)
    assert await store.get("short") is None  # expired on read
    await store.put("purged", entry(), ttl_s=1.0, tags=("t", "purged"))
    clock.advance(1.0)
    assert store.purge_expired() == 1
    assert store.tag_index() == {"t": frozenset({"kept"}), "kept": frozenset({"kept"})}
    assert await store.invalidate(tags=["kept"]) == 1
    assert store.tag_index() == {}
    snap = store.snapshot()
    assert (snap.entries, snap.bytes, snap.tags) == (0, 0, 0)
    assert evictions(store) == {"lru": 2, "expired": 2, "invalidated": 1}


async def test_duplicate_tags_are_indexed_once():
    store, _ = make_store()
    await store.put("a", entry(), ttl_s=TTL, tags=("t", "t"))
    assert await store.invalidate(tags=["t", "t"]) == 1
    assert store.tag_index() == {}


async def test_the_snapshot_reports_capacity_and_is_json_ready():
    store, _ = make_store(entries=7, total=9000, per_entry=4000)
    await store.put("a", sized(1000), ttl_s=TTL, tags=("t",))
    snap = store.snapshot()
    assert (snap.entries, snap.bytes, snap.tags) == (1, 1000, 1)
    assert (snap.max_entries, snap.max_bytes, snap.max_entry_bytes) == (7, 9000, 4000)
    assert set(snap.evictions) == {"lru", "expired", "invalidated", "refused_too_big"}
    assert orjson.loads(orjson.dumps(snap.as_dict()))["bytes"] == 1000


@pytest.mark.parametrize("field", ["max_entries", "max_bytes", "max_entry_bytes"])
async def test_caps_below_one_are_refused(field: str):
    caps = {"max_entries": 1, "max_bytes": 1, "max_entry_bytes": 1, field: 0}
    with pytest.raises(ValueError, match=field):
        MemoryCacheStore(FakeClock(), **caps)


# -- the stream recorder -----------------------------------------------------------------------


async def test_the_recorder_keeps_chunks_in_order_and_builds_the_entry():
    recorder = StreamRecorder(max_bytes=100)
    for piece in ("The ", "", "answer", " is ", "42."):
        recorder.add(piece)
    assert recorder.recorded_bytes == len("The answer is 42.")
    built = recorder.finish(
        "claude", "stop", USAGE, "direct_bedrock", "eu-west-1", Decimal("0.003"), 123.0
    )
    assert built.chunks == ("The ", "answer", " is ", "42.")  # the empty delta is dropped
    assert built.text == "The answer is 42."
    assert (built.model, built.finish_reason, built.route, built.region) == (
        "claude",
        "stop",
        "direct_bedrock",
        "eu-west-1",
    )
    assert (built.usage, built.cost, built.created_at) == (USAGE, Decimal("0.003"), 123.0)
    assert not recorder.overflowed


async def test_the_recorder_takes_exactly_its_limit_counting_utf8_bytes():
    recorder = StreamRecorder(max_bytes=6)
    recorder.add("é")  # 2 bytes
    recorder.add("abcd")  # 6 in all: still fits
    assert not recorder.overflowed
    recorder.add("z")
    assert recorder.overflowed


async def test_an_overflowed_recorder_lets_go_of_its_chunks_and_refuses_to_finish():
    recorder = StreamRecorder(max_bytes=10)
    recorder.add("12345")
    recorder.add("123456")
    assert recorder.overflowed
    assert recorder.recorded_bytes == 0
    recorder.add("1")  # ignored after the overflow
    assert recorder.overflowed
    assert recorder.recorded_bytes == 0
    with pytest.raises(RuntimeError, match="10-byte"):
        recorder.finish("m", "stop", USAGE, "mcp", None, Decimal(0), 0.0)


# -- the counters ------------------------------------------------------------------------------


async def test_hit_rate_counts_only_lookups_and_saved_cost_adds_up_hits():
    stats = CacheStats()
    assert CacheStats().hit_rate is None
    stats.record_bypass("standard", "acme")
    stats.record_uncacheable("standard", "acme")
    assert stats.total.hit_rate is None  # neither was a lookup
    stats.record_hit("standard", "acme", Decimal("0.010"))
    stats.record_hit("background", "globex", Decimal("0.002"))
    stats.record_hit("standard", "globex", Decimal("0.001"))
    stats.record_miss("standard", "acme")
    stats.record_store("standard", "acme")
    assert stats.hit_rate == 0.75
    assert stats.saved == Decimal("0.013")
    total = stats.total
    assert (total.hits, total.misses, total.bypasses, total.uncacheable, total.stores) == (
        3,
        1,
        1,
        1,
        1,
    )
    standard = stats.by_operation()["standard"]
    assert (standard.hits, standard.misses, standard.saved) == (2, 1, Decimal("0.011"))
    assert standard.hit_rate == pytest.approx(2 / 3)
    globex = stats.by_tenant()["globex"]
    assert (globex.hits, globex.saved, globex.hit_rate) == (2, Decimal("0.003"), 1.0)
    assert stats.by_tenant()["acme"].hit_rate == 0.5


async def test_stats_as_dict_is_plain_json_with_decimal_strings():
    stats = CacheStats()
    stats.record_hit("standard", "acme", Decimal("0.1"))
    stats.record_miss("standard", "acme")
    stats.record_bypass("emergency", "acme")
    plain = orjson.loads(orjson.dumps(stats.as_dict()))
    assert plain["total"] == {
        "hits": 1,
        "misses": 1,
        "bypasses": 1,
        "uncacheable": 0,
        "stores": 0,
        "saved": "0.1",
        "hit_rate": 0.5,
    }
    assert plain["by_operation"]["emergency"]["hit_rate"] is None
    assert plain["by_tenant"]["acme"]["bypasses"] == 1


async def test_the_per_tenant_and_per_operation_maps_are_bounded():
    stats = CacheStats(max_keys=3)
    for n in range(10):
        stats.record_miss(f"op{n}", f"tenant{n}")
    stats.record_hit("op1", "tenant1", Decimal(1))  # a known name keeps its own line
    stats.record_hit("op9", "tenant9", Decimal(2))  # an unknown one joins "other"
    tenants = stats.by_tenant()
    assert set(tenants) == {"tenant0", "tenant1", "tenant2", OTHER}
    assert tenants[OTHER].misses == 7
    assert tenants[OTHER].saved == Decimal(2)
    assert tenants["tenant1"].hits == 1
    assert set(stats.by_operation()) == {"op0", "op1", "op2", OTHER}
    assert stats.total.misses == 10
    assert stats.total.saved == Decimal(3)


async def test_many_distinct_tenants_never_grow_the_maps_past_the_bound():
    stats = CacheStats()
    for n in range(5_000):
        stats.record_store("standard", f"t{n}")
    assert len(stats.by_tenant()) == 1_001
    assert stats.by_tenant()[OTHER].stores == 4_000


@pytest.mark.anyio
async def test_purge_expired_takes_the_soonest_expiries_first_and_stops_at_its_limit():
    store, clock = make_store()
    for index, ttl in enumerate((5.0, 1.0, 3.0, 2.0, 60.0)):
        await store.put(f"k{index}", entry(), ttl_s=ttl)
    await store.put("k1", entry(), ttl_s=60.0)  # replaced: its old expiry no longer counts
    clock.advance(10.0)
    assert store.purge_expired(2) == 2
    assert sorted(store.keys()) == ["k0", "k1", "k4"]  # k3 (2 s) and k2 (3 s) went first
    assert store.purge_expired(2) == 1
    assert sorted(store.keys()) == ["k1", "k4"]
    assert store.purge_expired() == 0
    assert evictions(store) == {"expired": 3}


@pytest.mark.anyio
async def test_a_large_invalidation_hands_the_event_loop_back():
    store, _ = make_store(entries=20_000, total=100_000_000)
    for index in range(12_000):
        await store.put(f"k{index}", entry(), ttl_s=60.0, tags=("t",))
    ticks = 0

    async def count_ticks() -> None:
        nonlocal ticks
        while True:
            ticks += 1
            await asyncio.sleep(0)

    ticker = asyncio.get_running_loop().create_task(count_ticks())
    await asyncio.sleep(0)
    before = ticks
    assert await store.invalidate(tags=["t"]) == 12_000
    ticker.cancel()
    assert ticks - before >= 2  # other tasks ran while 12,000 entries were dropped
    assert len(store) == 0
    assert store.tag_index() == {}
