"""The response cache as the gateway uses it: policy, key, store and counters in one place.

For each request the gateway asks `prepare()` whether it may be cached (the policy's verdict,
the caller's `Cache-Control`, and aggressive mode: the operator's switch or emergency cost
controls), then `lookup()`s it before deciding a route, and `store()`s a successful answer.
Entries are scoped by tenant and residency constraint through the key, so one tenant or region
never sees another's answer. Errors are never stored: only a finished answer reaches `store()`.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from typing import Any

from hybridroute._clock import Clock
from hybridroute._tasks import TaskSupervisor
from hybridroute.caching import (
    CachedResponse,
    CachePolicy,
    CacheScope,
    CacheSettings,
    CacheStats,
    CacheStore,
    MemoryCacheStore,
    cache_key,
    tags_for,
)
from hybridroute.config.economy import CacheConfig
from hybridroute.economics.pricing import money_text
from hybridroute.types import CacheDirective, ChatRequest, GenerationRequest

__all__ = ["CacheLookup", "ResponseCache", "cache_settings", "subject_tag"]

log = logging.getLogger("hybridroute.cache")

_MIB, _KIB = 1024 * 1024, 1024
_PURGE_SLICE = 2_000


def cache_settings(config: CacheConfig, operation_types: list[str]) -> CacheSettings:
    """The cache mechanism's settings from the configuration."""
    return CacheSettings(
        enabled=config.enabled,
        max_entries=config.max_entries,
        max_bytes=int(config.max_mib * _MIB),
        max_entry_bytes=int(config.max_entry_kib * _KIB),
        default_ttl_s=config.default_ttl_s,
        ttl_s={op: config.ttl_for(op) for op in operation_types},
        max_temperature=config.max_temperature,
        aggressive_ttl_multiplier=config.aggressive_ttl_multiplier,
    )


@dataclass(frozen=True, slots=True)
class CacheLookup:
    """What the cache does for one request.

    `status` is what the response header says: `miss` (looked up; a fresh answer is stored),
    `bypass` (the caller said no-cache or no-store), `off` (not cacheable; `reason` says why).
    """

    status: str
    reason: str
    key: str | None = None
    ttl_s: float = 0.0
    tags: tuple[str, ...] = ()
    read: bool = False  # answer from the cache when an entry exists
    write: bool = False  # store a fresh answer
    invalidations: tuple[int, ...] = ()  # invalidations of its tags when looked up


_OFF = CacheLookup("off", "the response cache is disabled")


