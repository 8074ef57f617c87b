"""Where cached answers live: the `CacheStore` protocol and its in-memory implementation.

`MemoryCacheStore` is bounded three ways: a number of entries, a total of approximate bytes
(`CachedResponse.size_bytes`), and a size per entry (larger entries are refused). It is an LRU:
an `OrderedDict` from key to node, least recently used first; `get()` moves a hit to the most
recently used end, and after each `put()` the least recently used entries are evicted until both
caps hold again.

Each entry expires `ttl_s` seconds after it was stored (it is live while the clock's
`monotonic()` is strictly below the expiry time). Expiry is lazy: `get()` removes an expired
entry it finds and reports a miss; `purge_expired()`, which the gateway calls now and then,
sweeps the rest, soonest expiry first (a heap of expiry times). Time comes only from the
injected clock.

Entries carry tags (for example `tenant:acme`, `operation:standard`); a tag index maps each tag
to the keys that carry it, so `invalidate(tags=...)` finds them without a scan. Every way out of
the store (eviction, expiry, replacement, invalidation) goes through one removal routine that
also updates the index and drops tags left with no key, so the index never outgrows the store.

`get` and each eviction are O(1) (plus the entry's few tags), `put` O(log n) for its place in
the expiry heap, `purge_expired` O(log n) per entry it removes (and it can be told to stop after
a number, so a sweep never holds the event loop long); `invalidate` is linear in the entries
removed and hands the event loop back every few thousand. The store is used from a single
asyncio event loop; apart from those hand-backs its operations never await, so it needs no
locks; it is not safe to share between threads. Its methods are coroutines so that a store
kept elsewhere can implement the same protocol.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
from collections import OrderedDict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Protocol

from hybridroute._clock import Clock
from hybridroute.caching.entry import CachedResponse

_YIELD_EVERY = 5_000  # invalidation hands the event loop back after this many entries

__all__ = ["CacheStore", "CacheStoreSnapshot", "Eviction", "MemoryCacheStore"]


class Eviction(StrEnum):
    """Why an entry left the store, or was never let in."""

    LRU = "lru"  # evicted to make room (least recently used)
    EXPIRED = "expired"  # its TTL ran out
    INVALIDATED = "invalidated"  # removed by `invalidate()`
    REFUSED_TOO_BIG = "refused_too_big"  # larger than one entry may be; never stored


@dataclass(frozen=True, slots=True)
class CacheStoreSnapshot:
    """The store's state and capacity at one moment, and its removals so far by cause."""

    entries: int
    bytes: int
    max_entries: int
    max_bytes: int
    max_entry_bytes: int
    tags: int  # distinct tags in the index
    evictions: Mapping[str, int]  # by `Eviction` value

    def as_dict(self) -> dict[str, object]:
        return {
            "entries": self.entries,
            "bytes": self.bytes,
            "max_entries": self.max_entries,
            "max_bytes": self.max_bytes,
            "max_entry_bytes": self.max_entry_bytes,
            "tags": self.tags,
            "evictions": dict(self.evictions),
        }


class CacheStore(Protocol):
    """A keyed store of cached answers with TTLs and invalidation tags."""

    async def get(self, key: str) -> CachedResponse | None:
        """The live entry for `key`, or None (absent or expired)."""
        ...

    async def put(
        self, key: str, entry: CachedResponse, *, ttl_s: float, tags: tuple[str, ...] = ()
    ) -> bool:
        """Store `entry` under `key` for `ttl_s` seconds, replacing any entry there. False when
        refused (the entry is too big, or `ttl_s` is not > 0); a refused put changes nothing."""
        ...

    async def invalidate(self, *, tags: Iterable[str] = (), everything: bool = False) -> int:
        """Remove every entry that carries any of `tags` (or all entries); returns how many."""
        ...

    def snapshot(self) -> CacheStoreSnapshot: ...


@dataclass(slots=True)
class _Node:
    entry: CachedResponse
    size: int
    expires_at: float
    tags: tuple[str, ...]
    serial: int  # tells this node from a later one under the same key (expiry heap)


