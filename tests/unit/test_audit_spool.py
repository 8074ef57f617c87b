"""The audit spool: entries kept on disk until the store has them — across a store outage, a
killed process, and the crash window between the store's commit and the spool's offset."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import pytest

from hybridroute.audit.chain import ChainSigner
from hybridroute.audit.spool import AuditSpool
from hybridroute.audit.trail import AuditTrail
from hybridroute.compliance.redaction import Redactor
from hybridroute.errors import StorageError
from hybridroute.storage import MemoryLedgerStore
from hybridroute.storage.control import AuditRecord, Sealer
from hybridroute.testing import FakeClock

pytestmark = pytest.mark.anyio


class AwayStore(MemoryLedgerStore):
    """A store that refuses audit appends while `away` is set."""

    away = False

    async def append_audit(self, seal: Sealer, head_key: str, anchor_key: str) -> list[AuditRecord]:
        if self.away:
            raise StorageError("the database is away (simulated)")
        return await super().append_audit(seal, head_key, anchor_key)


def trail(store: MemoryLedgerStore, path: Path) -> AuditTrail:
    return AuditTrail(store, ChainSigner(), FakeClock(), Redactor(), spool=AuditSpool(path))


async def test_entries_survive_a_store_outage_and_a_process_that_dies(tmp_path: Path):
    store, path = AwayStore(), tmp_path / "spool.jsonl"
    first = trail(store, path)
    await first.open()
    await first.record("change", "ops", {"n": 0})
    store.away = True
    for n in range(1, 4):
        first.submit("decision", "gateway", {"n": n, "mail": "alice@example.com"})
    with pytest.raises(StorageError):
        await first.flush()
    # The process dies here: nothing more is written, the queue in memory is gone.
    assert "alice@example.com" not in path.read_text()  # redacted before it reached the disk
    store.away = False
    second = trail(store, path)
    await second.open()
    await second.flush()
    records = await store.audit_records()
    assert [r.seq for r in records] == [1, 2, 3, 4]
    assert [r.kind for r in records] == ["change", "decision", "decision", "decision"]
    assert (await second.verify()).ok
    assert path.read_text() == ""  # everything confirmed: the spool is empty again


async def test_an_entry_stored_just_before_a_crash_is_not_written_twice(tmp_path: Path):
    store, path = MemoryLedgerStore(), tmp_path / "spool.jsonl"
    first = trail(store, path)
    await first.open()
    first.submit("decision", "gateway", {"n": 1})
    first.submit("decision", "gateway", {"n": 2})
    await first.flush()
    # Re-create the crash window: the store has both, but the offset never moved.
    (tmp_path / "spool.jsonl.offset").write_text("0")
    spool_text = path.read_text()
    path.write_text(spool_text or _lines(await store.audit_records()))
    second = trail(store, path)
    await second.open()
    await second.flush()
    assert [r.seq for r in await store.audit_records()] == [1, 2]


def _lines(records: Sequence[AuditRecord]) -> str:
    import orjson

    return "".join(
        orjson.dumps(
            {"at": r.at, "kind": r.kind, "actor": r.actor, "subject": r.subject,
             "data": orjson.loads(r.data)}
        ).decode() + "\n"
        for r in records
    )  # fmt: skip


async def test_a_line_cut_by_a_crash_mid_write_is_ignored(tmp_path: Path):
    path = tmp_path / "spool.jsonl"
    path.write_bytes(
        b'{"at": 1.0, "kind": "decision", "actor": "g", "subject": null, "data": {}}\n{"at": 2.'
    )
    spool = AuditSpool(path)
    kept = spool.open()
    assert [e["at"] for e in kept] == [1.0]
    spool.close()
