"""Regressions from review: admission displacing a waiter that is already gone, the health board's
probe history across a monitoring switch, half-open breakers in status reports, the support
manager's per-emergency probe count, and the hedge-race feedback in the monitor and the CLI.
"""

from __future__ import annotations

import asyncio

import pytest

from hybridroute._clock import SystemClock
from hybridroute._tasks import TaskSupervisor
from hybridroute.cli.health_cmd import render_health
from hybridroute.config.schema import HealthConfig
from hybridroute.monitoring import RequestOutcome, RequestRecord
from hybridroute.monitoring.records import HEDGE_CANCELLED
from hybridroute.monitoring.report import RouteStatus
from hybridroute.resilience.admission import (
    AdmissionControl,
    AdmissionRefused,
    AdmissionSettings,
    Refusal,
    Slot,
)
from hybridroute.resilience.breaker import BreakerSettings, BreakerState, CircuitBreaker
from hybridroute.resilience.health import HealthBoard
from hybridroute.resilience.probes import HealthProber, ProbeResult
from hybridroute.signals import HealthStatus, RouteHealth
from hybridroute.testing import FakeClock
from hybridroute.types import Attempt, AttemptOutcome, Priority
from tests.unit.executor_fakes import D, FakeRoute, M
from tests.unit.test_monitor import Setup as MonitorSetup
from tests.unit.test_support_manager import Setup as SupportSetup

pytestmark = pytest.mark.anyio


# -- 2. displacing a waiter whose task was already cancelled ------------------------------------


async def settle() -> None:
    for _ in range(3):
        await asyncio.sleep(0)


async def test_critical_work_skips_a_cancelled_waiter_instead_of_failing() -> None:
    control = AdmissionControl(D, AdmissionSettings(max_in_flight=1, max_queue=2), SystemClock())
    held = control.try_enter()
    assert held is not None
    deadline = SystemClock().monotonic() + 10
    loop = asyncio.get_running_loop()
    low = loop.create_task(control.enter(Priority.LOW, deadline, 0.01, None))
    await settle()
    high = loop.create_task(control.enter(Priority.HIGH, deadline, 0.01, None))
    await settle()
    assert control.queued == 2
    # The low waiter's client goes away; before its task runs to leave the queue, critical
    # work arrives (entered from this task, so it runs first) and needs a place.
    low.cancel()
    loop.call_later(0.05, held.release)
    slot = await control.enter(Priority.CRITICAL, deadline, 0.01, None)
    assert isinstance(slot, Slot)
    assert not high.done()  # the live high waiter kept its place
    assert control.snapshot().refused["low"] == 0  # it left; it was not displaced
    slot.release()
    high_slot = await asyncio.wait_for(high, 1)
    high_slot.release()
    with pytest.raises(asyncio.CancelledError):
        await low
    assert (control.in_flight, control.queued) == (0, 0)


async def test_when_only_cancelled_waiters_were_below_it_the_newcomer_is_refused() -> None:
    control = AdmissionControl(D, AdmissionSettings(max_in_flight=1, max_queue=4), SystemClock())
    held = control.try_enter()
    assert held is not None
    deadline = SystemClock().monotonic() + 10
    loop = asyncio.get_running_loop()
    low = loop.create_task(control.enter(Priority.LOW, deadline, 0.01, None))
    await settle()
    highs = [loop.create_task(control.enter(Priority.HIGH, deadline, 0.01, None)) for _ in "abc"]
    await settle()
    assert control.queued == 4
    low.cancel()
    # medium may fill 75 % of 4 places (3): without the gone low waiter, three high remain
    with pytest.raises(AdmissionRefused) as info:
        await control.enter(Priority.MEDIUM, deadline, 0.01, None)
    assert info.value.reason is Refusal.SATURATED
    for task in highs:
        task.cancel()
    await asyncio.gather(low, *highs, return_exceptions=True)
    held.release()
    assert (control.in_flight, control.queued) == (0, 0)


# -- 6. probe history across a monitoring switch -------------------------------------------------


READY = RouteHealth(HealthStatus.HEALTHY)


