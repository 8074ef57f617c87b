"""The executor: carries a decision out, attempt by attempt, inside the request's deadline.

For each route in decision order, and each retry the rule allows:
- an attempt that cannot finish in time is not started (skipped): the first attempt needs the
  route's `min_attempt_ms`; later ones also need the route's usual latency (its breaker's EWMA);
- the route's breaker must admit it, except for the decision's `forced` route;
- the route's admission control must give it a slot (`resilience.admission`): it may wait in
  the route's priority queue, or be refused (saturated, or no time left to wait) — a refused
  attempt is skipped and the next route tried. When every route was refused for saturation the
  request is shed with 429 (`Overloaded`); when nothing could start and a route was refused
  because the deadline could not be met (queue too long, or too little time left) it fails at
  once with 504; otherwise (some route skipped for its breaker, or tried and failed) it is
  `AllRoutesFailed`;
- when a different, admissible route follows, an attempt gets at most `attempt_share` of the
  remaining time (default half), so a hung primary leaves its fallback time to answer; otherwise
  it gets all the time left. A stream's first attempt is capped by the rule's time-to-first-
  token limit instead, when it has one;
- the error class decides what happens next: a retryable error retries the same route (after a
  jittered backoff that honours Retry-After) while tries remain — except a timeout, which has
  already spent its time; any route fault moves on to the next route; and a request fault
  (`UpstreamRejected`) stops at once — another route would reject it too.

Hedging (`decision.hedge`): the primary gets the whole remaining time instead of a share, and if
it has not answered after the hedge delay — its observed p95, or the rule's fraction of the
budget — the fallback starts too (if it can be admitted without queueing). The first success
wins; the other attempt is cancelled and recorded as `cancelled`, so its cost can still be
counted. A stream is hedged only while neither route has produced its first event.

A timeout counts against the route's breaker when the attempt had a fair chance: at least twice
the route's usual latency (one second before any is known), so a caller's short latency budget
never fails a healthy route over for everyone. A timeout set by the rule's own time-to-first-token
limit always counts: that limit is the operator's statement of what the route owes.

Attempts are listed in the order they started (`AttemptLog`), in the error when no route
serves, in `Served.attempts` / `OpenStream.attempts` and in the record every request's outcome
leaves with the health monitor.
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
    Overloaded,
    UpstreamError,
    UpstreamProtocolError,
    UpstreamThrottled,
    UpstreamTimeout,
)
from hybridroute.gateway.attempts import AttemptLog, all_routes_failed
from hybridroute.gateway.streams import OpenStream
from hybridroute.monitoring import HybridHealthMonitor
from hybridroute.monitoring.records import HEDGE_CANCELLED, RequestOutcome, RequestRecord
from hybridroute.providers import Route
from hybridroute.resilience.admission import AdmissionControl, AdmissionRefused, Refusal, Slot
from hybridroute.resilience.breaker import CircuitBreaker, Permit
from hybridroute.resilience.health import HealthBoard
from hybridroute.routing.policy import Decision
from hybridroute.types import (
    Attempt,
    AttemptOutcome,
    Completion,
    GenerationRequest,
    Priority,
    RouteId,
    StreamEvent,
    StreamStart,
)

__all__ = ["Executor", "ExecutorSettings", "Served"]

log = logging.getLogger("hybridroute.executor")

T = TypeVar("T")
_Call = Callable[[Route, GenerationRequest, float], Awaitable[T]]
_Discard = Callable[[T], Awaitable[None]]
_StreamOpen = tuple[AsyncIterator[StreamEvent], StreamEvent, str]


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
    hedged: bool = False

    @property
    def fallback(self) -> bool:
        return self.route != self.decision.primary


@dataclass(slots=True)
class _Ticket:
    """What an admitted attempt holds: its route, breaker permit and admission slot. Settled
    exactly once: with a success, a failure, or given back without an outcome."""

    route: Route
    breaker: CircuitBreaker
    permit: Permit
    slot: Slot | None
    settled: bool = False

    def succeed(self, latency_s: float) -> None:
        if not self.settled:
            self.settled = True
            self.breaker.record_success(self.permit, latency_s)
            self._free_slot()

    def fail(self, error: str) -> None:
        if not self.settled:
            self.settled = True
            self.breaker.record_failure(self.permit, error)
            self._free_slot()

    def release(self) -> None:
        """Give everything back without an outcome."""
        if not self.settled:
            self.settled = True
            self.breaker.release(self.permit)
            self._free_slot()

    def _free_slot(self) -> None:
        if self.slot is not None:
            self.slot.release()


@dataclass(slots=True)
class _Win(Generic[T]):
    value: T
    ticket: _Ticket
    started: float
    place: int  # the attempt's place in the request's AttemptLog
    hedged: bool = False

    @property
    def route(self) -> Route:
        return self.ticket.route


@dataclass(frozen=True, slots=True)
class _Racer:
    """One side of a hedge race: its ticket, when it started, and its place in the log."""

    ticket: _Ticket
    started: float
    place: int


@dataclass(slots=True)
class _Failure:
    error: UpstreamError
    elapsed: float
    place: int


async def _call_complete(route: Route, request: GenerationRequest, budget_s: float) -> Completion:
    return await route.complete(request, budget_s=budget_s)


async def _no_discard(value: object) -> None:
    return None


async def _call_stream_open(
    route: Route, request: GenerationRequest, budget_s: float
) -> _StreamOpen:
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


async def _discard_stream(value: _StreamOpen) -> None:
    await value[0].aclose()  # type: ignore[attr-defined]


_COLD_PATIENCE_S = 1.0


def _patience(breaker: CircuitBreaker) -> float:
    """How long a route must have had before its timeout is its own fault."""
    usual = breaker.latency_ewma_s
    return _COLD_PATIENCE_S if usual is None else 2.0 * usual


class Executor:
    """Runs decisions against routes, with breakers, admission, deadlines, retries, fallback
    and hedging."""

    def __init__(
        self,
        routes: Mapping[RouteId, Route],
        health: HealthBoard,
        clock: Clock,
        settings: ExecutorSettings | None = None,
        *,
        admission: Mapping[RouteId, AdmissionControl] | None = None,
        monitor: HybridHealthMonitor | None = None,
    ) -> None:
        self._routes = dict(routes)
        self._health = health
        self._clock = clock
        self._settings = settings or ExecutorSettings()
        self._admission = dict(admission or {})
        self._monitor = monitor
        self._rng = random.Random()  # retry jitter
        self._loop = LoopCache()

    # -- the two entry points --------------------------------------------------------------------

    async def complete(
        self, decision: Decision, request: GenerationRequest, log: AttemptLog | None = None
    ) -> Served:
        """Serve a request as one completion. A caller that passes `log` can read the attempts
        (and those still in flight) when this raises."""
        log_ = log if log is not None else AttemptLog()
        win = await self._serve(decision, request, log_, _call_complete, _no_discard)
        elapsed = self._clock.monotonic() - win.started
        win.ticket.succeed(elapsed)
        completion = win.value
        # Upstream time: what the winning route waited on its upstream (or, if it could not
        # say, its whole attempt), plus every failed attempt (not a hedge's loser, which ran
        # alongside).
        waited = completion.upstream_s or elapsed
        log_.finish(win.place, Attempt(win.route.id, AttemptOutcome.OK, elapsed * 1000.0))
        attempts = log_.done()
        failed = sum(a.duration_ms for a in attempts if a.outcome is AttemptOutcome.FAILED)
        self._record(decision, RequestOutcome.SERVED, win.route.id, attempts, win.hedged)
        return Served(
            decision=decision,
            route=win.route.id,
            completion=completion,
            attempts=attempts,
            upstream_s=failed / 1000.0 + waited,
            hedged=win.hedged,
        )

    async def open_stream(
        self, decision: Decision, request: GenerationRequest, log: AttemptLog | None = None
    ) -> OpenStream:
        """Start a stream: fall back (or hedge) freely until a route yields its first event.
        `log` as for `complete`."""
        log_ = log if log is not None else AttemptLog()
        win = await self._serve(
            decision,
            request,
            log_,
            _call_stream_open,
            _discard_stream,
            cap_s=decision.rule.ttft_timeout_s,
        )
        events, first, model = win.value
        to_first = self._clock.monotonic() - win.started
        log_.finish(win.place, Attempt(win.route.id, AttemptOutcome.OK, to_first * 1000.0))
        attempts = log_.done()
        ticket = win.ticket
        return OpenStream(
            decision=decision,
            route_client=win.route,
            model=model,
            events_source=events,
            first=first,
            breaker=ticket.breaker,
            permit=ticket.permit,
            attempts=attempts,
            clock=self._clock,
            loop=self._loop.get(),
            started=win.started,
            first_event_s=to_first,
            upstream_s=sum(
                a.duration_ms for a in attempts if a.outcome is not AttemptOutcome.CANCELLED
            )
            / 1000.0,
            on_end=self._record,
            slot=ticket.slot,
            hedged=win.hedged,
        )

    # -- recording -------------------------------------------------------------------------------

    def _record(
        self,
        decision: Decision,
        outcome: RequestOutcome,
        served_route: RouteId | None,
        attempts: Sequence[Attempt],
        hedged: bool = False,
    ) -> None:
        """Tell the monitor how a request ended."""
        if self._monitor is None:
            return
        rule = decision.rule
        self._monitor.record(
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
                hedged=hedged,
            )
        )

    async def _serve(
        self,
        decision: Decision,
        request: GenerationRequest,
        attempts: AttemptLog,
        call: _Call[T],
        discard: _Discard[T],
        *,
        cap_s: float | None = None,
    ) -> _Win[T]:
        """Find the first route that serves; a request that ends here unserved is recorded."""
        try:
            start = 0
            if decision.hedge:
                won, start = await self._race(decision, request, attempts, call, discard, cap_s)
                if won is not None:
                    return won
            return await self._walk(decision, request, attempts, call, cap_s, start)
        except Overloaded:
            self._record(decision, RequestOutcome.SHED, None, attempts.done())
            raise
        except GatewayError:
            self._record(decision, RequestOutcome.FAILED, None, attempts.done())
            raise
        except asyncio.CancelledError:
            self._record(decision, RequestOutcome.ABANDONED, None, attempts.done())
            raise

    # -- one route after the other ---------------------------------------------------------------

    async def _walk(
        self,
        decision: Decision,
        request: GenerationRequest,
        attempts: AttemptLog,
        call: _Call[T],
        cap_s: float | None,
        start: int,
    ) -> _Win[T]:
        tries = 1 + decision.rule.retries
        for index in range(start, len(decision.routes)):
            route = self._routes[decision.routes[index]]
            share = self._fallback_ready(decision, index)
            for attempt_no in range(tries):
                ticket = await self._admit(decision, route, attempts, wait=True)
                if ticket is None:
                    break
                budget = self._budget(decision, route, share=share, cap_s=cap_s)
                outcome = await self._attempt(
                    ticket, request, call, budget, attempts.start(route.id), capped=budget == cap_s
                )
                if isinstance(outcome, _Win):
                    return outcome
                error = self._failed(route.id, outcome, attempts)
                if not error.fallback:
                    raise error
                retry = error.retryable and not isinstance(error, UpstreamTimeout)
                if not (retry and attempt_no + 1 < tries):
                    break
                if not await self._backoff(decision, route, attempt_no, error):
                    break
        raise self._none_served(decision, attempts.done())

    def _failed(self, route: RouteId, failure: _Failure, attempts: AttemptLog) -> UpstreamError:
        error = failure.error
        attempts.finish(
            failure.place,
            Attempt(
                route,
                AttemptOutcome.FAILED,
                failure.elapsed * 1000.0,
                error.summary(),
                error.code,
                type(error),
            ),
        )
        return error

    def _none_served(self, decision: Decision, attempts: Sequence[Attempt]) -> GatewayError:
        """The error for a request no route served.

        Shed (429 `Overloaded`) only when every route refused it for saturation — the one case
        where trying again later is the answer. Anything else (a breaker open, a deadline that
        could not be met in a queue, a failed attempt) is `AllRoutesFailed`, listing every
        attempt; it is a 504 when nothing ran and the deadline is what stopped it.
        """
        rule = decision.rule
        if attempts and all(a.code == _SATURATED for a in attempts):
            priority = rule.priority
            if priority is Priority.CRITICAL:
                why = "every route is at capacity and its queue holds no lower-priority work to "
                why += "make room"
            else:
                why = "every route is at capacity, and under overload lower-priority work is "
                why += "refused first"
            listing = "; ".join(f"{a.route}: {a.detail}" for a in attempts)
            return Overloaded(
                f"{rule.operation_type} ({priority.value} priority) shed: {why} ({listing}); "
                "retry later",
                retry_after_s=max(self._retry_after(a.route) for a in attempts),
                decision_id=decision.decision_id,
                attempts=[a.as_dict() for a in attempts],
            )
        return all_routes_failed(rule.operation_type, decision.decision_id, attempts)

    def _retry_after(self, route: RouteId) -> float:
        control = self._admission.get(route)
        if control is None:
            return 1.0
        return control.retry_after_s(self._health.breaker(route).latency_ewma_s)

    def _fallback_ready(self, decision: Decision, index: int) -> bool:
        """Whether a different route after `index` could take over (so time must be shared)."""
        for route_id in decision.routes[index + 1 :]:
            if route_id == decision.forced or self._health.route_health(route_id).usable:
                return True
        return False

    def _budget(
        self, decision: Decision, route: Route, *, share: bool, cap_s: float | None
    ) -> float:
        """The time one attempt may take."""
        remaining = decision.deadline - self._clock.monotonic()
        budget = min(route.timeout_s, remaining)
        if cap_s is not None:
            return min(budget, cap_s)  # an explicit limit (time to first token) replaces the share
        if share:
            shared = remaining * self._settings.attempt_share
            if shared >= route.min_attempt_s:
                budget = min(budget, shared)
        return budget

    # -- admission: deadline, breaker, slot ------------------------------------------------------

    async def _admit(
        self, decision: Decision, route: Route, attempts: AttemptLog, *, wait: bool
    ) -> _Ticket | None:
        """A ticket for one attempt, or None (with a skipped attempt recorded, unless `wait`
        is off and the route merely has no free slot)."""
        remaining = decision.deadline - self._clock.monotonic()
        breaker = self._health.breaker(route.id)
        needed = route.min_attempt_s
        usual = breaker.latency_ewma_s
        if attempts.any_recorded and usual is not None:
            # Time has been spent already: an attempt shorter than the route's usual latency
            # would most likely be wasted.
            needed = max(needed, usual)
        if remaining < needed:
            attempts.add(
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
            attempts.add(
                Attempt(
                    route.id, AttemptOutcome.SKIPPED, 0.0, breaker.health().detail, "breaker_open"
                )
            )
            return None
        control = self._admission.get(route.id)
        if control is None:
            return _Ticket(route, breaker, permit, None)
        slot = control.try_enter()
        if slot is None and wait:
            try:
                slot = await control.enter(decision.rule.priority, decision.deadline, needed, usual)
            except AdmissionRefused as refused:
                breaker.release(permit)
                attempts.add(
                    Attempt(
                        route.id,
                        AttemptOutcome.SKIPPED,
                        0.0,
                        refused.detail,
                        _REFUSAL_CODES[refused.reason],
                    )
                )
                return None
            except BaseException:
                breaker.release(permit)
                raise
        if slot is None:
            breaker.release(permit)
            return None
        return _Ticket(route, breaker, permit, slot)

    # -- one attempt -----------------------------------------------------------------------------

    async def _attempt(
        self,
        ticket: _Ticket,
        request: GenerationRequest,
        call: _Call[T],
        budget: float,
        place: int,
        *,
        capped: bool,
    ) -> _Win[T] | _Failure:
        """Run one attempt with `budget` seconds. `capped`: the budget is the rule's own
        time-to-first-token limit, so running out of it is always the route's fault."""
        clock = self._clock
        route, breaker = ticket.route, ticket.breaker
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
            counts = capped or budget >= _patience(breaker)
        except asyncio.CancelledError:
            ticket.release()
            raise
        except Exception as exc:  # a bug in one route must not fail the whole request
            log.exception("route %s raised an unmapped exception", route.id)
            error = UpstreamProtocolError(
                route.id, f"route client failed: {type(exc).__name__}: {exc}"
            )
        else:
            return _Win(value, ticket, started, place)
        elapsed = clock.monotonic() - started
        if counts:
            ticket.fail(error.summary())
        else:
            ticket.release()
        return _Failure(error, elapsed, place)

    # -- hedging ---------------------------------------------------------------------------------

    def hedge_delay(self, decision: Decision) -> float:
        """How long the primary has before the fallback is started alongside it."""
        remaining = decision.deadline - self._clock.monotonic()
        rule = decision.rule
        delay: float | None = None
        if rule.hedge_after_fraction is not None:
            delay = rule.hedge_after_fraction * decision.budget_ms / 1000.0
        elif self._monitor is not None:
            delay = self._monitor.route_p95_s(decision.routes[0])
        if delay is None:  # no latency history yet: half the primary's usual share of what is
            delay = remaining * self._settings.attempt_share / 2  # left (a quarter by default)
        # Never so late that the fallback would get less than the primary's share would leave it.
        return max(0.0, min(delay, remaining * self._settings.attempt_share))

    async def _race(
        self,
        decision: Decision,
        request: GenerationRequest,
        attempts: AttemptLog,
        call: _Call[T],
        discard: _Discard[T],
        cap_s: float | None,
    ) -> tuple[_Win[T] | None, int]:
        """The primary, and after the hedge delay the fallback too; first success wins.

        Returns the winner, or None and the index the sequential walk continues from: 1 when
        the primary failed (or could not start) before a hedge began, 2 when both were tried.
        """
        primary = self._routes[decision.routes[0]]
        ticket = await self._admit(decision, primary, attempts, wait=True)
        if ticket is None:
            return None, 1
        delay = max(self.hedge_delay(decision), primary.min_attempt_s)
        loop = self._loop.get()
        racers: dict[asyncio.Task[_Win[T] | _Failure], _Racer] = {}

        def start(ticket: _Ticket, route: Route) -> asyncio.Task[_Win[T] | _Failure]:
            budget = self._budget(decision, route, share=False, cap_s=cap_s)
            place = attempts.start(route.id)  # held in start order, whichever racer ends first
            attempt = self._attempt(ticket, request, call, budget, place, capped=budget == cap_s)
            task = loop.create_task(attempt)
            racers[task] = _Racer(ticket, self._clock.monotonic(), place)
            return task

        first = start(ticket, primary)
        won = False
        try:
            done, _ = await asyncio.wait((first,), timeout=delay)
            if not done:
                backup = self._routes[decision.routes[1]]
                backup_ticket = await self._admit(decision, backup, attempts, wait=False)
                if backup_ticket is not None:
                    start(backup_ticket, backup)
            hedged = len(racers) > 1
            while racers:
                done, _ = await asyncio.wait(racers, return_when=asyncio.FIRST_COMPLETED)
                for task in done:
                    racer = racers.pop(task).ticket
                    outcome = task.result()
                    if isinstance(outcome, _Win):
                        outcome.hedged = hedged
                        won = True
                        return outcome, 0
                    error = self._failed(racer.route.id, outcome, attempts)
                    if not error.fallback:
                        raise error
            return None, 2 if hedged else 1
        finally:
            await self._cancel_losers(racers, attempts, discard, lost=won)

    async def _cancel_losers(
        self,
        racers: dict[asyncio.Task[_Win[T] | _Failure], _Racer],
        attempts: AttemptLog,
        discard: _Discard[T],
        *,
        lost: bool,
    ) -> None:
        """Stop the attempts still in the race. Each is recorded as cancelled (it may have cost
        tokens) — as a lost hedge race when the other side won, else as stopped with the
        request; one that succeeded in the same instant is undone, and one that failed in it is
        recorded as failed."""
        if not racers:
            return
        for task in racers:
            task.cancel()
        await asyncio.wait(racers)
        for task, racer in racers.items():
            if not task.cancelled() and task.exception() is None:
                outcome = task.result()
                if isinstance(outcome, _Failure):
                    self._failed(racer.ticket.route.id, outcome, attempts)
                    continue
                await discard(outcome.value)
            racer.ticket.release()  # a no-op when the attempt settled it
            detail, code = (
                ("lost the hedge race", HEDGE_CANCELLED) if lost else ("the request ended", None)
            )
            attempts.finish(
                racer.place,
                Attempt(
                    racer.ticket.route.id,
                    AttemptOutcome.CANCELLED,
                    (self._clock.monotonic() - racer.started) * 1000.0,
                    detail,
                    code,
                ),
            )
        racers.clear()

    # -- retries ---------------------------------------------------------------------------------

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


_SATURATED = "saturated"
_REFUSAL_CODES = {
    Refusal.SATURATED: _SATURATED,
    Refusal.DISPLACED: _SATURATED,
    Refusal.DEADLINE: "queue_deadline",
}
