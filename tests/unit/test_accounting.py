"""Accounting for one request: the reservation estimate, the charges of its attempts, parsing
the attempts of an all-routes-failed error, and formatting a cost."""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from decimal import Decimal
from typing import cast

import pytest

from hybridroute.config.economy import BudgetsConfig, PricingConfig
from hybridroute.economics import CostLedger, PriceTable
from hybridroute.errors import BudgetRefused
from hybridroute.gateway.accounting import Accountant, format_cost, prompt_tokens
from hybridroute.monitoring.records import HEDGE_CANCELLED
from hybridroute.providers import Route
from hybridroute.routing.matrix import RoutingRule
from hybridroute.routing.policy import Decision
from hybridroute.storage import ChargeRecord, MemoryLedgerStore
from hybridroute.testing import FakeClock
from hybridroute.types import (
    Attempt,
    AttemptOutcome,
    ChatMessage,
    GenerationRequest,
    Priority,
    RouteId,
    Usage,
)

BEDROCK, MCP, UNPRICED = "direct_bedrock", "mcp", "unpriced"
OK, FAILED, SKIPPED, CANCELLED = (
    AttemptOutcome.OK,
    AttemptOutcome.FAILED,
    AttemptOutcome.SKIPPED,
    AttemptOutcome.CANCELLED,
)
NOW = dt.datetime(2027, 1, 15, 8, tzinfo=dt.UTC).timestamp()


class FakeRoute:
    """Just what accounting asks of a route: its id, region and the model per operation."""

    def __init__(self, route_id: str, models: Mapping[str, str], default: str) -> None:
        self.id = route_id
        self.region: str | None = "eu-central-1"
        self._models = dict(models)
        self._default = default

    def model_for(self, operation_type: str) -> str:
        return self._models.get(operation_type, self._default)


ROUTES = {
    BEDROCK: FakeRoute(BEDROCK, {"implementation": "haiku"}, "sonnet"),
    MCP: FakeRoute(MCP, {}, "mcp-model"),
    UNPRICED: FakeRoute(UNPRICED, {}, "free"),
}

PRICES = PriceTable.from_config(
    PricingConfig.model_validate(
        {
            "routes": {
                BEDROCK: {
                    "input_per_1k": "0.003",
                    "output_per_1k": "0.015",
                    "models": {"haiku": {"input_per_1k": "0.00025", "output_per_1k": "0.00125"}},
                },
                MCP: {"input_per_1k": "0.001", "output_per_1k": "0.002"},
            }
        }
    )
)


def request(operation_type: str = "standard", max_tokens: int = 100) -> GenerationRequest:
    # 14 + 30 characters: (44 + 3) // 4 = 11 tokens, and 4 per message: 15
    return GenerationRequest(
        operation_type=operation_type,
        priority=Priority.MEDIUM,
        system=("You are terse.",),
        messages=(ChatMessage("user", "What is the capital of France?"),),
        max_tokens=max_tokens,
        temperature=None,
        top_p=None,
        stop=(),
        decision_id="dec-42",
        requested_model="default",
    )


def decision(
    routes: tuple[RouteId, ...],
    priority: Priority = Priority.MEDIUM,
    *,
    retries: int = 0,
    hedge: bool = False,
) -> Decision:
    rule = RoutingRule(
        operation_type="standard",
        priority=priority,
        latency_budget_ms=5000,
        primary=routes[0],
        fallback=routes[1] if len(routes) > 1 else None,
        retries=retries,
    )
    return Decision(
        decision_id="dec-42",
        rule=rule,
        routes=routes,
        forced=None,
        deadline=1005.0,
        budget_ms=5000,
        reason="test",
        decided_at=1000.0,
        primary_eligible=True,
        hedge=hedge,
    )


def accountant(budgets: BudgetsConfig | None = None) -> tuple[Accountant, FakeClock]:
    clock = FakeClock(wall_start=NOW)
    ledger = CostLedger(budgets or BudgetsConfig(), "USD", clock, MemoryLedgerStore())
    # the fake has only what accounting uses of the Route protocol
    routes = cast("Mapping[RouteId, Route]", ROUTES)
    return Accountant(PRICES, ledger, routes, clock), clock


