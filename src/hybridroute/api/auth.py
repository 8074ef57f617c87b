"""Who may call `/admin/*`: bearer tokens with roles, checked in constant time, rate-limited.

Tokens come from `admin.tokens` (held only as SHA-256 digests) and, when set, the environment
variable `HYBRIDROUTE_ADMIN_TOKEN` (an extra `admin`-role token). Every admin route names the
role it needs: `viewer` reads, `operator` changes flags, acknowledges alerts, rolls back and
takes operator actions, `admin` changes routing configuration and thresholds and erases data.

- no `Authorization: Bearer` header, an unknown token or an expired one → 401;
- a known token whose role is too low → 403 (saying which role is needed);
- more than `admin.rate_limit_per_minute` requests from one token (or failed attempts from one
  client address) → 429 with Retry-After.

With no token configured at all and the variable unset, loopback callers are answered as
`admin` (a gateway on a laptop stays inspectable) and everyone else is refused, unless
`admin.loopback_without_token` is false. The presented token is never logged or echoed; the
principal's *name* is what the audit trail records.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import ipaddress
import math
import os
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from hybridroute.api.http import Scope
from hybridroute.config.control import AdminConfig, AdminRole
from hybridroute.errors import (
    AdminRateLimited,
    ConfigError,
    ConfigIssue,
    Forbidden,
    Unauthorized,
)

__all__ = ["ADMIN_TOKEN_ENV", "PRINCIPAL_KEY", "AdminAuth", "Principal", "principal_of"]

ADMIN_TOKEN_ENV = "HYBRIDROUTE_ADMIN_TOKEN"
PRINCIPAL_KEY = "hybridroute.principal"
_MAX_BUCKETS = 10_000


@dataclass(frozen=True, slots=True)
class Principal:
    """An authenticated admin caller."""

    name: str
    role: AdminRole


@dataclass(frozen=True, slots=True)
class _Token:
    name: str
    role: AdminRole
    digest: bytes
    expires_at: float | None


class _Buckets:
    """Token buckets keyed by caller: `per_minute` requests, refilled evenly."""

    __slots__ = ("_buckets", "_clock", "_rate", "_size")

    def __init__(self, per_minute: int, clock: Callable[[], float]) -> None:
        self._size = float(per_minute)
        self._rate = per_minute / 60.0
        self._clock = clock
        self._buckets: dict[str, tuple[float, float]] = {}

    def take(self, key: str) -> float:
        """0 when allowed, else seconds until the next request would be."""
        now = self._clock()
        level, at = self._buckets.get(key, (self._size, now))
        level = min(self._size, level + (now - at) * self._rate)
        if level < 1.0:
            self._buckets[key] = (level, now)
            return (1.0 - level) / self._rate
        if len(self._buckets) >= _MAX_BUCKETS and key not in self._buckets:
            self._forget_full(now)
        self._buckets[key] = (level - 1.0, now)
        return 0.0

    def _forget_full(self, now: float) -> None:
        """Drop buckets that have refilled (they hold no information)."""
        for key, (level, at) in list(self._buckets.items()):
            if level + (now - at) * self._rate >= self._size:
                del self._buckets[key]


class AdminAuth:
    """Authenticates admin requests and checks their role."""

    def __init__(
        self,
        config: AdminConfig,
        environ: Mapping[str, str] | None = None,
        *,
        clock: Callable[[], float] = time.monotonic,
        wall: Callable[[], float] = time.time,
    ) -> None:
        env = os.environ if environ is None else environ
        issues: list[ConfigIssue] = []
        tokens: list[_Token] = []
        for index, entry in enumerate(config.tokens):
            digest = bytes.fromhex(entry.sha256) if entry.sha256 is not None else None
            if entry.token is not None:
                variable = entry.token.removeprefix("env:")
                value = env.get(variable)
                if not value:
                    issues.append(
                        ConfigIssue(
                            f"admin.tokens[{index}].token",
                            f"environment variable {variable} is not set (or empty)",
                            f"export {variable}=<the token> before starting the gateway",
                        )
                    )
                    continue
                digest = _sha256(value.encode())
            assert digest is not None  # the config model demands one source
            expires = entry.expires.timestamp() if entry.expires is not None else None
            tokens.append(_Token(entry.name, entry.role, digest, expires))
        if issues:
            raise ConfigError(issues, source="admin tokens")
        bootstrap = env.get(ADMIN_TOKEN_ENV)
        if bootstrap:
            tokens.append(
                _Token(ADMIN_TOKEN_ENV.lower(), AdminRole.ADMIN, _sha256(bootstrap.encode()), None)
            )
        self._tokens = tuple(tokens)
        self._open_on_loopback = not tokens and config.loopback_without_token
        self._limits = _Buckets(config.rate_limit_per_minute, clock)
        self._wall = wall

    @property
    def token_names(self) -> tuple[str, ...]:
        return tuple(t.name for t in self._tokens)

    def check(self, scope: Scope, needed: AdminRole) -> Principal:
        """The caller, or Unauthorized / Forbidden / AdminRateLimited. The principal is also
        left in the scope for handlers (`principal_of`)."""
        principal = self._authenticate(scope)
        wait = self._limits.take(f"token:{principal.name}")
        if wait:
            raise AdminRateLimited(
                f"too many admin requests from {principal.name}; retry in {_seconds(wait)} s",
                retry_after_s=_seconds(wait),
            )
        if not principal.role.allows(needed):
            raise Forbidden(
                f"{principal.name} has the {principal.role.value} role; this needs "
                f"{needed.value} (roles: viewer < operator < admin)"
            )
        scope[PRINCIPAL_KEY] = principal
        return principal

    def token_required(self, scope: Scope) -> bool:
        """Whether this caller must present a token (false only for loopback callers while no
        token is configured): lets a sign-in page ask first instead of failing a request."""
        client = scope.get("client")
        address = client[0] if client else "unknown"
        return not (not self._tokens and self._open_on_loopback and _is_loopback(address))

    def _authenticate(self, scope: Scope) -> Principal:
        client = scope.get("client")
        address = client[0] if client else "unknown"
        if not self._tokens:
            if self._open_on_loopback and _is_loopback(address):
                return Principal("loopback", AdminRole.ADMIN)
            raise Forbidden(
                "no admin token is configured, so admin endpoints answer only loopback callers; "
                f"configure admin.tokens or set {ADMIN_TOKEN_ENV} and send "
                "'Authorization: Bearer <token>'"
            )
        presented = _bearer(scope)
        if presented is None:
            self._count_failure(address)
            raise Unauthorized("admin endpoints need 'Authorization: Bearer <token>'")
        digest = _sha256(presented)
        found: _Token | None = None
        for token in self._tokens:  # every digest compared, in constant time
            if hmac.compare_digest(digest, token.digest) and found is None:
                found = token
        if found is None:
            self._count_failure(address)
            raise Unauthorized("the bearer token is not valid for admin endpoints")
        if found.expires_at is not None and self._wall() >= found.expires_at:
            self._count_failure(address)
            when = dt.datetime.fromtimestamp(found.expires_at, dt.UTC).isoformat()
            raise Unauthorized(f"the admin token {found.name!r} expired at {when}")
        return Principal(found.name, found.role)

    def _count_failure(self, address: str) -> None:
        wait = self._limits.take(f"client:{address}")
        if wait:
            raise AdminRateLimited(
                f"too many failed admin requests from {address}; retry in {_seconds(wait)} s",
                retry_after_s=_seconds(wait),
            )


def principal_of(scope: Scope) -> Principal:
    """The authenticated caller of an admin request."""
    principal = scope.get(PRINCIPAL_KEY)
    if not isinstance(principal, Principal):  # an unguarded handler asked: a wiring bug
        raise RuntimeError("admin handler called without authentication")
    return principal


def _seconds(wait: float) -> int:
    """A wait in whole seconds, rounded up, at least one."""
    return max(1, math.ceil(wait))


def _sha256(value: bytes) -> bytes:
    return hashlib.sha256(value).digest()


def _bearer(scope: Scope) -> bytes | None:
    for name, value in scope["headers"]:
        if name == b"authorization":
            scheme, _, token = value.partition(b" ")
            if scheme.lower() == b"bearer" and token.strip():
                return bytes(token.strip())
            return None
    return None


def _is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