def board(switch: list[bool]) -> tuple[HealthBoard, CircuitBreaker, FakeClock]:
    clock = FakeClock()
    breaker = CircuitBreaker(D, BreakerSettings(), clock)
    health = HealthBoard(
        {D: breaker}, {D: lambda: READY}, monitoring=lambda: switch[0], unhealthy_after=2
    )
    return health, breaker, clock


def failed(fresh_s: float | None = None) -> ProbeResult:
    return ProbeResult(ok=False, latency_s=0.1, at=0.0, error="boom", fresh_s=fresh_s)


def test_failures_from_before_monitoring_was_off_are_forgotten() -> None:
    switch = [True]
    health, breaker, _ = board(switch)
    health.record_probe(D, failed())
    health.record_probe(D, failed())
    assert health.route_health(D).status is HealthStatus.UNHEALTHY
    switch[0] = False
    for _ in range(50):  # healthy traffic while probes are off
        assert health.route_health(D).status is HealthStatus.HEALTHY
        permit = breaker.try_acquire()
        assert permit is not None
        breaker.record_success(permit, 0.05)
    switch[0] = True
    assert health.route_health(D).status is HealthStatus.HEALTHY
    assert health.probes(D).last is None


def test_a_probe_result_arriving_while_monitoring_is_off_is_dropped() -> None:
    switch = [False]
    health, _, _ = board(switch)
    health.record_probe(D, failed())
    health.record_probe(D, failed())
    switch[0] = True
    assert health.route_health(D).status is HealthStatus.HEALTHY


def test_probe_results_stop_counting_after_two_probe_intervals() -> None:
    health, _, clock = board([True])
    health.record_probe(D, failed(fresh_s=2.2))
    health.record_probe(D, failed(fresh_s=2.2))
    assert health.route_health(D).status is HealthStatus.UNHEALTHY
    clock.advance(2.0)
    assert health.route_health(D).status is HealthStatus.UNHEALTHY
    clock.advance(0.3)  # no probe since: the verdict is stale
    assert health.route_health(D).status is HealthStatus.HEALTHY


async def test_the_prober_stamps_its_results_with_two_intervals() -> None:
    supervisor = TaskSupervisor("test")
    try:
        clock = FakeClock()
        results: list[ProbeResult] = []
        prober = HealthProber(
            {D: FakeRoute(D, [])},
            lambda route, result: results.append(result),
            lambda: True,
            HealthConfig(probe_interval_s=10, probe_timeout_s=1, probe_jitter=0.1),
            clock,
            supervisor,
        )
        result = await prober.probe(D)
        assert result.fresh_s == pytest.approx(22.0)
        assert results == [result]
    finally:
        await supervisor.aclose()


# -- 4. a half-open breaker's trial in flight is recovery, not an outage -------------------------


async def test_a_trial_request_does_not_restart_the_emergency() -> None:
    supervisor = TaskSupervisor("test")
    try:
        s = SupportSetup(supervisor)
        s.trip(D)
        s.trip(M)
        await s.run(1.0)
        assert s.emergency()
        s.routes[M].up = True
        await s.run(2.0)  # a recovery probe passes: mcp half-open, the emergency is over
        assert not s.emergency()
        permit = s.breakers[M].try_acquire()  # the next real request takes the trial permit
        assert permit is not None
        await s.run(0.5)
        assert s.level().value == "degraded"
        assert not s.emergency()
        # the policy still prefers another route while the trial is in flight
        assert s.health.route_health(M).status is HealthStatus.UNHEALTHY
        assert s.health.availability(M).status is HealthStatus.PROBING
        s.breakers[M].record_success(permit, 0.05)
        await s.run(0.5)
        assert s.kinds().count("emergency_started") == 1
        assert s.kinds().count("emergency_resolved") == 1
    finally:
        await supervisor.aclose()


