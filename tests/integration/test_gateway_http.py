"""Bad input and the status endpoints, over raw HTTP: every error has one JSON shape, names the
problem, and never takes the server down."""

from __future__ import annotations

import http.client
import json
import time
from typing import Any

import pytest

from hybridroute.app import create_app
from hybridroute.config.load import parse_config
from hybridroute.serving import ThreadedServer
from hybridroute.simulators.knobs import Knobs
from hybridroute.simulators.stats import Stats
from hybridroute.types import BUILTIN_OPERATION_TYPES
from tests.loopback import RunningGateway, Simulator, gateway_config_data


def post(
    gateway: RunningGateway,
    body: bytes,
    headers: dict[str, str] | None = None,
    path: str = "/v1/chat/completions",
    method: str = "POST",
) -> tuple[int, dict[str, str], dict[str, Any]]:
    host, port = gateway.url.removeprefix("http://").split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=30)
    try:
        conn.request(
            method, path, body=body, headers={"content-type": "application/json", **(headers or {})}
        )
        response = conn.getresponse()
        payload = response.read()
        return (
            response.status,
            {k.lower(): v for k, v in response.getheaders()},
            json.loads(payload),
        )
    finally:
        conn.close()


def assert_error_shape(body: dict[str, Any], code: str) -> dict[str, Any]:
    error = body["error"]
    assert set(error) >= {"message", "type", "code", "param"}
    assert error["code"] == code
    assert isinstance(error["message"], str)
    assert error["message"]
    return error  # type: ignore[no-any-return]


GOOD = json.dumps({"model": "default", "messages": [{"role": "user", "content": "hi"}]}).encode()


def test_malformed_json_is_400(gateway: RunningGateway):
    status, headers, body = post(gateway, b'{"model": "default", "messages": [')
    assert status == 400
    error = assert_error_shape(body, "invalid_json")
    assert "not valid JSON" in error["message"]
    assert headers["x-hybridroute-route"] == "none"
    assert "x-hybridroute-overhead-ms" in headers


def test_unknown_operation_type_is_422_listing_the_valid_ones(gateway: RunningGateway):
    status, _, body = post(gateway, GOOD, {"x-operation-type": "urgent"})
    assert status == 422
    error = assert_error_shape(body, "unknown_operation_type")
    assert error["hybridroute"]["valid_operation_types"] == list(BUILTIN_OPERATION_TYPES)
    for op in BUILTIN_OPERATION_TYPES:
        assert op in error["message"]


@pytest.mark.parametrize(
    "payload",
    [
        {"model": "default"},
        {"model": "default", "messages": []},
        {"model": "default", "messages": None},
    ],
)
def test_missing_or_empty_messages_is_400(gateway: RunningGateway, payload: dict[str, Any]):
    status, _, body = post(gateway, json.dumps(payload).encode())
    assert status == 400
    error = assert_error_shape(body, "invalid_request")
    assert error["param"] == "messages"


def test_body_over_the_limit_is_413(start_gateway):
    def small_limit(data: dict[str, Any]) -> None:
        data["server"]["max_body_bytes"] = 2048

    gateway = start_gateway(small_limit)
    big = json.dumps({"messages": [{"role": "user", "content": "x" * 5000}]}).encode()
    status, _, body = post(gateway, big)
    assert status == 413
    error = assert_error_shape(body, "payload_too_large")
    assert "2048-byte limit" in error["message"]
    status, _, _ = post(gateway, GOOD)
    assert status == 200  # the server is still serving


def test_unknown_path_and_wrong_method(gateway: RunningGateway):
    status, _, body = post(gateway, b"", path="/v1/embeddings")
    assert status == 404
    assert_error_shape(body, "not_found")
    status, headers, body = post(gateway, b"", path="/v1/chat/completions", method="GET")
    assert status == 405
    assert headers["allow"] == "POST"
    assert_error_shape(body, "method_not_allowed")


def test_invalid_field_values_name_the_field(gateway: RunningGateway):
    payload = {"messages": [{"role": "user", "content": "x"}], "temperature": "hot"}
    status, _, body = post(gateway, json.dumps(payload).encode())
    assert status == 400
    assert assert_error_shape(body, "invalid_request")["param"] == "temperature"


