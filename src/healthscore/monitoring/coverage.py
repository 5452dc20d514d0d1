"""Coverage of metric windows: as-of dates whose windows start before the data does.

A windowed metric as of a date reads the rows of its window, which ends at the as-of
point. When the window starts before the first row of its source, the metric is
computed on a partial window: a count of the last 28 days, say, counts only the
days since the data begins. `find_partial_windows` finds the dates of a backfill
where that happens, with one min(timestamp) query per source.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime, timedelta
from zoneinfo import ZoneInfo

import pandas as pd

from healthscore.config import Project, ProjectConfig
from healthscore.config.models import ChangeMetric, Duration, WindowedMetric
from healthscore.metrics.windows import shift
from healthscore.sources import SourceSet, as_of_point

__all__ = ["PartialWindows", "Reach", "find_partial_windows", "window_reaches"]


@dataclass(frozen=True)
class Reach:
    """How far back from the as-of point a metric reads: `periods` windows."""

    length: Duration
    periods: int = 1

    def start(self, point: datetime) -> datetime:
        """Return the earliest time the metric reads as of `point`."""
        return shift(point, self.length, self.periods)

    def __str__(self) -> str:
        if self.periods == 1:
            return str(self.length)
        return f"{self.periods} windows of {self.length}"


@dataclass(frozen=True)
class PartialWindows:
    """The as-of dates whose longest window of one source starts before its data."""

    source: str
    first_row: datetime
    """Time of the source's earliest usable row, in the project's time zone."""
    longest: Reach
    """The reach that starts earliest among the windowed metrics of the source."""
    dates: list[date]
    """As-of dates whose longest window starts before `first_row`, oldest first."""
    first_complete: date
    """The first calendar date whose windows of this source all start at or after
    `first_row`."""


def window_reaches(config: ProjectConfig) -> dict[str, list[Reach]]:
    """Return the reach of each windowed metric, grouped by the source it reads.

    A change metric reads its base metric's window and the window before it, so it
    reaches back two windows of the base metric's length.
    """
    reaches: dict[str, list[Reach]] = {}
    for metric in config.metrics.values():
        if isinstance(metric, ChangeMetric):
            base = config.metrics.get(metric.of)
            if isinstance(base, WindowedMetric) and base.window is not None:
                reach = Reach(base.window.length, periods=2)
                reaches.setdefault(base.source, []).append(reach)
        elif isinstance(metric, WindowedMetric) and metric.window is not None:
            reaches.setdefault(metric.source, []).append(Reach(metric.window.length))
    return reaches


def find_partial_windows(
    project: Project, sources: SourceSet, dates: list[date]
) -> list[PartialWindows]:
    """Find the sources whose windows start before their first row on some dates.

    Runs one min(timestamp) query per source that windowed metrics read. A
    subscriptions source is dated by its `start` column. Sources without usable
    rows, and sources the engine has not read, are skipped.
    """
    points = {day: as_of_point(project, day) for day in sorted(dates)}
    found = []
    for name, reaches in window_reaches(project.config).items():
        first_row = first_row_time(project, sources, name)
        if first_row is None:
            continue
        partial = [
            day
            for day, point in points.items()
            if min(reach.start(point) for reach in reaches) < first_row
        ]
        if not partial:
            continue
        longest = min(reaches, key=lambda reach: reach.start(points[partial[0]]))
        found.append(
            PartialWindows(
                source=name,
                first_row=first_row,
                longest=longest,
                dates=partial,
                first_complete=_first_complete_date(project, reaches, first_row),
            )
        )
    return found


def first_row_time(project: Project, sources: SourceSet, name: str) -> datetime | None:
    """Return the time of the earliest usable row of a known account, or None.

    The time is wall-clock time in the project's time zone, as the as-of points are.
    """
    if name not in sources.loaded:
        return None
    table = sources.rows(name)
    column = next((c for c in ("timestamp", "start") if c in table.columns), None)
    if column is None:
        return None
    # Rows of accounts missing from the accounts source are excluded from metrics.
    accounts = sources.rows(sources.accounts_name)
    table = table.filter(table.account_id.isin(accounts.account_id))
    value = table[column].min().execute()
    if value is None or pd.isna(value):
        return None
    stamp = pd.Timestamp(value)
    if stamp.tzinfo is not None:
        stamp = stamp.tz_convert(ZoneInfo(project.config.timezone)).tz_localize(None)
    moment: datetime = stamp.to_pydatetime()
    return moment


def _first_complete_date(
    project: Project, reaches: list[Reach], first_row: datetime
) -> date:
    """Return the first date whose windows all start at or after `first_row`.

    Each reach starts no later than the as-of point, and the as-of point of a date
    is at most one day after its midnight, so no date before the day before
    `first_row` qualifies. The search steps one day at a time from there, at most
    about as many days as the longest reach.
    """
    day = first_row.date() - timedelta(days=1)
    while any(reach.start(as_of_point(project, day)) < first_row for reach in reaches):
        day += timedelta(days=1)
    return day
