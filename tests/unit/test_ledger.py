"""Budget windows and the cost ledger: levels, reserve → settle → release, refusals, thresholds
that fire once per window, window rollover, and restoring spend and thresholds on restart."""

from __future__ import annotations

import asyncio
import datetime as dt
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from hybridroute._tasks import TaskSupervisor
from hybridroute.config.economy import BudgetsConfig
from hybridroute.economics import BudgetEvent, CostLedger, Period, Window
from hybridroute.errors import BudgetRefused
from hybridroute.signals import NO_BUDGET_PRESSURE, BudgetLevel, BudgetView
from hybridroute.storage import (
    BudgetEventRecord,
    ChargeRecord,
    LedgerStore,
    MemoryLedgerStore,
    SqliteLedgerStore,
)
from hybridroute.testing import FakeClock
from hybridroute.types import Priority

C, H, MED, L = Priority.CRITICAL, Priority.HIGH, Priority.MEDIUM, Priority.LOW
DAY = 86_400.0


def ts(year: int, month: int, day: int, hour: int = 0, minute: int = 0, second: float = 0) -> float:
    """Wall-clock seconds of a UTC moment."""
    whole = dt.datetime(year, month, day, hour, minute, tzinfo=dt.UTC).timestamp()
    return whole + second


# 2027-01-15 08:00:00 UTC: 16 hours before the day ends, 16 days and 16 hours before the month.
MORNING = ts(2027, 1, 15, 8)


def budgets(config: dict[str, Any]) -> BudgetsConfig:
    return BudgetsConfig.model_validate(config)


def make_ledger(
    config: dict[str, Any], clock: FakeClock, store: LedgerStore | None = None
) -> tuple[CostLedger, list[BudgetEvent]]:
    ledger = CostLedger(budgets(config), "USD", clock, store or MemoryLedgerStore())
    events: list[BudgetEvent] = []
    ledger.add_listener(events.append)
    return ledger, events


def charge(clock: FakeClock, tenant: str, cost: str, *, kind: str = "served") -> ChargeRecord:
    return ChargeRecord(
        at=clock.now(),
        decision_id="dec",
        tenant=tenant,
        operation_type="standard",
        route="mcp",
        model="m",
        kind=kind,
        input_tokens=10,
        output_tokens=20,
        estimated=False,
        cost=Decimal(cost),
        currency="USD",
    )


async def spend(ledger: CostLedger, clock: FakeClock, tenant: str, *costs: str) -> None:
    for cost in costs:
        await ledger.settle(None, [charge(clock, tenant, cost)])


def account(ledger: CostLedger, budget: str, period: Period) -> tuple[Decimal, Decimal, str]:
    """(spent, reserved, window) of one budget as the snapshot reports it."""
    for status in ledger.snapshot().budgets:
        if status.budget == budget and status.period is period:
            return status.spent, status.reserved, status.window
    raise AssertionError(f"no budget {budget} {period}")


def fired(ledger: CostLedger, budget: str, period: Period) -> tuple[str, ...]:
    for status in ledger.snapshot().budgets:
        if status.budget == budget and status.period is period:
            return status.fired
    raise AssertionError(f"no budget {budget} {period}")


def summary(events: list[BudgetEvent]) -> list[tuple[str, str, str, str, str]]:
    return [(e.budget, e.period.value, e.window, e.threshold, e.kind) for e in events]


DAILY_10 = {"global": {"daily": "10"}}


# -- windows -------------------------------------------------------------------------------------


def test_daily_window_is_the_utc_calendar_day():
    window = Window.containing(Period.DAILY, ts(2027, 1, 15, 13, 45, 7.25))
    assert window == Window(Period.DAILY, "2027-01-15", ts(2027, 1, 15), ts(2027, 1, 16))
    assert window.first_day == "2027-01-15"


def test_monthly_window_is_the_utc_calendar_month():
    window = Window.containing(Period.MONTHLY, ts(2027, 1, 15, 13, 45))
    assert window == Window(Period.MONTHLY, "2027-01", ts(2027, 1, 1), ts(2027, 2, 1))
    assert window.first_day == "2027-01-01"


def test_midnight_belongs_to_the_new_day_and_month():
    midnight = ts(2027, 1, 1)
    assert Window.containing(Period.DAILY, midnight).key == "2027-01-01"
    assert Window.containing(Period.MONTHLY, midnight).key == "2027-01"
    before = midnight - 0.001
    assert Window.containing(Period.DAILY, before).key == "2026-12-31"
    assert Window.containing(Period.MONTHLY, before).key == "2026-12"


def test_december_ends_at_january_first_of_the_next_year():
    window = Window.containing(Period.MONTHLY, ts(2026, 12, 31, 23, 59, 59))
    assert window.key == "2026-12"
    assert window.start == ts(2026, 12, 1)
    assert window.end == ts(2027, 1, 1)
    day = Window.containing(Period.DAILY, ts(2026, 12, 31, 23, 59, 59))
    assert (day.key, day.end) == ("2026-12-31", ts(2027, 1, 1))


