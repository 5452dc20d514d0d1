"""Commands that create and check a project: `init` and `validate`."""

from __future__ import annotations

from datetime import date
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from healthscore.choices import MAX_ACCOUNTS, MIN_ACCOUNTS
from healthscore.cli.common import (
    JsonOption,
    ProjectOption,
    StepProgress,
    VerboseOption,
    handle_errors,
    note,
    note_wrapped,
    parse_date,
    plural,
    print_json,
    say,
    stdout_console,
)
from healthscore.cli.display import print_sources
from healthscore.config import PROJECT_FILE, ConfigError, Project, load_project

# Modules that load pandas, DuckDB or SQLAlchemy are imported inside the functions
# that use them, so that `healthscore --help` does not load them.
if TYPE_CHECKING:
    import pandas as pd

    from healthscore.report.summary import SourceSummary


@handle_errors
def init(
    directory: Annotated[
        Path, typer.Argument(help="Folder of the new project; created if missing.")
    ],
    force: Annotated[
        bool,
        typer.Option(
            "--force", help="Overwrite the files of an earlier scaffold in the folder."
        ),
    ] = False,
    accounts: Annotated[
        int,
        typer.Option(
            "--accounts",
            help=f"Number of sample accounts, {MIN_ACCOUNTS} to {MAX_ACCOUNTS}.",
        ),
    ] = 120,
    seed: Annotated[
        int,
        typer.Option("--seed", help="Seed of the sample data; same seed, same files."),
    ] = 7,
    verbose: VerboseOption = 0,
) -> None:
    """Create a project with a commented healthscore.yml and generated sample data."""
    from healthscore.scaffold import SAMPLE_AS_OF_DATE, create_project

    root = create_project(directory, seed=seed, accounts=accounts, force=force)
    day = SAMPLE_AS_OF_DATE.isoformat()
    project = str(root)
    say(f"Created a healthscore project with {accounts} sample accounts in {root}.")
    say("Next commands:")
    for command in (
        f"healthscore validate --data --project {project} --as-of {day}",
        f"healthscore score --project {project} --as-of {day}",
        f"healthscore report --project {project} --as-of {day}",
        f"healthscore explain ACCOUNT_ID --project {project} --as-of {day}",
    ):
        say(f"  {command}")


@handle_errors
def validate(
    project_dir: ProjectOption = Path("."),
    data: Annotated[
        bool,
        typer.Option(
            "--data", help="Also read every source and report the rows it excludes."
        ),
    ] = False,
    as_of: Annotated[
        date | None,
        typer.Option(
            "--as-of",
            parser=parse_date,
            metavar="YYYY-MM-DD",
            help="As-of date of the --data check.",
            show_default="today in the project's time zone",
        ),
    ] = None,
    json_output: JsonOption = False,
    verbose: VerboseOption = 0,
) -> None:
    """Check healthscore.yml and its shadow scorecard files, and optionally the data.

    Every problem found is listed with its file, line and key path.
    """
    from healthscore.config.databases import snapshot_table_warnings
    from healthscore.report import project_today
    from healthscore.sources import SourceError
    from healthscore.sources.spark_reader import check_supported
    from healthscore.sources.tables import check_table_sources
    from healthscore.store.database import parse_state_url
    from healthscore.store.snapshot_tables import check_snapshot_table

    project = _load_for_validation(project_dir, json_output)
    config = project.config
    counts = {
        "sources": len(config.sources),
        "metrics": len(config.metrics),
        "scorecards": len(config.scorecards),
        "shadow_files": len(config.validation.shadow),
    }
    summaries: list[SourceSummary] | None = None
    day = as_of or project_today(project)
    if config.engine.kind == "spark":
        # The file alone shows what Spark cannot run, so no session is started.
        check_supported(project)
    # The URL of the state store is parsed only. The snapshot table's database is
    # reached read-only, to check the schema of a `schema.name` table as `score`
    # does and the columns of an existing table.
    parse_state_url(config.store.state)
    if config.store.snapshot_table is not None:
        # Printed first, because an upper-case name may be why the schema is missing.
        for issue in snapshot_table_warnings(project):
            note_wrapped(f"warning: {issue}")
        unchecked = check_snapshot_table(
            project, config.store.snapshot_table, check_schema=True
        )
        for problem in unchecked:
            note_wrapped(f"warning: {problem}")
    for warning in guard_recipient_warnings(project):
        note_wrapped(f"warning: {warning}")
    if data:
        summaries = check_data(project, day, show_progress=not json_output)
    else:
        # Database tables are checked like files: they exist, with their columns.
        unreadable = check_table_sources(project)
        if unreadable:
            raise SourceError("\n".join(unreadable))
    if json_output:
        print_json(_validation_json(project, counts, day if data else None, summaries))
        return
    shadow_files = (
        f", {_plural(counts['shadow_files'], 'shadow scorecard file')}"
        if counts["shadow_files"]
        else ""
    )
    say(
        f"{PROJECT_FILE} is valid: {_plural(counts['sources'], 'source')}, "
        f"{_plural(counts['metrics'], 'metric')}, "
        f"{_plural(counts['scorecards'], 'scorecard')}{shadow_files}"
    )
    if summaries is not None:
        print_sources(stdout_console(), summaries, day.isoformat())
        problems = sum(source.rows_with_problems for source in summaries)
        if problems:
            verb = "fails a check and is" if problems == 1 else "fail a check and are"
            note(
                f"{plural(problems, 'row')} {verb} excluded from scores. Fix them "
                "in the source files or tables, or correct the source's columns or "
                "timestamp_format where a column is mapped or parsed wrongly. "
                "Numbers written with decimal commas or thousands separators "
                "must be converted in the sources."
            )