class MemoryCacheStore:
    """An in-process LRU store with TTLs, an entry cap, a byte cap and a tag index."""

    def __init__(
        self, clock: Clock, *, max_entries: int, max_bytes: int, max_entry_bytes: int
    ) -> None:
        for name, value in (
            ("max_entries", max_entries),
            ("max_bytes", max_bytes),
            ("max_entry_bytes", max_entry_bytes),
        ):
            if value < 1:
                raise ValueError(f"{name} must be >= 1, got {value}")
        self._clock = clock
        self._max_entries = max_entries
        self._max_bytes = max_bytes
        self._max_entry_bytes = max_entry_bytes
        # An entry larger than the whole byte cap could never stay; refuse it like a big one.
        self._size_limit = min(max_entry_bytes, max_bytes)
        self._nodes: OrderedDict[str, _Node] = OrderedDict()  # least recently used first
        self._tags: dict[str, set[str]] = {}
        self._bytes = 0
        self._evictions = dict.fromkeys(Eviction, 0)
        # (expires_at, serial, key) of every node put; stale rows (the node replaced or gone)
        # are skipped when popped and dropped when the heap is rebuilt.
        self._expiry: list[tuple[float, int, str]] = []
        self._serials = itertools.count()

    # -- the protocol --------------------------------------------------------------------------

    async def get(self, key: str) -> CachedResponse | None:
        node = self._nodes.get(key)
        if node is None:
            return None
        if self._clock.monotonic() >= node.expires_at:
            self._remove(key, Eviction.EXPIRED)
            return None
        self._nodes.move_to_end(key)
        return node.entry

    async def put(
        self, key: str, entry: CachedResponse, *, ttl_s: float, tags: tuple[str, ...] = ()
    ) -> bool:
        if not ttl_s > 0:  # also refuses NaN
            return False
        size = entry.size_bytes
        if size > self._size_limit:
            self._evictions[Eviction.REFUSED_TOO_BIG] += 1
            return False
        if key in self._nodes:
            self._remove(key, None)
        now = self._clock.monotonic()
        unique_tags = tuple(dict.fromkeys(tags))
        serial = next(self._serials)
        self._nodes[key] = _Node(entry, size, now + ttl_s, unique_tags, serial)
        heapq.heappush(self._expiry, (now + ttl_s, serial, key))
        if len(self._expiry) > 2 * len(self._nodes) + 1024:
            self._rebuild_expiry()
        self._bytes += size
        for tag in unique_tags:
            self._tags.setdefault(tag, set()).add(key)
        # The new entry is the most recently used and fits the caps alone, so it is never the
        # one evicted here.
        while len(self._nodes) > self._max_entries or self._bytes > self._max_bytes:
            oldest, node = next(iter(self._nodes.items()))
            expired = now >= node.expires_at
            self._remove(oldest, Eviction.EXPIRED if expired else Eviction.LRU)
        return True

    async def invalidate(self, *, tags: Iterable[str] = (), everything: bool = False) -> int:
        if isinstance(tags, str):
            raise TypeError("tags must be an iterable of tags, not one string")
        if everything:
            removed = len(self._nodes)
            self._nodes.clear()
            self._tags.clear()
            self._expiry.clear()
            self._bytes = 0
            self._evictions[Eviction.INVALIDATED] += removed
            return removed
        wanted = set(tags)
        doomed: set[str] = set()
        for tag in wanted:
            doomed.update(self._tags.get(tag, ()))
        removed = 0
        for count, key in enumerate(doomed, 1):
            node = self._nodes.get(key)
            # Between yields an entry may have gone or been replaced by one without the tags.
            if node is not None and wanted.intersection(node.tags):
                self._remove(key, Eviction.INVALIDATED)
                removed += 1
            if count % _YIELD_EVERY == 0:
                await asyncio.sleep(0)  # a large invalidation does not stall the event loop
        return removed

    def snapshot(self) -> CacheStoreSnapshot:
        return CacheStoreSnapshot(
            entries=len(self._nodes),
            bytes=self._bytes,
            max_entries=self._max_entries,
            max_bytes=self._max_bytes,
            max_entry_bytes=self._max_entry_bytes,
            tags=len(self._tags),
            evictions={cause.value: n for cause, n in self._evictions.items()},
        )

    # -- upkeep and inspection -----------------------------------------------------------------

    def purge_expired(self, limit: int | None = None) -> int:
        """Remove expired entries, at most `limit` of them (None: all); returns how many.
        O(log n) per entry removed: expiry times are kept in a heap."""
        now = self._clock.monotonic()
        heap = self._expiry
        removed = 0
        while heap and heap[0][0] <= now and (limit is None or removed < limit):
            _, serial, key = heapq.heappop(heap)
            node = self._nodes.get(key)
            if node is not None and node.serial == serial:
                self._remove(key, Eviction.EXPIRED)
                removed += 1
        return removed

    def _rebuild_expiry(self) -> None:
        self._expiry = [(n.expires_at, n.serial, k) for k, n in self._nodes.items()]
        heapq.heapify(self._expiry)

    def keys(self) -> list[str]:
        """The stored keys, least recently used first. Expired entries not yet removed are
        included. For diagnostics and tests."""
        return list(self._nodes)

    def tag_index(self) -> dict[str, frozenset[str]]:
        """A copy of the tag index (tag -> keys that carry it). For diagnostics and tests."""
        return {tag: frozenset(keys) for tag, keys in self._tags.items()}

    def __len__(self) -> int:
        return len(self._nodes)

    # -- removal -------------------------------------------------------------------------------

    def _remove(self, key: str, cause: Eviction | None) -> None:
        """Take `key` out of the store and the tag index; `cause` None for a replacement."""
        node = self._nodes.pop(key)
        self._bytes -= node.size
        for tag in node.tags:
            keys = self._tags[tag]
            keys.discard(key)
            if not keys:
                del self._tags[tag]
        if cause is not None:
            self._evictions[cause] += 1

    def __repr__(self) -> str:
        return (
            f"<MemoryCacheStore {len(self._nodes)}/{self._max_entries} entries "
            f"{self._bytes}/{self._max_bytes} bytes>"
        )
