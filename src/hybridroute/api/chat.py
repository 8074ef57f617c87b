"""POST /v1/chat/completions: parse, identify the tenant, answer from the cache or decide and
serve, render (JSON or server-sent events).

Every response carries the decision headers: `x-hybridroute-route` (the route that answered,
or `none`), `x-hybridroute-decision-id`, `x-hybridroute-fallback` (served by a route other than
the matrix primary) and `x-hybridroute-overhead-ms` (time spent in the gateway, upstream time
excluded); `x-hybridroute-attempts` lists the attempts when there was more than one, and
`x-hybridroute-hedged: true` says the fallback was started alongside a slow primary. A JSON
answer carries `x-hybridroute-cost` (what its attempts cost, in `x-hybridroute-currency`); a
stream reports its cost in the `hybridroute` extension of its final chunk. `x-hybridroute-cache`
says what the response cache did: `hit`, `miss`, `bypass` or `off`. A stream may fall back until
its first event; after that, a failure ends it with an error event.
"""

from __future__ import annotations

import logging
import time
from decimal import Decimal
from time import perf_counter
from typing import Any

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
from hybridroute.api.outcome import RequestReport
from hybridroute.api.wire import (
    DONE,
    completion_body,
    error_event,
    parse_chat_request,
    sse_chunk,
    sse_usage,
)
from hybridroute.caching import CachedResponse
from hybridroute.errors import GatewayError, StreamInterrupted
from hybridroute.gateway import Gateway
from hybridroute.gateway.accounting import format_cost
from hybridroute.gateway.attempts import summarise
from hybridroute.gateway.metered import MeteredStream
from hybridroute.gateway.service import Prepared
from hybridroute.observability.events import Outcome
from hybridroute.routing.policy import Decision
from hybridroute.types import Completion, StreamEnd, TextDelta

__all__ = ["ChatEndpoint"]

log = logging.getLogger("hybridroute.api")

_SSE_HEADERS = [
    (b"content-type", b"text/event-stream; charset=utf-8"),
    (b"cache-control", b"no-cache"),
    (b"x-accel-buffering", b"no"),
]
_FALSE, _TRUE = b"false", b"true"


def _decision_headers(
    decision_id: str | None,
    route: str | None,
    fallback: bool,
    overhead_s: float,
    *,
    reason: str | None = None,
    attempts: str | None = None,
    hedged: bool = False,
) -> list[tuple[bytes, bytes]]:
    headers = [
        (b"x-hybridroute-route", (route or "none").encode()),
        (b"x-hybridroute-decision-id", decision_id.encode() if decision_id else b"none"),
        (b"x-hybridroute-fallback", _TRUE if fallback else _FALSE),
        (b"x-hybridroute-overhead-ms", f"{max(overhead_s, 0.0) * 1000:.3f}".encode()),
    ]
    if reason:
        headers.append((b"x-hybridroute-reason", header_value(reason)))
    if attempts:
        headers.append((b"x-hybridroute-attempts", header_value(attempts)))
    if hedged:
        headers.append((b"x-hybridroute-hedged", _TRUE))
    return headers


def _cost_headers(cost: Decimal, currency: str) -> list[tuple[bytes, bytes]]:
    return [
        (b"x-hybridroute-cost", format_cost(cost).encode()),
        (b"x-hybridroute-currency", currency.encode()),
    ]


def _cache_headers(status: str, reason: str | None = None) -> list[tuple[bytes, bytes]]:
    headers = [(b"x-hybridroute-cache", status.encode())]
    if reason and status == "off":
        headers.append((b"x-hybridroute-cache-reason", header_value(reason)))
    return headers


def _presented_key(scope: Scope) -> bytes | None:
    bearer: bytes | None = None
    for name, value in scope["headers"]:
        if name == b"x-api-key" and value.strip():
            return bytes(value.strip())
        if name == b"authorization":
            scheme, _, token = value.partition(b" ")
            if scheme.lower() == b"bearer" and token.strip():
                bearer = bytes(token.strip())
    return bearer


