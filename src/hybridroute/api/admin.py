"""Admin endpoints on the gateway's own port, and who may call them.

Until admin tokens and roles are configured, access is decided thus: when the environment
variable `HYBRIDROUTE_ADMIN_TOKEN` is set, a request must carry `Authorization: Bearer <token>`
(compared in constant time); when it is not set, only loopback callers are answered, so a
gateway started on a laptop is inspectable and one listening on a network is not open to it.

- `GET /admin/health/status` — the Hybrid Health Monitor's report and the Bedrock support
  manager's status (JSON).
"""

from __future__ import annotations

import hmac
import ipaddress
import os

import orjson

from hybridroute.api.http import Receive, Scope, Send, send_json
from hybridroute.errors import Forbidden, Unauthorized
from hybridroute.runtime import Runtime

__all__ = ["ADMIN_TOKEN_ENV", "AdminGuard", "health_status"]

ADMIN_TOKEN_ENV = "HYBRIDROUTE_ADMIN_TOKEN"


class AdminGuard:
    """Checks an admin request's bearer token, or its loopback origin when no token is set."""

    __slots__ = ("_token",)

    def __init__(self, token: str | None = None) -> None:
        self._token = (token or "").encode() or None

    @classmethod
    def from_environment(cls) -> AdminGuard:
        return cls(os.environ.get(ADMIN_TOKEN_ENV))

    def check(self, scope: Scope) -> None:
        if self._token is None:
            client = scope.get("client")
            if client is None or not _is_loopback(client[0]):
                raise Forbidden(
                    f"admin endpoints answer only loopback callers until {ADMIN_TOKEN_ENV} is "
                    "set; set it and send 'Authorization: Bearer <token>'"
                )
            return
        presented = _bearer(scope)
        if presented is None:
            raise Unauthorized("admin endpoints need 'Authorization: Bearer <token>'")
        if not hmac.compare_digest(presented, self._token):
            raise Unauthorized("the bearer token is not valid for admin endpoints")


def _bearer(scope: Scope) -> bytes | None:
    for name, value in scope["headers"]:
        if name == b"authorization":
            scheme, _, token = value.partition(b" ")
            if scheme.lower() == b"bearer" and token.strip():
                return bytes(token.strip())
            return None
    return None


def _is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


async def health_status(runtime: Runtime, scope: Scope, receive: Receive, send: Send) -> None:
    body = runtime.monitor.report().as_dict()
    body["support"] = runtime.support.status().as_dict()
    await send_json(send, 200, orjson.dumps(body))
