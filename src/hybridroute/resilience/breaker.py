"""Circuit breaker per route: passive health from real traffic.

closed ──(failure rate ≥ threshold over the sliding window with ≥ min_requests,
          or N consecutive failures)──▶ open
open ──(open time elapsed)──▶ half-open
half-open ──(enough probe successes)──▶ closed
half-open ──(a probe fails)──▶ open, for longer

- The window is a ring of time buckets, so old outcomes age out without a timer.
- Open time escalates: `open_s × 2^(level-1)`, capped at `max_open_s`. The level rises when a
  probe fails or when the breaker re-opens soon (within one window) after closing, and falls
  back to 1 after a quiet window.
- Half-open admits at most `half_open_max_probes` requests at once (permits), so a recovering
  upstream is not stampeded.
- A *forced* permit lets the policy try a route whose breaker refuses (an emergency with no
  fallback); its success counts like a probe success, its failure does not extend the open time.
- Active health probes (when enabled) speak too: a passing probe moves an open breaker to
  half-open at once and counts as a half-open success; a failing probe re-opens a half-open one.

Only outcomes of permits handed out by the breaker change its state. Time comes from the
injected clock, never from a background timer.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from hybridroute._clock import Clock
from hybridroute.config.schema import BreakerConfig
from hybridroute.signals import HealthStatus, RouteHealth
from hybridroute.types import RouteId

__all__ = [
    "BreakerSettings",
    "BreakerSnapshot",
    "BreakerState",
    "CircuitBreaker",
    "Permit",
]


class BreakerState(StrEnum):
    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half_open"


class Permit(StrEnum):
    """What kind of admission a request got from a breaker."""

    NORMAL = "normal"
    PROBE = "probe"
    FORCED = "forced"


@dataclass(frozen=True, slots=True)
class BreakerSettings:
    window_s: float = 30.0
    buckets: int = 10
    min_requests: int = 5
    failure_rate: float = 0.5
    consecutive_failures: int = 5
    open_s: float = 5.0
    max_open_s: float = 120.0
    half_open_max_probes: int = 1
    half_open_successes: int = 2

    @classmethod
    def from_config(cls, config: BreakerConfig) -> BreakerSettings:
        return cls(
            window_s=config.window_s,
            buckets=config.buckets,
            min_requests=config.min_requests,
            failure_rate=config.failure_rate,
            consecutive_failures=config.consecutive_failures,
            open_s=config.open_s,
            max_open_s=config.max_open_s,
            half_open_max_probes=config.half_open_max_probes,
            half_open_successes=config.half_open_successes,
        )


@dataclass(frozen=True, slots=True)
class BreakerSnapshot:
    """A breaker's state at one instant, for the admin API, the dashboard and logs."""

    route: RouteId
    state: BreakerState
    requests: int
    failures: int
    failure_rate: float
    consecutive_failures: int
    level: int
    reopens_in_s: float | None
    probes_in_flight: int
    times_opened: int
    last_error: str | None
    opened_because: str | None
    latency_ewma_ms: float | None


