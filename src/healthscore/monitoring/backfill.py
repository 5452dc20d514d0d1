"""Backfill: score and store every as-of date of a range from one sweep of the data.

`sweep_metrics` gives the same metric tables as `compute_metrics` called once per
date, but reads each source once for all dates (see `backfill_rows` and
`backfill_sweep`). `backfill` scores batches of dates with one `score_dates` call
each, builds their snapshot tables at once (see `backfill_tables`) and stores them
with `SnapshotStore.write_many`. Every stored date equals what `pipeline.score`
stores for it alone: the snapshot with its `shadow_scores` table, and the date's
rows of `store.snapshot_table`. A backfill checks no alert rules and opens no
playbook tasks, so it sends no alerts about past dates. On Spark, which cannot run
the sweep's SQL, each date is scored with `pipeline.score` instead.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import date, datetime
from typing import Any

import pyarrow as pa

from healthscore.config import Project
from healthscore.config.models import (
    Duration,
)
from healthscore.engine import Engine
from healthscore.metrics import MetricTable
from healthscore.metrics.windows import shift
from healthscore.monitoring.backfill_rows import DatedMetrics, MetricSweep
from healthscore.monitoring.backfill_sweep import sweep_source_reports
from healthscore.monitoring.backfill_tables import snapshot_tables
from healthscore.monitoring.history import record_config, replay_project
from healthscore.pipeline import (
    open_engine,
    run_info,
    score,
    scorecard_versions,
    shadow_scores,
    snapshot_store,
)
from healthscore.scoring.scorecard import score_dates
from healthscore.sources import SourceSet
from healthscore.store.snapshot_tables import SnapshotTableWriter
from healthscore.store.snapshots import SnapshotStore
from healthscore.store.state import StateStore

__all__ = ["BackfillResult", "backfill", "backfill_dates", "sweep_metrics"]

logger = logging.getLogger(__name__)

#: Called after each stored date with (dates done, dates in all).
DateProgress = Callable[[int, int], None]

#: Accounts times dates scored together. Each batch keeps its score, measure and
#: metric tables in memory (an estimate: about 1 KB per account and date with 5
#: measures and 7 metrics), so this bounds memory while keeping the per-batch
#: cost small.
ROWS_PER_BATCH = 500_000


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
    sweep = MetricSweep(project, sources, dates, progress)
    for first, stop in _batches(sweep):
        dated = sweep.rows(first, stop)
        for index in range(len(dated.dates)):
            yield dated.table(index)


def _batches(sweep: MetricSweep) -> Iterator[tuple[int, int]]:
    """Runs of dates of about ROWS_PER_BATCH accounts times dates, at least one."""
    first = 0
    rows = 0
    for index in range(len(sweep.dates)):
        size = sweep.accounts_at(index)
        if index > first and rows + size > ROWS_PER_BATCH:
            yield first, index
            first, rows = index, 0
        rows += size
    if first < len(sweep.dates):
        yield first, len(sweep.dates)


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
    SnapshotTableError
        When `store.snapshot_table` cannot be written. The Parquet snapshots of the
        batch being written are stored then, and the table keeps its earlier rows
        of that batch's dates. Later dates are not scored.
    """
    spark = (
        engine.con.name == "pyspark"
        if engine
        else project.config.engine.kind == "spark"
    )
    started = time.perf_counter()
    dates = sorted(set(dates))
    result = BackfillResult(dates=[])
    groups: list[tuple[Project, list[date]]] = [(project, dates)]
    if replay:
        groups, result.skipped = _replay_groups(project, dates)
    total = sum(len(group) for _, group in groups)

    def stored(as_of: date, accounts: int) -> None:
        result.dates.append(as_of)
        result.accounts[as_of] = accounts
        if progress:
            progress(len(result.dates), total)

    settings = project.config.store.snapshot_table
    # Created before scoring, so that an unresolved connection URL stops the
    # backfill before anything is stored. Replayed projects keep this store. On
    # Spark, `pipeline.score` checks and writes the table for each date itself.
    table_writer = (
        SnapshotTableWriter(project, settings)
        if settings is not None and not spark
        else None
    )
    try:
        for group_project, group_dates in groups:
            group_engine = engine if group_project is project else None
            if spark:
                _score_each_date(group_project, group_dates, group_engine, stored)
                continue
            _backfill_group(
                group_project, group_dates, group_engine, stored, table_writer
            )
    finally:
        if table_writer is not None:
            table_writer.close()
    result.dates.sort()
    result.seconds = time.perf_counter() - started
    logger.info("backfilled %d dates in %.2f s", len(result.dates), result.seconds)
    return result


