"""Budgets shared by a fleet of replicas, in Redis: reserve, settle and release as server-side
scripts, so no two replicas can together reserve past a limit.

Each budget window is one Redis hash (`spent` and `reserved`, integer units of 10^-10 of the
currency, and `init` once its spend was loaded). A reservation is a *lease*: a hash holding its
amount and the accounts it was taken from, and an entry in a sorted set scored by its expiry. A
replica that settles removes its lease and moves the money from `reserved` to `spent`; a replica
that dies never settles, and once the lease expires any replica's reaper gives its reservation
back — nothing stays held for ever.

An account Redis does not know (a new window, or a Redis that lost its data) is loaded from the
durable ledger's settled spend before anything is reserved against it (`HSETNX`, so replicas
racing to load it agree). Fired thresholds are de-duplicated with `SET NX`: one event per
threshold per window for the whole fleet.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import redis.asyncio as aioredis

__all__ = ["NotLoaded", "RedisBudgetBook", "ReserveResult"]

_RESERVE = """
local n = tonumber(ARGV[1])
local estimate = tonumber(ARGV[2])
local critical = ARGV[3] == '1'
for i = 1, n do
  if redis.call('HEXISTS', KEYS[i], 'init') == 0 then
    return {2, i}
  end
end
if not critical then
  for i = 1, n do
    local spent = tonumber(redis.call('HGET', KEYS[i], 'spent') or '0')
    local reserved = tonumber(redis.call('HGET', KEYS[i], 'reserved') or '0')
    if spent + reserved + estimate > tonumber(ARGV[5 + i]) then
      return {0, i, tostring(spent), tostring(reserved)}
    end
  end
end
local accounts = {}
for i = 1, n do
  redis.call('HINCRBY', KEYS[i], 'reserved', estimate)
  accounts[i] = KEYS[i]
end
redis.call('HSET', KEYS[n + 1], 'amount', estimate, 'accounts', table.concat(accounts, ' '))
redis.call('EXPIRE', KEYS[n + 1], tonumber(ARGV[5]))
redis.call('ZADD', KEYS[n + 2], tonumber(ARGV[4]), KEYS[n + 1])
return {1}
"""

# Give a lease back (KEYS[1] the lease, KEYS[2] the lease set); then add ARGV[1] to `spent` of
# the accounts KEYS[3..]; returns their new spent.
_SETTLE = """
local amount = redis.call('HGET', KEYS[1], 'amount')
if amount then
  local accounts = redis.call('HGET', KEYS[1], 'accounts') or ''
  for key in string.gmatch(accounts, '%S+') do
    if redis.call('HINCRBY', key, 'reserved', -tonumber(amount)) < 0 then
      redis.call('HSET', key, 'reserved', 0)
    end
  end
  redis.call('DEL', KEYS[1])
end
redis.call('ZREM', KEYS[2], KEYS[1])
local out = {}
for i = 3, #KEYS do
  out[#out + 1] = redis.call('HINCRBY', KEYS[i], 'spent', tonumber(ARGV[1]))
end
return out
"""

# Give back every lease of the set KEYS[1] whose expiry is at or before ARGV[1].
_REAP = """
local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'LIMIT', 0, 500)
for _, lease in ipairs(due) do
  local amount = redis.call('HGET', lease, 'amount')
  if amount then
    local accounts = redis.call('HGET', lease, 'accounts') or ''
    for key in string.gmatch(accounts, '%S+') do
      if redis.call('HINCRBY', key, 'reserved', -tonumber(amount)) < 0 then
        redis.call('HSET', key, 'reserved', 0)
      end
    end
    redis.call('DEL', lease)
  end
  redis.call('ZREM', KEYS[1], lease)
end
return #due
"""

_LOAD = """
if redis.call('HSETNX', KEYS[1], 'init', 1) == 1 then
  redis.call('HSET', KEYS[1], 'spent', ARGV[1])
  redis.call('HSETNX', KEYS[1], 'reserved', 0)
  redis.call('EXPIRE', KEYS[1], tonumber(ARGV[2]))
