"""Configuration loading: defaults, and every error naming its path and a fix."""

from __future__ import annotations

import textwrap
from pathlib import Path
from typing import Any

import pytest

from hybridroute.config.load import load_config, parse_config, parse_config_text
from hybridroute.config.schema import BedrockRouteConfig, McpRouteConfig
from hybridroute.errors import ConfigError

ROUTES: dict[str, dict[str, Any]] = {
    "direct_bedrock": {"type": "bedrock", "region": "eu-central-1", "model_id": "model-a"},
    "mcp": {"type": "mcp", "transport": "stdio", "command": ["python", "-m", "srv"]},
}


def issues(data: dict[str, Any]) -> list[str]:
    with pytest.raises(ConfigError) as info:
        parse_config(data)
    return [str(issue) for issue in info.value.issues]


def test_minimal_config_gets_the_seed_defaults():
    config = parse_config({"routes": ROUTES})
    assert list(config.matrix) == [
        "emergency",
        "infrastructure",
        "meta_monitor",
        "implementation",
        "kiro_communication",
        "standard",
        "background",
    ]
    assert config.operations["emergency"].temperature == 0.1
    assert config.operations["emergency"].max_tokens == 1024
    assert all(config.flags.model_dump().values())
    assert config.matrix["emergency"].effective_retries() == 1
    assert config.matrix["standard"].effective_retries() == 0
    assert isinstance(config.routes["mcp"], McpRouteConfig)
    assert config.routes["mcp"].arguments["messages"] == "$messages"


def test_the_seeds_failed_deployment_cannot_load():
    """`direct` and `direct_bedrock` for one upstream: refused, naming both ids."""
    data = {
        "routes": {**ROUTES, "direct": dict(ROUTES["direct_bedrock"])},
    }
    found = issues(data)
    assert len(found) == 1
    assert "routes 'direct_bedrock' and 'direct' are two ids for one upstream" in found[0]
    assert found[0].startswith("routes.direct:")


def test_a_row_naming_an_undefined_route_is_refused_with_a_suggestion():
    data = {"routes": ROUTES, "matrix": _matrix(emergency={"primary": "direct"})}
    assert issues(data) == [
        "matrix.emergency.primary: unknown route 'direct'; did you mean 'direct_bedrock'? "
        "(defined routes: direct_bedrock, mcp)"
    ]


def test_fallback_equal_to_primary_and_missing_row():
    matrix = _matrix(infrastructure={"fallback": "direct_bedrock"})
    del matrix["background"]
    found = issues({"routes": ROUTES, "matrix": matrix})
    assert any(f.startswith("matrix.background: the matrix has no row") for f in found)
    assert any(
        f.startswith("matrix.infrastructure.fallback: fallback 'direct_bedrock' is the same")
        for f in found
    )


def test_unknown_keys_are_named_with_the_allowed_ones():
    found = sorted(issues({"routes": ROUTES, "servr": {}, "breaker": {"window": 3}}))
    assert found[0].startswith("breaker.window: unknown key 'window'; did you mean 'window_s'?")
    assert "allowed keys here: window_s, buckets" in found[0]
    assert found[1].startswith("servr: unknown key 'servr'; did you mean 'server'?")


def test_route_type_errors_name_the_path_without_union_tags():
    found = issues(
        {
            "routes": {
                **ROUTES,
                "x": {"type": "grpc"},
                "mcp": {"type": "mcp", "transport": "stdio", "command": ["s"], "bogus": 1},
            }
        }
    )
    assert "routes.x.type: unknown type 'grpc' (use one of: bedrock, mcp)" in found
    assert any(f.startswith("routes.mcp.bogus: unknown key 'bogus'") for f in found)


def test_canonical_ids_must_have_their_kind():
    found = issues({"routes": {"direct_bedrock": ROUTES["mcp"], "mcp": ROUTES["direct_bedrock"]}})
    assert any(
        "'direct_bedrock' is a canonical route id and must be of type 'bedrock'" in f for f in found
    )


def test_mcp_transport_needs_its_fields():
    found = issues({"routes": {**ROUTES, "mcp": {"type": "mcp", "transport": "streamable_http"}}})
    assert any("transport 'streamable_http' needs 'url'" in f for f in found)


def test_mcp_argument_sources_are_checked():
    route = {**ROUTES["mcp"], "arguments": {"prompt": "$promt", "mode": "$$literal"}}
    found = issues({"routes": {**ROUTES, "mcp": route}})
    assert any("maps from unknown source '$promt'" in f and "$prompt" in f for f in found)


def test_operation_params_and_model_ids_must_name_matrix_rows():
    bedrock = {**ROUTES["direct_bedrock"], "model_ids": {"emergncy": "fast-model"}}
    found = issues({"routes": {**ROUTES, "direct_bedrock": bedrock}, "operations": {"standrd": {}}})
    assert any(
        f.startswith("operations.standrd:") and "did you mean 'standard'" in f for f in found
    )
    assert any(f.startswith("routes.direct_bedrock.model_ids.emergncy:") for f in found)


