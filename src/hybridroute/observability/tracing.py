"""OpenTelemetry tracing of each finished request (optional, off by default).

`RequestTracer` is a gateway observer: every `RequestEvent` becomes one span
"chat <operation_type>" with a child span "attempt <route>" per attempt. The event arrives after
the request ended, so the spans are written after the fact with explicit start and end times
(the request's span starts at `at - latency_s` and ends at `at`).

Cost. With tracing off (the default) nothing of OpenTelemetry is imported, no thread is started
and `record()` returns at its first check. With it on, `opentelemetry` is imported by `start()`,
and `record()` builds the spans in memory and hands them to the SDK's `BatchSpanProcessor`: a
bounded queue (2048 spans unless `OTEL_BSP_MAX_QUEUE_SIZE` says otherwise) that its own worker
thread exports from (every few seconds, or sooner when a batch is full). No network I/O happens
on the request path. Sampling is `TraceIdRatioBased(sample_ratio)`; a request that is not
sampled costs one sampler call and an empty span. The provider is the tracer's own, never the
process-global one, so a reload's new Runtime gets its own.

Failures. `record()` never raises: a bug in turning an event into spans is logged once and
counted (`failures`). Export failures (collector down, a slow network, a full queue) are the
SDK's: it logs them (logger `opentelemetry.*`) and drops the batch; the gateway never sees them.

Attribute names follow the OpenTelemetry GenAI semantic conventions where they fit
(`gen_ai.operation.name`, `gen_ai.system`, `gen_ai.provider.name`, `gen_ai.request.model`,
`gen_ai.response.model`, `gen_ai.usage.*`) and `http.response.status_code`; the rest are under
`hybridroute.*`.

Attempt timing. An attempt carries a duration, not a start offset, so its place is approximate
(`attempt_windows`): attempts are laid end to end from the request's start, in the order they
started, except the two sides of a hedge race. When an attempt was cancelled for losing the race
(code `hedge_cancelled`), it and the winner (the `ok` attempt) overlap: the loser was stopped the
moment the winner won, so both end together, each starting its own duration before that end;
the attempts after the race start at its end. Time the gateway spent between attempts (admission
waits, retry backoff) therefore shows as a gap at the end of the request's span, not between the
attempts.
"""

from __future__ import annotations

import asyncio
import logging
import sys
import threading
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

from hybridroute.config.observability import TracingConfig
from hybridroute.observability.events import RequestEvent
from hybridroute.types import Attempt, AttemptOutcome, RouteId, RouteKind

if TYPE_CHECKING:
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SpanExporter
    from opentelemetry.trace import Tracer

__all__ = ["GEN_AI_SYSTEMS", "HEDGE_CANCELLED", "RequestTracer", "attempt_windows"]

log = logging.getLogger(__name__)

HEDGE_CANCELLED = "hedge_cancelled"
"""The code of an attempt cancelled because the other side of a hedge race won (the same as
`hybridroute.monitoring.records.HEDGE_CANCELLED`, not imported from there: importing the
monitoring package would import OpenTelemetry's API through the MCP client even with tracing
off)."""

GEN_AI_SYSTEMS: dict[RouteKind, str] = {RouteKind.BEDROCK: "aws.bedrock", RouteKind.MCP: "mcp"}
"""`gen_ai.system` of a route, by its kind."""

_NS_PER_S = 1_000_000_000
_NS_PER_MS = 1_000_000


def _ns(seconds: float) -> int:
    return int(seconds * _NS_PER_S)


def _ms_ns(ms: float) -> int:
    return max(0, int(ms * _NS_PER_MS))


def attempt_windows(start_ns: int, attempts: Sequence[Attempt]) -> list[tuple[int, int]]:
    """Where each attempt goes on the request's timeline: (start_ns, end_ns) per attempt, in the
    order given. Sequential from `start_ns` by duration, except that a hedge race (an attempt
    cancelled with code `hedge_cancelled`, and the `ok` winner) is end-aligned: its members end
    together, each starting its own duration earlier. See the module's docstring."""
    race: list[int] = []
    if any(a.code == HEDGE_CANCELLED for a in attempts):
        race = [
            i
            for i, a in enumerate(attempts)
            if a.code == HEDGE_CANCELLED or a.outcome is AttemptOutcome.OK
        ]
        if not any(attempts[i].outcome is AttemptOutcome.OK for i in race):
            race = []  # no winner to overlap: lay them out like any other attempt
    windows: list[tuple[int, int] | None] = [None] * len(attempts)
    cursor = start_ns
    for i, attempt in enumerate(attempts):
        if windows[i] is not None:
            continue  # placed with its race
        if i in race:
            end = cursor + max(_ms_ns(attempts[j].duration_ms) for j in race)
            for j in race:
                windows[j] = (end - _ms_ns(attempts[j].duration_ms), end)
            cursor = end
        else:
            duration = _ms_ns(attempt.duration_ms)
            windows[i] = (cursor, cursor + duration)
            cursor += duration
    return [w for w in windows if w is not None]


