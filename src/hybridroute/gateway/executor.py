"""The executor: carries a decision out, attempt by attempt, inside the request's deadline.

For each route in decision order, and each retry the rule allows:
- an attempt with less than the route's `min_attempt_ms` left is not started (skipped);
- the route's breaker must admit it, except for the decision's `forced` route;
- an attempt that is not the last possible one gets at most `attempt_share` of the remaining
  time (default half), so a hung primary leaves its fallback time to answer;
- the error class decides what happens next: a retryable error retries the same route (after a
  jittered backoff that honours Retry-After) while tries remain, any route fault moves on to the
  next route, and a request fault (`UpstreamRejected`) stops at once — another route would
  reject it too.
When no route serves, `AllRoutesFailed` lists every attempt.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Generic, TypeVar

from hybridroute._clock import Clock
from hybridroute.errors import (
    UpstreamError,
    UpstreamProtocolError,
    UpstreamThrottled,
    UpstreamTimeout,
)
from hybridroute.gateway.attempts import Attempt, all_routes_failed
from hybridroute.gateway.streams import OpenStream
from hybridroute.providers import Route
from hybridroute.resilience.breaker import CircuitBreaker, Permit
from hybridroute.resilience.health import HealthBoard
from hybridroute.routing.policy import Decision
from hybridroute.types import Completion, GenerationRequest, RouteId, StreamEvent

__all__ = ["Executor", "ExecutorSettings", "Served"]

log = logging.getLogger("hybridroute.executor")

T = TypeVar("T")
_Call = Callable[[Route, GenerationRequest, float], Awaitable[T]]


@dataclass(frozen=True, slots=True)
class ExecutorSettings:
    retry_backoff_s: float = 0.05
    retry_backoff_max_s: float = 1.0
    attempt_share: float = 0.5


@dataclass(frozen=True, slots=True)
class Served:
    """A request served by one route, with every attempt it took."""

    decision: Decision
    route: RouteId
    completion: Completion
    attempts: tuple[Attempt, ...]
    upstream_s: float

    @property
    def fallback(self) -> bool:
        return self.route != self.decision.primary


@dataclass(slots=True)
class _Win(Generic[T]):
    value: T
    route: Route
    breaker: CircuitBreaker
    permit: Permit
    started: float


async def _call_complete(route: Route, request: GenerationRequest, budget_s: float) -> Completion:
    return await route.complete(request, budget_s=budget_s)


async def _call_stream_open(
    route: Route, request: GenerationRequest, budget_s: float
) -> tuple[AsyncIterator[StreamEvent], StreamEvent]:
    events = route.stream(request, budget_s=budget_s)
    try:
        first = await anext(events)
    except BaseException:
        await events.aclose()  # type: ignore[attr-defined]
        raise
    return events, first


class Executor:
    """Runs decisions against routes, with breakers, deadlines, retries and fallback."""

    def __init__(
        self,
        routes: Mapping[RouteId, Route],
        health: HealthBoard,
        clock: Clock,
        settings: ExecutorSettings | None = None,
        *,
        rng: random.Random | None = None,
    ) -> None:
        self._routes = dict(routes)
        self._health = health
        self._clock = clock
        self._settings = settings or ExecutorSettings()
        self._rng = rng or random.Random()

    async def complete(self, decision: Decision, request: GenerationRequest) -> Served:
        """Serve a request as one completion."""
        attempts: list[Attempt] = []
        win = await self._first_success(decision, request, attempts, _call_complete)
        elapsed = self._clock.monotonic() - win.started
        win.breaker.record_success(win.permit, elapsed)
        attempts.append(Attempt(win.route.id, "ok", elapsed * 1000.0))
        return Served(
            decision=decision,
            route=win.route.id,
            completion=win.value,
            attempts=tuple(attempts),
            upstream_s=sum(a.duration_ms for a in attempts) / 1000.0,
        )

    async def open_stream(self, decision: Decision, request: GenerationRequest) -> OpenStream:
        """Start a stream: fall back freely until a route yields its first event."""
        attempts: list[Attempt] = []
        win = await self._first_success(decision, request, attempts, _call_stream_open)
        events, first = win.value
        to_first = self._clock.monotonic() - win.started
        attempts.append(Attempt(win.route.id, "ok", to_first * 1000.0))
        return OpenStream(
            decision=decision,
            route_client=win.route,
            model=win.route.model_for(decision.rule.operation_type),
            events_source=events,
            first=first,
            breaker=win.breaker,
            permit=win.permit,
            attempts=tuple(attempts),
            clock=self._clock,
            started=win.started,
            upstream_s=sum(a.duration_ms for a in attempts) / 1000.0,
        )

    async def _first_success(
        self,
        decision: Decision,
        request: GenerationRequest,
        attempts: list[Attempt],
        call: _Call[T],
    ) -> _Win[T]:
        tries = 1 + decision.rule.retries
        last_route = len(decision.routes) - 1
        for index, route_id in enumerate(decision.routes):
            route = self._routes[route_id]
            breaker = self._health.breaker(route_id)
            for attempt_no in range(tries):
                more_after = attempt_no + 1 < tries or index < last_route
                permit = self._admit(decision, route, breaker, attempts)
                if permit is None:
                    break
                win_or_error = await self._attempt(
                    decision, route, breaker, permit, request, call, more_after
                )
                if isinstance(win_or_error, _Win):
                    return win_or_error
                error, elapsed = win_or_error
                attempts.append(
                    Attempt(
                        route_id,
                        "failed",
                        elapsed * 1000.0,
                        error.summary(),
                        error.code,
                        type(error),
                    )
                )
                if not error.fallback:
                    raise error
                if not (error.retryable and attempt_no + 1 < tries):
                    break
                if not await self._backoff(decision, route, attempt_no, error):
                    break
        raise all_routes_failed(decision.rule.operation_type, decision.decision_id, attempts)

    def _admit(
        self,
        decision: Decision,
        route: Route,
        breaker: CircuitBreaker,
        attempts: list[Attempt],
    ) -> Permit | None:
        remaining = decision.deadline - self._clock.monotonic()
        if remaining < route.min_attempt_s:
            attempts.append(
                Attempt(
                    route.id,
                    "skipped",
                    0.0,
                    f"deadline: {max(remaining, 0.0) * 1000:.0f} ms left, the route needs at "
                    f"least {route.min_attempt_s * 1000:.0f} ms",
                    "deadline",
                )
            )
            return None
        permit = breaker.try_acquire()
        if permit is None and route.id == decision.forced:
            permit = breaker.acquire_forced()
        if permit is None:
            attempts.append(
                Attempt(route.id, "skipped", 0.0, breaker.health().detail, "breaker_open")
            )
        return permit

    async def _attempt(
        self,
        decision: Decision,
        route: Route,
        breaker: CircuitBreaker,
        permit: Permit,
        request: GenerationRequest,
        call: _Call[T],
        more_after: bool,
    ) -> _Win[T] | tuple[UpstreamError, float]:
        clock = self._clock
        remaining = decision.deadline - clock.monotonic()
        budget = min(route.timeout_s, remaining)
        if more_after:
            shared = remaining * self._settings.attempt_share
            if shared >= route.min_attempt_s:
                budget = min(budget, shared)
        started = clock.monotonic()
        error: UpstreamError
        try:
            async with asyncio.timeout(budget):
                value = await call(route, request, budget)
        except UpstreamError as exc:
            error = exc
        except TimeoutError:
            error = UpstreamTimeout(route.id, f"no answer within {budget * 1000:.0f} ms")
        except asyncio.CancelledError:
            breaker.release(permit)
            raise
        except Exception as exc:  # a bug in one route must not fail the whole request
            log.exception("route %s raised an unmapped exception", route.id)
            error = UpstreamProtocolError(
                route.id, f"route client failed: {type(exc).__name__}: {exc}"
            )
        else:
            return _Win(value, route, breaker, permit, started)
        elapsed = clock.monotonic() - started
        if error.counts_against_route:
            breaker.record_failure(permit, error.summary())
        else:
            breaker.release(permit)
        return error, elapsed

    async def _backoff(
        self, decision: Decision, route: Route, attempt_no: int, error: UpstreamError
    ) -> bool:
        """Sleep before a retry; False when the retry could not finish in time anyway."""
        s = self._settings
        wait = min(s.retry_backoff_s * 2**attempt_no, s.retry_backoff_max_s)
        wait *= self._rng.uniform(0.5, 1.5)
        if isinstance(error, UpstreamThrottled) and error.retry_after_s is not None:
            wait = max(wait, error.retry_after_s)
        left_after = decision.deadline - self._clock.monotonic() - wait
        if left_after < route.min_attempt_s:
            return False
        await self._clock.sleep(wait)
        return True
