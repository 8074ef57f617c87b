"""The MCP server face: a running gateway offered to agents as MCP tools.

`hybridroute mcp serve` (see `mcp_cmd.py`) runs the server built here. It is a client of the
gateway's HTTP API, like the rest of the CLI: every tool is one call to one endpoint, made with
the configured admin token (the data plane's `route_operation` sends the data-plane API key
instead, when one is given). This module owns:

- the tools, with the names, descriptions and input schemas an agent sees: read-only ones
  always (`route_operation`, `get_health`, `get_slo`, `list_flags`, `get_alerts`,
  `get_routing_rules`, `verify_audit_trail`) and operator ones (`set_flag`,
  `acknowledge_alert`, `rollback`) only when changes are allowed;
- `GatewayClient`, the calls to the gateway, and how its answers become tool results: success
  as JSON text plus the same object as structured content, anything else (a 4xx/5xx answer, an
  unreachable or silent gateway) as a tool error carrying the gateway's own message;
- the start-up check behind `--allow-changes` (GET /admin/whoami must say the token has the
  operator or admin role) and serving over stdio or streamable HTTP at `/mcp` on a loopback
  address.

So the tools are read-only unless changes are asked for with an operator token; the gateway's
role check still decides each change call.
"""

from __future__ import annotations

import contextlib
import json
import logging
import signal
import urllib.parse
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Annotated, Any, Literal

import anyio
import click
import httpx2
from mcp.server import MCPServer
from mcp.server.transport_security import TransportSecuritySettings
from mcp_types import CallToolResult, TextContent, ToolAnnotations
from pydantic import Field

from hybridroute import __version__
from hybridroute.serving import EmbeddedServer
from hybridroute.types import BUILTIN_OPERATION_TYPES

__all__ = [
    "CHANGE_TOOLS",
    "DEFAULT_MCP_PORT",
    "LOOPBACK_HOSTS",
    "MCP_PATH",
    "READ_TOOLS",
    "SERVER_NAME",
    "FaceSettings",
    "GatewayAnswer",
    "GatewayCallError",
    "GatewayClient",
    "check_change_access",
    "create_face_server",
    "serve_face",
]

log = logging.getLogger("hybridroute.mcp_face")

SERVER_NAME = "hybridroute"
MCP_PATH = "/mcp"
DEFAULT_MCP_PORT = 8765
# The face carries an admin token: whoever reaches it acts with that token's role, so it
# listens on loopback only.
LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "::1")
READ_TOOLS = (
    "route_operation",
    "get_health",
    "get_slo",
    "list_flags",
    "get_alerts",
    "get_routing_rules",
    "verify_audit_trail",
)
CHANGE_TOOLS = ("set_flag", "acknowledge_alert", "rollback")

FlagName = Literal[
    "ENABLE_BEDROCK_SUPPORT_MODE",
    "ENABLE_INTELLIGENT_ROUTING",
    "ENABLE_DIRECT_BEDROCK_FALLBACK",
    "ENABLE_HYBRID_HEALTH_MONITORING",
    "ENABLE_PERFORMANCE_OPTIMIZATION",
]

_FLAGS_PATH = "/admin/feature-flags/bedrock"
_WHOAMI_PATH = "/admin/whoami"

# What each decision header says (docs/routing.md#what-every-response-says, docs/api.md).
HEADER_MEANINGS: dict[str, str] = {
    "x-hybridroute-route": "the route that served the request ('none' if none did)",
    "x-hybridroute-decision-id": "the routing decision's id (find it in the audit trail)",
    "x-hybridroute-fallback": "true when a route other than the operation type's primary served",
    "x-hybridroute-reason": "why the gateway decided as it did, in words",
    "x-hybridroute-attempts": "every attempt when there was more than one: route:outcome, ...",
    "x-hybridroute-hedged": "true when the fallback was started alongside a slow primary",
    "x-hybridroute-overhead-ms": "time spent in the gateway itself, upstream waiting excluded",
    "x-hybridroute-cost": "what this answer cost (exact decimal; 0 for a cache hit)",
    "x-hybridroute-currency": "the currency of the cost",
    "x-hybridroute-cache": "response cache: hit, miss, bypass or off",
    "x-hybridroute-cache-reason": "why the cache was off for this request",
}