class _Spans:
    """The OpenTelemetry side, built by `RequestTracer.start()` (so only when tracing is on):
    the provider, its tracer, and the API symbols `emit` needs."""

    def __init__(self, provider: TracerProvider, systems: Mapping[RouteId, str]) -> None:
        from opentelemetry import trace

        self.provider = provider
        self.tracer: Tracer = provider.get_tracer("hybridroute")
        self._systems = systems
        self._trace = trace
        self._error = trace.StatusCode.ERROR

    def emit(self, event: RequestEvent) -> None:
        trace = self._trace
        end_ns = _ns(event.at)
        start_ns = end_ns - _ns(event.latency_s)
        span = self.tracer.start_span(
            f"chat {event.operation_type}", kind=trace.SpanKind.SERVER, start_time=start_ns
        )
        if not span.is_recording():  # not sampled: nothing more to build
            span.end(end_time=end_ns)
            return
        span.set_attributes(self._request_attributes(event))
        if event.outcome.is_error:  # failed, interrupted
            span.set_status(trace.Status(self._error, event.error_code or str(event.outcome)))
        if event.attempts:
            parent = trace.set_span_in_context(span)
            windows = attempt_windows(start_ns, event.attempts)
            for attempt, (a_start, a_end) in zip(event.attempts, windows, strict=True):
                child = self.tracer.start_span(
                    f"attempt {attempt.route}",
                    context=parent,
                    kind=trace.SpanKind.CLIENT,
                    start_time=a_start,
                )
                child.set_attributes(self._attempt_attributes(attempt))
                if attempt.outcome is AttemptOutcome.FAILED:
                    child.set_status(trace.Status(self._error, attempt.detail or attempt.code))
                child.end(end_time=a_end)
        span.end(end_time=end_ns)

    def _request_attributes(self, event: RequestEvent) -> dict[str, str | bool | int | float]:
        attrs: dict[str, str | bool | int | float] = {
            "gen_ai.operation.name": "chat",
            "gen_ai.usage.input_tokens": event.input_tokens,
            "gen_ai.usage.output_tokens": event.output_tokens,
            "http.response.status_code": event.status,
            "hybridroute.operation_type": event.operation_type,
            "hybridroute.priority": event.priority,
            "hybridroute.tenant": event.tenant,
            "hybridroute.outcome": str(event.outcome),
            "hybridroute.status": event.status,
            "hybridroute.fallback": event.fallback,
            "hybridroute.hedged": event.hedged,
            "hybridroute.efficient": event.efficient,
            "hybridroute.stream": event.stream,
            "hybridroute.latency_s": event.latency_s,
            "hybridroute.cost": str(event.cost),
            "hybridroute.currency": event.currency,
            "hybridroute.attempt_count": len(event.attempts),
        }
        if event.route is not None:
            attrs["hybridroute.route"] = event.route
            system = self._systems.get(event.route)
            if system is not None:
                attrs["gen_ai.system"] = system
                attrs["gen_ai.provider.name"] = system
        if event.model is not None:
            attrs["gen_ai.request.model"] = event.model
            attrs["gen_ai.response.model"] = event.model
        optional: dict[str, str | float | None] = {
            "hybridroute.decision_id": event.decision_id,
            "hybridroute.primary": event.primary,
            "hybridroute.first_route": event.first_route,
            "hybridroute.cache": event.cache,
            "hybridroute.reason": event.reason,
            "hybridroute.error_code": event.error_code,
            "hybridroute.ttft_s": event.ttft_s,
            "hybridroute.budget_level": event.budget_level,
            "hybridroute.budget_utilisation": event.budget_utilisation,
        }
        attrs.update({key: value for key, value in optional.items() if value is not None})
        return attrs

    def _attempt_attributes(self, attempt: Attempt) -> dict[str, str | float]:
        attrs: dict[str, str | float] = {
            "gen_ai.operation.name": "chat",
            "hybridroute.route": attempt.route,
            "hybridroute.attempt.outcome": str(attempt.outcome),
            "hybridroute.attempt.duration_ms": attempt.duration_ms,
        }
        system = self._systems.get(attempt.route)
        if system is not None:
            attrs["gen_ai.system"] = system
            attrs["gen_ai.provider.name"] = system
        if attempt.code is not None:
            attrs["hybridroute.attempt.code"] = attempt.code
        if attempt.detail is not None:
            attrs["hybridroute.attempt.detail"] = attempt.detail
        return attrs


