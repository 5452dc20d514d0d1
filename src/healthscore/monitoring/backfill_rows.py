"""Metric values of many as-of dates as one long frame, from one sweep of each source.

Row `i` of the frame is one account on one date. The rows of each date are together,
oldest date first, and in the order `compute_metrics` gives that date's accounts, so
a date's rows are one slice of the frame (see `DatedMetrics.table`).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import date, datetime

import numpy as np
import pandas as pd

from healthscore.config import Project
from healthscore.config.models import (
    AttributeMetric,
    ChangeMetric,
    FormulaMetric,
    MetricConfig,
    MilestoneMetric,
    RateMetric,
    RatioMetric,
    TenureMetric,
)
from healthscore.metrics import MetricTable, _fill_empty_windows, aggregates, derived
from healthscore.monitoring.backfill_sweep import SourceSweep, day_number
from healthscore.sources import SourceSet, as_of_point

logger = logging.getLogger(__name__)


@dataclass
class DatedMetrics:
    """Metric values and account columns of many as-of dates, one row per date and
    account."""

    dates: list[date]
    """As-of dates, oldest first."""
    points: list[datetime]
    """As-of point of each date."""
    offsets: np.ndarray
    """Rows of the `i`-th date: `offsets[i]:offsets[i + 1]`."""
    codes: np.ndarray
    """Position in `dates` of each row's date."""
    account_ids: pd.Index
    """Account id of each row, named `account_id`."""
    id_ranks: np.ndarray
    """Rank of each row's account id among all account ids in sorted order."""
    values: pd.DataFrame
    """Metric values, one column per metric in configuration order, RangeIndex."""
    accounts: pd.DataFrame
    """Account columns of each row, indexed by `account_ids`."""

    def __len__(self) -> int:
        return len(self.dates)

    def rows(self, index: int) -> slice:
        """Return the slice of the rows of the `index`-th date."""
        return slice(int(self.offsets[index]), int(self.offsets[index + 1]))

    def table(self, index: int) -> MetricTable:
        """Return the `index`-th date's metric table, equal to `compute_metrics`."""
        rows = self.rows(index)
        ids = self.account_ids[rows]
        values = self.values.iloc[rows].set_axis(ids).copy()
        return MetricTable(
            as_of=self.dates[index],
            point=self.points[index],
            values=values,
            accounts=self.accounts.iloc[rows].copy(),
        )


def sweep_metric_rows(
    project: Project,
    sources: SourceSet,
    dates: list[date],
    progress: Callable[[str], None] | None = None,
) -> DatedMetrics:
    """Compute every metric of every date, reading each source once for all dates.

    Each date's rows equal `compute_metrics(project, sources, as_of)`.
    """
    sweep = MetricSweep(project, sources, dates, progress)
    return sweep.rows(0, len(sweep.dates))


class MetricSweep:
    """Every metric of a project at every date of a grid, from one scan per source.

    Building it scans the sources and keeps partial aggregates per account and
    segment between window edges (see `backfill_sweep`). `rows` then computes the
    values of any run of dates without reading the sources again, so a long grid
    can be handled in batches.
    """

    def __init__(
        self,
        project: Project,
        sources: SourceSet,
        dates: list[date],
        progress: Callable[[str], None] | None = None,
    ) -> None:
        self.project = project
        self.sources = sources
        self.dates = sorted(set(dates))
        self.points = [as_of_point(project, as_of) for as_of in self.dates]
        metrics = project.config.metrics
        self.usable = sources.accounts()
        self.all_accounts = pd.Index(self.usable.index, name="account_id")
        self.id_ranks = np.empty(len(self.all_accounts), dtype=np.int64)
        self.id_ranks[self.all_accounts.argsort()] = np.arange(len(self.all_accounts))
        # Every scored account is a usable account, so each has a position.
        self.positions = [
            self.all_accounts.get_indexer(
                _population(project, sources, self.usable, as_of).index
            )
            for as_of in self.dates
        ]
        self.sweeps: list[SourceSweep] = []
        if not self.dates:
            return
        for source_name, names in aggregates.group_by_source(metrics).items():
            if progress:
                progress(f"metrics from {source_name}")
            started = time.perf_counter()
            self.sweeps.append(
                SourceSweep(
                    sources, source_name, names, metrics, self.points, self.all_accounts
                )
            )
            logger.info(
                "swept %d metric(s) of %s over %d dates in %.2f s",
                len(names),
                source_name,
                len(self.dates),
                time.perf_counter() - started,
            )

    def accounts_at(self, index: int) -> int:
        """Return the number of accounts scored at the `index`-th date."""
        return len(self.positions[index])

    def rows(self, first: int, stop: int) -> DatedMetrics:
        """Compute the metric values of the dates `dates[first:stop]`."""
        positions = self.positions[first:stop]
        sizes = np.array([len(part) for part in positions], dtype=np.int64)
        row_positions = (
            np.concatenate(positions) if positions else np.zeros(0, dtype=np.int64)
        )
        codes = np.repeat(np.arange(len(positions), dtype=np.int64), sizes)
        day_numbers = [day_number(as_of) for as_of in self.dates[first:stop]]
        days = np.array(day_numbers, dtype=np.int64)[codes]
        columns: dict[str, np.ndarray] = {}
        for sweep in self.sweeps:
            columns.update(sweep.columns(codes + first, row_positions, days))
        values = pd.DataFrame(columns, index=pd.RangeIndex(len(row_positions)))
        metrics = self.project.config.metrics
        _fill_empty_windows(values, metrics)
        dated = DatedMetrics(
            dates=self.dates[first:stop],
            points=self.points[first:stop],
            offsets=np.concatenate([[0], np.cumsum(sizes)]),
            codes=codes,
            account_ids=self.all_accounts[row_positions],
            id_ranks=self.id_ranks[row_positions],
            values=values,
            accounts=self.usable.iloc[row_positions],
        )
        _add_derived(self.project, self.sources, dated)
        dated.values = dated.values[list(metrics)]
        return dated


