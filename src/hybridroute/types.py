"""Domain values shared by every layer: priorities, route kinds, requests, completions, usage,
and the attempts made to serve a request.

These are frozen, slotted dataclasses: cheap to build on the request path and safe to share.
Validation happens at the edges (the HTTP parser and the config loader) before values get here.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import Any, TypeAlias

__all__ = [
    "BUILTIN_OPERATION_TYPES",
    "CANONICAL_ROUTE_KINDS",
    "DEFAULT_TENANT",
    "Attempt",
    "AttemptOutcome",
    "CacheDirective",
    "ChatMessage",
    "ChatRequest",
    "Completion",
    "GenerationRequest",
    "Priority",
    "RouteId",
    "RouteKind",
    "StreamEnd",
    "StreamEvent",
    "StreamStart",
    "TextDelta",
    "Usage",
    "estimate_tokens",
]

RouteId: TypeAlias = str
"""A route's id as written in config (`direct_bedrock`, `mcp`, or one the config adds)."""


class Priority(StrEnum):
    """Request priority classes, highest first."""

    CRITICAL = "critical"
    HIGH = "high"
    MEDIUM = "medium"
    LOW = "low"

    @property
    def rank(self) -> int:
        """0 for critical … 3 for low: lower is more important."""
        return _PRIORITY_RANK[self]


_PRIORITY_RANK = {Priority.CRITICAL: 0, Priority.HIGH: 1, Priority.MEDIUM: 2, Priority.LOW: 3}


class RouteKind(StrEnum):
    """What kind of upstream a route talks to."""

    BEDROCK = "bedrock"
    MCP = "mcp"


BUILTIN_OPERATION_TYPES: tuple[str, ...] = (
    "emergency",
    "infrastructure",
    "meta_monitor",
    "implementation",
    "kiro_communication",
    "standard",
    "background",
)
"""The seven operation types of the routing matrix; config may add more."""

CANONICAL_ROUTE_KINDS: dict[RouteId, RouteKind] = {
    "direct_bedrock": RouteKind.BEDROCK,
    "mcp": RouteKind.MCP,
}
"""The canonical route ids and the kind each must have wherever it is defined."""


@dataclass(frozen=True, slots=True)
class ChatMessage:
    """One chat message with its text. Roles: system, user, assistant."""

    role: str
    content: str


class CacheDirective(StrEnum):
    """What the caller asked of the response cache (`Cache-Control` request header)."""

    DEFAULT = "default"  # use the cache when the request is cacheable
    NO_CACHE = "no-cache"  # do not answer from the cache; a fresh answer may be stored
    NO_STORE = "no-store"  # neither answer from nor store in the cache


DEFAULT_TENANT = "default"
"""The tenant of a caller that presents no API key (when keys are optional)."""


@dataclass(frozen=True, slots=True)
class ChatRequest:
    """An OpenAI-style chat request as the gateway understood it."""

    messages: tuple[ChatMessage, ...]
    operation_type: str
    model: str
    stream: bool = False
    include_usage: bool = False
    max_tokens: int | None = None
    temperature: float | None = None
    top_p: float | None = None
    stop: tuple[str, ...] = ()
    residency: str | None = None
    latency_budget_ms: int | None = None
    tenant: str = DEFAULT_TENANT
    cache: CacheDirective = CacheDirective.DEFAULT
    # The data subject the request is about (the OpenAI `user` field or `X-Data-Subject`):
    # what a GDPR erasure request names. Never stored in clear.
    subject: str | None = None


@dataclass(frozen=True, slots=True)
class GenerationRequest:
    """What a route is asked to generate: the chat request with the operation's parameters
    applied (system prompt, temperature, max tokens). Route-independent."""

    operation_type: str
    priority: Priority
    system: tuple[str, ...]
    messages: tuple[ChatMessage, ...]
    max_tokens: int
    temperature: float | None
    top_p: float | None
    stop: tuple[str, ...]
    decision_id: str
    requested_model: str


@dataclass(frozen=True, slots=True)
class Usage:
    """Token usage of one completion. `estimated` marks counts the gateway had to guess."""

    input_tokens: int
    output_tokens: int
    estimated: bool = False

    @property
    def total_tokens(self) -> int:
        return self.input_tokens + self.output_tokens


def estimate_tokens(text: str) -> int:
    """A rough token count, about four characters a token, for counts nobody reported.

    Used where a route reports no usage (the result is marked `estimated`) and for budget
    reservations made before a call.
    """
    return max(1, (len(text) + 3) // 4) if text else 0


@dataclass(frozen=True, slots=True)
class Completion:
    """A finished answer from one route.

    `upstream_s` is how long the route waited on its upstream (request sent to answer read):
    the part of the request's time that is not the gateway's own work.
    """

    text: str
    model: str
    finish_reason: str
    usage: Usage
    upstream_s: float = 0.0


@dataclass(frozen=True, slots=True)
class StreamStart:
    """Optional first event: the model that is answering, when the route learns it only now."""

    model: str


@dataclass(frozen=True, slots=True)
class TextDelta:
    """A piece of streamed text."""

    text: str


@dataclass(frozen=True, slots=True)
class StreamEnd:
    """The last event of a stream: why it stopped and what it used."""

    finish_reason: str
    usage: Usage


StreamEvent: TypeAlias = StreamStart | TextDelta | StreamEnd


class AttemptOutcome(StrEnum):
    """How one try of one route ended."""

    OK = "ok"
    FAILED = "failed"
    SKIPPED = "skipped"  # not started: too little time left, or the breaker refused it
    CANCELLED = "cancelled"  # stopped unfinished: a hedge that lost the race


@dataclass(frozen=True, slots=True)
class Attempt:
    """One try of one route, with its error (failed) or reason (skipped)."""

    route: RouteId
    outcome: AttemptOutcome
    duration_ms: float
    detail: str | None = None
    code: str | None = None
    error_class: type[Exception] | None = None

    def as_dict(self) -> dict[str, Any]:
        entry: dict[str, Any] = {
            "route": self.route,
            "outcome": self.outcome.value,
            "duration_ms": round(self.duration_ms, 3),
        }
        if self.detail:
            entry["detail"] = self.detail
        if self.code:
            entry["code"] = self.code
        return entry
