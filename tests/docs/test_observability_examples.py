"""docs/admin-metrics-examples.md stays true: every documented body has the live shape.

The examples in that document were captured from a gateway on the embedded (demo) config and
the two simulators after `drive_mix` below — the same traffic this test sends. For each
documented endpoint, the JSON block is parsed and compared with the live body: the same keys,
recursively (values may differ; a list is compared by its first element's keys, when both
have one). Keys that are data (routes, operation types, error codes, alert rules) match too,
because the traffic is the same.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import httpx2 as httpx

from tests.loopback import GatewayFactory, RunningGateway, Simulator, wait_for

DOC = Path(__file__).parents[2] / "docs" / "admin-metrics-examples.md"
DOCUMENTED_PORT = "http://127.0.0.1:8080"
ENDPOINTS = (
    "/admin/metrics/routing-distribution",
    "/admin/metrics/provider-latencies",
    "/admin/metrics/cache-performance",
    "/admin/metrics/error-breakdown",
    "/admin/slo",
    "/admin/health/circuit-breakers",
    "/admin/alerts",
)
# With Bedrock down at capture time, and the mix below, these alerts fire.
FIRING = ["bedrock_connection_failure", "fallback_rate_warning", "routing_efficiency_info"]


def configure(data: dict[str, Any]) -> None:
    """The embedded config as the demo runs it (cache on), with what a short capture needs:
    SLO figures judged from 5 requests, alert rules evaluated every second, a breaker that
    stays open for a minute, hedging off (so the same traffic gives the same routes), and a
    `us` region set that no route is in."""
    data["cache"] = {"enabled": True}
    data["slo"] = {"min_requests": 5}
    data["alerts"] = {"evaluate_every_s": 1}
    data["breaker"] = {"open_s": 60, "max_open_s": 120}
    data["flags"] = {"ENABLE_PERFORMANCE_OPTIMIZATION": False}
    data["residency"] = {"region_sets": {"eu": ["eu-central-1"], "us": ["us-east-1"]}}


def _ask(
    gateway: RunningGateway,
    operation_type: str,
    question: str,
    *,
    stream: bool = False,
    headers: dict[str, str] | None = None,
) -> tuple[int, str | None]:
    body: dict[str, Any] = {"model": "default", "messages": [{"role": "user", "content": question}]}
    if stream:
        body["stream"] = True
    response = httpx.post(
        f"{gateway.url}/v1/chat/completions",
        json=body,
        headers={"X-Operation-Type": operation_type, **(headers or {})},
        timeout=30,
    )
    response.read()
    return response.status_code, response.headers.get("x-hybridroute-cache")


def drive_mix(gateway: RunningGateway, bedrock: Simulator) -> list[tuple[int, str | None]]:
    """The documented traffic: 36 requests, then Bedrock left down."""
    answers = []
    for i in range(4):
        answers.append(_ask(gateway, "emergency", f"Is database shard {i} down?"))
    for i in range(3):
        answers.append(_ask(gateway, "implementation", f"Write a retry loop, variant {i}"))
    for i in range(2):  # asked again: answered from the cache
        answers.append(_ask(gateway, "implementation", f"Write a retry loop, variant {i}"))
    for i in range(2):
        answers.append(_ask(gateway, "meta_monitor", f"Summarise alert {i}", stream=True))
    answers.append(_ask(gateway, "meta_monitor", "Summarise alert 0", stream=True))
    for i in range(6):
        answers.append(_ask(gateway, "standard", f"Explain error code {i}"))
    for i in range(2):
        answers.append(_ask(gateway, "standard", f"Draft release note {i}", stream=True))
    for i in range(3):
        answers.append(_ask(gateway, "background", f"Tidy log batch {i}", stream=True))
    for i in range(2):
        answers.append(_ask(gateway, "kiro_communication", f"Reply to ticket {i}"))
    answers.append(_ask(gateway, "kiro_communication", "Reply to ticket 0"))
    us = {"X-Data-Residency": "us"}
    answers.append(_ask(gateway, "standard", "Where is this processed?", headers=us))
    bedrock.set(outage=True)
    for i in range(8):
        answers.append(_ask(gateway, "infrastructure", f"Why is node {i} NotReady?"))
    answers.append(_ask(gateway, "emergency", "Is the primary database down?"))
    return answers


def settle(gateway: RunningGateway, requests: int) -> None:
    """Wait until the last request is counted and the alert rules have seen the traffic."""
    wait_for(
        lambda: gateway.get("/admin/metrics/error-breakdown")[1]["requests"] == requests,
        timeout=10,
    )

    def firing() -> bool:
        return [a["rule"] for a in gateway.get("/admin/alerts")[1]["active"]] == FIRING

    wait_for(firing, timeout=15)


def documented() -> dict[str, Any]:
    """Each documented request path and the JSON body shown under it, in document order."""
    found = {}
    for section in DOC.read_text().split("\n## ")[1:]:
        request = re.search(r"^```sh\ncurl -s (\S+)\n```$", section, flags=re.MULTILINE)
        body = re.search(r"^```json\n(.*?)^```$", section, flags=re.MULTILINE | re.DOTALL)
        assert request is not None, section[:80]
        assert body is not None, section[:80]
        url = request.group(1)
        assert url.startswith(DOCUMENTED_PORT), url
        found[url.removeprefix(DOCUMENTED_PORT)] = json.loads(body.group(1))
    return found


def shape_differences(doc: Any, live: Any, where: str = "$") -> list[str]:
    """Where the documented and the live value differ in keys (recursively)."""
    if isinstance(doc, dict) and isinstance(live, dict):
        problems = []
        if set(doc) != set(live):
            missing, extra = sorted(set(doc) - set(live)), sorted(set(live) - set(doc))
            problems.append(f"{where}: documented only {missing}, live only {extra}")
        for key in doc.keys() & live.keys():
            problems += shape_differences(doc[key], live[key], f"{where}.{key}")
        return problems
    if isinstance(doc, list) and isinstance(live, list) and doc and live:
        return shape_differences(doc[0], live[0], f"{where}[0]")
    return []


def test_the_document_shows_every_admin_metrics_endpoint_once_in_order():
    assert list(documented()) == list(ENDPOINTS)


def test_the_captured_mix_is_the_one_the_document_states():
    text = DOC.read_text()
    assert "**Traffic: 36 requests**" in text
    assert "captured from a run" in text


def test_documented_bodies_have_the_keys_of_live_ones(
    start_gateway: GatewayFactory, bedrock_sim: Simulator
):
    gateway = start_gateway(configure)
    answers = drive_mix(gateway, bedrock_sim)
    assert len(answers) == 36
    assert [a for a in answers if a[0] != 200] == [(422, None), (503, None)]
    assert sum(1 for _, cache in answers if cache == "hit") == 4
    settle(gateway, len(answers))
    problems = []
    for path, body in documented().items():
        status, live = gateway.get(path)
        assert status == 200, live
        problems += [f"{path} {p}" for p in shape_differences(body, live)]
    assert problems == []


def test_shape_differences_finds_a_missing_key_however_deep():
    doc = {"a": 1, "b": {"c": [{"d": 1, "e": 2}]}}
    live = {"a": 2, "b": {"c": [{"d": 5}, {"x": 1}]}}
    assert shape_differences(doc, live) == ["$.b.c[0]: documented only ['e'], live only []"]
    assert shape_differences(doc, {"a": 0, "b": {"c": []}}) == []  # an empty list: no element
    assert shape_differences({"a": None}, {"a": {"z": 1}}) == []  # values may differ
