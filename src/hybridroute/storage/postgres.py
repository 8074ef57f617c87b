"""`PostgresStore`: the record store in PostgreSQL, for a fleet of gateway replicas sharing one
truth: spend and budget events, the operations reports' records, and the control plane's state,
routing-configuration versions and audit chain.

An asyncpg pool on one schema (`storage.postgres_schema`); the schema must be at the package's
migration level (`hybridroute db migrate`) — `open()` says so when it is not. Audit appends from
every replica are serialised by a transaction-scoped advisory lock, taken before the chain's end
is read: one chain for the whole fleet, verified by the same verifier as SQLite.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import asyncpg

from hybridroute.errors import StorageError
from hybridroute.storage.control import (
    AuditRecord,
    ConfigVersionRecord,
    Sealer,
    audit_head,
    chain_end,
)
from hybridroute.storage.migrate import schema_status
from hybridroute.storage.records import (
    AlertEventRecord,
    BudgetEventRecord,
    ChargeRecord,
    GatewayEventRecord,
    SpendRow,
    TrafficHourRecord,
    from_units,
    to_units,
)

__all__ = ["PostgresStore"]

_AUDIT_COLUMNS = "seq, at, kind, actor, subject, data, prev, digest"
_AUDIT_LOCK = 0x6879_6175_6469  # "hyaudi": serialises audit appends across replicas


def _audit(row: Any) -> AuditRecord:
    return AuditRecord(
        int(row["seq"]), row["at"], row["kind"], row["actor"], row["subject"], row["data"],
        row["prev"], row["digest"],
    )  # fmt: skip


class PostgresStore:
    """The record store in a PostgreSQL schema."""

    def __init__(self, dsn: str, schema: str = "hybridroute", *, pool_size: int = 4) -> None:
        self.dsn = dsn
        self.schema = schema
        self._pool_size = pool_size
        self._pool: asyncpg.Pool | None = None

    # -- lifecycle -------------------------------------------------------------------------------

    async def open(self) -> None:
        if self._pool is not None:
            return
        try:
            pool = await asyncpg.create_pool(
                self.dsn,
                min_size=1,
                max_size=self._pool_size,
                server_settings={"search_path": self.schema},
            )
        except (OSError, asyncpg.PostgresError) as exc:
            raise StorageError(f"cannot connect to PostgreSQL ({self.describe()}): {exc}") from exc
        async with pool.acquire() as conn:
            _, pending = await schema_status(conn, self.schema)
        if pending:
            await pool.close()
            raise StorageError(
                f"the PostgreSQL schema {self.schema!r} lacks migrations "
                f"{', '.join(str(v) for v in pending)}; run `hybridroute db migrate` first"
            )
        self._pool = pool

    async def aclose(self) -> None:
        pool, self._pool = self._pool, None
        if pool is not None:
            await pool.close()

    def _ready(self) -> asyncpg.Pool:
        if self._pool is None:
            raise StorageError(f"the PostgreSQL store ({self.describe()}) is not open")
        return self._pool

    async def _execute_many(self, statement: str, rows: Sequence[tuple[Any, ...]]) -> None:
        if not rows:
            return
        try:
            async with self._ready().acquire() as conn, conn.transaction():
                await conn.executemany(statement, rows)
        except (OSError, asyncpg.PostgresError) as exc:
            raise StorageError(f"PostgreSQL store: {exc}") from exc

    async def _fetch(self, query: str, *args: Any) -> list[Any]:
        try:
            async with self._ready().acquire() as conn:
                return list(await conn.fetch(query, *args))
        except (OSError, asyncpg.PostgresError) as exc:
            raise StorageError(f"PostgreSQL store: {exc}") from exc

    # -- the ledger ------------------------------------------------------------------------------

    async def append_charges(self, charges: Sequence[ChargeRecord]) -> None:
        await self._execute_many(
            "INSERT INTO charges (at, day, decision_id, tenant, operation_type, route, model, "
            "kind, input_tokens, output_tokens, estimated, cost_units, currency) "
            "VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)",
            [
                (c.at, c.day, c.decision_id, c.tenant, c.operation_type, c.route, c.model,
                 c.kind, c.input_tokens, c.output_tokens, c.estimated, to_units(c.cost),
                 c.currency)
                for c in charges
            ],
        )  # fmt: skip

    async def append_budget_events(self, events: Sequence[BudgetEventRecord]) -> None:
        await self._execute_many(
            'INSERT INTO budget_events (at, budget, period, "window", threshold, level, kind, '
            "utilisation, spent_units, limit_units, currency) "
            "VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)",
            [
                (e.at, e.budget, e.period, e.window, e.threshold, e.level, e.kind,
                 e.utilisation, to_units(e.spent), to_units(e.limit), e.currency)
                for e in events
            ],
        )  # fmt: skip

    async def spend(self, first_day: str, last_day: str | None = None) -> list[SpendRow]:
        rows = await self._fetch(
            "SELECT day, tenant, route, model, operation_type, "
            "SUM(CASE WHEN kind = 'served' THEN 1 ELSE 0 END) AS requests, COUNT(*) AS charges, "
            "SUM(input_tokens) AS inp, SUM(output_tokens) AS outp, SUM(cost_units) AS cost, "
            "SUM(CASE WHEN estimated THEN cost_units ELSE 0 END) AS estimated "
            "FROM charges WHERE day >= $1 AND day <= $2 "
            "GROUP BY day, tenant, route, model, operation_type "
            "ORDER BY day, tenant, route, model, operation_type",
            first_day,
            last_day or "9999-12-31",
        )
        return [
            SpendRow(
                r["day"], r["tenant"], r["route"], r["model"], r["operation_type"],
                int(r["requests"]), int(r["charges"]), int(r["inp"]), int(r["outp"]),
                from_units(int(r["cost"])), from_units(int(r["estimated"])),
            )
            for r in rows
        ]  # fmt: skip

    async def budget_events(self, since: float) -> list[BudgetEventRecord]:
        rows = await self._fetch(
            'SELECT at, budget, period, "window", threshold, level, kind, utilisation, '
            "spent_units, limit_units, currency FROM budget_events WHERE at >= $1 "
            "ORDER BY at, id",
            since,
        )
        return [
            BudgetEventRecord(
                at=r["at"], budget=r["budget"], period=r["period"], window=r["window"],
                threshold=r["threshold"], level=r["level"], kind=r["kind"],
                utilisation=r["utilisation"], spent=from_units(int(r["spent_units"])),
                limit=from_units(int(r["limit_units"])), currency=r["currency"],
            )
            for r in rows
        ]  # fmt: skip

    async def purge(self, before_day: str) -> int:
        start = dt.datetime.fromisoformat(before_day).replace(tzinfo=dt.UTC).timestamp()
        try:
            async with self._ready().acquire() as conn, conn.transaction():
                removed = 0
                for statement, arg in (
                    ("DELETE FROM charges WHERE day < $1", before_day),
                    ("DELETE FROM budget_events WHERE at < $1", start),
                    ("DELETE FROM alert_events WHERE at < $1", start),
                    ("DELETE FROM gateway_events WHERE at < $1", start),
                    ("DELETE FROM traffic_hours WHERE hour < $1", int(start // 3600)),
                ):
                    status = await conn.execute(statement, arg)
                    removed += int(status.rsplit(" ", 1)[-1])
                return removed
        except (OSError, asyncpg.PostgresError) as exc:
            raise StorageError(f"PostgreSQL store: {exc}") from exc

    # -- the operations store --------------------------------------------------------------------

    async def append_alert_events(self, events: Sequence[AlertEventRecord]) -> None:
        await self._execute_many(
            "INSERT INTO alert_events (at, alert_id, rule, severity, transition, labels, summary, "
            "value, acknowledged_by) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
            [
                (e.at, e.alert_id, e.rule, e.severity, e.transition, e.labels, e.summary,
                 e.value, e.acknowledged_by)
                for e in events
            ],
        )  # fmt: skip

    async def alert_events(self, since: float) -> list[AlertEventRecord]:
        rows = await self._fetch(
            "SELECT at, alert_id, rule, severity, transition, labels, summary, value, "
            "acknowledged_by FROM alert_events WHERE at >= $1 ORDER BY at, id",
            since,
        )
        return [AlertEventRecord(*r.values()) for r in rows]

    async def append_gateway_events(self, events: Sequence[GatewayEventRecord]) -> None:
        await self._execute_many(
            "INSERT INTO gateway_events (at, kind, detail) VALUES ($1, $2, $3)",
            [(e.at, e.kind, e.detail) for e in events],
        )

    async def gateway_events(self, since: float) -> list[GatewayEventRecord]:
        rows = await self._fetch(
            "SELECT at, kind, detail FROM gateway_events WHERE at >= $1 ORDER BY at, id", since
        )
        return [GatewayEventRecord(*r.values()) for r in rows]

    async def last_gateway_event(self, kind: str) -> GatewayEventRecord | None:
        rows = await self._fetch(
            "SELECT at, kind, detail FROM gateway_events WHERE kind = $1 "
            "ORDER BY at DESC, id DESC LIMIT 1",
            kind,
        )
        return GatewayEventRecord(*rows[0].values()) if rows else None

    async def put_traffic_hours(self, hours: Sequence[TrafficHourRecord]) -> None:
        await self._execute_many(
            "INSERT INTO traffic_hours (hour, data) VALUES ($1, $2) "
            "ON CONFLICT (hour) DO UPDATE SET data = excluded.data",
            [(h.hour, h.data) for h in hours],
        )

    async def traffic_hours(self, first_hour: int, last_hour: int) -> list[TrafficHourRecord]:
        rows = await self._fetch(
            "SELECT hour, data FROM traffic_hours WHERE hour >= $1 AND hour <= $2 ORDER BY hour",
            first_hour,
            last_hour,
        )
        return [TrafficHourRecord(int(r["hour"]), r["data"]) for r in rows]

    # -- the control store -----------------------------------------------------------------------

    async def get_state(self, key: str) -> str | None:
        rows = await self._fetch("SELECT value FROM control_state WHERE key = $1", key)
        return str(rows[0]["value"]) if rows else None

    async def put_state(self, key: str, value: str) -> None:
        await self._execute_many(
            "INSERT INTO control_state (key, value) VALUES ($1, $2) "
            "ON CONFLICT (key) DO UPDATE SET value = excluded.value",
            [(key, value)],
        )

    async def delete_state(self, key: str) -> bool:
        rows = await self._fetch("DELETE FROM control_state WHERE key = $1 RETURNING key", key)
        return bool(rows)

    async def append_config_version(self, record: ConfigVersionRecord) -> None:
        try:
            async with self._ready().acquire() as conn:
                await conn.execute(
                    "INSERT INTO config_versions (version, at, author, comment, document, diff) "
                    "VALUES ($1, $2, $3, $4, $5, $6)",
                    record.version, record.at, record.author, record.comment, record.document,
                    record.diff,
                )  # fmt: skip
        except asyncpg.UniqueViolationError:
            raise StorageError(
                f"routing configuration version {record.version} already exists"
            ) from None
        except (OSError, asyncpg.PostgresError) as exc:
            raise StorageError(f"PostgreSQL store: {exc}") from exc

    async def config_versions(self) -> list[ConfigVersionRecord]:
        rows = await self._fetch(
            "SELECT version, at, author, comment, document, diff FROM config_versions "
            "ORDER BY version"
        )
        return [ConfigVersionRecord(*r.values()) for r in rows]

    async def append_audit(self, seal: Sealer, head_key: str, anchor_key: str) -> list[AuditRecord]:
        try:
            async with self._ready().acquire() as conn, conn.transaction():
                await conn.execute("SELECT pg_advisory_xact_lock($1)", _AUDIT_LOCK)
                last = await conn.fetchrow(
                    f"SELECT {_AUDIT_COLUMNS} FROM audit_records ORDER BY id DESC LIMIT 1"
                )
                state = {
                    r["key"]: r["value"]
                    for r in await conn.fetch(
                        "SELECT key, value FROM control_state WHERE key = ANY($1::text[])",
                        [head_key, anchor_key],
                    )
                }
                end = chain_end(
                    None if last is None else _audit(last),
                    state.get(head_key),
                    state.get(anchor_key),
                )
                records = seal(*end)
                await conn.executemany(
                    f"INSERT INTO audit_records ({_AUDIT_COLUMNS}) "
                    "VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
                    [(r.seq, r.at, r.kind, r.actor, r.subject, r.data, r.prev, r.digest)
                     for r in records],
                )  # fmt: skip
                if records:
                    await conn.execute(
                        "INSERT INTO control_state (key, value) VALUES ($1, $2) "
                        "ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                        head_key,
                        audit_head(records[-1]),
                    )
                return records
        except (OSError, asyncpg.PostgresError) as exc:
            raise StorageError(f"PostgreSQL store: {exc}") from exc

    async def audit_records(
        self, after_seq: int = 0, since: float | None = None, until: float | None = None
    ) -> list[AuditRecord]:
        rows = await self._fetch(
            f"SELECT {_AUDIT_COLUMNS} FROM audit_records WHERE seq > $1 AND at >= $2 AND at < $3 "
            "ORDER BY id",
            after_seq,
            -1e300 if since is None else since,
            1e300 if until is None else until,
        )
        return [_audit(r) for r in rows]

    async def last_audit(self) -> AuditRecord | None:
        rows = await self._fetch(
            f"SELECT {_AUDIT_COLUMNS} FROM audit_records ORDER BY id DESC LIMIT 1"
        )
        return _audit(rows[0]) if rows else None

    async def purge_audit(self, before: float, anchor_key: str) -> AuditRecord | None:
        try:
            async with self._ready().acquire() as conn, conn.transaction():
                await conn.execute("SELECT pg_advisory_xact_lock($1)", _AUDIT_LOCK)
                row = await conn.fetchrow(
                    f"SELECT id, {_AUDIT_COLUMNS} FROM audit_records WHERE at < $1 "
                    "ORDER BY id DESC LIMIT 1",
                    before,
                )
                if row is None:
                    return None
                await conn.execute("DELETE FROM audit_records WHERE id <= $1", row["id"])
                last = _audit(row)
                await conn.execute(
                    "INSERT INTO control_state (key, value) VALUES ($1, $2) "
                    "ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                    anchor_key,
                    audit_head(last),
                )
                return last
        except (OSError, asyncpg.PostgresError) as exc:
            raise StorageError(f"PostgreSQL store: {exc}") from exc

    # -- change notification (LISTEN/NOTIFY) ------------------------------------------------------

    @property
    def _channel(self) -> str:
        return f"{self.schema}_control"

    async def notify_change(self, revision: str) -> None:
        """Tell every replica listening that the control state moved on."""
        try:
            async with self._ready().acquire() as conn:
                await conn.execute("SELECT pg_notify($1, $2)", self._channel, revision)
        except (OSError, asyncpg.PostgresError) as exc:
            raise StorageError(f"PostgreSQL store: {exc}") from exc

    async def listen_changes(self, heard: Callable[[str], None]) -> Callable[[], Awaitable[None]]:
        """Call `heard(revision)` on every change notification; returns what stops listening.
        The listening connection is its own (a pooled one could be handed to a query)."""
        conn = await asyncpg.connect(self.dsn, server_settings={"search_path": self.schema})

        def on_notice(_conn: Any, _pid: int, _channel: str, payload: object) -> None:
            heard(str(payload))

        await conn.add_listener(self._channel, on_notice)

        async def stop() -> None:
            await conn.close()

        return stop

    def describe(self) -> str:
        where = self.dsn.split("@")[-1]  # never the password
        return f"PostgreSQL {where}, schema {self.schema}"

    def __repr__(self) -> str:
        return f"<PostgresStore {self.describe()}>"