@pytest.mark.parametrize(
    ("year", "days"),
    [(2028, 29), (2027, 28), (2000, 29), (2100, 28)],
)
def test_february_has_its_calendar_length(year, days):
    window = Window.containing(Period.MONTHLY, ts(year, 2, 10))
    assert window.key == f"{year}-02"
    assert window.start == ts(year, 2, 1)
    assert window.end == ts(year, 3, 1)
    assert window.end - window.start == days * DAY


@pytest.mark.parametrize(("month", "days"), [(1, 31), (4, 30), (7, 31), (11, 30)])
def test_months_have_their_lengths(month, days):
    window = Window.containing(Period.MONTHLY, ts(2027, month, days, 23))
    assert window.end - window.start == days * DAY


def test_the_last_day_of_february_in_a_leap_year():
    window = Window.containing(Period.DAILY, ts(2028, 2, 29, 12))
    assert window.key == "2028-02-29"
    assert window.end == ts(2028, 3, 1)


def test_contains_includes_the_start_and_excludes_the_end():
    window = Window.containing(Period.DAILY, MORNING)
    assert window.contains(ts(2027, 1, 15))
    assert window.contains(ts(2027, 1, 15, 23, 59, 59.999))
    assert not window.contains(ts(2027, 1, 16))
    assert not window.contains(ts(2027, 1, 14, 23, 59, 59.999))


def test_seconds_left_counts_down_to_the_next_window_and_stops_at_zero():
    day = Window.containing(Period.DAILY, MORNING)
    assert day.seconds_left(MORNING) == 16 * 3600
    assert day.seconds_left(ts(2027, 1, 15, 23, 59, 59.5)) == 0.5
    assert day.seconds_left(ts(2027, 1, 16)) == 0.0
    assert day.seconds_left(ts(2027, 1, 17)) == 0.0
    month = Window.containing(Period.MONTHLY, MORNING)
    assert month.seconds_left(MORNING) == 16 * DAY + 16 * 3600


# -- levels (view) -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("spent", "level", "used"),
    [
        ("0.0000000001", BudgetLevel.NORMAL, 0.00000000001),
        ("7.9999999999", BudgetLevel.NORMAL, 0.79999999999),
        ("8", BudgetLevel.ELEVATED, 0.8),
        ("9.4999999999", BudgetLevel.ELEVATED, 0.94999999999),
        ("9.5", BudgetLevel.CRITICAL, 0.95),
        ("9.9999999999", BudgetLevel.CRITICAL, 0.99999999999),
        ("10", BudgetLevel.EXHAUSTED, 1.0),
        ("12.5", BudgetLevel.EXHAUSTED, 1.25),
    ],
)
@pytest.mark.anyio
async def test_view_level_at_each_boundary(spent, level, used):
    clock = FakeClock(wall_start=MORNING)
    ledger, _ = make_ledger(DAILY_10, clock)
    await spend(ledger, clock, "a", spent)
    view = ledger.view("a")
    assert view == BudgetView(level=level, utilisation=used, retry_after_s=300)


@pytest.mark.anyio
async def test_view_levels_follow_configured_thresholds():
    clock = FakeClock(wall_start=MORNING)
    ledger, _ = make_ledger({"global": {"daily": "10"}, "info_at": 0.5, "critical_at": 0.7}, clock)
    await spend(ledger, clock, "a", "4.9")
    assert ledger.view("a").level is BudgetLevel.NORMAL
    await spend(ledger, clock, "a", "0.1")
    assert ledger.view("a").level is BudgetLevel.ELEVATED
    await spend(ledger, clock, "a", "2")
    assert ledger.view("a").level is BudgetLevel.CRITICAL


@pytest.mark.anyio
async def test_view_without_budgets_is_no_pressure():
    clock = FakeClock(wall_start=MORNING)
    ledger, _ = make_ledger({}, clock)
    assert not ledger.has_budgets
    await spend(ledger, clock, "a", "1000")
    assert ledger.view("a", "mcp") is NO_BUDGET_PRESSURE


@pytest.mark.anyio
async def test_view_of_a_tenant_no_budget_applies_to_is_no_pressure():
    clock = FakeClock(wall_start=MORNING)
    ledger, _ = make_ledger({"tenants": {"a": {"daily": "10"}}}, clock)
    await spend(ledger, clock, "a", "9")
    assert ledger.view("b") is NO_BUDGET_PRESSURE
    assert ledger.view("a").level is BudgetLevel.ELEVATED


