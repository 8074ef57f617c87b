"""`RedisCacheStore`: the response cache shared by a fleet of replicas, in Redis.

An answer one replica produced is a hit on every other. The store keeps the same promises as
the in-memory one:

- each entry expires after its TTL (Redis's own `PX` expiry);
- bounded by entries and by bytes: a sorted set orders keys by last use, a hash holds each
  entry's size and a counter their total; a put evicts the least recently used entries (in the
  same server-side script) until both caps hold, and a larger entry than one may be is refused;
- tags (tenant, operation type, data subject) are sets of keys, so `invalidate(tags=...)`
  removes exactly the entries that carry them — scoping by tenant and residency stays in the
  key itself, as in memory.

Entries that expired leave their bookkeeping behind until they are evicted or looked up; both
clean it. `snapshot()` reports what the last operation saw (it cannot wait on Redis).
"""

from __future__ import annotations

from collections.abc import Iterable
from decimal import Decimal
from typing import Any

import orjson
import redis.asyncio as aioredis

from hybridroute._clock import Clock
from hybridroute.caching.entry import CachedResponse
from hybridroute.caching.store import CacheStoreSnapshot, Eviction
from hybridroute.types import Usage

__all__ = ["RedisCacheStore"]

_PUT = """
local old = redis.call('HGET', KEYS[3], KEYS[1])
if old then redis.call('DECRBY', KEYS[4], old) end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
redis.call('HSET', KEYS[3], KEYS[1], ARGV[3])
redis.call('INCRBY', KEYS[4], ARGV[3])
redis.call('ZADD', KEYS[2], ARGV[4], KEYS[1])
for i = 8, #ARGV do
  redis.call('SADD', ARGV[7] .. ARGV[i], KEYS[1])
end
local evicted = 0
while redis.call('ZCARD', KEYS[2]) > tonumber(ARGV[5])
    or tonumber(redis.call('GET', KEYS[4]) or '0') > tonumber(ARGV[6]) do
  local oldest = redis.call('ZRANGE', KEYS[2], 0, 0)[1]
  if oldest == nil or oldest == KEYS[1] then break end
  local size = redis.call('HGET', KEYS[3], oldest)
  if size then
    redis.call('DECRBY', KEYS[4], size)
    redis.call('HDEL', KEYS[3], oldest)
  end
  redis.call('ZREM', KEYS[2], oldest)
  redis.call('DEL', oldest)
  evicted = evicted + 1
end
return {evicted, redis.call('ZCARD', KEYS[2]), tonumber(redis.call('GET', KEYS[4]) or '0')}
"""

# Forget entries (ARGV: entry keys) in the bookkeeping (KEYS: lru, sizes, bytes) and in Redis.
_DROP = """
local dropped = 0
for i = 1, #ARGV do
  local size = redis.call('HGET', KEYS[2], ARGV[i])
  if size then
    redis.call('DECRBY', KEYS[3], size)
    redis.call('HDEL', KEYS[2], ARGV[i])
  end
  redis.call('ZREM', KEYS[1], ARGV[i])
  dropped = dropped + redis.call('DEL', ARGV[i])
end
return {dropped, redis.call('ZCARD', KEYS[1]), tonumber(redis.call('GET', KEYS[3]) or '0')}
"""


def _encode(entry: CachedResponse) -> bytes:
    return orjson.dumps(
        {
            "chunks": list(entry.chunks),
            "model": entry.model,
            "finish_reason": entry.finish_reason,
            "usage": [entry.usage.input_tokens, entry.usage.output_tokens, entry.usage.estimated],
            "route": entry.route,
            "region": entry.region,
            "cost": str(entry.cost),
            "created_at": entry.created_at,
        }
    )


def _decode(raw: bytes | str) -> CachedResponse:
    data: dict[str, Any] = orjson.loads(raw)
    tokens_in, tokens_out, estimated = data["usage"]
    return CachedResponse(
        chunks=tuple(data["chunks"]),
        model=data["model"],
        finish_reason=data["finish_reason"],
        usage=Usage(int(tokens_in), int(tokens_out), bool(estimated)),
        route=data["route"],
        region=data["region"],
        cost=Decimal(data["cost"]),
        created_at=float(data["created_at"]),
    )


