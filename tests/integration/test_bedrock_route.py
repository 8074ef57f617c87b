"""The Direct Bedrock route's real client code (botocore credentials and SigV4, aiohttp, the
Converse wire format) against the Bedrock simulator, which verifies every signature."""

from __future__ import annotations

import dataclasses
import socket

import pytest

from hybridroute.config.schema import BedrockRouteConfig
from hybridroute.errors import (
    UpstreamAuthError,
    UpstreamError,
    UpstreamModelError,
    UpstreamProtocolError,
    UpstreamRejected,
    UpstreamThrottled,
    UpstreamTimeout,
    UpstreamUnavailable,
)
from hybridroute.providers.bedrock import DirectBedrockRoute
from hybridroute.signals import HealthStatus
from hybridroute.simulators.bedrock import DEMO_ACCESS_KEY_ID, DEMO_SECRET_ACCESS_KEY
from hybridroute.types import ChatMessage, GenerationRequest, Priority, StreamEnd, TextDelta
from tests.loopback import Simulator

pytestmark = pytest.mark.anyio

MODEL = "anthropic.claude-3-5-sonnet-20240620-v1:0"
REQUEST = GenerationRequest(
    operation_type="infrastructure",
    priority=Priority.CRITICAL,
    system=("Be precise.",),
    messages=(ChatMessage("user", "Is the cluster healthy?"),),
    max_tokens=256,
    temperature=0.2,
    top_p=None,
    stop=(),
    decision_id="dec-test",
    requested_model="default",
)


def route_config(url: str, **changes: object) -> BedrockRouteConfig:
    data: dict[str, object] = {
        "type": "bedrock",
        "region": "eu-central-1",
        "model_id": MODEL,
        "endpoint_url": url,
        "credentials": {
            "source": "static",
            "access_key_id": DEMO_ACCESS_KEY_ID,
            "secret_access_key": DEMO_SECRET_ACCESS_KEY,
        },
    }
    data.update(changes)
    return BedrockRouteConfig.model_validate(data)


async def drain(
    route: DirectBedrockRoute, request: GenerationRequest, into: list[object] | None = None
) -> None:
    async for event in route.stream(request, budget_s=5):
        if into is not None:
            into.append(event)


@pytest.fixture
async def route(bedrock_sim: Simulator):
    route = DirectBedrockRoute("direct_bedrock", route_config(bedrock_sim.url))
    await route.start()
    yield route
    await route.aclose()


async def test_converse_round_trip(route: DirectBedrockRoute, bedrock_sim: Simulator):
    completion = await route.complete(REQUEST, budget_s=5)
    assert completion.text.startswith(f"Simulated answer from {MODEL} in eu-central-1:")
    assert "Is the cluster healthy?" in completion.text
    assert completion.model == MODEL
    assert completion.finish_reason == "stop"
    assert not completion.usage.estimated
    assert completion.usage.output_tokens == len(completion.text.split())
    recent = bedrock_sim.stats.recent[-1]
    assert recent["model_id"] == MODEL
    assert recent["region"] == "eu-central-1"  # from the verified SigV4 credential scope


async def test_converse_stream_round_trip(route: DirectBedrockRoute, bedrock_sim: Simulator):
    bedrock_sim.set(stream_chunks=5)
    events = [event async for event in route.stream(REQUEST, budget_s=5)]
    deltas = [e.text for e in events if isinstance(e, TextDelta)]
    assert len(deltas) == 5
    end = events[-1]
    assert isinstance(end, StreamEnd)
    assert end.finish_reason == "stop"
    assert end.usage.output_tokens == len("".join(deltas).split())
    assert not end.usage.estimated


async def test_max_tokens_truncation_maps_to_length(route: DirectBedrockRoute):
    completion = await route.complete(dataclasses.replace(REQUEST, max_tokens=3), budget_s=5)
    assert completion.finish_reason == "length"
    assert len(completion.text.split()) == 3


