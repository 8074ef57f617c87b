"""Hourly traffic rollups: what each UTC hour's traffic amounted to, kept for the reports.

A rollup is a plain JSON object of counts (requests, errors, served, cached, fallbacks,
efficient and decided requests, cache hits and misses, tokens, cost), the latency histograms'
bins, and the same per operation type and per route. Rollups add up (`merge_rollups`), so a
week is the sum of its hours and an hour that spans a restart is the sum of both processes'
parts; `figures()` turns one into rates and percentiles.

`TrafficRecorder` writes the live window's current and previous hour to the operations store
every minute (an hour written again replaces its row), adding what an earlier process of the
same hour had written, so the store is never more than a minute behind and a restart loses
nothing it had written.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Mapping
from decimal import Decimal
from typing import Any

import orjson

from hybridroute._clock import Clock
from hybridroute.economics.pricing import money_text
from hybridroute.monitoring.histogram import LatencyHistogram
from hybridroute.observability.traffic import TrafficTotals, TrafficWindow
from hybridroute.storage.operations import OperationsStore
from hybridroute.storage.records import TrafficHourRecord

__all__ = ["TrafficRecorder", "empty_rollup", "figures", "merge_rollups", "rollup_of"]

log = logging.getLogger("hybridroute.observability")

Rollup = dict[str, Any]

_COUNTS = (
    "requests",
    "errors",
    "decided",
    "served",
    "cached",
    "fallbacks",
    "efficient",
    "hits",
    "misses",
    "hedged",
    "input_tokens",
    "output_tokens",
)
_OPERATION_COUNTS = ("requests", "errors", "served", "cached", "decided", "efficient", "fallbacks")
_ROUTE_COUNTS = ("served", "errors", "fallbacks")
_WRITE_EVERY_S = 60.0


def empty_rollup() -> Rollup:
    rollup: Rollup = dict.fromkeys(_COUNTS, 0)
    rollup.update(
        cost="0",
        generated={"bins": {}, "total_s": 0.0},
        cached_latency={"bins": {}, "total_s": 0.0},
        operations={},
        routes={},
        error_codes={},
    )
    return rollup


def _histogram(h: LatencyHistogram) -> dict[str, Any]:
    return {"bins": {str(i): n for i, n in h.bins.items()}, "total_s": h.total_s}


def rollup_of(totals: TrafficTotals) -> Rollup:
    """The rollup of a window's (or bucket's) totals."""
    return {
        "requests": totals.requests,
        "errors": totals.errors,
        "decided": totals.decided,
        "served": totals.served,
        "cached": totals.cached,
        "fallbacks": totals.fallbacks,
        "efficient": totals.efficient,
        "hits": totals.cache_hits,
        "misses": totals.cache_misses,
        "hedged": totals.hedged,
        "input_tokens": totals.input_tokens,
        "output_tokens": totals.output_tokens,
        "cost": money_text(totals.cost),
        "generated": _histogram(totals.generated_latency),
        "cached_latency": _histogram(totals.cached_latency),
        "operations": {
            op: {name: getattr(t, name) for name in _OPERATION_COUNTS}
            for op, t in totals.operations.items()
        },
        "routes": {
            route: {name: getattr(t, name) for name in _ROUTE_COUNTS}
            for route, t in totals.routes.items()
        },
        "error_codes": dict(totals.error_codes),
    }


def _add_counts(into: dict[str, Any], other: Mapping[str, Any], names: tuple[str, ...]) -> None:
    for name in names:
        into[name] = into.get(name, 0) + other.get(name, 0)


def _add_histogram(into: dict[str, Any], other: Mapping[str, Any]) -> None:
    bins = into.setdefault("bins", {})
    for index, n in other.get("bins", {}).items():
        bins[index] = bins.get(index, 0) + n
    into["total_s"] = into.get("total_s", 0.0) + other.get("total_s", 0.0)


def merge_rollups(*parts: Mapping[str, Any]) -> Rollup:
    """The sum of several rollups."""
    whole = empty_rollup()
    cost = Decimal(0)
    for part in parts:
        _add_counts(whole, part, _COUNTS)
        cost += Decimal(part.get("cost", "0"))
        _add_histogram(whole["generated"], part.get("generated", {}))
        _add_histogram(whole["cached_latency"], part.get("cached_latency", {}))
        for op, counts in part.get("operations", {}).items():
            _add_counts(whole["operations"].setdefault(op, {}), counts, _OPERATION_COUNTS)
        for route, counts in part.get("routes", {}).items():
            _add_counts(whole["routes"].setdefault(route, {}), counts, _ROUTE_COUNTS)
        for code, n in part.get("error_codes", {}).items():
            whole["error_codes"][code] = whole["error_codes"].get(code, 0) + n
    whole["cost"] = money_text(cost)
    return whole


def _latency(data: Mapping[str, Any]) -> LatencyHistogram:
    histogram = LatencyHistogram()
    histogram.bins = {int(i): int(n) for i, n in data.get("bins", {}).items()}
    histogram.count = sum(histogram.bins.values())
    histogram.total_s = float(data.get("total_s", 0.0))
    return histogram


def _ratio(part: int, whole: int) -> float | None:
    return round(part / whole, 4) if whole else None


def _ms(seconds: float | None) -> float | None:
    return None if seconds is None else round(seconds * 1000, 1)


def figures(rollup: Mapping[str, Any]) -> dict[str, Any]:
    """Rates and percentiles of a rollup, defined as the traffic window defines them."""
    generated, cached = _latency(rollup["generated"]), _latency(rollup["cached_latency"])
    lookups = rollup["hits"] + rollup["misses"]
    return {
        "requests": rollup["requests"],
        "errors": rollup["errors"],
        "error_rate": _ratio(rollup["errors"], rollup["requests"]),
        "served": rollup["served"],
        "cached": rollup["cached"],
        "generation_p50_ms": _ms(generated.quantile(0.5)),
        "generation_p95_ms": _ms(generated.quantile(0.95)),
        "cached_p95_ms": _ms(cached.quantile(0.95)),
        "cache_lookups": lookups,
        "cache_hit_rate": _ratio(rollup["hits"], lookups),
        "fallback_rate": _ratio(rollup["fallbacks"], rollup["served"]),
        "routing_efficiency": _ratio(rollup["efficient"], rollup["decided"]),
        "cost": rollup["cost"],
        "input_tokens": rollup["input_tokens"],
        "output_tokens": rollup["output_tokens"],
    }


class TrafficRecorder:
    """Keeps the operations store's hourly rollups up to date with the live traffic window."""

    def __init__(
        self,
        traffic: TrafficWindow,
        store: OperationsStore,
        clock: Clock,
        *,
        now: Callable[[], float] | None = None,
    ) -> None:
        self._traffic = traffic
        self._store = store
        self._clock = clock
        self._now = now or clock.now  # the time the window's events are stamped with
        self._earlier: dict[int, Rollup] = {}  # what an earlier process wrote for these hours

    async def start(self) -> None:
        """Read back what was already written for this hour and the last."""
        hour = math.floor(self._now() / 3600)
        for record in await self._store.traffic_hours(hour - 1, hour):
            self._earlier[record.hour] = orjson.loads(record.data)

    async def write(self) -> None:
        """Write the current and previous hour's rollups now."""
        hour = math.floor(self._now() / 3600)
        records = []
        for index in (hour - 1, hour):
            bucket = self._traffic.hour_bucket(index)
            earlier = self._earlier.get(index)
            if bucket is None and earlier is None:
                continue
            parts = [p for p in (earlier, rollup_of(bucket) if bucket else None) if p]
            records.append(TrafficHourRecord(index, orjson.dumps(merge_rollups(*parts)).decode()))
        for old in [h for h in self._earlier if h < hour - 1]:
            del self._earlier[old]
        await self._store.put_traffic_hours(records)

    async def run(self) -> None:
        """Write every minute until cancelled; write once more when stopped."""
        try:
            while True:
                await self._clock.sleep(_WRITE_EVERY_S)
                try:
                    await self.write()
                except Exception:  # the store is away: the next minute writes it all again
                    log.exception("could not write the hourly traffic rollups")
        finally:
            try:
                await self.write()
            except Exception:
                log.exception("could not write the hourly traffic rollups at shutdown")
