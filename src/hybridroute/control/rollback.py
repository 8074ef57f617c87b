"""The seed's rollback procedures as one call each, timed, with the post-rollback validation.

- level 1: every feature flag off (`disable-all`): MCP-only routing from the next decision;
- level 2: level 1, then an active health probe of the MCP-only route and one sample request
  through the gateway, which must be served by that route;
- level 3: restore a named routing-configuration version (a new version with its document),
  then the same checks as level 2 — flags are left as they are, so a configuration rollback
  can be done without leaving hybrid routing.

Each run ends with the validation the seed asks for after a rollback: the flag state, route
health, and the error rate and P95 over the last five minutes, and reports every step with its
duration and the total elapsed time. The run is audited as `rollback` with the whole report.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from hybridroute.audit.trail import AuditTrail
from hybridroute.control.flags import FlagService
from hybridroute.control.routing_config import RoutingConfigService
from hybridroute.errors import GatewayError, RequestError
from hybridroute.gateway.service import Gateway
from hybridroute.observability.traffic import TrafficWindow
from hybridroute.resilience.health import HealthBoard
from hybridroute.resilience.probes import HealthProber
from hybridroute.types import CacheDirective, ChatMessage, ChatRequest, RouteId

__all__ = ["RollbackReport", "RollbackService", "Step"]

log = logging.getLogger("hybridroute.control")

_VALIDATION_WINDOW_S = 300.0
_SAMPLE_PROMPT = "Rollback validation: reply with a short confirmation."


@dataclass(slots=True)
class Step:
    name: str
    ok: bool
    detail: str
    elapsed_ms: float


@dataclass(slots=True)
class RollbackReport:
    level: int
    by: str
    reason: str
    started_at: float
    steps: list[Step] = field(default_factory=list)
    validation: dict[str, Any] = field(default_factory=dict)
    elapsed_s: float = 0.0

    @property
    def ok(self) -> bool:
        return all(step.ok for step in self.steps)

    def as_dict(self) -> dict[str, Any]:
        return {
            "level": self.level,
            "ok": self.ok,
            "by": self.by,
            "reason": self.reason,
            "started_at": self.started_at,
            "elapsed_s": round(self.elapsed_s, 3),
            "steps": [
                {
                    "name": s.name,
                    "ok": s.ok,
                    "detail": s.detail,
                    "elapsed_ms": round(s.elapsed_ms, 1),
                }
                for s in self.steps
            ],
            "validation": self.validation,
        }


class RollbackService:
    """Performs rollbacks (by an operator, or the automatic guard)."""

    def __init__(  # noqa: PLR0913 - what a rollback touches and checks
        self,
        *,
        flags: FlagService,
        routing: RoutingConfigService,
        gateway: Gateway,
        health: HealthBoard,
        prober: HealthProber,
        traffic: Callable[[], TrafficWindow | None],
        audit: AuditTrail,
        mcp_route: RouteId,
    ) -> None:
        self._flags = flags
        self._routing = routing
        self._gateway = gateway
        self._health = health
        self._prober = prober
        self._traffic = traffic
        self._audit = audit
        self._mcp_route = mcp_route
        self.last: RollbackReport | None = None

    async def perform(
        self, level: int, *, version: int | None, actor: str, reason: str
    ) -> RollbackReport:
        if level not in (1, 2, 3):
            raise RequestError("'level' must be 1, 2 or 3", param="level")
        if level == 3 and version is None:
            raise RequestError(
                "level 3 restores a routing-configuration version: send 'version' "
                "(GET /admin/config/routing-rules/versions lists them)",
                param="version",
            )
        if level != 3 and version is not None:
            raise RequestError("'version' belongs to level 3 only", param="version")
        if version is not None:
            await self._routing.version(version)  # NotFound (404) before anything is done
        report = RollbackReport(level, actor, reason, self._gateway.clock.now())
        began = time.perf_counter()
        why = reason or f"level {level} rollback"
        if level in (1, 2):
            await self._step(report, "disable_all_flags", self._disable_all(actor, why))
        if level == 3:
            assert version is not None
            await self._step(report, "restore_config_version", self._restore(version, actor, why))
        if level >= 2:
            await self._step(report, "check_mcp_health", self._check_mcp())
            await self._step(report, "sample_request", self._sample())
        report.validation = self._validate()
        report.elapsed_s = time.perf_counter() - began
        self.last = report
        await self._audit.record("rollback", actor, report.as_dict())
        log.warning(
            "level %d rollback by %s %s in %.2fs",
            level,
            actor,
            "succeeded" if report.ok else "finished with failures",
            report.elapsed_s,
        )
        return report

    async def _step(self, report: RollbackReport, name: str, work: Any) -> None:
        began = time.perf_counter()
        try:
            ok, detail = await work
        except GatewayError as exc:
            ok, detail = False, exc.message
        except Exception as exc:  # a rollback reports every failure; it never stops half-way
            log.exception("rollback step %s failed", name)
            ok, detail = False, f"{type(exc).__name__}: {exc}"
        report.steps.append(Step(name, ok, detail, (time.perf_counter() - began) * 1000))

    async def _disable_all(self, actor: str, reason: str) -> tuple[bool, str]:
        change = await self._flags.disable_all(actor=actor, reason=reason)
        turned = ", ".join(change.changed) or "none (all were already off)"
        return True, f"all five flags off; turned off: {turned}"

    async def _restore(self, version: int, actor: str, reason: str) -> tuple[bool, str]:
        record = await self._routing.rollback(version, author=actor, comment=reason)
        return True, f"version {version} restored as version {record.version}"

    async def _check_mcp(self) -> tuple[bool, str]:
        route = self._mcp_route
        result = await self._prober.probe(route)
        if result.ok:
            return True, f"{route} answered its health probe in {result.latency_s * 1000:.0f} ms"
        return False, f"{route} failed its health probe: {result.error}"

    async def _sample(self) -> tuple[bool, str]:
        gateway = self._gateway
        chat = ChatRequest(
            messages=(ChatMessage("user", _SAMPLE_PROMPT),),
            operation_type=gateway.matrix.default_operation_type,
            model="default",
            max_tokens=32,
            cache=CacheDirective.NO_STORE,
        )
        prepared = gateway.prepare(chat)
        decision = gateway.decide(prepared)
        answer = await gateway.complete(prepared, decision)
        route = answer.served.route
        expected = self._mcp_route if not self._flags.current().intelligent_routing else None
        if expected is not None and route != expected:
            return False, f"the sample request was served by {route}, expected {expected}"
        return True, f"the sample {chat.operation_type} request was served by {route}"

    def _validate(self) -> dict[str, Any]:
        flags = self._flags.current().as_mapping()
        health = {
            route: {"status": state.status.value, "detail": state.detail}
            for route, state in self._health.view().items()
        }
        window = self._traffic()
        error_rate = p95_ms = None
        requests = 0
        if window is not None:
            totals = window.totals(_VALIDATION_WINDOW_S, self._gateway.now())
            requests = totals.requests
            error_rate = totals.error_rate
            p95 = totals.generation_p95_s
            p95_ms = None if p95 is None else round(p95 * 1000, 1)
        return {
            "flags": flags,
            "mcp_only": not any(flags.values()),
            "health": health,
            "window_s": _VALIDATION_WINDOW_S,
            "requests": requests,
            "error_rate": error_rate,
            "p95_ms": p95_ms,
        }
