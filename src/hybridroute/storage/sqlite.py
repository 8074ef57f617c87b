"""`SqliteLedgerStore`: charges and budget events in a SQLite file (the embedded default), and
beside them the operations store's alert transitions, gateway events and hourly traffic.

One connection, used from worker threads one call at a time (a lock serialises them), in WAL
mode with `synchronous=NORMAL`: a committed write survives a crash of the gateway process. Costs
are stored as integer counts of 10^-10 of the currency, so SQL sums are exact. The schema
version is kept in `PRAGMA user_version`; `open()` creates or upgrades it.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import sqlite3
import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TypeVar

from hybridroute.errors import StorageError
from hybridroute.storage.control import (
    AuditRecord,
    ConfigVersionRecord,
    Sealer,
    audit_head,
    chain_end,
)
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

__all__ = ["SqliteLedgerStore"]

_AUDIT_COLUMNS = "seq, at, kind, actor, subject, data, prev, digest"

T = TypeVar("T")

_SCHEMA_VERSION = 2
_SCHEMA = """
CREATE TABLE IF NOT EXISTS charges (
    id INTEGER PRIMARY KEY,
    at REAL NOT NULL,
    day TEXT NOT NULL,
    decision_id TEXT NOT NULL,
    tenant TEXT NOT NULL,
    operation_type TEXT NOT NULL,
    route TEXT NOT NULL,
    model TEXT NOT NULL,
    kind TEXT NOT NULL,
    input_tokens INTEGER NOT NULL,
    output_tokens INTEGER NOT NULL,
    estimated INTEGER NOT NULL,
    cost_units INTEGER NOT NULL,
    currency TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS charges_by_day ON charges (day);
CREATE TABLE IF NOT EXISTS budget_events (
    id INTEGER PRIMARY KEY,
    at REAL NOT NULL,
    budget TEXT NOT NULL,
    period TEXT NOT NULL,
    window TEXT NOT NULL,
    threshold TEXT NOT NULL,
    level REAL NOT NULL,
    kind TEXT NOT NULL,
    utilisation REAL NOT NULL,
    spent_units INTEGER NOT NULL,
    limit_units INTEGER NOT NULL,
    currency TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS budget_events_by_time ON budget_events (at);
CREATE TABLE IF NOT EXISTS alert_events (
    id INTEGER PRIMARY KEY,
    at REAL NOT NULL,
    alert_id TEXT NOT NULL,
    rule TEXT NOT NULL,
    severity TEXT NOT NULL,
    transition TEXT NOT NULL,
    labels TEXT NOT NULL,
    summary TEXT NOT NULL,
    value REAL,
    acknowledged_by TEXT
);
CREATE INDEX IF NOT EXISTS alert_events_by_time ON alert_events (at);
CREATE TABLE IF NOT EXISTS gateway_events (
    id INTEGER PRIMARY KEY,
    at REAL NOT NULL,
    kind TEXT NOT NULL,
    detail TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS gateway_events_by_time ON gateway_events (at);
CREATE TABLE IF NOT EXISTS traffic_hours (
    hour INTEGER PRIMARY KEY,
    data TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS control_state (
    key TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS config_versions (
    version INTEGER PRIMARY KEY,
    at REAL NOT NULL,
    author TEXT NOT NULL,
    comment TEXT NOT NULL,
    document TEXT NOT NULL,
    diff TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS audit_records (
    id INTEGER PRIMARY KEY,
    seq INTEGER NOT NULL,
    at REAL NOT NULL,
    kind TEXT NOT NULL,
    actor TEXT NOT NULL,
    subject TEXT,
    data TEXT NOT NULL,
    prev TEXT NOT NULL,
    digest TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS audit_records_by_time ON audit_records (at);
"""


class SqliteLedgerStore:
    """The ledger store in one SQLite file."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._conn: sqlite3.Connection | None = None
        self._lock = threading.Lock()

    # -- lifecycle -------------------------------------------------------------------------------

    async def open(self) -> None:
        if self._conn is None:
            self._conn = await asyncio.to_thread(self._connect)

    def _connect(self) -> sqlite3.Connection:
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            conn = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
        except (OSError, sqlite3.Error) as exc:
            raise self._cannot_open(exc) from exc
        try:
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=NORMAL")
            version = conn.execute("PRAGMA user_version").fetchone()[0]
            if version > _SCHEMA_VERSION:
                conn.close()
                raise StorageError(
                    f"the SQLite store {self.path} has schema version {version}, newer than "
                    f"this gateway knows ({_SCHEMA_VERSION}); run a newer hybridroute or point "
                    "storage.sqlite_path elsewhere"
                )
            conn.executescript(_SCHEMA)
            conn.execute(f"PRAGMA user_version={_SCHEMA_VERSION}")
        except (OSError, sqlite3.Error) as exc:
            conn.close()
            raise self._cannot_open(exc) from exc
        return conn

    def _cannot_open(self, exc: Exception) -> StorageError:
        return StorageError(
            f"cannot open the SQLite store at {self.path}: {exc}; check that the directory "
            "is writable and the file is a hybridroute store, or set storage.sqlite_path (or "
            "storage.backend: memory)"
        )

    async def aclose(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            await asyncio.to_thread(self._locked, conn.close)

    def _locked(self, fn: Callable[[], T]) -> T:
        with self._lock:
            return fn()

    async def _run(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        conn = self._conn
        if conn is None:
            raise StorageError(f"the SQLite store {self.path} is not open")

        def call() -> T:
            try:
                return fn(conn)
            except sqlite3.Error as exc:
                raise StorageError(f"SQLite store {self.path}: {exc}") from exc

        return await asyncio.to_thread(self._locked, call)

    # -- writes ----------------------------------------------------------------------------------

    async def append_charges(self, charges: Sequence[ChargeRecord]) -> None:
        rows = [
            (
                c.at,
                c.day,
                c.decision_id,
                c.tenant,
                c.operation_type,
                c.route,
                c.model,
                c.kind,
                c.input_tokens,
                c.output_tokens,
                int(c.estimated),
                to_units(c.cost),
                c.currency,
            )
            for c in charges
        ]

        await self._insert(
            "charges",
            "at, day, decision_id, tenant, operation_type, route, model, kind, input_tokens, "
            "output_tokens, estimated, cost_units, currency",
            rows,
        )

    async def append_budget_events(self, events: Sequence[BudgetEventRecord]) -> None:
        rows = [
            (
                e.at,
                e.budget,
                e.period,
                e.window,
                e.threshold,
                e.level,
                e.kind,
                e.utilisation,
                to_units(e.spent),
                to_units(e.limit),
                e.currency,
            )
            for e in events
        ]

        await self._insert(
            "budget_events",
            "at, budget, period, window, threshold, level, kind, utilisation, spent_units, "
            "limit_units, currency",
            rows,
        )

    async def _insert(self, table: str, columns: str, rows: Sequence[tuple[object, ...]]) -> None:
        """Insert rows in one transaction (all or none)."""
        if not rows:
            return
        marks = ", ".join("?" * len(rows[0]))
        statement = f"INSERT INTO {table} ({columns}) VALUES ({marks})"

        def write(conn: sqlite3.Connection) -> None:
            with conn:
                conn.execute("BEGIN")
                conn.executemany(statement, rows)

        await self._run(write)

    # -- reads -----------------------------------------------------------------------------------

    async def spend(self, first_day: str, last_day: str | None = None) -> list[SpendRow]:
        def read(conn: sqlite3.Connection) -> list[SpendRow]:
            query = (
                "SELECT day, tenant, route, model, operation_type, "
                "SUM(kind = 'served'), COUNT(*), SUM(input_tokens), SUM(output_tokens), "
                "SUM(cost_units), SUM(CASE WHEN estimated THEN cost_units ELSE 0 END) "
                "FROM charges WHERE day >= ? AND day <= ? "
                "GROUP BY day, tenant, route, model, operation_type "
                "ORDER BY day, tenant, route, model, operation_type"
            )
            found = conn.execute(query, (first_day, last_day or "9999-12-31")).fetchall()
            return [
                SpendRow(
                    day,
                    tenant,
                    route,
                    model,
                    op,
                    int(requests),
                    int(charges),
                    int(inp),
                    int(out),
                    from_units(int(cost)),
                    from_units(int(estimated)),
                )
                for day, tenant, route, model, op, requests, charges, inp, out, cost, estimated in (
                    found
                )
            ]

        return await self._run(read)

    async def budget_events(self, since: float) -> list[BudgetEventRecord]:
        def read(conn: sqlite3.Connection) -> list[BudgetEventRecord]:
            found = conn.execute(
                "SELECT at, budget, period, window, threshold, level, kind, utilisation, "
                "spent_units, limit_units, currency FROM budget_events WHERE at >= ? "
                "ORDER BY at, id",
                (since,),
            ).fetchall()
            return [
                BudgetEventRecord(
                    at=row[0],
                    budget=row[1],
                    period=row[2],
                    window=row[3],
                    threshold=row[4],
                    level=row[5],
                    kind=row[6],
                    utilisation=row[7],
                    spent=from_units(row[8]),
                    limit=from_units(row[9]),
                    currency=row[10],
                )
                for row in found
            ]

        return await self._run(read)

    async def purge(self, before_day: str) -> int:
        def delete(conn: sqlite3.Connection) -> int:
            with conn:
                conn.execute("BEGIN")
                charges = conn.execute("DELETE FROM charges WHERE day < ?", (before_day,))
                start = dt.datetime.fromisoformat(before_day).replace(tzinfo=dt.UTC).timestamp()
                events = conn.execute("DELETE FROM budget_events WHERE at < ?", (start,))
                removed = charges.rowcount + events.rowcount
                for table in ("alert_events", "gateway_events"):
                    removed += conn.execute(f"DELETE FROM {table} WHERE at < ?", (start,)).rowcount
                removed += conn.execute(
                    "DELETE FROM traffic_hours WHERE hour < ?", (int(start // 3600),)
                ).rowcount
                return int(removed)

        return await self._run(delete)

    # -- the operations store --------------------------------------------------------------------

    async def append_alert_events(self, events: Sequence[AlertEventRecord]) -> None:
        await self._insert(
            "alert_events",
            "at, alert_id, rule, severity, transition, labels, summary, value, acknowledged_by",
            [
                (e.at, e.alert_id, e.rule, e.severity, e.transition, e.labels, e.summary,
                 e.value, e.acknowledged_by)
                for e in events
            ],
        )  # fmt: skip

    async def alert_events(self, since: float) -> list[AlertEventRecord]:
        def read(conn: sqlite3.Connection) -> list[AlertEventRecord]:
            rows = conn.execute(
                "SELECT at, alert_id, rule, severity, transition, labels, summary, value, "
                "acknowledged_by FROM alert_events WHERE at >= ? ORDER BY at, id",
                (since,),
            ).fetchall()
            return [AlertEventRecord(*row) for row in rows]

        return await self._run(read)

    async def append_gateway_events(self, events: Sequence[GatewayEventRecord]) -> None:
        await self._insert(
            "gateway_events", "at, kind, detail", [(e.at, e.kind, e.detail) for e in events]
        )

    async def gateway_events(self, since: float) -> list[GatewayEventRecord]:
        def read(conn: sqlite3.Connection) -> list[GatewayEventRecord]:
            rows = conn.execute(
                "SELECT at, kind, detail FROM gateway_events WHERE at >= ? ORDER BY at, id",
                (since,),
            ).fetchall()
            return [GatewayEventRecord(*row) for row in rows]

        return await self._run(read)

    async def last_gateway_event(self, kind: str) -> GatewayEventRecord | None:
        def read(conn: sqlite3.Connection) -> GatewayEventRecord | None:
            row = conn.execute(
                "SELECT at, kind, detail FROM gateway_events WHERE kind = ? "
                "ORDER BY at DESC, id DESC LIMIT 1",
                (kind,),
            ).fetchone()
            return None if row is None else GatewayEventRecord(*row)

        return await self._run(read)

    async def put_traffic_hours(self, hours: Sequence[TrafficHourRecord]) -> None:
        rows = [(h.hour, h.data) for h in hours]

        def write(conn: sqlite3.Connection) -> None:
            with conn:
                conn.execute("BEGIN")
                conn.executemany(
                    "INSERT INTO traffic_hours (hour, data) VALUES (?, ?) "
                    "ON CONFLICT (hour) DO UPDATE SET data = excluded.data",
                    rows,
                )

        if rows:
            await self._run(write)

    async def traffic_hours(self, first_hour: int, last_hour: int) -> list[TrafficHourRecord]:
        def read(conn: sqlite3.Connection) -> list[TrafficHourRecord]:
            rows = conn.execute(
                "SELECT hour, data FROM traffic_hours WHERE hour >= ? AND hour <= ? ORDER BY hour",
                (first_hour, last_hour),
            ).fetchall()
            return [TrafficHourRecord(int(hour), data) for hour, data in rows]

        return await self._run(read)

    # -- the control store -----------------------------------------------------------------------

    async def get_state(self, key: str) -> str | None:
        def read(conn: sqlite3.Connection) -> str | None:
            row = conn.execute("SELECT value FROM control_state WHERE key = ?", (key,)).fetchone()
            return None if row is None else str(row[0])

        return await self._run(read)

    async def put_state(self, key: str, value: str) -> None:
        def write(conn: sqlite3.Connection) -> None:
            with conn:
                conn.execute("BEGIN")
                _put_state(conn, key, value)

        await self._run(write)

    async def delete_state(self, key: str) -> bool:
        def delete(conn: sqlite3.Connection) -> bool:
            with conn:
                conn.execute("BEGIN")
                return conn.execute("DELETE FROM control_state WHERE key = ?", (key,)).rowcount > 0

        return await self._run(delete)

    async def append_config_version(self, record: ConfigVersionRecord) -> None:
        def write(conn: sqlite3.Connection) -> None:
            with conn:
                conn.execute("BEGIN")
                if conn.execute(
                    "SELECT 1 FROM config_versions WHERE version = ?", (record.version,)
                ).fetchone():
                    raise StorageError(
                        f"routing configuration version {record.version} already exists"
                    )
                conn.execute(
                    "INSERT INTO config_versions (version, at, author, comment, document, diff) "
                    "VALUES (?, ?, ?, ?, ?, ?)",
                    (record.version, record.at, record.author, record.comment,
                     record.document, record.diff),
                )  # fmt: skip

        await self._run(write)

    async def config_versions(self) -> list[ConfigVersionRecord]:
        def read(conn: sqlite3.Connection) -> list[ConfigVersionRecord]:
            rows = conn.execute(
                "SELECT version, at, author, comment, document, diff FROM config_versions "
                "ORDER BY version"
            ).fetchall()
            return [ConfigVersionRecord(*row) for row in rows]

        return await self._run(read)

    async def append_audit(self, seal: Sealer, head_key: str, anchor_key: str) -> list[AuditRecord]:
        def write(conn: sqlite3.Connection) -> list[AuditRecord]:
            with conn:
                # IMMEDIATE: the write lock from the first read, so another process cannot
                # append between finding the chain's end and appending after it.
                conn.execute("BEGIN IMMEDIATE")
                row = conn.execute(
                    f"SELECT {_AUDIT_COLUMNS} FROM audit_records ORDER BY id DESC LIMIT 1"
                ).fetchone()
                last = None if row is None else AuditRecord(*row)
                end = chain_end(last, _get_state(conn, head_key), _get_state(conn, anchor_key))
                records = seal(*end)
                conn.executemany(
                    "INSERT INTO audit_records (seq, at, kind, actor, subject, data, prev, digest) "
                    "VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                    [(r.seq, r.at, r.kind, r.actor, r.subject, r.data, r.prev, r.digest)
                     for r in records],
                )  # fmt: skip
                if records:
                    _put_state(conn, head_key, audit_head(records[-1]))
                return records

        return await self._run(write)

    async def audit_records(
        self, after_seq: int = 0, since: float | None = None, until: float | None = None
    ) -> list[AuditRecord]:
        def read(conn: sqlite3.Connection) -> list[AuditRecord]:
            rows = conn.execute(
                f"SELECT {_AUDIT_COLUMNS} FROM audit_records WHERE seq > ? AND at >= ? AND at < ? "
                "ORDER BY id",
                (after_seq, -1e300 if since is None else since, 1e300 if until is None else until),
            ).fetchall()
            return [AuditRecord(*row) for row in rows]

        return await self._run(read)

    async def last_audit(self) -> AuditRecord | None:
        def read(conn: sqlite3.Connection) -> AuditRecord | None:
            row = conn.execute(
                f"SELECT {_AUDIT_COLUMNS} FROM audit_records ORDER BY id DESC LIMIT 1"
            ).fetchone()
            return None if row is None else AuditRecord(*row)

        return await self._run(read)

    async def purge_audit(self, before: float, anchor_key: str) -> AuditRecord | None:
        def delete(conn: sqlite3.Connection) -> AuditRecord | None:
            with conn:
                conn.execute("BEGIN")
                # The chain's prefix: every record up to the last one older than `before`.
                row = conn.execute(
                    f"SELECT id, {_AUDIT_COLUMNS} FROM audit_records WHERE at < ? "
                    "ORDER BY id DESC LIMIT 1",
                    (before,),
                ).fetchone()
                if row is None:
                    return None
                conn.execute("DELETE FROM audit_records WHERE id <= ?", (row[0],))
                last = AuditRecord(*row[1:])
                _put_state(conn, anchor_key, audit_head(last))
                return last

        return await self._run(delete)

    def describe(self) -> str:
        return f"SQLite file {self.path.resolve()}"

    def __repr__(self) -> str:
        return f"<SqliteLedgerStore {self.path}>"


def _get_state(conn: sqlite3.Connection, key: str) -> str | None:
    row = conn.execute("SELECT value FROM control_state WHERE key = ?", (key,)).fetchone()
    return None if row is None else str(row[0])


def _put_state(conn: sqlite3.Connection, key: str, value: str) -> None:
    conn.execute(
        "INSERT INTO control_state (key, value) VALUES (?, ?) "
        "ON CONFLICT (key) DO UPDATE SET value = excluded.value",
        (key, value),
    )
