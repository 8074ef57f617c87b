"""The automatic rollback guard: the seed's "complete system failure" trigger, acted on.

Off by default (`guard.auto_rollback`). When on, every few seconds it reads the error rate over
the last `guard.for_s` seconds; when more than `guard.error_rate` of at least
`guard.min_requests` requests failed across that whole span, it performs the level-2 rollback
(flags off, MCP health checked, a sample request) as actor `guard`. It does not fire again while
the gateway is already MCP-only: it is re-armed when an operator turns a flag back on.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

from hybridroute.config.control import GuardConfig
from hybridroute.control.flags import FlagService
from hybridroute.control.rollback import RollbackReport, RollbackService
from hybridroute.observability.traffic import TrafficWindow

__all__ = ["RollbackGuard"]

log = logging.getLogger("hybridroute.control")


class RollbackGuard:
    """Watches the error rate and rolls back when the system is failing."""

    def __init__(
        self,
        config: GuardConfig,
        traffic: TrafficWindow,
        flags: FlagService,
        rollback: RollbackService,
        now: Callable[[], float],
    ) -> None:
        self.config = config
        self._traffic = traffic
        self._flags = flags
        self._rollback = rollback
        self._now = now
        self.triggered: list[RollbackReport] = []
        self.last_reading: dict[str, Any] | None = None

    async def check(self) -> RollbackReport | None:
        """One evaluation; the rollback's report when it fired."""
        config = self.config
        if not config.auto_rollback:
            return None
        totals = self._traffic.totals(config.for_s, self._now())
        rate = totals.error_rate
        self.last_reading = {
            "requests": totals.requests,
            "error_rate": rate,
            "span_s": totals.span_s,
        }
        already_mcp_only = not any(self._flags.current().as_mapping().values())
        if (
            already_mcp_only
            or rate is None
            or totals.requests < config.min_requests
            or totals.span_s < config.for_s * 0.95
            or rate <= config.error_rate
        ):
            return None
        reason = (
            f"{rate:.0%} of {totals.requests} requests failed over the last {config.for_s:g}s "
            f"(trigger: more than {config.error_rate:.0%})"
        )
        log.error("rollback guard firing: %s", reason)
        report = await self._rollback.perform(2, version=None, actor="guard", reason=reason)
        self.triggered.append(report)
        return report

    async def run(self, interval_s: float = 5.0) -> None:
        while True:
            await asyncio.sleep(interval_s)
            try:
                await self.check()
            except Exception:
                log.exception("the rollback guard's check failed")

    def snapshot(self) -> dict[str, Any]:
        return {
            **self.config.model_dump(),
            "last_reading": self.last_reading,
            "fired": len(self.triggered),
            "last_fired": self.triggered[-1].as_dict() if self.triggered else None,
        }
