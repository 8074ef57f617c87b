"""The operations reports: what the seed's daily and weekly checklists ask, from recorded data.

`build_report("daily" | "weekly", ...)` covers the last 24 hours or 7 days and answers, section
by section:

- **alerts and incidents** — every alert that fired, was acknowledged or resolved in the period
  (from the operations store), and those still active;
- **SLO compliance** — generation and cached p95, error rate and cache hit rate over the period
  against their targets, and the worst hour (from the hourly traffic rollups);
- **routing** — routing efficiency and fallback rate, per operation type and per route;
- **cache performance** — lookups, hit rate, cached p95;
- **feature flags** — their state now;
- **cost** — spend in the period by route, operation type and tenant, every budget's
  utilisation, and a projection to the end of each budget's window at the period's pace;
- **configuration changes** — gateway starts, configuration changes and alert threshold
  changes in the period.

`render_markdown()` writes it as the checklist an operator reads; the JSON is the same content.
"""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

import orjson

from hybridroute.config.observability import SloConfig
from hybridroute.economics import CostLedger
from hybridroute.economics.pricing import money_text
from hybridroute.economics.report import SpendReport
from hybridroute.observability.alerts import AlertManager
from hybridroute.observability.rollups import figures, merge_rollups
from hybridroute.signals import FlagState
from hybridroute.storage.ledger import LedgerStore
from hybridroute.storage.operations import OperationsStore
from hybridroute.storage.records import AlertEventRecord

__all__ = ["PERIODS", "ReportSources", "build_report", "render_markdown"]

PERIODS = {"daily": 1, "weekly": 7}
_ALERT_LOOKBACK_S = 30 * 86_400


def _iso(at: float | None) -> str | None:
    if at is None:
        return None
    return dt.datetime.fromtimestamp(at, tz=dt.UTC).strftime("%Y-%m-%d %H:%M UTC")


@dataclass(frozen=True, slots=True)
class ReportSources:
    """Where a report's data comes from."""

    operations: OperationsStore
    spend: LedgerStore
    ledger: CostLedger
    alerts: AlertManager
    flags: FlagState
    slo: SloConfig


def _alerts_section(
    events: Sequence[AlertEventRecord], manager: AlertManager, now: float
) -> dict[str, Any]:
    alerts: dict[str, dict[str, Any]] = {}
    for event in events:
        entry = alerts.setdefault(
            event.alert_id,
            {
                "id": event.alert_id,
                "rule": event.rule,
                "severity": event.severity,
                "labels": orjson.loads(event.labels),
                "summary": event.summary,
                "fired_at": None,
                "acknowledged_at": None,
                "acknowledged_by": None,
                "resolved_at": None,
            },
        )
        entry["summary"] = event.summary or entry["summary"]
        if event.transition == "firing":
            entry["fired_at"] = event.at
        elif event.transition == "acknowledged":
            entry["acknowledged_at"], entry["acknowledged_by"] = event.at, event.acknowledged_by
        elif event.transition == "resolved":
            entry["resolved_at"] = event.at
    active_ids = {a.id for a in manager.active()}
    listed = []
    for entry in alerts.values():
        start = entry["fired_at"]
        end = entry["resolved_at"] if entry["resolved_at"] is not None else now
        entry["duration_s"] = None if start is None else round(end - start)
        entry["active"] = entry["id"] in active_ids
        listed.append(entry)
    for alert in manager.active():  # fired before the period and still going
        if alert.id not in alerts:
            listed.append(
                {
                    "id": alert.id,
                    "rule": alert.rule,
                    "severity": alert.severity,
                    "labels": dict(alert.labels),
                    "summary": alert.summary,
                    "fired_at": alert.started_at,
                    "acknowledged_at": alert.acknowledged_at,
                    "acknowledged_by": alert.acknowledged_by,
                    "resolved_at": None,
                    "duration_s": None
                    if alert.started_at is None
                    else round(now - alert.started_at),
                    "active": True,
                }
            )
    listed.sort(key=lambda e: e["fired_at"] or 0.0)
    by_severity: dict[str, int] = {}
    for entry in listed:
        by_severity[entry["severity"]] = by_severity.get(entry["severity"], 0) + 1
    return {"count": len(listed), "by_severity": by_severity, "alerts": listed}


