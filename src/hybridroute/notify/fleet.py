"""One notification per alert transition for a whole fleet, not one per replica.

Each replica evaluates alerts on its own traffic, so several may see the same condition. Before
a notice goes to the sinks, the replica claims its transition in Redis (`SET NX` on the rule,
its labels and the transition); only the replica that wins sends it. A firing claim clears the
rule's resolved claim and the other way round, so the next episode is announced again. When
Redis cannot be reached the notice is sent anyway: a duplicate is better than a silent page.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Protocol

import orjson
import redis.asyncio as aioredis
from redis.exceptions import RedisError

from hybridroute.notify.message import AlertNotice

__all__ = ["FleetNotices", "Notices"]

log = logging.getLogger("hybridroute.notify")

_CLAIM_S = 3600
_OTHER = {"firing": "resolved", "resolved": "firing"}


class Notices(Protocol):
    """Where alert notices go (the dispatcher, or this fleet filter in front of it)."""

    def notify(self, notice: AlertNotice) -> None: ...


class FleetNotices:
    """Passes a notice on only when this replica is the first of the fleet to claim it."""

    def __init__(self, client: aioredis.Redis, prefix: str, inner: Notices) -> None:
        self._client = client
        self._prefix = f"{prefix}:alert"
        self._inner = inner
        self._tasks: set[asyncio.Task[None]] = set()
        self.suppressed = 0

    @classmethod
    def connect(cls, url: str, prefix: str, inner: Notices) -> FleetNotices:
        client = aioredis.Redis.from_url(url, socket_timeout=2.0, socket_connect_timeout=2.0)
        return cls(client, prefix, inner)

    def notify(self, notice: AlertNotice) -> None:
        task = asyncio.get_running_loop().create_task(self._claim(notice))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _claim(self, notice: AlertNotice) -> None:
        labels = orjson.dumps(dict(notice.labels), option=orjson.OPT_SORT_KEYS).decode()
        key = f"{self._prefix}:{notice.rule}:{labels}"
        try:
            won = await self._client.set(f"{key}:{notice.transition}", 1, nx=True, ex=_CLAIM_S)
            other = _OTHER.get(notice.transition)
            if won and other is not None:
                await self._client.delete(f"{key}:{other}")
        except (RedisError, OSError) as exc:
            log.warning("alert claim: Redis unreachable (%s); sending the notice anyway", exc)
            won = True
        if won:
            self._inner.notify(notice)
        else:
            self.suppressed += 1

    async def aclose(self) -> None:
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
        await self._client.aclose()
