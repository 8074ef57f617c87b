"""Hourly rollups and the operations reports, from recorded data."""

from __future__ import annotations

import math
from decimal import Decimal
from typing import Any

import orjson
import pytest

from hybridroute.config.economy import BudgetsConfig
from hybridroute.config.observability import DEFAULT_ALERT_RULES, AlertRuleConfig, SloConfig
from hybridroute.economics import CostLedger
from hybridroute.observability.alerts import AlertManager, Reading
from hybridroute.observability.events import Outcome, RequestEvent
from hybridroute.observability.reports import ReportSources, build_report, render_markdown
from hybridroute.observability.rollups import TrafficRecorder, figures, merge_rollups, rollup_of
from hybridroute.observability.traffic import TrafficWindow
from hybridroute.signals import FlagState
from hybridroute.storage import (
    AlertEventRecord,
    GatewayEventRecord,
    MemoryLedgerStore,
    SqliteLedgerStore,
)
from hybridroute.testing import FakeClock

pytestmark = pytest.mark.anyio

NOON = 1_800_000_000.0 - (1_800_000_000.0 % 3600) + 12 * 3600  # an hour boundary


def event(at: float, outcome: Outcome = Outcome.SERVED, **extra) -> RequestEvent:
    fields: dict[str, Any] = {
        "at": at,
        "operation_type": "standard",
        "priority": "medium",
        "tenant": "default",
        "outcome": outcome,
        "status": 200 if outcome in (Outcome.SERVED, Outcome.CACHED) else 503,
        "latency_s": 0.2,
        "route": "mcp" if outcome is Outcome.SERVED else None,
        "primary": "mcp",
        "first_route": None if outcome is Outcome.CACHED else "mcp",
        "efficient": outcome is Outcome.SERVED,
        "cache": "miss",
        "cost": Decimal("0.001") if outcome is Outcome.SERVED else Decimal(0),
    }
    fields.update(extra)
    return RequestEvent(**fields)


def test_rollups_add_up_and_give_the_windows_figures():
    window = TrafficWindow(started_at=NOON)
    for i in range(8):
        window.record(event(NOON + i))
    window.record(event(NOON + 10, Outcome.FAILED, error_code="all_routes_failed"))
    window.record(event(NOON + 11, Outcome.CACHED, cache="hit", latency_s=0.001))
    hour = math.floor(NOON / 3600)
    bucket = window.hour_bucket(hour)
    assert bucket is not None
    one = rollup_of(bucket)
    both = merge_rollups(one, one)
    f = figures(both)
    assert (f["requests"], f["errors"], f["served"], f["cached"]) == (20, 2, 16, 2)
    assert f["error_rate"] == 0.1
    assert f["cache_hit_rate"] == round(2 / 20, 4)  # hits / (hits + misses)
    assert f["routing_efficiency"] == round(16 / 18, 4)  # efficient / decided
    assert f["cost"] == "0.016"
    assert both["operations"]["standard"]["requests"] == 20
    assert both["error_codes"] == {"all_routes_failed": 2}
    assert f["generation_p95_ms"] == pytest.approx(200, rel=0.03)
    # a rollup survives JSON
    assert figures(orjson.loads(orjson.dumps(both))) == f


@pytest.mark.parametrize("kind", ["memory", "sqlite"])
async def test_the_recorder_adds_what_an_earlier_process_wrote_for_the_same_hour(kind, tmp_path):
    store = MemoryLedgerStore() if kind == "memory" else SqliteLedgerStore(tmp_path / "s.db")
    await store.open()
    clock = FakeClock(wall_start=NOON + 600)
    first = TrafficWindow(started_at=NOON)
    for i in range(5):
        first.record(event(NOON + 60 + i))
    recorder = TrafficRecorder(first, store, clock)
    await recorder.start()
    await recorder.write()
    # a restart in the same hour: a new window, and a recorder that reads the hour back
    second = TrafficWindow(started_at=NOON + 700)
    for i in range(3):
        second.record(event(NOON + 700 + i))
    again = TrafficRecorder(second, store, clock)
    await again.start()
    await again.write()
    await again.write()  # written twice: replaced, not doubled
    (record,) = await store.traffic_hours(0, 10**9)
    assert figures(orjson.loads(record.data))["requests"] == 8
    await store.aclose()


