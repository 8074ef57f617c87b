"""The data-plane ASGI app before a runtime exists, called directly through ASGI."""

from __future__ import annotations

from collections.abc import MutableMapping
from typing import Any

import orjson
import pytest

from hybridroute.api import DataPlane

pytestmark = pytest.mark.anyio


async def call(app: DataPlane, method: str, path: str) -> tuple[int, dict[str, str], Any]:
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: MutableMapping[str, Any]) -> None:
        sent.append(dict(message))

    scope = {"type": "http", "method": method, "path": path, "headers": []}
    await app(scope, receive, send)
    start, body = sent
    headers = {k.decode(): v.decode() for k, v in start["headers"]}
    return start["status"], headers, orjson.loads(body["body"])


async def test_requests_before_the_runtime_started_get_503_and_retry_after():
    app = DataPlane(lambda: None, max_body_bytes=1024)
    status, headers, body = await call(app, "POST", "/v1/chat/completions")
    assert status == 503
    assert headers["retry-after"] == "1"
    assert body["error"]["code"] == "gateway_unavailable"


async def test_unknown_paths_are_404_even_while_starting():
    app = DataPlane(lambda: None, max_body_bytes=1024)
    status, _, body = await call(app, "GET", "/nope")
    assert status == 404
    assert body["error"]["code"] == "not_found"


def test_admin_auth_without_a_token_answers_loopback_only():
    from hybridroute.api.auth import AdminAuth
    from hybridroute.config.control import AdminConfig, AdminRole
    from hybridroute.errors import Forbidden

    auth = AdminAuth(AdminConfig(), environ={})
    assert auth.check({"client": ("127.0.0.1", 5000), "headers": []}, AdminRole.ADMIN).name == (
        "loopback"
    )
    auth.check({"client": ("::1", 5000), "headers": []}, AdminRole.ADMIN)
    with pytest.raises(Forbidden, match="answer only loopback callers"):
        auth.check({"client": ("10.1.2.3", 5000), "headers": []}, AdminRole.VIEWER)
    with pytest.raises(Forbidden):
        auth.check({"client": None, "headers": []}, AdminRole.VIEWER)
    closed = AdminAuth(AdminConfig(loopback_without_token=False), environ={})
    with pytest.raises(Forbidden):
        closed.check({"client": ("127.0.0.1", 5000), "headers": []}, AdminRole.VIEWER)


def test_admin_auth_with_the_environment_token_wants_it_from_everyone():
    from hybridroute.api.auth import AdminAuth
    from hybridroute.config.control import AdminConfig, AdminRole
    from hybridroute.errors import Unauthorized

    auth = AdminAuth(AdminConfig(), environ={"HYBRIDROUTE_ADMIN_TOKEN": "tok"})
    loopback = {"client": ("127.0.0.1", 1), "headers": []}
    with pytest.raises(Unauthorized, match="need 'Authorization: Bearer <token>'"):
        auth.check(loopback, AdminRole.VIEWER)
    with pytest.raises(Unauthorized, match="not valid"):
        auth.check({**loopback, "headers": [(b"authorization", b"Bearer nope")]}, AdminRole.VIEWER)
    with pytest.raises(Unauthorized):
        auth.check({**loopback, "headers": [(b"authorization", b"Basic dG9r")]}, AdminRole.VIEWER)
    remote = {"client": ("10.1.2.3", 1), "headers": [(b"authorization", b"Bearer tok")]}
    assert auth.check(remote, AdminRole.ADMIN).role is AdminRole.ADMIN
