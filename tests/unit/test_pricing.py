"""The price table: cost per 1,000 tokens, rounding, model overrides, unpriced routes and
`cheapest()`."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import pytest

from hybridroute.config.economy import PricingConfig
from hybridroute.economics.pricing import ZERO, Price, PriceTable
from hybridroute.storage.records import COST_QUANTUM
from hybridroute.types import Usage

BEDROCK, MCP, OTHER = "direct_bedrock", "mcp", "other"


def table(routes: dict[str, Any], currency: str = "USD") -> PriceTable:
    return PriceTable.from_config(
        PricingConfig.model_validate({"currency": currency, "routes": routes})
    )


PRICES = table(
    {
        BEDROCK: {
            "input_per_1k": "0.003",
            "output_per_1k": "0.015",
            "models": {"haiku": {"input_per_1k": "0.00025", "output_per_1k": "0.00125"}},
        },
        MCP: {"input_per_1k": "0.001", "output_per_1k": "0.002"},
    }
)


# -- Price.cost ----------------------------------------------------------------------------------


def test_cost_is_input_and_output_per_thousand_tokens_exactly():
    price = Price(Decimal("0.003"), Decimal("0.015"))
    cost = price.cost(1234, 567)
    # (1234 × 0.003 + 567 × 0.015) / 1000 = 12.207 / 1000
    assert cost == Decimal("0.012207")
    assert str(cost) == "0.0122070000"  # always quantized to 10^-10
    assert cost.as_tuple().exponent == COST_QUANTUM.as_tuple().exponent


def test_zero_tokens_cost_zero():
    assert Price(Decimal("0.003"), Decimal("0.015")).cost(0, 0) == ZERO


@pytest.mark.parametrize(
    ("input_tokens", "expected"),
    [
        (1, "0.0000000002"),  # 2.5e-10 → 2e-10 (half to even, down)
        (3, "0.0000000008"),  # 7.5e-10 → 8e-10 (half to even, up)
        (5, "0.0000000012"),  # 12.5e-10 → 12e-10 (half to even, down)
        (7, "0.0000000018"),  # 17.5e-10 → 18e-10
        (4, "0.0000000010"),  # exact
    ],
)
def test_cost_rounds_half_to_even_at_one_ten_billionth(input_tokens, expected):
    price = Price(Decimal("0.00000025"), ZERO)
    cost = price.cost(input_tokens, 0)
    assert cost == Decimal(expected)
    assert cost.as_tuple().exponent == -10


def test_cost_rounds_below_the_quantum_to_zero():
    # 0.00000004 per 1k, one token: 4e-11 → 0
    assert Price(Decimal("0.00000004"), ZERO).cost(1, 0) == ZERO


def test_blended_price_is_input_plus_output():
    assert Price(Decimal("0.003"), Decimal("0.015")).blended_per_1k == Decimal("0.018")


def test_price_from_config_keeps_exact_decimals():
    config = PricingConfig.model_validate(
        {"routes": {MCP: {"input_per_1k": 0.1, "output_per_1k": "0.0000000001"}}}
    )
    price = Price.from_config(config.routes[MCP])
    assert price == Price(Decimal("0.1"), Decimal("0.0000000001"))


# -- PriceTable ----------------------------------------------------------------------------------


def test_table_keeps_the_currency():
    assert table({}, currency="EUR").currency == "EUR"
    assert PriceTable.from_config(PricingConfig()).currency == "USD"


def test_a_model_override_wins_over_the_route_default():
    assert PRICES.price(BEDROCK, "haiku") == Price(Decimal("0.00025"), Decimal("0.00125"))
    assert PRICES.price(BEDROCK, "sonnet") == Price(Decimal("0.003"), Decimal("0.015"))
    # 1000 in / 2000 out: override 0.00025 + 2 × 0.00125; default 0.003 + 2 × 0.015
    assert PRICES.cost(BEDROCK, "haiku", Usage(1000, 2000)) == Decimal("0.00275")
    assert PRICES.cost(BEDROCK, "sonnet", Usage(1000, 2000)) == Decimal("0.033")


def test_an_override_applies_only_on_its_own_route():
    # "haiku" has an override on BEDROCK only; on MCP the route default applies
    assert PRICES.price(MCP, "haiku") == Price(Decimal("0.001"), Decimal("0.002"))


def test_an_unpriced_route_has_no_price_and_costs_nothing():
    assert PRICES.price(OTHER, "anything") is None
    assert PRICES.cost(OTHER, "anything", Usage(10_000, 10_000)) == ZERO
    assert PRICES.priced(BEDROCK)
    assert PRICES.priced(MCP)
    assert not PRICES.priced(OTHER)


def test_estimated_usage_costs_the_same_as_reported_usage():
    assert PRICES.cost(MCP, "m", Usage(1500, 250, estimated=True)) == Decimal("0.002")


# -- cheapest ------------------------------------------------------------------------------------


def test_cheapest_is_the_lowest_blended_price():
    # BEDROCK default 0.018 per 1k blended, MCP 0.003
    assert PRICES.cheapest({BEDROCK: "sonnet", MCP: "m"}) == MCP


def test_cheapest_uses_the_model_each_route_would_use():
    prices = table(
        {
            BEDROCK: {
                "input_per_1k": "0.003",
                "output_per_1k": "0.015",
                "models": {"tiny": {"input_per_1k": "0.0001", "output_per_1k": "0.0001"}},
            },
            MCP: {"input_per_1k": "0.001", "output_per_1k": "0.002"},
        }
    )
    assert prices.cheapest({BEDROCK: "tiny", MCP: "m"}) == BEDROCK
    assert prices.cheapest({BEDROCK: "big", MCP: "m"}) == MCP


def test_cheapest_compares_input_plus_output_not_each_alone():
    prices = table(
        {
            BEDROCK: {"input_per_1k": "0.001", "output_per_1k": "0.010"},  # 0.011
            MCP: {"input_per_1k": "0.005", "output_per_1k": "0.005"},  # 0.010
        }
    )
    assert prices.cheapest({BEDROCK: "m", MCP: "m"}) == MCP


def test_cheapest_is_none_on_a_tie():
    prices = table(
        {
            BEDROCK: {"input_per_1k": "0.002", "output_per_1k": "0.001"},
            MCP: {"input_per_1k": "0.001", "output_per_1k": "0.002"},
        }
    )
    assert prices.cheapest({BEDROCK: "m", MCP: "m"}) is None


def test_cheapest_ignores_a_tie_among_dearer_routes():
    prices = table(
        {
            BEDROCK: {"input_per_1k": "0.01", "output_per_1k": "0.01"},
            MCP: {"input_per_1k": "0.001", "output_per_1k": "0.001"},
            OTHER: {"input_per_1k": "0.01", "output_per_1k": "0.01"},
        }
    )
    assert prices.cheapest({BEDROCK: "m", MCP: "m", OTHER: "m"}) == MCP


def test_cheapest_is_none_when_any_route_is_unpriced():
    assert PRICES.cheapest({BEDROCK: "sonnet", MCP: "m", OTHER: "m"}) is None
    assert PRICES.cheapest({OTHER: "m", MCP: "m"}) is None


def test_cheapest_is_none_with_fewer_than_two_routes():
    assert PRICES.cheapest({MCP: "m"}) is None
    assert PRICES.cheapest({}) is None


def test_repr_names_currency_and_routes():
    assert repr(PRICES) == "<PriceTable USD routes=['direct_bedrock', 'mcp']>"
