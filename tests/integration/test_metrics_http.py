"""GET /metrics over loopback HTTP after a known mix of traffic.

One gateway (module scope) takes a planned mix: JSON answers and streams, answers from the
response cache (turned on for `meta_monitor` alone), fallbacks in a Direct Bedrock outage,
failures (emergency with Bedrock down, standard with both routes down), refusals (an
unsatisfiable and an unknown residency), one request shed by admission control, and requests
refused before they have an operation type (malformed JSON, an unknown operation type, an
invalid field). Every response is checked against the plan as it arrives; the scrape is then
parsed with `prometheus_client`'s own parser and every figure compared exactly with what the
responses said.

What the code counts (api/outcome.py, `RequestReport.event`): a request becomes a
`RequestEvent` — and a `hybridroute_requests_total` sample — once the gateway has resolved its
rule (`Gateway.prepare`); a body that is not JSON, a field that fails validation, or an
operation type the matrix does not know is answered (400/422) and not counted.
"""

from __future__ import annotations

import json
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

import httpx2 as httpx
import pytest
from prometheus_client import CONTENT_TYPE_LATEST
from prometheus_client.metrics_core import Metric
from prometheus_client.parser import text_string_to_metric_families

from hybridroute import __version__
from hybridroute.app import create_app
from hybridroute.config.load import parse_config
from hybridroute.serving import ThreadedServer
from tests.loopback import (
    GatewayFactory,
    RunningGateway,
    Simulator,
    gateway_config_data,
    wait_for,
)

OPERATION_TYPES = (
    "emergency",
    "infrastructure",
    "meta_monitor",
    "implementation",
    "kiro_communication",
    "standard",
    "background",
)
CACHED_OPERATION = "meta_monitor"  # temperature 0.3: cacheable; every other TTL is 0


# -- talking to the gateway ------------------------------------------------------------------


@dataclass(frozen=True)
class Sent:
    """One request as its caller saw the answer."""

    operation_type: str
    stream: bool
    status: int
    route: str  # x-hybridroute-route
    cache: str | None  # x-hybridroute-cache
    input_tokens: int
    output_tokens: int
    cost: Decimal  # x-hybridroute-cost, or the stream's final `hybridroute.cost`
    code: str | None  # the error code
    elapsed_s: float
    attempts: str | None = None  # x-hybridroute-attempts (when there was more than one)

    @property
    def first_tried(self) -> str:
        """The first route the request was sent to (skipped routes were not tried)."""
        if self.attempts is None:
            return self.route
        tried = [a.split(":") for a in self.attempts.split(",")]
        return next(route for route, outcome in tried if outcome != "skipped")


def _sse(text: str) -> list[dict[str, Any]]:
    chunks = []
    for block in text.split("\n\n"):
        if block.startswith("data: ") and block != "data: [DONE]":
            chunks.append(json.loads(block.removeprefix("data: ")))
    return chunks


def chat(
    gateway: RunningGateway,
    operation_type: str,
    content: str = "Which disk is filling up on the build host?",
    *,
    stream: bool = False,
    headers: dict[str, str] | None = None,
    body: dict[str, Any] | None = None,
    raw: bytes | None = None,
) -> Sent:
    """POST one chat request (a stream asks for its usage) and read what came back."""
    sent_headers = {"X-Operation-Type": operation_type, **(headers or {})}
    payload: dict[str, Any] = {
        "model": "default",
        "messages": [{"role": "user", "content": content}],
    }
    if stream:
        payload.update(stream=True, stream_options={"include_usage": True})
    payload.update(body or {})
    started = time.monotonic()
    if raw is not None:
        sent_headers["content-type"] = "application/json"
        response = httpx.post(
            f"{gateway.url}/v1/chat/completions", content=raw, headers=sent_headers, timeout=30
        )
    else:
        response = httpx.post(
            f"{gateway.url}/v1/chat/completions", json=payload, headers=sent_headers, timeout=30
        )
    elapsed = time.monotonic() - started
    usage: dict[str, int] = {}
    cost = Decimal(0)
    code = None
    if response.status_code != 200:
        code = response.json()["error"]["code"]
    elif stream:
        chunks = _sse(response.text)
        assert not any("error" in c for c in chunks), response.text
        finals = [c["hybridroute"] for c in chunks if c.get("choices") and "hybridroute" in c]
        assert len(finals) == 1, response.text
        cost = Decimal(finals[0]["cost"])
        (usage,) = [c["usage"] for c in chunks if "usage" in c]
    else:
        usage = response.json()["usage"]
        cost = Decimal(response.headers["x-hybridroute-cost"])
    return Sent(
        operation_type=operation_type,
        stream=stream,
        status=response.status_code,
        route=response.headers.get("x-hybridroute-route", "none"),
        cache=response.headers.get("x-hybridroute-cache"),
        input_tokens=usage.get("prompt_tokens", 0),
        output_tokens=usage.get("completion_tokens", 0),
        cost=cost,
        code=code,
        elapsed_s=elapsed,
        attempts=response.headers.get("x-hybridroute-attempts"),
    )


