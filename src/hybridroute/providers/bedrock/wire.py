"""The Converse wire format: request bodies out, responses and stream events in.

Bedrock Runtime's Converse API takes `messages` whose roles alternate user/assistant, each with a
list of content blocks, a separate `system` list and an `inferenceConfig`. ConverseStream answers
with AWS event-stream frames (decoded by botocore's `EventStreamBuffer`) carrying `messageStart`,
`contentBlockDelta`, `contentBlockStop`, `messageStop` and `metadata` events, or an exception.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, cast

import orjson
from botocore.eventstream import EventStreamMessage

from hybridroute.errors import UpstreamError, UpstreamProtocolError
from hybridroute.providers.base import estimate_tokens
from hybridroute.providers.bedrock.errors import error_from_code
from hybridroute.types import Completion, GenerationRequest, Usage

__all__ = [
    "StreamDecoder",
    "converse_body",
    "finish_reason",
    "parse_converse",
]

_FINISH = {
    "end_turn": "stop",
    "stop_sequence": "stop",
    "max_tokens": "length",
    "model_context_window_exceeded": "length",
    "tool_use": "tool_calls",
    "content_filtered": "content_filter",
    "guardrail_intervened": "content_filter",
}


def finish_reason(stop_reason: object) -> str:
    """OpenAI's finish_reason for a Bedrock stopReason."""
    return _FINISH.get(stop_reason, "stop") if isinstance(stop_reason, str) else "stop"


def converse_body(request: GenerationRequest) -> bytes:
    """The JSON body of a Converse / ConverseStream call."""
    messages: list[dict[str, Any]] = []
    for message in request.messages:
        block = {"text": message.content}
        if messages and messages[-1]["role"] == message.role:
            # Converse requires alternating roles: consecutive turns of one role become one
            # message with several content blocks.
            messages[-1]["content"].append(block)
        else:
            messages.append({"role": message.role, "content": [block]})
    body: dict[str, Any] = {"messages": messages}
    system = [{"text": text} for text in request.system if text]
    if system:
        body["system"] = system
    inference: dict[str, Any] = {"maxTokens": request.max_tokens}
    if request.temperature is not None:
        inference["temperature"] = request.temperature
    if request.top_p is not None:
        inference["topP"] = request.top_p
    if request.stop:
        inference["stopSequences"] = list(request.stop)
    body["inferenceConfig"] = inference
    return orjson.dumps(body)


def parse_converse(
    route: str, model: str, payload: bytes, request: GenerationRequest, *, upstream_s: float = 0.0
) -> Completion:
    """A Converse JSON response → Completion, or `UpstreamProtocolError` for anything else."""
    try:
        data = orjson.loads(payload)
    except orjson.JSONDecodeError:
        raise UpstreamProtocolError(
            route, f"Converse returned a body that is not JSON (starts {payload[:60]!r})"
        ) from None
    try:
        blocks = data["output"]["message"]["content"]
        text = "".join(b["text"] for b in blocks if isinstance(b, dict) and "text" in b)
        usage_data = data.get("usage")
    except (KeyError, TypeError):
        raise UpstreamProtocolError(
            route, f"Converse response has no output.message.content (keys: {_keys(data)})"
        ) from None
    return Completion(
        text=text,
        model=model,
        finish_reason=finish_reason(data.get("stopReason")),
        usage=_usage(usage_data, request, text),
        upstream_s=upstream_s,
    )


def _usage(data: object, request: GenerationRequest, answer: str) -> Usage:
    if isinstance(data, dict):
        inp, out = data.get("inputTokens"), data.get("outputTokens")
        if isinstance(inp, int) and isinstance(out, int):
            return Usage(inp, out)
    # Only when Bedrock reported no usage: estimate from the text sent and received.
    sent = "\n".join([*request.system, *(m.content for m in request.messages)])
    return Usage(estimate_tokens(sent), estimate_tokens(answer), estimated=True)


def _keys(data: object) -> str:
    return ", ".join(sorted(data)) if isinstance(data, dict) else type(data).__name__


class StreamDecoder:
    """Turns decoded event-stream messages into text pieces and the final stop/usage."""

    __slots__ = ("_parts", "_request", "_route", "stop_reason", "usage")

    def __init__(self, route: str, request: GenerationRequest) -> None:
        self._route = route
        self._request = request
        self._parts: list[str] = []
        self.stop_reason: str | None = None
        self.usage: Usage | None = None

    def text_of(self, message: EventStreamMessage) -> str | None:
        """The text a message carries, or None. Raises the upstream's error for exceptions."""
        # botocore-stubs declares `headers` as int; at run time it is the decoded header dict.
        headers = cast(Mapping[str, Any], message.headers)
        kind = headers.get(":message-type")
        if kind == "exception":
            raise self._exception(headers.get(":exception-type", ""), message.payload)
        if kind == "error":
            raise error_from_code(
                self._route, str(headers.get(":error-code", "")), headers.get(":error-message")
            )
        event = headers.get(":event-type")
        if event == "contentBlockDelta":
            delta = self._json(message.payload).get("delta")
            text = delta.get("text") if isinstance(delta, dict) else None
            if isinstance(text, str):
                self._parts.append(text)
                return text
        elif event == "messageStop":
            self.stop_reason = finish_reason(self._json(message.payload).get("stopReason"))
        elif event == "metadata":
            answer = "".join(self._parts)
            self.usage = _usage(self._json(message.payload).get("usage"), self._request, answer)
        return None

    def final_usage(self) -> Usage:
        if self.usage is not None:
            return self.usage
        return _usage(None, self._request, "".join(self._parts))

    def _exception(self, exception_type: str, payload: bytes) -> UpstreamError:
        message = self._json(payload).get("message")
        return error_from_code(
            self._route, exception_type, message if isinstance(message, str) else None
        )

    def _json(self, payload: bytes) -> dict[str, Any]:
        try:
            data = orjson.loads(payload)
        except orjson.JSONDecodeError:
            raise UpstreamProtocolError(
                self._route, f"stream event payload is not JSON ({payload[:60]!r})"
            ) from None
        if not isinstance(data, dict):
            raise UpstreamProtocolError(self._route, "stream event payload is not a JSON object")
        return data
