"""What a configuration file may say: the pydantic models of the YAML file.

Every model rejects unknown keys and is frozen. Field-level rules live here; rules that relate
one part of the file to another (a matrix row naming a route that does not exist, two ids for one
upstream) live in `checks.py`, so the admin API can run the same checks on a new matrix.
"""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from hybridroute.config.control import AdminConfig, AuditConfig, ComplianceConfig, GuardConfig
from hybridroute.config.defaults import (
    DEFAULT_MATRIX,
    DEFAULT_OPERATION_PARAMS,
    DEFAULT_REGION_SETS,
)
from hybridroute.config.economy import BudgetsConfig, CacheConfig, PricingConfig
from hybridroute.config.observability import AlertsConfig, SloConfig, TracingConfig
from hybridroute.config.platform import FleetConfig, StorageConfig, TenantsConfig
from hybridroute.types import Priority

__all__ = [
    "ARGUMENT_SOURCES",
    "DEFAULT_MCP_ARGUMENTS",
    "BedrockRouteConfig",
    "BreakerConfig",
    "ChainCredentials",
    "FlagsConfig",
    "GatewayConfig",
    "HealthConfig",
    "McpRouteConfig",
    "OperationParams",
    "ResidencyConfig",
    "RouteConfig",
    "RoutingRuleConfig",
    "RoutingSettings",
    "ServerConfig",
    "StaticCredentials",
]

ID_PATTERN = re.compile(r"^[a-z][a-z0-9_]{0,62}$")
REGION_PATTERN = re.compile(r"^[a-z]{2}(-gov)?-[a-z]+-\d{1,2}$")

ARGUMENT_SOURCES: dict[str, str] = {
    "messages": "the conversation as a list of {role, content} (system messages excluded)",
    "system": "the system prompt text (operation prompt first, then the caller's)",
    "prompt": "the conversation flattened to text ('role: content' lines, or the lone message)",
    "last_user_message": "the text of the last user message",
    "operation_type": "the request's operation type",
    "priority": "the operation type's priority",
    "max_tokens": "the maximum number of tokens to generate",
    "temperature": "the sampling temperature, or null",
    "top_p": "nucleus sampling probability, or null",
    "stop": "the list of stop sequences",
    "decision_id": "the gateway's decision id for this request",
    "deadline_ms": "milliseconds left in this attempt when the call is made",
    "model": "the model name the caller asked for",
}
"""Request fields an MCP tool argument can be mapped from, written "$name" in config."""

DEFAULT_MCP_ARGUMENTS: dict[str, Any] = {
    "messages": "$messages",
    "system": "$system",
    "operation_type": "$operation_type",
    "max_tokens": "$max_tokens",
    "temperature": "$temperature",
}


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ServerConfig(_Strict):
    """Where the gateway listens and how much it accepts."""

    host: str = "127.0.0.1"
    port: int = Field(default=8080, ge=0, le=65535)
    max_body_bytes: int = Field(default=1_048_576, ge=1024, le=64 * 1_048_576)


class BreakerConfig(_Strict):
    """Circuit breaker settings (failure rate over a sliding window, escalating open time)."""

    window_s: float = Field(default=30.0, gt=0, le=3600)
    buckets: int = Field(default=10, ge=1, le=120)
    min_requests: int = Field(default=5, ge=1)
    failure_rate: float = Field(default=0.5, gt=0, le=1)
    consecutive_failures: int = Field(default=5, ge=1)
    open_s: float = Field(default=5.0, gt=0, le=3600)
    max_open_s: float = Field(default=120.0, gt=0, le=86_400)
    half_open_max_probes: int = Field(default=1, ge=1, le=100)
    half_open_successes: int = Field(default=2, ge=1, le=100)

    @model_validator(mode="after")
    def _open_times_ordered(self) -> BreakerConfig:
        if self.max_open_s < self.open_s:
            raise ValueError(
                f"max_open_s ({self.max_open_s}) is smaller than open_s ({self.open_s}); "
                "the escalating open time starts at open_s and is capped by max_open_s"
            )
        return self