@pytest.mark.anyio
async def test_view_reports_the_most_used_budget_and_passes_the_cheaper_route():
    clock = FakeClock(wall_start=MORNING)
    ledger, _ = make_ledger({"global": {"daily": "100"}, "tenants": {"a": {"daily": "10"}}}, clock)
    await spend(ledger, clock, "a", "9")
    assert ledger.view("a", "mcp") == BudgetView(BudgetLevel.ELEVATED, 0.9, 300, "mcp")
    assert ledger.view("b") == BudgetView(BudgetLevel.NORMAL, 0.09, 300, None)


@pytest.mark.anyio
async def test_view_retry_after_is_the_time_to_reset_capped():
    clock = FakeClock(wall_start=ts(2027, 1, 15, 23, 59))
    ledger, _ = make_ledger(DAILY_10, clock)
    await spend(ledger, clock, "a", "10")
    assert ledger.view("a").retry_after_s == 60
    clock.advance(59.5)
    assert ledger.view("a").retry_after_s == 1  # 0.5 s left, rounded up


@pytest.mark.anyio
async def test_view_retry_after_follows_the_pressing_monthly_window():
    clock = FakeClock(wall_start=MORNING)
    ledger, _ = make_ledger(
        {"global": {"daily": "100", "monthly": "10"}, "retry_after_max_s": 86_400}, clock
    )
    await spend(ledger, clock, "a", "9.5")
    view = ledger.view("a")
    # the monthly budget is 95 % used (the daily 9.5 %); it resets in 16 days 16 hours
    assert view.level is BudgetLevel.CRITICAL
    assert view.retry_after_s == 86_400


@pytest.mark.anyio
async def test_view_moves_to_the_new_window_after_midnight():
    clock = FakeClock(wall_start=ts(2027, 1, 15, 23))
    ledger, _ = make_ledger({"global": {"daily": "10", "monthly": "1000"}}, clock)
    await spend(ledger, clock, "a", "10")
    assert ledger.view("a").level is BudgetLevel.EXHAUSTED
    clock.advance(3600)
    assert ledger.view("a") == BudgetView(BudgetLevel.NORMAL, 0.01, 300)


# -- reserve -------------------------------------------------------------------------------------


@pytest.mark.parametrize("priority", [H, MED, L])
@pytest.mark.anyio
async def test_reserve_refuses_exactly_when_it_would_pass_the_limit(priority):
    clock = FakeClock(wall_start=MORNING)
    ledger, _ = make_ledger(DAILY_10, clock)
    await spend(ledger, clock, "a", "6")
    held = await ledger.reserve("a", priority, Decimal("1.5"))
    # 6 spent + 1.5 reserved + 2.5 = 10: exactly the limit, allowed
    exact = await ledger.reserve("a", priority, Decimal("2.5"))
    assert exact.amount == Decimal("2.5")
    assert account(ledger, "global", Period.DAILY) == (Decimal(6), Decimal(4), "2027-01-15")
    with pytest.raises(BudgetRefused):
        await ledger.reserve("a", priority, Decimal("0.0000000001"))
    # the refusal reserved nothing
    assert account(ledger, "global", Period.DAILY)[1] == Decimal(4)
    await ledger.release(held)
    again = await ledger.reserve("a", priority, Decimal("1.5"))
    assert again.amount == Decimal("1.5")


@pytest.mark.anyio
async def test_critical_is_always_reserved_even_past_the_limit():
    clock = FakeClock(wall_start=MORNING)
    ledger, _ = make_ledger(DAILY_10, clock)
    await spend(ledger, clock, "a", "11")
    held = await ledger.reserve("a", C, Decimal("5"))
    assert held.amount == Decimal(5)
    assert account(ledger, "global", Period.DAILY) == (Decimal(11), Decimal(5), "2027-01-15")
    await ledger.settle(held, [charge(clock, "a", "4")])
    assert account(ledger, "global", Period.DAILY) == (Decimal(15), Decimal(0), "2027-01-15")


@pytest.mark.anyio
async def test_a_critical_reservation_counts_against_later_non_critical_work():
    clock = FakeClock(wall_start=MORNING)
    ledger, _ = make_ledger(DAILY_10, clock)
    await ledger.reserve("a", C, Decimal("9"))
    with pytest.raises(BudgetRefused):
        await ledger.reserve("a", H, Decimal("1.01"))
    held = await ledger.reserve("a", H, Decimal("1"))
    assert held.amount == Decimal(1)


@pytest.mark.anyio
async def test_a_global_refusal_names_the_window_but_not_the_gateways_amounts():
    clock = FakeClock(wall_start=MORNING)
    ledger, _ = make_ledger(DAILY_10, clock)
    await spend(ledger, clock, "a", "9")
    with pytest.raises(BudgetRefused) as info:
        await ledger.reserve("a", MED, Decimal("1.5"))
    refused = info.value
    assert str(refused) == (
        "the gateway's daily budget (2027-01-15) cannot cover this request now; medium-priority "
        "work waits for the window to reset (critical work is still served)"
    )
    assert refused.retry_after_s == 300  # 16 h to midnight, capped at retry_after_max_s
    assert refused.headers() == {"retry-after": "300"}
    assert refused.status == 429


