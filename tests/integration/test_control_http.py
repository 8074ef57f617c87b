"""What the control endpoints do to a running gateway, seen over loopback HTTP.

Each test starts a gateway with the three role tokens (viewer, operator, admin) on the session's
simulators and checks an endpoint's effect where it shows: which route serves the next request
(`x-hybridroute-route`), what the simulators counted, what the other admin views say, and what
the audit trail recorded. Flags, routing-rule versions, SLO targets, the rollback levels and the
operator actions (maintenance, route isolation, breakers, aggressive caching, expiry) are
covered; persistence is checked on SQLite by restarting a gateway on the same file.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from hybridroute.signals import Flag
from hybridroute.types import BUILTIN_OPERATION_TYPES
from tests.integration.control_helpers import (
    Admin,
    audit_records,
    chat,
    config_data,
    serve,
    served_by,
    use_tokens,
    wait_for_audit,
)
from tests.loopback import GatewayFactory, RunningGateway, Simulator, wait_for

FLAG_NAMES = [f.value for f in Flag]
ALL_ON = dict.fromkeys(FLAG_NAMES, True)
ALL_OFF = dict.fromkeys(FLAG_NAMES, False)
FLAGS = "/admin/feature-flags/bedrock"
RULES = "/admin/config/routing-rules"
ACTIONS = "/admin/actions"
EMERGENCY = {"X-Operation-Type": "emergency"}


@dataclass
class Control:
    gateway: RunningGateway
    viewer: Admin
    operator: Admin
    admin: Admin

    @classmethod
    def of(cls, gateway: RunningGateway) -> Control:
        return cls(
            gateway,
            Admin.of(gateway, "viewer"),
            Admin.of(gateway, "operator"),
            Admin.of(gateway, "admin"),
        )


@pytest.fixture
def ctl(start_gateway: GatewayFactory, monkeypatch: pytest.MonkeyPatch) -> Control:
    return Control.of(start_gateway(use_tokens(monkeypatch)))


class Counts:
    """Requests the simulators answered since this was made."""

    def __init__(self, bedrock: Simulator, mcp: Simulator) -> None:
        self._sims = {"direct_bedrock": bedrock, "mcp": mcp}
        self._base = {route: sim.requests() for route, sim in self._sims.items()}

    def __call__(self) -> dict[str, int]:
        return {route: sim.requests() - self._base[route] for route, sim in self._sims.items()}


def _with_row(body: dict[str, Any], op: str, **fields: Any) -> dict[str, Any]:
    """The GET body of the routing rules with one row's fields changed."""
    edited = copy.deepcopy(body)
    edited["matrix"][op].update(fields)
    return edited


STANDARD_TO_BEDROCK = {"primary": "direct_bedrock", "fallback": "mcp"}


# -- 2. flags ----------------------------------------------------------------------------------


def test_flags_get_shows_the_five_flags_the_mode_and_no_change_yet(ctl: Control):
    body = ctl.viewer.get(FLAGS)
    assert body == {"flags": ALL_ON, "mode": "hybrid", "last_change": None}
    assert list(body["flags"]) == FLAG_NAMES


def test_the_seeds_curl_body_without_content_type_updates_a_flag_and_is_audited(ctl: Control):
    seed = b'{"flag": "ENABLE_DIRECT_BEDROCK_FALLBACK", "enabled": false}'
    response = ctl.operator.call("POST", f"{FLAGS}/update", raw=seed)
    assert "content-type" not in response.request.headers
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["changed"] == ["ENABLE_DIRECT_BEDROCK_FALLBACK"]
    assert body["previous"] == ALL_ON
    expected = {**ALL_ON, "ENABLE_DIRECT_BEDROCK_FALLBACK": False}
    assert body["flags"] == expected
    after = ctl.viewer.get(FLAGS)
    assert after["flags"] == expected
    assert after["mode"] == "hybrid"
    assert after["last_change"]["by"] == "operator-bot"

    (record,) = audit_records(ctl.admin, "flags_changed")
    assert record["actor"] == "operator-bot"
    assert record["data"]["old"] == ALL_ON
    assert record["data"]["new"] == expected
    assert record["data"]["changed"] == ["ENABLE_DIRECT_BEDROCK_FALLBACK"]


