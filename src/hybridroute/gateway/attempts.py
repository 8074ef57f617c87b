"""Attempts: what happened on each try of each route, and the error when none served.

The attempt list is what the caller sees when every route failed (in the error body) and what
the `x-hybridroute-attempts` header summarises on success after a fallback.
"""

from __future__ import annotations

from collections.abc import Sequence

from hybridroute.errors import AllRoutesFailed, UpstreamThrottled, UpstreamTimeout
from hybridroute.errors import UpstreamUnavailable as _Unavailable
from hybridroute.types import Attempt, AttemptOutcome

__all__ = ["Attempt", "all_routes_failed", "summarise"]


def summarise(attempts: Sequence[Attempt]) -> str:
    """A compact header value: `direct_bedrock:failed,mcp:ok`."""
    return ",".join(f"{a.route}:{a.outcome}" for a in attempts)


def all_routes_failed(
    operation_type: str, decision_id: str, attempts: Sequence[Attempt]
) -> AllRoutesFailed:
    """The error for a decision none of whose routes served the request."""
    tried = [a for a in attempts if a.outcome is AttemptOutcome.FAILED]
    if not tried:
        status = 503
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
    message = f"{operation_type} request could not be served by {routes}: {listing}"
    return AllRoutesFailed(
        message,
        status=status,
        decision_id=decision_id,
        attempts=[a.as_dict() for a in attempts],
    )
