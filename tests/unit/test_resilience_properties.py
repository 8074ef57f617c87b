"""Breakers with active probes, the health board and the health score under random events
(Hypothesis).

The breaker and board part drives two routes' breakers through a random mix of permits
(normal, forced), their outcomes (success, failure, given back), active health probes passing or
failing (through the board, as the prober reports them), readiness and monitoring switching,
and time passing on a `FakeClock`. After every event, for each route:

- the probe permits the test holds are exactly the breaker's `probes_in_flight`, and never
  more than `half_open_max_probes`;
- an open breaker hands out no normal or probe permit (checked when asked, and by asking);
- after `half_open_successes` passing probes or probe/forced successes with no failure of any
  kind in between, the breaker is closed;
- the board says unhealthy exactly when the route is not ready, or monitoring is on and its
  probes failed `unhealthy_after` times in a row since it was last turned on (counted by the
  test; a probe result arriving while monitoring is off is dropped and moves nothing), or its
  breaker is open, or half-open with every probe permit taken; otherwise probing while
  half-open, else healthy;
- the board's status-report reading (`availability`) is the same, except that a half-open
  breaker with every probe permit taken reads probing, not unhealthy.

The score part feeds random `RequestRecord`s over time (and random health events) to a
`HybridHealthMonitor` and checks every report: the score is an int in [0, 100]; routing
accuracy, efficiency, fallback rate and error rate are None or in [0, 1] and equal their
definitions recomputed from the records still inside the window; and a twin monitor that saw
the same traffic but in which one route stayed healthy never scores lower. The window keeps a
record while the one-second slice it fell into overlaps the last `window_s` seconds; all times
are multiples of 1/2 s, so slice boundaries compare exactly.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass

from hypothesis import given, settings
from hypothesis import strategies as st

from hybridroute.config.schema import GatewayConfig
from hybridroute.monitoring import HybridHealthMonitor, RequestOutcome, RequestRecord
from hybridroute.monitoring.monitor import MonitorSettings
from hybridroute.monitoring.report import HealthReport, RouteStatus
from hybridroute.monitoring.score import score, score_parts, status_for
from hybridroute.resilience.breaker import BreakerSettings, BreakerState, CircuitBreaker, Permit
from hybridroute.resilience.health import HealthBoard
from hybridroute.resilience.probes import ProbeResult
from hybridroute.routing.matrix import RoutingMatrix, Topology
from hybridroute.signals import HealthStatus, RouteHealth
from hybridroute.testing import FakeClock
from hybridroute.types import Attempt, AttemptOutcome

D, M = "direct_bedrock", "mcp"
ROUTES = (D, M)
READY = RouteHealth(HealthStatus.HEALTHY)
NOT_READY = RouteHealth(HealthStatus.UNHEALTHY, "no credentials")


def state(breaker: CircuitBreaker) -> BreakerState:
    """The state, read through a call so the type checker does not freeze it."""
    return breaker.state


# -- breakers, probes and the board -----------------------------------------------------------


@dataclass(frozen=True)
class Acquire:
    route: str


@dataclass(frozen=True)
class Force:
    route: str


@dataclass(frozen=True)
class Call:
    """A whole request: a permit if the breaker gives one, and its outcome at once."""

    route: str
    ok: bool


@dataclass(frozen=True)
class Outcome:
    route: str
    pick: int
    kind: str  # succeed | fail | release


@dataclass(frozen=True)
class Probe:
    route: str
    ok: bool


@dataclass(frozen=True)
class Tick:
    seconds: float


@dataclass(frozen=True)
class SetReady:
    route: str
    ready: bool


@dataclass(frozen=True)
class SetMonitoring:
    on: bool


BoardEvent = Acquire | Force | Call | Outcome | Probe | Tick | SetReady | SetMonitoring

ROUTE = st.sampled_from(ROUTES)


@st.composite
def board_events(draw: st.DrawFn) -> list[BoardEvent]:
    """Swarm-style: each example uses a random subset of the routes and of the optional event
    kinds, so breakers get through open and half-open often, not only in rare examples."""
    routes = st.sampled_from(sorted(draw(st.sets(ROUTE, min_size=1))))
    # how often a call or probe passes: mostly failing, even, or mostly passing
    ok = st.sampled_from(draw(st.sampled_from([[True, False, False], [True, False], [True] * 3])))
    kinds: dict[str, st.SearchStrategy[BoardEvent]] = {
        "acquire": st.builds(Acquire, routes),
        "force": st.builds(Force, routes),
        "call": st.builds(Call, routes, ok),
        "outcome": st.builds(
            Outcome,
            routes,
            st.integers(min_value=0, max_value=31),
            st.sampled_from(["succeed", "fail", "release"]),
        ),
        "probe": st.builds(Probe, routes, ok),
        "tick": st.builds(Tick, st.sampled_from([0.5, 1.0, 2.0, 5.0])),
        "ready": st.builds(SetReady, routes, st.booleans()),
        "monitoring": st.builds(SetMonitoring, st.booleans()),
    }
    enabled = {"acquire", "call", "outcome", "probe", "tick"}  # round open and half-open
    enabled |= draw(st.sets(st.sampled_from(["force", "ready", "monitoring"])))
    events = st.one_of([kinds[k] for k in sorted(enabled)])
    return draw(st.lists(events, min_size=10, max_size=100))


BREAKER_SETTINGS = st.builds(
    BreakerSettings,
    window_s=st.just(10.0),
    buckets=st.just(10),
    min_requests=st.integers(min_value=2, max_value=6),
    failure_rate=st.just(0.5),
    consecutive_failures=st.integers(min_value=1, max_value=4),
    open_s=st.sampled_from([1.0, 2.0]),
    max_open_s=st.just(8.0),
    half_open_max_probes=st.integers(min_value=1, max_value=3),
    half_open_successes=st.integers(min_value=1, max_value=3),
)


@dataclass
class RouteTrack:
    """What the test knows about one route, independently of the code under test."""

    held: list[Permit] = dataclasses.field(default_factory=list)
    ready: bool = True
    probe_failures_in_row: int = 0
    successes_since_failure: int = 0


class BoardRun:
    def __init__(self, limits: BreakerSettings, unhealthy_after: int) -> None:
        self.limits = limits
        self.unhealthy_after = unhealthy_after
        self.clock = FakeClock()
        self.monitoring = False
        self.track = {r: RouteTrack() for r in ROUTES}
        self.breakers = {r: CircuitBreaker(r, limits, self.clock) for r in ROUTES}
        self.board = HealthBoard(
            self.breakers,
            {r: self._readiness(r) for r in ROUTES},
            monitoring=lambda: self.monitoring,
            unhealthy_after=unhealthy_after,
        )

    def _readiness(self, route: str) -> Callable[[], RouteHealth]:
        return lambda: READY if self.track[route].ready else NOT_READY

    def probes_held(self, route: str) -> int:
        return sum(1 for p in self.track[route].held if p is Permit.PROBE)

    def play(self, event: BoardEvent) -> None:
        if isinstance(event, Tick):
            self.clock.advance(event.seconds)
        elif isinstance(event, SetMonitoring):
            self.monitoring = event.on
            if not event.on:  # the board forgets probe results while monitoring is off
                for track in self.track.values():
                    track.probe_failures_in_row = 0
        elif isinstance(event, SetReady):
            self.track[event.route].ready = event.ready
        elif isinstance(event, Acquire | Force):
            self.acquire(event.route, forced=isinstance(event, Force))
        elif isinstance(event, Call):
            if self.acquire(event.route, forced=False) is not None:  # settle the one just taken
                last = len(self.track[event.route].held) - 1
                self.outcome(Outcome(event.route, last, "succeed" if event.ok else "fail"))
        elif isinstance(event, Probe):
            self.probe(event.route, event.ok)
        else:
            self.outcome(event)

    def acquire(self, route: str, *, forced: bool) -> Permit | None:
        breaker, track = self.breakers[route], self.track[route]
        before = state(breaker)
        probes_free = self.probes_held(route) < self.limits.half_open_max_probes
        permit = breaker.acquire_forced() if forced else breaker.try_acquire()
        if before is BreakerState.CLOSED:
            assert permit is Permit.NORMAL
        elif before is BreakerState.HALF_OPEN and probes_free:
            assert permit is Permit.PROBE
        else:  # open, or half-open with every probe taken: no normal or probe permit
            assert permit is (Permit.FORCED if forced else None)
        if permit is not None:
            track.held.append(permit)
        return permit

    def outcome(self, event: Outcome) -> None:
        breaker, track = self.breakers[event.route], self.track[event.route]
        if not track.held:
            return
        permit = track.held.pop(event.pick % len(track.held))
        if event.kind == "succeed":
            breaker.record_success(permit, 0.1)
            if permit is not Permit.NORMAL:  # a normal success says nothing while not closed
                track.successes_since_failure += 1
        elif event.kind == "fail":
            breaker.record_failure(permit, "ServiceUnavailableException: down")
            track.successes_since_failure = 0
        else:
            breaker.release(permit)

    def probe(self, route: str, ok: bool) -> None:
        breaker, track = self.breakers[route], self.track[route]
        before = state(breaker)
        error = None if ok else "ThrottlingException: slow down"
        self.board.record_probe(
            route, ProbeResult(ok=ok, latency_s=0.05, at=self.clock.now(), error=error)
        )
        after = state(breaker)
        if not self.monitoring:  # a result arriving while monitoring is off is dropped
            assert after is before
            return
        if ok:
            track.probe_failures_in_row = 0
            track.successes_since_failure += 1
            if before is BreakerState.OPEN:  # a passing probe half-opens it at once
                closes = self.limits.half_open_successes == 1
                assert after is (BreakerState.CLOSED if closes else BreakerState.HALF_OPEN)
        else:
            track.probe_failures_in_row += 1
            track.successes_since_failure = 0
            # a failing probe re-opens a half-open breaker and never moves a closed one
            expected = BreakerState.CLOSED if before is BreakerState.CLOSED else BreakerState.OPEN
            assert after is expected

    def check(self) -> None:
        limits = self.limits
        for route in ROUTES:
            breaker, track = self.breakers[route], self.track[route]
            snap = breaker.snapshot()
            held_probes = self.probes_held(route)
            assert snap.probes_in_flight == held_probes <= limits.half_open_max_probes
            if snap.state is BreakerState.OPEN:
                assert breaker.try_acquire() is None
            if track.successes_since_failure >= limits.half_open_successes:
                assert snap.state is BreakerState.CLOSED
            probes_failing = self.monitoring and track.probe_failures_in_row >= self.unhealthy_after
            all_probes_out = (
                snap.state is BreakerState.HALF_OPEN and held_probes >= limits.half_open_max_probes
            )
            unhealthy = (
                not track.ready
                or probes_failing
                or snap.state is BreakerState.OPEN
                or all_probes_out
            )
            health = self.board.route_health(route)
            if unhealthy:
                expected = HealthStatus.UNHEALTHY
            elif snap.state is BreakerState.HALF_OPEN:
                expected = HealthStatus.PROBING
            else:
                expected = HealthStatus.HEALTHY
            assert health.status is expected, (route, snap, track, health)
            assert self.board.view()[route] == health
            reported = self.board.availability(route).status
            if all_probes_out and track.ready and not probes_failing:
                assert reported is HealthStatus.PROBING  # recovering, not down
            else:
                assert reported is health.status


@settings(max_examples=300, deadline=None)
@given(
    limits=BREAKER_SETTINGS,
    unhealthy_after=st.integers(min_value=1, max_value=3),
    events=board_events(),
)
def test_breakers_with_active_probes_and_the_board_agree_after_every_event(
    limits, unhealthy_after, events
):
    run = BoardRun(limits, unhealthy_after)
    run.check()
    for event in events:
        run.play(event)
        run.check()


# -- the health score ----------------------------------------------------------------------------

CONFIG = GatewayConfig(
    routes={
        D: {"type": "bedrock", "region": "eu-central-1", "model_id": "m"},
        M: {"type": "mcp", "transport": "stdio", "command": ["srv"]},
    }
)
MATRIX = RoutingMatrix.from_config(CONFIG)
WINDOW_S = 60.0
SLICE_S = 1.0  # the window's 60 slices


@st.composite
def records(draw: st.DrawFn) -> RequestRecord:
    rule = MATRIX.rules[draw(st.sampled_from(sorted(MATRIX.rules)))]
    outcome = draw(st.sampled_from(RequestOutcome))
    served = outcome is RequestOutcome.SERVED
    attempt = st.builds(
        Attempt,
        ROUTE,
        st.sampled_from(AttemptOutcome),
        st.sampled_from([0.0, 5.0, 250.0, 4000.0]),
    )
    return RequestRecord(
        operation_type=rule.operation_type,
        priority=rule.priority,
        primary=rule.primary,
        primary_eligible=draw(st.booleans()),
        first_route=draw(st.sampled_from([D, M, None])),
        outcome=outcome,
        served_route=draw(ROUTE) if served else None,
        latency_s=draw(st.sampled_from([0.05, 1.0, 8.0, 20.0, 70.0])),
        budget_s=rule.latency_budget_ms / 1000,
        attempts=tuple(draw(st.lists(attempt, max_size=3))),
        hedged=draw(st.booleans()),
    )


@dataclass(frozen=True)
class Record:
    record: RequestRecord


@dataclass(frozen=True)
class Wait:
    seconds: float


@dataclass(frozen=True)
class Health:
    route: str
    kind: str  # probe_ok | probe_fail | request_ok | request_fail | ready | not_ready


@dataclass(frozen=True)
class Report:
    pass


TrafficEvent = Record | Wait | Health | SetMonitoring | Report

HEALTH_EVENTS = st.builds(
    Health,
    ROUTE,
    st.sampled_from(  # failures twice: routes should often be degraded or unhealthy
        [
            *("probe_ok", "probe_fail", "probe_fail"),
            *("request_ok", "request_fail", "request_fail"),
            *("ready", "not_ready"),
        ]
    ),
)
TRAFFIC: st.SearchStrategy[list[TrafficEvent]] = st.lists(
    st.one_of(
        st.builds(Record, records()),
        st.builds(Record, records()),
        st.builds(Wait, st.sampled_from([0.5, 1.0, 7.5, 30.0, 59.5, 61.0])),
        HEALTH_EVENTS,
        HEALTH_EVENTS,
        st.builds(SetMonitoring, st.booleans()),
        st.just(Report()),
    ),
    min_size=8,
    max_size=60,
)


class MonitorRig:
    """A monitor over the two routes, with switchable readiness and monitoring."""

    def __init__(self, clock: FakeClock, monitoring: list[bool]) -> None:
        self.clock = clock
        self.ready = {r: True for r in ROUTES}
        self.breakers = {r: CircuitBreaker(r, BreakerSettings(), clock) for r in ROUTES}
        self.board = HealthBoard(
            self.breakers,
            {D: lambda: self._readiness(D), M: lambda: self._readiness(M)},
            monitoring=lambda: monitoring[0],
            unhealthy_after=2,
        )
        self.monitor = HybridHealthMonitor(
            health=self.board,
            matrix=MATRIX,
            topology=Topology.from_config(CONFIG),
            monitoring=lambda: monitoring[0],
            clock=clock,
            settings=MonitorSettings(window_s=WINDOW_S),
        )

    def _readiness(self, route: str) -> RouteHealth:
        return READY if self.ready[route] else NOT_READY

    def apply(self, event: Health) -> None:
        route = event.route
        if event.kind in ("ready", "not_ready"):
            self.ready[route] = event.kind == "ready"
        elif event.kind.startswith("probe"):
            ok = event.kind == "probe_ok"
            result = ProbeResult(ok, 0.05, self.clock.now(), None if ok else "down")
            self.board.record_probe(route, result)
        else:
            breaker = self.breakers[route]
            permit = breaker.try_acquire()
            if permit is None:
                return
            if event.kind == "request_ok":
                breaker.record_success(permit, 0.2)
            else:
                breaker.record_failure(permit, "ServiceUnavailableException: down")


class WindowModel:
    """Which records the window still holds: each falls into a one-second slice, and a slice
    counts while any of it lies within the last `WINDOW_S` seconds."""

    def __init__(self, created: float) -> None:
        self.created = created
        self.last_start: float | None = None
        self.entries: list[tuple[float, float, RequestRecord]] = []  # (at, slice start, record)

    def add(self, record: RequestRecord, now: float) -> None:
        start = self.last_start
        if start is None or now >= start + SLICE_S:
            start = now - (now - self.created) % SLICE_S
        self.last_start = start
        self.entries.append((now, start, record))

    def alive(self, now: float) -> list[RequestRecord]:
        kept = []
        for at, start, record in self.entries:
            inside = start + SLICE_S > now - WINDOW_S
            if now - at < WINDOW_S:
                assert inside  # everything younger than the window counts
            if now - at >= WINDOW_S + SLICE_S:
                assert not inside  # nothing older than the window and a slice does
            if inside:
                kept.append(record)
        return kept


def ratio(part: int, whole: int) -> float | None:
    return part / whole if whole else None


def check_report(report: HealthReport, alive: list[RequestRecord]) -> None:
    assert isinstance(report.score, int)
    assert 0 <= report.score <= 100
    assert report.status == status_for(report.score)
    for figure in (
        report.routing_accuracy,
        report.routing_efficiency,
        report.fallback_rate,
        report.error_rate,
    ):
        assert figure is None or 0.0 <= figure <= 1.0
    eligible = [r for r in alive if r.primary_eligible]
    served = [r for r in alive if r.served]
    failed = [r for r in alive if r.outcome in (RequestOutcome.FAILED, RequestOutcome.INTERRUPTED)]
    assert report.requests == len(alive)
    assert report.served == len(served)
    assert report.routing_accuracy == ratio(sum(r.accurate for r in eligible), len(eligible))
    assert report.routing_efficiency == ratio(sum(r.efficient for r in alive), len(alive))
    assert report.fallback_rate == ratio(sum(r.fallback for r in served), len(served))
    assert report.error_rate == ratio(len(failed), len(alive))
    statuses = [r.status for r in report.routes]
    parts = score_parts(
        statuses, report.error_rate, report.routing_efficiency, report.fallback_rate
    )
    assert report.score == score(parts)


@settings(max_examples=150, deadline=None)
@given(events=TRAFFIC, kept_healthy=ROUTE)
def test_health_score_and_routing_figures_follow_the_window(events, kept_healthy):
    clock, twin_clock = FakeClock(), FakeClock()
    monitoring = [True]
    rig, twin = MonitorRig(clock, monitoring), MonitorRig(twin_clock, monitoring)
    window = WindowModel(clock.monotonic())

    def compare() -> None:
        report, twin_report = rig.monitor.report(), twin.monitor.report()
        alive = window.alive(clock.monotonic())
        check_report(report, alive)
        check_report(twin_report, alive)
        # the twin: the same traffic, but `kept_healthy` never heard a health event
        mine = {r.route: r.status for r in report.routes}
        twins = {r.route: r.status for r in twin_report.routes}
        assert twins[kept_healthy] is RouteStatus.HEALTHY
        for route in ROUTES:
            if route != kept_healthy:
                assert twins[route] is mine[route]
        assert twin_report.score >= report.score
        if mine[kept_healthy] is RouteStatus.HEALTHY:
            assert twin_report.score == report.score

    for event in events:
        if isinstance(event, Record):
            rig.monitor.record(event.record)
            twin.monitor.record(event.record)
            window.add(event.record, clock.monotonic())
        elif isinstance(event, Wait):
            clock.advance(event.seconds)
            twin_clock.advance(event.seconds)
        elif isinstance(event, Health):
            rig.apply(event)
            if event.route != kept_healthy:
                twin.apply(event)
        elif isinstance(event, SetMonitoring):
            monitoring[0] = event.on
        else:
            compare()
    compare()


@settings(max_examples=300, deadline=None)
@given(
    statuses=st.lists(st.sampled_from(RouteStatus), min_size=1, max_size=4),
    which=st.integers(min_value=0, max_value=3),
    error_rate=st.one_of(st.none(), st.floats(min_value=0.0, max_value=1.0)),
    efficiency=st.one_of(st.none(), st.floats(min_value=0.0, max_value=1.0)),
    fallback_rate=st.one_of(st.none(), st.floats(min_value=0.0, max_value=1.0)),
)
def test_making_a_route_healthier_never_lowers_the_score(
    statuses, which, error_rate, efficiency, fallback_rate
):
    def scored(routes: list[RouteStatus]) -> int:
        return score(score_parts(routes, error_rate, efficiency, fallback_rate))

    before = scored(statuses)
    assert 0 <= before <= 100
    index = which % len(statuses)
    order = [RouteStatus.UNHEALTHY, RouteStatus.DEGRADED, RouteStatus.HEALTHY]
    for better in order[order.index(statuses[index]) :]:
        after = scored([*statuses[:index], better, *statuses[index + 1 :]])
        assert after >= before
