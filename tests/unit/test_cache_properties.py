"""The in-memory cache store under random sequences of operations (Hypothesis).

Each example drives one `MemoryCacheStore` through a random mix of puts (random key, text
with multi-byte characters, TTL including refused ones, tags), gets, invalidations by tags or of
everything, `purge_expired()` and the clock moving on. A reference model states the rules
plainly — an ordered dict, least recently used first; an entry is live while the clock is below
its expiry; expiry is found on get or by a purge; after a put the oldest entries go until both
caps hold; a put that is too big or has no positive TTL changes nothing — and after every step
the store must agree with it:

- the keys held, in LRU order, and the removals so far by cause;
- the byte count equals the sum of the held entries' sizes, and stays within the byte cap; the
  entry count stays within the entry cap;
- the tag index maps each tag to exactly the held keys that carry it (so it never references a
  key that is gone, and never keeps an empty tag);
- a get returns exactly the entry the model holds live for that key (the same object), and never
  an entry whose TTL has run out.

Times are multiples of 1/4 s, so expiry boundaries are hit exactly.
"""

from __future__ import annotations

import asyncio
from collections import OrderedDict
from dataclasses import dataclass
from decimal import Decimal

from hypothesis import given, settings
from hypothesis import strategies as st

from hybridroute.caching import CachedResponse, MemoryCacheStore
from hybridroute.testing import FakeClock
from hybridroute.types import Usage

MAX_ENTRIES = 4
MAX_BYTES = 2_200  # about four small entries, or two large ones
MAX_ENTRY_BYTES = 1_000  # the larger texts below are refused
KEYS = ("k0", "k1", "k2", "k3", "k4", "k5")
TAGS = ("a", "b", "c")


# -- the operations ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Put:
    key: str
    chunks: tuple[str, ...]
    ttl_s: float
    tags: tuple[str, ...]


@dataclass(frozen=True)
class Get:
    key: str


@dataclass(frozen=True)
class Invalidate:
    tags: tuple[str, ...]
    everything: bool


@dataclass(frozen=True)
class Advance:
    seconds: float


@dataclass(frozen=True)
class Purge:
    pass


Op = Put | Get | Invalidate | Advance | Purge

_texts = st.text(alphabet="ab é✓🙂\n", max_size=300)
operations = st.one_of(
    st.builds(
        Put,
        st.sampled_from(KEYS),
        st.lists(_texts, max_size=3).map(tuple),
        st.sampled_from([-1.0, 0.0, 0.25, 1.0, 2.5, 5.0]),
        st.lists(st.sampled_from(TAGS), max_size=3).map(tuple),
    ),
    st.builds(Get, st.sampled_from(KEYS)),
    st.builds(
        Invalidate,
        st.lists(st.sampled_from((*TAGS, "unused")), max_size=2).map(tuple),
        st.integers(0, 5).map(lambda n: n == 0),  # "everything" now and then
    ),
    st.builds(Advance, st.sampled_from([0.25, 0.5, 1.0, 2.5])),
    st.just(Purge()),
)


# -- the reference model -------------------------------------------------------------------------


@dataclass
class _Held:
    entry: CachedResponse
    expires_at: float
    tags: frozenset[str]


class Model:
    def __init__(self) -> None:
        self.items: OrderedDict[str, _Held] = OrderedDict()  # least recently used first
        self.removed = {"lru": 0, "expired": 0, "invalidated": 0, "refused_too_big": 0}

    def size(self) -> int:
        return sum(held.entry.size_bytes for held in self.items.values())

    def get(self, key: str, now: float) -> CachedResponse | None:
        held = self.items.get(key)
        if held is None:
            return None
        if now >= held.expires_at:
            del self.items[key]
            self.removed["expired"] += 1
            return None
        self.items.move_to_end(key)
        return held.entry

    def put(self, op: Put, entry: CachedResponse, now: float) -> bool:
        if op.ttl_s <= 0:
            return False
        if entry.size_bytes > min(MAX_ENTRY_BYTES, MAX_BYTES):
            self.removed["refused_too_big"] += 1
            return False
        self.items.pop(op.key, None)
        self.items[op.key] = _Held(entry, now + op.ttl_s, frozenset(op.tags))
        while len(self.items) > MAX_ENTRIES or self.size() > MAX_BYTES:
            _, oldest = self.items.popitem(last=False)
            self.removed["expired" if now >= oldest.expires_at else "lru"] += 1
        return True

    def invalidate(self, op: Invalidate) -> int:
        doomed = [
            key
            for key, held in self.items.items()
            if op.everything or held.tags.intersection(op.tags)
        ]
        for key in doomed:
            del self.items[key]
        self.removed["invalidated"] += len(doomed)
        return len(doomed)

    def purge(self, now: float) -> int:
        doomed = [key for key, held in self.items.items() if now >= held.expires_at]
        for key in doomed:
            del self.items[key]
        self.removed["expired"] += len(doomed)
        return len(doomed)

    def tag_index(self) -> dict[str, frozenset[str]]:
        index: dict[str, set[str]] = {}
        for key, held in self.items.items():
            for tag in held.tags:
                index.setdefault(tag, set()).add(key)
        return {tag: frozenset(keys) for tag, keys in index.items()}


# -- the test ------------------------------------------------------------------------------------


def make_entry(chunks: tuple[str, ...], serial: int) -> CachedResponse:
    return CachedResponse(
        chunks=chunks,
        model="m",
        finish_reason="stop",
        usage=Usage(1, 1),
        route="mcp",
        region=None,
        cost=Decimal(serial),
        created_at=float(serial),
    )


async def drive(ops: list[Op]) -> None:
    clock = FakeClock(start=0.0)
    store = MemoryCacheStore(
        clock, max_entries=MAX_ENTRIES, max_bytes=MAX_BYTES, max_entry_bytes=MAX_ENTRY_BYTES
    )
    model = Model()
    expiry: dict[int, float] = {}  # id(entry) -> when it expires, for every entry put
    keep_alive: list[CachedResponse] = []  # so ids are never reused within an example
    for serial, op in enumerate(ops):
        now = clock.monotonic()
        if isinstance(op, Put):
            entry = make_entry(op.chunks, serial)
            keep_alive.append(entry)
            expiry[id(entry)] = now + op.ttl_s
            accepted = await store.put(op.key, entry, ttl_s=op.ttl_s, tags=op.tags)
            assert accepted == model.put(op, entry, now)
        elif isinstance(op, Get):
            found = await store.get(op.key)
            assert found is model.get(op.key, now)
            if found is not None:
                assert now < expiry[id(found)], "an expired entry was returned"
        elif isinstance(op, Invalidate):
            removed = await store.invalidate(tags=op.tags, everything=op.everything)
            assert removed == model.invalidate(op)
        elif isinstance(op, Advance):
            clock.advance(op.seconds)
        else:
            assert store.purge_expired() == model.purge(now)

        snap = store.snapshot()
        assert store.keys() == list(model.items)
        assert snap.entries == len(model.items) <= MAX_ENTRIES
        assert snap.bytes == model.size() <= MAX_BYTES
        assert store.tag_index() == model.tag_index()
        assert snap.tags == len(model.tag_index())
        assert dict(snap.evictions) == model.removed


@settings(max_examples=300, deadline=None)
@given(st.lists(operations, max_size=60))
def test_the_store_agrees_with_the_reference_model_after_every_step(ops: list[Op]) -> None:
    asyncio.run(drive(ops))