class ChainCredentials(_Strict):
    """AWS credentials from the SDK's standard chain (env, shared files, SSO, container, IMDS)."""

    source: Literal["chain"] = "chain"
    profile: str | None = None


class StaticCredentials(_Strict):
    """Fixed credentials, e.g. for a local simulator. Values may be "env:VAR" references."""

    source: Literal["static"]
    access_key_id: str = Field(min_length=1)
    secret_access_key: str = Field(min_length=1)
    session_token: str | None = None


Credentials = Annotated[ChainCredentials | StaticCredentials, Field(discriminator="source")]


class _RouteCommon(_Strict):
    timeout_ms: int = Field(default=60_000, ge=10, le=600_000)
    connect_timeout_ms: int = Field(default=3_000, ge=10, le=120_000)
    min_attempt_ms: int = Field(default=50, ge=1, le=60_000)
    breaker: BreakerConfig | None = None
    # Admission control: attempts at once on this route, and the priority queue in front of it.
    max_in_flight: int = Field(default=256, ge=1, le=100_000)
    max_queue: int = Field(default=512, ge=0, le=1_000_000)


class BedrockRouteConfig(_RouteCommon):
    """A Direct Bedrock route: Bedrock Runtime Converse / ConverseStream."""

    type: Literal["bedrock"]
    region: str
    model_id: str = Field(min_length=1)
    model_ids: dict[str, str] = Field(default_factory=dict)
    endpoint_url: str | None = None
    credentials: Credentials = Field(default_factory=ChainCredentials)
    max_connections: int = Field(default=256, ge=1, le=10_000)
    # validation: a signed Converse call with no messages, answered with ValidationException
    # before any model runs (free); converse: a real one-token call (billed); connect: TCP only.
    probe: Literal["validation", "converse", "connect", "none"] = "validation"

    @field_validator("region")
    @classmethod
    def _region_shape(cls, value: str) -> str:
        if not REGION_PATTERN.match(value):
            raise ValueError(
                f"{value!r} is not an AWS region name; write it like 'eu-central-1' or 'us-east-1'"
            )
        return value

    @field_validator("endpoint_url")
    @classmethod
    def _endpoint_shape(cls, value: str | None) -> str | None:
        if value is not None and not re.match(r"^https?://[^/\s]+(/.*)?$", value):
            raise ValueError(
                f"{value!r} is not an http(s) URL; write it like 'http://127.0.0.1:9001'"
            )
        return value.rstrip("/") if value else value

    def model_for(self, operation_type: str) -> str:
        """The Bedrock model id used for an operation type."""
        return self.model_ids.get(operation_type, self.model_id)


class McpRouteConfig(_RouteCommon):
    """An MCP route: a tools/call on one tool of an MCP server (stdio or streamable HTTP)."""

    type: Literal["mcp"]
    transport: Literal["stdio", "streamable_http"]
    command: list[str] | None = None
    env: dict[str, str] = Field(default_factory=dict)
    cwd: str | None = None
    url: str | None = None
    headers: dict[str, str] = Field(default_factory=dict)
    tool: str = Field(default="generate", min_length=1)
    arguments: dict[str, Any] = Field(default_factory=lambda: dict(DEFAULT_MCP_ARGUMENTS))
    model: str | None = None
    region: str | None = None
    protocol: Literal["auto", "legacy"] = "auto"
    # tools_list works on every protocol revision and re-checks the tool; ping only on
    # handshake-era (legacy) connections, where it is cheaper.
    probe: Literal["tools_list", "ping", "none"] = "tools_list"
    reconnect_initial_ms: int = Field(default=200, ge=10, le=60_000)
    reconnect_max_ms: int = Field(default=10_000, ge=10, le=600_000)

    @model_validator(mode="after")
    def _transport_fields(self) -> McpRouteConfig:
        if self.transport == "stdio":
            if not self.command:
                raise ValueError(
                    "transport 'stdio' needs 'command': the server command and its arguments, "
                    "e.g. [python, -m, hybridroute.simulators.mcp_server]"
                )
            if self.url is not None:
                raise ValueError("'url' is for transport 'streamable_http'; remove it for stdio")
        else:
            if not self.url or not re.match(r"^https?://[^/\s]+(/.*)?$", self.url):
                raise ValueError(
                    "transport 'streamable_http' needs 'url', the server's MCP endpoint, "
                    "e.g. http://127.0.0.1:9100/mcp"
                )
            if self.command is not None:
                raise ValueError(
                    "'command' is for transport 'stdio'; remove it for streamable_http"
                )
        if self.reconnect_max_ms < self.reconnect_initial_ms:
            raise ValueError("reconnect_max_ms must be at least reconnect_initial_ms")
        return self

    @field_validator("arguments")
    @classmethod
    def _argument_sources(cls, value: dict[str, Any]) -> dict[str, Any]:
        for name, source in value.items():
            is_reference = isinstance(source, str) and source[:1] == "$" and source[:2] != "$$"
            if is_reference and source[1:] not in ARGUMENT_SOURCES:
                raise ValueError(
                    f"argument {name!r} maps from unknown source {source!r}; valid sources: "
                    + ", ".join("$" + s for s in ARGUMENT_SOURCES)
                    + " (write '$$' to pass a literal string starting with '$')"
                )
        return value

    def model_name(self) -> str:
        """The model name reported for answers from this route."""
        return self.model or f"mcp:{self.tool}"


