"""GET /admin/cost while the ledger store is away: the budgets still answer."""

from __future__ import annotations

from collections.abc import MutableMapping, Sequence
from decimal import Decimal
from types import SimpleNamespace
from typing import Any

import orjson
import pytest

from hybridroute.api.admin_cost import cost_report
from hybridroute.caching import CacheSettings
from hybridroute.config.economy import BudgetsConfig
from hybridroute.economics import CostLedger
from hybridroute.errors import StorageError
from hybridroute.gateway.cache import ResponseCache
from hybridroute.storage import MemoryLedgerStore
from hybridroute.storage.records import ChargeRecord, SpendRow
from hybridroute.testing import FakeClock
from hybridroute.types import Priority

pytestmark = pytest.mark.anyio


class AwayStore(MemoryLedgerStore):
    """A ledger store that cannot be written or read."""

    async def append_charges(self, charges: Sequence[ChargeRecord]) -> None:
        raise StorageError("SQLite store /srv/ledger.sqlite3: disk I/O error")

    async def spend(self, first_day: str, last_day: str | None = None) -> list[SpendRow]:
        raise StorageError("SQLite store /srv/ledger.sqlite3: disk I/O error")


async def test_the_cost_report_answers_with_the_budgets_while_the_store_is_away():
    clock = FakeClock()
    budgets = BudgetsConfig.model_validate({"global": {"daily": "10"}})
    ledger = CostLedger(budgets, "USD", clock, AwayStore())
    held = await ledger.reserve("default", Priority.MEDIUM, Decimal("1"))
    charge = ChargeRecord(
        clock.now(), "d1", "default", "standard", "mcp", "m", "served", 10, 10, False,
        Decimal("2.5"), "USD",
    )  # fmt: skip
    await ledger.settle(held, [charge])
    runtime = SimpleNamespace(
        clock=clock, ledger=ledger, cache=ResponseCache(CacheSettings(), clock)
    )
    sent: list[MutableMapping[str, Any]] = []

    async def send(message: MutableMapping[str, Any]) -> None:
        sent.append(message)

    async def receive() -> MutableMapping[str, Any]:
        return {"type": "http.request", "body": b""}

    await cost_report(runtime, {"query_string": b"days=1"}, receive, send)  # type: ignore[arg-type]
    assert sent[0]["status"] == 200
    body = orjson.loads(b"".join(m.get("body", b"") for m in sent[1:]))
    assert body["spend"] is None
    assert body["spend_error"] == "SQLite store /srv/ledger.sqlite3: disk I/O error"
    (daily,) = body["budgets"]["budgets"]
    assert (daily["spent"], daily["reserved"]) == ("2.5", "0")
    assert body["budgets"]["store"]["pending_writes"] == 1
    assert body["budgets"]["store"]["write_failures"] >= 1