def expect(sent: Sent, status: int, route: str, cache: str | None, code: str | None = None) -> Sent:
    """Check one answer against the plan (so a wrong mix fails here, not in the metrics)."""
    got = (sent.status, sent.route, sent.cache, sent.code)
    assert got == (status, route, cache, code), f"{sent.operation_type}: {sent}"
    return sent


# -- reading /metrics ------------------------------------------------------------------------


Labels = tuple[tuple[str, str], ...]


def scrape(url: str) -> tuple[httpx.Response, dict[str, Metric]]:
    response = httpx.get(f"{url}/metrics", timeout=10)
    assert response.status_code == 200, response.text
    families = {f.name: f for f in text_string_to_metric_families(response.text)}
    return response, families


def samples(
    families: dict[str, Metric], family: str, suffix: str = "_total", *keys: str
) -> dict[tuple[str, ...], float]:
    """`family`'s samples named family+suffix, keyed by the values of `keys` (summed)."""
    found: dict[tuple[str, ...], float] = {}
    for sample in families[family].samples:
        if sample.name == family + suffix:
            key = tuple(sample.labels[k] for k in keys)
            found[key] = found.get(key, 0.0) + sample.value
    return found


def total(families: dict[str, Metric], family: str, suffix: str = "_total") -> float:
    return sum(s.value for s in families[family].samples if s.name == family + suffix)


# -- the mix ---------------------------------------------------------------------------------


def configure(data: dict[str, Any]) -> None:
    """The mix's gateway: deterministic routing (no hedging), the cache on for one operation
    type, a region set no route is in, a breaker that stays open, a Bedrock route that takes one
    attempt at a time and queues none (so a second concurrent emergency is shed)."""
    data["flags"] = {"ENABLE_PERFORMANCE_OPTIMIZATION": False}
    data["cache"] = {
        "enabled": True,
        "ttl_s": {op: 0 for op in OPERATION_TYPES if op != CACHED_OPERATION},
    }
    data["residency"] = {"region_sets": {"eu": ["eu-central-1"], "us": ["us-east-1"]}}
    data["breaker"] = {"open_s": 60, "max_open_s": 120}
    data["routes"]["direct_bedrock"].update(max_in_flight=1, max_queue=0)


