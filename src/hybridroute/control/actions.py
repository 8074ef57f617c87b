"""Operator actions: what the seed's troubleshooting and emergency procedures ask an operator to
do to a running gateway, each audited, persisted while in force, and optionally time-limited.

- `breaker_reset` (route): close a route's breaker now, forgetting its failures;
- `breaker_open` (route): hold a route's breaker open (traffic goes to its fallback);
- `route_disable` / `route_enable` (route): isolate a route from all traffic — a decision never
  tries it, even when it is the only route (security incidents);
- `cache_aggressive` on/off: longer TTLs and more cacheable rows (emergency cost controls);
- `maintenance` on/off: refuse new non-critical work with 503 + Retry-After, critical continues.

An action with `for_s` ends by itself (the expiry is checked every second and audited as
`action_expired`); ending it early is the opposite action (`route_enable`, `breaker_reset`,
`cache_aggressive` off, `maintenance` off). The actions in force are kept in the control store
and re-applied at start, so a restart does not quietly undo an isolation.
"""

from __future__ import annotations

import asyncio
import logging
import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any

import orjson

from hybridroute._clock import Clock
from hybridroute.audit.trail import AuditTrail
from hybridroute.errors import RequestError
from hybridroute.gateway.cache import ResponseCache
from hybridroute.resilience.breaker import CircuitBreaker
from hybridroute.signals import Overrides
from hybridroute.storage.control import ControlStore
from hybridroute.types import RouteId

__all__ = ["ACTIONS", "ACTIONS_KEY", "ActiveAction", "OperatorActions"]

log = logging.getLogger("hybridroute.control")

ACTIONS_KEY = "operator_actions"
ACTIONS = (
    "breaker_reset",
    "breaker_open",
    "route_disable",
    "route_enable",
    "cache_aggressive",
    "maintenance",
)
_NEEDS_ROUTE = {"breaker_reset", "breaker_open", "route_disable", "route_enable"}
_SWITCHES = {"cache_aggressive", "maintenance"}
_MAX_FOR_S = 30 * 86_400


@dataclass(frozen=True, slots=True)
class ActiveAction:
    """An action in force: what, on what, by whom, why, since when and until when."""

    action: str  # breaker_open | route_disable | cache_aggressive | maintenance
    target: str  # the route, or "" for gateway-wide switches
    by: str
    reason: str
    at: float
    expires_at: float | None

    @property
    def key(self) -> tuple[str, str]:
        return (self.action, self.target)


