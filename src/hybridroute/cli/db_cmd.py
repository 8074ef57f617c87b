"""`hybridroute db migrate|status`: the PostgreSQL schema a fleet of replicas shares.

Both read the database from `--dsn` (or `HYBRIDROUTE_POSTGRES_DSN`) or from the configuration's
`storage` section (`--config`), and the schema from `--schema` or the configuration. `migrate`
applies every pending migration the package ships (safe to run from several replicas at once:
they are serialised); `status` lists what is applied and what is pending, and exits 1 when
something is pending.
"""

from __future__ import annotations

import asyncio

import asyncpg
import click

from hybridroute.cli.config_cmd import load_or_exit
from hybridroute.errors import ConfigError
from hybridroute.storage.migrate import MIGRATIONS, migrate, schema_status

__all__ = ["db_group"]


def _target(dsn: str | None, schema: str | None, config_file: str | None) -> tuple[str, str]:
    if config_file is not None:
        storage = load_or_exit(config_file).storage
        try:
            dsn = dsn or (storage.dsn() if storage.postgres_dsn else None)
        except ConfigError as error:
            raise click.ClickException(str(error)) from None
        schema = schema or storage.postgres_schema
    if not dsn:
        raise click.ClickException(
            "no database given: pass --dsn postgresql://user@host/db (or set "
            "HYBRIDROUTE_POSTGRES_DSN), or --config FILE with storage.postgres_dsn"
        )
    return dsn, schema or "hybridroute"


async def _connect(dsn: str) -> asyncpg.Connection:
    try:
        return await asyncpg.connect(dsn)
    except (OSError, asyncpg.PostgresError) as exc:
        where = dsn.split("@")[-1]
        raise click.ClickException(f"cannot connect to PostgreSQL at {where}: {exc}") from None


_dsn_option = click.option(
    "--dsn",
    envvar="HYBRIDROUTE_POSTGRES_DSN",
    help="PostgreSQL DSN (env HYBRIDROUTE_POSTGRES_DSN).",
)
_schema_option = click.option("--schema", help="Schema (default: the config's, or hybridroute).")
_config_option = click.option(
    "--config", "config_file", type=click.Path(dir_okay=False), help="Read storage: from here."
)


@click.group("db")
def db_group() -> None:
    """The PostgreSQL schema shared by gateway replicas."""


@db_group.command("migrate")
@_dsn_option
@_schema_option
@_config_option
def db_migrate(dsn: str | None, schema: str | None, config_file: str | None) -> None:
    """Apply the pending schema migrations."""
    target, name = _target(dsn, schema, config_file)

    async def run() -> list[str]:
        conn = await _connect(target)
        try:
            return [f"{m.version:04d}_{m.name}" for m in await migrate(conn, name)]
        finally:
            await conn.close()

    applied = asyncio.run(run())
    if applied:
        click.echo(f"schema {name}: applied {', '.join(applied)}")
    else:
        click.echo(f"schema {name}: up to date ({len(MIGRATIONS)} migrations)")


@db_group.command("status")
@_dsn_option
@_schema_option
@_config_option
def db_status(dsn: str | None, schema: str | None, config_file: str | None) -> None:
    """List applied and pending migrations (exit 1 when some are pending)."""
    target, name = _target(dsn, schema, config_file)

    async def run() -> tuple[list[int], list[int]]:
        conn = await _connect(target)
        try:
            return await schema_status(conn, name)
        finally:
            await conn.close()

    applied, pending = asyncio.run(run())
    click.echo(f"schema {name}: applied {applied or 'none'}; pending {pending or 'none'}")
    if pending:
        raise SystemExit(1)
