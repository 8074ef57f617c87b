"""One contract for every record store: in memory, SQLite, and PostgreSQL (the machine's real
server on loopback, a fresh schema per test). Whatever backend a deployment picks, the ledger,
the operations records and the control plane's state, versions and audit chain behave the same —
including several writers appending to one audit chain."""

from __future__ import annotations

import asyncio
import itertools
import secrets
from collections.abc import AsyncIterator, Awaitable, Callable
from decimal import Decimal
from pathlib import Path

import asyncpg
import pytest

from hybridroute.audit.chain import ChainSigner, verify
from hybridroute.audit.trail import ANCHOR_KEY, HEAD_KEY, AuditTrail
from hybridroute.compliance.redaction import Redactor
from hybridroute.errors import StorageError
from hybridroute.storage import MemoryLedgerStore, RecordStore, SqliteLedgerStore
from hybridroute.storage.control import CHAIN_START, AuditRecord, ConfigVersionRecord
from hybridroute.storage.migrate import migrate
from hybridroute.storage.postgres import PostgresStore
from hybridroute.storage.records import (
    AlertEventRecord,
    BudgetEventRecord,
    ChargeRecord,
    GatewayEventRecord,
    TrafficHourRecord,
)
from hybridroute.testing import FakeClock

pytestmark = pytest.mark.anyio

DSN = "postgresql://postgres@127.0.0.1:5432/test"
BACKENDS = ["memory", "sqlite", "postgres"]
DAY = 1_796_342_400.0  # 2026-12-04T00:00:00Z
Factory = Callable[[], Awaitable[RecordStore]]


@pytest.fixture(params=BACKENDS)
async def open_store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Factory]:
    """Opens stores of one backend on one shared place (a file, a schema): two stores opened
    from it are two writers, as two gateway replicas are."""
    kind: str = request.param
    opened: list[RecordStore] = []
    schema = f"contract_{secrets.token_hex(4)}"
    shared_memory = MemoryLedgerStore()
    if kind == "postgres":
        conn = await asyncpg.connect(DSN)
        await migrate(conn, schema)
        await conn.close()

    async def factory() -> RecordStore:
        store: RecordStore
        if kind == "memory":
            store = shared_memory
        elif kind == "sqlite":
            store = SqliteLedgerStore(tmp_path / "records.sqlite3")
        else:
            store = PostgresStore(DSN, schema)
        await store.open()
        opened.append(store)
        return store

    yield factory
    for store in opened:
        await store.aclose()
    if kind == "postgres":
        conn = await asyncpg.connect(DSN)
        await conn.execute(f'DROP SCHEMA "{schema}" CASCADE')
        await conn.close()


def charge(at: float, cost: str, **kw: str) -> ChargeRecord:
    fields = {
        "decision_id": "dec-1",
        "tenant": "acme",
        "operation_type": "standard",
        "route": "mcp",
        "model": "m",
        "kind": "served",
    }
    fields.update(kw)
    return ChargeRecord(
        at=at,
        input_tokens=10,
        output_tokens=5,
        cost=Decimal(cost),
        currency="USD",
        estimated=False,
        **fields,
    )


async def test_spend_is_summed_exactly_per_day_and_key(open_store: Factory):
    store = await open_store()
    await store.append_charges(
        [
            charge(DAY + 10, "0.0001"),
            charge(DAY + 20, "0.0002"),
            charge(DAY + 30, "0.5", route="direct_bedrock", kind="hedge_loser"),
            charge(DAY + 86_400 + 5, "1.25"),
        ]
    )
    rows = await store.spend("2026-12-04", "2026-12-04")
    by_route = {r.route: r for r in rows}
    assert by_route["mcp"].cost == Decimal("0.0003")
    assert by_route["mcp"].requests == 2
    assert by_route["direct_bedrock"].requests == 0  # a hedge loser is charged, not served
    assert by_route["direct_bedrock"].charges == 1
    assert [r.day for r in await store.spend("2026-12-05")] == ["2026-12-05"]


async def test_budget_alert_and_gateway_events_come_back_oldest_first(open_store: Factory):
    store = await open_store()
    event = BudgetEventRecord(
        at=DAY + 5, budget="global", period="daily", window="2026-12-04", threshold="info",
        level=0.8, kind="fired", utilisation=0.81, spent=Decimal("8.1"), limit=Decimal("10"),
        currency="USD",
    )  # fmt: skip
    await store.append_budget_events([event])
    assert await store.budget_events(DAY) == [event]
    assert await store.budget_events(DAY + 6) == []
    alerts = [
        AlertEventRecord(DAY + 2, "a-1", "r", "critical", "firing", "{}", "s", 1.0, None),
        AlertEventRecord(DAY + 1, "a-0", "r", "critical", "resolved", "{}", "s", None, "ops"),
    ]
    await store.append_alert_events(alerts)
    assert [a.alert_id for a in await store.alert_events(DAY)] == ["a-0", "a-1"]
    await store.append_gateway_events(
        [GatewayEventRecord(DAY + 1, "started", "{}"), GatewayEventRecord(DAY + 3, "started", "x")]
    )
    last = await store.last_gateway_event("started")
    assert last is not None
    assert last.detail == "x"
    assert await store.last_gateway_event("nothing") is None