class OperatorActions:
    """Takes operator actions, keeps the ones in force, and ends them when they expire."""

    def __init__(
        self,
        *,
        breakers: Mapping[RouteId, CircuitBreaker],
        cache: ResponseCache,
        store: ControlStore,
        audit: AuditTrail,
        clock: Clock,
        cache_aggressive_default: bool,
    ) -> None:
        self._breakers = breakers
        self._cache = cache
        self._store = store
        self._audit = audit
        self._clock = clock
        self._cache_default = cache_aggressive_default
        self._active: dict[tuple[str, str], ActiveAction] = {}
        self._overrides = Overrides()
        self._lock = asyncio.Lock()

    def overrides(self) -> Overrides:
        """What decisions must respect now (read once per decision)."""
        return self._overrides

    def active(self) -> list[ActiveAction]:
        return sorted(self._active.values(), key=lambda a: a.at)

    # -- taking actions --------------------------------------------------------------------------

    async def take(
        self,
        action: str,
        *,
        target: str | None,
        enabled: bool | None,
        for_s: float | None,
        actor: str,
        reason: str,
    ) -> dict[str, Any]:
        """Validate and take one action; what is in force afterwards."""
        route, on = self._validate(action, target, enabled, for_s)
        now = self._clock.now()
        expires = now + for_s if for_s is not None else None
        async with self._lock:
            # The new set of actions is stored first: an action that cannot be recorded is not
            # taken (the caller gets the store's 503).
            active = dict(self._active)
            if action == "breaker_reset":
                active.pop(("breaker_open", route), None)
            elif action == "route_enable":
                active.pop(("route_disable", route), None)
            elif on:
                entry = ActiveAction(action, route, actor, reason, now, expires)
                active[entry.key] = entry
            else:
                active.pop((action, route), None)
            await self._persist(active)
            self._active = active
            if action == "breaker_reset":
                self._breakers[route].reset()
            self._enforce(opened=route if action == "breaker_open" else None, hold_s=for_s)
        await self._audit.record(
            "operator_action",
            actor,
            {
                "action": action,
                "target": route or None,
                "enabled": on,
                "for_s": for_s,
                "expires_at": expires,
                "reason": reason,
            },
        )
        log.warning("operator action %s %s by %s", action, route or ("on" if on else "off"), actor)
        return self.snapshot()

    def _validate(
        self, action: str, target: str | None, enabled: bool | None, for_s: float | None
    ) -> tuple[str, bool]:
        if action not in ACTIONS:
            raise RequestError(
                f"unknown action {action!r}; actions: {', '.join(ACTIONS)}", param="action"
            )
        route = ""
        if action in _NEEDS_ROUTE:
            if not isinstance(target, str) or target not in self._breakers:
                raise RequestError(
                    f"{action} needs 'route', one of {', '.join(sorted(self._breakers))} "
                    f"(got {target!r})",
                    param="route",
                )
            route = target
        elif target not in (None, ""):
            raise RequestError(f"{action} applies to the whole gateway; leave 'route' out")
        if action in _SWITCHES:
            if not isinstance(enabled, bool):
                raise RequestError(f"{action} needs 'enabled': true or false", param="enabled")
        elif enabled is not None:
            raise RequestError(f"{action} takes no 'enabled'", param="enabled")
        on = True if enabled is None else enabled
        if for_s is not None:
            if action in ("breaker_reset", "route_enable") or (action in _SWITCHES and not on):
                raise RequestError(f"'for_s' makes no sense for {action} (it ends something)")
            if not (0 < for_s <= _MAX_FOR_S and math.isfinite(for_s)):
                raise RequestError(
                    f"'for_s' must be a number of seconds between 0 and {_MAX_FOR_S}",
                    param="for_s",
                )
        return route, on

    def _enforce(self, *, opened: str | None = None, hold_s: float | None = None) -> None:
        """Make the gateway's parts match the actions in force."""
        active = self._active
        maintenance = active.get(("maintenance", ""))
        self._overrides = Overrides(
            disabled_routes=frozenset(t for (a, t) in active if a == "route_disable"),
            maintenance=maintenance is not None,
            maintenance_retry_after_s=60,
            maintenance_reason=maintenance.reason if maintenance is not None else "",
        )
        self._cache.always_aggressive = (("cache_aggressive", "") in active) or self._cache_default
        if opened is not None:
            entry = active[("breaker_open", opened)]
            self._breakers[opened].force_open(entry.reason or f"by {entry.by}", hold_s)

    async def _persist(self, active: dict[tuple[str, str], ActiveAction] | None = None) -> None:
        chosen = self._active if active is None else active
        await self._store.put_state(
            ACTIONS_KEY, orjson.dumps([asdict(a) for a in chosen.values()]).decode()
        )

    # -- start and expiry ------------------------------------------------------------------------

    async def load(self) -> None:
        """Re-apply the actions in force when the gateway last stopped (expired ones end)."""
        raw = await self._store.get_state(ACTIONS_KEY)
        if raw is None:
            return
        now = self._clock.now()
        async with self._lock:
            self._active = {}
            for item in orjson.loads(raw):
                entry = ActiveAction(**item)
                if entry.expires_at is None or entry.expires_at > now:
                    self._active[entry.key] = entry
            self._enforce()
            for (action, route), entry in self._active.items():
                if action == "breaker_open":
                    left = None if entry.expires_at is None else entry.expires_at - now
                    self._breakers[route].force_open(entry.reason or f"by {entry.by}", left)

    async def expire(self) -> int:
        """End the actions whose time is up; how many."""
        now = self._clock.now()
        due = [a for a in self._active.values() if a.expires_at is not None and a.expires_at <= now]
        if not due:
            return 0
        async with self._lock:
            for entry in due:  # a held breaker's own hold ends it: it turns half-open
                self._active.pop(entry.key, None)
            self._enforce()
            await self._persist()
        for entry in due:
            await self._audit.record(
                "action_expired",
                "gateway",
                {"action": entry.action, "target": entry.target or None, "by": entry.by},
            )
        return len(due)

    async def run(self, interval_s: float = 1.0) -> None:
        while True:
            await asyncio.sleep(interval_s)
            try:
                await self.expire()
            except Exception:
                log.exception("could not end expired operator actions")

    def snapshot(self) -> dict[str, Any]:
        o = self._overrides
        return {
            "active": [asdict(a) for a in self.active()],
            "disabled_routes": sorted(o.disabled_routes),
            "maintenance": o.maintenance,
            "cache_aggressive": self._cache.always_aggressive,
            "forced_open_breakers": sorted(r for r, b in self._breakers.items() if b.forced_open),
        }
