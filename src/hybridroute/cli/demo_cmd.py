"""`hybridroute demo`: simulators, the gateway on its embedded default, and synthetic traffic."""

from __future__ import annotations

import click
import uvloop

from hybridroute.demo.config import DEMO_DATA_DIR
from hybridroute.demo.runner import DemoOptions, run_demo

__all__ = ["demo_command"]


@click.command("demo")
@click.option("--port", type=int, default=8080, show_default=True, help="The gateway's port.")
@click.option("--host", default="127.0.0.1", show_default=True, help="Listen address.")
@click.option("--no-traffic", is_flag=True, help="Do not generate synthetic traffic.")
@click.option(
    "--rate", type=float, default=2.0, show_default=True, help="Synthetic requests per second."
)
@click.option(
    "--data-dir",
    default=DEMO_DATA_DIR,
    show_default=True,
    type=click.Path(file_okay=False),
    help="Where the demo keeps its SQLite store (spend and budget events).",
)
def demo_command(port: int, host: str, no_traffic: bool, rate: float, data_dir: str) -> None:
    """Run the gateway on its embedded default with local Bedrock and MCP simulators."""
    if rate <= 0:
        raise click.BadParameter("must be above 0", param_hint="--rate")
    options = DemoOptions(
        port=port, host=host, traffic=not no_traffic, rate=rate, data_dir=data_dir
    )
    try:
        uvloop.run(run_demo(options, out=click.echo))
    except (OSError, RuntimeError) as error:
        click.echo(f"hybridroute demo: {error}", err=True)
        raise SystemExit(1) from None