end
return redis.call('HGET', KEYS[1], 'spent')
"""


class NotLoaded(Exception):
    """An account Redis has no spend for yet: load it from the durable ledger first."""

    def __init__(self, index: int) -> None:
        super().__init__(index)
        self.index = index


@dataclass(frozen=True, slots=True)
class ReserveResult:
    """A reservation: held, or refused by the account at `refused_by` (its spent and reserved
    units at that moment)."""

    held: bool
    refused_by: int | None = None
    spent: int = 0
    reserved: int = 0


class RedisBudgetBook:
    """The Redis side of shared budgets (the ledger keeps the policy and the mirrors)."""

    def __init__(self, client: aioredis.Redis, prefix: str, lease_s: float) -> None:
        self._client = client
        self._prefix = prefix
        self.lease_s = lease_s
        self._reserve = client.register_script(_RESERVE)
        self._settle = client.register_script(_SETTLE)
        self._reap = client.register_script(_REAP)
        self._load = client.register_script(_LOAD)

    @classmethod
    def connect(cls, url: str, prefix: str, lease_s: float) -> RedisBudgetBook:
        client = aioredis.Redis.from_url(
            url, socket_timeout=2.0, socket_connect_timeout=2.0, decode_responses=True
        )
        return cls(client, prefix, lease_s)

    async def aclose(self) -> None:
        await self._client.aclose()

    def account_key(self, budget: str, period: str, window: str) -> str:
        return f"{self._prefix}:budget:{budget}:{period}:{window}"

    def lease_key(self, lease_id: str) -> str:
        return f"{self._prefix}:lease:{lease_id}"

    @property
    def _leases(self) -> str:
        return f"{self._prefix}:leases"

    async def load(self, key: str, spent_units: int, keep_s: int) -> int:
        """Give an account its settled spend unless a replica already did; its spend now."""
        return int(await self._load(keys=[key], args=[spent_units, keep_s]))

    async def reserve(
        self,
        keys: Sequence[str],
        limits: Sequence[int],
        estimate: int,
        *,
        critical: bool,
        lease_id: str,
        expires_at: float,
    ) -> ReserveResult:
        lease = self.lease_key(lease_id)
        answer = await self._reserve(
            keys=[*keys, lease, self._leases],
            args=[len(keys), estimate, int(critical), expires_at,
                  int(self.lease_s) + 86_400, *limits],
        )  # fmt: skip
        status = int(answer[0])
        if status == 2:
            raise NotLoaded(int(answer[1]) - 1)
        if status == 0:
            return ReserveResult(False, int(answer[1]) - 1, int(answer[2]), int(answer[3]))
        return ReserveResult(True)

    async def settle(self, lease_id: str | None, keys: Sequence[str], cost: int) -> list[int]:
        """Give a lease back (if any) and add `cost` to the accounts `keys`; their new spent."""
        lease = self.lease_key(lease_id) if lease_id else f"{self._prefix}:lease:-"
        answer = await self._settle(keys=[lease, self._leases, *keys], args=[cost])
        return [int(v) for v in answer]

    async def reap(self, now: float) -> int:
        """Give back every lease that expired (its replica never settled it)."""
        return int(await self._reap(keys=[self._leases], args=[now]))

    async def read(self, keys: Sequence[str]) -> list[tuple[int, int] | None]:
        """(spent, reserved) of each account, None for one Redis does not know."""
        async with self._client.pipeline(transaction=False) as pipe:
            for key in keys:
                pipe.hmget(key, "init", "spent", "reserved")
            rows = await pipe.execute()
        return [None if row[0] is None else (int(row[1] or 0), int(row[2] or 0)) for row in rows]

    async def fire_once(self, key: str, threshold: str, keep_s: int) -> bool:
        """Whether this replica is the one to announce `threshold` for the account."""
        return bool(await self._client.set(f"{key}:fired:{threshold}", 1, nx=True, ex=keep_s))

    async def rearm(self, key: str, threshold: str) -> bool:
        """Whether this replica is the one to announce that `threshold` re-armed."""
        return bool(await self._client.delete(f"{key}:fired:{threshold}"))