async def test_traffic_hours_replace_and_purge_removes_old_records(open_store: Factory):
    store = await open_store()
    hour = int(DAY // 3600)
    await store.put_traffic_hours([TrafficHourRecord(hour, "a"), TrafficHourRecord(hour + 1, "b")])
    await store.put_traffic_hours([TrafficHourRecord(hour, "a2")])
    hours = await store.traffic_hours(hour, hour + 1)
    assert [(h.hour, h.data) for h in hours] == [(hour, "a2"), (hour + 1, "b")]
    await store.append_charges([charge(DAY - 86_400, "1"), charge(DAY + 1, "2")])
    removed = await store.purge("2026-12-04")
    assert removed >= 1
    assert [r.day for r in await store.spend("2026-01-01")] == ["2026-12-04"]


async def test_control_state_and_config_versions(open_store: Factory):
    store = await open_store()
    assert await store.get_state("flags") is None
    await store.put_state("flags", '{"a": 1}')
    await store.put_state("flags", '{"a": 2}')
    assert await store.get_state("flags") == '{"a": 2}'
    assert await store.delete_state("flags") is True
    assert await store.delete_state("flags") is False
    first = ConfigVersionRecord(1, DAY, "config-file", "", '{"matrix":{}}', "{}")
    await store.append_config_version(first)
    await store.append_config_version(ConfigVersionRecord(2, DAY + 1, "ops", "x", "{}", "{}"))
    with pytest.raises(StorageError, match="version 1 already exists"):
        await store.append_config_version(first)
    assert [v.version for v in await store.config_versions()] == [1, 2]


async def test_the_audit_chain_links_verifies_and_purges_to_an_anchor(open_store: Factory):
    store = await open_store()
    clock = FakeClock(wall_start=DAY)
    trail = AuditTrail(store, ChainSigner(), clock, Redactor())
    await trail.open()
    for n in range(6):
        await trail.record("change", "ops", {"n": n, "nested": {"list": [n, n + 1]}})
        clock.advance(60)
    records = await store.audit_records()
    assert [r.seq for r in records] == [1, 2, 3, 4, 5, 6]
    assert records[0].prev == CHAIN_START
    assert all(b.prev == a.digest for a, b in itertools.pairwise(records))
    assert (await trail.verify()).ok
    last = await store.last_audit()
    assert last == records[-1]
    assert [r.seq for r in await store.audit_records(after_seq=4)] == [5, 6]
    assert [r.seq for r in await store.audit_records(since=DAY + 60, until=DAY + 180)] == [2, 3]
    assert await trail.purge(DAY + 150) == 3
    assert [r.seq for r in await store.audit_records()] == [4, 5, 6]
    report = await trail.verify()
    assert report.ok, report
    await trail.record("after_purge", "ops", {})
    assert (await trail.verify()).ok


async def test_two_writers_make_one_chain(open_store: Factory):
    """Two stores on the same file or schema — two replicas — appending at once."""
    first, second = await open_store(), await open_store()
    signer = ChainSigner(b"fleet-key")
    trails = [AuditTrail(s, signer, FakeClock(), Redactor()) for s in (first, second)]
    for trail in trails:
        await trail.open()

    async def write(trail: AuditTrail, who: str) -> None:
        for n in range(15):
            trail.submit("decision", who, {"n": n})
            if n % 3 == 2:
                await trail.flush()
        await trail.flush()

    await asyncio.gather(write(trails[0], "replica-a"), write(trails[1], "replica-b"))
    records: list[AuditRecord] = await first.audit_records()
    assert [r.seq for r in records] == list(range(1, 31))
    head = await first.get_state(HEAD_KEY)
    assert head is not None
    report = verify(records, signer)
    assert report.ok, report.problems
    assert {r.actor for r in records} == {"replica-a", "replica-b"}
    assert await first.get_state(ANCHOR_KEY) is None


async def test_postgres_refuses_an_unmigrated_schema():
    store = PostgresStore(DSN, f"never_{secrets.token_hex(4)}")
    with pytest.raises(StorageError, match="run `hybridroute db migrate` first"):
        await store.open()


async def test_postgres_tells_listening_replicas_of_a_change():
    schema = f"notify_{secrets.token_hex(4)}"
    conn = await asyncpg.connect(DSN)
    await migrate(conn, schema)
    listener, publisher = PostgresStore(DSN, schema), PostgresStore(DSN, schema)
    await listener.open()
    await publisher.open()
    heard: list[str] = []
    arrived = asyncio.Event()

    def hear(revision: str) -> None:
        heard.append(revision)
        arrived.set()

    stop = await listener.listen_changes(hear)
    try:
        await publisher.notify_change("rev-42")  # another replica publishes a change
        await asyncio.wait_for(arrived.wait(), 5)
        assert heard == ["rev-42"]
    finally:
        await stop()
        await listener.aclose()
        await publisher.aclose()
        await conn.execute(f'DROP SCHEMA "{schema}" CASCADE')
        await conn.close()
