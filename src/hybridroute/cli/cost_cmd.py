"""`hybridroute cost`: spend by route, model, operation type, tenant and day, and budget
utilisation, from a running gateway (GET /admin/cost)."""

from __future__ import annotations

import json
import time
from decimal import Decimal
from typing import Any

import click

from hybridroute.cli.admin_client import admin_get, admin_token_option
from hybridroute.cli.options import gateway_url_option
from hybridroute.cli.render import table

__all__ = ["cost_command", "render_cost"]

_TITLES = {
    "route": "route",
    "model": "model",
    "operation_type": "operation type",
    "tenant": "tenant",
    "day": "day (UTC)",
}


def _money(text: str | None, places: int = 6) -> str:
    if text is None:
        return "-"
    return f"{Decimal(text):.{places}f}"


def _tokens(count: int) -> str:
    if count >= 1_000_000:
        return f"{count / 1_000_000:.1f}M"
    if count >= 10_000:
        return f"{count / 1000:.0f}k"
    return str(count)


def _duration(seconds: float) -> str:
    if seconds >= 86_400:
        return f"{seconds / 86_400:.1f} d"
    if seconds >= 3600:
        return f"{int(seconds // 3600)} h {int(seconds % 3600 // 60)} min"
    return f"{int(seconds // 60)} min"


def _share(part: str, whole: str) -> str:
    total = Decimal(whole)
    return "-" if not total else f"{Decimal(part) / total * 100:.1f} %"


_BUDGET_HEADERS = [
    "budget",
    "period",
    "window",
    "limit",
    "spent",
    "reserved",
    "used",
    "level",
    "resets in",
    "fired",
]


def _budget_rows(budgets: dict[str, Any]) -> list[list[str]]:
    rows = []
    for b in budgets["budgets"]:
        rows.append(
            [
                b["budget"],
                b["period"],
                b["window"],
                _money(b["limit"], 2),
                _money(b["spent"]),
                _money(b["reserved"]),
                f"{b['utilisation'] * 100:.1f} %",
                b["level"],
                _duration(b["resets_in_s"]),
                ", ".join(b["fired"]) or "-",
            ]
        )
    return rows


def render_cost(report: dict[str, Any], now: float | None = None) -> str:
    """The cost report as text."""
    now = time.time() if now is None else now
    spend, budgets = report["spend"], report["budgets"]
    if spend is None:
        return _render_budgets_only(report, now)
    currency = spend["currency"]
    total = spend["total"]
    lines = [
        f"Spend over the last {report['days']} day(s) ({spend['first_day']} to "
        f"{spend['last_day']}, UTC), {currency}",
        f"  total {_money(total['cost'])} for {total['requests']} requests "
        f"({total['charges']} charged attempts; {_tokens(total['input_tokens'])} tokens in, "
        f"{_tokens(total['output_tokens'])} out); {_money(total['estimated_cost'])} of it from "
        f"estimated token counts; cost per request {_money(total['cost_per_request'])}",
        f"  the response cache saved {_money(report['cache_saved'])} {currency}",
        "",
    ]
    if budgets["budgets"]:
        lines.append(
            f"Budgets (thresholds: info {budgets['thresholds']['info'] * 100:.0f} %, critical "
            f"{budgets['thresholds']['critical'] * 100:.0f} %, exhausted 100 %)"
        )
        lines.append(table(_BUDGET_HEADERS, _budget_rows(budgets)))
    else:
        lines.append("Budgets: none configured (spend is counted, nothing is limited)")
    lines.append("")
    for dimension, title in _TITLES.items():
        groups = spend["by"][dimension]
        if not groups:
            continue
        rows = [
            [
                key,
                str(t["requests"]),
                _tokens(t["input_tokens"]),
                _tokens(t["output_tokens"]),
                _money(t["cost"]),
                _money(t["cost_per_request"]),
                _share(t["cost"], total["cost"]),
            ]
            for key, t in groups.items()
        ]
        lines.append(
            table(
                [title, "requests", "tokens in", "tokens out", "cost", "per request", "share"],
                rows,
            )
        )
        lines.append("")
    lines += _events_and_store(budgets, now)
    return "\n".join(lines)


def _render_budgets_only(report: dict[str, Any], now: float) -> str:
    budgets = report["budgets"]
    lines = [f"Spend: not available: {report.get('spend_error', 'the store did not answer')}", ""]
    if budgets["budgets"]:
        lines.append("Budgets (kept in memory)")
        lines.append(table(_BUDGET_HEADERS, _budget_rows(budgets)))
        lines.append("")
    lines += _events_and_store(budgets, now)
    return "\n".join(lines)


def _events_and_store(budgets: dict[str, Any], now: float) -> list[str]:
    lines: list[str] = []
    events = budgets["events"][-5:]
    if events:
        lines.append("Budget events (latest last):")
        lines += [
            f"  {_duration(max(0.0, now - e['at']))} ago  [{e['severity']}] {e['message']}"
            for e in events
        ]
    store = budgets["store"]
    lines.append(f"Spend is kept {store['where']}")
    if store["write_failures"]:
        lines.append(
            f"  WARNING: {store['write_failures']} failed writes, {store['pending_writes']} "
            f"records waiting; last error: {store['last_write_error']}"
        )
    return lines


@click.command("cost")
@gateway_url_option
@admin_token_option
@click.option(
    "--days",
    type=click.IntRange(1, 366),
    default=7,
    show_default=True,
    help="How many UTC days back, today included.",
)
@click.option("--json", "as_json", is_flag=True, help="Print the raw report as JSON.")
def cost_command(url: str, token: str | None, days: int, as_json: bool) -> None:
    """Show spend by route, model, operation type, tenant and day, and budget utilisation."""
    report = admin_get(url, f"/admin/cost?days={days}", token)
    if as_json:
        click.echo(json.dumps(report, indent=2))
    else:
        click.echo(render_cost(report))