@pytest.mark.anyio
async def test_a_refusal_caused_only_by_requests_in_flight_asks_to_retry_shortly():
    clock = FakeClock(wall_start=MORNING)
    ledger, _ = make_ledger({"tenants": {"a": {"daily": "10"}}}, clock)
    await spend(ledger, clock, "a", "7")
    await ledger.reserve("a", MED, Decimal("2"))  # in flight
    with pytest.raises(BudgetRefused) as info:
        await ledger.reserve("a", MED, Decimal("1.5"))  # 7 + 1.5 fits once that settles
    assert str(info.value) == (
        "your daily budget (2027-01-15) cannot cover this request: 7 spent and 2 held for "
        "requests in flight of 10 USD, and this request may cost up to 1.5; requests in flight "
        "hold the rest of it, retry shortly"
    )
    assert info.value.retry_after_s == 5


@pytest.mark.anyio
async def test_refusal_retry_after_is_the_time_to_reset_when_under_the_cap():
    clock = FakeClock(wall_start=ts(2027, 1, 15, 23, 30))
    ledger, _ = make_ledger({"global": {"daily": "10"}, "retry_after_max_s": 3600}, clock)
    await spend(ledger, clock, "a", "10")
    with pytest.raises(BudgetRefused) as info:
        await ledger.reserve("a", L, Decimal("0.01"))
    assert info.value.retry_after_s == 1800


@pytest.mark.anyio
async def test_refusal_by_a_tenant_monthly_budget_names_it():
    clock = FakeClock(wall_start=MORNING)
    ledger, _ = make_ledger(
        {
            "global": {"daily": "1000"},
            "tenants": {"a": {"monthly": "50"}},
            "retry_after_max_s": 86_400,
        },
        clock,
    )
    await spend(ledger, clock, "a", "49.5")
    with pytest.raises(BudgetRefused) as info:
        await ledger.reserve("a", H, Decimal("0.75"))
    assert str(info.value).startswith(
        "your monthly budget (2027-01) cannot cover this request: 49.5 spent and 0 held for "
        "requests in flight of 50 USD, and this request may cost up to 0.75; high-priority work "
        "waits"
    )
    assert info.value.retry_after_s == 86_400
    # the global budget still has room for another tenant
    other = await ledger.reserve("b", H, Decimal("0.75"))
    assert other.amount == Decimal("0.75")


# -- settle and release --------------------------------------------------------------------------


@pytest.mark.anyio
async def test_settle_moves_the_reservation_to_spent_at_the_actual_cost():
    clock = FakeClock(wall_start=MORNING)
    ledger, _ = make_ledger(DAILY_10, clock)
    low = await ledger.reserve("a", MED, Decimal("3"))
    high = await ledger.reserve("a", MED, Decimal("1"))
    assert account(ledger, "global", Period.DAILY) == (Decimal(0), Decimal(4), "2027-01-15")
    await ledger.settle(low, [charge(clock, "a", "1.25"), charge(clock, "a", "0.5")])
    assert account(ledger, "global", Period.DAILY) == (
        Decimal("1.75"),
        Decimal(1),
        "2027-01-15",
    )
    await ledger.settle(high, [charge(clock, "a", "2.5")])  # more than its estimate
    assert account(ledger, "global", Period.DAILY) == (
        Decimal("4.25"),
        Decimal(0),
        "2027-01-15",
    )
    assert low.done
    assert high.done


@pytest.mark.anyio
async def test_release_returns_the_reservation_and_spends_nothing():
    clock = FakeClock(wall_start=MORNING)
    store = MemoryLedgerStore()
    ledger, _ = make_ledger(DAILY_10, clock, store)
    held = await ledger.reserve("a", MED, Decimal("9"))
    with pytest.raises(BudgetRefused):
        await ledger.reserve("a", MED, Decimal("2"))
    await ledger.release(held)
    assert account(ledger, "global", Period.DAILY) == (Decimal(0), Decimal(0), "2027-01-15")
    assert (await ledger.reserve("a", MED, Decimal("10"))).amount == Decimal(10)
    await ledger.flush()
    assert store.total() == Decimal(0)


@pytest.mark.anyio
async def test_settling_twice_is_a_no_op():
    clock = FakeClock(wall_start=MORNING)
    store = MemoryLedgerStore()
    ledger, _ = make_ledger(DAILY_10, clock, store)
    held = await ledger.reserve("a", MED, Decimal("3"))
    other = await ledger.reserve("a", MED, Decimal("2"))
    await ledger.settle(held, [charge(clock, "a", "2")])
    await ledger.settle(held, [charge(clock, "a", "2")])
    await ledger.release(held)
    # other's 2 stay reserved; the 2 spent counted once
    assert account(ledger, "global", Period.DAILY) == (Decimal(2), Decimal(2), "2027-01-15")
    await ledger.release(other)
    await ledger.release(other)
    assert account(ledger, "global", Period.DAILY) == (Decimal(2), Decimal(0), "2027-01-15")
    await ledger.flush()
    assert store.total() == Decimal(2)


