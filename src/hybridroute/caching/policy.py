"""Which requests may be answered from the cache, and for how long an answer is kept.

The rule, checked in this order (the first that applies decides, and `CacheVerdict.reason`
names it):

1. When the cache is disabled (`enabled = False`), nothing is cached.
2. The operation type's TTL is `ttl_s[operation_type]` when present, else `default_ttl_s`. An
   operation whose TTL is 0 is never cached, not even in aggressive mode: such operations (for
   example `emergency`) always get a fresh answer.
3. In aggressive mode (emergency cost controls, or an operator's switch) the temperature limit
   is lifted: every request is cacheable, whatever its temperature, and also without one. The
   TTL becomes the operation's TTL times `aggressive_ttl_multiplier`.
4. Otherwise a request is cacheable only when it is "deterministic enough": its effective
   temperature (`request.temperature`, which the gateway has already filled from the
   operation's defaults) is set and at most `max_temperature`. Such a request is kept for the
   operation's TTL. A request with no temperature, or a higher one, is not cached.

The policy is pure: it reads only the request and the settings.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

from hybridroute.types import GenerationRequest

__all__ = ["CachePolicy", "CacheSettings", "CacheVerdict"]


@dataclass(frozen=True, slots=True)
class CacheSettings:
    """The response cache's settings, as the gateway maps them from its config.

    `ttl_s` maps operation types to their TTL in seconds (0: never cached); an operation not in
    it uses `default_ttl_s`. The byte figures are approximate footprints
    (`CachedResponse.size_bytes`).
    """

    enabled: bool = True
    max_entries: int = 10_000
    max_bytes: int = 64 * 1024 * 1024
    max_entry_bytes: int = 1024 * 1024
    default_ttl_s: float = 300.0
    ttl_s: Mapping[str, float] = field(default_factory=dict)
    max_temperature: float = 0.5
    aggressive_ttl_multiplier: float = 4.0

    def __post_init__(self) -> None:
        for name in ("max_entries", "max_bytes", "max_entry_bytes"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        ttls = {"default_ttl_s": self.default_ttl_s} | {
            f"ttl_s[{op!r}]": ttl for op, ttl in self.ttl_s.items()
        }
        for name, ttl in ttls.items():
            if not (ttl >= 0 and math.isfinite(ttl)):
                raise ValueError(f"{name} must be a finite number >= 0, got {ttl}")
        if not (self.max_temperature >= 0 and math.isfinite(self.max_temperature)):
            raise ValueError(f"max_temperature must be >= 0, got {self.max_temperature}")
        multiplier = self.aggressive_ttl_multiplier
        if not (multiplier > 0 and math.isfinite(multiplier)):
            raise ValueError(f"aggressive_ttl_multiplier must be > 0, got {multiplier}")
        # A private read-only copy: the caller's dict may change later; these settings may not.
        object.__setattr__(self, "ttl_s", MappingProxyType(dict(self.ttl_s)))

    def ttl_for(self, operation_type: str) -> float:
        """The operation's TTL in seconds before any aggressive multiplier."""
        return self.ttl_s.get(operation_type, self.default_ttl_s)


@dataclass(frozen=True, slots=True)
class CacheVerdict:
    """Whether one request may be served from and stored in the cache, and for how long."""

    cacheable: bool
    ttl_s: float  # 0 when not cacheable
    reason: str  # which rule decided, in words


def _num(value: float) -> str:
    return f"{value:g}"


class CachePolicy:
    """Applies the module docstring's rule to requests."""

    __slots__ = ("settings",)

    def __init__(self, settings: CacheSettings) -> None:
        self.settings = settings

    def verdict(self, request: GenerationRequest, *, aggressive: bool) -> CacheVerdict:
        settings = self.settings
        operation = request.operation_type
        if not settings.enabled:
            return CacheVerdict(False, 0.0, "cache disabled")
        ttl = settings.ttl_for(operation)
        if ttl <= 0:
            return CacheVerdict(False, 0.0, f"operation {operation} is never cached (ttl 0)")
        if aggressive:
            multiplier = settings.aggressive_ttl_multiplier
            return CacheVerdict(
                True,
                ttl * multiplier,
                f"aggressive caching: ttl {_num(ttl)} s x {_num(multiplier)}",
            )
        temperature = request.temperature
        limit = settings.max_temperature
        if temperature is None:
            return CacheVerdict(
                False, 0.0, f"temperature unset (provider default), not at or below {_num(limit)}"
            )
        if not temperature <= limit:  # also refuses NaN
            return CacheVerdict(False, 0.0, f"temperature {_num(temperature)} above {_num(limit)}")
        return CacheVerdict(
            True,
            ttl,
            f"temperature {_num(temperature)} at or below {_num(limit)}: ttl {_num(ttl)} s",
        )

    def __repr__(self) -> str:
        return f"<CachePolicy enabled={self.settings.enabled}>"
