"""The four drill scenarios of `hybridroute drill`, one per exercise of the seed training
guide: health check, alert response, emergency rollback, configuration update. Each injects its
fault through the simulators' knobs, names the steps with the runbook's commands, and checks each
step in the gateway's admin API and audit trail (the framework is `hybridroute.cli.drills`)."""

from __future__ import annotations

import time
from typing import Any

from hybridroute.cli.drills import (
    ALERT_RULE,
    AUTH,
    BEDROCK,
    BEDROCK_ROUTE,
    MCP,
    Drill,
    DrillError,
    DrillTimeout,
    Run,
    Seen,
    Step,
    action_text,
    burst,
    curl_command,
    reason_of,
    require_flags_on,
    send_chat,
)

__all__ = ["ALERT_RESPONSE", "CONFIG_UPDATE", "DRILLS", "EMERGENCY_ROLLBACK", "HEALTH_CHECK"]


# -- health check (exercise 1) -----------------------------------------------------------------

_SLOW_MCP_MS = 1800.0


def _health_setup(run: Run) -> None:
    run.inject(MCP, {"latency_ms": _SLOW_MCP_MS, "jitter_ms": 0.0})
    answers = burst(run, "standard", 24, "Summarise today's open tickets")
    served = sum(1 for status, _ in answers if status == 200)
    run.say(
        f"sent 24 `standard` requests so today's figures have data ({served} answered); "
        "the rest is yours to find"
    )


def _is_mitigation(action: Any, target: Any, enabled: Any) -> bool:
    if action == "cache_aggressive":
        return bool(enabled)
    return action in ("breaker_open", "route_disable") and target == MCP


def _check_mitigated(run: Run) -> Seen:
    hint = ""
    for record in run.records("operator_action"):
        action, target = record.data.get("action"), record.data.get("target")
        enabled = record.data.get("enabled")
        text = action_text(str(action), target, enabled)
        if _is_mitigation(action, target, enabled):
            if not reason_of(record):
                hint = (
                    f"seen {text} by {record.actor}, but without --reason: document what you "
                    "found (the exercise's task 6) and take it again with --reason"
                )
                continue
            run.facts["mitigation"] = (action, target or "")
            run.facts["mitigation-text"] = text
            return Seen(True, f"{text} by {record.actor}: {reason_of(record)!r}")
        if action in ("breaker_open", "route_disable"):
            hint = f"seen {text} by {record.actor}: {target} is not the slow route"
    return Seen(False, hint)


def _mcp_fixed(run: Run) -> None:
    run.remove_fault()
    run.say("The MCP team fixed the slowness (the drill put the MCP simulator's latency back).")


def _check_mitigation_ended(run: Run) -> Seen:
    action, target = run.facts["mitigation"]
    for active in run.get("/admin/actions")["active"]:
        if active["action"] == action and (active.get("target") or "") == target:
            return Seen(False)
    return Seen(True, f"{run.facts['mitigation-text']}: no longer in force")


_DAILY_CHECKS = (
    "# the daily checks (§1); or look at $GATEWAY/dashboard",
    'curl -sS "$GATEWAY/health"',
    "hybridroute health",
    curl_command("/admin/slo?window=5m"),
    curl_command("/admin/alerts"),
    "hybridroute flags list",
    "hybridroute action list",
    "hybridroute cost",
    "hybridroute audit verify",
    "hybridroute compliance status",
    "# high P95 latency? diagnose (§3, issue 1)",
    curl_command("/admin/metrics/routing-distribution"),
    curl_command("/admin/metrics/provider-latencies"),
    curl_command("/admin/metrics/cache-performance"),
    "# mitigate, saying what you found (§3, issues 1 and 2)",
    'hybridroute action cache-aggressive on --for 2h --reason "P95 above SLO"',
    'hybridroute action breaker-open <route> --for 10m --reason "..."',
)

