"""Accounting for one request: what to reserve before it is sent, what its attempts cost after.

After the request, each attempt that an upstream may have billed becomes a charge:

- the attempt that served the answer: the usage its route reported (or estimated, and marked);
- the loser of a hedge race, cancelled mid-way: the prompt's estimated input tokens and, for a
  completion, as many output tokens as the winner produced (it was writing the same answer);
  for a stream, whose race ends at the winner's first event, no output;
- an attempt that timed out, or was still running when the request ended (the client left, the
  gateway stopped): the prompt's estimated input tokens;
- a stream cut off after it started: the prompt's estimated input tokens and the estimated
  tokens of the text relayed so far.

Estimated counts are marked `estimated`. Attempts the upstream refused or failed before working
on them (errors, breaker skips, sheds) are not charged; cache hits are never charged.

The reservation held against budgets before the request is sent covers the most these rules can
charge it, at the dearest route its decision may use: one whole answer — the prompt's estimated
tokens plus 20 % (and 8 of framing) in, `max_tokens` out — two when the decision hedges (the
loser of a completion's race is charged the winner's output), and the input of every further
attempt the decision allows (each route's first try and its retries).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from decimal import Decimal

from hybridroute._clock import Clock
from hybridroute.economics import CostLedger, PriceTable, Reservation
from hybridroute.economics.pricing import ZERO
from hybridroute.economics.pricing import money_text as format_cost
from hybridroute.monitoring.records import HEDGE_CANCELLED
from hybridroute.providers import Route
from hybridroute.routing.policy import Decision
from hybridroute.storage.records import ChargeRecord
from hybridroute.types import (
    Attempt,
    AttemptOutcome,
    GenerationRequest,
    RouteId,
    Usage,
)

__all__ = ["Accountant", "format_cost", "prompt_tokens"]

_TIMEOUT_CODE = "upstream_timeout"
_RESERVE_MARGIN = 1.2
_RESERVE_FRAMING_TOKENS = 8


def prompt_tokens(request: GenerationRequest) -> int:
    """The estimated input tokens of a request (system text and every message)."""
    text = sum(len(s) for s in request.system) + sum(len(m.content) for m in request.messages)
    return (text + 3) // 4 + 4 * len(request.messages)


class Accountant:
    """Prices a request's attempts and settles them with the cost ledger."""

    def __init__(
        self,
        prices: PriceTable,
        ledger: CostLedger,
        routes: Mapping[RouteId, Route],
        clock: Clock,
    ) -> None:
        self.prices = prices
        self.ledger = ledger
        self._routes = routes
        self._clock = clock

    @property
    def currency(self) -> str:
        return self.prices.currency

    def estimate(self, decision: Decision, request: GenerationRequest) -> Decimal:
        """The most this request may cost under the charging rules: what is reserved."""
        inp = int(prompt_tokens(request) * _RESERVE_MARGIN) + _RESERVE_FRAMING_TOKENS
        answer = input_only = ZERO
        for route_id in decision.routes:
            model = self._routes[route_id].model_for(request.operation_type)
            price = self.prices.price(route_id, model)
            if price is not None:
                answer = max(answer, price.cost(inp, request.max_tokens))
                input_only = max(input_only, price.cost(inp, 0))
        attempts = len(decision.routes) * (1 + decision.rule.retries)
        answers = 2 if decision.hedge and attempts >= 2 else 1
        return answer * answers + input_only * (attempts - answers)

    async def reserve(
        self, decision: Decision, request: GenerationRequest, tenant: str
    ) -> Reservation | None:
        """Hold the estimate against the tenant's budgets (None when no budget applies)."""
        if not self.ledger.has_budgets:
            return None
        estimate = self.estimate(decision, request)
        return await self.ledger.reserve(tenant, decision.rule.priority, estimate)

    def charges(
        self,
        request: GenerationRequest,
        tenant: str,
        attempts: Sequence[Attempt],
        *,
        served: tuple[RouteId, str, Usage] | None = None,
        cut: tuple[RouteId, str, int] | None = None,
        in_flight: Sequence[RouteId] = (),
        stream: bool = False,
    ) -> list[ChargeRecord]:
        """The charges of a finished request.

        `attempts` are the request's attempts as the executor reported them (the winner's is
        `ok` and is charged through `served` or `cut`); `in_flight` the routes of attempts
        still running when the request ended. `served` is (route, model, usage) of the answer
        the client got; `cut` is (route, model, characters relayed) of a stream that ended
        before its final event. `stream`: the race, if any, ended at the first event.
        """
        now = self._clock.now()
        estimated_input = prompt_tokens(request)
        won_output = served[2].output_tokens if served is not None and not stream else 0
        charges: list[ChargeRecord] = []

        def add(route: RouteId, model: str, kind: str, usage: Usage) -> None:
            charges.append(
                ChargeRecord(
                    at=now,
                    decision_id=request.decision_id,
                    tenant=tenant,
                    operation_type=request.operation_type,
                    route=route,
                    model=model,
                    kind=kind,
                    input_tokens=usage.input_tokens,
                    output_tokens=usage.output_tokens,
                    estimated=usage.estimated,
                    cost=self.prices.cost(route, model, usage),
                    currency=self.prices.currency,
                )
            )

        input_only = Usage(estimated_input, 0, True)
        for attempt in attempts:
            model = self._routes[attempt.route].model_for(request.operation_type)
            if attempt.outcome is AttemptOutcome.CANCELLED and attempt.code == HEDGE_CANCELLED:
                add(attempt.route, model, "hedge_loser", Usage(estimated_input, won_output, True))
            elif attempt.outcome is AttemptOutcome.CANCELLED or (
                attempt.outcome is AttemptOutcome.FAILED and attempt.code == _TIMEOUT_CODE
            ):
                add(attempt.route, model, "abandoned", input_only)
        for route in in_flight:
            add(
                route,
                self._routes[route].model_for(request.operation_type),
                "abandoned",
                input_only,
            )
        if served is not None:
            add(served[0], served[1], "served", served[2])
        if cut is not None:
            route, model, relayed = cut
            add(route, model, "stream_cut", Usage(estimated_input, (relayed + 3) // 4, True))
        return charges

    async def settle(
        self, reservation: Reservation | None, charges: Sequence[ChargeRecord]
    ) -> Decimal:
        """Settle the reservation to the charges; the request's total cost."""
        await self.ledger.settle(reservation, charges)
        return sum((c.cost for c in charges), ZERO)
