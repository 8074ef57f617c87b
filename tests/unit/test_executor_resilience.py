"""The executor's resilience mechanisms over fake routes: stream timeouts, hedging, admission.

Times here are functional bounds with generous slack (a hedge after 0.1 s must beat a primary
that takes 2 s), never speed targets.
"""

from __future__ import annotations

import asyncio
import time

import pytest

from hybridroute._clock import SystemClock
from hybridroute.errors import AllRoutesFailed, Overloaded, StreamInterrupted, UpstreamRejected
from hybridroute.resilience.admission import AdmissionControl, AdmissionSettings
from hybridroute.types import Priority, StreamEnd
from tests.unit.executor_fakes import REQUEST, D, FakeRoute, M, decision, setup, unavailable

pytestmark = pytest.mark.anyio


# -- streaming -----------------------------------------------------------------------------------


async def test_time_to_first_token_limit_falls_back_before_the_first_byte():
    primary, fallback = FakeRoute(D, [2.0]), FakeRoute(M, [])
    executor, _ = setup([primary, fallback])
    started = time.monotonic()
    opened = await executor.open_stream(decision((D, M), ttft_timeout_s=0.1), REQUEST)
    assert time.monotonic() - started < 1.5
    assert opened.route == M
    assert [(a.route, a.outcome) for a in opened.attempts] == [(D, "failed"), (M, "ok")]
    assert opened.attempts[0].detail == "UpstreamTimeout: no answer within 100 ms"
    assert primary.budgets == [pytest.approx(0.1)]  # the limit replaced the half-budget share
    events = [e async for e in opened.events()]
    assert isinstance(events[-1], StreamEnd)


async def test_inactivity_after_the_first_byte_ends_the_stream_and_counts_as_a_failure():
    executor, breakers = setup([FakeRoute(D, ["ok", "hang"])])
    opened = await executor.open_stream(
        decision((D,), fallback=None, stream_idle_timeout_s=0.1), REQUEST
    )
    received: list[object] = []

    async def read_all() -> None:
        async for event in opened.events():
            received.append(event)

    with pytest.raises(StreamInterrupted) as info:
        await read_all()
    assert len(received) == 1  # the first chunk reached the client; no fallback after that
    assert info.value.message == (
        "direct_bedrock sent nothing for 100 ms after the stream started (stream_idle_timeout_ms)"
    )
    assert breakers[D].snapshot().failures == 1
    await opened.aclose()


async def test_the_deadline_not_the_idle_limit_ends_a_stream_near_its_budget():
    executor, breakers = setup([FakeRoute(D, ["ok", "hang"])])
    opened = await executor.open_stream(
        decision((D,), fallback=None, budget_ms=200, stream_idle_timeout_s=5.0), REQUEST
    )
    with pytest.raises(StreamInterrupted, match="latency budget ran out"):
        async for _ in opened.events():
            pass
    assert breakers[D].snapshot().failures == 0  # the request's budget, not the route's fault
    await opened.aclose()


# -- hedging -------------------------------------------------------------------------------------


async def test_a_slow_primary_is_hedged_and_the_loser_cancelled():
    primary, fallback = FakeRoute(D, [2.0]), FakeRoute(M, [])
    executor, breakers = setup([primary, fallback])
    started = time.monotonic()
    served = await executor.complete(
        decision((D, M), hedge=True, hedge_after_fraction=0.02), REQUEST
    )  # hedge after 100 ms of the 5 s budget
    assert time.monotonic() - started < 1.5
    assert served.route == M
    assert served.hedged
    outcomes = [(a.route, a.outcome, a.code) for a in served.attempts]
    assert outcomes == [(D, "cancelled", "hedge_cancelled"), (M, "ok", None)]
    assert primary.cancelled == 1
    # the loser gave its breaker permit back without counting as a failure
    assert breakers[D].snapshot().failures == 0
    assert breakers[D].snapshot().probes_in_flight == 0


async def test_a_fast_primary_is_not_hedged():
    primary, fallback = FakeRoute(D, []), FakeRoute(M, [])
    executor, _ = setup([primary, fallback])
    served = await executor.complete(
        decision((D, M), hedge=True, hedge_after_fraction=0.1), REQUEST
    )
    assert served.route == D
    assert not served.hedged
    assert fallback.calls == 0


async def test_a_hedged_primary_gets_the_whole_budget_not_a_share():
    primary, fallback = FakeRoute(D, []), FakeRoute(M, [])
    executor, _ = setup([primary, fallback])
    await executor.complete(decision((D, M), hedge=True), REQUEST)
    assert primary.budgets[0] == pytest.approx(5.0, abs=0.1)


async def test_primary_failing_before_the_hedge_falls_back_normally():
    primary, fallback = FakeRoute(D, [unavailable()]), FakeRoute(M, [])
    executor, _ = setup([primary, fallback])
    served = await executor.complete(
        decision((D, M), hedge=True, hedge_after_fraction=0.5), REQUEST
    )
    assert served.route == M
    assert not served.hedged
    assert [(a.route, a.outcome) for a in served.attempts] == [(D, "failed"), (M, "ok")]


async def test_hedge_winner_is_the_first_success_even_if_the_hedge_fails():
    primary, fallback = FakeRoute(D, [0.3]), FakeRoute(M, [unavailable(M)])
    executor, _ = setup([primary, fallback])
    served = await executor.complete(
        decision((D, M), hedge=True, hedge_after_fraction=0.02), REQUEST
    )
    assert served.route == D
    assert served.hedged
    # in start order: the primary first, although the hedge ended (failed) before it
    assert [(a.route, a.outcome) for a in served.attempts] == [(D, "ok"), (M, "failed")]