def test_an_unknown_flag_is_refused_with_the_five_names(ctl: Control):
    error = ctl.operator.error(
        "POST", f"{FLAGS}/update", {"flag": "ENABLE_TURBO", "enabled": False}, 400
    )
    assert "ENABLE_TURBO" in error["message"]
    for name in FLAG_NAMES:
        assert name in error["message"]
    not_bool = ctl.operator.error(
        "POST", f"{FLAGS}/update", {"flag": FLAG_NAMES[0], "enabled": "no"}, 400
    )
    assert "true or false" in not_bool["message"]
    assert ctl.viewer.get(FLAGS)["flags"] == ALL_ON
    assert audit_records(ctl.admin, "flags_changed") == []


def test_disable_all_sends_an_emergency_to_mcp_and_is_audited(
    ctl: Control, bedrock_sim: Simulator, mcp_sim: Simulator
):
    assert served_by(chat(ctl.gateway, "emergency")) == "direct_bedrock"  # before: Bedrock
    body = ctl.operator.post(f"{FLAGS}/disable-all", {"reason": "bedrock incident"})
    assert body["flags"] == ALL_OFF
    assert body["mode"] == "mcp_only"
    assert ctl.viewer.get(FLAGS)["mode"] == "mcp_only"

    counts = Counts(bedrock_sim, mcp_sim)
    response = chat(ctl.gateway, "emergency", headers=EMERGENCY)
    assert served_by(response) == "mcp"
    assert counts() == {"direct_bedrock": 0, "mcp": 1}

    (record,) = audit_records(ctl.admin, "flags_changed")
    assert record["actor"] == "operator-bot"
    assert record["data"]["action"] == "disable_all"
    assert record["data"]["reason"] == "bedrock incident"
    assert record["data"]["old"] == ALL_ON
    assert record["data"]["new"] == ALL_OFF


def test_flags_and_actions_in_force_survive_a_restart_on_sqlite(
    bedrock_sim: Simulator,
    mcp_sim: Simulator,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
):
    def on_sqlite(data: dict[str, Any]) -> None:
        data["storage"] = {
            "backend": "sqlite",
            "sqlite_path": str(tmp_path / "control.sqlite3"),
            "flush_interval_ms": 20,
        }

    data = config_data(bedrock_sim, mcp_sim, use_tokens(monkeypatch), on_sqlite)
    flag = {"flag": "ENABLE_BEDROCK_SUPPORT_MODE", "enabled": False, "reason": "drill"}
    with serve(data) as first:
        Admin.of(first, "operator").post(f"{FLAGS}/update", flag)
        isolate = {"action": "route_disable", "route": "direct_bedrock", "reason": "key leak"}
        Admin.of(first, "operator").post(ACTIONS, isolate)
    with serve(data) as second:
        ctl = Control.of(second)
        body = ctl.viewer.get(FLAGS)
        assert body["flags"] == {**ALL_ON, "ENABLE_BEDROCK_SUPPORT_MODE": False}
        assert body["mode"] == "mcp_only"
        assert body["last_change"]["by"] == "operator-bot"
        assert body["last_change"]["reason"] == "drill"
        # and the decisions obey it: an emergency goes to MCP
        assert served_by(chat(second, "emergency")) == "mcp"
        (record,) = audit_records(ctl.admin, "flags_changed")  # the trail survived too
        assert record["data"]["new"]["ENABLE_BEDROCK_SUPPORT_MODE"] is False
        # an isolation in force is re-applied at start, not quietly undone
        actions = ctl.viewer.get(ACTIONS)
        assert actions["disabled_routes"] == ["direct_bedrock"]
        assert [(a["action"], a["reason"]) for a in actions["active"]] == [
            ("route_disable", "key leak")
        ]


