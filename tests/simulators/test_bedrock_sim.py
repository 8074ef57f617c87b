"""The Bedrock simulator, driven by the official botocore bedrock-runtime client over loopback."""

from __future__ import annotations

import contextlib
import time
from typing import Any

import botocore
import pytest
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials
from botocore.eventstream import ChecksumMismatch
from botocore.exceptions import ClientError, EventStreamError, ReadTimeoutError

from hybridroute.simulators.bedrock import (
    DEMO_ACCESS_KEY_ID,
    DEMO_SECRET_ACCESS_KEY,
    GARBAGE_BODY,
)

MODEL = "anthropic.claude-3-5-haiku-20241022-v1:0"
REGION = "eu-central-1"
USER_TEXT = "What   is the\ncapital of France?"
ANSWER = f"Simulated answer from {MODEL} in {REGION}: What is the capital of France?"


def _messages(text: str = USER_TEXT) -> list[dict[str, Any]]:
    return [{"role": "user", "content": [{"text": text}]}]


def _converse(client: Any, **kwargs: Any) -> Any:
    return client.converse(modelId=kwargs.pop("modelId", MODEL), messages=_messages(), **kwargs)


def _stream_events(
    client: Any, received: list[dict[str, Any]] | None = None, **kwargs: Any
) -> list[dict[str, Any]]:
    """Every event of a ConverseStream (also appended to `received`, kept if iteration raises)."""
    events = received if received is not None else []
    response = client.converse_stream(modelId=MODEL, messages=_messages(), **kwargs)
    with contextlib.closing(response["stream"]) as stream:
        events.extend(stream)
    return events


def _event_names(events: list[dict[str, Any]]) -> list[str]:
    return [name for event in events for name in event]


def _deltas(events: list[dict[str, Any]]) -> list[str]:
    return [e["contentBlockDelta"]["delta"]["text"] for e in events if "contentBlockDelta" in e]


# --- success paths ---------------------------------------------------------------------------


def test_converse_answers_in_bedrock_shape(bedrock_client, bedrock_sim) -> None:
    response = _converse(bedrock_client, system=[{"text": "Be brief."}])
    assert response["output"]["message"] == {"role": "assistant", "content": [{"text": ANSWER}]}
    assert response["stopReason"] == "end_turn"
    output_tokens = len(ANSWER.split())
    assert response["usage"] == {
        "inputTokens": 8,  # 6 user words + 2 system words
        "outputTokens": output_tokens,
        "totalTokens": 8 + output_tokens,
    }
    assert isinstance(response["metrics"]["latencyMs"], int)
    request_id = response["ResponseMetadata"]["RequestId"]
    assert len(request_id) == 36


def test_stats_record_model_region_and_raw_path(bedrock_client, bedrock_sim) -> None:
    _converse(bedrock_client)
    record = bedrock_sim.last()
    assert record["model_id"] == MODEL
    assert record["region"] == REGION
    assert record["operation"] == "converse"
    assert record["outcome"] == "ok"
    assert record["path"] == "/model/anthropic.claude-3-5-haiku-20241022-v1%3A0/converse"


def test_region_in_answer_and_stats_follows_the_client(make_bedrock_client, bedrock_sim) -> None:
    response = _converse(make_bedrock_client(region="ap-southeast-2"))
    assert "in ap-southeast-2:" in response["output"]["message"]["content"][0]["text"]
    assert bedrock_sim.last()["region"] == "ap-southeast-2"


def test_converse_stream_events_in_order(bedrock_client, bedrock_sim) -> None:
    events = _stream_events(bedrock_client)
    assert _event_names(events) == [
        "messageStart",
        *["contentBlockDelta"] * 4,
        "contentBlockStop",
        "messageStop",
        "metadata",
    ]
    assert events[0]["messageStart"] == {"role": "assistant"}
    assert "".join(_deltas(events)) == ANSWER
    assert events[-2]["messageStop"]["stopReason"] == "end_turn"
    usage = events[-1]["metadata"]["usage"]
    assert usage["outputTokens"] == len(ANSWER.split())
    assert usage["totalTokens"] == usage["inputTokens"] + usage["outputTokens"]
    assert bedrock_sim.last()["operation"] == "converse-stream"


