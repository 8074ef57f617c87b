"""Options shared by the commands that talk to a running gateway."""

from __future__ import annotations

import click

__all__ = ["gateway_url_option"]

gateway_url_option = click.option(
    "--url",
    envvar="HYBRIDROUTE_URL",
    default="http://127.0.0.1:8080",
    show_default=True,
    help="The gateway's base URL (env HYBRIDROUTE_URL).",
)