HEALTH_CHECK = Drill(
    name="health-check",
    summary="Exercise 1: the daily checks find a slow route; mitigate it, then end the mitigation.",
    exercise="Exercise 1: System Health Check",
    expected="15 minutes",
    scenario=(
        "Your daily health check. Something is off today: run the checks of docs/operations.md "
        "§1 (health, SLOs, alerts, flags, actions, cost, the audit chain), look at the routing "
        "distribution and the latencies, and find what is wrong.\n\n"
        "Then mitigate it as the runbook says (§3): aggressive caching, or hold the slow "
        "route's breaker open so its traffic goes to the fallback; --reason documents what you "
        "found. Once the route is fixed, end the mitigation."
    ),
    setup=_health_setup,
    steps=(
        Step(
            name="check-and-mitigate",
            title="Run the daily checks, find the problem and mitigate it (with --reason)",
            commands=_DAILY_CHECKS,
            checked=(
                "an operator action taken after the drill started (audit trail): aggressive "
                "caching on, or the slow route's breaker held open or the route disabled, with "
                "a reason"
            ),
            check=_check_mitigated,
        ),
        Step(
            name="end-mitigation",
            title="The route is fixed: end the mitigation",
            commands=(
                "hybridroute action list",
                'hybridroute action cache-aggressive off --reason "P95 back under SLO"',
                'hybridroute action breaker-reset <route> --reason "route fixed"',
                'hybridroute action route-enable <route> --reason "route fixed"',
            ),
            checked="your mitigation is no longer among the actions in force (GET /admin/actions)",
            check=_check_mitigation_ended,
            before=_mcp_fixed,
        ),
    ),
)


# -- alert response (exercise 2) ---------------------------------------------------------------


def _bedrock_alert(run: Run) -> dict[str, Any] | None:
    for alert in run.get("/admin/alerts")["active"]:
        if alert["rule"] == ALERT_RULE and alert["labels"].get("route") == BEDROCK_ROUTE:
            found: dict[str, Any] = alert
            return found
    return None


def _alert_setup(run: Run) -> None:
    require_flags_on(run)
    existing = _bedrock_alert(run)
    if existing is not None and existing["status"] == "acknowledged":
        raise DrillError(
            f"alert {existing['id']} ({ALERT_RULE}) is still active and already acknowledged; "
            "it resolves about a minute after Direct Bedrock is back up: run the drill then"
        )
    run.inject(BEDROCK, {"outage": True})
    limit = min(run.deadline, time.monotonic() + 60.0)
    sent = failed = 0
    while True:
        status, _ = send_chat(
            run.env.gateway, "emergency", f"Is the primary database down? (drill {sent + 1})"
        )
        sent += 1
        failed += status != 200
        alert = _bedrock_alert(run)
        if alert is not None and alert["status"] == "firing":
            break
        if time.monotonic() >= limit:
            if limit >= run.deadline:
                raise DrillTimeout(f"the deadline passed before the {ALERT_RULE} alert fired")
            raise DrillError(
                f"the {ALERT_RULE} alert did not fire within 60 s of the outage; is alert "
                "evaluation running (GET /admin/alerts)?"
            )
        run.pause(0.5)
    run.facts["alert-id"] = alert["id"]
    run.say(
        f"sent {sent} emergency requests, {failed} failed. ALERT {alert['severity']}: "
        f"{alert['summary']} (id {alert['id']})"
    )


def _check_acknowledged(run: Run) -> Seen:
    alert_id = run.facts["alert-id"]
    body = run.get("/admin/alerts")
    alert = next((a for a in [*body["active"], *body["resolved"]] if a["id"] == alert_id), None)
    if alert is None or not alert.get("acknowledged_by"):
        state = "gone" if alert is None else alert["status"]
        return Seen(False, "" if state == "firing" else f"alert {alert_id} is {state}")
    audited = [r for r in run.records("alert_acknowledged") if r.data.get("alert_id") == alert_id]
    if not audited:
        return Seen(False, "acknowledged; waiting for the audit record")
    note = f" ({alert['acknowledge_note']!r})" if alert.get("acknowledge_note") else ""
    run.facts["ack-seq"] = audited[-1].seq
    return Seen(True, f"acknowledged by {alert['acknowledged_by']}{note}")


def _bedrock_fixed(run: Run) -> None:
    run.remove_fault()
    run.facts["fixed-seq"] = run.mark()
    run.say(
        "Bedrock's upstream team reports it fixed (the drill ended the outage). Find out what "
        "happened, then reset the breaker rather than wait for its probes."
    )


def _check_breaker_reset(run: Run) -> Seen:
    hint = ""
    for record in run.records("operator_action", after=run.facts["fixed-seq"]):
        if record.data.get("action") != "breaker_reset":
            continue
        if record.data.get("target") != BEDROCK_ROUTE:
            hint = f"seen a breaker reset on {record.data.get('target')}: not the failed route"
            continue
        if not reason_of(record):
            hint = (
                f"seen a breaker reset by {record.actor}, but without a reason: document the "
                "resolution (the exercise's task 5) and reset again with --reason"
            )
            continue
        run.facts["reset-seq"] = record.seq
        return Seen(
            True, f"breaker reset on {BEDROCK_ROUTE} by {record.actor}: {reason_of(record)!r}"
        )
    return Seen(False, hint)


