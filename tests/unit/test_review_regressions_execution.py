"""Regressions from review: how the executor records and settles hedges, interrupted streams,
time-to-first-token timeouts and requests no route could take, as the health monitor sees them.

Each test drives the real executor over fake routes into a real `HybridHealthMonitor`, so the
figures checked are the ones an operator reads.
"""

from __future__ import annotations

from collections.abc import Sequence

import pytest

from hybridroute._clock import SystemClock
from hybridroute.config.schema import GatewayConfig
from hybridroute.errors import AllRoutesFailed, Overloaded, StreamInterrupted
from hybridroute.gateway import Executor, ExecutorSettings
from hybridroute.monitoring import HybridHealthMonitor
from hybridroute.resilience.admission import AdmissionControl, AdmissionSettings
from hybridroute.resilience.breaker import BreakerSettings, BreakerState, CircuitBreaker, Permit
from hybridroute.resilience.health import HealthBoard
from hybridroute.routing.matrix import RoutingMatrix, Topology
from hybridroute.types import Attempt, Priority
from tests.unit.executor_fakes import REQUEST, D, FakeRoute, M, decision, unavailable

pytestmark = pytest.mark.anyio


class Rig:
    """An executor whose every request is recorded by a real health monitor."""

    def __init__(
        self,
        routes: list[FakeRoute],
        *,
        breaker: BreakerSettings | None = None,
        admission: dict[str, AdmissionControl] | None = None,
    ) -> None:
        config = GatewayConfig(
            routes={
                D: {"type": "bedrock", "region": "eu-central-1", "model_id": "m"},
                M: {"type": "mcp", "transport": "stdio", "command": ["srv"]},
            }
        )
        clock = SystemClock()
        given = {r.id for r in routes}
        # the monitor reports on both routes, so both get a breaker
        routes = routes + [FakeRoute(r, []) for r in (D, M) if r not in given]
        self.breakers = {
            r.id: CircuitBreaker(r.id, breaker or BreakerSettings(), clock) for r in routes
        }
        self.health = HealthBoard(self.breakers, {r.id: r.readiness for r in routes})
        self.monitor = HybridHealthMonitor(
            health=self.health,
            matrix=RoutingMatrix.from_config(config),
            topology=Topology.from_config(config),
            monitoring=lambda: False,
            clock=clock,
        )
        self.executor = Executor(
            {r.id: r for r in routes},
            self.health,
            clock,
            ExecutorSettings(retry_backoff_s=0.001),
            admission=admission,
            monitor=self.monitor,
        )


def outcomes(attempts: Sequence[Attempt]) -> list[tuple[str, str]]:
    return [(a.route, a.outcome.value) for a in attempts]


# -- 1. hedged attempts in start order ----------------------------------------------------------


async def test_a_hedged_primary_that_wins_is_listed_first_and_counts_as_efficient() -> None:
    # the primary answers after 0.3 s; the hedge starts after 0.05 s and is still running
    rig = Rig([FakeRoute(D, [0.3]), FakeRoute(M, [1.0])])
    served = await rig.executor.complete(
        decision((D, M), hedge=True, hedge_after_fraction=0.01), REQUEST
    )
    assert served.route == D
    assert served.hedged
    assert outcomes(served.attempts) == [(D, "ok"), (M, "cancelled")]
    report = rig.monitor.report()
    assert report.routing_efficiency == 1.0  # served in budget by the first route tried
    assert report.fallback_rate == 0.0
    assert report.route(D).hedges_won == 1
    assert report.route(M).hedges_lost == 1
    infrastructure = report.operation("infrastructure")
    assert (infrastructure.hedged, infrastructure.hedges_lost) == (1, 0)


async def test_a_hedge_that_wins_still_lists_the_primary_first() -> None:
    rig = Rig([FakeRoute(D, [1.0]), FakeRoute(M, [])])
    served = await rig.executor.complete(
        decision((D, M), hedge=True, hedge_after_fraction=0.01), REQUEST
    )
    assert outcomes(served.attempts) == [(D, "cancelled"), (M, "ok")]
    report = rig.monitor.report()
    assert report.routing_efficiency == 0.0  # the first route tried did not serve it
    assert (report.route(D).hedges_lost, report.route(M).hedges_won) == (1, 1)
    assert report.operation("infrastructure").hedges_lost == 1


async def test_a_hedged_stream_lists_its_attempts_in_start_order() -> None:
    rig = Rig([FakeRoute(D, [0.3]), FakeRoute(M, [1.0])])
    opened = await rig.executor.open_stream(
        decision((D, M), hedge=True, hedge_after_fraction=0.01), REQUEST
    )
    assert opened.route == D
    assert outcomes(opened.attempts) == [(D, "ok"), (M, "cancelled")]
    [event async for event in opened.events()]
    assert rig.monitor.report().routing_efficiency == 1.0


# -- 3. a stream cut off after its first byte ---------------------------------------------------


async def test_a_stream_gone_silent_is_recorded_as_a_failed_attempt() -> None:
    rig = Rig([FakeRoute(D, ["ok", "hang"])])
    opened = await rig.executor.open_stream(
        decision((D,), fallback=None, stream_idle_timeout_s=0.1), REQUEST
    )
    with pytest.raises(StreamInterrupted):
        [event async for event in opened.events()]
    await opened.aclose()
    [attempt] = opened.attempts
    assert (attempt.outcome.value, attempt.code) == ("failed", "upstream_timeout")
    assert attempt.detail == (
        "direct_bedrock sent nothing for 100 ms after the stream started (stream_idle_timeout_ms)"
    )
    route = rig.monitor.report().route(D)
    assert route.success_rate == 0.0
    assert rig.breakers[D].snapshot().failures == 1


