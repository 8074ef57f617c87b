"""The Direct Bedrock route: Converse and ConverseStream over pooled keep-alive connections.

Requests are signed with SigV4 by botocore (see `signing.py`) and sent with the gateway's lean
HTTP/1.1 client to the route's regional endpoint, or to `endpoint_url` when configured (a VPC
endpoint, a proxy, or the local simulator). Every failure leaves this module as a typed
`UpstreamError`.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator
from urllib.parse import quote, urlsplit

from botocore.eventstream import EventStreamBuffer, ParserError
from botocore.exceptions import BotoCoreError

from hybridroute.config.schema import BedrockRouteConfig
from hybridroute.errors import UpstreamAuthError, UpstreamProtocolError, UpstreamRejected
from hybridroute.providers.bedrock.errors import error_from_response, transport_errors
from hybridroute.providers.bedrock.signing import (
    CredentialsUnavailable,
    SigV4Signer,
    resolve_credentials,
)
from hybridroute.providers.bedrock.wire import StreamDecoder, converse_body, parse_converse
from hybridroute.providers.http import HttpPool
from hybridroute.signals import HealthStatus, RouteHealth
from hybridroute.types import (
    ChatMessage,
    Completion,
    GenerationRequest,
    Priority,
    RouteId,
    RouteKind,
    StreamEnd,
    StreamEvent,
    TextDelta,
)

__all__ = ["DirectBedrockRoute"]

log = logging.getLogger("hybridroute.routes.bedrock")

_JSON = "application/json"
_EVENT_STREAM = "application/vnd.amazon.eventstream"
_READY = RouteHealth(HealthStatus.HEALTHY)
_EMPTY_CONVERSATION = b'{"messages":[]}'
_PROBE_REQUEST = GenerationRequest(
    operation_type="health_probe",
    priority=Priority.LOW,
    system=(),
    messages=(ChatMessage("user", "ping"),),
    max_tokens=1,
    temperature=0.0,
    top_p=None,
    stop=(),
    decision_id="health-probe",
    requested_model="health-probe",
)


class DirectBedrockRoute:
    """A route to AWS Bedrock Runtime (or a Converse-compatible endpoint)."""

    kind = RouteKind.BEDROCK

    def __init__(self, route_id: RouteId, config: BedrockRouteConfig) -> None:
        self._id = route_id
        self._config = config
        self._endpoint = (
            config.endpoint_url or f"https://bedrock-runtime.{config.region}.amazonaws.com"
        )
        parts = urlsplit(self._endpoint)
        self._origin = f"{parts.scheme}://{parts.netloc}"
        self._base_path = parts.path.rstrip("/")
        self._signer: SigV4Signer | None = None
        self._credentials_problem = "credentials not resolved yet"
        self._pool: HttpPool | None = None

    @property
    def id(self) -> RouteId:
        return self._id

    @property
    def region(self) -> str:
        return self._config.region

    @property
    def endpoint(self) -> str:
        return self._endpoint

    @property
    def min_attempt_s(self) -> float:
        return self._config.min_attempt_ms / 1000.0

    @property
    def timeout_s(self) -> float:
        return self._config.timeout_ms / 1000.0

    def model_for(self, operation_type: str) -> str:
        return self._config.model_for(operation_type)

    def readiness(self) -> RouteHealth:
        if self._signer is None:
            return RouteHealth(HealthStatus.UNHEALTHY, self._credentials_problem)
        return _READY

    async def start(self) -> None:
        try:
            credentials = await asyncio.to_thread(resolve_credentials, self._config.credentials)
        except CredentialsUnavailable as exc:
            self._credentials_problem = f"no credentials: {exc}"
            log.warning("route %s has no AWS credentials: %s", self._id, exc)
        else:
            self._signer = SigV4Signer(credentials, self._config.region)
        self._pool = HttpPool(
            self._origin,
            max_connections=self._config.max_connections,
            connect_timeout_s=self._config.connect_timeout_ms / 1000.0,
        )

    @property
    def probe_kind(self) -> str:
        return self._config.probe

    async def probe(self, *, budget_s: float) -> None:
        kind = self._config.probe
        if kind == "connect":
            with transport_errors(self._id, self._endpoint):
                await self._client().check_connect()
            return
        if kind == "converse":
            await self.complete(_PROBE_REQUEST, budget_s=budget_s)
            return
        # "validation": Bedrock checks the signature and the request before running a model,
        # so an empty conversation comes back as ValidationException at no cost.
        pool = self._client()
        path = self._path(self._config.model_id, "converse")
        headers = await self._signed(pool, path, _EMPTY_CONVERSATION, _JSON)
        with transport_errors(self._id, self._endpoint):
            async with pool.request("POST", path, headers, _EMPTY_CONVERSATION) as response:
                payload = await response.read()
        if response.status == 200:
            return
        error = error_from_response(self._id, response.status, response.headers, payload)
        if not isinstance(error, UpstreamRejected):
            raise error

    async def aclose(self) -> None:
        if self._pool is not None:
            await self._pool.aclose()
            self._pool = None

    def _path(self, model: str, operation: str) -> str:
        # The model id is one path segment: ':' and '/' in ids and ARNs are percent-encoded,
        # and the path is sent exactly as it was signed.
        return f"{self._base_path}/model/{quote(model, safe='')}/{operation}"

    async def _signed(
        self, pool: HttpPool, path: str, body: bytes, accept: str
    ) -> list[tuple[str, str]]:
        if self._signer is None:
            raise UpstreamAuthError(self._id, self._credentials_problem)
        try:
            return await self._signer.sign(self._origin + path, pool.host_header, body, accept)
        except BotoCoreError as exc:  # refreshing expired credentials failed
            raise UpstreamAuthError(self._id, f"could not refresh AWS credentials: {exc}") from exc

    def _client(self) -> HttpPool:
        if self._pool is None:
            raise RuntimeError(f"route {self._id} is not started")
        return self._pool

    async def complete(self, request: GenerationRequest, *, budget_s: float) -> Completion:
        model = self.model_for(request.operation_type)
        path = self._path(model, "converse")
        body = converse_body(request)
        pool = self._client()
        headers = await self._signed(pool, path, body, _JSON)
        sent = time.perf_counter()
        with transport_errors(self._id, self._endpoint):
            async with pool.request("POST", path, headers, body) as response:
                payload = await response.read()
        waited = time.perf_counter() - sent
        if response.status != 200:
            raise error_from_response(self._id, response.status, response.headers, payload)
        return parse_converse(self._id, model, payload, request, upstream_s=waited)

    async def stream(
        self, request: GenerationRequest, *, budget_s: float
    ) -> AsyncIterator[StreamEvent]:
        model = self.model_for(request.operation_type)
        path = self._path(model, "converse-stream")
        body = converse_body(request)
        pool = self._client()
        headers = await self._signed(pool, path, body, _EVENT_STREAM)
        decoder = StreamDecoder(self._id, request)
        with transport_errors(self._id, self._endpoint):
            async with pool.request("POST", path, headers, body) as response:
                if response.status != 200:
                    payload = await response.read()
                    raise error_from_response(self._id, response.status, response.headers, payload)
                content_type = response.headers.get("content-type", "")
                if not content_type.startswith(_EVENT_STREAM):
                    raise UpstreamProtocolError(
                        self._id,
                        f"ConverseStream answered with content-type {content_type!r}, "
                        f"expected {_EVENT_STREAM}",
                    )
                frames = EventStreamBuffer()
                async for chunk in response.chunks():
                    frames.add_data(chunk)
                    try:
                        for message in frames:
                            text = decoder.text_of(message)
                            if text:
                                yield TextDelta(text)
                    except ParserError as exc:
                        raise UpstreamProtocolError(
                            self._id, f"malformed event-stream frame: {exc}"
                        ) from exc
        if decoder.stop_reason is None:
            raise UpstreamProtocolError(
                self._id, "the stream ended before Bedrock sent messageStop (cut off)"
            )
        yield StreamEnd(decoder.stop_reason, decoder.final_usage())

    def __repr__(self) -> str:
        return f"<DirectBedrockRoute {self._id} {self._config.region} {self._endpoint}>"
