"""The one exception tree of the gateway.

Every failure the gateway can report is a `GatewayError`. Each class carries its own policy as
class attributes: the HTTP status it renders as, the OpenAI-style error `type` and `code`, and,
for upstream failures, whether the executor may retry the same route, may fall back to another
route, and whether the failure counts against the route's circuit breaker.

    GatewayError                       500 internal_error
    ├── RequestError                   400 invalid_request     (the caller can fix it)
    │   ├── MalformedJSON              400 invalid_json
    │   ├── UnknownOperationType       422 unknown_operation_type
    │   ├── PayloadTooLarge            413 payload_too_large
    │   ├── NotFound                   404 not_found
    │   └── MethodNotAllowed           405 method_not_allowed
    ├── GatewayUnavailable             503 gateway_unavailable (+ Retry-After; starting, stopping)
    ├── ResidencyUnsatisfiable         422 residency_unsatisfiable  (fail closed, nothing sent)
    ├── BudgetRefused                  429 budget_throttled (+ Retry-After)
    ├── StorageError                   503 storage_unavailable (a store cannot be read/written)
    ├── UpstreamError                  502 upstream_error  (raised by routes at their boundary)
    │   ├── UpstreamTimeout            504  retryable, fallback
    │   ├── UpstreamThrottled          429→503  retryable, fallback (+ retry_after)
    │   ├── UpstreamUnavailable        503  retryable, fallback (connection errors, 5xx, not ready)
    │   ├── UpstreamAuthError          502  fallback (the route's credentials or permissions)
    │   ├── UpstreamModelError         502  fallback (the model or tool failed the call)
    │   ├── UpstreamProtocolError      502  fallback (garbage on the wire)
    │   └── UpstreamRejected           400  no fallback, not the route's fault (the request)
    ├── AllRoutesFailed                502/503/504, lists every attempt
    └── StreamInterrupted              (after the first byte: rendered as a terminal SSE event)

Route clients raise these; they never report a failure as a successful result. Messages say
what went wrong and, where the operator or caller can act, how to fix it.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

__all__ = [
    "AdminRateLimited",
    "AllRoutesFailed",
    "BudgetRefused",
    "ConfigError",
    "ConfigIssue",
    "Conflict",
    "Forbidden",
    "GatewayError",
    "GatewayUnavailable",
    "InMaintenance",
    "MalformedJSON",
    "MethodNotAllowed",
    "NotFound",
    "Overloaded",
    "PayloadTooLarge",
    "RequestError",
    "ResidencyUnsatisfiable",
    "RoutesDisabled",
    "StorageError",
    "StreamInterrupted",
    "Unauthorized",
    "UnknownOperationType",
    "UpstreamAuthError",
    "UpstreamError",
    "UpstreamModelError",
    "UpstreamProtocolError",
    "UpstreamRejected",
    "UpstreamThrottled",
    "UpstreamTimeout",
    "UpstreamUnavailable",
]


class GatewayError(Exception):
    """Base of every error the gateway reports to a caller."""

    status: ClassVar[int] = 500
    error_type: ClassVar[str] = "server_error"
    code: ClassVar[str] = "internal_error"

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def details(self) -> dict[str, Any]:
        """Extra machine-readable fields for the error body (empty by default)."""
        return {}

    def headers(self) -> Mapping[str, str]:
        """Extra response headers (e.g. Retry-After)."""
        return {}

    def http_status(self) -> int:
        """The HTTP status this error renders as."""
        return self.status


class RequestError(GatewayError):
    """The request is wrong; the message tells the caller how to fix it."""

    status = 400
    error_type = "invalid_request_error"
    code = "invalid_request"

    def __init__(self, message: str, *, param: str | None = None) -> None:
        super().__init__(message)
        self.param = param

    def details(self) -> dict[str, Any]:
        return {"param": self.param} if self.param else {}


class MalformedJSON(RequestError):
    code = "invalid_json"


class UnknownOperationType(RequestError):
    status = 422
    code = "unknown_operation_type"

    def __init__(self, operation_type: str, valid: Sequence[str]) -> None:
        super().__init__(
            f"unknown operation type {operation_type!r}; valid operation types are: "
            f"{', '.join(valid)} (send one in the X-Operation-Type header or "
            "metadata.operation_type)",
            param="operation_type",
        )
        self.valid = tuple(valid)

    def details(self) -> dict[str, Any]:
        return {"param": "operation_type", "valid_operation_types": list(self.valid)}


class PayloadTooLarge(RequestError):
    status = 413
    code = "payload_too_large"


class NotFound(RequestError):
    status = 404
    code = "not_found"


class MethodNotAllowed(RequestError):
    status = 405
    code = "method_not_allowed"

    def __init__(self, message: str, allowed: Sequence[str]) -> None:
        super().__init__(message)
        self.allowed = tuple(allowed)

    def headers(self) -> Mapping[str, str]:
        return {"allow": ", ".join(self.allowed)}


class Unauthorized(RequestError):
    """No credentials, or wrong ones."""

    status = 401
    error_type = "authentication_error"
    code = "unauthorized"

    def headers(self) -> Mapping[str, str]:
        return {"www-authenticate": 'Bearer realm="hybridroute"'}


class Forbidden(RequestError):
    """The caller is known but may not do this."""

    status = 403
    error_type = "permission_error"
    code = "forbidden"


class AdminRateLimited(RequestError):
    """Too many admin requests from one caller."""

    status = 429
    error_type = "rate_limit_error"
    code = "admin_rate_limited"

    def __init__(self, message: str, *, retry_after_s: int) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s

    def headers(self) -> Mapping[str, str]:
        return {"retry-after": str(self.retry_after_s)}


class GatewayUnavailable(GatewayError):
    """The gateway itself cannot serve right now (starting up or shutting down)."""

    status = 503
    error_type = "api_error"
    code = "gateway_unavailable"

    def __init__(self, message: str, *, retry_after_s: int = 1) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s

    def headers(self) -> Mapping[str, str]:
        return {"retry-after": str(self.retry_after_s)}


class InMaintenance(GatewayUnavailable):
    """Maintenance mode: new non-critical work is refused while critical work continues."""

    code = "maintenance"


class RoutesDisabled(GatewayError):
    """Every route the decision allowed is disabled by an operator (isolated): refused, sent
    nowhere."""

    status = 503
    error_type = "api_error"
    code = "routes_disabled"

    def __init__(self, message: str, *, disabled: Sequence[str]) -> None:
        super().__init__(message)
        self.disabled = tuple(disabled)

    def details(self) -> dict[str, Any]:
        return {"disabled_routes": list(self.disabled)}

    def headers(self) -> Mapping[str, str]:
        return {"retry-after": "30"}


class ResidencyUnsatisfiable(GatewayError):
    """No route left in the allowed region set: refused, never sent (fail closed)."""

    status = 422
    error_type = "invalid_request_error"
    code = "residency_unsatisfiable"

    def __init__(self, message: str, *, residency: str, excluded: Mapping[str, str | None]) -> None:
        super().__init__(message)
        self.residency = residency
        self.excluded = dict(excluded)

    def details(self) -> dict[str, Any]:
        return {"residency": self.residency, "excluded_routes": self.excluded}


class BudgetRefused(GatewayError):
    """The budget policy refuses this priority right now (throttled or exhausted)."""

    status = 429
    error_type = "rate_limit_error"
    code = "budget_throttled"

    def __init__(self, message: str, *, retry_after_s: int) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s

    def headers(self) -> Mapping[str, str]:
        return {"retry-after": str(self.retry_after_s)}


class StorageError(GatewayError):
    """A durable store could not be opened, read or written; the message names it and says
    what to check."""

    status = 503
    error_type = "server_error"
    code = "storage_unavailable"


class Overloaded(GatewayError):
    """Admission control shed the request: its routes are saturated with more important work."""

    status = 429
    error_type = "rate_limit_error"
    code = "overloaded"

    def __init__(
        self,
        message: str,
        *,
        retry_after_s: float,
        decision_id: str,
        attempts: Sequence[Mapping[str, Any]],
    ) -> None:
        super().__init__(message)
        self.retry_after_s = max(1, math.ceil(retry_after_s))
        self.decision_id = decision_id
        self.attempts = tuple(attempts)

    def headers(self) -> Mapping[str, str]:
        return {"retry-after": str(self.retry_after_s)}

    def details(self) -> dict[str, Any]:
        return {
            "decision_id": self.decision_id,
            "retry_after_s": self.retry_after_s,
            "attempts": [dict(a) for a in self.attempts],
        }


class UpstreamError(GatewayError):
    """A route's upstream failed. Raised by route clients at their boundary."""

    status = 502
    error_type = "api_error"
    code = "upstream_error"
    retryable: ClassVar[bool] = False
    fallback: ClassVar[bool] = True
    counts_against_route: ClassVar[bool] = True

    def __init__(
        self,
        route: str,
        message: str,
        *,
        upstream_code: str | None = None,
        upstream_status: int | None = None,
    ) -> None:
        super().__init__(f"{route}: {message}")
        self.route = route
        self.reason = message
        self.upstream_code = upstream_code
        self.upstream_status = upstream_status

    def summary(self) -> str:
        """One short line for attempt lists: the upstream's error class and message."""
        code = self.upstream_code or type(self).__name__
        return f"{code}: {self.reason}"

    def details(self) -> dict[str, Any]:
        fields: dict[str, Any] = {"route": self.route}
        if self.upstream_code:
            fields["upstream_code"] = self.upstream_code
        if self.upstream_status is not None:
            fields["upstream_status"] = self.upstream_status
        return fields