def drive(gateway: RunningGateway, bedrock: Simulator, mcp: Simulator) -> tuple[list[Sent], int]:
    """The planned mix: (the answers of counted requests, how many were refused uncounted)."""
    bedrock_ok, mcp_ok = "direct_bedrock", "mcp"
    sent = []
    # Healthy: JSON and streams on both routes.
    for _ in range(2):
        sent.append(expect(chat(gateway, "emergency"), 200, bedrock_ok, "off"))
        sent.append(expect(chat(gateway, "standard"), 200, mcp_ok, "off"))
        sent.append(expect(chat(gateway, "background", stream=True), 200, mcp_ok, "off"))
    sent.append(expect(chat(gateway, "implementation", stream=True), 200, bedrock_ok, "off"))
    # The cache: a miss and its hits, JSON and streamed (one key for both).
    op = CACHED_OPERATION
    sent.append(expect(chat(gateway, op, "q1"), 200, bedrock_ok, "miss"))
    sent.append(expect(chat(gateway, op, "q1"), 200, bedrock_ok, "hit"))
    sent.append(expect(chat(gateway, op, "q1", stream=True), 200, bedrock_ok, "hit"))
    sent.append(expect(chat(gateway, op, "q2", stream=True), 200, bedrock_ok, "miss"))
    sent.append(expect(chat(gateway, op, "q2"), 200, bedrock_ok, "hit"))
    # Refused before an operation type is known: not counted.
    uncounted = [
        chat(gateway, "nonsense"),
        chat(gateway, "standard", raw=b'{"model": "default", "messages": ['),
        chat(gateway, "standard", body={"n": 2}),
    ]
    assert [(s.status, s.code) for s in uncounted] == [
        (422, "unknown_operation_type"),
        (400, "invalid_json"),
        (400, "invalid_request"),
    ]
    # Refused by the policy: counted, as refused.
    us, mars = {"X-Data-Residency": "us"}, {"X-Data-Residency": "mars"}
    sent.append(
        expect(chat(gateway, "standard", headers=us), 422, "none", None, "residency_unsatisfiable")
    )
    sent.append(
        expect(chat(gateway, "standard", headers=mars), 400, "none", None, "invalid_request")
    )
    # Shed: one emergency holds Bedrock's only slot, a second finds no room.
    bedrock.set(latency_ms=400)
    slow: list[Sent] = []
    holder = threading.Thread(target=lambda: slow.append(chat(gateway, "emergency")))
    holder.start()
    admission = gateway.runtime.admission["direct_bedrock"]
    wait_for(lambda: admission.in_flight == 1, timeout=10)
    sent.append(expect(chat(gateway, "emergency"), 429, "none", None, "overloaded"))
    holder.join(timeout=30)
    sent.append(expect(slow[0], 200, bedrock_ok, "off"))
    bedrock.set(latency_ms=0)
    # Bedrock down: fallback-eligible work moves to MCP; emergency (no fallback) fails.
    bedrock.set(outage=True)
    for _ in range(5):
        sent.append(expect(chat(gateway, "infrastructure"), 200, mcp_ok, "off"))
    sent.append(expect(chat(gateway, "infrastructure", stream=True), 200, mcp_ok, "off"))
    for _ in range(2):
        sent.append(expect(chat(gateway, "emergency"), 503, "none", None, "all_routes_failed"))
    # Both down: nothing can serve standard work.
    mcp.set(outage=True)
    sent.append(expect(chat(gateway, "standard"), 503, "none", None, "all_routes_failed"))
    sent.append(
        expect(chat(gateway, "standard", stream=True), 503, "none", None, "all_routes_failed")
    )
    return sent, len(uncounted)


# What the mix must count, label set by label set: (operation_type, route, outcome, cache).
EXPECTED_REQUESTS = {
    ("emergency", "direct_bedrock", "served", "off"): 3,
    ("standard", "mcp", "served", "off"): 2,
    ("background", "mcp", "served", "off"): 2,
    ("implementation", "direct_bedrock", "served", "off"): 1,
    ("meta_monitor", "direct_bedrock", "served", "miss"): 2,
    ("meta_monitor", "direct_bedrock", "cached", "hit"): 3,
    ("standard", "none", "refused", "off"): 2,
    ("emergency", "none", "shed", "off"): 1,
    ("infrastructure", "mcp", "served", "off"): 6,
    ("emergency", "none", "failed", "off"): 2,
    ("standard", "none", "failed", "off"): 2,
}


@dataclass
class Mix:
    gateway: RunningGateway
    sent: list[Sent]
    uncounted: int

    def generated(self) -> list[Sent]:
        """Answers generated by a route (not from the cache)."""
        return [s for s in self.sent if s.status == 200 and s.cache != "hit"]

    def scrape(self) -> tuple[httpx.Response, dict[str, Metric]]:
        return scrape(self.gateway.url)


