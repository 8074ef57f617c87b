"""The records the ledger store keeps: charges (what one attempt cost), spend rows (charges
summed by day, tenant, route, model and operation type) and budget events (a threshold fired or
re-armed).

Money is `Decimal`. Stores keep it as an integer count of `COST_UNIT` (10^-10 of the currency)
so sums are exact in SQL; `to_units`/`from_units` convert.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from decimal import ROUND_HALF_EVEN, Decimal

__all__ = [
    "COST_QUANTUM",
    "BudgetEventRecord",
    "ChargeRecord",
    "SpendRow",
    "day_of",
    "from_units",
    "to_units",
]

COST_QUANTUM = Decimal("0.0000000001")
"""Every charge is rounded (half to even) to this, 10^-10 of the currency."""
_UNITS_PER_CURRENCY = 10**10


def to_units(amount: Decimal) -> int:
    """An amount as a whole number of COST_QUANTUM (rounded half to even)."""
    return int(amount.quantize(COST_QUANTUM, rounding=ROUND_HALF_EVEN) * _UNITS_PER_CURRENCY)


def from_units(units: int) -> Decimal:
    return (Decimal(units) / _UNITS_PER_CURRENCY).quantize(COST_QUANTUM)


def day_of(wall: float) -> str:
    """The UTC calendar day of a wall-clock time, as YYYY-MM-DD."""
    return dt.datetime.fromtimestamp(wall, tz=dt.UTC).strftime("%Y-%m-%d")


@dataclass(frozen=True, slots=True)
class ChargeRecord:
    """What one attempt of one request cost.

    `kind` says why it is charged: `served` (the answer the client got), `hedge_loser` (the
    attempt that lost a hedge race, cancelled), `abandoned` (timed out or cut off mid-way) or
    `stream_cut` (a stream that ended before its final event). `estimated` marks token counts
    the gateway had to estimate.
    """

    at: float
    decision_id: str
    tenant: str
    operation_type: str
    route: str
    model: str
    kind: str
    input_tokens: int
    output_tokens: int
    estimated: bool
    cost: Decimal
    currency: str

    @property
    def day(self) -> str:
        return day_of(self.at)


@dataclass(frozen=True, slots=True)
class SpendRow:
    """Charges summed over one day, tenant, route, model and operation type.

    `requests` counts served answers; `charges` counts every charged attempt.
    """

    day: str
    tenant: str
    route: str
    model: str
    operation_type: str
    requests: int
    charges: int
    input_tokens: int
    output_tokens: int
    cost: Decimal
    estimated_cost: Decimal


@dataclass(frozen=True, slots=True)
class BudgetEventRecord:
    """A budget threshold that fired (or re-armed) in one window.

    `budget` is `global` or `tenant:<name>`; `period` is `daily` or `monthly`; `window` is the
    calendar window (`2026-12-04`, `2026-12`); `threshold` is `info`, `critical` or
    `exhausted` and `level` the utilisation it stands at (0.8, 0.95, 1.0 by default); `kind` is
    `fired` or `rearmed`.
    """

    at: float
    budget: str
    period: str
    window: str
    threshold: str
    level: float
    kind: str
    utilisation: float
    spent: Decimal
    limit: Decimal
    currency: str


@dataclass(frozen=True, slots=True)
class AlertEventRecord:
    """An alert's transition (firing, acknowledged, resolved), for the operations reports."""

    at: float
    alert_id: str
    rule: str
    severity: str
    transition: str
    labels: str  # JSON object
    summary: str
    value: float | None
    acknowledged_by: str | None


@dataclass(frozen=True, slots=True)
class GatewayEventRecord:
    """Something that happened to the gateway itself: it started, its configuration changed."""

    at: float
    kind: str  # started | config_changed
    detail: str  # JSON object


@dataclass(frozen=True, slots=True)
class TrafficHourRecord:
    """One UTC hour of traffic, summed (`observability.rollups`); `data` is its JSON."""

    hour: int  # hours since the epoch
    data: str
