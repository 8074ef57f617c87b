"""Per-simulator request statistics: totals, counts by outcome and a bounded log of recent requests.

The control endpoint `GET /_sim/stats` serves `Stats.as_dict()`; tests and the demo read it to see
what the upstream actually received (model id, region, operation) and how it answered.
"""

from __future__ import annotations

import time
from collections import deque

__all__ = ["Stats"]

_KEPT = 200
_SHOWN = 50


class Stats:
    """Counts requests by outcome and keeps the last few request records."""

    def __init__(self) -> None:
        self.requests = 0
        self.by_outcome: dict[str, int] = {}
        self._recent: deque[dict[str, object]] = deque(maxlen=_KEPT)

    def record(self, **fields: object) -> None:
        """Log one request; `outcome` ("ok", "error:<kind>", …) is counted in `by_outcome`."""
        self._recent.append({"at": time.time(), **fields})
        self.requests += 1
        outcome = str(fields.get("outcome", "unknown"))
        self.by_outcome[outcome] = self.by_outcome.get(outcome, 0) + 1

    def clear(self) -> None:
        self.requests = 0
        self.by_outcome = {}
        self._recent.clear()

    @property
    def recent(self) -> list[dict[str, object]]:
        """Every kept record, oldest first."""
        return list(self._recent)

    def as_dict(self) -> dict[str, object]:
        shown = list(self._recent)[-_SHOWN:]
        return {"requests": self.requests, "by_outcome": dict(self.by_outcome), "recent": shown}
