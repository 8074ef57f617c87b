"""The traffic window: finished requests counted in time buckets, merged on demand.

`TrafficWindow` owns the request-level figures the admin API, the SLO snapshot and the alert
rules read: counts per outcome, route, operation type and error code, latency histograms,
tokens and cost. Recording a `RequestEvent` touches three buckets — the 10 seconds, the minute
and the hour its `at` falls in — so the request path pays O(1); a query merges the buckets it
needs.

Buckets and what a query includes
---------------------------------
A bucket of resolution ``r`` (10 s, 60 s or 3600 s) with index ``i`` holds the events whose
``floor(at / r) == i``, that is ``i*r <= at < (i+1)*r``. Of each resolution the newest bucket
seen and the 60 before it are kept (the hours: the newest and the 24 before it); "newest" is
the largest `at` recorded so far. An event that arrives late still goes into its buckets while
they are kept (into the coarser ones alone when only those are left); one older than all is
dropped and counted in `late_dropped`. (The gateway stamps events with a steady clock — wall
time at start plus monotonic time since — so a wall-clock jump cannot empty the buckets.)

`totals(window_s, now)` uses 10-second buckets for windows up to 600 s, minute buckets up to
3600 s and hour buckets beyond,
and includes every bucket that overlaps the window ``(now - window_s, now]``: the buckets with
``floor((now - window_s) / r) <= i <= floor(now / r)``. The result therefore holds everything
recorded in the window plus at most one bucket's worth before it (the oldest bucket is taken
whole), and the part of the newest bucket after `now`, if any was recorded. Queries are meant
for ``now`` at or after the newest event (the gateway's own clock); for such a `now`, every
bucket in range of any allowed window is still kept.

Memory is bounded whatever the traffic: 147 buckets at most, and each bucket's maps keyed by
route, operation type, error code or cache result hold at most `MAX_KEYS` named keys, further
keys being counted under `OTHER`; maps keyed by pairs hold at most `MAX_PAIRS` entries, further
pairs being counted under ``(OTHER, OTHER)``.

Rates and their denominators (DESIGN.md §4 read for a gateway with a response cache):

- ``error_rate`` = errors (`Outcome.is_error`: failed, interrupted) / all requests;
- ``cache_hit_rate`` = hits / (hits + misses); bypassed and uncacheable requests are no lookups;
- ``fallback_rate`` = requests served by a route other than the rule's primary / requests
  served by a route: cache hits are answered without routing, so they are in neither part;
- ``routing_efficiency`` = requests efficient (served within budget by the first route tried)
  / requests that reached a routing decision: cache hits and requests refused or shed before a
  decision are not routing events and are left out of both parts.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any, TypeVar

from hybridroute.economics.pricing import money_text
from hybridroute.monitoring.histogram import LatencyHistogram
from hybridroute.observability.events import Outcome, RequestEvent

__all__ = [
    "MAX_KEYS",
    "MAX_PAIRS",
    "MAX_WINDOW_S",
    "OTHER",
    "OperationTraffic",
    "RouteTraffic",
    "TrafficTotals",
    "TrafficWindow",
]

OTHER = "other"
MAX_KEYS = 64
MAX_PAIRS = 256
MAX_WINDOW_S = 86_400.0

_TEN_SECONDS = 10
_MINUTE = 60
_HOUR = 3600
_TENS_KEPT = 61  # the newest 10 seconds and the 60 before them (10 minutes)
_TENS_WINDOW_S = 600
_MINUTES_KEPT = 61  # the newest minute and the 60 before it
_HOURS_KEPT = 25  # the newest hour and the 24 before it
_QUANTILES = (("p50_ms", 0.50), ("p90_ms", 0.90), ("p95_ms", 0.95), ("p99_ms", 0.99))

_K = TypeVar("_K")
_V = TypeVar("_V")


@dataclass(slots=True)
class RouteTraffic:
    """Requests attributed to one route.

    `served`, `fallbacks` (served by it as a fallback), `latency` (its generated answers),
    tokens and cost follow the route that answered (`event.route`), cache hits excepted;
    `errors` are attributed to the route that answered or, when none did, to the decision's
    first route.
    """

    served: int = 0
    fallbacks: int = 0
    errors: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    cost: Decimal = Decimal(0)
    latency: LatencyHistogram = field(default_factory=LatencyHistogram)

    def merge(self, other: RouteTraffic) -> None:
        self.served += other.served
        self.fallbacks += other.fallbacks
        self.errors += other.errors
        self.input_tokens += other.input_tokens
        self.output_tokens += other.output_tokens
        self.cost += other.cost
        self.latency.merge(other.latency)


@dataclass(slots=True)
class OperationTraffic:
    """Requests of one operation type."""

    requests: int = 0
    served: int = 0
    cached: int = 0
    errors: int = 0
    fallbacks: int = 0
    efficient: int = 0
    decided: int = 0
    cache_hits: int = 0
    cache_misses: int = 0
    latency: LatencyHistogram = field(default_factory=LatencyHistogram)  # generated answers

    def merge(self, other: OperationTraffic) -> None:
        self.requests += other.requests
        self.served += other.served
        self.cached += other.cached
        self.errors += other.errors
        self.fallbacks += other.fallbacks
        self.efficient += other.efficient
        self.decided += other.decided
        self.cache_hits += other.cache_hits
        self.cache_misses += other.cache_misses
        self.latency.merge(other.latency)


def _slot(mapping: dict[_K, Any], key: _K, overflow: _K, limit: int) -> _K:
    """The key to count `key` under: itself while the map has room, else `overflow`."""
    if key in mapping:
        return key
    named = len(mapping) - (overflow in mapping)
    return key if named < limit else overflow


def _entry(mapping: dict[str, _V], key: str, factory: Callable[[], _V]) -> tuple[str, _V]:
    """The (possibly folded) key and its entry, created when missing."""
    key = _slot(mapping, key, OTHER, MAX_KEYS)
    found = mapping.get(key)
    if found is None:
        found = mapping[key] = factory()
    return key, found


def _count(mapping: dict[str, int], key: str, n: int = 1) -> None:
    key = _slot(mapping, key, OTHER, MAX_KEYS)
    mapping[key] = mapping.get(key, 0) + n


def _count_pair(mapping: dict[tuple[str, str], int], key: tuple[str, str], n: int = 1) -> None:
    key = _slot(mapping, key, (OTHER, OTHER), MAX_PAIRS)
    mapping[key] = mapping.get(key, 0) + n


def _ratio(part: int, whole: int) -> float | None:
    return part / whole if whole else None


class TrafficTotals:
    """Counts of finished requests over some time range; buckets and query results alike.

    `window_s` is the range asked for; `span_s` the seconds of it the counts can cover: from
    the start of the oldest bucket included (or from when the window began observing, if
    later) to the query's `now`. `merge()` adds another part's counts and leaves `window_s`
    and `span_s` to the caller.
    """

    __slots__ = (
        "cache",
        "cached",
        "cached_latency",
        "cost",
        "decided",
        "efficient",
        "error_codes",
        "errors",
        "fallbacks",
        "generated_latency",
        "hedged",
        "input_tokens",
        "operation_error_codes",
        "operations",
        "outcomes",
        "output_tokens",
        "requests",
        "route_error_codes",
        "route_operations",
        "routes",
        "served",
        "span_s",
        "ttft",
        "window_s",
    )

    def __init__(self, window_s: float = 0.0, span_s: float = 0.0) -> None:
        self.window_s = window_s
        self.span_s = span_s
        self.requests = 0
        self.outcomes: dict[Outcome, int] = {}
        self.errors = 0
        self.decided = 0
        self.served = 0  # answered by a route (Outcome.SERVED)
        self.cached = 0  # answered from the cache (Outcome.CACHED)
        self.fallbacks = 0  # served, by a route other than the rule's primary
        self.efficient = 0  # decided and efficient
        self.cache: dict[str, int] = {}  # lookup result (hit | miss | bypass | off) -> count
        self.hedged = 0
        self.input_tokens = 0
        self.output_tokens = 0
        self.cost = Decimal(0)
        self.generated_latency = LatencyHistogram()
        self.cached_latency = LatencyHistogram()
        self.ttft = LatencyHistogram()
        self.routes: dict[str, RouteTraffic] = {}
        self.operations: dict[str, OperationTraffic] = {}
        self.route_operations: dict[tuple[str, str], int] = {}  # (route, operation) -> served
        self.error_codes: dict[str, int] = {}
        self.route_error_codes: dict[tuple[str, str], int] = {}
        self.operation_error_codes: dict[tuple[str, str], int] = {}

    # -- recording ----------------------------------------------------------------------------

    def add(self, event: RequestEvent) -> None:
        """Count one finished request (O(1))."""
        outcome = event.outcome
        self.requests += 1
        self.outcomes[outcome] = self.outcomes.get(outcome, 0) + 1
        is_error = outcome.is_error
        served = outcome is Outcome.SERVED
        fallback = served and event.fallback
        efficient = event.decided and event.efficient
        if is_error:
            self.errors += 1
        if event.decided:
            self.decided += 1
        if efficient:
            self.efficient += 1
        if served:
            self.served += 1
            self.generated_latency.add(event.latency_s)
            if fallback:
                self.fallbacks += 1
        elif outcome is Outcome.CACHED:
            self.cached += 1
            self.cached_latency.add(event.latency_s)
        if event.cache is not None:
            _count(self.cache, event.cache)
        if event.hedged:
            self.hedged += 1
        if event.ttft_s is not None:
            self.ttft.add(event.ttft_s)
        self.input_tokens += event.input_tokens
        self.output_tokens += event.output_tokens
        self.cost += event.cost
        operation = self._add_operation(event, is_error=is_error, efficient=efficient)
        route = self._add_route(event, is_error=is_error)
        if served and route is not None:
            _count_pair(self.route_operations, (route, operation))
        if event.error_code is not None:
            self._add_code(event.error_code, operation, route)

    def _add_code(self, error_code: str, operation: str, route: str | None) -> None:
        code = _slot(self.error_codes, error_code, OTHER, MAX_KEYS)
        self.error_codes[code] = self.error_codes.get(code, 0) + 1
        _count_pair(self.operation_error_codes, (operation, code))
        if route is not None:
            _count_pair(self.route_error_codes, (route, code))

    def _add_operation(self, event: RequestEvent, *, is_error: bool, efficient: bool) -> str:
        key, ops = _entry(self.operations, event.operation_type, OperationTraffic)
        ops.requests += 1
        outcome = event.outcome
        if outcome is Outcome.SERVED:
            ops.served += 1
            ops.latency.add(event.latency_s)
            if event.fallback:
                ops.fallbacks += 1
        elif outcome is Outcome.CACHED:
            ops.cached += 1
        if is_error:
            ops.errors += 1
        if event.decided:
            ops.decided += 1
        if efficient:
            ops.efficient += 1
        if event.cache == "hit":
            ops.cache_hits += 1
        elif event.cache == "miss":
            ops.cache_misses += 1
        return key

    def _add_route(self, event: RequestEvent, *, is_error: bool) -> str | None:
        """Count the route's part; returns the route the event is attributed to, if any.

        A cache hit is attributed to no route: the route that once produced the entry did no
        work for it (its tokens and cost, normally none, count in the totals only).
        """
        if event.outcome is Outcome.CACHED:
            return None
        answered = event.route
        if answered is not None:
            key, route = _entry(self.routes, answered, RouteTraffic)
            route.input_tokens += event.input_tokens
            route.output_tokens += event.output_tokens
            route.cost += event.cost
            if event.outcome is Outcome.SERVED:
                route.served += 1
                route.latency.add(event.latency_s)
                if event.fallback:
                    route.fallbacks += 1
            if is_error:
                route.errors += 1
            return key
        first = event.first_route
        if first is None:
            return None
        key, route = _entry(self.routes, first, RouteTraffic)
        if is_error:
            route.errors += 1
        return key

    # -- merging ------------------------------------------------------------------------------

    def merge(self, other: TrafficTotals) -> None:
        """Add `other`'s counts to these (keys beyond the caps fold into `OTHER`)."""
        self.requests += other.requests
        for outcome, n in other.outcomes.items():
            self.outcomes[outcome] = self.outcomes.get(outcome, 0) + n
        self.errors += other.errors
        self.decided += other.decided
        self.served += other.served
        self.cached += other.cached
        self.fallbacks += other.fallbacks
        self.efficient += other.efficient
        for result, n in other.cache.items():
            _count(self.cache, result, n)
        self.hedged += other.hedged
        self.input_tokens += other.input_tokens
        self.output_tokens += other.output_tokens
        self.cost += other.cost
        self.generated_latency.merge(other.generated_latency)
        self.cached_latency.merge(other.cached_latency)
        self.ttft.merge(other.ttft)
        for name, route in other.routes.items():
            _entry(self.routes, name, RouteTraffic)[1].merge(route)
        for name, ops in other.operations.items():
            _entry(self.operations, name, OperationTraffic)[1].merge(ops)
        for code, n in other.error_codes.items():
            _count(self.error_codes, code, n)
        self._merge_pairs(
            self.route_operations, other.route_operations, self.routes, self.operations
        )
        self._merge_pairs(
            self.route_error_codes, other.route_error_codes, self.routes, self.error_codes
        )
        self._merge_pairs(
            self.operation_error_codes,
            other.operation_error_codes,
            self.operations,
            self.error_codes,
        )

    @staticmethod
    def _merge_pairs(
        into: dict[tuple[str, str], int],
        pairs: dict[tuple[str, str], int],
        firsts: dict[str, Any],
        seconds: dict[str, Any],
    ) -> None:
        """Add pair counts, naming each side as the (already merged) single-key maps do."""
        for (first, second), n in pairs.items():
            key = (
                first if first in firsts else OTHER,
                second if second in seconds else OTHER,
            )
            _count_pair(into, key, n)

    @classmethod
    def merged(
        cls, parts: Iterable[TrafficTotals], window_s: float = 0.0, span_s: float = 0.0
    ) -> TrafficTotals:
        whole = cls(window_s, span_s)
        for part in parts:
            whole.merge(part)
        return whole

    # -- derived figures (None when the denominator is 0) -------------------------------------

    @property
    def cache_hits(self) -> int:
        return self.cache.get("hit", 0)

    @property
    def cache_misses(self) -> int:
        return self.cache.get("miss", 0)

    @property
    def cache_lookups(self) -> int:
        """Hits and misses: the requests that looked in the cache."""
        return self.cache_hits + self.cache_misses

    @property
    def error_rate(self) -> float | None:
        """Errors (failed, interrupted) over all requests."""
        return _ratio(self.errors, self.requests)

    @property
    def cache_hit_rate(self) -> float | None:
        """Hits over hits and misses."""
        return _ratio(self.cache_hits, self.cache_lookups)

    @property
    def fallback_rate(self) -> float | None:
        """Served by a route other than the primary, over requests served by a route."""
        return _ratio(self.fallbacks, self.served)

    @property
    def routing_efficiency(self) -> float | None:
        """Efficient requests over requests that reached a routing decision."""
        return _ratio(self.efficient, self.decided)

    @property
    def generation_p95_s(self) -> float | None:
        return self.generated_latency.quantile(0.95)

    @property
    def cached_p95_s(self) -> float | None:
        return self.cached_latency.quantile(0.95)

    @property
    def throughput_rps(self) -> float | None:
        """Requests per second over `span_s` (the time the included buckets cover)."""
        return self.requests / self.span_s if self.span_s > 0 else None

    # -- JSON views for the admin API ---------------------------------------------------------

    def _frame(self) -> dict[str, Any]:
        return {"window_s": self.window_s, "span_s": round(self.span_s, 1)}

    def routing_distribution(self) -> dict[str, Any]:
        """Which routes served what: shares overall and per operation type."""
        per_operation: dict[str, dict[str, int]] = {}
        for (route, operation), n in sorted(self.route_operations.items()):
            per_operation.setdefault(operation, {})[route] = n
        return {
            **self._frame(),
            "served": self.served,
            "fallbacks": self.fallbacks,
            "fallback_rate": _rounded(self.fallback_rate),
            "cost": _decimal_text(self.cost),
            "input_tokens": self.input_tokens,
            "output_tokens": self.output_tokens,
            "routes": {
                name: {
                    "served": r.served,
                    "share": _rounded(_ratio(r.served, self.served)),
                    "fallbacks": r.fallbacks,
                    "cost": _decimal_text(r.cost),
                    "input_tokens": r.input_tokens,
                    "output_tokens": r.output_tokens,
                }
                for name, r in sorted(self.routes.items())
            },
            "operations": {
                name: {
                    "requests": o.requests,
                    "served": per_operation.get(name, {}),
                    "fallbacks": o.fallbacks,
                    "fallback_rate": _rounded(_ratio(o.fallbacks, o.served)),
                }
                for name, o in sorted(self.operations.items())
            },
        }

    def provider_latencies(self) -> dict[str, Any]:
        """Latency percentiles of generated answers per route, of cache hits, and of TTFT."""
        return {
            **self._frame(),
            "routes": {
                name: {**_percentiles(r.latency), "errors": r.errors}
                for name, r in sorted(self.routes.items())
            },
            "cached": _percentiles(self.cached_latency),
            "ttft": _percentiles(self.ttft),
        }

    def cache_performance(self) -> dict[str, Any]:
        """Cache lookups and their results, the hit rate, and cached-answer latency."""
        cached = _percentiles(self.cached_latency)
        return {
            **self._frame(),
            "lookups": self.cache_lookups,
            "hits": self.cache_hits,
            "misses": self.cache_misses,
            "bypasses": self.cache.get("bypass", 0),
            "uncacheable": self.cache.get("off", 0),
            "hit_rate": _rounded(self.cache_hit_rate),
            "cached_p50_ms": cached["p50_ms"],
            "cached_p95_ms": cached["p95_ms"],
            "cached_p99_ms": cached["p99_ms"],
            "operations": {
                name: {
                    "hits": o.cache_hits,
                    "misses": o.cache_misses,
                    "hit_rate": _rounded(_ratio(o.cache_hits, o.cache_hits + o.cache_misses)),
                }
                for name, o in sorted(self.operations.items())
            },
        }

    def error_breakdown(self) -> dict[str, Any]:
        """Errors overall, per error code, per route and per operation type; all outcomes."""
        coded = sum(self.error_codes.values())
        route_codes: dict[str, dict[str, int]] = {}
        for (route, code), n in sorted(self.route_error_codes.items()):
            route_codes.setdefault(route, {})[code] = n
        operation_codes: dict[str, dict[str, int]] = {}
        for (operation, code), n in sorted(self.operation_error_codes.items()):
            operation_codes.setdefault(operation, {})[code] = n
        return {
            **self._frame(),
            "requests": self.requests,
            "errors": self.errors,
            "error_rate": _rounded(self.error_rate),
            "codes": {
                code: {"count": n, "share": _rounded(_ratio(n, coded))}
                for code, n in sorted(self.error_codes.items())
            },
            "routes": {
                name: {"errors": r.errors, "codes": route_codes.get(name, {})}
                for name, r in sorted(self.routes.items())
            },
            "operations": {
                name: {
                    "requests": o.requests,
                    "errors": o.errors,
                    "error_rate": _rounded(_ratio(o.errors, o.requests)),
                    "codes": operation_codes.get(name, {}),
                }
                for name, o in sorted(self.operations.items())
            },
            "outcomes": {o.value: self.outcomes.get(o, 0) for o in Outcome},
        }