RouteConfig = Annotated[BedrockRouteConfig | McpRouteConfig, Field(discriminator="type")]


class RoutingRuleConfig(_Strict):
    """One row of the routing matrix."""

    priority: Priority
    latency_budget_ms: int = Field(ge=10, le=600_000)
    primary: str
    fallback: str | None = None
    retries: int | None = Field(default=None, ge=0, le=3)
    # Streams: the longest wait for the first token (null: the attempt's share of the budget),
    # and the longest silence between chunks once the stream has started.
    ttft_timeout_ms: int | None = Field(default=None, ge=10, le=600_000)
    stream_idle_timeout_ms: int | None = Field(default=10_000, ge=10, le=600_000)
    # Hedging, while ENABLE_PERFORMANCE_OPTIMIZATION is on. null: on for critical and high rows
    # that have a fallback. hedge_after_fraction: start the fallback after this share of the
    # budget (null: after the primary's observed p95).
    hedge: bool | None = None
    hedge_after_fraction: float | None = Field(default=None, gt=0, lt=1)

    @model_validator(mode="after")
    def _timeouts_within_budget(self) -> RoutingRuleConfig:
        if self.ttft_timeout_ms is not None and self.ttft_timeout_ms > self.latency_budget_ms:
            raise ValueError(
                f"ttft_timeout_ms ({self.ttft_timeout_ms}) is longer than latency_budget_ms "
                f"({self.latency_budget_ms}); it can be at most the budget"
            )
        if self.hedge and self.fallback is None:
            raise ValueError(
                "hedge needs a fallback route to hedge with; set fallback or remove hedge"
            )
        return self

    def hedged(self) -> bool:
        """Whether this row hedges (when performance optimisation is on)."""
        if self.hedge is not None:
            return self.hedge and self.fallback is not None
        return self.fallback is not None and self.priority in (Priority.CRITICAL, Priority.HIGH)

    def effective_retries(self) -> int:
        """Retries of the same route on a retryable error: 1 when there is no fallback, else 0."""
        if self.retries is not None:
            return self.retries
        return 1 if self.fallback is None else 0


class OperationParams(_Strict):
    """Model parameters for one operation type; a request's own values take precedence."""

    temperature: float | None = Field(default=None, ge=0, le=2)
    top_p: float | None = Field(default=None, gt=0, le=1)
    max_tokens: int | None = Field(default=None, ge=1, le=200_000)
    system_prompt: str | None = None


class FlagsConfig(_Strict):
    """Initial values of the five feature flags."""

    ENABLE_BEDROCK_SUPPORT_MODE: bool = True
    ENABLE_INTELLIGENT_ROUTING: bool = True
    ENABLE_DIRECT_BEDROCK_FALLBACK: bool = True
    ENABLE_HYBRID_HEALTH_MONITORING: bool = True
    ENABLE_PERFORMANCE_OPTIMIZATION: bool = True


