"""Today's scores in the service, rescored account by account as events arrive.

A `LiveScorer` keeps the metric values of today's whole population in memory. The
first batch of a day runs a full scoring run. A later batch computes the metrics of
its own accounts only, because every source scan is filtered to `account_id IN
(batch)`. It puts those values in place of the accounts' earlier ones and scores the
population again from the values held, then replaces today's snapshot and, with
`store.snapshot_table`, today's rows of that table.

Normalizations that need population statistics (percentile, zscore) therefore
compare an account with the values of the last full run, updated with the values of
every account rescored since. A rescored account gets exactly the score that a full
run would give it when no account outside the batch changed its metric values since
they were last computed. The scores can differ from a full run when:

- rows of an account reach the event store without its id being queued, such as
  rows written by `healthscore ingest` while the service runs. Its held values stay
  as they were until it is rescored or a full run happens;
- the population changes without events, such as an account whose subscription
  starts or ends later today;
- the notes in the operational store (the `csm_notes` source) change.

A full run happens again when the day changes, when a file of a source other than
the event store changes, when another process replaced today's snapshot, and at
least every `full_interval` seconds. It brings the held values and today's snapshot
back to what a full run gives. The source report in today's `run.json` is that of
the last full run.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import multiprocessing
import os
import pickle
import signal
import time
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, date, datetime
from multiprocessing.connection import Connection
from pathlib import Path
from zoneinfo import ZoneInfo

import ibis
import pandas as pd
from ibis.backends.duckdb import Backend as DuckDBBackend

from healthscore.config import Project
from healthscore.config.retention import is_store_source
from healthscore.engine import Engine
from healthscore.metrics import MetricTable, compute_metrics
from healthscore.pipeline import (
    Monitoring,
    ScoringRun,
    active_overrides,
    check_empty_replacement,
    check_unusable_sources,
    empty_sources,
    open_engine,
    run_monitoring,
    scorecard_versions,
    shadow_scores,
    snapshot_store,
)
from healthscore.runtime import configure_process
from healthscore.scoring import score_accounts
from healthscore.service.logs import add_plain_handler, logger_levels, set_logger_levels
from healthscore.sources import SourceReport, SourceSet, as_of_point
from healthscore.sources.reader import SourceError, resolve_files
from healthscore.sources.stored import (
    read_rollup_source,
    read_store_source,
    rollups_used,
)
from healthscore.store import StateStore
from healthscore.store.snapshot_tables import SnapshotTableError, write_run
from healthscore.store.snapshots import RUN_FILE, SnapshotStore

logger = logging.getLogger(__name__)

#: Seconds after which a batch runs a full scoring run again.
FULL_INTERVAL_SECONDS = 600.0
#: Seconds without writes to `store.snapshot_table` after a failed write. A server
#: that does not respond would otherwise hold every batch for its connect timeout.
SNAPSHOT_TABLE_RETRY_SECONDS = 60.0

_SUBSET_TABLE = "_rescored_accounts"


@dataclass
class RescoreResult:
    """Accounts rescored by one batch and what the monitoring step raised."""

    as_of: date
    accounts: list[str]
    population: int
    seconds: float
    monitoring: Monitoring | None
    full: bool = False
    """Whether the batch ran a full scoring run of the population."""
    snapshot_table_error: str | None = None
    """The error of a failed write to `store.snapshot_table`, or None when the batch
    wrote the rows, skipped them during the pause after a failure, or no table is
    configured."""


def live_project(project: Project) -> Project:
    """Return `project` with the as-of point at the end of the day."""
    config = project.config.model_copy(update={"as_of_point": "end_of_day"})
    return dataclasses.replace(project, config=config)


def today(project: Project) -> date:
    """Return today's date in the project's time zone."""
    return datetime.now(ZoneInfo(project.config.timezone)).date()


class AccountSubset(SourceSet):
    """The sources of a DuckDB engine, with every row filtered to some accounts.

    Metrics read rows only through `rows`, so the filter reaches every scan. The
    population is then the listed accounts that the full population would contain.
    The ids go into the temporary table `_rescored_accounts`, and DuckDB joins each
    scan with it (a semi join) before any aggregate. A literal `IN` list would also
    reach the Parquet scans as a min/max filter. It is not used because Ibis took
    about 100 ms to compile one of 50 ids, and because the parts of the event store
    are not sorted by account, so that filter would skip little.
    """

    def __init__(self, sources: SourceSet, accounts: Iterable[str]) -> None:
        super().__init__(
            sources.project, sources.con, sources.loaded, sources.text_scorer
        )
        self.account_ids = sorted(set(accounts))
        raw = self.con.con
        raw.execute(
            f"CREATE OR REPLACE TEMP TABLE {_SUBSET_TABLE} AS "
            "SELECT unnest(CAST(? AS VARCHAR[])) AS account_id",
            [self.account_ids],
        )
        self._subset = self.con.table(_SUBSET_TABLE)

    def rows(
        self, name: str, point: datetime | None = None, *, ordered: bool = False
    ) -> ibis.Table:
        """Usable rows of the source as seen at `point`, of the listed accounts only."""
        table = super().rows(name, point, ordered=ordered)
        if "account_id" not in table.columns:
            return table
        return table.filter(table.account_id.isin(self._subset.account_id))


@dataclass
class _Population:
    """Metric values of today's whole population, as the last batch left them."""

    as_of: date
    values: pd.DataFrame
    accounts: pd.DataFrame
    reports: list[SourceReport]
    full_run_at: datetime
    full_run_started: float
    """`time.monotonic()` at the start of the last full run."""
    source_stamps: tuple[object, ...]
    snapshot_stamp: int | None = None
    """Modification time (ns) of the run.json that the last batch wrote."""


