"""Operator actions, the audit trail and GDPR endpoints.

- `GET /admin/actions` — the operator actions in force (viewer);
- `POST /admin/actions` `{"action", "route"?, "enabled"?, "for_s"?, "reason"?}` (operator):
  `breaker_reset`, `breaker_open`, `route_disable`, `route_enable`, `cache_aggressive`,
  `maintenance` (see `control.actions`);
- `POST /admin/health/circuit-breakers/{route}/reset` and `.../force-open` `{"for_s"?}`
  (operator): the same actions by path, as the troubleshooting runbook uses them;
- `GET /admin/audit/trail-integrity` — verify the whole chain, naming any record that was
  edited, deleted, reordered or inserted (viewer);
- `GET /admin/audit/export?format=json|csv&period=daily|weekly|monthly|all` (or `since`/`until`
  as epoch seconds or ISO dates) — the records with their digests, for offline verification;
- `GET /admin/compliance/gdpr-status`, `GET /admin/compliance/data-residency` (viewer);
- `POST /admin/compliance/erasure` `{"subject", "reason"?}` and `POST /admin/compliance/purge`
  (admin).
"""

from __future__ import annotations

import csv
import datetime as dt
import io
import math
import re
from typing import Any

import orjson

from hybridroute.api.admin_control import operator_text
from hybridroute.api.auth import principal_of
from hybridroute.api.http import Receive, Scope, Send, query_params, read_json_object, send_json
from hybridroute.errors import RequestError
from hybridroute.runtime import Runtime
from hybridroute.storage.control import AuditRecord

__all__ = [
    "BREAKER_ACTION_PATH",
    "audit_export",
    "audit_integrity",
    "breaker_action",
    "data_residency",
    "erasure",
    "gdpr_status",
    "list_actions",
    "purge",
    "take_action",
]

BREAKER_ACTION_PATH = re.compile(
    r"^/admin/health/circuit-breakers/(?P<route>[A-Za-z0-9_.-]{1,64})/(?P<verb>reset|force-open)$"
)
_PERIODS = {"hourly": 3600.0, "daily": 86_400.0, "weekly": 7 * 86_400.0, "monthly": 31 * 86_400.0}
AUDIT_FIELDS = ("seq", "at", "kind", "actor", "subject", "data", "prev", "digest")


async def _reply(send: Send, body: Any, status: int = 200) -> None:
    await send_json(send, status, orjson.dumps(body))


def _for_s(data: dict[str, Any]) -> float | None:
    value = data.get("for_s")
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise RequestError("'for_s' must be a number of seconds", param="for_s")
    return float(value)


# -- operator actions --------------------------------------------------------------------------


async def list_actions(runtime: Runtime, scope: Scope, receive: Receive, send: Send) -> None:
    body = runtime.control.actions.snapshot()
    body["guard"] = runtime.control.guard.snapshot()
    await _reply(send, body)


async def take_action(runtime: Runtime, scope: Scope, receive: Receive, send: Send) -> None:
    example = '{"action": "route_disable", "route": "direct_bedrock", "for_s": 900, "reason": "…"}'
    data = await read_json_object(scope, receive, example)
    unknown = set(data) - {"action", "route", "enabled", "for_s", "reason"}
    if unknown or "action" not in data:
        raise RequestError(f"send an action, like {example}", param="action")
    action = data["action"]
    if not isinstance(action, str):
        raise RequestError("'action' must be a string", param="action")
    route = data.get("route")
    if route is not None and not isinstance(route, str):
        raise RequestError("'route' must be a route id", param="route")
    enabled = data.get("enabled")
    if enabled is not None and not isinstance(enabled, bool):
        raise RequestError("'enabled' must be true or false", param="enabled")
    result = await runtime.control.actions.take(
        action,
        target=route,
        enabled=enabled,
        for_s=_for_s(data),
        actor=principal_of(scope).name,
        reason=operator_text(runtime, data, "reason"),
    )
    await runtime.control.commit()
    await _reply(send, result)


async def breaker_action(runtime: Runtime, scope: Scope, receive: Receive, send: Send) -> None:
    match = BREAKER_ACTION_PATH.match(scope["path"])
    assert match is not None
    data = await read_json_object(scope, receive, '{"for_s": 300, "reason": "…"}')
    unknown = set(data) - {"for_s", "reason"}
    if unknown:
        raise RequestError(f"unknown field(s) {', '.join(sorted(unknown))}; use for_s, reason")
    reset = match["verb"] == "reset"
    result = await runtime.control.actions.take(
        "breaker_reset" if reset else "breaker_open",
        target=match["route"],
        enabled=None,
        for_s=_for_s(data),  # refused for a reset, which ends something
        actor=principal_of(scope).name,
        reason=operator_text(runtime, data, "reason"),
    )
    await runtime.control.commit()
    breaker = runtime.breakers[match["route"]].snapshot()
    await _reply(send, {**result, "breaker": {"route": breaker.route, "state": breaker.state}})