def test_mcp_only_route_must_be_an_mcp_route():
    found = issues({"routes": ROUTES, "routing": {"mcp_only_route": "direct_bedrock"}})
    assert found == [
        "routing.mcp_only_route: route 'direct_bedrock' is of type 'bedrock', not 'mcp' "
        "(name a route of type 'mcp')"
    ]


def test_region_shapes_are_checked():
    found = issues(
        {"routes": {**ROUTES, "direct_bedrock": {**ROUTES["direct_bedrock"], "region": "eu"}}}
    )
    assert found == [
        "routes.direct_bedrock.region: 'eu' is not an AWS region name; write it like "
        "'eu-central-1' or 'us-east-1'"
    ]


def test_config_may_add_operation_types_and_routes():
    matrix = _matrix()
    matrix["nightly_report"] = {"priority": "low", "latency_budget_ms": 120000, "primary": "mcp"}
    routes = {
        **ROUTES,
        "bedrock_us": {"type": "bedrock", "region": "us-east-1", "model_id": "model-a"},
    }
    matrix["standard"]["fallback"] = "bedrock_us"
    config = parse_config({"routes": routes, "matrix": matrix})
    assert config.matrix["nightly_report"].primary == "mcp"
    assert isinstance(config.routes["bedrock_us"], BedrockRouteConfig)


def test_yaml_syntax_errors_give_the_line(tmp_path: Path):
    path = tmp_path / "bad.yaml"
    path.write_text("routes:\n  mcp: {type: mcp\n")
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert "not valid YAML at line 3" in str(info.value)


def test_missing_file_is_reported(tmp_path: Path):
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "nope.yaml")


def test_every_problem_is_reported_at_once():
    text = textwrap.dedent(
        """
        routes:
          direct_bedrock: {type: bedrock, region: nowhere, model_id: m}
          mcp: {type: mcp, transport: stdio}
        flags: {ENABLE_EVERYTHING: true}
        """
    )
    with pytest.raises(ConfigError) as info:
        parse_config_text(text, source="ops.yaml")
    message = str(info.value)
    assert message.startswith("ops.yaml is invalid (3 problems):")
    assert "routes.direct_bedrock.region" in message
    assert "routes.mcp: transport 'stdio' needs 'command'" in message
    assert "flags.ENABLE_EVERYTHING: unknown key" in message


def test_documented_example_config_is_valid():
    """docs/example-config.yaml is loaded exactly as an operator would load it."""
    path = Path(__file__).parents[2] / "docs" / "example-config.yaml"
    config = load_config(path)
    assert set(config.routes) >= {"direct_bedrock", "mcp"}


def _matrix(**changes: dict[str, Any]) -> dict[str, dict[str, Any]]:
    from hybridroute.config.defaults import DEFAULT_MATRIX

    matrix = {op: dict(row) for op, row in DEFAULT_MATRIX.items()}
    for op, change in changes.items():
        matrix[op].update(change)
    return matrix


def test_a_route_that_needs_more_than_a_rows_budget_is_refused():
    routes = {**ROUTES, "direct_bedrock": {**ROUTES["direct_bedrock"], "min_attempt_ms": 6000}}
    found = issues({"routes": routes})
    assert found == [
        "matrix.emergency.latency_budget_ms: 5000 ms is less than route 'direct_bedrock' needs "
        "for one attempt (min_attempt_ms 6000), so it would never be tried (raise the budget or "
        "lower routes.direct_bedrock.min_attempt_ms)"
    ]


def test_timeout_below_min_attempt_is_refused():
    routes = {**ROUTES, "mcp": {**ROUTES["mcp"], "timeout_ms": 20, "min_attempt_ms": 50}}
    assert issues({"routes": routes}) == [
        "routes.mcp.timeout_ms: timeout_ms (20) is below min_attempt_ms (50): every attempt "
        "would be cut short (make timeout_ms at least min_attempt_ms)"
    ]


def _rows(**extra: Any) -> dict[str, Any]:
    config = parse_config({"routes": ROUTES})
    rows = {op: row.model_dump(mode="json") for op, row in config.matrix.items()}
    rows["standard"].update(extra)
    return rows


def test_resilience_row_keys_are_checked():
    found = issues({"routes": ROUTES, "matrix": _rows(ttft_timeout_ms=40_000)})
    assert any(
        "matrix.standard" in i and "ttft_timeout_ms (40000) is longer than latency_budget_ms" in i
        for i in found
    ), found
    found = issues({"routes": ROUTES, "matrix": _rows(hedge=True, fallback=None)})
    assert any("hedge needs a fallback route" in i for i in found), found
    found = issues({"routes": ROUTES, "matrix": _rows(hedge_after_fraction=1.5)})
    assert any("matrix.standard.hedge_after_fraction" in i for i in found), found


def test_hedging_defaults_to_critical_and_high_rows_with_a_fallback():
    from hybridroute.routing.matrix import RoutingMatrix

    config = parse_config({"routes": ROUTES, "matrix": _rows(hedge=True)})
    hedged = {op for op, rule in RoutingMatrix.from_config(config).rules.items() if rule.hedge}
    assert hedged == {"infrastructure", "meta_monitor", "implementation", "standard"}
    assert config.matrix["standard"].stream_idle_timeout_ms == 10_000
    assert config.routes["mcp"].max_in_flight == 256
