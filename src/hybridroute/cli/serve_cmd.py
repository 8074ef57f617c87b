"""`hybridroute serve --config FILE`: run the gateway on a configuration file."""

from __future__ import annotations

import click
import uvloop

from hybridroute.app import run_gateway
from hybridroute.cli.config_cmd import load_or_exit

__all__ = ["serve_command"]


@click.command("serve")
@click.option(
    "--config",
    "config_file",
    required=True,
    type=click.Path(dir_okay=False),
    envvar="HYBRIDROUTE_CONFIG",
    help="The YAML configuration file (env HYBRIDROUTE_CONFIG).",
)
@click.option("--host", default=None, help="Listen address (default: server.host of the config).")
@click.option("--port", type=int, default=None, help="Listen port (default: server.port).")
def serve_command(config_file: str, host: str | None, port: int | None) -> None:
    """Serve the gateway with the routes and matrix of a configuration file."""
    config = load_or_exit(config_file)
    listen_host = host or config.server.host
    listen_port = config.server.port if port is None else port

    def ready(url: str) -> None:
        click.echo(f"hybridroute serving on {url} (routes: {', '.join(config.routes)})")

    try:
        uvloop.run(run_gateway(config, host=listen_host, port=listen_port, on_ready=ready))
    except (OSError, RuntimeError) as error:
        click.echo(f"hybridroute: {error}", err=True)
        raise SystemExit(1) from None
