"""Commands of the event store: `ingest` appends files, `retain` purges old raw days."""

from __future__ import annotations

from datetime import date
from pathlib import Path
from typing import Annotated

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
from healthscore.privacy.retention import retain
from healthscore.report import project_today
from healthscore.sources.ingest import ingest_files


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
        if result.rollup_only_days:
            note(
                f"{plural(len(result.rollup_only_days), 'day')} of {result.file} "
                "had been purged already; their rows were added to the daily "
                "rollup only."
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
