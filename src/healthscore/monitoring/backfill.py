"""Backfill: score and store every as-of date of a range from one sweep of the data.

`sweep_metrics` gives the same metric tables as `compute_metrics` called once per
date, but reads each source once for all dates (see `backfill_rows` and
`backfill_sweep`). `backfill` scores batches of dates with one `score_dates` call
each, builds their snapshot tables at once (see `backfill_tables`) and stores them
with `SnapshotStore.write_many`. Every stored date equals what `pipeline.score`
stores for it alone: the snapshot with its `shadow_scores` table, and the date's
rows of `store.snapshot_table`. A backfill checks no alert rules and opens no
playbook tasks, so it sends no alerts about past dates. On Spark, which cannot run
the sweep's SQL, each date is scored with `pipeline.score` instead, and stored as a
batch of one date.

The table's rows always go under the project key in force now
(`snapshot_tables.project_key` of the current project), replays included. When the
table write of a batch fails, the backfill stops with a BackfillTableError that
names the dates whose rows the table lacks.

Each batch's dates are marked in the snapshot store before its snapshots are stored,
and the marks are cleared once the table has their rows. A backfill first writes the
rows of dates that an earlier run left marked, because it was killed or its table
write failed, from their stored snapshots (`SnapshotTableWriter.write_pending`).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import date, datetime
from typing import Any

import pandas as pd
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
    check_unusable_sources,
    empty_sources,
    open_engine,
    run_info,
    score,
    scorecard_versions,
    shadow_scores,
    snapshot_store,
)
from healthscore.scoring.scorecard import score_dates
from healthscore.sources import SourceReport, SourceSet
from healthscore.store.snapshot_tables import (
    PendingWrite,
    SnapshotTableError,
    SnapshotTableWriter,
)
from healthscore.store.snapshots import SnapshotStore
from healthscore.store.state import StateStore

__all__ = [
    "BackfillResult",
    "BackfillTableError",
    "backfill",
    "backfill_dates",
    "sweep_metrics",
]

logger = logging.getLogger(__name__)

#: Called after each stored date with (dates done, dates in all).
DateProgress = Callable[[int, int], None]

#: One date's snapshot to store: (as-of date, tables by name, run.json content).
_Snapshot = tuple[date, Mapping[str, pa.Table | pd.DataFrame], dict[str, Any]]

#: A batch handed to the writer thread: its (date, accounts) counts and its write.
_Pending = tuple[list[tuple[date, int]], Future[None]]

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
    """Runs of dates of at most ROWS_PER_BATCH accounts times dates, or one date."""
    sizes = [sweep.accounts_at(index) for index in range(len(sweep.dates))]
    yield from _even_runs(sizes, ROWS_PER_BATCH)


def _even_runs(sizes: list[int], limit: int) -> list[tuple[int, int]]:
    """Split dates with `sizes` rows into runs of at most `limit` rows, or one date.

    The runs are as few as when each is filled up to the limit, but as even as
    possible. Filling each run could leave a last run of one or two dates after a
    full one, and the write of that full run would then overlap no scoring.
    Returns the (first, stop) positions of each run.
    """
    count = len(_runs(sizes, limit))
    # Bisection finds the smallest limit that needs no more runs, because the
    # number of runs can only fall as the limit rises.
    low, high = -(-sum(sizes) // max(count, 1)), limit
    while low < high:
        middle = (low + high) // 2
        if len(_runs(sizes, middle)) <= count:
            high = middle
        else:
            low = middle + 1
    return _runs(sizes, min(low, limit))


def _runs(sizes: list[int], limit: int) -> list[tuple[int, int]]:
    """Fill runs of dates in order up to `limit` rows. A date alone may exceed it."""
    runs = []
    first = 0
    rows = 0
    for index, size in enumerate(sizes):
        if index > first and rows + size > limit:
            runs.append((first, index))
            first, rows = index, 0
        rows += size
    if first < len(sizes):
        runs.append((first, len(sizes)))
    return runs


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
    pending: PendingWrite | None = None
    """Rows written, before scoring, for dates outside this backfill that an
    earlier run stored without writing their rows into `store.snapshot_table`.
    None without that table."""


class BackfillTableError(SnapshotTableError):
    """A backfill stopped because the rows of a batch of dates could not be written
    into `store.snapshot_table`.

    The batch's rows are written in one transaction, so the table keeps its earlier
    rows of every date of the batch. The attributes list the dates of the backfill,
    oldest first, by what was stored.
    """

    def __init__(
        self,
        message: str,
        *,
        stored: list[date],
        unwritten: list[date],
        files_only: list[date],
    ) -> None:
        super().__init__(message)
        self.stored = stored
        """Dates whose Parquet snapshot and table rows are both written."""
        self.unwritten = unwritten
        """Dates whose new rows are not in the table: the failed batch and every
        date not scored yet."""
        self.files_only = files_only
        """Dates of `unwritten` whose new Parquet snapshot is stored: the failed
        batch. The other dates of `unwritten` were not scored."""


class _UnwrittenBatch(Exception):
    """The table write of a batch whose Parquet snapshots are stored failed."""

    def __init__(self, dates: list[date], error: SnapshotTableError) -> None:
        super().__init__(str(error))
        self.dates = dates
        self.error = error
        self.later_error: Exception | None = None


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
        When `store.snapshot_table` cannot be reached before scoring; nothing is
        stored then.
    BackfillTableError
        When the table write of a batch fails, for example on a constraint or a
        lost connection. The Parquet snapshots of that batch are stored, the
        table keeps its earlier rows of the batch's dates, and later dates are
        not scored. The error names those dates; backfill them again. The
        batch's dates stay marked, so the next backfill writes their rows from
        the stored snapshots even when its range leaves them out.
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

    scheduled = [as_of for _, group in groups for as_of in group]
    table_writer = _open_table_writer(project)
    try:
        if table_writer is not None:
            # The dates of this backfill are written with their new scores.
            result.pending = table_writer.write_pending(
                snapshot_store(project), skip=set(scheduled)
            )
        for group_project, group_dates in groups:
            group_engine = engine if group_project is project else None
            if spark:
                _score_each_date(
                    group_project, group_dates, group_engine, stored, table_writer
                )
                continue
            _backfill_group(
                group_project, group_dates, group_engine, stored, table_writer
            )
    except _UnwrittenBatch as failure:
        raise _table_error(failure, result.dates, scheduled) from None
    finally:
        if table_writer is not None:
            table_writer.close()
    result.dates.sort()
    result.seconds = time.perf_counter() - started
    logger.info("backfilled %d dates in %.2f s", len(result.dates), result.seconds)
    return result


def _open_table_writer(project: Project) -> SnapshotTableWriter | None:
    """Connect to `store.snapshot_table` and check the table, or return None.

    Called before scoring, so that an unresolved URL, an unreachable server or a
    table that cannot be created stops the backfill before anything is stored.
    The writer takes the key of the current project, so replayed dates, whose
    kept configuration may carry an older `name`, are written under it too.
    """
    settings = project.config.store.snapshot_table
    if settings is None:
        return None
    writer = SnapshotTableWriter(project, settings)
    try:
        writer.connect()
    except SnapshotTableError as exc:
        raise SnapshotTableError(f"{exc}. The backfill stored nothing") from None
    return writer


def _table_error(
    failure: _UnwrittenBatch, stored: list[date], scheduled: list[date]
) -> BackfillTableError:
    """Describe what a backfill stopped by a failed batch left in each store.

    `stored` are the dates written to both stores, `scheduled` every date the
    backfill was to score.
    """
    done = set(stored)
    unwritten = sorted(as_of for as_of in scheduled if as_of not in done)
    files_only = sorted(failure.dates)
    not_scored = [as_of for as_of in unwritten if as_of not in set(files_only)]
    files = f"The Parquet {_snapshots_text(files_only)} stored"
    if not_scored:
        verb = "was" if len(not_scored) == 1 else "were"
        files += f", and {_dates_text(not_scored)} {verb} not scored"
    parts = [
        f"{failure.error}.",
        "The backfill stopped, so the table lacks the new rows of "
        f"{_dates_text(unwritten)}.",
        f"{files}.",
    ]
    if stored:
        parts.append(
            f"Both the files and the table have {_dates_text(sorted(stored))}."
        )
    if failure.later_error is not None:
        parts.append(
            "Scoring the next batch failed too: "
            f"{type(failure.later_error).__name__}: {failure.later_error}."
        )
    parts.append(
        f"Backfill {_dates_text(unwritten)} again once the table can be written."
    )
    return BackfillTableError(
        " ".join(parts),
        stored=sorted(stored),
        unwritten=unwritten,
        files_only=files_only,
    )


def _dates_text(dates: list[date]) -> str:
    """Name sorted dates in a message: one date, or the count and range."""
    if len(dates) == 1:
        return dates[0].isoformat()
    return f"{len(dates)} dates from {dates[0]} to {dates[-1]}"


def _snapshots_text(dates: list[date]) -> str:
    if len(dates) == 1:
        return f"snapshot of {dates[0]} is"
    return f"snapshots of {_dates_text(dates)} are"


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
    error is raised before the next batch is handed over. When scoring fails, the
    pending batch is still waited for, so its dates are reported as stored, or its
    write error is raised in place of the scoring error.
    """
    if not dates:
        return
    if engine is None:
        engine = open_engine(project)
    versions = scorecard_versions(project)
    started = time.perf_counter()
    sweep = MetricSweep(project, engine.sources, dates)
    reports = sweep_source_reports(engine.sources, sweep.points)
    # As `healthscore score`, nothing is stored when every row of a source fails a
    # check of its own. Later rows pass it, so the latest date's reports decide.
    if not empty_sources(project, reports[-1]):
        check_unusable_sources(project, sweep.dates[-1], reports[-1], override=None)
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
        pending: _Pending | None = None
        try:
            for first, stop in _batches(sweep):
                snapshots, counts = _score_batch(
                    project, sweep, reports, versions, state, first, stop
                )
                if pending is not None:
                    done, pending = pending, None
                    _finish(done, stored)
                pending = (
                    counts,
                    writer.submit(_store_batch, store, snapshots, table_writer),
                )
        except Exception as error:
            # The batch being written still decides which dates are stored, and
            # its write error, if any, is the earlier failure.
            if pending is not None:
                _finish(pending, stored, later_error=error)
            raise
        if pending is not None:
            _finish(pending, stored)