def test_stream_chunk_knobs(bedrock_client, bedrock_sim) -> None:
    bedrock_sim.knobs.update({"stream_chunks": 9, "stream_chunk_delay_ms": 5})
    started = time.monotonic()
    events = _stream_events(bedrock_client)
    assert len(_deltas(events)) == 9
    assert "".join(_deltas(events)) == ANSWER
    assert time.monotonic() - started >= 0.04


def test_max_tokens_truncation(bedrock_client, bedrock_sim) -> None:
    response = _converse(bedrock_client, inferenceConfig={"maxTokens": 3, "temperature": 0.2})
    assert response["output"]["message"]["content"][0]["text"] == "Simulated answer from"
    assert response["stopReason"] == "max_tokens"
    assert response["usage"]["outputTokens"] == 3
    events = _stream_events(bedrock_client, inferenceConfig={"maxTokens": 3})
    assert "".join(_deltas(events)) == "Simulated answer from"
    assert events[-2]["messageStop"]["stopReason"] == "max_tokens"


def test_latency_knob_delays_the_answer(bedrock_client, bedrock_sim) -> None:
    bedrock_sim.knobs.update({"latency_ms": 60})
    started = time.monotonic()
    _converse(bedrock_client)
    assert time.monotonic() - started >= 0.06


# --- injected errors -------------------------------------------------------------------------

ERROR_CASES = [
    ("throttling", "ThrottlingException", 429),
    ("unavailable", "ServiceUnavailableException", 503),
    ("internal", "InternalServerException", 500),
    ("model_timeout", "ModelTimeoutException", 408),
    ("model_not_ready", "ModelNotReadyException", 429),
    ("validation", "ValidationException", 400),
    ("access_denied", "AccessDeniedException", 403),
    ("model_error", "ModelErrorException", 424),
]


@pytest.mark.parametrize(("kind", "name", "status"), ERROR_CASES)
def test_error_kinds_raise_the_modelled_exception(
    bedrock_client, bedrock_sim, kind, name, status
) -> None:
    bedrock_sim.knobs.update({"error_rate": 1, "error_kind": kind})
    exception_class = getattr(bedrock_client.exceptions, name)
    with pytest.raises(exception_class) as caught:
        _converse(bedrock_client)
    error = caught.value.response
    assert error["Error"]["Code"] == name
    assert error["ResponseMetadata"]["HTTPStatusCode"] == status
    headers = error["ResponseMetadata"]["HTTPHeaders"]
    assert headers["x-amzn-errortype"].startswith(f"{name}:http://internal.amazon.com/coral/")
    assert headers["content-type"] == "application/json"
    assert error["Error"]["Message"]
    assert error["ResponseMetadata"]["RetryAttempts"] == 0
    assert bedrock_sim.stats.as_dict()["by_outcome"] == {f"error:{kind}": 1}


@pytest.mark.parametrize(
    ("kind", "name"),
    [("model_not_ready", "ModelNotReadyException"), ("validation", "ValidationException")],
)
def test_stream_errors_before_the_stream_are_http_errors(
    bedrock_client, bedrock_sim, kind, name
) -> None:
    bedrock_sim.knobs.update({"error_rate": 1, "error_kind": kind})
    with pytest.raises(getattr(bedrock_client.exceptions, name)):
        _stream_events(bedrock_client)


def test_throttle_rate_throttles(bedrock_client, bedrock_sim) -> None:
    bedrock_sim.knobs.update({"throttle_rate": 1, "error_rate": 1, "error_kind": "internal"})
    with pytest.raises(bedrock_client.exceptions.ThrottlingException):
        _converse(bedrock_client)


def test_outage_is_service_unavailable(bedrock_client, bedrock_sim) -> None:
    bedrock_sim.knobs.update({"outage": True})
    with pytest.raises(bedrock_client.exceptions.ServiceUnavailableException):
        _converse(bedrock_client)
    assert bedrock_sim.last()["outcome"] == "error:outage"


