"""Commands of the event store.

`ingest` appends files, `retain` purges old raw days and `compact` merges the part
files of each raw day.
"""

from __future__ import annotations

from datetime import date
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from healthscore.cli.common import (
    JsonOption,
    ProjectOption,
    VerboseOption,
    handle_errors,
    note,
    open_project,
    parse_date,
    plural,
    print_json,
    say,
)

if TYPE_CHECKING:
    from healthscore.config import Project
    from healthscore.sources.ingest import IngestedFile

# Modules that load pandas, DuckDB or SQLAlchemy are imported inside the functions
# that use them, so that `healthscore --help` does not load them.


@handle_errors
def ingest(
    files: Annotated[
        list[Path],
        typer.Argument(
            metavar="FILE...",
            help="Files to append, in any format the source's settings read.",
            dir_okay=False,
        ),
    ],
    source: Annotated[
        str,
        typer.Option(
            "--source", metavar="NAME", help="Store source (path: store) to append to."
        ),
    ],
    project_dir: ProjectOption = Path("."),
    json_output: JsonOption = False,
    verbose: VerboseOption = 0,
) -> None:
    """Append files to the event store of a source, with their daily rollups.

    Each file is read with the source's settings (format or importer, columns,
    lookups, pseudonymization). Nothing is stored when a row of any file fails a
    check. A file whose content was ingested before is skipped.
    """
    from healthscore.sources.ingest import ingest_files

    project = open_project(project_dir)
    results = ingest_files(project, source, files)
    if json_output:
        print_json(results)
        return
    for result in results:
        if result.skipped:
            say(f"Skipped {result.file}: the same content was ingested before.")
            continue
        say(
            f"Stored {plural(result.rows, 'row')} of {result.file} in "
            f"{plural(len(result.days), 'day')}."
        )
        if result.memberships:
            say(f"Stored {plural(result.memberships, 'user-to-account membership')}.")
        if result.duplicates:
            note(
                f"Left out {plural(result.duplicates, 'row')} whose messageId was "
                "stored before or repeated in the file."
            )
        if result.rollup_only_days:
            note(
                f"{plural(len(result.rollup_only_days), 'day')} of {result.file} "
                "had been purged already; their rows were added to the daily "
                "rollup only."
            )
        if result.unknown_accounts is not None and result.unknown_accounts.rows:
            note(_unknown_accounts_note(project, source, result))


def _unknown_accounts_note(project: Project, source: str, result: IngestedFile) -> str:
    """Describe the stored rows of `result` whose account the accounts source lacks."""
    unknown = result.unknown_accounts
    assert unknown is not None
    listed = ", ".join(unknown.ids)
    if unknown.accounts > len(unknown.ids):
        listed += f" and {unknown.accounts - len(unknown.ids)} more"
    accounts = project.config.accounts_source()
    where = project.config.sources[accounts].path or accounts
    rows = (
        f"1 stored row of {result.file} names an account"
        if unknown.rows == 1
        else f"{unknown.rows:,} stored rows of {result.file} name accounts"
    )
    return (
        f"warning: {rows} not in source {accounts!r} ({where}): {listed}. "
        "Scoring leaves these rows out, and source reports count them as 'account "
        "id not found in the accounts source', until that source lists their "
        "account. Add the accounts to it, or, when the file uses other ids, map "
        f"them to account ids with sources.{source}.lookups.account_id."
    )


@handle_errors
def retain_command(
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Only list the days that would go.")
    ] = False,
    rebuild_rollups: Annotated[
        bool,
        typer.Option(
            "--rebuild-rollups",
            help="First compute the rollup of every raw day again from its rows, "
            "for days kept because their rollup was missing or stale.",
        ),
    ] = False,
    today: Annotated[
        date | None,
        typer.Option(
            "--today",
            parser=parse_date,
            metavar="YYYY-MM-DD",
            help="Date the retention ages count back from.",
            show_default="today in the project's time zone",
        ),
    ] = None,
    project_dir: ProjectOption = Path("."),
    json_output: JsonOption = False,
    verbose: VerboseOption = 0,
) -> None:
    """Purge raw days of the event store older than the retention age.

    A day is purged only when its daily rollup exists and counts the same rows, so
    metrics on the rollup sources keep their values.
    """
    from healthscore.privacy.retention import retain
    from healthscore.report import project_today

    project = open_project(project_dir)
    day = today or project_today(project)
    results = retain(project, day, dry_run=dry_run, rebuild_rollups=rebuild_rollups)
    if json_output:
        print_json(results)
        return
    if not results:
        say("No store source has a retention age; nothing to purge.")
        return
    verb = "Would purge" if dry_run else "Purged"
    for result in results:
        rows = sum(result.purged.values())
        say(
            f"{verb} {plural(len(result.purged), 'raw day')} "
            f"({plural(rows, 'row')}) of {result.source} before "
            f"{result.cutoff.isoformat()}."
        )
        for kept, reason in result.kept.items():
            note(f"warning: kept {result.source} {kept.isoformat()}: {reason}")
        if result.kept:
            note("Run `healthscore retain --rebuild-rollups` to compute them again.")


@handle_errors
def compact_command(
    source: Annotated[
        list[str] | None,
        typer.Option(
            "--source",
            metavar="NAME",
            help="Store source to compact; repeat for more.",
            show_default="every store source",
        ),
    ] = None,
    max_parts: Annotated[
        int | None,
        typer.Option(
            "--max-parts",
            min=1,
            help="Merge a day's part files when it has more than this many.",
            show_default="store.compact_parts",
        ),
    ] = None,
    before: Annotated[
        date | None,
        typer.Option(
            "--before",
            parser=parse_date,
            metavar="YYYY-MM-DD",
            help="Only merge days before this date.",
            show_default="every day",
        ),
    ] = None,
    project_dir: ProjectOption = Path("."),
    json_output: JsonOption = False,
    verbose: VerboseOption = 0,
) -> None:
    """Merge the raw part files of each event store day into one file.

    Every append adds a part file to each day it touches, so a day that received
    events one request at a time has many small files. Merging keeps every row
    once. It takes the source's lock, so it can run while the service appends.
    """
    from healthscore.sources.ingest import compact_store

    project = open_project(project_dir)
    results = compact_store(project, source, max_parts=max_parts, before=before)
    if json_output:
        print_json(results)
        return
    for name, days in results.items():
        parts = sum(days.values())
        say(
            f"Compacted {plural(len(days), 'day')} of {name} "
            f"({plural(parts, 'part')} merged)."
        )
