"""The circuit breaker's state machine, driven by a fake clock."""

from __future__ import annotations

import dataclasses

from hypothesis import given, settings
from hypothesis import strategies as st

from hybridroute.resilience.breaker import BreakerSettings, BreakerState, CircuitBreaker, Permit
from hybridroute.signals import HealthStatus
from hybridroute.testing import FakeClock

FAST = BreakerSettings(
    window_s=10.0,
    buckets=10,
    min_requests=4,
    failure_rate=0.5,
    consecutive_failures=3,
    open_s=2.0,
    max_open_s=16.0,
    half_open_max_probes=1,
    half_open_successes=2,
)


def make(settings: BreakerSettings = FAST) -> tuple[CircuitBreaker, FakeClock]:
    clock = FakeClock()
    return CircuitBreaker("direct_bedrock", settings, clock), clock


def state(breaker: CircuitBreaker) -> BreakerState:
    """The state, read through a call so the type checker does not freeze it."""
    return breaker.state


def fail(breaker: CircuitBreaker, times: int = 1) -> None:
    for _ in range(times):
        permit = breaker.try_acquire()
        assert permit is not None
        breaker.record_failure(permit, "ServiceUnavailableException: down")


def succeed(breaker: CircuitBreaker, times: int = 1) -> None:
    for _ in range(times):
        permit = breaker.try_acquire()
        assert permit is not None
        breaker.record_success(permit, 0.1)


def test_starts_closed_and_healthy():
    breaker, _ = make()
    assert state(breaker) is BreakerState.CLOSED
    assert breaker.health().status is HealthStatus.HEALTHY
    assert breaker.try_acquire() is Permit.NORMAL


def test_consecutive_failures_open_it():
    breaker, _ = make()
    fail(breaker, 2)
    assert state(breaker) is BreakerState.CLOSED
    fail(breaker)
    assert state(breaker) is BreakerState.OPEN
    assert breaker.try_acquire() is None
    health = breaker.health()
    assert health.status is HealthStatus.UNHEALTHY
    assert health.detail == "breaker open, retry in 2.0s"
    assert "3 consecutive failures" in (breaker.snapshot().opened_because or "")


def test_failure_rate_over_the_window_opens_it():
    breaker, _ = make(dataclasses.replace(FAST, consecutive_failures=100))
    succeed(breaker)
    fail(breaker)
    succeed(breaker)
    assert state(breaker) is BreakerState.CLOSED  # 1 of 3: below min_requests anyway
    fail(breaker)  # 2 of 4 failed = 50 %
    assert state(breaker) is BreakerState.OPEN
    assert "2/4 requests failed in the last 10s" in (breaker.snapshot().opened_because or "")


def test_below_min_requests_nothing_opens():
    breaker, _ = make(dataclasses.replace(FAST, consecutive_failures=100))
    succeed(breaker)
    fail(breaker, 2)
    assert state(breaker) is BreakerState.CLOSED


def test_old_outcomes_age_out_of_the_window():
    breaker, clock = make(dataclasses.replace(FAST, consecutive_failures=100))
    fail(breaker, 3)
    clock.advance(11.0)  # the whole window later
    succeed(breaker)
    fail(breaker)
    assert state(breaker) is BreakerState.CLOSED
    assert breaker.snapshot().requests == 2


def test_half_open_after_the_open_time_with_a_probe_limit():
    breaker, clock = make()
    fail(breaker, 3)
    clock.advance(2.0)
    assert state(breaker) is BreakerState.HALF_OPEN
    assert breaker.health().status is HealthStatus.PROBING
    assert breaker.try_acquire() is Permit.PROBE
    assert breaker.try_acquire() is None  # one probe in flight at most
    assert breaker.health().status is HealthStatus.UNHEALTHY


def test_probe_successes_close_it():
    breaker, clock = make()
    fail(breaker, 3)
    clock.advance(2.0)
    for _ in range(2):
        permit = breaker.try_acquire()
        assert permit is Permit.PROBE
        breaker.record_success(permit, 0.05)
    assert state(breaker) is BreakerState.CLOSED
    assert breaker.snapshot().consecutive_failures == 0


def test_failed_probe_reopens_for_longer_up_to_the_cap():
    breaker, clock = make()
    fail(breaker, 3)
    waits = []
    for _ in range(5):
        waits.append(breaker.snapshot().reopens_in_s)
        clock.advance(waits[-1] or 0.0)
        permit = breaker.try_acquire()
        assert permit is Permit.PROBE
        breaker.record_failure(permit, "still down")
    assert waits == [2.0, 4.0, 8.0, 16.0, 16.0]


