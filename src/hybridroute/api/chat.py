"""POST /v1/chat/completions: parse, decide, serve, render (JSON or server-sent events).

Every response carries the decision headers: `x-hybridroute-route` (the route that answered, or
`none`), `x-hybridroute-decision-id`, `x-hybridroute-fallback` (served by a route other than the
matrix primary) and `x-hybridroute-overhead-ms` (time spent in the gateway, upstream time
excluded); `x-hybridroute-attempts` lists the attempts when there was more than one, and
`x-hybridroute-hedged: true` says the fallback was started alongside a slow primary. A stream
may fall back until its first event; after that, a failure ends it with an error event.
"""

from __future__ import annotations

import logging
import time
from time import perf_counter

from hybridroute._aio import LoopCache
from hybridroute.api.disconnect import DisconnectWatch
from hybridroute.api.http import (
    Receive,
    Scope,
    Send,
    header_value,
    read_body,
    request_headers,
    send_error,
    send_json,
)
from hybridroute.api.wire import (
    DONE,
    completion_body,
    error_event,
    parse_chat_request,
    sse_chunk,
    sse_usage,
)
from hybridroute.errors import GatewayError, StreamInterrupted
from hybridroute.gateway import Gateway, OpenStream
from hybridroute.gateway.attempts import summarise
from hybridroute.routing.policy import Decision
from hybridroute.types import ChatRequest, GenerationRequest, StreamEnd, TextDelta

__all__ = ["ChatEndpoint"]

log = logging.getLogger("hybridroute.api")

_SSE_HEADERS = [
    (b"content-type", b"text/event-stream; charset=utf-8"),
    (b"cache-control", b"no-cache"),
    (b"x-accel-buffering", b"no"),
]
_FALSE, _TRUE = b"false", b"true"


def _decision_headers(
    decision: Decision | None,
    route: str | None,
    fallback: bool,
    overhead_s: float,
    attempts: str | None = None,
    hedged: bool = False,
) -> list[tuple[bytes, bytes]]:
    headers = [
        (b"x-hybridroute-route", (route or "none").encode()),
        (b"x-hybridroute-decision-id", decision.decision_id.encode() if decision else b"none"),
        (b"x-hybridroute-fallback", _TRUE if fallback else _FALSE),
        (b"x-hybridroute-overhead-ms", f"{max(overhead_s, 0.0) * 1000:.3f}".encode()),
    ]
    if decision is not None:
        headers.append((b"x-hybridroute-reason", header_value(decision.reason)))
    if attempts:
        headers.append((b"x-hybridroute-attempts", header_value(attempts)))
    if hedged:
        headers.append((b"x-hybridroute-hedged", _TRUE))
    return headers


class ChatEndpoint:
    """The chat-completions handler, bound to whatever gateway is current."""

    def __init__(self, max_body_bytes: int) -> None:
        self._max_body = max_body_bytes
        self._loop = LoopCache()

    async def __call__(self, gateway: Gateway, scope: Scope, receive: Receive, send: Send) -> None:
        started = perf_counter()
        decision: Decision | None = None
        try:
            body = await read_body(scope, receive, self._max_body)
            chat = parse_chat_request(
                body, request_headers(scope), gateway.matrix.default_operation_type
            )
            decision, generation = gateway.plan(chat)
            with DisconnectWatch(receive, self._loop.get()) as watch:
                if chat.stream:
                    await self._stream(gateway, chat, decision, generation, started, send)
                else:
                    await self._complete(gateway, decision, generation, started, send)
            if watch.client_gone:
                log.info("client went away; request %s abandoned", decision.decision_id)
        except GatewayError as error:
            if error.http_status() >= 500:
                log.warning("request failed: %s", error.message)
            overhead = perf_counter() - started
            await send_error(send, error, _decision_headers(decision, None, False, overhead))
        except Exception:
            log.exception("unexpected error serving chat request")
            overhead = perf_counter() - started
            internal = GatewayError("internal error; the gateway logged the details")
            await send_error(send, internal, _decision_headers(decision, None, False, overhead))

    async def _complete(
        self,
        gateway: Gateway,
        decision: Decision,
        generation: GenerationRequest,
        started: float,
        send: Send,
    ) -> None:
        served = await gateway.complete(decision, generation)
        body = completion_body(
            completion_id=f"chatcmpl-{decision.decision_id}",
            created=int(time.time()),
            completion=served.completion,
            route=served.route,
            decision_id=decision.decision_id,
            fallback=served.fallback,
        )
        overhead = perf_counter() - started - served.upstream_s
        attempts = summarise(served.attempts) if len(served.attempts) > 1 else None
        headers = _decision_headers(
            decision, served.route, served.fallback, overhead, attempts, served.hedged
        )
        await send_json(send, 200, body, headers)

    async def _stream(
        self,
        gateway: Gateway,
        chat: ChatRequest,
        decision: Decision,
        generation: GenerationRequest,
        started: float,
        send: Send,
    ) -> None:
        opened = await gateway.open_stream(decision, generation)
        try:
            overhead = perf_counter() - started - opened.upstream_s
            attempts = summarise(opened.attempts) if len(opened.attempts) > 1 else None
            headers = _decision_headers(
                decision, opened.route, opened.fallback, overhead, attempts, opened.hedged
            )
            await send(
                {"type": "http.response.start", "status": 200, "headers": _SSE_HEADERS + headers}
            )
            try:
                await self._relay(chat, opened, send)
            except OSError:
                raise
            except Exception as exc:  # the response has started: end it with an error event
                log.exception("unexpected error in stream %s", decision.decision_id)
                failure = (
                    exc
                    if isinstance(exc, GatewayError)
                    else GatewayError("internal error; the gateway logged the details")
                )
                await send({"type": "http.response.body", "body": error_event(failure)})
        finally:
            await opened.aclose()

    async def _relay(self, chat: ChatRequest, opened: OpenStream, send: Send) -> None:
        completion_id = f"chatcmpl-{opened.decision.decision_id}"
        created = int(time.time())
        model = opened.model

        async def emit(data: bytes, more: bool = True) -> None:
            await send({"type": "http.response.body", "body": data, "more_body": more})

        await emit(sse_chunk(completion_id, created, model, {"role": "assistant", "content": ""}))
        try:
            async for event in opened.events():
                if isinstance(event, TextDelta):
                    await emit(sse_chunk(completion_id, created, model, {"content": event.text}))
                elif isinstance(event, StreamEnd):
                    await emit(sse_chunk(completion_id, created, model, {}, event.finish_reason))
                    if chat.include_usage:
                        await emit(sse_usage(completion_id, created, model, event))
                    await emit(DONE, more=False)
        except StreamInterrupted as error:
            log.warning("stream %s interrupted: %s", opened.decision.decision_id, error.message)
            await emit(error_event(error), more=False)
