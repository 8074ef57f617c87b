"""A fast, deliberately dumb upstream for the overhead benchmark: raw asyncio + httptools.

Owns the model endpoints the gateway forwards to during a benchmark, built so that the upstream
costs as little CPU per request as possible and the gateway under test is the bottleneck:

- `POST /v1/chat/completions` — OpenAI chat completion, JSON or server-sent events;
- `POST /model/{modelId}/converse` — Bedrock Converse JSON;
- `POST /model/{modelId}/converse-stream` — Bedrock ConverseStream (AWS event-stream frames);
- `GET /health` → `{"ok":true}`; `GET /stats` → `{"requests": N}` (model requests served);
- anything else → 404 JSON.

No framework: one `asyncio.Protocol` per connection feeds an `httptools.HttpRequestParser`
(HTTP/1.1 keep-alive, pipelined and partial reads, answered strictly in order). Request headers
are never materialised, so nothing reads them: any Authorization header is accepted (no
signature checks) and `Expect: 100-continue` is not honoured. Every response byte string is
built once — at startup, or on the first request naming a new model — so serving a request is
a lookup and one `transport.write`.

The JSON body is not parsed. Three byte-level regular expressions look for `"model": "…"`,
`"stream": true` and `"include_usage": true`; this is exact for the flat, top-level request
bodies benchmark clients send (the OpenAI SDK, `bench.payloads`), and the escaped model name is
copied into the answer verbatim, so it stays valid JSON without decoding. A body that nests a
`"model"` key before the top-level one would be misread; benchmark traffic never does that.

Run: `python -m bench.upstream --port 0` prints `ready <port>` once it listens.
`--latency-ms` delays the first byte of each response (`loop.call_later`, never blocking);
streams send `--stream-chunks` content chunks, `--chunk-delay-ms` apart. Both delays go through
uvloop's timers, which have millisecond resolution.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import re
import signal
import time
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass
from typing import cast

import httptools
import orjson
import uvloop

from bench.payloads import ANSWER_TEXT, split_answer
from hybridroute.simulators.eventstream import encode_event

__all__ = ["Settings", "Upstream", "main", "serve"]

_MODEL_RE = re.compile(rb'"model"\s*:\s*"((?:[^"\\]|\\.)*)"')
_STREAM_RE = re.compile(rb'"stream"\s*:\s*true')
_USAGE_RE = re.compile(rb'"include_usage"\s*:\s*true')

_MODEL_SENTINEL = "@@BENCH-MODEL@@"
_DEFAULT_MODEL = b"unknown"
_MODEL_CACHE_LIMIT = 1024
_PIPELINE_LIMIT = 64  # queued pipelined requests before the connection stops reading

PROMPT_TOKENS = 48
COMPLETION_TOKENS = len(ANSWER_TEXT.split())


@dataclass(frozen=True)
class Settings:
    """How the upstream shapes its answers."""

    latency_s: float = 0.0
    stream_chunks: int = 8
    chunk_delay_s: float = 0.0

    def __post_init__(self) -> None:
        if self.latency_s < 0 or self.chunk_delay_s < 0:
            raise ValueError("latency and chunk delay must not be negative")
        if self.stream_chunks < 1:
            raise ValueError("stream_chunks must be at least 1")


def _chunk(data: bytes) -> bytes:
    """One HTTP/1.1 chunked-transfer-encoding chunk."""
    return b"%x\r\n%b\r\n" % (len(data), data)


_LAST_CHUNK = b"0\r\n\r\n"
_SSE_DONE = b"data: [DONE]\n\n"


def _head(status: str, content_type: str, extra: str = "", length: int | None = None) -> bytes:
    framing = "transfer-encoding: chunked" if length is None else f"content-length: {length}"
    return f"HTTP/1.1 {status}\r\ncontent-type: {content_type}\r\n{framing}\r\n{extra}".encode()


def _json_response(status: str, payload: object) -> bytes:
    body = orjson.dumps(payload)
    return _head(status, "application/json", length=len(body)) + b"\r\n" + body


def _stream_segments(head: bytes, first: bytes, content: list[bytes], tail: bytes) -> list[bytes]:
    """Segments of a chunked stream: [head+first+content[0]], content[1], …, with tail last.

    Segment 0 goes out after the configured latency, each later one a chunk delay after the
    previous; the caller collapses them into one when there is no chunk delay.
    """
    segments = [head + b"\r\n" + _chunk(first) + _chunk(content[0])]
    segments.extend(_chunk(piece) for piece in content[1:])
    segments[-1] += _chunk(tail) + _LAST_CHUNK
    return segments


@dataclass(frozen=True)
class _OpenAITemplates:
    """Unframed OpenAI bodies and SSE events with a placeholder where the model name goes."""

    json_body: bytes
    role: bytes
    content: tuple[bytes, ...]
    finish: bytes
    usage: bytes


@dataclass(frozen=True)
class _OpenAIAnswers:
    json: bytes
    stream: tuple[bytes, ...]
    stream_with_usage: tuple[bytes, ...]


@dataclass(frozen=True)
class _ConverseAnswers:
    """Responses split around the per-request `x-amzn-RequestId` value."""

    json_prefix: bytes
    json_suffix: bytes
    stream_prefix: bytes
    stream_suffix: tuple[bytes, ...]  # [rest of segment 0, segment 1, …]


class Upstream:
    """Shared state of one upstream server: settings, precomputed answers, request count."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.requests = 0
        self._created = int(time.time())
        self._boot = os.getpid() & 0xFFFFFFFF
        self._pieces = split_answer(settings.stream_chunks)
        self._openai: dict[bytes, _OpenAIAnswers] = {}
        self._openai_templates = self._build_openai_templates()
        self.converse = self._build_converse()
        self.health = _json_response("200 OK", {"ok": True})
        self.not_found = _json_response(
            "404 Not Found", {"error": {"message": "not found", "type": "not_found"}}
        )
        self.bad_request = _json_response(
            "400 Bad Request", {"error": {"message": "malformed request", "type": "bad_request"}}
        )
        self.openai_answers(b"bench-model")  # warm the cache for the default model

    # ---- precomputation ----------------------------------------------------------------------

    def _collapse(self, segments: list[bytes]) -> tuple[bytes, ...]:
        if self.settings.chunk_delay_s == 0:
            return (b"".join(segments),)
        return tuple(segments)

    def _build_openai_templates(self) -> _OpenAITemplates:
        base = {
            "id": "chatcmpl-bench",
            "created": self._created,
            "model": _MODEL_SENTINEL,
            "system_fingerprint": "fp_bench",
        }
        usage = {
            "prompt_tokens": PROMPT_TOKENS,
            "completion_tokens": COMPLETION_TOKENS,
            "total_tokens": PROMPT_TOKENS + COMPLETION_TOKENS,
        }
        json_body = orjson.dumps(
            {
                **base,
                "object": "chat.completion",
                "choices": [
                    {
                        "index": 0,
                        "message": {"role": "assistant", "content": ANSWER_TEXT},
                        "logprobs": None,
                        "finish_reason": "stop",
                    }
                ],
                "usage": usage,
            }
        )

        def event(choices: list[object], **extra: object) -> bytes:
            chunk = {**base, "object": "chat.completion.chunk", "choices": choices, **extra}
            return b"data: " + orjson.dumps(chunk) + b"\n\n"

        def delta(content: dict[str, str], finish: str | None = None) -> list[object]:
            return [{"index": 0, "delta": content, "logprobs": None, "finish_reason": finish}]

        return _OpenAITemplates(
            json_body=json_body,
            role=event(delta({"role": "assistant", "content": ""})),
            content=tuple(event(delta({"content": piece})) for piece in self._pieces),
            finish=event(delta({}, "stop")),
            usage=event([], usage=usage),
        )

    def openai_answers(self, model: bytes) -> _OpenAIAnswers:
        """The OpenAI answers naming `model` (raw JSON-escaped bytes), built once per model."""
        answers = self._openai.get(model)
        if answers is not None:
            return answers
        sentinel = _MODEL_SENTINEL.encode()
        templates = self._openai_templates
        body = templates.json_body.replace(sentinel, model)
        role = templates.role.replace(sentinel, model)
        content = [event.replace(sentinel, model) for event in templates.content]
        finish = templates.finish.replace(sentinel, model)
        usage = templates.usage.replace(sentinel, model)
        head = _head("200 OK", "text/event-stream", "cache-control: no-cache\r\n")
        answers = _OpenAIAnswers(
            json=_head("200 OK", "application/json", length=len(body)) + b"\r\n" + body,
            stream=self._collapse(_stream_segments(head, role, content, finish + _SSE_DONE)),
            stream_with_usage=self._collapse(
                _stream_segments(head, role, content, finish + usage + _SSE_DONE)
            ),
        )
        if len(self._openai) >= _MODEL_CACHE_LIMIT:
            self._openai.clear()
        self._openai[model] = answers
        return answers

    def _build_converse(self) -> _ConverseAnswers:
        latency_ms = round(self.settings.latency_s * 1000)
        usage = {
            "inputTokens": PROMPT_TOKENS,
            "outputTokens": COMPLETION_TOKENS,
            "totalTokens": PROMPT_TOKENS + COMPLETION_TOKENS,
        }
        body = orjson.dumps(
            {
                "output": {"message": {"role": "assistant", "content": [{"text": ANSWER_TEXT}]}},
                "stopReason": "end_turn",
                "usage": usage,
                "metrics": {"latencyMs": latency_ms},
            }
        )
        request_id = "x-amzn-RequestId: "
        json_head = _head("200 OK", "application/json", request_id, len(body))
        stream_head = _head("200 OK", "application/vnd.amazon.eventstream", request_id)
        content = [
            encode_event("contentBlockDelta", {"contentBlockIndex": 0, "delta": {"text": piece}})
            for piece in self._pieces
        ]
        tail = (
            encode_event("contentBlockStop", {"contentBlockIndex": 0})
            + encode_event("messageStop", {"stopReason": "end_turn"})
            + encode_event("metadata", {"usage": usage, "metrics": {"latencyMs": latency_ms}})
        )
        # The request id goes between the head and the rest: segment 0 starts by ending its line.
        segments = self._collapse(
            _stream_segments(
                b"\r\n", encode_event("messageStart", {"role": "assistant"}), content, tail
            )
        )
        return _ConverseAnswers(
            json_prefix=json_head,
            json_suffix=b"\r\n\r\n" + body,
            stream_prefix=stream_head,
            stream_suffix=segments,
        )

    # ---- per request -------------------------------------------------------------------------

    def _request_id(self) -> bytes:
        return b"%08x-0000-4000-8000-%012x" % (self._boot, self.requests)

    def route(self, method: bytes, url: bytes, body: bytes) -> Sequence[bytes]:
        """The response to one request, as segments (see `_stream_segments`)."""
        path = url.split(b"?", 1)[0]
        if method == b"POST":
            if path == b"/v1/chat/completions":
                self.requests += 1
                return self._chat(body)
            if path.startswith(b"/model/"):
                if path.endswith(b"/converse"):
                    self.requests += 1
                    answers = self.converse
                    return (answers.json_prefix + self._request_id() + answers.json_suffix,)
                if path.endswith(b"/converse-stream"):
                    self.requests += 1
                    answers = self.converse
                    first = answers.stream_prefix + self._request_id() + answers.stream_suffix[0]
                    return (first, *answers.stream_suffix[1:])
        elif method == b"GET":
            if path == b"/health":
                return (self.health,)
            if path == b"/stats":
                return (_json_response("200 OK", {"requests": self.requests}),)
        return (self.not_found,)

    def _chat(self, body: bytes) -> Sequence[bytes]:
        found = _MODEL_RE.search(body)
        answers = self.openai_answers(found.group(1) if found else _DEFAULT_MODEL)
        if _STREAM_RE.search(body) is None:
            return (answers.json,)
        if _USAGE_RE.search(body) is None:
            return answers.stream
        return answers.stream_with_usage


