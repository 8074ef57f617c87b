"""Environment gates: what a configuration must have before it may run in an environment.

- development: nothing is refused; what production would refuse is listed as warnings;
- staging: the five flags on (the profile staging must run), admin endpoints behind tokens,
  durable storage, and every smoke round trip within the generation P95 target;
- production: staging's gates, plus budgets, the audit trail on with decisions recorded and an
  HMAC key, PII redaction on, and an alert sink that reaches people (webhook or Slack).
"""

from __future__ import annotations

from dataclasses import dataclass

from hybridroute.config.schema import GatewayConfig

__all__ = ["ENVIRONMENTS", "Gate", "gates_for"]

ENVIRONMENTS = ("development", "staging", "production")


@dataclass(frozen=True, slots=True)
class Gate:
    """One gate: its name, whether the configuration passes it, and what to do if not."""

    name: str
    passed: bool
    problem: str


def _all_flags(config: GatewayConfig) -> Gate:
    off = [name for name, on in config.flags.model_dump().items() if not on]
    return Gate(
        "flags_profile",
        not off,
        f"flags off that this environment runs on: {', '.join(off)}; set them true under flags:",
    )


def _admin_access(config: GatewayConfig) -> Gate:
    return Gate(
        "admin_access",
        bool(config.admin.tokens),
        "no admin token is configured (admin endpoints would rely on loopback or "
        "HYBRIDROUTE_ADMIN_TOKEN alone); add admin.tokens with roles",
    )


def _durable_storage(config: GatewayConfig) -> Gate:
    return Gate(
        "durable_storage",
        config.storage.backend != "memory",
        "storage.backend is memory: spend, flags, routing versions and the audit trail would "
        "not survive a restart; use sqlite",
    )


def _slo_latency(config: GatewayConfig, slowest_ms: float | None) -> Gate:
    target = config.slo.generation_p95_ms
    ok = slowest_ms is not None and slowest_ms <= target
    seen = "no round trip completed" if slowest_ms is None else f"{slowest_ms:.0f} ms"
    return Gate(
        "slo_latency",
        ok,
        f"the slowest smoke round trip took {seen}, above the P95 target of {target:g} ms",
    )


def _production(config: GatewayConfig) -> list[Gate]:
    sinks = {sink.type for sink in config.alerts.sinks}
    return [
        Gate(
            "budgets",
            config.budgets.configured,
            "no budget is configured; set budgets.global (and per-tenant budgets as needed)",
        ),
        Gate(
            "audit_trail",
            config.audit.enabled and config.audit.decisions,
            "the audit trail (or its record of routing decisions) is off; set audit.enabled and "
            "audit.decisions true",
        ),
        Gate(
            "audit_trail_keyed",
            config.audit.hmac_key is not None,
            "the audit chain is not keyed; set audit.hmac_key: env:VAR so a record cannot be "
            "re-sealed by someone without the key",
        ),
        Gate(
            "pii_redaction",
            config.compliance.redaction,
            "PII redaction is off; set compliance.redaction true",
        ),
        Gate(
            "alert_notifications",
            bool(sinks & {"webhook", "slack"}),
            "alerts only go to the log; add a webhook or Slack sink under alerts.sinks",
        ),
    ]


def gates_for(
    environment: str, config: GatewayConfig, slowest_ms: float | None
) -> tuple[list[Gate], list[Gate]]:
    """(gates enforced in this environment, gates only warned about)."""
    staging = [
        _all_flags(config),
        _admin_access(config),
        _durable_storage(config),
        _slo_latency(config, slowest_ms),
    ]
    production = _production(config)
    if environment == "production":
        return staging + production, []
    if environment == "staging":
        return staging, production
    return [], staging + production