@pytest.fixture(scope="module")
def mix(bedrock_sim: Simulator, mcp_sim: Simulator) -> Iterator[Mix]:
    for sim in (bedrock_sim, mcp_sim):
        sim.knobs.reset()
        sim.stats.clear()
    data = gateway_config_data(bedrock_sim, mcp_sim)
    configure(data)
    app = create_app(parse_config(data))
    with ThreadedServer(app, name="gateway") as server:
        gateway = RunningGateway(server.url, app)
        gateway.wait_ready()
        try:
            sent, uncounted = drive(gateway, bedrock_sim, mcp_sim)
        finally:
            bedrock_sim.knobs.reset()
            mcp_sim.knobs.reset()
        # A request is counted just after its answer is sent: wait for the last one.
        wait_for(lambda: total(scrape(gateway.url)[1], "hybridroute_requests") >= len(sent), 10)
        yield Mix(gateway, sent, uncounted)


# -- the exposition --------------------------------------------------------------------------


def test_metrics_is_the_prometheus_text_format_with_help_and_type_for_every_metric(mix: Mix):
    response, families = mix.scrape()
    assert response.headers["content-type"] == CONTENT_TYPE_LATEST
    assert response.headers["content-type"].startswith("text/plain; version=")
    lines = response.text.splitlines()
    helped = {line.split()[2] for line in lines if line.startswith("# HELP ")}
    typed = {line.split()[2]: line.split()[3] for line in lines if line.startswith("# TYPE ")}
    exported = {
        "hybridroute_requests": "counter",
        "gen_ai_client_operation_duration_seconds": "histogram",
        "gen_ai_server_time_to_first_token_seconds": "histogram",
        "gen_ai_client_token_usage": "histogram",
        "hybridroute_tokens": "counter",
        "hybridroute_cost": "counter",
        "hybridroute_cache_lookups": "counter",
        "hybridroute_fallbacks": "counter",
        "hybridroute_hedged_requests": "counter",
        "hybridroute_shed": "counter",
        "hybridroute_errors": "counter",
        "hybridroute_breaker_state": "gauge",
        "hybridroute_route_in_flight": "gauge",
        "hybridroute_route_queue_depth": "gauge",
        "hybridroute_budget_utilisation_ratio": "gauge",
        "hybridroute_alerts_firing": "gauge",
        "hybridroute_health_score": "gauge",
        "hybridroute_build_info": "gauge",
    }
    # The parser names a counter without its _total; the text format adds a `<name>_created`
    # gauge per counter and histogram that has samples (when each label set first appeared).
    declared = {n: f.type for n, f in families.items() if not n.endswith("_created")}
    assert declared == exported
    for name in families:
        if name.endswith("_created"):
            assert families[name].type == "gauge"
            assert exported[name.removesuffix("_created")] in ("counter", "histogram")
    # Every metric has its HELP and TYPE lines, and every sample line belongs to one.
    for name, kind in exported.items():
        exposed = f"{name}_total" if kind == "counter" else name
        assert typed.get(exposed) == kind, name
        assert exposed in helped, name
    assert helped == set(typed)
    histogram_parts = ("_bucket", "_count", "_sum")
    for line in lines:
        if line and not line.startswith("#"):
            name = line.split("{")[0].split(" ")[0]
            if name not in typed:
                name = next(name.removesuffix(p) for p in histogram_parts if name.endswith(p))
                assert typed[name] == "histogram", line
            assert name in helped, line
    for name, family in families.items():
        assert family.documentation, f"{name} has an empty HELP text"


# -- per request -----------------------------------------------------------------------------


def test_requests_total_counts_every_request_with_an_operation_type_label_set_by_label(mix: Mix):
    _, families = mix.scrape()
    counted = samples(
        families, "hybridroute_requests", "_total", *("operation_type", "route"), "outcome", "cache"
    )
    assert counted == {k: float(n) for k, n in EXPECTED_REQUESTS.items()}
    assert total(families, "hybridroute_requests") == len(mix.sent) == 26
    # Sent 29; the 3 refused before an operation type was known are in no metric at all.
    assert mix.uncounted == 3
    assert "nonsense" not in {
        s.labels.get("operation_type") for f in families.values() for s in f.samples
    }


