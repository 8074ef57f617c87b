"""The SLO snapshot: each figure's own min_requests threshold, compliance met / missed /
unknown, the alert metrics `value()` answers (and refuses), and the JSON shape.
"""

from __future__ import annotations

from typing import Any

import pytest

from hybridroute.config.observability import ALERT_METRICS, SloConfig
from hybridroute.observability.events import Outcome, RequestEvent
from hybridroute.observability.slo import TRAFFIC_METRICS, SloSnapshot, slo_snapshot
from hybridroute.observability.traffic import TrafficTotals

T0 = 1_800_000_000.0
D, M = "direct_bedrock", "mcp"


def ev(outcome: Outcome = Outcome.SERVED, **kw: Any) -> RequestEvent:
    fields: dict[str, Any] = {
        "at": T0,
        "operation_type": "chat",
        "priority": "normal",
        "tenant": "t1",
        "status": 200,
        "latency_s": 0.5,
    }
    if outcome is Outcome.SERVED:
        fields.update(route=D, primary=D, first_route=D, efficient=True)
    fields.update(kw)
    return RequestEvent(outcome=outcome, **fields)


def totals(*groups: tuple[int, RequestEvent], span_s: float = 300.0) -> TrafficTotals:
    t = TrafficTotals(300.0, span_s)
    for n, event in groups:
        for _ in range(n):
            t.add(event)
    return t


def snap(t: TrafficTotals, least: int = 3, **targets: Any) -> SloSnapshot:
    return slo_snapshot(t, SloConfig(min_requests=least, **targets))


# -- each figure's own sample --------------------------------------------------------------------


def test_generation_p95_needs_min_requests_generated_answers() -> None:
    cached = (10, ev(Outcome.CACHED, latency_s=0.01, cache="hit"))
    assert snap(totals(cached, (2, ev(latency_s=1.0)))).generation_p95_s is None
    known = snap(totals(cached, (3, ev(latency_s=1.0)))).generation_p95_s
    assert known == pytest.approx(0.986694880106683)  # 1.0 s's bin middle


def test_cached_p95_needs_min_requests_cache_answers() -> None:
    served = (10, ev())
    assert snap(totals(served, (2, ev(Outcome.CACHED, latency_s=0.2)))).cached_p95_s is None
    known = snap(totals(served, (3, ev(Outcome.CACHED, latency_s=0.2)))).cached_p95_s
    assert known == pytest.approx(0.1972132114984402)


def test_error_rate_needs_min_requests_requests() -> None:
    failed = ev(Outcome.FAILED, first_route=D)
    assert snap(totals((1, failed), (1, ev()))).error_rate is None
    assert snap(totals((1, failed), (2, ev()))).error_rate == pytest.approx(1 / 3)


def test_cache_hit_rate_needs_min_requests_lookups() -> None:
    # bypassed and uncacheable requests are no lookups
    others = (10, ev(cache="bypass")), (10, ev(cache="off"))
    hit = ev(Outcome.CACHED, cache="hit", route=D)
    assert snap(totals(*others, (1, hit), (1, ev(cache="miss")))).cache_hit_rate is None
    rate = snap(totals(*others, (2, hit), (1, ev(cache="miss")))).cache_hit_rate
    assert rate == pytest.approx(2 / 3)


def test_fallback_rate_needs_min_requests_served_by_a_route() -> None:
    cached = (10, ev(Outcome.CACHED, cache="hit", route=D))
    fallback = ev(route=M, fallback=True)
    assert snap(totals(cached, (1, fallback), (1, ev()))).fallback_rate is None
    # cache hits count in neither part: 1 fallback over 3 served by a route
    assert snap(totals(cached, (1, fallback), (2, ev()))).fallback_rate == pytest.approx(1 / 3)


def test_routing_efficiency_needs_min_requests_decided() -> None:
    undecided = (10, ev(Outcome.REFUSED)), (10, ev(Outcome.CACHED, route=D))
    slow = ev(efficient=False)
    assert snap(totals(*undecided, (1, slow), (1, ev()))).routing_efficiency is None
    # refusals and cache hits count in neither part: 2 efficient over 3 decided
    figure = snap(totals(*undecided, (1, slow), (2, ev()))).routing_efficiency
    assert figure == pytest.approx(2 / 3)


def test_throughput_is_not_gated_by_min_requests() -> None:
    assert snap(totals((1, ev())), least=100).throughput_rps == pytest.approx(1 / 300)
    assert snap(totals(span_s=300.0)).throughput_rps == 0.0
    assert snap(totals(span_s=0.0)).throughput_rps is None


# -- compliance ----------------------------------------------------------------------------------


def test_every_target_met() -> None:
    s = snap(
        totals(
            (99, ev(latency_s=1.0, cache="miss")),
            (1, ev(Outcome.FAILED, first_route=D, cache="miss")),
            (400, ev(Outcome.CACHED, latency_s=0.2, cache="hit", route=D)),
        ),
        error_rate=0.002,  # 1 failed of 500
    )
    assert [(c.name, c.met) for c in s.checks] == [
        ("generation_p95", True),
        ("cached_p95", True),
        ("error_rate", True),
        ("cache_hit_rate", True),
    ]
    assert s.compliant is True
    hit = s.check("cache_hit_rate")
    assert (hit.figure, hit.target, hit.unit, hit.comparison, hit.sample) == (
        0.8,
        0.8,
        "ratio",
        ">=",
        500,
    )  # 400 of 500 lookups: met at exactly the target
    assert s.check("error_rate").figure == pytest.approx(0.002)


