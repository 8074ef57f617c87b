"""Route health shared by the replicas of a fleet, through Redis.

Every second each replica publishes how it sees each route (its own breaker, probes and
readiness: `HealthBoard.local_health`) into one Redis hash per route, field = its replica id,
and reads what the others published. A route another replica saw unhealthy within the last few
seconds is treated as unhealthy here too (`HealthBoard.fleet_report`): decisions put its fallback
first, so the whole fleet steps around a failing upstream within seconds of the first replica
noticing — while each replica's own breaker stays the fast path. A replica that stops
publishing stops counting after `fresh_s`.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket

import orjson
import redis.asyncio as aioredis
from redis.exceptions import RedisError

from hybridroute._clock import Clock
from hybridroute.resilience.health import HealthBoard
from hybridroute.signals import HealthStatus, RouteHealth
from hybridroute.types import RouteId

__all__ = ["FleetHealth", "default_replica_id"]

log = logging.getLogger("hybridroute.fleet")


def default_replica_id() -> str:
    return f"{socket.gethostname()}-{os.getpid()}"


class FleetHealth:
    """Publishes this replica's view of the routes and applies the fleet's."""

    def __init__(  # noqa: PLR0913 - where, who, what, and how often
        self,
        client: aioredis.Redis,
        prefix: str,
        replica: str,
        board: HealthBoard,
        routes: list[RouteId],
        clock: Clock,
        *,
        every_s: float = 1.0,
        fresh_s: float = 5.0,
    ) -> None:
        self._client = client
        self._prefix = f"{prefix}:health"
        self.replica = replica
        self._board = board
        self._routes = routes
        self._clock = clock
        self._every_s = every_s
        self._fresh_s = fresh_s
        self.failures = 0

    @classmethod
    def connect(
        cls,
        url: str,
        prefix: str,
        replica: str,
        board: HealthBoard,
        routes: list[RouteId],
        clock: Clock,
    ) -> FleetHealth:
        client = aioredis.Redis.from_url(url, socket_timeout=2.0, socket_connect_timeout=2.0)
        return cls(client, prefix, replica, board, routes, clock)

    async def exchange(self) -> None:
        """Publish this replica's view, then apply the others'."""
        now = self._clock.now()
        async with self._client.pipeline(transaction=False) as pipe:
            for route in self._routes:
                health = self._board.local_health(route)
                key = f"{self._prefix}:{route}"
                pipe.hset(key, self.replica, orjson.dumps(
                    {"status": health.status.value, "detail": health.detail, "at": now}
                ))  # fmt: skip
                pipe.expire(key, int(self._fresh_s * 6) + 1)
            for route in self._routes:
                pipe.hgetall(f"{self._prefix}:{route}")
            answers = await pipe.execute()
        seen = answers[2 * len(self._routes) :]
        for route, views in zip(self._routes, seen, strict=True):
            self._board.fleet_report(route, self._worst(views, now), self._fresh_s)

    def _worst(self, views: dict[bytes, bytes], now: float) -> RouteHealth | None:
        for replica, raw in views.items():
            name = replica.decode()
            if name == self.replica:
                continue
            view = orjson.loads(raw)
            if now - float(view["at"]) > self._fresh_s:
                continue
            if view["status"] == HealthStatus.UNHEALTHY.value:
                return RouteHealth(
                    HealthStatus.UNHEALTHY, f"unhealthy on replica {name}: {view['detail']}"
                )
        return None

    async def run(self) -> None:
        while True:
            try:
                await self.exchange()
            except (RedisError, OSError) as exc:
                self.failures += 1
                log.warning("fleet health: Redis unreachable (%s); each replica on its own", exc)
            await asyncio.sleep(self._every_s)

    async def aclose(self) -> None:
        await self._client.aclose()
