"""Shared helpers for the control-plane HTTP tests: three admin tokens (viewer, operator, admin)
given to the gateway through `token: env:VAR`, an admin client that sends one of them, and a
chat request that reports which route served it.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import httpx2 as httpx
import pytest

from tests.loopback import RunningGateway, Simulator, gateway_config_data, serving, wait_for

__all__ = [
    "ENV",
    "NAMES",
    "ROLES",
    "TOKENS",
    "Admin",
    "Changes",
    "audit_records",
    "chat",
    "config_data",
    "serve",
    "served_by",
    "use_tokens",
    "wait_for_audit",
]

Changes = Callable[[dict[str, Any]], None]

ROLES = ("viewer", "operator", "admin")
# The clear tokens; the gateway reads them from the environment (`token: env:VAR`).
TOKENS = {role: f"hr-test-{role}-token-4c1f9e{index}" for index, role in enumerate(ROLES)}
ENV = {role: f"HYBRIDROUTE_TEST_{role.upper()}_TOKEN" for role in ROLES}
# The principal names the audit trail records.
NAMES = {role: f"{role}-bot" for role in ROLES}


def use_tokens(
    monkeypatch: pytest.MonkeyPatch,
    *,
    extra: list[dict[str, Any]] | None = None,
    rate_limit_per_minute: int | None = None,
    then: Changes | None = None,
) -> Changes:
    """Config changes giving the gateway the three role tokens (plus `extra` entries)."""
    monkeypatch.delenv("HYBRIDROUTE_ADMIN_TOKEN", raising=False)
    for role in ROLES:
        monkeypatch.setenv(ENV[role], TOKENS[role])
    tokens: list[dict[str, Any]] = [
        {"name": NAMES[role], "role": role, "token": f"env:{ENV[role]}"} for role in ROLES
    ]
    tokens += copy.deepcopy(extra or [])

    def change(data: dict[str, Any]) -> None:
        data["admin"] = {"tokens": tokens}
        if rate_limit_per_minute is not None:
            data["admin"]["rate_limit_per_minute"] = rate_limit_per_minute
        if then is not None:
            then(data)

    return change


def config_data(bedrock: Simulator, mcp: Simulator, *changes: Changes | None) -> dict[str, Any]:
    """The loopback test configuration with `changes` applied in order."""
    data = copy.deepcopy(gateway_config_data(bedrock, mcp))
    for change in changes:
        if change is not None:
            change(data)
    return data


serve = serving


@dataclass
class Admin:
    """Admin calls over loopback with one bearer token (None: no Authorization header)."""

    url: str
    token: str | None

    @classmethod
    def of(cls, gateway: RunningGateway, role: str | None = "admin") -> Admin:
        return cls(gateway.url, TOKENS[role] if role is not None else None)

    def call(
        self,
        method: str,
        path: str,
        body: Any = None,
        *,
        raw: bytes | None = None,
        headers: dict[str, str] | None = None,
    ) -> httpx.Response:
        sent = dict(headers or {})
        if self.token is not None:
            sent["authorization"] = f"Bearer {self.token}"
        content = (
            raw if raw is not None else (json.dumps(body).encode() if body is not None else b"")
        )
        if body is not None and raw is None:
            sent.setdefault("content-type", "application/json")
        return httpx.request(method, self.url + path, content=content, headers=sent, timeout=30)

    def ok(self, method: str, path: str, body: Any = None, status: int = 200) -> Any:
        response = self.call(method, path, body)
        assert response.status_code == status, (method, path, response.status_code, response.text)
        return response.json()

    def get(self, path: str) -> Any:
        return self.ok("GET", path)

    def post(self, path: str, body: Any = None) -> Any:
        return self.ok("POST", path, {} if body is None else body)

    def put(self, path: str, body: Any) -> Any:
        return self.ok("PUT", path, body)

    def error(self, method: str, path: str, body: Any, status: int) -> dict[str, Any]:
        """The error of a call expected to fail with `status`."""
        response = self.call(method, path, body)
        assert response.status_code == status, (method, path, response.status_code, response.text)
        error: dict[str, Any] = response.json()["error"]
        return error


def chat(
    gateway: RunningGateway,
    operation_type: str,
    content: str = "Which disk is filling up on the build host?",
    *,
    headers: dict[str, str] | None = None,
    timeout: float = 30,
) -> httpx.Response:
    """One JSON chat request of `operation_type`."""
    body = {
        "model": "default",
        "max_tokens": 16,
        "messages": [{"role": "user", "content": content}],
    }
    sent = {"X-Operation-Type": operation_type, **(headers or {})}
    return httpx.post(
        f"{gateway.url}/v1/chat/completions", json=body, headers=sent, timeout=timeout
    )


def served_by(response: httpx.Response) -> str:
    assert response.status_code == 200, response.text
    return response.headers["x-hybridroute-route"]


def audit_records(admin: Admin, kind: str | None = None) -> list[dict[str, Any]]:
    """The audit records (all periods), optionally of one kind, with `data` decoded."""
    body = admin.get("/admin/audit/export?period=all")
    records = []
    for record in body["records"]:
        data = record["data"]
        decoded = dict(record, data=json.loads(data) if isinstance(data, str) else data)
        if kind is None or record["kind"] == kind:
            records.append(decoded)
    return records


def wait_for_audit(admin: Admin, kind: str, timeout: float = 5.0) -> list[dict[str, Any]]:
    """The records of `kind` once there is at least one (records are flushed in batches)."""
    found: list[dict[str, Any]] = []

    def appeared() -> bool:
        found[:] = audit_records(admin, kind)
        return bool(found)

    wait_for(appeared, timeout)
    return found