class _Connection(asyncio.Protocol):
    """One client connection: parses requests and answers them strictly in order.

    Only the parser callbacks needed are defined (httptools skips absent ones), so headers are
    never materialised. While a delayed or streamed response is being written, further
    pipelined requests wait in a queue; past `_PIPELINE_LIMIT` the connection stops reading.
    """

    def __init__(self, upstream: Upstream, loop: asyncio.AbstractEventLoop) -> None:
        self._upstream = upstream
        self._loop = loop
        self._latency = upstream.settings.latency_s
        self._chunk_delay = upstream.settings.chunk_delay_s
        self._parser = httptools.HttpRequestParser(self)
        self._transport: asyncio.Transport | None = None
        self._url = b""
        self._body: list[bytes] = []
        self._queue: deque[tuple[bytes, bytes, bytes, bool]] = deque()
        self._busy = False
        self._paused = False
        self._segments: Sequence[bytes] = ()
        self._next = 0
        self._keep_alive = True
        self._timer: asyncio.TimerHandle | None = None

    # ---- asyncio.Protocol --------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports implement asyncio.Transport without subclassing it.
        self._transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        try:
            self._parser.feed_data(data)
        except (httptools.HttpParserError, httptools.HttpParserUpgrade):
            transport = self._transport
            if transport is not None and not transport.is_closing():
                transport.write(self._upstream.bad_request)
                transport.close()

    def connection_lost(self, exc: Exception | None) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._queue.clear()
        self._transport = None

    # ---- httptools callbacks -----------------------------------------------------------------

    def on_message_begin(self) -> None:
        self._url = b""
        self._body = []

    def on_url(self, url: bytes) -> None:
        self._url += url  # may arrive in pieces on partial reads

    def on_body(self, body: bytes) -> None:
        self._body.append(body)

    def on_message_complete(self) -> None:
        parts = self._body
        body = parts[0] if len(parts) == 1 else b"".join(parts)
        request = (self._parser.get_method(), self._url, body, self._parser.should_keep_alive())
        if self._busy or self._queue:
            self._queue.append(request)
            if len(self._queue) >= _PIPELINE_LIMIT and self._transport is not None:
                self._transport.pause_reading()
                self._paused = True
            return
        self._serve(*request)

    # ---- responding --------------------------------------------------------------------------

    def _serve(self, method: bytes, url: bytes, body: bytes, keep_alive: bool) -> None:
        transport = self._transport
        if transport is None or transport.is_closing():
            return
        segments = self._upstream.route(method, url, body)
        if len(segments) == 1 and self._latency == 0:
            transport.write(segments[0])
            if not keep_alive:
                transport.close()
            return
        self._busy = True
        self._segments = segments
        self._next = 0
        self._keep_alive = keep_alive
        if self._latency > 0:
            self._timer = self._loop.call_later(self._latency, self._write_next)
        else:
            self._write_next()

    def _write_next(self) -> None:
        self._timer = None
        transport = self._transport
        if transport is None or transport.is_closing():
            return
        transport.write(self._segments[self._next])
        self._next += 1
        if self._next < len(self._segments):
            self._timer = self._loop.call_later(self._chunk_delay, self._write_next)
            return
        self._busy = False
        self._segments = ()
        if not self._keep_alive:
            transport.close()
            return
        self._drain_queue()

    def _drain_queue(self) -> None:
        while self._queue and not self._busy and self._transport is not None:
            method, url, body, keep_alive = self._queue.popleft()
            self._serve(method, url, body, keep_alive)
            if not keep_alive:
                return
        if self._paused and len(self._queue) < _PIPELINE_LIMIT and self._transport is not None:
            self._paused = False
            self._transport.resume_reading()


