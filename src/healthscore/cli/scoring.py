"""Commands that compute: `score` (the whole pipeline) and `metrics` (metrics only)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from healthscore.cli.common import (
    AsOfOption,
    JsonOption,
    ProjectOption,
    StepProgress,
    VerboseOption,
    handle_errors,
    note,
    note_wrapped,
    open_project,
    plural,
    print_json,
    say,
    say_wrapped,
    stdout_console,
)
from healthscore.cli.display import (
    band_table,
    counted,
    coverage_lines,
    print_sources,
    riskiest_table,
)
from healthscore.cli.output import parse_table_path, write_table
from healthscore.config import Project

# Modules that load pandas, DuckDB or SQLAlchemy are imported inside the functions
# that use them, so that `healthscore --help` does not load them.
if TYPE_CHECKING:
    import pandas as pd

    from healthscore import pipeline
    from healthscore.metrics import MetricTable
    from healthscore.monitoring.guard import GuardDecision
    from healthscore.report import ScoredDate, ScoreSummary
    from healthscore.sources import SourceSet
    from healthscore.store.events import PurgeResult
    from healthscore.store.snapshot_tables import TableWrite

TableOutput = Annotated[
    Path | None,
    typer.Option(
        "--output",
        parser=parse_table_path,
        metavar="FILE",
        help="Also write the scores table to FILE: .csv, .json (a list of records) "
        "or .parquet.",
    ),
]


@handle_errors
def score(
    as_of: AsOfOption,
    project_dir: ProjectOption = Path("."),
    output: TableOutput = None,
    no_store: Annotated[
        bool,
        typer.Option("--no-store", help="Compute and print, but store no snapshot."),
    ] = False,
    allow_empty: Annotated[
        bool,
        typer.Option(
            "--allow-empty",
            help="Store an empty snapshot even when it replaces the stored scores "
            "of the date, and store scores when every row of another source up to "
            "the date fails a check. Without it, such a run exits with an error, "
            "stores nothing and keeps the stored scores.",
        ),
    ] = False,
    json_output: JsonOption = False,
    verbose: VerboseOption = 0,
) -> None:
    """Score every account as of a date, store the snapshot and print a summary."""
    from healthscore import pipeline
    from healthscore.cli.history import report_purged_windows
    from healthscore.report import from_run

    project = open_project(project_dir)
    warn_future_as_of(project, as_of, stored=not no_store)
    # Checked before the run, whose `retention.after_score` may purge more days
    # once the metrics are computed.
    purged_windows = report_purged_windows(project, [as_of])
    with StepProgress(enabled=not json_output) as progress:
        run = pipeline.score(
            project,
            as_of,
            store=not no_store,
            allow_empty=allow_empty,
            progress=progress,
        )
    assert run.sources is not None
    excluded = excluded_accounts(run.sources)
    if run.purged is not None:
        for line in purge_lines(run.purged):
            note_wrapped(line)
    scored = from_run(run)
    summary = scored.summary()
    if output is not None:
        write_table(run.result.scores, output)
    guard = _guard_decision(run)
    if json_output:
        result = score_json(scored, summary, output)
        result["guard"] = None if guard is None else guard.to_dict()
        result["alerts_raised"], result["tasks_opened"] = _monitoring_counts(run)
        result["shadow_skipped"] = list(run.shadow_skipped)
        result["snapshot_table"] = (
            None if run.snapshot_table is None else run.snapshot_table.to_dict()
        )
        result["purged"] = run.purged
        result["purged_windows"] = purged_windows
        result["excluded_accounts"] = excluded.to_dict()
        print_json(result)
        return
    print_score_summary(scored, summary, run.snapshot_table, excluded)
    alerts, tasks = _monitoring_counts(run)
    if guard is not None:
        for line in guard_lines(guard, alerts_stored=alerts > 0):
            say_wrapped(line)
    if run.monitoring is not None:
        held_note = (
            " (held by the guard)"
            if guard is not None and guard.held and alerts
            else ""
        )
        say_wrapped(
            f"Raised {plural(alerts, 'alert')}{held_note} and opened "
            f"{plural(tasks, 'task')}; see `healthscore alerts list` and "
            "`healthscore tasks list`."
        )
    if output is not None:
        say(f"Wrote the scores of {len(run.result.scores):,} accounts to {output}.")


def purge_lines(results: list[PurgeResult]) -> list[str]:
    """Describe the raw days that `retention.after_score` purged, per store source."""
    lines = []
    for result in results:
        rows = sum(result.purged.values())
        lines.append(
            f"Purged {plural(len(result.purged), 'raw day')} "
            f"({plural(rows, 'row')}) of {result.source} before "
            f"{result.cutoff.isoformat()} (retention.after_score)."
        )
        if result.kept:
            # `retain` logs a warning with the reason of each kept day.
            lines.append(
                f"Kept {plural(len(result.kept), 'older raw day')} of "
                f"{result.source}, because its rollup is missing or counts other "
                "rows; run `healthscore retain --rebuild-rollups` to compute the "
                "rollups again."
            )
    return lines


def warn_future_as_of(project: Project, as_of: date, *, stored: bool) -> None:
    """Warn on stderr when `as_of` is after today in the project's time zone.

    The date is still scored: a test or a what-if run may mean it.
    """
    from healthscore.report import project_today

    today = project_today(project)
    if as_of <= today:
        return
    zone = project.config.timezone
    text = (
        f"warning: the as-of date {as_of.isoformat()} is after today "
        f"({today.isoformat()} in the project time zone {zone}). No row after today "
        "exists yet, so windows that reach past today are partly empty and their "
        "metrics count less than they will once the data is in."
    )
    if stored:
        text += (
            " The snapshot is stored under that date, so it becomes the latest "
            "stored snapshot, which the web service shows by default."
        )
    note_wrapped(text)


def _monitoring_counts(run: pipeline.ScoringRun) -> tuple[int, int]:
    """Alerts raised and tasks opened by the monitoring step of a run."""
    if run.monitoring is None:
        return 0, 0
    return len(run.monitoring.alerts.raised), len(run.monitoring.tasks)


def _guard_decision(run: pipeline.ScoringRun) -> GuardDecision | None:
    """Return the guard's decision of a stored run, or None without monitoring."""
    from healthscore.monitoring.guard import GuardDecision

    if run.monitoring is None:
        return None
    decision = getattr(run.monitoring.alerts, "guard", None)
    return decision if isinstance(decision, GuardDecision) else None


