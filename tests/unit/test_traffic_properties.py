"""Property tests of the traffic window: for random event sequences recorded in random order,
every window's totals equal a brute-force count over the events the documented bucket rule
includes, percentiles are within the histogram's precision, and every rate is in [0, 1].
"""

from __future__ import annotations

import math
import random
from collections import Counter
from decimal import Decimal
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hybridroute.monitoring.histogram import LatencyHistogram
from hybridroute.observability.events import Outcome, RequestEvent
from hybridroute.observability.traffic import TrafficTotals, TrafficWindow

T0 = 1_800_000_000.0
ROUTES = ("direct_bedrock", "mcp")
OPERATIONS = ("chat", "embed", "summarise")
CODES = ("route_unavailable", "budget_exceeded", "overloaded")
WINDOWS = (60.0, 300.0, 900.0, 3600.0, 3601.0, 7200.0, 86_400.0)
ANSWERED = (Outcome.SERVED, Outcome.CACHED, Outcome.INTERRUPTED)


@st.composite
def events(draw: st.DrawFn) -> RequestEvent:
    outcome = draw(st.sampled_from(list(Outcome)))
    route = draw(st.sampled_from(ROUTES)) if outcome in ANSWERED else None
    first: str | None
    if outcome is Outcome.SERVED:
        first = draw(st.sampled_from(ROUTES))
    elif outcome is Outcome.CACHED:
        first = None
    else:
        first = draw(st.none() | st.sampled_from(ROUTES))
    return RequestEvent(
        at=T0 + draw(st.floats(0, 7199.999)),
        operation_type=draw(st.sampled_from(OPERATIONS)),
        priority="normal",
        tenant="t",
        outcome=outcome,
        status=200,
        latency_s=draw(st.floats(0.001, 30.0)),
        route=route,
        primary=first,
        first_route=first,
        fallback=draw(st.booleans()),
        efficient=draw(st.booleans()),
        hedged=draw(st.booleans()),
        ttft_s=draw(st.none() | st.floats(0.001, 5.0)),
        cache=draw(st.none() | st.sampled_from(("hit", "miss", "bypass", "off"))),
        input_tokens=draw(st.integers(0, 1000)),
        output_tokens=draw(st.integers(0, 1000)),
        cost=Decimal(draw(st.integers(0, 10_000))) / 1_000_000,
        error_code=draw(st.none() | st.sampled_from(CODES)),
    )


def resolution(window_s: float) -> int:
    """10-second buckets up to 600 s, minutes up to an hour, hours beyond."""
    return 10 if window_s <= 600 else 60 if window_s <= 3600 else 3600


def included(event: RequestEvent, window_s: float, now: float) -> bool:
    """The documented rule: the event's bucket overlaps (now - window_s, now]."""
    r = resolution(window_s)
    return math.floor((now - window_s) / r) <= math.floor(event.at / r) <= math.floor(now / r)


def brute_force(chosen: list[RequestEvent]) -> dict[str, Any]:
    served = [e for e in chosen if e.outcome is Outcome.SERVED]
    decided = [e for e in chosen if e.first_route is not None]
    per_route: Counter[tuple[str, str]] = Counter()
    for e in chosen:
        blamed = e.route if e.route is not None else e.first_route
        if e.outcome.is_error and blamed is not None:
            per_route[(blamed, "errors")] += 1
    for e in served:
        assert e.route is not None
        per_route[(e.route, "served")] += 1
        per_route[(e.route, "fallbacks")] += e.fallback
    return {
        "requests": len(chosen),
        "outcomes": dict(Counter(e.outcome for e in chosen)),
        "errors": sum(e.outcome.is_error for e in chosen),
        "decided": len(decided),
        "served": len(served),
        "cached": sum(e.outcome is Outcome.CACHED for e in chosen),
        "fallbacks": sum(e.fallback for e in served),
        "efficient": sum(e.efficient for e in decided),
        "cache": dict(Counter(e.cache for e in chosen if e.cache is not None)),
        "hedged": sum(e.hedged for e in chosen),
        "input_tokens": sum(e.input_tokens for e in chosen),
        "output_tokens": sum(e.output_tokens for e in chosen),
        "cost": sum((e.cost for e in chosen), Decimal(0)),
        "per_route": {k: v for k, v in per_route.items() if v},
        "per_operation": dict(Counter(e.operation_type for e in chosen)),
        "route_operations": dict(Counter((e.route, e.operation_type) for e in served)),
        "error_codes": dict(Counter(e.error_code for e in chosen if e.error_code is not None)),
    }


