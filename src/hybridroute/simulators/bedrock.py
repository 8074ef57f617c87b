"""A local Amazon Bedrock Runtime: Converse and ConverseStream, wire-compatible with botocore.

`create_bedrock_app` serves

    POST /model/{modelId}/converse          JSON answer
    POST /model/{modelId}/converse-stream   application/vnd.amazon.eventstream answer
    /_sim/*                                 control routes (knobs, stats, reset)

with the real service's error shape (`x-amzn-ErrorType`, `x-amzn-RequestId`, `{"message": …}`),
optional SigV4 verification against a table of fake credentials, and fault injection driven by
`Knobs`: outage, hang, latency, injected errors, garbage and truncated bodies, mid-stream
exceptions. The answer itself comes from `answers.simulated_answer`.
"""

from __future__ import annotations

import itertools
import random
import time
import uuid
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass

import anyio
import orjson
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route

from hybridroute.simulators.answers import count_tokens, simulated_answer
from hybridroute.simulators.control import control_routes
from hybridroute.simulators.eventstream import (
    corrupt_frame,
    encode_event,
    encode_exception,
)
from hybridroute.simulators.knobs import Knobs
from hybridroute.simulators.sigv4 import parse_authorization, verify_sigv4
from hybridroute.simulators.stats import Stats

__all__ = [
    "DEMO_ACCESS_KEY_ID",
    "DEMO_SECRET_ACCESS_KEY",
    "EVENTSTREAM_CONTENT_TYPE",
    "GARBAGE_BODY",
    "HTTP_ERRORS",
    "OUTAGE",
    "STREAM_EXCEPTIONS",
    "BedrockError",
    "ConverseCall",
    "ConverseValidationError",
    "create_bedrock_app",
    "error_response",
    "parse_converse_request",
]

# Public, fake, simulator-only credentials (never valid anywhere else).
DEMO_ACCESS_KEY_ID = "AKIAHYBRIDROUTESIM01"
DEMO_SECRET_ACCESS_KEY = "hybridroute-simulator-secret-key"

SIGNING_SERVICE = "bedrock"
EVENTSTREAM_CONTENT_TYPE = "application/vnd.amazon.eventstream"
GARBAGE_BODY = b"<html>upstream proxy error</html>"
_ERROR_NAMESPACE = "http://internal.amazon.com/coral/com.amazon.bedrock/"


@dataclass(frozen=True)
class BedrockError:
    """A modelled Bedrock error: HTTP status, error type name and message."""

    status: int
    name: str
    message: str


HTTP_ERRORS: dict[str, BedrockError] = {
    "throttling": BedrockError(
        429, "ThrottlingException", "Too many requests, please wait before trying again."
    ),
    "unavailable": BedrockError(
        503, "ServiceUnavailableException", "Bedrock is unable to process your request."
    ),
    "internal": BedrockError(
        500, "InternalServerException", "The server encountered an internal error (simulated)."
    ),
    "model_timeout": BedrockError(
        408, "ModelTimeoutException", "Model has timed out in processing the request (simulated)."
    ),
    "model_not_ready": BedrockError(
        429, "ModelNotReadyException", "Model is not ready to serve inference requests (simulated)."
    ),
    "validation": BedrockError(
        400, "ValidationException", "The request failed validation (simulated)."
    ),
    "access_denied": BedrockError(
        403, "AccessDeniedException", "You don't have access to the model (simulated)."
    ),
    "model_error": BedrockError(
        424, "ModelErrorException", "The model returned an error (simulated)."
    ),
}
OUTAGE = BedrockError(503, "ServiceUnavailableException", "Service unavailable (simulated outage).")

# Exceptions a ConverseStream can carry in-band, by knob error kind.
STREAM_EXCEPTIONS: dict[str, str] = {
    "throttling": "throttlingException",
    "unavailable": "serviceUnavailableException",
    "validation": "validationException",
    "model_error": "modelStreamErrorException",
}
_DEFAULT_STREAM_EXCEPTION = "internalServerException"


class ConverseValidationError(ValueError):
    """The request body is not a usable Converse request (→ 400 ValidationException)."""


@dataclass(frozen=True)
class ConverseCall:
    """What the simulator needs from a Converse request body."""

    last_user_text: str
    input_tokens: int
    max_tokens: int | None


