"""`hybridroute health`: the Hybrid Health Monitor's report from a running gateway, as tables."""

from __future__ import annotations

import json
import time
from typing import Any

import click

from hybridroute.cli.admin_client import admin_get, admin_token_option
from hybridroute.cli.options import gateway_url_option
from hybridroute.cli.render import budget_text, table

__all__ = ["health_command", "render_health"]

_DASH = "-"


def _pct(value: float | None) -> str:
    return _DASH if value is None else f"{value * 100:.1f} %"


def _ms(value: float | None) -> str:
    if value is None:
        return _DASH
    return f"{value / 1000:.2f} s" if value >= 1000 else f"{value:.0f} ms"


def _ago(epoch: float | None, now: float) -> str:
    if epoch is None:
        return _DASH
    seconds = max(0.0, now - epoch)
    return f"{seconds:.0f} s ago" if seconds < 120 else f"{seconds / 60:.0f} min ago"


def _window(seconds: float) -> str:
    return f"{seconds / 60:.1f} min" if seconds >= 120 else f"{seconds:.0f} s"


def _load(route: dict[str, Any]) -> str:
    limit = route["max_in_flight"]
    text = f"{route['in_flight']}/{limit}" if limit else str(route["in_flight"])
    return text + (f" +{route['queued']} queued" if route["queued"] else "")


def _hedges(route: dict[str, Any]) -> str:
    """Hedge races won/lost in the window (a gateway that does not report them: a dash)."""
    won, lost = route.get("hedges_won", 0), route.get("hedges_lost", 0)
    return f"{won}/{lost}" if won or lost else _DASH


def _support_line(support: dict[str, Any], now: float) -> str:
    mode = "active" if support["mode"] == "active" else "inactive (MCP-only routing)"
    line = (
        f"Bedrock support mode {mode}; support status {support['status']} (changed "
        f"{_ago(support['since'], now)})"
    )
    if support["emergency"]:
        line += (
            f"; EMERGENCY: every route unavailable, started {_ago(support['emergency_since'], now)}"
            f", {support['recovery_probes']} recovery probes so far"
        )
    return line


def render_health(report: dict[str, Any], now: float | None = None) -> str:
    """The report as text: the score, the routing figures, a route table, an operation table and
    the recommendations with their evidence."""
    now = time.time() if now is None else now
    parts = report["score_parts"]
    lines = [
        f"Health score {report['score']}/100 ({report['status']}); window "
        f"{_window(report['window_s'])} ({_window(report['span_s'])} of data); health "
        f"monitoring {'on' if report['monitoring'] else 'off'}",
        f"  route health {parts['route_health']:.2f} x 0.4 + success {parts['success']:.2f} x 0.3"
        f" + efficiency {parts['efficiency']:.2f} x 0.2 + no fallback "
        f"{parts['no_fallback']:.2f} x 0.1",
        "",
        f"requests {report['requests']}, served {report['served']} "
        f"({report['throughput_rps']:.2f}/s); routing accuracy "
        f"{_pct(report['routing_accuracy'])}, routing efficiency "
        f"{_pct(report['routing_efficiency'])}, fallback rate {_pct(report['fallback_rate'])}, "
        f"error rate {_pct(report['error_rate'])}",
    ]
    support = report.get("support")
    if support:
        lines.append(_support_line(support, now))
    if report["shed"]:
        shed = ", ".join(f"{priority} {n}" for priority, n in report["shed"].items())
        lines.append(f"shed with 429: {shed}")
    route_rows = [
        [
            r["route"],
            r["status"],
            r["breaker"],
            _ms(r["p50_ms"]),
            _ms(r["p95_ms"]),
            _ms(r["p99_ms"]),
            _pct(r["success_rate"]),
            f"{r['throughput_rps']:.2f}",
            str(r["consecutive_failures"]),
            _load(r),
            _hedges(r),
            r["probe"],
            _ago(r["last_check"], now),
            r["last_error"] or _DASH,
        ]
        for r in report["routes"]
    ]
    lines += [
        "",
        table(
            [
                "route",
                "status",
                "breaker",
                "p50",
                "p95",
                "p99",
                "success",
                "served/s",
                "fails in a row",
                "in flight",
                "hedges won/lost",
                "probe",
                "last check",
                "last error",
            ],
            route_rows,
        ),
    ]
    unwell = [r for r in report["routes"] if r["status"] != "healthy"]
    lines += [f"  {r['route']}: {r['detail']}" for r in unwell]
    op_rows = [
        [
            o["operation_type"],
            o["priority"],
            budget_text(o["budget_ms"]),
            o["primary"],
            o["fallback"] or _DASH,
            str(o["requests"]),
            str(o["failed"]),
            str(o["shed"]),
            _pct(o["fallback_rate"]),
            _pct(o["efficiency"]),
            _ms(o["p95_ms"]),
        ]
        for o in report["operations"]
    ]
    lines += [
        "",
        table(
            [
                "operation type",
                "priority",
                "budget",
                "primary",
                "fallback",
                "requests",
                "failed",
                "shed",
                "fallback rate",
                "efficiency",
                "p95",
            ],
            op_rows,
        ),
        "",
    ]
    events = (support or {}).get("events", [])[-5:]
    if events:
        lines.append("Support events (latest last):")
        lines += [
            f"  {_ago(e['at'], now)}  [{e['severity']}] {e['kind']}: {e['message']}" for e in events
        ]
        lines.append("")
    recommendations = report["recommendations"]
    if not recommendations:
        lines.append("Recommendations: none; nothing in the window calls for a change.")
    else:
        lines.append("Recommendations:")
        for rec in recommendations:
            lines.append(f"  [{rec['severity']}] {rec['code']}: {rec['action']}")
            lines.append(f"      evidence: {rec['evidence']}")
    return "\n".join(lines)


@click.command("health")
@gateway_url_option
@admin_token_option
@click.option("--json", "as_json", is_flag=True, help="Print the raw report as JSON.")
def health_command(url: str, token: str | None, as_json: bool) -> None:
    """Show a running gateway's health: score, routing figures, routes, recommendations."""
    report = admin_get(url, "/admin/health/status", token)
    if as_json:
        click.echo(json.dumps(report, indent=2))
    else:
        click.echo(render_health(report))