async def test_a_stream_whose_route_fails_mid_way_records_the_routes_error() -> None:
    rig = Rig([FakeRoute(D, ["ok", unavailable()])])
    opened = await rig.executor.open_stream(decision((D,), fallback=None), REQUEST)
    with pytest.raises(StreamInterrupted):
        [event async for event in opened.events()]
    [attempt] = opened.attempts
    assert (attempt.outcome.value, attempt.code) == ("failed", "upstream_unavailable")
    assert attempt.detail is not None
    assert "ServiceUnavailableException" in attempt.detail
    assert rig.monitor.report().route(D).success_rate == 0.0


async def test_a_stream_cut_by_the_deadline_is_not_ok_but_spares_the_breaker() -> None:
    rig = Rig([FakeRoute(D, ["ok", "hang"])])
    opened = await rig.executor.open_stream(
        decision((D,), fallback=None, budget_ms=200, stream_idle_timeout_s=5.0), REQUEST
    )
    with pytest.raises(StreamInterrupted, match="latency budget ran out"):
        [event async for event in opened.events()]
    [attempt] = opened.attempts
    assert (attempt.outcome.value, attempt.code) == ("failed", "deadline")
    assert rig.monitor.report().route(D).success_rate == 0.0
    assert rig.breakers[D].snapshot().failures == 0


# -- 5. time to first token and the breaker ----------------------------------------------------


async def test_time_to_first_token_timeouts_count_against_the_route() -> None:
    rig = Rig(
        [FakeRoute(D, ["hang"] * 3), FakeRoute(M, [])],
        breaker=BreakerSettings(consecutive_failures=3),
    )
    for _ in range(3):
        opened = await rig.executor.open_stream(decision((D, M), ttft_timeout_s=0.05), REQUEST)
        assert opened.route == M
        [event async for event in opened.events()]
    assert rig.breakers[D].state is BreakerState.OPEN


async def test_a_deadline_shorter_than_the_ttft_limit_does_not_count() -> None:
    rig = Rig([FakeRoute(D, ["hang"] * 3)], breaker=BreakerSettings(consecutive_failures=2))
    for _ in range(3):
        with pytest.raises(AllRoutesFailed):
            await rig.executor.open_stream(
                decision((D,), fallback=None, budget_ms=100, ttft_timeout_s=1.0), REQUEST
            )
    assert rig.breakers[D].snapshot().failures == 0


async def test_a_streams_latency_sample_is_its_time_to_first_token() -> None:
    rig = Rig([FakeRoute(D, ["ok", 0.3])])  # first chunk at once, the rest 0.3 s later
    opened = await rig.executor.open_stream(decision((D,), fallback=None), REQUEST)
    [event async for event in opened.events()]
    usual = rig.breakers[D].latency_ewma_s
    assert usual is not None
    assert usual < 0.15


# -- 7. shed only when every route is saturated ---------------------------------------------------


def full(route: str) -> AdmissionControl:
    control = AdmissionControl(
        route, AdmissionSettings(max_in_flight=1, max_queue=0), SystemClock()
    )
    assert control.try_enter() is not None  # another request holds the only slot
    return control


def trip(breaker: CircuitBreaker) -> None:
    while breaker.state is not BreakerState.OPEN:
        permit = breaker.try_acquire()
        assert permit is not None
        breaker.record_failure(permit, "ServiceUnavailableException: down")


async def test_a_saturated_route_and_an_open_breaker_are_not_a_shed() -> None:
    rig = Rig([FakeRoute(D, []), FakeRoute(M, [])], admission={M: full(M)})
    trip(rig.breakers[D])
    with pytest.raises(AllRoutesFailed) as info:
        await rig.executor.complete(decision((M, D)), REQUEST)
    error = info.value
    assert error.http_status() == 503
    assert [a["code"] for a in error.attempts] == ["saturated", "breaker_open"]
    assert "mcp saturated" in error.message
    assert "breaker open" in error.message
    assert rig.monitor.report().shed == {}


async def test_a_queue_that_cannot_meet_the_deadline_fails_at_once_with_504() -> None:
    control = AdmissionControl(D, AdmissionSettings(max_in_flight=1, max_queue=4), SystemClock())
    assert control.try_enter() is not None
    rig = Rig([FakeRoute(D, [])], admission={D: control})
    rig.breakers[D].record_success(Permit.NORMAL, 10.0)  # its usual latency: 10 s
    with pytest.raises(AllRoutesFailed) as info:
        await rig.executor.complete(decision((D,), fallback=None), REQUEST)
    error = info.value
    assert error.http_status() == 504
    assert error.message.startswith(
        "infrastructure request could not be served before its deadline by direct_bedrock: "
    )
    assert [a["code"] for a in error.attempts] == ["queue_deadline"]
    assert control.queued == 0


async def test_a_critical_shed_does_not_blame_more_important_work() -> None:
    rig = Rig([FakeRoute(D, []), FakeRoute(M, [])], admission={D: full(D), M: full(M)})
    with pytest.raises(Overloaded) as info:
        await rig.executor.complete(decision((D, M), priority=Priority.CRITICAL), REQUEST)
    message = info.value.message
    assert message.startswith(
        "infrastructure (critical priority) shed: every route is at capacity and its queue "
        "holds no lower-priority work to make room (direct_bedrock: "
    )
    assert "more important" not in message
    assert "; mcp: mcp saturated" in message  # every attempt is listed
    assert rig.monitor.report().shed == {"critical": 1}
