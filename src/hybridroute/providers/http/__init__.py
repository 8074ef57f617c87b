"""The upstream HTTP/1.1 client shared by routes that speak HTTP."""

from hybridroute.providers.http.pool import (
    ConnectFailed,
    ConnectionLost,
    ConnectTimeout,
    HttpError,
    HttpPool,
    InvalidResponse,
    Response,
    ResponseCutOff,
)

__all__ = [
    "ConnectFailed",
    "ConnectTimeout",
    "ConnectionLost",
    "HttpError",
    "HttpPool",
    "InvalidResponse",
    "Response",
    "ResponseCutOff",
]
