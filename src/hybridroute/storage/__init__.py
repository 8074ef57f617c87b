"""Durable records behind protocols: spend and budget events today (the ledger store).

The embedded default is SQLite (`SqliteLedgerStore`); `MemoryLedgerStore` keeps the same
records in process for tests and throwaway gateways. Other backends implement the same
protocol. `BatchWriter` feeds any of them from the request path without waiting on disk.
"""

from hybridroute.storage.ledger import LedgerStore, RecordStore, open_ledger_store
from hybridroute.storage.memory import MemoryLedgerStore
from hybridroute.storage.operations import OperationsStore
from hybridroute.storage.records import (
    AlertEventRecord,
    BudgetEventRecord,
    ChargeRecord,
    GatewayEventRecord,
    SpendRow,
    TrafficHourRecord,
    day_of,
)
from hybridroute.storage.sqlite import SqliteLedgerStore
from hybridroute.storage.writer import BatchWriter

__all__ = [
    "AlertEventRecord",
    "BatchWriter",
    "BudgetEventRecord",
    "ChargeRecord",
    "GatewayEventRecord",
    "LedgerStore",
    "MemoryLedgerStore",
    "OperationsStore",
    "RecordStore",
    "SpendRow",
    "SqliteLedgerStore",
    "TrafficHourRecord",
    "day_of",
    "open_ledger_store",
]