def _backfill_group(
    project: Project,
    dates: list[date],
    engine: Engine | None,
    stored: Callable[[date, int], None],
    table_writer: SnapshotTableWriter | None,
) -> None:
    """Score and store `dates` under one configuration, batch by batch.

    One writer thread stores a batch while the next one is scored, because most of
    a write is Parquet encoding and file I/O. At most one batch is pending, and its
    error is raised before the next batch is handed over.
    """
    if not dates:
        return
    if engine is None:
        engine = open_engine(project)
    versions = scorecard_versions(project)
    started = time.perf_counter()
    sweep = MetricSweep(project, engine.sources, dates)
    reports = sweep_source_reports(engine.sources, sweep.points)
    logger.info(
        "swept metrics and source reports of %d dates in %.2f s",
        len(sweep.dates),
        time.perf_counter() - started,
    )
    store = snapshot_store(project)
    # Kept first, so that every stored date can be replayed even if a batch fails.
    record_config(project)
    with (
        StateStore.open(project.config.store.state, project.root) as state,
        ThreadPoolExecutor(max_workers=1) as writer,
    ):
        pending: tuple[list[tuple[date, int]], Future[None]] | None = None
        for first, stop in _batches(sweep):
            mark = time.perf_counter()
            dated = sweep.rows(first, stop)
            overrides = [state.active_overrides(as_of) for as_of in dated.dates]
            scored = score_dates(
                project.config,
                dated.values.set_axis(dated.account_ids),
                dated.accounts,
                dated.codes,
                dated.dates,
                overrides,
                versions,
            )
            tables = snapshot_tables(dated, scored)
            _add_shadow_scores(project, dated, tables)
            # Shared by the batch's dates, so each run.json gets the batch's time.
            seconds = {"backfill_batch": time.perf_counter() - mark}
            snapshots = []
            counts = []
            for index, as_of in enumerate(dated.dates):
                accounts = int(dated.offsets[index + 1] - dated.offsets[index])
                info = run_info(
                    project,
                    dated.points[index],
                    versions,
                    accounts,
                    reports[first + index],
                    seconds,
                )
                snapshots.append((as_of, tables[index], info))
                counts.append((as_of, accounts))
            if pending is not None:
                _finish(pending, stored)
            pending = (
                counts,
                writer.submit(_store_batch, store, snapshots, table_writer),
            )
        if pending is not None:
            _finish(pending, stored)


def _score_each_date(
    project: Project,
    dates: list[date],
    engine: Engine | None,
    stored: Callable[[date, int], None],
) -> None:
    """Score and store each date with `pipeline.score`, without alert rules.

    The sweep reads every date in one pass of DuckDB SQL, which Spark does not run.
    On Spark each date therefore costs about one scoring run.
    """
    if not dates:
        return
    if engine is None:
        engine = open_engine(project)
    for as_of in dates:
        run = score(project, as_of, engine=engine, monitor=False)
        stored(as_of, len(run.result.scores))


def _add_shadow_scores(
    project: Project, dated: DatedMetrics, tables: list[dict[str, pa.Table]]
) -> None:
    """Add the `shadow_scores` table of each date, as `pipeline.score` computes it."""
    if not project.config.validation.shadow:
        return
    for index, as_of in enumerate(dated.dates):
        shadow = shadow_scores(project, dated.table(index), as_of)
        if shadow is not None:
            # SnapshotStore converts a DataFrame this way too.
            tables[index]["shadow_scores"] = pa.Table.from_pandas(shadow)


def _store_batch(
    store: SnapshotStore,
    snapshots: list[tuple[date, dict[str, pa.Table], dict[str, Any]]],
    table_writer: SnapshotTableWriter | None,
) -> None:
    """Store the batch's snapshots, then replace its dates' rows of the table.

    The rows of all the batch's dates go in one transaction. A date is then never
    half written, and a backfill commits once per batch instead of once per date.
    The batch size (ROWS_PER_BATCH) bounds the rows of one transaction.
    """
    store.write_many(snapshots)
    if table_writer is not None:
        table_writer.write(
            [(as_of, tables["scores"]) for as_of, tables, _ in snapshots]
        )


def _finish(
    pending: tuple[list[tuple[date, int]], Future[None]],
    stored: Callable[[date, int], None],
) -> None:
    counts, future = pending
    future.result()
    for as_of, accounts in counts:
        stored(as_of, accounts)


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
