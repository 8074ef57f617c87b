"""The response cache mechanism: an exact-match cache of upstream answers.

Owns the cache key (`key`), the cached value and the stream recorder (`entry`), the rule for
which requests may be cached and for how long (`policy`), the bounded in-memory store
(`store`) and the cache's counters (`stats`). The gateway wires these together: it asks the
policy, looks the key up before deciding a route, stores successful answers, and records the
outcome in the stats.
"""

from __future__ import annotations

from hybridroute.caching.entry import ENTRY_OVERHEAD_BYTES, CachedResponse, StreamRecorder
from hybridroute.caching.key import DEFAULT_TENANT, KEY_VERSION, CacheScope, cache_key, tags_for
from hybridroute.caching.policy import CachePolicy, CacheSettings, CacheVerdict
from hybridroute.caching.stats import OTHER, CacheCounts, CacheStats
from hybridroute.caching.store import CacheStore, CacheStoreSnapshot, Eviction, MemoryCacheStore

__all__ = [
    "DEFAULT_TENANT",
    "ENTRY_OVERHEAD_BYTES",
    "KEY_VERSION",
    "OTHER",
    "CacheCounts",
    "CachePolicy",
    "CacheScope",
    "CacheSettings",
    "CacheStats",
    "CacheStore",
    "CacheStoreSnapshot",
    "CacheVerdict",
    "CachedResponse",
    "Eviction",
    "MemoryCacheStore",
    "StreamRecorder",
    "cache_key",
    "tags_for",
]
