"""The traffic window: bucket placement, which buckets a window includes, late events, bounded
memory, series, every derived figure against a hand count, and the admin views' exact JSON.

Events are built by hand with an explicit `at`; T0 is on an hour boundary, so minute index
``m`` below means the bucket ``[T0 + 60m, T0 + 60m + 60)``.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import pytest

from hybridroute.monitoring.histogram import LatencyHistogram
from hybridroute.observability.events import Outcome, RequestEvent
from hybridroute.observability.traffic import (
    MAX_KEYS,
    OTHER,
    TrafficTotals,
    TrafficWindow,
)

T0 = 1_800_000_000.0  # a multiple of 3600
D, M = "direct_bedrock", "mcp"


def ev(at: float, outcome: Outcome = Outcome.SERVED, **kw: Any) -> RequestEvent:
    fields: dict[str, Any] = {
        "operation_type": "chat",
        "priority": "normal",
        "tenant": "t1",
        "status": 200,
        "latency_s": 0.5,
    }
    if outcome is Outcome.SERVED:
        fields.update(route=D, primary=D, first_route=D)
    fields.update(kw)
    return RequestEvent(at=at, outcome=outcome, **fields)


def window_with(*offsets: float) -> TrafficWindow:
    window = TrafficWindow()
    for offset in offsets:
        window.record(ev(T0 + offset, tenant=f"at{offset}"))
    return window


# -- which buckets a window includes -------------------------------------------------------------


def test_five_minute_window_takes_the_ten_second_buckets_overlapping_it() -> None:
    # now = T0 + 1000.5 lies in 10-second bucket 100; the window (T0 + 700.5, now] overlaps
    # buckets 70..100.
    window = window_with(699.9, 700.0, 700.4, 709.9, 710.0, 900.0, 1000.5, 1009.9, 1010.0)
    totals = window.totals(300, T0 + 1000.5)
    # 699.9 is bucket 69: out. 700 .. 709.9 are bucket 70 (taken whole, though 700 and 700.4
    # are before the window's start). 1009.9 is in now's bucket, so in; 1010 is bucket 101: out.
    assert totals.requests == 7
    assert totals.window_s == 300
    assert totals.span_s == pytest.approx(1000.5 - 700.0)


def test_a_window_over_ten_minutes_takes_minute_buckets() -> None:
    # now = T0 + 1000.5 lies in minute 16; a 900 s window (T0 + 100.5, now] overlaps minutes 1..16
    window = window_with(59.9, 60.0, 100.0, 1019.9, 1020.0)
    assert window.totals(900, T0 + 1000.5).requests == 3


def test_window_ending_on_a_minute_boundary_still_takes_that_minute() -> None:
    window = window_with(599.9, 600.0, 659.9, 660.0)
    totals = window.totals(60, T0 + 660.0)
    # (T0 + 600, T0 + 660] overlaps minute 10 and minute 11 (at its first instant).
    assert totals.requests == 3


def test_hour_window_takes_minutes_and_longer_windows_take_hours() -> None:
    now = T0 + 7230.0  # minute 120, hour 2
    window = window_with(3599.0, 3600.0, 5000.0, 7230.0)
    # 3600 s is still minute resolution: minutes 60..120.
    assert window.totals(3600, now).requests == 3
    # 3601 s switches to hours: floor((7230 - 3601) / 3600) = 1 .. 2.
    assert window.totals(3601, now).requests == 3
    # 7200 s: hours 0..2, so 3599 (hour 0) is in too.
    assert window.totals(7200, now).requests == 4
    assert window.totals(7200, now).span_s == pytest.approx(7230.0 - 3599.0)


def test_windows_beyond_a_day_or_not_positive_are_refused() -> None:
    window = TrafficWindow()
    assert window.totals(86_400, T0).requests == 0
    for bad in (86_400.5, 0, -1, float("nan")):
        with pytest.raises(ValueError, match="24 h"):
            window.totals(bad, T0)
        with pytest.raises(ValueError, match="24 h"):
            window.series(bad, 60, T0)


def test_empty_window_has_no_span_and_no_figures() -> None:
    totals = TrafficWindow().totals(300, T0)
    assert totals.requests == 0
    assert totals.span_s == 0.0
    assert totals.throughput_rps is None


def test_started_at_bounds_the_span() -> None:
    window = TrafficWindow(started_at=T0 + 900.0)
    window.record(ev(T0 + 950.0))
    totals = window.totals(300, T0 + 1000.0)
    assert totals.span_s == pytest.approx(100.0)
    assert totals.throughput_rps == pytest.approx(0.01)


# -- late events ---------------------------------------------------------------------------------


def test_late_event_goes_into_its_own_minute_while_kept() -> None:
    window = TrafficWindow()
    window.record(ev(T0 + 1000.0))
    window.record(ev(T0 + 400.0))  # ten minutes late: minute 6 is still kept
    assert window.totals(120, T0 + 1000.0).requests == 1
    assert window.totals(900, T0 + 1000.0).requests == 2
    series = window.series(900, 60, T0 + 1000.0)
    assert [s.requests for s in series if s.requests] == [1, 1]
    assert window.late_dropped == 0


def test_event_older_than_the_minutes_kept_goes_into_its_hour_only() -> None:
    window = TrafficWindow()
    now = T0 + 7230.0  # minute 120: minutes 60..120 are kept
    window.record(ev(now))
    window.record(ev(T0 + 3599.0))  # minute 59, hour 0: only its hour is kept
    assert window.late_dropped == 0
    assert window.totals(3600, now).requests == 1
    assert window.totals(7200, now).requests == 2


def test_event_older_than_every_bucket_is_dropped_and_counted() -> None:
    window = TrafficWindow()
    now = T0 + 7230.0  # hour 2: hours -22..2 are kept
    window.record(ev(now))
    window.record(ev(T0 - 22 * 3600.0))  # hour -22: kept
    window.record(ev(T0 - 22 * 3600.0 - 0.001))  # hour -23: dropped
    window.record(ev(T0 - 30 * 86_400.0))
    assert window.late_dropped == 2
    assert window.totals(86_400, now).requests == 2


def test_non_finite_times_are_dropped_and_counted_apart() -> None:
    window = TrafficWindow()
    window.record(ev(float("nan")))
    window.record(ev(float("inf")))
    assert window.invalid_dropped == 2
    assert window.late_dropped == 0
    assert window.bucket_counts() == (0, 0, 0)


def test_buckets_stay_bounded_over_days_of_traffic() -> None:
    window = TrafficWindow()
    for minute in range(3 * 1440):
        window.record(ev(T0 + 60.0 * minute + 1.0))
    assert window.bucket_counts() == (11, 61, 25)  # one event a minute: 11 in 10 minutes
    now = T0 + 60.0 * (3 * 1440 - 1) + 1.0
    assert window.totals(3600, now).requests == 61
    assert window.totals(86_400, now).requests == 24 * 60 + 60


# -- bounded maps --------------------------------------------------------------------------------


def _distinct(i: int, at: float) -> RequestEvent:
    return ev(
        at,
        Outcome.INTERRUPTED,
        route=f"r{i:03}",
        primary=f"r{i:03}",
        first_route=f"r{i:03}",
        operation_type=f"op{i:03}",
        error_code=f"code{i:03}",
        cache=f"result{i:03}",
    )


def _assert_capped(totals: TrafficTotals) -> None:
    assert totals.requests == 200
    for mapping in (totals.routes, totals.operations, totals.error_codes, totals.cache):
        assert len(mapping) == MAX_KEYS + 1
        assert OTHER in mapping
    assert totals.routes[OTHER].errors == 200 - MAX_KEYS
    assert totals.operations[OTHER].requests == 200 - MAX_KEYS
    assert totals.error_codes[OTHER] == 200 - MAX_KEYS
    assert totals.cache[OTHER] == 200 - MAX_KEYS
    assert sum(r.errors for r in totals.routes.values()) == 200
    assert totals.route_error_codes[(OTHER, OTHER)] == 200 - MAX_KEYS
    assert totals.operation_error_codes[(OTHER, OTHER)] == 200 - MAX_KEYS
    assert len(totals.route_error_codes) == MAX_KEYS + 1


def test_maps_in_one_bucket_are_capped_with_an_other_line() -> None:
    window = TrafficWindow()
    for i in range(200):
        window.record(_distinct(i, T0 + 30.0))
    _assert_capped(window.totals(60, T0 + 30.0))


def test_maps_merged_across_buckets_are_capped_too() -> None:
    window = TrafficWindow()
    for i in range(200):  # ten distinct keys a minute, over twenty minutes
        window.record(_distinct(i, T0 + 60.0 * (i // 10) + 1.0))
    totals = window.totals(1800, T0 + 1500.0)
    _assert_capped(totals)
    # The oldest keys keep their names: merging goes oldest bucket first.
    assert "r000" in totals.routes
    assert "r199" not in totals.routes


def test_served_pairs_fold_with_their_route() -> None:
    totals = TrafficTotals()
    for i in range(70):
        totals.add(ev(T0, route=f"r{i}", operation_type="chat"))
    assert totals.route_operations[(OTHER, "chat")] == 70 - MAX_KEYS
    assert totals.route_operations[("r0", "chat")] == 1
    assert totals.routing_distribution()["operations"]["chat"]["served"][OTHER] == 6


# -- series --------------------------------------------------------------------------------------


def test_series_cuts_the_window_into_whole_steps_oldest_first() -> None:
    # minutes 11..16 are in a 900 s window ending at T0 + 1000.5 (minute resolution)
    window = window_with(665.0, 725.0, 726.0, 785.0, 845.0, 905.0, 965.0, 966.0, 967.0)
    now = T0 + 1000.5
    per_minute = window.series(900, 60, now)[-6:]
    assert [s.requests for s in per_minute] == [1, 2, 1, 1, 1, 3]
    assert all(s.window_s == 60 for s in per_minute)
    assert [s.span_s for s in per_minute] == pytest.approx([55.0, 60, 60, 60, 60, 40.5])
    two_minutes = window.series(900, 120, now)[-3:]
    assert [s.requests for s in two_minutes] == [3, 2, 4]  # minutes 11-12, 13-14, 15-16
    assert sum(s.requests for s in two_minutes) == window.totals(900, now).requests
    # up to 600 s the steps are multiples of 10 s
    assert sum(s.requests for s in window.series(300, 30, now)) == 8  # 725 .. 967


def test_series_over_hours_needs_hour_steps() -> None:
    window = window_with(100.0, 3700.0, 7300.0, 7400.0)
    now = T0 + 7400.0
    assert [s.requests for s in window.series(7200, 3600, now)] == [1, 1, 2]
    with pytest.raises(ValueError, match="multiple of 3600"):
        window.series(7200, 1800, now)
    with pytest.raises(ValueError, match="multiple of 60"):
        window.series(900, 90, now)
    with pytest.raises(ValueError, match="multiple of 10"):
        window.series(300, 0, now)


# -- derived figures -----------------------------------------------------------------------------


def example() -> TrafficTotals:
    """Ten requests, counted by hand in the assertions below."""
    at = T0 + 10.0
    events = [
        ev(at, latency_s=0.2, efficient=True, cache="miss", input_tokens=10, output_tokens=20,
           cost=Decimal("0.0015")),
        ev(at, latency_s=0.4, efficient=True, cache="miss", hedged=True, cost=Decimal("0.0025")),
        ev(at, latency_s=0.6, efficient=True, cache="bypass", operation_type="embed",
           route=M, first_route=M),
        ev(at, latency_s=2.0, cache="miss", route=M, first_route=D, fallback=True,
           input_tokens=5, output_tokens=7, cost=Decimal("0.01")),
        ev(at, Outcome.CACHED, latency_s=0.01, route=D, cache="hit"),
        ev(at, Outcome.CACHED, latency_s=0.02, route=D, cache="hit", operation_type="embed"),
        ev(at, Outcome.FAILED, status=502, latency_s=1.0, primary=D, first_route=D,
           cache="miss", error_code="route_unavailable"),
        ev(at, Outcome.REFUSED, status=402, latency_s=0.001, error_code="budget_exceeded"),
        ev(at, Outcome.INTERRUPTED, latency_s=0.8, route=M, primary=M, first_route=M,
           stream=True, ttft_s=0.3, cache="off", error_code="stream_interrupted"),
        ev(at, Outcome.SHED, status=429, latency_s=0.001, error_code="overloaded"),
    ]  # fmt: skip
    window = TrafficWindow()
    for event in events:
        window.record(event)
    return window.totals(60, T0 + 20.0)


def test_counts_of_the_example() -> None:
    t = example()
    assert t.requests == 10
    assert t.outcomes == {
        Outcome.SERVED: 4,
        Outcome.CACHED: 2,
        Outcome.FAILED: 1,
        Outcome.REFUSED: 1,
        Outcome.INTERRUPTED: 1,
        Outcome.SHED: 1,
    }
    assert (t.errors, t.decided, t.served, t.cached) == (2, 6, 4, 2)
    assert (t.fallbacks, t.efficient, t.hedged) == (1, 3, 1)
    assert t.cache == {"miss": 4, "bypass": 1, "hit": 2, "off": 1}
    assert (t.cache_hits, t.cache_misses, t.cache_lookups) == (2, 4, 6)
    assert (t.input_tokens, t.output_tokens, t.cost) == (15, 27, Decimal("0.014"))
    assert (t.generated_latency.count, t.cached_latency.count, t.ttft.count) == (4, 2, 1)
    d, m = t.routes[D], t.routes[M]
    assert (d.served, d.fallbacks, d.errors, d.cost) == (2, 0, 1, Decimal("0.004"))
    assert (m.served, m.fallbacks, m.errors, m.input_tokens) == (2, 1, 1, 5)
    chat, embed = t.operations["chat"], t.operations["embed"]
    assert (chat.requests, chat.served, chat.cached, chat.errors) == (8, 3, 1, 2)
    assert (chat.fallbacks, chat.efficient, chat.decided) == (1, 2, 5)
    assert (chat.cache_hits, chat.cache_misses) == (1, 4)
    assert (embed.requests, embed.served, embed.efficient, embed.cache_hits) == (2, 1, 1, 1)
    assert t.route_operations == {(D, "chat"): 2, (M, "chat"): 1, (M, "embed"): 1}
    assert t.error_codes == {
        "route_unavailable": 1,
        "budget_exceeded": 1,
        "stream_interrupted": 1,
        "overloaded": 1,
    }
    assert t.route_error_codes == {(D, "route_unavailable"): 1, (M, "stream_interrupted"): 1}
    assert t.operation_error_codes[("chat", "overloaded")] == 1


def test_derived_figures_of_the_example() -> None:
    t = example()
    assert t.error_rate == pytest.approx(2 / 10)
    assert t.cache_hit_rate == pytest.approx(2 / 6)
    assert t.fallback_rate == pytest.approx(1 / 4)  # over the 4 served by a route
    assert t.routing_efficiency == pytest.approx(3 / 6)  # over the 6 decided
    # p95 of 4 generated answers is the 4th (2.0 s); of 2 cached ones the 2nd (0.02 s); both
    # reported as their bin's middle.
    assert t.generation_p95_s == pytest.approx(1.9535883721282907)
    assert t.generation_p95_s == pytest.approx(2.0, rel=0.025)
    assert t.cached_p95_s == pytest.approx(0.019908518777247534)
    # span: from the first event (T0 + 10, later than its bucket's start T0) to now (T0 + 20)
    assert t.span_s == pytest.approx(10.0)
    assert t.throughput_rps == pytest.approx(10 / 10.0)


def test_derived_figures_are_none_without_a_denominator() -> None:
    t = TrafficTotals(60, 0.0)
    assert t.error_rate is None
    assert t.cache_hit_rate is None
    assert t.fallback_rate is None
    assert t.routing_efficiency is None
    assert t.generation_p95_s is None
    assert t.cached_p95_s is None
    assert t.throughput_rps is None
    # requests, but none routed, looked up or answered
    refused = TrafficTotals(60, 0.0)
    refused.add(ev(T0, Outcome.REFUSED, cache="bypass"))
    assert refused.error_rate == 0.0
    assert refused.cache_hit_rate is None
    assert refused.fallback_rate is None
    assert refused.routing_efficiency is None
    assert refused.generation_p95_s is None


def test_cache_hits_are_not_attributed_to_the_route_that_produced_the_entry() -> None:
    t = TrafficTotals()
    t.add(ev(T0, Outcome.CACHED, route=M, cache="hit", input_tokens=9, cost=Decimal("0.5")))
    assert t.routes == {}
    assert (t.cached, t.input_tokens, t.cost) == (1, 9, Decimal("0.5"))
    assert t.routing_distribution()["routes"] == {}


def test_efficient_flag_without_a_decision_is_not_counted() -> None:
    t = TrafficTotals()
    t.add(ev(T0, Outcome.CACHED, route=None, first_route=None, efficient=True))
    assert t.efficient == 0
    assert t.routing_efficiency is None


def test_merge_adds_every_count() -> None:
    whole = TrafficTotals.merged([example(), example()], window_s=120, span_s=40)
    one = example()
    assert (whole.window_s, whole.span_s) == (120, 40)
    assert whole.requests == 2 * one.requests
    assert whole.cost == 2 * one.cost
    assert whole.routes[M].fallbacks == 2
    assert whole.generated_latency.count == 8
    assert whole.route_operations[(D, "chat")] == 4
    assert whole.route_error_codes[(M, "stream_interrupted")] == 2
    assert whole.outcomes[Outcome.SERVED] == 8
    assert whole.fallback_rate == one.fallback_rate


# -- views ---------------------------------------------------------------------------------------


def test_routing_distribution_view() -> None:
    assert example().routing_distribution() == {
        "window_s": 60,
        "span_s": 10.0,
        "served": 4,
        "fallbacks": 1,
        "fallback_rate": 0.25,
        "cost": "0.014",
        "input_tokens": 15,
        "output_tokens": 27,
        "routes": {
            D: {
                "served": 2,
                "share": 0.5,
                "fallbacks": 0,
                "cost": "0.004",
                "input_tokens": 10,
                "output_tokens": 20,
            },
            M: {
                "served": 2,
                "share": 0.5,
                "fallbacks": 1,
                "cost": "0.01",
                "input_tokens": 5,
                "output_tokens": 7,
            },
        },
        "operations": {
            "chat": {
                "requests": 8,
                "served": {D: 2, M: 1},
                "fallbacks": 1,
                "fallback_rate": 0.3333,
            },
            "embed": {"requests": 2, "served": {M: 1}, "fallbacks": 0, "fallback_rate": 0.0},
        },
    }


def test_provider_latencies_view() -> None:
    assert example().provider_latencies() == {
        "window_s": 60,
        "span_s": 10.0,
        "routes": {
            D: {
                "count": 2,
                "p50_ms": 197.2,
                "p90_ms": 390.5,
                "p95_ms": 390.5,
                "p99_ms": 390.5,
                "max_ms": 390.5,
                "mean_ms": 300.0,
                "errors": 1,
            },
            M: {
                "count": 2,
                "p50_ms": 605.7,
                "p90_ms": 1953.6,
                "p95_ms": 1953.6,
                "p99_ms": 1953.6,
                "max_ms": 1953.6,
                "mean_ms": 1300.0,
                "errors": 1,
            },
        },
        "cached": {
            "count": 2,
            "p50_ms": 10.1,
            "p90_ms": 19.9,
            "p95_ms": 19.9,
            "p99_ms": 19.9,
            "max_ms": 19.9,
            "mean_ms": 15.0,
        },
        "ttft": {
            "count": 1,
            "p50_ms": 305.9,
            "p90_ms": 305.9,
            "p95_ms": 305.9,
            "p99_ms": 305.9,
            "max_ms": 305.9,
            "mean_ms": 300.0,
        },
    }


def test_cache_performance_view() -> None:
    assert example().cache_performance() == {
        "window_s": 60,
        "span_s": 10.0,
        "lookups": 6,
        "hits": 2,
        "misses": 4,
        "bypasses": 1,
        "uncacheable": 1,
        "hit_rate": 0.3333,
        "cached_p50_ms": 10.1,
        "cached_p95_ms": 19.9,
        "cached_p99_ms": 19.9,
        "operations": {
            "chat": {"hits": 1, "misses": 4, "hit_rate": 0.2},
            "embed": {"hits": 1, "misses": 0, "hit_rate": 1.0},
        },
    }


def test_error_breakdown_view() -> None:
    assert example().error_breakdown() == {
        "window_s": 60,
        "span_s": 10.0,
        "requests": 10,
        "errors": 2,
        "error_rate": 0.2,
        "codes": {
            "budget_exceeded": {"count": 1, "share": 0.25},
            "overloaded": {"count": 1, "share": 0.25},
            "route_unavailable": {"count": 1, "share": 0.25},
            "stream_interrupted": {"count": 1, "share": 0.25},
        },
        "routes": {
            D: {"errors": 1, "codes": {"route_unavailable": 1}},
            M: {"errors": 1, "codes": {"stream_interrupted": 1}},
        },
        "operations": {
            "chat": {
                "requests": 8,
                "errors": 2,
                "error_rate": 0.25,
                "codes": {
                    "budget_exceeded": 1,
                    "overloaded": 1,
                    "route_unavailable": 1,
                    "stream_interrupted": 1,
                },
            },
            "embed": {"requests": 2, "errors": 0, "error_rate": 0.0, "codes": {}},
        },
        "outcomes": {
            "served": 4,
            "cached": 2,
            "refused": 1,
            "shed": 1,
            "failed": 1,
            "interrupted": 1,
            "abandoned": 0,
        },
    }


def test_views_of_an_empty_window_are_json_ready() -> None:
    empty = TrafficWindow().totals(300, T0)
    latencies = empty.provider_latencies()
    assert latencies["cached"] == {
        "count": 0,
        "p50_ms": None,
        "p90_ms": None,
        "p95_ms": None,
        "p99_ms": None,
        "max_ms": None,
        "mean_ms": None,
    }
    assert empty.cache_performance()["hit_rate"] is None
    assert empty.error_breakdown()["error_rate"] is None
    assert empty.routing_distribution()["cost"] == "0"


def test_cost_is_plain_decimal_text_without_exponent() -> None:
    t = TrafficTotals()
    t.add(ev(T0, cost=Decimal("1E-7")))
    t.add(ev(T0, cost=Decimal("2E-8")))
    assert t.cost == Decimal("1.2E-7")
    assert t.routing_distribution()["cost"] == "0.00000012"
    assert t.routing_distribution()["routes"][D]["cost"] == "0.00000012"


def test_histograms_are_the_shared_latency_histogram() -> None:
    t = example()
    reference = LatencyHistogram()
    for seconds in (0.2, 0.4, 0.6, 2.0):
        reference.add(seconds)
    assert t.generated_latency.bins == reference.bins