def test_upstream_validation_error_is_the_callers_400(
    gateway: RunningGateway, bedrock_sim: Simulator
):
    bedrock_sim.set(error_rate=1.0, error_kind="validation")
    status, headers, body = post(gateway, GOOD, {"x-operation-type": "infrastructure"})
    assert status == 400
    error = assert_error_shape(body, "upstream_rejected_request")
    assert error["hybridroute"]["route"] == "direct_bedrock"
    assert headers["x-hybridroute-decision-id"].startswith("dec-")


def test_health_and_ready(gateway: RunningGateway):
    status, body = gateway.get("/health")
    assert status == 200
    assert body["status"] == "ok"
    status, body = gateway.get("/ready")
    assert status == 200
    assert body["ready"] is True
    assert body["routes"]["direct_bedrock"] == {
        "ready": True,
        "status": "healthy",
        "detail": None,
        "kind": "bedrock",
        "region": "eu-central-1",
        "breaker": "closed",
    }
    assert body["routes"]["mcp"]["kind"] == "mcp"
    assert all(body["flags"].values())


def test_not_ready_when_no_route_can_serve(mcp_sim: Simulator):
    data = gateway_config_data(Simulator("http://127.0.0.1:9", Knobs(), Stats()), mcp_sim)
    data["routes"]["direct_bedrock"]["credentials"] = {"source": "chain"}  # none to be found
    data["routes"]["mcp"]["tool"] = "no_such_tool"
    app = create_app(parse_config(data))
    with ThreadedServer(app, name="gateway") as server:
        gateway = RunningGateway(server.url, app)
        status, body = gateway.get("/ready")
        assert status == 503
        assert body["ready"] is False
        assert "credential chain found no credentials" in body["routes"]["direct_bedrock"]["detail"]
        assert "offers no tool 'no_such_tool'" in body["routes"]["mcp"]["detail"]
        status, _, error = post(gateway, GOOD, {"x-operation-type": "standard"})
        assert status in (502, 503)
        assert_error_shape(error, "all_routes_failed")


def _open_and_abandon(
    gateway: RunningGateway, body: dict[str, Any], headers: dict[str, str], read_first: bool
) -> None:
    """Send a request on a raw socket, optionally read the first bytes, then hang up."""
    import socket

    host, port = gateway.url.removeprefix("http://").split(":")
    payload = json.dumps(body).encode()
    head = "".join(f"{k}: {v}\r\n" for k, v in headers.items())
    request = (
        f"POST /v1/chat/completions HTTP/1.1\r\nhost: {host}\r\ncontent-type: application/json\r\n"
        f"content-length: {len(payload)}\r\n{head}\r\n"
    ).encode() + payload
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        sock.sendall(request)
        if read_first:
            assert b"200 OK" in sock.recv(4096)
        else:
            time.sleep(0.3)  # noqa: TID251 - let the request reach the upstream first


def test_an_abandoned_stream_stops_reading_the_upstream(
    gateway: RunningGateway, bedrock_sim: Simulator
):
    bedrock_sim.set(stream_chunks=20, stream_chunk_delay_ms=100)  # a 2-second stream
    body = {"messages": [{"role": "user", "content": "long"}], "stream": True}
    _open_and_abandon(gateway, body, {"x-operation-type": "emergency"}, read_first=True)
    time.sleep(2.5)  # noqa: TID251 - past the stream's natural end
    snapshot = gateway.runtime.breakers["direct_bedrock"].snapshot()
    assert snapshot.requests == 0  # released, neither a success nor a failure
    assert snapshot.probes_in_flight == 0


def test_an_abandoned_request_is_cancelled_not_timed_out(
    gateway: RunningGateway, bedrock_sim: Simulator
):
    bedrock_sim.set(hang=True)
    body = {"messages": [{"role": "user", "content": "x"}]}
    headers = {"x-operation-type": "emergency", "x-latency-budget-ms": "1500"}
    _open_and_abandon(gateway, body, headers, read_first=False)
    time.sleep(2.0)  # noqa: TID251 - past the request's deadline
    assert gateway.runtime.breakers["direct_bedrock"].snapshot().failures == 0