def guard_lines(guard: GuardDecision, *, alerts_stored: bool = True) -> list[str]:
    """Describe the PSI, the band changes and why alerts were held, one line each.

    Without `alerts_stored`, the run raised no alert for the guard to hold, so the
    reasons are given as why the run was flagged.
    """
    held = "Alerts held" if alerts_stored else "Run flagged, with no alert to hold"
    reasons = [f"{held}: {reason}." for reason in guard.reasons()]
    if guard.previous_as_of is None:
        # A stale source makes the guard hold alerts on the first run too.
        return [
            "No earlier snapshot to compare with, so no PSI or band changes.",
            *reasons,
        ]
    since = guard.previous_as_of.isoformat()
    psi = "-" if guard.psi is None else f"{guard.psi:.4f}"
    lines = [f"PSI of the scores against the snapshot of {since}: {psi}."]
    if guard.band_change_share is not None:
        lines.append(
            f"{guard.accounts_changed_band:,} of {guard.accounts_compared:,} accounts "
            f"({guard.band_change_share:.1%}) changed band since {since}."
        )
    elif not guard.accounts_changed_version:
        lines.append(f"No account has a score both now and on {since}.")
    if guard.accounts_changed_version:
        verb = "is" if guard.accounts_changed_version == 1 else "are"
        lines.append(
            f"{counted(guard.accounts_changed_version, 'account')} scored on {since} "
            f"under another scorecard version {verb} left out of the band changes."
        )
    lines.extend(reasons)
    return lines