@pytest.mark.anyio
async def test_settle_with_no_reservation_still_records_the_charges():
    clock = FakeClock(wall_start=MORNING)
    store = MemoryLedgerStore()
    ledger, _ = make_ledger(DAILY_10, clock, store)
    await ledger.settle(None, [charge(clock, "a", "0.25"), charge(clock, "a", "0.5")])
    assert account(ledger, "global", Period.DAILY)[0] == Decimal("0.75")
    assert ledger.snapshot().pending_writes == 2
    await ledger.flush()
    assert store.total() == Decimal("0.75")
    assert ledger.snapshot().pending_writes == 0


@pytest.mark.anyio
async def test_tenant_budgets_apply_only_to_their_tenant_and_global_to_all():
    clock = FakeClock(wall_start=MORNING)
    ledger, _ = make_ledger(
        {
            "global": {"daily": "100"},
            "tenants": {"a": {"daily": "10"}, "b": {"daily": "20"}},
        },
        clock,
    )
    await spend(ledger, clock, "a", "5")
    await spend(ledger, clock, "c", "7")
    held = await ledger.reserve("b", MED, Decimal("3"))
    assert [(s.budget, s.spent, s.reserved) for s in ledger.snapshot().budgets] == [
        ("global", Decimal(12), Decimal(3)),
        ("tenant:a", Decimal(5), Decimal(0)),
        ("tenant:b", Decimal(0), Decimal(3)),
    ]
    assert len(held.accounts) == 2
    # tenant a's own budget refuses it; b and c are not affected by it
    with pytest.raises(BudgetRefused, match="your daily budget"):
        await ledger.reserve("a", MED, Decimal("5.5"))
    assert (await ledger.reserve("b", MED, Decimal("5.5"))).amount == Decimal("5.5")
    assert (await ledger.reserve("c", MED, Decimal("50"))).amount == Decimal(50)
    # the global budget is shared: 12 spent + 58.5 reserved leaves 29.5
    with pytest.raises(BudgetRefused, match="the gateway's daily budget"):
        await ledger.reserve("c", MED, Decimal("29.6"))


# -- thresholds ----------------------------------------------------------------------------------


@pytest.mark.anyio
async def test_each_threshold_fires_once_per_window():
    clock = FakeClock(wall_start=MORNING)
    store = MemoryLedgerStore()
    ledger, events = make_ledger(DAILY_10, clock, store)
    await spend(ledger, clock, "a", "3", "3", "1.9")  # 79 %
    assert events == []
    await spend(ledger, clock, "a", "0.6")  # 85 %
    await spend(ledger, clock, "a", "0.5", "0.3")  # 93 %
    assert summary(events) == [("global", "daily", "2027-01-15", "info", "fired")]
    await spend(ledger, clock, "a", "0.3")  # 96 %
    await spend(ledger, clock, "a", "0.35")  # 99.5 %
    assert [e.threshold for e in events] == ["info", "critical"]
    await spend(ledger, clock, "a", "0.15")  # 101 %
    await spend(ledger, clock, "a", "1", "2")  # 131 %
    assert summary(events) == [
        ("global", "daily", "2027-01-15", "info", "fired"),
        ("global", "daily", "2027-01-15", "critical", "fired"),
        ("global", "daily", "2027-01-15", "exhausted", "fired"),
    ]
    info, critical, exhausted = events
    assert (info.spent, info.limit, info.utilisation) == (Decimal("8.5"), Decimal(10), 0.85)
    assert (critical.spent, critical.utilisation) == (Decimal("9.6"), 0.96)
    assert (exhausted.spent, exhausted.utilisation) == (Decimal("10.1"), 1.01)
    assert [e.severity for e in events] == ["info", "critical", "critical"]
    assert all(e.at == MORNING and e.currency == "USD" for e in events)
    assert info.message == (
        "global daily budget (2027-01-15) passed 80 %: 85.0 % used (8.5 of 10 USD)"
    )
    assert exhausted.message == (
        "global daily budget (2027-01-15) exhausted: 101.0 % used (10.1 of 10 USD); only "
        "critical operations are served until the window resets"
    )
    assert fired(ledger, "global", Period.DAILY) == ("info", "critical", "exhausted")
    assert ledger.snapshot().events == tuple(events)
    # the store got the same events
    await ledger.flush()
    assert await store.budget_events(0) == [e.record() for e in events]