class HealthConfig(_Strict):
    """Active health probes (when ENABLE_HYBRID_HEALTH_MONITORING is on) and the monitor."""

    probe_interval_s: float = Field(default=10.0, gt=0, le=3600)
    probe_timeout_s: float = Field(default=2.0, gt=0, le=120)
    probe_jitter: float = Field(default=0.1, ge=0, le=0.5)
    unhealthy_after: int = Field(default=2, ge=1, le=100)
    window_s: float = Field(default=300.0, ge=10, le=86_400)

    @model_validator(mode="after")
    def _timeout_within_interval(self) -> HealthConfig:
        if self.probe_timeout_s >= self.probe_interval_s:
            raise ValueError(
                f"probe_timeout_s ({self.probe_timeout_s:g}) must be shorter than "
                f"probe_interval_s ({self.probe_interval_s:g})"
            )
        return self


class RoutingSettings(_Strict):
    """Routing-wide settings."""

    default_operation_type: str = "standard"
    mcp_only_route: str = "mcp"
    retry_backoff_ms: int = Field(default=50, ge=0, le=10_000)
    retry_backoff_max_ms: int = Field(default=1_000, ge=0, le=60_000)
    # The most output a request may ask for (max_tokens); larger requests are refused with 400.
    # It also bounds what a request's budget reservation can be.
    max_output_tokens: int = Field(default=32_768, ge=1, le=1_000_000)


class ResidencyConfig(_Strict):
    """Named region sets a request may be constrained to (X-Data-Residency: eu)."""

    region_sets: dict[str, tuple[str, ...]] = Field(
        default_factory=lambda: dict(DEFAULT_REGION_SETS)
    )


def _default_matrix() -> dict[str, RoutingRuleConfig]:
    return {op: RoutingRuleConfig.model_validate(row) for op, row in DEFAULT_MATRIX.items()}


def _default_operations() -> dict[str, OperationParams]:
    return {op: OperationParams.model_validate(p) for op, p in DEFAULT_OPERATION_PARAMS.items()}


class GatewayConfig(_Strict):
    """The whole configuration file."""

    version: Literal[1] = 1
    server: ServerConfig = Field(default_factory=ServerConfig)
    routes: dict[str, RouteConfig]
    matrix: dict[str, RoutingRuleConfig] = Field(default_factory=_default_matrix)
    operations: dict[str, OperationParams] = Field(default_factory=_default_operations)
    flags: FlagsConfig = Field(default_factory=FlagsConfig)
    breaker: BreakerConfig = Field(default_factory=BreakerConfig)
    routing: RoutingSettings = Field(default_factory=RoutingSettings)
    residency: ResidencyConfig = Field(default_factory=ResidencyConfig)
    health: HealthConfig = Field(default_factory=HealthConfig)
    pricing: PricingConfig = Field(default_factory=PricingConfig)
    budgets: BudgetsConfig = Field(default_factory=BudgetsConfig)
    cache: CacheConfig = Field(default_factory=CacheConfig)
    tenants: TenantsConfig = Field(default_factory=TenantsConfig)
    storage: StorageConfig = Field(default_factory=StorageConfig)
    slo: SloConfig = Field(default_factory=SloConfig)
    alerts: AlertsConfig = Field(default_factory=AlertsConfig)
    tracing: TracingConfig = Field(default_factory=TracingConfig)
    admin: AdminConfig = Field(default_factory=AdminConfig)
    audit: AuditConfig = Field(default_factory=AuditConfig)
    compliance: ComplianceConfig = Field(default_factory=ComplianceConfig)
    guard: GuardConfig = Field(default_factory=GuardConfig)
    fleet: FleetConfig = Field(default_factory=FleetConfig)

    def breaker_for(self, route_id: str) -> BreakerConfig:
        """The breaker settings of a route: its own override, else the global ones."""
        return self.routes[route_id].breaker or self.breaker

    def operation_params(self, operation_type: str) -> OperationParams:
        """Model parameters for an operation type (empty when none are configured)."""
        return self.operations.get(operation_type) or OperationParams()