class UpstreamTimeout(UpstreamError):
    status = 504
    code = "upstream_timeout"
    retryable = True


class UpstreamThrottled(UpstreamError):
    status = 503
    code = "upstream_throttled"
    retryable = True

    def __init__(
        self,
        route: str,
        message: str,
        *,
        upstream_code: str | None = None,
        upstream_status: int | None = None,
        retry_after_s: float | None = None,
    ) -> None:
        super().__init__(
            route, message, upstream_code=upstream_code, upstream_status=upstream_status
        )
        self.retry_after_s = retry_after_s


class UpstreamUnavailable(UpstreamError):
    status = 503
    code = "upstream_unavailable"
    retryable = True


class UpstreamAuthError(UpstreamError):
    code = "upstream_auth_error"


class UpstreamModelError(UpstreamError):
    code = "upstream_model_error"


class UpstreamProtocolError(UpstreamError):
    code = "upstream_protocol_error"


class UpstreamRejected(UpstreamError):
    """The upstream says the request itself is invalid: no fallback, no breaker penalty."""

    status = 400
    error_type = "invalid_request_error"
    code = "upstream_rejected_request"
    fallback = False
    counts_against_route = False


class AllRoutesFailed(GatewayError):
    """Every route in the decision failed or was skipped; lists each attempt."""

    error_type = "api_error"
    code = "all_routes_failed"

    def __init__(
        self,
        message: str,
        *,
        status: int,
        decision_id: str,
        attempts: Sequence[Mapping[str, Any]],
    ) -> None:
        super().__init__(message)
        self._status = status
        self.decision_id = decision_id
        self.attempts = tuple(attempts)

    def http_status(self) -> int:
        return self._status

    def details(self) -> dict[str, Any]:
        return {"decision_id": self.decision_id, "attempts": [dict(a) for a in self.attempts]}