async def test_the_daily_report_from_recorded_alerts_traffic_spend_and_starts():
    store = MemoryLedgerStore()
    clock = FakeClock(wall_start=NOON + 1800)
    now = clock.now()
    window = TrafficWindow(started_at=NOON)
    for i in range(30):
        window.record(event(NOON + i))
    for i in range(3):
        window.record(event(NOON + 40 + i, Outcome.FAILED, error_code="upstream_timeout"))
    recorder = TrafficRecorder(window, store, clock)
    await recorder.start()
    await recorder.write()
    await store.append_alert_events(
        [
            AlertEventRecord(NOON + 100, "a-1", "error_rate_critical", "critical", "firing",
                             "{}", "error rate: 9.1 % > 5.0 % for 2 min", 0.091, None),
            AlertEventRecord(NOON + 200, "a-1", "error_rate_critical", "critical",
                             "acknowledged", "{}", "", 0.091, "alice"),
            AlertEventRecord(NOON + 400, "a-1", "error_rate_critical", "critical", "resolved",
                             "{}", "", 0.0, "alice"),
        ]
    )  # fmt: skip
    await store.append_gateway_events(
        [
            GatewayEventRecord(NOON + 5, "started", '{"version": "0.1.0", "config": "aaa"}'),
            GatewayEventRecord(NOON + 900, "config_changed", '{"from": "aaa", "to": "bbb"}'),
        ]
    )
    budgets = BudgetsConfig.model_validate({"global": {"daily": "10"}})
    ledger = CostLedger(budgets, "USD", clock, store)
    held = await ledger.reserve("default", "medium", Decimal(1))  # type: ignore[arg-type]
    await ledger.release(held)
    rules = {rid: AlertRuleConfig.model_validate(r) for rid, r in DEFAULT_ALERT_RULES.items()}
    manager = AlertManager(rules, clock)
    manager.evaluate({"fallback_rate": [Reading(0.5)]})  # fires at once (no duration)
    sources = ReportSources(
        operations=store,
        spend=store,
        ledger=ledger,
        alerts=manager,
        flags=FlagState(performance_optimization=False),
        slo=SloConfig(min_requests=5),
    )
    report = await build_report("daily", sources, now)
    assert report["slo"]["figures"]["requests"] == 33
    assert report["slo"]["compliance"]["error_rate"]["met"] is False  # 3 of 33 > 1 %
    assert report["slo"]["compliance"]["generation_p95"]["met"] is True
    alerts = {a["id"]: a for a in report["alerts"]["alerts"]}
    assert alerts["a-1"]["acknowledged_by"] == "alice"
    assert alerts["a-1"]["duration_s"] == 300
    assert alerts["a-1"]["active"] is False
    active = [a for a in report["alerts"]["alerts"] if a["active"]]
    assert [a["rule"] for a in active] == ["fallback_rate_warning"]
    assert report["flags"]["ENABLE_PERFORMANCE_OPTIMIZATION"] is False
    assert [e["kind"] for e in report["configuration"]] == ["started", "config_changed"]
    (daily,) = [b for b in report["cost"]["budgets"] if b["period"] == "daily"]
    assert daily["spent"] == "0"
    assert daily["on_track"] is True
    text = render_markdown(report)
    assert "# Daily operations report" in text
    assert "- [ ] NOT MET error rate 9.1 % (target ≤ 1 %)" in text
    assert "| critical | error_rate_critical | error rate: 9.1 % > 5.0 % for 2 min |" in text
    assert "by alice |" in text
    assert "- ENABLE_PERFORMANCE_OPTIMIZATION: OFF" in text
    assert "configuration changed (aaa → bbb)" in text
