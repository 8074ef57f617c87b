"""Prometheus metrics: every metric the gateway exports, declared once, fed from request events.

`GatewayMetrics.observe(event)` counts one finished request (O(1): a handful of counter and
histogram updates on cached label sets); `sample(...)` sets the gauges that describe state
(breakers, in-flight attempts, queues, budgets, alerts, the health score), and the runtime calls
it every second; `render()` is the `/metrics` body in the Prometheus text format.

Names follow the OpenTelemetry GenAI semantic conventions where one exists
(`gen_ai_client_operation_duration_seconds`, `gen_ai_client_token_usage`,
`gen_ai_server_time_to_first_token_seconds`, with `gen_ai_operation_name` and `gen_ai_system`
labels); the rest are `hybridroute_*`.

Several worker processes: when `PROMETHEUS_MULTIPROC_DIR` is set before the process starts
(`hybridroute serve --workers N` does it), every worker writes its values to files in that
directory and a scrape of any worker merges them all: counters and histograms are summed,
state gauges take the live workers' maximum (in flight and queue depth: their sum), so a
counter never jumps when the next scrape lands on another worker.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Iterable, Mapping
from typing import Any

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)
from prometheus_client.multiprocess import MultiProcessCollector

from hybridroute.observability.events import Outcome, RequestEvent
from hybridroute.types import RouteId, RouteKind

__all__ = ["MULTIPROC_ENV", "GatewayMetrics"]

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"

_LATENCY_BUCKETS = (
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 1.5, 2.0, 3.0, 5.0, 10.0, 30.0, 60.0,
)  # fmt: skip
_TOKEN_BUCKETS = (1, 4, 16, 64, 256, 1024, 4096, 16384, 65536, 262144)
_GEN_AI_SYSTEM = {RouteKind.BEDROCK: "aws.bedrock", RouteKind.MCP: "mcp"}
_BREAKER_VALUE = {"closed": 0.0, "half_open": 1.0, "open": 2.0}
_RENDER_REUSE_S = 1.0


class GatewayMetrics:
    """The gateway's Prometheus metrics, in a registry of their own."""

    def __init__(
        self,
        route_kinds: Mapping[RouteId, RouteKind],
        *,
        multiprocess_dir: str | None = None,
        version: str = "",
    ) -> None:
        self._multiprocess_dir = multiprocess_dir or os.environ.get(MULTIPROC_ENV)
        # In multi-process mode the values live in files; the scrape registry only reads them.
        self._own = CollectorRegistry(auto_describe=True)
        register = None if self._multiprocess_dir else self._own
        self._systems = {r: _GEN_AI_SYSTEM.get(k, str(k)) for r, k in route_kinds.items()}
        self._children: dict[tuple[Any, ...], Any] = {}
        self._rendered: tuple[float, bytes, str] | None = None

        self.requests = Counter(
            "hybridroute_requests",
            "Finished requests by operation type, serving route, outcome and cache result.",
            ["operation_type", "route", "outcome", "cache"],
            registry=register,
        )
        self.duration = Histogram(
            "gen_ai_client_operation_duration_seconds",
            "Time from a request's arrival to its last byte (GenAI semantic conventions).",
            ["gen_ai_operation_name", "gen_ai_system", "route", "operation_type", "outcome"],
            buckets=_LATENCY_BUCKETS,
            registry=register,
        )
        self.ttft = Histogram(
            "gen_ai_server_time_to_first_token_seconds",
            "Time from a streamed request's arrival to its first content.",
            ["gen_ai_operation_name", "gen_ai_system", "route", "operation_type"],
            buckets=_LATENCY_BUCKETS,
            registry=register,
        )
        self.token_usage = Histogram(
            "gen_ai_client_token_usage",
            "Tokens used per request, input and output (GenAI semantic conventions).",
            ["gen_ai_operation_name", "gen_ai_system", "gen_ai_token_type", "route"],
            buckets=_TOKEN_BUCKETS,
            registry=register,
        )
        self.tokens = Counter(
            "hybridroute_tokens",
            "Tokens charged for requests' attempts, by the route that answered (none: no route)"
            " and type (input, output).",
            ["route", "token_type"],
            registry=register,
        )
        self.cost = Counter(
            "hybridroute_cost",
            "Money charged for requests' attempts, however they ended, by the route that answered"
            " (none: no route), operation type, tenant and currency.",
            ["route", "operation_type", "tenant", "currency"],
            registry=register,
        )
        self.cache = Counter(
            "hybridroute_cache_lookups",
            "Response cache outcomes: hit, miss, bypass (the caller's Cache-Control), off.",
            ["result"],
            registry=register,
        )
        self.fallbacks = Counter(
            "hybridroute_fallbacks",
            "Requests served by a route other than their rule's primary.",
            ["operation_type", "route"],
            registry=register,
        )
        self.hedges = Counter(
            "hybridroute_hedged_requests",
            "Requests whose fallback was started alongside a slow primary, by winner.",
            ["operation_type", "route"],
            registry=register,
        )
        self.shed = Counter(
            "hybridroute_shed",
            "Requests shed by admission control (429 overloaded).",
            ["operation_type", "priority"],
            registry=register,
        )
        self.errors = Counter(
            "hybridroute_errors",
            "Requests that ended in an error, by error code.",
            ["operation_type", "code"],
            registry=register,
        )
        self.breaker = Gauge(
            "hybridroute_breaker_state",
            "Circuit breaker state per route: 0 closed, 1 half-open, 2 open.",
            ["route"],
            registry=register,
            multiprocess_mode="livemax",
        )
        self.in_flight = Gauge(
            "hybridroute_route_in_flight",
            "Attempts running on a route now.",
            ["route"],
            registry=register,
            multiprocess_mode="livesum",
        )
        self.queued = Gauge(
            "hybridroute_route_queue_depth",
            "Attempts waiting in a route's priority queue now.",
            ["route"],
            registry=register,
            multiprocess_mode="livesum",
        )
        self.budget = Gauge(
            "hybridroute_budget_utilisation_ratio",
            "Settled spend over the limit, per budget and window period.",
            ["budget", "period"],
            registry=register,
            multiprocess_mode="livemax",
        )
        self.alerts = Gauge(
            "hybridroute_alerts_firing",
            "1 while an alert of the rule is firing (or acknowledged), else 0.",
            ["rule", "severity"],
            registry=register,
            multiprocess_mode="livemax",
        )
        self.health_score = Gauge(
            "hybridroute_health_score",
            "The Hybrid Health Monitor's score, 0-100.",
            registry=register,
            multiprocess_mode="livemin",
        )
        self.info = Gauge(
            "hybridroute_build_info",
            "Always 1; the labels say which build is running.",
            ["version"],
            registry=register,
            multiprocess_mode="livemax",
        )
        self.info.labels(version).set(1)

    @property
    def multiprocess(self) -> bool:
        return self._multiprocess_dir is not None

    # -- per request -----------------------------------------------------------------------------

    def _child(self, metric: Any, *labels: str) -> Any:
        """The metric's child for these labels, cached (labels() is the expensive part)."""
        key = (id(metric), *labels)
        child = self._children.get(key)
        if child is None:
            child = metric.labels(*labels)
            self._children[key] = child
        return child

    def observe(self, event: RequestEvent) -> None:
        """Count one finished request."""
        route = event.route or "none"
        op = event.operation_type
        outcome = event.outcome
        child = self._child
        child(self.requests, op, route, outcome.value, event.cache or "none").inc()
        if event.cache is not None:
            child(self.cache, event.cache).inc()
        system = self._systems.get(route, "none")
        child(self.duration, "chat", system, route, op, outcome.value).observe(event.latency_s)
        if event.ttft_s is not None:
            child(self.ttft, "chat", system, route, op).observe(event.ttft_s)
        if outcome is Outcome.SERVED:
            child(self.token_usage, "chat", system, "input", route).observe(event.input_tokens)
            child(self.token_usage, "chat", system, "output", route).observe(event.output_tokens)
            if event.fallback:
                child(self.fallbacks, op, route).inc()
            if event.hedged:
                child(self.hedges, op, route).inc()
        if event.billed_input_tokens:
            child(self.tokens, route, "input").inc(event.billed_input_tokens)
        if event.billed_output_tokens:
            child(self.tokens, route, "output").inc(event.billed_output_tokens)
        if event.cost:
            child(self.cost, route, op, event.tenant, event.currency).inc(float(event.cost))
        if outcome is Outcome.SHED:
            child(self.shed, op, event.priority).inc()
        if event.error_code is not None:
            child(self.errors, op, event.error_code).inc()

    # -- state -----------------------------------------------------------------------------------

    def sample(
        self,
        *,
        breakers: Mapping[RouteId, str],
        in_flight: Mapping[RouteId, int],
        queued: Mapping[RouteId, int],
        budgets: Iterable[tuple[str, str, float]],
        alerts: Iterable[tuple[str, str, bool]],
        health_score: int | None,
    ) -> None:
        """Set the state gauges (the runtime calls this every second)."""
        child = self._child
        for route, state in breakers.items():
            child(self.breaker, route).set(_BREAKER_VALUE.get(state, 2.0))
        for route, count in in_flight.items():
            child(self.in_flight, route).set(count)
        for route, count in queued.items():
            child(self.queued, route).set(count)
        for budget, period, used in budgets:
            child(self.budget, budget, period).set(used)
        for rule, severity, active in alerts:
            child(self.alerts, rule, severity).set(1.0 if active else 0.0)
        if health_score is not None:
            self.health_score.set(health_score)

    # -- exposition ------------------------------------------------------------------------------

    def render(self) -> tuple[bytes, str]:
        """The `/metrics` body and its content type. With several workers this reads every
        worker's files: call it off the event loop (`render_async`)."""
        if self._multiprocess_dir is None:
            return generate_latest(self._own), CONTENT_TYPE_LATEST
        registry = CollectorRegistry()
        MultiProcessCollector(registry, path=self._multiprocess_dir)  # type: ignore[no-untyped-call]
        return generate_latest(registry), CONTENT_TYPE_LATEST

    async def render_async(self, now: float) -> tuple[bytes, str]:
        """`render()` without holding up requests: in one process it is quick and done in
        place; with several workers the files are read in a thread, and a body is reused for a
        second (scrapers that poll several times a second share it)."""
        if self._multiprocess_dir is None:
            return self.render()
        cached = self._rendered
        if cached is not None and now - cached[0] < _RENDER_REUSE_S:
            return cached[1], cached[2]
        body, content_type = await asyncio.to_thread(self.render)
        self._rendered = (now, body, content_type)
        return body, content_type
