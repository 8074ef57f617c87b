"""The ledger store protocol, and opening the configured one.

A ledger store keeps charges and budget events durably and answers two questions: what was
spent over a range of days (summed into `SpendRow`s), and which budget events happened since a time.
The in-process budget ledger keeps running totals in memory and rebuilds them from these answers
when the gateway starts, so spend and fired thresholds survive a restart.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from hybridroute.config.platform import StorageConfig
from hybridroute.storage.control import ControlStore
from hybridroute.storage.operations import OperationsStore
from hybridroute.storage.records import BudgetEventRecord, ChargeRecord, SpendRow

__all__ = ["LedgerStore", "RecordStore", "open_ledger_store"]


class LedgerStore(Protocol):
    """Durable spend and budget events."""

    async def open(self) -> None:
        """Create what is missing (tables, files). Safe to call on an existing store."""
        ...

    async def aclose(self) -> None: ...

    async def append_charges(self, charges: Sequence[ChargeRecord]) -> None:
        """Store charges; durable when this returns."""
        ...

    async def append_budget_events(self, events: Sequence[BudgetEventRecord]) -> None:
        """Store budget events; durable when this returns."""
        ...

    async def spend(self, first_day: str, last_day: str | None = None) -> list[SpendRow]:
        """Charges from UTC day `first_day` through `last_day` (inclusive; YYYY-MM-DD; no end
        when None), summed per day, tenant, route, model and operation type."""
        ...

    async def budget_events(self, since: float) -> list[BudgetEventRecord]:
        """Budget events at or after `since`, oldest first."""
        ...

    async def purge(self, before_day: str) -> int:
        """Delete charges and budget events of UTC days before `before_day`; how many."""
        ...

    def describe(self) -> str:
        """Where the records live, in words (for logs and `hybridroute cost`)."""
        ...


class RecordStore(LedgerStore, OperationsStore, ControlStore, Protocol):
    """A store that keeps the ledger's, the operations reports' and the control plane's records
    (the embedded SQLite and in-memory stores do)."""


def open_ledger_store(config: StorageConfig) -> RecordStore:
    """The store the configuration names (not yet opened)."""
    from hybridroute.storage.memory import MemoryLedgerStore
    from hybridroute.storage.postgres import PostgresStore
    from hybridroute.storage.sqlite import SqliteLedgerStore

    if config.backend == "memory":
        return MemoryLedgerStore()
    if config.backend == "postgres":
        return PostgresStore(config.dsn(), config.postgres_schema)
    return SqliteLedgerStore(config.sqlite_path)
