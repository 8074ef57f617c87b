"""The audit trail end to end: records made by real traffic and admin calls over loopback HTTP,
kept in a real SQLite file, tampered with through `sqlite3` while the gateway is stopped, and
judged by `GET /admin/audit/trail-integrity` after a restart — which must say not only that the
chain is broken but where and how.

Also: a restart continues the chain; an HMAC-keyed chain catches a record re-sealed with plain
SHA-256; the CLI's export verifies offline (JSON and CSV) and an edited export does not; routing
decisions reach the trail in batches, one record per request, within a second; budget
thresholds are audited.
"""

from __future__ import annotations

import copy
import csv
import hashlib
import io
import json
import sqlite3
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx2 as httpx
import orjson
import pytest
from click.testing import CliRunner

from hybridroute.audit.chain import Anchor, ChainSigner, verify
from hybridroute.cli import cli
from hybridroute.serving import ThreadedServer
from hybridroute.storage.control import AuditRecord
from tests.loopback import RunningGateway, Simulator, gateway_config_data, wait_for
from tests.loopback import launch as launch_gateway

ADMIN_TOKEN = "audit-http-admin-token-0001"
ADMIN_NAME = "ops-anna"
AUTH = {"authorization": f"Bearer {ADMIN_TOKEN}"}
KEY_VARIABLE = "HYBRIDROUTE_TEST_AUDIT_HMAC_KEY"
FLAG = "ENABLE_DIRECT_BEDROCK_FALLBACK"
COLUMNS = "seq, at, kind, actor, subject, data, prev, digest"

Changes = Callable[[dict[str, Any]], None]


# -- gateways that can be stopped and started again on one file ---------------------------------


@dataclass
class Launched:
    gateway: RunningGateway
    server: ThreadedServer

    @property
    def url(self) -> str:
        return self.gateway.url

    def stop(self) -> None:
        self.server.stop()


Launcher = Callable[[Changes], Launched]


@pytest.fixture
def launch(bedrock_sim: Simulator, mcp_sim: Simulator) -> Iterator[Launcher]:
    """Start gateways on the simulators (`changes` edit the config data); each is stopped at
    the end of the test unless the test stopped it already."""
    servers: list[ThreadedServer] = []

    def start(changes: Changes) -> Launched:
        data = copy.deepcopy(gateway_config_data(bedrock_sim, mcp_sim))
        changes(data)
        gateway, server = launch_gateway(data)
        servers.append(server)
        return Launched(gateway, server)

    yield start
    for server in servers:
        server.stop()


def durable(
    path: Path,
    *,
    audit: dict[str, Any] | None = None,
    more: Changes | None = None,
) -> Changes:
    """Spend and the control plane in the SQLite file `path`; one admin token (role admin)."""

    def change(data: dict[str, Any]) -> None:
        data["storage"] = {"backend": "sqlite", "sqlite_path": str(path), "flush_interval_ms": 20}
        data["audit"] = {"flush_interval_ms": 20, **(audit or {})}
        digest = hashlib.sha256(ADMIN_TOKEN.encode()).hexdigest()
        data["admin"] = {"tokens": [{"name": ADMIN_NAME, "role": "admin", "sha256": digest}]}
        if more is not None:
            more(data)

    return change


# -- calls ---------------------------------------------------------------------------------------


def admin(launched: Launched | RunningGateway, method: str, path: str, body: Any = None) -> Any:
    """An admin call with the admin token; its JSON (asserting 200)."""
    response = httpx.request(method, launched.url + path, json=body, headers=AUTH, timeout=30.0)
    assert response.status_code == 200, (path, response.status_code, response.text)
    return response.json()


def chat(
    launched: Launched | RunningGateway,
    operation_type: str = "emergency",
    content: str = "disk full on db-1",
    *,
    headers: dict[str, str] | None = None,
    **body: Any,
) -> httpx.Response:
    payload = {
        "model": "default",
        "messages": [{"role": "user", "content": content}],
        "max_tokens": 8,
        **body,
    }
    return httpx.post(
        launched.url + "/v1/chat/completions",
        json=payload,
        headers={"x-operation-type": operation_type, **(headers or {})},
        timeout=30.0,
    )


