"""GET /health (liveness), GET /ready (per-route readiness), GET /v1/models.

`/ready` answers 200 while at least one route can take traffic (the others may be failing over)
and 503 when none can; the body lists every route's state either way.
"""

from __future__ import annotations

import time
from typing import Any

import orjson

from hybridroute import __version__
from hybridroute.runtime import Runtime
from hybridroute.signals import HealthStatus

__all__ = ["health_body", "models_body", "readiness"]


def health_body(runtime: Runtime) -> bytes:
    started = runtime.started_at or time.time()
    return orjson.dumps(
        {"status": "ok", "version": __version__, "uptime_s": round(time.time() - started, 3)}
    )


def readiness(runtime: Runtime) -> tuple[int, bytes]:
    routes: dict[str, Any] = {}
    any_ready = False
    for route_id, route in runtime.routes.items():
        health = runtime.health.route_health(route_id)
        snapshot = runtime.breakers[route_id].snapshot()
        ready = health.status is not HealthStatus.UNHEALTHY
        any_ready = any_ready or ready
        routes[route_id] = {
            "ready": ready,
            "status": health.status.value,
            "detail": health.detail or None,
            "kind": route.kind.value,
            "region": route.region,
            "breaker": snapshot.state.value,
        }
    flags = runtime.flags.current().as_mapping()
    body = {"ready": any_ready, "routes": routes, "flags": flags}
    return (200 if any_ready else 503), orjson.dumps(body)


def models_body(runtime: Runtime) -> bytes:
    served: dict[tuple[str, str], list[str]] = {}
    for op, rule in runtime.matrix.rules.items():
        for route_id in (rule.primary, rule.fallback):
            if route_id is None:
                continue
            model = runtime.routes[route_id].model_for(op)
            served.setdefault((route_id, model), []).append(op)
    data = [
        {
            "id": model,
            "object": "model",
            "created": 0,
            "owned_by": route_id,
            "hybridroute": {"route": route_id, "operation_types": ops},
        }
        for (route_id, model), ops in served.items()
    ]
    data.insert(
        0,
        {
            "id": "default",
            "object": "model",
            "created": 0,
            "owned_by": "hybridroute",
            "hybridroute": {"note": "any model name is accepted; the operation type routes"},
        },
    )
    return orjson.dumps({"object": "list", "data": data})
