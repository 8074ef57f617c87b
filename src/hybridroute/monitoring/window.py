"""The rolling window: request and attempt counts in time slices, merged on demand.

The window (`health.window_s`, five minutes by default) is cut into 60 slices. Recording a
request touches only the current slice — a few counters and a histogram bin per route — so the
request path pays O(1); a report merges the live slices. Memory is bounded by slices × operation
types × routes, whatever the traffic.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import TypeVar

from hybridroute.monitoring.histogram import LatencyHistogram
from hybridroute.monitoring.records import RequestOutcome, RequestRecord
from hybridroute.types import AttemptOutcome, Priority, RouteId

__all__ = ["OperationCounts", "RollingWindow", "RouteCounts", "WindowTotals"]

SLICES = 60


@dataclass(slots=True)
class OperationCounts:
    """Requests of one operation type."""

    requests: int = 0
    served: int = 0
    failed: int = 0
    shed: int = 0
    interrupted: int = 0
    abandoned: int = 0
    eligible: int = 0  # primary allowed and healthy: the routing-accuracy denominator
    accurate: int = 0
    efficient: int = 0
    fallback: int = 0
    served_elsewhere: int = 0  # served, but not by the first route tried
    within_budget: int = 0
    hedged: int = 0  # requests whose fallback was started alongside the primary (hedge races)
    hedges_lost: int = 0  # ... of which the primary lost: cancelled because the hedge answered
    latency: LatencyHistogram = field(default_factory=LatencyHistogram)

    def add(self, record: RequestRecord) -> None:
        self.requests += 1
        outcome = record.outcome
        if outcome is RequestOutcome.SERVED:
            self.served += 1
            self.latency.add(record.latency_s)
            if record.within_budget:
                self.within_budget += 1
            if record.served_route != record.primary:
                self.fallback += 1
            if record.efficient:
                self.efficient += 1
            if record.served_route != record.first_tried:
                self.served_elsewhere += 1
        elif outcome is RequestOutcome.FAILED:
            self.failed += 1
        elif outcome is RequestOutcome.SHED:
            self.shed += 1
        elif outcome is RequestOutcome.INTERRUPTED:
            self.interrupted += 1
        else:
            self.abandoned += 1
        if record.primary_eligible:
            self.eligible += 1
            if record.accurate:
                self.accurate += 1
        if record.hedged:
            self._add_race(record)

    def _add_race(self, record: RequestRecord) -> None:
        """A hedge race: counted, and whether its primary (the first route tried) lost it."""
        self.hedged += 1
        loser = record.hedge_loser
        if loser is not None and loser == record.first_tried:
            self.hedges_lost += 1

    def merge(self, other: OperationCounts) -> None:
        for name in _OPERATION_INTS:
            setattr(self, name, getattr(self, name) + getattr(other, name))
        self.latency.merge(other.latency)


_OPERATION_INTS = tuple(n for n in OperationCounts.__slots__ if n != "latency")


@dataclass(slots=True)
class RouteCounts:
    """Attempts on one route, and the requests it served."""

    attempts: int = 0
    ok: int = 0
    failed: int = 0
    skipped: int = 0
    cancelled: int = 0
    served: int = 0
    hedges_won: int = 0  # hedge races it won: it answered first, the other side was cancelled
    hedges_lost: int = 0  # hedge races it lost: cancelled because the other side answered
    latency: LatencyHistogram = field(default_factory=LatencyHistogram)  # successful attempts

    def add(self, outcome: AttemptOutcome, duration_s: float) -> None:
        if outcome is AttemptOutcome.SKIPPED:
            self.skipped += 1
            return
        self.attempts += 1
        if outcome is AttemptOutcome.OK:
            self.ok += 1
            self.latency.add(duration_s)
        elif outcome is AttemptOutcome.FAILED:
            self.failed += 1
        else:
            self.cancelled += 1

    def merge(self, other: RouteCounts) -> None:
        for name in _ROUTE_INTS:
            setattr(self, name, getattr(self, name) + getattr(other, name))
        self.latency.merge(other.latency)


_ROUTE_INTS = tuple(n for n in RouteCounts.__slots__ if n != "latency")


_C = TypeVar("_C", OperationCounts, RouteCounts)


@dataclass(slots=True)
class _Slice:
    start: float
    operations: dict[str, OperationCounts] = field(default_factory=dict)
    routes: dict[RouteId, RouteCounts] = field(default_factory=dict)
    shed_by_priority: dict[Priority, int] = field(default_factory=dict)


@dataclass(slots=True)
class WindowTotals:
    """Everything in the window, merged."""

    span_s: float
    operations: dict[str, OperationCounts]
    routes: dict[RouteId, RouteCounts]
    shed_by_priority: dict[Priority, int]

    def total(self) -> OperationCounts:
        whole = OperationCounts()
        for counts in self.operations.values():
            whole.merge(counts)
        return whole


class RollingWindow:
    """Counts over the last `window_s` seconds, in `SLICES` slices."""

    __slots__ = ("_created", "_slice_s", "_slices", "window_s")

    def __init__(self, window_s: float, now: float) -> None:
        self.window_s = window_s
        self._slice_s = window_s / SLICES
        self._slices: deque[_Slice] = deque()
        self._created = now

    def _current(self, now: float) -> _Slice:
        slices = self._slices
        if slices and now < slices[-1].start + self._slice_s:
            return slices[-1]
        start = now - (now - self._created) % self._slice_s
        current = _Slice(start)
        slices.append(current)
        self._expire(now)
        return current

    def _expire(self, now: float) -> None:
        slices = self._slices
        horizon = now - self.window_s
        while slices and slices[0].start + self._slice_s <= horizon:
            slices.popleft()

    def add(self, record: RequestRecord, now: float) -> None:
        current = self._current(now)
        operations = current.operations
        counts = operations.get(record.operation_type)
        if counts is None:
            counts = operations[record.operation_type] = OperationCounts()
        counts.add(record)
        routes = current.routes
        for attempt in record.attempts:
            route = routes.get(attempt.route)
            if route is None:
                route = routes[attempt.route] = RouteCounts()
            route.add(attempt.outcome, attempt.duration_ms / 1000.0)
        if record.served_route is not None and record.served:
            served = routes.get(record.served_route)
            if served is None:
                served = routes[record.served_route] = RouteCounts()
            served.served += 1
            loser = record.hedge_loser
            if loser is not None:
                served.hedges_won += 1
                routes[loser].hedges_lost += 1  # it has a cancelled attempt, so it is in routes
        if record.outcome is RequestOutcome.SHED:
            shed = current.shed_by_priority
            shed[record.priority] = shed.get(record.priority, 0) + 1

    def totals(self, now: float) -> WindowTotals:
        self._expire(now)
        operations: dict[str, OperationCounts] = {}
        routes: dict[RouteId, RouteCounts] = {}
        shed: dict[Priority, int] = {}
        for part in self._slices:
            _merge_into(operations, part.operations.items(), OperationCounts)
            _merge_into(routes, part.routes.items(), RouteCounts)
            for priority, n in part.shed_by_priority.items():
                shed[priority] = shed.get(priority, 0) + n
        span = min(self.window_s, max(now - self._created, 1e-9))
        return WindowTotals(span, operations, routes, shed)

    def route_latency(self, route: RouteId, now: float) -> LatencyHistogram:
        """Successful-attempt latencies of one route in the window."""
        self._expire(now)
        return LatencyHistogram.merged(
            part.routes[route].latency for part in self._slices if route in part.routes
        )


def _merge_into(into: dict[str, _C], items: Iterable[tuple[str, _C]], factory: type[_C]) -> None:
    for key, counts in items:
        mine = into.get(key)
        if mine is None:
            mine = into[key] = factory()
        mine.merge(counts)
