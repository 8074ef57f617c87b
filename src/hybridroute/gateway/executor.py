"""The executor: carries a decision out, attempt by attempt, inside the request's deadline.

For each route in decision order, and each retry the rule allows:
- an attempt that cannot finish in time is not started (skipped): the first attempt needs the
  route's `min_attempt_ms`; later ones also need the route's usual latency (its breaker's EWMA);
- the route's breaker must admit it, except for the decision's `forced` route;
- when a different, admissible route follows, an attempt gets at most `attempt_share` of the
  remaining time (default half), so a hung primary leaves its fallback time to answer; otherwise
  it gets all the time left;
- the error class decides what happens next: a retryable error retries the same route (after a
  jittered backoff that honours Retry-After) while tries remain — except a timeout, which has
  already spent its time; any route fault moves on to the next route; and a request fault
  (`UpstreamRejected`) stops at once — another route would reject it too.
A timeout counts against the route's breaker only when the attempt had a fair chance: at least
twice the route's usual latency (one second before any is known). A caller's short latency budget
therefore never fails a healthy route over for everyone.
When no route serves, `AllRoutesFailed` lists every attempt.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Generic, TypeVar

from hybridroute._aio import Deadline, LoopCache
from hybridroute._clock import Clock
from hybridroute.errors import (
    GatewayError,
    UpstreamError,
    UpstreamProtocolError,
    UpstreamThrottled,
    UpstreamTimeout,
)
from hybridroute.gateway.attempts import all_routes_failed
from hybridroute.gateway.streams import OpenStream
from hybridroute.monitoring.records import RequestOutcome, RequestRecord
from hybridroute.providers import Route
from hybridroute.resilience.breaker import CircuitBreaker, Permit
from hybridroute.resilience.health import HealthBoard
from hybridroute.routing.policy import Decision
from hybridroute.types import (
    Attempt,
    AttemptOutcome,
    Completion,
    GenerationRequest,
    RouteId,
    StreamEvent,
    StreamStart,
)

__all__ = ["Executor", "ExecutorSettings", "Served"]

log = logging.getLogger("hybridroute.executor")

T = TypeVar("T")
_Call = Callable[[Route, GenerationRequest, float], Awaitable[T]]
Observer = Callable[[RequestRecord], None]


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
) -> tuple[AsyncIterator[StreamEvent], StreamEvent, str]:
    """Open a route's stream and wait for its first content (or its end).

    A `StreamStart` only names the model; the stream counts as started (and fallback is no
    longer possible) once text or the end arrives.
    """
    events = route.stream(request, budget_s=budget_s)
    model = route.model_for(request.operation_type)
    try:
        first = await anext(events)
        while isinstance(first, StreamStart):
            model = first.model
            first = await anext(events)
    except BaseException:
        await events.aclose()  # type: ignore[attr-defined]
        raise
    return events, first, model


_COLD_PATIENCE_S = 1.0


def _patience(breaker: CircuitBreaker) -> float:
    """How long a route must have had before its timeout is its own fault."""
    usual = breaker.latency_ewma_s
    return _COLD_PATIENCE_S if usual is None else 2.0 * usual


class Executor:
    """Runs decisions against routes, with breakers, deadlines, retries and fallback."""

    def __init__(
        self,
        routes: Mapping[RouteId, Route],
        health: HealthBoard,
        clock: Clock,
        settings: ExecutorSettings | None = None,
        *,
        observe: Observer | None = None,
        rng: random.Random | None = None,
    ) -> None:
        self._routes = dict(routes)
        self._health = health
        self._clock = clock
        self._settings = settings or ExecutorSettings()
        self._observe = observe
        self._rng = rng or random.Random()
        self._loop = LoopCache()

    def _record(
        self,
        decision: Decision,
        outcome: RequestOutcome,
        served_route: RouteId | None,
        attempts: Sequence[Attempt],
    ) -> None:
        """Tell the monitor how a request ended."""
        if self._observe is None:
            return
        rule = decision.rule
        self._observe(
            RequestRecord(
                operation_type=rule.operation_type,
                priority=rule.priority,
                primary=rule.primary,
                primary_eligible=decision.primary_eligible,
                first_route=decision.routes[0] if decision.routes else None,
                outcome=outcome,
                served_route=served_route,
                latency_s=self._clock.monotonic() - decision.decided_at,
                budget_s=decision.budget_ms / 1000.0,
                attempts=tuple(attempts),
            )
        )

    async def _serve(
        self,
        decision: Decision,
        request: GenerationRequest,
        attempts: list[Attempt],
        call: _Call[T],
    ) -> _Win[T]:
        """Find the first route that serves; a request that ends here unserved is recorded."""
        try:
            return await self._first_success(decision, request, attempts, call)
        except GatewayError:
            self._record(decision, RequestOutcome.FAILED, None, attempts)
            raise
        except asyncio.CancelledError:
            self._record(decision, RequestOutcome.ABANDONED, None, attempts)
            raise

    async def complete(self, decision: Decision, request: GenerationRequest) -> Served:
        """Serve a request as one completion."""
        attempts: list[Attempt] = []
        win = await self._serve(decision, request, attempts, _call_complete)
        elapsed = self._clock.monotonic() - win.started
        win.breaker.record_success(win.permit, elapsed)
        completion = win.value
        # Upstream time: what the winning route waited on its upstream (or, if it could not
        # say, its whole attempt), plus every failed attempt before it.
        waited = completion.upstream_s or elapsed
        failed = sum(a.duration_ms for a in attempts) / 1000.0
        attempts.append(Attempt(win.route.id, AttemptOutcome.OK, elapsed * 1000.0))
        self._record(decision, RequestOutcome.SERVED, win.route.id, attempts)
        return Served(
            decision=decision,
            route=win.route.id,
            completion=completion,
            attempts=tuple(attempts),
            upstream_s=failed + waited,
        )

    async def open_stream(self, decision: Decision, request: GenerationRequest) -> OpenStream:
        """Start a stream: fall back freely until a route yields its first event."""
        attempts: list[Attempt] = []
        win = await self._serve(decision, request, attempts, _call_stream_open)
        events, first, model = win.value
        to_first = self._clock.monotonic() - win.started
        attempts.append(Attempt(win.route.id, AttemptOutcome.OK, to_first * 1000.0))
        return OpenStream(
            decision=decision,
            route_client=win.route,
            model=model,
            events_source=events,
            first=first,
            breaker=win.breaker,
            permit=win.permit,
            attempts=tuple(attempts),
            clock=self._clock,
            loop=self._loop.get(),
            started=win.started,
            upstream_s=sum(a.duration_ms for a in attempts) / 1000.0,
            on_end=self._record,
        )

    async def _first_success(
        self,
        decision: Decision,
        request: GenerationRequest,
        attempts: list[Attempt],
        call: _Call[T],
    ) -> _Win[T]:
        tries = 1 + decision.rule.retries
        for index, route_id in enumerate(decision.routes):
            route = self._routes[route_id]
            breaker = self._health.breaker(route_id)
            share = self._fallback_ready(decision, index)
            for attempt_no in range(tries):
                permit = self._admit(decision, route, breaker, attempts)
                if permit is None:
                    break
                win_or_error = await self._attempt(
                    decision, route, breaker, permit, request, call, share
                )
                if isinstance(win_or_error, _Win):
                    return win_or_error
                error, elapsed = win_or_error
                attempts.append(
                    Attempt(
                        route_id,
                        AttemptOutcome.FAILED,
                        elapsed * 1000.0,
                        error.summary(),
                        error.code,
                        type(error),
                    )
                )
                if not error.fallback:
                    raise error
                retry = error.retryable and not isinstance(error, UpstreamTimeout)
                if not (retry and attempt_no + 1 < tries):
                    break
                if not await self._backoff(decision, route, attempt_no, error):
                    break
        raise all_routes_failed(decision.rule.operation_type, decision.decision_id, attempts)

    def _fallback_ready(self, decision: Decision, index: int) -> bool:
        """Whether a different route after `index` could take over (so time must be shared)."""
        for route_id in decision.routes[index + 1 :]:
            if route_id == decision.forced or self._health.route_health(route_id).usable:
                return True
        return False

    def _admit(
        self,
        decision: Decision,
        route: Route,
        breaker: CircuitBreaker,
        attempts: list[Attempt],
    ) -> Permit | None:
        remaining = decision.deadline - self._clock.monotonic()
        needed = route.min_attempt_s
        usual = breaker.latency_ewma_s
        if attempts and usual is not None:
            # Time has been spent already: an attempt shorter than the route's usual latency
            # would most likely be wasted.
            needed = max(needed, usual)
        if remaining < needed:
            attempts.append(
                Attempt(
                    route.id,
                    AttemptOutcome.SKIPPED,
                    0.0,
                    f"deadline: {max(remaining, 0.0) * 1000:.0f} ms left, the route needs at "
                    f"least {needed * 1000:.0f} ms",
                    "deadline",
                )
            )
            return None
        permit = breaker.try_acquire()
        if permit is None and route.id == decision.forced:
            permit = breaker.acquire_forced()
        if permit is None:
            attempts.append(
                Attempt(
                    route.id, AttemptOutcome.SKIPPED, 0.0, breaker.health().detail, "breaker_open"
                )
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
        share: bool,
    ) -> _Win[T] | tuple[UpstreamError, float]:
        clock = self._clock
        remaining = decision.deadline - clock.monotonic()
        budget = min(route.timeout_s, remaining)
        if share:
            shared = remaining * self._settings.attempt_share
            if shared >= route.min_attempt_s:
                budget = min(budget, shared)
        started = clock.monotonic()
        error: UpstreamError
        counts = True
        try:
            async with Deadline(self._loop.get(), budget):
                value = await call(route, request, budget)
        except UpstreamError as exc:
            error = exc
            counts = exc.counts_against_route
        except TimeoutError:
            error = UpstreamTimeout(route.id, f"no answer within {budget * 1000:.0f} ms")
            counts = budget >= _patience(breaker)
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
        if counts:
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
