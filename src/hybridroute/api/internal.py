"""Between worker processes: events to the leader, admin requests forwarded to it.

With `hybridroute serve --workers N`, worker 0 (the leader) holds the state the admin endpoints
read and change — the traffic window, the alerts and their rules, the reports — while every
worker serves requests. So:

- `POST /internal/events` (leader): a follower's batch of request events, recorded in the
  leader's traffic window. Only workers know the token it needs (`x-hybridroute-worker-token`,
  compared in constant time); anything else gets 404, as if the path did not exist.
- `AdminForwarder` (followers): an `/admin/*` request that reached a follower is passed to the
  leader's loopback port as it came (method, path, query, body, the caller's Authorization),
  and its answer passed back, so every worker answers the admin API the same way.
"""

from __future__ import annotations

import hmac
from collections.abc import Mapping

import httpx2 as httpx
import orjson

from hybridroute.api.http import Receive, Scope, Send, read_body, send_json
from hybridroute.errors import GatewayUnavailable, MalformedJSON, NotFound
from hybridroute.observability.shipping import TOKEN_HEADER, decode_events
from hybridroute.runtime import Runtime, WorkerRole

__all__ = ["AdminForwarder", "internal_events"]

_MAX_BATCH_BYTES = 32 * 1024 * 1024
_FORWARDED_HEADERS = {b"authorization", b"content-type", b"accept", b"x-api-key"}
_ANSWER_HEADERS = {"content-type", "retry-after", "allow", "www-authenticate"}


def _header(scope: Scope, name: bytes) -> bytes | None:
    for key, value in scope["headers"]:
        if key == name:
            return bytes(value)
    return None


async def internal_events(runtime: Runtime, scope: Scope, receive: Receive, send: Send) -> None:
    token = runtime.role.token
    presented = _header(scope, TOKEN_HEADER.encode())
    if (
        not runtime.role.leader
        or token is None
        or presented is None
        or not hmac.compare_digest(presented, token.encode())
    ):
        raise NotFound(f"no endpoint at {scope['path']}")
    body = await read_body(scope, receive, _MAX_BATCH_BYTES)
    try:
        items = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise MalformedJSON(f"the event batch is not valid JSON ({exc})") from None
    if not isinstance(items, list):
        raise MalformedJSON("the event batch must be a JSON list")
    events = decode_events(items)
    for event in events:
        runtime.observe_shipped(event)
    await send_json(send, 200, orjson.dumps({"recorded": len(events)}))


class AdminForwarder:
    """Passes a follower's admin requests to the leader worker."""

    def __init__(self, role: WorkerRole, client: httpx.AsyncClient | None = None) -> None:
        if role.leader_url is None:
            raise ValueError("a follower needs the leader's URL")
        self._base = role.leader_url.rstrip("/")
        self._client = client or httpx.AsyncClient()

    async def __call__(self, scope: Scope, receive: Receive, send: Send, max_body: int) -> None:
        body = await read_body(scope, receive, max_body)
        query = scope.get("query_string", b"").decode("latin-1")
        url = f"{self._base}{scope['path']}" + (f"?{query}" if query else "")
        headers: Mapping[str, str] = {
            k.decode("latin-1"): v.decode("latin-1")
            for k, v in scope["headers"]
            if k in _FORWARDED_HEADERS
        }
        try:
            answer = await self._client.request(
                scope["method"], url, content=body, headers=headers, timeout=30.0
            )
        except httpx.HTTPError as exc:
            raise GatewayUnavailable(
                f"the admin API is served by worker 0, which did not answer ({exc}); retry in "
                "a moment"
            ) from None
        kept = [
            (k.encode("latin-1"), v.encode("latin-1"))
            for k, v in answer.headers.items()
            if k.lower() in _ANSWER_HEADERS
        ]
        content = answer.content
        await send(
            {
                "type": "http.response.start",
                "status": answer.status_code,
                "headers": [*kept, (b"content-length", str(len(content)).encode())],
            }
        )
        await send({"type": "http.response.body", "body": content})
