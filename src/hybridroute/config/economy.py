"""What spending and caching a configuration may say: prices, budgets and the response cache.

Money is `Decimal` from the file to the ledger: write prices and limits as strings ("0.003") or
plain numbers; either becomes an exact decimal. Cross-references (a price for a route that does
not exist, a budget for a tenant that has no key) are checked in `checks.py`.
"""

from __future__ import annotations

from decimal import Decimal

from pydantic import BaseModel, ConfigDict, Field, model_validator

__all__ = [
    "DEFAULT_CACHE_TTL_S",
    "BudgetLimits",
    "BudgetsConfig",
    "CacheConfig",
    "ModelPrice",
    "PricingConfig",
    "RoutePrice",
]

Money = Decimal


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ModelPrice(_Strict):
    """What one model costs per 1,000 tokens, input and output."""

    input_per_1k: Money = Field(ge=0, max_digits=18, decimal_places=10)
    output_per_1k: Money = Field(ge=0, max_digits=18, decimal_places=10)


class RoutePrice(ModelPrice):
    """A route's price, with overrides for particular models it serves."""

    models: dict[str, ModelPrice] = Field(default_factory=dict)


class PricingConfig(_Strict):
    """The price table: per route (and model), input and output per 1,000 tokens."""

    currency: str = Field(default="USD", pattern=r"^[A-Z]{3}$")
    routes: dict[str, RoutePrice] = Field(default_factory=dict)


class BudgetLimits(_Strict):
    """Spend limits over calendar windows (UTC): a day and a month. Either may be left out."""

    daily: Money | None = Field(default=None, gt=0, max_digits=18, decimal_places=10)
    monthly: Money | None = Field(default=None, gt=0, max_digits=18, decimal_places=10)

    @model_validator(mode="after")
    def _something_limited(self) -> BudgetLimits:
        if self.daily is None and self.monthly is None:
            raise ValueError("a budget needs 'daily', 'monthly' or both (an amount of money)")
        return self


class BudgetsConfig(_Strict):
    """Budgets for the whole gateway (`global`) and per tenant, and their thresholds."""

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    global_: BudgetLimits | None = Field(default=None, alias="global")
    tenants: dict[str, BudgetLimits] = Field(default_factory=dict)
    # 80 %: an info alert, and medium/low rows prefer the cheaper route; 95 %: a critical alert
    # and emergency cost controls; 100 %: only critical priority is served.
    info_at: float = Field(default=0.80, gt=0, lt=1)
    critical_at: float = Field(default=0.95, gt=0, lt=1)
    # A threshold that fired re-arms only once utilisation falls this far below it.
    hysteresis: float = Field(default=0.05, ge=0, lt=0.5)
    # Retry-After for throttled work: the time until the pressing window resets, at most this.
    retry_after_max_s: int = Field(default=300, ge=1, le=86_400)
    # Share the budgets of a fleet of replicas (or worker processes) through Redis: a URL, or
    # `env:VAR` naming the variable that holds one. Unset: each process counts on its own.
    redis_url: str | None = None
    redis_prefix: str = Field(default="hybridroute", pattern=r"^[A-Za-z0-9_.:-]{1,64}$")
    # A reservation not settled within this long (its replica died) is given back.
    lease_s: int = Field(default=900, ge=30, le=86_400)

    @model_validator(mode="after")
    def _thresholds_ordered(self) -> BudgetsConfig:
        if self.critical_at <= self.info_at:
            raise ValueError(
                f"critical_at ({self.critical_at}) must be above info_at ({self.info_at})"
            )
        return self

    @property
    def configured(self) -> bool:
        return self.global_ is not None or bool(self.tenants)

    @property
    def shared(self) -> bool:
        """Counted in Redis for every process, rather than by each on its own."""
        return self.configured and self.redis_url is not None


DEFAULT_CACHE_TTL_S: dict[str, float] = {
    "emergency": 0,  # an emergency always gets a fresh answer
    "infrastructure": 30,
    "meta_monitor": 300,
    "implementation": 600,
    "kiro_communication": 600,
    "standard": 3600,
    "background": 3600,
}


class CacheConfig(_Strict):
    """The exact-match response cache (in process; bounded by entries and memory)."""

    enabled: bool = True
    max_entries: int = Field(default=10_000, ge=1, le=1_000_000)
    max_mib: float = Field(default=64, gt=0, le=65_536)
    max_entry_kib: float = Field(default=1024, gt=0, le=1_048_576)
    default_ttl_s: float = Field(default=300, ge=0, le=30 * 86_400)
    # Per operation type, over the built-in defaults (DEFAULT_CACHE_TTL_S); others get
    # default_ttl_s. 0: never cached.
    ttl_s: dict[str, float] = Field(default_factory=dict)
    # "Deterministic enough": a request hotter than this (or with no temperature) is not cached,
    # unless caching is aggressive.
    max_temperature: float = Field(default=0.5, ge=0, le=2)
    aggressive_ttl_multiplier: float = Field(default=4, ge=1, le=1000)
    # Aggressive caching all the time (the operator's switch); it also turns on by itself under
    # emergency cost controls (budget at or above critical_at).
    aggressive: bool = False
    # Share the cache between replicas through Redis (a URL or `env:VAR`); unset: in process.
    redis_url: str | None = None
    redis_prefix: str = Field(default="hybridroute", pattern=r"^[A-Za-z0-9_.:-]{1,64}$")

    @model_validator(mode="after")
    def _ttls_valid(self) -> CacheConfig:
        for op, ttl in self.ttl_s.items():
            if ttl < 0:
                raise ValueError(f"ttl_s.{op} is {ttl}; a TTL is 0 (never cached) or more")
        if self.max_entry_kib > self.max_mib * 1024:
            raise ValueError("max_entry_kib is larger than the whole cache (max_mib)")
        return self

    def ttl_for(self, operation_type: str) -> float:
        """The TTL of an operation type: configured, else built in, else default_ttl_s."""
        configured = self.ttl_s.get(operation_type)
        if configured is not None:
            return configured
        return DEFAULT_CACHE_TTL_S.get(operation_type, self.default_ttl_s)