def _rounded(value: float | None, digits: int = 4) -> float | None:
    return None if value is None else round(value, digits)


def _ms(seconds: float | None) -> float | None:
    return None if seconds is None else round(seconds * 1000.0, 1)


def _percentiles(histogram: LatencyHistogram) -> dict[str, Any]:
    figures: dict[str, Any] = {"count": histogram.count}
    for name, q in _QUANTILES:
        figures[name] = _ms(histogram.quantile(q))
    figures["max_ms"] = _ms(histogram.quantile(1.0))
    figures["mean_ms"] = _ms(histogram.mean_s)
    return figures


def _decimal_text(value: Decimal) -> str:
    """Plain decimal text without trailing zeros or exponent (`1E-7` reads as `0.0000001`)."""
    return money_text(value)


class _Level:
    """The buckets of one resolution: `kept` of them, counted back from the newest."""

    __slots__ = ("buckets", "kept", "newest", "resolution")

    def __init__(self, resolution: int, kept: int) -> None:
        self.resolution = resolution
        self.kept = kept
        self.buckets: dict[int, TrafficTotals] = {}
        self.newest: int | None = None

    def place(self, at: float) -> TrafficTotals | None:
        """The bucket of `at` (created), or None when it is older than what is kept."""
        index = math.floor(at / self.resolution)
        if self.newest is None or index > self.newest:
            self.newest = index
            horizon = index - self.kept
            for old in [i for i in self.buckets if i <= horizon]:
                del self.buckets[old]
        elif index <= self.newest - self.kept:
            return None
        bucket = self.buckets.get(index)
        if bucket is None:
            bucket = self.buckets[index] = TrafficTotals()
        return bucket


