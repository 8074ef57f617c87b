"""The response cache's counters: hits, misses, bypasses, refusals, stores and cost saved.

`CacheStats` counts in total, per operation type and per tenant. What each counter means:

- `hits`: a lookup found a live entry and the request was answered from it; `saved` adds up
  the `cost` of the entries served this way (what the original generations cost);
- `misses`: a lookup found nothing;
- `bypasses`: the caller asked not to use the cache (no lookup was made);
- `uncacheable`: the policy said the request may not be cached (no lookup was made);
- `stores`: an answer was put in the store.

`hit_rate` is hits / (hits + misses): bypassed and uncacheable requests are not lookups. It is
None before the first lookup.

The per-operation and per-tenant maps each hold at most `max_keys` named entries (1,000 by
default); later names are counted together under `OTHER`, so a flood of distinct tenants cannot
grow memory without bound. A tenant that is really called "other" shares that line.

Used from one event loop; no locks.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal

__all__ = ["OTHER", "CacheCounts", "CacheStats"]

OTHER = "other"
"""The line that counts every name past a map's bound."""


@dataclass(frozen=True, slots=True)
class CacheCounts:
    """One line of counters (the total, one operation type, or one tenant)."""

    hits: int = 0
    misses: int = 0
    bypasses: int = 0
    uncacheable: int = 0
    stores: int = 0
    saved: Decimal = Decimal(0)

    @property
    def hit_rate(self) -> float | None:
        lookups = self.hits + self.misses
        return None if lookups == 0 else self.hits / lookups

    def as_dict(self) -> dict[str, object]:
        return {
            "hits": self.hits,
            "misses": self.misses,
            "bypasses": self.bypasses,
            "uncacheable": self.uncacheable,
            "stores": self.stores,
            "saved": format(self.saved.normalize(), "f") if self.saved else "0",
            "hit_rate": self.hit_rate,
        }


class _Tally:
    """The mutable form of `CacheCounts`."""

    __slots__ = ("bypasses", "hits", "misses", "saved", "stores", "uncacheable")

    def __init__(self) -> None:
        self.hits = 0
        self.misses = 0
        self.bypasses = 0
        self.uncacheable = 0
        self.stores = 0
        self.saved = Decimal(0)

    def frozen(self) -> CacheCounts:
        return CacheCounts(
            self.hits, self.misses, self.bypasses, self.uncacheable, self.stores, self.saved
        )


class CacheStats:
    """Cache counters in total, per operation type and per tenant (bounded maps)."""

    def __init__(self, *, max_keys: int = 1_000) -> None:
        if max_keys < 1:
            raise ValueError(f"max_keys must be >= 1, got {max_keys}")
        self._max_keys = max_keys
        self._total = _Tally()
        self._by_operation: dict[str, _Tally] = {}
        self._by_tenant: dict[str, _Tally] = {}

    def _lines(self, operation_type: str, tenant: str) -> tuple[_Tally, _Tally, _Tally]:
        return (
            self._total,
            self._line(self._by_operation, operation_type),
            self._line(self._by_tenant, tenant),
        )

    def _line(self, lines: dict[str, _Tally], name: str) -> _Tally:
        line = lines.get(name)
        if line is None:
            named = len(lines) - (OTHER in lines)
            if name != OTHER and named >= self._max_keys:
                name = OTHER
            line = lines.setdefault(name, _Tally())
        return line

    # -- recording -----------------------------------------------------------------------------

    def record_hit(self, operation_type: str, tenant: str, saved: Decimal) -> None:
        for line in self._lines(operation_type, tenant):
            line.hits += 1
            line.saved += saved

    def record_miss(self, operation_type: str, tenant: str) -> None:
        for line in self._lines(operation_type, tenant):
            line.misses += 1

    def record_bypass(self, operation_type: str, tenant: str) -> None:
        for line in self._lines(operation_type, tenant):
            line.bypasses += 1

    def record_uncacheable(self, operation_type: str, tenant: str) -> None:
        for line in self._lines(operation_type, tenant):
            line.uncacheable += 1

    def record_store(self, operation_type: str, tenant: str) -> None:
        for line in self._lines(operation_type, tenant):
            line.stores += 1

    # -- reading -------------------------------------------------------------------------------

    @property
    def total(self) -> CacheCounts:
        return self._total.frozen()

    @property
    def hit_rate(self) -> float | None:
        """Hits / (hits + misses) over all requests; None before the first lookup."""
        return self._total.frozen().hit_rate

    @property
    def saved(self) -> Decimal:
        return self._total.saved

    def by_operation(self) -> dict[str, CacheCounts]:
        return {name: line.frozen() for name, line in self._by_operation.items()}

    def by_tenant(self) -> dict[str, CacheCounts]:
        return {name: line.frozen() for name, line in self._by_tenant.items()}

    def as_dict(self) -> dict[str, object]:
        """JSON-ready plain values; amounts are decimal strings."""
        return {
            "total": self._total.frozen().as_dict(),
            "by_operation": {n: c.as_dict() for n, c in self.by_operation().items()},
            "by_tenant": {n: c.as_dict() for n, c in self.by_tenant().items()},
        }

    def __repr__(self) -> str:
        total = self._total
        return f"<CacheStats hits={total.hits} misses={total.misses} saved={total.saved}>"
