"""`hybridroute mcp serve` seen by the official MCP SDK client, against a real gateway.

Each test starts a gateway (with viewer, operator and admin tokens) on the loopback simulators
and runs the MCP server face as its own process: over stdio (spawned by the SDK's stdio client)
or over streamable HTTP (started here, then reached with the SDK's streamable-HTTP client). The
tools' effects are checked where they show: which route serves the next request, the flags, the
audit trail; refusals come back as tool errors carrying the gateway's own message.
"""

from __future__ import annotations

import contextlib
import socket
import subprocess
import sys
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import anyio
import pytest
from mcp import Client
from mcp.client.stdio import StdioServerParameters
from mcp_types import CallToolResult, TextContent

from hybridroute.cli.mcp_face import CHANGE_TOOLS, MCP_PATH, READ_TOOLS
from hybridroute.signals import Flag
from tests.integration.control_helpers import (
    TOKENS,
    Admin,
    audit_records,
    use_tokens,
    wait_for_audit,
)
from tests.loopback import GatewayFactory, RunningGateway, wait_for

pytestmark = pytest.mark.anyio

FLAGS = "/admin/feature-flags/bedrock"
ALL_ON = {flag.value: True for flag in Flag}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def face_command(url: str, *options: str) -> list[str]:
    return ["-m", "hybridroute", "mcp", "serve", "--url", url, *options]


@contextlib.asynccontextmanager
async def stdio_face(url: str, *options: str) -> AsyncIterator[Client]:
    """An SDK client whose stdio server is `hybridroute mcp serve` with `options`."""
    params = StdioServerParameters(command=sys.executable, args=face_command(url, *options))
    with anyio.fail_after(20):
        async with Client(params) as client:
            yield client


def text(result: CallToolResult) -> str:
    return "\n".join(block.text for block in result.content if isinstance(block, TextContent))


async def ok(client: Client, tool: str, **arguments: Any) -> dict[str, Any]:
    result = await client.call_tool(tool, arguments)
    assert not result.is_error, (tool, text(result))
    assert isinstance(result.structured_content, dict)
    return result.structured_content


async def refused(client: Client, tool: str, **arguments: Any) -> str:
    result = await client.call_tool(tool, arguments)
    assert result.is_error, (tool, text(result))
    return text(result)


async def tool_names(client: Client) -> set[str]:
    return {tool.name for tool in (await client.list_tools()).tools}


@pytest.fixture
def tokened(start_gateway: GatewayFactory, monkeypatch: pytest.MonkeyPatch) -> RunningGateway:
    return start_gateway(use_tokens(monkeypatch))


def listening(port: int) -> bool:
    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", port)) == 0


@pytest.fixture
def http_face(tmp_path: Path) -> Iterator[Callable[..., str]]:
    """Start `hybridroute mcp serve --transport http` processes (the endpoint's URL once it
    listens); each is stopped afterwards."""
    started: list[subprocess.Popen[bytes]] = []

    def start(url: str, *options: str) -> str:
        port = free_port()
        log_path = tmp_path / f"face-{port}.log"
        command = face_command(url, "--transport", "http", "--port", str(port), *options)
        with log_path.open("wb") as log:
            process = subprocess.Popen(
                [sys.executable, *command], stdin=subprocess.DEVNULL, stdout=log, stderr=log
            )
        started.append(process)

        def up() -> bool:
            assert process.poll() is None, log_path.read_text()
            return listening(port)

        wait_for(up, timeout=15)
        return f"http://127.0.0.1:{port}{MCP_PATH}"

    yield start
    for process in started:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=5)


async def test_stdio_read_only_tools_route_and_report(tokened: RunningGateway) -> None:
    async with stdio_face(tokened.url, "--token", TOKENS["viewer"]) as client:
        assert await tool_names(client) == set(READ_TOOLS)

        emergency = await ok(client, "route_operation", operation_type="emergency", prompt="Up?")
        assert emergency["route"] == "direct_bedrock"
        assert emergency["fallback"] is False
        assert emergency["decision_id"].startswith("dec-")
        assert emergency["answer"]
        assert float(emergency["cost"]) > 0
        assert emergency["currency"] == "USD"
        route_header = emergency["headers"]["x-hybridroute-route"]
        assert route_header["value"] == "direct_bedrock"
        assert "route that served" in route_header["meaning"]

        standard = await ok(
            client, "route_operation", operation_type="standard", prompt="Hi", max_tokens=16
        )
        assert standard["route"] == "mcp"
        assert standard["reason"]

        health = await ok(client, "get_health")
        assert isinstance(health["score"], int)
        assert health["status"] in {"healthy", "degraded", "unhealthy", "critical"}
        assert {row["route"] for row in health["routes"]} == {"direct_bedrock", "mcp"}
        assert isinstance(health["recommendations"], list)
        assert health["requests"] >= 2

        flags = await ok(client, "list_flags")
        assert flags["flags"] == ALL_ON
        assert flags["mode"] == "hybrid"

        alerts = await ok(client, "get_alerts")
        assert alerts["active"] == []
        assert isinstance(alerts["pending"], list)

        slo = await ok(client, "get_slo", window="1h")
        assert slo["window_s"] == 3600
        rules = await ok(client, "get_routing_rules")
        assert rules["matrix"]["emergency"]["primary"] == "direct_bedrock"
        trail = await ok(client, "verify_audit_trail")
        assert trail["ok"] is True

        message = await refused(client, "route_operation", operation_type="urgent", prompt="Hi")
        assert "422" in message
        assert "unknown operation type 'urgent'; valid operation types are: emergency" in message
        bad_window = await refused(client, "get_slo", window="forever")
        assert "400" in bad_window
        assert "window" in bad_window


