"""The scoring run: the named steps that the CLI, the report and the service share.

read sources -> compute metrics -> apply overrides -> score -> store the snapshot
-> alerts and playbooks. Nothing is written until every step before the snapshot has
succeeded, and the snapshot of a date is replaced atomically.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any
from zoneinfo import ZoneInfo

import numpy as np
import pandas as pd
import pyarrow as pa

from healthscore import __version__
from healthscore.config import Project
from healthscore.config.overrides import Override
from healthscore.engine import Engine
from healthscore.errors import ScoringInputError
from healthscore.metrics import MetricTable, compute_metrics
from healthscore.scoring import ScoreResult, score_accounts
from healthscore.sources import SourceReport, as_of_point
from healthscore.store.snapshot_tables import (
    SnapshotTableError,
    TableWrite,
    check_snapshot_table,
    write_run,
)
from healthscore.store.snapshots import SnapshotStore

if TYPE_CHECKING:
    from healthscore.sources import SourceSet
    from healthscore.store.events import PurgeResult
    from healthscore.store.state import StateStore

logger = logging.getLogger(__name__)

Progress = Callable[[str], None]


@dataclass
class ScoringRun:
    """Everything one scoring run computed for one as-of date."""

    project: Project
    as_of: date
    metrics: MetricTable
    result: ScoreResult
    source_reports: list[SourceReport]
    versions: dict[str, str]
    seconds: dict[str, float] = field(default_factory=dict)
    snapshot: Path | None = None
    monitoring: Monitoring | None = None
    shadow: pd.DataFrame | None = None
    """Scores of the shadow scorecards (`validation.shadow`), stored as the
    `shadow_scores` table; alert rules never read them."""
    shadow_skipped: list[str] = field(default_factory=list)
    """One message per shadow file left out of `shadow` because it is invalid or
    failed to score, naming the file and the problem."""
    snapshot_table: TableWrite | None = None
    """The rows written into `store.snapshot_table`; None when none were written."""
    purged: list[PurgeResult] | None = None
    """Raw days purged by `retention.after_score`, one result per store source with
    a retention age; None when the run purged nothing because the setting is off or
    nothing was stored."""
    sources: SourceSet | None = field(default=None, repr=False)
    """The sources the run read, for queries about their rows after the run."""

    def tables(self) -> dict[str, pd.DataFrame]:
        """Return the tables stored in the snapshot."""
        tables = {
            "scores": self.result.scores,
            "components": self.result.components,
            "measures": self.result.measures,
            "metrics": metric_rows(self.metrics),
        }
        if self.shadow is not None:
            tables["shadow_scores"] = self.shadow
        return tables

    def run_info(self) -> dict[str, Any]:
        """Metadata stored beside the snapshot."""
        return run_info(
            self.project,
            self.metrics.point,
            self.versions,
            len(self.result.scores),
            self.source_reports,
            self.seconds,
        )


def run_info(
    project: Project,
    point: datetime,
    versions: dict[str, str],
    accounts: int,
    source_reports: list[SourceReport],
    seconds: dict[str, float],
) -> dict[str, Any]:
    """Metadata stored beside a snapshot: versions, source reports and step times."""
    return {
        "healthscore_version": __version__,
        "project": project.config.name,
        "as_of_point": point.isoformat(),
        "timezone": project.config.timezone,
        "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "scorecard_versions": versions,
        "config_key": project.settings_key(),
        "accounts": accounts,
        "sources": [report.to_dict() for report in source_reports],
        "seconds": {step: round(value, 3) for step, value in seconds.items()},
    }


def metric_rows(metrics: MetricTable) -> pd.DataFrame:
    """Build the snapshot's metrics table: account_id, metric, value, value_text.

    Rows are sorted by account and metric. A value that is not a number (such as
    an attribute or a latest value) is kept as text in `value_text`.
    """
    # The columns are built one metric at a time and laid out account by account,
    # because melting the whole table into Python objects and sorting it took
    # several GB for two million accounts.
    values = metrics.values
    if not values.index.is_monotonic_increasing:
        values = values.sort_index(kind="stable")
    names = sorted(values.columns)
    count = len(values)
    numbers = np.empty((count, len(names)), dtype="float64")
    texts: dict[int, tuple[np.ndarray, list[str]]] = {}
    for position, name in enumerate(names):
        column = values[name]
        if pd.api.types.is_numeric_dtype(column.dtype):
            numbers[:, position] = column.to_numpy(dtype="float64", na_value=np.nan)
            continue
        raw = column.astype(object)
        parsed = pd.to_numeric(raw, errors="coerce").astype("float64")
        numbers[:, position] = parsed.to_numpy()
        is_text = (parsed.isna() & raw.notna()).to_numpy()
        if is_text.any():
            texts[position] = (is_text, [str(value) for value in raw[is_text]])
    return pd.DataFrame(
        {
            "account_id": np.repeat(values.index.to_numpy(dtype=object), len(names)),
            "metric": np.tile(np.array(names, dtype=object), count),
            "value": numbers.ravel(),
            "value_text": _value_text(texts, count, len(names)),
        },
        copy=False,
    )


def _value_text(
    texts: dict[int, tuple[np.ndarray, list[str]]], count: int, width: int
) -> pd.api.extensions.ExtensionArray:
    """Build the `value_text` column of `metric_rows` from each metric's text cells."""
    if not texts:
        # Most projects have no text metric. An all-missing Arrow column is one
        # zeroed buffer, not a Python object per row.
        return pd.array(pa.nulls(count * width, pa.large_string()), dtype="string")
    cells = np.full((count, width), None, dtype=object)
    for position, (is_text, strings) in texts.items():
        cells[is_text, position] = strings
    return pd.array(cells.ravel(), dtype="string")


