"""Admin endpoints for spend, budgets and the response cache (behind the admin guard).

- `GET /admin/cost?days=N` — spend over the last N UTC days (default 7, at most 366) in total
  and by route, model, operation type, tenant and day; every budget's utilisation; the latest
  budget events; what the cache saved. While the store cannot be written or read, `spend` is
  null and `spend_error` says why; the budgets (kept in memory) still answer.
- `GET /admin/cache` — the cache's settings, size, evictions and hit/miss counters.
- `POST /admin/cache/invalidate` — body `{"tenant": …, "operation_type": …}` (either, both, or
  neither for everything); answers how many entries were dropped.
"""

from __future__ import annotations

import datetime as dt
from typing import Any
from urllib.parse import parse_qs

import orjson

from hybridroute.api.http import Receive, Scope, Send, read_body, send_json
from hybridroute.economics.pricing import money_text
from hybridroute.economics.report import SpendReport
from hybridroute.errors import MalformedJSON, RequestError, StorageError
from hybridroute.runtime import Runtime

__all__ = ["cache_invalidate", "cache_status", "cost_report"]

_MAX_DAYS = 366
_MAX_BODY = 64 * 1024


def _days(scope: Scope) -> int:
    query = parse_qs(scope.get("query_string", b"").decode("latin-1"))
    values = query.get("days")
    if not values:
        return 7
    text = values[-1].strip()
    if not text.isdigit() or not 1 <= int(text) <= _MAX_DAYS:
        raise RequestError(
            f"'days' must be a whole number from 1 to {_MAX_DAYS}, got {values[-1]!r}",
            param="days",
        )
    return int(text)


async def cost_report(runtime: Runtime, scope: Scope, receive: Receive, send: Send) -> None:
    days = _days(scope)
    ledger = runtime.ledger
    today = dt.datetime.fromtimestamp(runtime.clock.now(), tz=dt.UTC).date()
    first = (today - dt.timedelta(days=days - 1)).isoformat()
    body: dict[str, Any] = {"days": days}
    try:
        await ledger.flush()  # charges of requests that just ended are counted too
        rows = await ledger.store.spend(first, today.isoformat())
    except StorageError as error:
        # The budgets are kept in memory and still answer; the spend report needs the store.
        body["spend"] = None
        body["spend_error"] = error.message
    else:
        report = SpendReport.from_rows(rows, ledger.currency, first, today.isoformat())
        body["spend"] = report.as_dict()
    body["budgets"] = ledger.snapshot().as_dict()
    body["cache_saved"] = money_text(runtime.cache.stats.saved)
    await send_json(send, 200, orjson.dumps(body))


async def cache_status(runtime: Runtime, scope: Scope, receive: Receive, send: Send) -> None:
    await send_json(send, 200, orjson.dumps(runtime.cache.snapshot()))


async def cache_invalidate(runtime: Runtime, scope: Scope, receive: Receive, send: Send) -> None:
    raw = await read_body(scope, receive, _MAX_BODY)
    try:
        data = orjson.loads(raw) if raw.strip() else {}
    except orjson.JSONDecodeError as exc:
        raise MalformedJSON(
            f'the body is not valid JSON ({exc}); send {{"tenant": ..., '
            '"operation_type": ...}, or nothing to drop every entry'
        ) from None
    if not isinstance(data, dict):
        raise RequestError("the body must be a JSON object")
    unknown = set(data) - {"tenant", "operation_type"}
    if unknown:
        raise RequestError(
            f"unknown field(s) {', '.join(sorted(unknown))}; use 'tenant' and/or 'operation_type'",
            param=sorted(unknown)[0],
        )
    for name in ("tenant", "operation_type"):
        if name in data and not isinstance(data[name], str):
            raise RequestError(f"'{name}' must be a string", param=name)
    operation = data.get("operation_type")
    if operation is not None:
        runtime.matrix.rule_for(operation)  # an unknown operation type is a 422, not a no-op
    removed = await runtime.cache.invalidate(tenant=data.get("tenant"), operation_type=operation)
    scope_text = ", ".join(f"{k} {data[k]}" for k in ("tenant", "operation_type") if k in data)
    body = {"removed": removed, "scope": scope_text or "everything"}
    await send_json(send, 200, orjson.dumps(body))
