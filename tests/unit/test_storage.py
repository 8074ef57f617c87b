"""The ledger stores (SQLite and in memory), their records, and the batch writer."""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import sqlite3
from collections.abc import AsyncIterator, Callable, Sequence
from decimal import Decimal
from pathlib import Path

import pytest

from hybridroute.errors import StorageError
from hybridroute.storage import (
    BatchWriter,
    BudgetEventRecord,
    ChargeRecord,
    LedgerStore,
    MemoryLedgerStore,
    SpendRow,
    SqliteLedgerStore,
    day_of,
)
from hybridroute.storage.records import from_units, to_units
from hybridroute.testing import FakeClock

pytestmark = pytest.mark.anyio

DAY1 = dt.datetime(2027, 1, 15, 10, tzinfo=dt.UTC).timestamp()
DAY2 = dt.datetime(2027, 1, 16, 0, tzinfo=dt.UTC).timestamp()  # midnight: already day 2
LATE_DAY1 = DAY2 - 0.001


def charge(
    at: float,
    cost: str,
    *,
    tenant: str = "a",
    route: str = "direct_bedrock",
    model: str = "sonnet",
    op: str = "standard",
    kind: str = "served",
    tokens: tuple[int, int] = (100, 50),
    estimated: bool = False,
) -> ChargeRecord:
    return ChargeRecord(
        at=at,
        decision_id="dec",
        tenant=tenant,
        operation_type=op,
        route=route,
        model=model,
        kind=kind,
        input_tokens=tokens[0],
        output_tokens=tokens[1],
        estimated=estimated,
        cost=Decimal(cost),
        currency="USD",
    )


CHARGES = [
    charge(DAY1, "0.0012345678"),
    charge(DAY1 + 5, "0.0000000001", kind="hedge_loser", tokens=(10, 50), estimated=True),
    charge(LATE_DAY1, "0.5", tokens=(200, 0), estimated=True),
    charge(DAY1, "0.25", op="implementation", tokens=(1, 2)),
    charge(DAY1, "0.125", tenant="b", kind="abandoned", tokens=(7, 0), estimated=True),
    charge(DAY1, "1", route="mcp", model="mcp-model", tokens=(1000, 1000)),
    charge(DAY2, "0.003", kind="stream_cut", tokens=(30, 12), estimated=True),
    charge(DAY2 + 3600, "2", tokens=(5, 5)),
]

DAY1_ROWS = [
    SpendRow(
        "2027-01-15", "a", "direct_bedrock", "sonnet", "implementation",
        1, 1, 1, 2, Decimal("0.25"), Decimal(0),
    ),
    SpendRow(
        "2027-01-15", "a", "direct_bedrock", "sonnet", "standard",
        2, 3, 310, 100, Decimal("0.5012345679"), Decimal("0.5000000001"),
    ),
    SpendRow(
        "2027-01-15", "a", "mcp", "mcp-model", "standard",
        1, 1, 1000, 1000, Decimal(1), Decimal(0),
    ),
    SpendRow(
        "2027-01-15", "b", "direct_bedrock", "sonnet", "standard",
        0, 1, 7, 0, Decimal("0.125"), Decimal("0.125"),
    ),
]  # fmt: skip
DAY2_ROWS = [
    SpendRow(
        "2027-01-16", "a", "direct_bedrock", "sonnet", "standard",
        1, 2, 35, 17, Decimal("2.003"), Decimal("0.003"),
    ),
]  # fmt: skip


def event(at: float, threshold: str = "info", kind: str = "fired") -> BudgetEventRecord:
    return BudgetEventRecord(
        at=at,
        budget="tenant:a",
        period="daily",
        window=day_of(at),
        threshold=threshold,
        level=0.8,
        kind=kind,
        utilisation=0.8125,
        spent=Decimal("8.125"),
        limit=Decimal(10),
        currency="USD",
    )


@contextlib.asynccontextmanager
async def opened(kind: str, tmp_path: Path) -> AsyncIterator[LedgerStore]:
    store: LedgerStore = (
        MemoryLedgerStore() if kind == "memory" else SqliteLedgerStore(tmp_path / "ledger.db")
    )
    await store.open()
    try:
        yield store
    finally:
        await store.aclose()


both = pytest.mark.parametrize("kind", ["memory", "sqlite"])


# -- records -------------------------------------------------------------------------------------