class RedisCacheStore:
    """The response cache in Redis, shared by every replica."""

    def __init__(
        self,
        client: aioredis.Redis,
        clock: Clock,
        *,
        prefix: str,
        max_entries: int,
        max_bytes: int,
        max_entry_bytes: int,
    ) -> None:
        self._client = client
        self._clock = clock
        self._prefix = f"{prefix}:cache"
        self._max_entries = max_entries
        self._max_bytes = max_bytes
        self._size_limit = min(max_entry_bytes, max_bytes)
        self._max_entry_bytes = max_entry_bytes
        self._put = client.register_script(_PUT)
        self._drop = client.register_script(_DROP)
        self._entries = 0
        self._bytes = 0
        self._evictions = dict.fromkeys(Eviction, 0)

    @classmethod
    def connect(
        cls,
        url: str,
        clock: Clock,
        *,
        prefix: str,
        max_entries: int,
        max_bytes: int,
        max_entry_bytes: int,
    ) -> RedisCacheStore:
        client = aioredis.Redis.from_url(url, socket_timeout=2.0, socket_connect_timeout=2.0)
        return cls(
            client,
            clock,
            prefix=prefix,
            max_entries=max_entries,
            max_bytes=max_bytes,
            max_entry_bytes=max_entry_bytes,
        )

    @property
    def _books(self) -> list[str]:
        return [f"{self._prefix}-lru", f"{self._prefix}-sizes", f"{self._prefix}-bytes"]

    def _key(self, key: str) -> str:
        return f"{self._prefix}:{key}"

    def _seen(self, answer: list[Any]) -> None:
        self._entries, self._bytes = int(answer[1]), int(answer[2])

    async def get(self, key: str) -> CachedResponse | None:
        full = self._key(key)
        raw = await self._client.get(full)
        if raw is None:
            if await self._client.zscore(self._books[0], full) is not None:
                self._seen(await self._drop(keys=self._books, args=[full]))
                self._evictions[Eviction.EXPIRED] += 1
            return None
        await self._client.zadd(self._books[0], {full: self._clock.now() * 1000})
        return _decode(raw)

    async def put(
        self, key: str, entry: CachedResponse, *, ttl_s: float, tags: tuple[str, ...] = ()
    ) -> bool:
        if not ttl_s > 0:
            return False
        size = entry.size_bytes
        if size > self._size_limit:
            self._evictions[Eviction.REFUSED_TOO_BIG] += 1
            return False
        answer = await self._put(
            keys=[self._key(key), *self._books],
            args=[_encode(entry), max(1, int(ttl_s * 1000)), size, self._clock.now() * 1000,
                  self._max_entries, self._max_bytes, f"{self._prefix}-tag:",
                  *dict.fromkeys(tags)],
        )  # fmt: skip
        self._evictions[Eviction.LRU] += int(answer[0])
        self._seen(answer)
        return True

    async def invalidate(self, *, tags: Iterable[str] = (), everything: bool = False) -> int:
        if isinstance(tags, str):
            raise TypeError("tags must be an iterable of tags, not one string")
        if everything:
            keys = [k async for k in self._client.scan_iter(match=f"{self._prefix}:*", count=500)]
            tag_sets = [
                k async for k in self._client.scan_iter(match=f"{self._prefix}-tag:*", count=500)
            ]
            removed = await self._forget(keys)
            if tag_sets:
                await self._client.delete(*tag_sets)
            return removed
        removed = 0
        for tag in dict.fromkeys(tags):
            tag_set = f"{self._prefix}-tag:{tag}"
            members = [m.decode() if isinstance(m, bytes) else m
                       for m in await self._client.smembers(tag_set)]  # fmt: skip
            removed += await self._forget(members)
            await self._client.delete(tag_set)
        return removed

    async def _forget(self, keys: list[str]) -> int:
        removed = 0
        for start in range(0, len(keys), 500):
            answer = await self._drop(keys=self._books, args=keys[start : start + 500])
            removed += int(answer[0])
            self._seen(answer)
        self._evictions[Eviction.INVALIDATED] += removed
        return removed

    def snapshot(self) -> CacheStoreSnapshot:
        return CacheStoreSnapshot(
            entries=self._entries,
            bytes=self._bytes,
            max_entries=self._max_entries,
            max_bytes=self._max_bytes,
            max_entry_bytes=self._max_entry_bytes,
            tags=0,
            evictions={cause.value: n for cause, n in self._evictions.items()},
        )

    async def aclose(self) -> None:
        await self._client.aclose()

    def __repr__(self) -> str:
        return f"<RedisCacheStore {self._prefix}>"
