"""The OpenAI chat-completions wire format: request parsing and response rendering.

Parsing is hand-written rather than a pydantic model: this is the hottest path of the gateway,
and every rejection names the field and says how to fix it. Fields the gateway does not use are
ignored; features it cannot honour (tools, several choices, non-text content) are refused with
a clear 400 rather than silently dropped.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import orjson

from hybridroute.errors import GatewayError, MalformedJSON, RequestError
from hybridroute.types import (
    DEFAULT_TENANT,
    CacheDirective,
    ChatMessage,
    ChatRequest,
    Completion,
    StreamEnd,
    Usage,
)

__all__ = [
    "DONE",
    "cache_directive",
    "completion_body",
    "error_body",
    "error_event",
    "parse_chat_request",
    "sse_chunk",
    "sse_usage",
]

DONE = b"data: [DONE]\n\n"
_ROLES = {"system": "system", "developer": "system", "user": "user", "assistant": "assistant"}
_MAX_BUDGET_MS = 600_000


def _fail(message: str, param: str) -> RequestError:
    return RequestError(message, param=param)


def parse_chat_request(
    body: bytes,
    headers: Mapping[str, str],
    default_operation_type: str,
    *,
    tenant: str = DEFAULT_TENANT,
    max_tokens_limit: int | None = None,
) -> ChatRequest:
    """Validate a chat-completions body (plus the gateway's headers) into a `ChatRequest`."""
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise MalformedJSON(
            f"the request body is not valid JSON ({exc}); send a JSON object with "
            "'model' and 'messages'"
        ) from None
    if not isinstance(data, dict):
        raise RequestError(f"the request body must be a JSON object, not {type(data).__name__}")
    _refuse_unsupported(data)
    metadata = data.get("metadata")
    if metadata is not None and not isinstance(metadata, dict):
        raise _fail("'metadata' must be an object of string values", "metadata")
    meta: Mapping[str, Any] = metadata or {}
    operation = headers.get("x-operation-type") or meta.get("operation_type")
    if operation is not None and not isinstance(operation, str):
        raise _fail("'metadata.operation_type' must be a string", "metadata.operation_type")
    model = data.get("model", "default")
    if not isinstance(model, str):
        raise _fail("'model' must be a string (any name; routing uses the operation type)", "model")
    stream = data.get("stream", False)
    if not isinstance(stream, bool):
        raise _fail("'stream' must be true or false", "stream")
    return ChatRequest(
        messages=_messages(data.get("messages")),
        operation_type=(operation or default_operation_type).strip().lower(),
        model=model,
        stream=stream,
        include_usage=_include_usage(data.get("stream_options")),
        max_tokens=_max_tokens(data, max_tokens_limit),
        temperature=_number(data, "temperature", 0.0, 2.0),
        top_p=_number(data, "top_p", 0.0, 1.0),
        stop=_stop(data.get("stop")),
        residency=_residency(headers.get("x-data-residency") or meta.get("residency")),
        latency_budget_ms=_budget(
            headers.get("x-latency-budget-ms") or meta.get("latency_budget_ms")
        ),
        cache=cache_directive(headers.get("cache-control")),
        tenant=tenant,
        subject=_subject(headers.get("x-data-subject") or data.get("user")),
    )


def _subject(value: object) -> str | None:
    if value is None or value == "":
        return None
    if not isinstance(value, str) or len(value) > 256:
        raise _fail(
            "'user' (or X-Data-Subject) must be a string of at most 256 characters naming the "
            "data subject",
            "user",
        )
    return value


def cache_directive(value: str | None) -> CacheDirective:
    """The cache directive of a `Cache-Control` request header: `no-store` wins over
    `no-cache` (and `max-age=0`, which means the same); anything else is the default."""
    if not value:
        return CacheDirective.DEFAULT
    directives = {part.strip().lower() for part in value.split(",")}
    if "no-store" in directives:
        return CacheDirective.NO_STORE
    if "no-cache" in directives or "max-age=0" in directives:
        return CacheDirective.NO_CACHE
    return CacheDirective.DEFAULT


def _refuse_unsupported(data: Mapping[str, Any]) -> None:
    if data.get("tools") or data.get("functions"):
        raise _fail(
            "tool and function calling are not supported by hybridroute's routes; "
            "send plain chat messages",
            "tools",
        )
    n = data.get("n", 1)
    if n not in (1, None):
        raise _fail("only one choice per request is supported; set 'n' to 1", "n")
    response_format = data.get("response_format")
    if isinstance(response_format, dict) and response_format.get("type") not in (None, "text"):
        raise _fail("only the 'text' response_format is supported", "response_format")


def _messages(value: object) -> tuple[ChatMessage, ...]:
    if not isinstance(value, list) or not value:
        raise _fail(
            '\'messages\' is required: a non-empty list of {"role": ..., "content": ...}',
            "messages",
        )
    messages = []
    for index, item in enumerate(value):
        where = f"messages[{index}]"
        if not isinstance(item, dict):
            raise _fail(f"{where} must be an object with 'role' and 'content'", where)
        role = item.get("role")
        mapped = _ROLES.get(role) if isinstance(role, str) else None
        if mapped is None:
            raise _fail(
                f"{where}.role {role!r} is not supported; use system, developer, user or assistant",
                f"{where}.role",
            )
        messages.append(ChatMessage(mapped, _content(item.get("content"), where)))
    return tuple(messages)


def _content(value: object, where: str) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, list):
        parts = []
        for index, part in enumerate(value):
            if not isinstance(part, dict) or part.get("type") != "text":
                kind = part.get("type") if isinstance(part, dict) else type(part).__name__
                raise _fail(
                    f"{where}.content[{index}] is of type {kind!r}; only text parts are supported",
                    f"{where}.content",
                )
            text = part.get("text")
            if not isinstance(text, str):
                raise _fail(f"{where}.content[{index}].text must be a string", f"{where}.content")
            parts.append(text)
        return "".join(parts)
    raise _fail(f"{where}.content must be a string or a list of text parts", f"{where}.content")


