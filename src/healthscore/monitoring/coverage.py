"""Coverage of metric windows: as-of dates whose windows start before the data does.

A windowed metric as of a date reads the rows of its window, which ends at the as-of
point. When the window starts before the first row of its source, the metric is
computed on a partial window: a count of the last 28 days, say, counts only the
days since the data begins. `find_partial_windows` finds the dates of a backfill
where that happens, with one min(timestamp) query per source.

A metric on the raw rows of a store source (`path: store`) also gets a partial
window when the window reaches raw days that retention purged, because only the
daily rollups of those days are kept. `find_purged_windows` finds those days per
source.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime, timedelta
from zoneinfo import ZoneInfo

import pandas as pd

from healthscore.config import Project, ProjectConfig, metric_dependencies
from healthscore.config.models import (
    ChangeMetric,
    Duration,
    SourceMetric,
    WindowedMetric,
)
from healthscore.config.retention import is_store_source
from healthscore.metrics.windows import shift
from healthscore.sources import SourceSet, as_of_point
from healthscore.sources.ingest import event_store

__all__ = [
    "PartialWindows",
    "PurgedWindows",
    "Reach",
    "find_partial_windows",
    "find_purged_windows",
    "window_reaches",
]

ONE_DAY = timedelta(days=1)


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
        first_row = _earliest(
            first_row_time(project, sources, name),
            first_purged_row_time(project, sources, name),
        )
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


def first_purged_row_time(
    project: Project, sources: SourceSet, name: str
) -> datetime | None:
    """Return the time of the earliest row of a known account on a purged raw day.

    The raw rows of a purged day are gone, but its rollup keeps the first timestamp
    per account, so the data of a store source starts there and not at its first
    raw row that is left. None for other sources and when no day is purged.
    """
    source = project.config.sources.get(name)
    if source is None or not is_store_source(source) or name not in sources.loaded:
        return None
    store = event_store(project)
    known: set[str] | None = None
    for day in store.purged_days(name):
        rollup = store.read_rollup(name, day)
        if rollup is None:
            continue
        if known is None:
            accounts = sources.rows(sources.accounts_name).account_id.execute()
            known = set(accounts.astype(str))
        frame = rollup.select(["account_id", "first_timestamp"]).to_pandas()
        stamps = frame.loc[frame["account_id"].isin(known), "first_timestamp"]
        if len(stamps):
            moment: datetime = pd.Timestamp(stamps.min()).to_pydatetime()
            return moment
    return None


def _earliest(*moments: datetime | None) -> datetime | None:
    known = [moment for moment in moments if moment is not None]
    return min(known) if known else None


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


@dataclass(frozen=True)
class PurgedWindows:
    """Purged raw days of one store source that metric windows reach on some dates."""

    source: str
    days: list[date]
    """Purged days that a window of `metrics` reaches on some date, oldest first."""
    metrics: list[str]
    """Metrics that read the raw rows of those days, in the configuration's order."""
    derived_metrics: list[str]
    """Metrics computed from `metrics`, such as a ratio, in the configuration's
    order."""
    dates: list[date]
    """As-of dates whose windows reach a purged day, oldest first."""


def raw_store_reaches(config: ProjectConfig) -> dict[str, dict[str, Reach | None]]:
    """Return how far back each metric reads the raw rows of a store source.

    Grouped by store source, then by metric. The reach is None when the metric
    reads every row before the as-of point: a metric without a window, such as a
    `days_since`. Metrics on a rollup source (`<source>_daily`) read no raw rows
    and are left out, as are metrics computed from other metrics, except a change.
    """
    reaches: dict[str, dict[str, Reach | None]] = {}
    for name, metric in config.metrics.items():
        read: SourceMetric | None = None
        periods = 1
        if isinstance(metric, ChangeMetric):
            base = config.metrics.get(metric.of)
            read = base if isinstance(base, SourceMetric) else None
            # A change reads the window of its base and the window before it.
            periods = 2
        elif isinstance(metric, SourceMetric):
            read = metric
        if read is None:
            continue
        source = config.sources.get(read.source)
        if source is None or not is_store_source(source):
            continue
        window = getattr(read, "window", None)
        reach = None if window is None else Reach(window.length, periods)
        reaches.setdefault(read.source, {})[name] = reach
    return reaches


def find_purged_windows(project: Project, dates: list[date]) -> list[PurgedWindows]:
    """Find the purged raw days that the windows of raw store metrics reach.

    A window reaches a purged day when the day starts before the as-of point and
    ends after the window starts. Rows of a purged day
    are gone from the raw rows, so a metric that reads them is computed from the
    days that are left. It lists the day folders of the store and reads no rows.
    """
    config = project.config
    points = {day: as_of_point(project, day) for day in sorted(dates)}
    store = event_store(project)
    found = []
    for source, reaches in raw_store_reaches(config).items():
        purged = store.purged_days(source)
        if not purged:
            continue
        days: set[date] = set()
        metrics: set[str] = set()
        reached_dates = []
        for day, point in points.items():
            reached_on_date = False
            for metric, reach in reaches.items():
                start = None if reach is None else reach.start(point)
                reached = _purged_in_window(purged, start, point)
                if reached:
                    days.update(reached)
                    metrics.add(metric)
                    reached_on_date = True
            if reached_on_date:
                reached_dates.append(day)
        if not days:
            continue
        found.append(
            PurgedWindows(
                source=source,
                days=sorted(days),
                metrics=[name for name in config.metrics if name in metrics],
                derived_metrics=_computed_from(config, metrics),
                dates=reached_dates,
            )
        )
    return found


def _purged_in_window(
    purged: list[date], start: datetime | None, point: datetime
) -> list[date]:
    """Return the purged days that share time with the window from `start` to `point`.

    `start` None stands for a window without start.
    """
    reached = []
    for day in purged:
        midnight = datetime(day.year, day.month, day.day)
        if midnight >= point:
            break
        if start is None or midnight + ONE_DAY > start:
            reached.append(day)
    return reached


def _computed_from(config: ProjectConfig, metrics: set[str]) -> list[str]:
    """Return the metrics computed, directly or in turn, from any of `metrics`.

    Metrics in `metrics` are left out, so a change that reads raw rows itself is
    listed with them and not here.
    """
    affected = set(metrics)
    derived: set[str] = set()
    changed = True
    while changed:
        changed = False
        for name, metric in config.metrics.items():
            if name in affected:
                continue
            inputs = metric_dependencies(metric)
            if any(dependency in affected for dependency in inputs):
                affected.add(name)
                derived.add(name)
                changed = True
    return [name for name in config.metrics if name in derived]
