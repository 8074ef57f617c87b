"""Data residency and GDPR over loopback HTTP.

A third route, `bedrock_us`, is the Bedrock simulator again but signed for us-east-1: the
simulator records the region of each request's SigV4 credential scope, so where a request was
really sent is read at the upstream, not taken from the gateway's word. The `standard` row goes
to `bedrock_us` first (Frankfurt as fallback); the `background` row has `bedrock_us` alone.

- an EU-constrained request (header, metadata or its tenant's policy) never reaches us-east-1;
- with no EU route left it is refused (422 residency_unsatisfiable) and nothing is sent;
- a request cannot widen its tenant's policy (400), only narrow it;
- the compliance reports count what happened; PII planted in an audited field is redacted;
  a retention purge is reported;
- erasure: data subjects appear in the trail only as pseudonyms; erasing one drops their cache
  entries, keeps the chain whole, and gives them a new pseudonym from then on.
"""

from __future__ import annotations

import copy
import hashlib
import json
from pathlib import Path
from typing import Any

import httpx2 as httpx
import orjson

from hybridroute.config.defaults import DEFAULT_MATRIX, EU_REGIONS
from tests.integration.test_audit_http import (
    ADMIN_NAME,
    Changes,
    admin,
    chat,
    durable,
    exported,
    integrity,
    set_flag,
)
from tests.loopback import GatewayFactory, RunningGateway, Simulator, wait_for

US_ROUTE = "bedrock_us"
US_REGION = "us-east-1"
EU_REGION = "eu-central-1"
ACME_KEY = "acme-residency-key-0001"
EU = {"x-data-residency": "eu"}


def residency_setup(
    tenant_residency: dict[str, str] | None = None, *, cache: bool = False
) -> Changes:
    def change(data: dict[str, Any]) -> None:
        routes = data["routes"]
        routes[US_ROUTE] = {**copy.deepcopy(routes["direct_bedrock"]), "region": US_REGION}
        prices = data["pricing"]["routes"]
        prices[US_ROUTE] = copy.deepcopy(prices["direct_bedrock"])
        matrix = copy.deepcopy(DEFAULT_MATRIX)
        matrix["standard"].update(primary=US_ROUTE, fallback="direct_bedrock")
        matrix["background"].update(primary=US_ROUTE, fallback=None)
        data["matrix"] = matrix
        data["residency"] = {
            "region_sets": {"eu": list(EU_REGIONS), "us": [US_REGION], "frankfurt": [EU_REGION]}
        }
        data["compliance"] = {"tenant_residency": tenant_residency or {}}
        digest = hashlib.sha256(ACME_KEY.encode()).hexdigest()
        data["tenants"] = {"api_keys": [{"tenant": "acme", "sha256": digest}]}
        if cache:
            data["cache"] = {"enabled": True}

    return change


def start(
    start_gateway: GatewayFactory, tmp_path: Path, setup: Changes | None = None
) -> RunningGateway:
    return start_gateway(durable(tmp_path / "gateway.sqlite3", more=setup or residency_setup()))


def regions_seen(bedrock: Simulator) -> list[object]:
    return [entry["region"] for entry in bedrock.stats.recent]


def routed(response: httpx.Response) -> str:
    assert response.status_code == 200, response.text
    return response.headers["x-hybridroute-route"]


