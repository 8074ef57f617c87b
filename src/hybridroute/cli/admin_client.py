"""Reading a running gateway's admin endpoints from the CLI, with errors a person can act on."""

from __future__ import annotations

import contextlib
import json
import os
import urllib.error
import urllib.request
from typing import Any

import click

__all__ = ["admin_call", "admin_get", "admin_token_option", "print_json"]

admin_token_option = click.option(
    "--token",
    default=lambda: os.environ.get("HYBRIDROUTE_ADMIN_TOKEN"),
    show_default="env HYBRIDROUTE_ADMIN_TOKEN",
    help="Admin bearer token (not needed on loopback while the gateway has none set).",
)


def admin_get(url: str, path: str, token: str | None) -> dict[str, Any]:
    """GET an admin endpoint and return its JSON; a ClickException says what went wrong."""
    body: dict[str, Any] = admin_call(url, "GET", path, token)
    return body


def admin_call(
    url: str,
    method: str,
    path: str,
    token: str | None,
    body: Any = None,
    *,
    timeout_s: float = 30.0,
    raw: bool = False,
) -> Any:
    """Call an admin endpoint and return its JSON (or its bytes, `raw`); a ClickException
    says what went wrong."""
    headers = {"accept": "application/json"}
    if token:
        headers["authorization"] = f"Bearer {token}"
    data = None
    if body is not None:
        data = json.dumps(body).encode()
        headers["content-type"] = "application/json"
    request = urllib.request.Request(
        f"{url.rstrip('/')}{path}", data=data, headers=headers, method=method
    )
    try:
        with urllib.request.urlopen(request, timeout=timeout_s) as response:
            payload = response.read()
            return payload if raw else json.loads(payload)
    except urllib.error.HTTPError as error:
        detail = error.read().decode("utf-8", "replace")
        with contextlib.suppress(ValueError, KeyError, TypeError):
            detail = json.loads(detail)["error"]["message"]
        raise click.ClickException(f"{url} answered {error.code}: {detail}") from None
    except (urllib.error.URLError, OSError) as error:
        reason = getattr(error, "reason", error)
        raise click.ClickException(
            f"cannot reach the gateway at {url} ({reason}); is it running? "
            "Start one with 'hybridroute demo' or pass --url"
        ) from None


def print_json(value: Any) -> None:
    click.echo(json.dumps(value, indent=2, sort_keys=True))