@pytest.mark.anyio
async def test_one_settle_past_every_threshold_fires_all_three_in_order():
    clock = FakeClock(wall_start=MORNING)
    ledger, events = make_ledger(DAILY_10, clock)
    await spend(ledger, clock, "a", "12")
    assert [e.threshold for e in events] == ["info", "critical", "exhausted"]
    assert {e.utilisation for e in events} == {1.2}
    await spend(ledger, clock, "a", "1")
    assert len(events) == 3


@pytest.mark.anyio
async def test_thresholds_fire_per_budget_and_period():
    clock = FakeClock(wall_start=MORNING)
    ledger, events = make_ledger(
        {"global": {"daily": "100", "monthly": "20"}, "tenants": {"a": {"daily": "10"}}}, clock
    )
    await spend(ledger, clock, "a", "8.5")
    assert summary(events) == [("tenant:a", "daily", "2027-01-15", "info", "fired")]
    await spend(ledger, clock, "b", "8")  # global monthly 16.5 of 20: 82.5 %
    assert summary(events)[1:] == [("global", "monthly", "2027-01", "info", "fired")]


@pytest.mark.anyio
async def test_a_listener_that_raises_does_not_fail_settle_or_other_listeners():
    clock = FakeClock(wall_start=MORNING)
    ledger, events = make_ledger(DAILY_10, clock)

    def broken(event: BudgetEvent) -> None:
        raise RuntimeError("listener bug")

    later: list[BudgetEvent] = []
    ledger.add_listener(broken)
    ledger.add_listener(later.append)
    await spend(ledger, clock, "a", "9")
    assert [e.threshold for e in events] == ["info"]
    assert later == events


@pytest.mark.anyio
async def test_a_new_day_resets_daily_spend_and_rearms_its_thresholds_but_not_monthly():
    clock = FakeClock(wall_start=ts(2027, 1, 15, 22))
    ledger, events = make_ledger({"global": {"daily": "10", "monthly": "100"}}, clock)
    await spend(ledger, clock, "a", "8.5")
    with pytest.raises(BudgetRefused):
        await ledger.reserve("a", L, Decimal("2"))
    assert summary(events) == [("global", "daily", "2027-01-15", "info", "fired")]
    clock.advance(2 * 3600)  # 2027-01-16 00:00
    assert account(ledger, "global", Period.DAILY) == (Decimal(0), Decimal(0), "2027-01-16")
    assert account(ledger, "global", Period.MONTHLY) == (Decimal("8.5"), Decimal(0), "2027-01")
    assert fired(ledger, "global", Period.DAILY) == ()
    assert (await ledger.reserve("a", L, Decimal("2"))).amount == Decimal(2)
    await spend(ledger, clock, "a", "8.5")
    assert summary(events) == [
        ("global", "daily", "2027-01-15", "info", "fired"),
        ("global", "daily", "2027-01-16", "info", "fired"),
    ]
    assert account(ledger, "global", Period.MONTHLY)[0] == Decimal(17)


@pytest.mark.anyio
async def test_a_new_month_resets_monthly_spend():
    clock = FakeClock(wall_start=ts(2026, 12, 31, 23, 59, 59))
    ledger, events = make_ledger({"global": {"monthly": "10"}}, clock)
    await spend(ledger, clock, "a", "10")
    assert [e.window for e in events] == ["2026-12", "2026-12", "2026-12"]
    clock.advance(1)
    assert account(ledger, "global", Period.MONTHLY) == (Decimal(0), Decimal(0), "2027-01")
    assert ledger.view("a").level is BudgetLevel.NORMAL
    await spend(ledger, clock, "a", "9")
    assert summary(events)[3:] == [("global", "monthly", "2027-01", "info", "fired")]


@pytest.mark.anyio
async def test_a_reservation_still_in_flight_at_midnight_counts_against_the_new_day():
    """Spend may not pass a limit by more than one request's estimate-vs-actual gap, also when
    a request straddles midnight: money reserved late on day 1 and settled on day 2 lands in
    day 2's spend, so day 2 must know it is held."""
    clock = FakeClock(wall_start=ts(2027, 1, 15, 23, 59))
    ledger, _ = make_ledger(DAILY_10, clock)
    straddling = await ledger.reserve("a", MED, Decimal(5))
    clock.advance(120)  # 2027-01-16 00:01
    admitted: list[Decimal] = []
    for _ in range(10):
        try:
            admitted.append((await ledger.reserve("a", MED, Decimal(1))).amount)
        except BudgetRefused:
            break
    await ledger.settle(straddling, [charge(clock, "a", "5")])
    spent, reserved, window = account(ledger, "global", Period.DAILY)
    assert window == "2027-01-16"
    # every non-critical estimate was honoured, so spent + reserved stays within the limit
    assert spent + reserved <= Decimal(10), (spent, reserved, admitted)


# -- snapshot ------------------------------------------------------------------------------------


