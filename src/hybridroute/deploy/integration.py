"""Integration tests of the gateway's systems, each on its own scratch parts (so a check never
touches the deployment's flags, audit trail or breakers) but with the production code:

- `feature_flags_system`: a flag change through the flag service is persisted, changes the next
  decision (intelligent routing off → the MCP-only route) and is read back after a reload;
- `audit_trail_system`: records appended to a chain verify, and an edited record is caught;
- `monitoring_system`: a request event reaches the Prometheus exposition, and an alert rule
  fires and resolves on readings (a round trip through the alert lifecycle);
- `compliance_system`: PII is redacted (an e-mail address and a card number), and a request held
  to the EU is refused when only a non-EU route is left, never sent;
- `circuit_breaker_system`: an isolated breaker opens on failures, turns half-open after its
  open time, and closes on successful probes.
"""

from __future__ import annotations

import asyncio
import dataclasses

from hybridroute.audit.chain import ChainSigner, verify
from hybridroute.audit.trail import AuditTrail
from hybridroute.compliance.redaction import Redactor
from hybridroute.config.observability import AlertRuleConfig
from hybridroute.control.flags import FlagService
from hybridroute.deploy.smoke import CheckFailed
from hybridroute.errors import ResidencyUnsatisfiable
from hybridroute.observability.alerts import AlertManager, Reading
from hybridroute.observability.events import Outcome, RequestEvent
from hybridroute.observability.metrics import GatewayMetrics
from hybridroute.resilience.breaker import BreakerSettings, BreakerState, CircuitBreaker, Permit
from hybridroute.routing.flags import InMemoryFlagStore
from hybridroute.routing.matrix import RoutingRule
from hybridroute.routing.policy import decide
from hybridroute.runtime import Runtime
from hybridroute.signals import Flag, FlagState, HealthStatus, RouteHealth
from hybridroute.storage import MemoryLedgerStore
from hybridroute.testing import FakeClock
from hybridroute.types import Priority, RouteKind

__all__ = ["audit_trail", "circuit_breaker", "compliance", "feature_flags", "monitoring"]

_HEALTHY = RouteHealth(HealthStatus.HEALTHY)


async def feature_flags(runtime: Runtime) -> str:
    store = MemoryLedgerStore()
    trail = AuditTrail(store, ChainSigner(), FakeClock(), Redactor())
    await trail.open()
    flags = InMemoryFlagStore(FlagState())
    service = FlagService(flags, store, trail)
    rule = next(iter(runtime.matrix.rules.values()))
    healthy = dict.fromkeys(runtime.routes, _HEALTHY)
    mcp_only = runtime.topology.mcp_only_route

    def first_route() -> str:
        return decide(
            rule, topology=runtime.topology, health=healthy, flags=flags.current(), now=0.0,
            decision_id="deploy-check-flags",
        ).routes[0]  # fmt: skip

    await service.set(Flag.INTELLIGENT_ROUTING, False, actor="deploy-check", reason="check")
    if first_route() != mcp_only:
        raise CheckFailed(
            f"feature flags: with ENABLE_INTELLIGENT_ROUTING off, {rule.operation_type} went "
            f"to {first_route()}, expected {mcp_only}"
        )
    reloaded = InMemoryFlagStore(FlagState())
    await FlagService(reloaded, store, trail).load()
    if reloaded.current().intelligent_routing:
        raise CheckFailed("feature flags: a persisted change was not read back after a reload")
    await service.set(Flag.INTELLIGENT_ROUTING, True, actor="deploy-check", reason="check")
    if first_route() != rule.primary:
        raise CheckFailed("feature flags: turning the flag back on did not restore the matrix")
    return "change persisted, applied on the next decision, read back after a reload"


