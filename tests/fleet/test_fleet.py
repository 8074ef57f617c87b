"""A fleet: three `hybridroute serve` processes on one PostgreSQL schema, sharing budgets through a
Redis server of the test's own (so it can be stopped and started again mid-load), all talking to
one Bedrock simulator process.

Shown here: concurrent traffic spread over the replicas never settles past the budget; a flag
changed through one replica is in force on all within about a second; the fleet's audit chain
verifies; a replica killed with SIGKILL while holding reservations leaks nothing once its leases
expire; Redis stopped mid-load fails non-critical work closed, keeps critical work served, and
after it starts again (empty) the budgets are reloaded from the ledger without a hand on them.
"""

from __future__ import annotations

import asyncio
import json
import secrets
import signal
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from decimal import Decimal
from pathlib import Path
from typing import Any

import asyncpg
import pytest
import yaml

from hybridroute.simulators.bedrock import DEMO_ACCESS_KEY_ID, DEMO_SECRET_ACCESS_KEY
from hybridroute.storage.migrate import migrate
from tests.cli.test_workers import _config, _free_port, _spawn, _wait_ready, processes
from tests.loopback import wait_for

__all__ = ["processes"]

DSN = "postgresql://postgres@127.0.0.1:5432/test"
# A request's worst case (16 output tokens at the dearest route's price) is ~0.0004 USD; its
# actual cost at mcp ~0.00005: a few requests in flight fill the limit.
LIMIT = Decimal("0.003")
ENV = {"SIM_KEY_ID": DEMO_ACCESS_KEY_ID, "SIM_SECRET": DEMO_SECRET_ACCESS_KEY}

pytestmark = pytest.mark.slow