# -- 3. routing rules --------------------------------------------------------------------------


def test_routing_rules_are_version_1_with_the_configured_matrix(ctl: Control):
    body = ctl.viewer.get(RULES)
    assert body["version"] == 1
    assert body["author"] == "config-file"
    assert set(body["matrix"]) == set(BUILTIN_OPERATION_TYPES)
    assert body["matrix"]["standard"]["primary"] == "mcp"
    assert body["matrix"]["standard"]["fallback"] == "direct_bedrock"
    assert body["matrix"]["emergency"]["fallback"] is None


def test_a_put_row_change_is_version_2_and_routes_the_next_request(
    ctl: Control, bedrock_sim: Simulator, mcp_sim: Simulator
):
    assert served_by(chat(ctl.gateway, "standard")) == "mcp"
    current = ctl.viewer.get(RULES)
    body = ctl.admin.put(RULES, _with_row(current, "standard", **STANDARD_TO_BEDROCK))
    assert body["version"] == 2
    assert body["applied"] is True
    assert body["author"] == "admin-bot"
    assert body["diff"]["changed"] == {
        "standard": {"fallback": ["direct_bedrock", "mcp"], "primary": ["mcp", "direct_bedrock"]}
    }

    counts = Counts(bedrock_sim, mcp_sim)
    assert served_by(chat(ctl.gateway, "standard")) == "direct_bedrock"
    assert counts() == {"direct_bedrock": 1, "mcp": 0}
    after = ctl.viewer.get(RULES)
    assert after["version"] == 2
    assert after["matrix"]["standard"]["primary"] == "direct_bedrock"

    (record,) = [r for r in audit_records(ctl.admin, "config_applied") if r["data"]["version"] == 2]
    assert record["actor"] == "admin-bot"
    assert record["data"]["previous_version"] == 1


def test_a_dry_run_applies_nothing_and_previews_the_change(ctl: Control):
    current = ctl.viewer.get(RULES)
    proposal = _with_row(current, "standard", **STANDARD_TO_BEDROCK)
    proposal["samples"] = [{"operation_type": "standard"}, {"operation_type": "emergency"}]
    body = ctl.admin.put(f"{RULES}?dry_run=true", proposal)
    assert body["dry_run"] is True
    assert body["valid"] is True
    assert body["base_version"] == 1
    assert body["diff"]["changed"] == {
        "standard": {"fallback": ["direct_bedrock", "mcp"], "primary": ["mcp", "direct_bedrock"]}
    }
    assert body["current"]["rows"]["standard"]["routes"] == ["mcp", "direct_bedrock"]
    assert body["proposed"]["rows"]["standard"]["routes"] == ["direct_bedrock", "mcp"]
    samples = body["proposed"]["samples"]
    assert [s["operation_type"] for s in samples] == ["standard", "emergency"]
    assert samples[0]["routes"] == ["direct_bedrock", "mcp"]
    assert samples[1]["routes"] == ["direct_bedrock"]
    assert body["current"]["samples"][0]["routes"] == ["mcp", "direct_bedrock"]

    # nothing applied
    assert ctl.viewer.get(RULES)["version"] == 1
    assert [v["version"] for v in ctl.viewer.get(f"{RULES}/versions")["versions"]] == [1]
    assert served_by(chat(ctl.gateway, "standard")) == "mcp"
    assert [r["data"]["version"] for r in audit_records(ctl.admin, "config_applied")] == [1]


def test_a_put_based_on_a_stale_version_is_a_conflict(ctl: Control):
    stale = ctl.viewer.get(RULES)  # version 1, with "version": 1 in the body
    ctl.admin.put(RULES, _with_row(stale, "standard", **STANDARD_TO_BEDROCK))
    error = ctl.admin.error("PUT", RULES, _with_row(stale, "background", priority="medium"), 409)
    assert error["code"] == "conflict"
    assert "version 1" in error["message"]
    assert "version 2" in error["message"]
    assert ctl.viewer.get(RULES)["version"] == 2
    assert ctl.viewer.get(RULES)["matrix"]["background"]["priority"] == "low"


