"""Two gateway replicas on one PostgreSQL schema (the machine's real server): a flag changed
through one is in force on the other within about a second, both write one audit chain that
verifies, spend from both lands in one ledger, and a replica started later continues it all."""

from __future__ import annotations

import asyncio
import secrets
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import asyncpg
import httpx2 as httpx
import pytest

from hybridroute.storage.migrate import migrate
from tests.loopback import GatewayFactory, RunningGateway, wait_for

DSN = "postgresql://postgres@127.0.0.1:5432/test"
CHAT = {"model": "default", "messages": [{"role": "user", "content": "fleet check"}]}


@pytest.fixture
def schema() -> Iterator[str]:
    name = f"fleet_{secrets.token_hex(4)}"

    async def run(statement: str | None) -> None:
        conn = await asyncpg.connect(DSN)
        try:
            if statement is None:
                await migrate(conn, name)
            else:
                await conn.execute(statement)
        finally:
            await conn.close()

    asyncio.run(run(None))
    yield name
    asyncio.run(run(f'DROP SCHEMA "{name}" CASCADE'))


def route_of(gateway: RunningGateway, operation: str) -> str:
    response = httpx.post(
        gateway.url + "/v1/chat/completions",
        json=CHAT,
        headers={"x-operation-type": operation},
        timeout=30,
    )
    assert response.status_code == 200, response.text
    return str(response.headers["x-hybridroute-route"])


def test_two_replicas_share_flags_audit_and_spend(
    schema: str, start_gateway: GatewayFactory, tmp_path: Path
):
    # (`schema` first: it is dropped only after the gateways have stopped)
    spools = iter(range(10))

    def on_postgres(data: dict[str, Any]) -> None:
        data["audit"] = {"spool_path": str(tmp_path / f"spool-{next(spools)}.jsonl")}
        data["storage"] = {
            "backend": "postgres",
            "postgres_dsn": DSN,
            "postgres_schema": schema,
            "flush_interval_ms": 20,
        }

    first, second = start_gateway(on_postgres), start_gateway(on_postgres)
    assert route_of(first, "emergency") == "direct_bedrock"
    assert route_of(second, "emergency") == "direct_bedrock"

    changed = httpx.post(
        first.url + "/admin/feature-flags/bedrock/disable-all", json={"reason": "fleet drill"}
    )
    assert changed.status_code == 200, changed.text
    started = time.monotonic()
    wait_for(lambda: not second.runtime.flags.current().intelligent_routing, timeout=5)
    assert time.monotonic() - started < 1.0  # in force on the other replica within 1 s
    assert route_of(second, "emergency") == "mcp"

    for _ in range(3):
        route_of(first, "standard")
        route_of(second, "standard")

    # Both replicas' decisions and the flag change are one chain.
    def kinds() -> list[str]:
        exported = httpx.get(first.url + "/admin/audit/export", params={"period": "all"}).json()
        return [r["kind"] for r in exported["records"]]

    wait_for(lambda: kinds().count("decision") == 9, timeout=5)
    assert kinds().count("flags_changed") == 1
    integrity = httpx.get(second.url + "/admin/audit/trail-integrity").json()
    assert integrity["ok"], integrity["problems"]

    # Spend from both replicas is one ledger.
    def total() -> int:
        body = httpx.get(first.url + "/admin/cost", params={"days": 1}).json()
        return int(body["spend"]["total"]["requests"])

    wait_for(lambda: total() == 9, timeout=5)

    # A third replica starting later applies the fleet's flags and continues the chain.
    third = start_gateway(on_postgres)
    assert not third.runtime.flags.current().intelligent_routing
    assert route_of(third, "emergency") == "mcp"
    wait_for(lambda: kinds().count("decision") == 10, timeout=5)
    assert httpx.get(third.url + "/admin/audit/trail-integrity").json()["ok"]
