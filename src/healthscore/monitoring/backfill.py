"""Backfill: score and store every as-of date of a range from one sweep of the data.

`sweep_metrics` gives the same metric tables as `compute_metrics` called once per
date, but reads each source once for all dates (see `backfill_sweep`). `backfill`
scores each date with `score_accounts` and stores it like `pipeline.score` does.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import date, datetime
from pathlib import Path

import pandas as pd

from healthscore.config import Project
from healthscore.config.models import (
    Duration,
)
from healthscore.engine import Engine
from healthscore.metrics import (
    MetricTable,
    _fill_empty_windows,
    aggregates,
    derived,
)
from healthscore.metrics.windows import shift
from healthscore.monitoring.backfill_sweep import SourceSweep, sweep_source_reports
from healthscore.monitoring.history import replay_project, store_run
from healthscore.pipeline import (
    ScoringRun,
    open_engine,
    scorecard_versions,
    snapshot_store,
)
from healthscore.scoring import score_accounts
from healthscore.sources import SourceSet, as_of_point
from healthscore.store.state import StateStore

__all__ = ["BackfillResult", "backfill", "backfill_dates", "sweep_metrics"]

logger = logging.getLogger(__name__)

#: Called after each stored date with (dates done, dates in all).
DateProgress = Callable[[int, int], None]


def backfill_dates(start: date, end: date, every: Duration) -> list[date]:
    """As-of dates from `start` to `end` inclusive, `every` apart.

    A step in months keeps the day of `start` where the month has it, else the last
    day of the month.
    """
    if end < start:
        raise ValueError(
            f"the range ends ({end.isoformat()}) before it starts "
            f"({start.isoformat()}); give --to on or after --from"
        )
    if every.amount <= 0:
        raise ValueError(f"the step {every} must be at least 1 day; use 1d or more")
    origin = datetime(start.year, start.month, start.day)
    dates = []
    periods = 0
    while (day := shift(origin, every, -periods).date()) <= end:
        dates.append(day)
        periods += 1
    return dates


def sweep_metrics(
    project: Project,
    sources: SourceSet,
    dates: list[date],
    progress: Callable[[str], None] | None = None,
) -> Iterator[MetricTable]:
    """Yield the metric table of each date, oldest first.

    Each table equals `compute_metrics(project, sources, as_of)`; the row metrics of
    all dates come from one pass over each source.
    """
    dates = sorted(set(dates))
    if not dates:
        return
    points = [as_of_point(project, as_of) for as_of in dates]
    metrics = project.config.metrics
    usable = sources.accounts()
    all_accounts = pd.Index(usable.index, name="account_id")
    sweeps = []
    for source_name, names in aggregates.group_by_source(metrics).items():
        if progress:
            progress(f"metrics from {source_name}")
        started = time.perf_counter()
        sweeps.append(
            SourceSweep(sources, source_name, names, metrics, points, all_accounts)
        )
        logger.info(
            "swept %d metric(s) of %s over %d dates in %.2f s",
            len(names),
            source_name,
            len(dates),
            time.perf_counter() - started,
        )
    for index, (as_of, point) in enumerate(zip(dates, points, strict=True)):
        accounts = _population(project, sources, usable, as_of)
        rows = pd.Index(accounts.index, name="account_id")
        # Every scored account is a usable account, so each has a position.
        positions = all_accounts.get_indexer(rows)
        frames = [sweep.frame(index, as_of, positions, rows) for sweep in sweeps]
        values = pd.concat(frames, axis=1) if frames else pd.DataFrame(index=rows)
        _fill_empty_windows(values, metrics)
        _add_derived(project, sources, values, accounts, as_of, point)
        yield MetricTable(
            as_of=as_of, point=point, values=values[list(metrics)], accounts=accounts
        )


def _population(
    project: Project, sources: SourceSet, usable: pd.DataFrame, as_of: date
) -> pd.DataFrame:
    """`metrics.population`, from the usable accounts read once for all dates."""
    mode = project.config.scoring.population
    subscriptions = project.config.sources_of_kind("subscriptions")
    if mode is None:
        mode = "active" if subscriptions else "all"
    if mode == "all":
        return usable.copy()
    active = derived.active_accounts(sources, subscriptions[0], as_of)
    return usable[usable.index.isin(active)].copy()


def _add_derived(
    project: Project,
    sources: SourceSet,
    values: pd.DataFrame,
    accounts: pd.DataFrame,
    as_of: date,
    point: datetime,
) -> None:
    """Add the derived metrics in dependency order, as compute_metrics does."""
    derived.add_derived(values, project.config.metrics, sources, accounts, as_of, point)


@dataclass
class BackfillResult:
    """Result of a backfill: the dates stored and skipped."""

    dates: list[date]
    """As-of dates scored and stored, oldest first."""
    accounts: dict[date, int] = field(default_factory=dict)
    """Accounts scored per date."""
    skipped: list[date] = field(default_factory=list)
    """Dates left out: with `replay`, the dates of the range without a snapshot."""
    seconds: float = 0.0


def backfill(
    project: Project,
    dates: list[date],
    *,
    engine: Engine | None = None,
    replay: bool = False,
    progress: DateProgress | None = None,
) -> BackfillResult:
    """Score and store the snapshot of every date in `dates`.

    Parameters
    ----------
    project : Project
        The project to score.
    dates : list of date
        As-of dates, for example from `backfill_dates`.
    engine : Engine, optional
        An engine with the project's sources; by default one is opened. With
        `replay`, each stored configuration reads its sources into its own engine.
    replay : bool
        Rescore only the dates that have a snapshot, each under the configuration
        stored with it (see `healthscore.monitoring.history.replay`).
    progress : callable, optional
        Called with (dates stored, dates in all) after each date.

    Raises
    ------
    SourceError, ConfigError, ScoringInputError
        As `pipeline.score`; the dates stored before the error stay stored.
    """
    started = time.perf_counter()
    dates = sorted(set(dates))
    result = BackfillResult(dates=[])
    groups: list[tuple[Project, list[date]]] = [(project, dates)]
    if replay:
        groups, result.skipped = _replay_groups(project, dates)
    total = sum(len(group) for _, group in groups)

    def stored(run: ScoringRun) -> None:
        result.dates.append(run.as_of)
        result.accounts[run.as_of] = len(run.result.scores)
        if progress:
            progress(len(result.dates), total)

    # One writer thread stores a date while the next one is scored, because most of
    # a write is file I/O. At most one write is pending, and its error is raised
    # before the next date is handed over.
    with ThreadPoolExecutor(max_workers=1) as writer:
        for group_project, group_dates in groups:
            group_engine = engine if group_project is project else None
            pending: tuple[ScoringRun, Future[Path]] | None = None
            for run in _score_dates(group_project, group_dates, group_engine):
                if pending is not None:
                    pending[1].result()
                    stored(pending[0])
                pending = (run, writer.submit(store_run, run))
            if pending is not None:
                pending[1].result()
                stored(pending[0])
    result.dates.sort()
    result.seconds = time.perf_counter() - started
    logger.info("backfilled %d dates in %.2f s", len(result.dates), result.seconds)
    return result


def _replay_groups(
    project: Project, dates: list[date]
) -> tuple[list[tuple[Project, list[date]]], list[date]]:
    """Stored dates grouped by the configuration kept with them, and the others."""
    store = snapshot_store(project)
    stored = set(store.dates())
    groups: dict[str, tuple[Project, list[date]]] = {}
    skipped = []
    for as_of in dates:
        if as_of not in stored:
            skipped.append(as_of)
            continue
        replayed = replay_project(project, as_of)
        key = replayed.config.model_dump_json()
        groups.setdefault(key, (replayed, []))[1].append(as_of)
    return list(groups.values()), skipped


def _score_dates(
    project: Project, dates: list[date], engine: Engine | None
) -> Iterator[ScoringRun]:
    if not dates:
        return
    if engine is None:
        engine = open_engine(project)
    versions = scorecard_versions(project)
    points = [as_of_point(project, as_of) for as_of in dates]
    started = time.perf_counter()
    reports = sweep_source_reports(engine.sources, points)
    logger.info(
        "counted used and excluded rows for %d dates in %.2f s",
        len(dates),
        time.perf_counter() - started,
    )
    swept = sweep_metrics(project, engine.sources, dates)
    # One connection to the operational store serves every date's overrides.
    with StateStore.open(project.config.store.state, project.root) as state:
        for metrics, report in zip(swept, reports, strict=True):
            as_of = metrics.as_of
            mark = time.perf_counter()
            overrides = state.active_overrides(as_of)
            result = score_accounts(
                project.config,
                metrics.values,
                metrics.accounts,
                overrides,
                as_of,
                versions,
            )
            seconds = {"scoring": time.perf_counter() - mark}
            yield ScoringRun(project, as_of, metrics, result, report, versions, seconds)
