"""The executor over an in-process fake route: fallback, retries, deadlines, breakers, streams.

The fake (`executor_fakes`) implements the gateway's own route seam; real upstreams are
exercised against the simulators in tests/integration.
"""

from __future__ import annotations

import pytest

from hybridroute.errors import (
    AllRoutesFailed,
    StreamInterrupted,
    UpstreamModelError,
    UpstreamRejected,
    UpstreamThrottled,
)
from hybridroute.resilience.breaker import BreakerSettings, BreakerState
from hybridroute.types import (
    Completion,
    GenerationRequest,
    StreamEnd,
    StreamEvent,
    TextDelta,
    Usage,
)
from tests.unit.executor_fakes import REQUEST, D, FakeRoute, M, decision, setup, unavailable

pytestmark = pytest.mark.anyio


async def test_primary_failure_falls_back_and_lists_attempts():
    primary, fallback = FakeRoute(D, [unavailable()]), FakeRoute(M, [])
    executor, breakers = setup([primary, fallback])
    served = await executor.complete(decision((D, M)), REQUEST)
    assert served.route == M
    assert served.fallback
    assert [(a.route, a.outcome) for a in served.attempts] == [(D, "failed"), (M, "ok")]
    assert served.attempts[0].detail == "ServiceUnavailableException: Bedrock is unavailable"
    assert breakers[D].snapshot().failures == 1


async def test_request_fault_stops_without_fallback():
    rejected = UpstreamRejected(
        D, "Bedrock rejected the request", upstream_code="ValidationException"
    )
    primary, fallback = FakeRoute(D, [rejected]), FakeRoute(M, [])
    executor, breakers = setup([primary, fallback])
    with pytest.raises(UpstreamRejected):
        await executor.complete(decision((D, M)), REQUEST)
    assert fallback.calls == 0
    assert breakers[D].snapshot().failures == 0  # the caller's fault, not the route's


async def test_retryable_error_retries_the_same_route():
    primary = FakeRoute(D, [UpstreamThrottled(D, "slow down", retry_after_s=0.01)])
    executor, _ = setup([primary])
    served = await executor.complete(decision((D,), fallback=None, retries=1), REQUEST)
    assert served.route == D
    assert primary.calls == 2
    assert [a.outcome for a in served.attempts] == ["failed", "ok"]


async def test_route_fault_is_not_retried_but_falls_back():
    primary = FakeRoute(D, [UpstreamModelError(D, "model failed")])
    fallback = FakeRoute(M, [])
    executor, _ = setup([primary, fallback])
    served = await executor.complete(decision((D, M), retries=2), REQUEST)
    assert primary.calls == 1
    assert served.route == M


async def test_hung_primary_leaves_time_for_the_fallback():
    primary, fallback = FakeRoute(D, ["hang"]), FakeRoute(M, [])
    executor, _ = setup([primary, fallback])
    served = await executor.complete(decision((D, M), budget_ms=600), REQUEST)
    assert served.route == M
    assert primary.budgets[0] == pytest.approx(0.3, abs=0.05)  # half of what was left
    assert served.attempts[0].code == "upstream_timeout"


async def test_an_attempt_that_cannot_finish_is_not_started():
    primary = FakeRoute(D, [], min_attempt_s=10.0)
    fallback = FakeRoute(M, [])
    executor, _ = setup([primary, fallback])
    served = await executor.complete(decision((D, M), budget_ms=1000), REQUEST)
    assert primary.calls == 0
    assert served.attempts[0].outcome == "skipped"
    assert "the route needs at least 10000 ms" in (served.attempts[0].detail or "")


async def test_open_breaker_is_skipped_unless_forced():
    primary = FakeRoute(D, [])
    settings = BreakerSettings(consecutive_failures=1)
    executor, breakers = setup([primary, FakeRoute(M, [])], settings)
    permit = breakers[D].try_acquire()
    assert permit is not None
    breakers[D].record_failure(permit, "down")
    assert breakers[D].state is BreakerState.OPEN
    served = await executor.complete(decision((D, M)), REQUEST)
    assert served.route == M
    assert primary.calls == 0
    forced = await executor.complete(decision((D,), fallback=None, forced=D), REQUEST)
    assert forced.route == D
    assert primary.calls == 1


async def test_every_route_failing_raises_one_error_listing_each_attempt():
    executor, _ = setup([FakeRoute(D, [unavailable(), unavailable()]), FakeRoute(M, [])])
    with pytest.raises(AllRoutesFailed) as info:
        await executor.complete(decision((D,), fallback=None, retries=1), REQUEST)
    error = info.value
    assert error.http_status() == 503
    assert [a["outcome"] for a in error.attempts] == ["failed", "failed"]
    assert error.message.startswith("infrastructure request could not be served by direct_bedrock")
    assert "ServiceUnavailableException" in error.message