class RequestTracer:
    """Turns finished requests into OpenTelemetry spans (see the module's docstring).

    Build it from `config.tracing` (cheap and import-free, whatever the config), add `record`
    as a gateway observer, call `start()` when the gateway starts and `shutdown()` (or `await
    aclose()`) when it stops. `exporter` replaces the configured exporter (tests pass the SDK's
    `InMemorySpanExporter`).
    """

    def __init__(
        self,
        config: TracingConfig,
        *,
        route_kinds: Mapping[RouteId, RouteKind] | None = None,
        exporter: SpanExporter | None = None,
        service_version: str | None = None,
        shutdown_timeout_s: float = 5.0,
    ) -> None:
        self.config = config
        self._systems = {rid: GEN_AI_SYSTEMS[kind] for rid, kind in (route_kinds or {}).items()}
        self._exporter = exporter
        self._service_version = service_version
        self._shutdown_timeout_s = shutdown_timeout_s
        self._spans: _Spans | None = None
        self.failures = 0  # events that could not be turned into spans (a bug; logged once)

    @property
    def enabled(self) -> bool:
        return self.config.enabled

    @property
    def running(self) -> bool:
        return self._spans is not None

    def start(self) -> None:
        """Import OpenTelemetry and start the batch exporter's thread; a no-op when tracing is
        off or already started. Raises when tracing is on and the SDK is not installed."""
        if not self.config.enabled or self._spans is not None:
            return
        try:
            from opentelemetry.sdk.resources import Resource
            from opentelemetry.sdk.trace import TracerProvider
            from opentelemetry.sdk.trace.export import BatchSpanProcessor
            from opentelemetry.sdk.trace.sampling import TraceIdRatioBased
        except ImportError as exc:
            raise RuntimeError(
                "tracing is enabled but the OpenTelemetry SDK is not installed: install "
                "opentelemetry-sdk and opentelemetry-exporter-otlp-proto-http"
            ) from exc
        resource: dict[str, str] = {"service.name": self.config.service_name}
        if self._service_version is not None:
            resource["service.version"] = self._service_version
        provider = TracerProvider(
            sampler=TraceIdRatioBased(self.config.sample_ratio),
            resource=Resource.create(resource),
            shutdown_on_exit=False,  # flushed by shutdown(), bounded; never at interpreter exit
        )
        provider.add_span_processor(BatchSpanProcessor(self._exporter or self._build_exporter()))
        self._spans = _Spans(provider, self._systems)
        log.info(
            "tracing requests: %s exporter%s, sample ratio %s",
            self.config.exporter,
            f" to {self.config.endpoint}" if self.config.exporter == "otlp_http" else "",
            self.config.sample_ratio,
        )

    def _build_exporter(self) -> SpanExporter:
        if self.config.exporter == "console":
            from opentelemetry.sdk.trace.export import ConsoleSpanExporter

            return ConsoleSpanExporter(out=sys.stdout)
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

        return OTLPSpanExporter(endpoint=self.config.endpoint, headers=dict(self.config.headers))

    def record(self, event: RequestEvent) -> None:
        """A gateway observer: the request's spans, queued for export. Never raises and never
        does I/O; a no-op while tracing is off or not running."""
        spans = self._spans
        if spans is None:
            return
        try:
            spans.emit(event)
        except Exception:  # an observer must not fail the request; a bug here is logged once
            self.failures += 1
            if self.failures == 1:
                log.exception("could not trace a request (later failures are only counted)")

    def shutdown(self, timeout_s: float | None = None) -> bool:
        """Stop recording, export what is queued and stop the exporter, waiting at most
        `timeout_s` (default: the constructor's `shutdown_timeout_s`). True when it finished in
        time; else the export goes on in a daemon thread and is abandoned at exit. Blocking:
        from a running event loop use `aclose()`. Idempotent."""
        spans, self._spans = self._spans, None
        if spans is None:
            return True
        done = threading.Thread(
            target=spans.provider.shutdown, name="hybridroute-tracing-shutdown", daemon=True
        )
        done.start()
        done.join(self._shutdown_timeout_s if timeout_s is None else timeout_s)
        if done.is_alive():
            log.warning("tracing: spans still being exported at shutdown were abandoned")
            return False
        return True

    async def aclose(self) -> None:
        """`shutdown()` from an event loop, without blocking it."""
        if self._spans is not None:
            await asyncio.to_thread(self.shutdown)

    def __repr__(self) -> str:
        state = "running" if self._spans else ("stopped" if self.config.enabled else "off")
        return f"<RequestTracer {state} {self.config.exporter}>"
