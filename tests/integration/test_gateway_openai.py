"""The gateway end to end over loopback HTTP, called with the stock OpenAI SDK.

Both simulators are real loopback servers; the gateway's routes talk to them through their real
client code. Each test reads the decision headers the gateway puts on every response.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import openai
import pytest
from openai import OpenAI

from hybridroute.config.defaults import DEFAULT_MATRIX
from hybridroute.demo.config import DEMO_MODEL_ID
from hybridroute.signals import Flag
from hybridroute.types import BUILTIN_OPERATION_TYPES
from tests.loopback import RunningGateway, Simulator

PRIMARY = {op: row["primary"] for op, row in DEFAULT_MATRIX.items()}
FALLBACK_ELIGIBLE = [op for op, row in DEFAULT_MATRIX.items() if row["fallback"] is not None]
MESSAGES = [{"role": "user", "content": "What changed in the last deploy?"}]


def client(gateway: RunningGateway) -> OpenAI:
    return OpenAI(base_url=f"{gateway.url}/v1", api_key="not-needed", max_retries=0, timeout=30)


def ask(
    api: OpenAI, operation_type: str, headers: dict[str, str] | None = None, **kwargs: Any
) -> Any:
    return api.chat.completions.with_raw_response.create(
        model="default",
        messages=MESSAGES,  # type: ignore[arg-type]
        extra_headers={"X-Operation-Type": operation_type, **(headers or {})},
        **kwargs,
    )


def stream_text(raw: Any) -> tuple[str, list[Any]]:
    chunks = list(raw.parse())
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    return text, chunks


@pytest.fixture(scope="module")
def shared_gateway(bedrock_sim: Simulator, mcp_sim: Simulator) -> Iterator[RunningGateway]:
    """One gateway for the read-only tests of this module (no faults injected)."""
    from hybridroute.app import create_app
    from hybridroute.config.load import parse_config
    from hybridroute.serving import ThreadedServer
    from tests.loopback import gateway_config_data

    app = create_app(parse_config(gateway_config_data(bedrock_sim, mcp_sim)))
    with ThreadedServer(app, name="gateway") as server:
        gateway = RunningGateway(server.url, app)
        gateway.wait_ready()
        yield gateway


@pytest.mark.parametrize("operation_type", BUILTIN_OPERATION_TYPES)
def test_every_operation_type_is_served_by_its_primary(
    shared_gateway: RunningGateway, operation_type: str
):
    raw = ask(client(shared_gateway), operation_type)
    completion = raw.parse()
    route = PRIMARY[operation_type]
    assert raw.headers["x-hybridroute-route"] == route
    assert raw.headers["x-hybridroute-fallback"] == "false"
    assert raw.headers["x-hybridroute-decision-id"].startswith("dec-")
    assert float(raw.headers["x-hybridroute-overhead-ms"]) >= 0
    assert completion.choices[0].message.content.startswith("Simulated answer from")
    assert completion.model == (DEMO_MODEL_ID if route == "direct_bedrock" else "sim-mcp-generate")
    assert completion.usage is not None
    assert completion.usage.completion_tokens > 0


@pytest.mark.parametrize("operation_type", BUILTIN_OPERATION_TYPES)
def test_every_operation_type_streams_from_its_primary(
    shared_gateway: RunningGateway, operation_type: str
):
    raw = ask(
        client(shared_gateway),
        operation_type,
        stream=True,
        stream_options={"include_usage": True},
    )
    assert raw.headers["x-hybridroute-route"] == PRIMARY[operation_type]
    assert raw.headers["content-type"].startswith("text/event-stream")
    text, chunks = stream_text(raw)
    assert text.startswith("Simulated answer from")
    assert chunks[-1].usage is not None
    assert chunks[-1].usage.completion_tokens == len(text.split())
    finishing = [c for c in chunks if c.choices and c.choices[0].finish_reason]
    assert [c.choices[0].finish_reason for c in finishing] == ["stop"]


def test_operation_type_in_metadata(shared_gateway: RunningGateway):
    raw = client(shared_gateway).chat.completions.with_raw_response.create(
        model="default",
        messages=MESSAGES,  # type: ignore[arg-type]
        metadata={"operation_type": "emergency"},
    )
    assert raw.headers["x-hybridroute-route"] == "direct_bedrock"


def test_no_operation_type_means_standard(shared_gateway: RunningGateway):
    raw = client(shared_gateway).chat.completions.with_raw_response.create(
        model="anything",
        messages=MESSAGES,  # type: ignore[arg-type]
    )
    assert raw.headers["x-hybridroute-route"] == "mcp"
    assert "matrix: mcp, fallback direct_bedrock" in raw.headers["x-hybridroute-reason"]


def test_models_list(shared_gateway: RunningGateway):
    models = {m.id for m in client(shared_gateway).models.list()}
    assert {"default", DEMO_MODEL_ID, "mcp:generate"} <= models


@pytest.mark.parametrize("streaming", [False, True], ids=["json", "stream"])
@pytest.mark.parametrize("operation_type", FALLBACK_ELIGIBLE)
def test_bedrock_outage_moves_fallback_eligible_work_to_mcp(
    gateway: RunningGateway, bedrock_sim: Simulator, operation_type: str, streaming: bool
):
    bedrock_sim.set(outage=True)
    api = client(gateway)
    for _ in range(3):  # before and after the breaker opens: never a client-visible error
        raw = ask(api, operation_type, stream=streaming)
        if streaming:
            text, _ = stream_text(raw)
        else:
            text = raw.parse().choices[0].message.content
        assert text.startswith("Simulated answer from")
        served_by = raw.headers["x-hybridroute-route"]
        if PRIMARY[operation_type] == "direct_bedrock":
            assert served_by == "mcp"
            assert raw.headers["x-hybridroute-fallback"] == "true"
        else:
            assert served_by == "mcp"
            assert raw.headers["x-hybridroute-fallback"] == "false"


def test_emergency_in_a_bedrock_outage_is_a_clear_5xx(
    gateway: RunningGateway, bedrock_sim: Simulator
):
    bedrock_sim.set(outage=True)
    with pytest.raises(openai.InternalServerError) as info:
        ask(client(gateway), "emergency")
    error = info.value
    assert error.status_code == 503
    assert error.response.headers["x-hybridroute-route"] == "none"
    body = error.body
    assert isinstance(body, dict)
    assert body["code"] == "all_routes_failed"
    assert "emergency request could not be served by direct_bedrock" in body["message"]
    assert "ServiceUnavailableException" in body["message"]
    attempts = body["hybridroute"]["attempts"]
    assert {a["route"] for a in attempts} == {"direct_bedrock"}
    assert len(attempts) == 2  # the row allows one retry of a retryable error


def test_mcp_outage_moves_standard_work_to_direct_bedrock(
    gateway: RunningGateway, mcp_sim: Simulator
):
    mcp_sim.set(outage=True)
    raw = ask(client(gateway), "standard")
    assert raw.headers["x-hybridroute-route"] == "direct_bedrock"
    assert raw.headers["x-hybridroute-fallback"] == "true"
    assert raw.headers["x-hybridroute-attempts"] == "mcp:failed,direct_bedrock:ok"


def test_breaker_opens_and_the_primary_is_no_longer_tried(
    gateway: RunningGateway, bedrock_sim: Simulator
):
    bedrock_sim.set(outage=True)
    api = client(gateway)
    for _ in range(6):
        ask(api, "infrastructure")
    tried = bedrock_sim.requests()
    raw = ask(api, "infrastructure")
    assert bedrock_sim.requests() == tried  # breaker open: skipped, not sent
    assert "direct_bedrock unhealthy (breaker open" in raw.headers["x-hybridroute-reason"]
    status, ready = gateway.get("/ready")
    assert status == 200
    assert ready["routes"]["direct_bedrock"]["breaker"] == "open"
    assert ready["routes"]["mcp"]["ready"] is True


def test_stream_failure_after_the_first_byte_ends_with_an_error_event(
    gateway: RunningGateway, bedrock_sim: Simulator
):
    bedrock_sim.set(stream_chunks=4, stream_fail_after=2, error_kind="unavailable")
    raw = ask(client(gateway), "emergency", stream=True)
    assert raw.headers["x-hybridroute-route"] == "direct_bedrock"
    received: list[str] = []

    def read_all() -> None:
        for chunk in raw.parse():
            received.extend(c.delta.content or "" for c in chunk.choices)

    with pytest.raises(openai.APIError, match="direct_bedrock failed after the stream started"):
        read_all()
    assert "".join(received).startswith("Simulated")


def test_garbage_from_the_primary_is_a_502_naming_it(
    gateway: RunningGateway, bedrock_sim: Simulator
):
    bedrock_sim.set(error_rate=1.0, error_kind="garbage")
    with pytest.raises(openai.APIStatusError) as info:
        ask(client(gateway), "emergency")
    assert info.value.status_code == 502
    assert "direct_bedrock" in info.value.message
    assert "not JSON" in info.value.message


def test_garbage_on_a_fallback_eligible_row_is_absorbed(
    gateway: RunningGateway, bedrock_sim: Simulator
):
    bedrock_sim.set(error_rate=1.0, error_kind="garbage")
    raw = ask(client(gateway), "implementation")
    assert raw.headers["x-hybridroute-route"] == "mcp"


def test_flags_take_effect_on_the_next_request(gateway: RunningGateway):
    api = client(gateway)
    assert ask(api, "emergency").headers["x-hybridroute-route"] == "direct_bedrock"
    gateway.runtime.flags.disable_all()
    raw = ask(api, "emergency")
    assert raw.headers["x-hybridroute-route"] == "mcp"
    assert "ENABLE_INTELLIGENT_ROUTING off" in raw.headers["x-hybridroute-reason"]
    gateway.runtime.flags.set(Flag.INTELLIGENT_ROUTING, True)
    raw = ask(api, "infrastructure")
    assert raw.headers["x-hybridroute-route"] == "mcp"
    assert "MCP-only mode" in raw.headers["x-hybridroute-reason"]


def test_caller_latency_budget_bounds_the_request(gateway: RunningGateway, bedrock_sim: Simulator):
    bedrock_sim.set(hang=True)
    with pytest.raises(openai.APIStatusError) as info:
        ask(client(gateway), "emergency", extra_body={"metadata": {"latency_budget_ms": "400"}})
    assert info.value.status_code == 504
    assert "caller budget 400 ms" in info.value.response.headers["x-hybridroute-reason"]


def test_residency_keeps_eu_requests_off_a_us_route(
    start_gateway, bedrock_sim: Simulator, mcp_sim: Simulator
):
    def us_bedrock(data: dict[str, Any]) -> None:
        data["routes"]["direct_bedrock"]["region"] = "us-east-1"

    gateway = start_gateway(us_bedrock)
    api = client(gateway)
    raw = ask(api, "infrastructure", headers={"X-Data-Residency": "eu"})
    assert raw.headers["x-hybridroute-route"] == "mcp"
    assert bedrock_sim.requests() == 0  # checked at the upstream: nothing reached it
    with pytest.raises(openai.UnprocessableEntityError) as info:
        ask(api, "emergency", headers={"X-Data-Residency": "eu"})
    assert "no route satisfies residency 'eu'" in info.value.message
    assert bedrock_sim.requests() == 0
    assert mcp_sim.requests() == 1


def test_streamed_and_json_answers_name_the_same_model(shared_gateway: RunningGateway):
    api = client(shared_gateway)
    json_model = ask(api, "standard").parse().model
    _, chunks = stream_text(ask(api, "standard", stream=True))
    assert {chunk.model for chunk in chunks} == {json_model} == {"sim-mcp-generate"}