def expected(
    route: str, model: str, kind: str, usage: Usage, cost: str, *, tenant: str = "t1"
) -> ChargeRecord:
    return ChargeRecord(
        at=NOW,
        decision_id="dec-42",
        tenant=tenant,
        operation_type="standard",
        route=route,
        model=model,
        kind=kind,
        input_tokens=usage.input_tokens,
        output_tokens=usage.output_tokens,
        estimated=usage.estimated,
        cost=Decimal(cost),
        currency="USD",
    )


# -- estimate ------------------------------------------------------------------------------------


def test_prompt_tokens_counts_system_and_messages():
    assert prompt_tokens(request()) == 15


@pytest.mark.parametrize("routes", [(BEDROCK, MCP), (MCP, BEDROCK)])
def test_estimate_is_the_worst_case_at_the_dearest_route(routes):
    acc, _ = accountant()
    # input int(15 × 1.2) + 8 = 26 tokens, output max_tokens = 100
    # one whole answer at the dearest route, BEDROCK (sonnet): (26 × 0.003 + 100 × 0.015) / 1000
    # = 0.001578; plus the other attempt's input at the dearest input price: 26 × 0.003 / 1000
    assert acc.estimate(decision(routes), request()) == Decimal("0.001656")


def test_estimate_covers_every_attempt_the_decision_allows():
    acc, _ = accountant()
    answer, input_only = Decimal("0.001578"), Decimal("0.000078")
    # one route, one retry: an answer and a timed-out try before it
    assert acc.estimate(decision((BEDROCK,), retries=1), request()) == answer + input_only
    # two routes, one retry each: an answer and three input-only tries
    two = decision((BEDROCK, MCP), retries=1)
    assert acc.estimate(two, request()) == answer + 3 * input_only
    # hedged: the race's loser may be charged a whole answer too
    hedged = decision((BEDROCK, MCP), hedge=True)
    assert acc.estimate(hedged, request()) == 2 * answer


def test_estimate_prices_the_model_each_route_uses_for_the_operation():
    acc, _ = accountant()
    # on "implementation" BEDROCK answers with haiku: (26 × 0.00025 + 100 × 0.00125) / 1000
    # = 0.0001315, cheaper than MCP's 0.000226; plus MCP's input, 26 × 0.001 / 1000
    assert acc.estimate(decision((BEDROCK, MCP)), request("implementation")) == Decimal("0.000252")
    assert acc.estimate(decision((BEDROCK,)), request("implementation")) == Decimal("0.0001315")


def test_estimate_scales_with_max_tokens():
    acc, _ = accountant()
    # (26 × 0.001 + 4000 × 0.002) / 1000
    assert acc.estimate(decision((MCP,)), request(max_tokens=4000)) == Decimal("0.008026")


def test_estimate_skips_unpriced_routes():
    acc, _ = accountant()
    assert acc.estimate(decision((UNPRICED,)), request()) == Decimal(0)
    assert acc.estimate(decision((UNPRICED, MCP)), request()) == Decimal("0.000252")


@pytest.mark.anyio
async def test_reserve_is_none_without_budgets():
    acc, _ = accountant()
    assert await acc.reserve(decision((BEDROCK, MCP)), request(), "t1") is None
    assert acc.currency == "USD"


