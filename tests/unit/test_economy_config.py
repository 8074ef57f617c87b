"""Configuration checks for prices, budgets, tenants, output limits and the cache."""

from __future__ import annotations

import hashlib
from typing import Any

import pytest

from hybridroute.config.load import parse_config
from hybridroute.errors import ConfigError

ROUTES: dict[str, dict[str, Any]] = {
    "direct_bedrock": {
        "type": "bedrock",
        "region": "eu-central-1",
        "model_id": "model-a",
        "model_ids": {"background": "model-b"},
    },
    "mcp": {"type": "mcp", "transport": "stdio", "command": ["python", "-m", "srv"]},
}
PRICED = {
    "routes": {
        "direct_bedrock": {"input_per_1k": "0.003", "output_per_1k": "0.015"},
        "mcp": {"input_per_1k": "0", "output_per_1k": "0"},
    }
}
KEY = hashlib.sha256(b"k1").hexdigest()


def issues(**sections: Any) -> list[str]:
    with pytest.raises(ConfigError) as info:
        parse_config({"routes": ROUTES, **sections})
    return [str(issue) for issue in info.value.issues]


def test_a_price_for_a_model_the_route_never_uses_is_refused_with_a_suggestion():
    pricing = {
        "routes": {
            "direct_bedrock": {
                "input_per_1k": "0.003",
                "output_per_1k": "0.015",
                "models": {"model-c": {"input_per_1k": "1", "output_per_1k": "1"}},
            }
        }
    }
    (issue,) = issues(pricing=pricing)
    assert issue.startswith(
        "pricing.routes.direct_bedrock.models.model-c: route 'direct_bedrock' never uses model "
        "'model-c'"
    )
    assert "models it uses: model-a, model-b" in issue


def test_one_key_for_two_tenants_is_refused():
    tenants = {"api_keys": [{"tenant": "a", "sha256": KEY}, {"tenant": "b", "sha256": KEY}]}
    assert issues(tenants=tenants) == [
        "tenants.api_keys[1].sha256: the same key is already configured at "
        "tenants.api_keys[0] (give each tenant its own key)"
    ]


def test_tenant_budgets_need_keys_to_be_required():
    tenants = {"api_keys": [{"tenant": "acme", "sha256": KEY}]}
    budgets = {"tenants": {"acme": {"daily": "5"}}}
    assert issues(tenants=tenants, budgets=budgets, pricing=PRICED) == [
        "tenants.require_api_key: budgets are set for tenant(s) acme, but a caller may leave its "
        "key out and spend as tenant 'default' instead (set tenants.require_api_key: true)"
    ]
    config = parse_config(
        {
            "routes": ROUTES,
            "tenants": {**tenants, "require_api_key": True},
            "budgets": budgets,
            "pricing": PRICED,
        }
    )
    assert config.budgets.tenants["acme"].daily == 5


def test_operation_max_tokens_stay_within_the_output_limit():
    assert issues(
        routing={"max_output_tokens": 1000}, operations={"standard": {"max_tokens": 2000}}
    ) == [
        "operations.standard.max_tokens: 2000 is above routing.max_output_tokens (1000) "
        "(lower it, or raise routing.max_output_tokens)"
    ]


def test_a_cache_too_large_to_sweep_quickly_is_refused():
    (issue,) = issues(cache={"max_entries": 2_000_000})
    assert issue.startswith("cache.max_entries:")
