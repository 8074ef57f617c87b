"""Attempts: what happened on each try of each route, and the error when none served.

The attempt list is what the caller sees when every route failed (in the error body), what
the `x-hybridroute-attempts` header summarises on success after a fallback, and what the health
monitor reads. It is in the order the attempts *started* (`AttemptLog`): a hedged request lists
its primary first even when the hedge finished first, so "the first route tried" is the primary.
"""

from __future__ import annotations

from collections.abc import Sequence

from hybridroute.errors import AllRoutesFailed, UpstreamThrottled, UpstreamTimeout
from hybridroute.errors import UpstreamUnavailable as _Unavailable
from hybridroute.types import Attempt, AttemptOutcome, RouteId

__all__ = ["DEADLINE_CODES", "Attempt", "AttemptLog", "all_routes_failed", "summarise"]

DEADLINE_CODES = frozenset({"deadline", "queue_deadline"})
"""Codes of attempts skipped because the request's deadline could not be met."""


class AttemptLog:
    """One request's attempts, in the order they started.

    An attempt that is still running holds its place (`start()` returns it); `finish()` fills the
    place in once its outcome is known, so attempts that overlap (a hedge) keep their start
    order whatever order they end in. Attempts that were never started (skipped) are `add`ed.
    """

    __slots__ = ("_entries", "_running")

    def __init__(self) -> None:
        self._entries: list[Attempt | None] = []
        self._running: dict[int, RouteId] = {}

    def add(self, attempt: Attempt) -> None:
        """Record an attempt that is already over (or was never started)."""
        self._entries.append(attempt)

    def start(self, route: RouteId) -> int:
        """Hold a place for an attempt on `route` that starts now; returns the place."""
        self._entries.append(None)
        place = len(self._entries) - 1
        self._running[place] = route
        return place

    def finish(self, place: int, attempt: Attempt) -> None:
        """Fill in the outcome of the attempt started at `place`."""
        self._entries[place] = attempt
        self._running.pop(place, None)

    def in_flight(self) -> tuple[RouteId, ...]:
        """Routes of attempts that started and have no outcome (e.g. the request was cancelled
        while they ran): the upstream may have worked on them."""
        return tuple(self._running.values())

    @property
    def any_recorded(self) -> bool:
        """Whether an attempt has ended or been skipped (time may have been spent already)."""
        return any(entry is not None for entry in self._entries)

    def done(self) -> tuple[Attempt, ...]:
        """The attempts with an outcome, in start order (one still running is left out)."""
        return tuple(entry for entry in self._entries if entry is not None)

    def __repr__(self) -> str:
        return f"<AttemptLog {summarise(self.done()) or 'empty'}>"


def summarise(attempts: Sequence[Attempt]) -> str:
    """A compact header value: `direct_bedrock:failed,mcp:ok`."""
    return ",".join(f"{a.route}:{a.outcome}" for a in attempts)


def all_routes_failed(
    operation_type: str, decision_id: str, attempts: Sequence[Attempt]
) -> AllRoutesFailed:
    """The error for a decision none of whose routes served the request."""
    tried = [a for a in attempts if a.outcome is AttemptOutcome.FAILED]
    if not tried:
        # Nothing ran: a request whose deadline could not be met (too little time left, or
        # too long a queue) is a timeout; one whose routes were all down is unavailability.
        late = any(a.code in DEADLINE_CODES for a in attempts)
        status = 504 if late else 503
    elif tried[-1].error_class is UpstreamTimeout:
        status = 504
    elif all(
        a.error_class is not None and issubclass(a.error_class, (_Unavailable, UpstreamThrottled))
        for a in tried
    ):
        status = 503
    else:
        status = 502
    listing = "; ".join(
        f"{a.route} {a.outcome}" + (f" ({a.detail})" if a.detail else "") for a in attempts
    )
    routes = ", ".join(dict.fromkeys(a.route for a in attempts)) or "no route"
    when = " before its deadline" if not tried and status == 504 else ""
    message = f"{operation_type} request could not be served{when} by {routes}: {listing}"
    return AllRoutesFailed(
        message,
        status=status,
        decision_id=decision_id,
        attempts=[a.as_dict() for a in attempts],
    )
