"""`AuditTrail`: the deployment's one append-only, hash-chained log, and its writer.

Everything worth proving later goes through here: routing decisions (queued by `submit`, written
in batches off the request path), admin actions, flag and routing-configuration changes, alert
transitions, budget thresholds, rollbacks and compliance events (written by `record`, durable
before the admin call answers). Each entry is redacted of PII, then sealed: numbered, linked to
the previous record's digest and digested over its whole canonical form (`audit.chain`).

Sealing happens when a batch is written, inside the store's write lock (the store finds where
the chain ends and calls back to seal the batch after it), so several writers — worker
processes, or replicas sharing one database — still make exactly one chain. A store that fails
keeps the batch queued (it is sealed again on the next try): nothing is lost while the process
lives. The chain head (last seq and
digest) is kept beside the records, so records deleted from the end are noticed too; a purge
keeps the last purged record's seq and digest as the anchor verification starts from.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import orjson

from hybridroute._clock import Clock
from hybridroute.audit.chain import (
    GENESIS,
    Anchor,
    ChainSigner,
    IntegrityReport,
    canonical_json,
    verify,
)
from hybridroute.audit.spool import AuditSpool
from hybridroute.compliance.redaction import Redactor
from hybridroute.storage.control import AuditRecord, ControlStore

__all__ = ["ANCHOR_KEY", "HEAD_KEY", "AuditTrail"]

log = logging.getLogger("hybridroute.audit")

HEAD_KEY = "audit:head"
ANCHOR_KEY = "audit:anchor"
_MAX_PENDING = 200_000
_BATCH = 2_000


@dataclass(frozen=True, slots=True)
class _Entry:
    at: float
    kind: str
    actor: str
    subject: str | None
    data: object


class AuditTrail:
    """Appends to, verifies, exports and purges the audit chain."""

    def __init__(
        self,
        store: ControlStore,
        signer: ChainSigner,
        clock: Clock,
        redactor: Redactor,
        *,
        flush_interval_s: float = 0.2,
        enabled: bool = True,
        spool: AuditSpool | None = None,
    ) -> None:
        self._store = store
        self._signer = signer
        self._clock = clock
        self._redactor = redactor
        self._flush_interval_s = flush_interval_s
        self.enabled = enabled
        self._pending: deque[_Entry] = deque()
        self._lock = asyncio.Lock()
        self._wake = asyncio.Event()
        self._seq = 0
        self._prev = GENESIS
        self.written = 0
        self.dropped = 0
        self.failures = 0
        self.last_error: str | None = None
        self._listeners: list[Callable[[AuditRecord], None]] = []
        self._spool = spool

    @property
    def keyed(self) -> bool:
        return self._signer.keyed

    @property
    def pending(self) -> int:
        return len(self._pending)

    @property
    def last_seq(self) -> int:
        return self._seq

    def add_listener(self, listener: Callable[[AuditRecord], None]) -> None:
        """Hear every record once it is durable."""
        self._listeners.append(listener)

    async def open(self) -> None:
        """Continue the stored chain (or start one), and queue what the spool kept that the
        store does not have yet (a previous process died or the store was away). When the
        remembered head is past the newest stored record, records were cut off the end:
        numbering goes on after the head, so the gap stays visible to `verify` instead of
        being papered over by new records."""
        if self._spool is not None:
            await self._recover(self._spool.open())
        last = await self._store.last_audit()
        if last is not None:
            self._seq, self._prev = last.seq, last.digest
        else:
            anchor = await self.anchor()
            self._seq, self._prev = anchor.seq, anchor.digest
        head = await self.head()
        if head is not None and head[0] > self._seq:
            log.error(
                "audit records %d to %d are missing from the end of the chain; continuing "
                "after the remembered head",
                self._seq + 1,
                head[0],
            )
            self._seq, self._prev = head

    async def _recover(self, kept: list[dict[str, Any]]) -> None:
        if not kept or self._spool is None:
            return
        stored = await self._store.audit_records(since=min(e["at"] for e in kept))
        have = {(r.at, r.kind, r.actor, r.data) for r in stored}
        already = 0
        for item in kept:
            entry = _Entry(item["at"], item["kind"], item["actor"], item["subject"], item["data"])
            if (entry.at, entry.kind, entry.actor, canonical_json(entry.data).decode()) in have:
                already += 1  # stored before the offset moved: confirmed, not written again
                continue
            self._pending.append(entry)
        if already:  # the oldest kept entries: the batch committed just before the crash
            self._spool.confirm(already)
        log.warning(
            "audit: %d entries kept on disk by an earlier run are queued again (%d were stored "
            "already)",
            len(kept) - already,
            already,
        )

    async def anchor(self) -> Anchor:
        raw = await self._store.get_state(ANCHOR_KEY)
        if raw is None:
            return Anchor()
        data = orjson.loads(raw)
        return Anchor(int(data["seq"]), str(data["digest"]))

    async def head(self) -> tuple[int, str] | None:
        raw = await self._store.get_state(HEAD_KEY)
        if raw is None:
            return None
        data = orjson.loads(raw)
        return int(data["seq"]), str(data["digest"])

    # -- appending -------------------------------------------------------------------------------

    def submit(
        self, kind: str, actor: str, data: dict[str, Any], subject: str | None = None
    ) -> None:
        """Queue a record (O(1), no I/O); the writer seals and stores it within the flush
        interval. Beyond the queue's bound the oldest queued records are dropped and counted."""
        if not self.enabled:
            return
        if len(self._pending) >= _MAX_PENDING:
            self._pending.popleft()
            self.dropped += 1
            if self._spool is not None:
                self._spool.confirm(1)
        # Redacted before it is written anywhere, the spool included.
        redact = self._redactor.redact_value
        entry = _Entry(self._clock.now(), kind, str(redact(actor)), subject, redact(data))
        if self._spool is not None:
            self._spool.append(
                {"at": entry.at, "kind": kind, "actor": entry.actor, "subject": subject,
                 "data": entry.data}
            )  # fmt: skip
        self._pending.append(entry)

    async def record(
        self, kind: str, actor: str, data: dict[str, Any], subject: str | None = None
    ) -> None:
        """Append a record and wait until it is durable (admin actions, changes)."""
        if not self.enabled:
            return
        self.submit(kind, actor, data, subject)
        await self.flush()

    async def flush(self) -> None:
        """Seal and store everything queued so far; raises when the store fails (the records
        stay queued)."""
        async with self._lock:
            while self._pending:
                await self._write(min(len(self._pending), _BATCH))

    async def _write(self, count: int) -> None:
        entries = [
            (entry, entry.actor, entry.data) for entry in itertools.islice(self._pending, count)
        ]
        signer = self._signer

        def seal(seq: int, prev: str) -> list[AuditRecord]:
            """Seal the batch after the chain's end, as the store found it under its lock."""
            sealed: list[AuditRecord] = []
            for entry, actor, data in entries:
                seq += 1
                record = signer.seal(
                    seq=seq,
                    at=entry.at,
                    kind=entry.kind,
                    actor=actor,
                    subject=entry.subject,
                    data=data,
                    prev=prev,
                )
                sealed.append(record)
                prev = record.digest
            return sealed

        try:
            sealed = await self._store.append_audit(seal, HEAD_KEY, ANCHOR_KEY)
        except Exception as exc:
            self.failures += 1
            self.last_error = str(exc)
            raise
        for _ in range(count):
            self._pending.popleft()
        if self._spool is not None:
            self._spool.confirm(count)
        if sealed:
            self._seq, self._prev = sealed[-1].seq, sealed[-1].digest
        self.written += count
        for record in sealed:
            for listener in self._listeners:
                try:
                    listener(record)
                except Exception:
                    log.exception("audit listener failed")

    async def run(self) -> None:
        """Write queued records every flush interval until cancelled (then one last time)."""
        try:
            while True:
                await asyncio.sleep(self._flush_interval_s)
                if self._pending:
                    try:
                        await self.flush()
                    except Exception:
                        log.exception("audit records could not be written; %d stay queued",
                                      len(self._pending))  # fmt: skip
        finally:
            if self._pending:
                try:
                    await asyncio.shield(self.flush())
                except Exception:
                    log.exception("%d audit records could not be written", len(self._pending))

    # -- reading ---------------------------------------------------------------------------------

    async def verify(self) -> IntegrityReport:
        """Check the stored chain: every record's digest and link, from the anchor to the
        remembered head."""
        async with self._lock:  # no half-written batch in what is read
            records = await self._store.audit_records()
            anchor = await self.anchor()
            head = await self.head()
        return verify(records, self._signer, anchor=anchor, head=head)

    async def records(
        self, since: float | None = None, until: float | None = None
    ) -> list[AuditRecord]:
        await self.flush()
        return await self._store.audit_records(since=since, until=until)

    async def purge(self, before: float) -> int:
        """Delete records older than `before`; the last one deleted becomes the anchor."""
        async with self._lock:
            previous = await self.anchor()
            last = await self._store.purge_audit(before, ANCHOR_KEY)
            return 0 if last is None else last.seq - previous.seq

    def snapshot(self) -> dict[str, Any]:
        return {
            "enabled": self.enabled,
            "keyed": self.keyed,
            "last_seq": self._seq,
            "written": self.written,
            "pending": self.pending,
            "dropped": self.dropped,
            "write_failures": self.failures,
            "spooled": self._spool.waiting if self._spool is not None else None,
            "last_error": self.last_error,
        }
