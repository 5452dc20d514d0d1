"""The `override` commands: add, list and remove manual scores."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any
from zoneinfo import ZoneInfo

import typer
from rich import box
from rich.table import Table

from healthscore.cli.common import (
    JsonOption,
    ProjectOption,
    VerboseOption,
    handle_errors,
    open_project,
    parse_date,
    print_json,
    say,
    stdout_console,
    to_json,
)
from healthscore.config import Project
from healthscore.config.overrides import Override

# Modules that load pandas, DuckDB or SQLAlchemy are imported inside the functions
# that use them, so that `healthscore --help` does not load them.
if TYPE_CHECKING:
    from healthscore.store import StateStore

override_app = typer.Typer(
    help="Add, list and remove manual overrides of scores.",
    no_args_is_help=True,
)


def state_store(project: Project) -> StateStore:
    """Open the project's operational store (store.state in healthscore.yml)."""
    from healthscore.store import StateStore

    return StateStore.open(project.config.store.state, project.root)


@override_app.command("add")
@handle_errors
def add(
    account: Annotated[
        str, typer.Argument(metavar="ACCOUNT", help="Account id, as in the accounts.")
    ],
    score: Annotated[
        float,
        typer.Option(
            "--score", min=0, max=100, help="Score from 0 to 100 that applies instead."
        ),
    ],
    reason: Annotated[
        str, typer.Option("--reason", help="Why the computed score is wrong.")
    ],
    author: Annotated[str, typer.Option("--author", help="Who sets the override.")],
    expires: Annotated[
        date,
        typer.Option(
            "--expires",
            parser=parse_date,
            metavar="YYYY-MM-DD",
            help="Last as-of date on which the override applies (included); today "
            "or later. Every earlier as-of date is covered too.",
        ),
    ],
    measure: Annotated[
        str | None,
        typer.Option(
            "--measure",
            help="Measure whose normalized score is replaced; by default the whole "
            "score.",
        ),
    ] = None,
    project_dir: ProjectOption = Path("."),
    json_output: JsonOption = False,
    verbose: VerboseOption = 0,
) -> None:
    """Set a manual score for one account, with a reason, an author and an expiry.

    The override applies to every as-of date up to and including its expiry date,
    also to dates before it was created: rescoring an earlier date applies it too.
    Remove it with `override remove` to stop it applying to any date.
    """
    project = open_project(project_dir)
    now = datetime.now(ZoneInfo(project.config.timezone))
    _check_expires(expires, now.date(), project.config.timezone)
    check_account(project, account)
    if measure is not None:
        _check_measure(project, account, measure)
    with state_store(project) as store:
        override_id = store.add_override(
            account,
            score=score,
            reason=reason,
            author=author,
            expires_on=expires,
            measure=measure,
            now=now,
        )
    target = "the score" if measure is None else f"measure {measure!r}"
    if json_output:
        print_json({"id": override_id, "account_id": account, "measure": measure})
        return
    say(
        f"Added override {override_id}: {target} of account {account} is {score:g} "
        f"up to {expires.isoformat()}."
    )


def _check_expires(expires: date, today: date, zone: str) -> None:
    """Raise ValueError naming --expires when `expires` is before `today`.

    The store makes the same check, but its message names its own field.
    """
    if expires < today:
        raise ValueError(
            f"--expires {expires.isoformat()} is in the past (today is "
            f"{today.isoformat()} in the project time zone {zone}); give today or a "
            "later date"
        )


def _check_measure(project: Project, account: str, measure: str) -> None:
    """Raise ValueError unless the account's scorecard has `measure`.

    The account's scorecard is the one that scored it on the latest stored date;
    without a stored score the measure is checked against every scorecard.
    """
    from healthscore import pipeline
    from healthscore.scoring.overriding import override_measure_problem, scored_with

    scorecards = project.config.scorecards
    store = pipeline.snapshot_store(project)
    latest = store.latest()
    scored = None
    if latest is not None:
        scores = store.read(latest, "scores")
        rows = scores[scores["account_id"].astype(str) == account]
        row = None if rows.empty else rows.iloc[0]
        scored = scored_with(scorecards, latest, row)
    problem = override_measure_problem(measure, scorecards, account, scored)
    if problem is not None:
        raise ValueError(f"--measure: {problem}")


def check_account(project: Project, account: str) -> None:
    """Raise ValueError when `account` is not an id of the accounts source."""
    from healthscore.report import read_account_sources

    accounts = read_account_sources(project).accounts()
    if account not in accounts.index:
        source = project.config.accounts_source()
        raise ValueError(
            f"account {account!r} not found in the accounts source {source!r}; check "
            "the account id"
        )