def test_the_duration_histogram_has_one_observation_per_request(mix: Mix):
    _, families = mix.scrape()
    name = "gen_ai_client_operation_duration_seconds"
    keys = ("route", "operation_type", "outcome", "gen_ai_system", "gen_ai_operation_name")
    counts = samples(families, name, "_count", *keys)
    system = {"direct_bedrock": "aws.bedrock", "mcp": "mcp", "none": "none"}
    expected: Counter[tuple[str, ...]] = Counter()
    for (op, route, outcome, _), n in EXPECTED_REQUESTS.items():
        expected[(route, op, outcome, system[route], "chat")] += n
    assert counts == {k: float(n) for k, n in expected.items()}
    assert total(families, name, "_count") == len(mix.sent)
    # +Inf bucket = count, buckets never decrease; the gateway's time is within the client's.
    for key, count in counts.items():
        buckets = [
            (float(s.labels["le"]), s.value)
            for s in families[name].samples
            if s.name == name + "_bucket" and tuple(s.labels[k] for k in keys) == key
        ]
        assert buckets[-1] == (float("inf"), count)
        assert [v for _, v in buckets] == sorted(v for _, v in buckets)
    assert 0 < total(families, name, "_sum") <= sum(s.elapsed_s for s in mix.sent)


def test_time_to_first_token_is_observed_for_streams_a_route_answered(mix: Mix):
    _, families = mix.scrape()
    counts = samples(
        families, "gen_ai_server_time_to_first_token_seconds", "_count", "route", "operation_type"
    )
    streamed = Counter(
        (s.route, s.operation_type) for s in mix.generated() if s.stream
    )  # a stream replayed from the cache has no first token to wait for
    assert counts == {k: float(n) for k, n in streamed.items()}
    assert sum(streamed.values()) == 5


def test_token_counters_equal_the_usage_of_the_answers_routes_generated(mix: Mix):
    _, families = mix.scrape()
    tokens = samples(families, "hybridroute_tokens", "_total", "route", "token_type")
    expected: Counter[tuple[str, str]] = Counter()
    for s in mix.generated():
        expected[(s.route, "input")] += s.input_tokens
        expected[(s.route, "output")] += s.output_tokens
    assert tokens == {k: float(n) for k, n in expected.items()}
    # Cache hits report the stored usage to the caller, but cost nothing and charge no tokens.
    hits = [s for s in mix.sent if s.cache == "hit"]
    assert len(hits) == 3
    assert all(s.input_tokens > 0 for s in hits)
    histogram = "gen_ai_client_token_usage"
    sums = samples(families, histogram, "_sum", "route", "gen_ai_token_type")
    counts = samples(families, histogram, "_count", "route", "gen_ai_token_type")
    served = Counter(s.route for s in mix.generated())
    assert sums == {k: float(n) for k, n in expected.items()}
    assert counts == {
        (route, kind): float(n) for route, n in served.items() for kind in ("input", "output")
    }


def test_the_cost_counter_equals_the_cost_the_responses_reported(mix: Mix):
    _, families = mix.scrape()
    cost = samples(
        families, "hybridroute_cost", "_total", "route", "operation_type", "tenant", "currency"
    )
    expected: dict[tuple[str, ...], Decimal] = {}
    for s in mix.sent:
        if s.cost:
            key = (s.route, s.operation_type, "default", "USD")
            expected[key] = expected.get(key, Decimal(0)) + s.cost
    assert set(cost) == set(expected)
    for labels, value in expected.items():
        assert cost[labels] == pytest.approx(float(value), abs=1e-9), labels
    reported = sum((s.cost for s in mix.sent), Decimal(0))
    assert reported > 0
    assert total(families, "hybridroute_cost") == pytest.approx(float(reported), abs=1e-9)


def test_cache_lookup_counter_has_one_result_per_counted_request(mix: Mix):
    _, families = mix.scrape()
    lookups = samples(families, "hybridroute_cache_lookups", "_total", "result")
    assert lookups == {("off",): 21.0, ("miss",): 2.0, ("hit",): 3.0}