def test_units_are_ten_billionths_rounded_half_to_even():
    assert to_units(Decimal("1.5")) == 15_000_000_000
    assert to_units(Decimal("0.0000000001")) == 1
    assert to_units(Decimal("0.00000000015")) == 2
    assert to_units(Decimal("0.00000000025")) == 2
    assert to_units(Decimal(0)) == 0
    assert from_units(15_000_000_000) == Decimal("1.5")
    assert str(from_units(12_345)) == "0.0000012345"
    assert from_units(to_units(Decimal("123.4567891234"))) == Decimal("123.4567891234")


def test_day_of_is_the_utc_day():
    assert day_of(LATE_DAY1) == "2027-01-15"
    assert day_of(DAY2) == "2027-01-16"
    assert charge(DAY2, "1").day == "2027-01-16"


# -- both stores ---------------------------------------------------------------------------------


@both
async def test_spend_sums_charges_per_day_tenant_route_model_and_operation(kind, tmp_path):
    async with opened(kind, tmp_path) as store:
        await store.append_charges(CHARGES[:3])
        await store.append_charges(CHARGES[3:])
        await store.append_charges([])
        assert await store.spend("2027-01-15") == DAY1_ROWS + DAY2_ROWS


@both
async def test_spend_filters_by_inclusive_day_range(kind, tmp_path):
    async with opened(kind, tmp_path) as store:
        await store.append_charges(CHARGES)
        assert await store.spend("2027-01-16") == DAY2_ROWS
        assert await store.spend("2027-01-15", "2027-01-15") == DAY1_ROWS
        assert await store.spend("2027-01-14", "2027-01-16") == DAY1_ROWS + DAY2_ROWS
        assert await store.spend("2027-01-01", "2027-01-14") == []
        assert await store.spend("2027-01-17") == []


@both
async def test_a_charge_below_the_quantum_rounds_like_the_ledger(kind, tmp_path):
    async with opened(kind, tmp_path) as store:
        await store.append_charges([charge(DAY1, "0.00000000005"), charge(DAY1, "0.00000000015")])
        (row,) = await store.spend("2027-01-15")
        assert (row.requests, row.charges, row.cost) == (2, 2, Decimal("0.0000000002"))


@both
async def test_budget_events_round_trip_from_a_time(kind, tmp_path):
    records = [event(DAY1), event(DAY1 + 60, "critical"), event(DAY2, "info", "fired")]
    async with opened(kind, tmp_path) as store:
        await store.append_budget_events(records[:2])
        await store.append_budget_events(records[2:])
        await store.append_budget_events([])
        assert await store.budget_events(0) == records
        assert await store.budget_events(DAY1 + 60) == records[1:]
        assert await store.budget_events(DAY2 + 0.001) == []
        got = await store.budget_events(DAY2)
        assert got == records[2:]
        assert (got[0].spent, got[0].limit) == (Decimal("8.125"), Decimal(10))
        assert got[0].window == "2027-01-16"


@both
async def test_budget_events_come_oldest_first(kind, tmp_path):
    """The protocol promises oldest first, whatever order they were written in (a wall clock
    stepped back between two writes)."""
    async with opened(kind, tmp_path) as store:
        await store.append_budget_events([event(DAY1 + 60, "critical")])
        await store.append_budget_events([event(DAY1, "info")])
        assert [e.threshold for e in await store.budget_events(0)] == ["info", "critical"]


# -- SQLite --------------------------------------------------------------------------------------


async def test_sqlite_keeps_everything_across_reopening(tmp_path):
    path = tmp_path / "nested" / "dir" / "ledger.db"  # missing directories are created
    first = SqliteLedgerStore(path)
    await first.open()
    await first.open()  # safe to call again
    await first.append_charges(CHARGES)
    await first.append_budget_events([event(DAY1)])
    await first.aclose()
    await first.aclose()  # and to close twice

    second = SqliteLedgerStore(path)
    await second.open()
    try:
        assert await second.spend("2027-01-01") == DAY1_ROWS + DAY2_ROWS
        assert await second.budget_events(0) == [event(DAY1)]
        await second.append_charges([charge(DAY2, "1")])
        assert (await second.spend("2027-01-16"))[0].cost == Decimal("3.003")
    finally:
        await second.aclose()
    with contextlib.closing(sqlite3.connect(path)) as conn:
        assert conn.execute("PRAGMA user_version").fetchone()[0] == 2
        assert conn.execute("SELECT COUNT(*) FROM charges").fetchone()[0] == 9