class ChatEndpoint:
    """The chat-completions handler, bound to whatever gateway is current."""

    def __init__(self, max_body_bytes: int) -> None:
        self._max_body = max_body_bytes
        self._loop = LoopCache()

    async def __call__(self, gateway: Gateway, scope: Scope, receive: Receive, send: Send) -> None:
        started = perf_counter()
        report = RequestReport()
        try:
            await self._serve(gateway, scope, receive, send, started, report)
        finally:
            event = report.event(
                at=gateway.now(),
                latency_s=perf_counter() - started,
                currency=gateway.accountant.currency,
            )
            if event is not None:
                gateway.observe(event)

    async def _serve(
        self,
        gateway: Gateway,
        scope: Scope,
        receive: Receive,
        send: Send,
        started: float,
        report: RequestReport,
    ) -> None:
        decision_id: str | None = None
        reason: str | None = None
        try:
            body = await read_body(scope, receive, self._max_body)
            tenant = gateway.tenants.identify(_presented_key(scope))
            chat = parse_chat_request(
                body,
                request_headers(scope),
                gateway.matrix.default_operation_type,
                tenant=tenant,
                max_tokens_limit=gateway.max_output_tokens,
            )
            if chat.subject is not None:  # no coroutine on the common path
                chat = await gateway.pseudonymise(chat)
            prepared = gateway.prepare(chat)
            report.prepared(prepared)
            decision_id = prepared.decision_id
            hit = await gateway.cached(prepared)
            if hit is not None:
                report.cached(hit)
                await self._replay(gateway, prepared, hit, started, send)
                return
            decision = gateway.decide(prepared)
            report.decided(decision)
            reason = decision.reason
            with DisconnectWatch(receive, self._loop.get()) as watch:
                if chat.stream:
                    await self._stream(gateway, prepared, decision, started, send, report)
                else:
                    await self._complete(gateway, prepared, decision, started, send, report)
            if watch.client_gone:
                log.info("client went away; request %s abandoned", decision_id)
        except GatewayError as error:
            report.failed(error)
            if error.http_status() >= 500:
                log.warning("request failed: %s", error.message)
            overhead = perf_counter() - started
            headers = _decision_headers(decision_id, None, False, overhead, reason=reason)
            await send_error(send, error, headers)
        except Exception:
            log.exception("unexpected error serving chat request")
            overhead = perf_counter() - started
            internal = GatewayError("internal error; the gateway logged the details")
            report.failed(internal)
            headers = _decision_headers(decision_id, None, False, overhead, reason=reason)
            await send_error(send, internal, headers)

    # -- from the cache --------------------------------------------------------------------------

    async def _replay(
        self,
        gateway: Gateway,
        prepared: Prepared,
        entry: CachedResponse,
        started: float,
        send: Send,
    ) -> None:
        age = gateway.cache.age_s(entry)
        reason = f"served from cache: answer from {entry.route}, {age:.0f} s old"
        extra = {"cache": "hit", "cost": "0", "currency": gateway.accountant.currency}
        headers = (
            _decision_headers(
                prepared.decision_id, entry.route, False, perf_counter() - started, reason=reason
            )
            + _cost_headers(Decimal(0), gateway.accountant.currency)
            + _cache_headers("hit")
            + [(b"age", str(int(age)).encode())]
        )
        completion_id = f"chatcmpl-{prepared.decision_id}"
        created = int(time.time())
        if not prepared.chat.stream:
            completion = Completion(entry.text, entry.model, entry.finish_reason, entry.usage)
            body = completion_body(
                completion_id=completion_id,
                created=created,
                completion=completion,
                route=entry.route,
                decision_id=prepared.decision_id,
                fallback=False,
                extra=extra,
            )
            await send_json(send, 200, body, headers)
            return
        await send(
            {"type": "http.response.start", "status": 200, "headers": _SSE_HEADERS + headers}
        )
        model = entry.model
        parts = [sse_chunk(completion_id, created, model, {"role": "assistant", "content": ""})]
        parts += [sse_chunk(completion_id, created, model, {"content": c}) for c in entry.chunks]
        parts.append(sse_chunk(completion_id, created, model, {}, entry.finish_reason, extra))
        if prepared.chat.include_usage:
            end = StreamEnd(entry.finish_reason, entry.usage)
            parts.append(sse_usage(completion_id, created, model, end, extra))
        parts.append(DONE)
        await send({"type": "http.response.body", "body": b"".join(parts), "more_body": False})

    # -- from a route ----------------------------------------------------------------------------

    async def _complete(
        self,
        gateway: Gateway,
        prepared: Prepared,
        decision: Decision,
        started: float,
        send: Send,
        report: RequestReport,
    ) -> None:
        answer = await gateway.complete(prepared, decision)
        report.served(answer)
        served = answer.served
        currency = gateway.accountant.currency
        body = completion_body(
            completion_id=f"chatcmpl-{decision.decision_id}",
            created=int(time.time()),
            completion=served.completion,
            route=served.route,
            decision_id=decision.decision_id,
            fallback=served.fallback,
            extra={
                "cache": answer.cache.status,
                "cost": format_cost(answer.cost),
                "currency": currency,
            },
        )
        overhead = perf_counter() - started - served.upstream_s
        attempts = summarise(served.attempts) if len(served.attempts) > 1 else None
        headers = (
            _decision_headers(
                decision.decision_id,
                served.route,
                served.fallback,
                overhead,
                reason=decision.reason,
                attempts=attempts,
                hedged=served.hedged,
            )
            + _cost_headers(answer.cost, currency)
            + _cache_headers(answer.cache.status, answer.cache.reason)
        )
        await send_json(send, 200, body, headers)

    async def _stream(
        self,
        gateway: Gateway,
        prepared: Prepared,
        decision: Decision,
        started: float,
        send: Send,
        report: RequestReport,
    ) -> None:
        opened = await gateway.open_stream(prepared, decision)
        report.streaming(opened.route, opened.attempts, opened.fallback)
        try:
            overhead = perf_counter() - started - opened.upstream_s
            attempts = summarise(opened.attempts) if len(opened.attempts) > 1 else None
            headers = _decision_headers(
                decision.decision_id,
                opened.route,
                opened.fallback,
                overhead,
                reason=decision.reason,
                attempts=attempts,
                hedged=opened.hedged,
            ) + _cache_headers(prepared.cache.status, prepared.cache.reason)
            await send(
                {"type": "http.response.start", "status": 200, "headers": _SSE_HEADERS + headers}
            )
            try:
                await self._relay(gateway, prepared, opened, send, started, report)
            except OSError:
                raise
            except Exception as exc:  # the response has started: end it with an error event
                log.exception("unexpected error in stream %s", decision.decision_id)
                failure = (
                    exc
                    if isinstance(exc, GatewayError)
                    else GatewayError("internal error; the gateway logged the details")
                )
                report.stream_cut(failure, opened.cost)
                await send({"type": "http.response.body", "body": error_event(failure)})
        finally:
            await opened.aclose()
            if report.outcome is not Outcome.SERVED and opened.cost is not None:
                report.cost = opened.cost  # a cut-off stream's charge is settled on close

    async def _relay(
        self,
        gateway: Gateway,
        prepared: Prepared,
        opened: MeteredStream,
        send: Send,
        started: float,
        report: RequestReport,
    ) -> None:
        completion_id = f"chatcmpl-{opened.decision.decision_id}"
        created = int(time.time())
        model = opened.model

        async def emit(data: bytes, more: bool = True) -> None:
            await send({"type": "http.response.body", "body": data, "more_body": more})

        await emit(sse_chunk(completion_id, created, model, {"role": "assistant", "content": ""}))
        try:
            async for event in opened.events():
                if isinstance(event, TextDelta):
                    if report.ttft_s is None:
                        report.ttft_s = perf_counter() - started
                    await emit(sse_chunk(completion_id, created, model, {"content": event.text}))
                elif isinstance(event, StreamEnd):
                    cost = opened.cost or Decimal(0)
                    report.stream_ended(event.usage, cost, model, opened.hedged)
                    extra: dict[str, Any] = {
                        "cache": prepared.cache.status,
                        "cost": format_cost(opened.cost or Decimal(0)),
                        "currency": gateway.accountant.currency,
                    }
                    await emit(
                        sse_chunk(completion_id, created, model, {}, event.finish_reason, extra)
                    )
                    if prepared.chat.include_usage:
                        await emit(sse_usage(completion_id, created, model, event, extra))
                    await emit(DONE, more=False)
        except StreamInterrupted as error:
            log.warning("stream %s interrupted: %s", opened.decision.decision_id, error.message)
            report.stream_cut(error, opened.cost)
            await emit(error_event(error), more=False)
