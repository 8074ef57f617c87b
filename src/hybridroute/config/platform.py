"""Who calls and where state lives: data-plane API keys (tenants) and the storage backend.

API keys are configured by their SHA-256 (never stored in clear), or as an `env:VAR` reference
whose value is hashed when the configuration loads.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from hybridroute.errors import ConfigError, ConfigIssue
from hybridroute.types import DEFAULT_TENANT

__all__ = [
    "DEFAULT_TENANT",
    "ApiKeyConfig",
    "FleetConfig",
    "StorageConfig",
    "TenantsConfig",
    "resolve_env",
]

_SHA256 = re.compile(r"^[0-9a-f]{64}$")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ApiKeyConfig(_Strict):
    """One data-plane API key and the tenant it belongs to."""

    tenant: str = Field(pattern=r"^[a-z0-9][a-z0-9_.-]{0,62}$")
    sha256: str | None = None
    key: str | None = Field(default=None, pattern=r"^env:[A-Za-z_][A-Za-z0-9_]*$")

    @model_validator(mode="after")
    def _one_source(self) -> ApiKeyConfig:
        if (self.sha256 is None) == (self.key is None):
            raise ValueError(
                "give the key as 'sha256' (hex digest of the key) or as 'key: env:VAR' "
                "(an environment variable holding it), exactly one of the two"
            )
        if self.sha256 is not None and not _SHA256.match(self.sha256):
            raise ValueError(
                "'sha256' must be 64 lower-case hex digits, e.g. the output of "
                '`printf %s "$KEY" | sha256sum`'
            )
        return self


class TenantsConfig(_Strict):
    """Data-plane API keys. With none configured, every caller is tenant 'default'."""

    require_api_key: bool = False
    api_keys: list[ApiKeyConfig] = Field(default_factory=list)

    @model_validator(mode="after")
    def _keys_when_required(self) -> TenantsConfig:
        if self.require_api_key and not self.api_keys:
            raise ValueError("require_api_key is true but no api_keys are configured")
        return self

    def tenant_names(self) -> set[str]:
        return {DEFAULT_TENANT} | {k.tenant for k in self.api_keys}


class FleetConfig(_Strict):
    """Replicas of one gateway sharing route health through Redis."""

    # A URL or `env:VAR`; unset: each replica judges routes on its own.
    redis_url: str | None = None
    redis_prefix: str = Field(default="hybridroute", pattern=r"^[A-Za-z0-9_.:-]{1,64}$")
    # This replica's name in what it publishes (default: host name and process id).
    replica_id: str | None = Field(default=None, pattern=r"^[A-Za-z0-9_.:-]{1,100}$")


class StorageConfig(_Strict):
    """Where spend, budget events and other durable records live."""

    backend: Literal["sqlite", "memory", "postgres"] = "sqlite"
    # Relative paths are taken from the directory the gateway is started in.
    sqlite_path: str = "data/hybridroute.sqlite3"
    # PostgreSQL (several replicas, one truth): a DSN, or `env:VAR` naming the variable that
    # holds it (so no password sits in the file); the schema is created by `hybridroute db
    # migrate`.
    postgres_dsn: str | None = None
    postgres_schema: str = Field(default="hybridroute", pattern=r"^[a-z_][a-z0-9_]{0,62}$")
    # Records are written in batches off the request path, at most this long after they happen.
    flush_interval_ms: int = Field(default=200, ge=1, le=60_000)
    # Charges and budget events older than this many days are deleted (checked every 6 hours).
    # At least 32, so a month's budget can always be rebuilt at start.
    retention_days: int = Field(default=400, ge=32, le=36_500)

    @model_validator(mode="after")
    def _dsn_for_postgres(self) -> StorageConfig:
        if self.backend == "postgres" and not self.postgres_dsn:
            raise ValueError(
                "storage.backend postgres needs postgres_dsn: a DSN such as "
                "postgresql://user@db.internal/hybridroute, or env:VAR naming the variable "
                "that holds one"
            )
        return self

    def dsn(self, environ: Mapping[str, str] | None = None) -> str:
        """The PostgreSQL DSN, read from the environment when configured as `env:VAR`."""
        return resolve_env(self.postgres_dsn or "", "storage.postgres_dsn", environ)


def resolve_env(value: str, where: str, environ: Mapping[str, str] | None = None) -> str:
    """A setting's value: itself, or — written `env:VAR` — the environment variable's (a
    ConfigError naming the setting when it is unset)."""
    if not value.startswith("env:"):
        return value
    variable = value.removeprefix("env:")
    found = (os.environ if environ is None else environ).get(variable)
    if not found:
        raise ConfigError(
            [
                ConfigIssue(
                    where,
                    f"environment variable {variable} is not set (or empty)",
                    f"export {variable}=<the value> before starting",
                )
            ],
            source=where.split(".")[0],
        )
    return found