class TrafficWindow:
    """Finished requests in 10-second buckets (last 10 minutes), minute buckets (last hour) and
    hour buckets (last day).

    `started_at` is when the window began observing (the gateway's start); without it, the
    earliest event recorded stands in. It only bounds `span_s`.
    """

    __slots__ = ("_levels", "_start", "invalid_dropped", "late_dropped")

    def __init__(self, started_at: float | None = None) -> None:
        self._levels = (
            _Level(_TEN_SECONDS, _TENS_KEPT),
            _Level(_MINUTE, _MINUTES_KEPT),
            _Level(_HOUR, _HOURS_KEPT),
        )
        self._start = started_at
        self.late_dropped = 0  # older than every bucket still kept
        self.invalid_dropped = 0  # `at` not a finite number

    def record(self, event: RequestEvent) -> None:
        """Count one finished request in the buckets of its `at`, one per resolution (O(1))."""
        at = event.at
        if not math.isfinite(at):
            self.invalid_dropped += 1
            return
        placed = False
        for level in self._levels:
            bucket = level.place(at)
            if bucket is not None:
                bucket.add(event)
                placed = True
        if not placed:
            self.late_dropped += 1
            return
        if self._start is None or at < self._start:
            self._start = at

    def _range(self, window_s: float, now: float) -> tuple[_Level, int, int]:
        """(level, oldest index, newest index) of the buckets a window overlaps."""
        if not (math.isfinite(window_s) and 0 < window_s <= MAX_WINDOW_S):
            raise ValueError(
                f"window_s must be more than 0 and at most {MAX_WINDOW_S:.0f} s (24 h), "
                f"got {window_s!r}"
            )
        if not math.isfinite(now):
            raise ValueError(f"now must be a finite time, got {now!r}")
        if window_s <= _TENS_WINDOW_S:
            level = self._levels[0]
        elif window_s <= _HOUR:
            level = self._levels[1]
        else:
            level = self._levels[2]
        r = level.resolution
        return level, math.floor((now - window_s) / r), math.floor(now / r)

    def _span(self, begin: float, end: float) -> float:
        if self._start is None:
            return 0.0
        return max(0.0, end - max(begin, self._start))

    def totals(self, window_s: float, now: float) -> TrafficTotals:
        """Everything in the buckets overlapping ``(now - window_s, now]``.

        10-second buckets for windows up to 600 s, minute buckets up to 3600 s, hour buckets
        beyond; at most 86 400 s.
        """
        level, oldest, newest = self._range(window_s, now)
        buckets = level.buckets
        return TrafficTotals.merged(
            (buckets[i] for i in range(oldest, newest + 1) if i in buckets),
            window_s=window_s,
            span_s=self._span(oldest * level.resolution, now),
        )

    def series(self, window_s: float, step_s: float, now: float) -> list[TrafficTotals]:
        """`totals(window_s, now)` cut into steps of `step_s`, oldest first.

        The newest step ends with the bucket holding `now`; steps are whole buckets, so
        `step_s` must be a multiple of the window's resolution (60 s up to an hour, 3600 s
        beyond). The oldest step may hold fewer buckets; together the steps hold exactly what
        `totals()` does. Each step's `window_s` is `step_s`.
        """
        level, oldest, newest = self._range(window_s, now)
        resolution = level.resolution
        per_step = step_s / resolution
        if not (math.isfinite(per_step) and per_step >= 1 and per_step == int(per_step)):
            raise ValueError(
                f"step_s must be a positive multiple of {resolution} s for a {window_s!r} s "
                f"window, got {step_s!r}"
            )
        width = int(per_step)
        buckets = level.buckets
        steps: list[TrafficTotals] = []
        end = newest
        while end >= oldest:
            first = max(oldest, end - width + 1)
            span = self._span(first * resolution, min((end + 1) * resolution, now))
            steps.append(
                TrafficTotals.merged(
                    (buckets[i] for i in range(first, end + 1) if i in buckets),
                    window_s=step_s,
                    span_s=span,
                )
            )
            end = first - 1
        steps.reverse()
        return steps

    def hour_bucket(self, index: int) -> TrafficTotals | None:
        """The hour bucket `index` (hours since the epoch), if it is still kept; the caller
        must not change it."""
        return self._levels[2].buckets.get(index)

    def bucket_counts(self) -> tuple[int, int, int]:
        """(10-second, minute, hour buckets) held now: for tests and a memory gauge."""
        tens, minutes, hours = self._levels
        return len(tens.buckets), len(minutes.buckets), len(hours.buckets)
