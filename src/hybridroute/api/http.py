"""Small ASGI helpers for the data plane: read a bounded body, send a response, read headers.

The data plane is a plain ASGI callable rather than a framework app: its few routes are served
on the request's hot path, where every layer costs.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable, Mapping, MutableMapping
from typing import Any
from urllib.parse import parse_qs

import orjson

from hybridroute.api.wire import error_body
from hybridroute.errors import GatewayError, MalformedJSON, PayloadTooLarge, RequestError

__all__ = [
    "Receive",
    "Scope",
    "Send",
    "header_value",
    "query_params",
    "read_body",
    "read_json_object",
    "request_headers",
    "send_error",
    "send_json",
]

Scope = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]
Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]

_JSON = b"application/json"
_SAFE = {i: " " for i in range(32)} | {127: " "}


def header_value(text: str, limit: int = 512) -> bytes:
    """A header-safe value: control characters replaced, non-ASCII escaped, length capped."""
    cleaned = text.translate(_SAFE)[:limit]
    return cleaned.encode("ascii", "backslashreplace")


def request_headers(scope: Scope) -> dict[str, str]:
    """The request's headers, names lower-cased (ASGI already lower-cases them)."""
    return {k.decode("latin-1"): v.decode("latin-1") for k, v in scope["headers"]}


async def read_body(scope: Scope, receive: Receive, limit: int) -> bytes:
    """The whole request body, refusing more than `limit` bytes with 413."""
    for name, value in scope["headers"]:
        if name == b"content-length":
            try:
                declared = int(value)
            except ValueError:
                raise RequestError("the Content-Length header is not a number") from None
            if declared > limit:
                raise _too_large(declared, limit)
            break
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise RequestError("the client disconnected while sending the body")
        chunk = message.get("body", b"")
        if chunk:
            size += len(chunk)
            if size > limit:
                raise _too_large(size, limit)
            chunks.append(chunk)
        if not message.get("more_body", False):
            break
    return chunks[0] if len(chunks) == 1 else b"".join(chunks)


async def read_json_object(
    scope: Scope, receive: Receive, example: str, limit: int = 1024 * 1024
) -> dict[str, Any]:
    """An admin request's JSON object body ({} when empty), whatever its Content-Type says
    (`curl -d` sends form encoding by default)."""
    raw = await read_body(scope, receive, limit)
    if not raw.strip():
        return {}
    try:
        data = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise MalformedJSON(f"the body is not valid JSON ({exc}); send {example}") from None
    if not isinstance(data, dict):
        raise RequestError(f"the body must be a JSON object, like {example}")
    return data


def query_params(scope: Scope) -> dict[str, str]:
    """The query string's parameters (the last value of each)."""
    parsed = parse_qs(scope.get("query_string", b"").decode("latin-1"), keep_blank_values=True)
    return {name: values[-1] for name, values in parsed.items()}


def _too_large(size: int, limit: int) -> PayloadTooLarge:
    return PayloadTooLarge(
        f"the request body ({size} bytes or more) exceeds the {limit}-byte limit; "
        "shorten the conversation or raise server.max_body_bytes"
    )


async def send_json(
    send: Send,
    status: int,
    body: bytes,
    headers: Iterable[tuple[bytes, bytes]] = (),
) -> None:
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", _JSON),
                (b"content-length", str(len(body)).encode()),
                *headers,
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})


async def send_error(
    send: Send, error: GatewayError, headers: Iterable[tuple[bytes, bytes]] = ()
) -> None:
    extra: Mapping[str, str] = error.headers()
    all_headers = [*headers, *((k.encode(), header_value(v)) for k, v in extra.items())]
    await send_json(send, error.http_status(), error_body(error), all_headers)
