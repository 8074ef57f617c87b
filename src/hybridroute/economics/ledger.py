"""The cost ledger: every charge recorded, budgets kept with reserve → settle → release.

Before a request is sent upstream, its worst-case cost (from the prompt, `max_tokens` and the
attempts its decision allows, at the dearest route; `gateway.accounting`) is *reserved* against
every budget that applies to it: the global budget and its tenant's, each over its day and its
month. A reservation that would take a budget past its limit is refused (429 with Retry-After:
a few seconds when only reservations of requests in flight stand in the way, else the time to
the window's reset), except for `critical` priority, which is always served. When the request
ends, the reservation is *settled* to what the request's attempts actually cost (or *released*,
when nothing was charged). So concurrent requests cannot together spend past a limit, unless a
request's actual usage exceeds its estimate (a prompt that tokenises to more than estimated).

Utilisation is settled spend over the limit. Crossing `info_at` (80 %), `critical_at` (95 %)
and 100 % fires a `BudgetEvent` once per window; a fired threshold re-arms only when
utilisation falls `hysteresis` below it (a raised limit). Events go to listeners and to the
store; charges go to the store in batches off the request path. At start the ledger rebuilds
the current windows' spend and fired thresholds from the store, so neither is lost on restart.

Everything here runs on one event loop; the in-memory totals need no locks.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from hybridroute._clock import Clock
from hybridroute._tasks import TaskSupervisor
from hybridroute.config.economy import BudgetLimits, BudgetsConfig
from hybridroute.economics.pricing import ZERO, money_text
from hybridroute.economics.windows import Period, Window
from hybridroute.errors import BudgetRefused
from hybridroute.signals import NO_BUDGET_PRESSURE, BudgetLevel, BudgetView
from hybridroute.storage.ledger import LedgerStore
from hybridroute.storage.records import BudgetEventRecord, ChargeRecord
from hybridroute.storage.writer import BatchWriter
from hybridroute.types import Priority, RouteId

__all__ = ["BudgetEvent", "BudgetStatus", "CostLedger", "LedgerSnapshot", "Reservation"]

log = logging.getLogger("hybridroute.budgets")

GLOBAL = "global"
_RETENTION_EVERY_S = 6 * 3600
_IN_FLIGHT_RETRY_S = 5  # Retry-After when only reservations of requests in flight refuse one
_THRESHOLD_NAMES = ("info", "critical", "exhausted")
_SEVERITY = {"info": "info", "critical": "critical", "exhausted": "critical"}


@dataclass(frozen=True, slots=True)
class BudgetEvent:
    """A budget threshold fired (or re-armed) in one window."""

    at: float
    budget: str  # "global" or "tenant:<name>"
    period: Period
    window: str
    threshold: str  # info | critical | exhausted
    level: float  # the threshold's utilisation (0.8, 0.95, 1.0 by default)
    kind: str  # fired | rearmed
    utilisation: float
    spent: Decimal
    limit: Decimal
    currency: str

    @property
    def severity(self) -> str:
        return _SEVERITY[self.threshold] if self.kind == "fired" else "info"

    @property
    def message(self) -> str:
        used = f"{self.utilisation * 100:.1f} %"
        amounts = f"{money_text(self.spent)} of {money_text(self.limit)} {self.currency}"
        where = f"{self.budget} {self.period.value} budget ({self.window})"
        if self.kind == "rearmed":
            return f"{where} back below its {self.threshold} threshold: {used} ({amounts})"
        mark = f"{self.level * 100:g} %"
        return {
            "info": f"{where} passed {mark}: {used} used ({amounts})",
            "critical": (
                f"{where} passed {mark}: {used} used ({amounts}); emergency cost controls on: "
                "aggressive caching, low-priority work throttled"
            ),
            "exhausted": (
                f"{where} exhausted: {used} used ({amounts}); only critical operations are "
                "served until the window resets"
            ),
        }[self.threshold]

    @classmethod
    def from_record(cls, record: BudgetEventRecord) -> BudgetEvent:
        return cls(
            at=record.at,
            budget=record.budget,
            period=Period(record.period),
            window=record.window,
            threshold=record.threshold,
            level=record.level,
            kind=record.kind,
            utilisation=record.utilisation,
            spent=record.spent,
            limit=record.limit,
            currency=record.currency,
        )

    def record(self) -> BudgetEventRecord:
        return BudgetEventRecord(
            self.at,
            self.budget,
            self.period.value,
            self.window,
            self.threshold,
            self.level,
            self.kind,
            self.utilisation,
            self.spent,
            self.limit,
            self.currency,
        )

    def as_dict(self) -> dict[str, Any]:
        return {
            "at": self.at,
            "budget": self.budget,
            "period": self.period.value,
            "window": self.window,
            "threshold": self.threshold,
            "level": self.level,
            "kind": self.kind,
            "severity": self.severity,
            "utilisation": round(self.utilisation, 6),
            "spent": money_text(self.spent),
            "limit": money_text(self.limit),
            "currency": self.currency,
            "message": self.message,
        }


class _Account:
    """One budget over one window: its limit, what is spent and what is reserved.

    When the window rolls over, the next window's account takes over what is still reserved
    (requests in flight at midnight count against the new day) and becomes this one's
    `successor`, so settling such a reservation gives it back where it is now held.
    """

    __slots__ = (
        "armed",
        "budget",
        "limit",
        "period",
        "reserved",
        "spent",
        "successor",
        "window",
    )

    def __init__(self, budget: str, period: Period, limit: Decimal, window: Window) -> None:
        self.budget = budget
        self.period = period
        self.limit = limit
        self.window = window
        self.spent = ZERO
        self.reserved = ZERO
        self.armed = dict.fromkeys(_THRESHOLD_NAMES, True)
        self.successor: _Account | None = None

    @property
    def ratio(self) -> Decimal:
        """Settled spend over the limit, exactly (levels and thresholds compare this)."""
        return self.spent / self.limit

    @property
    def utilisation(self) -> float:
        return float(self.ratio)

    def current(self) -> _Account:
        """The account that holds this one's reservations now (itself, or a successor)."""
        account = self
        while account.successor is not None:
            account = account.successor
        return account