def _include_usage(value: object) -> bool:
    if value is None:
        return False
    if not isinstance(value, dict):
        raise _fail("'stream_options' must be an object", "stream_options")
    include = value.get("include_usage", False)
    if not isinstance(include, bool):
        raise _fail("'stream_options.include_usage' must be true or false", "stream_options")
    return include


def _max_tokens(data: Mapping[str, Any], limit: int | None) -> int | None:
    for key in ("max_completion_tokens", "max_tokens"):
        value = data.get(key)
        if value is None:
            continue
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise _fail(f"'{key}' must be a positive integer", key)
        if limit is not None and value > limit:
            raise _fail(
                f"'{key}' is {value}; this gateway allows at most {limit} output tokens a "
                "request (routing.max_output_tokens)",
                key,
            )
        return value
    return None


def _number(data: Mapping[str, Any], key: str, low: float, high: float) -> float | None:
    value = data.get(key)
    if value is None:
        return None
    if not isinstance(value, int | float) or isinstance(value, bool) or not low <= value <= high:
        raise _fail(f"'{key}' must be a number from {low:g} to {high:g}", key)
    return float(value)


def _stop(value: object) -> tuple[str, ...]:
    if value is None:
        return ()
    if isinstance(value, str):
        return (value,)
    if isinstance(value, list) and all(isinstance(s, str) for s in value) and len(value) <= 4:
        return tuple(value)
    raise _fail("'stop' must be a string or a list of up to 4 strings", "stop")


def _residency(value: object) -> str | None:
    if value is None or value == "":
        return None
    if not isinstance(value, str):
        raise _fail("the residency constraint must be a region-set name such as 'eu'", "residency")
    return value.strip().lower()


def _budget(value: object) -> int | None:
    if value is None or value == "":
        return None
    budget = 0
    if isinstance(value, int) and not isinstance(value, bool):
        budget = value
    elif isinstance(value, str) and value.strip().isascii() and value.strip().isdigit():
        budget = int(value.strip())
    if not 1 <= budget <= _MAX_BUDGET_MS:
        raise _fail(
            f"the latency budget must be a whole number of milliseconds from 1 to "
            f"{_MAX_BUDGET_MS} (X-Latency-Budget-Ms or metadata.latency_budget_ms), got {value!r}",
            "latency_budget_ms",
        )
    return budget


def _usage(usage: Usage) -> dict[str, int]:
    return {
        "prompt_tokens": usage.input_tokens,
        "completion_tokens": usage.output_tokens,
        "total_tokens": usage.total_tokens,
    }


def completion_body(
    *,
    completion_id: str,
    created: int,
    completion: Completion,
    route: str,
    decision_id: str,
    fallback: bool,
    extra: Mapping[str, Any] | None = None,
) -> bytes:
    """A `chat.completion` object; `extra` adds to its `hybridroute` extension (cost, cache)."""
    return orjson.dumps(
        {
            "id": completion_id,
            "object": "chat.completion",
            "created": created,
            "model": completion.model,
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": completion.text},
                    "finish_reason": completion.finish_reason,
                    "logprobs": None,
                }
            ],
            "usage": _usage(completion.usage),
            "hybridroute": {
                "route": route,
                "decision_id": decision_id,
                "fallback": fallback,
                "usage_estimated": completion.usage.estimated,
                **(extra or {}),
            },
        }
    )


def sse_chunk(
    completion_id: str,
    created: int,
    model: str,
    delta: Mapping[str, str],
    finish_reason: str | None = None,
    extra: Mapping[str, Any] | None = None,
) -> bytes:
    """One `chat.completion.chunk` as a server-sent event (`extra`: a `hybridroute` extension,
    sent on the final chunk with the cost)."""
    chunk: dict[str, Any] = {
        "id": completion_id,
        "object": "chat.completion.chunk",
        "created": created,
        "model": model,
        "choices": [{"index": 0, "delta": delta, "finish_reason": finish_reason}],
    }
    if extra:
        chunk["hybridroute"] = dict(extra)
    return b"data: " + orjson.dumps(chunk) + b"\n\n"


def sse_usage(
    completion_id: str,
    created: int,
    model: str,
    end: StreamEnd,
    extra: Mapping[str, Any] | None = None,
) -> bytes:
    """The usage chunk sent when the caller asked for `stream_options.include_usage`."""
    chunk: dict[str, Any] = {
        "id": completion_id,
        "object": "chat.completion.chunk",
        "created": created,
        "model": model,
        "choices": [],
        "usage": _usage(end.usage),
    }
    if extra:
        chunk["hybridroute"] = dict(extra)
    return b"data: " + orjson.dumps(chunk) + b"\n\n"


def error_body(error: GatewayError) -> bytes:
    """The one error shape of every endpoint (OpenAI's, plus the gateway's details)."""
    details = error.details()
    body: dict[str, Any] = {
        "message": error.message,
        "type": error.error_type,
        "code": error.code,
        "param": details.get("param"),
    }
    if details:
        body["hybridroute"] = details
    return orjson.dumps({"error": body})


def error_event(error: GatewayError) -> bytes:
    """A terminal server-sent event carrying an error (the stream ends after it)."""
    return b"data: " + error_body(error) + b"\n\n"
