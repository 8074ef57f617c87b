"""Data-plane API keys over loopback HTTP: which tenant a request is charged to, and refusals.

Keys are configured as SHA-256 digests or as `env:VAR`; a request presents its key as
`Authorization: Bearer <key>` (what the OpenAI SDK sends) or `X-Api-Key: <key>`. The tenant a
request was charged to is read back from the spend report (GET /admin/cost).
"""

from __future__ import annotations

import copy
import hashlib
import os
import subprocess
import sys
from collections.abc import Callable
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx2 as httpx
import pytest
import yaml
from openai import OpenAI

from hybridroute.config.load import parse_config
from hybridroute.errors import ConfigError, Unauthorized
from hybridroute.gateway.tenants import TenantDirectory
from hybridroute.runtime import Runtime
from tests.loopback import GatewayFactory, RunningGateway, Simulator, gateway_config_data

ACME_KEY = "acme-key-0001"
BETA_KEY = "beta-key-from-the-environment"
BETA_VARIABLE = "HYBRIDROUTE_TEST_BETA_KEY"
UNSET_VARIABLE = "HYBRIDROUTE_TEST_NEVER_SET_KEY"
BODY = {
    "model": "default",
    "messages": [{"role": "user", "content": "who am I"}],
    "max_tokens": 6,
}