class RedisServer:
    """A redis-server of the test's own, without persistence: a restart starts it empty."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.process = subprocess.Popen(
            ["redis-server", "--port", str(self.port), "--save", "", "--appendonly", "no"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        wait_for(self._answers, timeout=10)

    def _answers(self) -> bool:
        result = subprocess.run(
            ["redis-cli", "-p", str(self.port), "ping"], capture_output=True, text=True, check=False
        )
        return result.stdout.strip() == "PONG"

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(timeout=10)


@pytest.fixture
def redis_server() -> Iterator[RedisServer]:
    server = RedisServer(_free_port())
    server.start()
    yield server
    server.stop()


@pytest.fixture
def schema() -> Iterator[str]:
    name = f"fleet_{secrets.token_hex(4)}"

    async def run(drop: bool) -> None:
        conn = await asyncpg.connect(DSN)
        try:
            if drop:
                await conn.execute(f'DROP SCHEMA IF EXISTS "{name}" CASCADE')
            else:
                await migrate(conn, name)
        finally:
            await conn.close()

    asyncio.run(run(False))
    yield name
    asyncio.run(run(True))


def call(method: str, url: str, body: Any = None, headers: dict[str, str] | None = None) -> Any:
    request = urllib.request.Request(
        url,
        data=None if body is None else json.dumps(body).encode(),
        method=method,
        headers={"content-type": "application/json", "Connection": "close", **(headers or {})},
    )
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            return response.status, json.loads(response.read()), dict(response.headers)
    except urllib.error.HTTPError as error:
        with error:
            return error.code, json.loads(error.read()), dict(error.headers)


def chat(base: str, operation: str, text: str = "fleet") -> tuple[int, str]:
    body = {
        "model": "default",
        "messages": [{"role": "user", "content": text}],
        "max_tokens": 16,
    }
    status, answer, _ = call(
        "POST", f"{base}/v1/chat/completions", body, {"x-operation-type": operation}
    )
    return status, "" if status == 200 else answer["error"]["code"]


def decision(base: str) -> str:
    """Send one standard request; its decision id."""
    body = {"model": "default", "messages": [{"role": "user", "content": "kept?"}], "max_tokens": 4}
    _, _, headers = call(
        "POST", f"{base}/v1/chat/completions", body, {"x-operation-type": "background"}
    )
    return str(headers["x-hybridroute-decision-id"])


def decisions_in_chain(base: str) -> set[str]:
    _, export, _ = call("GET", f"{base}/admin/audit/export?period=all")
    return {
        json.loads(r["data"])["decision_id"] for r in export["records"] if r["kind"] == "decision"
    }


def spent(base: str) -> tuple[Decimal, Decimal]:
    """(spent, reserved) of the global daily budget, as the replica sees it."""
    status, body, _ = call("GET", f"{base}/admin/cost?days=1")
    assert status == 200, body
    (daily,) = [b for b in body["budgets"]["budgets"] if b["period"] == "daily"]
    return Decimal(daily["spent"]), Decimal(daily["reserved"])


def ledger_total(base: str) -> Decimal:
    _, body, _ = call("GET", f"{base}/admin/cost?days=1")
    return Decimal(body["spend"]["total"]["cost"])


def test_a_fleet_of_three_shares_budgets_flags_and_one_audit_chain(
    schema: str,
    redis_server: RedisServer,
    tmp_path: Path,
    processes: list[subprocess.Popen[str]],
) -> None:
    # (fixtures in this order: the replicas stop before Redis and the schema go)
    sim_port = _free_port()
    _spawn(processes, "sim", "bedrock", "--port", str(sim_port))
    bases: list[str] = []
    replicas: list[subprocess.Popen[str]] = []
    configs: list[Path] = []
    for index in range(3):
        port = _free_port()
        path = _config(tmp_path, port, sim_port)
        config = yaml.safe_load(path.read_text())
        # Loopback callers are admins; the test polls the admin API often.
        config["admin"] = {"rate_limit_per_minute": 1_000_000}
        config["storage"] = {
            "backend": "postgres",
            "postgres_dsn": DSN,
            "postgres_schema": schema,
            "flush_interval_ms": 20,
        }
        config["audit"] = {"spool_path": str(tmp_path / f"spool-{index}.jsonl")}
        if index == 2:  # the replica killed below keeps its decisions queued until then
            config["audit"]["flush_interval_ms"] = 60_000
        config["budgets"] = {
            "global": {"daily": str(LIMIT)},
            "redis_url": f"redis://127.0.0.1:{redis_server.port}/0",
            "lease_s": 30,
        }
        own = tmp_path / f"replica-{index}.yaml"
        own.write_text(yaml.safe_dump(config))
        configs.append(own)
        replicas.append(_spawn(processes, "serve", "--config", str(own), env=ENV))
        bases.append(f"http://127.0.0.1:{port}")
    for base in bases:
        _wait_ready(base)

    # 1. Concurrent non-critical traffic over the three replicas: never past the limit.
    def one(n: int) -> tuple[int, str]:
        return chat(bases[n % 3], "standard", f"question {n}")

    with ThreadPoolExecutor(max_workers=9) as pool:
        outcomes = list(pool.map(one, range(150)))
    served = sum(1 for status, _ in outcomes if status == 200)
    refused = [code for status, code in outcomes if status == 429]
    assert served > 0, outcomes[:5]
    assert "budget_throttled" in refused
    wait_for(lambda: all(spent(b)[1] == 0 for b in bases), timeout=10)
    for base in bases:
        settled, _ = spent(base)
        assert settled <= LIMIT, f"{base} settled {settled} > {LIMIT}"
    wait_for(lambda: ledger_total(bases[0]) == spent(bases[0])[0], timeout=10)

    # 2. A flag changed through one replica is in force on all within about a second.
    status, _, _ = call(
        "POST", f"{bases[1]}/admin/feature-flags/bedrock/disable-all", {"reason": "fleet drill"}
    )
    assert status == 200
    started = time.monotonic()

    def all_off() -> bool:
        return all(
            not any(call("GET", f"{b}/admin/feature-flags/bedrock")[1]["flags"].values())
            for b in bases
        )

    wait_for(all_off, timeout=5)
    assert time.monotonic() - started < 1.0
    call("POST", f"{bases[0]}/admin/feature-flags/bedrock/enable-all", {"reason": "back"})
    wait_for(lambda: all(
        all(call("GET", f"{b}/admin/feature-flags/bedrock")[1]["flags"].values()) for b in bases
    ), timeout=5)  # fmt: skip

    # 3. The fleet's audit chain verifies.
    status, integrity, _ = call("GET", f"{bases[2]}/admin/audit/trail-integrity")
    assert status == 200
    assert integrity["ok"], integrity["problems"]

    # 4. SIGKILL a replica holding reservations (slow critical requests): its leases expire
    #    and the reservations are given back by the survivors; the decisions it answered (kept
    #    in its spool, not yet written) are in the chain once it is started again.
    answered = [decision(bases[2]) for _ in range(5)]
    call("PATCH", f"http://127.0.0.1:{sim_port}/_sim/knobs", {"latency_ms": 5000})
    victim = replicas[2]
    with ThreadPoolExecutor(max_workers=3) as pool:
        for _ in range(3):
            pool.submit(chat, bases[2], "emergency")
        wait_for(lambda: spent(bases[0])[1] > 0, timeout=10)
        victim.send_signal(signal.SIGKILL)
    call("PATCH", f"http://127.0.0.1:{sim_port}/_sim/knobs", {"latency_ms": 0})
    assert spent(bases[0])[1] > 0  # still held by the dead replica ...
    wait_for(lambda: spent(bases[0])[1] == 0, timeout=60)  # ... until its leases expire
    assert not set(answered) & decisions_in_chain(bases[0])
    _spawn(processes, "serve", "--config", str(configs[2]), env=ENV)
    _wait_ready(bases[2])
    wait_for(lambda: set(answered) <= decisions_in_chain(bases[0]), timeout=10)
    status, integrity, _ = call("GET", f"{bases[0]}/admin/audit/trail-integrity")
    assert integrity["ok"], integrity["problems"]

    # 5. Redis stopped mid-load: non-critical work fails closed, critical work is served.
    before = spent(bases[0])[0]
    redis_server.stop()
    assert chat(bases[0], "standard") == (503, "storage_unavailable")
    assert chat(bases[1], "emergency")[0] == 200
    # Started again, empty: the replicas reload the budgets from the ledger by themselves.
    redis_server.start()
    wait_for(lambda: spent(bases[0])[0] >= before, timeout=15)
    wait_for(lambda: chat(bases[0], "standard")[1] in ("", "budget_throttled"), timeout=15)
    settled, _ = spent(bases[1])
    assert settled >= before
    assert settled == ledger_total(bases[1]) or settled <= ledger_total(bases[1])
