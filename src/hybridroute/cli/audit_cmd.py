"""`hybridroute audit` and `hybridroute compliance`: the audit trail and GDPR operations.

- `audit verify` — ask the running gateway to verify its chain (GET
  /admin/audit/trail-integrity); `audit verify --offline FILE` verifies an export (JSON or CSV
  from `audit export`) here, with no gateway, using the same verifier (pass the HMAC key's
  environment variable with `--hmac-key-env` when the chain is keyed);
- `audit export --format json|csv --period daily|weekly|monthly|all [--out FILE]`;
- `compliance status|residency|erase SUBJECT|purge`.

Exit status: `audit verify` exits 1 when the chain does not verify.
"""

from __future__ import annotations

import csv
import io
import json
import os
from pathlib import Path
from typing import Any

import click

from hybridroute.audit.chain import Anchor, ChainSigner, IntegrityReport, verify
from hybridroute.cli.admin_client import admin_call, admin_get, admin_token_option, print_json
from hybridroute.cli.options import gateway_url_option
from hybridroute.storage.control import AuditRecord

__all__ = ["audit_group", "compliance_group", "load_export"]


@click.group("audit")
def audit_group() -> None:
    """Verify and export the hash-chained audit trail."""


def load_export(path: Path) -> tuple[list[AuditRecord], Anchor, bool | None]:
    """Records, anchor and keyed-ness from an export file (JSON or CSV)."""
    text = path.read_text(encoding="utf-8")
    if text.lstrip().startswith("{"):
        try:
            document = json.loads(text)
            records = [AuditRecord(**item) for item in document["records"]]
            anchor_data = document.get("anchor") or {}
            anchor = Anchor(int(anchor_data.get("seq", 0)), str(anchor_data.get("digest", "")))
            return records, anchor if anchor.digest else Anchor(), document.get("keyed")
        except (ValueError, KeyError, TypeError) as exc:
            raise click.ClickException(f"{path} is not an audit export: {exc}") from None
    rows = list(csv.DictReader(io.StringIO(text)))
    try:
        records = [
            AuditRecord(
                seq=int(row["seq"]),
                at=float(row["at"]),
                kind=row["kind"],
                actor=row["actor"],
                subject=row["subject"] or None,
                data=row["data"],
                prev=row["prev"],
                digest=row["digest"],
            )
            for row in rows
        ]
    except (ValueError, KeyError, TypeError) as exc:
        raise click.ClickException(f"{path} is not an audit CSV export: {exc}") from None
    # A CSV export carries no anchor: the first record's link is taken as given.
    anchor = Anchor(records[0].seq - 1, records[0].prev) if records else Anchor()
    return records, anchor, None


def _print_report(report: dict[str, Any]) -> None:
    if report["ok"]:
        click.echo(
            f"audit trail intact: {report['checked']} records verified "
            f"(seq {report['first_seq']}–{report['last_seq']}, "
            f"{'HMAC-keyed' if report['keyed'] else 'SHA-256'})"
        )
        return
    click.echo(f"audit trail NOT intact: {len(report['problems'])} problem(s)")
    for problem in report["problems"]:
        click.echo(f"  [{problem['kind']}] {problem['detail']}")


@audit_group.command("verify")
@click.option("--offline", "offline", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="Verify an export file here instead of asking the gateway.")  # fmt: skip
@click.option("--hmac-key-env", default=None, help="Environment variable holding the HMAC key.")
@click.option("--json", "as_json", is_flag=True, help="Print the JSON report.")
@gateway_url_option
@admin_token_option
def audit_verify(
    offline: Path | None,
    hmac_key_env: str | None,
    as_json: bool,
    url: str,
    token: str | None,
) -> None:
    """Verify the audit chain: every record's digest and link (exit 1 when it is broken)."""
    if offline is None:
        report = admin_get(url, "/admin/audit/trail-integrity", token)
    else:
        key = None
        if hmac_key_env:
            value = os.environ.get(hmac_key_env)
            if not value:
                raise click.ClickException(f"environment variable {hmac_key_env} is not set")
            key = value.encode()
        records, anchor, keyed = load_export(offline)
        if keyed and key is None:
            raise click.ClickException(
                "this export comes from an HMAC-keyed chain: pass --hmac-key-env VAR with the "
                "variable that holds the key"
            )
        result: IntegrityReport = verify(records, ChainSigner(key), anchor=anchor)
        report = result.as_dict()
    print_json(report) if as_json else _print_report(report)
    if not report["ok"]:
        raise SystemExit(1)


@audit_group.command("export")
@click.option("--format", "fmt", type=click.Choice(["json", "csv"]), default="json",
              show_default=True)  # fmt: skip
@click.option("--period", default="daily", show_default=True,
              type=click.Choice(["hourly", "daily", "weekly", "monthly", "all"]))  # fmt: skip
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path),
              help="Write to this file (default: standard output).")  # fmt: skip
@gateway_url_option
@admin_token_option
def audit_export(fmt: str, period: str, out: Path | None, url: str, token: str | None) -> None:
    """Export audit records with their digests (for archives and offline verification)."""
    body = admin_call(
        url, "GET", f"/admin/audit/export?format={fmt}&period={period}", token, raw=True
    )
    if out is None:
        click.echo(body.decode("utf-8"), nl=False)
    else:
        out.write_bytes(body)
        click.echo(f"wrote {out} ({len(body)} bytes)", err=True)


@click.group("compliance")
def compliance_group() -> None:
    """GDPR status, data residency, erasure and retention purges."""


@compliance_group.command("status")
@gateway_url_option
@admin_token_option
def compliance_status(url: str, token: str | None) -> None:
    """GET /admin/compliance/gdpr-status."""
    print_json(admin_get(url, "/admin/compliance/gdpr-status", token))


@compliance_group.command("residency")
@gateway_url_option
@admin_token_option
def compliance_residency(url: str, token: str | None) -> None:
    """GET /admin/compliance/data-residency."""
    print_json(admin_get(url, "/admin/compliance/data-residency", token))


@compliance_group.command("erase")
@click.argument("subject")
@click.option("--reason", default="", help="Why (kept in the audit trail).")
@gateway_url_option
@admin_token_option
def compliance_erase(subject: str, reason: str, url: str, token: str | None) -> None:
    """Erase a data subject (their pseudonym can no longer be linked to them)."""
    body = {"subject": subject, "reason": reason}
    print_json(admin_call(url, "POST", "/admin/compliance/erasure", token, body))


@compliance_group.command("purge")
@gateway_url_option
@admin_token_option
def compliance_purge(url: str, token: str | None) -> None:
    """Delete records past their retention now."""
    print_json(admin_call(url, "POST", "/admin/compliance/purge", token, {}))
