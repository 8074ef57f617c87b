"""The control plane's services over the in-memory store, with a clock moved by hand.

- `OperatorActions`: actions in force, their expiry (audited), and their return after a restart;
- `RollbackGuard`: fires only when more than the error rate failed across the whole `for_s`
  span with enough requests, and not again while the gateway is MCP-only (a real
  `TrafficWindow` fed with `RequestEvent`s; the rollback itself is a recording stand-in that
  does what level 2 does to the flags);
- `SubjectRegistry`: stable pseudonyms, erasure, a new salt afterwards;
- `FlagService`: changes survive a restart through the store;
- `RoutingConfigService.start`: version 1 from the file, the newest version afterwards, a new
  version when the file's matrix changed.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

import orjson
import pytest

from hybridroute.audit.chain import ChainSigner
from hybridroute.audit.trail import AuditTrail
from hybridroute.caching.policy import CacheSettings
from hybridroute.compliance.redaction import Redactor
from hybridroute.compliance.subjects import SUBJECT_SECRET_KEY, SubjectRegistry
from hybridroute.config.control import GuardConfig
from hybridroute.config.defaults import DEFAULT_MATRIX
from hybridroute.config.load import parse_config
from hybridroute.config.schema import GatewayConfig
from hybridroute.control.actions import ACTIONS_KEY, OperatorActions
from hybridroute.control.flags import FLAGS_KEY, FlagService
from hybridroute.control.guard import RollbackGuard
from hybridroute.control.rollback import RollbackReport, RollbackService
from hybridroute.control.routing_config import CONFIG_FILE_AUTHOR, RoutingConfigService
from hybridroute.demo.config import embedded_config_data
from hybridroute.errors import ConfigError, RequestError
from hybridroute.gateway.cache import ResponseCache
from hybridroute.observability.events import Outcome, RequestEvent
from hybridroute.observability.traffic import TrafficWindow
from hybridroute.resilience.breaker import BreakerSettings, CircuitBreaker
from hybridroute.routing.flags import InMemoryFlagStore
from hybridroute.routing.matrix import RoutingMatrix
from hybridroute.signals import Flag, FlagState
from hybridroute.storage.memory import MemoryLedgerStore
from hybridroute.testing import FakeClock

pytestmark = pytest.mark.anyio

ROUTES = ("direct_bedrock", "mcp")


def trail_over(store: MemoryLedgerStore, clock: FakeClock) -> AuditTrail:
    return AuditTrail(store, ChainSigner(), clock, Redactor(True))


def held(breaker: CircuitBreaker) -> bool:
    """Whether an operator holds the breaker open (read through a call: it changes with time)."""
    return breaker.forced_open


def aggressive(cache: ResponseCache) -> bool:
    return cache.always_aggressive


def audited(store: MemoryLedgerStore, kind: str) -> list[dict[str, Any]]:
    return [orjson.loads(r.data) for r in store.audit_list() if r.kind == kind]


# -- operator actions --------------------------------------------------------------------------


class Actions:
    """Operator actions over real breakers, a real cache, the memory store and a fake clock."""

    def __init__(self, store: MemoryLedgerStore, clock: FakeClock) -> None:
        self.store, self.clock = store, clock
        self.breakers = {r: CircuitBreaker(r, BreakerSettings(), clock) for r in ROUTES}
        self.cache = ResponseCache(CacheSettings(), clock)
        self.trail = trail_over(store, clock)
        self.actions = OperatorActions(
            breakers=self.breakers,
            cache=self.cache,
            store=store,
            audit=self.trail,
            clock=clock,
            cache_aggressive_default=False,
        )

    async def take(self, action: str, **kwargs: Any) -> dict[str, Any]:
        arguments: dict[str, Any] = {"target": None, "enabled": None, "for_s": None}
        arguments.update(kwargs)
        return await self.actions.take(action, actor="ops", reason="drill", **arguments)


async def test_time_limited_actions_end_by_themselves_and_are_audited() -> None:
    clock, store = FakeClock(), MemoryLedgerStore()
    ops = Actions(store, clock)
    await ops.trail.open()
    started = clock.now()
    await ops.take("route_disable", target="direct_bedrock", for_s=60)
    await ops.take("breaker_open", target="mcp", for_s=30)
    await ops.take("maintenance", enabled=True)  # no for_s: stays until ended
    await ops.take("cache_aggressive", enabled=True, for_s=45)
    overrides = ops.actions.overrides()
    assert overrides.disabled_routes == frozenset({"direct_bedrock"})
    assert overrides.maintenance
    assert held(ops.breakers["mcp"])
    assert aggressive(ops.cache)

    clock.advance(29)
    assert await ops.actions.expire() == 0
    clock.advance(2)  # t = 31: the breaker hold ends
    assert await ops.actions.expire() == 1
    assert not held(ops.breakers["mcp"])
    assert ops.actions.overrides().disabled_routes == frozenset({"direct_bedrock"})
    clock.advance(30)  # t = 61: the isolation and the aggressive cache end
    assert await ops.actions.expire() == 2
    assert ops.actions.overrides().disabled_routes == frozenset()
    assert not aggressive(ops.cache)
    assert ops.actions.overrides().maintenance  # untimed: still in force
    assert [a.action for a in ops.actions.active()] == ["maintenance"]
    clock.advance(3600)
    assert await ops.actions.expire() == 0

    assert audited(store, "action_expired") == [
        {"action": "breaker_open", "target": "mcp", "by": "ops"},
        {"action": "route_disable", "target": "direct_bedrock", "by": "ops"},
        {"action": "cache_aggressive", "target": None, "by": "ops"},
    ]
    taken = audited(store, "operator_action")
    assert [t["action"] for t in taken] == [
        "route_disable",
        "breaker_open",
        "maintenance",
        "cache_aggressive",
    ]
    assert taken[0]["expires_at"] == started + 60
    assert taken[2]["expires_at"] is None
    assert (await ops.trail.verify()).ok


async def test_actions_in_force_come_back_after_a_restart_and_expired_ones_do_not() -> None:
    clock, store = FakeClock(), MemoryLedgerStore()
    before = Actions(store, clock)
    await before.take("route_disable", target="direct_bedrock", for_s=100)
    await before.take("breaker_open", target="mcp", for_s=300)
    await before.take("maintenance", enabled=True)
    assert len(orjson.loads(await store.get_state(ACTIONS_KEY) or "[]")) == 3

    clock.advance(50)
    after = Actions(store, clock)  # a restart: new parts over the same store
    await after.actions.load()
    assert after.actions.overrides().disabled_routes == frozenset({"direct_bedrock"})
    assert after.actions.overrides().maintenance
    assert held(after.breakers["mcp"])  # held for what is left of its 300 s
    clock.advance(251)
    assert not held(after.breakers["mcp"])

    later = Actions(store, clock)  # t = 301: only the untimed action is left
    await later.actions.load()
    assert later.actions.overrides().disabled_routes == frozenset()
    assert later.actions.overrides().maintenance
    assert not held(later.breakers["mcp"])
    assert [a.action for a in later.actions.active()] == ["maintenance"]


async def test_ending_an_action_early_and_refusing_nonsense() -> None:
    clock, store = FakeClock(), MemoryLedgerStore()
    ops = Actions(store, clock)
    await ops.take("route_disable", target="mcp", for_s=600)
    await ops.take("route_enable", target="mcp")
    assert ops.actions.overrides().disabled_routes == frozenset()
    await ops.take("breaker_open", target="direct_bedrock")
    assert held(ops.breakers["direct_bedrock"])
    await ops.take("breaker_reset", target="direct_bedrock")
    assert not held(ops.breakers["direct_bedrock"])
    assert ops.actions.active() == []
    nonsense: list[tuple[str, dict[str, Any]]] = [
        ("reboot", {}),
        ("route_disable", {}),
        ("route_disable", {"target": "nowhere"}),
        ("maintenance", {}),
        ("maintenance", {"enabled": True, "target": "mcp"}),
        ("breaker_reset", {"target": "mcp", "for_s": 10}),
        ("route_disable", {"target": "mcp", "for_s": 0}),
        ("route_disable", {"target": "mcp", "for_s": 31 * 86_400}),
    ]
    for action, kwargs in nonsense:
        with pytest.raises(RequestError):
            await ops.take(action, **kwargs)
    assert ops.actions.active() == []


# -- the rollback guard ------------------------------------------------------------------------


class RecordingRollback(RollbackService):
    """Stands in for the level-2 rollback: turns every flag off (what makes the gateway
    MCP-only) and records the call; no routes are probed or asked."""

    def __init__(self, flags: FlagService) -> None:  # the real one needs a running gateway
        self.flag_service = flags
        self.calls: list[tuple[int, str, str]] = []

    async def perform(
        self, level: int, *, version: int | None, actor: str, reason: str
    ) -> RollbackReport:
        self.calls.append((level, actor, reason))
        await self.flag_service.disable_all(actor=actor, reason=reason)
        return RollbackReport(level, actor, reason, 0.0)


T0 = 1_800_000_000.0


def event(at: float, failed: bool) -> RequestEvent:
    return RequestEvent(
        at=at,
        operation_type="standard",
        priority="medium",
        tenant="default",
        outcome=Outcome.FAILED if failed else Outcome.SERVED,
        status=503 if failed else 200,
        latency_s=0.05,
        route=None if failed else "mcp",
        error_code="all_routes_failed" if failed else None,
    )


def feed(window: TrafficWindow, start: float, span_s: float, total: int, failing: int) -> None:
    """`total` requests spread evenly over [start, start + span_s), the first `failing` of
    every batch of `total` failing (interleaved so any sub-span has the same mix)."""
    for i in range(total):
        window.record(event(start + span_s * i / total, failed=(i * failing) % total < failing))


class Guarded:
    def __init__(self, window: TrafficWindow, now: float, **config: Any) -> None:
        self.now = now
        self.store = MemoryLedgerStore()
        settings = {"auto_rollback": True, "error_rate": 0.5, "for_s": 60, "min_requests": 20}
        settings.update(config)
        self.flags = FlagService(
            InMemoryFlagStore(FlagState()), self.store, trail_over(self.store, FakeClock())
        )
        self.rollback = RecordingRollback(self.flags)
        self.guard = RollbackGuard(
            GuardConfig(**settings), window, self.flags, self.rollback, lambda: self.now
        )


def failing_window(span_s: float, total: int, failing: int) -> TrafficWindow:
    window = TrafficWindow(started_at=T0)
    feed(window, T0, span_s, total, failing)
    return window


async def test_the_guard_fires_on_a_failing_system_and_not_again_while_mcp_only() -> None:
    window = failing_window(60, 40, 30)  # 75 % failed over a full minute
    guarded = Guarded(window, T0 + 60)
    report = await guarded.guard.check()
    assert report is not None
    assert guarded.rollback.calls == [
        (2, "guard", "75% of 40 requests failed over the last 60s (trigger: more than 50%)")
    ]
    assert not any(guarded.flags.current().as_mapping().values())
    assert guarded.guard.last_reading == {"requests": 40, "error_rate": 0.75, "span_s": 60.0}
    assert guarded.guard.snapshot()["fired"] == 1

    feed(window, T0 + 60, 5, 20, 20)  # still failing, but MCP-only already
    guarded.now = T0 + 65
    assert await guarded.guard.check() is None
    assert len(guarded.rollback.calls) == 1

    # An operator turns a flag back on: the guard is armed again.
    await guarded.flags.set(Flag.BEDROCK_SUPPORT_MODE, True, actor="ops", reason="recovered?")
    assert await guarded.guard.check() is not None
    assert len(guarded.rollback.calls) == 2


@pytest.mark.parametrize(
    ("case", "span_s", "total", "failing", "now_after_start", "config"),
    [
        ("off", 60, 40, 40, 60, {"auto_rollback": False}),
        ("exactly the threshold", 60, 40, 20, 60, {}),
        ("below the threshold", 60, 40, 19, 60, {}),
        ("too few requests", 60, 19, 19, 60, {}),
        ("not yet the whole span", 30, 40, 40, 30, {}),
        ("failures have aged out", 10, 40, 40, 200, {}),
    ],
)
async def test_the_guard_holds_back(
    case: str,
    span_s: float,
    total: int,
    failing: int,
    now_after_start: float,
    config: dict[str, Any],
) -> None:
    window = failing_window(span_s, total, failing)
    if case == "failures have aged out":  # a healthy minute since
        feed(window, T0 + 140, 60, 40, 0)
    guarded = Guarded(window, T0 + now_after_start, **config)
    assert await guarded.guard.check() is None, case
    assert guarded.rollback.calls == []
    assert all(guarded.flags.current().as_mapping().values())


async def test_the_guard_fires_just_above_the_threshold_with_just_enough_requests() -> None:
    window = failing_window(60, 20, 11)  # 55 % of exactly min_requests
    guarded = Guarded(window, T0 + 60)
    assert await guarded.guard.check() is not None
    assert len(guarded.rollback.calls) == 1


# -- data subjects -----------------------------------------------------------------------------


async def test_pseudonyms_are_stable_kept_and_forgotten_on_erasure() -> None:
    store = MemoryLedgerStore()
    registry = SubjectRegistry(store)
    await registry.open({})
    secret = await store.get_state(SUBJECT_SECRET_KEY)
    assert secret is not None
    assert len(bytes.fromhex(secret)) == 32

    alice = registry.pseudonym("alice@example.com")
    bob = registry.pseudonym("bob@example.com")
    assert alice.startswith("ps-")
    assert len(alice) == 3 + 32
    assert alice != bob
    assert registry.pseudonym("alice@example.com") == alice
    assert await registry.resolve("alice@example.com") == alice
    await registry.flush()
    stored = {k: v for k, v in store._state.items() if k.startswith("subject:")}
    assert len(stored) == 2
    assert not any("alice" in k or "alice" in v for k, v in stored.items())

    restarted = SubjectRegistry(store)  # the same secret and salts from the store
    await restarted.open({})
    assert await restarted.resolve("alice@example.com") == alice
    assert await restarted.resolve("bob@example.com") == bob

    assert await restarted.erase("alice@example.com") == alice
    assert restarted.erasures == 1
    assert await restarted.erase("alice@example.com") is None  # nothing left to erase
    assert await restarted.erase("nobody@example.com") is None
    assert restarted.erasures == 1
    fresh = await restarted.resolve("alice@example.com")
    assert fresh.startswith("ps-")
    assert fresh != alice
    assert await restarted.resolve("bob@example.com") == bob

    # The first registry still caches the old salt; a registry that reads the store after the
    # erasure cannot find it.
    again = SubjectRegistry(store)
    await again.open({})
    assert await again.resolve("alice@example.com") not in (alice, fresh)


async def test_erasing_a_subject_seen_but_not_yet_saved() -> None:
    store = MemoryLedgerStore()
    registry = SubjectRegistry(store)
    await registry.open({})
    pseudonym = registry.pseudonym("carol")
    assert await registry.erase("carol") == pseudonym
    await registry.flush()
    assert not [k for k in store._state if k.startswith("subject:")]


async def test_the_subject_secret_can_come_from_the_environment() -> None:
    store = MemoryLedgerStore()
    registry = SubjectRegistry(store, "env:SUBJECT_SECRET_FOR_TEST")
    with pytest.raises(ConfigError, match="SUBJECT_SECRET_FOR_TEST"):
        await registry.open({})
    await registry.open({"SUBJECT_SECRET_FOR_TEST": "s3cret-value"})
    assert await store.get_state(SUBJECT_SECRET_KEY) is None
    pseudonym = await registry.resolve("dave")
    await registry.flush()
    other = SubjectRegistry(store, "env:SUBJECT_SECRET_FOR_TEST")
    await other.open({"SUBJECT_SECRET_FOR_TEST": "another-secret"})
    # Another secret cannot find the subject's salt: a new pseudonym.
    assert await other.resolve("dave") != pseudonym


# -- flags -------------------------------------------------------------------------------------


async def test_flag_changes_survive_a_restart_through_the_store() -> None:
    store, clock = MemoryLedgerStore(), FakeClock()
    trail = trail_over(store, clock)
    await trail.open()
    service = FlagService(InMemoryFlagStore(FlagState()), store, trail)
    assert not await service.load()  # nothing stored yet: the configured values stand
    assert all(service.current().as_mapping().values())

    change = await service.set(
        Flag.DIRECT_BEDROCK_FALLBACK, False, actor="ops", reason="incident 42"
    )
    assert change.changed == ("ENABLE_DIRECT_BEDROCK_FALLBACK",)
    assert not service.current().direct_bedrock_fallback
    assert (
        await service.set(Flag.DIRECT_BEDROCK_FALLBACK, False, actor="ops", reason="")
    ).changed == ()

    restarted = FlagService(InMemoryFlagStore(FlagState()), store, trail)
    assert await restarted.load()
    assert restarted.current() == service.current()
    assert not restarted.current().direct_bedrock_fallback
    assert restarted.last_change is not None
    assert restarted.last_change["by"] == "ops"

    await restarted.disable_all(actor="guard", reason="failing")
    assert not any(restarted.current().as_mapping().values())
    third = FlagService(InMemoryFlagStore(FlagState()), store, trail)
    await third.load()
    assert not any(third.current().as_mapping().values())
    assert orjson.loads(await store.get_state(FLAGS_KEY) or "{}")["last_change"]["action"] == (
        "disable_all"
    )

    records = audited(store, "flags_changed")
    assert [r["action"] for r in records] == ["update", "update", "disable_all"]
    assert records[0]["old"]["ENABLE_DIRECT_BEDROCK_FALLBACK"] is True
    assert records[0]["new"]["ENABLE_DIRECT_BEDROCK_FALLBACK"] is False
    assert records[0]["reason"] == "incident 42"
    assert (await trail.verify()).ok


# -- routing configuration versions ------------------------------------------------------------


def config_with(changes: Callable[[dict[str, Any]], None] | None = None) -> GatewayConfig:
    data = embedded_config_data(bedrock_url="http://127.0.0.1:9", mcp_url="http://127.0.0.1:9/mcp")
    data["storage"] = {"backend": "memory"}
    data["matrix"] = copy.deepcopy(DEFAULT_MATRIX)
    if changes is not None:
        changes(data)
    return parse_config(data)


class Swaps:
    def __init__(self) -> None:
        self.matrices: list[RoutingMatrix] = []

    def __call__(self, config: GatewayConfig, matrix: RoutingMatrix) -> None:
        self.matrices.append(matrix)

    def budget(self, operation_type: str) -> int:
        return self.matrices[-1].rule_for(operation_type).latency_budget_ms


def standard_budget(ms: int) -> Callable[[dict[str, Any]], None]:
    def change(data: dict[str, Any]) -> None:
        data["matrix"]["standard"]["latency_budget_ms"] = ms

    return change


async def start_service(
    config: GatewayConfig, store: MemoryLedgerStore, clock: FakeClock
) -> tuple[RoutingConfigService, Swaps]:
    swaps = Swaps()
    service = RoutingConfigService(config, store, trail_over(store, clock), clock, swaps)
    await service.start()
    return service, swaps


async def test_routing_versions_at_start() -> None:
    store, clock = MemoryLedgerStore(), FakeClock()
    config = config_with()

    # First start: the file's matrix is version 1.
    service, swaps = await start_service(config, store, clock)
    assert service.current is not None
    assert service.current.version == 1
    assert service.current.author == CONFIG_FILE_AUTHOR
    assert swaps.budget("standard") == 30_000

    # An operator applies version 2 while the gateway runs.
    body = {"matrix": orjson.loads(service.current.document)["matrix"]}
    body["matrix"]["standard"]["latency_budget_ms"] = 12_000
    clock.advance(10)
    applied = await service.apply(service.parse(body), author="ops", comment="faster")
    assert applied.version == 2
    assert swaps.budget("standard") == 12_000

    # Restart with the same file: the newest stored version is applied, nothing new stored.
    service, swaps = await start_service(config, store, clock)
    assert service.current is not None
    assert service.current.version == 2
    assert swaps.budget("standard") == 12_000
    assert [v.version for v in await store.config_versions()] == [1, 2]

    # Restart with a changed file: the file's matrix becomes version 3.
    changed = config_with(standard_budget(20_000))
    service, swaps = await start_service(changed, store, clock)
    assert service.current is not None
    assert service.current.version == 3
    assert service.current.author == CONFIG_FILE_AUTHOR
    assert service.current.comment == "the configuration file changed"
    assert swaps.budget("standard") == 20_000
    diff = orjson.loads(service.current.diff)
    assert diff["changed"] == {"standard": {"latency_budget_ms": [12_000, 20_000]}}

    # And again with that file: version 3 stays in force.
    service, swaps = await start_service(changed, store, clock)
    assert service.current is not None
    assert service.current.version == 3
    assert [v.version for v in await store.config_versions()] == [1, 2, 3]
    applied_records = audited(store, "config_applied")
    assert [r["version"] for r in applied_records] == [1, 2, 3]
    assert applied_records[1]["previous_version"] == 1