def observed(t: TrafficTotals) -> dict[str, Any]:
    per_route: dict[tuple[str, str], int] = {}
    for name, r in t.routes.items():
        for part in ("served", "fallbacks", "errors"):
            if getattr(r, part):
                per_route[(name, part)] = getattr(r, part)
    return {
        "requests": t.requests,
        "outcomes": t.outcomes,
        "errors": t.errors,
        "decided": t.decided,
        "served": t.served,
        "cached": t.cached,
        "fallbacks": t.fallbacks,
        "efficient": t.efficient,
        "cache": t.cache,
        "hedged": t.hedged,
        "input_tokens": t.input_tokens,
        "output_tokens": t.output_tokens,
        "cost": t.cost,
        "per_route": per_route,
        "per_operation": {name: o.requests for name, o in t.operations.items()},
        "route_operations": t.route_operations,
        "error_codes": t.error_codes,
    }


def histogram(values: list[float]) -> LatencyHistogram:
    h = LatencyHistogram()
    for v in values:
        h.add(v)
    return h


def assert_quantile_close(h: LatencyHistogram, values: list[float], q: float) -> None:
    if not values:
        assert h.quantile(q) is None
        return
    exact = sorted(values)[max(1, math.ceil(q * len(values))) - 1]
    got = h.quantile(q)
    assert got is not None
    assert abs(got - exact) <= 0.026 * exact  # the histogram's bins: ±2.5 %


@settings(max_examples=150, deadline=None)
@given(st.lists(events(), max_size=120), st.floats(0, 300), st.data())
def test_totals_equal_a_brute_force_count(
    recorded: list[RequestEvent], after: float, data: st.DataObject
) -> None:
    window = TrafficWindow()
    for event in recorded:
        window.record(event)
    assert window.late_dropped == 0
    now = max((e.at for e in recorded), default=T0) + after
    for window_s in WINDOWS:
        chosen = [e for e in recorded if included(e, window_s, now)]
        totals = window.totals(window_s, now)
        assert observed(totals) == brute_force(chosen)
        generated = [e.latency_s for e in chosen if e.outcome is Outcome.SERVED]
        cached = [e.latency_s for e in chosen if e.outcome is Outcome.CACHED]
        ttft = [e.ttft_s for e in chosen if e.ttft_s is not None]
        assert totals.generated_latency.bins == histogram(generated).bins
        assert totals.cached_latency.bins == histogram(cached).bins
        assert totals.ttft.bins == histogram(ttft).bins
        for q in (0.5, 0.95, 0.99, 1.0):
            assert_quantile_close(totals.generated_latency, generated, q)
            assert_quantile_close(totals.cached_latency, cached, q)
        for rate in (
            totals.error_rate,
            totals.cache_hit_rate,
            totals.fallback_rate,
            totals.routing_efficiency,
        ):
            assert rate is None or 0.0 <= rate <= 1.0
        assert totals.span_s <= window_s + resolution(window_s)
    step = data.draw(st.sampled_from((60.0, 120.0, 300.0)))
    steps = window.series(900, step, now)
    merged = TrafficTotals.merged(steps)
    assert observed(merged) == observed(window.totals(900, now))
    assert sum(s.span_s for s in steps) == pytest.approx(window.totals(900, now).span_s)


@settings(max_examples=100, deadline=None)
@given(st.lists(events(), min_size=1, max_size=60), st.randoms(use_true_random=False))
def test_recording_order_does_not_change_the_totals(
    recorded: list[RequestEvent], shuffler: random.Random
) -> None:
    ordered = TrafficWindow()
    for event in sorted(recorded, key=lambda e: e.at):
        ordered.record(event)
    shuffled = TrafficWindow()
    mixed = list(recorded)
    shuffler.shuffle(mixed)
    for event in mixed:
        shuffled.record(event)
    now = max(e.at for e in recorded)
    for window_s in WINDOWS:
        assert observed(shuffled.totals(window_s, now)) == observed(ordered.totals(window_s, now))
