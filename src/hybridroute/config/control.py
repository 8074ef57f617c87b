"""Configuration of the control plane: admin tokens and roles, the audit trail, GDPR controls
(redaction, per-tenant residency, erasure) and the automatic rollback guard.

Admin tokens are configured by their SHA-256 (never in clear) or as an `env:VAR` reference
whose value is hashed when the configuration loads, like data-plane API keys.
"""

from __future__ import annotations

import datetime as dt
import re
from enum import StrEnum

from pydantic import BaseModel, ConfigDict, Field, model_validator

__all__ = [
    "AdminConfig",
    "AdminRole",
    "AdminTokenConfig",
    "AuditConfig",
    "ComplianceConfig",
    "GuardConfig",
]

_SHA256 = re.compile(r"^[0-9a-f]{64}$")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class AdminRole(StrEnum):
    """What an admin token may do; each role may do everything the ones before it may."""

    VIEWER = "viewer"  # read
    OPERATOR = "operator"  # flags, alert acknowledge, rollback, operator actions
    ADMIN = "admin"  # routing config, thresholds, compliance actions

    @property
    def rank(self) -> int:
        return _RANKS[self]

    def allows(self, needed: AdminRole) -> bool:
        return self.rank >= needed.rank


_RANKS = {AdminRole.VIEWER: 0, AdminRole.OPERATOR: 1, AdminRole.ADMIN: 2}


class AdminTokenConfig(_Strict):
    """One admin bearer token: who holds it, its role, and optionally when it stops working."""

    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.@-]{0,62}$")
    role: AdminRole
    sha256: str | None = None
    token: str | None = Field(default=None, pattern=r"^env:[A-Za-z_][A-Za-z0-9_]*$")
    expires: dt.datetime | None = None

    @model_validator(mode="after")
    def _one_source(self) -> AdminTokenConfig:
        if (self.sha256 is None) == (self.token is None):
            raise ValueError(
                "give the token as 'sha256' (hex digest of the token) or as 'token: env:VAR' "
                "(an environment variable holding it), exactly one of the two"
            )
        if self.sha256 is not None and not _SHA256.match(self.sha256):
            raise ValueError(
                "'sha256' must be 64 lower-case hex digits, e.g. the output of "
                '`printf %s "$TOKEN" | sha256sum`'
            )
        if self.expires is not None and self.expires.tzinfo is None:
            raise ValueError("'expires' needs a time zone, e.g. 2027-01-31T00:00:00Z")
        return self


class AdminConfig(_Strict):
    """Who may call `/admin/*`. `HYBRIDROUTE_ADMIN_TOKEN`, when set, is an extra admin token.

    With no token configured and the variable unset, only loopback callers are answered (as
    admin) unless `loopback_without_token` is false."""

    tokens: list[AdminTokenConfig] = Field(default_factory=list)
    # Admin requests per token (or per client address when the token is wrong) per minute.
    rate_limit_per_minute: int = Field(default=600, ge=1, le=1_000_000)
    loopback_without_token: bool = True

    @model_validator(mode="after")
    def _unique_names(self) -> AdminConfig:
        names = [t.name for t in self.tokens]
        repeated = sorted({n for n in names if names.count(n) > 1})
        if repeated:
            raise ValueError(f"admin token names must be unique; repeated: {', '.join(repeated)}")
        return self


class AuditConfig(_Strict):
    """The hash-chained audit trail."""

    enabled: bool = True
    # `env:VAR`: HMAC-SHA256 the chain with this secret (then only its holders can re-seal
    # records); unset: plain SHA-256.
    hmac_key: str | None = Field(default=None, pattern=r"^env:[A-Za-z_][A-Za-z0-9_]*$")
    # Record every routing decision (batched off the request path).
    decisions: bool = True
    flush_interval_ms: int = Field(default=200, ge=1, le=60_000)
    # Records older than this are purged; the chain then verifies from the last purged record.
    retention_days: int = Field(default=400, ge=1, le=36_500)
    # Where entries wait on local disk until the store has them (none lost to a crash or a
    # database outage). Default: beside the SQLite file, or data/audit-spool-<port>.jsonl with
    # PostgreSQL (one per replica on a host); none with in-memory storage.
    spool_path: str | None = None


class ComplianceConfig(_Strict):
    """GDPR controls."""

    # Redact PII before anything is written to logs or the audit trail.
    redaction: bool = True
    # tenant → region-set name (residency.region_sets) every request of the tenant is held to.
    tenant_residency: dict[str, str] = Field(default_factory=dict)
    # `env:VAR`: the secret data-subject lookups are keyed with (default: one generated and kept
    # in the store).
    subject_secret: str | None = Field(default=None, pattern=r"^env:[A-Za-z_][A-Za-z0-9_]*$")


class GuardConfig(_Strict):
    """The automatic rollback guard (the seed's "complete system failure" trigger): when more
    than `error_rate` of requests fail for `for_s` seconds, perform the level-2 rollback."""

    auto_rollback: bool = False
    error_rate: float = Field(default=0.5, gt=0, lt=1)
    for_s: float = Field(default=60.0, ge=5, le=3600)
    min_requests: int = Field(default=20, ge=1, le=1_000_000)
    check_every_s: float = Field(default=5.0, ge=0.1, le=60)