@dataclass(slots=True)
class Reservation:
    """Money held against budgets for one request until it is settled or released."""

    tenant: str
    amount: Decimal
    accounts: tuple[_Account, ...]
    done: bool = False
    lease: str | None = None  # shared budgets: the reservation's lease in Redis


@dataclass(frozen=True, slots=True)
class BudgetStatus:
    """One budget over its current window, as reported."""

    budget: str
    period: Period
    window: str
    limit: Decimal
    spent: Decimal
    reserved: Decimal
    utilisation: float
    level: BudgetLevel
    resets_in_s: float
    fired: tuple[str, ...]

    def as_dict(self) -> dict[str, Any]:
        return {
            "budget": self.budget,
            "period": self.period.value,
            "window": self.window,
            "limit": money_text(self.limit),
            "spent": money_text(self.spent),
            "reserved": money_text(self.reserved),
            "utilisation": round(self.utilisation, 6),
            "level": self.level.name.lower(),
            "resets_in_s": round(self.resets_in_s),
            "fired": list(self.fired),
        }


@dataclass(frozen=True, slots=True)
class LedgerSnapshot:
    """The ledger's state: budgets, recent events, and how the store is keeping up."""

    currency: str
    budgets: tuple[BudgetStatus, ...]
    events: tuple[BudgetEvent, ...]
    store: str
    pending_writes: int
    write_failures: int
    last_write_error: str | None
    info_at: float
    critical_at: float

    def as_dict(self) -> dict[str, Any]:
        return {
            "currency": self.currency,
            "thresholds": {"info": self.info_at, "critical": self.critical_at, "exhausted": 1.0},
            "budgets": [b.as_dict() for b in self.budgets],
            "events": [e.as_dict() for e in self.events],
            "store": {
                "where": self.store,
                "pending_writes": self.pending_writes,
                "write_failures": self.write_failures,
                "last_write_error": self.last_write_error,
            },
        }


BudgetListener = Callable[[BudgetEvent], None]