def digest(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def keyed(*, require: bool = False, beta: bool = True) -> Callable[[dict[str, Any]], None]:
    keys: list[dict[str, Any]] = [{"tenant": "acme", "sha256": digest(ACME_KEY)}]
    if beta:
        keys.append({"tenant": "beta", "key": f"env:{BETA_VARIABLE}"})

    def change(data: dict[str, Any]) -> None:
        data["tenants"] = {"require_api_key": require, "api_keys": copy.deepcopy(keys)}

    return change


def post(http: httpx.Client, headers: dict[str, str] | None = None) -> httpx.Response:
    return http.post(
        "/v1/chat/completions",
        json=BODY,
        headers={"x-operation-type": "standard", **(headers or {})},
    )


def by_tenant(gateway: RunningGateway) -> dict[str, int]:
    """Served requests per tenant, from the spend report."""
    status, report = gateway.get("/admin/cost?days=1")
    assert status == 200, report
    return {t: v["requests"] for t, v in report["spend"]["by"]["tenant"].items()}


def assert_unauthorized(response: httpx.Response, message: str) -> None:
    assert response.status_code == 401, response.text
    error = response.json()["error"]
    assert error["code"] == "unauthorized"
    assert error["type"] == "authentication_error"
    assert error["message"] == message
    assert response.headers["www-authenticate"] == 'Bearer realm="hybridroute"'
    assert response.headers["x-hybridroute-route"] == "none"


def test_keys_map_requests_to_their_tenants(
    start_gateway: GatewayFactory, mcp_sim: Simulator, monkeypatch: pytest.MonkeyPatch
):
    monkeypatch.setenv(BETA_VARIABLE, BETA_KEY)
    gateway = start_gateway(keyed())
    upstream_before = mcp_sim.requests()
    with httpx.Client(base_url=gateway.url, timeout=30.0) as http:
        responses = {
            "bearer": post(http, {"authorization": f"Bearer {ACME_KEY}"}),
            "x-api-key": post(http, {"x-api-key": ACME_KEY}),
            "lower-case scheme": post(http, {"authorization": f"bearer {ACME_KEY}"}),
            "env key": post(http, {"authorization": f"Bearer {BETA_KEY}"}),
            "no key": post(http),
        }
        for name, response in responses.items():
            assert response.status_code == 200, (name, response.text)
            assert Decimal(response.headers["x-hybridroute-cost"]) > 0

        wrong = post(http, {"authorization": "Bearer not-a-known-key"})
        assert_unauthorized(wrong, "the API key is not valid for this gateway")
        wrong = post(http, {"x-api-key": ACME_KEY + "x"})
        assert_unauthorized(wrong, "the API key is not valid for this gateway")
        # X-Api-Key is the one judged when both are sent
        both = post(http, {"x-api-key": "not-a-known-key", "authorization": f"Bearer {ACME_KEY}"})
        assert_unauthorized(both, "the API key is not valid for this gateway")

    sdk = OpenAI(base_url=f"{gateway.url}/v1", api_key=ACME_KEY, max_retries=0, timeout=30)
    completion = sdk.chat.completions.create(
        model="default",
        messages=[{"role": "user", "content": "who am I"}],
        max_tokens=6,
        extra_headers={"x-operation-type": "standard"},
    )
    assert completion.choices[0].message.content is not None
    assert completion.choices[0].message.content.startswith("Simulated answer from")

    assert by_tenant(gateway) == {"acme": 4, "beta": 1, "default": 1}
    assert mcp_sim.requests() - upstream_before == 6  # refused requests never went upstream


def test_require_api_key_refuses_requests_without_one(start_gateway: GatewayFactory):
    gateway = start_gateway(keyed(require=True, beta=False))
    with httpx.Client(base_url=gateway.url, timeout=30.0) as http:
        missing = post(http)
        assert_unauthorized(
            missing,
            "this gateway needs an API key: send 'Authorization: Bearer <key>' "
            "(the OpenAI SDK's api_key) or 'X-Api-Key: <key>'",
        )
        blank = post(http, {"authorization": "Bearer"})
        assert blank.status_code == 401
        assert blank.json()["error"]["message"].startswith("this gateway needs an API key")
        assert post(http, {"x-api-key": ACME_KEY}).status_code == 200
    assert by_tenant(gateway) == {"acme": 1}


def test_without_keys_every_caller_is_tenant_default(gateway: RunningGateway):
    sdk = OpenAI(base_url=f"{gateway.url}/v1", api_key="unused", max_retries=0, timeout=30)
    raw = sdk.chat.completions.with_raw_response.create(
        model="default",
        messages=[{"role": "user", "content": "who am I"}],
        max_tokens=6,
        extra_headers={"x-operation-type": "standard"},
    )
    assert raw.http_response.status_code == 200
    assert raw.parse().choices[0].message.content is not None
    with httpx.Client(base_url=gateway.url, timeout=30.0) as http:
        assert post(http, {"x-api-key": "anything at all"}).status_code == 200
        assert post(http).status_code == 200
    assert by_tenant(gateway) == {"default": 3}


def key_config(bedrock_sim: Simulator, mcp_sim: Simulator) -> dict[str, Any]:
    data = gateway_config_data(bedrock_sim, mcp_sim)
    data["tenants"] = {
        "api_keys": [
            {"tenant": "acme", "sha256": digest(ACME_KEY)},
            {"tenant": "beta", "key": f"env:{UNSET_VARIABLE}"},
        ]
    }
    return data


EXPECTED_ISSUE = (
    f"tenants.api_keys[1].key: environment variable {UNSET_VARIABLE} is not set (or empty) "
    f"(export {UNSET_VARIABLE}=<the key> before starting the gateway)"
)


def test_an_unset_key_variable_is_a_config_error_naming_it(
    bedrock_sim: Simulator, mcp_sim: Simulator, monkeypatch: pytest.MonkeyPatch
):
    config = parse_config(key_config(bedrock_sim, mcp_sim))
    for environ in ({}, {UNSET_VARIABLE: ""}):
        with pytest.raises(ConfigError) as caught:
            TenantDirectory(config.tenants, environ=environ)
        assert [str(issue) for issue in caught.value.issues] == [EXPECTED_ISSUE]
        assert UNSET_VARIABLE in caught.value.message

    monkeypatch.delenv(UNSET_VARIABLE, raising=False)
    with pytest.raises(ConfigError) as caught:
        Runtime(config)
    assert [str(issue) for issue in caught.value.issues] == [EXPECTED_ISSUE]

    # Once set, the variable's value is the key (held as its digest only).
    directory = TenantDirectory(config.tenants, environ={UNSET_VARIABLE: BETA_KEY})
    assert directory.identify(BETA_KEY.encode()) == "beta"
    assert directory.identify(ACME_KEY.encode()) == "acme"
    assert directory.identify(None) == "default"
    with pytest.raises(Unauthorized):
        directory.identify(b"beta")


def test_serve_refuses_to_start_when_a_key_variable_is_unset(
    bedrock_sim: Simulator, mcp_sim: Simulator, tmp_path: Path
):
    config_file = tmp_path / "gateway.yaml"
    config_file.write_text(yaml.safe_dump(key_config(bedrock_sim, mcp_sim)))
    env = {k: v for k, v in os.environ.items() if k != UNSET_VARIABLE}
    result = subprocess.run(
        [sys.executable, "-m", "hybridroute", "serve", "--config", str(config_file), "--port", "0"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 1, (result.stdout, result.stderr)
    assert EXPECTED_ISSUE.split(" (export")[0] in result.stderr
    assert "hybridroute serving on" not in result.stdout
