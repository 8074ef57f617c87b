"""`AuditTrail` over the in-memory control store: numbering and linking across batches and
restarts, a failing store that loses nothing, retention purges that leave a verifiable chain
behind an anchor, and redaction of what is written.

Every chain is checked with the real verifier (`AuditTrail.verify`) and, where it matters, record
by record: seqs contiguous, each `prev` the digest of the record before.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Sequence

import orjson
import pytest

from hybridroute.audit.chain import GENESIS, Anchor, ChainSigner
from hybridroute.audit.trail import ANCHOR_KEY, HEAD_KEY, AuditTrail
from hybridroute.compliance.redaction import Redactor
from hybridroute.errors import StorageError
from hybridroute.storage.control import AuditRecord, Sealer
from hybridroute.storage.memory import MemoryLedgerStore
from hybridroute.testing import FakeClock

pytestmark = pytest.mark.anyio

DAY = 86_400.0


class FailingStore(MemoryLedgerStore):
    """A memory store whose first `failures` audit appends raise `StorageError`."""

    def __init__(self, failures: int) -> None:
        super().__init__()
        self.failures_left = failures
        self.attempts = 0

    async def append_audit(self, seal: Sealer, head_key: str, anchor_key: str) -> list[AuditRecord]:
        self.attempts += 1
        if self.failures_left > 0:
            self.failures_left -= 1
            raise StorageError("the audit table is locked (simulated)")
        return await super().append_audit(seal, head_key, anchor_key)


def trail_over(
    store: MemoryLedgerStore,
    clock: FakeClock | None = None,
    *,
    redaction: bool = True,
    key: bytes | None = None,
    flush_interval_s: float = 0.2,
) -> AuditTrail:
    return AuditTrail(
        store,
        ChainSigner(key),
        clock or FakeClock(),
        Redactor(redaction),
        flush_interval_s=flush_interval_s,
    )


def assert_linked(records: Sequence[AuditRecord], first_seq: int = 1, prev: str = GENESIS) -> None:
    """Seqs contiguous from `first_seq`, each record linked to the one before."""
    assert [r.seq for r in records] == list(range(first_seq, first_seq + len(records)))
    for record in records:
        assert record.prev == prev, record
        prev = record.digest


async def test_submitted_records_are_numbered_and_linked_across_batches() -> None:
    store = MemoryLedgerStore()
    trail = trail_over(store)
    await trail.open()
    for n in range(3):
        trail.submit("decision", "gateway", {"n": n})
    assert trail.pending == 3
    assert store.audit_list() == []  # submit does no I/O
    await trail.flush()
    assert trail.pending == 0
    assert trail.written == 3
    await trail.record("flags_changed", "ops", {"changed": ["ENABLE_DIRECT_BEDROCK_FALLBACK"]})
    trail.submit("decision", "gateway", {"n": 3})
    await trail.flush()

    records = store.audit_list()
    assert_linked(records)
    assert [r.kind for r in records] == ["decision"] * 3 + ["flags_changed", "decision"]
    assert [orjson.loads(r.data).get("n") for r in records] == [0, 1, 2, None, 3]
    assert trail.last_seq == 5
    assert orjson.loads(await store.get_state(HEAD_KEY) or "null") == {
        "seq": 5,
        "digest": records[-1].digest,
    }
    report = await trail.verify()
    assert report.ok, report.problems
    assert (report.checked, report.first_seq, report.last_seq) == (5, 1, 5)


async def test_a_trail_opened_again_continues_the_stored_chain() -> None:
    store = MemoryLedgerStore()
    first = trail_over(store)
    await first.open()
    for n in range(4):
        await first.record("operator_action", "ops", {"n": n})
    last = store.audit_list()[-1]

    again = trail_over(store)  # a restart: a new trail over the same store
    await again.open()
    assert again.last_seq == 4
    await again.record("operator_action", "ops", {"n": 4})
    records = store.audit_list()
    assert records[4].seq == 5
    assert records[4].prev == last.digest
    assert_linked(records)
    assert (await again.verify()).ok


async def test_a_failing_store_keeps_the_batch_queued_and_loses_nothing() -> None:
    store = FailingStore(failures=2)
    trail = trail_over(store)
    await trail.open()
    for n in range(3):
        trail.submit("decision", "gateway", {"n": n})

    for attempt in (1, 2):
        with pytest.raises(StorageError):
            await trail.flush()
        assert trail.pending == 3, attempt
        assert trail.failures == attempt
        assert trail.last_error is not None
        assert "locked" in trail.last_error
        assert store.audit_list() == []
        assert trail.last_seq == 0  # nothing was numbered for good

    trail.submit("decision", "gateway", {"n": 3})  # more arrives while the store is away
    await trail.flush()
    records = store.audit_list()
    assert_linked(records)
    assert [orjson.loads(r.data)["n"] for r in records] == [0, 1, 2, 3]
    assert (trail.pending, trail.written, trail.failures) == (0, 4, 2)
    assert store.attempts == 3
    assert (await trail.verify()).ok


async def test_the_writer_retries_until_the_store_comes_back() -> None:
    store = FailingStore(failures=3)
    trail = trail_over(store, flush_interval_s=0.005)
    await trail.open()
    all_written = asyncio.Event()
    trail.add_listener(lambda record: all_written.set() if record.seq == 5 else None)
    writer = asyncio.create_task(trail.run())
    try:
        for n in range(5):
            trail.submit("decision", "gateway", {"n": n})
            await asyncio.sleep(0.002)
        async with asyncio.timeout(5):
            await all_written.wait()
    finally:
        writer.cancel()
        with pytest.raises(asyncio.CancelledError):
            await writer
    records = store.audit_list()
    assert_linked(records)
    assert [orjson.loads(r.data)["n"] for r in records] == list(range(5))
    assert trail.failures == 3
    assert store.attempts >= 4
    assert (await trail.verify()).ok


async def test_the_writer_writes_what_is_left_when_cancelled() -> None:
    store = MemoryLedgerStore()
    trail = trail_over(store, flush_interval_s=3600)
    await trail.open()
    writer = asyncio.create_task(trail.run())
    await asyncio.sleep(0)
    trail.submit("alert", "gateway", {"rule": "error_rate", "state": "firing"})
    writer.cancel()
    with pytest.raises(asyncio.CancelledError):
        await writer
    assert [r.kind for r in store.audit_list()] == ["alert"]


async def test_a_purge_anchors_the_chain_and_it_still_verifies() -> None:
    clock = FakeClock()
    store = MemoryLedgerStore()
    trail = trail_over(store, clock)
    await trail.open()
    for n in range(4):  # old records, ten days ago
        await trail.record("decision", "gateway", {"n": n})
    clock.advance(10 * DAY)
    for n in range(4, 7):
        await trail.record("decision", "gateway", {"n": n})
    old_last = store.audit_list()[3]

    assert await trail.purge(clock.now() - 20 * DAY) == 0  # nothing that old
    assert await store.get_state(ANCHOR_KEY) is None
    removed = await trail.purge(clock.now() - 5 * DAY)
    assert removed == 4
    assert [r.seq for r in store.audit_list()] == [5, 6, 7]
    assert await trail.anchor() == Anchor(4, old_last.digest)
    report = await trail.verify()
    assert report.ok, report.problems
    assert (report.first_seq, report.last_seq) == (5, 7)

    # The chain goes on after the purge, and a second purge moves the anchor on.
    await trail.record("retention_purge", "gateway", {"removed": removed})
    clock.advance(10 * DAY)
    assert await trail.purge(clock.now() - 5 * DAY) == 4
    assert store.audit_list() == []
    assert (await trail.anchor()).seq == 8
    reopened = trail_over(store, clock)  # nothing held: the chain continues from the anchor
    await reopened.open()
    await reopened.record("decision", "gateway", {"n": 8})
    assert store.audit_list()[0].seq == 9
    assert store.audit_list()[0].prev == (await reopened.anchor()).digest
    assert (await reopened.verify()).ok


async def test_after_a_purge_deleting_the_first_held_record_is_still_found() -> None:
    clock = FakeClock()
    store = MemoryLedgerStore()
    trail = trail_over(store, clock)
    await trail.open()
    for n in range(3):
        await trail.record("decision", "gateway", {"n": n})
    clock.advance(2 * DAY)
    for n in range(3, 6):
        await trail.record("decision", "gateway", {"n": n})
    await trail.purge(clock.now() - DAY)
    del store.audit_list()[0]  # record 4, the first one after the anchor
    report = await trail.verify()
    assert not report.ok
    assert [(p.kind, p.seq) for p in report.problems] == [("deleted", 5)]
    assert "record 4 is missing" in report.problems[0].detail


async def test_a_cut_off_tail_is_noticed_from_the_remembered_head() -> None:
    store = MemoryLedgerStore()
    trail = trail_over(store)
    await trail.open()
    for n in range(5):
        await trail.record("decision", "gateway", {"n": n})
    del store.audit_list()[3:]
    report = await trail.verify()
    assert not report.ok
    assert [p.kind for p in report.problems] == ["truncated"]
    assert "records 4 to 5" in report.problems[0].detail


async def test_an_edited_record_is_located() -> None:
    store = MemoryLedgerStore()
    trail = trail_over(store)
    await trail.open()
    for n in range(4):
        await trail.record("flags_changed", "ops", {"old": {"ENABLE_X": True}, "n": n})
    records = store.audit_list()
    data = orjson.loads(records[1].data)
    data["old"]["ENABLE_X"] = False
    records[1] = dataclasses.replace(records[1], data=orjson.dumps(data).decode())
    report = await trail.verify()
    assert [(p.kind, p.seq) for p in report.problems] == [("edited", 2)]


async def test_records_are_redacted_before_they_are_sealed() -> None:
    store = MemoryLedgerStore()
    redactor = Redactor(True)
    trail = AuditTrail(store, ChainSigner(), FakeClock(), redactor)
    await trail.open()
    await trail.record(
        "flags_changed",
        "mallory@example.com",
        {
            "reason": "asked by alice@example.com, card 4111 1111 1111 1111",
            "nested": {"notes": ["call +49 30 1234567", 7, None]},
            "route": "direct_bedrock",
        },
    )
    (record,) = store.audit_list()
    data = orjson.loads(record.data)
    assert record.actor == "[REDACTED:EMAIL]"
    assert data["reason"] == "asked by [REDACTED:EMAIL], card [REDACTED:CARD]"
    assert data["nested"] == {"notes": ["call [REDACTED:PHONE]", 7, None]}
    assert data["route"] == "direct_bedrock"
    for raw in ("alice@example.com", "mallory@example.com", "4111", "1234567"):
        assert raw not in record.data
        assert raw not in record.actor
    assert redactor.counts()["email"] == 2
    assert redactor.counts()["card"] == 1
    assert (await trail.verify()).ok  # sealed over the redacted form


async def test_without_redaction_records_are_kept_as_given() -> None:
    store = MemoryLedgerStore()
    trail = trail_over(store, redaction=False)
    await trail.open()
    await trail.record("flags_changed", "ops", {"reason": "asked by alice@example.com"})
    assert orjson.loads(store.audit_list()[0].data)["reason"] == "asked by alice@example.com"


async def test_a_disabled_trail_writes_nothing() -> None:
    store = MemoryLedgerStore()
    trail = AuditTrail(store, ChainSigner(), FakeClock(), Redactor(True), enabled=False)
    await trail.open()
    trail.submit("decision", "gateway", {"n": 1})
    await trail.record("flags_changed", "ops", {})
    assert (trail.pending, store.audit_list()) == (0, [])


async def test_listeners_hear_each_record_once_it_is_durable() -> None:
    store = MemoryLedgerStore()
    trail = trail_over(store)
    await trail.open()
    heard: list[tuple[int, int]] = []

    def listener(record: AuditRecord) -> None:
        heard.append((record.seq, len(store.audit_list())))

    def broken(record: AuditRecord) -> None:
        raise RuntimeError("a listener's bug")

    trail.add_listener(broken)  # must not stop the others or the trail
    trail.add_listener(listener)
    trail.submit("decision", "gateway", {})
    trail.submit("decision", "gateway", {})
    await trail.flush()
    assert heard == [(1, 2), (2, 2)]


async def test_a_keyed_trail_does_not_verify_under_another_key() -> None:
    store = MemoryLedgerStore()
    trail = trail_over(store, key=b"the-right-key")
    await trail.open()
    for n in range(3):
        await trail.record("decision", "gateway", {"n": n})
    assert (await trail.verify()).ok
    assert trail.keyed
    other = trail_over(store, key=b"another-key")
    report = await other.verify()
    assert not report.ok
    assert {p.kind for p in report.problems} == {"edited"}


async def test_new_records_after_a_cut_off_tail_do_not_hide_it() -> None:
    store = MemoryLedgerStore()
    trail = trail_over(store)
    await trail.open()
    for n in range(5):
        await trail.record("decision", "gateway", {"n": n})
    head = store.audit_list()[-1]
    del store.audit_list()[3:]  # records 4 and 5 cut off while the gateway was stopped

    restarted = trail_over(store)
    await restarted.open()
    assert restarted.last_seq == 5  # numbering goes on after the remembered head
    await restarted.record("flags_changed", "ops", {"n": 5})
    records = store.audit_list()
    assert (records[-1].seq, records[-1].prev) == (6, head.digest)
    report = await restarted.verify()
    assert not report.ok
    assert [(p.kind, p.seq) for p in report.problems] == [("deleted", 6)]
    assert "records 4 to 5 are missing" in report.problems[0].detail