@dataclass
class Monitoring:
    """Result of the monitoring step after a stored run."""

    alerts: Any
    """`AlertOutcome`: raised, suppressed and held alerts and the guard's decision."""
    tasks: list[Any]
    """Tasks opened by playbooks."""


def open_engine(project: Project) -> Engine:
    """Read the project's sources, and the notes CSMs stored, into one engine.

    Raises SourceError when a source cannot be read.
    """
    engine = Engine.open(project)
    if _uses_csm_notes(project):
        from healthscore.monitoring.notes import notes_frame
        from healthscore.store.state import StateStore

        with StateStore.open(project.config.store.state, project.root) as state:
            frame = notes_frame(state)
        engine.sources.add_frame("csm_notes", "notes", frame, "operational store")
    return engine


def _uses_csm_notes(project: Project) -> bool:
    return any(
        getattr(metric, "source", None) == "csm_notes"
        for metric in project.config.metrics.values()
    )


def snapshot_store(project: Project) -> SnapshotStore:
    """Return the project's snapshot store."""
    return SnapshotStore(project.path(project.config.store.snapshots))


def scorecard_versions(project: Project) -> dict[str, str]:
    """Content hash of each scorecard by name."""
    return {
        card.name: project.scorecard_version(card) for card in project.config.scorecards
    }


def active_overrides(
    project: Project, as_of: date, state: StateStore | None = None
) -> list[Override]:
    """Overrides in the operational store (`state`, or opened now) on `as_of`.

    A SQLite store whose file does not exist contains no override, so it is neither
    created nor migrated here.
    """
    from healthscore.store.database import may_hold_rows
    from healthscore.store.state import StateStore

    if state is not None:
        return state.active_overrides(as_of)
    url = project.config.store.state
    if not may_hold_rows(url, project.root):
        return []
    with StateStore.open(url, project.root) as opened:
        return opened.active_overrides(as_of)