class LiveScorer:
    """Rescoring of today's scores for batches of accounts; see the module docstring.

    Not thread-safe: one worker thread calls `rescore`.

    Parameters
    ----------
    project : Project
        The project served; it is scored with the as-of point at the end of the day.
    full_interval : float
        Seconds after a full run when a batch runs a full run again.
    threads : int
        DuckDB threads of the scoring engine, which bounds the cores a batch uses.
    """

    def __init__(
        self,
        project: Project,
        *,
        full_interval: float = FULL_INTERVAL_SECONDS,
        threads: int = 1,
    ) -> None:
        self.project = live_project(project)
        self.full_interval = full_interval
        self.threads = threads
        self._engine: Engine | None = None
        self._population: _Population | None = None
        self._state: StateStore | None = None
        # time.monotonic() until which writes to the snapshot table pause.
        self._table_paused_until = 0.0
        # The day whose empty population was logged as a warning.
        self._empty_warned_on: date | None = None

    def close(self) -> None:
        """Close the engine and the operational store; the next batch is a full run."""
        if self._engine is not None:
            self._engine.con.disconnect()
        if self._state is not None:
            self._state.close()
        self._engine = None
        self._state = None
        self._population = None

    def _state_store(self) -> StateStore:
        # Opening the store runs its migrations, which takes longer than a batch's
        # queries, so the scorer keeps it open.
        if self._state is None:
            config = self.project.config.store.state
            self._state = StateStore.open(config, self.project.root)
        return self._state

    def rescore(
        self, accounts: Iterable[str], as_of: date | None = None
    ) -> RescoreResult:
        """Rescore `accounts` as of `as_of` (default today) and store the snapshot.

        The snapshot and the rows of `store.snapshot_table` are stored as
        `pipeline.score` stores them, and then alert rules and playbooks run for
        `accounts` only. Accounts that are not in the population (no active
        subscription, for example) get no score and raise nothing. A failed write
        of the snapshot table raises nothing, because the Parquet snapshot is
        stored already. The result's `snapshot_table_error` contains the error.
        """
        started = time.perf_counter()
        day = as_of or today(self.project)
        wanted = sorted({str(account) for account in accounts})
        reason = self._full_run_reason(day)
        if reason is not None:
            logger.info("full scoring run as of %s: %s", day, reason)
            metrics = self._full_run(day)
        else:
            metrics = self._partial_run(day, wanted)
        population = self._population
        assert population is not None and self._engine is not None
        versions = scorecard_versions(self.project)
        result = score_accounts(
            self.project.config,
            metrics.values,
            metrics.accounts,
            active_overrides(self.project, day, self._state_store()),
            day,
            versions,
        )
        if result.scores.empty:
            self._warn_empty_population(day, population.reports)
            # Raises ScoringInputError, storing nothing, when a population source
            # has no usable row and the day's stored snapshot has scores.
            check_empty_replacement(self.project, day, population.reports)
        if not empty_sources(self.project, population.reports):
            # As `healthscore score`, store nothing when a source's rows all fail.
            check_unusable_sources(self.project, day, population.reports)
        run = ScoringRun(
            self.project, day, metrics, result, population.reports, versions
        )
        run.shadow = shadow_scores(self.project, metrics, day)
        info = run.run_info()
        info["trigger"] = "ingest"
        info["rescored_accounts"] = len(wanted)
        info["full_run"] = reason is not None
        info["full_run_at"] = population.full_run_at.isoformat(timespec="seconds")
        store = snapshot_store(self.project)
        if self.project.config.store.snapshot_table is not None:
            # As in `pipeline.score`: a batch stopped before the table has the
            # day's rows leaves the mark, and the next writer writes the day.
            store.mark_table_pending([day])
        run.snapshot = store.write(day, run.tables(), info)
        population.snapshot_stamp = _run_stamp(run.snapshot)
        table_error = self._write_snapshot_table(store, day, result.scores)
        subset = dataclasses.replace(
            result,
            scores=_rows_of(result.scores, wanted),
            components=_rows_of(result.components, wanted),
            measures=_rows_of(result.measures, wanted),
        )
        # Alert rules and playbooks see the batch's accounts only: a rule that reads
        # the metrics would otherwise match accounts without scores in `subset`.
        batch_metrics = dataclasses.replace(
            metrics,
            values=_rows_indexed(metrics.values, wanted),
            accounts=_rows_indexed(metrics.accounts, wanted),
        )
        affected = dataclasses.replace(run, metrics=batch_metrics, result=subset)
        # The guard compares the whole population with the previous date, so that
        # a small batch whose accounts all changed band is not held for that.
        monitoring = run_monitoring(
            self.project,
            affected,
            self._engine,
            self._state_store(),
            population=result.scores,
        )
        return RescoreResult(
            as_of=day,
            accounts=sorted(set(subset.scores["account_id"].astype(str))),
            population=len(result.scores),
            seconds=time.perf_counter() - started,
            monitoring=monitoring,
            full=reason is not None,
            snapshot_table_error=table_error,
        )

    def _warn_empty_population(self, day: date, reports: list[SourceReport]) -> None:
        """Log why no account was scored as `healthscore score` prints it, once a day.

        The snapshot is stored empty all the same, as `healthscore score` stores it.
        """
        if self._empty_warned_on == day:
            logger.debug("no account in the population as of %s", day)
            return
        self._empty_warned_on = day
        # Imported here, so that the service loads the command line's modules only
        # for this message.
        from healthscore.cli.scoring import empty_population_warning

        usable = sum(
            report.rows_used for report in reports if report.kind == "accounts"
        )
        text = empty_population_warning(self.project, day, usable)
        logger.warning("%s", text.removeprefix("warning: "))

    def _write_snapshot_table(
        self, store: SnapshotStore, day: date, scores: pd.DataFrame
    ) -> str | None:
        """Replace the day's rows of `store.snapshot_table`; return the error if any.

        The day's mark in `store` is cleared once the rows are written, and the
        dates that earlier runs left marked are written next. After a failure,
        writes pause for SNAPSHOT_TABLE_RETRY_SECONDS and the day stays marked.
        Every batch writes the scores of the whole population, so the first batch
        after the pause brings the day's rows up to date. A day that no batch
        writes again stays marked, and the next `healthscore score` or
        `healthscore backfill` writes it from its snapshot once this process has
        stopped (a later batch of this process writes it too).
        """
        settings = self.project.config.store.snapshot_table
        if settings is None:
            return None
        if time.monotonic() < self._table_paused_until:
            logger.debug(
                "skipped the snapshot table of %s: writes pause after a failure", day
            )
            return None
        try:
            write_run(self.project, settings, store, day, scores)
        except SnapshotTableError as exc:
            self._table_paused_until = time.monotonic() + SNAPSHOT_TABLE_RETRY_SECONDS
            return str(exc)
        self._table_paused_until = 0.0
        return None

    def _full_run_reason(self, day: date) -> str | None:
        """Return why the next batch needs a full run, or None when it does not."""
        population = self._population
        if population is None or self._engine is None:
            return "no population held yet"
        if population.as_of != day:
            return f"the day changed from {population.as_of}"
        if not _filterable(self._engine):
            return "only DuckDB engines rescore a batch's accounts alone"
        if time.monotonic() - population.full_run_started >= self.full_interval:
            return f"the last full run is over {self.full_interval:.0f} s old"
        stored = snapshot_store(self.project).partition_path(day)
        if _run_stamp(stored) != population.snapshot_stamp:
            return "today's snapshot was replaced by another run"
        if _source_stamps(self.project) != population.source_stamps:
            return "a source file changed"
        return None

    def _full_run(self, day: date) -> MetricTable:
        self.close()
        stamps = _source_stamps(self.project)
        started = time.monotonic()
        engine = open_engine(self.project)
        if isinstance(engine.con, DuckDBBackend):
            engine.con.con.execute(f"SET threads = {int(self.threads)}")
        self._engine = engine
        point = as_of_point(self.project, day)
        with engine.sources.row_summaries(point):
            metrics = compute_metrics(self.project, engine.sources, day)
            reports = engine.sources.report(point)
        self._population = _Population(
            as_of=day,
            values=metrics.values,
            accounts=metrics.accounts,
            reports=reports,
            full_run_at=datetime.now(UTC),
            full_run_started=started,
            source_stamps=stamps,
        )
        return metrics

    def _partial_run(self, day: date, wanted: list[str]) -> MetricTable:
        assert self._engine is not None and self._population is not None
        self._refresh_store_sources(self._engine)
        subset = AccountSubset(self._engine.sources, wanted)
        partial = compute_metrics(self.project, subset, day)
        population = self._population
        population.values = _replace_rows(population.values, partial.values, wanted)
        population.accounts = _replace_rows(
            population.accounts, partial.accounts, wanted
        )
        return MetricTable(
            as_of=day,
            point=partial.point,
            values=population.values,
            accounts=population.accounts,
        )

    def _refresh_store_sources(self, engine: Engine) -> None:
        """Point the views of the event store's sources at the files stored now.

        The views of usable rows (`valid_<name>`) name these views, so they read the
        new files without being created again.
        """
        raw = engine.con.con
        loaded = engine.sources.loaded
        for name, settings in self.project.config.sources.items():
            if is_store_source(settings):
                loaded[name] = read_store_source(raw, self.project, name, settings)
        for name in rollups_used(self.project):
            loaded[name] = read_rollup_source(raw, self.project, name)


