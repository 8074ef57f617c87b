"""The cost ledger under random concurrent traffic (Hypothesis).

Each example drives one `CostLedger` (global daily and monthly budgets, a daily budget for
tenant `a` and a monthly one for tenant `b`; tenant `c` has only the global ones) through a
random sequence of reservations of random tenants, priorities and estimates, made while earlier
ones are still open, each later settled at an actual cost of at most its estimate, or released.
Everything happens inside one day, so every budget has one window.

A reference model (plain Decimal sums) predicts every refusal and every account's spent and
reserved money; after every step the ledger must agree exactly. On top of the model:

- a non-critical reservation is admitted only if it keeps spent + reserved within the limit of
  every budget it is held against, so settled non-critical spend never exceeds a limit (only
  critical work, always served, may take a budget past it);
- each threshold fires at most once per window, exactly when settled spend reaches it, and
  never re-arms (spend only grows within a window);
- the store receives every charge and every event.
"""

from __future__ import annotations

import asyncio
import datetime as dt
from collections import Counter
from dataclasses import dataclass
from decimal import ROUND_DOWN, Decimal

from hypothesis import given, settings
from hypothesis import strategies as st

from hybridroute.config.economy import BudgetsConfig
from hybridroute.economics import BudgetEvent, CostLedger, Period, Reservation
from hybridroute.errors import BudgetRefused
from hybridroute.storage import ChargeRecord, MemoryLedgerStore
from hybridroute.testing import FakeClock
from hybridroute.types import Priority

CENT = Decimal("0.01")
NOON = dt.datetime(2027, 3, 10, 12, tzinfo=dt.UTC).timestamp()
TENANTS = ("a", "b", "c")
LEVELS = (("info", Decimal("0.80")), ("critical", Decimal("0.95")), ("exhausted", Decimal(1)))

Key = tuple[str, Period]


@dataclass(frozen=True)
class Reserve:
    tenant: str
    priority: Priority
    cents: int


@dataclass(frozen=True)
class Settle:
    pick: int
    quarters: int  # the actual cost is this many quarters of the estimate (0..4), in cents


@dataclass(frozen=True)
class Release:
    pick: int


Step = Reserve | Settle | Release

steps = st.lists(
    st.one_of(
        st.builds(
            Reserve,
            st.sampled_from(TENANTS),
            st.sampled_from(list(Priority)),
            st.integers(min_value=0, max_value=400),
        ),
        st.builds(Settle, st.integers(min_value=0, max_value=50), st.integers(0, 4)),
        st.builds(Release, st.integers(min_value=0, max_value=50)),
    ),
    max_size=60,
)


@dataclass
class Open:
    reservation: Reservation
    tenant: str
    priority: Priority
    estimate: Decimal
    keys: tuple[Key, ...]


class Model:
    """What the ledger's accounts must hold."""

    def __init__(self, limits: dict[Key, Decimal]) -> None:
        self.limits = limits
        self.spent = dict.fromkeys(limits, Decimal(0))
        self.reserved = dict.fromkeys(limits, Decimal(0))
        self.non_critical_spent = dict.fromkeys(limits, Decimal(0))
        self.critical_spent = dict.fromkeys(limits, Decimal(0))

    def keys_of(self, tenant: str) -> tuple[Key, ...]:
        return tuple(k for k in self.limits if k[0] in ("global", f"tenant:{tenant}"))

    def refuses(self, tenant: str, priority: Priority, estimate: Decimal) -> bool:
        if priority is Priority.CRITICAL:
            return False
        return any(
            self.spent[k] + self.reserved[k] + estimate > self.limits[k]
            for k in self.keys_of(tenant)
        )


def charge(clock: FakeClock, tenant: str, cost: Decimal) -> ChargeRecord:
    return ChargeRecord(
        clock.now(), "dec", tenant, "standard", "mcp", "m", "served", 1, 1, False, cost, "USD"
    )


def check_accounts(ledger: CostLedger, model: Model) -> None:
    seen = {(s.budget, s.period): (s.spent, s.reserved) for s in ledger.snapshot().budgets}
    expected = {k: (model.spent[k], model.reserved[k]) for k in model.limits}
    assert seen == expected


