"""The price table: per route, and per model on a route, input and output per 1,000 tokens.

Costs are exact decimals, rounded half-to-even to 10^-10 of the currency per charge. A route
without a price costs nothing (the configuration refuses that as soon as budgets are
configured).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from decimal import ROUND_HALF_EVEN, Decimal

from hybridroute.config.economy import ModelPrice, PricingConfig
from hybridroute.storage.records import COST_QUANTUM
from hybridroute.types import RouteId, Usage

__all__ = ["ZERO", "Price", "PriceTable", "money_text"]

ZERO = Decimal(0)
_PER = Decimal(1000)


def money_text(amount: Decimal) -> str:
    """An amount as plain decimal text without trailing zeros or exponent ("0.000123", "0",
    "10")."""
    return format(amount.normalize(), "f") if amount else "0"


@dataclass(frozen=True, slots=True)
class Price:
    """Money per 1,000 input and output tokens."""

    input_per_1k: Decimal
    output_per_1k: Decimal

    @classmethod
    def from_config(cls, price: ModelPrice) -> Price:
        return cls(price.input_per_1k, price.output_per_1k)

    def cost(self, input_tokens: int, output_tokens: int) -> Decimal:
        raw = (input_tokens * self.input_per_1k + output_tokens * self.output_per_1k) / _PER
        return raw.quantize(COST_QUANTUM, rounding=ROUND_HALF_EVEN)

    @property
    def blended_per_1k(self) -> Decimal:
        """Input and output per 1,000 tokens together: what 'cheaper' compares."""
        return self.input_per_1k + self.output_per_1k


class PriceTable:
    """Prices of every route and model, from the configuration."""

    def __init__(self, currency: str, routes: Mapping[RouteId, tuple[Price, Mapping[str, Price]]]):
        self.currency = currency
        self._routes = dict(routes)

    @classmethod
    def from_config(cls, pricing: PricingConfig) -> PriceTable:
        return cls(
            pricing.currency,
            {
                route: (
                    Price.from_config(price),
                    {model: Price.from_config(p) for model, p in price.models.items()},
                )
                for route, price in pricing.routes.items()
            },
        )

    def price(self, route: RouteId, model: str) -> Price | None:
        """The price of `model` on `route`: its own, else the route's; None when unpriced."""
        entry = self._routes.get(route)
        if entry is None:
            return None
        default, models = entry
        return models.get(model, default)

    def priced(self, route: RouteId) -> bool:
        return route in self._routes

    def cost(self, route: RouteId, model: str, usage: Usage) -> Decimal:
        """What `usage` costs on `route` with `model` (0 when unpriced)."""
        price = self.price(route, model)
        if price is None:
            return ZERO
        return price.cost(usage.input_tokens, usage.output_tokens)

    def cheapest(self, models: Mapping[RouteId, str]) -> RouteId | None:
        """Of routes (each with the model it would use), the strictly cheapest; None when two
        tie for cheapest or any is unpriced (no basis to prefer one)."""
        blended: dict[RouteId, Decimal] = {}
        for route, model in models.items():
            price = self.price(route, model)
            if price is None:
                return None
            blended[route] = price.blended_per_1k
        if len(blended) < 2:
            return None
        ordered = sorted(blended.items(), key=lambda item: item[1])
        if ordered[0][1] == ordered[1][1]:
            return None
        return ordered[0][0]

    def __repr__(self) -> str:
        return f"<PriceTable {self.currency} routes={sorted(self._routes)}>"