def served(response: httpx.Response) -> str:
    """The decision id of a served answer."""
    assert response.status_code == 200, response.text
    return response.headers["x-hybridroute-decision-id"]


def integrity(launched: Launched | RunningGateway) -> dict[str, Any]:
    report: dict[str, Any] = admin(launched, "GET", "/admin/audit/trail-integrity")
    return report


def exported(launched: Launched | RunningGateway) -> list[dict[str, Any]]:
    """Every record, from the JSON export."""
    document = admin(launched, "GET", "/admin/audit/export?format=json&period=all")
    records: list[dict[str, Any]] = document["records"]
    return records


def set_flag(launched: Launched | RunningGateway, enabled: bool, reason: str) -> None:
    body = {"flag": FLAG, "enabled": enabled, "reason": reason}
    admin(launched, "POST", "/admin/feature-flags/bedrock/update", body)


def produce(launched: Launched) -> list[str]:
    """Traffic and admin actions: decisions, two flag changes, an operator action. Returns the
    decision ids once every decision is in the trail."""
    ids = [served(chat(launched)) for _ in range(2)]
    set_flag(launched, False, "incident 7: bedrock fallback misbehaves")
    ids.append(served(chat(launched, "standard")))
    set_flag(launched, True, "incident 7 resolved")
    admin(launched, "POST", "/admin/health/circuit-breakers/mcp/reset", {"reason": "drill"})
    ids.append(served(chat(launched)))

    def all_recorded() -> bool:
        got = {
            orjson.loads(r["data"])["decision_id"]
            for r in exported(launched)
            if r["kind"] == "decision"
        }
        return got == set(ids)

    wait_for(all_recorded, 5.0)
    return ids


# -- the SQLite file -----------------------------------------------------------------------------


def rows(path: Path) -> list[tuple[Any, ...]]:
    """(id, seq, at, kind, actor, subject, data, prev, digest) in storage order."""
    with sqlite3.connect(path) as conn:
        return conn.execute(f"SELECT id, {COLUMNS} FROM audit_records ORDER BY id").fetchall()


def record_of(row: tuple[Any, ...]) -> AuditRecord:
    return AuditRecord(*row[1:])


def execute(path: Path, sql: str, *params: Any) -> int:
    conn = sqlite3.connect(path)
    try:
        with conn:
            changed = conn.execute(sql, params).rowcount
    finally:
        conn.close()
    return changed


def rewrite(path: Path, records: list[AuditRecord], head: AuditRecord | None = None) -> None:
    """Replace every stored record by `records` (in this order); optionally set the head."""
    conn = sqlite3.connect(path)
    try:
        with conn:
            conn.execute("DELETE FROM audit_records")
            conn.executemany(
                f"INSERT INTO audit_records ({COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                [
                    (r.seq, r.at, r.kind, r.actor, r.subject, r.data, r.prev, r.digest)
                    for r in records
                ],
            )
            if head is not None:
                value = json.dumps({"seq": head.seq, "digest": head.digest})
                conn.execute(
                    "UPDATE control_state SET value = ? WHERE key = 'audit:head'", (value,)
                )
    finally:
        conn.close()


def head_of(path: Path) -> dict[str, Any]:
    with sqlite3.connect(path) as conn:
        (value,) = conn.execute(
            "SELECT value FROM control_state WHERE key = 'audit:head'"
        ).fetchone()
    head: dict[str, Any] = json.loads(value)
    return head


def problems(report: dict[str, Any]) -> list[tuple[str, int | None]]:
    return [(p["kind"], p["seq"]) for p in report["problems"]]


# -- fixtures ------------------------------------------------------------------------------------


@dataclass
class Stopped:
    """A gateway's SQLite file with a chain made by real traffic, the gateway stopped."""

    path: Path
    changes: Changes
    decision_ids: list[str]


@pytest.fixture
def stopped_chain(launch: Launcher, tmp_path: Path) -> Stopped:
    path = tmp_path / "gateway.sqlite3"
    changes = durable(path)
    launched = launch(changes)
    ids = produce(launched)
    report = integrity(launched)
    assert report["ok"], report
    launched.stop()
    return Stopped(path, changes, ids)


