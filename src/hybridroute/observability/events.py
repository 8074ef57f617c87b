"""What the gateway tells its observers about each finished request.

The chat endpoint builds one `RequestEvent` per request that got as far as a tenant and an
operation type (so not a malformed body), answered from the cache or a route, refused or
failed; the metrics, the SLO tracker and tracing read it. Building and handing it on is O(1).
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal
from enum import StrEnum

from hybridroute.types import Attempt, RouteId

__all__ = ["Outcome", "RequestEvent"]


class Outcome(StrEnum):
    """How a request ended, as its caller saw it."""

    SERVED = "served"  # answered by a route
    CACHED = "cached"  # answered from the response cache
    REFUSED = "refused"  # 4xx: the request itself, its budget, its residency, its key
    SHED = "shed"  # 429 overloaded: admission control
    FAILED = "failed"  # 5xx: no route served it, or the gateway failed
    INTERRUPTED = "interrupted"  # a stream cut off after its first byte
    ABANDONED = "abandoned"  # the client went away first

    @property
    def is_error(self) -> bool:
        """Counted by the error rate: the gateway or its routes failed the caller."""
        return self is Outcome.FAILED or self is Outcome.INTERRUPTED


@dataclass(frozen=True, slots=True)
class RequestEvent:
    """One finished request.

    `latency_s` is from the request's arrival to its last byte; `ttft_s` to a stream's first
    content (None for JSON answers). `route` is the route that answered (for a cache hit, the
    one that produced the entry). `first_route` and `primary` are the decision's first route
    and the matrix primary (None when the request was refused before a decision);
    `efficient` follows DESIGN.md §4 (served within budget by the first route tried).
    `input_tokens`/`output_tokens` are the answer's usage; `cost` and the `billed_*` tokens are
    everything the request's attempts were charged (a hedge race's loser, a timed-out attempt,
    a stream cut off), however it ended.
    """

    at: float  # wall-clock seconds
    operation_type: str
    priority: str
    tenant: str
    outcome: Outcome
    status: int
    latency_s: float
    route: RouteId | None = None
    primary: RouteId | None = None
    first_route: RouteId | None = None
    fallback: bool = False
    efficient: bool = False
    hedged: bool = False
    stream: bool = False
    ttft_s: float | None = None
    cache: str | None = None  # hit | miss | bypass | off
    input_tokens: int = 0
    output_tokens: int = 0
    cost: Decimal = Decimal(0)  # everything its attempts were charged
    currency: str = "USD"
    billed_input_tokens: int = 0  # ... and the tokens those charges count
    billed_output_tokens: int = 0
    error_code: str | None = None
    model: str | None = None
    budget_level: str | None = None  # normal | elevated | critical | exhausted, when budgeted
    budget_utilisation: float | None = None
    decision_id: str | None = None
    reason: str | None = None  # the decision's reason, in words
    attempts: tuple[Attempt, ...] = ()  # in the order they started
    subject: str | None = None  # the data subject's pseudonym (never the subject itself)
    residency: str | None = None  # the region set the request was held to

    @property
    def decided(self) -> bool:
        """The request reached a routing decision (it counts for the routing figures)."""
        return self.first_route is not None
