"""Traffic full of planted secrets, then a search for them everywhere the gateway writes: its
logs, the Prometheus metrics, the audit trail, the control state it persists, the cache's keys,
and what the admin API shows back. None may appear."""

from __future__ import annotations

import logging
import sqlite3
from pathlib import Path
from typing import Any

import httpx2 as httpx
import pytest

from tests.loopback import GatewayFactory

ADMIN_TOKEN = "adm-7f3c9a1e5b2d4c6e8a0f1b3d5c7e9a2b"
API_KEY = "tenant-key-4b6d8f0a2c4e6a8c0e2a4c6e8a0c2e4a"
PLANTED = {
    "aws key": "AKIAIOSFODNN7EXAMPLE",
    "openai key": "sk-live-9f8e7d6c5b4a39281706f5e4d3c2b1a0",
    "email": "jane.doe@example.com",
    "card": "4111 1111 1111 1111",
    "iban": "DE89 3704 0044 0532 0130 00",
    "phone": "+49 30 1234 5678",
    "admin token": ADMIN_TOKEN,
    "api key": API_KEY,
}


def test_planted_secrets_appear_nowhere(
    start_gateway: GatewayFactory,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    monkeypatch.setenv("PLANTED_ADMIN", ADMIN_TOKEN)
    monkeypatch.setenv("PLANTED_API_KEY", API_KEY)
    database = tmp_path / "gateway.sqlite3"

    def changes(data: dict[str, Any]) -> None:
        data["admin"] = {"tokens": [{"name": "ops", "role": "admin", "token": "env:PLANTED_ADMIN"}]}
        data["tenants"] = {"api_keys": [{"tenant": "acme", "key": "env:PLANTED_API_KEY"}]}
        data["storage"] = {
            "backend": "sqlite",
            "sqlite_path": str(database),
            "flush_interval_ms": 20,
        }
        data["cache"] = {"enabled": True}

    caplog.set_level(logging.DEBUG)
    gateway = start_gateway(changes)
    admin = {"authorization": f"Bearer {ADMIN_TOKEN}"}
    secret_text = " ".join(PLANTED.values())
    with httpx.Client(base_url=gateway.url, timeout=30) as http:
        for operation in ("meta_monitor", "meta_monitor", "standard", "emergency"):
            response = http.post(
                "/v1/chat/completions",
                json={
                    "model": "default",
                    "user": PLANTED["email"],
                    "messages": [{"role": "user", "content": f"remember {secret_text}"}],
                },
                headers={"x-operation-type": operation, "x-api-key": API_KEY},
            )
            assert response.status_code == 200, response.text
        # A bad request echoing secrets, and a wrong token, are refused without echoing them.
        bad = http.post("/v1/chat/completions", content=secret_text.encode())
        assert bad.status_code == 400
        assert (
            http.get("/admin/alerts", headers={"authorization": f"Bearer {API_KEY}"}).status_code
            == 401
        )
        # Operators' free text carries secrets too.
        changed = http.post(
            "/admin/feature-flags/bedrock/update",
            json={"flag": "ENABLE_PERFORMANCE_OPTIMIZATION", "enabled": False,
                  "reason": f"ticket from {PLANTED['email']}, card {PLANTED['card']}"},
            headers=admin,
        )  # fmt: skip
        assert changed.status_code == 200
        action = http.post(
            "/admin/actions",
            json={"action": "maintenance", "enabled": True,
                  "reason": f"key {PLANTED['aws key']} leaked"},
            headers=admin,
        )  # fmt: skip
        assert action.status_code == 200
        views = [
            http.get(path, headers=admin).text
            for path in (
                "/admin/feature-flags/bedrock",
                "/admin/actions",
                "/admin/audit/export?period=all",
                "/admin/alerts",
                "/admin/cost",
                "/admin/cache",
                "/admin/compliance/gdpr-status",
            )
        ]
        metrics = http.get("/metrics").text
    runtime = gateway.runtime
    cache_keys = " ".join(runtime.cache.store.keys())
    with sqlite3.connect(database) as conn:  # what was persisted, read from the file itself
        state = " ".join(str(v) for (v,) in conn.execute("SELECT value FROM control_state"))
        audit = " ".join(str(d) for (d,) in conn.execute("SELECT data || actor FROM audit_records"))
    haystacks = {
        "logs": caplog.text,
        "metrics": metrics,
        "admin API": " ".join(views),
        "cache keys": cache_keys,
        "control state": state,
        "audit records": audit,
    }
    for where, text in haystacks.items():
        for name, secret in PLANTED.items():
            assert secret not in text, f"the {name} appears in the {where}"
    assert "[REDACTED:EMAIL]" in state  # the operator's reason was kept, redacted
