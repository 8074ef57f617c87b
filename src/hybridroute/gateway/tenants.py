"""Who is calling: data-plane API keys mapped to tenants.

Keys are held only as SHA-256 digests (configured as digests, or read from an environment
variable at start and hashed at once). A caller presents its key as `Authorization: Bearer
<key>` or `X-Api-Key: <key>`; the API layer reads the header and this module judges it. With no
keys configured every caller is tenant `default` and the header is ignored (the stock OpenAI SDK
always sends one). With keys configured, a key that is not known is refused with 401; no key at
all is tenant `default` unless `require_api_key` is set.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Mapping

from hybridroute.config.platform import TenantsConfig
from hybridroute.errors import ConfigError, ConfigIssue, Unauthorized
from hybridroute.types import DEFAULT_TENANT

__all__ = ["TenantDirectory"]


def _digest(key: bytes) -> str:
    return hashlib.sha256(key).hexdigest()


class TenantDirectory:
    """Maps a request's API key to its tenant."""

    __slots__ = ("_by_digest", "_required")

    def __init__(self, config: TenantsConfig, environ: Mapping[str, str] | None = None) -> None:
        env = os.environ if environ is None else environ
        issues: list[ConfigIssue] = []
        self._by_digest: dict[str, str] = {}
        for index, entry in enumerate(config.api_keys):
            digest = entry.sha256
            if entry.key is not None:
                variable = entry.key.removeprefix("env:")
                value = env.get(variable)
                if not value:
                    issues.append(
                        ConfigIssue(
                            f"tenants.api_keys[{index}].key",
                            f"environment variable {variable} is not set (or empty)",
                            f"export {variable}=<the key> before starting the gateway",
                        )
                    )
                    continue
                digest = _digest(value.encode())
            if digest is not None:
                self._by_digest[digest] = entry.tenant
        if issues:
            raise ConfigError(issues, source="tenant API keys")
        self._required = config.require_api_key

    @property
    def enabled(self) -> bool:
        return bool(self._by_digest)

    def identify(self, presented: bytes | None) -> str:
        """The tenant of a request presenting `presented` (None: no key), or Unauthorized."""
        if not self._by_digest:
            return DEFAULT_TENANT
        if presented is None:
            if self._required:
                raise Unauthorized(
                    "this gateway needs an API key: send 'Authorization: Bearer <key>' "
                    "(the OpenAI SDK's api_key) or 'X-Api-Key: <key>'"
                )
            return DEFAULT_TENANT
        tenant = self._by_digest.get(_digest(presented))
        if tenant is None:
            raise Unauthorized("the API key is not valid for this gateway")
        return tenant
