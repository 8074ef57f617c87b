"""Accounting for one request: what to reserve before it is sent, what its attempts cost after.

The reservation is the worst case: the prompt's estimated tokens plus 20 % (and 8 tokens of
framing) as input and the request's `max_tokens` as output, priced at the dearest route the
decision may use. After the request, each attempt that may have been billed becomes a charge:

- the attempt that served the answer: the usage its route reported (or estimated, and marked);
- a hedge race's loser, cancelled mid-way: the prompt's estimated input tokens and, as output,
  as many tokens as the winner produced (it was writing the same answer), marked estimated;
- an attempt that timed out (the upstream may have worked on it): the prompt's estimated input
  tokens, marked estimated;
- a stream cut off after it started: the prompt's estimated input tokens and the estimated
  tokens of the text relayed so far, marked estimated.

Attempts the upstream refused or failed before working on them (errors, breaker skips, sheds)
are not charged. Cache hits are never charged.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from decimal import Decimal

from hybridroute._clock import Clock
from hybridroute.economics import CostLedger, PriceTable, Reservation
from hybridroute.economics.pricing import ZERO
from hybridroute.economics.pricing import money_text as format_cost
from hybridroute.errors import AllRoutesFailed
from hybridroute.providers import Route
from hybridroute.routing.policy import Decision
from hybridroute.storage.records import ChargeRecord
from hybridroute.types import (
    Attempt,
    AttemptOutcome,
    GenerationRequest,
    RouteId,
    Usage,
    estimate_tokens,
)

__all__ = ["Accountant", "attempts_of", "format_cost", "prompt_tokens"]

_TIMEOUT_CODE = "upstream_timeout"
_RESERVE_MARGIN = 1.2
_RESERVE_FRAMING_TOKENS = 8


def prompt_tokens(request: GenerationRequest) -> int:
    """The estimated input tokens of a request (system text and every message)."""
    text = sum(len(s) for s in request.system) + sum(len(m.content) for m in request.messages)
    return (text + 3) // 4 + 4 * len(request.messages)


def attempts_of(failed: AllRoutesFailed) -> list[Attempt]:
    """The attempts listed in an all-routes-failed error, as far as charging needs them."""
    attempts = []
    for entry in failed.attempts:
        try:
            outcome = AttemptOutcome(str(entry.get("outcome")))
        except ValueError:
            continue
        attempts.append(
            Attempt(
                str(entry.get("route")),
                outcome,
                float(entry.get("duration_ms", 0.0)),
                code=entry.get("code"),
            )
        )
    return attempts


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
        """The most this request may cost: what is reserved against budgets."""
        inp = int(prompt_tokens(request) * _RESERVE_MARGIN) + _RESERVE_FRAMING_TOKENS
        worst = ZERO
        for route_id in decision.routes:
            model = self._routes[route_id].model_for(request.operation_type)
            price = self.prices.price(route_id, model)
            if price is not None:
                worst = max(worst, price.cost(inp, request.max_tokens))
        return worst

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
        cut: tuple[RouteId, str, str] | None = None,
    ) -> list[ChargeRecord]:
        """The charges of a finished request.

        `attempts` are the request's attempts as the executor reported them when it found its
        answer (the winner's is `ok` and is charged through `served` or `cut`). `served` is
        (route, model, usage) of the answer the client got; `cut` is (route, model, text
        relayed) of a stream that ended before its final event.
        """
        now = self._clock.now()
        estimated_input = prompt_tokens(request)
        won_output = served[2].output_tokens if served is not None else 0
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

        for attempt in attempts:
            model = self._routes[attempt.route].model_for(request.operation_type)
            if attempt.outcome is AttemptOutcome.CANCELLED:
                add(attempt.route, model, "hedge_loser", Usage(estimated_input, won_output, True))
            elif attempt.outcome is AttemptOutcome.FAILED and attempt.code == _TIMEOUT_CODE:
                add(attempt.route, model, "abandoned", Usage(estimated_input, 0, True))
        if served is not None:
            add(served[0], served[1], "served", served[2])
        if cut is not None:
            route, model, text = cut
            add(route, model, "stream_cut", Usage(estimated_input, estimate_tokens(text), True))
        return charges

    async def settle(
        self, reservation: Reservation | None, charges: Sequence[ChargeRecord]
    ) -> Decimal:
        """Settle the reservation to the charges; the request's total cost."""
        await self.ledger.settle(reservation, charges)
        return sum((c.cost for c in charges), ZERO)
