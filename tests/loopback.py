"""Loopback peers for tests: the two simulators and gateways served over real HTTP.

The simulators run for the whole session (each in its own thread and event loop, like a separate
process); their knobs and stats are reset before every test. Gateways are built per test or per
module from the embedded default config pointed at these simulators.
"""

from __future__ import annotations

import contextlib
import copy
import json
import secrets
import time
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import pytest

from hybridroute.app import GatewayApp, create_app
from hybridroute.config.load import parse_config
from hybridroute.demo.config import embedded_config_data
from hybridroute.serving import ThreadedServer
from hybridroute.simulators.bedrock import (
    DEMO_ACCESS_KEY_ID,
    DEMO_SECRET_ACCESS_KEY,
    create_bedrock_app,
)
from hybridroute.simulators.knobs import Knobs
from hybridroute.simulators.mcp_server import create_mcp_http_app
from hybridroute.simulators.stats import Stats


@dataclass
class Simulator:
    url: str
    knobs: Knobs
    stats: Stats

    def set(self, **values: Any) -> None:
        self.knobs.update(values)

    def requests(self) -> int:
        return self.stats.requests


@pytest.fixture(scope="session")
def bedrock_sim() -> Iterator[Simulator]:
    knobs, stats = Knobs(), Stats()
    app = create_bedrock_app(
        knobs, stats=stats, credentials={DEMO_ACCESS_KEY_ID: DEMO_SECRET_ACCESS_KEY}, seed=7
    )
    with ThreadedServer(app, name="bedrock-sim") as server:
        yield Simulator(server.url, knobs, stats)


@pytest.fixture(scope="session")
def mcp_sim() -> Iterator[Simulator]:
    knobs, stats = Knobs(), Stats()
    app = create_mcp_http_app(knobs, stats=stats, seed=7)
    with ThreadedServer(app, name="mcp-sim") as server:
        yield Simulator(server.url, knobs, stats)


@pytest.fixture(autouse=True)
def _fresh_simulators(request: pytest.FixtureRequest) -> None:
    for name in ("bedrock_sim", "mcp_sim"):
        if name in request.fixturenames:
            sim: Simulator = request.getfixturevalue(name)
            sim.knobs.reset()
            sim.stats.clear()


def gateway_config_data(bedrock_sim: Simulator, mcp_sim: Simulator) -> dict[str, Any]:
    data = embedded_config_data(bedrock_url=bedrock_sim.url, mcp_url=f"{mcp_sim.url}/mcp")
    # Tests that count requests at the simulators must not see stray health probes; the probe
    # tests set their own interval.
    data["health"] = {"probe_interval_s": 3600, "probe_timeout_s": 2}
    # Spend is kept in memory: tests that need it on disk set their own storage.
    data["storage"] = {"backend": "memory", "flush_interval_ms": 20}
    # Routing tests repeat identical requests and must reach the routes: the cache tests turn
    # the response cache on.
    data["cache"] = {"enabled": False}
    return data


@dataclass
class RunningGateway:
    url: str
    app: GatewayApp

    @property
    def runtime(self) -> Any:
        assert self.app.runtime is not None
        return self.app.runtime

    def get(self, path: str) -> tuple[int, dict[str, Any]]:
        try:
            with urllib.request.urlopen(self.url + path, timeout=10) as response:
                return response.status, json.loads(response.read())
        except urllib.error.HTTPError as error:
            return error.code, json.loads(error.read())

    def wait_ready(self, *, all_routes: bool = True, timeout: float = 15.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            status, body = self.get("/ready")
            routes = body.get("routes", {})
            if status == 200 and (not all_routes or all(r["ready"] for r in routes.values())):
                return
            time.sleep(0.05)  # noqa: TID251 - synchronous polling from the test thread
        raise AssertionError(f"gateway not ready after {timeout}s: {body}")


GatewayFactory = Callable[..., RunningGateway]


def launch(data: dict[str, Any]) -> tuple[RunningGateway, ThreadedServer]:
    """Serve a gateway built from config data, once it is ready (the caller stops it)."""
    app = create_app(parse_config(data))
    server = ThreadedServer(app, name="gateway").start()
    gateway = RunningGateway(server.url, app)
    try:
        gateway.wait_ready()
    except BaseException:
        server.stop()
        raise
    return gateway, server


@contextlib.contextmanager
def serving(data: dict[str, Any]) -> Iterator[RunningGateway]:
    """A gateway the test starts and stops itself (to restart it on the same store, or to
    share one across a module)."""
    gateway, server = launch(data)
    try:
        yield gateway
    finally:
        server.stop()


@pytest.fixture
def start_gateway(bedrock_sim: Simulator, mcp_sim: Simulator) -> Iterator[GatewayFactory]:
    """Start a gateway on the simulators; `changes` are merged into the config data."""
    servers: list[ThreadedServer] = []

    def start(changes: Callable[[dict[str, Any]], None] | None = None) -> RunningGateway:
        data = copy.deepcopy(gateway_config_data(bedrock_sim, mcp_sim))
        if changes is not None:
            changes(data)
        gateway, server = launch(data)
        servers.append(server)
        return gateway

    yield start
    for server in servers:
        server.stop()


@pytest.fixture
def gateway(start_gateway: GatewayFactory) -> RunningGateway:
    return start_gateway()


REDIS_URL = "redis://127.0.0.1:6379/0"


@pytest.fixture
def redis_prefix() -> Iterator[str]:
    """A key prefix of this test's own in the machine's Redis, its keys deleted afterwards."""
    import redis

    name = f"test-{secrets.token_hex(4)}"
    yield name
    client = redis.Redis.from_url(REDIS_URL)
    keys = list(client.scan_iter(f"{name}:*"))
    if keys:
        client.delete(*keys)
    client.close()


def wait_for(check: Callable[[], bool], timeout: float) -> float:
    """Poll `check` from the test thread until it holds; the seconds it took."""
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        if check():
            return time.monotonic() - started
        time.sleep(0.02)  # noqa: TID251 - polling from the test thread
    raise AssertionError(f"condition not met within {timeout}s")