async def test_sqlite_refuses_a_newer_schema_version(tmp_path):
    path = tmp_path / "ledger.db"
    with contextlib.closing(sqlite3.connect(path)) as conn:
        conn.execute("PRAGMA user_version=7")
    store = SqliteLedgerStore(path)
    with pytest.raises(StorageError) as info:
        await store.open()
    message = str(info.value)
    assert f"the SQLite store {path} has schema version 7" in message
    assert "newer than this gateway knows (2)" in message
    with pytest.raises(StorageError, match="is not open"):
        await store.spend("2027-01-01")


async def test_sqlite_under_a_regular_file_is_a_storage_error_naming_the_path(tmp_path):
    blocker = tmp_path / "not-a-directory"
    blocker.write_text("a file, not a directory")
    path = blocker / "ledger.db"
    store = SqliteLedgerStore(path)
    with pytest.raises(StorageError) as info:
        await store.open()
    assert str(info.value).startswith(f"cannot open the SQLite store at {path}: ")
    assert "check that the directory is writable" in str(info.value)
    assert info.value.status == 503


async def test_sqlite_over_a_file_that_is_no_database_is_a_storage_error(tmp_path):
    path = tmp_path / "ledger.db"
    path.write_bytes(b"this is not SQLite" * 100)
    with pytest.raises(StorageError, match="cannot open the SQLite store at"):
        await SqliteLedgerStore(path).open()


async def test_sqlite_must_be_opened_before_use(tmp_path):
    store = SqliteLedgerStore(tmp_path / "ledger.db")
    with pytest.raises(StorageError, match=r"ledger\.db is not open"):
        await store.append_charges([charge(DAY1, "1")])
    with pytest.raises(StorageError, match="is not open"):
        await store.budget_events(0)


def test_stores_describe_where_records_live(tmp_path):
    path = tmp_path / "l.db"
    assert SqliteLedgerStore(path).describe() == f"SQLite file {path.resolve()}"
    assert MemoryLedgerStore().describe() == "in memory (nothing survives a restart)"


async def test_memory_total_is_everything_charged():
    store = MemoryLedgerStore()
    await store.append_charges(CHARGES)
    assert store.total() == Decimal("3.8792345679")


# -- BatchWriter ---------------------------------------------------------------------------------


class FlakySink:
    """A sink that fails its first `failures` writes, then keeps every batch it is given."""

    def __init__(self, failures: int = 0) -> None:
        self.failures_left = failures
        self.calls = 0
        self.batches: list[list[int]] = []

    async def __call__(self, batch: Sequence[int]) -> None:
        self.calls += 1
        if self.failures_left > 0:
            self.failures_left -= 1
            raise OSError(f"disk away (call {self.calls})")
        self.batches.append(list(batch))

    @property
    def written(self) -> list[int]:
        return [r for b in self.batches for r in b]


async def eventually(condition: Callable[[], bool], what: str) -> None:
    for _ in range(2000):
        if condition():
            return
        await asyncio.sleep(0.001)
    raise AssertionError(f"timed out waiting for {what}")


async def stop(task: asyncio.Task[None]) -> None:
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


async def test_flush_writes_everything_in_batches_of_max_batch():
    sink = FlakySink()
    writer = BatchWriter("t", sink, FakeClock(), max_batch=2)
    for record in range(5):
        writer.submit(record)
    assert writer.pending == 5
    assert sink.calls == 0  # submit never writes
    await writer.flush()
    assert sink.batches == [[0, 1], [2, 3], [4]]
    assert (writer.pending, writer.written, writer.failures) == (0, 5, 0)
    await writer.flush()  # nothing left: no empty write
    assert sink.calls == 3


async def test_submit_never_drops_past_the_backlog_warning():
    sink = FlakySink()
    writer = BatchWriter("t", sink, FakeClock(), max_batch=10_000, warn_backlog=3)
    for record in range(7):
        writer.submit(record)
    assert writer.pending == 7
    await writer.flush()
    assert sink.written == list(range(7))


async def test_run_writes_what_gathers_each_interval():
    sink = FlakySink()
    writer = BatchWriter("t", sink, FakeClock(), flush_interval_s=0.01)
    task = asyncio.get_running_loop().create_task(writer.run())
    writer.submit(1)
    writer.submit(2)
    await eventually(lambda: sink.written == [1, 2], "the first write")
    writer.submit(3)
    await eventually(lambda: sink.written == [1, 2, 3], "the second write")
    assert sink.batches == [[1, 2], [3]]
    await stop(task)