def test_fallback_shed_hedge_and_error_counters(mix: Mix):
    _, families = mix.scrape()
    assert samples(families, "hybridroute_fallbacks", "_total", "operation_type", "route") == {
        ("infrastructure", "mcp"): 6.0
    }
    assert samples(families, "hybridroute_shed", "_total", "operation_type", "priority") == {
        ("emergency", "critical"): 1.0
    }
    assert samples(families, "hybridroute_hedged_requests", "_total") == {}  # hedging is off
    assert samples(families, "hybridroute_errors", "_total", "operation_type", "code") == {
        ("standard", "residency_unsatisfiable"): 1.0,
        ("standard", "invalid_request"): 1.0,
        ("emergency", "overloaded"): 1.0,
        ("emergency", "all_routes_failed"): 2.0,
        ("standard", "all_routes_failed"): 2.0,
    }


# -- state -----------------------------------------------------------------------------------


def _gauge(families: dict[str, Metric], name: str, *keys: str) -> dict[tuple[str, ...], float]:
    return samples(families, name, "", *keys)


def test_state_gauges_are_sampled_within_a_second(mix: Mix):
    reported = sum((s.cost for s in mix.sent), Decimal(0))

    def sampled() -> bool:
        _, families = mix.scrape()
        budgets = _gauge(families, "hybridroute_budget_utilisation_ratio", "budget", "period")
        return _gauge(families, "hybridroute_breaker_state", "route") == {
            ("direct_bedrock",): 2.0,
            ("mcp",): 0.0,
        } and budgets.get(("global", "daily")) == pytest.approx(float(reported / 10), abs=1e-12)

    wait_for(sampled, timeout=5)  # the gauges are set every second
    _, families = mix.scrape()
    routes = {("direct_bedrock",): 0.0, ("mcp",): 0.0}
    assert _gauge(families, "hybridroute_route_in_flight", "route") == routes
    assert _gauge(families, "hybridroute_route_queue_depth", "route") == routes
    # The embedded config's global budget: 10.00 a day, 200.00 a month; spend = what was charged.
    budgets = _gauge(families, "hybridroute_budget_utilisation_ratio", "budget", "period")
    assert set(budgets) == {("global", "daily"), ("global", "monthly")}
    assert budgets[("global", "daily")] == pytest.approx(float(reported / 10), abs=1e-12)
    assert budgets[("global", "monthly")] == pytest.approx(float(reported / 200), abs=1e-12)
    alerts = _gauge(families, "hybridroute_alerts_firing", "rule", "severity")
    rules = mix.gateway.runtime.alerts.rules
    assert set(alerts) == {(rid, rule.severity) for rid, rule in rules.items()}
    assert set(alerts.values()) <= {0.0, 1.0}
    (score,) = _gauge(families, "hybridroute_health_score").values()
    assert 0 <= score <= 100
    assert _gauge(families, "hybridroute_build_info", "version") == {(__version__,): 1.0}


# -- outcomes the mix leaves out -------------------------------------------------------------


def _stream_text(gateway: RunningGateway, operation_type: str) -> str:
    response = httpx.post(
        f"{gateway.url}/v1/chat/completions",
        json={"model": "default", "messages": [{"role": "user", "content": "x"}], "stream": True},
        headers={"X-Operation-Type": operation_type},
        timeout=30,
    )
    assert response.status_code == 200
    return response.text


def _abandon_stream(gateway: RunningGateway, operation_type: str) -> None:
    """Open a stream, read its first content, and hang up."""
    with (
        httpx.Client(timeout=30) as client,
        client.stream(
            "POST",
            f"{gateway.url}/v1/chat/completions",
            json={
                "model": "default",
                "messages": [{"role": "user", "content": "x"}],
                "stream": True,
            },
            headers={"X-Operation-Type": operation_type},
        ) as response,
    ):
        for line in response.iter_lines():
            if line.startswith("data: ") and '"content":"' in line and '"content":""' not in line:
                return
    raise AssertionError("the stream ended before its first content")


