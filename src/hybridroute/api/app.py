"""The data-plane ASGI app: an exact-match route table over the few public endpoints.

It serves whatever `Runtime` its holder currently has, so a reload can swap the runtime without
touching the app. Unknown paths get 404 and wrong methods 405, in the same error shape as every
other error; an unexpected exception becomes a 500 without taking the server down. Admin
endpoints are in the same table, each behind the role it needs (`api.auth`).
"""

from __future__ import annotations

import logging
import re
from collections.abc import Awaitable, Callable

import orjson

from hybridroute.api import admin_control, admin_governance, admin_metrics
from hybridroute.api.admin import health_status
from hybridroute.api.admin_cost import cache_invalidate, cache_status, cost_report
from hybridroute.api.admin_reports import daily_report, weekly_report
from hybridroute.api.auth import AdminAuth, principal_of
from hybridroute.api.chat import ChatEndpoint
from hybridroute.api.dashboard import DASHBOARD_PATHS, SECURITY_HEADERS, dashboard_asset
from hybridroute.api.http import Receive, Scope, Send, send_error, send_json
from hybridroute.api.internal import AdminForwarder, internal_events
from hybridroute.api.status import health_body, models_body, readiness
from hybridroute.config.control import AdminConfig, AdminRole
from hybridroute.errors import GatewayError, GatewayUnavailable, MethodNotAllowed, NotFound
from hybridroute.observability.shipping import INTERNAL_EVENTS_PATH
from hybridroute.runtime import STANDALONE, Runtime, WorkerRole

__all__ = ["DataPlane"]

log = logging.getLogger("hybridroute.api")

_Handler = Callable[[Runtime, Scope, Receive, Send], Awaitable[None]]


