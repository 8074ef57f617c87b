"""Request tracing: the spans one finished request becomes, their attributes, parent/child links,
timing and status, sampling, and that tracing off costs nothing (not even an import)."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Iterator, Sequence
from decimal import Decimal
from typing import Any

import pytest
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode

from hybridroute.config.observability import TracingConfig
from hybridroute.monitoring.records import HEDGE_CANCELLED as MONITORING_HEDGE_CANCELLED
from hybridroute.observability.events import Outcome, RequestEvent
from hybridroute.observability.tracing import HEDGE_CANCELLED, RequestTracer, attempt_windows
from hybridroute.types import Attempt, AttemptOutcome, RouteKind

KINDS = {"direct_bedrock": RouteKind.BEDROCK, "mcp": RouteKind.MCP}
AT = 1_750_000_000.0  # wall-clock end of every request here
NS = 1_000_000_000
MS = 1_000_000


def event(**changes: Any) -> RequestEvent:
    values: dict[str, Any] = {
        "at": AT,
        "operation_type": "infrastructure",
        "priority": "critical",
        "tenant": "acme",
        "outcome": Outcome.SERVED,
        "status": 200,
        "latency_s": 0.5,
        "route": "direct_bedrock",
        "primary": "direct_bedrock",
        "first_route": "direct_bedrock",
        "efficient": True,
        "cache": "miss",
        "input_tokens": 12,
        "output_tokens": 34,
        "cost": Decimal("0.000546"),
        "model": "anthropic.claude-3-5-sonnet-20240620-v1:0",
        "decision_id": "dec-1",
        "reason": "primary healthy",
        "attempts": (Attempt("direct_bedrock", AttemptOutcome.OK, 400.0),),
    }
    values.update(changes)
    return RequestEvent(**values)


class Traced:
    """A running tracer over an in-memory exporter; `spans()` flushes and reads them."""

    def __init__(self, **config: Any) -> None:
        self.exporter = InMemorySpanExporter()
        self.tracer = RequestTracer(
            TracingConfig(enabled=True, service_name="gw-test", **config),
            route_kinds=KINDS,
            exporter=self.exporter,
            service_version="9.9.9",
        )
        self.tracer.start()

    def spans(self) -> list[ReadableSpan]:
        assert self.tracer.shutdown() is True
        return list(self.exporter.get_finished_spans())

    def one_request(self) -> tuple[ReadableSpan, list[ReadableSpan]]:
        """The request's span and its attempts' spans, in start order."""
        spans = self.spans()
        roots = [s for s in spans if s.parent is None]
        assert len(roots) == 1
        root = roots[0]
        children = sorted((s for s in spans if s.parent is not None), key=start_of)
        for child in children:
            assert child.parent is not None
            assert child.parent.span_id == root.context.span_id
            assert child.context.trace_id == root.context.trace_id
        return root, children


def start_of(span: ReadableSpan) -> int:
    assert span.start_time is not None
    return span.start_time


def window(span: ReadableSpan) -> tuple[int, int]:
    assert span.start_time is not None
    assert span.end_time is not None
    return span.start_time, span.end_time


def attrs(span: ReadableSpan) -> dict[str, Any]:
    return dict(span.attributes or {})


@pytest.fixture
def traced() -> Iterator[Traced]:
    t = Traced()
    yield t
    t.tracer.shutdown()


def test_a_served_request_after_a_fallback(traced: Traced):
    traced.tracer.record(
        event(
            route="mcp",
            fallback=True,
            efficient=False,
            model="mcp-small",
            attempts=(
                Attempt(
                    "direct_bedrock",
                    AttemptOutcome.FAILED,
                    120.0,
                    "upstream unavailable (503)",
                    "upstream_unavailable",
                ),
                Attempt("mcp", AttemptOutcome.OK, 300.0),
            ),
        )
    )
    root, (first, second) = traced.one_request()

    assert root.name == "chat infrastructure"
    assert root.kind is SpanKind.SERVER
    assert root.status.status_code is StatusCode.UNSET
    assert window(root) == (int(AT * NS) - int(0.5 * NS), int(AT * NS))
    a = attrs(root)
    assert a["gen_ai.operation.name"] == "chat"
    assert a["gen_ai.system"] == a["gen_ai.provider.name"] == "mcp"  # the route that served
    assert a["gen_ai.request.model"] == a["gen_ai.response.model"] == "mcp-small"
    assert (a["gen_ai.usage.input_tokens"], a["gen_ai.usage.output_tokens"]) == (12, 34)
    assert a["http.response.status_code"] == a["hybridroute.status"] == 200
    assert a["hybridroute.decision_id"] == "dec-1"
    assert a["hybridroute.operation_type"] == "infrastructure"
    assert a["hybridroute.priority"] == "critical"
    assert a["hybridroute.tenant"] == "acme"
    assert a["hybridroute.route"] == "mcp"
    assert a["hybridroute.primary"] == a["hybridroute.first_route"] == "direct_bedrock"
    assert a["hybridroute.fallback"] is True
    assert a["hybridroute.hedged"] is False
    assert a["hybridroute.outcome"] == "served"
    assert a["hybridroute.cache"] == "miss"
    assert a["hybridroute.cost"] == "0.000546"
    assert a["hybridroute.currency"] == "USD"
    assert a["hybridroute.reason"] == "primary healthy"
    assert a["hybridroute.attempt_count"] == 2
    assert "hybridroute.error_code" not in a  # None values are left out
    assert "hybridroute.ttft_s" not in a

    # Attempts: children, laid end to end from the request's start.
    start = int(AT * NS) - int(0.5 * NS)
    assert first.name == "attempt direct_bedrock"
    assert first.kind is SpanKind.CLIENT
    assert window(first) == (start, start + 120 * MS)
    assert window(second) == (start + 120 * MS, start + 420 * MS)
    assert first.status.status_code is StatusCode.ERROR
    assert first.status.description == "upstream unavailable (503)"
    assert attrs(first) == {
        "gen_ai.operation.name": "chat",
        "gen_ai.system": "aws.bedrock",
        "gen_ai.provider.name": "aws.bedrock",
        "hybridroute.route": "direct_bedrock",
        "hybridroute.attempt.outcome": "failed",
        "hybridroute.attempt.code": "upstream_unavailable",
        "hybridroute.attempt.detail": "upstream unavailable (503)",
        "hybridroute.attempt.duration_ms": 120.0,
    }
    assert second.name == "attempt mcp"
    assert second.status.status_code is StatusCode.UNSET
    assert attrs(second)["hybridroute.attempt.outcome"] == "ok"
    assert attrs(second)["gen_ai.system"] == "mcp"

    # The resource names the service.
    assert root.resource.attributes["service.name"] == "gw-test"
    assert root.resource.attributes["service.version"] == "9.9.9"


def test_a_hedged_race_overlaps_the_loser_with_the_winner(traced: Traced):
    traced.tracer.record(
        event(
            route="mcp",
            hedged=True,
            stream=True,
            ttft_s=0.45,
            latency_s=0.6,
            attempts=(
                Attempt(
                    "direct_bedrock",
                    AttemptOutcome.CANCELLED,
                    450.0,
                    "lost the hedge race",
                    HEDGE_CANCELLED,
                ),
                Attempt("mcp", AttemptOutcome.OK, 200.0),
            ),
        )
    )
    root, (loser, winner) = traced.one_request()
    start = start_of(root)
    # The primary started first; the hedge won 250 ms after it started; both end together.
    assert window(loser) == (start, start + 450 * MS)
    assert window(winner) == (start + 250 * MS, start + 450 * MS)
    assert loser.status.status_code is StatusCode.UNSET  # losing a race is not an error
    assert attrs(loser)["hybridroute.attempt.code"] == "hedge_cancelled"
    assert attrs(loser)["hybridroute.attempt.outcome"] == "cancelled"
    a = attrs(root)
    assert a["hybridroute.hedged"] is True
    assert a["hybridroute.stream"] is True
    assert a["hybridroute.ttft_s"] == 0.45


def test_a_cache_hit_is_one_span_without_attempts(traced: Traced):
    traced.tracer.record(
        event(outcome=Outcome.CACHED, cache="hit", latency_s=0.004, cost=Decimal(0), attempts=())
    )
    spans = traced.spans()
    assert len(spans) == 1
    (span,) = spans
    assert span.name == "chat infrastructure"
    assert window(span) == (int(AT * NS) - int(0.004 * NS), int(AT * NS))
    a = attrs(span)
    assert a["hybridroute.cache"] == "hit"
    assert a["hybridroute.outcome"] == "cached"
    assert a["hybridroute.cost"] == "0"
    assert a["hybridroute.attempt_count"] == 0
    assert span.status.status_code is StatusCode.UNSET


def test_a_failure_is_an_error_span(traced: Traced):
    traced.tracer.record(
        event(
            outcome=Outcome.FAILED,
            status=503,
            route=None,
            model=None,
            efficient=False,
            output_tokens=0,
            error_code="all_routes_failed",
            attempts=(
                Attempt("direct_bedrock", AttemptOutcome.FAILED, 100.0, "timed out", "timeout"),
                Attempt("mcp", AttemptOutcome.FAILED, 50.0, "refused", "upstream_unavailable"),
            ),
        )
    )
    root, children = traced.one_request()
    assert root.status.status_code is StatusCode.ERROR
    assert root.status.description == "all_routes_failed"
    a = attrs(root)
    assert a["http.response.status_code"] == 503
    assert a["hybridroute.error_code"] == "all_routes_failed"
    assert a["hybridroute.outcome"] == "failed"
    assert "hybridroute.route" not in a
    assert "gen_ai.system" not in a
    assert "gen_ai.response.model" not in a
    assert [c.status.status_code for c in children] == [StatusCode.ERROR, StatusCode.ERROR]
    start = start_of(root)
    assert [window(c) for c in children] == [
        (start, start + 100 * MS),
        (start + 100 * MS, start + 150 * MS),
    ]


@pytest.mark.parametrize(
    ("outcome", "status", "error"),
    [
        (Outcome.INTERRUPTED, 200, True),
        (Outcome.REFUSED, 402, False),
        (Outcome.SHED, 429, False),
        (Outcome.ABANDONED, 499, False),
    ],
)
def test_only_failed_and_interrupted_requests_are_errors(
    traced: Traced, outcome: Outcome, status: int, error: bool
):
    traced.tracer.record(event(outcome=outcome, status=status, attempts=()))
    (span,) = traced.spans()
    expected = StatusCode.ERROR if error else StatusCode.UNSET
    assert span.status.status_code is expected
    if error:
        assert span.status.description == "interrupted"  # no error code: the outcome


def test_every_event_is_its_own_trace(traced: Traced):
    for i in range(3):
        traced.tracer.record(event(decision_id=f"dec-{i}"))
    spans = traced.spans()
    roots = [s for s in spans if s.parent is None]
    assert sorted(attrs(s)["hybridroute.decision_id"] for s in roots) == [
        "dec-0",
        "dec-1",
        "dec-2",
    ]
    assert len({s.context.trace_id for s in roots}) == 3
    assert len(spans) == 6


def test_sample_ratio_zero_records_nothing():
    t = Traced(sample_ratio=0.0)
    for _ in range(20):
        t.tracer.record(event())
    assert t.spans() == []


def test_the_console_exporter_writes_spans_to_stdout(capsys: pytest.CaptureFixture[str]):
    tracer = RequestTracer(TracingConfig(enabled=True, exporter="console"), route_kinds=KINDS)
    tracer.start()
    tracer.record(event(decision_id="dec-console"))
    assert tracer.shutdown() is True
    out = capsys.readouterr().out
    assert '"name": "chat infrastructure"' in out
    assert '"name": "attempt direct_bedrock"' in out
    assert "dec-console" in out


def test_record_outside_start_and_shutdown_is_a_no_op():
    exporter = InMemorySpanExporter()
    tracer = RequestTracer(TracingConfig(enabled=True), exporter=exporter)
    tracer.record(event())  # not started
    assert repr(tracer) == "<RequestTracer stopped otlp_http>"
    tracer.start()
    tracer.start()  # idempotent
    assert tracer.running
    tracer.record(event(attempts=()))
    assert tracer.shutdown() is True
    tracer.record(event())  # after shutdown
    assert tracer.shutdown() is True  # idempotent
    assert [s.name for s in exporter.get_finished_spans()] == ["chat infrastructure"]


class StuckExporter(SpanExporter):
    """An exporter whose export hangs until released (a collector that does not answer)."""

    def __init__(self) -> None:
        self.entered = threading.Event()
        self.release = threading.Event()

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        self.entered.set()
        self.release.wait(10)
        return SpanExportResult.SUCCESS

    def shutdown(self) -> None:
        self.release.set()


def test_shutdown_is_bounded_when_the_export_hangs():
    exporter = StuckExporter()
    tracer = RequestTracer(TracingConfig(enabled=True), exporter=exporter)
    tracer.start()
    tracer.record(event())
    started = time.monotonic()
    try:
        assert tracer.shutdown(timeout_s=0.2) is False
        assert time.monotonic() - started < 2
        assert exporter.entered.is_set()
        assert not tracer.running
        tracer.record(event())  # stopped: a no-op, even while the export still hangs
    finally:
        exporter.release.set()


def test_record_never_raises(traced: Traced, caplog: pytest.LogCaptureFixture):
    traced.tracer.record("not an event")  # type: ignore[arg-type]
    traced.tracer.record(None)  # type: ignore[arg-type]
    assert traced.tracer.failures == 2
    assert len([r for r in caplog.records if "could not trace" in r.getMessage()]) == 1
    traced.tracer.record(event())  # and it goes on tracing
    assert len(traced.spans()) == 2


@pytest.mark.anyio
async def test_aclose_flushes_without_blocking_the_loop():
    exporter = InMemorySpanExporter()
    tracer = RequestTracer(TracingConfig(enabled=True), exporter=exporter)
    tracer.start()
    tracer.record(event())
    await tracer.aclose()
    assert not tracer.running
    assert len(exporter.get_finished_spans()) == 2


def test_off_by_default_is_a_no_op():
    tracer = RequestTracer(TracingConfig(), route_kinds=KINDS)
    assert not tracer.enabled
    tracer.start()
    assert not tracer.running
    tracer.record(event())
    assert tracer.shutdown() is True
    assert repr(tracer) == "<RequestTracer off otlp_http>"


def test_off_by_default_imports_nothing_of_opentelemetry():
    """In a fresh interpreter: import the module, build, start, record, shut down; no
    `opentelemetry` module may be loaded."""
    script = textwrap.dedent(
        """
        import sys
        from hybridroute.config.observability import TracingConfig
        from hybridroute.observability.events import Outcome, RequestEvent
        from hybridroute.observability.tracing import RequestTracer
        from hybridroute.types import RouteKind

        tracer = RequestTracer(TracingConfig(), route_kinds={"mcp": RouteKind.MCP})
        tracer.start()
        tracer.record(RequestEvent(
            at=1.0, operation_type="standard", priority="medium", tenant="t",
            outcome=Outcome.SERVED, status=200, latency_s=0.1,
        ))
        tracer.shutdown()
        loaded = sorted(m for m in sys.modules if m.split(".")[0] == "opentelemetry")
        print("loaded:", loaded)
        sys.exit(1 if loaded else 0)
        """
    )
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "loaded: []" in result.stdout


def test_hedge_cancelled_is_the_executors_code():
    assert HEDGE_CANCELLED == MONITORING_HEDGE_CANCELLED


# -- attempt placement ------------------------------------------------------------------------


def a(route: str, outcome: AttemptOutcome, ms: float, code: str | None = None) -> Attempt:
    return Attempt(route, outcome, ms, code=code)


def test_attempts_are_laid_end_to_end():
    attempts = [
        a("direct_bedrock", AttemptOutcome.SKIPPED, 0, "breaker_open"),
        a("direct_bedrock", AttemptOutcome.FAILED, 10),
        a("mcp", AttemptOutcome.OK, 5),
    ]
    assert attempt_windows(1000, attempts) == [
        (1000, 1000),
        (1000, 1000 + 10 * MS),
        (1000 + 10 * MS, 1000 + 15 * MS),
    ]


def test_a_race_won_by_the_primary_ends_the_hedge_with_it():
    attempts = [
        a("direct_bedrock", AttemptOutcome.OK, 300),
        a("mcp", AttemptOutcome.CANCELLED, 100, HEDGE_CANCELLED),
    ]
    assert attempt_windows(0, attempts) == [(0, 300 * MS), (200 * MS, 300 * MS)]


def test_attempts_after_a_race_start_at_its_end():
    # The primary failed fast and was retried; the retry raced a hedge and won.
    attempts = [
        a("direct_bedrock", AttemptOutcome.FAILED, 50),
        a("direct_bedrock", AttemptOutcome.OK, 300),
        a("mcp", AttemptOutcome.CANCELLED, 100, HEDGE_CANCELLED),
    ]
    assert attempt_windows(0, attempts) == [
        (0, 50 * MS),
        (50 * MS, 350 * MS),
        (250 * MS, 350 * MS),
    ]


def test_a_request_cancelled_mid_attempt_is_sequential():
    # Cancelled because the request ended (no hedge code): not a race.
    attempts = [
        a("direct_bedrock", AttemptOutcome.FAILED, 40),
        a("mcp", AttemptOutcome.CANCELLED, 60),
    ]
    assert attempt_windows(0, attempts) == [(0, 40 * MS), (40 * MS, 100 * MS)]


def test_a_race_without_a_winner_is_sequential():
    attempts = [
        a("direct_bedrock", AttemptOutcome.CANCELLED, 40, HEDGE_CANCELLED),
        a("mcp", AttemptOutcome.FAILED, 60),
    ]
    assert attempt_windows(0, attempts) == [(0, 40 * MS), (40 * MS, 100 * MS)]
