"""CostWindows: each app's cost this UTC day and this UTC month, kept up to date in memory.

Budgets read it at every check, so it is never recomputed from the store: segments add their
cost as they close, open ones are counted up to now when asked, and the day and the month start
afresh at their UTC boundaries.
"""

from __future__ import annotations

import calendar
import time
from collections.abc import Callable, Iterable
from functools import partial
from typing import Any, Protocol

Cost = Callable[[float, float], float]  # the cost of a segment between two times


class OpenSegment(Protocol):
    app: str

    def cost(self, start: float, end: float) -> float: ...


def clipped(rate: float, started: float, ended: float, start: float, end: float) -> float:
    """The cost at `rate` of [started, ended] inside [start, end]."""
    return rate * max(0.0, min(end, ended) - max(start, started))


def day_start(ts: float) -> float:
    y, m, d = time.gmtime(ts)[:3]
    return float(calendar.timegm((y, m, d, 0, 0, 0)))


def month_start(ts: float) -> float:
    y, m = time.gmtime(ts)[:2]
    return float(calendar.timegm((y, m, 1, 0, 0, 0)))


def day_name(ts: float) -> str:
    return time.strftime("%Y-%m-%d", time.gmtime(ts))


def month_name(ts: float) -> str:
    return time.strftime("%Y-%m", time.gmtime(ts))


class CostWindows:
    def __init__(self, now: float) -> None:
        self.day_start, self.month_start = day_start(now), month_start(now)
        self._day: dict[str, float] = {}
        self._month: dict[str, float] = {}

    def roll(self, now: float) -> None:
        """Start a new day (and month) once `now` is past its boundary."""
        if day_start(now) != self.day_start:
            self.day_start, self._day = day_start(now), {}
        if month_start(now) != self.month_start:
            self.month_start, self._month = month_start(now), {}

    def add(self, app: str, cost: Cost) -> None:
        """A closed segment: its cost inside each window."""
        self._day[app] = self._day.get(app, 0.0) + cost(self.day_start, float("inf"))
        self._month[app] = self._month.get(app, 0.0) + cost(self.month_start, float("inf"))

    def load(self, segments: Iterable[dict[str, Any]]) -> None:
        """This month's segments from the store (rows), at start."""
        for row in segments:
            self.add(row["app"], partial(clipped, row["rate"], row["started_at"], row["ended_at"]))

    def totals(
        self, now: float, open_segments: Iterable[OpenSegment]
    ) -> tuple[dict[str, float], dict[str, float]]:
        """Cost per app (today, this month) with the open segments counted up to `now`."""
        day, month = dict(self._day), dict(self._month)
        for segment in open_segments:
            day[segment.app] = day.get(segment.app, 0.0) + segment.cost(self.day_start, now)
            month[segment.app] = month.get(segment.app, 0.0) + segment.cost(self.month_start, now)
        return day, month