async def test_all_timeouts_give_504_and_other_faults_502():
    executor, _ = setup([FakeRoute(D, ["hang"])])
    with pytest.raises(AllRoutesFailed) as info:
        await executor.complete(decision((D,), fallback=None, budget_ms=200), REQUEST)
    assert info.value.http_status() == 504
    executor, _ = setup([FakeRoute(D, [UpstreamModelError(D, "broken")])])
    with pytest.raises(AllRoutesFailed) as info:
        await executor.complete(decision((D,), fallback=None), REQUEST)
    assert info.value.http_status() == 502


async def test_stream_falls_back_before_the_first_event():
    executor, breakers = setup([FakeRoute(D, [unavailable()]), FakeRoute(M, [])])
    opened = await executor.open_stream(decision((D, M)), REQUEST)
    assert opened.route == M
    assert opened.fallback
    events = [e async for e in opened.events()]
    assert events[-1] == StreamEnd("stop", Usage(1, 2))
    assert "".join(e.text for e in events if isinstance(e, TextDelta)) == "one two"
    assert breakers[M].snapshot().requests == 1


async def test_stream_failure_after_the_first_event_interrupts_it():
    executor, breakers = setup([FakeRoute(D, ["ok", unavailable()]), FakeRoute(M, [])])
    opened = await executor.open_stream(decision((D, M)), REQUEST)
    received: list[StreamEvent] = []

    async def read_all() -> None:
        async for event in opened.events():
            received.append(event)

    with pytest.raises(StreamInterrupted) as info:
        await read_all()
    assert received == [TextDelta("one ")]
    assert "direct_bedrock failed after the stream started" in info.value.message
    assert breakers[D].snapshot().failures == 1
    await opened.aclose()


async def test_stream_deadline_ends_a_stalled_stream():
    executor, _ = setup([FakeRoute(D, ["ok", "hang"])])
    opened = await executor.open_stream(decision((D,), fallback=None, budget_ms=300), REQUEST)
    with pytest.raises(StreamInterrupted, match="latency budget ran out"):
        async for _ in opened.events():
            pass
    await opened.aclose()


async def test_a_callers_short_budget_does_not_count_against_the_route():
    """Timeouts an attempt had no fair chance to avoid never open the shared breaker."""
    primary = FakeRoute(D, ["hang"] * 10)
    executor, breakers = setup([primary], BreakerSettings(consecutive_failures=2))
    for _ in range(4):
        with pytest.raises(AllRoutesFailed):
            await executor.complete(decision((D,), fallback=None, budget_ms=100), REQUEST)
    assert breakers[D].state is BreakerState.CLOSED
    assert breakers[D].snapshot().failures == 0


async def test_a_hung_route_with_a_fair_chance_does_count():
    primary = FakeRoute(D, ["hang"])
    executor, breakers = setup([primary], BreakerSettings(consecutive_failures=1))
    with pytest.raises(AllRoutesFailed):
        await executor.complete(decision((D,), fallback=None, budget_ms=1200), REQUEST)
    assert breakers[D].state is BreakerState.OPEN


async def test_a_lone_route_gets_all_the_time_and_no_retry_after_a_timeout():
    primary = FakeRoute(D, ["hang", "hang"])
    executor, _ = setup([primary])
    with pytest.raises(AllRoutesFailed) as info:
        await executor.complete(decision((D,), fallback=None, retries=1, budget_ms=400), REQUEST)
    assert primary.calls == 1
    assert primary.budgets[0] == pytest.approx(0.4, abs=0.05)
    assert info.value.http_status() == 504


async def test_no_time_sharing_with_a_fallback_whose_breaker_is_open():
    primary, fallback = FakeRoute(D, []), FakeRoute(M, [])
    executor, breakers = setup([primary, fallback], BreakerSettings(consecutive_failures=1))
    permit = breakers[M].try_acquire()
    assert permit is not None
    breakers[M].record_failure(permit, "down")
    await executor.complete(decision((D, M), budget_ms=1000), REQUEST)
    assert primary.budgets[0] == pytest.approx(1.0, abs=0.05)


async def test_upstream_time_is_what_the_route_waited_plus_failed_attempts():
    """The overhead header subtracts only upstream waiting, not the route client's own work."""

    class Timed(FakeRoute):
        async def complete(self, request: GenerationRequest, *, budget_s: float) -> Completion:
            await self._step(budget_s)
            return Completion("t", "m", "stop", Usage(1, 1), upstream_s=0.125)

    primary, fallback = FakeRoute(D, [unavailable()]), Timed(M, [])
    executor, _ = setup([primary, fallback])
    served = await executor.complete(decision((D, M)), REQUEST)
    failed = served.attempts[0].duration_ms / 1000.0
    assert served.upstream_s == pytest.approx(failed + 0.125)
