"""`hybridroute report daily|weekly`: the operations report from a running gateway."""

from __future__ import annotations

import json
import urllib.error
import urllib.request

import click

from hybridroute.cli.admin_client import admin_get, admin_token_option
from hybridroute.cli.options import gateway_url_option

__all__ = ["report_command"]


def _markdown(url: str, path: str, token: str | None) -> str:
    headers = {"accept": "text/markdown"}
    if token:
        headers["authorization"] = f"Bearer {token}"
    request = urllib.request.Request(f"{url.rstrip('/')}{path}", headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return str(response.read().decode("utf-8"))
    except urllib.error.HTTPError as error:
        raise click.ClickException(f"{url} answered {error.code}: {error.read()[:300]!r}") from None
    except (urllib.error.URLError, OSError) as error:
        reason = getattr(error, "reason", error)
        raise click.ClickException(
            f"cannot reach the gateway at {url} ({reason}); is it running? "
            "Start one with 'hybridroute demo' or pass --url"
        ) from None


@click.command("report")
@click.argument("period", type=click.Choice(["daily", "weekly"]))
@gateway_url_option
@admin_token_option
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["markdown", "json"]),
    default="markdown",
    show_default=True,
    help="A Markdown checklist, or the JSON behind it.",
)
def report_command(period: str, url: str, token: str | None, fmt: str) -> None:
    """The daily (last 24 h) or weekly (last 7 days) operations report: alerts, SLO
    compliance, routing, cache, flags, cost and projection, configuration changes."""
    path = f"/admin/reports/{period}"
    if fmt == "json":
        click.echo(json.dumps(admin_get(url, f"{path}?format=json", token), indent=2))
    else:
        click.echo(_markdown(url, f"{path}?format=markdown", token), nl=False)