async def test_both_racers_failing_lists_both():
    primary = FakeRoute(D, [0.2])
    fallback = FakeRoute(M, [unavailable(M)])

    async def fail_late(request, *, budget_s):  # the primary fails after the hedge started
        await primary._step(budget_s)
        raise unavailable()

    primary.complete = fail_late  # type: ignore[method-assign]
    executor, _ = setup([primary, fallback])
    with pytest.raises(AllRoutesFailed) as info:
        await executor.complete(decision((D, M), hedge=True, hedge_after_fraction=0.02), REQUEST)
    assert sorted(a["route"] for a in info.value.attempts) == [D, M]


async def test_a_request_fault_in_the_race_stops_both():
    rejected = UpstreamRejected(M, "invalid", upstream_code="ValidationException")
    primary, fallback = FakeRoute(D, [2.0]), FakeRoute(M, [rejected])
    executor, _ = setup([primary, fallback])
    with pytest.raises(UpstreamRejected):
        await executor.complete(decision((D, M), hedge=True, hedge_after_fraction=0.02), REQUEST)
    assert primary.cancelled == 1


async def test_a_stream_is_hedged_only_before_its_first_event():
    primary, fallback = FakeRoute(D, [2.0]), FakeRoute(M, [])
    executor, _ = setup([primary, fallback])
    opened = await executor.open_stream(
        decision((D, M), hedge=True, hedge_after_fraction=0.02), REQUEST
    )
    assert opened.route == M
    assert opened.hedged
    assert primary.cancelled == 1
    events = [e async for e in opened.events()]
    assert isinstance(events[-1], StreamEnd)


async def test_a_cancelled_request_cancels_both_racers():
    primary, fallback = FakeRoute(D, ["hang"]), FakeRoute(M, ["hang"])
    executor, breakers = setup([primary, fallback])
    task = asyncio.get_running_loop().create_task(
        executor.complete(decision((D, M), hedge=True, hedge_after_fraction=0.01), REQUEST)
    )
    await asyncio.sleep(0.2)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert (primary.cancelled, fallback.cancelled) == (1, 1)
    assert breakers[D].snapshot().probes_in_flight == 0


async def test_no_hedge_when_the_fallback_has_no_free_slot():
    control = AdmissionControl(M, AdmissionSettings(max_in_flight=1, max_queue=4), SystemClock())
    held = control.try_enter()
    assert held is not None
    primary, fallback = FakeRoute(D, [0.3]), FakeRoute(M, [])
    executor, _ = setup([primary, fallback], admission={M: control})
    served = await executor.complete(
        decision((D, M), hedge=True, hedge_after_fraction=0.02), REQUEST
    )
    assert served.route == D
    assert not served.hedged
    assert fallback.calls == 0
    held.release()


# -- admission -----------------------------------------------------------------------------------


def limited(route: str, in_flight: int = 1, queue: int = 4) -> AdmissionControl:
    return AdmissionControl(route, AdmissionSettings(in_flight, queue), SystemClock())


async def test_a_saturated_primary_sends_the_request_to_its_fallback():
    control = limited(D, queue=0)
    held = control.try_enter()
    executor, _ = setup([FakeRoute(D, []), FakeRoute(M, [])], admission={D: control})
    served = await executor.complete(decision((D, M)), REQUEST)
    assert served.route == M
    assert served.attempts[0].code == "saturated"
    assert held is not None
    held.release()


async def test_saturation_alone_sheds_with_429_and_retry_after():
    controls = {D: limited(D, queue=0), M: limited(M, queue=0)}
    held = [c.try_enter() for c in controls.values()]
    executor, _ = setup([FakeRoute(D, []), FakeRoute(M, [])], admission=controls)
    with pytest.raises(Overloaded) as info:
        await executor.complete(decision((D, M), priority=Priority.LOW), REQUEST)
    error = info.value
    assert error.http_status() == 429
    assert error.headers()["retry-after"] == "1"
    assert error.message.startswith(
        "infrastructure (low priority) shed: every route is at capacity, and under overload "
        "lower-priority work is refused first (direct_bedrock: direct_bedrock saturated: "
    )
    assert [a["code"] for a in error.attempts] == ["saturated", "saturated"]
    for slot in held:
        assert slot is not None
        slot.release()


async def test_a_queued_attempt_runs_when_a_slot_frees():
    control = limited(D)
    held = control.try_enter()
    assert held is not None
    route = FakeRoute(D, [])
    executor, _ = setup([route], admission={D: control})
    task = asyncio.get_running_loop().create_task(
        executor.complete(decision((D,), fallback=None), REQUEST)
    )
    await asyncio.sleep(0.05)
    assert control.queued == 1
    assert route.calls == 0
    held.release()
    served = await task
    assert served.route == D
    assert control.in_flight == 0


async def test_slots_are_given_back_after_success_failure_and_streams():
    control = limited(D, in_flight=2)
    executor, _ = setup([FakeRoute(D, [unavailable()]), FakeRoute(M, [])], admission={D: control})
    await executor.complete(decision((D, M)), REQUEST)
    assert control.in_flight == 0
    executor, _ = setup([FakeRoute(D, [])], admission={D: control})
    opened = await executor.open_stream(decision((D,), fallback=None), REQUEST)
    assert control.in_flight == 1  # held while the stream runs
    [e async for e in opened.events()]
    assert control.in_flight == 0