async def test_a_full_batch_wakes_the_writer_before_the_interval():
    sink = FlakySink()
    writer = BatchWriter("t", sink, FakeClock(), flush_interval_s=3600, max_batch=3)
    task = asyncio.get_running_loop().create_task(writer.run())
    await asyncio.sleep(0)
    writer.submit(1)
    writer.submit(2)
    await asyncio.sleep(0.02)
    assert sink.calls == 0  # not full: waits for the interval
    writer.submit(3)
    await eventually(lambda: sink.written == [1, 2, 3], "the full batch")
    await stop(task)


async def test_a_sink_failing_twice_is_retried_with_backoff_and_loses_nothing():
    clock = FakeClock(start=0.0)
    sink = FlakySink(failures=2)
    writer = BatchWriter("t", sink, clock, flush_interval_s=0.005)
    task = asyncio.get_running_loop().create_task(writer.run())
    for record in range(3):
        writer.submit(record)
    await eventually(lambda: sink.calls == 1, "the first attempt")
    assert (writer.failures, writer.pending) == (1, 3)
    assert writer.last_error == "OSError: disk away (call 1)"
    writer.submit(3)  # still accepted while the store is away

    # backs off 0.1 s of the writer's clock before trying again
    clock.advance(0.05)
    await asyncio.sleep(0.03)
    assert sink.calls == 1
    clock.advance(0.06)
    await eventually(lambda: sink.calls == 2, "the second attempt")
    assert writer.failures == 2
    # then twice as long: 0.2 s
    clock.advance(0.15)
    await asyncio.sleep(0.03)
    assert sink.calls == 2
    clock.advance(0.06)
    await eventually(lambda: writer.pending == 0, "the retried batch")
    assert sink.batches == [[0, 1, 2, 3]]
    assert (writer.written, writer.failures, sink.calls) == (4, 2, 3)
    await stop(task)


async def test_flush_raises_the_sink_error_and_keeps_the_records():
    sink = FlakySink(failures=2)
    writer = BatchWriter("t", sink, FakeClock())
    writer.submit(1)
    writer.submit(2)
    for _ in range(2):
        with pytest.raises(OSError, match="disk away"):
            await writer.flush()
    assert (writer.pending, writer.failures) == (2, 2)
    await writer.flush()
    assert sink.batches == [[1, 2]]
    assert (writer.pending, writer.written) == (0, 2)


async def test_cancelling_run_flushes_what_is_pending():
    sink = FlakySink()
    writer = BatchWriter("t", sink, FakeClock(), flush_interval_s=3600)
    task = asyncio.get_running_loop().create_task(writer.run())
    await asyncio.sleep(0)  # the writer is waiting for its interval
    for record in range(4):
        writer.submit(record)
    await stop(task)
    assert sink.written == [0, 1, 2, 3]
    assert writer.pending == 0


async def test_cancelling_run_while_backing_off_flushes_once_the_sink_is_back():
    clock = FakeClock()
    sink = FlakySink(failures=1)
    writer = BatchWriter("t", sink, clock, flush_interval_s=0.005)
    task = asyncio.get_running_loop().create_task(writer.run())
    writer.submit(1)
    await eventually(lambda: sink.calls == 1, "the failed attempt")
    await stop(task)  # the sink is back: the final flush writes it
    assert sink.written == [1]
    assert writer.pending == 0


async def test_cancelling_run_with_the_sink_still_away_keeps_the_records_buffered():
    sink = FlakySink(failures=10)
    writer = BatchWriter("t", sink, FakeClock(), flush_interval_s=3600)
    task = asyncio.get_running_loop().create_task(writer.run())
    await asyncio.sleep(0)
    writer.submit(1)
    await stop(task)  # the final flush fails and is logged, not raised
    assert writer.pending == 1
    assert writer.failures == 1


async def test_a_writer_cancelled_before_it_first_ran_keeps_its_records_for_the_owner():
    """A task cancelled before its first step never runs its code (a gateway stopped right
    after start): the records stay buffered, and the owner's final flush writes them."""
    sink = FlakySink()
    writer = BatchWriter("t", sink, FakeClock(), flush_interval_s=3600)
    task = asyncio.get_running_loop().create_task(writer.run())
    writer.submit(1)
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
    assert sink.written == []
    assert writer.pending == 1
    await writer.flush()
    assert sink.written == [1]
    assert writer.pending == 0