def _load_for_validation(directory: Path, json_output: bool) -> Project:
    """Load the project and check its shadow scorecard files.

    Raises ConfigError listing every problem. With --json the problems are printed
    as JSON first.
    """
    from healthscore.models.shadow import check_shadow_files

    try:
        project = load_project(directory)
        shadow_issues = check_shadow_files(project)
        if shadow_issues:
            raise ConfigError(shadow_issues)
    except ConfigError as exc:
        if json_output:
            print_json(
                {"valid": False, "issues": [issue.to_dict() for issue in exc.issues]}
            )
        raise
    return project


def check_data(project: Project, day: date, show_progress: bool) -> list[SourceSummary]:
    """Read every source and summarise its rows as of `day`."""
    from healthscore.metrics.aggregates import check_columns
    from healthscore.models.labels import observed_until_problem
    from healthscore.pipeline import open_engine
    from healthscore.report.summary import source_summaries
    from healthscore.sources import as_of_point

    with StepProgress(enabled=show_progress) as progress:
        progress("reading sources")
        engine = open_engine(project)
        check_columns(engine.sources, project.config.metrics)
        progress("checking rows")
        reports = engine.sources.report(as_of_point(project, day))
        accounts = engine.sources.accounts() if project.config.alerts.rules else None
        # Scoring does not need the labels, so their problem is a warning here.
        labels = observed_until_problem(project, engine.sources)
    if labels is not None:
        note_wrapped(
            f"warning: backtest, learn, compare, train and drivers will stop: {labels}"
        )
    if accounts is not None:
        for line in owner_address_warnings(project, accounts):
            note_wrapped(line)
    return source_summaries(report.to_dict() for report in reports)


#: Owners that an owner-address warning names as examples.
_OWNER_EXAMPLES = 3


def owner_address_warnings(project: Project, accounts: pd.DataFrame) -> list[str]:
    """Warn about owners that an email channel sending `to: owner` cannot reach.

    Such a channel writes to each alert's owner, the value of the rule's
    `owner_column`, so a value without `@`, such as a name, fails every email to
    that owner. So does a value with a line break, which the channel never puts
    into a header. `accounts` are the usable accounts by account id, with their
    columns.
    """
    from healthscore.monitoring.channels import header_text
    from healthscore.sources.columns import owner_email_channels

    warnings = []
    for column, channels in owner_email_channels(project.config).items():
        if column not in accounts.columns:
            continue  # a missing column is an error of its own
        owners = accounts[column].dropna().astype(str)
        owners = owners[owners.str.strip() != ""]
        with_line_break = owners.map(lambda owner: header_text(owner) != owner)
        unreachable = owners[~owners.str.contains("@", regex=False) | with_line_break]
        if unreachable.empty:
            continue
        count = len(unreachable)
        values = sorted(set(unreachable))
        examples = ", ".join(repr(owner) for owner in values[:_OWNER_EXAMPLES])
        ids = sorted(str(account) for account in unreachable.index)
        named = ", ".join(ids[:_OWNER_EXAMPLES])
        if len(ids) > _OWNER_EXAMPLES:
            named += f" and {len(ids) - _OWNER_EXAMPLES} more"
        keys = ", ".join(f"alerts.channels.{name}.to" for name in channels)
        verb = "has" if count == 1 else "have"
        warnings.append(
            f"{plural(count, 'account')} {verb} an owner in column {column!r} that is "
            f"not an email address ({examples}), but {keys} sends alerts to the "
            "owner, so those emails will fail. Put email addresses in the column, or "
            f"list the recipients under `to`. Accounts: {named}."
        )
    return warnings


def guard_recipient_warnings(project: Project) -> list[str]:
    """List warnings about email channels that send only to owners, whose `to` is
    `owner` or `[owner]`.

    The guard's alert about a held run has no owner. It is raised only when a
    held run stores alerts, so a project without alert rules gets no warning.
    """
    settings = project.config.alerts
    if not settings.rules:
        return []
    others = list(settings.ownerless_alert_channels())
    if others:
        names = others[0]
        if len(others) > 1:
            names = ", ".join(others[:-1]) + f" and {others[-1]}"
        reach = f"Guard alerts go only to {names}"
    else:
        reach = (
            "No channel delivers guard alerts, so only the output of `healthscore "
            "score` and `healthscore alerts list` show a held run"
        )
    return [
        f"channel {name!r} sends only to owners (alerts.channels.{name}.to names no "
        "address besides `owner`), so it gets no guard alert, which reports a held "
        "run and has no owner. To mail guard alerts, list addresses next to owner, "
        f"as in `to: [owner, ops@example.com]`. {reach}."
        for name in settings.owner_only_channels()
    ]


def _validation_json(
    project: Project,
    counts: dict[str, int],
    day: date | None,
    summaries: list[SourceSummary] | None,
) -> dict[str, Any]:
    result: dict[str, Any] = {
        "valid": True,
        "project": project.config.name,
        "file": str(project.file),
        **counts,
    }
    if summaries is not None and day is not None:
        result["data"] = {"as_of": day, "sources": summaries}
    return result


def _plural(count: int, noun: str) -> str:
    return f"{count} {noun}{'' if count == 1 else 's'}"