@pytest.mark.anyio
async def test_reserve_holds_the_estimate_at_the_rule_priority():
    acc, _ = accountant(BudgetsConfig.model_validate({"global": {"daily": "0.002"}}))
    held = await acc.reserve(decision((BEDROCK, MCP)), request(), "t1")
    assert held is not None
    assert held.amount == Decimal("0.001656")
    with pytest.raises(BudgetRefused):
        await acc.reserve(decision((BEDROCK, MCP)), request(), "t1")
    critical = await acc.reserve(decision((BEDROCK, MCP), Priority.CRITICAL), request(), "t1")
    assert critical is not None
    # settle the first at what it actually cost: (1000 × 0.003 + 20 × 0.015) / 1000
    charges = acc.charges(
        request(), "t1", [Attempt(BEDROCK, OK, 80.0)], served=(BEDROCK, "sonnet", Usage(1000, 20))
    )
    assert await acc.settle(held, charges) == Decimal("0.0033")
    (status,) = acc.ledger.snapshot().budgets
    assert (status.spent, status.reserved) == (Decimal("0.0033"), Decimal("0.001656"))


# -- charges -------------------------------------------------------------------------------------


def test_a_served_answer_is_charged_at_its_reported_usage():
    acc, _ = accountant()
    charges = acc.charges(
        request(),
        "t1",
        [Attempt(BEDROCK, OK, 120.0)],
        served=(BEDROCK, "sonnet", Usage(1000, 500)),
    )
    # (1000 × 0.003 + 500 × 0.015) / 1000
    assert charges == [expected(BEDROCK, "sonnet", "served", Usage(1000, 500), "0.0105")]


def test_a_served_answer_with_estimated_usage_is_marked_estimated():
    acc, _ = accountant()
    usage = Usage(40, 60, estimated=True)
    charges = acc.charges(request(), "t1", [Attempt(MCP, OK, 1.0)], served=(MCP, "m", usage))
    # the served model is the one reported, priced at MCP's default: (0.04 + 0.12) / 1000
    assert charges == [expected(MCP, "m", "served", usage, "0.00016")]


def test_a_hedge_loser_is_charged_estimated_input_and_the_winners_output():
    acc, _ = accountant()
    charges = acc.charges(
        request(),
        "t1",
        [Attempt(BEDROCK, CANCELLED, 300.0, code=HEDGE_CANCELLED), Attempt(MCP, OK, 250.0)],
        served=(MCP, "mcp-model", Usage(1000, 400)),
    )
    assert charges == [
        # (15 × 0.003 + 400 × 0.015) / 1000
        expected(BEDROCK, "sonnet", "hedge_loser", Usage(15, 400, True), "0.006045"),
        # (1000 × 0.001 + 400 × 0.002) / 1000
        expected(MCP, "mcp-model", "served", Usage(1000, 400), "0.0018"),
    ]


def test_a_streams_hedge_loser_is_charged_estimated_input_only():
    """A stream's race ends at the winner's first event: the loser wrote (almost) nothing."""
    acc, _ = accountant()
    charges = acc.charges(
        request(),
        "t1",
        [Attempt(BEDROCK, CANCELLED, 300.0, code=HEDGE_CANCELLED), Attempt(MCP, OK, 250.0)],
        served=(MCP, "mcp-model", Usage(1000, 400)),
        stream=True,
    )
    assert charges == [
        expected(BEDROCK, "sonnet", "hedge_loser", Usage(15, 0, True), "0.000045"),
        expected(MCP, "mcp-model", "served", Usage(1000, 400), "0.0018"),
    ]


def test_attempts_cut_short_when_the_request_ended_are_charged_estimated_input():
    """The client left (or the gateway stopped): an attempt cancelled with the request, or still
    running when it ended, may have been worked on."""
    acc, _ = accountant()
    charges = acc.charges(
        request(),
        "t1",
        [Attempt(BEDROCK, FAILED, 20.0, code="upstream_unavailable"), Attempt(MCP, CANCELLED, 9)],
        in_flight=(BEDROCK,),
    )
    assert charges == [
        expected(MCP, "mcp-model", "abandoned", Usage(15, 0, True), "0.000015"),
        expected(BEDROCK, "sonnet", "abandoned", Usage(15, 0, True), "0.000045"),
    ]


