"""Commands for follow-up work: tasks, outcomes, interventions, effect and notes."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from datetime import date, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any
from zoneinfo import ZoneInfo

import typer
from rich import box
from rich.table import Table
from rich.text import Text

from healthscore.cli.common import (
    JsonOption,
    ProjectOption,
    VerboseOption,
    add_folded_rows,
    handle_errors,
    note_wrapped,
    open_project,
    parse_date,
    plural,
    print_json,
    say,
    say_wrapped,
    stdout_console,
)
from healthscore.cli.overrides import check_account
from healthscore.config import Project
from healthscore.config.models import Duration, parse_duration

# Modules that load pandas, DuckDB or SQLAlchemy are imported inside the functions
# that use them, so that `healthscore --help` does not load them.
if TYPE_CHECKING:
    from healthscore.monitoring.effect import EffectReport, Interval
    from healthscore.monitoring.interventions import ImportResult
    from healthscore.monitoring.playbooks import Task
    from healthscore.store import StateStore

tasks_app = typer.Typer(
    help="List, complete and dismiss the tasks that playbooks open.",
    no_args_is_help=True,
)
outcomes_app = typer.Typer(
    help="Import what happened to accounts: churned, renewed, expanded, contracted.",
    no_args_is_help=True,
)
interventions_app = typer.Typer(
    help="Import actions taken for accounts; completed tasks count automatically.",
    no_args_is_help=True,
)
note_app = typer.Typer(
    help="Add and list notes about accounts, with an optional 1-5 sentiment.",
    no_args_is_help=True,
)


#: Default horizon of `effect` and default validity of `note stale`.
DEFAULT_HORIZON = Duration(amount=90, unit="days")
DEFAULT_VALIDITY = Duration(amount=90, unit="days")


def register(app: typer.Typer) -> None:
    """Add the `tasks`, `outcomes`, `interventions`, `effect` and `note` commands."""
    app.add_typer(tasks_app, name="tasks")
    app.add_typer(outcomes_app, name="outcomes")
    app.add_typer(interventions_app, name="interventions")
    app.command()(effect)
    app.add_typer(note_app, name="note")


def _state_store(project: Project) -> StateStore:
    from healthscore.store import StateStore

    return StateStore.open(project.config.store.state, project.root)


def _local_now(project: Project) -> datetime:
    return datetime.now(ZoneInfo(project.config.timezone))


def _parse_duration_option(text: str) -> Duration:
    try:
        duration = parse_duration(text)
    except ValueError as exc:
        raise typer.BadParameter(str(exc)) from None
    if duration.amount == 0:
        raise typer.BadParameter(f"invalid duration {text!r}: it must be at least 1d")
    return duration


# tasks


@tasks_app.command("list")
@handle_errors
def list_command(
    owner: Annotated[
        str | None, typer.Option("--owner", help="Only the tasks of this owner.")
    ] = None,
    state: Annotated[
        str,
        typer.Option(
            "--state", help="Only tasks in this state: open, completed, dismissed."
        ),
    ] = "open",
    project_dir: ProjectOption = Path("."),
    json_output: JsonOption = False,
    verbose: VerboseOption = 0,
) -> None:
    """List tasks by due date; by default the open ones."""
    from healthscore.monitoring.playbooks import list_tasks

    project = open_project(project_dir)
    with _state_store(project) as store:
        found = list_tasks(store, owner=owner, task_state=state)
    if json_output:
        print_json(found)
        return
    if not found:
        say(f"No {state} tasks{f' of {owner}' if owner else ''}.")
        return
    table, fits = _task_table(found, state)
    if not fits:
        _print_task_records(found, state)
        return
    stdout_console().print(table)


def _print_task_records(found: list[Task], state: str) -> None:
    """Print each task as lines of `Field: value`, for terminals too narrow for
    the table."""
    console = stdout_console()
    console.print(Text(f"Tasks ({state})"))
    for task in found:
        console.print()
        fields = (
            ("Id", str(task.id)),
            ("Due", task.due_on.isoformat()),
            ("Priority", task.priority),
            ("Account", task.account_id),
            ("Owner", task.owner or "-"),
            ("Playbook", task.playbook),
            ("Rank", str(task.rank)),
            ("Title", task.title),
        )
        for name, value in fields:
            console.print(Text(f"{name}: {value}"), overflow="fold")


def _plain_row(table: Table, *cells: str) -> None:
    """Add a row whose cells are shown as typed: brackets in a note are not markup."""
    table.add_row(*(Text(cell) for cell in cells))


def _task_table(
    found: list[Task], state: str, width: int | None = None
) -> tuple[Table, bool]:
    """Tabulate tasks to fit `width` columns (default: the stdout console's).

    Returns the table and whether it fits with every word of its cells whole.
    """
    # Eight columns with Rich's default padding would spend 25 of 80 characters on
    # gaps, so columns are set apart by two spaces instead of three.
    table = Table(
        title=f"Tasks ({state})",
        box=box.SIMPLE_HEAD,
        title_justify="left",
        padding=(0, 1, 0, 0),
        pad_edge=False,
    )
    # Short fixed-width values stay on one line. The others break after spaces,
    # underscores and hyphens, so at 80 columns names and titles keep whole words.
    for column in ("Id", "Due", "Priority", "Account", "Owner", "Playbook", "Rank"):
        fixed = column in ("Id", "Due", "Account", "Rank")
        table.add_column(column, no_wrap=fixed, overflow="fold")
    table.add_column("Title", overflow="fold")
    rows = [
        (
            str(task.id),
            task.due_on.isoformat(),
            task.priority,
            task.account_id,
            task.owner or "-",
            task.playbook,
            str(task.rank),
            task.title,
        )
        for task in found
    ]
    fits = add_folded_rows(table, rows, width)
    return table, fits


@tasks_app.command("complete")
@handle_errors
def complete_command(
    task_id: Annotated[int, typer.Argument(metavar="ID", help="Task id, from list.")],
    by: Annotated[str, typer.Option("--by", help="Who completed the task.")],
    note: Annotated[
        str | None, typer.Option("--note", help="What was done, for the record.")
    ] = None,
    project_dir: ProjectOption = Path("."),
    json_output: JsonOption = False,
    verbose: VerboseOption = 0,
) -> None:
    """Mark a task completed; it then counts as an intervention dated today."""
    from healthscore.monitoring.playbooks import complete_task

    project = open_project(project_dir)
    with _state_store(project) as store, _not_found_as_error():
        task = complete_task(store, task_id, by, note=note, now=_local_now(project))
    if json_output:
        print_json(task)
        return
    say(f"Completed task {task.id} ({task.playbook} for {task.account_id}).")


@tasks_app.command("dismiss")
@handle_errors
def dismiss_command(
    task_id: Annotated[int, typer.Argument(metavar="ID", help="Task id, from list.")],
    by: Annotated[str, typer.Option("--by", help="Who dismisses the task.")],
    reason: Annotated[str, typer.Option("--reason", help="Why it is not needed.")],
    project_dir: ProjectOption = Path("."),
    json_output: JsonOption = False,
    verbose: VerboseOption = 0,
) -> None:
    """Dismiss a task that is not needed, with a reason."""
    from healthscore.monitoring.playbooks import dismiss_task

    project = open_project(project_dir)
    with _state_store(project) as store, _not_found_as_error():
        task = dismiss_task(store, task_id, by, reason=reason, now=_local_now(project))
    if json_output:
        print_json(task)
        return
    say(f"Dismissed task {task.id} ({task.playbook} for {task.account_id}).")


@contextmanager
def _not_found_as_error() -> Iterator[None]:
    """Report TaskNotFoundError as a ValueError, which the commands print."""
    from healthscore.monitoring.playbooks import TaskNotFoundError

    try:
        yield
    except TaskNotFoundError as exc:
        raise ValueError(str(exc)) from exc


# outcomes and interventions

FileArgument = Annotated[
    Path,
    typer.Argument(
        metavar="FILE.csv", help="CSV file with a header row.", dir_okay=False
    ),
]


AllowUnknownOption = Annotated[
    bool,
    typer.Option(
        "--allow-unknown",
        help="Store rows whose account is not in the accounts source.",
    ),
]


AllowFutureOption = Annotated[
    bool,
    typer.Option(
        "--allow-future",
        help="Store rows whose occurred_on is after today in the project's time zone.",
    ),
]


@outcomes_app.command("import")
@handle_errors
def import_outcomes_command(
    file: FileArgument,
    allow_unknown: AllowUnknownOption = False,
    allow_future: AllowFutureOption = False,
    replace: Annotated[
        bool,
        typer.Option(
            "--replace",
            help="Replace each stored outcome that a row conflicts with, or repeats "
            "with another arr_before or arr_after, by that row; the replaced "
            "outcomes are listed.",
        ),
    ] = False,
    project_dir: ProjectOption = Path("."),
    json_output: JsonOption = False,
    verbose: VerboseOption = 0,
) -> None:
    """Import outcomes: account_id, kind, occurred_on [, arr_before, arr_after, source].

    kind is churned, renewed, expanded or contracted, and occurred_on a date as
    YYYY-MM-DD. Nothing is stored when any row is invalid, names an account missing
    from the accounts source, or is dated after today. Nothing is stored either
    when a churn and another outcome of one account share a day, or when a churn
    follows an earlier churn of the account with no other outcome between them.
    One error lists every problem of the file. A row that repeats a stored outcome
    (same account, kind and day) is skipped. With --replace, a row replaces the
    stored outcomes that it conflicts with or repeats with another ARR. A churn
    dated on or before the first stored snapshot gets a warning.
    """
    from healthscore.monitoring.interventions import account_ids, import_outcomes
    from healthscore.store.snapshots import SnapshotStore

    project = open_project(project_dir)
    known = None if allow_unknown else account_ids(project)
    latest = None if allow_future else _local_now(project).date()
    scored = SnapshotStore(project.path(project.config.store.snapshots)).dates()
    with _state_store(project) as store:
        result = import_outcomes(
            store,
            file,
            known_accounts=known,
            latest_date=latest,
            first_scored=scored[0] if scored else None,
            replace=replace,
        )
    _report_import(result, "outcome", json_output)


@interventions_app.command("import")
@handle_errors
def import_interventions_command(
    file: FileArgument,
    allow_unknown: AllowUnknownOption = False,
    allow_future: AllowFutureOption = False,
    replace: Annotated[
        bool,
        typer.Option(
            "--replace",
            help="Replace each stored intervention that a row repeats with another "
            "note by that row; the replaced interventions are listed.",
        ),
    ] = False,
    project_dir: ProjectOption = Path("."),
    json_output: JsonOption = False,
    verbose: VerboseOption = 0,
) -> None:
    """Import interventions: account_id, kind, occurred_on, author [, note].

    kind is a playbook name or another kind of action, and occurred_on a date as
    YYYY-MM-DD. Nothing is stored when any row is invalid, names an account missing
    from the accounts source, or is dated after today. A row that repeats a stored
    intervention (same account, kind, day and author) is skipped. With --replace,
    it replaces the stored one when its note differs. Completed tasks are never
    replaced.
    """
    from healthscore.monitoring.interventions import account_ids, import_interventions

    project = open_project(project_dir)
    known = None if allow_unknown else account_ids(project)
    latest = None if allow_future else _local_now(project).date()
    with _state_store(project) as store:
        result = import_interventions(
            store, file, known_accounts=known, latest_date=latest, replace=replace
        )
    _report_import(result, "intervention", json_output)


def _report_import(result: ImportResult, noun: str, json_output: bool) -> None:
    for warning in result.warnings:
        note_wrapped(f"warning: {warning}")
    if json_output:
        print_json(result)
        return
    skipped = f"; skipped {result.skipped:,} already stored" if result.skipped else ""
    end = "."
    if result.replaced:
        end = f"; replaced {plural(len(result.replaced), f'stored {noun}')}:"
    say(f"Stored {plural(result.stored, noun)} from {result.file}{skipped}{end}")
    for row in result.replaced:
        say(f"  {_replaced_row(row)}")


def _replaced_row(row: dict[str, Any]) -> str:
    """Describe a replaced outcome or intervention on one line."""
    text = f"{row['account_id']} {row['kind']} on {row['occurred_on'].isoformat()}"
    if row.get("author"):
        text += f" by {row['author']}"
    elif row.get("source"):
        text += f" from {row['source']}"
    if row.get("replaced_by"):
        text += f", replaced by {row['replaced_by']}"
    return text


# effect


@handle_errors
def effect(
    horizon: Annotated[
        Duration,
        typer.Option(
            "--horizon",
            parser=_parse_duration_option,
            metavar="DURATION",
            help="Time after each intervention or alert over which churn and score "
            "change are measured, as 90d, 12w or 3mo (a month counts as 30 days).",
        ),
    ] = DEFAULT_HORIZON,
    project_dir: ProjectOption = Path("."),
    json_output: JsonOption = False,
    verbose: VerboseOption = 0,
) -> None:
    """Compare treated and comparable untreated accounts, and alert precision.

    Per intervention kind: churn rate and mean score change over the horizon of
    treated accounts against untreated accounts of the same band and segment, with
    95% confidence intervals. Per alert rule: the share of alerted accounts that
    churned within the horizon. Churn comes from the source backtests use
    (validation.labels): subscriptions that end without renewal, or imported churn
    outcomes.
    """
    from healthscore.monitoring.effect import measure_effect

    project = open_project(project_dir)
    with _state_store(project) as store:
        report = measure_effect(project, store, horizon)
    if json_output:
        print_json(report)
        return
    _print_effect(report)


def _print_effect(report: EffectReport) -> None:
    console = stdout_console()
    say(
        f"Horizon {report.horizon}; outcomes observed until "
        f"{report.observed_until.isoformat()}."
    )
    say_wrapped(f"{report.churn_note[:1].upper()}{report.churn_note[1:]}.")
    if report.playbooks:
        console.print(_effect_table(report))
    else:
        say("No interventions stored; complete tasks or import interventions.")
    for item in report.playbooks:
        skipped = ", ".join(f"{count} {key}" for key, count in item.skipped.items())
        say_wrapped(f"{item.kind}: left out {skipped}.")
    if report.alert_precision:
        console.print(_precision_table(report))
    for rule in report.alert_precision:
        left_out = {key: count for key, count in rule.skipped.items() if count}
        if left_out:
            counts = ", ".join(f"{count} {key}" for key, count in left_out.items())
            say_wrapped(f"{rule.rule}: left out {counts} alerts.")
    say_wrapped(report.caveat)


def _effect_table(report: EffectReport) -> Table:
    table = Table(title="Effect", box=box.SIMPLE_HEAD, title_justify="left")
    # A long kind folds, so that the rate columns keep their room.
    table.add_column("Kind", overflow="fold")
    for column in ("Treated", "Control"):
        table.add_column(column, no_wrap=True)
    # A rate with its interval wraps inside its cell, so the table fits 80 columns.
    # Every word of the headers and cells fits 8 columns, so none is cut.
    headers = (
        "Churn treated",
        "Churn control",
        "Churn diff. (95% CI)",
        "Score change diff. (95% CI)",
    )
    for column in headers:
        table.add_column(column, min_width=8, overflow="fold")
    for item in report.playbooks:
        _plain_row(
            table,
            item.kind,
            str(item.treated.units),
            str(item.control.units),
            _rate(item.treated.churn_rate, item.treated.churn_interval),
            _rate(item.control.churn_rate, item.control.churn_interval),
            _rate(item.churn_difference, item.churn_difference_interval),
            _points(item.score_change_difference, item.score_change_interval),
        )
    return table


def _precision_table(report: EffectReport) -> Table:
    table = Table(title="Alert precision", box=box.SIMPLE_HEAD, title_justify="left")
    for column in ("Rule", "Alerted accounts", "Churned", "Precision (95% CI)"):
        table.add_column(column, no_wrap=True)
    for item in report.alert_precision:
        _plain_row(
            table,
            item.rule,
            str(item.alerted),
            "-" if item.churned is None else str(item.churned),
            _rate(item.precision, item.interval),
        )
    return table


def _rate(value: float | None, interval: Interval) -> str:
    if value is None:
        return "-"
    if interval.low is None or interval.high is None:
        return f"{value:.1%}"
    return f"{value:.1%} ({interval.low:.1%} to {interval.high:.1%})"


def _points(value: float | None, interval: Interval) -> str:
    if value is None:
        return "-"
    if interval.low is None or interval.high is None:
        return f"{value:+.1f}"
    return f"{value:+.1f} ({interval.low:+.1f} to {interval.high:+.1f})"


# notes


@note_app.command("add")
@handle_errors
def note_add(
    account: Annotated[str, typer.Argument(metavar="ACCOUNT", help="Account id.")],
    author: Annotated[str, typer.Option("--author", help="Who wrote the note.")],
    text: Annotated[str, typer.Option("--text", help="Text of the note.")],
    sentiment: Annotated[
        int | None,
        typer.Option(
            "--sentiment",
            min=1,
            max=5,
            help="1 (very negative) to 5 (very positive).",
        ),
    ] = None,
    noted_on: Annotated[
        date | None,
        typer.Option(
            "--date",
            parser=parse_date,
            metavar="YYYY-MM-DD",
            help="Day the note is about; by default today.",
        ),
    ] = None,
    project_dir: ProjectOption = Path("."),
    json_output: JsonOption = False,
    verbose: VerboseOption = 0,
) -> None:
    """Add a note about an account."""
    from healthscore.monitoring.notes import add_note

    project = open_project(project_dir)
    check_account(project, account)
    with _state_store(project) as store:
        note = add_note(
            store,
            account,
            author=author,
            text=text,
            sentiment=sentiment,
            noted_on=noted_on,
            now=_local_now(project),
        )
    if json_output:
        print_json(note)
        return
    say(f"Added note {note.id} for account {account} on {note.noted_on.isoformat()}.")


@note_app.command("list")
@handle_errors
def note_list(
    account: Annotated[str, typer.Argument(metavar="ACCOUNT", help="Account id.")],
    project_dir: ProjectOption = Path("."),
    json_output: JsonOption = False,
    verbose: VerboseOption = 0,
) -> None:
    """List the notes of an account, newest first."""
    from healthscore.monitoring.notes import list_notes

    project = open_project(project_dir)
    with _state_store(project) as store:
        found = list_notes(store, account)
    if json_output:
        print_json(found)
        return
    if not found:
        say(f"No notes for account {account}.")
        return
    table = Table(box=box.SIMPLE_HEAD)
    for column in ("Id", "Date", "Author", "Sentiment"):
        table.add_column(column, no_wrap=True)
    table.add_column("Text", overflow="fold")
    for item in found:
        sentiment = "-" if item.sentiment is None else str(item.sentiment)
        _plain_row(
            table,
            str(item.id),
            item.noted_on.isoformat(),
            item.author,
            sentiment,
            item.text,
        )
    stdout_console().print(table)


@note_app.command("stale")
@handle_errors
def note_stale(
    validity: Annotated[
        Duration,
        typer.Option(
            "--validity",
            parser=_parse_duration_option,
            metavar="DURATION",
            help="How long a note stays valid, as 90d, 12w or 3mo.",
        ),
    ] = DEFAULT_VALIDITY,
    as_of: Annotated[
        date | None,
        typer.Option(
            "--as-of",
            parser=parse_date,
            metavar="YYYY-MM-DD",
            help="Date to check; by default today.",
        ),
    ] = None,
    project_dir: ProjectOption = Path("."),
    json_output: JsonOption = False,
    verbose: VerboseOption = 0,
) -> None:
    """List accounts whose latest note is older than the validity.

    Notes added with `healthscore note add` count, and so do the rows of the
    project's sources of kind notes.
    """
    from healthscore.monitoring.notes import latest_source_notes, stale_notes
    from healthscore.sources import as_of_point

    project = open_project(project_dir)
    day = as_of or _local_now(project).date()
    point = as_of_point(project, day)
    file_notes = None
    names = project.config.sources_of_kind("notes")
    if names:
        # Imported here: reading sources loads the engine, which most commands of
        # this module do not need.
        from healthscore.pipeline import open_engine

        sources = open_engine(project).sources
        file_notes = latest_source_notes(sources, names, point)
    with _state_store(project) as store:
        stale = stale_notes(store, day, validity, file_notes, point=point)
    if json_output:
        print_json(stale.to_dict(orient="records"))
        return
    if stale.empty:
        say(f"No stale notes as of {day.isoformat()} (validity {validity}).")
        return
    for row in stale.itertuples():
        say(
            f"{row.account_id}: stale, latest note {row.last_noted_on.isoformat()} "
            f"({row.age_days} days before {day.isoformat()})"
        )