async def test_http_operator_changes_flags_and_rolls_back(
    tokened: RunningGateway, http_face: Callable[..., str]
) -> None:
    url = http_face(tokened.url, "--allow-changes", "--token", TOKENS["operator"])
    with anyio.fail_after(20):
        async with Client(url) as client:
            listing = (await client.list_tools()).tools
            assert {tool.name for tool in listing} == {*READ_TOOLS, *CHANGE_TOOLS}
            set_flag = next(tool for tool in listing if tool.name == "set_flag")
            assert set_flag.input_schema["properties"]["flag"]["enum"] == [f.value for f in Flag]

            before = await ok(client, "route_operation", operation_type="emergency", prompt="Up?")
            assert before["route"] == "direct_bedrock"

            changed = await ok(
                client,
                "set_flag",
                flag="ENABLE_INTELLIGENT_ROUTING",
                enabled=False,
                reason="mcp face drill",
            )
            assert changed["flags"]["ENABLE_INTELLIGENT_ROUTING"] is False
            after = await ok(client, "route_operation", operation_type="emergency", prompt="Up?")
            assert after["route"] == "mcp"

            report = await ok(client, "rollback", level=1, reason="mcp face drill")
            assert report["ok"] is True
            assert report["level"] == 1
            assert report["validation"]["mcp_only"] is True
            flags = await ok(client, "list_flags")
            assert flags["mode"] == "mcp_only"

            missing = await refused(client, "acknowledge_alert", alert_id="nope", note="on it")
            assert "404" in missing
            assert "no alert nope" in missing

    admin = Admin.of(tokened, "admin")
    assert admin.get(FLAGS)["mode"] == "mcp_only"
    change = wait_for_audit(admin, "flags_changed")[0]
    assert change["actor"] == "operator-bot"
    assert change["data"]["reason"] == "mcp face drill"


async def test_allow_changes_with_a_viewer_token_stays_read_only(
    tokened: RunningGateway,
) -> None:
    admin = Admin.of(tokened, "admin")
    async with stdio_face(tokened.url, "--allow-changes", "--token", TOKENS["viewer"]) as client:
        # GET /admin/whoami says viewer: the operator tools are not offered at all.
        assert await tool_names(client) == set(READ_TOOLS)
        assert (await ok(client, "list_flags"))["flags"] == ALL_ON
    assert admin.get(FLAGS)["flags"] == ALL_ON
    assert audit_records(admin, "flags_changed") == []

    async with stdio_face(tokened.url, "--allow-changes", "--token", "not-a-token") as client:
        # A refused token: no operator tools, and reads say why.
        assert await tool_names(client) == set(READ_TOOLS)
        message = await refused(client, "get_health")
        assert "401" in message
        assert "--token" in message


async def test_an_unreachable_or_silent_gateway_is_a_clear_tool_error() -> None:
    nowhere = f"http://127.0.0.1:{free_port()}"
    async with stdio_face(nowhere, "--allow-changes", "--timeout", "2") as client:
        # The token could not be checked, so no change tools are offered.
        assert await tool_names(client) == set(READ_TOOLS)
        for tool, arguments in (
            ("get_health", {}),
            ("route_operation", {"operation_type": "emergency", "prompt": "Up?"}),
        ):
            message = await refused(client, tool, **arguments)
            assert f"cannot reach the gateway at {nowhere}" in message

    # A gateway that accepts connections but never answers: the call's timeout ends it.
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        url = f"http://127.0.0.1:{silent.getsockname()[1]}"
        async with stdio_face(url, "--timeout", "1") as client:
            message = await refused(client, "list_flags")
            assert f"the gateway at {url} did not answer GET {FLAGS} within 1 s" in message