def test_invalid_routing_rules_are_refused_listing_every_problem(ctl: Control):
    current = ctl.viewer.get(RULES)
    bad_fields = _with_row(current, "standard", priority="urgent")
    bad_fields["matrix"]["background"]["latency_budget_ms"] = -5
    error = ctl.admin.error("PUT", RULES, bad_fields, 400)
    assert "2 problems" in error["message"]
    assert "matrix.standard.priority" in error["message"]
    assert "matrix.background.latency_budget_ms" in error["message"]

    unknown_route = _with_row(current, "standard", primary="direct_bedrok")
    del unknown_route["matrix"]["background"]
    error = ctl.admin.error("PUT", RULES, unknown_route, 400)
    assert "unknown route 'direct_bedrok'" in error["message"]
    assert "background" in error["message"]  # the missing operation type is named

    unknown_field = _with_row(current, "emergency", colour="red")
    error = ctl.admin.error("PUT", RULES, unknown_field, 400)
    assert "matrix.emergency.colour" in error["message"]

    no_matrix = ctl.admin.error("PUT", RULES, {"rules": {}}, 400)
    assert "matrix" in no_matrix["message"]
    assert ctl.viewer.get(RULES)["version"] == 1
    assert [v["version"] for v in ctl.viewer.get(f"{RULES}/versions")["versions"]] == [1]


def test_versions_rollback_and_validate_routing(ctl: Control):
    v1 = ctl.viewer.get(RULES)
    ctl.admin.put(
        RULES,
        {**_with_row(v1, "standard", **STANDARD_TO_BEDROCK), "comment": "standard on bedrock"},
    )
    assert served_by(chat(ctl.gateway, "standard")) == "direct_bedrock"

    listing = ctl.viewer.get(f"{RULES}/versions")
    assert listing["current"] == 2
    assert [(v["version"], v["author"]) for v in listing["versions"]] == [
        (2, "admin-bot"),
        (1, "config-file"),
    ]
    assert listing["versions"][0]["comment"] == "standard on bedrock"
    first = ctl.viewer.get(f"{RULES}/versions/1")
    assert first["version"] == 1
    assert first["matrix"] == v1["matrix"]
    assert ctl.viewer.error("GET", f"{RULES}/versions/99", None, 404)["code"] == "not_found"

    restored = ctl.operator.post("/admin/config/rollback", {"version": 1})
    assert restored["version"] == 3
    assert restored["restored_from"] == 1
    assert restored["author"] == "operator-bot"
    now = ctl.viewer.get(RULES)
    assert now["version"] == 3
    assert now["matrix"] == v1["matrix"]
    assert served_by(chat(ctl.gateway, "standard")) == "mcp"
    (record,) = [r for r in audit_records(ctl.admin, "config_applied") if r["data"]["version"] == 3]
    assert record["data"]["rollback_of"] == 1

    missing = ctl.operator.error("POST", "/admin/config/rollback", {"version": 42}, 404)
    assert "42" in missing["message"]
    ctl.operator.error("POST", "/admin/config/rollback", {}, 400)

    check = ctl.viewer.get("/admin/config/validate-routing")
    assert check["valid"] is True
    assert check["issues"] == []
    assert check["version"] == 3
    assert check["deviating_rows"] == []
    assert set(check["rows"]) == set(v1["matrix"])
    standard = check["rows"]["standard"]
    assert standard["primary"] == "mcp"
    assert standard["fallback"] == "direct_bedrock"
    assert standard["routes"] == ["mcp", "direct_bedrock"]
    assert check["rows"]["emergency"]["routes"] == ["direct_bedrock"]