@override_app.command("list")
@handle_errors
def list_overrides(
    include_all: Annotated[
        bool,
        typer.Option(
            "--all",
            help="Also list expired overrides, and removed ones with when and by "
            "whom they were removed.",
        ),
    ] = False,
    project_dir: ProjectOption = Path("."),
    json_output: JsonOption = False,
    verbose: VerboseOption = 0,
) -> None:
    """List the overrides in force today or later; --all adds expired and removed."""
    from healthscore.report import project_today

    project = open_project(project_dir)
    today = project_today(project)
    with state_store(project) as store:
        listed = [
            ListedOverride(item)
            for item in store.list_overrides(include_expired=include_all, as_of=today)
        ]
        if include_all:
            listed = sorted(listed + removed_overrides(store), key=_creation_order)
    if json_output:
        print_json([item.to_json() for item in listed])
        return
    if not listed:
        scope = "" if include_all else " active today or later"
        say(f"No overrides{scope}.")
        return
    stdout_console().print(_override_table(listed, today, show_removed=include_all))


@dataclass(frozen=True)
class ListedOverride:
    """An override as listed, with its removal when it was removed."""

    override: Override
    removed_at: datetime | None = None
    removed_by: str | None = None

    def to_json(self) -> dict[str, Any]:
        data: dict[str, Any] = to_json(self.override)
        # Written like `created_at`, which pydantic renders in UTC with a `Z`.
        removed = self.removed_at
        data["removed_at"] = (
            None if removed is None else removed.isoformat().replace("+00:00", "Z")
        )
        data["removed_by"] = self.removed_by
        return data


def removed_overrides(store: StateStore) -> list[ListedOverride]:
    """Read the removed overrides, which the store keeps with their removal time.

    The person who removed one is the actor of its `remove` entry in the audit log,
    or None when that entry is missing.
    """
    from sqlalchemy import select

    from healthscore.store.schema import overrides as overrides_table
    from healthscore.store.state import OVERRIDE_SUBJECT

    query = select(overrides_table).where(overrides_table.c.removed_at.is_not(None))
    with store.engine.connect() as connection:
        rows = connection.execute(query).all()
    removers = {
        entry.detail.get("override_id"): entry.actor
        for entry in store.audit_entries(OVERRIDE_SUBJECT)
        if entry.action == "remove"
    }
    return [
        ListedOverride(
            _override_from_row(row),
            removed_at=row.removed_at.astimezone(UTC),
            removed_by=removers.get(row.id),
        )
        for row in rows
    ]


def _override_from_row(row: Any) -> Override:
    return Override(
        id=row.id,
        account_id=row.account_id,
        measure=row.measure,
        score=row.score,
        reason=row.reason,
        author=row.author,
        created_at=row.created_at.astimezone(UTC),
        expires_on=row.expires_on,
    )


def _creation_order(item: ListedOverride) -> tuple[datetime, int]:
    return item.override.created_at, item.override.id or 0


def _override_table(
    listed: list[ListedOverride], today: date, *, show_removed: bool
) -> Table:
    table = Table(
        title=f"Overrides (today is {today.isoformat()})",
        box=box.SIMPLE_HEAD,
        title_justify="left",
    )
    columns = ["Id", "Account", "Replaces", "Score", "Expires", "Author"]
    if show_removed:
        columns.append("Removed")
    for column in columns:
        table.add_column(column, no_wrap=True)
    table.add_column("Reason", overflow="fold")
    for entry in listed:
        table.add_row(*_override_cells(entry, today, show_removed=show_removed))
    return table


def _override_cells(
    entry: ListedOverride, today: date, *, show_removed: bool
) -> list[str]:
    item = entry.override
    expired = " (expired)" if item.expires_on < today else ""
    cells = [
        str(item.id),
        item.account_id,
        item.target,
        f"{item.score:g}",
        f"{item.expires_on.isoformat()}{expired}",
        item.author,
    ]
    if show_removed:
        cells.append(_removal_text(entry))
    return [*cells, item.reason]


def _removal_text(entry: ListedOverride) -> str:
    """Render `2024-05-02 14:30 UTC by bob`, or `-` for an override still in force."""
    if entry.removed_at is None:
        return "-"
    when = entry.removed_at.strftime("%Y-%m-%d %H:%M UTC")
    return f"{when} by {entry.removed_by or 'unknown (no audit entry)'}"


@override_app.command("remove")
@handle_errors
def remove(
    override_id: Annotated[
        int, typer.Argument(metavar="ID", help="Id of the override, from `list`.")
    ],
    author: Annotated[
        str, typer.Option("--author", help="Who removes it; recorded in the audit log.")
    ],
    project_dir: ProjectOption = Path("."),
    json_output: JsonOption = False,
    verbose: VerboseOption = 0,
) -> None:
    """Remove an override so that it no longer applies to any date."""
    project = open_project(project_dir)
    with state_store(project) as store:
        store.remove_override(override_id, author)
    if json_output:
        print_json({"id": override_id, "removed": True})
        return
    say(f"Removed override {override_id}.")