def test_a_timed_out_attempt_is_charged_estimated_input_only():
    acc, _ = accountant()
    charges = acc.charges(
        request(),
        "t1",
        [Attempt(BEDROCK, FAILED, 5000.0, code="upstream_timeout"), Attempt(MCP, OK, 200.0)],
        served=(MCP, "mcp-model", Usage(1000, 400)),
    )
    assert charges == [
        expected(BEDROCK, "sonnet", "abandoned", Usage(15, 0, True), "0.000045"),
        expected(MCP, "mcp-model", "served", Usage(1000, 400), "0.0018"),
    ]


def test_a_cut_stream_is_charged_estimated_input_and_the_relayed_text():
    acc, _ = accountant()
    charges = acc.charges(
        request(),
        "t1",
        [Attempt(BEDROCK, OK, 900.0)],
        cut=(BEDROCK, "sonnet", len("Paris is the capital")),  # 20 characters: 5 tokens
    )
    # (15 × 0.003 + 5 × 0.015) / 1000
    assert charges == [expected(BEDROCK, "sonnet", "stream_cut", Usage(15, 5, True), "0.00012")]


def test_failures_before_the_upstream_worked_are_not_charged():
    acc, _ = accountant()
    charges = acc.charges(
        request(),
        "t1",
        [
            Attempt(BEDROCK, FAILED, 20.0, code="upstream_unavailable"),
            Attempt(BEDROCK, FAILED, 15.0, code="upstream_throttled"),
            Attempt(BEDROCK, FAILED, 15.0),
            Attempt(BEDROCK, SKIPPED, 0.0, code="breaker_open"),
            Attempt(MCP, OK, 200.0),
        ],
        served=(MCP, "mcp-model", Usage(1000, 400)),
    )
    assert charges == [expected(MCP, "mcp-model", "served", Usage(1000, 400), "0.0018")]


def test_no_answer_and_no_chargeable_attempt_means_no_charges():
    acc, _ = accountant()
    assert acc.charges(request(), "t1", []) == []
    assert acc.charges(request(), "t1", [Attempt(BEDROCK, FAILED, 3.0, code="x")]) == []


def test_an_unpriced_route_is_charged_at_zero_but_still_recorded():
    acc, _ = accountant()
    charges = acc.charges(
        request(), "t1", [Attempt(UNPRICED, OK, 9.0)], served=(UNPRICED, "free", Usage(10, 10))
    )
    assert charges == [expected(UNPRICED, "free", "served", Usage(10, 10), "0")]


@pytest.mark.anyio
async def test_settle_records_the_charges_and_returns_their_total():
    acc, _ = accountant(BudgetsConfig.model_validate({"tenants": {"t1": {"daily": "1"}}}))
    held = await acc.reserve(decision((BEDROCK, MCP)), request(), "t1")
    charges = acc.charges(
        request(),
        "t1",
        [Attempt(BEDROCK, CANCELLED, 300.0, code=HEDGE_CANCELLED), Attempt(MCP, OK, 250.0)],
        served=(MCP, "mcp-model", Usage(1000, 400)),
    )
    assert await acc.settle(held, charges) == Decimal("0.007845")
    (status,) = acc.ledger.snapshot().budgets
    assert (status.budget, status.spent, status.reserved) == (
        "tenant:t1",
        Decimal("0.007845"),
        Decimal(0),
    )
    await acc.ledger.flush()
    store = acc.ledger.store
    assert isinstance(store, MemoryLedgerStore)
    assert store.total() == Decimal("0.007845")
    assert await acc.settle(None, ()) == Decimal(0)


# -- format_cost ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("amount", "text"),
    [
        ("0", "0"),
        ("0E-10", "0"),
        ("-0", "0"),
        ("0.0001230000", "0.000123"),
        ("0.0000000001", "0.0000000001"),
        ("1E-10", "0.0000000001"),
        ("1E+1", "10"),
        ("100", "100"),
        ("12.3400", "12.34"),
        ("1.0000000000", "1"),
    ],
)
def test_format_cost_is_plain_decimal_without_trailing_zeros(amount, text):
    assert format_cost(Decimal(amount)) == text
