"""`ControlPlane`: the control-plane services of one gateway, built and wired together.

It owns the audit trail (and what feeds it: routing decisions, alert transitions, budget
thresholds), the redactor, the data-subject registry, the flag service, the routing
configuration versions, operator actions, rollbacks, the rollback guard and the compliance
service. `start()` continues the audit chain and re-applies what operators left in force (flags,
the routing version, operator actions); the leader then runs the writers, the expiry of
operator actions, the guard and the retention purge.

With several worker processes, the leader answers every admin call; followers `sync()` once a
second from the shared store (a revision number the leader bumps on every change), so a change
is in force on every worker within about half a second (polled every 0.25 s).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import secrets
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from hybridroute._clock import Clock
from hybridroute._tasks import TaskSupervisor
from hybridroute.audit.chain import ChainSigner
from hybridroute.audit.spool import AuditSpool
from hybridroute.audit.trail import AuditTrail
from hybridroute.compliance import logs as log_redaction
from hybridroute.compliance.redaction import Redactor
from hybridroute.compliance.subjects import SubjectRegistry
from hybridroute.config.schema import GatewayConfig
from hybridroute.control.actions import OperatorActions
from hybridroute.control.compliance import ComplianceService
from hybridroute.control.flags import FlagService
from hybridroute.control.guard import RollbackGuard
from hybridroute.control.rollback import RollbackService
from hybridroute.control.routing_config import RoutingConfigService
from hybridroute.economics.ledger import BudgetEvent
from hybridroute.errors import ConfigError, ConfigIssue
from hybridroute.gateway.cache import ResponseCache
from hybridroute.gateway.service import Gateway
from hybridroute.observability.events import RequestEvent
from hybridroute.observability.traffic import TrafficWindow
from hybridroute.resilience.breaker import CircuitBreaker
from hybridroute.resilience.health import HealthBoard
from hybridroute.resilience.probes import HealthProber
from hybridroute.routing.flags import FlagStore
from hybridroute.routing.matrix import RoutingMatrix
from hybridroute.storage import RecordStore
from hybridroute.storage.control import AuditRecord
from hybridroute.types import RouteId

__all__ = ["REVISION_KEY", "ControlPlane"]

log = logging.getLogger("hybridroute.control")

REVISION_KEY = "control:revision"
_SYNC_EVERY_S = 0.25  # one small read; a change is in force everywhere within ~0.5 s


def _hmac_key(config: GatewayConfig, environ: Mapping[str, str]) -> bytes | None:
    ref = config.audit.hmac_key
    if ref is None:
        return None
    variable = ref.removeprefix("env:")
    value = environ.get(variable)
    if not value:
        raise ConfigError(
            [
                ConfigIssue(
                    "audit.hmac_key",
                    f"environment variable {variable} is not set (or empty)",
                    f"export {variable}=<a long random secret>, or remove audit.hmac_key",
                )
            ],
            source="audit",
        )
    return value.encode()


def _spool_for(config: GatewayConfig) -> AuditSpool | None:
    """Where the leader keeps audit entries until the store has them."""
    storage = config.storage
    if config.audit.spool_path is not None:
        return AuditSpool(config.audit.spool_path)
    if storage.backend == "sqlite":
        return AuditSpool(Path(storage.sqlite_path).with_suffix(".audit-spool.jsonl"))
    if storage.backend == "postgres":
        # One spool per replica: replicas on one host listen on different ports.
        return AuditSpool(Path("data", f"audit-spool-{config.server.port}.jsonl"))
    return None


class ControlPlane:
    """The control-plane services, wired to the runtime's parts."""

    def __init__(  # noqa: PLR0913 - the runtime parts the control plane acts on
        self,
        *,
        config: GatewayConfig,
        store: RecordStore,
        clock: Clock,
        flags: FlagStore,
        gateway: Gateway,
        breakers: Mapping[RouteId, CircuitBreaker],
        cache: ResponseCache,
        health: HealthBoard,
        prober: HealthProber,
        traffic: TrafficWindow,
        swap: Callable[[GatewayConfig, RoutingMatrix], None],
        leader: bool,
        spool: bool = True,
        environ: Mapping[str, str] | None = None,
    ) -> None:
        env = os.environ if environ is None else environ
        self.leader = leader
        self._store = store
        self.redactor = Redactor(config.compliance.redaction)
        # Only the process that writes the trail spools it, and not a scratch runtime (a
        # deployment check) whose records must never reach the deployment's chain.
        wanted = spool and leader and config.audit.enabled
        self._spool = _spool_for(config) if wanted else None
        self.audit = AuditTrail(
            store,
            ChainSigner(_hmac_key(config, env)),
            clock,
            self.redactor,
            flush_interval_s=config.audit.flush_interval_ms / 1000.0,
            enabled=config.audit.enabled,
            spool=self._spool,
        )
        self._record_decisions = config.audit.decisions
        self.subjects = SubjectRegistry(store, config.compliance.subject_secret)
        self._environ = env
        gateway.subjects = self.subjects
        self.flags = FlagService(flags, store, self.audit)
        self.routing = RoutingConfigService(config, store, self.audit, clock, swap)
        self.actions = OperatorActions(
            breakers=breakers,
            cache=cache,
            store=store,
            audit=self.audit,
            clock=clock,
            cache_aggressive_default=config.cache.aggressive,
        )
        gateway.overrides = self.actions.overrides
        self.rollback = RollbackService(
            flags=self.flags,
            routing=self.routing,
            gateway=gateway,
            health=health,
            prober=prober,
            traffic=lambda: traffic if leader else None,
            audit=self.audit,
            mcp_route=config.routing.mcp_only_route,
        )
        self.guard = RollbackGuard(config.guard, traffic, self.flags, self.rollback, gateway.now)
        self.compliance = ComplianceService(
            config=config,
            topology=gateway.topology,
            redactor=self.redactor,
            subjects=self.subjects,
            audit=self.audit,
            cache=cache,
            store=store,
            clock=clock,
        )
        self._revision: str | None = None
        # Every durable change bumps the shared revision so follower workers pick it up.
        self.audit.add_listener(self._bump_on_change)
        self._changed = False
        self._log_filter: log_redaction.RedactingFilter | None = None

    # -- what feeds the trail --------------------------------------------------------------------

    def observe(self, event: RequestEvent) -> None:
        """A finished request (every worker's, in the leader): audit its routing decision and
        count it for the residency report."""
        self.compliance.observe(event)
        if not self._record_decisions or event.decision_id is None:
            return
        self.audit.submit(
            "decision",
            "gateway",
            {
                "decision_id": event.decision_id,
                "operation_type": event.operation_type,
                "priority": event.priority,
                "tenant": event.tenant,
                "outcome": event.outcome.value,
                "status": event.status,
                "route": event.route,
                "primary": event.primary,
                "first_route": event.first_route,
                "fallback": event.fallback,
                "residency": event.residency,
                "cache": event.cache,
                "error_code": event.error_code,
                "reason": event.reason,
                "latency_ms": round(event.latency_s * 1000, 1),
                "attempts": [{"route": a.route, "outcome": a.outcome} for a in event.attempts],
            },
            subject=event.subject,
        )

    def alert_transition(self, data: dict[str, Any]) -> None:
        self.audit.submit("alert", "gateway", data)

    def budget_event(self, event: BudgetEvent) -> None:
        self.audit.submit("budget_threshold", "gateway", event.as_dict())

    # -- lifecycle -------------------------------------------------------------------------------

    async def start(self, supervisor: TaskSupervisor) -> None:
        self._log_filter = log_redaction.install(self.redactor)
        await self.audit.open()
        if self.audit.pending:  # what the spool kept from an earlier run goes in at once
            try:
                await self.audit.flush()
            except Exception:
                log.exception("audit entries kept by an earlier run could not be written yet")
        await self.subjects.open(self._environ)
        await self.flags.load()
        await self.actions.load()
        await self.compliance.load()
        if self.leader:
            await self.routing.start()
            self._revision = await self._read_revision()
            supervisor.spawn(self.audit.run(), name="audit-writer")
            supervisor.spawn(self.actions.run(), name="operator-action-expiry")
            supervisor.spawn(self.guard.run(self.guard.config.check_every_s), name="rollback-guard")
            supervisor.spawn(self.compliance.run(), name="retention-purge")
            supervisor.spawn(self._flush_subjects(), name="subject-salts")
            supervisor.spawn(self._publish(), name="control-publish")
        else:
            await self.routing.reload()
            self._revision = await self._read_revision()
            supervisor.spawn(self._flush_subjects(), name="subject-salts")
        # Every process follows the shared revision: the workers of one gateway, and the
        # replicas of a fleet sharing one database (each of which leads its own workers).
        supervisor.spawn(self._follow(), name="control-sync")

    async def aclose(self) -> None:
        if self._log_filter is not None:
            log_redaction.uninstall(self._log_filter)
            self._log_filter = None
        try:
            await self.audit.flush()
            await self.subjects.flush()
        except Exception:
            log.exception(
                "%d audit records could not be written at stop (they stay in the spool)",
                self.audit.pending,
            )
        if self._spool is not None:
            self._spool.close()

    async def _flush_subjects(self) -> None:
        while True:
            await asyncio.sleep(0.5)
            try:
                await self.subjects.flush()
            except Exception:
                log.exception("data-subject salts could not be saved; retrying")

    # -- keeping workers in step -----------------------------------------------------------------

    def _bump_on_change(self, record: AuditRecord) -> None:
        if record.kind in ("flags_changed", "config_applied", "operator_action", "action_expired"):
            self._changed = True

    async def commit(self) -> None:
        """After a change: publish a new shared revision (every other process sharing the
        store reloads within a second). A random token, not a counter, so two replicas
        publishing at once never publish the same revision."""
        if not self._changed:
            return
        self._changed = False
        self._revision = secrets.token_hex(8)
        await self._store.put_state(REVISION_KEY, self._revision)
        notify = getattr(self._store, "notify_change", None)
        if notify is not None:  # PostgreSQL: the others hear it at once (polling still heals)
            await notify(self._revision)

    async def _publish(self) -> None:
        while True:
            await asyncio.sleep(0.2)
            try:
                await self.commit()
            except Exception:
                self._changed = True
                log.exception("could not publish a control-plane change; retrying")

    async def _read_revision(self) -> str | None:
        return await self._store.get_state(REVISION_KEY)

    async def sync(self) -> bool:
        """Reload flags, the routing version and operator actions when the revision moved."""
        revision = await self._read_revision()
        if revision == self._revision:
            return False
        self._revision = revision
        await self.flags.load()
        await self.routing.reload()
        await self.actions.load()
        return True

    async def _follow(self) -> None:
        """Re-read the control state when the shared revision moves: at once on a change
        notification where the store sends them, and on a poll every 0.25 s regardless (a
        missed notification heals)."""
        woken = asyncio.Event()
        stop = None
        listen = getattr(self._store, "listen_changes", None)
        if listen is not None:
            try:
                stop = await listen(lambda revision: woken.set())
            except Exception:
                log.exception("could not listen for control changes; polling only")
        try:
            while True:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(woken.wait(), _SYNC_EVERY_S)
                woken.clear()
                try:
                    await self.sync()
                except Exception:
                    log.exception("could not read the control plane's state; retrying")
        finally:
            if stop is not None:
                await stop()