# -- audit -------------------------------------------------------------------------------------


async def audit_integrity(runtime: Runtime, scope: Scope, receive: Receive, send: Send) -> None:
    trail = runtime.control.audit
    await trail.flush()
    report = await trail.verify()
    anchor = await trail.anchor()
    await _reply(
        send,
        {
            **report.as_dict(),
            "anchor": {"seq": anchor.seq, "digest": anchor.digest},
            "trail": trail.snapshot(),
        },
    )


def _instant(value: str, name: str) -> float:
    try:
        return float(value)
    except ValueError:
        pass
    try:
        parsed = dt.datetime.fromisoformat(value)
    except ValueError:
        raise RequestError(
            f"'{name}' must be epoch seconds or an ISO date/time like 2026-12-01", param=name
        ) from None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=dt.UTC)
    return parsed.timestamp()


def _range(params: dict[str, str], now: float) -> tuple[float | None, float | None, str]:
    period = params.get("period", "daily").lower()
    since = _instant(params["since"], "since") if "since" in params else None
    until = _instant(params["until"], "until") if "until" in params else None
    if since is not None or until is not None:
        return since, until, "custom"
    if period == "all":
        return None, None, period
    span = _PERIODS.get(period)
    if span is None:
        raise RequestError(
            f"unknown period {period!r}; use {', '.join([*_PERIODS, 'all'])} or since/until",
            param="period",
        )
    return now - span, None, period


def _csv(records: list[AuditRecord]) -> bytes:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(AUDIT_FIELDS)
    for r in records:
        writer.writerow([r.seq, repr(r.at), r.kind, r.actor, r.subject or "", r.data, r.prev,
                         r.digest])  # fmt: skip
    return out.getvalue().encode()


async def audit_export(runtime: Runtime, scope: Scope, receive: Receive, send: Send) -> None:
    params = query_params(scope)
    fmt = params.get("format", "json").lower()
    if fmt not in ("json", "csv"):
        raise RequestError(f"unknown format {fmt!r}; use json or csv", param="format")
    since, until, period = _range(params, runtime.clock.now())
    trail = runtime.control.audit
    records = await trail.records(since=since, until=until)
    anchor = await trail.anchor()
    start = {"seq": anchor.seq, "digest": anchor.digest}
    if records and records[0].seq > anchor.seq + 1:
        # A period that starts inside the chain is verified from the record just before its
        # first one (the link that record names), as a CSV export is.
        start = {"seq": records[0].seq - 1, "digest": records[0].prev}
    name = f"hybridroute-audit-{period}.{fmt}"
    headers = [(b"content-disposition", f'attachment; filename="{name}"'.encode())]
    if fmt == "csv":
        body = _csv(records)
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [
                    (b"content-type", b"text/csv; charset=utf-8"),
                    (b"content-length", str(len(body)).encode()),
                    *headers,
                ],
            }
        )
        await send({"type": "http.response.body", "body": body})
        return
    document = {
        "period": period,
        "since": since,
        "until": until,
        "exported_at": runtime.clock.now(),
        "keyed": trail.keyed,
        "anchor": start,
        "records": [{f: getattr(r, f) for f in AUDIT_FIELDS} for r in records],
    }
    await send_json(send, 200, orjson.dumps(document), headers)


# -- compliance --------------------------------------------------------------------------------


async def gdpr_status(runtime: Runtime, scope: Scope, receive: Receive, send: Send) -> None:
    await _reply(send, await runtime.control.compliance.gdpr_status())


async def data_residency(runtime: Runtime, scope: Scope, receive: Receive, send: Send) -> None:
    await _reply(send, runtime.control.compliance.data_residency())


async def erasure(runtime: Runtime, scope: Scope, receive: Receive, send: Send) -> None:
    example = '{"subject": "user-4711", "reason": "request of 2026-12-01"}'
    data = await read_json_object(scope, receive, example)
    unknown = set(data) - {"subject", "reason"}
    if unknown or not isinstance(data.get("subject"), str):
        raise RequestError(f"send the data subject to erase, like {example}", param="subject")
    result = await runtime.control.compliance.erase(
        data["subject"],
        actor=principal_of(scope).name,
        reason=operator_text(runtime, data, "reason"),
    )
    await _reply(send, result)


async def purge(runtime: Runtime, scope: Scope, receive: Receive, send: Send) -> None:
    await read_json_object(scope, receive, "{}")
    await _reply(send, await runtime.control.compliance.purge(actor=principal_of(scope).name))