# -- an intact chain, and a restart ------------------------------------------------------------


def test_an_untampered_chain_verifies_and_shows_who_did_what(stopped_chain: Stopped) -> None:
    stored = [record_of(row) for row in rows(stopped_chain.path)]
    kinds = [r.kind for r in stored]
    assert kinds[0] == "config_applied"
    assert kinds.count("decision") == 4
    assert kinds.count("flags_changed") == 2
    assert kinds.count("operator_action") == 1
    assert [r.seq for r in stored] == list(range(1, len(stored) + 1))
    flags = [orjson.loads(r.data) for r in stored if r.kind == "flags_changed"]
    assert flags[0]["old"][FLAG] is True
    assert flags[0]["new"][FLAG] is False
    assert flags[0]["reason"] == "incident 7: bedrock fallback misbehaves"
    assert {r.actor for r in stored if r.kind in ("flags_changed", "operator_action")} == {
        ADMIN_NAME
    }
    offline = verify(stored, ChainSigner())
    assert offline.ok, offline.problems
    assert head_of(stopped_chain.path) == {"seq": stored[-1].seq, "digest": stored[-1].digest}


def test_a_restart_continues_the_same_chain(stopped_chain: Stopped, launch: Launcher) -> None:
    before = [record_of(row) for row in rows(stopped_chain.path)]
    launched = launch(stopped_chain.changes)
    report = integrity(launched)
    assert report["ok"], report
    assert report["last_seq"] == before[-1].seq
    served(chat(launched))
    set_flag(launched, False, "after the restart")
    report = integrity(launched)
    assert report["ok"], report
    launched.stop()

    after = [record_of(row) for row in rows(stopped_chain.path)]
    assert after[: len(before)] == before
    first_new = after[len(before)]
    assert first_new.seq == before[-1].seq + 1
    assert first_new.prev == before[-1].digest
    assert [r.seq for r in after] == list(range(1, len(after) + 1))
    assert {r.kind for r in after[len(before) :]} == {"decision", "flags_changed"}
    assert verify(after, ChainSigner()).ok


# -- tampering -----------------------------------------------------------------------------------


def restarted_report(stopped: Stopped, launch: Launcher) -> dict[str, Any]:
    launched = launch(stopped.changes)
    report = integrity(launched)
    assert report["ok"] is False, report
    return report


def test_an_edited_nested_field_is_located(stopped_chain: Stopped, launch: Launcher) -> None:
    path = stopped_chain.path
    row = next(r for r in rows(path) if r[3] == "flags_changed")
    seq, data = row[1], json.loads(row[6])
    assert data["old"][FLAG] is True
    data["old"][FLAG] = False  # rewrite history: the flag was already off
    edited = json.dumps(data, separators=(",", ":"), sort_keys=True)
    assert execute(path, "UPDATE audit_records SET data = ? WHERE id = ?", edited, row[0]) == 1

    report = restarted_report(stopped_chain, launch)
    assert problems(report) == [("edited", seq)]
    assert f"record {seq} was edited" in report["problems"][0]["detail"]