def test_the_monitor_reports_a_half_open_breaker_with_its_trial_in_flight_as_degraded() -> None:
    s = MonitorSetup()
    breaker = s.breakers[M]
    while breaker.state is not BreakerState.OPEN:
        permit = breaker.try_acquire()
        assert permit is not None
        breaker.record_failure(permit, "down")
    s.clock.advance(10)  # past the open time: half-open
    assert breaker.try_acquire() is not None  # the trial request
    route = s.monitor.report().route(M)
    assert route.status is RouteStatus.DEGRADED
    assert route.detail == "breaker half-open, trial request in flight"


# -- 9. recovery probes are counted per emergency ------------------------------------------------


async def test_recovery_probes_start_from_zero_in_each_emergency() -> None:
    supervisor = TaskSupervisor("test")
    try:
        s = SupportSetup(supervisor)
        s.trip(D)
        s.trip(M)
        await s.run(4.0)
        first = s.manager.status().recovery_probes
        assert first >= 4
        s.routes[M].up = True
        await s.run(4.0)
        assert not s.emergency()
        s.trip(M)  # mcp fails again: a second emergency
        await s.run(0.25)
        assert s.emergency()
        assert s.manager.status().recovery_probes == 0
        await s.run(0.5)  # the first recovery probe of this emergency: one per unavailable route
        assert s.manager.status().recovery_probes == 2
    finally:
        await supervisor.aclose()


# -- 10. a primary that keeps losing its hedge races ---------------------------------------------


def race(s: MonitorSetup, *, primary_lost: bool) -> None:
    """One hedged infrastructure request: direct_bedrock first, mcp hedged alongside."""
    if primary_lost:
        attempts = (
            Attempt(D, AttemptOutcome.CANCELLED, 1900.0, "lost the hedge race", HEDGE_CANCELLED),
            Attempt(M, AttemptOutcome.OK, 80.0),
        )
        served = M
    else:
        attempts = (
            Attempt(D, AttemptOutcome.OK, 1900.0),
            Attempt(M, AttemptOutcome.CANCELLED, 1500.0, "lost the hedge race", HEDGE_CANCELLED),
        )
        served = D
    s.monitor.record(
        RequestRecord(
            operation_type="infrastructure",
            priority=Priority.CRITICAL,
            primary=D,
            primary_eligible=True,
            first_route=D,
            outcome=RequestOutcome.SERVED,
            served_route=served,
            latency_s=1.0,
            budget_s=10.0,
            attempts=attempts,
            hedged=True,
        )
    )


def hedge_advice(s: MonitorSetup) -> list[str]:
    return [
        f"{r.action} | {r.evidence}"
        for r in s.monitor.report().recommendations
        if r.code == "hedge-losing-primary"
    ]


def test_a_primary_losing_most_of_its_hedge_races_is_pointed_out() -> None:
    s = MonitorSetup()
    for i in range(40):
        race(s, primary_lost=i >= 2)
    s.clock.advance(30)
    [advice] = hedge_advice(s)
    action, evidence = advice.split(" | ")
    assert action == (
        "Consider making mcp the primary for infrastructure, or check direct_bedrock's latency"
    )
    # p95s come from the log-binned histogram (within 2.5 %)
    assert evidence.startswith(
        "direct_bedrock lost 38 of 40 hedge races to mcp in the last 30 s; its p95 1.9 s "
        "against mcp's 8"
    )
    assert evidence.endswith(
        " ms; each hedged request still starts (and may be billed on) direct_bedrock"
    )
    report = s.monitor.report()
    assert (report.route(D).hedges_won, report.route(D).hedges_lost) == (2, 38)
    assert (report.route(M).hedges_won, report.route(M).hedges_lost) == (38, 2)
    operation = report.operation("infrastructure")
    assert (operation.hedged, operation.hedges_lost) == (40, 38)
    text = render_health(report.as_dict())
    assert "hedges won/lost" in text
    assert "2/38" in text
    assert "38/2" in text


def test_hedge_losses_below_the_threshold_or_on_little_data_are_not_advice() -> None:
    s = MonitorSetup()
    for i in range(40):
        race(s, primary_lost=i >= 10)  # 30 of 40: 75 %
    assert hedge_advice(s) == []
    s = MonitorSetup()
    for _ in range(19):
        race(s, primary_lost=True)  # every race lost, but fewer than 20
    assert hedge_advice(s) == []
