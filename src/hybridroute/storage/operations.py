"""The operations store protocol: what the operations reports read back.

Alert transitions, gateway events (starts, configuration changes) and hourly traffic rollups
are kept beside the ledger (the embedded default keeps them in the same SQLite file), so the
daily and weekly reports are computed from what was recorded, across restarts.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from hybridroute.storage.records import AlertEventRecord, GatewayEventRecord, TrafficHourRecord

__all__ = ["OperationsStore"]


class OperationsStore(Protocol):
    """Durable alert transitions, gateway events and hourly traffic."""

    async def append_alert_events(self, events: Sequence[AlertEventRecord]) -> None: ...

    async def alert_events(self, since: float) -> list[AlertEventRecord]:
        """Alert transitions at or after `since`, oldest first."""
        ...

    async def append_gateway_events(self, events: Sequence[GatewayEventRecord]) -> None: ...

    async def gateway_events(self, since: float) -> list[GatewayEventRecord]:
        """Gateway events at or after `since`, oldest first."""
        ...

    async def last_gateway_event(self, kind: str) -> GatewayEventRecord | None:
        """The newest gateway event of a kind, if any."""
        ...

    async def put_traffic_hours(self, hours: Sequence[TrafficHourRecord]) -> None:
        """Store hourly rollups (an hour stored again replaces the earlier one)."""
        ...

    async def traffic_hours(self, first_hour: int, last_hour: int) -> list[TrafficHourRecord]:
        """Rollups of the hours from `first_hour` through `last_hour`, oldest first."""
        ...