def score(
    project: Project,
    as_of: date,
    *,
    engine: Engine | None = None,
    store: bool = True,
    monitor: bool = True,
    allow_empty: bool = False,
    progress: Progress | None = None,
) -> ScoringRun:
    """Score every account of `project` as of `as_of`, and store the snapshot.

    With `store` and `monitor` (the default), alert rules and playbooks run on the
    stored snapshot next. Raises SourceError when a source cannot be read and
    ConfigError or ScoringInputError on invalid settings or data; nothing is stored
    then. Raises ScoringInputError too when no account is scored because a source
    of the population has no usable row, and the stored snapshot of `as_of` has
    scores, or when every row of another source up to `as_of` fails a check,
    unless `allow_empty` lets the run store its snapshot all the same. Raises
    SnapshotTableError when `store.snapshot_table` cannot be written; the Parquet
    snapshot of the date is stored then, and alert rules do not run.
    """
    seconds: dict[str, float] = {}
    started = time.perf_counter()
    snapshot_table = project.config.store.snapshot_table
    if store and snapshot_table is not None:
        check_snapshot_table(project, snapshot_table, check_schema=True)
    if engine is None:
        _step(progress, "reading sources")
        engine = open_engine(project)
        seconds["sources"] = time.perf_counter() - started

    point = as_of_point(project, as_of)
    with engine.sources.row_summaries(point):
        _step(progress, "computing metrics")
        mark = time.perf_counter()
        metrics = compute_metrics(project, engine.sources, as_of, progress=progress)
        seconds["metrics"] = time.perf_counter() - mark

        _step(progress, "scoring")
        mark = time.perf_counter()
        versions = scorecard_versions(project)
        overrides = active_overrides(project, as_of)
        result = score_accounts(
            project.config, metrics.values, metrics.accounts, overrides, as_of, versions
        )
        seconds["scoring"] = time.perf_counter() - mark

        reports = engine.sources.report(point)
    if store and not allow_empty:
        if result.scores.empty:
            check_empty_replacement(project, as_of, reports)
        if not empty_sources(project, reports):
            check_unusable_sources(project, as_of, reports)
    run = ScoringRun(project, as_of, metrics, result, reports, versions, seconds)
    run.sources = engine.sources
    run.shadow, run.shadow_skipped = _score_shadow_files(project, metrics, as_of)
    if store:
        _step(progress, "storing the snapshot")
        mark = time.perf_counter()
        snapshots = snapshot_store(project)
        if snapshot_table is not None:
            # The mark is cleared once the table has the date's rows, so a run
            # stopped in between leaves the date for the next run to write.
            snapshots.mark_table_pending([as_of])
        run.snapshot = snapshots.write(as_of, run.tables(), run.run_info())
        _record_config(run)
        if snapshot_table is not None:
            # NOTE: backfill and the service's rescoring write the table too, but
            # `monitoring.history.replay` stores the Parquet snapshot only.
            try:
                run.snapshot_table = write_run(
                    project, snapshot_table, snapshots, as_of, result.scores
                )
            except SnapshotTableError as exc:
                raise SnapshotTableError(
                    f"{exc}. The Parquet snapshot of {as_of.isoformat()} is stored "
                    "and alert rules did not run; score the date again once the "
                    "database can be written, to write its rows and check the rules"
                ) from None
        seconds["store"] = time.perf_counter() - mark
        if monitor:
            _step(progress, "checking alert rules and playbooks")
            mark = time.perf_counter()
            run.monitoring = run_monitoring(project, run, engine)
            seconds["monitoring"] = time.perf_counter() - mark
        if project.config.retention.after_score:
            _step(progress, "purging raw days past retention")
            mark = time.perf_counter()
            run.purged = purge_raw_days(project)
            seconds["retention"] = time.perf_counter() - mark
    logger.info(
        "scored %d accounts as of %s in %.2f s",
        len(result.scores),
        as_of,
        time.perf_counter() - started,
    )
    return run


def empty_sources(project: Project, reports: list[SourceReport]) -> list[SourceReport]:
    """Return the reports of the population's sources that have no usable row.

    The population's sources are the accounts source, and the subscriptions
    sources when `scoring.population` is `active`, its default with a
    subscriptions source. Without a usable row in any of them, no account is scored.
    """
    subscriptions = project.config.sources_of_kind("subscriptions")
    population = project.config.scoring.population
    if population is None:
        population = "active" if subscriptions else "all"
    kinds = {"accounts", "subscriptions"} if population == "active" else {"accounts"}
    return [
        report for report in reports if report.kind in kinds and report.rows_used == 0
    ]