@dataclass
class _Exchange:
    """One request in flight: what is recorded in stats and used in the answer."""

    operation: str
    path: str
    model_id: str
    region: str | None
    started: float

    def latency_ms(self) -> int:
        return int((time.monotonic() - self.started) * 1000)

    def source(self) -> str:
        return f"{self.model_id} in {self.region or 'unknown-region'}"


@dataclass(frozen=True)
class _Answer:
    text: str
    stop_reason: str
    input_tokens: int
    output_tokens: int

    def usage(self) -> dict[str, int]:
        total = self.input_tokens + self.output_tokens
        return {
            "inputTokens": self.input_tokens,
            "outputTokens": self.output_tokens,
            "totalTokens": total,
        }


def parse_converse_request(body: bytes) -> ConverseCall:
    """Validate a Converse JSON body; raise `ConverseValidationError` naming the problem."""
    try:
        document = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise ConverseValidationError(f"Request body is not valid JSON: {exc}") from exc
    if not isinstance(document, dict):
        raise ConverseValidationError("Request body must be a JSON object.")
    messages = document.get("messages")
    if not isinstance(messages, list) or not messages:
        raise ConverseValidationError("'messages' must be a non-empty list of messages.")
    texts: list[str] = []
    last_user_text: str | None = None
    for index, message in enumerate(messages):
        role, message_texts = _message_texts(index, message)
        texts.extend(message_texts)
        if role == "user":
            last_user_text = " ".join(message_texts)
    if last_user_text is None:
        raise ConverseValidationError("'messages' must contain at least one user message.")
    texts.extend(_system_texts(document.get("system")))
    input_tokens = sum(count_tokens(text) for text in texts)
    max_tokens = _max_tokens(document.get("inferenceConfig"))
    return ConverseCall(last_user_text, input_tokens, max_tokens)


def _message_texts(index: int, message: object) -> tuple[str, list[str]]:
    where = f"messages[{index}]"
    if not isinstance(message, dict):
        raise ConverseValidationError(f"'{where}' must be an object with 'role' and 'content'.")
    role = message.get("role")
    if role not in ("user", "assistant"):
        raise ConverseValidationError(f"'{where}.role' must be 'user' or 'assistant'.")
    content = message.get("content")
    if not isinstance(content, list) or not content:
        raise ConverseValidationError(f"'{where}.content' must be a non-empty list of blocks.")
    return str(role), _block_texts(f"{where}.content", content)


def _system_texts(system: object) -> list[str]:
    if system is None:
        return []
    if not isinstance(system, list):
        raise ConverseValidationError("'system' must be a list of content blocks.")
    return _block_texts("system", system)


def _block_texts(where: str, blocks: list[object]) -> list[str]:
    texts: list[str] = []
    for index, block in enumerate(blocks):
        if not isinstance(block, dict):
            raise ConverseValidationError(f"'{where}[{index}]' must be an object.")
        text = block.get("text")
        if text is not None and not isinstance(text, str):
            raise ConverseValidationError(f"'{where}[{index}].text' must be a string.")
        if text is not None:
            texts.append(text)
    return texts


def _max_tokens(config: object) -> int | None:
    if config is None:
        return None
    if not isinstance(config, dict):
        raise ConverseValidationError("'inferenceConfig' must be an object.")
    value = config.get("maxTokens")
    if value is None:
        return None
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise ConverseValidationError("'inferenceConfig.maxTokens' must be an integer >= 1.")
    return value


def _request_id_headers() -> dict[str, str]:
    return {"x-amzn-RequestId": str(uuid.uuid4())}


def error_response(error: BedrockError) -> Response:
    """The real service's error shape for a modelled error."""
    headers = _request_id_headers()
    headers["x-amzn-ErrorType"] = f"{error.name}:{_ERROR_NAMESPACE}"
    body = orjson.dumps({"message": error.message})
    return Response(body, status_code=error.status, headers=headers, media_type="application/json")


def _split_text(text: str, pieces: int) -> list[str]:
    """`pieces` consecutive slices of `text` that concatenate back to it."""
    bounds = [round(index * len(text) / pieces) for index in range(pieces + 1)]
    return [text[start:end] for start, end in itertools.pairwise(bounds)]