async def finish(
    ledger: CostLedger, clock: FakeClock, model: Model, item: Open, actual: Decimal | None
) -> None:
    """Settle `item` at `actual` (release it when None) in the ledger and the model."""
    if actual is None:
        await ledger.release(item.reservation)
    else:
        charges = [charge(clock, item.tenant, actual)] if actual else []
        await ledger.settle(item.reservation, charges)
    for k in item.keys:
        model.reserved[k] -= item.estimate
    if actual:
        for k in model.keys_of(item.tenant):
            model.spent[k] += actual
            if item.priority is Priority.CRITICAL:
                model.critical_spent[k] += actual
            else:
                model.non_critical_spent[k] += actual


async def play(limits: dict[Key, Decimal], program: list[Step]) -> None:
    clock = FakeClock(wall_start=NOON)
    store = MemoryLedgerStore()
    config = BudgetsConfig.model_validate(
        {
            "global": {
                "daily": limits[("global", Period.DAILY)],
                "monthly": limits[("global", Period.MONTHLY)],
            },
            "tenants": {
                "a": {"daily": limits[("tenant:a", Period.DAILY)]},
                "b": {"monthly": limits[("tenant:b", Period.MONTHLY)]},
            },
        }
    )
    ledger = CostLedger(config, "USD", clock, store)
    events: list[BudgetEvent] = []
    ledger.add_listener(events.append)
    model = Model(limits)
    open_: list[Open] = []
    charged = Decimal(0)

    for step in program:
        if isinstance(step, Reserve):
            estimate = step.cents * CENT
            should_refuse = model.refuses(step.tenant, step.priority, estimate)
            refusal: BudgetRefused | None = None
            try:
                reservation = await ledger.reserve(step.tenant, step.priority, estimate)
            except BudgetRefused as refused:
                refusal = refused
            if refusal is not None:
                assert should_refuse, f"refused {step}: {refusal}"
                assert 1 <= refusal.retry_after_s <= 300
            else:
                assert not should_refuse, f"admitted {step}"
                keys = model.keys_of(step.tenant)
                for k in keys:
                    model.reserved[k] += estimate
                    if step.priority is not Priority.CRITICAL:
                        assert model.spent[k] + model.reserved[k] <= model.limits[k]
                open_.append(Open(reservation, step.tenant, step.priority, estimate, keys))
        elif open_:
            item = open_.pop(step.pick % len(open_))
            if isinstance(step, Settle):
                actual = (item.estimate * step.quarters / 4).quantize(CENT, rounding=ROUND_DOWN)
                assert actual <= item.estimate
                charged += actual
                await finish(ledger, clock, model, item, actual)
            else:
                await finish(ledger, clock, model, item, None)
        check_accounts(ledger, model)

    # everything still open settles at its full estimate
    for item in open_:
        charged += item.estimate
        await finish(ledger, clock, model, item, item.estimate)
    check_accounts(ledger, model)

    for k, limit in limits.items():
        assert model.reserved[k] == 0
        assert model.non_critical_spent[k] <= limit, k
        assert model.spent[k] <= limit + model.critical_spent[k], k

    # thresholds: fired at most once per window, exactly those reached, never re-armed
    assert all(e.kind == "fired" for e in events)
    counts = Counter((e.budget, e.period, e.window, e.threshold) for e in events)
    assert all(n == 1 for n in counts.values()), counts
    for k, limit in limits.items():
        reached = {name for name, level in LEVELS if model.spent[k] >= limit * level}
        got = {e.threshold for e in events if (e.budget, e.period) == k}
        assert got == reached, (k, model.spent[k], limit)
    assert {e.window for e in events if e.period is Period.DAILY} <= {"2027-03-10"}
    assert {e.window for e in events if e.period is Period.MONTHLY} <= {"2027-03"}

    # the store got every charge and every event
    await ledger.flush()
    assert store.total() == charged
    assert await store.budget_events(0) == [e.record() for e in events]


limit_sets = st.fixed_dictionaries(
    {
        ("global", Period.DAILY): st.sampled_from([Decimal(5), Decimal(10), Decimal("12.5")]),
        ("global", Period.MONTHLY): st.sampled_from([Decimal(8), Decimal(40)]),
        ("tenant:a", Period.DAILY): st.sampled_from([Decimal(2), Decimal(4)]),
        ("tenant:b", Period.MONTHLY): st.sampled_from([Decimal(3), Decimal(6)]),
    }
)


@settings(max_examples=300, deadline=None)
@given(limits=limit_sets, program=steps)
def test_concurrent_reservations_keep_non_critical_spend_within_every_limit(limits, program):
    asyncio.run(play(limits, program))
