"""The MCP simulator, driven by the official MCP v2 `Client`: in process, over HTTP, over stdio."""

from __future__ import annotations

import contextlib
import sys
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import anyio
import pytest
from mcp import Client
from mcp.client.stdio import StdioServerParameters
from mcp.shared.exceptions import MCPError
from mcp.types import TextContent
from starlette.applications import Starlette

from hybridroute.serving import EmbeddedServer, bind_socket
from hybridroute.simulators.knobs import Knobs
from hybridroute.simulators.mcp_server import create_mcp_http_app, create_mcp_server, main
from hybridroute.simulators.stats import Stats

pytestmark = pytest.mark.anyio

ARGS: dict[str, Any] = {
    "messages": [
        {"role": "user", "content": "first question"},
        {"role": "assistant", "content": "an answer"},
        {"role": "user", "content": "Tell me  about\nParis"},
    ],
    "system": "be brief",
    "operation_type": "summarize",
}
ANSWER = "Simulated answer from MCP tool generate (summarize): Tell me about Paris"


def _text(result: Any) -> str:
    [block] = result.content
    assert isinstance(block, TextContent)
    return block.text


@contextlib.asynccontextmanager
async def _served_http(knobs: Knobs) -> AsyncIterator[tuple[str, Starlette]]:
    app = create_mcp_http_app(knobs, seed=5)
    async with EmbeddedServer(app, name="sim-mcp", lifespan="on") as server:
        yield server.url, app


async def _patch_knobs(base_url: str, change: dict[str, object]) -> dict[str, Any]:
    async with (
        aiohttp.ClientSession() as session,
        session.patch(f"{base_url}/_sim/knobs", json=change) as response,
    ):
        assert response.status == 200, await response.text()
        reply: dict[str, Any] = await response.json()
        return reply


# --- in process ------------------------------------------------------------------------------


async def test_generate_answers_with_structured_usage() -> None:
    stats = Stats()
    async with Client(create_mcp_server(Knobs(), stats, seed=1)) as client:
        result = await client.call_tool("generate", ARGS)
    assert not result.is_error
    assert _text(result) == ANSWER
    assert result.structured_content == {
        "model": "sim-mcp-generate",
        "finish_reason": "stop",
        "usage": {"input_tokens": 10, "output_tokens": len(ANSWER.split())},
    }
    assert stats.recent[-1] == {
        "at": stats.recent[-1]["at"],
        "tool": "generate",
        "operation_type": "summarize",
        "outcome": "ok",
    }


async def test_max_tokens_cuts_the_answer() -> None:
    async with Client(create_mcp_server()) as client:
        result = await client.call_tool("generate", {**ARGS, "max_tokens": 4})
    assert _text(result) == "Simulated answer from MCP"
    assert result.structured_content["finish_reason"] == "length"
    assert result.structured_content["usage"]["output_tokens"] == 4


@pytest.mark.parametrize(
    ("kind", "text"),
    [
        ("throttling", "throttled: too many requests (simulated)"),
        ("validation", "invalid arguments (simulated)"),
        ("model_error", "simulated model_error"),
        ("access_denied", "simulated access_denied"),
        ("model_timeout", "simulated model_timeout"),
        ("model_not_ready", "simulated model_not_ready"),
    ],
)
async def test_tool_error_kinds_are_error_results(kind: str, text: str) -> None:
    knobs = Knobs(error_rate=1.0, error_kind=kind)
    async with Client(create_mcp_server(knobs)) as client:
        result = await client.call_tool("generate", ARGS)
    assert result.is_error
    assert _text(result) == text


@pytest.mark.parametrize("kind", ["unavailable", "internal"])
async def test_protocol_error_kinds_raise_in_the_client(kind: str) -> None:
    async with Client(create_mcp_server(Knobs(error_rate=1.0, error_kind=kind))) as client:
        with pytest.raises(MCPError, match=f"simulated {kind}"):
            await client.call_tool("generate", ARGS)


@pytest.mark.parametrize("kind", ["garbage", "truncate"])
async def test_garbage_results_have_no_text(kind: str) -> None:
    async with Client(create_mcp_server(Knobs(error_rate=1.0, error_kind=kind))) as client:
        result = await client.call_tool("generate", ARGS)
    assert not any(isinstance(block, TextContent) for block in result.content)


async def test_outage_is_a_protocol_error() -> None:
    stats = Stats()
    async with Client(create_mcp_server(Knobs(outage=True), stats)) as client:
        with pytest.raises(MCPError, match="simulated outage"):
            await client.call_tool("generate", ARGS)
    assert stats.by_outcome == {"error:outage": 1}


