"""Records and the protocol of the control store: flags, config versions, operator actions and
the audit trail.

The control plane keeps what operators changed (flag states, operator actions, data-subject
salts) as small named values, every applied routing configuration as a numbered version, and
the audit trail as an append-only sequence of hash-chained records. The embedded SQLite store
keeps them in the same file as the ledger; the in-memory store keeps them for tests.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

import orjson

__all__ = [
    "CHAIN_START",
    "AuditRecord",
    "ConfigVersionRecord",
    "ControlStore",
    "Sealer",
    "audit_head",
    "chain_end",
]

CHAIN_START = "0" * 64
"""The `prev` of a chain's first record."""


@dataclass(frozen=True, slots=True)
class AuditRecord:
    """One link of the audit chain. `data` is canonical JSON; `digest` covers every other
    field (see `hybridroute.audit.chain`)."""

    seq: int
    at: float
    kind: str
    actor: str
    subject: str | None
    data: str
    prev: str
    digest: str


@dataclass(frozen=True, slots=True)
class ConfigVersionRecord:
    """One applied routing configuration: the whole document, who applied it, and the diff
    from the version before (both canonical JSON)."""

    version: int
    at: float
    author: str
    comment: str
    document: str
    diff: str


Sealer = Callable[[int, str], list[AuditRecord]]
"""Seals the pending entries after (seq, digest) of the chain's end: called by the store inside
its write lock, so appends from several writers form one chain."""


def audit_head(record: AuditRecord) -> str:
    """The remembered chain head (JSON) for the newest record."""
    return orjson.dumps({"seq": record.seq, "digest": record.digest}).decode()


def chain_end(last: AuditRecord | None, head: str | None, anchor: str | None) -> tuple[int, str]:
    """Where the next record links: the newest stored record — or the remembered head when it
    is further on (records were cut off the end: new records leave the gap visible) — or, for
    an empty chain, the anchor a purge left (else the start)."""
    end = (last.seq, last.digest) if last is not None else None
    for raw in (head, anchor if end is None else None):
        if raw is not None:
            data = orjson.loads(raw)
            mark = (int(data["seq"]), str(data["digest"]))
            if end is None or mark[0] > end[0]:
                end = mark
    return end if end is not None else (0, CHAIN_START)


class ControlStore(Protocol):
    """Durable control-plane state."""

    async def get_state(self, key: str) -> str | None:
        """A named value (JSON text), or None."""
        ...

    async def put_state(self, key: str, value: str) -> None:
        """Set a named value; durable when this returns."""
        ...

    async def delete_state(self, key: str) -> bool:
        """Forget a named value; whether it existed."""
        ...

    async def append_config_version(self, record: ConfigVersionRecord) -> None:
        """Store a new version; `StorageError` when the number is taken."""
        ...

    async def config_versions(self) -> list[ConfigVersionRecord]:
        """Every stored version, oldest first."""
        ...

    async def append_audit(self, seal: Sealer, head_key: str, anchor_key: str) -> list[AuditRecord]:
        """Under the store's write lock and in one transaction: find the chain's end
        (`chain_end` of the newest record, the state keys `head_key` and `anchor_key`), seal
        the pending entries after it, append them, and remember the last one's seq and digest
        under `head_key` (so a deleted tail is noticed). Returns the records appended."""
        ...

    async def audit_records(
        self, after_seq: int = 0, since: float | None = None, until: float | None = None
    ) -> list[AuditRecord]:
        """Records in storage order, optionally only those with seq > `after_seq` and `at`
        within [since, until)."""
        ...

    async def last_audit(self) -> AuditRecord | None:
        """The newest record, if any."""
        ...

    async def purge_audit(self, before: float, anchor_key: str) -> AuditRecord | None:
        """Delete records older than `before` (a prefix of the chain) and, in the same
        transaction, remember the last one deleted under `anchor_key` (verification starts
        there); returns it, or None when nothing was deleted."""
        ...