def refused(response: httpx.Response, status: int, code: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    error: dict[str, Any] = response.json()["error"]
    assert error["code"] == code, error
    assert response.headers["x-hybridroute-route"] == "none"
    return error


def upstream(bedrock: Simulator, mcp: Simulator) -> int:
    return bedrock.requests() + mcp.requests()


# -- routing under a residency constraint ----------------------------------------------------------


def test_eu_requests_never_reach_the_non_eu_route(
    start_gateway: GatewayFactory, bedrock_sim: Simulator, mcp_sim: Simulator, tmp_path: Path
) -> None:
    gateway = start(start_gateway, tmp_path)
    # Unconstrained, the row's primary is the us-east-1 route, and the upstream sees us-east-1.
    assert routed(chat(gateway, "standard")) == US_ROUTE
    assert regions_seen(bedrock_sim) == [US_REGION]
    bedrock_sim.stats.clear()

    answers = [chat(gateway, "standard", f"eu question {n}", headers=EU) for n in range(3)]
    answers.append(chat(gateway, "standard", "eu by metadata", metadata={"residency": "eu"}))
    answers.append(chat(gateway, "standard", "eu stream", headers=EU, stream=True))
    for response in answers:
        assert routed(response) == "direct_bedrock"
        reason = response.headers["x-hybridroute-reason"]
        assert f"residency eu excludes {US_ROUTE} ({US_REGION})" in reason
    assert regions_seen(bedrock_sim) == [EU_REGION] * 5
    assert mcp_sim.requests() == 0


def test_no_eu_route_left_is_refused_and_nothing_is_sent(
    start_gateway: GatewayFactory, bedrock_sim: Simulator, mcp_sim: Simulator, tmp_path: Path
) -> None:
    gateway = start(start_gateway, tmp_path)
    for stream in (False, True):
        error = refused(
            chat(gateway, "background", headers=EU, stream=stream), 422, "residency_unsatisfiable"
        )
        assert f"{US_ROUTE} ({US_REGION})" in error["message"]
        assert "refused and sent nowhere" in error["message"]
        assert error["hybridroute"]["excluded_routes"] == {US_ROUTE: US_REGION}
        assert error["hybridroute"]["residency"] == "eu"
    assert upstream(bedrock_sim, mcp_sim) == 0
    # The same row without the constraint is served (by the US route).
    assert routed(chat(gateway, "background")) == US_ROUTE
    assert regions_seen(bedrock_sim) == [US_REGION]


def test_a_tenant_policy_holds_its_requests_to_the_eu(
    start_gateway: GatewayFactory, bedrock_sim: Simulator, mcp_sim: Simulator, tmp_path: Path
) -> None:
    gateway = start(start_gateway, tmp_path, residency_setup({"acme": "eu"}))
    acme = {"x-api-key": ACME_KEY}
    assert routed(chat(gateway, "standard", "acme, no header", headers=acme)) == "direct_bedrock"
    narrower = {**acme, "x-data-residency": "frankfurt"}  # a subset of eu: allowed
    assert routed(chat(gateway, "standard", "acme, frankfurt", headers=narrower)) == (
        "direct_bedrock"
    )
    assert routed(chat(gateway, "standard", "acme, eu", headers={**acme, **EU})) == (
        "direct_bedrock"
    )
    assert regions_seen(bedrock_sim) == [EU_REGION] * 3
    before = upstream(bedrock_sim, mcp_sim)

    wider = refused(
        chat(gateway, "standard", headers={**acme, "x-data-residency": "us"}),
        400,
        "invalid_request",
    )
    assert "tenant 'acme' is held to residency 'eu'" in wider["message"]
    assert wider["param"] == "residency"
    unknown = refused(chat(gateway, "standard", headers={"x-data-residency": "mars"}), 400,
                      "invalid_request")  # fmt: skip
    assert "unknown residency 'mars'" in unknown["message"]
    refused(chat(gateway, "background", headers=acme), 422, "residency_unsatisfiable")
    assert upstream(bedrock_sim, mcp_sim) == before

    # Other tenants are not held: the default tenant goes to the US route.
    assert routed(chat(gateway, "standard", "no key")) == US_ROUTE
    assert regions_seen(bedrock_sim)[-1] == US_REGION


def test_the_residency_report_counts_what_happened(
    start_gateway: GatewayFactory, tmp_path: Path
) -> None:
    gateway = start(start_gateway, tmp_path, residency_setup({"acme": "eu"}))
    acme = {"x-api-key": ACME_KEY}
    for n in range(3):
        assert routed(chat(gateway, "standard", f"q{n}", headers=EU)) == "direct_bedrock"
    assert routed(chat(gateway, "implementation", headers=acme)) == "direct_bedrock"
    for _ in range(2):
        refused(chat(gateway, "background", headers=EU), 422, "residency_unsatisfiable")
    refused(chat(gateway, "background", headers=acme), 422, "residency_unsatisfiable")
    assert routed(chat(gateway, "standard", "unconstrained")) == US_ROUTE

    def report() -> dict[str, Any]:
        body: dict[str, Any] = admin(gateway, "GET", "/admin/compliance/data-residency")
        return body

    wait_for(lambda: report()["requests"]["constrained_requests"] == {"eu": 7}, 5.0)
    body = report()
    assert body["routes"] == {
        US_ROUTE: {"region": US_REGION, "kind": "bedrock", "region_sets": ["us"]},
        "direct_bedrock": {
            "region": EU_REGION,
            "kind": "bedrock",
            "region_sets": ["eu", "frankfurt"],
        },
        "mcp": {"region": EU_REGION, "kind": "mcp", "region_sets": ["eu", "frankfurt"]},
    }
    assert body["qualifying_routes"] == {
        "eu": ["direct_bedrock", "mcp"],
        "frankfurt": ["direct_bedrock", "mcp"],
        "us": [US_ROUTE],
    }
    assert body["tenant_policies"] == {"acme": "eu"}
    assert body["requests"]["refused"] == {"eu": 3}
    assert body["requests"]["violations"] == 0
    assert body["violations_by_set"] == {}
    assert body["served_by_region"] == {EU_REGION: 4}
    assert body["fail_closed"] is True
    status = admin(gateway, "GET", "/admin/compliance/gdpr-status")
    assert status["residency"]["refused"] == {"eu": 3}
    assert status["residency"]["violations"] == 0


# -- GDPR status, redaction, retention -------------------------------------------------------------


def test_gdpr_status_shows_redaction_retention_and_purges(
    start_gateway: GatewayFactory, tmp_path: Path
) -> None:
    def setup(data: dict[str, Any]) -> None:
        residency_setup()(data)
        data["storage"]["retention_days"] = 45
        data["audit"]["retention_days"] = 30

    gateway = start(start_gateway, tmp_path, setup)
    baseline = admin(gateway, "GET", "/admin/compliance/gdpr-status")
    assert baseline["redaction"]["enabled"] is True
    assert baseline["retention"]["last_purge"] is None
    before = baseline["redaction"]["redacted"]

    email, card = "jane.doe@example.com", "4111 1111 1111 1111"
    set_flag(gateway, False, f"asked by {email}, paid with {card}")
    records = exported(gateway)
    flag_record = next(r for r in records if r["kind"] == "flags_changed")
    reason = orjson.loads(flag_record["data"])["reason"]
    assert reason == "asked by [REDACTED:EMAIL], paid with [REDACTED:CARD]"
    text = json.dumps(records)
    assert email not in text
    assert card not in text

    status = admin(gateway, "GET", "/admin/compliance/gdpr-status")
    counts = status["redaction"]["redacted"]
    assert counts["email"] > before["email"]
    assert counts["card"] > before["card"]
    assert status["redaction"]["redacted_total"] >= baseline["redaction"]["redacted_total"] + 2
    assert status["retention"]["records_days"] == 45
    assert status["retention"]["audit_days"] == 30
    assert status["audit_trail"]["ok"] is True
    # The status re-verifies the chain at most once a minute: it counts what it last checked.
    assert 1 <= status["audit_trail"]["records"] <= len(records)
    assert isinstance(status["audit_trail"]["verified_at"], float)
    assert status["compliant"] is True

    purge = admin(gateway, "POST", "/admin/compliance/purge", {})
    assert purge["by"] == ADMIN_NAME
    assert (purge["records_removed"], purge["audit_records_removed"]) == (0, 0)
    assert purge["audit_before"] == purge["at"] - 30 * 86_400
    after = admin(gateway, "GET", "/admin/compliance/gdpr-status")
    assert after["retention"]["last_purge"] == purge
    assert exported(gateway)[-1]["kind"] == "retention_purge"
    assert integrity(gateway)["ok"] is True


# -- erasure ---------------------------------------------------------------------------------------

ALICE, BOB = "alice@example.com", "bob.b@example.org"
QUESTION = {"alice": "What is the capital of France?", "bob": "What is the capital of Spain?"}


def ask(gateway: RunningGateway, who: str) -> httpx.Response:
    """A cacheable request about `who` (alice by the OpenAI `user` field, bob by header)."""
    if who == "alice":
        return chat(gateway, "implementation", QUESTION[who], temperature=0, user=ALICE)
    return chat(
        gateway, "implementation", QUESTION[who], temperature=0, headers={"x-data-subject": BOB}
    )


def cache_said(response: httpx.Response) -> str:
    assert response.status_code == 200, response.text
    return response.headers["x-hybridroute-cache"]


def subjects_of(gateway: RunningGateway, decision_ids: list[str]) -> list[str | None]:
    by_id = {
        orjson.loads(r["data"])["decision_id"]: r["subject"]
        for r in exported(gateway)
        if r["kind"] == "decision"
    }
    return [by_id.get(d) for d in decision_ids]


def recorded(gateway: RunningGateway, decision_ids: list[str]) -> list[str]:
    """The subjects of these decisions, once every one is in the trail."""
    wait_for(lambda: None not in subjects_of(gateway, decision_ids), 5.0)
    return [s for s in subjects_of(gateway, decision_ids) if s is not None]


def test_erasure_forgets_the_subject_and_keeps_the_chain(
    start_gateway: GatewayFactory, tmp_path: Path
) -> None:
    gateway = start(start_gateway, tmp_path, residency_setup(cache=True))
    sent = {"alice": [ask(gateway, "alice"), ask(gateway, "alice")],
            "bob": [ask(gateway, "bob"), ask(gateway, "bob")]}  # fmt: skip
    for responses in sent.values():
        assert [cache_said(r) for r in responses] == ["miss", "hit"]
    ids = {who: [r.headers["x-hybridroute-decision-id"] for r in rs] for who, rs in sent.items()}
    alice_subjects = recorded(gateway, ids["alice"])
    bob_subjects = recorded(gateway, ids["bob"])
    pseudonym = alice_subjects[0]
    assert pseudonym.startswith("ps-")
    assert alice_subjects == [pseudonym, pseudonym]
    assert bob_subjects[0].startswith("ps-")
    assert bob_subjects == [bob_subjects[0]] * 2
    assert bob_subjects[0] != pseudonym
    assert admin(gateway, "GET", "/admin/cache")["store"]["entries"] == 2

    result = admin(gateway, "POST", "/admin/compliance/erasure", {"subject": ALICE})
    assert result["erased"] is True
    assert result["pseudonym"] == pseudonym
    assert result["cache_entries_dropped"] == 1
    assert admin(gateway, "GET", "/admin/cache")["store"]["entries"] == 1
    assert integrity(gateway)["ok"] is True  # the records about her are untouched

    again = ask(gateway, "alice")
    assert cache_said(again) == "miss"  # her cached answer is gone
    assert cache_said(ask(gateway, "bob")) == "hit"  # his is not
    (fresh,) = recorded(gateway, [again.headers["x-hybridroute-decision-id"]])
    assert fresh.startswith("ps-")
    assert fresh != pseudonym

    erasures = [r for r in exported(gateway) if r["kind"] == "erasure"]
    assert len(erasures) == 1
    assert erasures[0]["subject"] == pseudonym
    assert erasures[0]["actor"] == ADMIN_NAME
    assert orjson.loads(erasures[0]["data"])["erased"] is True

    unknown = admin(gateway, "POST", "/admin/compliance/erasure", {"subject": "nobody@example.net"})
    assert unknown["erased"] is False
    assert unknown["pseudonym"] is None
    assert unknown["cache_entries_dropped"] == 0

    status = admin(gateway, "GET", "/admin/compliance/gdpr-status")
    assert status["pseudonymisation"]["erasures"] == 1
    assert status["pseudonymisation"]["last_erasure_at"] is not None
    assert integrity(gateway)["ok"] is True

    # The subjects themselves are nowhere: not in the export, not in the database files.
    text = json.dumps(exported(gateway))
    stored = b"".join(p.read_bytes() for p in tmp_path.iterdir() if p.is_file())
    assert stored, "the SQLite files were not found"
    for subject in (ALICE, BOB):
        assert subject not in text
        assert subject.encode() not in stored
