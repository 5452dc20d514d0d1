"""Window arithmetic: the time range a metric reads as of a point in time."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

import ibis

from healthscore.config.models import Duration, WindowConfig


def shift(point: datetime, duration: Duration, periods: int = 1) -> datetime:
    """Move `point` back by `periods` times `duration` (calendar months for `mo`)."""
    if duration.unit != "months":
        return point - timedelta(days=duration.days * periods)
    months = point.year * 12 + point.month - 1 - duration.amount * periods
    year, month = divmod(months, 12)
    day = min(point.day, _days_in_month(year, month + 1))
    return point.replace(year=year, month=month + 1, day=day)


def _days_in_month(year: int, month: int) -> int:
    following = datetime(year + month // 12, month % 12 + 1, 1)
    return (following - timedelta(days=1)).day


@dataclass(frozen=True)
class Span:
    """The time range one window covers, with explicit edges.

    `left` is [start, end). `right` is (start, end] for a window that ends before
    the as-of point, such as the earlier window of a change. It is (start, end)
    for the window that ends at the point, because no metric reads a row stamped
    at the point or later. `end_closed` tells which of the two a right span is.
    """

    start: datetime
    end: datetime
    closed: str
    end_closed: bool = False

    def contains(self, column: ibis.Value) -> ibis.BooleanValue:
        """Ibis condition: `column` falls inside the span."""
        if self.closed == "left":
            return (column >= self.start) & (column < self.end)
        if self.end_closed:
            return (column > self.start) & (column <= self.end)
        return (column > self.start) & (column < self.end)

    @property
    def days(self) -> float:
        return (self.end - self.start).total_seconds() / 86400


def current_span(window: WindowConfig, point: datetime) -> Span:
    """Return the window that ends at the as-of point."""
    return Span(shift(point, window.length), point, window.closed)


def previous_span(window: WindowConfig, point: datetime) -> Span:
    """Return the window of the same length just before the current one."""
    end = shift(point, window.length)
    start = shift(point, window.length, 2)
    return Span(start, end, window.closed, end_closed=window.closed == "right")