@dataclass(slots=True)
class _Limits:
    tenant: str | None  # None: the global budget
    periods: dict[Period, Decimal] = field(default_factory=dict)


def _limits_of(budget: BudgetLimits) -> dict[Period, Decimal]:
    periods: dict[Period, Decimal] = {}
    if budget.daily is not None:
        periods[Period.DAILY] = budget.daily
    if budget.monthly is not None:
        periods[Period.MONTHLY] = budget.monthly
    return periods


class CostLedger:
    """Spend, budgets and their thresholds for one deployment."""

    def __init__(
        self,
        config: BudgetsConfig,
        currency: str,
        clock: Clock,
        store: LedgerStore,
        *,
        flush_interval_s: float = 0.2,
        keep_events: int = 200,
        retention_days: int = 400,
    ) -> None:
        self.config = config
        self.currency = currency
        self.store = store
        self._clock = clock
        self._budgets: dict[str, _Limits] = {}
        if config.global_ is not None:
            self._budgets[GLOBAL] = _Limits(None, _limits_of(config.global_))
        for tenant, limits in config.tenants.items():
            self._budgets[f"tenant:{tenant}"] = _Limits(tenant, _limits_of(limits))
        self._accounts: dict[tuple[str, Period], _Account] = {}
        self._info_at = Decimal(str(config.info_at))
        self._critical_at = Decimal(str(config.critical_at))
        self._hysteresis = Decimal(str(config.hysteresis))
        self._thresholds = (
            ("info", self._info_at),
            ("critical", self._critical_at),
            ("exhausted", Decimal(1)),
        )
        self._listeners: list[BudgetListener] = [_log_event]
        self._events: list[BudgetEvent] = []
        self._keep_events = keep_events
        self._retention_days = retention_days
        self.charges = BatchWriter(
            "charges", store.append_charges, clock, flush_interval_s=flush_interval_s
        )
        self.budget_events = BatchWriter(
            "budget events", store.append_budget_events, clock, flush_interval_s=flush_interval_s
        )

    @property
    def has_budgets(self) -> bool:
        return bool(self._budgets)

    def add_listener(self, listener: BudgetListener) -> None:
        """Hear every budget event (alerting and auditing subscribe here)."""
        self._listeners.append(listener)

    # -- lifecycle -------------------------------------------------------------------------------

    async def start(self, supervisor: TaskSupervisor) -> None:
        """Open the store, rebuild this month's spend and thresholds, start the writers."""
        await self.store.open()
        await self._restore()
        supervisor.spawn(self.charges.run(), name="ledger-charges-writer")
        supervisor.spawn(self.budget_events.run(), name="ledger-events-writer")
        supervisor.spawn(self._retain(), name="ledger-retention")

    async def _retain(self) -> None:
        """Delete records older than the retention period, now and every six hours."""
        while True:
            cutoff = self._clock.now() - self._retention_days * 86_400
            try:
                removed = await self.store.purge(Window.containing(Period.DAILY, cutoff).key)
            except Exception:  # the store is away: try again next time
                log.exception("could not delete ledger records past their retention")
            else:
                if removed:
                    log.info(
                        "deleted %d ledger records past %d days", removed, self._retention_days
                    )
            await self._clock.sleep(_RETENTION_EVERY_S)

    async def flush(self) -> None:
        """Write every pending charge and event now."""
        await self.charges.flush()
        await self.budget_events.flush()

    async def aclose(self) -> None:
        """Write what is still pending (the writers may never have run), then close the store.
        Call after the writer tasks are stopped."""
        try:
            await self.flush()
        except Exception:  # the store is away: say what is lost rather than hide it
            log.exception(
                "%d charges and %d budget events could not be written at shutdown",
                self.charges.pending,
                self.budget_events.pending,
            )
        finally:
            await self.store.aclose()

    async def _restore(self) -> None:
        now = self._clock.now()
        month = Window.containing(Period.MONTHLY, now)
        day = Window.containing(Period.DAILY, now)
        rows = await self.store.spend(month.first_day)
        for name, limits in self._budgets.items():
            relevant = [r for r in rows if limits.tenant is None or r.tenant == limits.tenant]
            for period in limits.periods:
                account = self._account(name, period, now)
                if period is Period.DAILY:
                    account.spent = sum((r.cost for r in relevant if r.day == day.key), ZERO)
                else:
                    account.spent = sum((r.cost for r in relevant), ZERO)
        for record in await self.store.budget_events(month.start):
            self._events.append(BudgetEvent.from_record(record))
            known = self._accounts.get((record.budget, Period(record.period)))
            if known is not None and known.window.key == record.window:
                known.armed[record.threshold] = record.kind == "rearmed"
        del self._events[: -self._keep_events]
        for current in list(self._accounts.values()):
            self._check_thresholds(current, now)

    # -- the request path ------------------------------------------------------------------------

    def view(self, tenant: str, cheaper_route: RouteId | None = None) -> BudgetView:
        """Where spend stands for a request of `tenant` (the most-used budget decides)."""
        if not self._budgets:
            return NO_BUDGET_PRESSURE
        now = self._clock.now()
        worst: _Account | None = None
        for account in self._applicable(tenant, now):
            if worst is None or account.ratio > worst.ratio:
                worst = account
        if worst is None:
            return NO_BUDGET_PRESSURE
        return BudgetView(
            level=self._level(worst.ratio),
            utilisation=worst.utilisation,
            retry_after_s=self._retry_after(worst, now),
            cheaper_route=cheaper_route,
        )

    async def reserve(self, tenant: str, priority: Priority, estimate: Decimal) -> Reservation:
        """Hold `estimate` against every budget of `tenant`, or refuse (BudgetRefused)."""
        now = self._clock.now()
        accounts = tuple(self._applicable(tenant, now))
        if priority is not Priority.CRITICAL:
            for account in accounts:
                if account.spent + account.reserved + estimate > account.limit:
                    raise self._refusal(account, priority, estimate, now)
        for account in accounts:
            account.reserved += estimate
        return Reservation(tenant, estimate, accounts)

    async def settle(
        self, reservation: Reservation | None, charges: Sequence[ChargeRecord]
    ) -> None:
        """Replace a reservation by what the request's attempts actually cost."""
        if not self._close(reservation, charges):
            return
        total = sum((c.cost for c in charges), ZERO)
        if total <= 0 or not self._budgets:
            return
        now = self._clock.now()
        tenant = charges[0].tenant
        for account in self._applicable(tenant, now):
            account.spent += total
            self._check_thresholds(account, now)

    def _close(self, reservation: Reservation | None, charges: Sequence[ChargeRecord]) -> bool:
        """Take a reservation off its accounts and queue the charges for the store; False
        when the reservation was settled already (nothing is done twice)."""
        if reservation is not None:
            if reservation.done:
                return False
            reservation.done = True
            for account in reservation.accounts:
                holder = account.current()
                holder.reserved = max(ZERO, holder.reserved - reservation.amount)
        for charge in charges:
            self.charges.submit(charge)
        return True

    async def release(self, reservation: Reservation | None) -> None:
        """Give a reservation back: nothing was charged."""
        await self.settle(reservation, ())

    # -- reporting -------------------------------------------------------------------------------

    def snapshot(self) -> LedgerSnapshot:
        now = self._clock.now()
        statuses = []
        for name, limits in self._budgets.items():
            for period in limits.periods:
                account = self._account(name, period, now)
                used = account.utilisation
                level = self._level(account.ratio)
                statuses.append(
                    BudgetStatus(
                        budget=name,
                        period=period,
                        window=account.window.key,
                        limit=account.limit,
                        spent=account.spent,
                        reserved=account.reserved,
                        utilisation=used,
                        level=level,
                        resets_in_s=account.window.seconds_left(now),
                        fired=tuple(t for t in _THRESHOLD_NAMES if not account.armed[t]),
                    )
                )
        return LedgerSnapshot(
            currency=self.currency,
            budgets=tuple(statuses),
            events=tuple(self._events),
            store=self.store.describe(),
            pending_writes=self.charges.pending + self.budget_events.pending,
            write_failures=self.charges.failures + self.budget_events.failures,
            last_write_error=self.charges.last_error or self.budget_events.last_error,
            info_at=self.config.info_at,
            critical_at=self.config.critical_at,
        )

    # -- internals -------------------------------------------------------------------------------

    def _applicable(self, tenant: str, now: float) -> Iterable[_Account]:
        for name, limits in self._budgets.items():
            if limits.tenant is None or limits.tenant == tenant:
                for period in limits.periods:
                    yield self._account(name, period, now)

    def _account(self, name: str, period: Period, now: float) -> _Account:
        """The budget's account for the window containing `now` (a new one when it rolled)."""
        current = self._accounts.get((name, period))
        if current is not None and current.window.contains(now):
            return current
        limit = self._budgets[name].periods[period]
        fresh = _Account(name, period, limit, Window.containing(period, now))
        if current is not None:  # the window rolled over: in-flight reservations move along
            fresh.reserved = current.reserved
            current.reserved = ZERO
            current.successor = fresh
        self._accounts[(name, period)] = fresh
        return fresh

    def _level(self, ratio: Decimal) -> BudgetLevel:
        if ratio >= 1:
            return BudgetLevel.EXHAUSTED
        if ratio >= self._critical_at:
            return BudgetLevel.CRITICAL
        if ratio >= self._info_at:
            return BudgetLevel.ELEVATED
        return BudgetLevel.NORMAL

    def _refusal(
        self, account: _Account, priority: Priority, estimate: Decimal, now: float
    ) -> BudgetRefused:
        """Why a reservation does not fit, in words for the caller. Amounts are given for the
        caller's own tenant budget only; the global budget's state is the operator's."""
        where = f"{account.period.value} budget ({account.window.key})"
        if account.budget == GLOBAL:
            state = f"the gateway's {where} cannot cover this request now"
        else:
            state = (
                f"your {where} cannot cover this request: {money_text(account.spent)} spent "
                f"and {money_text(account.reserved)} held for requests in flight of "
                f"{money_text(account.limit)} {self.currency}, and this request may cost up to "
                f"{money_text(estimate)}"
            )
        if account.spent + estimate <= account.limit:
            # Only requests in flight stand in the way: they settle within seconds.
            return BudgetRefused(
                f"{state}; requests in flight hold the rest of it, retry shortly",
                retry_after_s=_IN_FLIGHT_RETRY_S,
            )
        return BudgetRefused(
            f"{state}; {priority.value}-priority work waits for the window to reset "
            "(critical work is still served)",
            retry_after_s=self._retry_after(account, now),
        )

    def _retry_after(self, account: _Account, now: float) -> int:
        left = math.ceil(account.window.seconds_left(now))
        return max(1, min(left, self.config.retry_after_max_s))

    def _check_thresholds(self, account: _Account, now: float) -> None:
        ratio = account.ratio
        for name, level in self._thresholds:
            if account.armed[name] and ratio >= level:
                account.armed[name] = False
                self._emit(account, name, level, "fired", now)
            elif not account.armed[name] and ratio < level - self._hysteresis:
                account.armed[name] = True
                self._emit(account, name, level, "rearmed", now)

    def _emit(
        self, account: _Account, threshold: str, level: Decimal, kind: str, now: float
    ) -> None:
        event = BudgetEvent(
            at=now,
            budget=account.budget,
            period=account.period,
            window=account.window.key,
            threshold=threshold,
            level=float(level),
            kind=kind,
            utilisation=account.utilisation,
            spent=account.spent,
            limit=account.limit,
            currency=self.currency,
        )
        self._events.append(event)
        del self._events[: -self._keep_events]
        self.budget_events.submit(event.record())
        for listener in self._listeners:
            try:
                listener(event)
            except Exception:  # a listener's bug must not fail the request that settled
                log.exception("budget event listener failed")

    def __repr__(self) -> str:
        return f"<CostLedger budgets={sorted(self._budgets)} {self.currency}>"


def _log_event(event: BudgetEvent) -> None:
    level = logging.WARNING if event.severity == "critical" else logging.INFO
    log.log(level, "budget %s: %s", event.severity, event.message)
