"""`hybridroute serve --config FILE`: run the gateway on a configuration file."""

from __future__ import annotations

import socket

import click
import uvloop

from hybridroute.app import run_gateway
from hybridroute.cli.config_cmd import load_or_exit
from hybridroute.cli.workers import WorkerPool, worker_role
from hybridroute.serving import bind_socket

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
@click.option(
    "--workers",
    type=click.IntRange(1, 64),
    default=1,
    show_default=True,
    help="Gateway processes sharing the port (metrics count them all).",
)
@click.option("--worker-fd", type=int, default=None, hidden=True)
@click.option("--reuse-port", is_flag=True, hidden=True)
@click.option("--worker-index", type=int, default=None, hidden=True)
def serve_command(
    config_file: str,
    host: str | None,
    port: int | None,
    workers: int,
    worker_fd: int | None,
    reuse_port: bool,
    worker_index: int | None,
) -> None:
    """Serve the gateway with the routes and matrix of a configuration file."""
    config = load_or_exit(config_file)
    listen_host = host or config.server.host
    listen_port = config.server.port if port is None else port
    if workers > 1:
        if config.budgets.configured and not config.budgets.shared:
            raise click.ClickException(
                "budgets are configured, and each worker process would keep its own count: "
                "serve them with one process (--workers 1)"
            )
        if config.storage.backend == "memory":
            raise click.ClickException(
                "worker processes share flags, routing versions, operator actions and the audit "
                "trail through the store, and storage.backend is memory: use sqlite (or "
                "postgres), or serve with one process (--workers 1)"
            )
        try:
            status = WorkerPool(
                config_file, host=listen_host, port=listen_port, workers=workers, echo=click.echo
            ).run()
        except OSError as error:
            click.echo(f"hybridroute: {error}", err=True)
            raise SystemExit(1) from None
        raise SystemExit(status)

    def ready(url: str) -> None:
        click.echo(f"hybridroute serving on {url} (routes: {', '.join(config.routes)})")

    sock: socket.socket | None = None
    if worker_fd is not None:
        sock = socket.socket(fileno=worker_fd)
    elif reuse_port:
        sock = bind_socket(listen_host, listen_port, reuse_port=True)
    role, internal_port = worker_role(worker_index)
    try:
        uvloop.run(
            run_gateway(
                config,
                host=listen_host,
                port=listen_port,
                on_ready=ready if worker_index is None else None,
                sock=sock,
                role=role,
                internal_port=internal_port,
            )
        )
    except (OSError, RuntimeError) as error:
        click.echo(f"hybridroute: {error}", err=True)
        raise SystemExit(1) from None
