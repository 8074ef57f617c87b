"""Bedrock's error classes → the gateway's typed errors, at the route's boundary.

Bedrock names its error in the `x-amzn-ErrorType` header (and `__type` in some bodies). Each
known class maps to one gateway error with a message that says what to do; unknown classes fall
back on the HTTP status. Transport failures (refused connections, resets, cut bodies) map here too.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager

import orjson

from hybridroute.errors import (
    UpstreamAuthError,
    UpstreamError,
    UpstreamModelError,
    UpstreamProtocolError,
    UpstreamRejected,
    UpstreamThrottled,
    UpstreamTimeout,
    UpstreamUnavailable,
)
from hybridroute.providers.http import (
    ConnectFailed,
    ConnectionLost,
    ConnectTimeout,
    InvalidResponse,
    ResponseCutOff,
)

__all__ = ["error_from_code", "error_from_response", "transport_errors"]

_KINDS: dict[str, tuple[type[UpstreamError], str]] = {
    "ThrottlingException": (UpstreamThrottled, "Bedrock is throttling this account/model"),
    "ServiceQuotaExceededException": (UpstreamThrottled, "a Bedrock service quota is exhausted"),
    "ModelNotReadyException": (UpstreamUnavailable, "the model is not ready yet"),
    "ServiceUnavailableException": (UpstreamUnavailable, "Bedrock is unavailable"),
    "InternalServerException": (UpstreamUnavailable, "Bedrock had an internal error"),
    "ModelTimeoutException": (UpstreamTimeout, "the model took too long to answer"),
    "ValidationException": (UpstreamRejected, "Bedrock rejected the request as invalid"),
    "AccessDeniedException": (
        UpstreamAuthError,
        "access denied; check the route's IAM permissions (bedrock:InvokeModel, "
        "bedrock:InvokeModelWithResponseStream) and model access in the Bedrock console",
    ),
    "UnrecognizedClientException": (
        UpstreamAuthError,
        "the access key is not recognised; check the route's credentials",
    ),
    "InvalidSignatureException": (
        UpstreamAuthError,
        "the request signature was refused; check the secret key and the machine clock",
    ),
    "ExpiredTokenException": (
        UpstreamAuthError,
        "the session token has expired; refresh the credentials",
    ),
    "ResourceNotFoundException": (
        UpstreamModelError,
        "the model was not found; check the route's model_id and region",
    ),
    "ModelErrorException": (UpstreamModelError, "the model failed to process the request"),
    "ModelStreamErrorException": (UpstreamModelError, "the model failed while streaming"),
}

_STREAM_EXCEPTIONS = {
    "internalServerException": "InternalServerException",
    "modelStreamErrorException": "ModelStreamErrorException",
    "validationException": "ValidationException",
    "throttlingException": "ThrottlingException",
    "serviceUnavailableException": "ServiceUnavailableException",
}


def error_from_code(
    route: str,
    code: str,
    message: str | None,
    *,
    status: int | None = None,
    retry_after_s: float | None = None,
) -> UpstreamError:
    """The gateway error for a Bedrock error class (also the camelCase stream exception names)."""
    code = _STREAM_EXCEPTIONS.get(code, code)
    known = _KINDS.get(code)
    if known is None:
        return _error_from_status(route, status, code, message)
    cls, explanation = known
    text = f"{explanation}: {message}" if message else explanation
    if cls is UpstreamThrottled:
        return UpstreamThrottled(
            route, text, upstream_code=code, upstream_status=status, retry_after_s=retry_after_s
        )
    return cls(route, text, upstream_code=code, upstream_status=status)


def error_from_response(
    route: str, status: int, headers: Mapping[str, str], body: bytes
) -> UpstreamError:
    """The gateway error for a non-200 Bedrock response (header names are lower case)."""
    code = headers.get("x-amzn-errortype", "").split(":", 1)[0]
    message: str | None = None
    try:
        parsed = orjson.loads(body) if body else None
    except orjson.JSONDecodeError:
        parsed = None
    if isinstance(parsed, dict):
        raw = parsed.get("message") or parsed.get("Message")
        message = raw if isinstance(raw, str) else None
        if not code:
            kind = parsed.get("__type") or parsed.get("code")
            if isinstance(kind, str):
                code = kind.rsplit("#", 1)[-1]
    elif body:
        message = f"non-JSON error body: {body[:120]!r}"
    retry_after = _retry_after(headers.get("retry-after"))
    return error_from_code(route, code, message, status=status, retry_after_s=retry_after)


def _error_from_status(
    route: str, status: int | None, code: str, message: str | None
) -> UpstreamError:
    label = code or f"HTTP {status}"
    text = f"{label}: {message}" if message else label
    cls: type[UpstreamError] = UpstreamProtocolError
    if status == 429:
        cls = UpstreamThrottled
    elif status in (401, 403):
        cls = UpstreamAuthError
    elif status == 408:
        cls = UpstreamTimeout
    elif status is not None and status >= 500:
        cls = UpstreamUnavailable
    else:
        text = f"unexpected response ({text})"
    return cls(route, text, upstream_code=code or None, upstream_status=status)


def _retry_after(value: str | None) -> float | None:
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        return None


@contextmanager
def transport_errors(route: str, endpoint: str) -> Iterator[None]:
    """Map the HTTP client's transport failures to gateway errors naming the route."""
    try:
        yield
    except UpstreamError:
        raise
    except ConnectTimeout as exc:
        raise UpstreamUnavailable(route, f"connecting to {endpoint} timed out") from exc
    except ConnectFailed as exc:
        raise UpstreamUnavailable(route, str(exc)) from exc
    except ConnectionLost as exc:
        raise UpstreamUnavailable(
            route, f"{endpoint} closed the connection before answering"
        ) from exc
    except (ResponseCutOff, InvalidResponse) as exc:
        raise UpstreamProtocolError(route, f"bad response from {endpoint}: {exc}") from exc
    except OSError as exc:
        raise UpstreamUnavailable(route, f"network error talking to {endpoint}: {exc}") from exc
