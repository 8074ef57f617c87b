"""Request and answer payloads shared by the benchmark upstream and the load tools.

Owns the fixed answer text the upstream returns (and how it is split into stream chunks) and
the OpenAI-format request bodies the load tools send. Everything here is deterministic, so a
run through a gateway and a run straight at the upstream move exactly the same bytes.
"""

from __future__ import annotations

import orjson

__all__ = ["ANSWER_TEXT", "OPERATION_HEADER", "openai_body", "split_answer"]

OPERATION_HEADER = "x-operation-type"

ANSWER_TEXT = (
    "The primary database cluster is healthy: all three replicas report normal replication lag, "
    "the connection pool is at forty percent of capacity, and no errors were logged during the "
    "last hour, so no action is needed right now."
)

_SYSTEM_PROMPT = "You are an operations assistant. Answer briefly and precisely."
_USER_PROMPT = (
    "Overnight we saw a short spike in write latency on the primary database cluster. "
    "Please check replication lag, connection pool usage and recent errors, and tell me "
    "whether anyone needs to act."
)


def split_answer(pieces: int, text: str = ANSWER_TEXT) -> list[str]:
    """`text` cut into `pieces` non-empty parts that join back to it exactly.

    Cuts fall on word boundaries (each part keeps its trailing space) while there are enough
    words, otherwise on characters. Deterministic: the same arguments give the same parts.
    """
    if pieces < 1:
        raise ValueError(f"pieces must be at least 1, got {pieces}")
    words = text.split(" ")
    if pieces <= len(words):
        tokens = [word + " " for word in words[:-1]] + [words[-1]]
    else:
        if pieces > len(text):
            raise ValueError(f"cannot split {len(text)} characters into {pieces} pieces")
        tokens = list(text)
    base, extra = divmod(len(tokens), pieces)
    parts: list[str] = []
    start = 0
    for index in range(pieces):
        size = base + (1 if index < extra else 0)
        parts.append("".join(tokens[start : start + size]))
        start += size
    return parts


def openai_body(stream: bool, include_usage: bool = False, model: str = "bench-model") -> bytes:
    """A small, realistic chat request: a system message and a ~30-word user message."""
    body: dict[str, object] = {
        "model": model,
        "messages": [
            {"role": "system", "content": _SYSTEM_PROMPT},
            {"role": "user", "content": _USER_PROMPT},
        ],
        "max_tokens": 64,
    }
    if stream:
        body["stream"] = True
        if include_usage:
            body["stream_options"] = {"include_usage": True}
    return orjson.dumps(body)