def _filterable(engine: Engine) -> bool:
    """Return whether `AccountSubset` can filter the engine's sources (DuckDB only)."""
    return isinstance(engine.con, DuckDBBackend) and type(engine.sources) is SourceSet


def _replace_rows(
    held: pd.DataFrame, fresh: pd.DataFrame, wanted: list[str]
) -> pd.DataFrame:
    """Return `held` with the rows of `wanted` replaced by those of `fresh`.

    An account of `wanted` missing from `fresh` has left the population, so its
    row goes. Rows are sorted by account id, as a full run sorts them, and columns
    keep the types of `held` where the new values allow it.
    """
    kept = held[~held.index.astype(str).isin(wanted)]
    combined = pd.concat([kept, fresh]) if len(fresh) else kept
    combined = combined.sort_index(kind="stable")
    combined.index.name = held.index.name
    for column in held.columns:
        if column in combined.columns and combined[column].dtype != held[column].dtype:
            with contextlib.suppress(ValueError, TypeError):
                combined[column] = combined[column].astype(held[column].dtype)
    return combined


def _rows_of(frame: pd.DataFrame, wanted: list[str]) -> pd.DataFrame:
    return frame[frame["account_id"].astype(str).isin(wanted)].reset_index(drop=True)


def _run_stamp(partition: Path) -> int | None:
    try:
        return (partition / RUN_FILE).stat().st_mtime_ns
    except OSError:
        return None


