"""`GET /admin/reports/daily` and `/admin/reports/weekly`: the operations reports.

`?format=json` (the default) or `?format=markdown`. The latest traffic and alert transitions are
written to the store first, so a report includes everything up to the moment it is asked for.
"""

from __future__ import annotations

from urllib.parse import parse_qs

import orjson

from hybridroute.api.http import Receive, Scope, Send, send_json
from hybridroute.errors import RequestError
from hybridroute.observability.reports import ReportSources, build_report, render_markdown
from hybridroute.runtime import Runtime

__all__ = ["daily_report", "weekly_report"]


async def _report(period: str, runtime: Runtime, scope: Scope, send: Send) -> None:
    query = parse_qs(scope.get("query_string", b"").decode("latin-1"))
    fmt = (query.get("format") or ["json"])[-1]
    if fmt not in ("json", "markdown"):
        raise RequestError(f"'format' must be json or markdown, got {fmt!r}", param="format")
    await runtime.recorder.write()
    await runtime.alert_log.flush()
    await runtime.ledger.flush()
    sources = ReportSources(
        operations=runtime.store,
        spend=runtime.store,
        ledger=runtime.ledger,
        alerts=runtime.alerts,
        flags=runtime.flags.current(),
        slo=runtime.observability.slo_config,
    )
    report = await build_report(period, sources, runtime.gateway.now())
    if fmt == "json":
        await send_json(send, 200, orjson.dumps(report))
        return
    body = render_markdown(report).encode()
    await send(
        {
            "type": "http.response.start",
            "status": 200,
            "headers": [
                (b"content-type", b"text/markdown; charset=utf-8"),
                (b"content-length", str(len(body)).encode()),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})


async def daily_report(runtime: Runtime, scope: Scope, receive: Receive, send: Send) -> None:
    await _report("daily", runtime, scope, send)


async def weekly_report(runtime: Runtime, scope: Scope, receive: Receive, send: Send) -> None:
    await _report("weekly", runtime, scope, send)
