"""The traffic window as a time series: steps, their ends, and per-step figures counted by hand."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import pytest

from hybridroute.observability.events import Outcome, RequestEvent
from hybridroute.observability.timeline import step_for, timeline
from hybridroute.observability.traffic import TrafficWindow

T0 = 1_800_000_000.0  # a multiple of 3600


def ev(at: float, outcome: Outcome = Outcome.SERVED, **kw: Any) -> RequestEvent:
    fields: dict[str, Any] = {
        "operation_type": "standard",
        "priority": "medium",
        "tenant": "default",
        "status": 200 if outcome is Outcome.SERVED else 503,
        "latency_s": 0.1,
    }
    if outcome is Outcome.SERVED:
        fields.update(route="mcp", primary="mcp", first_route="mcp")
    fields.update(kw)
    return RequestEvent(at=at, outcome=outcome, **fields)


@pytest.mark.parametrize(
    ("window_s", "step_s"), [(30, 10), (600, 10), (601, 60), (3600, 60), (7200, 3600)]
)
def test_the_step_follows_the_window(window_s: float, step_s: float):
    assert step_for(window_s) == step_s


def test_each_step_counts_its_own_requests():
    window = TrafficWindow(started_at=T0)
    window.record(ev(T0 + 1, latency_s=0.2, cost=Decimal("0.01")))
    window.record(ev(T0 + 2, latency_s=0.4, cost=Decimal("0.02")))
    window.record(ev(T0 + 12, Outcome.FAILED, first_route="direct_bedrock", error_code="x"))
    window.record(ev(T0 + 13, route="direct_bedrock", fallback=True, operation_type="emergency"))
    window.record(ev(T0 + 25, Outcome.CACHED, route="mcp", cache="hit", latency_s=0.001))

    body = timeline(window, 30, T0 + 29)
    assert body["step_s"] == 10
    points = body["points"]
    # Whole buckets: the one the window starts in (T0 - 10 to T0) is a step too.
    assert [p["end"] for p in points] == [T0, T0 + 10, T0 + 20, T0 + 30]
    empty, first, second, third = points
    assert empty["requests"] == 0
    assert (first["requests"], first["served"], first["errors"]) == (2, 2, 0)
    assert first["throughput_rps"] == 0.2
    assert first["routes"]["mcp"]["served"] == 2
    assert first["routes"]["mcp"]["cost"] == "0.03"
    assert first["cost"] == "0.03"
    assert 190 <= first["generated"]["p50_ms"] <= 410
    assert first["operations"]["standard"]["requests"] == 2
    assert (second["requests"], second["errors"], second["error_rate"]) == (2, 1, 0.5)
    assert second["fallbacks"] == 1
    assert second["routes"]["direct_bedrock"]["served"] == 1
    assert second["routes"]["direct_bedrock"]["fallbacks"] == 1
    assert third["cache_hits"] == 1
    assert third["cached"]["count"] == 1
    assert third["generated"]["count"] == 0
    assert third["generated"]["p95_ms"] is None
    assert sum(p["requests"] for p in points) == window.totals(30, T0 + 29).requests


def test_an_empty_window_has_empty_steps():
    points = timeline(TrafficWindow(started_at=T0), 600, T0 + 5)["points"]
    assert len(points) == 61
    assert {p["requests"] for p in points} == {0}
    assert {p["error_rate"] for p in points} == {None}
