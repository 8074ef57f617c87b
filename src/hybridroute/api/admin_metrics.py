"""Metrics, SLO and alert endpoints: what operators read while something is wrong.

- `GET /metrics` — Prometheus text format (every worker's counts when several serve).
- `GET /admin/metrics/routing-distribution`, `/admin/metrics/provider-latencies`,
  `/admin/metrics/cache-performance`, `/admin/metrics/error-breakdown` — the traffic window's
  views over `?window=` (`30s`, `5m`, `1h`, `24h` or seconds; default 1 h, at most 24 h).
- `GET /admin/metrics/timeline?window=` — the same figures per step (10 s steps up to 10 min,
  1 min up to an hour, 1 h beyond; default 10 min): what the dashboard's charts draw.
- `GET /admin/slo?window=` — the SLO figures and compliance (default: the SLO window).
- `GET /admin/health/circuit-breakers` — every route's breaker, availability and probes.
- `GET /admin/alerts` — active, pending and recently resolved alerts, and the rules;
  `POST /admin/alerts/{id}/acknowledge` with `{"by": "...", "note": "..."}`.
- `PUT /admin/config/slo-thresholds` — change alert rules (`{"rules": {id: {...}}}`) and SLO
  targets (`{"slo": {...}}`) while the gateway runs; everything is validated before anything
  is applied.

Every window-taking endpoint answers with `window_s` and `span_s` (how much of the window had
data). These endpoints sit behind the admin guard.
"""

from __future__ import annotations

import dataclasses
import re
from typing import Any
from urllib.parse import parse_qs

import orjson
from pydantic import ValidationError

from hybridroute.api.auth import principal_of
from hybridroute.api.http import Receive, Scope, Send, read_json_object, send_json
from hybridroute.config.observability import SloConfig
from hybridroute.errors import RequestError
from hybridroute.observability.slo import slo_snapshot
from hybridroute.observability.timeline import timeline as traffic_timeline
from hybridroute.observability.traffic import TrafficTotals
from hybridroute.runtime import Runtime

__all__ = [
    "ACKNOWLEDGE_PATH",
    "acknowledge_alert",
    "alerts",
    "cache_performance",
    "circuit_breakers",
    "error_breakdown",
    "metrics",
    "provider_latencies",
    "routing_distribution",
    "slo",
    "slo_thresholds",
    "timeline",
]

ACKNOWLEDGE_PATH = re.compile(r"^/admin/alerts/(?P<id>[A-Za-z0-9_.-]{1,80})/acknowledge$")
_WINDOW = re.compile(r"^(?P<n>\d+(?:\.\d+)?)(?P<unit>s|m|h)?$")
_UNITS = {"s": 1, "m": 60, "h": 3600, None: 1}
_MAX_WINDOW_S = 86_400.0
_MAX_BODY = 64 * 1024


def window_param(scope: Scope, default_s: float) -> float:
    """The `window` query parameter in seconds (`30s`, `5m`, `1h`, `24h`, or a number)."""
    query = parse_qs(scope.get("query_string", b"").decode("latin-1"))
    values = query.get("window")
    if not values:
        return default_s
    match = _WINDOW.match(values[-1].strip().lower())
    seconds = float(match["n"]) * _UNITS[match["unit"]] if match else 0.0
    if not 1 <= seconds <= _MAX_WINDOW_S:
        raise RequestError(
            f"'window' must be a duration from 1s to 24h, like 30s, 5m, 1h or 900; got "
            f"{values[-1]!r}",
            param="window",
        )
    return seconds


def _totals(runtime: Runtime, scope: Scope, default_s: float = 3600.0) -> TrafficTotals:
    return runtime.traffic.totals(window_param(scope, default_s), runtime.gateway.now())


async def _reply(send: Send, body: Any) -> None:
    await send_json(send, 200, orjson.dumps(body))


