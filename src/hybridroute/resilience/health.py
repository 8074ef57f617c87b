"""The health board: one health snapshot per route for the decision policy and for reports.

A route is as healthy as the worst of three views: its own readiness (credentials found, MCP
session connected), its active health probes while monitoring is on (unhealthy after
`unhealthy_after` failed probes in a row), and its circuit breaker (passive health from real
traffic).

With monitoring off, probes are neither run nor consulted, and what they found is forgotten:
results arriving while it is off are dropped and the history is cleared, so turning monitoring
on again starts from the breakers' view rather than from failures recorded before. A probe
result also stops counting once it is older than its `fresh_s` (two probe intervals), so a
verdict cannot outlive the probing that produced it.

Two readings: `route_health` is the policy's — a half-open breaker whose trial is in flight
reads unhealthy, so the policy prefers another route meanwhile; `availability` is the status
reports' (support manager, health monitor) — any half-open breaker is a recovering route,
degraded rather than down.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

from hybridroute.resilience.breaker import BreakerSnapshot, CircuitBreaker
from hybridroute.resilience.probes import ProbeHistory, ProbeResult
from hybridroute.signals import HealthStatus, RouteHealth
from hybridroute.types import RouteId

__all__ = ["HealthBoard"]


class HealthBoard:
    """Merges each route's readiness, probes and breaker into the policy's health view."""

    __slots__ = (
        "_breakers",
        "_fleet",
        "_monitoring",
        "_probes",
        "_readiness",
        "_stale_at",
        "_unhealthy_after",
    )

    def __init__(
        self,
        breakers: Mapping[RouteId, CircuitBreaker],
        readiness: Mapping[RouteId, Callable[[], RouteHealth]],
        *,
        monitoring: Callable[[], bool] = lambda: False,
        unhealthy_after: int = 2,
    ) -> None:
        self._breakers = dict(breakers)
        self._readiness = dict(readiness)
        self._monitoring = monitoring
        self._unhealthy_after = unhealthy_after
        self._probes = {route: ProbeHistory() for route in self._breakers}
        # monotonic time after which a route's last probe result no longer counts (None: never)
        self._stale_at: dict[RouteId, float | None] = dict.fromkeys(self._breakers)
        # Other replicas' verdicts on routes (route -> health and when it stops standing).
        self._fleet: dict[RouteId, tuple[RouteHealth, float]] = {}

    def breaker(self, route: RouteId) -> CircuitBreaker:
        return self._breakers[route]

    def probes(self, route: RouteId) -> ProbeHistory:
        return self._probes[route]

    def record_probe(self, route: RouteId, result: ProbeResult) -> None:
        """A probe finished: remember it and let the route's breaker hear it. A result that
        arrives while monitoring is off (a probe already running when it was turned off) is
        dropped."""
        if not self._monitoring():
            self._forget(route)
            return
        breaker = self._breakers[route]
        self._probes[route].add(result)
        fresh = result.fresh_s
        self._stale_at[route] = None if fresh is None else breaker.clock.monotonic() + fresh
        breaker.record_probe(result.ok, result.error)

    def route_health(self, route: RouteId) -> RouteHealth:
        """The route's health for the decision policy (what other replicas of a fleet see
        included: a route healthy here but failing there is avoided here too)."""
        return self._with_fleet(route, self.local_health(route))

    def local_health(self, route: RouteId) -> RouteHealth:
        """The route's health as this process alone sees it (what it tells the fleet)."""
        return self._merged(route) or self._breakers[route].health()

    def availability(self, route: RouteId) -> RouteHealth:
        """The route's health for status reports: like `route_health`, except that a half-open
        breaker reads as recovering (PROBING) even while its trial request is in flight."""
        return self._with_fleet(route, self._merged(route) or self._breakers[route].availability())

    def fleet_report(self, route: RouteId, health: RouteHealth | None, for_s: float) -> None:
        """What other replicas see of `route` (None: nothing wrong), standing for `for_s`."""
        if health is None:
            self._fleet.pop(route, None)
        else:
            self._fleet[route] = (health, self._breakers[route].clock.monotonic() + for_s)

    def _with_fleet(self, route: RouteId, here: RouteHealth) -> RouteHealth:
        reported = self._fleet.get(route)
        if reported is None or here.status is not HealthStatus.HEALTHY:
            return here
        health, until = reported
        if self._breakers[route].clock.monotonic() >= until:
            del self._fleet[route]
            return here
        return health

    def _merged(self, route: RouteId) -> RouteHealth | None:
        """Readiness and probes' verdict when either makes the route unhealthy, else None."""
        ready = self._readiness[route]()
        if ready.status is HealthStatus.UNHEALTHY:
            return ready
        if not self._monitoring():
            self._forget(route)
            return None
        history = self._probes[route]
        failures = history.consecutive_failures
        if failures >= self._unhealthy_after and not self._stale(route):
            return RouteHealth(
                HealthStatus.UNHEALTHY,
                f"health probes failing ({failures} in a row): {history.last_error()}",
            )
        return None

    def _stale(self, route: RouteId) -> bool:
        stale_at = self._stale_at[route]
        return stale_at is not None and self._breakers[route].clock.monotonic() >= stale_at

    def _forget(self, route: RouteId) -> None:
        history = self._probes[route]
        if history.results:
            history.clear()
            self._stale_at[route] = None

    def view(self) -> dict[RouteId, RouteHealth]:
        """Health of every route now."""
        return {route: self.route_health(route) for route in self._breakers}

    def snapshots(self) -> dict[RouteId, BreakerSnapshot]:
        return {route: breaker.snapshot() for route, breaker in self._breakers.items()}

    def __repr__(self) -> str:
        parts = " ".join(f"{r}={h.status.value}" for r, h in self.view().items())
        return f"<HealthBoard {parts}>"
