"""`SharedCostLedger`: the cost ledger of one replica in a fleet whose budgets live in Redis.

The policy is the ledger's own (what is reserved, who is refused and why, thresholds and their
events); what changes is where the numbers are: every reservation and settlement goes through
Redis scripts (`RedisBudgetBook`), so the fleet never reserves past a limit together. The local
accounts are mirrors — refreshed from Redis every half second and after each settlement — that
the request path reads (budget levels, cheaper-route preference) without a network round trip.

When Redis cannot be reached: critical work is still reserved (locally) and served, everything
else is refused with 503 (budgets fail closed); settlements are kept and replayed when Redis is
back, so no spend is lost. A threshold is announced by exactly one replica per window.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
from collections.abc import Sequence
from decimal import Decimal

from redis.exceptions import RedisError

from hybridroute._tasks import TaskSupervisor
from hybridroute.economics.ledger import CostLedger, Reservation, _Account
from hybridroute.economics.pricing import ZERO
from hybridroute.economics.shared_budgets import NotLoaded, RedisBudgetBook
from hybridroute.errors import StorageError
from hybridroute.storage.records import ChargeRecord, from_units, to_units
from hybridroute.types import Priority

__all__ = ["SharedCostLedger"]

log = logging.getLogger("hybridroute.budgets")

_REFRESH_S = 0.5
_REAP_EVERY = 10  # refreshes
_KEEP_BEYOND_WINDOW_S = 2 * 86_400


class SharedCostLedger(CostLedger):
    """A cost ledger whose budgets are counted in Redis, for every replica at once."""

    book: RedisBudgetBook

    def use_book(self, book: RedisBudgetBook) -> None:
        self.book = book
        self._backlog: list[tuple[str | None, list[str], int]] = []
        self._announcements: list[tuple[_Account, str, Decimal, str, float]] = []
        self.redis_errors = 0

    def _key(self, account: _Account) -> str:
        return self.book.account_key(account.budget, account.period.value, account.window.key)

    def _keep_s(self, account: _Account, now: float) -> int:
        return int(account.window.seconds_left(now)) + _KEEP_BEYOND_WINDOW_S

    # -- lifecycle -------------------------------------------------------------------------------

    async def start(self, supervisor: TaskSupervisor) -> None:
        await super().start(supervisor)
        if self.has_budgets:
            supervisor.spawn(self._keep_shared(), name="shared-budgets")

    async def aclose(self) -> None:
        try:
            await self._replay()
        except RedisError:
            log.error("%d budget settlements could not reach Redis at stop", len(self._backlog))
        await self.book.aclose()
        await super().aclose()

    # -- loading an account Redis does not know --------------------------------------------------

    async def _settled_spend(self, account: _Account) -> Decimal:
        """The account's settled spend in its window, from the durable ledger."""
        window = account.window
        rows = await self.store.spend(window.first_day, window.last_day)
        tenant = self._budgets[account.budget].tenant
        return sum((r.cost for r in rows if tenant is None or r.tenant == tenant), ZERO)

    async def _load(self, account: _Account, now: float) -> None:
        spent = await self._settled_spend(account)
        units = await self.book.load(
            self._key(account), to_units(spent), self._keep_s(account, now)
        )
        account.spent = from_units(units)

    # -- the request path ------------------------------------------------------------------------

    async def reserve(self, tenant: str, priority: Priority, estimate: Decimal) -> Reservation:
        now = self._clock.now()
        accounts = tuple(self._applicable(tenant, now))
        if not accounts:
            return Reservation(tenant, estimate, accounts)
        keys = [self._key(a) for a in accounts]
        lease = secrets.token_hex(10)
        critical = priority is Priority.CRITICAL
        try:
            for _ in range(len(accounts) + 1):
                try:
                    result = await self.book.reserve(
                        keys,
                        [to_units(a.limit) for a in accounts],
                        to_units(estimate),
                        critical=critical,
                        lease_id=lease,
                        expires_at=now + self.book.lease_s,
                    )
                    break
                except NotLoaded as missing:
                    await self._load(accounts[missing.index], now)
            else:  # Redis dropped accounts as fast as they were loaded (evicting under memory?)
                raise StorageError(
                    "shared budgets: Redis keeps losing the budget accounts just loaded into it; "
                    "check its maxmemory policy (budget keys must not be evicted)"
                )
        except (RedisError, OSError) as exc:
            self.redis_errors += 1
            if not critical:
                raise StorageError(
                    f"budgets are shared through Redis, which cannot be reached ({exc}); "
                    "non-critical work is refused until it is back, critical work is served"
                ) from None
            log.warning("Redis unreachable: critical work reserved locally (%s)", exc)
            return await super().reserve(tenant, priority, estimate)
        if not result.held:
            assert result.refused_by is not None
            refusing = accounts[result.refused_by]
            refusing.spent, refusing.reserved = (
                from_units(result.spent),
                from_units(result.reserved),
            )
            raise self._refusal(refusing, priority, estimate, now)
        for account in accounts:
            account.reserved += estimate
        return Reservation(tenant, estimate, accounts, lease=lease)

    async def settle(
        self, reservation: Reservation | None, charges: Sequence[ChargeRecord]
    ) -> None:
        if not self._close(reservation, charges):
            return
        total = sum((c.cost for c in charges), ZERO)
        lease = reservation.lease if reservation is not None else None
        if not self.has_budgets or (lease is None and total <= 0):
            return
        tenant = reservation.tenant if reservation is not None else charges[0].tenant
        now = self._clock.now()
        current = list(self._applicable(tenant, now)) if total > 0 else []
        keys = [self._key(a) for a in current]
        try:
            spent = await self.book.settle(lease, keys, to_units(total))
        except (RedisError, OSError):
            self.redis_errors += 1
            self._backlog.append((lease, keys, to_units(total)))
            for account in current:
                account.spent += total
                self._check_thresholds(account, now)
            return
        for account, units in zip(current, spent, strict=True):
            account.spent = from_units(units)
            self._check_thresholds(account, now)
        await self._announce()

    # -- thresholds: one announcement per window for the fleet -----------------------------------

    def _emit(
        self, account: _Account, threshold: str, level: Decimal, kind: str, now: float
    ) -> None:
        self._announcements.append((account, threshold, level, kind, now))

    async def _announce(self) -> None:
        pending, self._announcements = self._announcements, []
        for account, threshold, level, kind, now in pending:
            key = self._key(account)
            try:
                if kind == "fired":
                    won = await self.book.fire_once(key, threshold, self._keep_s(account, now))
                else:
                    won = await self.book.rearm(key, threshold)
            except (RedisError, OSError):
                self._announcements.append((account, threshold, level, kind, now))
                return
            if won:
                CostLedger._emit(self, account, threshold, level, kind, now)

    # -- keeping the mirrors and Redis in step ---------------------------------------------------

    async def _replay(self) -> None:
        while self._backlog:
            lease, keys, units = self._backlog[0]
            await self.book.settle(lease, keys, units)
            self._backlog.pop(0)

    async def refresh(self) -> None:
        """Replay kept settlements, re-read every current account (loading those Redis lost),
        and announce what crossed a threshold."""
        await self._replay()
        now = self._clock.now()
        accounts = [
            self._account(name, period, now)
            for name, limits in self._budgets.items()
            for period in limits.periods
        ]
        read = await self.book.read([self._key(a) for a in accounts])
        for account, found in zip(accounts, read, strict=True):
            if found is None:
                await self._load(account, now)
            else:
                account.spent, account.reserved = from_units(found[0]), from_units(found[1])
            self._check_thresholds(account, now)
        await self._announce()

    async def _keep_shared(self) -> None:
        rounds = 0
        while True:
            await asyncio.sleep(_REFRESH_S)
            rounds += 1
            try:
                await self.refresh()
                if rounds % _REAP_EVERY == 0:
                    released = await self.book.reap(self._clock.now())
                    if released:
                        log.warning(
                            "gave back %d budget reservations whose replica never settled them",
                            released,
                        )
            except (RedisError, OSError) as exc:
                self.redis_errors += 1
                log.warning("shared budgets: Redis unreachable (%s); retrying", exc)
            except Exception:
                log.exception("shared budgets: refresh failed")