def test_a_hot_swap_does_not_drop_a_request_in_flight(ctl: Control, bedrock_sim: Simulator):
    bedrock_sim.set(latency_ms=1000)
    admission = ctl.gateway.runtime.admission["direct_bedrock"]
    with ThreadPoolExecutor(max_workers=1) as pool:
        started = time.monotonic()
        slow = pool.submit(chat, ctl.gateway, "emergency", "slow one")
        wait_for(lambda: admission.in_flight == 1, timeout=5)  # at the simulator now
        current = ctl.viewer.get(RULES)
        swapped = ctl.admin.put(RULES, _with_row(current, "emergency", primary="mcp"))
        assert swapped["version"] == 2
        assert not slow.done()  # the swap happened while the request was in flight
        # the next emergency decision reads the new matrix
        assert served_by(chat(ctl.gateway, "emergency")) == "mcp"
        response = slow.result(timeout=10)
    assert served_by(response) == "direct_bedrock"  # decided before the swap, served
    assert time.monotonic() - started >= 0.9
    assert response.json()["choices"][0]["message"]["content"]


# -- 4. SLO thresholds -------------------------------------------------------------------------


def _targets(ctl: Control) -> tuple[float, float]:
    slos = ctl.viewer.get("/admin/slo")["slos"]
    return slos["generation_p95"]["target"], slos["error_rate"]["target"]


def test_the_seeds_slo_threshold_body_sets_the_targets_and_is_audited(ctl: Control):
    moved = ctl.admin.put(
        "/admin/config/slo-thresholds", {"slo": {"generation_p95_ms": 900, "error_rate": 0.05}}
    )
    assert moved["slo"]["generation_p95_ms"] == 900
    assert _targets(ctl) == (900, 0.05)

    seed = b'{"p95_latency_ms": 1500, "error_rate_percent": 1.0}'
    response = ctl.admin.call("PUT", "/admin/config/slo-thresholds", raw=seed)
    assert response.status_code == 200, response.text
    assert response.json()["slo"]["generation_p95_ms"] == 1500
    assert response.json()["slo"]["error_rate"] == pytest.approx(0.01)
    p95, error_rate = _targets(ctl)
    assert p95 == 1500
    assert error_rate == pytest.approx(0.01)

    records = audit_records(ctl.admin, "thresholds_changed")
    assert [r["actor"] for r in records] == ["admin-bot", "admin-bot"]
    assert records[-1]["data"]["slo"]["generation_p95_ms"] == 1500
    assert records[-1]["data"]["slo"]["error_rate"] == pytest.approx(0.01)


@pytest.mark.parametrize(
    ("body", "named"),
    [
        ({"p95_latency_ms": -1}, "generation_p95_ms"),
        ({"p95_latency_ms": "fast"}, "p95_latency_ms"),
        ({"error_rate_percent": 150}, "error_rate"),
        ({"error_rate_percent": True}, "error_rate_percent"),
        ({"slo": {"window_s": 1}}, "window_s"),
        ({"p95_latency": 1500}, "p95_latency_ms"),
        ({}, "p95_latency_ms"),
    ],
)
def test_invalid_slo_thresholds_are_refused_and_change_nothing(
    ctl: Control, body: dict[str, Any], named: str
):
    before = ctl.viewer.get("/admin/slo")["slos"]
    error = ctl.admin.error("PUT", "/admin/config/slo-thresholds", body, 400)
    assert named in error["message"]
    assert ctl.viewer.get("/admin/slo")["slos"] == before
    assert audit_records(ctl.admin, "thresholds_changed") == []


# -- 5. rollback -------------------------------------------------------------------------------


def _steps(report: dict[str, Any]) -> list[tuple[str, bool]]:
    return [(s["name"], s["ok"]) for s in report["steps"]]


def test_level_1_rollback_turns_every_flag_off(ctl: Control):
    report = ctl.operator.post("/admin/rollback", {"level": 1, "reason": "drill"})
    assert report["level"] == 1
    assert report["ok"] is True
    assert report["by"] == "operator-bot"
    assert _steps(report) == [("disable_all_flags", True)]
    assert 0 <= report["elapsed_s"] < 5
    assert report["validation"]["flags"] == ALL_OFF
    assert report["validation"]["mcp_only"] is True
    assert ctl.viewer.get(FLAGS)["flags"] == ALL_OFF
    (record,) = audit_records(ctl.admin, "rollback")
    assert record["actor"] == "operator-bot"
    assert record["data"]["level"] == 1