@pytest.mark.anyio
async def test_snapshot_reports_every_budget():
    clock = FakeClock(wall_start=MORNING)
    ledger, _ = make_ledger(
        {"global": {"daily": "10", "monthly": "200"}, "tenants": {"a": {"monthly": "50"}}}, clock
    )
    await spend(ledger, clock, "a", "8")
    await ledger.reserve("a", H, Decimal("1"))
    snap = ledger.snapshot()
    assert snap.currency == "USD"
    assert (snap.info_at, snap.critical_at) == (0.8, 0.95)
    assert snap.store == "in memory (nothing survives a restart)"
    assert (snap.pending_writes, snap.write_failures, snap.last_write_error) == (2, 0, None)
    assert [s.as_dict() for s in snap.budgets] == [
        {
            "budget": "global",
            "period": "daily",
            "window": "2027-01-15",
            "limit": "10",
            "spent": "8",
            "reserved": "1",
            "utilisation": 0.8,
            "level": "elevated",
            "resets_in_s": 16 * 3600,
            "fired": ["info"],
        },
        {
            "budget": "global",
            "period": "monthly",
            "window": "2027-01",
            "limit": "200",
            "spent": "8",
            "reserved": "1",
            "utilisation": 0.04,
            "level": "normal",
            "resets_in_s": 16 * 86_400 + 16 * 3600,
            "fired": [],
        },
        {
            "budget": "tenant:a",
            "period": "monthly",
            "window": "2027-01",
            "limit": "50",
            "spent": "8",
            "reserved": "1",
            "utilisation": 0.16,
            "level": "normal",
            "resets_in_s": 16 * 86_400 + 16 * 3600,
            "fired": [],
        },
    ]
    assert snap.as_dict()["thresholds"] == {"info": 0.8, "critical": 0.95, "exhausted": 1.0}


# -- restart -------------------------------------------------------------------------------------


async def started(
    config: dict[str, Any], clock: FakeClock, store: LedgerStore
) -> tuple[CostLedger, list[BudgetEvent], TaskSupervisor]:
    ledger, events = make_ledger(config, clock, store)
    supervisor = TaskSupervisor("test-ledger")
    await ledger.start(supervisor)
    await asyncio.sleep(0)  # let the writer tasks begin, as they have in a running gateway
    return ledger, events, supervisor


RESTART_CONFIG = {"global": {"daily": "10", "monthly": "100"}, "tenants": {"a": {"daily": "5"}}}


async def run_restart(first: LedgerStore, second: LedgerStore, clock: FakeClock) -> LedgerStore:
    """Spend 96 % of the global daily budget, stop, start a new ledger over `second`."""
    ledger, events, supervisor = await started(RESTART_CONFIG, clock, first)
    await spend(ledger, clock, "a", "2", "1")  # tenant:a 60 %
    await spend(ledger, clock, "b", "5", "1.6")  # global 96 %
    assert summary(events) == [
        ("global", "daily", "2027-01-15", "info", "fired"),
        ("global", "daily", "2027-01-15", "critical", "fired"),
    ]
    await supervisor.aclose()  # the writers flush what is left
    await first.aclose()

    clock.advance(600)
    ledger, events, supervisor = await started(RESTART_CONFIG, clock, second)
    try:
        assert events == []
        assert account(ledger, "global", Period.DAILY) == (
            Decimal("9.6"),
            Decimal(0),
            "2027-01-15",
        )
        assert account(ledger, "global", Period.MONTHLY)[0] == Decimal("9.6")
        assert account(ledger, "tenant:a", Period.DAILY)[0] == Decimal(3)
        assert fired(ledger, "global", Period.DAILY) == ("info", "critical")
        assert fired(ledger, "tenant:a", Period.DAILY) == ()
        assert ledger.view("b").level is BudgetLevel.CRITICAL
        with pytest.raises(BudgetRefused):
            await ledger.reserve("b", L, Decimal("0.5"))
        await spend(ledger, clock, "b", "0.3")  # 99 %: nothing new
        assert events == []
        await spend(ledger, clock, "b", "0.2")  # 101 %
        assert summary(events) == [("global", "daily", "2027-01-15", "exhausted", "fired")]
        assert account(ledger, "global", Period.DAILY)[0] == Decimal("10.1")
    finally:
        await supervisor.aclose()
        await second.aclose()
    return second


@pytest.mark.anyio
async def test_restart_over_sqlite_restores_spend_and_fired_thresholds(tmp_path: Path):
    path = tmp_path / "ledger.db"
    clock = FakeClock(wall_start=MORNING)
    await run_restart(SqliteLedgerStore(path), SqliteLedgerStore(path), clock)
    check = SqliteLedgerStore(path)
    await check.open()
    try:
        records = await check.budget_events(0)
        total = sum((row.cost for row in await check.spend("2027-01-01")), Decimal(0))
    finally:
        await check.aclose()
    assert [(r.budget, r.window, r.threshold, r.kind) for r in records] == [
        ("global", "2027-01-15", "info", "fired"),
        ("global", "2027-01-15", "critical", "fired"),
        ("global", "2027-01-15", "exhausted", "fired"),
    ]
    assert total == Decimal("10.1")