class ResponseCache:
    """Exact-match response cache for one deployment."""

    def __init__(
        self,
        settings: CacheSettings,
        clock: Clock,
        *,
        aggressive: bool = False,
        store: CacheStore | None = None,
    ) -> None:
        self.settings = settings
        self.policy = CachePolicy(settings)
        self.stats = CacheStats()
        self._clock = clock
        self.store: CacheStore = store or MemoryCacheStore(
            clock,
            max_entries=settings.max_entries,
            max_bytes=settings.max_bytes,
            max_entry_bytes=settings.max_entry_bytes,
        )
        self.always_aggressive = aggressive
        self.lookup_failures = 0
        # How often each tag (index 0: everything) was invalidated. An answer is stored only if
        # none of its tags was invalidated since its request was looked up, so an answer
        # computed before an invalidation cannot outlive it.
        self._invalidations: dict[str, int] = {}

    @property
    def max_entry_bytes(self) -> int:
        return self.settings.max_entry_bytes

    def prepare(
        self, chat: ChatRequest, generation: GenerationRequest, *, cost_controls: bool
    ) -> CacheLookup:
        """Decide what the cache does for this request (no I/O)."""
        if not self.settings.enabled:
            return _OFF
        op, tenant = generation.operation_type, chat.tenant
        if chat.cache is CacheDirective.NO_STORE:
            self.stats.record_bypass(op, tenant)
            return CacheLookup("bypass", "Cache-Control: no-store")
        aggressive = self.always_aggressive or cost_controls
        verdict = self.policy.verdict(generation, aggressive=aggressive)
        if not verdict.cacheable:
            self.stats.record_uncacheable(op, tenant)
            return CacheLookup("off", verdict.reason)
        scope = CacheScope(tenant, chat.residency)
        key = cache_key(generation, scope)
        tags = (*tags_for(generation, scope), _tag(tenant, op))
        if chat.subject is not None:  # a pseudonym by now: erasure drops the subject's entries
            tags = (*tags, subject_tag(chat.subject))
        seen = self._invalidation_counts(tags)
        if chat.cache is CacheDirective.NO_CACHE:
            self.stats.record_bypass(op, tenant)
            return CacheLookup(
                "bypass",
                "Cache-Control: no-cache",
                key,
                verdict.ttl_s,
                tags,
                write=True,
                invalidations=seen,
            )
        return CacheLookup(
            "miss",
            verdict.reason,
            key,
            verdict.ttl_s,
            tags,
            read=True,
            write=True,
            invalidations=seen,
        )

    def _invalidation_counts(self, tags: tuple[str, ...]) -> tuple[int, ...]:
        counts = self._invalidations
        return (counts.get("", 0), *(counts.get(tag, 0) for tag in tags))

    async def lookup(self, lookup: CacheLookup, chat: ChatRequest) -> CachedResponse | None:
        """The cached answer, if there is one (counted as a hit or a miss)."""
        if not lookup.read or lookup.key is None:
            return None
        try:
            entry = await self.store.get(lookup.key)
        except Exception:  # noqa: BLE001 - a cache that is away costs a miss, not the request
            self.lookup_failures += 1
            log.warning("the response cache could not be read; answering without it")
            entry = None
        if entry is None:
            self.stats.record_miss(chat.operation_type, chat.tenant)
        else:
            self.stats.record_hit(chat.operation_type, chat.tenant, entry.cost)
        return entry

    async def store_answer(
        self, lookup: CacheLookup, chat: ChatRequest, entry: CachedResponse
    ) -> bool:
        """Keep a fresh answer for the lookup's TTL; False when the store refused it."""
        if not lookup.write or lookup.key is None:
            return False
        if self._invalidation_counts(lookup.tags) != lookup.invalidations:
            return False  # invalidated while the answer was being made
        stored = await self.store.put(lookup.key, entry, ttl_s=lookup.ttl_s, tags=lookup.tags)
        if stored:
            self.stats.record_store(chat.operation_type, chat.tenant)
        return stored

    def start(self, supervisor: TaskSupervisor, interval_s: float = 60.0) -> None:
        """Drop expired entries every `interval_s` (expiry is otherwise noticed on lookup)."""
        purge = getattr(self.store, "purge_expired", None)
        if purge is None or not self.settings.enabled:
            return

        async def purger() -> None:
            while True:
                await self._clock.sleep(interval_s)
                swept = purge(_PURGE_SLICE)
                while swept == _PURGE_SLICE:  # a big sweep in slices: requests go in between
                    await asyncio.sleep(0)
                    swept = purge(_PURGE_SLICE)

        supervisor.spawn(purger(), name="cache-purger")

    async def invalidate_subject(self, pseudonym: str) -> int:
        """Drop the entries made for a data subject's requests (erasure)."""
        tag = subject_tag(pseudonym)
        self._invalidations[tag] = self._invalidations.get(tag, 0) + 1
        return await self.store.invalidate(tags=[tag])

    def age_s(self, entry: CachedResponse) -> float:
        return max(0.0, self._clock.now() - entry.created_at)

    async def invalidate(
        self, *, tenant: str | None = None, operation_type: str | None = None
    ) -> int:
        """Drop entries of a tenant, an operation type, or both together; everything when
        neither is given. Returns how many were dropped."""
        if tenant is None and operation_type is None:
            self._invalidations[""] = self._invalidations.get("", 0) + 1
            return await self.store.invalidate(everything=True)
        tag = _tag(tenant, operation_type)
        self._invalidations[tag] = self._invalidations.get(tag, 0) + 1
        return await self.store.invalidate(tags=[tag])

    def snapshot(self) -> dict[str, Any]:
        return {
            "enabled": self.settings.enabled,
            "aggressive_always": self.always_aggressive,
            "lookup_failures": self.lookup_failures,
            "max_temperature": self.settings.max_temperature,
            "aggressive_ttl_multiplier": self.settings.aggressive_ttl_multiplier,
            "ttl_s": dict(self.settings.ttl_s),
            "store": self.store.snapshot().as_dict(),
            "stats": self.stats.as_dict(),
            "saved": money_text(self.stats.saved),
        }


def _tag(tenant: str | None, operation_type: str | None) -> str:
    """The invalidation tag of a tenant, an operation type, or the two together."""
    if operation_type is None:
        return f"tenant:{tenant}"
    if tenant is None:
        return f"operation:{operation_type}"
    return f"tenant:{tenant}+operation:{operation_type}"


def subject_tag(pseudonym: str) -> str:
    """The tag of the cache entries made for a data subject's requests."""
    return f"subject:{pseudonym}"