def _check_recovered(run: Run) -> Seen:
    served = [
        r
        for r in run.records("decision", after=run.facts["reset-seq"])
        if r.data.get("operation_type") == "emergency"
        and r.data.get("route") == BEDROCK_ROUTE
        and r.data.get("outcome") == "served"
    ]
    routes = run.get("/admin/health/circuit-breakers")["routes"]
    state = next((b["state"] for b in routes if b.get("route") == BEDROCK_ROUTE), "unknown")
    if not served:
        return Seen(False, f"breaker {state}; no emergency request served by it since the reset")
    if state != "closed":
        return Seen(False, f"an emergency request was served, but the breaker is {state}")
    last = served[-1].data
    return Seen(
        True,
        f"emergency request {last.get('decision_id')} served by {BEDROCK_ROUTE} in "
        f"{last.get('latency_ms')} ms; breaker closed",
    )


ALERT_RESPONSE = Drill(
    name="alert-response",
    summary="Exercise 2: a Direct Bedrock outage fires a critical alert; acknowledge, recover.",
    exercise="Exercise 2: Alert Response",
    expected="30 minutes",
    scenario=(
        "Direct Bedrock goes down: every call to it fails, so `emergency` requests (no "
        "fallback) fail, the route's breaker opens and the critical alert "
        f"`{ALERT_RULE}` fires.\n\n"
        "Acknowledge the alert, then — once the upstream is fixed — find out what happened "
        "(error breakdown, breakers), reset the breaker saying why, and confirm recovery: "
        "emergency requests served by Direct Bedrock again."
    ),
    setup=_alert_setup,
    steps=(
        Step(
            name="acknowledge",
            title="Acknowledge the alert",
            commands=(
                curl_command("/admin/alerts"),
                f"curl -sS -X POST {AUTH} \\\n"
                '  -d \'{"by": "<your name>", "note": "looking into it"}\' \\\n'
                '  "$GATEWAY/admin/alerts/<alert-id>/acknowledge"',
            ),
            checked=(
                "the alert's status is acknowledged, by someone (GET /admin/alerts), and the "
                "acknowledgement is in the audit trail"
            ),
            check=_check_acknowledged,
        ),
        Step(
            name="reset-breaker",
            title="Investigate, then reset the breaker (with --reason)",
            commands=(
                "# diagnose (§3, issue 2)",
                curl_command("/admin/metrics/error-breakdown"),
                curl_command("/admin/health/circuit-breakers"),
                "# resolve",
                'hybridroute action breaker-reset direct_bedrock --reason "upstream fixed"',
                f'curl -sS -X POST {AUTH} -d \'{{"reason": "upstream fixed"}}\' \\\n'
                '  "$GATEWAY/admin/health/circuit-breakers/direct_bedrock/reset"',
            ),
            checked=(
                "a breaker reset of direct_bedrock with a reason, after the upstream was fixed "
                "(audit trail)"
            ),
            check=_check_breaker_reset,
            before=_bedrock_fixed,
        ),
        Step(
            name="confirm-recovery",
            title="Confirm recovery: emergency requests served by Direct Bedrock",
            commands=(
                'hybridroute route --op emergency "Is the primary database down?"',
                "hybridroute health",
                curl_command("/admin/health/circuit-breakers"),
                "# the alert resolves by itself once the route has stayed up for a minute",
                curl_command("/admin/alerts"),
            ),
            checked=(
                "an emergency request served by direct_bedrock after the reset (the audit "
                "trail's routing decisions) and its breaker closed"
            ),
            check=_check_recovered,
        ),
    ),
)


# -- emergency rollback (exercise 3) -----------------------------------------------------------


def _rollback_setup(run: Run) -> None:
    require_flags_on(run)
    run.inject(BEDROCK, {"outage": True})
    answers = burst(run, "emergency", 10, "Is the primary database down?")
    failed = sum(1 for status, _ in answers if status != 200)
    run.say(
        f"{failed} of {len(answers)} emergency requests failed: Direct Bedrock answers every "
        "call with 503 and emergencies have no fallback"
    )


