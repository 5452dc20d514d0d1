"""The `override` commands: add, list and remove manual scores."""

from __future__ import annotations

import difflib
from datetime import date, datetime
from pathlib import Path
from typing import Annotated
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
)
from healthscore.config import Project
from healthscore.config.overrides import Override
from healthscore.report import project_today, read_account_sources
from healthscore.store import StateStore

override_app = typer.Typer(
    help="Add, list and remove manual overrides of scores.",
    no_args_is_help=True,
)


def state_store(project: Project) -> StateStore:
    """Open the project's operational store (store.state in healthscore.yml)."""
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
            help="Last as-of date on which the override applies; today or later.",
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
    """Set a manual score for one account, with a reason, an author and an expiry."""
    project = open_project(project_dir)
    if measure is not None:
        _check_measure(project, measure)
    _check_account(project, account)
    now = datetime.now(ZoneInfo(project.config.timezone))
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


def _check_measure(project: Project, measure: str) -> None:
    names = sorted(
        {
            item.measure_name
            for card in project.config.scorecards
            for component in card.components.values()
            for item in component.measures
        }
    )
    if measure in names:
        return
    close = difflib.get_close_matches(measure, names, n=1, cutoff=0.6)
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    raise ValueError(
        f"unknown measure {measure!r}{hint}; the scorecards' measures are: "
        f"{', '.join(names)}"
    )


def _check_account(project: Project, account: str) -> None:
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
    include_expired: Annotated[
        bool, typer.Option("--all", help="Also list expired overrides.")
    ] = False,
    project_dir: ProjectOption = Path("."),
    json_output: JsonOption = False,
    verbose: VerboseOption = 0,
) -> None:
    """List the overrides that apply today or later (with --all, expired ones too)."""
    project = open_project(project_dir)
    today = project_today(project)
    with state_store(project) as store:
        overrides = store.list_overrides(include_expired=include_expired, as_of=today)
    if json_output:
        print_json(overrides)
        return
    if not overrides:
        scope = "" if include_expired else " active today or later"
        say(f"No overrides{scope}.")
        return
    stdout_console().print(_override_table(overrides, today))


def _override_table(overrides: list[Override], today: date) -> Table:
    table = Table(
        title=f"Overrides (today is {today.isoformat()})",
        box=box.SIMPLE_HEAD,
        title_justify="left",
    )
    for column in ("Id", "Account", "Replaces", "Score", "Expires", "Author"):
        table.add_column(column, no_wrap=True)
    table.add_column("Reason", overflow="fold")
    for item in overrides:
        expired = " (expired)" if item.expires_on < today else ""
        table.add_row(
            str(item.id),
            item.account_id,
            item.target,
            f"{item.score:g}",
            f"{item.expires_on.isoformat()}{expired}",
            item.author,
            item.reason,
        )
    return table


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