@pytest.mark.anyio
async def test_restart_over_a_shared_memory_store_restores_spend_and_fired_thresholds():
    store = MemoryLedgerStore()
    clock = FakeClock(wall_start=MORNING)
    await run_restart(store, store, clock)
    assert store.total() == Decimal("10.1")
    assert [r.threshold for r in await store.budget_events(0)] == [
        "info",
        "critical",
        "exhausted",
    ]


@pytest.mark.anyio
async def test_restart_on_a_later_day_restores_the_month_but_starts_a_fresh_day(tmp_path: Path):
    path = tmp_path / "ledger.db"
    clock = FakeClock(wall_start=MORNING)
    ledger, events, supervisor = await started(RESTART_CONFIG, clock, SqliteLedgerStore(path))
    await spend(ledger, clock, "b", "9.6")
    assert len(events) == 2
    await supervisor.aclose()
    await ledger.store.aclose()

    clock.advance(DAY)  # 2027-01-16 08:00
    store = SqliteLedgerStore(path)
    ledger, events, supervisor = await started(RESTART_CONFIG, clock, store)
    try:
        assert events == []
        assert account(ledger, "global", Period.DAILY) == (Decimal(0), Decimal(0), "2027-01-16")
        assert account(ledger, "global", Period.MONTHLY)[0] == Decimal("9.6")
        assert fired(ledger, "global", Period.DAILY) == ()
        # yesterday's fired thresholds do not silence today's
        await spend(ledger, clock, "b", "8")
        assert summary(events) == [("global", "daily", "2027-01-16", "info", "fired")]
    finally:
        await supervisor.aclose()
        await store.aclose()


@pytest.mark.anyio
async def test_restart_fires_a_threshold_whose_event_was_never_stored():
    """Spend is restored from charges; a threshold it passed without a stored event fires."""
    store = MemoryLedgerStore()
    clock = FakeClock(wall_start=MORNING)
    await store.append_charges([charge(clock, "a", "8.5")])
    _, events, supervisor = await started(DAILY_10, clock, store)
    try:
        assert summary(events) == [("global", "daily", "2027-01-15", "info", "fired")]
    finally:
        await supervisor.aclose()
    assert [r.threshold for r in await store.budget_events(0)] == ["info"]


@pytest.mark.anyio
async def test_restart_honours_a_rearm_stored_after_a_fire():
    store = MemoryLedgerStore()
    clock = FakeClock(wall_start=MORNING)
    await store.append_charges([charge(clock, "a", "8.5")])

    def event(at: float, kind: str) -> BudgetEventRecord:
        return BudgetEventRecord(
            at,
            "global",
            "daily",
            "2027-01-15",
            "info",
            0.8,
            kind,
            0.85,
            Decimal("8.5"),
            Decimal(10),
            "USD",
        )

    await store.append_budget_events([event(MORNING - 60, "fired"), event(MORNING - 30, "rearmed")])
    _, events, supervisor = await started(DAILY_10, clock, store)
    try:
        # re-armed last, and spend is still past 80 %: it fires again
        assert summary(events) == [("global", "daily", "2027-01-15", "info", "fired")]
    finally:
        await supervisor.aclose()


@pytest.mark.anyio
async def test_closing_right_after_start_loses_no_charge_or_event():
    """Shutdown (the writer tasks stopped, then `aclose()`) writes what is pending even when the
    writer tasks never got to run."""
    store = MemoryLedgerStore()
    clock = FakeClock(wall_start=MORNING)
    ledger, events = make_ledger(DAILY_10, clock, store)
    supervisor = TaskSupervisor("test-ledger")
    await ledger.start(supervisor)
    await spend(ledger, clock, "a", "8.5")
    assert [e.threshold for e in events] == ["info"]
    await supervisor.aclose()
    await ledger.aclose()
    assert store.total() == Decimal("8.5")
    assert [r.threshold for r in await store.budget_events(0)] == ["info"]


@pytest.mark.anyio
async def test_exhausted_only_at_the_full_limit_even_for_large_budgets():
    """Levels and thresholds compare exact money: one ten-billionth below the limit is not
    100 % (a float ratio rounds 0.99999999999999999 up to 1.0)."""
    clock = FakeClock(wall_start=MORNING)
    ledger, events = make_ledger({"global": {"daily": "99999999"}}, clock)
    await spend(ledger, clock, "a", "99999998.9999999999")
    assert ledger.view("a").level is BudgetLevel.CRITICAL
    assert [e.threshold for e in events] == ["info", "critical"]
    await spend(ledger, clock, "a", "0.0000000001")
    assert ledger.view("a").level is BudgetLevel.EXHAUSTED
    assert [e.threshold for e in events] == ["info", "critical", "exhausted"]
