"""Budget windows: calendar days and months in UTC.

A window is named by its calendar key (`2026-12-04`, `2026-12`) and knows when it started and
when the next one begins, so Retry-After can say when spending may resume.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from enum import StrEnum

__all__ = ["Period", "Window"]


class Period(StrEnum):
    """How long a budget window lasts."""

    DAILY = "daily"
    MONTHLY = "monthly"


@dataclass(frozen=True, slots=True)
class Window:
    """One calendar window of a period."""

    period: Period
    key: str
    start: float  # wall-clock seconds (UTC) when it began
    end: float  # when the next window begins

    @classmethod
    def containing(cls, period: Period, wall: float) -> Window:
        moment = dt.datetime.fromtimestamp(wall, tz=dt.UTC)
        if period is Period.DAILY:
            start = moment.replace(hour=0, minute=0, second=0, microsecond=0)
            end = start + dt.timedelta(days=1)
            key = start.strftime("%Y-%m-%d")
        else:
            start = moment.replace(day=1, hour=0, minute=0, second=0, microsecond=0)
            end = (start + dt.timedelta(days=32)).replace(day=1)
            key = start.strftime("%Y-%m")
        return cls(period, key, start.timestamp(), end.timestamp())

    @property
    def first_day(self) -> str:
        """The window's first UTC day, YYYY-MM-DD."""
        return dt.datetime.fromtimestamp(self.start, tz=dt.UTC).strftime("%Y-%m-%d")

    @property
    def last_day(self) -> str:
        """The window's last UTC day, YYYY-MM-DD."""
        return dt.datetime.fromtimestamp(self.end - 1, tz=dt.UTC).strftime("%Y-%m-%d")

    def contains(self, wall: float) -> bool:
        return self.start <= wall < self.end

    def seconds_left(self, wall: float) -> float:
        return max(0.0, self.end - wall)
