"""One alert notice per transition for a fleet: replicas claim transitions in the machine's real
Redis; the first sends, the others stay quiet; the next episode is announced again; without
Redis every replica sends (a duplicate rather than silence)."""

from __future__ import annotations

import asyncio

import pytest

from hybridroute.notify.fleet import FleetNotices
from hybridroute.notify.message import AlertNotice

pytestmark = pytest.mark.anyio

REDIS = "redis://127.0.0.1:6379/0"


class Heard:
    def __init__(self) -> None:
        self.notices: list[AlertNotice] = []

    def notify(self, notice: AlertNotice) -> None:
        self.notices.append(notice)


def notice(transition: str, replica: str) -> AlertNotice:
    return AlertNotice(
        alert_id=f"alert-{replica}-1", rule="error_rate_critical", severity="critical",
        transition=transition, summary="error rate 9 %", description="", labels={"route": "mcp"},
        value=0.09, threshold=0.05, started_at=1.0, at=2.0,
    )  # fmt: skip


async def settle(*replicas: FleetNotices) -> None:
    for replica in replicas:
        await asyncio.gather(*replica._tasks)


async def test_the_fleet_sends_each_transition_once(redis_prefix: str):
    heard = Heard()
    replicas = [FleetNotices.connect(REDIS, redis_prefix, heard) for _ in range(3)]
    for n, replica in enumerate(replicas):
        replica.notify(notice("firing", str(n)))
    await settle(*replicas)
    assert [n.transition for n in heard.notices] == ["firing"]
    for n, replica in enumerate(replicas):
        replica.notify(notice("resolved", str(n)))
    await settle(*replicas)
    assert [n.transition for n in heard.notices] == ["firing", "resolved"]
    replicas[2].notify(notice("firing", "2"))  # the next episode
    await settle(*replicas)
    assert [n.transition for n in heard.notices] == ["firing", "resolved", "firing"]
    assert sum(r.suppressed for r in replicas) == 4
    for replica in replicas:
        await replica.aclose()


async def test_without_redis_every_replica_sends():
    heard = Heard()
    replicas = [FleetNotices.connect("redis://127.0.0.1:9/0", "x", heard) for _ in range(2)]
    for n, replica in enumerate(replicas):
        replica.notify(notice("firing", str(n)))
    await settle(*replicas)
    assert len(heard.notices) == 2
    for replica in replicas:
        await replica.aclose()
