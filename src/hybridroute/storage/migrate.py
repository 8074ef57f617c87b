"""PostgreSQL schema migrations: numbered SQL files shipped in the package, applied in order,
each once, recorded in `schema_migrations`.

`hybridroute db migrate` applies what is pending; a gateway refuses to start on a database whose
schema is behind (saying to run the command) or ahead (saying to upgrade hybridroute). Several
replicas migrating at once are serialised by an advisory lock, and each file is applied in its
own transaction with its record, so a failed migration leaves nothing half-applied.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from importlib import resources
from typing import Any, TypeAlias

import asyncpg
from asyncpg.pool import PoolConnectionProxy

Connection: TypeAlias = "asyncpg.Connection[Any] | PoolConnectionProxy[Any]"

__all__ = ["MIGRATIONS", "Migration", "applied_versions", "migrate", "schema_status"]

_FILE = re.compile(r"^(?P<version>\d{4})_(?P<name>[a-z0-9_]+)\.sql$")
_LOCK = 0x6879_6272_6F75  # "hybrou": one advisory lock for migrations, whatever the schema


@dataclass(frozen=True, slots=True)
class Migration:
    version: int
    name: str
    sql: str


def _load() -> tuple[Migration, ...]:
    folder = resources.files("hybridroute.storage").joinpath("migrations")
    found = []
    for item in folder.iterdir():
        match = _FILE.match(item.name)
        if match:
            found.append(Migration(int(match["version"]), match["name"], item.read_text()))
    found.sort(key=lambda m: m.version)
    return tuple(found)


MIGRATIONS = _load()
"""Every migration the package ships, oldest first."""


async def _ensure_table(conn: Connection, schema: str) -> None:
    await conn.execute(f'CREATE SCHEMA IF NOT EXISTS "{schema}"')
    await conn.execute(
        f'CREATE TABLE IF NOT EXISTS "{schema}".schema_migrations ('
        "version INTEGER PRIMARY KEY, name TEXT NOT NULL, "
        "applied_at TIMESTAMPTZ NOT NULL DEFAULT now())"
    )


async def applied_versions(conn: Connection, schema: str) -> list[int]:
    exists = await conn.fetchval(
        "SELECT to_regclass($1) IS NOT NULL", f'"{schema}".schema_migrations'
    )
    if not exists:
        return []
    rows = await conn.fetch(f'SELECT version FROM "{schema}".schema_migrations ORDER BY version')
    return [int(r["version"]) for r in rows]


async def schema_status(conn: Connection, schema: str) -> tuple[list[int], list[int]]:
    """(versions applied, versions this package has that are not applied)."""
    applied = await applied_versions(conn, schema)
    pending = [m.version for m in MIGRATIONS if m.version not in applied]
    return applied, pending


async def migrate(conn: Connection, schema: str) -> list[Migration]:
    """Apply every pending migration to `schema` (created if missing); those applied."""
    await conn.execute("SELECT pg_advisory_lock($1)", _LOCK)
    try:
        await _ensure_table(conn, schema)
        done = set(await applied_versions(conn, schema))
        applied: list[Migration] = []
        for migration in MIGRATIONS:
            if migration.version in done:
                continue
            async with conn.transaction():
                await conn.execute(f'SET LOCAL search_path TO "{schema}"')
                await conn.execute(migration.sql)
                await conn.execute(
                    f'INSERT INTO "{schema}".schema_migrations (version, name) VALUES ($1, $2)',
                    migration.version,
                    migration.name,
                )
            applied.append(migration)
        return applied
    finally:
        await conn.execute("SELECT pg_advisory_unlock($1)", _LOCK)