def test_garbage_and_truncated_bodies_parse_to_nothing(bedrock_client, bedrock_sim, http) -> None:
    bedrock_sim.knobs.update({"error_rate": 1, "error_kind": "garbage"})
    response = _converse(bedrock_client)
    assert "output" not in response  # botocore swallows an unparsable 200 body
    assert response["ResponseMetadata"]["HTTPHeaders"]["content-type"].startswith("text/html")
    assert response["ResponseMetadata"]["HTTPHeaders"]["content-length"] == str(len(GARBAGE_BODY))
    bedrock_sim.knobs.update({"error_kind": "truncate"})
    assert "output" not in _converse(bedrock_client)


def test_garbage_stream_fails_the_checksum(bedrock_client, bedrock_sim) -> None:
    bedrock_sim.knobs.update({"error_rate": 1, "error_kind": "garbage"})
    with pytest.raises(ChecksumMismatch):
        _stream_events(bedrock_client)


def test_truncated_stream_stops_after_half_the_deltas(bedrock_client, bedrock_sim) -> None:
    bedrock_sim.knobs.update({"error_rate": 1, "error_kind": "truncate", "stream_chunks": 6})
    events = _stream_events(bedrock_client)
    assert _event_names(events) == ["messageStart", *["contentBlockDelta"] * 3]
    assert bedrock_sim.last()["outcome"] == "error:truncate"


@pytest.mark.parametrize(
    ("kind", "exception_type"),
    [
        ("throttling", "throttlingException"),
        ("unavailable", "serviceUnavailableException"),
        ("validation", "validationException"),
        ("model_error", "modelStreamErrorException"),
        ("internal", "internalServerException"),
        ("model_timeout", "internalServerException"),
    ],
)
def test_stream_fail_after_raises_mid_stream(
    bedrock_client, bedrock_sim, kind, exception_type
) -> None:
    bedrock_sim.knobs.update({"stream_fail_after": 2, "error_kind": kind})
    received: list[dict[str, Any]] = []
    with pytest.raises(EventStreamError) as caught:
        _stream_events(bedrock_client, received)
    assert _event_names(received) == ["messageStart", "contentBlockDelta", "contentBlockDelta"]
    assert caught.value.response["Error"]["Code"] == exception_type
    assert bedrock_sim.last()["outcome"] == f"stream_error:{kind}"


def test_stream_fail_after_all_chunks_fails_before_the_stop(bedrock_client, bedrock_sim) -> None:
    bedrock_sim.knobs.update({"stream_fail_after": 4, "error_kind": "throttling"})
    received: list[dict[str, Any]] = []
    with pytest.raises(EventStreamError):
        _stream_events(bedrock_client, received)
    assert _event_names(received) == ["messageStart", *["contentBlockDelta"] * 4]


def test_stream_fail_after_beyond_the_chunks_never_fails(bedrock_client, bedrock_sim) -> None:
    bedrock_sim.knobs.update({"stream_fail_after": 5, "stream_chunks": 4})
    assert _event_names(_stream_events(bedrock_client))[-1] == "metadata"


def test_hang_never_answers_and_ends_when_the_client_leaves(
    make_bedrock_client, bedrock_sim
) -> None:
    bedrock_sim.knobs.update({"hang": True})
    client = make_bedrock_client(read_timeout=0.3)
    with pytest.raises(ReadTimeoutError):
        _converse(client)
    deadline = time.monotonic() + 5
    while bedrock_sim.stats.requests == 0 and time.monotonic() < deadline:
        time.sleep(0.01)  # noqa: TID251 - a synchronous test polling another thread
    assert bedrock_sim.last()["outcome"] == "hang"


# --- authentication --------------------------------------------------------------------------


