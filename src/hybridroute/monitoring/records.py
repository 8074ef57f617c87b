"""What the monitor is told about each request: its decision, its attempts and how it ended.

The executor builds one `RequestRecord` per request that got a decision (requests refused before
that — malformed, over budget, outside residency — are not routing events). The three routing
metrics are defined on these records exactly as DESIGN.md §4 defines them.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from hybridroute.types import Attempt, AttemptOutcome, Priority, RouteId

__all__ = ["HEDGE_CANCELLED", "RequestOutcome", "RequestRecord"]

HEDGE_CANCELLED = "hedge_cancelled"
"""The code of an attempt stopped because the other side of its hedge race answered first."""


class RequestOutcome(StrEnum):
    """How a request ended."""

    SERVED = "served"
    FAILED = "failed"  # no route served it
    SHED = "shed"  # refused by admission control (overload)
    INTERRUPTED = "interrupted"  # a stream failed after its first byte
    ABANDONED = "abandoned"  # the client went away first


@dataclass(frozen=True, slots=True)
class RequestRecord:
    """One request, as the monitor sees it."""

    operation_type: str
    priority: Priority
    primary: RouteId  # the matrix row's primary
    primary_eligible: bool  # the primary was allowed and healthy at decision time
    first_route: RouteId | None  # the decision's first route
    outcome: RequestOutcome
    served_route: RouteId | None
    latency_s: float  # decision to answer (to the stream's end for streams)
    budget_s: float
    attempts: tuple[Attempt, ...] = ()  # in the order they started
    hedged: bool = False  # a hedge started alongside the primary

    @property
    def served(self) -> bool:
        return self.outcome is RequestOutcome.SERVED

    @property
    def within_budget(self) -> bool:
        return self.latency_s <= self.budget_s

    @property
    def first_tried(self) -> RouteId | None:
        """The first route an attempt was actually started on (else the decision's first).

        Attempts are in start order, so for a hedged request this is the race's primary even
        when the hedge finished (or was cancelled) first."""
        for attempt in self.attempts:
            if attempt.outcome is not AttemptOutcome.SKIPPED:
                return attempt.route
        return self.first_route

    @property
    def accurate(self) -> bool:
        """Counted for routing accuracy: the decision put the matrix primary first."""
        return self.first_route == self.primary

    @property
    def efficient(self) -> bool:
        """Counted for routing efficiency: served in budget by the first route tried."""
        return self.served and self.within_budget and self.served_route == self.first_tried

    @property
    def fallback(self) -> bool:
        """Counted for the fallback rate: served by a route other than the rule's primary."""
        return self.served and self.served_route != self.primary

    @property
    def hedge_loser(self) -> RouteId | None:
        """In a hedged request, the route whose attempt was cancelled because the other side of
        the race answered first (None when not hedged, or when neither side won)."""
        if not self.hedged:
            return None
        for attempt in self.attempts:
            if attempt.code == HEDGE_CANCELLED:
                return attempt.route
        return None
