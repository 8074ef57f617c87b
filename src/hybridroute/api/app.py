"""The data-plane ASGI app: an exact-match route table over the few public endpoints.

It serves whatever `Runtime` its holder currently has, so a reload can swap the runtime without
touching the app. Unknown paths get 404 and wrong methods 405, in the same error shape as every
other error; an unexpected exception becomes a 500 without taking the server down. Admin
endpoints (`api.admin`) are in the same table, each behind the admin guard.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Awaitable, Callable

from hybridroute.api import admin_metrics
from hybridroute.api.admin import AdminGuard, health_status
from hybridroute.api.admin_cost import cache_invalidate, cache_status, cost_report
from hybridroute.api.admin_reports import daily_report, weekly_report
from hybridroute.api.chat import ChatEndpoint
from hybridroute.api.http import Receive, Scope, Send, send_error, send_json
from hybridroute.api.internal import AdminForwarder, internal_events
from hybridroute.api.status import health_body, models_body, readiness
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
        admin: AdminGuard | None = None,
        role: WorkerRole = STANDALONE,
    ) -> None:
        self._runtime = current_runtime
        self._max_body = max_body_bytes
        # A follower worker passes admin requests to the leader, which holds their state.
        self._forward = AdminForwarder(role) if not role.leader else None
        chat = ChatEndpoint(max_body_bytes)
        guard = admin or AdminGuard.from_environment()

        def admin_only(handler: _Handler) -> _Handler:
            async def guarded(rt: Runtime, scope: Scope, receive: Receive, send: Send) -> None:
                guard.check(scope)
                await handler(rt, scope, receive, send)

            return guarded

        async def chat_completions(rt: Runtime, scope: Scope, receive: Receive, send: Send) -> None:
            await chat(rt.gateway, scope, receive, send)

        self._table: dict[str, dict[str, _Handler]] = {
            "/v1/chat/completions": {"POST": chat_completions},
            "/chat/completions": {"POST": chat_completions},
            "/health": {"GET": _health},
            "/ready": {"GET": _ready},
            "/v1/models": {"GET": _models},
            "/admin/health/status": {"GET": admin_only(health_status)},
            "/admin/cost": {"GET": admin_only(cost_report)},
            "/admin/cache": {"GET": admin_only(cache_status)},
            "/admin/cache/invalidate": {"POST": admin_only(cache_invalidate)},
            "/metrics": {"GET": admin_metrics.metrics},
            "/admin/metrics/routing-distribution": {
                "GET": admin_only(admin_metrics.routing_distribution)
            },
            "/admin/metrics/provider-latencies": {
                "GET": admin_only(admin_metrics.provider_latencies)
            },
            "/admin/metrics/cache-performance": {
                "GET": admin_only(admin_metrics.cache_performance)
            },
            "/admin/metrics/error-breakdown": {"GET": admin_only(admin_metrics.error_breakdown)},
            "/admin/slo": {"GET": admin_only(admin_metrics.slo)},
            "/admin/health/circuit-breakers": {"GET": admin_only(admin_metrics.circuit_breakers)},
            "/admin/alerts": {"GET": admin_only(admin_metrics.alerts)},
            "/admin/config/slo-thresholds": {"PUT": admin_only(admin_metrics.slo_thresholds)},
            "/admin/reports/daily": {"GET": admin_only(daily_report)},
            "/admin/reports/weekly": {"GET": admin_only(weekly_report)},
            INTERNAL_EVENTS_PATH: {"POST": internal_events},
        }
        # Paths with a parameter in them, tried in order when no exact path matches.
        self._patterns: list[tuple[re.Pattern[str], dict[str, _Handler]]] = [
            (admin_metrics.ACKNOWLEDGE_PATH, {"POST": admin_only(admin_metrics.acknowledge_alert)})
        ]

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return
        runtime = self._runtime()
        path: str = scope["path"]
        if self._forward is not None and path.startswith("/admin/"):
            try:
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