class CircuitBreaker:
    """One route's breaker. Not thread-safe: used from the event loop only."""

    __slots__ = (
        "_bucket_len",
        "_buckets",
        "_clock",
        "_closed_at",
        "_consecutive",
        "_forced_until",
        "_half_open_ok",
        "_latency_ewma",
        "_level",
        "_open_until",
        "_opened_because",
        "_probes",
        "_settings",
        "_state",
        "_times_opened",
        "last_error",
        "route",
    )

    def __init__(self, route: RouteId, settings: BreakerSettings, clock: Clock) -> None:
        self.route = route
        self._settings = settings
        self._clock = clock
        self._bucket_len = settings.window_s / settings.buckets
        # each bucket: [bucket number, successes, failures]
        self._buckets: list[list[int]] = [[-1, 0, 0] for _ in range(settings.buckets)]
        self._state = BreakerState.CLOSED
        self._consecutive = 0
        self._open_until = 0.0
        self._level = 0
        self._closed_at: float | None = None
        self._probes = 0
        self._half_open_ok = 0
        self._times_opened = 0
        self._opened_because: str | None = None
        self._latency_ewma: float | None = None
        self._forced_until = 0.0
        self.last_error: str | None = None

    # -- reading -------------------------------------------------------------------------------

    @property
    def state(self) -> BreakerState:
        """The current state (an open breaker whose time is up reads as half-open)."""
        if self._state is BreakerState.OPEN and self._clock.monotonic() >= self._open_until:
            self._state = BreakerState.HALF_OPEN
            self._half_open_ok = 0
        return self._state

    @property
    def latency_ewma_s(self) -> float | None:
        """Smoothed latency of recent successful calls (a stream's: its time to first event),
        or None before the first."""
        return self._latency_ewma

    @property
    def clock(self) -> Clock:
        """The clock this breaker keeps time with."""
        return self._clock

    def health(self) -> RouteHealth:
        """This breaker's view of the route, for the decision policy: a half-open breaker
        whose trial permits are all taken admits nobody else, so it reads as unhealthy until
        the trial ends (the policy then prefers another route)."""
        state = self.state
        if state is BreakerState.CLOSED:
            return _HEALTHY
        if state is BreakerState.HALF_OPEN:
            if self._probes < self._settings.half_open_max_probes:
                return RouteHealth(HealthStatus.PROBING, "breaker half-open")
            return RouteHealth(HealthStatus.UNHEALTHY, "breaker half-open, probe in flight")
        return self._open_health()

    def availability(self) -> RouteHealth:
        """This breaker's view for status reporting (support manager, health monitor): a
        half-open breaker is recovering, not down, whether or not its trial is in flight —
        so a trial request does not make a recovering route read as unavailable."""
        state = self.state
        if state is BreakerState.CLOSED:
            return _HEALTHY
        if state is BreakerState.HALF_OPEN:
            if self._probes < self._settings.half_open_max_probes:
                return RouteHealth(HealthStatus.PROBING, "breaker half-open")
            return RouteHealth(HealthStatus.PROBING, "breaker half-open, trial request in flight")
        return self._open_health()

    def _open_health(self) -> RouteHealth:
        wait = max(0.0, self._open_until - self._clock.monotonic())
        if self.forced_open:
            hold = "until reset" if wait == float("inf") else f"for {wait:.1f}s more"
            return RouteHealth(HealthStatus.UNHEALTHY, f"breaker forced open {hold}")
        return RouteHealth(HealthStatus.UNHEALTHY, f"breaker open, retry in {wait:.1f}s")

    def snapshot(self) -> BreakerSnapshot:
        state = self.state
        ok, failed = self._totals()
        total = ok + failed
        reopen = None
        if state is BreakerState.OPEN and self._open_until != float("inf"):
            reopen = max(0.0, self._open_until - self._clock.monotonic())
        return BreakerSnapshot(
            route=self.route,
            state=state,
            requests=total,
            failures=failed,
            failure_rate=failed / total if total else 0.0,
            consecutive_failures=self._consecutive,
            level=self._level,
            reopens_in_s=reopen,
            probes_in_flight=self._probes,
            times_opened=self._times_opened,
            last_error=self.last_error,
            opened_because=self._opened_because if state is not BreakerState.CLOSED else None,
            latency_ewma_ms=None if self._latency_ewma is None else self._latency_ewma * 1000,
        )

    # -- admission -----------------------------------------------------------------------------

    def try_acquire(self) -> Permit | None:
        """Admit a request, or None when the breaker refuses it."""
        state = self.state
        if state is BreakerState.CLOSED:
            return Permit.NORMAL
        if state is BreakerState.HALF_OPEN and self._probes < self._settings.half_open_max_probes:
            self._probes += 1
            return Permit.PROBE
        return None

    def acquire_forced(self) -> Permit:
        """Admit a request the policy insists on (no other route is allowed)."""
        permit = self.try_acquire()
        return permit if permit is not None else Permit.FORCED

    # -- outcomes ------------------------------------------------------------------------------

    def record_success(self, permit: Permit, latency_s: float) -> None:
        ewma = self._latency_ewma
        self._latency_ewma = latency_s if ewma is None else ewma + 0.2 * (latency_s - ewma)
        if self.forced_open:
            return  # held open by an operator: a success does not close it
        if permit is Permit.NORMAL:
            if self._state is BreakerState.CLOSED:
                self._consecutive = 0
                self._bucket()[1] += 1
            return
        if permit is Permit.PROBE:
            self._probes = max(0, self._probes - 1)
        state = self.state
        if state is BreakerState.OPEN:  # a forced call got through while open
            self._state = BreakerState.HALF_OPEN
            self._half_open_ok = 0
        if self._state is BreakerState.HALF_OPEN:
            self._half_open_ok += 1
            if self._half_open_ok >= self._settings.half_open_successes:
                self._close()

    def record_failure(self, permit: Permit, error: str) -> None:
        self.last_error = error
        if permit is Permit.NORMAL:
            if self._state is not BreakerState.CLOSED:
                return
            self._consecutive += 1
            self._bucket()[2] += 1
            ok, failed = self._totals()
            total = ok + failed
            s = self._settings
            if self._consecutive >= s.consecutive_failures:
                self._open(f"{self._consecutive} consecutive failures, last: {error}")
            elif total >= s.min_requests and failed / total >= s.failure_rate:
                self._open(
                    f"{failed}/{total} requests failed in the last {s.window_s:g}s, last: {error}"
                )
            return
        if permit is Permit.PROBE:
            self._probes = max(0, self._probes - 1)
            if self.state is BreakerState.HALF_OPEN:
                self._level += 1
                self._open(f"probe failed: {error}", escalate=False)

    def record_probe(self, ok: bool, error: str | None = None) -> None:
        """An active health probe's result."""
        if self.forced_open:
            return
        state = self.state
        if ok:
            if state is BreakerState.OPEN:
                self._state = BreakerState.HALF_OPEN
                self._half_open_ok = 0
            if self._state is BreakerState.HALF_OPEN:
                self._half_open_ok += 1
                if self._half_open_ok >= self._settings.half_open_successes:
                    self._close()
            return
        self.last_error = error
        if state is BreakerState.HALF_OPEN:
            self._level += 1
            self._open(f"health probe failed: {error}", escalate=False)

    def release(self, permit: Permit) -> None:
        """Give a permit back without an outcome (cancelled, or the request's own fault)."""
        if permit is Permit.PROBE:
            self._probes = max(0, self._probes - 1)

    # -- operator actions ----------------------------------------------------------------------

    @property
    def forced_open(self) -> bool:
        """Held open by an operator (until `reset` or the hold ends)."""
        return self._forced_until > self._clock.monotonic()

    def force_open(self, because: str, duration_s: float | None = None) -> None:
        """Open now and stay open for `duration_s` (None: until reset), whatever probes and
        trial requests say; then half-open as usual."""
        now = self._clock.monotonic()
        until = now + duration_s if duration_s is not None else float("inf")
        self._state = BreakerState.OPEN
        self._open_until = until
        self._forced_until = until
        self._times_opened += 1
        self._opened_because = f"forced open by an operator: {because}"
        self._half_open_ok = 0

    def reset(self) -> None:
        """Close now and forget the failure history and back-off level."""
        self._forced_until = 0.0
        self._level = 0
        self._probes = 0
        self._close()

    # -- transitions ---------------------------------------------------------------------------

    def _open(self, because: str, *, escalate: bool = True) -> None:
        now = self._clock.monotonic()
        if escalate:
            recently_closed = (
                self._closed_at is not None and now - self._closed_at < self._settings.window_s
            )
            self._level = self._level + 1 if recently_closed else 1
        s = self._settings
        duration = min(s.open_s * 2 ** (self._level - 1), s.max_open_s)
        self._state = BreakerState.OPEN
        self._open_until = now + duration
        self._times_opened += 1
        self._opened_because = because
        self._half_open_ok = 0

    def _close(self) -> None:
        self._state = BreakerState.CLOSED
        self._closed_at = self._clock.monotonic()
        self._consecutive = 0
        self._half_open_ok = 0
        self._opened_because = None
        for bucket in self._buckets:
            bucket[0] = -1
            bucket[1] = bucket[2] = 0

    # -- window --------------------------------------------------------------------------------

    def _bucket(self) -> list[int]:
        number = int(self._clock.monotonic() / self._bucket_len)
        bucket = self._buckets[number % len(self._buckets)]
        if bucket[0] != number:
            bucket[0] = number
            bucket[1] = bucket[2] = 0
        return bucket

    def _totals(self) -> tuple[int, int]:
        current = int(self._clock.monotonic() / self._bucket_len)
        oldest = current - len(self._buckets)
        ok = failed = 0
        for number, successes, failures in self._buckets:
            if number > oldest:
                ok += successes
                failed += failures
        return ok, failed

    def __repr__(self) -> str:
        snap = self.snapshot()
        text = f"<CircuitBreaker {self.route} {snap.state.value.upper()}"
        text += f" failures={snap.failures}/{snap.requests}"
        if snap.reopens_in_s is not None:
            text += f" reopen_in={snap.reopens_in_s:.1f}s level={snap.level}"
        if snap.state is BreakerState.HALF_OPEN:
            text += f" probes={snap.probes_in_flight}/{self._settings.half_open_max_probes}"
        return text + ">"


_HEALTHY = RouteHealth(HealthStatus.HEALTHY)