#: Account ids that the run summary lists before "and N more".
LISTED_ACCOUNT_IDS = 5


@dataclass(frozen=True)
class ExcludedAccounts:
    """Accounts of the accounts source whose every row fails a check, so that no
    score exists for them."""

    source: str
    count: int
    first_ids: list[str]
    """The first LISTED_ACCOUNT_IDS ids in sort order."""

    def to_dict(self) -> dict[str, Any]:
        return {"source": self.source, "count": self.count, "first_ids": self.first_ids}


def excluded_accounts(sources: SourceSet) -> ExcludedAccounts:
    """Find the account ids that have rows in the accounts source but no usable row.

    Rows without an account id are left out, because they name no account.
    """
    # NOTE: tested on DuckDB only. The query is plain Ibis, but no test runs it on
    # the Spark engine.
    name = sources.accounts_name
    rows = sources.con.table(sources.loaded[name].relation)
    usable = sources.rows(name).account_id
    ids = (
        rows.filter(
            rows._problem.notnull(),
            rows.account_id.notnull(),
            ~rows.account_id.isin(usable),
        )
        .select("account_id")
        .distinct()
    )
    count = int(ids.count().execute())
    first = ids.order_by("account_id").limit(LISTED_ACCOUNT_IDS).execute()
    return ExcludedAccounts(name, count, [str(value) for value in first["account_id"]])


def excluded_accounts_line(excluded: ExcludedAccounts) -> str | None:
    """Return the summary line that names the excluded accounts, or None without
    any."""
    if excluded.count == 0:
        return None
    listed = ", ".join(excluded.first_ids)
    more = excluded.count - len(excluded.first_ids)
    if more > 0:
        listed += f" and {more:,} more"
    # Not "because": with the active population, an account without an active
    # subscription would have no score either.
    verb, rows = (
        ("has", "its row fails") if excluded.count == 1 else ("have", "their rows fail")
    )
    return (
        f"{counted(excluded.count, 'account')} of source {excluded.source} {verb} "
        f"no score, and {rows} a check: {listed}. The source table below shows the "
        "reasons and example rows."
    )


def print_score_summary(
    scored: ScoredDate,
    summary: ScoreSummary,
    written: TableWrite | None = None,
    excluded: ExcludedAccounts | None = None,
) -> None:
    """Print bands, riskiest accounts, coverage, storage and the source summary.

    `written` is the run's write into the snapshot table, if any. `excluded` names
    the accounts whose rows in the accounts source all fail a check.
    """
    console = stdout_console()
    project = scored.project.config.name
    accounts = counted(summary.accounts, "account")
    say(f"Scored {accounts} of {project} as of {scored.as_of}.")
    if summary.accounts == 0:
        usable = sum(
            source.rows_used for source in summary.sources if source.kind == "accounts"
        )
        note_wrapped(empty_population_warning(scored.project, scored.as_of, usable))
    console.print(band_table(summary.bands, "Accounts per band"))
    if summary.riskiest:
        console.print(riskiest_table(summary))
    for line in coverage_lines(summary.coverage):
        say_wrapped(line)
    if scored.snapshot is not None:
        say(f"Stored the snapshot in {scored.snapshot}.")
    else:
        say("The snapshot was not stored (--no-store).")
    if written is not None:
        say_wrapped(table_write_line(written, scored.as_of.isoformat()))
    for ignored in scored.ignored_overrides:
        note(
            f"warning: override {ignored['id']} of account {ignored['account_id']} "
            f"({ignored['target']}) was not applied: {ignored['reason']}"
        )
    excluded_line = None if excluded is None else excluded_accounts_line(excluded)
    if excluded_line is not None:
        say_wrapped(excluded_line)
    print_sources(console, summary.sources, scored.as_of.isoformat())


