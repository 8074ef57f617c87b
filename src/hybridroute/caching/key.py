"""The cache key: which requests count as "the same request" for the response cache.

`cache_key()` turns a `GenerationRequest` and the caller's `CacheScope` into a hex SHA-256 of a
canonical JSON document (orjson, keys sorted). The document is a structure, never a joined
string, so no choice of tenant, residency or text can make two different requests collide by
shifting a separator.

What is in the key:

- a format version tag (`KEY_VERSION`), so a change to these rules never reuses old entries;
- the scope: the tenant and the residency constraint (None is kept apart from every string), so
  one tenant never sees another's answers and an answer produced under one residency constraint
  is never served under another;
- the request's operation type and requested model, verbatim;
- the system texts and the messages (role and content), in their order;
- `max_tokens`, `temperature`, `top_p` and the stop sequences (verbatim, in their order).

Normalisation:

- every text (each system string and each message content) is Unicode NFC-normalised and then
  stripped of leading and trailing whitespace. Whitespace inside a text is kept: it can change
  the answer (code, tables, poetry). Roles and the order of messages are kept as they are;
- a float is written as `repr(float(x) + 0.0)`, so `0.7` and `0.70` give one key, `0` and `0.0`
  give one key, and so do `-0.0` and `0.0`; None is written as JSON null, so an unset value
  never matches 0.

What is left out: `decision_id` and `priority` (they change from request to request, not with
its content). Tools are not part of the key because the gateway's parser refuses requests that
carry them; if that ever changes, tools must join the key and `KEY_VERSION` must move on.
"""

from __future__ import annotations

import hashlib
import unicodedata
from dataclasses import dataclass

import orjson

from hybridroute.types import GenerationRequest

__all__ = ["DEFAULT_TENANT", "KEY_VERSION", "CacheScope", "cache_key", "tags_for"]

KEY_VERSION = "v1"
"""Bumped whenever what goes into the key, or how it is normalised, changes."""

DEFAULT_TENANT = "default"
"""The tenant of callers that do not name one."""


@dataclass(frozen=True, slots=True)
class CacheScope:
    """Who is asking, as far as sharing cached answers goes.

    `tenant` is the caller's tenant id (`DEFAULT_TENANT` when there is none); `residency` is the
    request's data-residency constraint (for example "eu"), or None when it has none.
    """

    tenant: str
    residency: str | None


def _text(value: str) -> str:
    return unicodedata.normalize("NFC", value).strip()


def _number(value: float | None) -> str | None:
    # Adding 0.0 turns -0.0 into 0.0; repr of a float is its shortest exact spelling.
    return None if value is None else repr(float(value) + 0.0)


def _canonical(request: GenerationRequest, scope: CacheScope) -> dict[str, object]:
    return {
        "version": KEY_VERSION,
        "tenant": scope.tenant,
        "residency": scope.residency,
        "operation_type": request.operation_type,
        "model": request.requested_model,
        "system": [_text(s) for s in request.system],
        "messages": [[m.role, _text(m.content)] for m in request.messages],
        "max_tokens": request.max_tokens,
        "temperature": _number(request.temperature),
        "top_p": _number(request.top_p),
        "stop": list(request.stop),
    }


def cache_key(request: GenerationRequest, scope: CacheScope) -> str:
    """The request's cache key within `scope`: 64 hex digits (see the module docstring)."""
    document = orjson.dumps(_canonical(request, scope), option=orjson.OPT_SORT_KEYS)
    return hashlib.sha256(document).hexdigest()


def tags_for(request: GenerationRequest, scope: CacheScope) -> tuple[str, ...]:
    """Invalidation tags for an entry stored for this request: its tenant and operation type."""
    return (f"tenant:{scope.tenant}", f"operation:{request.operation_type}")