def test_admin_records_are_still_audited_after_served_requests(ctl: Control):
    """Decision records carry enum values like the outcome `ok`; a later admin record with an
    equal plain string as a key (the rollback report's `ok`) must still be written."""
    assert served_by(chat(ctl.gateway, "standard")) == "mcp"
    assert audit_records(ctl.admin, "rollback") == []  # the decision records are written now
    report = ctl.operator.post("/admin/rollback", {"level": 1})
    assert report["ok"] is True
    (record,) = audit_records(ctl.admin, "rollback")
    assert record["data"]["ok"] is True
    integrity = ctl.viewer.get("/admin/audit/trail-integrity")
    assert integrity["ok"] is True, integrity


def test_level_2_rollback_checks_mcp_and_serves_a_sample_by_mcp(
    ctl: Control, bedrock_sim: Simulator, mcp_sim: Simulator
):
    counts = Counts(bedrock_sim, mcp_sim)
    report = ctl.operator.post("/admin/rollback", {"level": 2})
    assert _steps(report) == [
        ("disable_all_flags", True),
        ("check_mcp_health", True),
        ("sample_request", True),
    ]
    assert report["ok"] is True
    sample = report["steps"][2]["detail"]
    assert "served by mcp" in sample
    assert counts()["direct_bedrock"] == 0
    assert counts()["mcp"] >= 1  # the sample request reached the MCP simulator
    assert report["elapsed_s"] >= 0
    validation = report["validation"]
    assert validation["mcp_only"] is True
    assert validation["health"]["mcp"]["status"] == "healthy"
    assert {"window_s", "requests", "error_rate", "p95_ms"} <= set(validation)


def test_level_3_rollback_restores_a_version_and_needs_one(ctl: Control):
    current = ctl.viewer.get(RULES)
    ctl.admin.put(RULES, _with_row(current, "standard", **STANDARD_TO_BEDROCK))
    assert served_by(chat(ctl.gateway, "standard")) == "direct_bedrock"

    error = ctl.operator.error("POST", "/admin/rollback", {"level": 3}, 400)
    assert "version" in error["message"]
    assert "/admin/config/routing-rules/versions" in error["message"]
    bad_level = ctl.operator.error("POST", "/admin/rollback", {"level": 4}, 400)
    assert "1, 2 or 3" in bad_level["message"]
    unknown = ctl.operator.error("POST", "/admin/rollback", {"level": 3, "version": 99}, 404)
    assert "no routing configuration version 99" in unknown["message"]
    assert ctl.viewer.get(RULES)["version"] == 2
    assert audit_records(ctl.admin, "rollback") == []  # nothing was attempted

    report = ctl.operator.post("/admin/rollback", {"level": 3, "version": 1})
    assert _steps(report) == [
        ("restore_config_version", True),
        ("check_mcp_health", True),
        ("sample_request", True),
    ]
    assert "version 1 restored as version 3" in report["steps"][0]["detail"]
    assert report["elapsed_s"] >= 0
    assert report["validation"]["flags"] == ALL_ON  # a level 3 leaves the flags alone
    after = ctl.viewer.get(RULES)
    assert after["version"] == 3
    assert after["matrix"] == current["matrix"]
    assert served_by(chat(ctl.gateway, "standard")) == "mcp"


# -- 6. operator actions -----------------------------------------------------------------------


def _act(ctl: Control, **body: Any) -> dict[str, Any]:
    result: dict[str, Any] = ctl.operator.post(ACTIONS, body)
    return result