def table_write_line(written: TableWrite, dates: str) -> str:
    """Return the line that reports the rows written into the snapshot table."""
    return (
        f"Wrote {plural(written.rows, 'row')} of {dates} into table "
        f"{written.table} of {written.connection}."
    )


def empty_population_warning(
    project: Project, as_of: date, usable_accounts: int
) -> str:
    """Explain why no account was scored as of `as_of`, and what to do.

    `usable_accounts` counts the rows of the accounts source that passed its checks.
    """
    population = project.config.scoring.population
    subscriptions = project.config.sources_of_kind("subscriptions")
    if population is None:
        population = "active" if subscriptions else "all"
    if population == "active" and subscriptions and usable_accounts > 0:
        return (
            f"warning: no account has an active subscription (source "
            f"{subscriptions[0]}) on {as_of.isoformat()}, so none was scored and the "
            "snapshot is empty; score a date that the subscriptions cover, or set "
            "scoring.population: all in healthscore.yml to score every account"
        )
    return (
        "warning: the accounts source has no usable account, so none was scored and "
        "the snapshot is empty; the source table below says why its rows were "
        "excluded"
    )


def score_json(
    scored: ScoredDate, summary: ScoreSummary, output: Path | None
) -> dict[str, Any]:
    """Return the summary of a scoring run as a JSON-ready dict."""
    return {
        "project": scored.project.config.name,
        "as_of": scored.as_of,
        "accounts": summary.accounts,
        "bands": summary.bands,
        "coverage": summary.coverage,
        "value_column": summary.value_column,
        "riskiest": summary.riskiest,
        "scorecard_versions": summary.versions,
        "sources": summary.sources,
        "ignored_overrides": scored.ignored_overrides,
        "snapshot": scored.snapshot,
        "output": output,
    }


@handle_errors
def metrics(
    as_of: AsOfOption,
    output: Annotated[
        Path,
        typer.Option(
            "--output",
            parser=parse_table_path,
            metavar="FILE",
            help="File for the values: .csv, .json (a list of records) or .parquet.",
        ),
    ],
    project_dir: ProjectOption = Path("."),
    json_output: JsonOption = False,
    verbose: VerboseOption = 0,
) -> None:
    """Compute every metric as of a date and write the values in long form."""
    from healthscore.metrics import compute_metrics
    from healthscore.pipeline import open_engine

    project = open_project(project_dir)
    warn_future_as_of(project, as_of, stored=False)
    with StepProgress(enabled=not json_output) as progress:
        progress("reading sources")
        engine = open_engine(project)
        table = compute_metrics(project, engine.sources, as_of, progress=progress)
    frame = metric_values(table)
    write_table(frame, output)
    accounts, count = len(table.values), len(table.values.columns)
    if json_output:
        print_json(_metrics_json(as_of, output, accounts, count, len(frame)))
        return
    say(
        f"Wrote {len(frame):,} metric values ({accounts:,} accounts, "
        f"{count:,} metrics) as of {as_of} to {output}."
    )


def metric_values(table: MetricTable) -> pd.DataFrame:
    """Metric values in long form: account_id, metric, value (a number).

    Text values, such as those of an attribute metric, have no number. The
    `value_text` column contains them, so that every format can store the table
    with one type per column. It is there even when no value is text, as in the
    snapshot's metrics table, so that files of different dates have the same
    columns.
    """
    import pandas as pd

    long = table.long()
    numbers = pd.to_numeric(long["value"], errors="coerce")
    text = long["value"].notna() & numbers.isna()
    frame = pd.DataFrame(
        {
            "account_id": long["account_id"].astype(str),
            "metric": long["metric"].astype(str),
            "value": numbers.astype("float64"),
        }
    )
    frame["value_text"] = long["value"].where(text).astype("string")
    return frame


def _metrics_json(
    as_of: date, output: Path, accounts: int, count: int, values: int
) -> dict[str, Any]:
    return {
        "as_of": as_of,
        "output": output,
        "accounts": accounts,
        "metrics": count,
        "values": values,
    }
