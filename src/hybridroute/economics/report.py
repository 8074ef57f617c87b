"""The spend report: charges summed by route, model, operation type, tenant and day.

Built from the ledger store's `SpendRow`s (already summed per day × tenant × route × model ×
operation type) plus the ledger's budget state; rendered as JSON by the admin API and as tables
by `hybridroute cost`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from hybridroute.economics.pricing import ZERO, money_text
from hybridroute.storage.records import SpendRow

__all__ = ["DIMENSIONS", "SpendReport", "SpendTotals"]

DIMENSIONS = ("route", "model", "operation_type", "tenant", "day")


@dataclass(slots=True)
class SpendTotals:
    """Requests, charged attempts, tokens and money of one group of charges."""

    requests: int = 0
    charges: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    cost: Decimal = ZERO
    estimated_cost: Decimal = ZERO

    def add(self, row: SpendRow) -> None:
        self.requests += row.requests
        self.charges += row.charges
        self.input_tokens += row.input_tokens
        self.output_tokens += row.output_tokens
        self.cost += row.cost
        self.estimated_cost += row.estimated_cost

    @property
    def cost_per_request(self) -> Decimal | None:
        if not self.requests:
            return None
        return (self.cost / self.requests).quantize(Decimal("0.0000000001"))

    def as_dict(self) -> dict[str, Any]:
        per_request = self.cost_per_request
        return {
            "requests": self.requests,
            "charges": self.charges,
            "input_tokens": self.input_tokens,
            "output_tokens": self.output_tokens,
            "cost": money_text(self.cost),
            "estimated_cost": money_text(self.estimated_cost),
            "cost_per_request": None if per_request is None else money_text(per_request),
        }


@dataclass(slots=True)
class SpendReport:
    """Spend over a range of days, in total and by each dimension."""

    currency: str
    first_day: str
    last_day: str
    total: SpendTotals = field(default_factory=SpendTotals)
    by: dict[str, dict[str, SpendTotals]] = field(
        default_factory=lambda: {d: {} for d in DIMENSIONS}
    )

    @classmethod
    def from_rows(
        cls, rows: Sequence[SpendRow], currency: str, first_day: str, last_day: str
    ) -> SpendReport:
        report = cls(currency, first_day, last_day)
        for row in rows:
            report.total.add(row)
            for dimension in DIMENSIONS:
                key = getattr(row, dimension)
                report.by[dimension].setdefault(key, SpendTotals()).add(row)
        return report

    def as_dict(self) -> dict[str, Any]:
        return {
            "currency": self.currency,
            "first_day": self.first_day,
            "last_day": self.last_day,
            "total": self.total.as_dict(),
            "by": {
                dimension: {
                    key: totals.as_dict()
                    for key, totals in sorted(
                        groups.items(),
                        key=lambda kv: (kv[0] if dimension == "day" else "", -kv[1].cost),
                    )
                }
                for dimension, groups in self.by.items()
            },
        }