class StreamInterrupted(GatewayError):
    """The upstream failed after the first byte went to the client."""

    status = 502
    error_type = "api_error"
    code = "stream_interrupted"

    def __init__(self, message: str, *, route: str) -> None:
        super().__init__(message)
        self.route = route

    def details(self) -> dict[str, Any]:
        return {"route": self.route}


class ConfigIssue:
    """One problem found in a configuration: where it is, what is wrong, how to fix it."""

    __slots__ = ("hint", "message", "path")

    def __init__(self, path: str, message: str, hint: str | None = None) -> None:
        self.path = path
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        text = f"{self.path}: {self.message}" if self.path else self.message
        return f"{text} ({self.hint})" if self.hint else text

    def __repr__(self) -> str:
        return f"ConfigIssue({self.path!r}, {self.message!r}, {self.hint!r})"

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, ConfigIssue):
            return NotImplemented
        return (self.path, self.message, self.hint) == (other.path, other.message, other.hint)

    def __hash__(self) -> int:
        return hash((self.path, self.message, self.hint))


class ConfigError(GatewayError):
    """A configuration is invalid. Lists every issue found, each naming its path."""

    error_type = "invalid_request_error"
    code = "invalid_config"
    status = 422

    def __init__(self, issues: Sequence[ConfigIssue], *, source: str = "configuration") -> None:
        self.issues = tuple(issues)
        self.source = source
        lines = "\n".join(f"  - {issue}" for issue in self.issues)
        count = len(self.issues)
        noun = "problem" if count == 1 else "problems"
        super().__init__(f"{source} is invalid ({count} {noun}):\n{lines}")

    def details(self) -> dict[str, Any]:
        return {
            "issues": [{"path": i.path, "message": i.message, "hint": i.hint} for i in self.issues]
        }


class Conflict(RequestError):
    """The change was based on a state that has moved on (someone else changed it)."""

    status = 409
    code = "conflict"