async def serve(host: str, port: int, settings: Settings) -> None:
    """Listen, print `ready <port>`, and serve until SIGINT or SIGTERM."""
    loop = asyncio.get_running_loop()
    upstream = Upstream(settings)
    server = await loop.create_server(
        lambda: _Connection(upstream, loop), host, port, backlog=4096, reuse_address=True
    )
    stop = asyncio.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    bound = server.sockets[0].getsockname()[1]
    print(f"ready {bound}", flush=True)
    try:
        await stop.wait()
    finally:
        server.close()
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(server.wait_closed(), timeout=1.0)


def _parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.upstream", description=__doc__)
    parser.add_argument("--port", type=int, required=True, help="0 picks a free port")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--latency-ms", type=float, default=0.0)
    parser.add_argument("--stream-chunks", type=int, default=8)
    parser.add_argument("--chunk-delay-ms", type=float, default=0.0)
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> None:
    """Command-line entry point."""
    args = _parse_args(argv)
    try:
        settings = Settings(
            latency_s=args.latency_ms / 1000.0,
            stream_chunks=args.stream_chunks,
            chunk_delay_s=args.chunk_delay_ms / 1000.0,
        )
    except ValueError as error:
        raise SystemExit(f"bench.upstream: {error}") from None
    uvloop.run(serve(args.host, args.port, settings))


if __name__ == "__main__":
    main()