def test_maintenance_refuses_standard_work_and_serves_emergencies(ctl: Control):
    body = _act(ctl, action="maintenance", enabled=True, reason="db migration")
    assert body["maintenance"] is True
    refused = chat(ctl.gateway, "standard")
    assert refused.status_code == 503, refused.text
    assert refused.json()["error"]["code"] == "maintenance"
    assert int(refused.headers["retry-after"]) >= 1
    assert served_by(chat(ctl.gateway, "emergency")) == "direct_bedrock"
    assert ctl.viewer.get(ACTIONS)["maintenance"] is True

    assert _act(ctl, action="maintenance", enabled=False)["maintenance"] is False
    assert served_by(chat(ctl.gateway, "standard")) == "mcp"
    assert ctl.viewer.get(ACTIONS)["active"] == []


def test_a_disabled_route_is_never_tried(ctl: Control, bedrock_sim: Simulator, mcp_sim: Simulator):
    body = _act(ctl, action="route_disable", route="direct_bedrock", reason="key leak")
    assert body["disabled_routes"] == ["direct_bedrock"]
    counts = Counts(bedrock_sim, mcp_sim)
    assert served_by(chat(ctl.gateway, "infrastructure")) == "mcp"
    refused = chat(ctl.gateway, "emergency")
    assert refused.status_code == 503, refused.text
    assert refused.json()["error"]["code"] == "routes_disabled"
    assert counts() == {"direct_bedrock": 0, "mcp": 1}
    (active,) = ctl.viewer.get(ACTIONS)["active"]
    assert (active["action"], active["target"], active["by"]) == (
        "route_disable",
        "direct_bedrock",
        "operator-bot",
    )

    assert _act(ctl, action="route_enable", route="direct_bedrock")["disabled_routes"] == []
    assert served_by(chat(ctl.gateway, "emergency")) == "direct_bedrock"
    assert counts()["direct_bedrock"] == 1


def _breaker_state(ctl: Control, route: str) -> str:
    routes = ctl.viewer.get("/admin/health/circuit-breakers")["routes"]
    (entry,) = [r for r in routes if r["route"] == route]
    state: str = entry["state"]
    return state


def test_a_breaker_is_forced_open_and_reset_by_path(ctl: Control):
    base = "/admin/health/circuit-breakers/direct_bedrock"
    assert _breaker_state(ctl, "direct_bedrock") == "closed"
    opened = ctl.operator.post(f"{base}/force-open", {"reason": "provider incident"})
    assert opened["breaker"] == {"route": "direct_bedrock", "state": "open"}
    assert _breaker_state(ctl, "direct_bedrock") == "open"
    assert ctl.viewer.get(ACTIONS)["forced_open_breakers"] == ["direct_bedrock"]
    assert served_by(chat(ctl.gateway, "infrastructure")) == "mcp"  # its fallback

    reset = ctl.operator.post(f"{base}/reset")
    assert reset["breaker"] == {"route": "direct_bedrock", "state": "closed"}
    assert _breaker_state(ctl, "direct_bedrock") == "closed"
    assert ctl.viewer.get(ACTIONS)["forced_open_breakers"] == []
    assert served_by(chat(ctl.gateway, "infrastructure")) == "direct_bedrock"

    unknown = ctl.operator.error("POST", "/admin/health/circuit-breakers/nowhere/reset", {}, 400)
    assert "direct_bedrock" in unknown["message"]
    timed_reset = ctl.operator.error("POST", f"{base}/reset", {"for_s": 30}, 400)
    assert "makes no sense for breaker_reset" in timed_reset["message"]
    negative = ctl.operator.error("POST", f"{base}/force-open", {"for_s": -1}, 400)
    assert "for_s" in negative["message"]
    assert _breaker_state(ctl, "direct_bedrock") == "closed"