def _population(
    project: Project, sources: SourceSet, usable: pd.DataFrame, as_of: date
) -> pd.DataFrame:
    """`metrics.population`, from the usable accounts read once for all dates."""
    mode = project.config.scoring.population
    subscriptions = project.config.sources_of_kind("subscriptions")
    if mode is None:
        mode = "active" if subscriptions else "all"
    if mode == "all":
        return usable
    active = derived.active_accounts(sources, subscriptions[0], as_of)
    return usable[usable.index.isin(active)]


def _add_derived(project: Project, sources: SourceSet, dated: DatedMetrics) -> None:
    """Add the derived metrics in dependency order, as `compute_metrics` does.

    Metrics that read only other columns of the same row are computed for all rows
    at once. Tenure, milestones, rates and changes of rates depend on the date, so
    they are computed date by date.
    """
    metrics = project.config.metrics
    values = dated.values
    for name in derived.evaluation_order(metrics):
        metric = metrics[name]
        if isinstance(metric, AttributeMetric):
            values[name] = dated.accounts[metric.column].set_axis(values.index)
        elif isinstance(metric, RatioMetric):
            values[name] = derived.ratio(values, metric)
        elif isinstance(metric, FormulaMetric):
            values[name] = derived.formula(values, metric, name)
        elif isinstance(metric, ChangeMetric) and not _compares_rate(metric, metrics):
            previous = values[aggregates.previous_column(name)].astype("float64")
            values[name] = derived.change(values, metric, previous)
        elif isinstance(
            metric, TenureMetric | MilestoneMetric | RateMetric | ChangeMetric
        ):
            values[name] = _derived_by_date(project, sources, dated, name)


def _compares_rate(metric: ChangeMetric, metrics: dict[str, MetricConfig]) -> bool:
    # The earlier window of a rate is scaled date by date (`previous_window`).
    return isinstance(metrics[metric.of], RateMetric)


def _derived_by_date(
    project: Project, sources: SourceSet, dated: DatedMetrics, name: str
) -> np.ndarray:
    metrics = project.config.metrics
    metric = metrics[name]
    result = np.full(len(dated.values), np.nan)
    for index, (as_of, point) in enumerate(zip(dated.dates, dated.points, strict=True)):
        rows = dated.rows(index)
        ids = dated.account_ids[rows]
        part = dated.values.iloc[rows].set_axis(ids)
        if isinstance(metric, TenureMetric):
            column = derived.tenure(sources, metric, as_of, point).reindex(ids)
        elif isinstance(metric, MilestoneMetric):
            accounts = dated.accounts.iloc[rows]
            column = derived.milestone(part, sources, metric, name, point, accounts)
        elif isinstance(metric, RateMetric):
            column = derived.rate(part, metric, name, metrics, point)
        else:
            assert isinstance(metric, ChangeMetric)
            previous = derived.previous_window(
                part, metric, name, metrics, sources, as_of, point
            )
            column = derived.change(part, metric, previous)
        result[rows] = column.to_numpy(dtype="float64", na_value=np.nan)
    return result