def _check_rolled_back(run: Run) -> Seen:
    hint = ""
    for record in run.records("rollback"):
        level, data = record.data.get("level"), record.data
        if record.actor == "guard":
            hint = "the rollback guard rolled back by itself; this drill wants yours"
        elif level != 2:
            hint = f"seen a level-{level} rollback by {record.actor}; this drill asks for level 2"
        elif not data.get("ok"):
            failed = ", ".join(s["name"] for s in data.get("steps", []) if not s.get("ok"))
            hint = f"the level-2 rollback by {record.actor} failed ({failed}); see its report"
        elif not reason_of(record):
            hint = (
                "seen a level-2 rollback without --reason: document it (the exercise's task 4) "
                "and run it again with --reason"
            )
        else:
            on = [name for name, value in run.flags().items() if value]
            if on:
                return Seen(False, f"level-2 rollback seen, but {', '.join(on)} on again")
            run.facts["rollback-seq"] = record.seq
            return Seen(
                True,
                f"level-2 rollback by {record.actor} in {data.get('elapsed_s')} s "
                f"({reason_of(record)!r}); all five flags off",
            )
    return Seen(False, hint)


def _cause_fixed(run: Run) -> None:
    run.remove_fault()
    run.say("The cause is fixed (the drill ended the Direct Bedrock outage).")


def _check_flags_restored(run: Run) -> Seen:
    changes = run.records("flags_changed", after=run.facts["rollback-seq"])
    off = [name for name, on in run.flags().items() if not on]
    if off or not changes:
        return Seen(False, f"{len(off)} of 5 flags still off" if changes else "")
    last = changes[-1]
    return Seen(True, f"all five flags on ({last.data.get('action')} by {last.actor})")


EMERGENCY_ROLLBACK = Drill(
    name="emergency-rollback",
    summary="Exercise 3: most requests fail; roll back at level 2, restore the flags afterwards.",
    exercise="Exercise 3: Emergency Rollback",
    expected="10 minutes",
    scenario=(
        "Critical failure: Direct Bedrock fails every request and the emergencies sent to it "
        "fail — more than 50 % of requests. The runbook's answer (§4, §5) is the level-2 "
        "rollback: all flags off (MCP-only routing), then a check of the MCP route and a "
        "sample request served by it.\n\n"
        "Roll back at level 2 with a reason; once the cause is fixed, turn the flags back on."
    ),
    setup=_rollback_setup,
    steps=(
        Step(
            name="rollback-level-2",
            title="Execute the level-2 rollback (with --reason)",
            commands=(
                'hybridroute rollback --level 2 --reason "error rate above 50%"',
                f"curl -sS -X POST {AUTH} \\\n"
                '  -d \'{"level": 2, "reason": "error rate above 50%"}\' "$GATEWAY/admin/rollback"',
            ),
            checked=(
                "a `rollback` record of level 2 that succeeded, with a reason, in the audit "
                "trail (GET /admin/audit/export), and all five flags off"
            ),
            check=_check_rolled_back,
        ),
        Step(
            name="restore-flags",
            title="The cause is fixed: turn the flags back on",
            commands=(
                'hybridroute flags enable-all --reason "incident closed"',
                "# or one by one: hybridroute flags set FLAG on",
                "hybridroute flags list",
            ),
            checked="all five flags on, changed after the rollback (audit trail)",
            check=_check_flags_restored,
            before=_cause_fixed,
        ),
    ),
)


# -- configuration update (exercise 4) ---------------------------------------------------------

_SLOW_BEDROCK_MS = 2000.0


def _config_setup(run: Run) -> None:
    current = run.get("/admin/config/routing-rules")
    run.facts["start-version"] = current["version"]
    run.facts["start-matrix"] = current["matrix"]
    run.inject(BEDROCK, {"latency_ms": _SLOW_BEDROCK_MS, "jitter_ms": 0.0})
    began = time.monotonic()
    answers = burst(run, "meta_monitor", 4, "Any anomalies overnight?")
    routes = sorted({route for status, route in answers if status == 200 and route})
    run.say(
        f"4 `meta_monitor` requests took {time.monotonic() - began:.1f} s "
        f"(served by {', '.join(routes) or 'nothing'}); routing version "
        f"{current['version']} is in force"
    )