def _raw_path(request: Request) -> str:
    raw = request.scope.get("raw_path")
    path = raw.decode("latin-1") if isinstance(raw, bytes) else request.url.path
    query = request.scope.get("query_string", b"")
    return f"{path}?{query.decode('latin-1')}" if query else path


async def _wait_for_disconnect(request: Request) -> None:
    """Return only when the client goes away (the request body has been read already)."""
    while (await request.receive())["type"] != "http.disconnect":
        pass


@dataclass(frozen=True)
class _StreamPlan:
    """How one ConverseStream response will go, fixed from the knobs when it starts."""

    pieces: list[str]
    chunk_delay: float
    fail_after: int | None
    error_kind: str
    truncate: bool

    @property
    def exception_type(self) -> str:
        return STREAM_EXCEPTIONS.get(self.error_kind, _DEFAULT_STREAM_EXCEPTION)

    def outcome(self) -> str:
        if self.truncate:
            return "error:truncate"
        if self.fail_after is not None and self.fail_after <= len(self.pieces):
            return f"stream_error:{self.error_kind}"
        return "ok"


class _BedrockSimulator:
    """The request handlers, sharing knobs, stats, credentials and a random source."""

    def __init__(
        self,
        knobs: Knobs,
        stats: Stats,
        credentials: Mapping[str, str] | None,
        rng: random.Random,
    ) -> None:
        self.knobs = knobs
        self.stats = stats
        self.credentials = dict(credentials) if credentials is not None else None
        self.rng = rng

    async def converse(self, request: Request) -> Response:
        return await self._handle(request, "converse")

    async def converse_stream(self, request: Request) -> Response:
        return await self._handle(request, "converse-stream")

    async def _handle(self, request: Request, operation: str) -> Response:
        started = time.monotonic()
        body = await request.body()
        authorization = parse_authorization(request.headers.get("authorization"))
        exchange = _Exchange(
            operation=operation,
            path=_raw_path(request),
            model_id=str(request.path_params["model_id"]),
            region=authorization.region if authorization else None,
            started=started,
        )
        if self.knobs.outage:
            return self._reject(exchange, "error:outage", OUTAGE)
        denied = self._authenticate(request, body)
        if denied is not None:
            return self._reject(exchange, f"denied:{denied.name}", denied)
        try:
            call = parse_converse_request(body)
        except ConverseValidationError as exc:
            invalid = BedrockError(400, "ValidationException", str(exc))
            return self._reject(exchange, "invalid_request", invalid)
        return await self._answer_with_knobs(request, exchange, call)

    def _authenticate(self, request: Request, body: bytes) -> BedrockError | None:
        if self.credentials is None:
            return None
        headers = {name.lower(): value for name, value in request.headers.items()}
        check = verify_sigv4(request.method, _raw_path(request), headers, body, self.credentials)
        if not check.ok:
            return BedrockError(
                403, check.error_code or "AccessDeniedException", check.message or ""
            )
        if check.service != SIGNING_SERVICE:
            message = f"Credential should be scoped to correct service: '{SIGNING_SERVICE}'."
            return BedrockError(403, "InvalidSignatureException", message)
        return None

    def _reject(self, exchange: _Exchange, outcome: str, error: BedrockError) -> Response:
        self._record(exchange, outcome)
        return error_response(error)

    def _record(self, exchange: _Exchange, outcome: str) -> None:
        self.stats.record(
            path=exchange.path,
            operation=exchange.operation,
            model_id=exchange.model_id,
            region=exchange.region,
            outcome=outcome,
        )

    async def _answer_with_knobs(
        self, request: Request, exchange: _Exchange, call: ConverseCall
    ) -> Response:
        if self.knobs.hang:
            await _wait_for_disconnect(request)
            self._record(exchange, "hang")
            return Response(status_code=504)  # never delivered: the client has gone
        await self.knobs.delay(self.rng)
        failure = self.knobs.pick_failure(self.rng)
        answer = self._answer(exchange, call)
        if exchange.operation == "converse":
            return self._converse_response(exchange, answer, failure)
        return self._stream_response(exchange, answer, failure)

    def _answer(self, exchange: _Exchange, call: ConverseCall) -> _Answer:
        text, finish, output_tokens = simulated_answer(
            exchange.source(), call.last_user_text, call.max_tokens
        )
        stop_reason = "max_tokens" if finish == "length" else "end_turn"
        return _Answer(text, stop_reason, call.input_tokens, output_tokens)

    def _converse_response(
        self, exchange: _Exchange, answer: _Answer, failure: str | None
    ) -> Response:
        self._record(exchange, "ok" if failure is None else f"error:{failure}")
        if failure == "garbage":
            return Response(GARBAGE_BODY, media_type="text/html")
        if failure is not None and failure != "truncate":
            return error_response(HTTP_ERRORS[failure])
        body = orjson.dumps(
            {
                "output": {"message": {"role": "assistant", "content": [{"text": answer.text}]}},
                "stopReason": answer.stop_reason,
                "usage": answer.usage(),
                "metrics": {"latencyMs": exchange.latency_ms()},
            }
        )
        if failure == "truncate":
            body = body[: len(body) // 2]
        return Response(body, headers=_request_id_headers(), media_type="application/json")

    def _stream_response(
        self, exchange: _Exchange, answer: _Answer, failure: str | None
    ) -> Response:
        if failure == "garbage":
            self._record(exchange, "error:garbage")
            garbage = corrupt_frame(encode_event("messageStart", {"role": "assistant"}))
            return Response(garbage, media_type=EVENTSTREAM_CONTENT_TYPE)
        if failure is not None and failure != "truncate":
            return self._reject(exchange, f"error:{failure}", HTTP_ERRORS[failure])
        plan = self._stream_plan(answer, truncate=failure == "truncate")
        self._record(exchange, plan.outcome())
        return StreamingResponse(
            self._stream_frames(exchange, answer, plan),
            headers=_request_id_headers(),
            media_type=EVENTSTREAM_CONTENT_TYPE,
        )

    def _stream_plan(self, answer: _Answer, *, truncate: bool) -> _StreamPlan:
        return _StreamPlan(
            pieces=_split_text(answer.text, self.knobs.stream_chunks),
            chunk_delay=self.knobs.stream_chunk_delay_ms / 1000.0,
            fail_after=self.knobs.stream_fail_after,
            error_kind=self.knobs.error_kind,
            truncate=truncate,
        )

    async def _stream_frames(
        self, exchange: _Exchange, answer: _Answer, plan: _StreamPlan
    ) -> AsyncIterator[bytes]:
        yield encode_event("messageStart", {"role": "assistant"})
        truncate_at = len(plan.pieces) // 2 if plan.truncate else None
        for sent, piece in enumerate(plan.pieces):
            if sent == plan.fail_after:
                yield _stream_exception(plan)
                return
            if sent == truncate_at:
                return
            if sent and plan.chunk_delay > 0:
                await anyio.sleep(plan.chunk_delay)
            delta = {"contentBlockIndex": 0, "delta": {"text": piece}}
            yield encode_event("contentBlockDelta", delta)
        if plan.fail_after == len(plan.pieces):
            yield _stream_exception(plan)
            return
        yield encode_event("contentBlockStop", {"contentBlockIndex": 0})
        yield encode_event("messageStop", {"stopReason": answer.stop_reason})
        metrics = {"latencyMs": exchange.latency_ms()}
        yield encode_event("metadata", {"usage": answer.usage(), "metrics": metrics})


def _stream_exception(plan: _StreamPlan) -> bytes:
    return encode_exception(plan.exception_type, f"{plan.exception_type} (simulated, mid-stream)")


def create_bedrock_app(
    knobs: Knobs | None = None,
    *,
    stats: Stats | None = None,
    credentials: Mapping[str, str] | None = None,
    seed: int | None = None,
) -> Starlette:
    """The Bedrock Runtime simulator as an ASGI app.

    `credentials` (access key id → secret) turns on SigV4 verification; without it any request
    is accepted (the region is still read from the credential scope when one is present).
    `seed` makes injected failures reproducible.
    """
    knobs = knobs if knobs is not None else Knobs()
    stats = stats if stats is not None else Stats()
    simulator = _BedrockSimulator(knobs, stats, credentials, random.Random(seed))
    routes = [
        Route("/model/{model_id:path}/converse", simulator.converse, methods=["POST"]),
        Route(
            "/model/{model_id:path}/converse-stream", simulator.converse_stream, methods=["POST"]
        ),
        *control_routes(knobs, stats),
    ]
    app = Starlette(routes=routes)
    app.state.knobs = knobs
    app.state.stats = stats
    return app
