"""`hybridroute config validate FILE` and `hybridroute config show [FILE]`."""

from __future__ import annotations

import click

from hybridroute.cli.render import config_summary
from hybridroute.config.load import load_config
from hybridroute.config.schema import GatewayConfig
from hybridroute.demo.config import embedded_config
from hybridroute.errors import ConfigError

__all__ = ["config_group", "load_or_exit"]


def load_or_exit(path: str) -> GatewayConfig:
    try:
        return load_config(path)
    except ConfigError as error:
        click.echo(str(error), err=True)
        raise SystemExit(2) from None


@click.group("config")
def config_group() -> None:
    """Validate and inspect configuration files."""


@config_group.command("validate")
@click.argument("file", type=click.Path(dir_okay=False))
def validate(file: str) -> None:
    """Check FILE and report every problem with its path and a fix."""
    config = load_or_exit(file)
    click.echo(
        f"{file} is valid: {len(config.routes)} routes ({', '.join(config.routes)}), "
        f"{len(config.matrix)} operation types"
    )


@config_group.command("show")
@click.argument("file", type=click.Path(dir_okay=False), required=False)
def show(file: str | None) -> None:
    """Print the effective routing matrix, routes and flags of FILE (or the embedded default)."""
    if file is None:
        config = embedded_config(
            bedrock_url="http://127.0.0.1:<bedrock-simulator-port>",
            mcp_url="http://127.0.0.1:<mcp-simulator-port>/mcp",
        )
        click.echo("Embedded default (hybridroute demo); simulator ports are chosen at start.\n")
    else:
        config = load_or_exit(file)
    click.echo(config_summary(config), nl=False)