async def audit_trail(runtime: Runtime) -> str:
    store = MemoryLedgerStore()
    signer = ChainSigner()
    trail = AuditTrail(store, signer, FakeClock(), Redactor())
    await trail.open()
    for n in range(5):
        await trail.record("deploy_check", "deploy-check", {"n": n, "nested": {"ok": True}})
    report = await trail.verify()
    if not report.ok or report.checked != 5:
        raise CheckFailed(f"audit trail: a fresh chain of 5 records did not verify: {report}")
    records = store.audit_list()
    records[2] = dataclasses.replace(records[2], data='{"n":2,"nested":{"ok":false}}')
    tampered = verify(records, signer, head=await trail.head())
    if tampered.ok or tampered.problems[0].seq != 3:
        raise CheckFailed("audit trail: an edited record was not detected")
    return "5 records appended and verified; an edited nested field was located"


async def monitoring(runtime: Runtime) -> str:
    metrics = GatewayMetrics(runtime.topology.kinds, version="deploy-check")
    metrics.observe(
        RequestEvent(
            at=0.0,
            operation_type="standard",
            priority="medium",
            tenant="default",
            outcome=Outcome.SERVED,
            status=200,
            latency_s=0.05,
            route=runtime.topology.mcp_only_route,
        )
    )
    exposition, _ = await asyncio.to_thread(metrics.render)
    if b"hybridroute_requests_total" not in exposition:
        raise CheckFailed("monitoring: a request event did not reach the Prometheus metrics")
    clock = FakeClock()
    rule = AlertRuleConfig(severity="critical", metric="error_rate", op=">", threshold=0.05)
    alerts = AlertManager({"deploy_check": rule}, clock, resolve_after_s=1.0)
    fired = alerts.evaluate({"error_rate": [Reading(0.5)]})
    if [t.transition for t in fired] != ["firing"]:
        raise CheckFailed(f"monitoring: an alert did not fire on its condition ({fired})")
    clock.advance(2.0)
    alerts.evaluate({"error_rate": [Reading(0.0)]})
    clock.advance(2.0)
    resolved = alerts.evaluate({"error_rate": [Reading(0.0)]})
    if [t.transition for t in resolved] != ["resolved"]:
        raise CheckFailed("monitoring: an alert did not resolve when its condition cleared")
    return "metrics exposed; an alert fired and resolved"


async def compliance(runtime: Runtime) -> str:
    redactor = Redactor()
    text = "contact jane.doe@example.com, card 4111 1111 1111 1111"
    clean = redactor.redact(text)
    if "jane.doe" in clean or "4111" in clean:
        raise CheckFailed(f"compliance: PII survived redaction: {clean!r}")
    topology = runtime.topology
    outside = "deploy-check-us"
    probe = dataclasses.replace(
        topology,
        kinds={**topology.kinds, outside: RouteKind.BEDROCK},
        regions={**topology.regions, outside: "us-east-1"},
    )
    rule = RoutingRule("deploy_check", Priority.MEDIUM, 1000, outside, None, 0)
    region_set = "eu" if "eu" in probe.region_sets else next(iter(probe.region_sets), None)
    if region_set is None:
        return "PII redacted; no residency region set is configured"
    try:
        decide(
            rule, topology=probe, health={outside: _HEALTHY}, flags=FlagState(), now=0.0,
            decision_id="deploy-check-residency", residency=region_set,
        )  # fmt: skip
    except ResidencyUnsatisfiable:
        return f"PII redacted; a request held to {region_set} was refused with no route left"
    raise CheckFailed(
        f"compliance: a request held to {region_set} was allowed to a us-east-1 route"
    )


async def circuit_breaker(runtime: Runtime) -> str:
    clock = FakeClock()
    settings = BreakerSettings.from_config(runtime.config.breaker)
    breaker = CircuitBreaker("deploy-check", settings, clock)
    for _ in range(settings.consecutive_failures):
        permit = breaker.try_acquire()
        breaker.record_failure(permit or Permit.NORMAL, "deploy check failure")
    seen = [breaker.state]
    clock.advance(settings.open_s + 0.01)
    seen.append(breaker.state)
    for _ in range(settings.half_open_successes):
        breaker.record_probe(True)
    seen.append(breaker.state)
    expected = [BreakerState.OPEN, BreakerState.HALF_OPEN, BreakerState.CLOSED]
    if seen != expected:
        raise CheckFailed(
            "circuit breaker: expected open → half_open → closed, got "
            + " → ".join(state.value for state in seen)
        )
    return "opened, half-opened and closed"
