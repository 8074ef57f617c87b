"""The traffic window as a time series: what the dashboard's charts draw.

`timeline()` cuts the window into steps (`TrafficWindow.series`) and gives, per step, the same
figures the admin metrics endpoints compute over a whole window — latency percentiles of
generated answers (overall, per route, per operation type) and of cache hits, errors and the
error rate, throughput, what each route served, fallbacks, cache hits and misses, and cost — so
a chart and the endpoint it sits beside never disagree.
"""

from __future__ import annotations

from typing import Any

from hybridroute.economics.pricing import money_text
from hybridroute.monitoring.histogram import LatencyHistogram
from hybridroute.observability.traffic import TrafficTotals, TrafficWindow

__all__ = ["STEPS", "step_for", "timeline"]

# The step a window is drawn with: at most 60 points, in whole buckets of its resolution.
STEPS = ((600.0, 10.0), (3600.0, 60.0), (86_400.0, 3600.0))


def _ms(histogram: LatencyHistogram, q: float) -> float | None:
    value = histogram.quantile(q)
    return None if value is None else round(value * 1000, 1)


def _latency(histogram: LatencyHistogram) -> dict[str, Any]:
    return {
        "count": histogram.count,
        "p50_ms": _ms(histogram, 0.50),
        "p95_ms": _ms(histogram, 0.95),
        "p99_ms": _ms(histogram, 0.99),
    }


def _point(totals: TrafficTotals, end: float) -> dict[str, Any]:
    rate = totals.error_rate
    throughput = totals.requests / totals.window_s if totals.window_s > 0 else None
    return {
        "end": end,
        "requests": totals.requests,
        "served": totals.served,
        "errors": totals.errors,
        "error_rate": None if rate is None else round(rate, 4),
        "throughput_rps": None if throughput is None else round(throughput, 3),
        "generated": _latency(totals.generated_latency),
        "cached": _latency(totals.cached_latency),
        "routes": {
            name: {
                "served": r.served,
                "fallbacks": r.fallbacks,
                "errors": r.errors,
                "cost": money_text(r.cost),
                **_latency(r.latency),
            }
            for name, r in sorted(totals.routes.items())
        },
        "operations": {
            name: {"requests": o.requests, "errors": o.errors, **_latency(o.latency)}
            for name, o in sorted(totals.operations.items())
        },
        "fallbacks": totals.fallbacks,
        "cache_hits": totals.cache_hits,
        "cache_misses": totals.cache_misses,
        "cost": money_text(totals.cost),
    }


def step_for(window_s: float) -> float:
    """The step a window of `window_s` seconds is drawn with."""
    for longest, step in STEPS:
        if window_s <= longest:
            return step
    return STEPS[-1][1]


def timeline(window: TrafficWindow, window_s: float, now: float) -> dict[str, Any]:
    """The window's figures per step, oldest first; each point's `end` is its step's end."""
    step = step_for(window_s)
    steps = window.series(window_s, step, now)
    last_end = (now // step + 1) * step
    first_end = last_end - step * (len(steps) - 1)
    return {
        "window_s": window_s,
        "step_s": step,
        "points": [_point(totals, first_end + i * step) for i, totals in enumerate(steps)],
    }