_READ = ToolAnnotations(read_only_hint=True, idempotent_hint=True, open_world_hint=False)


class GatewayCallError(Exception):
    """A gateway call that did not succeed, said in words an agent (or a person) can act on."""

    def __init__(
        self,
        message: str,
        *,
        status: int | None = None,
        code: str | None = None,
        detail: Any = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.status = status
        self.code = code
        self.detail = detail
        self.headers = dict(headers or {})

    def as_result(self) -> CallToolResult:
        """This failure as an MCP tool error: the message as text, the facts as structure."""
        facts: dict[str, Any] = {"error": self.message}
        if self.status is not None:
            facts["status"] = self.status
        if self.code is not None:
            facts["code"] = self.code
        if self.detail is not None:
            facts["detail"] = self.detail
        if self.headers:
            facts["headers"] = self.headers
        return CallToolResult(
            content=[TextContent(type="text", text=self.message)],
            structured_content=facts,
            is_error=True,
        )


@dataclass(frozen=True)
class GatewayAnswer:
    """A 2xx answer of the gateway."""

    status: int
    headers: dict[str, str]
    body: Any


def _error_parts(response: httpx2.Response) -> tuple[str, str | None, Any]:
    """The gateway's error message, code and `hybridroute` details (or the raw text)."""
    text = response.text
    with contextlib.suppress(ValueError, KeyError, TypeError, AttributeError):
        error = json.loads(text)["error"]
        return str(error["message"]), error.get("code"), error.get("hybridroute")
    return (text.strip()[:2000] or response.reason_phrase), None, None


def _decision_headers(headers: httpx2.Headers) -> dict[str, str]:
    return {name: value for name, value in headers.items() if name.startswith("x-hybridroute-")}


class GatewayClient:
    """Calls to one gateway's HTTP API with the face's admin token (and data-plane key)."""

    def __init__(
        self,
        url: str,
        token: str | None,
        *,
        api_key: str | None = None,
        timeout_s: float = 60.0,
        connect_timeout_s: float = 5.0,
    ) -> None:
        self.url = url.rstrip("/")
        self.timeout_s = timeout_s
        self._token = token or None
        self._api_key = api_key or None
        self._http = httpx2.AsyncClient(
            timeout=httpx2.Timeout(timeout_s, connect=min(connect_timeout_s, timeout_s)),
            headers={"accept": "application/json", "user-agent": f"hybridroute-mcp/{__version__}"},
        )

    async def aclose(self) -> None:
        await self._http.aclose()

    async def call(
        self,
        method: str,
        path: str,
        body: Any = None,
        *,
        headers: Mapping[str, str] | None = None,
        admin: bool = True,
    ) -> GatewayAnswer:
        """Call an endpoint; a 2xx answer is returned, anything else raises GatewayCallError."""
        sent = dict(headers or {})
        if admin and self._token:
            sent["authorization"] = f"Bearer {self._token}"
        if not admin and self._api_key:
            sent["x-api-key"] = self._api_key
        content = None
        if body is not None:
            content = json.dumps(body).encode()
            sent["content-type"] = "application/json"
        what = f"{method} {path}"
        try:
            response = await self._http.request(
                method, self.url + path, content=content, headers=sent
            )
        except httpx2.TimeoutException:
            raise GatewayCallError(
                f"the gateway at {self.url} did not answer {what} within {self.timeout_s:g} s"
            ) from None
        except (httpx2.TransportError, httpx2.InvalidURL, ValueError) as exc:
            raise GatewayCallError(
                f"cannot reach the gateway at {self.url} ({type(exc).__name__}: {exc}); is it "
                "running? Start one with 'hybridroute demo', or give 'hybridroute mcp serve' "
                "the right --url"
            ) from None
        if response.status_code >= 400:
            raise _refusal(self.url, what, response, admin=admin)
        try:
            payload: Any = response.json()
        except ValueError:
            payload = response.text
        return GatewayAnswer(response.status_code, dict(response.headers), payload)

    async def get(self, path: str) -> Any:
        return (await self.call("GET", path)).body

    async def post(self, path: str, body: Any) -> Any:
        return (await self.call("POST", path, body)).body


def _refusal(url: str, what: str, response: httpx2.Response, *, admin: bool) -> GatewayCallError:
    status = response.status_code
    message, code, detail = _error_parts(response)
    text = f"the gateway answered {status}" + (f" ({code})" if code else "") + f": {message}"
    if status == 401:
        which = (
            "admin token was refused: give 'hybridroute mcp serve' a valid --token (env "
            "HYBRIDROUTE_ADMIN_TOKEN)"
            if admin
            else "data-plane API key was refused or missing: give 'hybridroute mcp serve' a "
            "valid --api-key (env HYBRIDROUTE_API_KEY)"
        )
        text += f" [the MCP server's {which}]"
    retry_after = response.headers.get("retry-after")
    if retry_after:
        text += f" [retry after {retry_after} s]"
    return GatewayCallError(
        f"{text} ({what} at {url})",
        status=status,
        code=code,
        detail=detail,
        headers=_decision_headers(response.headers),
    )


def _result(value: dict[str, Any]) -> CallToolResult:
    """A successful tool result: the JSON as text (what a model reads) and as structure."""
    text = json.dumps(value, indent=2, ensure_ascii=False, default=str)
    return CallToolResult(content=[TextContent(type="text", text=text)], structured_content=value)


def _answer_text(body: Any) -> tuple[str | None, str | None, str | None]:
    """The answer's text, finish reason and model from a chat.completion body."""
    with contextlib.suppress(KeyError, IndexError, TypeError):
        choice = body["choices"][0]
        return choice["message"]["content"], choice.get("finish_reason"), body.get("model")
    return None, None, None


def _route_result(answer: GatewayAnswer) -> dict[str, Any]:
    body = answer.body if isinstance(answer.body, dict) else {}
    found = body.get("hybridroute")
    extra: dict[str, Any] = found if isinstance(found, dict) else {}
    headers = _decision_headers(httpx2.Headers(answer.headers))
    text, finish_reason, model = _answer_text(body)
    overhead = headers.get("x-hybridroute-overhead-ms")
    return {
        "answer": text,
        "route": headers.get("x-hybridroute-route", extra.get("route")),
        "decision_id": headers.get("x-hybridroute-decision-id", extra.get("decision_id")),
        "fallback": headers.get("x-hybridroute-fallback") == "true" or bool(extra.get("fallback")),
        "reason": headers.get("x-hybridroute-reason"),
        "attempts": headers.get("x-hybridroute-attempts"),
        "hedged": headers.get("x-hybridroute-hedged") == "true",
        "cost": headers.get("x-hybridroute-cost", extra.get("cost")),
        "currency": headers.get("x-hybridroute-currency", extra.get("currency")),
        "cache": headers.get("x-hybridroute-cache", extra.get("cache")),
        "cache_reason": headers.get("x-hybridroute-cache-reason"),
        "overhead_ms": float(overhead) if overhead else None,
        "model": model,
        "finish_reason": finish_reason,
        "usage": body.get("usage"),
        "usage_estimated": extra.get("usage_estimated"),
        "headers": {
            name: {"value": value, "meaning": HEADER_MEANINGS.get(name, "")}
            for name, value in sorted(headers.items())
        },
    }


_ROUTE_FIELDS = (
    "route", "kind", "region", "status", "detail", "breaker", "p95_ms", "success_rate",
    "attempts", "consecutive_failures", "last_error",
)  # fmt: skip
_OPERATION_FIELDS = (
    "operation_type", "priority", "primary", "fallback", "requests", "served", "failed",
    "fallback_rate", "p95_ms", "within_budget",
)  # fmt: skip
_HEALTH_FIELDS = (
    "score", "status", "window_s", "monitoring", "requests", "served", "throughput_rps",
    "routing_accuracy", "routing_efficiency", "fallback_rate", "error_rate", "shed",
)  # fmt: skip


def _pick(row: Any, names: tuple[str, ...]) -> dict[str, Any]:
    return {name: row.get(name) for name in names} if isinstance(row, dict) else {}


def _health_summary(body: Any) -> dict[str, Any]:
    report = body if isinstance(body, dict) else {}
    summary = _pick(report, _HEALTH_FIELDS)
    summary["routes"] = [_pick(row, _ROUTE_FIELDS) for row in report.get("routes") or []]
    summary["operations"] = [
        _pick(row, _OPERATION_FIELDS) for row in report.get("operations") or []
    ]
    summary["recommendations"] = report.get("recommendations") or []
    return summary


def _alerts_summary(body: Any) -> dict[str, Any]:
    report = body if isinstance(body, dict) else {}
    active = report.get("active") or []
    pending = report.get("pending") or []
    return {
        "firing": len(active),
        "pending_count": len(pending),
        "active": active,
        "pending": pending,
        "recently_resolved": len(report.get("resolved") or []),
        "alerting": report.get("alerting"),
        "last_evaluated_at": report.get("last_evaluated_at"),
    }


# --- the tools ------------------------------------------------------------------------------

OperationType = Annotated[
    str,
    Field(
        min_length=1,
        max_length=100,
        description=(
            "The operation type; it picks the routing matrix row (priority, latency budget, "
            f"primary and fallback route). Built in: {', '.join(BUILTIN_OPERATION_TYPES)}; a "
            "gateway may configure more (get_routing_rules lists them). An unknown type is "
            "refused with the list of valid ones."
        ),
    ),
]
Prompt = Annotated[
    str, Field(min_length=1, description="The user message to answer (sent as one user turn).")
]
Residency = Annotated[
    str | None,
    Field(
        description=(
            "A region set the request must stay in, e.g. 'eu'; the gateway fails closed "
            "(422 residency_unsatisfiable) when no route qualifies. Omit for no constraint."
        )
    ),
]
MaxTokens = Annotated[
    int | None,
    Field(ge=1, le=100_000, description="Maximum tokens to generate (default: the row's)."),
]
Window = Annotated[
    str,
    Field(
        description=("The look-back window: 30s, 5m, 1h, 24h or a number of seconds (1 s to 24 h).")
    ),
]
Reason = Annotated[
    str,
    Field(
        min_length=1,
        max_length=2000,
        description="Why; kept in the audit trail with the token's name.",
    ),
]

_ROUTE_DESCRIPTION = (
    "Send one prompt through the gateway as the given operation type (POST "
    "/v1/chat/completions) and report the answer with how it was served: the route that served "
    "it (direct_bedrock or mcp), the decision id, whether it was a fallback, the decision's "
    "reason, the attempts, the cost and currency, the cache outcome, token usage, and every "
    "x-hybridroute-* response header with its meaning. Costs real money on a real upstream. "
    "Refusals (unknown operation type, residency, budget, maintenance, all routes failed) come "
    "back as errors with the gateway's message."
)
_HEALTH_DESCRIPTION = (
    "The Hybrid Health Monitor's report, summarised (GET /admin/health/status): the health "
    "score (0-100) and status, routing accuracy/efficiency, fallback and error rates, each "
    "route's status, breaker, latency and last error, each operation type's figures, and the "
    "recommendations with their evidence. Viewer role."
)
_SLO_DESCRIPTION = (
    "SLO figures and compliance over a window (GET /admin/slo?window=...): generation and "
    "cached P95 latency, error rate, cache hit rate, fallback rate, each SLO's target and "
    "whether it is met (null while the sample is too small). Viewer role."
)
_FLAGS_DESCRIPTION = (
    "The five feature flags of Bedrock Support Mode, the routing mode ('hybrid', or "
    "'mcp_only' when they are all off) and the last change with who made it and why (GET "
    "/admin/feature-flags/bedrock). Viewer role."
)
_ALERTS_DESCRIPTION = (
    "Alerts firing (active, with severity, value, since when and any acknowledgement) and "
    "pending (condition true, not yet for its sustained duration), plus how many resolved "
    "recently (GET /admin/alerts). Use an active alert's id with acknowledge_alert. Viewer role."
)
_RULES_DESCRIPTION = (
    "The routing rules in force (GET /admin/config/routing-rules): version, when and by whom "
    "applied, the comment, the diff from the previous version, and the matrix: per operation "
    "type its priority, latency budget, primary and fallback route. Viewer role."
)
_AUDIT_DESCRIPTION = (
    "Verify the whole hash-chained audit trail (GET /admin/audit/trail-integrity): ok, how many "
    "records were checked, the sequence range, and any problem (edited, deleted, inserted, "
    "reordered, broken link, malformed, truncated) with its seq. Viewer role."
)
_SET_FLAG_DESCRIPTION = (
    "Turn one feature flag on or off (POST /admin/feature-flags/bedrock/update); in force from "
    "the gateway's next request, persisted and audited. ENABLE_INTELLIGENT_ROUTING off sends "
    "every operation type to MCP. Needs the operator role: the gateway's 403 comes back as an "
    "error otherwise."
)
_ACK_DESCRIPTION = (
    "Acknowledge a firing alert (POST /admin/alerts/{alert_id}/acknowledge): it stays active "
    "until its condition clears, marked as being handled, with the note. alert_id comes from "
    "get_alerts. Operator role; an alert not firing is a 400, an unknown one a 404."
)
_ROLLBACK_DESCRIPTION = (
    "Run a rollback procedure (POST /admin/rollback) and report its timed steps and the "
    "post-rollback validation. Level 1: all five flags off, MCP-only routing (fast, reversible "
    "with set_flag). Level 2: also the routing rules back to the configuration file's version. "
    "Level 3: the routing rules back to an earlier version (give version). Operator role."
)


def _read_tools(server: MCPServer, gateway: GatewayClient) -> None:
    async def route_operation(
        operation_type: OperationType,
        prompt: Prompt,
        residency: Residency = None,
        max_tokens: MaxTokens = None,
    ) -> CallToolResult:
        return await _route(gateway, operation_type, prompt, residency, max_tokens)

    async def get_health(
        full: Annotated[
            bool, Field(description="true: the monitor's whole report instead of the summary.")
        ] = False,
    ) -> CallToolResult:
        try:
            body = await gateway.get("/admin/health/status")
        except GatewayCallError as error:
            return error.as_result()
        return _result(body if full and isinstance(body, dict) else _health_summary(body))

    async def get_slo(window: Window = "5m") -> CallToolResult:
        query = urllib.parse.urlencode({"window": window})
        return await _get(gateway, f"/admin/slo?{query}")

    async def list_flags() -> CallToolResult:
        return await _get(gateway, _FLAGS_PATH)

    async def get_alerts() -> CallToolResult:
        try:
            body = await gateway.get("/admin/alerts")
        except GatewayCallError as error:
            return error.as_result()
        return _result(_alerts_summary(body))

    async def get_routing_rules() -> CallToolResult:
        return await _get(gateway, "/admin/config/routing-rules")

    async def verify_audit_trail() -> CallToolResult:
        return await _get(gateway, "/admin/audit/trail-integrity")

    spends = ToolAnnotations(
        read_only_hint=False, destructive_hint=False, idempotent_hint=False, open_world_hint=True
    )
    server.add_tool(
        route_operation, title="Route an operation", description=_ROUTE_DESCRIPTION,
        annotations=spends,
    )  # fmt: skip
    for tool, title, description in (
        (get_health, "Gateway health", _HEALTH_DESCRIPTION),
        (get_slo, "SLO compliance", _SLO_DESCRIPTION),
        (list_flags, "Feature flags", _FLAGS_DESCRIPTION),
        (get_alerts, "Alerts", _ALERTS_DESCRIPTION),
        (get_routing_rules, "Routing rules", _RULES_DESCRIPTION),
        (verify_audit_trail, "Verify the audit trail", _AUDIT_DESCRIPTION),
    ):
        server.add_tool(tool, title=title, description=description, annotations=_READ)


async def _route(
    gateway: GatewayClient,
    operation_type: str,
    prompt: str,
    residency: str | None,
    max_tokens: int | None,
) -> CallToolResult:
    metadata: dict[str, Any] = {"operation_type": operation_type}
    headers = {"x-operation-type": operation_type}
    if residency:
        metadata["residency"] = residency
        headers["x-data-residency"] = residency
    body: dict[str, Any] = {
        "model": "default",
        "messages": [{"role": "user", "content": prompt}],
        "metadata": metadata,
    }
    if max_tokens is not None:
        body["max_tokens"] = max_tokens
    try:
        answer = await gateway.call(
            "POST", "/v1/chat/completions", body, headers=headers, admin=False
        )
    except GatewayCallError as error:
        return error.as_result()
    return _result(_route_result(answer))


async def _get(gateway: GatewayClient, path: str) -> CallToolResult:
    try:
        body = await gateway.get(path)
    except GatewayCallError as error:
        return error.as_result()
    return _result(body if isinstance(body, dict) else {"answer": body})


async def _post(gateway: GatewayClient, path: str, body: dict[str, Any]) -> CallToolResult:
    try:
        answer = await gateway.post(path, body)
    except GatewayCallError as error:
        return error.as_result()
    return _result(answer if isinstance(answer, dict) else {"answer": answer})


def _change_tools(server: MCPServer, gateway: GatewayClient) -> None:
    async def set_flag(
        flag: Annotated[FlagName, Field(description="The flag to change.")],
        enabled: Annotated[bool, Field(description="true turns it on, false off.")],
        reason: Reason,
    ) -> CallToolResult:
        body = {"flag": flag, "enabled": enabled, "reason": reason}
        return await _post(gateway, f"{_FLAGS_PATH}/update", body)

    async def acknowledge_alert(
        alert_id: Annotated[
            str,
            Field(
                pattern=r"^[A-Za-z0-9_.-]{1,80}$",
                description="The alert's id, as get_alerts shows it.",
            ),
        ],
        note: Annotated[
            str,
            Field(
                min_length=1,
                max_length=2000,
                description="What is being done about it; kept with the alert and audited.",
            ),
        ],
    ) -> CallToolResult:
        path = f"/admin/alerts/{urllib.parse.quote(alert_id, safe='')}/acknowledge"
        return await _post(gateway, path, {"note": note})

    async def rollback(
        level: Annotated[
            Literal[1, 2, 3],
            Field(description="1: flags off (MCP-only); 2: also rules; 3: rules to a version."),
        ],
        reason: Reason,
        version: Annotated[
            int | None,
            Field(ge=1, description="Level 3 only: the routing-rules version to go back to."),
        ] = None,
    ) -> CallToolResult:
        body: dict[str, Any] = {"level": level, "reason": reason}
        if version is not None:
            body["version"] = version
        return await _post(gateway, "/admin/rollback", body)

    def changes(*, destructive: bool, idempotent: bool) -> ToolAnnotations:
        return ToolAnnotations(
            read_only_hint=False,
            destructive_hint=destructive,
            idempotent_hint=idempotent,
            open_world_hint=False,
        )

    server.add_tool(
        set_flag, title="Set a feature flag", description=_SET_FLAG_DESCRIPTION,
        annotations=changes(destructive=True, idempotent=True),
    )  # fmt: skip
    server.add_tool(
        acknowledge_alert, title="Acknowledge an alert", description=_ACK_DESCRIPTION,
        annotations=changes(destructive=False, idempotent=False),
    )  # fmt: skip
    server.add_tool(
        rollback, title="Roll back", description=_ROLLBACK_DESCRIPTION,
        annotations=changes(destructive=True, idempotent=False),
    )  # fmt: skip


def _instructions(gateway: GatewayClient, allow_changes: bool) -> str:
    text = (
        f"Tools over the hybridroute AI routing gateway at {gateway.url}: route an operation "
        "through it (route_operation) and read what operators read (health, SLOs, feature flags, "
        "alerts, routing rules, audit-trail integrity). Each tool calls one endpoint of the "
        "gateway's HTTP API; errors carry the gateway's own message."
    )
    if allow_changes:
        text += (
            " Changes are enabled (set_flag, acknowledge_alert, rollback): each is in force at "
            "once and recorded in the audit trail with its reason; the gateway refuses them "
            "(403) when this server's token lacks the operator role."
        )
    else:
        text += " This server is read-only: it offers no tool that changes the gateway."
    return text


def create_face_server(gateway: GatewayClient, *, allow_changes: bool) -> MCPServer:
    """The MCP server: the read-only tools, and the operator tools when `allow_changes`."""
    # log_level: MCPServer calls logging.basicConfig; the CLI has configured logging already.
    server: MCPServer = MCPServer(
        SERVER_NAME,
        title="hybridroute gateway",
        version=__version__,
        instructions=_instructions(gateway, allow_changes),
        log_level="WARNING",
    )
    _read_tools(server, gateway)
    if allow_changes:
        _change_tools(server, gateway)
    return server


async def check_change_access(gateway: GatewayClient) -> str | None:
    """Why the operator tools cannot be offered (None: the token has the operator or admin
    role, as GET /admin/whoami says; the gateway's role check still decides each change)."""
    try:
        caller = await gateway.get(_WHOAMI_PATH)
    except GatewayCallError as error:
        return error.message
    found = caller if isinstance(caller, dict) else {}
    role = found.get("role")
    if role not in ("operator", "admin"):
        return f"the token of {found.get('name', '?')} has the {role} role; changes need operator"
    return None


# --- serving --------------------------------------------------------------------------------


@dataclass(frozen=True)
class FaceSettings:
    """What `hybridroute mcp serve` was asked for."""

    url: str
    token: str | None
    transport: Literal["stdio", "http"] = "stdio"
    host: str = "127.0.0.1"
    port: int = DEFAULT_MCP_PORT
    allow_changes: bool = False
    api_key: str | None = None
    timeout_s: float = 60.0
    connect_timeout_s: float = 5.0


def _loopback_security() -> TransportSecuritySettings:
    """DNS-rebinding protection: only loopback Host and Origin headers are answered."""
    return TransportSecuritySettings(
        enable_dns_rebinding_protection=True,
        allowed_hosts=["127.0.0.1:*", "localhost:*", "[::1]:*"],
        allowed_origins=["http://127.0.0.1:*", "http://localhost:*", "http://[::1]:*"],
    )


async def _stop_on_signal(server: EmbeddedServer) -> None:
    with anyio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        async for signum in signals:
            log.info("received %s, shutting down", signal.Signals(signum).name)
            await server.stop()
            return


async def _serve_http(server: MCPServer, host: str, port: int) -> None:
    app = server.streamable_http_app(
        streamable_http_path=MCP_PATH, transport_security=_loopback_security(), host=host
    )
    async with EmbeddedServer(app, host=host, port=port, name="mcp-face", lifespan="on") as web:
        click.echo(f"hybridroute MCP server on {web.url}{MCP_PATH} (streamable HTTP)", err=True)
        async with anyio.create_task_group() as group:
            group.start_soon(_stop_on_signal, web)
            # Never cancel this wait (that would cancel the server itself); a signal stops the
            # server gracefully, which ends it.
            await web.wait()
            group.cancel_scope.cancel()


async def serve_face(settings: FaceSettings) -> None:
    """Check access when changes are asked for, then serve until stdin closes or a signal."""
    if settings.host not in LOOPBACK_HOSTS:
        raise ValueError(f"the MCP server listens on loopback only ({', '.join(LOOPBACK_HOSTS)})")
    gateway = GatewayClient(
        settings.url,
        settings.token,
        api_key=settings.api_key,
        timeout_s=settings.timeout_s,
        connect_timeout_s=settings.connect_timeout_s,
    )
    try:
        allow_changes = False
        if settings.allow_changes:
            problem = await check_change_access(gateway)
            allow_changes = problem is None
            if problem is not None:
                log.warning(
                    "--allow-changes: not offering set_flag, acknowledge_alert, rollback: the "
                    "token could not be checked: %s",
                    problem,
                )
        server = create_face_server(gateway, allow_changes=allow_changes)
        if settings.transport == "stdio":
            await server.run_stdio_async()
        else:
            await _serve_http(server, settings.host, settings.port)
    finally:
        await gateway.aclose()
