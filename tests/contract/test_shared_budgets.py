"""Budgets shared through the machine's real Redis: several ledgers (replicas) reserving against
one limit at once never reserve past it, a dead replica's reservation is given back when its
lease expires, a Redis that lost its data reloads spend from the durable ledger, thresholds are
announced once for the fleet, and a Redis outage fails non-critical work closed."""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import AsyncIterator, Callable
from decimal import Decimal

import pytest
import redis.asyncio as aioredis

from hybridroute.config.economy import BudgetsConfig
from hybridroute.economics.ledger import BudgetEvent, Reservation
from hybridroute.economics.shared_budgets import RedisBudgetBook
from hybridroute.economics.shared_ledger import SharedCostLedger
from hybridroute.errors import BudgetRefused, StorageError
from hybridroute.storage import MemoryLedgerStore
from hybridroute.storage.records import ChargeRecord
from hybridroute.testing import FakeClock
from hybridroute.types import Priority

pytestmark = pytest.mark.anyio

REDIS = "redis://127.0.0.1:6379/0"
Make = Callable[..., SharedCostLedger]


def charge(cost: str, at: float) -> ChargeRecord:
    return ChargeRecord(
        at=at, decision_id="d", tenant="default", operation_type="standard", route="mcp",
        model="m", kind="served", input_tokens=1, output_tokens=1, estimated=False,
        cost=Decimal(cost), currency="USD",
    )  # fmt: skip


@pytest.fixture
async def make() -> AsyncIterator[Make]:
    prefix = f"test-{secrets.token_hex(4)}"
    made: list[SharedCostLedger] = []
    clock = FakeClock()

    def build(
        limit: str = "1.00",
        *,
        store: MemoryLedgerStore | None = None,
        url: str = REDIS,
        lease_s: int = 60,
    ) -> SharedCostLedger:
        config = BudgetsConfig.model_validate(
            {"global": {"daily": limit}, "redis_url": url, "lease_s": lease_s}
        )
        ledger = SharedCostLedger(config, "USD", clock, store or MemoryLedgerStore())
        ledger.use_book(RedisBudgetBook.connect(url, prefix, lease_s))
        made.append(ledger)
        return ledger

    build.clock = clock  # type: ignore[attr-defined]
    yield build
    client = aioredis.Redis.from_url(REDIS)
    keys = [k async for k in client.scan_iter(f"{prefix}:*")]
    if keys:
        await client.delete(*keys)
    await client.aclose()
    for ledger in made:
        await ledger.book.aclose()


async def test_replicas_together_never_reserve_past_the_limit(make: Make):
    replicas = [make("1.00") for _ in range(3)]
    estimate = Decimal("0.07")

    async def attempt(ledger: SharedCostLedger) -> Reservation | None:
        try:
            return await ledger.reserve("default", Priority.MEDIUM, estimate)
        except BudgetRefused:
            return None

    held = await asyncio.gather(*(attempt(replicas[n % 3]) for n in range(60)))
    granted = [r for r in held if r is not None]
    assert len(granted) == 14  # 14 × 0.07 = 0.98 ≤ 1.00 < 15 × 0.07
    # Settling at the real (smaller) cost frees the rest for more work.
    for n, reservation in enumerate(granted):
        await replicas[n % 3].settle(reservation, [charge("0.05", 1_800_000_000.0)])
    await replicas[0].refresh()
    status = replicas[0].snapshot().budgets[0]
    assert status.spent == Decimal("0.70")
    assert status.reserved == 0


async def test_a_dead_replicas_reservation_is_given_back_when_its_lease_expires(make: Make):
    survivor, dead = make("1.00", lease_s=30), make("1.00", lease_s=30)
    await dead.reserve("default", Priority.MEDIUM, Decimal("0.90"))  # and never settles
    with pytest.raises(BudgetRefused, match="requests in flight hold the rest"):
        await survivor.reserve("default", Priority.MEDIUM, Decimal("0.20"))
    clock: FakeClock = make.clock  # type: ignore[attr-defined]
    clock.advance(31)
    assert await survivor.book.reap(clock.now()) == 1
    held = await survivor.reserve("default", Priority.MEDIUM, Decimal("0.20"))
    assert held.lease is not None


async def test_spend_is_reloaded_from_the_ledger_when_redis_lost_it(make: Make):
    store = MemoryLedgerStore()
    clock: FakeClock = make.clock  # type: ignore[attr-defined]
    await store.append_charges([charge("0.95", clock.now())])
    ledger = make("1.00", store=store)
    with pytest.raises(BudgetRefused):
        await ledger.reserve("default", Priority.MEDIUM, Decimal("0.10"))
    assert ledger.snapshot().budgets[0].spent == Decimal("0.95")
    # Critical work is still served at the limit.
    assert (await ledger.reserve("default", Priority.CRITICAL, Decimal("0.10"))).lease


async def test_a_threshold_is_announced_once_for_the_fleet(make: Make):
    replicas = [make("1.00") for _ in range(3)]
    heard: list[BudgetEvent] = []
    for ledger in replicas:
        ledger.add_listener(heard.append)
    clock: FakeClock = make.clock  # type: ignore[attr-defined]
    reservation = await replicas[0].reserve("default", Priority.MEDIUM, Decimal("0.85"))
    await replicas[0].settle(reservation, [charge("0.85", clock.now())])
    for ledger in replicas:
        await ledger.refresh()
    fired = [(e.threshold, e.kind) for e in heard]
    assert fired == [("info", "fired")]


async def test_without_redis_non_critical_work_is_refused_and_critical_served(make: Make):
    ledger = make("1.00", url="redis://127.0.0.1:9/0")
    with pytest.raises(StorageError, match="Redis, which cannot be reached"):
        await ledger.reserve("default", Priority.MEDIUM, Decimal("0.10"))
    reservation = await ledger.reserve("default", Priority.CRITICAL, Decimal("0.10"))
    assert reservation.lease is None
    await ledger.settle(reservation, [charge("0.10", 1_800_000_000.0)])
    assert ledger._backlog  # kept, replayed when Redis is back
