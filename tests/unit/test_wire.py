"""OpenAI request parsing: what is accepted, and how each bad request is explained."""

from __future__ import annotations

import orjson
import pytest

from hybridroute.api.wire import error_body, parse_chat_request
from hybridroute.errors import MalformedJSON, RequestError, UnknownOperationType


def parse(body: object, headers: dict[str, str] | None = None):
    raw = body if isinstance(body, bytes) else orjson.dumps(body)
    return parse_chat_request(raw, headers or {}, "standard")


def test_a_plain_request_defaults_to_standard():
    request = parse({"model": "gpt-4o", "messages": [{"role": "user", "content": "hi"}]})
    assert request.operation_type == "standard"
    assert request.model == "gpt-4o"
    assert request.messages[0].content == "hi"
    assert not request.stream


def test_operation_type_from_header_or_metadata():
    body = {
        "messages": [{"role": "user", "content": "x"}],
        "metadata": {"operation_type": "background"},
    }
    assert parse(body).operation_type == "background"
    assert parse(body, {"x-operation-type": "Emergency"}).operation_type == "emergency"


def test_text_parts_and_developer_role():
    request = parse(
        {
            "messages": [
                {"role": "developer", "content": "be brief"},
                {
                    "role": "user",
                    "content": [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}],
                },
            ],
            "max_completion_tokens": 12,
            "stream": True,
            "stream_options": {"include_usage": True},
            "stop": "END",
            "temperature": 0,
        }
    )
    assert [(m.role, m.content) for m in request.messages] == [
        ("system", "be brief"),
        ("user", "ab"),
    ]
    assert request.max_tokens == 12
    assert request.stream
    assert request.include_usage
    assert request.stop == ("END",)
    assert request.temperature == 0.0


def test_latency_budget_and_residency_headers():
    request = parse(
        {"messages": [{"role": "user", "content": "x"}]},
        {"x-latency-budget-ms": "1500", "x-data-residency": "EU"},
    )
    assert request.latency_budget_ms == 1500
    assert request.residency == "eu"


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({}, "'messages' is required"),
        ({"messages": []}, "'messages' is required"),
        ({"messages": "hi"}, "'messages' is required"),
        (
            {"messages": [{"role": "tool", "content": "x"}]},
            "messages[0].role 'tool' is not supported",
        ),
        ({"messages": [{"role": "user"}]}, "messages[0].content must be a string"),
        (
            {"messages": [{"role": "user", "content": [{"type": "image_url"}]}]},
            "only text parts are supported",
        ),
        (
            {"messages": [{"role": "user", "content": "x"}], "max_tokens": 0},
            "'max_tokens' must be a positive",
        ),
        (
            {"messages": [{"role": "user", "content": "x"}], "temperature": 3},
            "'temperature' must be a number from 0 to 2",
        ),
        ({"messages": [{"role": "user", "content": "x"}], "n": 2}, "only one choice"),
        (
            {"messages": [{"role": "user", "content": "x"}], "tools": [{}]},
            "tool and function calling",
        ),
        (
            {"messages": [{"role": "user", "content": "x"}], "stream": "yes"},
            "'stream' must be true or false",
        ),
        ([1, 2], "must be a JSON object, not list"),
    ],
)
def test_bad_requests_are_explained(body, message):
    with pytest.raises(RequestError) as info:
        parse(body)
    assert message in info.value.message
    assert info.value.http_status() == 400


def test_malformed_json():
    with pytest.raises(MalformedJSON) as info:
        parse(b'{"messages": [')
    assert "not valid JSON" in info.value.message


def test_bad_latency_budget():
    with pytest.raises(RequestError, match="latency budget must be a whole number"):
        parse({"messages": [{"role": "user", "content": "x"}]}, {"x-latency-budget-ms": "soon"})


def test_error_body_shape():
    error = UnknownOperationType("urgent", ["emergency", "standard"])
    body = orjson.loads(error_body(error))
    assert body == {
        "error": {
            "message": "unknown operation type 'urgent'; valid operation types are: emergency, "
            "standard (send one in the X-Operation-Type header or metadata.operation_type)",
            "type": "invalid_request_error",
            "code": "unknown_operation_type",
            "param": "operation_type",
            "hybridroute": {
                "param": "operation_type",
                "valid_operation_types": ["emergency", "standard"],
            },
        }
    }
    assert error.http_status() == 422


@pytest.mark.parametrize("value", ["²", "1e3", "-5", "0", "600001"])
def test_latency_budget_values_that_are_not_plain_milliseconds(value: str):
    with pytest.raises(RequestError, match="latency budget must be a whole number"):
        parse(
            {
                "messages": [{"role": "user", "content": "x"}],
                "metadata": {"latency_budget_ms": value},
            }
        )


def test_max_tokens_above_the_gateways_limit_is_refused_with_the_setting_named():
    body = orjson.dumps({"messages": [{"role": "user", "content": "x"}], "max_tokens": 40_000})
    with pytest.raises(RequestError) as info:
        parse_chat_request(body, {}, "standard", max_tokens_limit=32_768)
    assert info.value.message == (
        "'max_tokens' is 40000; this gateway allows at most 32768 output tokens a request "
        "(routing.max_output_tokens)"
    )
    assert info.value.param == "max_tokens"
    ok = orjson.dumps({"messages": [{"role": "user", "content": "x"}], "max_tokens": 32_768})
    assert parse_chat_request(ok, {}, "standard", max_tokens_limit=32_768).max_tokens == 32_768