def _check_applied(run: Run) -> Seen:
    hint = ""
    for record in run.records("config_applied"):
        diff, version = record.data.get("diff") or {}, record.data.get("version")
        if record.data.get("rollback_of") is not None:
            hint = f"seen version {version}, a rollback; this step wants a change of your own"
            continue
        if not (diff.get("changed") or diff.get("added") or diff.get("removed")):
            hint = f"seen version {version} by {record.actor}, but it changed nothing"
            continue
        run.facts["applied-version"] = version
        run.facts["applied-seq"] = record.seq
        comment = f" ({record.data['comment']!r})" if record.data.get("comment") else ""
        rows = ", ".join(sorted(diff.get("changed") or {})) or "rows added or removed"
        return Seen(True, f"version {version} applied by {record.actor}{comment}: changed {rows}")
    return Seen(False, hint)


def _bedrock_fast(run: Run) -> None:
    run.remove_fault()
    run.say("Direct Bedrock is fast again (the drill put its latency back): undo your change.")


def _check_config_rolled_back(run: Run) -> Seen:
    current = run.get("/admin/config/routing-rules")
    start = run.facts["start-version"]
    if current["version"] <= run.facts["applied-version"]:
        return Seen(False)
    if current["matrix"] != run.facts["start-matrix"]:
        return Seen(
            False, f"version {current['version']} is in force, but it is not version {start}'s"
        )
    applied = run.records("config_applied", after=run.facts["applied-seq"])
    record = next((r for r in applied if r.data.get("version") == current["version"]), None)
    how = (
        f"a rollback to version {record.data['rollback_of']}"
        if record is not None and record.data.get("rollback_of") is not None
        else "a new version"
    )
    return Seen(
        True,
        f"version {current['version']} ({how}, by {current.get('author')}) restores version "
        f"{start}'s routing rules",
    )


CONFIG_UPDATE = Drill(
    name="config-update",
    summary="Exercise 4: change a routing rule (dry run first), apply it, then roll it back.",
    exercise="Exercise 4: Configuration Update",
    expected="45 minutes",
    scenario=(
        "Direct Bedrock has become slow (about 2 s an answer): operation types whose primary "
        "it is wait for it. Review the routing configuration and optimise it — for example, "
        "make `mcp` the primary of `meta_monitor` with `direct_bedrock` as its fallback — "
        "preview the change with a dry run, apply it and validate it (docs/operations.md §6).\n\n"
        "Once Bedrock is fast again, roll back to the version that was in force before."
    ),
    setup=_config_setup,
    steps=(
        Step(
            name="apply-change",
            title="Prepare a routing change, preview it (dry run), apply and validate it",
            commands=(
                curl_command("/admin/config/routing-rules") + " \\\n  > new-routing-rules.json",
                "# the edit (the runbook's example gives `standard` a 20-second budget); here:",
                "python3 -c 'import json, sys; p = sys.argv[1]; d = json.load(open(p));\n"
                'd["matrix"]["meta_monitor"].update(primary="mcp", fallback="direct_bedrock");'
                ' json.dump(d, open(p, "w"))\' \\\n  new-routing-rules.json',
                f"curl -sS -X PUT {AUTH} \\\n"
                '  -d @new-routing-rules.json "$GATEWAY/admin/config/routing-rules?dry_run=true"',
                f"curl -sS -X PUT {AUTH} \\\n"
                '  -d @new-routing-rules.json "$GATEWAY/admin/config/routing-rules"',
                curl_command("/admin/config/validate-routing"),
                "# or with the CLI",
                "hybridroute rules apply new-routing-rules.json --dry-run",
                'hybridroute rules apply new-routing-rules.json --comment "meta_monitor off slow '
                'Bedrock"',
                "hybridroute rules validate",
            ),
            checked=(
                "a new routing version applied after the drill started that changes the matrix "
                "(audit trail)"
            ),
            check=_check_applied,
            note=(
                "The dry run changes nothing and leaves no record, so the drill cannot see it: "
                "do it anyway, and read the diff and the decisions it previews before applying."
            ),
        ),
        Step(
            name="roll-back",
            title="Roll back to version <start-version>",
            commands=(
                "hybridroute rules versions",
                'hybridroute rules rollback <start-version> --reason "Bedrock is fast again"',
                "hybridroute rules validate",
            ),
            checked=(
                "a later version is in force whose routing rules are those of the version in "
                "force when the drill started (GET /admin/config/routing-rules)"
            ),
            check=_check_config_rolled_back,
            before=_bedrock_fast,
        ),
    ),
)

DRILLS: dict[str, Drill] = {
    d.name: d for d in (HEALTH_CHECK, ALERT_RESPONSE, EMERGENCY_ROLLBACK, CONFIG_UPDATE)
}
"""The drills by name, in the seed guide's order."""