def _slo_section(
    rollup: Mapping[str, Any], hours: Sequence[tuple[int, Any]], slo: SloConfig
) -> Any:
    whole = figures(rollup)

    def judge(value: float | None, target: float, better: str) -> bool | None:
        if value is None:
            return None
        return value <= target if better == "lower" else value >= target

    checks = {
        "generation_p95": (whole["generation_p95_ms"], slo.generation_p95_ms, "lower", "ms"),
        "cached_p95": (whole["cached_p95_ms"], slo.cached_p95_ms, "lower", "ms"),
        "error_rate": (whole["error_rate"], slo.error_rate, "lower", "ratio"),
        "cache_hit_rate": (whole["cache_hit_rate"], slo.cache_hit_rate, "higher", "ratio"),
    }
    compliance = {
        name: {"figure": value, "target": target, "unit": unit, "met": judge(value, target, b)}
        for name, (value, target, b, unit) in checks.items()
    }
    worst_errors = worst_p95 = None
    for hour, data in hours:
        f = figures(data)
        if f["requests"] < slo.min_requests:
            continue
        if f["error_rate"] is not None and (
            worst_errors is None or f["error_rate"] > worst_errors["error_rate"]
        ):
            worst_errors = {"hour": _iso(hour * 3600), "error_rate": f["error_rate"]}
        if f["generation_p95_ms"] is not None and (
            worst_p95 is None or f["generation_p95_ms"] > worst_p95["generation_p95_ms"]
        ):
            worst_p95 = {"hour": _iso(hour * 3600), "generation_p95_ms": f["generation_p95_ms"]}
    return {
        "figures": whole,
        "compliance": compliance,
        "met": all(c["met"] is not False for c in compliance.values()),
        "worst_hour_by_error_rate": worst_errors,
        "worst_hour_by_p95": worst_p95,
    }


def _routing_section(rollup: Mapping[str, Any]) -> dict[str, Any]:
    operations = {}
    for op, c in sorted(rollup["operations"].items()):
        operations[op] = {
            "requests": c.get("requests", 0),
            "errors": c.get("errors", 0),
            "fallback_rate": round(c["fallbacks"] / c["served"], 4) if c.get("served") else None,
            "routing_efficiency": (
                round(c["efficient"] / c["decided"], 4) if c.get("decided") else None
            ),
        }
    whole = figures(rollup)
    return {
        "routing_efficiency": whole["routing_efficiency"],
        "fallback_rate": whole["fallback_rate"],
        "operations": operations,
        "routes": dict(sorted(rollup["routes"].items())),
        "error_codes": dict(sorted(rollup["error_codes"].items(), key=lambda kv: -kv[1])),
    }


def _projection(ledger: CostLedger, now: float) -> list[dict[str, Any]]:
    """Each budget's spend projected to the end of its window at the pace so far."""
    rows = []
    for status in ledger.snapshot().budgets:
        length = status.resets_in_s
        elapsed_fraction = None
        # the window's length: a day, or the month's days
        if status.period.value == "daily":
            total_s = 86_400.0
        else:
            moment = dt.datetime.fromtimestamp(now, tz=dt.UTC)
            start = moment.replace(day=1, hour=0, minute=0, second=0, microsecond=0)
            end = (start + dt.timedelta(days=32)).replace(day=1)
            total_s = (end - start).total_seconds()
        elapsed = max(1.0, total_s - length)
        elapsed_fraction = elapsed / total_s
        projected = status.spent / Decimal(str(elapsed_fraction))
        rows.append(
            {
                "budget": status.budget,
                "period": status.period.value,
                "window": status.window,
                "limit": money_text(status.limit),
                "spent": money_text(status.spent),
                "utilisation": round(status.utilisation, 4),
                "elapsed": round(elapsed_fraction, 4),
                "projected_spend": money_text(projected.quantize(Decimal("0.000001"))),
                "projected_utilisation": round(float(projected / status.limit), 4),
                "on_track": projected <= status.limit,
            }
        )
    return rows