def check_empty_replacement(
    project: Project, as_of: date, reports: list[SourceReport]
) -> None:
    """Raise ScoringInputError when an empty snapshot would replace stored scores.

    A run that scores no account stores an empty snapshot. When a source of the
    population has no usable row, for example because a warehouse table is being
    reloaded, that snapshot would wipe the stored scores of `as_of`, so this raises
    then instead. A date with no stored scores is left to store its empty snapshot.
    """
    empty = empty_sources(project, reports)
    if not empty:
        return
    stored = stored_score_count(snapshot_store(project), as_of)
    if stored == 0:
        return
    day = as_of.isoformat()
    described = "; ".join(_describe_empty(report) for report in empty)
    raise ScoringInputError(
        f"no account was scored as of {day} because {described}. The stored "
        f"snapshot of {day} has the scores of {stored:,} accounts, so it was kept "
        "and nothing was stored. If the source is being reloaded, score the date "
        "again once it has its rows; `healthscore validate --data` shows why rows "
        "are excluded. To replace the stored scores with an empty snapshot all the "
        "same, run `healthscore score` with --allow-empty"
    )


def check_unusable_sources(
    project: Project,
    as_of: date,
    reports: list[SourceReport],
    override: str | None = "run `healthscore score` with --allow-empty to store the "
    "scores all the same",
) -> None:
    """Raise ScoringInputError when every row of a source fails a check of its own.

    A source whose rows all fail, such as one with a wrongly mapped time column,
    would score every account as if it had no such rows. Only the checks of a
    row's own values count: rows of accounts that the accounts source lacks may be
    new accounts, as in a store source. A source with any row later than the as-of
    date passes, so dates before a source's first row are scored. The population's
    sources are left to `check_empty_replacement`. `override` ends the message with
    the way to store the scores all the same, if the command has one.
    """
    from healthscore.sources import ACCOUNT_REASONS

    # A late row is excluded by the date alone, so the source may well be sound.
    late = "after_as_of"
    population = {report.source for report in empty_sources(project, reports)}
    unusable = []
    for report in reports:
        if report.rows_used or not report.rows_read or report.source in population:
            continue
        own = sum(
            count
            for reason, count in report.excluded.items()
            if reason.partition(":")[0] not in {*ACCOUNT_REASONS, late}
        )
        if own == report.rows_read:
            unusable.append(report)
        elif report.excluded.get("unknown_account:account_id") == report.rows_read:
            logger.warning(
                "every one of the %s rows of source %r names an account that the "
                "accounts source lacks; check that its account ids are written as "
                "in the accounts source",
                f"{report.rows_read:,}",
                report.source,
            )
    if not unusable:
        return
    day = as_of.isoformat()
    described = "; ".join(_describe_empty(report) for report in unusable)
    fix = "Fix the rows or the source's columns (`healthscore validate --data` shows "
    fix += "example rows)"
    raise ScoringInputError(
        f"{described}, so every account would be scored as if that source were "
        f"empty; nothing was stored for {day}. {fix}"
        + (f", or {override}" if override else "")
    )


def _describe_empty(report: SourceReport) -> str:
    """Describe a source without usable rows: empty, or its rows later than the
    as-of date or excluded, with the counts of each reason as `validate --data`
    prints them."""
    # Imported here, because the report modules build on this module's run type.
    from healthscore.report.summary import source_summaries

    source = f"the {report.kind} source {report.source!r}"
    read = report.rows_read
    if read == 0:
        return f"{source} has no rows"
    summary = source_summaries([report.to_dict()])[0]
    later, excluded = summary.later, summary.rows_with_problems
    parts = []
    if later:
        if later == read:
            counted = (
                "its only row is" if read == 1 else f"all {read:,} of its rows are"
            )
        else:
            verb = "is" if later == 1 else "are"
            counted = f"{later:,} of its {read:,} rows {verb}"
        parts.append(f"{counted} later than the as-of date")
    if excluded:
        if excluded == read:
            counted = (
                "its only row was" if read == 1 else f"all {read:,} of its rows were"
            )
        else:
            counted = f"{excluded:,} {'was' if excluded == 1 else 'were'}"
        problems = summary.problems
        reasons = "; ".join(
            label if excluded == 1 else f"{count:,} {label}"
            for label, count in problems.items()
        )
        parts.append(f"{counted} excluded ({reasons})")
    if not parts:
        parts.append(f"none of its {read:,} rows is usable")
    return f"{source} has no usable row: " + ", and ".join(parts)


