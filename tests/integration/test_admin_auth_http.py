"""Who may call the admin API, over loopback HTTP.

The gateway gets three role tokens through `admin.tokens` (`token: env:VAR`, set with
monkeypatch) plus an expired one given by its SHA-256. Every admin route of the route table
(`DataPlane._table` and `DataPlane._patterns`) is called without a token, with a wrong one, with
the expired one, with the role just below the one it needs, and with the role it needs. The
expected role of each route is written down here; a route added to the table without an entry
here fails `test_every_admin_route_of_the_route_table_has_an_expected_role`.

Also: the `HYBRIDROUTE_ADMIN_TOKEN` bootstrap token, the tokenless loopback default, the rate
limit (per token and per client for failed attempts), and that a presented token appears
neither in the gateway's logs nor in its audit trail. Access from a non-loopback address is not
testable over loopback and is left out.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Iterator
from dataclasses import dataclass

import httpx2 as httpx
import pytest

from hybridroute.api.app import DataPlane
from tests.integration.control_helpers import (
    NAMES,
    ROLES,
    TOKENS,
    Admin,
    audit_records,
    config_data,
    serve,
    use_tokens,
)
from tests.loopback import GatewayFactory, RunningGateway, Simulator

EXPIRED_TOKEN = "hr-test-retired-admin-token-77ab"
EXPIRED_AT = "2020-01-31T00:00:00Z"
EXPIRED_ENTRY = {
    "name": "retired-admin",
    "role": "admin",
    "sha256": hashlib.sha256(EXPIRED_TOKEN.encode()).hexdigest(),
    "expires": EXPIRED_AT,
}
EXPIRING_TOKEN = "hr-test-contractor-token-51d0"
EXPIRING_ENTRY = {  # still valid: it expires in 2099
    "name": "contractor",
    "role": "operator",
    "sha256": hashlib.sha256(EXPIRING_TOKEN.encode()).hexdigest(),
    "expires": "2099-12-31T23:59:59+00:00",
}
# A body every write handler refuses (an unknown field) or ignores, so calling a route with
# the role it needs proves the handler was reached without changing anything much.
PROBE_BODY = {"hybridroute_auth_probe": True}


@dataclass(frozen=True)
class AdminRoute:
    method: str
    path: str  # a concrete path (parameterised routes with a sample parameter)
    role: str


# The role every admin route needs (auth.py: viewer reads; operator changes flags, acknowledges
# alerts, rolls back, takes operator actions; admin changes routing config and thresholds and
# erases data).
_VIEWER_GETS = (
    "/admin/health/status",
    "/admin/cost",
    "/admin/cache",
    "/admin/metrics/routing-distribution",
    "/admin/metrics/provider-latencies",
    "/admin/metrics/cache-performance",
    "/admin/metrics/error-breakdown",
    "/admin/metrics/timeline",
    "/admin/slo",
    "/admin/health/circuit-breakers",
    "/admin/alerts",
    "/admin/reports/daily",
    "/admin/reports/weekly",
    "/admin/feature-flags/bedrock",
    "/admin/config/routing-rules",
    "/admin/config/routing-rules/versions",
    "/admin/config/routing-rules/versions/1",
    "/admin/config/validate-routing",
    "/admin/audit/trail-integrity",
    "/admin/audit/export",
    "/admin/compliance/gdpr-status",
    "/admin/compliance/data-residency",
    "/admin/actions",
    "/admin/whoami",
)
_OPERATOR_POSTS = (
    "/admin/actions",
    "/admin/cache/invalidate",
    "/admin/feature-flags/bedrock/update",
    "/admin/feature-flags/bedrock/disable-all",
    "/admin/feature-flags/bedrock/enable-all",
    "/admin/config/rollback",
    "/admin/rollback",
    "/admin/alerts/latency_p95_critical/acknowledge",
    "/admin/health/circuit-breakers/direct_bedrock/reset",
    "/admin/health/circuit-breakers/direct_bedrock/force-open",
)
ADMIN_ROUTES = (
    *(AdminRoute("GET", p, "viewer") for p in _VIEWER_GETS),
    *(AdminRoute("POST", p, "operator") for p in _OPERATOR_POSTS),
    AdminRoute("PUT", "/admin/config/routing-rules", "admin"),
    AdminRoute("PUT", "/admin/config/slo-thresholds", "admin"),
    AdminRoute("POST", "/admin/compliance/erasure", "admin"),
    AdminRoute("POST", "/admin/compliance/purge", "admin"),
)


def _ids(route: AdminRoute) -> str:
    return f"{route.method} {route.path}"


def _body(route: AdminRoute) -> object:
    return None if route.method == "GET" else PROBE_BODY


@pytest.fixture(scope="module")
def guarded(bedrock_sim: Simulator, mcp_sim: Simulator) -> Iterator[RunningGateway]:
    """One gateway for the module with the three role tokens, the expired one, and room for
    many requests (no test here depends on another's changes)."""
    with pytest.MonkeyPatch.context() as monkeypatch:
        tokens = use_tokens(
            monkeypatch,
            extra=[EXPIRED_ENTRY, EXPIRING_ENTRY],
            rate_limit_per_minute=100_000,
        )
        with serve(config_data(bedrock_sim, mcp_sim, tokens)) as gateway:
            yield gateway


# -- the route table -------------------------------------------------------------------------


def test_every_admin_route_of_the_route_table_has_an_expected_role():
    plane = DataPlane(lambda: None, 1024)
    table = {
        (method, path)
        for path, methods in plane._table.items()
        if path.startswith("/admin")
        for method in methods
    }
    expected_exact = {
        (r.method, r.path)
        for r in ADMIN_ROUTES
        if not any(p.match(r.path) for p, _ in plane._patterns)
    }
    assert table == expected_exact, "the admin routes of app.py and of this test differ"
    for pattern, methods in plane._patterns:
        for method in methods:
            covered = [r for r in ADMIN_ROUTES if r.method == method and pattern.match(r.path)]
            assert covered, f"no test entry for {method} {pattern.pattern}"
    # and the pattern entries really are patterned paths (not exact ones)
    for route in ADMIN_ROUTES:
        assert (route.method, route.path) in table or any(
            p.match(route.path) and route.method in m for p, m in plane._patterns
        ), route


@pytest.mark.parametrize("route", ADMIN_ROUTES, ids=_ids)
def test_admin_route_needs_a_valid_unexpired_token_of_its_role(
    guarded: RunningGateway, route: AdminRoute
):
    body = _body(route)

    missing = Admin(guarded.url, None).call(route.method, route.path, body)
    assert missing.status_code == 401, missing.text
    assert missing.headers["www-authenticate"].lower().startswith("bearer")
    assert missing.json()["error"]["code"] == "unauthorized"

    wrong = Admin(guarded.url, "not-a-token-of-this-gateway").call(route.method, route.path, body)
    assert wrong.status_code == 401, wrong.text
    assert "www-authenticate" in wrong.headers
    assert "not valid" in wrong.json()["error"]["message"]

    expired = Admin(guarded.url, EXPIRED_TOKEN).call(route.method, route.path, body)
    assert expired.status_code == 401, expired.text
    message = expired.json()["error"]["message"]
    assert "retired-admin" in message
    assert "expired at 2020-01-31T00:00:00" in message

    needed = ROLES.index(route.role)
    for lower in ROLES[:needed]:
        refused = Admin(guarded.url, TOKENS[lower]).call(route.method, route.path, body)
        assert refused.status_code == 403, (lower, refused.text)
        error = refused.json()["error"]
        assert error["code"] == "forbidden"
        assert f"needs {route.role}" in error["message"]
        assert f"the {lower} role" in error["message"]

    for allowed in ROLES[needed:]:
        answered = Admin(guarded.url, TOKENS[allowed]).call(route.method, route.path, body)
        if route.method == "GET":
            assert answered.status_code == 200, (allowed, answered.text)
        else:  # the handler ran: it answered, or refused the probe field as a bad request
            assert answered.status_code in (200, 400), (allowed, answered.text)
            if answered.status_code == 400:
                assert answered.json()["error"]["code"] == "invalid_request"


def test_a_token_that_expires_later_is_accepted_with_its_role(guarded: RunningGateway):
    contractor = Admin(guarded.url, EXPIRING_TOKEN)
    assert contractor.call("GET", "/admin/actions").status_code == 200
    refused = contractor.error("PUT", "/admin/config/slo-thresholds", PROBE_BODY, 403)
    assert "contractor has the operator role" in refused["message"]


def test_a_refused_call_changes_nothing(guarded: RunningGateway):
    """A viewer's disable-all is refused before the handler runs: no flag changes."""
    viewer, admin = Admin.of(guarded, "viewer"), Admin.of(guarded, "admin")
    before = admin.get("/admin/feature-flags/bedrock")["flags"]
    changes = len(audit_records(admin, "flags_changed"))
    assert any(before.values())
    error = viewer.error("POST", "/admin/feature-flags/bedrock/disable-all", {}, 403)
    assert "needs operator" in error["message"]
    assert admin.get("/admin/feature-flags/bedrock")["flags"] == before
    assert len(audit_records(admin, "flags_changed")) == changes


# -- the bootstrap token and the tokenless default --------------------------------------------


def test_the_environment_admin_token_acts_as_admin(
    start_gateway: GatewayFactory, monkeypatch: pytest.MonkeyPatch
):
    bootstrap = "hr-test-bootstrap-token-90c2"
    monkeypatch.setenv("HYBRIDROUTE_ADMIN_TOKEN", bootstrap)
    gateway = start_gateway()  # no admin.tokens configured
    admin = Admin(gateway.url, bootstrap)
    body = admin.put("/admin/config/slo-thresholds", {"p95_latency_ms": 1800})
    assert body["slo"]["generation_p95_ms"] == 1800
    (record,) = audit_records(admin, "thresholds_changed")
    assert record["actor"] == "hybridroute_admin_token"
    # with a token in force, loopback callers without one are no longer answered
    anonymous = Admin(gateway.url, None).call("GET", "/admin/slo")
    assert anonymous.status_code == 401
    assert Admin(gateway.url, bootstrap + "x").call("GET", "/admin/slo").status_code == 401


def test_without_any_token_loopback_callers_are_answered_as_admin(
    start_gateway: GatewayFactory, monkeypatch: pytest.MonkeyPatch
):
    monkeypatch.delenv("HYBRIDROUTE_ADMIN_TOKEN", raising=False)
    gateway = start_gateway()
    anonymous = Admin(gateway.url, None)
    assert anonymous.get("/admin/feature-flags/bedrock")["mode"] == "hybrid"
    body = anonymous.put("/admin/config/slo-thresholds", {"error_rate_percent": 2.0})
    assert body["slo"]["error_rate"] == pytest.approx(0.02)
    (record,) = audit_records(anonymous, "thresholds_changed")
    assert record["actor"] == "loopback"


def test_loopback_without_token_false_refuses_tokenless_loopback_callers(
    start_gateway: GatewayFactory, monkeypatch: pytest.MonkeyPatch
):
    monkeypatch.delenv("HYBRIDROUTE_ADMIN_TOKEN", raising=False)

    def closed(data: dict[str, object]) -> None:
        data["admin"] = {"loopback_without_token": False}

    gateway = start_gateway(closed)
    error = Admin(gateway.url, None).error("GET", "/admin/slo", None, 403)
    assert "HYBRIDROUTE_ADMIN_TOKEN" in error["message"]


# -- rate limit --------------------------------------------------------------------------------


def test_the_sixth_quick_request_of_a_token_gets_429_with_retry_after(
    start_gateway: GatewayFactory, monkeypatch: pytest.MonkeyPatch
):
    gateway = start_gateway(use_tokens(monkeypatch, rate_limit_per_minute=5))
    viewer = Admin.of(gateway, "viewer")
    statuses = [viewer.call("GET", "/admin/slo").status_code for _ in range(5)]
    assert statuses == [200] * 5
    limited = viewer.call("GET", "/admin/slo")
    assert limited.status_code == 429, limited.text
    retry_after = int(limited.headers["retry-after"])
    assert 1 <= retry_after <= 12  # one request back per 60/5 = 12 s
    assert NAMES["viewer"] in limited.json()["error"]["message"]
    # the limit is per token: another token is still answered
    assert Admin.of(gateway, "operator").call("GET", "/admin/slo").status_code == 200


def test_failed_attempts_are_rate_limited_per_client(
    start_gateway: GatewayFactory, monkeypatch: pytest.MonkeyPatch
):
    gateway = start_gateway(use_tokens(monkeypatch, rate_limit_per_minute=5))
    guesser = Admin(gateway.url, "guess-0")
    statuses = [guesser.call("GET", "/admin/slo").status_code for _ in range(5)]
    assert statuses == [401] * 5
    limited = guesser.call("GET", "/admin/slo")
    assert limited.status_code == 429, limited.text
    assert int(limited.headers["retry-after"]) >= 1


# -- the token is never written down -----------------------------------------------------------


@pytest.fixture
def all_logs(caplog: pytest.LogCaptureFixture) -> pytest.LogCaptureFixture:
    caplog.set_level(logging.DEBUG)
    return caplog


def test_tokens_appear_neither_in_logs_nor_in_the_audit_trail(
    guarded: RunningGateway, all_logs: pytest.LogCaptureFixture
):
    planted = "hr-planted-secret-3f8e1d"
    operator, admin = Admin.of(guarded, "operator"), Admin.of(guarded, "admin")
    # a wrong token, the expired one, a refused role, and changes that are logged and audited
    assert Admin(guarded.url, planted).call("GET", "/admin/slo").status_code == 401
    assert Admin(guarded.url, EXPIRED_TOKEN).call("GET", "/admin/slo").status_code == 401
    assert operator.call("PUT", "/admin/config/slo-thresholds", {}).status_code == 403
    operator.post(
        "/admin/feature-flags/bedrock/update",
        {"flag": "ENABLE_PERFORMANCE_OPTIMIZATION", "enabled": False, "reason": "load test"},
    )
    operator.post("/admin/actions", {"action": "maintenance", "enabled": True})
    admin.put("/admin/config/slo-thresholds", {"p95_latency_ms": 1400})
    malformed = httpx.get(
        guarded.url + "/admin/slo", headers={"authorization": f"Basic {planted}"}, timeout=10
    )
    assert malformed.status_code == 401

    secrets = [planted, EXPIRED_TOKEN, *TOKENS.values()]
    logged = all_logs.text
    assert "flags update by operator-bot" in logged  # the gateway's logs were captured
    assert "operator action maintenance" in logged
    for secret in secrets:
        assert secret not in logged
        assert hashlib.sha256(secret.encode()).hexdigest() not in logged

    export = admin.call("GET", "/admin/audit/export?period=all")
    assert export.status_code == 200
    kinds = {r["kind"]: r["actor"] for r in export.json()["records"]}
    assert kinds["flags_changed"] == "operator-bot"
    assert kinds["operator_action"] == "operator-bot"
    assert kinds["thresholds_changed"] == "admin-bot"
    for secret in secrets:
        assert secret not in export.text
    csv_export = admin.call("GET", "/admin/audit/export?period=all&format=csv")
    assert csv_export.status_code == 200
    for secret in secrets:
        assert secret not in csv_export.text
