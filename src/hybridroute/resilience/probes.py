"""Active health probes: one supervised task per route checks its upstream on an interval.

Probes run only while health monitoring is on (ENABLE_HYBRID_HEALTH_MONITORING); with it off the
health view is the breakers' passive one, and the probe history is dropped (`HealthBoard`).
Each probe is the route's own cheap check (a free Bedrock validation call, an MCP `tools/list`
— see `Route.probe`), bounded by a timeout, spaced by the interval with jitter so many gateways
do not probe in step. Results go to the health board, which marks a route unhealthy after
`unhealthy_after` failures in a row and lets a passing probe move an open breaker to half-open —
so a recovered upstream gets traffic back within two probe intervals instead of waiting out the
breaker's open time. Each result stands for two intervals (`ProbeResult.fresh_s`), no longer.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from hybridroute._clock import Clock
from hybridroute._tasks import TaskSupervisor
from hybridroute.config.schema import HealthConfig
from hybridroute.errors import UpstreamError
from hybridroute.providers import Route
from hybridroute.types import RouteId

__all__ = ["HealthProber", "ProbeHistory", "ProbeResult"]

log = logging.getLogger("hybridroute.probes")


@dataclass(frozen=True, slots=True)
class ProbeResult:
    """One probe of one route. `fresh_s`: how long the result stands for the route's health
    (two probe intervals, so a missed probe does not leave a stale verdict in force); None
    when it has no expiry."""

    ok: bool
    latency_s: float
    at: float
    error: str | None = None
    fresh_s: float | None = None


class ProbeHistory:
    """A route's recent probes: the last results and the current run of passes or failures."""

    __slots__ = ("consecutive_failures", "consecutive_successes", "results")

    def __init__(self, keep: int = 50) -> None:
        self.results: deque[ProbeResult] = deque(maxlen=keep)
        self.consecutive_failures = 0
        self.consecutive_successes = 0

    def clear(self) -> None:
        """Forget every result (monitoring was turned off: they will be stale when it is on)."""
        self.results.clear()
        self.consecutive_failures = 0
        self.consecutive_successes = 0

    def add(self, result: ProbeResult) -> None:
        self.results.append(result)
        if result.ok:
            self.consecutive_successes += 1
            self.consecutive_failures = 0
        else:
            self.consecutive_failures += 1
            self.consecutive_successes = 0

    @property
    def last(self) -> ProbeResult | None:
        return self.results[-1] if self.results else None

    def last_error(self) -> str | None:
        for result in reversed(self.results):
            if not result.ok:
                return result.error
        return None


class HealthProber:
    """Runs each route's probe on the configured interval while monitoring is enabled."""

    def __init__(
        self,
        routes: Mapping[RouteId, Route],
        record: Callable[[RouteId, ProbeResult], None],
        enabled: Callable[[], bool],
        settings: HealthConfig,
        clock: Clock,
        supervisor: TaskSupervisor,
    ) -> None:
        self._routes = dict(routes)
        self._record = record
        self._enabled = enabled
        self._settings = settings
        self._clock = clock
        self._supervisor = supervisor
        self._rng = random.Random()

    def start(self) -> None:
        for route_id, route in self._routes.items():
            if route.probe_kind != "none":
                self._supervisor.spawn(self._run(route_id), name=f"probe-{route_id}")

    def fresh_s(self) -> float:
        """How long a probe result stands: two of the longest intervals between probes."""
        settings = self._settings
        return 2.0 * settings.probe_interval_s * (1.0 + settings.probe_jitter)

    def _interval(self) -> float:
        spread = self._settings.probe_jitter
        return self._settings.probe_interval_s * self._rng.uniform(1 - spread, 1 + spread)

    async def _run(self, route_id: RouteId) -> None:
        while True:
            await self._clock.sleep(self._interval())
            if self._enabled():
                await self.probe(route_id)

    async def probe(self, route_id: RouteId) -> ProbeResult:
        """Probe one route now and record the result."""
        route = self._routes[route_id]
        timeout = self._settings.probe_timeout_s
        started = self._clock.monotonic()
        error: str | None = None
        try:
            async with asyncio.timeout(timeout):
                await route.probe(budget_s=timeout)
        except UpstreamError as exc:
            error = exc.summary()
        except TimeoutError:
            error = f"no answer within {timeout:g}s"
        except Exception as exc:  # a probe bug must not stop the probing
            log.exception("probe of route %s failed unexpectedly", route_id)
            error = f"{type(exc).__name__}: {exc}"
        result = ProbeResult(
            ok=error is None,
            latency_s=self._clock.monotonic() - started,
            at=self._clock.now(),
            error=error,
            fresh_s=self.fresh_s(),
        )
        self._record(route_id, result)
        return result
