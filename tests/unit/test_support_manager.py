"""The Bedrock support manager: lifecycle, status, and the emergency procedure, on a fake clock."""

from __future__ import annotations

import asyncio

import pytest

from hybridroute._tasks import TaskSupervisor
from hybridroute.config.schema import HealthConfig
from hybridroute.errors import UpstreamUnavailable
from hybridroute.gateway.support import (
    BedrockSupportManager,
    SupportEvent,
    SupportLevel,
    SupportSettings,
)
from hybridroute.resilience.breaker import BreakerSettings, BreakerState, CircuitBreaker
from hybridroute.resilience.health import HealthBoard
from hybridroute.resilience.probes import HealthProber
from hybridroute.routing.flags import InMemoryFlagStore
from hybridroute.signals import Flag, FlagState
from hybridroute.testing import FakeClock
from hybridroute.types import RouteKind
from tests.unit.executor_fakes import D, FakeRoute, M

pytestmark = pytest.mark.anyio


class ProbedRoute(FakeRoute):
    """A fake route whose probe passes or fails on demand, counting probes."""

    def __init__(self, route_id: str) -> None:
        super().__init__(route_id, [])
        self.up = True
        self.probes = 0

    probe_kind = "validation"

    async def probe(self, *, budget_s: float) -> None:
        self.probes += 1
        if not self.up:
            raise UpstreamUnavailable(self.id, "down", upstream_code="ServiceUnavailableException")


class Setup:
    def __init__(self, supervisor: TaskSupervisor, *, monitoring: bool = True) -> None:
        self.clock = FakeClock()
        self.routes = {D: ProbedRoute(D), M: ProbedRoute(M)}
        self.breakers = {
            r: CircuitBreaker(r, BreakerSettings(open_s=60, max_open_s=600), self.clock)
            for r in self.routes
        }
        self.flags = InMemoryFlagStore(FlagState(hybrid_health_monitoring=monitoring))
        self.health = HealthBoard(
            self.breakers,
            {r: route.readiness for r, route in self.routes.items()},
            monitoring=lambda: self.flags.current().hybrid_health_monitoring,
        )
        prober = HealthProber(
            self.routes,
            self.health.record_probe,
            lambda: self.flags.current().hybrid_health_monitoring,
            HealthConfig(probe_interval_s=3600, probe_timeout_s=1),
            self.clock,
            supervisor,
        )
        self.manager = BedrockSupportManager(
            flags=self.flags,
            health=self.health,
            kinds={D: RouteKind.BEDROCK, M: RouteKind.MCP},
            prober=prober,
            clock=self.clock,
            settings=SupportSettings(recovery_initial_s=0.5, recovery_max_s=4.0),
        )
        self.events: list[SupportEvent] = []
        self.manager.add_listener(self.events.append)
        self.manager.start(supervisor)

    def trip(self, route: str) -> None:
        breaker = self.breakers[route]
        while breaker.state is not BreakerState.OPEN:
            permit = breaker.try_acquire()
            assert permit is not None
            breaker.record_failure(permit, "ServiceUnavailableException: down")
        self.routes[route].up = False

    async def run(self, seconds: float, step: float = 0.25) -> None:
        """Let background tasks run while the fake clock moves `seconds` forward."""
        for _ in range(round(seconds / step)):
            await self._settle()
            self.clock.advance(step)
            await self._settle()

    @staticmethod
    async def _settle() -> None:
        for _ in range(5):
            await asyncio.sleep(0)

    def level(self) -> SupportLevel:
        return self.manager.level  # a call, so the checker does not narrow across awaits

    def emergency(self) -> bool:
        return self.manager.in_emergency

    def kinds(self) -> list[str]:
        return [e.kind for e in self.events]


@pytest.fixture
async def supervisor():
    sup = TaskSupervisor("test")
    yield sup
    await sup.aclose()


async def test_status_follows_the_routes(supervisor: TaskSupervisor):
    s = Setup(supervisor)
    assert s.level() is SupportLevel.HEALTHY
    s.trip(D)
    await s.run(0.5)
    assert s.level() is SupportLevel.DEGRADED
    assert s.events[-1].kind == "status_changed"
    assert s.events[-1].severity == "warning"
    assert s.events[-1].message.startswith("support status healthy → degraded (direct_bedrock:")
    status = s.manager.status()
    assert status.routes[D]["breaker"] == "open"
    assert status.mode == "active"
    assert not status.emergency


async def test_both_routes_down_starts_the_emergency_and_recovery_ends_it(
    supervisor: TaskSupervisor,
):
    s = Setup(supervisor)
    s.trip(D)
    s.trip(M)
    await s.run(0.25)
    assert s.level() is SupportLevel.CRITICAL
    assert s.emergency()
    started = s.events[-1]
    assert started.kind == "emergency_started"
    assert started.severity == "critical"
    assert "every route is unavailable (direct_bedrock: breaker open" in started.message
    # recovery probes back off: 0.5 s, then 1 s, 2 s, 4 s, 4 s ...
    await s.run(0.5)
    assert s.routes[M].probes == 1
    await s.run(1.0)
    assert s.routes[M].probes == 2
    await s.run(2.0)
    assert s.routes[M].probes == 3
    s.routes[M].up = True  # mcp comes back: the next recovery probe half-opens its breaker
    await s.run(4.0)
    assert s.breakers[M].state is BreakerState.HALF_OPEN
    assert not s.emergency()
    resolved = next(e for e in s.events if e.kind == "emergency_resolved")
    assert resolved.message.startswith("emergency over after 7.")
    assert s.manager.status().recovery_probes >= 4


async def test_with_monitoring_off_recovery_waits_for_the_breakers(supervisor: TaskSupervisor):
    s = Setup(supervisor, monitoring=False)
    s.trip(D)
    s.trip(M)
    await s.run(5.0)
    assert s.emergency()
    assert s.routes[M].probes == 0  # no active probes: DESIGN.md §4


async def test_deactivating_support_mode_leaves_only_the_mcp_route_in_use(
    supervisor: TaskSupervisor,
):
    s = Setup(supervisor)
    s.trip(D)
    await s.run(0.5)
    assert s.level() is SupportLevel.DEGRADED
    status = s.manager.deactivate("bedrock incident")
    assert not s.flags.current().bedrock_support_mode
    assert status.mode == "inactive"
    assert status.status is SupportLevel.HEALTHY  # direct_bedrock is not in use any more
    assert status.routes[D]["in_use"] == "no"
    assert "support_mode_deactivated" in s.kinds()
    deactivated = next(e for e in s.events if e.kind == "support_mode_deactivated")
    assert deactivated.message == (
        "Bedrock support mode deactivated: MCP-only routing (bedrock incident)"
    )
    s.manager.activate()
    assert s.level() is SupportLevel.DEGRADED
    assert s.kinds()[-2:] == ["support_mode_activated", "status_changed"]


async def test_a_flag_change_made_elsewhere_is_noticed(supervisor: TaskSupervisor):
    s = Setup(supervisor)
    s.flags.set(Flag.BEDROCK_SUPPORT_MODE, False)
    await s.run(0.5)
    assert s.manager.status().mode == "inactive"
    assert "support_mode_deactivated" in s.kinds()


async def test_a_failing_listener_does_not_stop_the_procedure(supervisor: TaskSupervisor):
    s = Setup(supervisor)

    def broken(event: SupportEvent) -> None:
        raise RuntimeError("sink down")

    s.manager.add_listener(broken)
    s.trip(D)
    s.trip(M)
    await s.run(0.5)
    assert s.emergency()
    assert s.events[-1].kind == "emergency_started"
