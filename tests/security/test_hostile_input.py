"""Hostile input, generated: whatever bytes, JSON shapes, query strings or headers arrive, the
gateway answers with a 4xx that says what is wrong — never a 5xx, never a hang — on the data
plane and on every admin endpoint that reads a body or a query."""

from __future__ import annotations

import copy
import json
from collections.abc import Iterator
from typing import Any

import httpx2 as httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.loopback import RunningGateway, Simulator, gateway_config_data, serving

BODY_ENDPOINTS = [
    ("POST", "/v1/chat/completions"),
    ("POST", "/admin/feature-flags/bedrock/update"),
    ("PUT", "/admin/config/routing-rules?dry_run=true"),
    ("POST", "/admin/actions"),
    ("POST", "/admin/config/rollback"),
    ("POST", "/admin/compliance/erasure"),
    ("PUT", "/admin/config/slo-thresholds"),
    ("POST", "/admin/alerts/nope/acknowledge"),
    ("POST", "/admin/cache/invalidate"),
]
QUERY_ENDPOINTS = [
    "/admin/audit/export",
    "/admin/metrics/routing-distribution",
    "/admin/metrics/timeline",
    "/admin/slo",
    "/admin/cost",
]

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=40),
    lambda children: (
        st.lists(children, max_size=5) | st.dictionaries(st.text(max_size=12), children, max_size=5)
    ),
    max_leaves=30,
)
# Shapes close to the real ones, with wrong types and values slipped in.
near_misses = st.fixed_dictionaries(
    {},
    optional={
        "model": json_values,
        "messages": json_values | st.lists(st.dictionaries(st.sampled_from(["role", "content"]),
                                                           json_values), max_size=3),
        "stream": json_values,
        "max_tokens": json_values,
        "temperature": json_values,
        "flag": json_values,
        "enabled": json_values,
        "action": st.sampled_from(["maintenance", "route_disable", "breaker_open", "x"]),
        "route": json_values,
        "for_s": json_values,
        "version": json_values,
        "matrix": json_values,
        "subject": json_values,
        "rules": json_values,
        "slo": json_values,
        "p95_latency_ms": json_values,
        "reason": json_values,
    },
)  # fmt: skip
bodies = (
    near_misses.map(lambda v: json.dumps(v).encode())
    | json_values.map(lambda v: json.dumps(v).encode())
    | st.binary(max_size=300)
    | st.integers(1, 2000).map(lambda depth: b"[" * depth + b"]" * depth)
    | st.sampled_from([b'{"a": "\\ud800"}', b"\xff\xfe\x00", b'{"messages": 1e999}', b""])
)
queries = st.dictionaries(
    st.sampled_from(["format", "period", "since", "until", "window", "days", "x"]),
    st.text(max_size=30)
    | st.sampled_from(["../../etc/passwd", "1; DROP TABLE audit_records;--", "' OR 1=1 --",
                       "%00", "1e309", "-1", "NaN"]),
    max_size=4,
)  # fmt: skip


@pytest.fixture(scope="module")
def hostile_gateway(bedrock_sim: Simulator, mcp_sim: Simulator) -> Iterator[RunningGateway]:
    data = copy.deepcopy(gateway_config_data(bedrock_sim, mcp_sim))
    data["admin"] = {"rate_limit_per_minute": 1_000_000}  # loopback callers are admins
    with serving(data) as gateway:
        yield gateway


def _no_server_error(response: httpx.Response, what: str) -> None:
    assert response.status_code < 500, f"{what}: {response.status_code} {response.text[:300]}"
    if response.status_code >= 400:
        error = response.json()["error"]
        assert error["message"], what  # the refusal says why


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(body=bodies, endpoint=st.sampled_from(BODY_ENDPOINTS))
def test_no_body_gets_a_server_error(
    hostile_gateway: RunningGateway, body: bytes, endpoint: tuple[str, str]
) -> None:
    method, path = endpoint
    response = httpx.request(
        method, hostile_gateway.url + path, content=body, timeout=10,
        headers={"content-type": "application/json", "x-operation-type": "background"},
    )  # fmt: skip
    _no_server_error(response, f"{method} {path} {body[:80]!r}")


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(params=queries, path=st.sampled_from(QUERY_ENDPOINTS))
def test_no_query_gets_a_server_error(
    hostile_gateway: RunningGateway, params: dict[str, str], path: str
) -> None:
    response = httpx.get(hostile_gateway.url + path, params=params, timeout=10)
    _no_server_error(response, f"GET {path} {params}")


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    headers=st.dictionaries(
        st.sampled_from(["x-operation-type", "x-data-residency", "x-latency-budget-ms",
                         "cache-control", "x-data-subject", "authorization", "x-api-key"]),
        # (what an HTTP client can send: no leading or trailing blanks)
        st.text(alphabet=st.characters(min_codepoint=32, max_codepoint=126), max_size=60).map(
            str.strip
        ),
        max_size=4,
    )
)  # fmt: skip
def test_no_header_gets_a_server_error(
    hostile_gateway: RunningGateway, headers: dict[str, str]
) -> None:
    body: dict[str, Any] = {"model": "m", "messages": [{"role": "user", "content": "hi"}]}
    response = httpx.post(
        hostile_gateway.url + "/v1/chat/completions", json=body, headers=headers, timeout=30
    )
    _no_server_error(response, f"headers {headers}")