def test_a_deleted_middle_record_is_named(stopped_chain: Stopped, launch: Launcher) -> None:
    path = stopped_chain.path
    stored = rows(path)
    middle = stored[len(stored) // 2]
    gone = middle[1]
    assert execute(path, "DELETE FROM audit_records WHERE id = ?", middle[0]) == 1

    report = restarted_report(stopped_chain, launch)
    assert problems(report) == [("deleted", gone + 1)]
    assert f"record {gone} is missing" in report["problems"][0]["detail"]


def test_two_swapped_records_are_reported_reordered(
    stopped_chain: Stopped, launch: Launcher
) -> None:
    path = stopped_chain.path
    stored = [record_of(row) for row in rows(path)]
    i = 3
    swapped = [*stored[:i], stored[i + 1], stored[i], *stored[i + 2 :]]
    rewrite(path, swapped)

    report = restarted_report(stopped_chain, launch)
    first, second = stored[i].seq, stored[i + 1].seq
    assert problems(report) == [("reordered", second)]
    assert report["problems"][0]["position"] == i
    assert f"it comes before record {first}" in report["problems"][0]["detail"]


def test_a_forged_record_is_reported_inserted(stopped_chain: Stopped, launch: Launcher) -> None:
    path = stopped_chain.path
    stored = [record_of(row) for row in rows(path)]
    i = 4
    victim = stored[i]
    # A well-made forgery: a correctly sealed record claiming the victim's place in the chain.
    forged = ChainSigner().seal(
        seq=victim.seq,
        at=victim.at - 0.001,
        kind="flags_changed",
        actor=ADMIN_NAME,
        subject=None,
        data={"action": "update", "reason": "approved by the CTO", "changed": [FLAG]},
        prev=victim.prev,
    )
    rewrite(path, [*stored[:i], forged, *stored[i:]])

    report = restarted_report(stopped_chain, launch)
    assert problems(report) == [("inserted", victim.seq)]
    assert report["problems"][0]["position"] == i
    assert "was inserted" in report["problems"][0]["detail"]


def test_a_cut_off_tail_is_reported_truncated(stopped_chain: Stopped, launch: Launcher) -> None:
    path = stopped_chain.path
    stored = rows(path)
    last = stored[-1][1]
    assert execute(path, "DELETE FROM audit_records WHERE seq > ?", last - 2) == 2
    assert head_of(path)["seq"] == last  # the head is kept apart from the records

    report = restarted_report(stopped_chain, launch)
    assert problems(report) == [("truncated", None)]
    assert f"records {last - 1} to {last} are missing" in report["problems"][0]["detail"]


def test_a_cut_off_tail_stays_visible_after_new_records(
    stopped_chain: Stopped, launch: Launcher
) -> None:
    path = stopped_chain.path
    last = rows(path)[-1][1]
    execute(path, "DELETE FROM audit_records WHERE seq > ?", last - 2)
    launched = launch(stopped_chain.changes)
    # The gateway writes on: its new records must not paper over the missing ones.
    set_flag(launched, False, "business as usual")
    served(chat(launched))
    report = integrity(launched)
    assert report["ok"] is False, report
    assert any(f"records {last - 1} to {last}" in p["detail"] for p in report["problems"]), report[
        "problems"
    ]


# -- a keyed chain -------------------------------------------------------------------------------


def test_a_keyed_chain_catches_a_record_resealed_without_the_key(
    launch: Launcher, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(KEY_VARIABLE, "a-long-random-audit-secret")
    path = tmp_path / "keyed.sqlite3"
    changes = durable(path, audit={"hmac_key": f"env:{KEY_VARIABLE}"})
    launched = launch(changes)
    produce(launched)
    report = integrity(launched)
    assert report["ok"], report
    assert report["keyed"] is True
    launched.stop()

    stored = [record_of(row) for row in rows(path)]
    # The keyed digests are not plain SHA-256: an unkeyed verifier rejects every record.
    assert {p.kind for p in verify(stored, ChainSigner()).problems} == {"edited"}
    i = next(n for n, r in enumerate(stored) if r.kind == "flags_changed")
    data = orjson.loads(stored[i].data)
    data["reason"] = "routine maintenance"
    # The forger re-seals the edited record and everything after it with plain SHA-256 and
    # moves the remembered head: a perfect chain for anyone without the key.
    forged, prev = list(stored[:i]), stored[i].prev
    for n, record in enumerate(stored[i:]):
        resealed = ChainSigner().seal(
            seq=record.seq,
            at=record.at,
            kind=record.kind,
            actor=record.actor,
            subject=record.subject,
            data=data if n == 0 else orjson.loads(record.data),
            prev=prev,
        )
        forged.append(resealed)
        prev = resealed.digest
    rewrite(path, forged, head=forged[-1])
    assert verify(forged[i:], ChainSigner(), anchor=_anchor(stored[i - 1])).ok

    launched = launch(changes)
    report = integrity(launched)
    assert report["ok"] is False
    assert report["keyed"] is True
    located = problems(report)
    assert located[0] == ("edited", stored[i].seq)
    assert {kind for kind, _ in located} == {"edited"}
    assert {seq for _, seq in located} == {r.seq for r in stored[i:]}


def _anchor(record: AuditRecord) -> Anchor:
    return Anchor(record.seq, record.digest)


# -- export and offline verification with the CLI ------------------------------------------------


def run_cli(*args: str) -> Any:
    return CliRunner().invoke(cli, list(args), catch_exceptions=False)


def test_cli_export_verifies_offline_and_an_edited_export_does_not(
    launch: Launcher, tmp_path: Path
) -> None:
    launched = launch(durable(tmp_path / "gateway.sqlite3"))
    produce(launched)
    export = tmp_path / "audit.json"
    result = run_cli(
        "audit", "export", "--format", "json", "--period", "all", "--out", str(export),
        "--url", launched.url, "--token", ADMIN_TOKEN,
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    document = json.loads(export.read_text())
    count = len(document["records"])
    assert count >= 8
    assert document["keyed"] is False

    result = run_cli("audit", "verify", "--offline", str(export))
    assert result.exit_code == 0, result.output
    assert f"audit trail intact: {count} records verified" in result.output

    # The gateway itself agrees, through the CLI too.
    result = run_cli("audit", "verify", "--url", launched.url, "--token", ADMIN_TOKEN)
    assert result.exit_code == 0, result.output
    assert "audit trail intact" in result.output

    # A reader "corrects" the exported copy: the flag was never turned off.
    n = next(i for i, r in enumerate(document["records"]) if r["kind"] == "flags_changed")
    record = document["records"][n]
    data = json.loads(record["data"])
    data["new"][FLAG] = True
    record["data"] = json.dumps(data, separators=(",", ":"), sort_keys=True)
    edited = tmp_path / "edited.json"
    edited.write_text(json.dumps(document))
    result = run_cli("audit", "verify", "--offline", str(edited))
    assert result.exit_code == 1, result.output
    assert "NOT intact: 1 problem(s)" in result.output
    assert f"[edited] record {record['seq']} was edited" in result.output


def test_a_period_export_verifies_offline_from_its_first_record(
    launch: Launcher, tmp_path: Path
) -> None:
    launched = launch(durable(tmp_path / "gateway.sqlite3"))
    produce(launched)
    everything = exported(launched)
    first = everything[3]  # an export of a period starts inside the chain
    response = httpx.get(
        f"{launched.url}/admin/audit/export",
        params={"format": "json", "since": repr(first["at"])},
        headers=AUTH,
        timeout=30.0,
    )
    assert response.status_code == 200, response.text
    document = response.json()
    assert [r["seq"] for r in document["records"]] == [r["seq"] for r in everything[3:]]
    assert document["anchor"] == {"seq": first["seq"] - 1, "digest": everything[2]["digest"]}
    export = tmp_path / "period.json"
    export.write_bytes(response.content)
    result = run_cli("audit", "verify", "--offline", str(export))
    assert result.exit_code == 0, result.output
    assert f"{len(everything) - 3} records verified (seq {first['seq']}" in result.output


def test_cli_csv_export_verifies_offline(launch: Launcher, tmp_path: Path) -> None:
    launched = launch(durable(tmp_path / "gateway.sqlite3"))
    produce(launched)
    export = tmp_path / "audit.csv"
    result = run_cli(
        "audit", "export", "--format", "csv", "--period", "all", "--out", str(export),
        "--url", launched.url, "--token", ADMIN_TOKEN,
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    table = list(csv.DictReader(io.StringIO(export.read_text())))
    assert len(table) >= 8
    assert [int(row["seq"]) for row in table] == list(range(1, len(table) + 1))
    result = run_cli("audit", "verify", "--offline", str(export))
    assert result.exit_code == 0, result.output
    assert f"{len(table)} records verified" in result.output

    # Dropping a row from the CSV is found too.
    lines = export.read_text().splitlines(keepends=True)
    cut = tmp_path / "cut.csv"
    cut.write_text("".join(lines[:3] + lines[4:]))
    result = run_cli("audit", "verify", "--offline", str(cut))
    assert result.exit_code == 1, result.output
    assert "[deleted] record 3 is missing" in result.output


def test_a_keyed_export_needs_the_key_offline(
    launch: Launcher, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(KEY_VARIABLE, "another-long-random-audit-secret")
    launched = launch(durable(tmp_path / "k.sqlite3", audit={"hmac_key": f"env:{KEY_VARIABLE}"}))
    produce(launched)
    export = tmp_path / "audit.json"
    result = run_cli(
        "audit", "export", "--period", "all", "--out", str(export),
        "--url", launched.url, "--token", ADMIN_TOKEN,
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    result = CliRunner().invoke(cli, ["audit", "verify", "--offline", str(export)])
    assert result.exit_code == 1
    assert "--hmac-key-env" in result.output
    result = run_cli("audit", "verify", "--offline", str(export), "--hmac-key-env", KEY_VARIABLE)
    assert result.exit_code == 0, result.output
    assert "HMAC-keyed" in result.output
    monkeypatch.setenv("HYBRIDROUTE_TEST_WRONG_KEY", "not-the-key")
    result = CliRunner().invoke(
        cli,
        [
            "audit",
            "verify",
            "--offline",
            str(export),
            "--hmac-key-env",
            "HYBRIDROUTE_TEST_WRONG_KEY",
        ],
    )
    assert result.exit_code == 1
    assert "NOT intact" in result.output


# -- routing decisions and budget thresholds -------------------------------------------------------


def test_decisions_are_audited_in_batches_one_per_request(launch: Launcher, tmp_path: Path) -> None:
    path = tmp_path / "gateway.sqlite3"
    # The default flush interval (200 ms): decisions are written by the batch writer.
    launched = launch(durable(path, audit={"flush_interval_ms": 200}))
    answers: dict[str, tuple[str, str]] = {}
    for n in range(12):
        operation = ("emergency", "standard", "implementation")[n % 3]
        response = chat(launched, operation, f"question {n}")
        answers[served(response)] = (operation, response.headers["x-hybridroute-route"])
    sent_at = time.monotonic()

    def decisions() -> dict[str, dict[str, Any]]:
        with sqlite3.connect(path, timeout=5) as conn:
            found = conn.execute(
                "SELECT actor, data FROM audit_records WHERE kind = 'decision'"
            ).fetchall()
        assert {actor for actor, _ in found} <= {"gateway"}
        return {d["decision_id"]: d for d in (json.loads(data) for _, data in found)}

    # Read from the file, not through the API (an export would flush the queue itself).
    wait_for(lambda: len(decisions()) >= len(answers), 1.0)
    assert time.monotonic() - sent_at < 1.0
    recorded = decisions()
    assert set(recorded) == set(answers)
    for decision_id, (operation, route) in answers.items():
        data = recorded[decision_id]
        assert (data["operation_type"], data["route"]) == (operation, route)
        assert (data["outcome"], data["status"]) == ("served", 200)
        assert data["attempts"] == [{"route": route, "outcome": "ok"}]
        assert data["reason"].startswith("matrix: ")
    assert integrity(launched)["ok"]


def test_budget_thresholds_are_audited(launch: Launcher, tmp_path: Path) -> None:
    def tiny_budget(data: dict[str, Any]) -> None:
        # One emergency answer (0.000198 USD) takes spend to 90 % of this.
        data["budgets"] = {"global": {"daily": "0.00022"}}

    launched = launch(durable(tmp_path / "gateway.sqlite3", more=tiny_budget))
    served(chat(launched))

    def thresholds() -> list[dict[str, Any]]:
        return [
            orjson.loads(r["data"]) for r in exported(launched) if r["kind"] == "budget_threshold"
        ]

    wait_for(lambda: bool(thresholds()), 5.0)
    crossed = thresholds()[0]
    assert crossed["budget"] == "global"
    assert (crossed["threshold"], crossed["level"], crossed["kind"]) == ("info", 0.8, "fired")
    assert 0.8 <= crossed["utilisation"] < 0.95
    assert integrity(launched)["ok"]
