"""The privacy commands: `forget` erases a subject, `export-subject` exports one."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from healthscore.cli.common import (
    JsonOption,
    ProjectOption,
    VerboseOption,
    handle_errors,
    note,
    open_project,
    plural,
    print_json,
    say,
)
from healthscore.cli.reports import REPORT_FOLDER
from healthscore.config import Project

# Modules that load pandas, DuckDB or SQLAlchemy are imported inside the functions
# that use them, so that `healthscore --help` does not load them.
if TYPE_CHECKING:
    from healthscore.privacy import ErasureReport, Subject

AccountOption = Annotated[
    str | None,
    typer.Option("--account", metavar="ID", help="Account id, as in the accounts."),
]
PersonOption = Annotated[
    str | None,
    typer.Option(
        "--person",
        metavar="ID-OR-EMAIL",
        help="Person's identifier or email, as in the sources or as typed into "
        "healthscore (emails match in any letter case).",
    ),
]


def choose_subject(
    project: Project, account: str | None, person: str | None
) -> Subject:
    """Build the subject from exactly one of --account and --person."""
    from healthscore.privacy import account_subject, person_subject

    if (account is None) == (person is None):
        raise typer.BadParameter("give exactly one of --account and --person")
    if account is not None:
        return account_subject(account)
    assert person is not None
    return person_subject(project, person)


def output_folders(project: Project) -> list[Path]:
    """Folders of reports and exports that are erased from and exported."""
    return [project.root / REPORT_FOLDER]


@handle_errors
def forget_command(
    account: AccountOption = None,
    person: PersonOption = None,
    author: Annotated[
        str | None,
        typer.Option(
            "--author", help="Who runs the erasure; recorded in the audit log."
        ),
    ] = None,
    yes: Annotated[
        bool, typer.Option("--yes", help="Erase without asking for confirmation.")
    ] = False,
    dry_run: Annotated[
        bool,
        typer.Option("--dry-run", help="Only count what would be erased."),
    ] = False,
    project_dir: ProjectOption = Path("."),
    json_output: JsonOption = False,
    verbose: VerboseOption = 0,
) -> None:
    """Erase an account or a person from snapshots, event store, outputs and state.

    An account's rows are deleted. A person's identifier is replaced by a marker.
    The audit log records who erased how many rows, with a keyed hash in place of the
    subject. The source files are not changed: erase the subject there yourself.
    """
    from healthscore.privacy import forget
    from healthscore.privacy.erase import checkpoint_project_wal

    project = open_project(project_dir)
    subject = choose_subject(project, account, person)
    if not dry_run and not (author or "").strip():
        raise typer.BadParameter(
            "--author is required unless --dry-run is given", param_hint="--author"
        )
    folders = output_folders(project)
    plan = forget(project, subject, author="", output_folders=folders, dry_run=True)
    if dry_run:
        _print_report(plan, json_output)
        return
    if plan.total_rows == 0 and not plan.deleted_reports:
        # A rerun after a checkpoint that a reader blocked finds nothing to erase,
        # and its checkpoint truncates the log that may still hold the erased rows.
        plan.uncheckpointed_wal = checkpoint_project_wal(project)
        if json_output:
            print_json(plan)
        else:
            say(
                f"Found no rows of the {plan.subject_kind}, so nothing was erased and "
                "no audit entry was recorded. Your own source files may still hold it."
            )
            _warn_skipped(plan)
            _warn_other_keys(plan)
            _warn_wal(plan)
        _exit_if_log_kept(plan)
        return
    if not yes:
        _print_report(plan, json_output=False, to_stderr=True)
        if not typer.confirm("Erase these rows? This cannot be undone", err=True):
            note("Nothing was erased.")
            raise typer.Exit(code=1)
    done = forget(project, subject, author=author or "", output_folders=folders)
    _print_report(done, json_output)
    _exit_if_log_kept(done)


#: Exit status of `forget` when the erasure was committed but SQLite's write-ahead
#: log could not be truncated, so erased rows may remain in a file until a rerun.
LOG_KEPT_STATUS = 2


def _exit_if_log_kept(report: ErasureReport) -> None:
    """Exit with LOG_KEPT_STATUS when the report names a log that may hold rows."""
    if report.uncheckpointed_wal is not None:
        raise typer.Exit(code=LOG_KEPT_STATUS)


def _print_report(
    report: ErasureReport, json_output: bool, to_stderr: bool = False
) -> None:
    if json_output:
        print_json(report)
        return
    write = note if to_stderr else say
    verb = "Would erase" if report.dry_run else "Erased"
    write(f"{verb} {plural(report.total_rows, 'row')} of the {report.subject_kind}.")
    places = (
        report.snapshot_fields,
        report.state_fields,
        report.event_fields,
        report.file_fields,
    )
    if any(places):
        write(
            f"  In brackets: the fields that held the {report.subject_kind}, with "
            "their counts."
        )
    deleting = "would delete" if report.dry_run else "deleted"
    for as_of, tables in report.snapshot_rows.items():
        by_table = report.snapshot_fields.get(as_of, {})
        listed = ", ".join(
            f"{name} {count:,}{_fields_text(by_table.get(name))}"
            for name, count in tables.items()
        )
        write(f"  snapshot {as_of}: {listed}")
    table_parts = []
    if report.snapshot_table_dates:
        rewrite = "would write again" if report.dry_run else "wrote again"
        dates = plural(len(report.snapshot_table_dates), "date")
        table_parts.append(f"{rewrite} the rows of {dates}")
    if report.snapshot_table_rows:
        rows = plural(report.snapshot_table_rows, "row")
        table_parts.append(f"{deleting} the account's {rows}")
    if table_parts:
        write(f"  store.snapshot_table: {', and '.join(table_parts)}")
    for name, parts in report.event_rows.items():
        fields = _fields_text(report.event_fields.get(name))
        write(f"  event store {name}: {_counts(parts)}{fields}")
    for table, count in report.state_rows.items():
        fields = _fields_text(report.state_fields.get(table))
        write(f"  state store {table}: {plural(count, 'row')}{fields}")
    for path, count in report.file_rows.items():
        fields = _fields_text(report.file_fields.get(path))
        write(f"  {path}: {plural(count, 'row')}{fields}")
    for path in report.deleted_reports:
        write(f"  {path}: report {deleting}; run `healthscore report` to rebuild it")
    for path in report.deleted_exports:
        write(f"  {path}: export of this subject {deleting}")
    if not to_stderr:
        # A plan printed to stderr is followed by the result, which warns once.
        _warn_skipped(report)
        _warn_other_keys(report)
        _warn_wal(report)
    if report.audit_id is not None:
        write(f"Recorded audit entry {report.audit_id}.")


def _warn_skipped(report: ErasureReport) -> None:
    for path, reason in report.skipped_files.items():
        note(f"warning: {path} was not searched: {reason}")


def _warn_other_keys(report: ErasureReport) -> None:
    others = report.snapshot_table_other_rows
    if not others:
        return
    keys = ", ".join(
        f"{key!r} ({plural(count, 'row')})" for key, count in others.items()
    )
    note(
        "warning: store.snapshot_table also holds rows of the account under other "
        f"project keys, which were left as they are: {keys}. They are other "
        "projects' rows, or this project's written before a change of its name or "
        "of store.snapshot_table.project; delete those of this project in the "
        "database, or run forget in the project that wrote them."
    )


def _warn_wal(report: ErasureReport) -> None:
    if report.uncheckpointed_wal is None:
        return
    wal = report.uncheckpointed_wal
    database = wal.removesuffix("-wal")
    note(
        f"warning: {database} and its write-ahead log {wal} may still hold the "
        "erased rows, because another connection to the state store (such as "
        "`healthscore serve` during a request) kept SQLite from moving the log into "
        "the database file. Run the "
        "same `healthscore forget` command again when the store is idle, or stop "
        "`healthscore serve`: SQLite moves the log into the database file and "
        "deletes it when the last connection closes."
    )


def _counts(tables: dict[str, int]) -> str:
    return ", ".join(f"{name} {count:,}" for name, count in tables.items())


def _fields_text(fields: dict[str, int] | None) -> str:
    """Return ` (owner 2, detail.reason 1)` for the fields of one place, or ""."""
    if not fields:
        return ""
    return f" ({_counts(fields)})"


@handle_errors
def export_subject_command(
    output: Annotated[
        Path,
        typer.Option(
            "--output", metavar="FILE.json", help="JSON file to write the export to."
        ),
    ],
    account: AccountOption = None,
    person: PersonOption = None,
    project_dir: ProjectOption = Path("."),
    json_output: JsonOption = False,
    verbose: VerboseOption = 0,
) -> None:
    """Write everything stored about an account or a person to a JSON file.

    The file has the subject's snapshot rows per date, its raw and rollup rows in
    the event store and the ingested file names that mention it, its rows in every
    state table (overrides, alerts, tasks, notes
    and others), its rows in the exports of the output folder and the reports that
    mention it.
    """
    from healthscore.privacy import export_subject, write_export

    if output.suffix.lower() != ".json":
        raise typer.BadParameter(
            f"unsupported extension {output.suffix or '(none)'!r} of {output}; the "
            "export is JSON, so use .json",
            param_hint="--output",
        )
    project = open_project(project_dir)
    subject = choose_subject(project, account, person)
    document = export_subject(project, subject, output_folders(project))
    write_export(document, output)
    summary: dict[str, Any] = {
        "output": output,
        "snapshot_dates": len(document["snapshots"]),
        "state_rows": {name: len(rows) for name, rows in document["state"].items()},
        "event_rows": {
            name: {part: len(rows) for part, rows in parts.items() if part != "origins"}
            for name, parts in document["events"].items()
        },
        "ingested_files": sum(
            len(parts.get("origins", [])) for parts in document["events"].values()
        ),
        "files": len(document["files"]),
        "reports": len(document["reports"]),
    }
    if json_output:
        print_json(summary)
        return
    rows = sum(summary["state_rows"].values())
    events = sum(sum(parts.values()) for parts in summary["event_rows"].values())
    say(
        f"Wrote the {subject.kind}'s data to {output}: {summary['snapshot_dates']} "
        f"snapshot dates, {rows} state rows, {events} event store rows, "
        f"{plural(summary['ingested_files'], 'ingested file name')}, "
        f"{summary['files']} export files and {summary['reports']} reports."
    )
