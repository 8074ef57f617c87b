"""BedrockSupportManager: the support-mode lifecycle, its status, and the emergency procedure.

Support mode is `ENABLE_BEDROCK_SUPPORT_MODE`: on, operations use their Direct Bedrock routes as
the matrix says; off, the gateway runs MCP-only. `activate()` / `deactivate()` turn it on and off
(through the one flag store, so the change reaches the next decision); a change made elsewhere
is noticed and recorded too.

Status, from the health of the routes in use (every route while support mode is on; the
non-Bedrock ones while it is off), as `HealthBoard.availability` reads it:
- healthy — every route usable and its breaker closed;
- degraded — some, not all, routes unavailable, or a breaker half-open (recovering: a half-open
  breaker counts as available even while its one trial request is in flight, so that request
  does not flip the status back to critical);
- critical — no route available.

The emergency procedure, when status turns critical: record it (an event with every route's
reason), raise a critical event to the listeners (the log listener; other subscribers register
with `add_listener`), keep serving what can be served (the policy still tries a route when none
is healthy), and recover on its own:
while health monitoring is on, probe the unavailable routes with exponential backoff (from
`recovery_initial_s`, doubling up to the probe interval) — a passing probe half-opens the
route's breaker, and the next request closes it. With monitoring off, recovery waits for the
breakers' own open time. The emergency ends when a route is available again, with an event that
says how long it lasted. `recovery_probes` counts the probes of the current (or last) emergency.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from enum import StrEnum
from typing import Any

from hybridroute._clock import Clock
from hybridroute._tasks import TaskSupervisor
from hybridroute.resilience.breaker import BreakerState
from hybridroute.resilience.health import HealthBoard
from hybridroute.resilience.probes import HealthProber
from hybridroute.routing.flags import FlagStore
from hybridroute.signals import Flag, HealthStatus
from hybridroute.types import RouteId, RouteKind

__all__ = [
    "BedrockSupportManager",
    "SupportEvent",
    "SupportLevel",
    "SupportSettings",
    "SupportStatus",
]

log = logging.getLogger("hybridroute.support")

EVENTS_KEPT = 100


class SupportLevel(StrEnum):
    HEALTHY = "healthy"
    DEGRADED = "degraded"
    CRITICAL = "critical"


@dataclass(frozen=True, slots=True)
class SupportEvent:
    """Something the support manager did or saw."""

    at: float  # epoch seconds
    kind: str  # support_mode_activated, status_changed, emergency_started, ...
    severity: str  # info, warning, critical
    message: str


@dataclass(frozen=True, slots=True)
class SupportStatus:
    mode: str  # active (support mode on) or inactive (MCP-only)
    status: SupportLevel
    since: float  # epoch seconds of the last status change
    routes: dict[RouteId, dict[str, str]]
    emergency: bool
    emergency_since: float | None
    recovery_probes: int
    events: tuple[SupportEvent, ...] = field(default=())

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


Listener = Callable[[SupportEvent], None]


@dataclass(frozen=True, slots=True)
class SupportSettings:
    recovery_initial_s: float = 0.5  # first recovery probe after an emergency starts ...
    recovery_max_s: float = 10.0  # ... doubling up to this (the probe interval)
    check_interval_s: float = 0.25  # how often route health is re-read


class BedrockSupportManager:
    """Watches route health, runs the emergency procedure, and owns support mode's lifecycle."""

    def __init__(
        self,
        *,
        flags: FlagStore,
        health: HealthBoard,
        kinds: Mapping[RouteId, RouteKind],
        prober: HealthProber,
        clock: Clock,
        settings: SupportSettings | None = None,
    ) -> None:
        self._flags = flags
        self._health = health
        self._kinds = dict(kinds)
        self._prober = prober
        self._clock = clock
        self.settings = settings or SupportSettings()
        self._events: deque[SupportEvent] = deque(maxlen=EVENTS_KEPT)
        self._listeners: list[Listener] = [_log_event]
        self._mode = flags.current().bedrock_support_mode
        self._level = SupportLevel.HEALTHY
        self._since = clock.now()
        self._emergency_since: float | None = None
        self._recovery_task: asyncio.Task[None] | None = None
        self._recovery_probes = 0
        self._supervisor: TaskSupervisor | None = None

    # -- lifecycle ---------------------------------------------------------------------------------

    def start(self, supervisor: TaskSupervisor) -> None:
        """Start watching (a supervised task)."""
        self._supervisor = supervisor
        self.check()
        supervisor.spawn(self._watch(), name="support-manager")

    def activate(self, reason: str = "operator request") -> SupportStatus:
        """Turn support mode on: operations use their Direct Bedrock routes again."""
        self._flags.set(Flag.BEDROCK_SUPPORT_MODE, True)
        self.check(reason)
        return self.status()

    def deactivate(self, reason: str = "operator request") -> SupportStatus:
        """Turn support mode off: MCP-only routing from the next request."""
        self._flags.set(Flag.BEDROCK_SUPPORT_MODE, False)
        self.check(reason)
        return self.status()

    def add_listener(self, listener: Listener) -> None:
        self._listeners.append(listener)

    # -- watching ----------------------------------------------------------------------------------

    async def _watch(self) -> None:
        while True:
            await self._clock.sleep(self.settings.check_interval_s)
            self.check()

    def check(self, reason: str | None = None) -> SupportLevel:
        """Re-read the flag and the routes' health; record and act on any change."""
        mode = self._flags.current().bedrock_support_mode
        if mode != self._mode:
            self._mode = mode
            why = f" ({reason})" if reason else ""
            if mode:
                self._emit("support_mode_activated", "info", "Bedrock support mode activated" + why)
            else:
                self._emit(
                    "support_mode_deactivated",
                    "warning",
                    "Bedrock support mode deactivated: MCP-only routing" + why,
                )
        level, unavailable = self._assess()
        if level is not self._level:
            self._transition(level, unavailable)
        return level

    def _in_use(self) -> list[RouteId]:
        if self._mode:
            return list(self._kinds)
        return [r for r, kind in self._kinds.items() if kind is not RouteKind.BEDROCK]

    def _assess(self) -> tuple[SupportLevel, dict[RouteId, str]]:
        unavailable: dict[RouteId, str] = {}
        wobbly = False
        for route in self._in_use():
            health = self._health.availability(route)
            if health.status is HealthStatus.UNHEALTHY:
                unavailable[route] = health.detail or "unhealthy"
            elif self._health.breaker(route).state is not BreakerState.CLOSED:
                wobbly = True
        in_use = self._in_use()
        if in_use and len(unavailable) == len(in_use):
            return SupportLevel.CRITICAL, unavailable
        if unavailable or wobbly:
            return SupportLevel.DEGRADED, unavailable
        return SupportLevel.HEALTHY, unavailable

    def _transition(self, level: SupportLevel, unavailable: dict[RouteId, str]) -> None:
        previous, self._level = self._level, level
        self._since = self._clock.now()
        listing = "; ".join(f"{r}: {why}" for r, why in unavailable.items())
        if level is SupportLevel.CRITICAL:
            self._emergency_since = self._clock.monotonic()
            self._recovery_probes = 0  # counted per emergency
            self._emit(
                "emergency_started",
                "critical",
                f"every route is unavailable ({listing}); emergency procedure started: "
                "serving what can be served, probing for recovery",
            )
            self._start_recovery()
            return
        if previous is SupportLevel.CRITICAL and self._emergency_since is not None:
            lasted = self._clock.monotonic() - self._emergency_since
            self._emergency_since = None
            self._stop_recovery()
            self._emit(
                "emergency_resolved",
                "info",
                f"emergency over after {lasted:.1f}s: a route is available again; "
                f"status {level.value}",
            )
            return
        severity = "warning" if level is SupportLevel.DEGRADED else "info"
        detail = f" ({listing})" if listing else ""
        self._emit(
            "status_changed",
            severity,
            f"support status {previous.value} → {level.value}{detail}",
        )

    # -- recovery ----------------------------------------------------------------------------------

    def _start_recovery(self) -> None:
        if self._supervisor is None or self._recovery_task is not None:
            return
        self._recovery_task = self._supervisor.spawn(self._recover(), name="support-recovery")

    def _stop_recovery(self) -> None:
        task, self._recovery_task = self._recovery_task, None
        if task is not None and task is not asyncio.current_task():
            task.cancel()

    async def _recover(self) -> None:
        delay = self.settings.recovery_initial_s
        try:
            while self._level is SupportLevel.CRITICAL:
                await self._clock.sleep(delay)
                if self._flags.current().hybrid_health_monitoring:
                    for route in self._in_use():
                        if self._health.availability(route).status is HealthStatus.UNHEALTHY:
                            self._recovery_probes += 1
                            result = await self._prober.probe(route)
                            log.info(
                                "recovery probe of %s: %s",
                                route,
                                "passed" if result.ok else f"failed ({result.error})",
                            )
                self.check()
                delay = min(delay * 2, max(self.settings.recovery_max_s, delay))
        finally:
            if self._recovery_task is asyncio.current_task():
                self._recovery_task = None

    # -- reading -----------------------------------------------------------------------------------

    def _emit(self, kind: str, severity: str, message: str) -> None:
        event = SupportEvent(self._clock.now(), kind, severity, message)
        self._events.append(event)
        for listener in self._listeners:
            try:
                listener(event)
            except Exception:  # a listener's bug must not stop the procedure
                log.exception("support event listener failed")

    @property
    def level(self) -> SupportLevel:
        return self._level

    @property
    def in_emergency(self) -> bool:
        return self._emergency_since is not None

    def status(self) -> SupportStatus:
        routes = {}
        for route in self._kinds:
            health = self._health.availability(route)
            routes[route] = {
                "status": health.status.value,
                "breaker": self._health.breaker(route).state.value,
                "detail": health.detail,
                "in_use": "yes" if route in self._in_use() else "no",
            }
        return SupportStatus(
            mode="active" if self._mode else "inactive",
            status=self._level,
            since=self._since,
            routes=routes,
            emergency=self.in_emergency,
            emergency_since=(
                None
                if self._emergency_since is None
                else self._clock.now() - (self._clock.monotonic() - self._emergency_since)
            ),
            recovery_probes=self._recovery_probes,
            events=tuple(self._events)[-20:],
        )

    def __repr__(self) -> str:
        mode = "active" if self._mode else "inactive"
        return f"<BedrockSupportManager {mode} {self._level.value}>"


_LOG_LEVEL = {"critical": logging.CRITICAL, "warning": logging.WARNING, "info": logging.INFO}


def _log_event(event: SupportEvent) -> None:
    log.log(_LOG_LEVEL.get(event.severity, logging.INFO), "%s: %s", event.kind, event.message)