def test_actions_with_for_s_end_by_themselves_and_are_audited(ctl: Control):
    _act(ctl, action="maintenance", enabled=True, for_s=1)
    opened = ctl.operator.post(
        "/admin/health/circuit-breakers/mcp/force-open", {"for_s": 1, "reason": "drill"}
    )
    assert opened["breaker"]["state"] == "open"
    active = {a["action"]: a for a in opened["active"]}
    assert set(active) == {"maintenance", "breaker_open"}
    for entry in active.values():
        assert entry["expires_at"] == pytest.approx(entry["at"] + 1)
    assert chat(ctl.gateway, "standard").status_code == 503

    took = wait_for(lambda: ctl.viewer.get(ACTIONS)["active"] == [], timeout=3.5)
    assert took <= 3.0
    after = ctl.viewer.get(ACTIONS)
    assert after["maintenance"] is False
    assert after["forced_open_breakers"] == []
    assert _breaker_state(ctl, "mcp") != "open"  # its hold is over: half-open, probing
    assert served_by(chat(ctl.gateway, "standard")) == "mcp"
    records = wait_for_audit(ctl.admin, "action_expired")
    assert sorted((r["actor"], r["data"]["action"], r["data"]["target"]) for r in records) == [
        ("gateway", "breaker_open", "mcp"),
        ("gateway", "maintenance", None),
    ]
    assert {r["data"]["by"] for r in records} == {"operator-bot"}


BAD_ACTIONS: list[tuple[dict[str, Any], Callable[[str], bool]]] = [
    ({"action": "reboot"}, lambda m: "unknown action 'reboot'" in m and "maintenance" in m),
    ({"action": "route_disable"}, lambda m: "needs 'route'" in m and "direct_bedrock" in m),
    (
        {"action": "route_disable", "route": "nowhere"},
        lambda m: "needs 'route'" in m and "'nowhere'" in m,
    ),
    (
        {"action": "route_disable", "route": "mcp", "enabled": True},
        lambda m: "takes no 'enabled'" in m,
    ),
    ({"action": "maintenance"}, lambda m: "needs 'enabled'" in m),
    ({"action": "maintenance", "enabled": True, "for_s": -5}, lambda m: "for_s" in m),
    ({"action": "maintenance", "enabled": True, "for_s": "soon"}, lambda m: "for_s" in m),
    ({"action": "cache_aggressive", "route": "mcp", "enabled": True}, lambda m: "route" in m),
    ({"route": "mcp"}, lambda m: "send an action" in m),
]


@pytest.mark.parametrize(("body", "helpful"), BAD_ACTIONS, ids=lambda v: str(v)[:40])
def test_a_bad_action_is_refused_with_a_helpful_message(
    ctl: Control, body: dict[str, Any], helpful: Callable[[str], bool]
):
    error = ctl.operator.error("POST", ACTIONS, body, 400)
    assert helpful(error["message"]), error["message"]
    snapshot = ctl.viewer.get(ACTIONS)
    assert snapshot["active"] == []
    assert snapshot["disabled_routes"] == []
    assert snapshot["maintenance"] is False
    assert audit_records(ctl.admin, "operator_action") == []


def test_aggressive_caching_shows_in_the_cache_and_actions_views(ctl: Control):
    assert ctl.viewer.get("/admin/cache")["aggressive_always"] is False
    body = _act(ctl, action="cache_aggressive", enabled=True, reason="cost emergency")
    assert body["cache_aggressive"] is True
    assert ctl.viewer.get("/admin/cache")["aggressive_always"] is True
    actions = ctl.viewer.get(ACTIONS)
    assert actions["cache_aggressive"] is True
    assert [(a["action"], a["reason"]) for a in actions["active"]] == [
        ("cache_aggressive", "cost emergency")
    ]

    _act(ctl, action="cache_aggressive", enabled=False)
    assert ctl.viewer.get("/admin/cache")["aggressive_always"] is False
    assert ctl.viewer.get(ACTIONS)["cache_aggressive"] is False
    assert ctl.viewer.get(ACTIONS)["active"] == []
    records = audit_records(ctl.admin, "operator_action")
    assert [(r["data"]["action"], r["data"]["enabled"]) for r in records] == [
        ("cache_aggressive", True),
        ("cache_aggressive", False),
    ]
