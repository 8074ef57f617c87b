"""`MemoryLedgerStore`: the ledger (and operations) store in process, for tests and throwaway
gateways.

It keeps spend already summed per day, tenant, route, model and operation type (so memory grows
with that cardinality, not with traffic) and every budget event. Nothing survives the process.
"""

from __future__ import annotations

from collections.abc import Sequence
from decimal import Decimal

from hybridroute.errors import StorageError
from hybridroute.storage.control import (
    AuditRecord,
    ConfigVersionRecord,
    Sealer,
    audit_head,
    chain_end,
)
from hybridroute.storage.records import (
    AlertEventRecord,
    BudgetEventRecord,
    ChargeRecord,
    GatewayEventRecord,
    SpendRow,
    TrafficHourRecord,
    day_of,
    from_units,
    to_units,
)

__all__ = ["MemoryLedgerStore"]

_Key = tuple[str, str, str, str, str]


class MemoryLedgerStore:
    """Spend rows and budget events in dictionaries."""

    def __init__(self) -> None:
        # key -> [requests, charges, input, output, cost units, estimated cost units]
        self._rows: dict[_Key, list[int]] = {}
        self._events: list[BudgetEventRecord] = []
        self._alerts: list[AlertEventRecord] = []
        self._gateway: list[GatewayEventRecord] = []
        self._hours: dict[int, str] = {}
        self._state: dict[str, str] = {}
        self._versions: list[ConfigVersionRecord] = []
        self._audit: list[AuditRecord] = []

    async def open(self) -> None:
        return None

    async def aclose(self) -> None:
        return None

    async def append_charges(self, charges: Sequence[ChargeRecord]) -> None:
        for charge in charges:
            key = (charge.day, charge.tenant, charge.route, charge.model, charge.operation_type)
            row = self._rows.setdefault(key, [0, 0, 0, 0, 0, 0])
            units = to_units(charge.cost)
            row[0] += charge.kind == "served"
            row[1] += 1
            row[2] += charge.input_tokens
            row[3] += charge.output_tokens
            row[4] += units
            row[5] += units if charge.estimated else 0

    async def append_budget_events(self, events: Sequence[BudgetEventRecord]) -> None:
        self._events.extend(events)

    async def spend(self, first_day: str, last_day: str | None = None) -> list[SpendRow]:
        rows = [
            SpendRow(*key, v[0], v[1], v[2], v[3], from_units(v[4]), from_units(v[5]))
            for key, v in self._rows.items()
            if key[0] >= first_day and (last_day is None or key[0] <= last_day)
        ]
        rows.sort(key=lambda r: (r.day, r.tenant, r.route, r.model, r.operation_type))
        return rows

    async def budget_events(self, since: float) -> list[BudgetEventRecord]:
        return sorted((e for e in self._events if e.at >= since), key=lambda e: e.at)

    async def purge(self, before_day: str) -> int:
        old = [key for key in self._rows if key[0] < before_day]
        for key in old:
            del self._rows[key]
        kept = [e for e in self._events if day_of(e.at) >= before_day]
        removed = len(old) + len(self._events) - len(kept)
        self._events = kept
        return removed

    # -- the operations store --------------------------------------------------------------------

    async def append_alert_events(self, events: Sequence[AlertEventRecord]) -> None:
        self._alerts.extend(events)

    async def alert_events(self, since: float) -> list[AlertEventRecord]:
        return sorted((e for e in self._alerts if e.at >= since), key=lambda e: e.at)

    async def append_gateway_events(self, events: Sequence[GatewayEventRecord]) -> None:
        self._gateway.extend(events)

    async def gateway_events(self, since: float) -> list[GatewayEventRecord]:
        return sorted((e for e in self._gateway if e.at >= since), key=lambda e: e.at)

    async def last_gateway_event(self, kind: str) -> GatewayEventRecord | None:
        matching = [e for e in self._gateway if e.kind == kind]
        return max(matching, key=lambda e: e.at) if matching else None

    async def put_traffic_hours(self, hours: Sequence[TrafficHourRecord]) -> None:
        for hour in hours:
            self._hours[hour.hour] = hour.data

    async def traffic_hours(self, first_hour: int, last_hour: int) -> list[TrafficHourRecord]:
        return [
            TrafficHourRecord(h, data)
            for h, data in sorted(self._hours.items())
            if first_hour <= h <= last_hour
        ]

    # -- the control store -----------------------------------------------------------------------

    async def get_state(self, key: str) -> str | None:
        return self._state.get(key)

    async def put_state(self, key: str, value: str) -> None:
        self._state[key] = value

    async def delete_state(self, key: str) -> bool:
        return self._state.pop(key, None) is not None

    async def append_config_version(self, record: ConfigVersionRecord) -> None:
        if any(v.version == record.version for v in self._versions):
            raise StorageError(f"routing configuration version {record.version} already exists")
        self._versions.append(record)

    async def config_versions(self) -> list[ConfigVersionRecord]:
        return sorted(self._versions, key=lambda v: v.version)

    async def append_audit(self, seal: Sealer, head_key: str, anchor_key: str) -> list[AuditRecord]:
        last = self._audit[-1] if self._audit else None
        records = seal(*chain_end(last, self._state.get(head_key), self._state.get(anchor_key)))
        if records:
            self._audit.extend(records)
            self._state[head_key] = audit_head(records[-1])
        return records

    async def audit_records(
        self, after_seq: int = 0, since: float | None = None, until: float | None = None
    ) -> list[AuditRecord]:
        return [
            r
            for r in self._audit
            if r.seq > after_seq
            and (since is None or r.at >= since)
            and (until is None or r.at < until)
        ]

    async def last_audit(self) -> AuditRecord | None:
        return self._audit[-1] if self._audit else None

    async def purge_audit(self, before: float, anchor_key: str) -> AuditRecord | None:
        cut = 0
        while cut < len(self._audit) and self._audit[cut].at < before:
            cut += 1
        if cut == 0:
            return None
        last = self._audit[cut - 1]
        del self._audit[:cut]
        self._state[anchor_key] = audit_head(last)
        return last

    def audit_list(self) -> list[AuditRecord]:
        """The records themselves, in order (tests tamper with them)."""
        return self._audit

    def describe(self) -> str:
        return "in memory (nothing survives a restart)"

    def total(self) -> Decimal:
        """Everything charged so far (for tests)."""
        return from_units(sum(v[4] for v in self._rows.values()))