def test_error_rate_exactly_at_target_is_met_and_above_is_missed() -> None:
    at_target = totals((1, ev(Outcome.FAILED)), (99, ev()))
    assert snap(at_target).check("error_rate").met is True  # 0.01 ≤ 0.01
    above = totals((2, ev(Outcome.INTERRUPTED, route=D)), (98, ev()))
    assert snap(above).check("error_rate").met is False
    assert snap(above).compliant is False


def test_latency_targets_missed() -> None:
    s = snap(
        totals(
            (5, ev(latency_s=1.6)),
            (5, ev(Outcome.CACHED, latency_s=0.31, route=D)),
        )
    )
    gen, cached = s.check("generation_p95"), s.check("cached_p95")
    assert (gen.met, gen.unit, gen.target, gen.comparison) == (False, "ms", 1500, "<=")
    assert gen.figure == pytest.approx(1607.2219884745884)
    assert cached.met is False  # 0.31 s's bin middle is above 300 ms
    assert cached.figure is not None
    assert cached.figure > 300
    assert s.compliant is False


def test_unknown_figures_are_neither_met_nor_missed() -> None:
    s = snap(totals((2, ev(latency_s=9.0))))
    assert all(c.met is None and c.figure is None for c in s.checks)
    assert s.compliant is None
    # one target known and met, the others unknown: still unknown overall
    s = snap(totals((3, ev(latency_s=0.2))))
    assert s.check("generation_p95").met is True
    assert s.check("cached_p95").met is None
    assert s.compliant is None


def test_check_by_an_unknown_name_is_a_key_error() -> None:
    with pytest.raises(KeyError, match="no SLO named 'latency'"):
        snap(totals()).check("latency")


# -- value() for the alert rules -----------------------------------------------------------------


def test_value_answers_each_traffic_metric() -> None:
    s = snap(
        totals(
            (3, ev(latency_s=1.0, cache="miss")),
            (1, ev(latency_s=1.0, route=M, fallback=True, efficient=False, cache="miss")),
            (4, ev(Outcome.CACHED, latency_s=0.2, route=D, cache="hit")),
            (2, ev(Outcome.FAILED, first_route=D)),
        )
    )
    assert s.value("generation_p95_s") == pytest.approx(0.986694880106683)
    assert s.value("cached_p95_s") == pytest.approx(0.1972132114984402)
    assert s.value("error_rate") == pytest.approx(2 / 10)
    assert s.value("cache_hit_rate") == pytest.approx(4 / 8)
    assert s.value("fallback_rate") == pytest.approx(1 / 4)
    assert s.value("routing_efficiency") == pytest.approx(3 / 6)
    assert set(TRAFFIC_METRICS) | {"budget_utilisation", "bedrock_unavailable"} == set(
        ALERT_METRICS
    )


def test_value_is_none_when_unknown() -> None:
    s = snap(totals((1, ev())))
    assert all(s.value(metric) is None for metric in TRAFFIC_METRICS)


@pytest.mark.parametrize(
    ("metric", "source"),
    [("budget_utilisation", "budget ledger"), ("bedrock_unavailable", "route health board")],
)
def test_value_refuses_metrics_that_come_from_elsewhere(metric: str, source: str) -> None:
    with pytest.raises(KeyError, match=f"{metric}.*does not come from traffic.*{source}"):
        snap(totals()).value(metric)


def test_value_refuses_unknown_metrics() -> None:
    with pytest.raises(KeyError, match="unknown alert metric 'p95'"):
        snap(totals()).value("p95")


# -- JSON ----------------------------------------------------------------------------------------


def test_as_dict() -> None:
    s = snap(
        totals(
            (3, ev(latency_s=1.0, cache="miss")),
            (1, ev(latency_s=1.0, route=M, fallback=True, efficient=False, cache="miss")),
            (4, ev(Outcome.CACHED, latency_s=0.2, route=D, cache="hit")),
            (2, ev(Outcome.FAILED, first_route=D)),
        ),
        least=4,
    )
    assert s.as_dict() == {
        "window_s": 300.0,
        "span_s": 300.0,
        "min_requests": 4,
        "requests": 10,
        "figures": {
            "generation_p95_ms": 986.7,
            "cached_p95_ms": 197.2,
            "error_rate": 0.2,
            "cache_hit_rate": 0.5,
            "fallback_rate": 0.25,
            "routing_efficiency": 0.5,
            "throughput_rps": 0.0333,
        },
        "slos": {
            "generation_p95": {
                "figure": 986.7,
                "target": 1500.0,
                "unit": "ms",
                "comparison": "<=",
                "sample": 4,
                "met": True,
            },
            "cached_p95": {
                "figure": 197.2,
                "target": 300.0,
                "unit": "ms",
                "comparison": "<=",
                "sample": 4,
                "met": True,
            },
            "error_rate": {
                "figure": 0.2,
                "target": 0.01,
                "unit": "ratio",
                "comparison": "<=",
                "sample": 10,
                "met": False,
            },
            "cache_hit_rate": {
                "figure": 0.5,
                "target": 0.8,
                "unit": "ratio",
                "comparison": ">=",
                "sample": 8,
                "met": False,
            },
        },
        "compliant": False,
    }