class DataPlane:
    """Routes data-plane requests to their handlers."""

    def __init__(
        self,
        current_runtime: Callable[[], Runtime | None],
        max_body_bytes: int,
        admin: AdminAuth | None = None,
        role: WorkerRole = STANDALONE,
    ) -> None:
        self._runtime = current_runtime
        self._max_body = max_body_bytes
        # A follower worker passes admin requests to the leader, which holds their state.
        self._forward = AdminForwarder(role) if not role.leader else None
        chat = ChatEndpoint(max_body_bytes)
        self._auth = auth = admin or AdminAuth(AdminConfig())

        def needs(needed: AdminRole, handler: _Handler) -> _Handler:
            async def guarded(rt: Runtime, scope: Scope, receive: Receive, send: Send) -> None:
                auth.check(scope, needed)
                await handler(rt, scope, receive, send)

            return guarded

        def viewer(handler: _Handler) -> _Handler:
            return needs(AdminRole.VIEWER, handler)

        def operator(handler: _Handler) -> _Handler:
            return needs(AdminRole.OPERATOR, handler)

        def admin_role(handler: _Handler) -> _Handler:
            return needs(AdminRole.ADMIN, handler)

        async def dashboard_session(rt: Runtime, scope: Scope, r: Receive, send: Send) -> None:
            body = orjson.dumps({"token_required": auth.token_required(scope)})
            await send_json(send, 200, body, SECURITY_HEADERS)

        async def whoami(rt: Runtime, scope: Scope, r: Receive, send: Send) -> None:
            caller = principal_of(scope)
            await send_json(send, 200, orjson.dumps({"name": caller.name, "role": caller.role}))

        async def chat_completions(rt: Runtime, scope: Scope, receive: Receive, send: Send) -> None:
            await chat(rt.gateway, scope, receive, send)

        m, c, g = admin_metrics, admin_control, admin_governance
        self._table: dict[str, dict[str, _Handler]] = {
            "/v1/chat/completions": {"POST": chat_completions},
            "/chat/completions": {"POST": chat_completions},
            "/health": {"GET": _health},
            "/ready": {"GET": _ready},
            "/v1/models": {"GET": _models},
            "/metrics": {"GET": m.metrics},
            INTERNAL_EVENTS_PATH: {"POST": internal_events},
            # the dashboard's page and assets (no data in them: the page reads the admin API)
            **{path: {"GET": dashboard_asset} for path in DASHBOARD_PATHS},
            "/dashboard/session": {"GET": dashboard_session},
            # read (viewer)
            "/admin/health/status": {"GET": viewer(health_status)},
            "/admin/whoami": {"GET": viewer(whoami)},
            "/admin/cost": {"GET": viewer(cost_report)},
            "/admin/cache": {"GET": viewer(cache_status)},
            "/admin/metrics/routing-distribution": {"GET": viewer(m.routing_distribution)},
            "/admin/metrics/provider-latencies": {"GET": viewer(m.provider_latencies)},
            "/admin/metrics/cache-performance": {"GET": viewer(m.cache_performance)},
            "/admin/metrics/error-breakdown": {"GET": viewer(m.error_breakdown)},
            "/admin/metrics/timeline": {"GET": viewer(m.timeline)},
            "/admin/slo": {"GET": viewer(m.slo)},
            "/admin/health/circuit-breakers": {"GET": viewer(m.circuit_breakers)},
            "/admin/alerts": {"GET": viewer(m.alerts)},
            "/admin/reports/daily": {"GET": viewer(daily_report)},
            "/admin/reports/weekly": {"GET": viewer(weekly_report)},
            "/admin/feature-flags/bedrock": {"GET": viewer(c.get_flags)},
            "/admin/config/routing-rules": {
                "GET": viewer(c.get_routing_rules),
                "PUT": admin_role(c.put_routing_rules),
            },
            "/admin/config/routing-rules/versions": {"GET": viewer(c.config_versions)},
            "/admin/config/validate-routing": {"GET": viewer(c.validate_routing)},
            "/admin/audit/trail-integrity": {"GET": viewer(g.audit_integrity)},
            "/admin/audit/export": {"GET": viewer(g.audit_export)},
            "/admin/compliance/gdpr-status": {"GET": viewer(g.gdpr_status)},
            "/admin/compliance/data-residency": {"GET": viewer(g.data_residency)},
            "/admin/actions": {"GET": viewer(g.list_actions), "POST": operator(g.take_action)},
            # change (operator)
            "/admin/cache/invalidate": {"POST": operator(cache_invalidate)},
            "/admin/feature-flags/bedrock/update": {"POST": operator(c.update_flag)},
            "/admin/feature-flags/bedrock/disable-all": {"POST": operator(c.disable_all_flags)},
            "/admin/feature-flags/bedrock/enable-all": {"POST": operator(c.enable_all_flags)},
            "/admin/config/rollback": {"POST": operator(c.config_rollback)},
            "/admin/rollback": {"POST": operator(c.rollback)},
            # configure (admin)
            "/admin/config/slo-thresholds": {"PUT": admin_role(m.slo_thresholds)},
            "/admin/compliance/erasure": {"POST": admin_role(g.erasure)},
            "/admin/compliance/purge": {"POST": admin_role(g.purge)},
        }
        # Paths with a parameter in them, tried in order when no exact path matches.
        self._patterns: list[tuple[re.Pattern[str], dict[str, _Handler]]] = [
            (m.ACKNOWLEDGE_PATH, {"POST": operator(m.acknowledge_alert)}),
            (c.VERSION_PATH, {"GET": viewer(c.config_version)}),
            (g.BREAKER_ACTION_PATH, {"POST": operator(g.breaker_action)}),
        ]

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return
        runtime = self._runtime()
        path: str = scope["path"]
        if self._forward is not None and path.startswith("/admin/"):
            try:
                # Authenticated here too: the leader sees a loopback caller.
                self._auth.check(scope, AdminRole.VIEWER)
                await self._forward(scope, receive, send, self._max_body)
            except GatewayError as error:
                await send_error(send, error)
            return
        methods = self._table.get(path)
        if methods is None:
            methods = next((m for p, m in self._patterns if p.match(path)), None)
        try:
            if methods is None:
                raise NotFound(
                    f"no endpoint at {path}; the gateway serves POST /v1/chat/completions"
                )
            handler = methods.get(scope["method"])
            if handler is None:
                raise MethodNotAllowed(
                    f"{scope['method']} is not allowed on {path}; use {', '.join(methods)}",
                    tuple(methods),
                )
            if runtime is None:
                raise GatewayUnavailable("the gateway is starting or stopping; retry in a moment")
            await handler(runtime, scope, receive, send)
        except GatewayError as error:
            await send_error(send, error)
        except Exception:
            log.exception("unhandled error serving %s %s", scope["method"], path)
            await send_error(send, GatewayError("internal error; the gateway logged the details"))


async def _health(runtime: Runtime, scope: Scope, receive: Receive, send: Send) -> None:
    await send_json(send, 200, health_body(runtime))


async def _ready(runtime: Runtime, scope: Scope, receive: Receive, send: Send) -> None:
    status, body = readiness(runtime)
    await send_json(send, status, body)


async def _models(runtime: Runtime, scope: Scope, receive: Receive, send: Send) -> None:
    await send_json(send, 200, models_body(runtime))