def _source_stamps(project: Project) -> tuple[object, ...]:
    """Name, modification time and size of every file of the non-store sources."""
    stamps: list[object] = []
    for name, settings in project.config.sources.items():
        if settings.table is not None or is_store_source(settings):
            continue
        try:
            files = resolve_files(project, name, settings)
        except SourceError:
            stamps.append((name, None))
            continue
        for file in files:
            try:
                stat = os.stat(file)
            except OSError:
                stamps.append((file, None))
                continue
            stamps.append((file, stat.st_mtime_ns, stat.st_size))
    return tuple(stamps)


# A scorer in its own process


class RescoreProcessError(RuntimeError):
    """A batch that failed in the scoring process, or a process that stopped.

    `kind` names the error in the scoring process, such as KeyError, or the way
    the process stopped. The message adds the error's text, which can name
    accounts.
    """

    def __init__(self, message: str, kind: str) -> None:
        super().__init__(message)
        self.kind = kind


class ScorerProcess:
    """A `LiveScorer` in a child process, with the same `rescore` and `close`.

    Scoring is mostly Python and pandas work that holds the GIL, so in the service's
    process it would slow every request down while a batch runs. In a process of
    its own it can run on another core, and its DuckDB engine uses one thread.
    The process starts with `start` or on the first `rescore` (with the `spawn`
    method, so it shares no threads or locks with the service) and keeps the
    population between batches. `close` stops it.
    """

    def __init__(
        self, project: Project, *, full_interval: float = FULL_INTERVAL_SECONDS
    ) -> None:
        self.project = project
        self.full_interval = full_interval
        self._process: multiprocessing.process.BaseProcess | None = None
        self._connection: Connection | None = None

    def rescore(
        self, accounts: Iterable[str], as_of: date | None = None
    ) -> RescoreResult:
        """Rescore `accounts` in the child process; see `LiveScorer.rescore`.

        Raises
        ------
        RescoreProcessError
            When the batch failed (the message names the error) or the process
            stopped. The process is stopped then, and the next batch starts a new
            one, which begins with a full run.
        """
        connection = self._start()
        try:
            connection.send(("rescore", (sorted(set(accounts)), as_of)))
            kind, payload = connection.recv()
        except (EOFError, OSError) as exc:
            self.close()
            raise RescoreProcessError(
                f"the scoring process stopped ({type(exc).__name__}); the next "
                "batch starts a new one",
                f"scoring process stopped ({type(exc).__name__})",
            ) from exc
        if kind == "error":
            self.close()
            error_type, text = payload
            raise RescoreProcessError(f"{error_type}: {text}", error_type)
        result: RescoreResult = payload
        return result

    def close(self, timeout: float = 30.0) -> None:
        """Stop the process after its current batch."""
        process, connection = self._process, self._connection
        self._process = self._connection = None
        if connection is not None:
            with contextlib.suppress(OSError):
                connection.send(("stop", None))
            connection.close()
        if process is not None:
            process.join(timeout)
            if process.is_alive():
                logger.warning("the scoring process did not stop; terminating it")
                process.terminate()
                process.join(5.0)

    def start(self) -> None:
        """Start the process now, so that the first batch does not wait for it."""
        self._start()

    def _start(self) -> Connection:
        if self._process is not None and self._connection is not None:
            if self._process.is_alive():
                return self._connection
            self.close()
        context = multiprocessing.get_context("spawn")
        parent, child = context.Pipe()
        process = context.Process(
            target=_serve_batches,
            args=(self.project, self.full_interval, child, logger_levels()),
            name="healthscore-rescore",
            daemon=True,
        )
        process.start()
        child.close()
        self._process, self._connection = process, parent
        logger.info("started the scoring process (pid %s)", process.pid)
        return parent


