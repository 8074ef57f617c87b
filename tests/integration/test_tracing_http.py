"""Request tracing over real OTLP/HTTP: a gateway's requests become spans that the SDK's exporter
posts, as protobuf, to a loopback collector."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import httpx2 as httpx
import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
from opentelemetry.proto.trace.v1.trace_pb2 import Span, Status

from hybridroute.config.observability import TracingConfig
from hybridroute.observability.tracing import RequestTracer
from hybridroute.serving import ThreadedServer
from tests.loopback import GatewayFactory, Simulator


@dataclass
class Collector:
    """A loopback OTLP/HTTP trace receiver: what it was sent, decoded."""

    url: str = ""
    requests: list[ExportTraceServiceRequest] = field(default_factory=list)
    headers: list[dict[str, str]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def spans(self) -> list[tuple[dict[str, Any], Span]]:
        """Every span received, with its resource's attributes."""
        with self.lock:
            return [
                (values(rs.resource.attributes), span)
                for request in self.requests
                for rs in request.resource_spans
                for ss in rs.scope_spans
                for span in ss.spans
            ]

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":  # nothing to set up or tear down
            while True:
                message = await receive()
                if message["type"] == "lifespan.startup":
                    await send({"type": "lifespan.startup.complete"})
                elif message["type"] == "lifespan.shutdown":
                    await send({"type": "lifespan.shutdown.complete"})
                    return
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        headers = {k.decode().lower(): v.decode() for k, v in scope["headers"]}
        ok = (
            scope["method"] == "POST"
            and scope["path"] == "/v1/traces"
            and headers.get("content-type") == "application/x-protobuf"
        )
        if ok:
            request = ExportTraceServiceRequest()
            request.ParseFromString(body)
            with self.lock:
                self.requests.append(request)
                self.headers.append(headers)
        payload = ExportTraceServiceResponse().SerializeToString() if ok else b""
        await send(
            {
                "type": "http.response.start",
                "status": 200 if ok else 404,
                "headers": [(b"content-type", b"application/x-protobuf")],
            }
        )
        await send({"type": "http.response.body", "body": payload})


def value(v: AnyValue) -> Any:
    kind = v.WhichOneof("value")
    return getattr(v, kind) if kind is not None else None


def values(attributes: Any) -> dict[str, Any]:
    kvs: list[KeyValue] = list(attributes)
    return {kv.key: value(kv.value) for kv in kvs}


@pytest.fixture
def collector() -> Iterator[Collector]:
    receiver = Collector()
    with ThreadedServer(receiver, name="otlp-collector") as server:
        receiver.url = server.url
        yield receiver


def test_requests_are_exported_as_otlp_spans(
    start_gateway: GatewayFactory, collector: Collector, bedrock_sim: Simulator
):
    gateway = start_gateway()
    runtime = gateway.runtime
    tracer = RequestTracer(
        TracingConfig(
            enabled=True,
            endpoint=f"{collector.url}/v1/traces",
            service_name="hybridroute-it",
            headers={"x-collector-token": "s3cret"},
        ),
        route_kinds=runtime.topology.kinds,
    )
    tracer.start()
    # The runtime lives on the server's thread; adding an observer before any request is sent
    # is safe (the list is only read when a request ends).
    runtime.gateway.add_observer(tracer.record)
    body = {"model": "default", "messages": [{"role": "user", "content": "is it up?"}]}
    try:
        with httpx.Client(base_url=gateway.url, timeout=30.0) as http:
            first = http.post(
                "/v1/chat/completions", json=body, headers={"x-operation-type": "infrastructure"}
            )
            second = http.post(
                "/v1/chat/completions", json=body, headers={"x-operation-type": "standard"}
            )
            bedrock_sim.set(error_rate=1.0, error_kind="unavailable")
            third = http.post(
                "/v1/chat/completions", json=body, headers={"x-operation-type": "implementation"}
            )
    finally:
        assert tracer.shutdown(timeout_s=10) is True  # flushes to the collector
    assert (first.status_code, second.status_code, third.status_code) == (200, 200, 200)
    assert third.headers["x-hybridroute-route"] == "mcp"

    spans = collector.spans()
    assert collector.headers
    assert all(h["x-collector-token"] == "s3cret" for h in collector.headers)
    for resource, _ in spans:
        assert resource["service.name"] == "hybridroute-it"

    roots = {s.name: s for _, s in spans if not s.parent_span_id}
    assert set(roots) == {"chat infrastructure", "chat standard", "chat implementation"}
    children: dict[bytes, list[Span]] = {}
    for _, s in spans:
        if s.parent_span_id:
            children.setdefault(s.parent_span_id, []).append(s)

    infra = roots["chat infrastructure"]
    a = values(infra.attributes)
    assert infra.kind == Span.SPAN_KIND_SERVER
    assert a["gen_ai.operation.name"] == "chat"
    assert a["gen_ai.system"] == "aws.bedrock"
    assert a["gen_ai.response.model"]
    assert a["gen_ai.usage.input_tokens"] > 0
    assert a["gen_ai.usage.output_tokens"] > 0
    assert a["http.response.status_code"] == 200
    assert a["hybridroute.route"] == "direct_bedrock"
    assert a["hybridroute.decision_id"] == first.headers["x-hybridroute-decision-id"]
    assert a["hybridroute.outcome"] == "served"
    assert a["hybridroute.tenant"]
    assert [c.name for c in children[infra.span_id]] == ["attempt direct_bedrock"]
    assert infra.end_time_unix_nano > infra.start_time_unix_nano

    standard = values(roots["chat standard"].attributes)
    assert standard["gen_ai.system"] == "mcp"
    assert standard["hybridroute.route"] == "mcp"

    fell_back = roots["chat implementation"]
    f = values(fell_back.attributes)
    assert f["hybridroute.fallback"] is True
    assert f["hybridroute.primary"] == "direct_bedrock"
    assert f["hybridroute.route"] == "mcp"
    attempts = sorted(children[fell_back.span_id], key=lambda s: s.start_time_unix_nano)
    assert [s.name for s in attempts][-1] == "attempt mcp"
    failed = [s for s in attempts if s.name == "attempt direct_bedrock"]
    assert failed
    assert all(s.status.code == Status.STATUS_CODE_ERROR for s in failed)
    assert all(values(s.attributes)["hybridroute.attempt.outcome"] == "failed" for s in failed)
    for s in attempts:
        assert s.trace_id == fell_back.trace_id
        assert s.start_time_unix_nano >= fell_back.start_time_unix_nano