def test_wrong_secret_is_rejected(make_bedrock_client, bedrock_sim) -> None:
    client = make_bedrock_client(secret="not-the-secret")
    with pytest.raises(ClientError) as caught:
        _converse(client)
    assert caught.value.response["Error"]["Code"] == "InvalidSignatureException"
    assert caught.value.response["ResponseMetadata"]["HTTPStatusCode"] == 403
    assert bedrock_sim.last()["outcome"] == "denied:InvalidSignatureException"


def test_unknown_access_key_is_rejected(make_bedrock_client) -> None:
    client = make_bedrock_client(access_key="AKIAUNKNOWNUNKNOWN00")
    with pytest.raises(ClientError) as caught:
        _converse(client)
    assert caught.value.response["Error"]["Code"] == "UnrecognizedClientException"
    assert caught.value.response["ResponseMetadata"]["HTTPStatusCode"] == 403


def test_signature_for_another_service_is_rejected(bedrock_sim, http) -> None:
    body = b'{"messages": [{"role": "user", "content": [{"text": "hi"}]}]}'
    request = AWSRequest(
        method="POST",
        url=f"{bedrock_sim.url}/model/m/converse",
        headers={"content-type": "application/json"},
        data=body,
    )
    credentials = Credentials(DEMO_ACCESS_KEY_ID, DEMO_SECRET_ACCESS_KEY)
    SigV4Auth(credentials, "bedrock-runtime", REGION).add_auth(request)
    reply = http.request("POST", request.url, body, dict(request.headers.items()))
    assert reply.status == 403
    assert reply.headers["x-amzn-errortype"].startswith("InvalidSignatureException:")
    assert "'bedrock'" in reply.json()["message"]


def test_unsigned_request_is_rejected(make_bedrock_client) -> None:
    client = make_bedrock_client(signature_version=botocore.UNSIGNED)
    with pytest.raises(ClientError) as caught:
        _converse(client)
    assert caught.value.response["Error"]["Code"] == "MissingAuthenticationTokenException"


# --- request validation (raw HTTP; botocore validates parameters client-side) ----------------


@pytest.mark.parametrize(
    ("body", "named"),
    [
        (b"{not json", "not valid JSON"),
        (b"[]", "JSON object"),
        (b'{"messages": ["hi"]}', "messages[0]"),
        (b'{"messages": [{"role": "user", "content": [{"text": 1}]}]}', "content[0].text"),
        (b'{"messages": [{"role": "user", "content": ["x"]}]}', "content[0]"),
        (b'{"messages": [{"role": "user", "content": [{"text": "a"}]}], "system": "s"}', "system"),
        (
            b'{"messages": [{"role": "user", "content": [{"text": "a"}]}], "inferenceConfig": 1}',
            "inferenceConfig",
        ),
        (b'{"messages": []}', "'messages'"),
        (b'{"messages": [{"role": "user", "content": "hi"}]}', "messages[0].content"),
        (b'{"messages": [{"role": "robot", "content": [{"text": "hi"}]}]}', "messages[0].role"),
        (
            b'{"messages": [{"role": "assistant", "content": [{"text": "hi"}]}]}',
            "user message",
        ),
        (
            b'{"messages": [{"role": "user", "content": [{"text": "hi"}]}],'
            b' "inferenceConfig": {"maxTokens": 0}}',
            "maxTokens",
        ),
    ],
)
def test_malformed_requests_are_validation_errors(open_bedrock_sim, http, body, named) -> None:
    reply = http.request("POST", f"{open_bedrock_sim.url}/model/m/converse", body)
    assert reply.status == 400
    assert reply.headers["x-amzn-errortype"].startswith("ValidationException:")
    assert named in reply.json()["message"]


def test_open_simulator_accepts_unsigned_requests(open_bedrock_sim, http) -> None:
    body = b'{"messages": [{"role": "user", "content": [{"text": "hi"}]}]}'
    reply = http.request("POST", f"{open_bedrock_sim.url}/model/a%3Ab/converse", body)
    assert reply.status == 200
    text = reply.json()["output"]["message"]["content"][0]["text"]
    assert text == "Simulated answer from a:b in unknown-region: hi"
    assert open_bedrock_sim.last()["model_id"] == "a:b"