def _rows_indexed(frame: pd.DataFrame, accounts: list[str]) -> pd.DataFrame:
    """Return the rows of `frame` (indexed by account id) of `accounts`."""
    return frame[frame.index.astype(str).isin(accounts)]


def _serve_batches(
    project: Project,
    full_interval: float,
    connection: Connection,
    levels: dict[str, int] | None = None,
) -> None:
    """Run the batches that `connection` sends until it sends stop or closes.

    `levels` are the parent's logger levels (`logger_levels`); this process then
    logs in the service's format at those levels.
    """
    # Ctrl-C in a terminal reaches every process of the service. The service stops
    # this process itself after the current batch, so the signal is ignored here.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    configure_process()
    if levels is not None:
        add_plain_handler()
        set_logger_levels(levels)
    scorer = LiveScorer(project, full_interval=full_interval)
    try:
        while True:
            try:
                kind, payload = connection.recv()
            except EOFError:
                return
            if kind == "stop":
                return
            accounts, as_of = payload
            try:
                result = scorer.rescore(accounts, as_of)
            except Exception as exc:  # sent to the service, which logs it
                scorer.close()
                logger.debug("the batch failed", exc_info=True)
                connection.send(("error", (type(exc).__name__, str(exc))))
                continue
            try:
                connection.send(("result", result))
            except (pickle.PicklingError, TypeError, AttributeError):
                # The alerts and tasks of a batch stay in the operational store.
                connection.send(
                    ("result", dataclasses.replace(result, monitoring=None))
                )
    finally:
        scorer.close()
        connection.close()
