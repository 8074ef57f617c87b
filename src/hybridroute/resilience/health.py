"""The health board: one health snapshot per route for the decision policy.

A route is as healthy as the worse of two views: its own readiness (credentials found, MCP
session connected) and its circuit breaker (passive health from real traffic). Active probes
feed the same breakers when health monitoring is on.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

from hybridroute.resilience.breaker import BreakerSnapshot, CircuitBreaker
from hybridroute.signals import HealthStatus, RouteHealth
from hybridroute.types import RouteId

__all__ = ["HealthBoard"]


class HealthBoard:
    """Merges each route's readiness with its breaker into the policy's health view."""

    __slots__ = ("_breakers", "_readiness")

    def __init__(
        self,
        breakers: Mapping[RouteId, CircuitBreaker],
        readiness: Mapping[RouteId, Callable[[], RouteHealth]],
    ) -> None:
        self._breakers = dict(breakers)
        self._readiness = dict(readiness)

    def breaker(self, route: RouteId) -> CircuitBreaker:
        return self._breakers[route]

    def route_health(self, route: RouteId) -> RouteHealth:
        ready = self._readiness[route]()
        if ready.status is HealthStatus.UNHEALTHY:
            return ready
        return self._breakers[route].health()

    def view(self) -> dict[RouteId, RouteHealth]:
        """Health of every route now."""
        return {route: self.route_health(route) for route in self._breakers}

    def snapshots(self) -> dict[RouteId, BreakerSnapshot]:
        return {route: breaker.snapshot() for route, breaker in self._breakers.items()}

    def __repr__(self) -> str:
        parts = " ".join(f"{r}={h.status.value}" for r, h in self.view().items())
        return f"<HealthBoard {parts}>"