@pytest.mark.parametrize(
    ("kind", "error_class", "upstream_code"),
    [
        ("throttling", UpstreamThrottled, "ThrottlingException"),
        ("model_not_ready", UpstreamUnavailable, "ModelNotReadyException"),
        ("unavailable", UpstreamUnavailable, "ServiceUnavailableException"),
        ("internal", UpstreamUnavailable, "InternalServerException"),
        ("model_timeout", UpstreamTimeout, "ModelTimeoutException"),
        ("validation", UpstreamRejected, "ValidationException"),
        ("access_denied", UpstreamAuthError, "AccessDeniedException"),
        ("model_error", UpstreamModelError, "ModelErrorException"),
        ("garbage", UpstreamProtocolError, None),
        ("truncate", UpstreamProtocolError, None),
    ],
)
@pytest.mark.parametrize("streaming", [False, True], ids=["converse", "converse-stream"])
async def test_every_bedrock_error_class_maps_to_a_typed_error(
    route: DirectBedrockRoute,
    bedrock_sim: Simulator,
    kind: str,
    error_class: type[UpstreamError],
    upstream_code: str | None,
    streaming: bool,
):
    bedrock_sim.set(error_rate=1.0, error_kind=kind)
    call = drain(route, REQUEST) if streaming else route.complete(REQUEST, budget_s=5)
    with pytest.raises(error_class) as info:
        await call
    assert info.value.route == "direct_bedrock"
    assert info.value.upstream_code == upstream_code


@pytest.mark.parametrize(
    ("kind", "error_class"),
    [
        ("throttling", UpstreamThrottled),
        ("unavailable", UpstreamUnavailable),
        ("validation", UpstreamRejected),
        ("model_error", UpstreamModelError),
        ("internal", UpstreamUnavailable),
    ],
)
async def test_mid_stream_exceptions_are_typed(
    route: DirectBedrockRoute, bedrock_sim: Simulator, kind: str, error_class: type[UpstreamError]
):
    bedrock_sim.set(stream_chunks=4, stream_fail_after=2, error_kind=kind)
    received: list[object] = []
    with pytest.raises(error_class):
        await drain(route, REQUEST, received)
    assert len(received) == 2


async def test_wrong_secret_is_refused_by_signature_verification(bedrock_sim: Simulator):
    config = route_config(
        bedrock_sim.url,
        credentials={
            "source": "static",
            "access_key_id": DEMO_ACCESS_KEY_ID,
            "secret_access_key": "nope",
        },
    )
    route = DirectBedrockRoute("direct_bedrock", config)
    await route.start()
    try:
        with pytest.raises(UpstreamAuthError) as info:
            await route.complete(REQUEST, budget_s=5)
        assert info.value.upstream_code == "InvalidSignatureException"
        assert "check the secret key" in info.value.message
    finally:
        await route.aclose()


async def test_credentials_come_from_the_sdk_chain(
    bedrock_sim: Simulator, monkeypatch: pytest.MonkeyPatch
):
    """With `source: chain`, botocore's provider chain finds the keys in the environment."""
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", DEMO_ACCESS_KEY_ID)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", DEMO_SECRET_ACCESS_KEY)
    route = DirectBedrockRoute(
        "direct_bedrock", route_config(bedrock_sim.url, credentials={"source": "chain"})
    )
    await route.start()
    try:
        assert route.readiness().status is HealthStatus.HEALTHY
        assert (await route.complete(REQUEST, budget_s=5)).text
    finally:
        await route.aclose()


async def test_no_credentials_makes_the_route_unready(bedrock_sim: Simulator):
    route = DirectBedrockRoute(
        "direct_bedrock", route_config(bedrock_sim.url, credentials={"source": "chain"})
    )
    await route.start()
    try:
        readiness = route.readiness()
        assert readiness.status is HealthStatus.UNHEALTHY
        assert "credential chain found no credentials" in readiness.detail
        with pytest.raises(UpstreamAuthError, match=r"no credentials"):
            await route.complete(REQUEST, budget_s=5)
        assert bedrock_sim.requests() == 0
    finally:
        await route.aclose()


async def test_env_reference_that_is_unset_is_explained(bedrock_sim: Simulator):
    config = route_config(
        bedrock_sim.url,
        credentials={
            "source": "static",
            "access_key_id": "env:NOT_SET_ANYWHERE",
            "secret_access_key": "x",
        },
    )
    route = DirectBedrockRoute("direct_bedrock", config)
    await route.start()
    try:
        assert "environment variable NOT_SET_ANYWHERE" in route.readiness().detail
    finally:
        await route.aclose()


async def test_connection_refused_is_unavailable():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    route = DirectBedrockRoute("direct_bedrock", route_config(f"http://127.0.0.1:{port}"))
    await route.start()
    try:
        with pytest.raises(UpstreamUnavailable, match=r"cannot connect to http://127\.0\.0\.1"):
            await route.complete(REQUEST, budget_s=5)
    finally:
        await route.aclose()
