"""The health board: one health snapshot per route for the decision policy.

A route is as healthy as the worst of three views: its own readiness (credentials found, MCP
session connected), its active health probes while monitoring is on (unhealthy after
`unhealthy_after` failed probes in a row), and its circuit breaker (passive health from real
traffic). With monitoring off, probes are neither run nor consulted.
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

    __slots__ = ("_breakers", "_monitoring", "_probes", "_readiness", "_unhealthy_after")

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

    def breaker(self, route: RouteId) -> CircuitBreaker:
        return self._breakers[route]

    def probes(self, route: RouteId) -> ProbeHistory:
        return self._probes[route]

    def record_probe(self, route: RouteId, result: ProbeResult) -> None:
        """A probe finished: remember it and let the route's breaker hear it."""
        self._probes[route].add(result)
        self._breakers[route].record_probe(result.ok, result.error)

    def route_health(self, route: RouteId) -> RouteHealth:
        ready = self._readiness[route]()
        if ready.status is HealthStatus.UNHEALTHY:
            return ready
        if self._monitoring():
            history = self._probes[route]
            failures = history.consecutive_failures
            if failures >= self._unhealthy_after:
                return RouteHealth(
                    HealthStatus.UNHEALTHY,
                    f"health probes failing ({failures} in a row): {history.last_error()}",
                )
        return self._breakers[route].health()

    def view(self) -> dict[RouteId, RouteHealth]:
        """Health of every route now."""
        return {route: self.route_health(route) for route in self._breakers}

    def snapshots(self) -> dict[RouteId, BreakerSnapshot]:
        return {route: breaker.snapshot() for route, breaker in self._breakers.items()}

    def __repr__(self) -> str:
        parts = " ".join(f"{r}={h.status.value}" for r, h in self.view().items())
        return f"<HealthBoard {parts}>"
