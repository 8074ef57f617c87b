"""The composition root: a validated config in, a running gateway's parts out.

`Runtime.build()` wires routes, breakers, the health board and its probes, the flag store, the
matrix, admission control, the health monitor, the executor, the support manager, the price
table, the ledger store and cost ledger, the response cache and the gateway service. Nothing here
is module-level state: a reload builds a new Runtime and swaps it in. `start()` opens every
route's connections concurrently and the ledger store (rebuilding this month's spend), then
starts the probes, the support manager, the ledger's writers and the cache's purger; `aclose()`
closes routes, drains background tasks (writing every pending record), then closes the store.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import time
from dataclasses import dataclass, replace
from types import TracebackType
from typing import Any

import httpx2 as httpx
import orjson

from hybridroute import __version__
from hybridroute._clock import Clock, SystemClock
from hybridroute._tasks import TaskSupervisor
from hybridroute.caching.redis_store import RedisCacheStore
from hybridroute.config.platform import resolve_env
from hybridroute.config.schema import GatewayConfig
from hybridroute.control.plane import ControlPlane
from hybridroute.economics import CostLedger, PriceTable
from hybridroute.economics.shared_budgets import RedisBudgetBook
from hybridroute.economics.shared_ledger import SharedCostLedger
from hybridroute.gateway import Executor, ExecutorSettings, Gateway
from hybridroute.gateway.accounting import Accountant
from hybridroute.gateway.cache import ResponseCache, cache_settings
from hybridroute.gateway.support import BedrockSupportManager, SupportSettings
from hybridroute.gateway.tenants import TenantDirectory
from hybridroute.monitoring import HybridHealthMonitor
from hybridroute.monitoring.monitor import MonitorSettings
from hybridroute.notify import AlertNotice, NotificationDispatcher, build_sinks
from hybridroute.notify.fleet import FleetNotices
from hybridroute.observability.alerts import AlertManager, Transition
from hybridroute.observability.events import RequestEvent
from hybridroute.observability.metrics import GatewayMetrics
from hybridroute.observability.rollups import TrafficRecorder
from hybridroute.observability.shipping import EventShipper
from hybridroute.observability.tracing import RequestTracer
from hybridroute.observability.traffic import TrafficWindow
from hybridroute.observability.watch import AlertNotifier, ObservabilityLoop
from hybridroute.providers import Route, build_route
from hybridroute.resilience.admission import AdmissionControl, AdmissionSettings
from hybridroute.resilience.breaker import BreakerSettings, CircuitBreaker
from hybridroute.resilience.fleet import FleetHealth, default_replica_id
from hybridroute.resilience.health import HealthBoard
from hybridroute.resilience.probes import HealthProber
from hybridroute.routing.flags import FlagStore, InMemoryFlagStore
from hybridroute.routing.matrix import RoutingMatrix, Topology
from hybridroute.signals import FlagState
from hybridroute.storage import (
    AlertEventRecord,
    BatchWriter,
    GatewayEventRecord,
    RecordStore,
    open_ledger_store,
)
from hybridroute.types import RouteId

__all__ = ["STANDALONE", "Runtime", "WorkerRole"]

log = logging.getLogger("hybridroute.runtime")

_ORPHAN_LOOKBACK_S = 7 * 86_400


@dataclass(frozen=True, slots=True)
class WorkerRole:
    """Which part this process plays when several worker processes serve one gateway.

    `index` None: the only process. Worker 0 is the *leader*: it keeps the traffic window
    (every worker's requests), evaluates alerts, writes the hourly rollups and answers the
    admin endpoints; every other worker is a *follower* that ships its request events to the
    leader at `leader_url` and forwards admin requests there (`token` proves it is a worker).
    """

    index: int | None = None
    leader_url: str | None = None
    token: str | None = None

    @property
    def leader(self) -> bool:
        return self.index in (None, 0)


STANDALONE = WorkerRole()


def _build_ledger(
    config: GatewayConfig, currency: str, clock: Clock, store: RecordStore
) -> CostLedger:
    """The cost ledger: counting budgets on its own, or — with `budgets.redis_url` — with the
    fleet, in Redis."""
    budgets = config.budgets
    flush_s = config.storage.flush_interval_ms / 1000.0
    days = config.storage.retention_days
    if not budgets.shared:
        return CostLedger(
            budgets, currency, clock, store, flush_interval_s=flush_s, retention_days=days
        )
    assert budgets.redis_url is not None
    ledger = SharedCostLedger(
        budgets, currency, clock, store, flush_interval_s=flush_s, retention_days=days
    )
    url = resolve_env(budgets.redis_url, "budgets.redis_url")
    ledger.use_book(RedisBudgetBook.connect(url, budgets.redis_prefix, budgets.lease_s))
    return ledger


def _build_cache(config: GatewayConfig, clock: Clock) -> ResponseCache:
    """The response cache: in process, or — with `cache.redis_url` — shared in Redis."""
    settings = cache_settings(config.cache, list(config.matrix))
    shared = None
    if config.cache.redis_url is not None and settings.enabled:
        shared = RedisCacheStore.connect(
            resolve_env(config.cache.redis_url, "cache.redis_url"),
            clock,
            prefix=config.cache.redis_prefix,
            max_entries=settings.max_entries,
            max_bytes=settings.max_bytes,
            max_entry_bytes=settings.max_entry_bytes,
        )
    return ResponseCache(settings, clock, aggressive=config.cache.aggressive, store=shared)


def _fleet_parts(
    config: GatewayConfig,
    health: HealthBoard,
    clock: Clock,
    notifications: NotificationDispatcher,
) -> tuple[FleetHealth | None, NotificationDispatcher | FleetNotices]:
    """With `fleet.redis_url`: route health shared with the other replicas, and one alert
    notice per transition for the whole fleet (the first replica to claim it sends it)."""
    fleet = config.fleet
    if fleet.redis_url is None:
        return None, notifications
    url = resolve_env(fleet.redis_url, "fleet.redis_url")
    replica = fleet.replica_id or default_replica_id()
    routes = list(config.routes)
    return (
        FleetHealth.connect(url, fleet.redis_prefix, replica, health, routes, clock),
        FleetNotices.connect(url, fleet.redis_prefix, notifications),
    )


class Runtime:
    """Everything a running gateway needs, built from one config."""

    def __init__(
        self,
        config: GatewayConfig,
        *,
        clock: Clock | None = None,
        flags: FlagStore | None = None,
        ledger_store: RecordStore | None = None,
        role: WorkerRole = STANDALONE,
    ) -> None:
        self.config = config
        self.clock: Clock = clock or SystemClock()
        self.supervisor = TaskSupervisor("runtime")
        self.routes: dict[RouteId, Route] = {
            route_id: build_route(route_id, rc, clock=self.clock, supervisor=self.supervisor)
            for route_id, rc in config.routes.items()
        }
        self.breakers = {
            route_id: CircuitBreaker(
                route_id, BreakerSettings.from_config(config.breaker_for(route_id)), self.clock
            )
            for route_id in config.routes
        }
        self.flags: FlagStore = flags or InMemoryFlagStore(
            FlagState.from_mapping(config.flags.model_dump())
        )
        self.health = HealthBoard(
            self.breakers,
            {rid: route.readiness for rid, route in self.routes.items()},
            monitoring=self._monitoring,
            unhealthy_after=config.health.unhealthy_after,
        )
        self.prober = HealthProber(
            self.routes,
            self.health.record_probe,
            self._monitoring,
            config.health,
            self.clock,
            self.supervisor,
        )
        self.matrix = RoutingMatrix.from_config(config)
        self.topology = Topology.from_config(config)
        routing = config.routing
        executor_settings = ExecutorSettings(
            retry_backoff_s=routing.retry_backoff_ms / 1000.0,
            retry_backoff_max_s=routing.retry_backoff_max_ms / 1000.0,
        )
        self.admission = {
            route_id: AdmissionControl(
                route_id,
                AdmissionSettings(max_in_flight=rc.max_in_flight, max_queue=rc.max_queue),
                self.clock,
            )
            for route_id, rc in config.routes.items()
        }
        self.monitor = HybridHealthMonitor(
            health=self.health,
            matrix=self.matrix,
            topology=self.topology,
            monitoring=self._monitoring,
            clock=self.clock,
            settings=MonitorSettings(
                window_s=config.health.window_s,
                probe_kinds={rid: route.probe_kind for rid, route in self.routes.items()},
                attempt_share=executor_settings.attempt_share,
                probe_timeout_s=config.health.probe_timeout_s,
                breaker_open_s=config.breaker.open_s,
            ),
            admission=self.admission,
        )
        self.executor = Executor(
            self.routes,
            self.health,
            self.clock,
            executor_settings,
            admission=self.admission,
            monitor=self.monitor,
        )
        self.support = BedrockSupportManager(
            flags=self.flags,
            health=self.health,
            kinds=self.topology.kinds,
            prober=self.prober,
            clock=self.clock,
            settings=SupportSettings(recovery_max_s=config.health.probe_interval_s),
        )
        self.prices = PriceTable.from_config(config.pricing)
        self.store: RecordStore = ledger_store or open_ledger_store(config.storage)
        self.ledger = _build_ledger(config, self.prices.currency, self.clock, self.store)
        self.cache = _build_cache(config, self.clock)
        self.gateway = Gateway(
            matrix=self.matrix,
            topology=self.topology,
            flags=self.flags,
            health=self.health,
            executor=self.executor,
            operations=config.operations,
            clock=self.clock,
            routes=self.routes,
            accountant=Accountant(self.prices, self.ledger, self.routes, self.clock),
            cache=self.cache,
            tenants=TenantDirectory(config.tenants),
            max_output_tokens=config.routing.max_output_tokens,
            tenant_residency=config.compliance.tenant_residency,
        )
        # Observability: every finished request feeds the metrics and the traffic window; the
        # loop samples gauges and (in the alerting process) evaluates the alert rules.
        self.metrics = GatewayMetrics(self.topology.kinds, version=__version__)
        self.traffic = TrafficWindow(started_at=self.gateway.now())
        self.role = role
        self.gateway.add_observer(self.metrics.observe)
        self._http = httpx.AsyncClient()
        self.shipper: EventShipper | None = None
        if role.leader:
            self.gateway.add_observer(self.traffic.record)
        elif role.leader_url is not None and role.token is not None:
            self.shipper = EventShipper(role.leader_url, role.token, self.clock, self._http)
            self.gateway.add_observer(self.shipper.submit)
        self.tracer = RequestTracer(
            config.tracing, route_kinds=self.topology.kinds, service_version=__version__
        )
        self.gateway.add_observer(self.tracer.record)
        self.notifications = NotificationDispatcher(
            build_sinks(config.alerts.sinks, self._http), self.clock
        )
        self.fleet, self.notices = _fleet_parts(config, self.health, self.clock, self.notifications)
        self.alerts = AlertManager(
            config.alerts.rules,
            self.clock,
            notifier=AlertNotifier(self.notices),
            resolve_after_s=config.alerts.resolve_after_s,
        )
        self.observability = ObservabilityLoop(
            clock=self.clock,
            traffic=self.traffic,
            slo=config.slo,
            metrics=self.metrics,
            alerts=self.alerts,
            ledger=self.ledger,
            health=self.health,
            monitor=self.monitor,
            admission=self.admission,
            route_kinds=self.topology.kinds,
            support_mode=lambda: self.flags.current().bedrock_support_mode,
            evaluate_every_s=config.alerts.evaluate_every_s,
            condition_window_s=config.alerts.condition_window_s,
            now=self.gateway.now,
            alerting=role.leader,
        )
        # What the operations reports read back: hourly traffic, alert transitions, starts.
        self.recorder = TrafficRecorder(self.traffic, self.store, self.clock, now=self.gateway.now)
        self.alert_log: BatchWriter[AlertEventRecord] = BatchWriter(
            "alert events",
            self.store.append_alert_events,
            self.clock,
            flush_interval_s=config.storage.flush_interval_ms / 1000.0,
        )
        self.alerts.add_listener(self._log_alert)
        # The control plane: flags, routing versions, operator actions, rollback, audit, GDPR.
        self.control = ControlPlane(
            config=config,
            store=self.store,
            clock=self.clock,
            flags=self.flags,
            gateway=self.gateway,
            breakers=self.breakers,
            cache=self.cache,
            health=self.health,
            prober=self.prober,
            traffic=self.traffic,
            swap=self._use_routing,
            leader=role.leader,
            spool=ledger_store is None,
        )
        if role.leader:
            self.gateway.add_observer(self.control.observe)
            self.alerts.add_listener(self._audit_alert)
            self.ledger.add_listener(self.control.budget_event)
        self.started_at: float | None = None
        self._watch: asyncio.Task[Any] | None = None

    def _use_routing(self, config: GatewayConfig, matrix: RoutingMatrix) -> None:
        """Swap in an applied routing-configuration version (hot: the next decision uses it)."""
        self.config = config
        self.matrix = matrix
        self.gateway.use_matrix(matrix)
        self.monitor.use_matrix(matrix)

    def observe_shipped(self, event: RequestEvent) -> None:
        """A follower worker's finished request, in the leader."""
        self.traffic.record(event)
        self.control.observe(event)

    def _audit_alert(self, transition: Transition) -> None:
        alert = transition.alert
        self.control.alert_transition(
            {
                "alert_id": alert.id,
                "rule": alert.rule,
                "severity": alert.severity,
                "transition": transition.transition,
                "labels": dict(alert.labels),
                "summary": alert.summary,
                "value": alert.value,
                "acknowledged_by": alert.acknowledged_by,
            }
        )

    def _log_alert(self, transition: Transition) -> None:
        alert = transition.alert
        self.alert_log.submit(
            AlertEventRecord(
                at=transition.at,
                alert_id=alert.id,
                rule=alert.rule,
                severity=alert.severity,
                transition=transition.transition,
                labels=orjson.dumps(dict(alert.labels)).decode(),
                summary=alert.summary,
                value=alert.value,
                acknowledged_by=alert.acknowledged_by,
            )
        )

    async def record_event(self, kind: str, detail: dict[str, Any]) -> None:
        """Record something that happened to the gateway (the reports list it); a store that
        is away is logged, not raised."""
        record = GatewayEventRecord(self.clock.now(), kind, orjson.dumps(detail).decode())
        try:
            await self.store.append_gateway_events([record])
        except Exception:
            log.exception("could not record the gateway event %s", kind)

    async def _record_start(self) -> None:
        """Record this start, and a configuration change when the configuration differs from
        the one the last start ran (the reports list both)."""
        digest = hashlib.sha256(self.config.model_dump_json().encode()).hexdigest()
        now = self.clock.now()
        try:
            last = await self.store.last_gateway_event("started")
            events = [
                GatewayEventRecord(
                    now,
                    "started",
                    orjson.dumps({"version": __version__, "config": digest}).decode(),
                )
            ]
            previous = orjson.loads(last.detail).get("config") if last is not None else None
            if previous is not None and previous != digest:
                events.append(
                    GatewayEventRecord(
                        now,
                        "config_changed",
                        orjson.dumps({"from": previous, "to": digest}).decode(),
                    )
                )
            await self.store.append_gateway_events(events)
            await self._close_orphan_alerts(now)
        except Exception:  # the store is away: starting matters more than this record
            log.exception("could not record the gateway's start")

    async def _close_orphan_alerts(self, now: float) -> None:
        """Alerts a previous process left firing (it stopped without resolving them: a crash)
        are resolved now, recorded and notified, so no receiver keeps them open for ever. If
        their condition still holds they fire again, as new alerts."""
        latest: dict[str, AlertEventRecord] = {}
        for event in await self.store.alert_events(now - _ORPHAN_LOOKBACK_S):
            latest[event.alert_id] = event
        for event in latest.values():
            if event.transition == "resolved":
                continue
            summary = f"{event.summary} (the gateway restarted)"
            self.alert_log.submit(replace(event, at=now, transition="resolved", summary=summary))
            self.notices.notify(
                AlertNotice(
                    alert_id=event.alert_id,
                    rule=event.rule,
                    severity=event.severity,
                    transition="resolved",
                    summary=summary,
                    description="",
                    labels=orjson.loads(event.labels),
                    value=event.value,
                    threshold=0.0,
                    started_at=event.at,
                    at=now,
                    acknowledged_by=event.acknowledged_by,
                )
            )

    def _monitoring(self) -> bool:
        return self.flags.current().hybrid_health_monitoring

    async def start(self) -> None:
        """Open every route (concurrently), then start the health probes. Unreachable
        upstreams do not stop the start."""
        await asyncio.gather(
            self.ledger.start(self.supervisor),
            *(route.start() for route in self.routes.values()),
        )
        await self.control.start(self.supervisor)
        budgets = self.config.budgets
        if self.config.storage.backend == "postgres" and budgets.configured and not budgets.shared:
            log.warning(
                "budgets are counted by each replica on its own: they are not shared through "
                "PostgreSQL, so N replicas may spend up to N times a limit; give each replica "
                "its share of the limit (docs/deployment.md)"
            )
        self.prober.start()
        self.support.start(self.supervisor)
        self.cache.start(self.supervisor)
        if self.role.leader:
            await self.recorder.start()
            await self._record_start()
            self.supervisor.spawn(self.recorder.run(), name="traffic-rollups")
            self.supervisor.spawn(self.alert_log.run(), name="alert-log-writer")
            self.notifications.start(self.supervisor)
        if self.shipper is not None:
            self.supervisor.spawn(self.shipper.run(), name="event-shipper")
        self._watch = self.supervisor.spawn(self.observability.run(), name="observability")
        if self.fleet is not None:
            self.supervisor.spawn(self.fleet.run(), name="fleet-health")
        self.tracer.start()
        self.started_at = time.time()

    async def aclose(self) -> None:
        await asyncio.gather(
            *(route.aclose() for route in self.routes.values()), return_exceptions=True
        )
        # Stop evaluating first, so no transition arrives after the dispatcher has closed; the
        # alerts still active are resolved ("gateway stopped") and notified.
        if self._watch is not None:
            self._watch.cancel()
            await asyncio.gather(self._watch, return_exceptions=True)
        if self.role.leader:
            self.alerts.close("the gateway stopped")
        if isinstance(self.notices, FleetNotices):
            await self.notices.aclose()  # claims still in flight reach the dispatcher first
        await self.notifications.aclose()  # delivers what it can of what is queued
        await self.supervisor.aclose()
        await self.tracer.aclose()  # exports queued spans, at most ~5 s
        await self.control.aclose()
        try:
            await self.alert_log.flush()
        except Exception:  # the store is away: say so, the gateway still stops
            log.exception("%d alert events could not be written", self.alert_log.pending)
        await self.ledger.aclose()  # writes what is still pending, then closes the store
        if self.fleet is not None:
            await self.fleet.aclose()
        shared_cache = getattr(self.cache.store, "aclose", None)
        if shared_cache is not None:
            await shared_cache()
        await self._http.aclose()

    async def __aenter__(self) -> Runtime:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    def __repr__(self) -> str:
        return f"<Runtime routes={sorted(self.routes)} {self.health!r}>"
