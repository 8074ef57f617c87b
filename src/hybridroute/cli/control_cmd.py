"""Control-plane commands against a running gateway's admin API:

- `hybridroute flags list|set FLAG on|off|disable-all` — the five feature flags;
- `hybridroute rules show|versions|apply FILE [--dry-run]|validate|rollback VERSION` — the
  versioned routing configuration;
- `hybridroute rollback --level 1|2|3 [--version N]` — the rollback procedures, each followed
  by the post-rollback validation (flags, health, error rate, P95) and a timed report;
- `hybridroute action ...` — operator actions (breakers, route isolation, aggressive caching,
  maintenance mode), optionally time-limited with `--for`.

Every change takes `--reason`, which the audit trail records with the token's name.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import click

from hybridroute.cli.admin_client import admin_call, admin_get, admin_token_option, print_json
from hybridroute.cli.options import gateway_url_option
from hybridroute.cli.render import table

__all__ = ["action_group", "flags_group", "rollback_command", "rules_group"]

_FLAGS = (
    "ENABLE_BEDROCK_SUPPORT_MODE",
    "ENABLE_INTELLIGENT_ROUTING",
    "ENABLE_DIRECT_BEDROCK_FALLBACK",
    "ENABLE_HYBRID_HEALTH_MONITORING",
    "ENABLE_PERFORMANCE_OPTIMIZATION",
)
_reason_option = click.option("--reason", default="", help="Why (kept in the audit trail).")
_json_option = click.option("--json", "as_json", is_flag=True, help="Print the JSON answer.")


def _duration(text: str | None) -> float | None:
    """`90`, `90s`, `15m`, `2h` → seconds."""
    if text is None:
        return None
    units = {"s": 1, "m": 60, "h": 3600, "d": 86_400}
    number, unit = (text[:-1], text[-1]) if text[-1:] in units else (text, "s")
    try:
        seconds = float(number) * units[unit]
    except ValueError:
        raise click.BadParameter(f"{text!r} is not a duration like 90s, 15m or 2h") from None
    if seconds <= 0:
        raise click.BadParameter("the duration must be positive")
    return seconds


def _print_flags(body: dict[str, Any]) -> None:
    rows = [[name, "on" if on else "off"] for name, on in body["flags"].items()]
    click.echo(table(["flag", "state"], rows))
    click.echo(f"mode: {body['mode']}")
    last = body.get("last_change")
    if last:
        click.echo(
            f"last change: {last.get('action')} by {last.get('by')}"
            + (f" ({last['reason']})" if last.get("reason") else "")
        )


# -- flags -------------------------------------------------------------------------------------


@click.group("flags")
def flags_group() -> None:
    """Read and change the five feature flags (GET/POST /admin/feature-flags/bedrock)."""


@flags_group.command("list")
@gateway_url_option
@admin_token_option
@_json_option
def flags_list(url: str, token: str | None, as_json: bool) -> None:
    """Show the flags and the last change."""
    body = admin_get(url, "/admin/feature-flags/bedrock", token)
    print_json(body) if as_json else _print_flags(body)


@flags_group.command("set")
@click.argument("flag", type=click.Choice(_FLAGS, case_sensitive=False))
@click.argument("state", type=click.Choice(["on", "off"], case_sensitive=False))
@gateway_url_option
@admin_token_option
@_reason_option
@_json_option
def flags_set(
    flag: str, state: str, url: str, token: str | None, reason: str, as_json: bool
) -> None:
    """Turn one flag on or off (in force from the next request)."""
    body = admin_call(
        url,
        "POST",
        "/admin/feature-flags/bedrock/update",
        token,
        {"flag": flag.upper(), "enabled": state.lower() == "on", "reason": reason},
    )
    print_json(body) if as_json else _print_flags(body)


@flags_group.command("disable-all")
@gateway_url_option
@admin_token_option
@_reason_option
@_json_option
def flags_disable_all(url: str, token: str | None, reason: str, as_json: bool) -> None:
    """Turn all five flags off: MCP-only routing (the level-1 rollback)."""
    body = admin_call(
        url, "POST", "/admin/feature-flags/bedrock/disable-all", token, {"reason": reason}
    )
    print_json(body) if as_json else _print_flags(body)


@flags_group.command("enable-all")
@gateway_url_option
@admin_token_option
@_reason_option
@_json_option
def flags_enable_all(url: str, token: str | None, reason: str, as_json: bool) -> None:
    """Turn all five flags back on (hybrid routing) once the cause is fixed."""
    body = admin_call(
        url, "POST", "/admin/feature-flags/bedrock/enable-all", token, {"reason": reason}
    )
    print_json(body) if as_json else _print_flags(body)


# -- routing configuration ---------------------------------------------------------------------


@click.group("rules")
def rules_group() -> None:
    """The versioned routing configuration (/admin/config/routing-rules)."""


@rules_group.command("show")
@click.option("--version", "number", type=int, help="An earlier version (default: in force).")
@gateway_url_option
@admin_token_option
def rules_show(number: int | None, url: str, token: str | None) -> None:
    """Print the routing rules in force (JSON, ready to edit and apply)."""
    path = "/admin/config/routing-rules"
    if number is not None:
        path += f"/versions/{number}"
    print_json(admin_get(url, path, token))


@rules_group.command("versions")
@gateway_url_option
@admin_token_option
def rules_versions(url: str, token: str | None) -> None:
    """List every version: who applied it, when, and what changed."""
    body = admin_get(url, "/admin/config/routing-rules/versions", token)
    rows = []
    for v in body["versions"]:
        changed = ", ".join(sorted(v["diff"]["changed"])) or "-"
        when = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(v["applied_at"]))
        mark = " *" if v["version"] == body["current"] else ""
        rows.append([f"{v['version']}{mark}", when, v["author"], changed, v["comment"]])
    click.echo(table(["version", "applied (UTC)", "by", "rows changed", "comment"], rows))
    click.echo("* in force")


@rules_group.command("apply")
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--dry-run", is_flag=True, help="Validate and preview; apply nothing.")
@click.option("--comment", default="", help="Why (kept with the version).")
@gateway_url_option
@admin_token_option
def rules_apply(file: Path, dry_run: bool, comment: str, url: str, token: str | None) -> None:
    """Apply the routing rules in FILE (JSON: {"matrix": {...}}) as a new version."""
    try:
        document = json.loads(file.read_text())
    except ValueError as exc:
        raise click.ClickException(f"{file} is not valid JSON: {exc}") from None
    if comment:
        document["comment"] = comment
    path = "/admin/config/routing-rules" + ("?dry_run=true" if dry_run else "")
    print_json(admin_call(url, "PUT", path, token, document))


@rules_group.command("validate")
@gateway_url_option
@admin_token_option
def rules_validate(url: str, token: str | None) -> None:
    """Check the configuration in force and show how each row decides now."""
    body = admin_get(url, "/admin/config/validate-routing", token)
    rows = []
    for op, row in body["rows"].items():
        decides = " → ".join(row.get("routes", [])) or f"refused ({row.get('refused')})"
        ok = "yes" if row.get("as_configured") else "NO"
        rows.append([op, row.get("primary"), row.get("fallback") or "-", decides, ok])
    click.echo(table(["operation", "primary", "fallback", "decides now", "as configured"], rows))
    for issue in body["issues"]:
        click.echo(f"problem: {issue['path']}: {issue['problem']}")
    click.echo(f"version {body['version']}: {'valid' if body['valid'] else 'NOT valid'}")
    if not body["valid"]:
        raise SystemExit(1)


@rules_group.command("rollback")
@click.argument("version", type=int)
@_reason_option
@gateway_url_option
@admin_token_option
def rules_rollback(version: int, reason: str, url: str, token: str | None) -> None:
    """Apply an earlier version again (as a new version)."""
    body = admin_call(
        url, "POST", "/admin/config/rollback", token, {"version": version, "comment": reason}
    )
    click.echo(f"version {version} restored as version {body['version']}")


# -- rollback ----------------------------------------------------------------------------------


@click.command("rollback")
@click.option(
    "--level",
    type=click.IntRange(1, 3),
    required=True,
    help="1: flags off; 2: also check MCP and send a sample; 3: restore --version.",
)
@click.option("--version", "number", type=int, help="Level 3: the routing version to restore.")
@_reason_option
@gateway_url_option
@admin_token_option
@_json_option
def rollback_command(
    level: int, number: int | None, reason: str, url: str, token: str | None, as_json: bool
) -> None:
    """Run a rollback procedure, then validate the gateway and report (exit 1 on failure)."""
    began = time.perf_counter()
    body: dict[str, Any] = {"level": level, "reason": reason}
    if number is not None:
        body["version"] = number
    report = admin_call(url, "POST", "/admin/rollback", token, body, timeout_s=120)
    flags = admin_get(url, "/admin/feature-flags/bedrock", token)
    health = admin_call(url, "GET", "/health", None)
    slo = admin_get(url, "/admin/slo?window=5m", token)
    elapsed = time.perf_counter() - began
    if as_json:
        print_json({"rollback": report, "flags": flags, "health": health, "slo": slo,
                    "elapsed_s": round(elapsed, 3)})  # fmt: skip
    else:
        _print_rollback(report, flags, health, slo, elapsed)
    if not report["ok"]:
        raise SystemExit(1)


def _print_rollback(
    report: dict[str, Any],
    flags: dict[str, Any],
    health: dict[str, Any],
    slo: dict[str, Any],
    elapsed: float,
) -> None:
    click.echo(f"Level {report['level']} rollback by {report['by']}")
    rows = [
        [s["name"], "ok" if s["ok"] else "FAILED", f"{s['elapsed_ms']:.0f} ms", s["detail"]]
        for s in report["steps"]
    ]
    click.echo(table(["step", "result", "took", "detail"], rows))
    click.echo("\nPost-rollback validation")
    on = [name for name, value in flags["flags"].items() if value]
    click.echo(f"  flags: {'all off (MCP-only)' if not on else 'on: ' + ', '.join(on)}")
    click.echo(f"  gateway health: {health.get('status')}")
    for route, state in report["validation"]["health"].items():
        click.echo(f"  route {route}: {state['status']}")
    figures = slo.get("figures", {})
    requests = slo.get("requests", 0)
    for label, key, unit in (("error rate", "error_rate", ""), ("P95", "generation_p95_ms", " ms")):
        value = figures.get(key)
        shown = "not enough traffic yet" if value is None else f"{value}{unit}"
        click.echo(f"  {label} (last 5 min, {requests} requests): {shown}")
    verdict = "succeeded" if report["ok"] else "FAILED"
    click.echo(
        f"\nRollback {verdict}: {report['elapsed_s']:.2f} s in the gateway, "
        f"{elapsed:.2f} s in all (the seed allows 5 minutes)"
    )


# -- operator actions --------------------------------------------------------------------------


@click.group("action")
def action_group() -> None:
    """Operator actions (POST /admin/actions), audited, optionally time-limited."""


def _act(url: str, token: str | None, body: dict[str, Any]) -> None:
    result = admin_call(url, "POST", "/admin/actions", token, body)
    _print_actions(result)


def _print_actions(body: dict[str, Any]) -> None:
    rows = []
    for a in body["active"]:
        until = (
            "-"
            if a["expires_at"] is None
            else time.strftime("%H:%M:%S", time.gmtime(a["expires_at"]))
        )
        rows.append([a["action"], a["target"] or "-", a["by"], until, a["reason"]])
    click.echo(table(["in force", "target", "by", "until (UTC)", "reason"], rows) if rows
               else "no operator action in force")  # fmt: skip
    click.echo(
        f"maintenance: {'on' if body['maintenance'] else 'off'}; aggressive caching: "
        f"{'on' if body['cache_aggressive'] else 'off'}; disabled routes: "
        f"{', '.join(body['disabled_routes']) or 'none'}; breakers held open: "
        f"{', '.join(body['forced_open_breakers']) or 'none'}"
    )


_for_option = click.option("--for", "for_", help="End by itself after this long (90s, 15m, 2h).")


@action_group.command("list")
@gateway_url_option
@admin_token_option
def action_list(url: str, token: str | None) -> None:
    """The operator actions in force."""
    _print_actions(admin_get(url, "/admin/actions", token))


def _route_action(name: str, help_text: str, *, timed: bool) -> None:
    @click.argument("route")
    @_reason_option
    @gateway_url_option
    @admin_token_option
    def command(route: str, reason: str, url: str, token: str | None, **rest: Any) -> None:
        body: dict[str, Any] = {"action": name.replace("-", "_"), "route": route, "reason": reason}
        if rest.get("for_") is not None:
            body["for_s"] = _duration(rest["for_"])
        _act(url, token, body)

    command.__doc__ = help_text
    decorated = _for_option(command) if timed else command
    action_group.command(name)(decorated)


_route_action("breaker-reset", "Close ROUTE's breaker now and forget its failures.", timed=False)
_route_action("breaker-open", "Hold ROUTE's breaker open (traffic goes to fallbacks).", timed=True)
_route_action("route-disable", "Isolate ROUTE from all traffic (security incidents).", timed=True)
_route_action("route-enable", "End ROUTE's isolation.", timed=False)


def _switch(name: str, help_text: str) -> None:
    @click.argument("state", type=click.Choice(["on", "off"], case_sensitive=False))
    @_for_option
    @_reason_option
    @gateway_url_option
    @admin_token_option
    def command(state: str, for_: str | None, reason: str, url: str, token: str | None) -> None:
        body: dict[str, Any] = {
            "action": name.replace("-", "_"),
            "enabled": state.lower() == "on",
            "reason": reason,
        }
        if for_ is not None:
            body["for_s"] = _duration(for_)
        _act(url, token, body)

    command.__doc__ = help_text
    action_group.command(name)(command)


_switch("cache-aggressive", "Aggressive caching on or off (longer TTLs, more rows cached).")
_switch("maintenance", "Maintenance mode: refuse new non-critical work with 503, or stop it.")