def _score_batch(
    project: Project,
    sweep: MetricSweep,
    reports: list[list[SourceReport]],
    versions: dict[str, str],
    state: StateStore,
    first: int,
    stop: int,
) -> tuple[list[_Snapshot], list[tuple[date, int]]]:
    """Score the dates sweep.dates[first:stop]; return their snapshots and
    (date, accounts) counts."""
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
    snapshots: list[_Snapshot] = []
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
    return snapshots, counts


def _score_each_date(
    project: Project,
    dates: list[date],
    engine: Engine | None,
    stored: Callable[[date, int], None],
    table_writer: SnapshotTableWriter | None,
) -> None:
    """Score each date with `pipeline.score`, without alert rules, and store it as
    a batch of one date.

    The sweep reads every date in one pass of DuckDB SQL, which Spark does not run.
    On Spark each date therefore costs about one scoring run. The snapshot and the
    table rows are stored as on DuckDB, with the backfill's table writer.
    """
    if not dates:
        return
    if engine is None:
        engine = open_engine(project)
    store = snapshot_store(project)
    record_config(project)
    for as_of in dates:
        run = score(project, as_of, engine=engine, store=False)
        _store_batch(store, [(as_of, run.tables(), run.run_info())], table_writer)
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
    snapshots: list[_Snapshot],
    table_writer: SnapshotTableWriter | None,
) -> None:
    """Store the batch's snapshots, then replace its dates' rows of the table.

    The rows of all the batch's dates go in one transaction. A date is then never
    half written, and a backfill commits once per batch instead of once per date.
    The batch size (ROWS_PER_BATCH) bounds the rows of one transaction. The dates
    are marked pending in `store` until the table has their rows, so a run killed
    in between leaves them for the next run. Raises _UnwrittenBatch when the table
    write fails; the snapshots are stored and stay marked then.
    """
    if table_writer is None:
        store.write_many(snapshots)
        return
    dates = [as_of for as_of, _, _ in snapshots]
    store.mark_table_pending(dates)
    store.write_many(snapshots)
    try:
        table_writer.write(
            [(as_of, tables["scores"]) for as_of, tables, _ in snapshots]
        )
    except SnapshotTableError as exc:
        raise _UnwrittenBatch(dates, exc) from None
    store.clear_table_pending(dates)


def _finish(
    pending: _Pending,
    stored: Callable[[date, int], None],
    later_error: Exception | None = None,
) -> None:
    """Wait for a batch's write and report its dates as stored.

    `later_error` is an error of a later batch, raised while this one was being
    written. A write error of this batch carries it, so the message names both.
    """
    counts, future = pending
    try:
        future.result()
    except _UnwrittenBatch as failure:
        failure.later_error = later_error
        raise
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