def stored_score_count(snapshots: SnapshotStore, as_of: date) -> int:
    """Return the rows of the stored scores table of `as_of`; 0 when none is stored.

    Only the Parquet footer is read.
    """
    import pyarrow.parquet as pq

    path = snapshots.partition_path(as_of) / "scores.parquet"
    if not path.is_file():
        return 0
    return int(pq.read_metadata(path).num_rows)


def run_monitoring(
    project: Project,
    run: ScoringRun,
    engine: Engine,
    state: StateStore | None = None,
    population: pd.DataFrame | None = None,
) -> Monitoring:
    """Raise the alerts of a stored run and open the tasks its playbooks call for.

    Re-running a date raises no alert twice and opens no task twice. It opens the
    tasks of the date's stored alerts that have none yet, for example after the
    playbook step of an earlier run of the date failed. The operational store is
    `state`, or the project's store opened for this call. `population` is passed
    to `evaluate_alerts` for the guard, when `run` holds some accounts only.
    """
    # Imported here because the monitoring modules build on this module's run type.
    from healthscore.monitoring.alerts import evaluate_alerts
    from healthscore.monitoring.playbooks import apply_playbooks
    from healthscore.store.state import StateStore

    opened = (
        contextlib.nullcontext(state)
        if state is not None
        else StateStore.open(project.config.store.state, project.root)
    )
    with opened as state:
        outcome = evaluate_alerts(
            project,
            run,
            snapshot_store(project),
            state,
            engine=engine,
            population=population,
        )
        alerts = [] if outcome.held else outcome.raised
        # A rerun of a date finds its alerts stored already. Playbooks still get
        # them, because an earlier run may have stopped before opening their tasks.
        stored = [] if outcome.held else _stored_earlier(outcome.suppressed)
        # A held run's data is suspect, so it opens no tasks either.
        tasks = apply_playbooks(
            project, run, alerts, state, stored_alerts=stored, held=outcome.held
        )
    logger.info(
        "monitoring as of %s: %d alerts raised%s, %d tasks opened",
        run.as_of,
        len(outcome.raised),
        " and held by the guard" if outcome.held else "",
        len(tasks),
    )
    return Monitoring(alerts=outcome, tasks=tasks)


def _stored_earlier(suppressed: list[Any]) -> list[Any]:
    """Alerts skipped because an earlier evaluation of the date stored them."""
    return [item.alert for item in suppressed if item.reason == "duplicate"]


def shadow_scores(
    project: Project, metrics: MetricTable, as_of: date
) -> pd.DataFrame | None:
    """Score the shadow scorecards of `validation.shadow`; None when none is scored.

    Backfill and the service's rescoring call this too, so that every path that
    stores a snapshot stores the same `shadow_scores` table. An invalid shadow file
    is left out with a logged warning and never stops the live scores.
    """
    return _score_shadow_files(project, metrics, as_of)[0]


def _score_shadow_files(
    project: Project, metrics: MetricTable, as_of: date
) -> tuple[pd.DataFrame | None, list[str]]:
    """Return the shadow scores and a message per shadow file left out."""
    if not project.config.validation.shadow:
        return None, []
    from healthscore.models.shadow import score_shadow

    scored = score_shadow(project, metrics.values, metrics.accounts, as_of)
    return scored.table, scored.skipped


def purge_raw_days(project: Project) -> list[PurgeResult]:
    """Purge raw days of the event store older than the retention age, as of today.

    Returns one result per store source with a retention age.
    """
    # Imported here because the privacy modules build on this module's layer.
    from healthscore.privacy.retention import retain

    today = datetime.now(ZoneInfo(project.config.timezone)).date()
    return retain(project, today)


def _record_config(run: ScoringRun) -> None:
    """Keep the project file of the run, so its date can be replayed later."""
    # Imported here because the history module builds on this module's run type.
    from healthscore.monitoring.history import record_run_config

    record_run_config(run)


def _step(progress: Progress | None, message: str) -> None:
    logger.debug("step: %s", message)
    if progress:
        progress(message)