def _counted(gateway: RunningGateway) -> Callable[[], dict[tuple[str, ...], float]]:
    def read() -> dict[tuple[str, ...], float]:
        _, families = scrape(gateway.url)
        keys = ("operation_type", "route", "outcome", "cache")
        return samples(families, "hybridroute_requests", "_total", *keys)

    return read


def test_a_cut_stream_counts_as_interrupted_and_a_hung_up_one_as_abandoned(
    gateway: RunningGateway, bedrock_sim: Simulator
):
    bedrock_sim.set(stream_chunks=4, stream_fail_after=2, error_kind="unavailable")
    text = _stream_text(gateway, "emergency")
    assert '"code":"stream_interrupted"' in text
    bedrock_sim.set(stream_fail_after=None, stream_chunks=6, stream_chunk_delay_ms=300)
    _abandon_stream(gateway, "emergency")
    read = _counted(gateway)
    wait_for(lambda: sum(read().values()) == 2, timeout=10)
    assert read() == {
        ("emergency", "direct_bedrock", "interrupted", "off"): 1.0,
        ("emergency", "direct_bedrock", "abandoned", "off"): 1.0,
    }
    _, families = scrape(gateway.url)
    assert samples(families, "hybridroute_errors", "_total", "operation_type", "code") == {
        ("emergency", "stream_interrupted"): 1.0
    }
    ttft = samples(families, "gen_ai_server_time_to_first_token_seconds", "_count", "route")
    assert ttft == {("direct_bedrock",): 2.0}  # both streams had sent content


def _ledger_total(gateway: RunningGateway) -> dict[str, Any]:
    status, body = gateway.get("/admin/cost")
    assert status == 200
    spent: dict[str, Any] = body["spend"]["total"]
    return spent


def test_the_cost_counter_includes_what_failed_and_abandoned_requests_were_charged(
    start_gateway: GatewayFactory, bedrock_sim: Simulator
):
    """An attempt that timed out or was cut short is charged (its input); the request's cost
    counter must say so, like the ledger and the budget do."""
    gateway = start_gateway()
    bedrock_sim.set(latency_ms=1500)
    # A deadline the only route cannot meet: 504, its timed-out attempt charged.
    failed = chat(gateway, "emergency", headers={"X-Latency-Budget-Ms": "300"})
    assert (failed.status, failed.code) == (504, "all_routes_failed")
    # A caller that hangs up while Bedrock works: abandoned, the running attempt charged.
    with pytest.raises(httpx.ReadTimeout):
        httpx.post(
            f"{gateway.url}/v1/chat/completions",
            json={"model": "default", "messages": [{"role": "user", "content": "y"}]},
            headers={"X-Operation-Type": "emergency"},
            timeout=0.3,
        )
    read = _counted(gateway)
    wait_for(lambda: sum(read().values()) == 2, timeout=10)
    wait_for(lambda: _ledger_total(gateway)["charges"] == 2, timeout=10)
    charged = Decimal(_ledger_total(gateway)["cost"])
    assert charged > 0
    _, families = scrape(gateway.url)
    assert total(families, "hybridroute_cost") == pytest.approx(float(charged), abs=1e-9)


def test_the_token_counter_includes_the_tokens_a_cut_stream_was_charged(
    gateway: RunningGateway, bedrock_sim: Simulator
):
    """A stream cut after its first content is charged its input and what was relayed;
    `hybridroute_tokens_total` is documented as the tokens charged."""
    bedrock_sim.set(stream_chunks=4, stream_fail_after=2, error_kind="unavailable")
    assert '"code":"stream_interrupted"' in _stream_text(gateway, "emergency")
    wait_for(lambda: _ledger_total(gateway)["charges"] == 1, timeout=10)
    ledger = _ledger_total(gateway)
    assert ledger["input_tokens"] > 0
    assert ledger["output_tokens"] > 0
    _, families = scrape(gateway.url)
    tokens = samples(families, "hybridroute_tokens", "_total", "route", "token_type")
    assert tokens == {
        ("direct_bedrock", "input"): float(ledger["input_tokens"]),
        ("direct_bedrock", "output"): float(ledger["output_tokens"]),
    }