async def test_hang_never_answers() -> None:
    stats = Stats()
    async with Client(create_mcp_server(Knobs(hang=True), stats)) as client:
        with pytest.raises(MCPError, match=r"[Tt]imed out"):
            await client.call_tool("generate", ARGS, read_timeout_seconds=0.2)
    assert stats.by_outcome == {"hang": 1}


async def test_latency_knob_delays_the_answer() -> None:
    async with Client(create_mcp_server(Knobs(latency_ms=50))) as client:
        started = anyio.current_time()
        await client.call_tool("generate", ARGS)
        assert anyio.current_time() - started >= 0.05


async def test_arguments_without_a_user_message_are_an_error_result() -> None:
    arguments = {"messages": [{"role": "assistant", "content": "hi"}]}
    async with Client(create_mcp_server()) as client:
        result = await client.call_tool("generate", arguments)
    assert result.is_error
    assert _text(result).startswith("invalid arguments: ")


# --- streamable HTTP -------------------------------------------------------------------------


async def test_http_list_call_and_runtime_knobs() -> None:
    knobs = Knobs()
    async with _served_http(knobs) as (url, app), Client(f"{url}/mcp") as client:
        tools = await client.list_tools()
        [tool] = tools.tools
        assert tool.name == "generate"
        assert set(tool.input_schema["properties"]) == {
            "messages",
            "system",
            "operation_type",
            "max_tokens",
            "temperature",
        }
        assert _text(await client.call_tool("generate", ARGS)) == ANSWER

        changed = await _patch_knobs(url, {"error_rate": 1, "error_kind": "throttling"})
        assert changed["error_kind"] == "throttling"
        result = await client.call_tool("generate", ARGS)
        assert result.is_error
        assert _text(result) == "throttled: too many requests (simulated)"

        await _patch_knobs(url, {"error_rate": 0, "outage": True})
        with pytest.raises(MCPError):
            await client.call_tool("generate", ARGS)
        await _patch_knobs(url, {"outage": False})
        assert _text(await client.call_tool("generate", ARGS)) == ANSWER
    assert app.state.stats.by_outcome == {"ok": 2, "error:throttling": 1, "error:outage": 1}


async def test_http_outage_is_a_503_at_the_transport() -> None:
    async with _served_http(Knobs(outage=True)) as (url, _app):
        async with aiohttp.ClientSession() as session, session.post(f"{url}/mcp", json={}) as reply:
            assert reply.status == 503
            assert await reply.json() == {"error": "simulated outage"}
        # Connecting fails inside the client's task group, so the error arrives wrapped.
        with pytest.RaisesGroup(MCPError, flatten_subgroups=True, allow_unwrapped=True):
            async with Client(f"{url}/mcp"):
                pass


# --- stdio -----------------------------------------------------------------------------------


def _free_port() -> int:
    sock = bind_socket("127.0.0.1", 0)
    try:
        port: int = sock.getsockname()[1]
        return port
    finally:
        sock.close()


async def test_stdio_server_with_control_port() -> None:
    port = _free_port()
    params = StdioServerParameters(
        command=sys.executable,
        args=["-m", "hybridroute.simulators.mcp_server", "--stdio", "--control-port", str(port)],
    )
    control = f"http://127.0.0.1:{port}"
    async with Client(params) as client:
        assert [tool.name for tool in (await client.list_tools()).tools] == ["generate"]
        result = await client.call_tool("generate", ARGS)
        assert _text(result) == ANSWER
        assert result.structured_content["usage"]["input_tokens"] == 10

        await _patch_knobs(control, {"error_rate": 1, "error_kind": "model_error"})
        failed = await client.call_tool("generate", ARGS)
        assert failed.is_error
        assert _text(failed) == "simulated model_error"

        await _patch_knobs(control, {"error_rate": 0, "outage": True})
        with pytest.raises(MCPError, match="simulated outage"):
            await client.call_tool("generate", ARGS)


@pytest.mark.parametrize(
    ("argv", "complaint"),
    [
        ([], "one of the arguments --stdio --port is required"),
        (["--stdio", "--port", "1"], "not allowed with argument"),
        (["--stdio", "--latency-ms", "-1"], "'latency_ms'"),
        (["--port", "1", "--control-port", "2"], "--control-port is only for --stdio"),
        (["--port", "1", "--host", "0.0.0.0"], "invalid choice"),
    ],
)
def test_cli_rejects_bad_arguments(
    argv: list[str], complaint: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exited:
        main(argv)
    assert exited.value.code == 2
    assert complaint in capsys.readouterr().err