def test_reopening_soon_after_closing_escalates_and_a_quiet_window_resets():
    breaker, clock = make()
    fail(breaker, 3)
    clock.advance(2.0)
    for _ in range(2):
        breaker.record_success(breaker.try_acquire() or Permit.NORMAL, 0.01)
    assert state(breaker) is BreakerState.CLOSED
    fail(breaker, 3)  # flapping: straight back open
    assert breaker.snapshot().reopens_in_s == 4.0
    clock.advance(4.0)
    for _ in range(2):
        breaker.record_success(breaker.try_acquire() or Permit.NORMAL, 0.01)
    clock.advance(30.0)  # stays healthy for more than a window
    fail(breaker, 3)
    assert breaker.snapshot().reopens_in_s == 2.0


def test_forced_permit_when_open_and_its_success_starts_recovery():
    breaker, _ = make()
    fail(breaker, 3)
    assert breaker.try_acquire() is None
    permit = breaker.acquire_forced()
    assert permit is Permit.FORCED
    breaker.record_success(permit, 0.2)
    assert state(breaker) is BreakerState.HALF_OPEN


def test_forced_failure_does_not_extend_the_open_time():
    breaker, clock = make()
    fail(breaker, 3)
    clock.advance(1.0)
    breaker.record_failure(breaker.acquire_forced(), "still down")
    assert breaker.snapshot().reopens_in_s == 1.0


def test_released_probe_frees_its_slot():
    breaker, clock = make()
    fail(breaker, 3)
    clock.advance(2.0)
    permit = breaker.try_acquire()
    assert permit is Permit.PROBE
    breaker.release(permit)
    assert breaker.try_acquire() is Permit.PROBE


def test_repr_shows_the_state():
    breaker, clock = make()
    assert repr(breaker) == "<CircuitBreaker direct_bedrock CLOSED failures=0/0>"
    fail(breaker, 3)
    assert repr(breaker) == (
        "<CircuitBreaker direct_bedrock OPEN failures=3/3 reopen_in=2.0s level=1>"
    )
    clock.advance(2.0)
    assert repr(breaker) == "<CircuitBreaker direct_bedrock HALF_OPEN failures=3/3 probes=0/1>"


EVENTS = st.lists(
    st.tuples(
        st.sampled_from(["acquire", "succeed", "fail", "release", "force", "tick"]),
        st.floats(min_value=0.0, max_value=5.0),
    ),
    max_size=80,
)


@settings(max_examples=200, deadline=None)
@given(events=EVENTS, probes=st.integers(min_value=1, max_value=3))
def test_never_more_probes_in_flight_than_allowed(events, probes):
    """Whatever happens, half-open never admits more concurrent probes than configured."""
    breaker, clock = make(dataclasses.replace(FAST, half_open_max_probes=probes))
    held: list[Permit] = []
    for action, seconds in events:
        if action == "acquire":
            permit = breaker.try_acquire()
            if permit is not None:
                held.append(permit)
        elif action == "force":
            held.append(breaker.acquire_forced())
        elif action == "tick":
            clock.advance(seconds)
        elif held:
            permit = held.pop(0)
            if action == "succeed":
                breaker.record_success(permit, 0.01)
            elif action == "fail":
                breaker.record_failure(permit, "x")
            else:
                breaker.release(permit)
        in_flight = sum(1 for p in held if p is Permit.PROBE)
        assert breaker.snapshot().probes_in_flight <= probes
        assert in_flight <= probes
        if state(breaker) is BreakerState.OPEN:
            assert breaker.try_acquire() is None


def test_a_passing_probe_half_opens_an_open_breaker_and_closes_it_after_enough():
    breaker, _ = make()
    fail(breaker, 3)
    assert state(breaker) is BreakerState.OPEN
    breaker.record_probe(True)
    assert state(breaker) is BreakerState.HALF_OPEN
    breaker.record_probe(True)
    assert state(breaker) is BreakerState.CLOSED


def test_a_failing_probe_reopens_a_half_open_breaker_for_longer():
    breaker, clock = make()
    fail(breaker, 3)
    clock.advance(2.0)
    assert state(breaker) is BreakerState.HALF_OPEN
    breaker.record_probe(False, "ServiceUnavailableException: down")
    assert state(breaker) is BreakerState.OPEN
    assert breaker.snapshot().reopens_in_s == 4.0
    assert breaker.last_error == "ServiceUnavailableException: down"


def test_probes_do_not_move_a_closed_breaker():
    breaker, _ = make()
    breaker.record_probe(False, "down")
    breaker.record_probe(True)
    assert state(breaker) is BreakerState.CLOSED