async def build_report(period: str, sources: ReportSources, now: float) -> dict[str, Any]:
    """The daily or weekly report as JSON-ready data."""
    days = PERIODS[period]
    since = now - days * 86_400
    first_hour, last_hour = math.floor(since / 3600), math.floor(now / 3600)
    hours = [
        (record.hour, orjson.loads(record.data))
        for record in await sources.operations.traffic_hours(first_hour, last_hour)
    ]
    rollup = merge_rollups(*(data for _, data in hours))
    first_day = dt.datetime.fromtimestamp(since, tz=dt.UTC).date().isoformat()
    last_day = dt.datetime.fromtimestamp(now, tz=dt.UTC).date().isoformat()
    spend_rows = await sources.spend.spend(first_day, last_day)
    spend = SpendReport.from_rows(spend_rows, sources.ledger.currency, first_day, last_day)
    gateway_events = await sources.operations.gateway_events(since)
    # An alert active in the period may have fired before it: read its earlier transitions too.
    recent = await sources.operations.alert_events(since - _ALERT_LOOKBACK_S)
    in_period = {e.alert_id for e in recent if e.at >= since}
    alert_events = [e for e in recent if e.alert_id in in_period]
    return {
        "period": period,
        "from": _iso(since),
        "to": _iso(now),
        "generated_at": now,
        "alerts": _alerts_section(alert_events, sources.alerts, now),
        "slo": _slo_section(rollup, hours, sources.slo),
        "routing": _routing_section(rollup),
        "cache": {
            key: figures(rollup)[key]
            for key in ("cache_lookups", "cache_hit_rate", "cached_p95_ms")
        }
        | {"hits": rollup["hits"], "misses": rollup["misses"]},
        "flags": sources.flags.as_mapping(),
        "cost": {
            "currency": sources.ledger.currency,
            "days": [first_day, last_day],  # spend is kept per UTC day: whole days are summed
            "spend": spend.as_dict(),
            "budgets": _projection(sources.ledger, now),
        },
        "configuration": [
            {"at": _iso(e.at), "kind": e.kind, "detail": orjson.loads(e.detail)}
            for e in gateway_events
        ],
    }


def _pct(value: float | None) -> str:
    return "n/a" if value is None else f"{value * 100:.1f} %"


def _ms(value: float | None) -> str:
    if value is None:
        return "n/a"
    return f"{value:.1f} ms" if value < 10 else f"{value:.0f} ms"


def _mark(met: bool | None) -> str:
    return {True: "[x]", False: "[ ] NOT MET", None: "[?] too little traffic"}[met]


def _md_alerts(alerts: Mapping[str, Any]) -> list[str]:
    lines = ["## Alerts and incidents", ""]
    if not alerts["alerts"]:
        return [*lines, "No alert fired in the period."]
    counts = ", ".join(f"{n} {sev}" for sev, n in sorted(alerts["by_severity"].items()))
    lines += [
        f"{alerts['count']} alert(s): {counts}.",
        "",
        "| severity | rule | summary | fired | acknowledged | resolved |",
        "|---|---|---|---|---|---|",
    ]
    for a in alerts["alerts"]:
        acked = (
            f"{_iso(a['acknowledged_at'])} by {a['acknowledged_by']}"
            if a["acknowledged_at"]
            else "-"
        )
        resolved = _iso(a["resolved_at"]) or ("still active" if a["active"] else "-")
        lines.append(
            f"| {a['severity']} | {a['rule']} | {a['summary']} | {_iso(a['fired_at']) or '-'}"
            f" | {acked} | {resolved} |"
        )
    return lines


def _md_slo(slo: Mapping[str, Any]) -> list[str]:
    c = slo["compliance"]

    def check(name: str, label: str, show: Any, target: str) -> str:
        return f"- {_mark(c[name]['met'])} {label} {show(c[name]['figure'])} (target {target})"

    gen, cached = c["generation_p95"]["target"], c["cached_p95"]["target"]
    errors, hits = c["error_rate"]["target"] * 100, c["cache_hit_rate"]["target"] * 100
    f = slo["figures"]
    lines = [
        "## SLO compliance",
        "",
        check("generation_p95", "generation p95", _ms, f"≤ {gen:g} ms"),
        check("cached_p95", "cached p95", _ms, f"≤ {cached:g} ms"),
        check("error_rate", "error rate", _pct, f"≤ {errors:g} %"),
        check("cache_hit_rate", "cache hit rate", _pct, f"≥ {hits:g} %"),
        f"- requests {f['requests']}, errors {f['errors']}",
    ]
    if slo["worst_hour_by_error_rate"]:
        w = slo["worst_hour_by_error_rate"]
        lines.append(f"- worst hour by error rate: {w['hour']} ({_pct(w['error_rate'])})")
    if slo["worst_hour_by_p95"]:
        w = slo["worst_hour_by_p95"]
        lines.append(f"- worst hour by p95: {w['hour']} ({_ms(w['generation_p95_ms'])})")
    return lines