async def metrics(runtime: Runtime, scope: Scope, receive: Receive, send: Send) -> None:
    body, content_type = await runtime.metrics.render_async(runtime.clock.monotonic())
    await send(
        {
            "type": "http.response.start",
            "status": 200,
            "headers": [
                (b"content-type", content_type.encode()),
                (b"content-length", str(len(body)).encode()),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})


async def routing_distribution(runtime: Runtime, scope: Scope, r: Receive, send: Send) -> None:
    await _reply(send, _totals(runtime, scope).routing_distribution())


async def provider_latencies(runtime: Runtime, scope: Scope, r: Receive, send: Send) -> None:
    await _reply(send, _totals(runtime, scope).provider_latencies())


async def cache_performance(runtime: Runtime, scope: Scope, r: Receive, send: Send) -> None:
    body = _totals(runtime, scope).cache_performance()
    body["store"] = runtime.cache.store.snapshot().as_dict()
    body["saved"] = runtime.cache.snapshot()["saved"]
    await _reply(send, body)


async def error_breakdown(runtime: Runtime, scope: Scope, r: Receive, send: Send) -> None:
    await _reply(send, _totals(runtime, scope).error_breakdown())


async def timeline(runtime: Runtime, scope: Scope, r: Receive, send: Send) -> None:
    window = window_param(scope, 600.0)
    await _reply(send, traffic_timeline(runtime.traffic, window, runtime.gateway.now()))


async def slo(runtime: Runtime, scope: Scope, r: Receive, send: Send) -> None:
    config = runtime.observability.slo_config
    totals = _totals(runtime, scope, config.window_s)
    await _reply(send, slo_snapshot(totals, config).as_dict())


async def circuit_breakers(runtime: Runtime, scope: Scope, r: Receive, send: Send) -> None:
    routes = []
    for route, snapshot in runtime.health.snapshots().items():
        available = runtime.health.availability(route)
        probes = runtime.health.probes(route)
        entry = dataclasses.asdict(snapshot)
        entry["state"] = snapshot.state.value
        entry["availability"] = {"status": available.status.value, "detail": available.detail}
        last = probes.last
        entry["probes"] = {
            "last_ok": None if last is None else last.ok,
            "last_at": None if last is None else last.at,
            "last_latency_ms": None if last is None else round(last.latency_s * 1000, 1),
            "consecutive_failures": probes.consecutive_failures,
            "consecutive_successes": probes.consecutive_successes,
            "last_error": probes.last_error(),
        }
        routes.append(entry)
    await _reply(send, {"routes": routes})


async def alerts(runtime: Runtime, scope: Scope, r: Receive, send: Send) -> None:
    manager = runtime.alerts
    body = {
        "active": [a.as_dict() for a in manager.active()],
        "pending": [a.as_dict() for a in manager.pending()],
        "resolved": [a.as_dict() for a in manager.resolved(50)],
        "rules": {rid: rule.model_dump() for rid, rule in manager.rules.items()},
        "evaluations": manager.evaluations,
        "last_evaluated_at": manager.last_evaluated_at,
        "alerting": runtime.observability.alerting,
        "notifications": runtime.notifications.snapshot(),
    }
    await _reply(send, body)


async def _json_body(scope: Scope, receive: Receive, example: str) -> dict[str, Any]:
    return await read_json_object(scope, receive, example, _MAX_BODY)


async def acknowledge_alert(runtime: Runtime, scope: Scope, receive: Receive, send: Send) -> None:
    match = ACKNOWLEDGE_PATH.match(scope["path"])
    assert match is not None  # the route table only sends matching paths here
    data = await _json_body(scope, receive, '{"by": "alice", "note": "looking into it"}')
    unknown = set(data) - {"by", "note"}
    if unknown:
        raise RequestError(f"unknown field(s) {', '.join(sorted(unknown))}; use 'by' and 'note'")
    caller = principal_of(scope).name
    who = data.get("by", caller)
    note = data.get("note")
    if isinstance(note, str):
        note = runtime.control.redactor.redact(note)
    if not isinstance(who, str) or not who.strip() or len(who) > 200:
        raise RequestError("'by' must be a non-empty name (at most 200 characters)", param="by")
    if note is not None and (not isinstance(note, str) or len(note) > 2000):
        raise RequestError("'note' must be text of at most 2000 characters", param="note")
    alert = runtime.alerts.acknowledge(match["id"], who.strip(), note)
    await runtime.control.audit.record(
        "alert_acknowledged", caller, {"alert_id": alert.id, "by": who.strip(), "note": note}
    )
    await _reply(send, alert.as_dict())


# The seed's shorthand (`{"p95_latency_ms": 1500, "error_rate_percent": 1.0}`): SLO targets.
_SEED_SLO_FIELDS = {
    "p95_latency_ms": ("generation_p95_ms", 1.0),
    "cached_p95_latency_ms": ("cached_p95_ms", 1.0),
    "error_rate_percent": ("error_rate", 0.01),
    "cache_hit_rate_percent": ("cache_hit_rate", 0.01),
}


def _seed_shorthand(data: dict[str, Any]) -> dict[str, Any]:
    """Fold the seed's flat SLO fields into `slo`."""
    flat = {k: data.pop(k) for k in list(data) if k in _SEED_SLO_FIELDS}
    if not flat:
        return data
    slo_part = data.setdefault("slo", {})
    if not isinstance(slo_part, dict):
        raise RequestError("'slo' must be an object of SLO fields", param="slo")
    for name, value in flat.items():
        field, scale = _SEED_SLO_FIELDS[name]
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise RequestError(f"'{name}' must be a number", param=name)
        slo_part[field] = value * scale
    return data


async def slo_thresholds(runtime: Runtime, scope: Scope, receive: Receive, send: Send) -> None:
    example = (
        '{"p95_latency_ms": 1500, "error_rate_percent": 1.0} or '
        '{"rules": {"latency_p95_critical": {"threshold": 2.5}}, "slo": {...}}'
    )
    data = _seed_shorthand(await _json_body(scope, receive, example))
    unknown = set(data) - {"rules", "slo", "reason"}
    if unknown or not (set(data) - {"reason"}):
        raise RequestError(
            f"send 'rules' and/or 'slo' (or the seed's fields {', '.join(_SEED_SLO_FIELDS)}), "
            f"like {example}"
        )
    rules = data.get("rules", {})
    if not isinstance(rules, dict) or not all(isinstance(v, dict) for v in rules.values()):
        raise RequestError("'rules' must map rule ids to objects of rule fields", param="rules")
    loop = runtime.observability
    new_slo: SloConfig | None = None
    if "slo" in data:
        if not isinstance(data["slo"], dict):
            raise RequestError("'slo' must be an object of SLO fields", param="slo")
        try:
            new_slo = SloConfig.model_validate({**loop.slo_config.model_dump(), **data["slo"]})
        except ValidationError as exc:
            problems = "; ".join(
                f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors()
            )
            raise RequestError(f"invalid SLO targets: {problems}", param="slo") from None
    # Validate the rules (update_rules applies nothing when any is invalid), then the SLO.
    updated = runtime.alerts.update_rules(rules) if rules else runtime.alerts.rules
    if new_slo is not None:
        loop.slo_config = new_slo
    change = {"rules": rules, "slo": data.get("slo", {})}
    await runtime.record_event("thresholds_changed", change)
    reason = data.get("reason")
    await runtime.control.audit.record(
        "thresholds_changed",
        principal_of(scope).name,
        {**change, "reason": reason if isinstance(reason, str) else ""},
    )
    await _reply(
        send,
        {
            "rules": {rid: rule.model_dump() for rid, rule in updated.items()},
            "slo": loop.slo_config.model_dump(),
        },
    )
