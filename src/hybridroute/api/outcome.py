"""What happened to one chat request, gathered as it is served, for the gateway's observers.

The chat endpoint fills a `RequestReport` step by step (prepared, answered from the cache,
decided, served or streamed, failed) and turns it into one `RequestEvent` when the request
ends, however it ends: a request still marked `abandoned` at that point is one whose client
went away first.
"""

from __future__ import annotations

from decimal import Decimal

from hybridroute.caching import CachedResponse
from hybridroute.errors import GatewayError, Overloaded, ResidencyUnsatisfiable
from hybridroute.gateway.service import Answer, Bill, Prepared
from hybridroute.observability.events import Outcome, RequestEvent
from hybridroute.routing.policy import Decision
from hybridroute.types import Attempt, AttemptOutcome, RouteId, Usage

__all__ = ["RequestReport"]


def _first_tried(attempts: tuple[Attempt, ...]) -> RouteId | None:
    for attempt in attempts:
        if attempt.outcome is not AttemptOutcome.SKIPPED:
            return attempt.route
    return None


class RequestReport:
    """One request's outcome, as far as it got."""

    __slots__ = (
        "attempts",
        "bill",
        "budget",
        "budget_s",
        "cache",
        "cost",
        "decision_id",
        "error_code",
        "fallback",
        "first_route",
        "first_tried",
        "hedged",
        "input_tokens",
        "model",
        "operation_type",
        "outcome",
        "output_tokens",
        "primary",
        "priority",
        "reason",
        "residency",
        "route",
        "status",
        "stream",
        "subject",
        "tenant",
        "ttft_s",
    )

    def __init__(self) -> None:
        self.operation_type: str | None = None
        self.priority = "unknown"
        self.tenant = "default"
        self.stream = False
        self.outcome = Outcome.ABANDONED  # until something else is known
        self.status = 499
        self.route: RouteId | None = None
        self.primary: RouteId | None = None
        self.first_route: RouteId | None = None
        self.first_tried: RouteId | None = None
        self.budget_s: float | None = None
        self.fallback = False
        self.hedged = False
        self.ttft_s: float | None = None
        self.cache: str | None = None
        self.input_tokens = 0
        self.output_tokens = 0
        self.cost = Decimal(0)
        self.error_code: str | None = None
        self.model: str | None = None
        self.decision_id: str | None = None
        self.reason: str | None = None
        self.attempts: tuple[Attempt, ...] = ()
        self.bill: Bill | None = None
        self.budget: tuple[str, float] | None = None
        self.subject: str | None = None
        self.residency: str | None = None

    def prepared(self, prepared: Prepared) -> None:
        chat = prepared.chat
        self.operation_type = prepared.rule.operation_type
        self.priority = prepared.rule.priority.value
        self.tenant = chat.tenant
        self.stream = chat.stream
        self.cache = prepared.cache.status
        self.decision_id = prepared.decision_id
        self.bill = prepared.bill
        self.subject = chat.subject
        self.residency = chat.residency
        view = prepared.budget
        if view.level.value or view.utilisation:
            self.budget = (view.level.name.lower(), view.utilisation)

    def cached(self, entry: CachedResponse) -> None:
        self.outcome, self.status = Outcome.CACHED, 200
        self.reason = f"served from cache: answer from {entry.route}"
        self.cache = "hit"
        self.route = entry.route
        self.model = entry.model
        self.input_tokens, self.output_tokens = entry.usage.input_tokens, entry.usage.output_tokens

    def decided(self, decision: Decision) -> None:
        self.primary = decision.primary
        self.first_route = decision.routes[0] if decision.routes else None
        self.budget_s = decision.budget_ms / 1000.0
        self.reason = decision.reason
        self.residency = decision.residency

    def served(self, answer: Answer) -> None:
        served = answer.served
        self.outcome, self.status = Outcome.SERVED, 200
        self.route = served.route
        self.fallback = served.fallback
        self.hedged = served.hedged
        self.first_tried = _first_tried(served.attempts)
        self.attempts = served.attempts
        self._usage(served.completion.usage, answer.cost, served.completion.model)

    def streaming(self, route: RouteId, attempts: tuple[Attempt, ...], fallback: bool) -> None:
        """A stream opened on `route`; until it ends, a cut-off stream reads as interrupted."""
        self.status = 200
        self.outcome = Outcome.ABANDONED
        self.route = route
        self.fallback = fallback
        self.first_tried = _first_tried(attempts)
        self.attempts = attempts

    def stream_ended(self, usage: Usage, cost: Decimal, model: str, hedged: bool) -> None:
        self.outcome = Outcome.SERVED
        self.hedged = hedged
        self._usage(usage, cost, model)

    def stream_cut(self, error: GatewayError, cost: Decimal | None) -> None:
        self.outcome = Outcome.INTERRUPTED
        self.error_code = error.code
        self.cost = cost or Decimal(0)

    def failed(self, error: GatewayError) -> None:
        status = error.http_status()
        self.status = status
        self.error_code = error.code
        self.route = None
        if isinstance(error, ResidencyUnsatisfiable):
            self.residency = error.residency
        if isinstance(error, Overloaded):
            self.outcome = Outcome.SHED
        elif status >= 500:
            self.outcome = Outcome.FAILED
        else:
            self.outcome = Outcome.REFUSED

    def _usage(self, usage: Usage, cost: Decimal, model: str) -> None:
        self.input_tokens, self.output_tokens = usage.input_tokens, usage.output_tokens
        self.cost = cost
        self.model = model

    def event(self, *, at: float, latency_s: float, currency: str) -> RequestEvent | None:
        """The finished request as an event (None when it never got an operation type)."""
        if self.operation_type is None:
            return None
        served = self.outcome is Outcome.SERVED
        bill = self.bill
        efficient = (
            served
            and self.route is not None
            and self.route == self.first_tried
            and (self.budget_s is None or latency_s <= self.budget_s)
        )
        return RequestEvent(
            at=at,
            operation_type=self.operation_type,
            priority=self.priority,
            tenant=self.tenant,
            outcome=self.outcome,
            status=self.status,
            latency_s=latency_s,
            route=self.route,
            primary=self.primary,
            first_route=self.first_route,
            fallback=self.fallback and served,
            efficient=efficient,
            hedged=self.hedged,
            stream=self.stream,
            ttft_s=self.ttft_s,
            cache=self.cache,
            input_tokens=self.input_tokens,
            output_tokens=self.output_tokens,
            cost=bill.cost if bill is not None else self.cost,
            currency=currency,
            billed_input_tokens=bill.input_tokens if bill is not None else 0,
            billed_output_tokens=bill.output_tokens if bill is not None else 0,
            error_code=self.error_code,
            model=self.model,
            budget_level=self.budget[0] if self.budget else None,
            budget_utilisation=self.budget[1] if self.budget else None,
            decision_id=self.decision_id,
            reason=self.reason,
            attempts=self.attempts,
            subject=self.subject,
            residency=self.residency,
        )
