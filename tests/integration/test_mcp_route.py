"""The MCP route's real client code (official MCP SDK) against the MCP simulator, over both
transports: stdio (a spawned server process) and streamable HTTP."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest

from hybridroute._clock import SystemClock
from hybridroute._tasks import TaskSupervisor
from hybridroute.config.schema import McpRouteConfig
from hybridroute.errors import (
    UpstreamModelError,
    UpstreamProtocolError,
    UpstreamTimeout,
    UpstreamUnavailable,
)
from hybridroute.providers.mcp import McpRoute
from hybridroute.providers.mcp.session import SessionState
from hybridroute.signals import HealthStatus
from hybridroute.types import (
    ChatMessage,
    GenerationRequest,
    Priority,
    StreamEnd,
    StreamStart,
    TextDelta,
)
from tests.loopback import Simulator

pytestmark = pytest.mark.anyio

REQUEST = GenerationRequest(
    operation_type="standard",
    priority=Priority.MEDIUM,
    system=("Be kind.",),
    messages=(ChatMessage("user", "Summarise the incident"),),
    max_tokens=200,
    temperature=0.7,
    top_p=None,
    stop=(),
    decision_id="dec-mcp",
    requested_model="default",
)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def stdio_config(seed: int, control_port: int, **changes: object) -> McpRouteConfig:
    data: dict[str, object] = {
        "type": "mcp",
        "transport": "stdio",
        "command": [
            sys.executable,
            "-m",
            "hybridroute.simulators.mcp_server",
            "--stdio",
            "--seed",
            str(seed),
            "--control-port",
            str(control_port),
        ],
        "region": "eu-central-1",
        "reconnect_initial_ms": 50,
        "reconnect_max_ms": 200,
    }
    data.update(changes)
    return McpRouteConfig.model_validate(data)


def http_config(url: str, **changes: object) -> McpRouteConfig:
    data: dict[str, object] = {"type": "mcp", "transport": "streamable_http", "url": url}
    data.update(changes)
    return McpRouteConfig.model_validate(data)


@contextlib.asynccontextmanager
async def started(config: McpRouteConfig) -> AsyncIterator[McpRoute]:
    supervisor = TaskSupervisor("test")
    route = McpRoute("mcp", config, clock=SystemClock(), supervisor=supervisor)
    await route.start()
    try:
        yield route
    finally:
        await route.aclose()
        await supervisor.aclose()


async def set_knobs(control_url: str, **values: object) -> None:
    async with (
        aiohttp.ClientSession() as session,
        session.patch(f"{control_url}/_sim/knobs", json=values) as response,
    ):
        assert response.status == 200, await response.text()


@pytest.fixture
async def stdio_route() -> AsyncIterator[tuple[McpRoute, str, int]]:
    seed, control = 424242 + os.getpid() % 1000, free_port()
    async with started(stdio_config(seed, control)) as route:
        yield route, f"http://127.0.0.1:{control}", seed


@pytest.fixture
async def http_route(mcp_sim: Simulator) -> AsyncIterator[McpRoute]:
    async with started(http_config(f"{mcp_sim.url}/mcp")) as route:
        yield route


async def test_stdio_tools_call_round_trip(stdio_route):
    route, _, _ = stdio_route
    assert route.readiness().status is HealthStatus.HEALTHY
    completion = await route.complete(REQUEST, budget_s=10)
    assert completion.text.startswith("Simulated answer from MCP tool generate (standard):")
    assert "Summarise the incident" in completion.text
    assert completion.model == "sim-mcp-generate"
    assert not completion.usage.estimated
    assert completion.usage.output_tokens == len(completion.text.split())


async def test_http_tools_call_round_trip(http_route: McpRoute, mcp_sim: Simulator):
    completion = await http_route.complete(REQUEST, budget_s=10)
    assert completion.text.startswith("Simulated answer from MCP tool generate (standard):")
    assert mcp_sim.stats.recent[-1]["operation_type"] == "standard"


async def test_stream_is_the_answer_then_its_end(http_route: McpRoute):
    events = [event async for event in http_route.stream(REQUEST, budget_s=10)]
    assert events[0] == StreamStart("sim-mcp-generate")
    assert isinstance(events[1], TextDelta)
    assert isinstance(events[2], StreamEnd)
    assert events[2].usage.output_tokens == len(events[1].text.split())


async def test_tool_error_result_is_a_model_error(http_route: McpRoute, mcp_sim: Simulator):
    mcp_sim.set(throttle_rate=1.0)
    with pytest.raises(UpstreamModelError, match="tool 'generate' reported an error: throttled"):
        await http_route.complete(REQUEST, budget_s=10)


async def test_result_without_text_is_a_protocol_error(http_route: McpRoute, mcp_sim: Simulator):
    mcp_sim.set(error_rate=1.0, error_kind="garbage")
    with pytest.raises(UpstreamProtocolError, match="returned no text content"):
        await http_route.complete(REQUEST, budget_s=10)


async def test_http_outage_is_unavailable_and_recovers(http_route: McpRoute, mcp_sim: Simulator):
    mcp_sim.set(outage=True)
    with pytest.raises(UpstreamUnavailable):
        await http_route.complete(REQUEST, budget_s=10)
    mcp_sim.set(outage=False)
    for _ in range(50):  # the session may reconnect first
        try:
            assert (await http_route.complete(REQUEST, budget_s=10)).text
            return
        except UpstreamUnavailable:
            await asyncio.sleep(0.05)
    pytest.fail("the MCP route did not recover after the outage ended")


async def test_stdio_outage_is_unavailable(stdio_route):
    route, control, _ = stdio_route
    await set_knobs(control, outage=True)
    with pytest.raises(UpstreamUnavailable, match="simulated outage"):
        await route.complete(REQUEST, budget_s=10)


async def test_hang_times_out_within_the_budget(http_route: McpRoute, mcp_sim: Simulator):
    mcp_sim.set(hang=True)
    with pytest.raises((UpstreamTimeout, TimeoutError)):
        await asyncio.wait_for(http_route.complete(REQUEST, budget_s=0.5), 3)


async def test_missing_tool_keeps_the_route_unready(mcp_sim: Simulator):
    async with started(http_config(f"{mcp_sim.url}/mcp", tool="summarise")) as route:
        readiness = route.readiness()
        assert readiness.status is HealthStatus.UNHEALTHY
        assert "offers no tool 'summarise' (it offers: generate)" in readiness.detail
        with pytest.raises(UpstreamUnavailable, match="not connected to the MCP server"):
            await route.complete(REQUEST, budget_s=1)


async def test_argument_mapping_reaches_the_tool(mcp_sim: Simulator):
    config = http_config(
        f"{mcp_sim.url}/mcp",
        arguments={
            "messages": "$messages",
            "operation_type": "$$literal-op",
            "max_tokens": 5,
        },
    )
    async with started(config) as route:
        completion = await route.complete(REQUEST, budget_s=10)
    assert mcp_sim.stats.recent[-1]["operation_type"] == "$literal-op"
    assert completion.finish_reason == "length"
    assert len(completion.text.split()) == 5


async def test_stdio_server_crash_is_noticed_and_survived_by_reconnecting(stdio_route):
    """The session sees its server die without a request paying for it, and reconnects."""
    route, _, seed = stdio_route
    assert await route.complete(REQUEST, budget_s=10)
    first_connects = route.session.connects
    os.kill(_pid_with_argument(str(seed)), signal.SIGKILL)
    for _ in range(200):
        if route.session.connects > first_connects:
            break
        await asyncio.sleep(0.02)
    assert route.session.connects == first_connects + 1
    assert route.session.state is SessionState.CONNECTED
    assert (await route.complete(REQUEST, budget_s=10)).text


async def test_unreachable_http_server_backs_off_and_says_why():
    port = free_port()
    async with started(
        http_config(f"http://127.0.0.1:{port}/mcp", reconnect_initial_ms=100)
    ) as route:
        readiness = route.readiness()
        assert readiness.status is HealthStatus.UNHEALTHY
        assert "disconnected" in readiness.detail or "connecting" in readiness.detail
        with pytest.raises(UpstreamUnavailable):
            await route.complete(REQUEST, budget_s=0.5)


def _pid_with_argument(marker: str) -> int:
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            argv = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if b"hybridroute.simulators.mcp_server" in argv and marker.encode() in argv:
            return int(entry.name)
    raise AssertionError(f"no MCP simulator process with argument {marker}")