def _md_routing(routing: Mapping[str, Any], cache: Mapping[str, Any]) -> list[str]:
    lines = [
        "## Routing",
        "",
        f"Routing efficiency {_pct(routing['routing_efficiency'])}, fallback rate "
        f"{_pct(routing['fallback_rate'])}.",
        "",
        "| operation type | requests | errors | fallback rate | efficiency |",
        "|---|---|---|---|---|",
    ]
    for op, o in routing["operations"].items():
        lines.append(
            f"| {op} | {o['requests']} | {o['errors']} | {_pct(o['fallback_rate'])} | "
            f"{_pct(o['routing_efficiency'])} |"
        )
    return [
        *lines,
        "",
        "## Cache performance",
        "",
        f"{cache['cache_lookups']} lookups, hit rate {_pct(cache['cache_hit_rate'])}, cached p95 "
        f"{_ms(cache['cached_p95_ms'])}.",
    ]


def _md_cost(cost: Mapping[str, Any]) -> list[str]:
    total = cost["spend"]["total"]
    lines = [
        "## Cost",
        "",
        f"Spent {total['cost']} {cost['currency']} on {total['requests']} answers from routes "
        f"over the UTC days {cost['days'][0]} to {cost['days'][1]} (spend is kept per day; "
        "cache hits cost nothing).",
        "",
    ]
    if not cost["budgets"]:
        return [*lines, "No budgets are configured."]
    lines += [
        "| budget | window | spent | limit | used | projected | on track |",
        "|---|---|---|---|---|---|---|",
    ]
    for b in cost["budgets"]:
        lines.append(
            f"| {b['budget']} {b['period']} | {b['window']} | {b['spent']} | {b['limit']} | "
            f"{_pct(b['utilisation'])} | {b['projected_spend']} "
            f"({_pct(b['projected_utilisation'])}) | {'yes' if b['on_track'] else 'NO'} |"
        )
    return lines


def _md_configuration(events: Sequence[Mapping[str, Any]]) -> list[str]:
    lines = ["## Configuration changes", ""]
    changes = [e for e in events if e["kind"] == "config_changed"]
    thresholds = [e for e in events if e["kind"] == "thresholds_changed"]
    starts = [e for e in events if e["kind"] == "started"]
    if not changes and not thresholds:
        lines.append("No configuration change in the period.")
    for e in thresholds:
        rules = ", ".join(sorted(e["detail"].get("rules", {}))) or "-"
        slo = ", ".join(sorted(e["detail"].get("slo", {}))) or "-"
        lines.append(f"- {e['at']}: alert thresholds changed (rules: {rules}; SLO: {slo})")
    for e in changes:
        lines.append(
            f"- {e['at']}: configuration changed ({e['detail'].get('from', '?')[:12]} → "
            f"{e['detail'].get('to', '?')[:12]})"
        )
    if starts:
        lines.append(f"- the gateway started {len(starts)} time(s), last at {starts[-1]['at']}")
    return lines


def render_markdown(report: Mapping[str, Any]) -> str:
    """The report as a Markdown checklist."""
    title = "Daily" if report["period"] == "daily" else "Weekly"
    sections = [
        [f"# {title} operations report", "", f"{report['from']} to {report['to']}"],
        _md_alerts(report["alerts"]),
        _md_slo(report["slo"]),
        _md_routing(report["routing"], report["cache"]),
        ["## Feature flags", ""]
        + [f"- {name}: {'on' if on else 'OFF'}" for name, on in report["flags"].items()],
        _md_cost(report["cost"]),
        _md_configuration(report["configuration"]),
    ]
    return "\n\n".join("\n".join(section) for section in sections) + "\n"
