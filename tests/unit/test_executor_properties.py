"""The executor's deadline and admission guarantees over random route behaviour (Hypothesis).

Each example runs two to four requests at once against two fake routes whose scripts mix
answers, short delays, hangs and upstream errors (retryable, throttled with Retry-After, route
faults, request faults), with random budgets of 50–300 ms, retries, hedging, a forced route,
priorities, clients that go away early, and admission limits small enough that requests queue
for each other. Breakers either open at the first failure and half-open after 30 ms (so probes
run within a request's budget) or stay closed (so requests reach admission control).

- no deadline overrun: every `complete()` returns or raises a `GatewayError` no later than its
  deadline plus `SLACK_S`, which absorbs event-loop scheduling on a busy machine (a functional
  bound, not a speed target);
- nothing leaks: once every request has finished — served, failed, or abandoned by its client
  part way (the call cancelled while queued, backing off, or racing) — no breaker has a probe
  permit out and no admission control has a slot taken or a waiter queued.

These run in real time (the executor's deadlines are the event loop's), so examples are few
and budgets small.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from dataclasses import dataclass
from typing import Any

from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from hybridroute._clock import SystemClock
from hybridroute.errors import (
    GatewayError,
    UpstreamAuthError,
    UpstreamRejected,
    UpstreamThrottled,
    UpstreamTimeout,
    UpstreamUnavailable,
)
from hybridroute.resilience.admission import AdmissionControl, AdmissionSettings
from hybridroute.resilience.breaker import BreakerSettings
from hybridroute.types import Priority
from tests.unit.executor_fakes import REQUEST, D, FakeRoute, M, decision, setup

SLACK_S = 0.15

# Per example one of two breakers: one that opens at the first failure and half-opens 30 ms
# later (so probes run inside a request's budget), and one that stays closed and lets requests
# reach admission control and queue there.
EAGER = BreakerSettings(
    window_s=1.0,
    buckets=10,
    min_requests=2,
    failure_rate=0.5,
    consecutive_failures=1,
    open_s=0.03,
    max_open_s=0.2,
    half_open_max_probes=1,
    half_open_successes=1,
)
LENIENT = BreakerSettings(consecutive_failures=100, min_requests=100)


def step_kinds(route: str) -> dict[str, st.SearchStrategy[object]]:
    """What a scripted answer of `route` may be; errors are fresh objects each time."""
    return {
        "ok": st.just("ok"),
        "hang": st.just("hang"),
        "delay": st.sampled_from([0.02, 0.05, 0.1, 0.2]),
        "unavailable": st.builds(UpstreamUnavailable, st.just(route), st.just("unavailable")),
        "throttled": st.builds(
            UpstreamThrottled,
            st.just(route),
            st.just("slow down"),
            retry_after_s=st.sampled_from([None, 0.05, 0.5]),
        ),
        "timeout": st.builds(UpstreamTimeout, st.just(route), st.just("read timed out")),
        "auth": st.builds(UpstreamAuthError, st.just(route), st.just("access denied")),
        "rejected": st.builds(UpstreamRejected, st.just(route), st.just("invalid request")),
    }


@dataclass(frozen=True)
class Request:
    routes: tuple[str, ...]
    budget_ms: int
    retries: int
    priority: Priority
    hedge_after: float | None  # None: not hedged; else the fraction of the budget
    forced: bool  # the first route is forced (its breaker cannot refuse it)
    start_after_s: float
    abandon_after_s: float | None = None  # the client goes away (the call is cancelled)


@dataclass(frozen=True)
class Scenario:
    breaker: BreakerSettings
    scripts: dict[str, list[object]]
    limits: dict[str, AdmissionSettings | None]
    requests: list[Request]


LIMITS = st.sampled_from(
    [None, *(AdmissionSettings(n, q) for n, q in [(1, 0), (1, 1), (1, 3), (2, 0), (2, 2)])]
)


@st.composite
def scenarios(draw: st.DrawFn) -> Scenario:
    """Swarm-style: per example, each route's script uses a random subset of the kinds of
    answer; hedging and forcing are on for every request or none; and the requests may all
    crowd onto one route. So each situation is common, not rare, among so few examples."""
    scripts: dict[str, list[object]] = {}
    for route in (D, M):
        kinds = step_kinds(route)
        enabled = draw(st.sets(st.sampled_from(sorted(kinds)), min_size=1))
        answer = st.one_of([kinds[k] for k in sorted(enabled)])
        scripts[route] = draw(st.lists(answer, min_size=1, max_size=8))
    hedging, forcing, crowded = draw(st.booleans()), draw(st.booleans()), draw(st.booleans())
    routes = [(D,)] if crowded else [(D, M), (M, D), (D, M), (M, D), (D,), (M,)]
    request = st.builds(
        Request,
        routes=st.sampled_from(routes),
        budget_ms=st.integers(min_value=50, max_value=300),
        retries=st.integers(min_value=0, max_value=2),
        priority=st.sampled_from(Priority),
        hedge_after=st.sampled_from([0.1, 0.3]) if hedging else st.none(),
        forced=st.booleans() if forcing else st.just(False),
        start_after_s=st.sampled_from([0.0, 0.0, 0.03, 0.06, 0.1]),
        abandon_after_s=st.sampled_from([None, None, None, 0.01, 0.04, 0.1]),
    )
    return Scenario(
        breaker=draw(st.sampled_from([EAGER, LENIENT])),
        scripts=scripts,
        limits={D: draw(LIMITS), M: draw(LIMITS)},
        requests=draw(st.lists(request, min_size=2, max_size=4)),
    )


async def run(scenario: Scenario) -> None:
    routes = [FakeRoute(route, script) for route, script in scenario.scripts.items()]
    controls = {
        route: AdmissionControl(route, limit, SystemClock())
        for route, limit in scenario.limits.items()
        if limit is not None
    }
    executor, breakers = setup(routes, scenario.breaker, controls)

    async def one(request: Request) -> float:
        """How late the request finished after its deadline (negative: in time)."""
        await asyncio.sleep(request.start_after_s)
        hedged = request.hedge_after is not None and len(request.routes) == 2
        chosen = decision(
            request.routes,
            budget_ms=request.budget_ms,
            retries=request.retries,
            priority=request.priority,
            forced=request.routes[0] if request.forced else None,
            hedge=hedged,
            hedge_after_fraction=request.hedge_after if hedged else None,
        )
        call = asyncio.get_running_loop().create_task(executor.complete(chosen, REQUEST))
        if request.abandon_after_s is not None:
            await asyncio.wait([call], timeout=request.abandon_after_s)
            call.cancel()  # a no-op if it has finished
        # served, failed or abandoned: only the time it took matters here
        with contextlib.suppress(GatewayError, asyncio.CancelledError):
            await call
        return time.monotonic() - chosen.deadline

    lateness = await asyncio.gather(*(one(request) for request in scenario.requests))
    assert max(lateness) <= SLACK_S, lateness
    for breaker in breakers.values():
        assert breaker.snapshot().probes_in_flight == 0
    for control in controls.values():
        assert (control.in_flight, control.queued) == (0, 0), control


def make_request(routes: tuple[str, ...], budget_ms: int, **fields: Any) -> Request:
    values: dict[str, Any] = {
        "retries": 0,
        "priority": Priority.HIGH,
        "hedge_after": None,
        "forced": False,
        "start_after_s": 0.0,
    }
    values.update(fields)
    return Request(routes, budget_ms, **values)


# Pinned scenarios, run every time besides the random ones.
QUEUED_PAST_ITS_DEADLINE = Scenario(  # the second request waits behind a hung first one
    LENIENT,
    {D: ["hang"], M: []},
    {D: AdmissionSettings(1, 3), M: None},
    [make_request((D,), 300), make_request((D,), 60, start_after_s=0.01)],
)
RETRY_AFTER_BEYOND_THE_BUDGET = Scenario(
    LENIENT,
    {D: [UpstreamThrottled(D, "slow down", retry_after_s=0.5)], M: []},
    {D: None, M: None},
    [make_request((D,), 200, retries=2), make_request((D,), 250, retries=1, start_after_s=0.01)],
)
HEDGED_PROBE_LOSES_THE_RACE = Scenario(  # the second request's probe of the primary hangs
    EAGER,
    {D: [UpstreamUnavailable(D, "unavailable"), "hang"], M: ["hang", 0.02]},
    {D: AdmissionSettings(1, 1), M: None},
    [
        make_request((D, M), 200, hedge_after=0.1, forced=True),
        make_request((D, M), 150, hedge_after=0.1, start_after_s=0.06),
    ],
)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(scenario=scenarios())
@example(scenario=QUEUED_PAST_ITS_DEADLINE)
@example(scenario=RETRY_AFTER_BEYOND_THE_BUDGET)
@example(scenario=HEDGED_PROBE_LOSES_THE_RACE)
def test_no_request_outlives_its_deadline_and_nothing_leaks(scenario):
    asyncio.run(run(scenario))
