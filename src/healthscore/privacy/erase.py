"""Erasure of an account or a person from every copy that healthscore holds.

Copies are the score snapshots, the table exports, reports and subject exports in
the output folders, and the operational store. For an account, its rows are deleted.
For a person, the identifier is replaced by ``[erased]`` wherever it appears,
because the rows it appears in (an override's author, an alert's owner) belong to
accounts and are still needed. The snapshots and files are rewritten first and the
operational store last, in one transaction together with the audit entry. An
interrupted erasure can therefore be run again to finish it.

On SQLite, the erasure's transaction zeroes the content it deletes or overwrites
(`PRAGMA secure_delete`), and a checkpoint then moves the write-ahead log into the
database file and truncates the log. Until then, the log can keep the erased rows'
old page images. A reader, such as `healthscore serve` in the middle of a request,
can keep the checkpoint from finishing, and the report then names the log file.
"""

from __future__ import annotations

import logging
import os
import sqlite3
import uuid
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from sqlalchemy import Connection, delete, func, insert, select, update

from healthscore.config import Project
from healthscore.privacy.locate import (
    StateMatch,
    export_rows,
    exports_subject,
    frame_row_mask,
    json_rows,
    mention_cell_masks,
    mention_matches,
    mentioning_values,
    primary_key,
    report_mentions,
    state_matches,
    text_columns,
)
from healthscore.privacy.outputs import (
    UNREADABLE_FILE_ERRORS,
    UNSEARCHED_REASON,
    OutputFormat,
    output_files,
    output_format,
    read_json_file,
    read_table_file,
    unsearched_files,
    write_json_file,
    write_table_file,
)
from healthscore.privacy.subjects import (
    Subject,
    document_mentions,
    is_json_column,
    mention_paths,
    redact_document,
    subject_hash,
    text_mentions,
)
from healthscore.store.database import (
    BUSY_TIMEOUT_MS,
    is_memory_sqlite,
    parse_state_url,
    write_engine,
)
from healthscore.store.schema import audit
from healthscore.store.snapshot_tables import SnapshotTableWriter
from healthscore.store.snapshots import RESERVED_RUN_KEYS, SnapshotStore
from healthscore.store.state import StateStore

logger = logging.getLogger(__name__)

#: Audit action of an erasure.
FORGET_ACTION = "forget"

#: How long the checkpoint after an erasure waits for readers of a SQLite store to
#: leave the write-ahead log, in ms. Other writers, such as the web service, wait
#: while it does, so the wait is short; forget then warns and can be run again.
CHECKPOINT_TIMEOUT_MS = 2_000


@dataclass
class ErasureReport:
    """What an erasure removed, or with `dry_run` would remove, per place.

    Attributes
    ----------
    subject_kind : str
        ``account`` or ``person``.
    dry_run : bool
        Whether nothing was changed.
    snapshot_rows : dict
        Rows per table per as-of date (ISO text) of the snapshots.
    snapshot_fields : dict
        Per as-of date and table of `snapshot_rows`, the fields where the subject
        was found, with their counts (see below).
    state_rows : dict
        Rows per table of the operational store.
    state_fields : dict
        Per table of `state_rows`, the fields where the subject was found.
    file_rows : dict
        Rows per table export (path as text) in the output folders.
    file_fields : dict
        Per file of `file_rows`, the fields where the subject was found.
    deleted_reports : list of str
        HTML reports that mention the subject, deleted whole.
    deleted_exports : dict
        Exports of the subject itself (written by `export_subject`) in the output
        folders, deleted whole, with the rows each listed plus one for its subject
        entry.
    skipped_files : dict
        Files in the output folders that were not searched, with the reason: files
        that could not be read, and files of other kinds than those
        `healthscore.privacy.outputs` reads.
    event_rows : dict
        Per store source, the rows of the event store (``raw``) and of its daily
        rollup (``daily``), and when there were any, the Segment memberships
        dropped (``memberships``) and the names of ingested files in
        `ingested.json` that mentioned the subject (``origins``).
    event_fields : dict
        Per store source of `event_rows`, the fields where the subject was found,
        over its raw rows, rollups and memberships together, and ``origin`` for
        the names of ingested files.
    snapshot_table_dates : list of str
        Erased snapshot dates whose rows of `store.snapshot_table` under this
        project's key were written again from the erased snapshot. A date without
        rows under that key, such as one written under an earlier name, is not
        written. For an account, its rows of every date under the key are deleted
        too. Rows under other keys do not change.
    snapshot_table_rows : int
        Rows of the account that `store.snapshot_table` held under this project's
        key before the erasure, all deleted. 0 for a person.
    snapshot_table_other_rows : dict
        Rows of the account in `store.snapshot_table` under other project keys,
        which stay: other projects' rows, or this project's under an earlier name.
    audit_id : int or None
        Id of the audit entry; None for a dry run.
    uncheckpointed_wal : str or None
        Write-ahead log of a SQLite store (``state.db-wal``) that may still hold
        erased rows, because a reader kept the checkpoint after the erasure from
        truncating it. None when the log was truncated, for a dry run, and for
        PostgreSQL.

    A field is a column, or in a JSON document a key path such as
    ``detail.reason``. An account's deleted rows count under the fields that
    name it: ``account_id``, a JSON key path such as ``details.account_id``, or a
    column that references a deleted row, such as ``alert_id``. Other rows count
    under each field whose value mentioned the subject and had the mention
    replaced by ``[erased]``. A row counts once under each such field, or once
    per item for a key path inside a JSON list, so the counts of a table's fields
    can add up to more than its rows.
    """

    subject_kind: str
    dry_run: bool
    snapshot_rows: dict[str, dict[str, int]] = field(default_factory=dict)
    snapshot_fields: dict[str, dict[str, dict[str, int]]] = field(default_factory=dict)
    state_rows: dict[str, int] = field(default_factory=dict)
    state_fields: dict[str, dict[str, int]] = field(default_factory=dict)
    file_rows: dict[str, int] = field(default_factory=dict)
    file_fields: dict[str, dict[str, int]] = field(default_factory=dict)
    deleted_reports: list[str] = field(default_factory=list)
    deleted_exports: dict[str, int] = field(default_factory=dict)
    skipped_files: dict[str, str] = field(default_factory=dict)
    event_rows: dict[str, dict[str, int]] = field(default_factory=dict)
    event_fields: dict[str, dict[str, int]] = field(default_factory=dict)
    snapshot_table_dates: list[str] = field(default_factory=list)
    snapshot_table_rows: int = 0
    snapshot_table_other_rows: dict[str, int] = field(default_factory=dict)
    audit_id: int | None = None
    uncheckpointed_wal: str | None = None

    @property
    def total_rows(self) -> int:
        """Rows erased across snapshots, the snapshot table, the event store, files,
        subject exports and the state store."""
        snapshots = sum(sum(tables.values()) for tables in self.snapshot_rows.values())
        events = sum(sum(parts.values()) for parts in self.event_rows.values())
        return (
            snapshots
            + self.snapshot_table_rows
            + events
            + sum(self.state_rows.values())
            + sum(self.file_rows.values())
            + sum(self.deleted_exports.values())
        )

    def audit_detail(self, hashed_subject: str) -> dict[str, Any]:
        """Return the audit detail: counts and the hashed subject, no paths or ids."""
        return {
            "subject_hash": hashed_subject,
            "state_rows": dict(self.state_rows),
            "snapshot_rows": {day: dict(t) for day, t in self.snapshot_rows.items()},
            "snapshot_table_rows": self.snapshot_table_rows,
            "event_rows": {name: dict(p) for name, p in self.event_rows.items()},
            "files_rewritten": len(self.file_rows),
            "file_rows": sum(self.file_rows.values()),
            "reports_deleted": len(self.deleted_reports),
            "exports_deleted": len(self.deleted_exports),
        }


def forget(
    project: Project,
    subject: Subject,
    *,
    author: str,
    output_folders: Sequence[Path] = (),
    dry_run: bool = False,
    now: datetime | None = None,
) -> ErasureReport:
    """Erase `subject` from every store, the output folders and the event store.

    Parameters
    ----------
    project : Project
        Project whose stores are erased from.
    subject : Subject
        The account or person; see `account_subject` and `person_subject`.
    author : str
        Who runs the erasure, recorded as the audit actor.
    output_folders : sequence of Path
        Folders of table exports and reports to erase from, such as
        ``<project>/output``.
    dry_run : bool
        Count what would be erased and change nothing, not even the audit log.
    now : datetime, optional
        Timezone-aware time of the audit entry; by default the current time.

    Returns
    -------
    ErasureReport
        Rows erased per place, the audit entry's id, and on SQLite the write-ahead
        log if a reader kept it from being truncated.

    Raises
    ------
    ValueError
        When `author` is empty or `now` is naive.
    PrivacyError
        When the audit key file cannot be read.
    StateStoreError
        When the operational store cannot be opened or written.
    """
    at = now if now is not None else datetime.now(UTC)
    if at.tzinfo is None:
        raise ValueError(f"now must be timezone-aware, got {at!r}")
    if not dry_run and not author.strip():
        raise ValueError(
            "author must not be empty; give the name of the person running the erasure"
        )
    # Imported here: the event store's reader imports this package.
    from healthscore.privacy.retention import erase_event_store

    hashed = None if dry_run else subject_hash(project, subject)

    report = ErasureReport(subject.kind, dry_run)
    store = SnapshotStore(project.path(project.config.store.snapshots))
    # Counted before anything changes, so that a rerun after a failed table write
    # still finds the rows the table kept.
    _count_snapshot_table_rows(project, subject, report)
    report.snapshot_rows, report.snapshot_fields = erase_snapshot_dates(
        store, subject, dry_run=dry_run, at=at
    )
    report.snapshot_table_dates = erase_snapshot_table(
        project, store, subject, sorted(report.snapshot_rows), dry_run=dry_run
    )
    report.event_rows, report.event_fields = erase_event_store(
        project, subject, dry_run=dry_run
    )
    _erase_output_files(output_folders, subject, report)
    with StateStore.open(project.config.store.state, project.root) as state:
        connection_scope = (
            state.engine.connect() if dry_run else write_engine(state.engine).begin()
        )
        with connection_scope as connection:
            if not dry_run:
                _zero_erased_content(connection)
            report.state_rows, report.state_fields = erase_state(
                connection, subject, dry_run
            )
            if hashed is not None:
                report.audit_id = _record(connection, report, hashed, author, at)
        if not dry_run:
            report.uncheckpointed_wal = checkpoint_wal(state)

    logger.info(
        "%s %d rows of the %s (audit entry %s)",
        "found" if dry_run else "erased",
        report.total_rows,
        subject.kind,
        report.audit_id,
    )
    return report


# Snapshots


def erase_snapshots(
    store: SnapshotStore, subject: Subject, *, dry_run: bool, at: datetime
) -> dict[str, dict[str, int]]:
    """Rewrite every snapshot date that contains the subject, one date at a time.

    Each date is replaced through `SnapshotStore.write`, so readers see the old or
    the new partition and never a mix. Dates without the subject are not rewritten.

    Returns
    -------
    dict
        Rows erased per table, per as-of date in ISO form.
    """
    return erase_snapshot_dates(store, subject, dry_run=dry_run, at=at)[0]


def erase_snapshot_dates(
    store: SnapshotStore, subject: Subject, *, dry_run: bool, at: datetime
) -> tuple[dict[str, dict[str, int]], dict[str, dict[str, dict[str, int]]]]:
    """Erase like `erase_snapshots`, and also return where the subject was found.

    Returns
    -------
    tuple of dict
        Rows erased per table per as-of date, and per as-of date and table the
        fields that contained the subject with their counts (see `erase_frame_fields`).
        The fields of ``run.json`` are its key paths.
    """
    erased: dict[str, dict[str, int]] = {}
    erased_fields: dict[str, dict[str, dict[str, int]]] = {}
    for as_of in store.dates():
        tables = {name: store.read(as_of, name) for name in store.tables(as_of)}
        cleaned, counts, fields = _erase_tables(tables, subject)
        info = store.run_info(as_of)
        if document_mentions(info, subject) or text_mentions(info, subject):
            counts["run.json"] = 1
            fields["run.json"] = _sorted_counts(mention_paths(info, subject))
        if not counts:
            continue
        erased[as_of.isoformat()] = counts
        erased_fields[as_of.isoformat()] = fields
        if not dry_run:
            # NOTE: a scoring run of this same date that finishes between the read
            # above and this write is replaced by the older partition read above.
            run_info = _rewritten_run_info(info, cleaned, subject, counts, at)
            store.write(as_of, cleaned, run_info)
    return erased, erased_fields


def _count_snapshot_table_rows(
    project: Project, subject: Subject, report: ErasureReport
) -> None:
    """Fill the report's counts of the account's rows in `store.snapshot_table`."""
    settings = project.config.store.snapshot_table
    if settings is None or subject.kind != "account":
        return
    writer = SnapshotTableWriter(project, settings)
    counts = writer.account_rows(subject.identifier)
    report.snapshot_table_rows = counts.pop(writer.project_key, 0)
    report.snapshot_table_other_rows = counts


def erase_snapshot_table(
    project: Project,
    store: SnapshotStore,
    subject: Subject,
    dates: list[str],
    *,
    dry_run: bool,
) -> list[str]:
    """Write the project's rows of `store.snapshot_table` of erased dates again.

    `dates` are the as-of dates (ISO) whose snapshots `erase_snapshots` changed.
    Of those, the dates that have rows under the project's key (`project_key`)
    get them replaced by the erased scores, in one transaction. The other dates
    are not written, because any rows they have are under another key, such as
    another project's or this project's before a change of its name. Then the
    project's rows of an erased account are deleted on every date, such as dates
    whose snapshot is gone. Rows under other keys stay as they are. Returns the
    dates written, or those that would be in a dry run.

    Raises SnapshotTableError when the table cannot be written; the snapshots are
    erased by then, so running `forget` again finishes the erasure.
    """
    settings = project.config.store.snapshot_table
    if settings is None:
        return []
    with SnapshotTableWriter(project, settings) as writer:
        keyed = set(writer.key_dates())
        own = [day for day in dates if date.fromisoformat(day) in keyed]
        if dry_run:
            return own
        stored = [date.fromisoformat(day) for day in own]
        writer.write([(as_of, store.read(as_of, "scores")) for as_of in stored])
        if subject.kind == "account":
            writer.delete_account(subject.identifier)
    return own


def _erase_tables(
    tables: dict[str, pd.DataFrame], subject: Subject
) -> tuple[dict[str, pd.DataFrame], dict[str, int], dict[str, dict[str, int]]]:
    cleaned: dict[str, pd.DataFrame] = {}
    counts: dict[str, int] = {}
    fields: dict[str, dict[str, int]] = {}
    for name, frame in tables.items():
        cleaned[name], count, found = erase_frame_fields(frame, subject)
        if count:
            counts[name] = count
            fields[name] = found
    return cleaned, counts, fields


def erase_frame(frame: pd.DataFrame, subject: Subject) -> tuple[pd.DataFrame, int]:
    """Return `frame` without the subject, and the number of rows changed.

    Rows of an account are dropped. In the text cells of the other rows, each
    mention of the subject is replaced by ERASED, so a cell equal to a person
    becomes ERASED.
    """
    cleaned, count, _fields = erase_frame_fields(frame, subject)
    return cleaned, count


def erase_frame_fields(
    frame: pd.DataFrame, subject: Subject
) -> tuple[pd.DataFrame, int, dict[str, int]]:
    """Erase like `erase_frame`, and also count the rows per column that changed.

    The counts are by column name: ``account_id`` counts an account's rows that
    were dropped, and each text column the cells that mentioned the subject. A
    row counts once under each of its columns.
    """
    dropped = 0
    fields: dict[str, int] = {}
    if subject.kind == "account":
        mask = frame_row_mask(frame, subject)
        dropped = int(mask.sum())
        if dropped:
            fields["account_id"] = dropped
        frame = frame.loc[~mask].reset_index(drop=True)
    masks = mention_cell_masks(frame, subject)
    if not masks:
        return frame, dropped, fields
    redacted = frame.copy()
    changed = np.zeros(len(frame), dtype=bool)
    for column, mask in masks.items():
        redacted.loc[mask, column] = frame.loc[mask, column].map(subject.redact_text)
        changed |= mask
        fields[column] = int(mask.sum())
    return redacted, dropped + int(changed.sum()), _sorted_counts(fields)


def _rewritten_run_info(
    info: dict[str, Any],
    tables: dict[str, pd.DataFrame],
    subject: Subject,
    counts: dict[str, int],
    at: datetime,
) -> dict[str, Any]:
    """Return run.json for the rewritten date: counts updated, the erasure noted."""
    kept = {key: value for key, value in info.items() if key not in RESERVED_RUN_KEYS}
    rewritten: dict[str, Any] = redact_document(kept, subject)
    if "accounts" in rewritten and "scores" in tables:
        rewritten["accounts"] = len(tables["scores"])
    erasure = {
        "at": at.astimezone(UTC).isoformat(timespec="seconds"),
        "subject_kind": subject.kind,
        "rows": sum(counts.values()),
    }
    rewritten["erasures"] = [*rewritten.get("erasures", []), erasure]
    return rewritten


# Output folders


def _erase_output_files(
    folders: Sequence[Path], subject: Subject, report: ErasureReport
) -> None:
    """Rewrite table exports and delete reports and exports of the subject.

    Files that cannot be read and files of other kinds go into the report's
    `skipped_files`, and the caller warns once about each.
    """
    for path in output_files(folders):
        found = output_format(path)
        assert found is not None
        try:
            if found.kind == "report":
                _erase_report(path, subject, report)
            elif found.kind in ("json", "jsonl"):
                _erase_json_file(path, found, subject, report)
            else:
                _erase_table_file(path, found, subject, report)
        except UNREADABLE_FILE_ERRORS as exc:
            # A warning logged here too would repeat for a dry run and the erasure.
            logger.info("skipped %s during erasure: %s", path, exc)
            reason = str(exc).strip().splitlines()[0]
            report.skipped_files[str(path)] = (
                f"{reason}; erase the subject from it yourself or delete it"
            )
    for path in unsearched_files(folders):
        report.skipped_files[str(path)] = (
            f"{UNSEARCHED_REASON}; erase the subject from it yourself or delete it"
        )


def _erase_report(path: Path, subject: Subject, report: ErasureReport) -> None:
    if not report_mentions(path, subject):
        return
    report.deleted_reports.append(str(path))
    if not report.dry_run:
        path.unlink()


def _erase_json_file(
    path: Path, found: OutputFormat, subject: Subject, report: ErasureReport
) -> None:
    """Delete an export of the subject, or rewrite any other JSON without it.

    The records of a JSON Lines file are taken as one list.
    """
    document = read_json_file(path)
    if exports_subject(document, subject):
        # Every row in it is about the subject, and its file name often is too.
        report.deleted_exports[str(path)] = export_rows(document)
        if not report.dry_run:
            path.unlink()
        return
    erased, count = erase_json(document, subject)
    if not count:
        return
    report.file_rows[str(path)] = count
    report.file_fields[str(path)] = _sorted_counts(mention_paths(document, subject))
    if not report.dry_run:
        _replace_file(path, partial(write_json_file, document=erased, like=found))


def _erase_table_file(
    path: Path, found: OutputFormat, subject: Subject, report: ErasureReport
) -> None:
    frame = read_table_file(path)
    cleaned, count, fields = erase_frame_fields(frame, subject)
    if not count:
        return
    report.file_rows[str(path)] = count
    report.file_fields[str(path)] = fields
    if not report.dry_run:
        _replace_file(path, partial(write_table_file, frame=cleaned, like=found))


def erase_json(document: Any, subject: Subject) -> tuple[Any, int]:
    """Return a JSON document without the subject, and the number of changes.

    Every list is taken as a list of records, at any depth under the keys of
    objects (see `json_records`). An account's records are dropped, and each
    mention of the subject in the other records is replaced by ERASED. A record
    dropped or changed counts once. Outside lists, each value that mentions the
    subject is redacted and counts once.
    """
    if isinstance(document, list):
        kept: list[Any] = []
        count = 0
        for record in document:
            if subject.kind == "account" and document_mentions(record, subject):
                count += 1
                continue
            redacted = redact_document(record, subject)
            count += redacted != record
            kept.append(redacted)
        return kept, count
    if isinstance(document, dict):
        erased: dict[str, Any] = {}
        total = 0
        for key, value in document.items():
            erased[key], count = erase_json(value, subject)
            total += count
        return erased, total
    redacted = redact_document(document, subject)
    return redacted, int(redacted != document)


def _replace_file(path: Path, write: Callable[[Path], None]) -> None:
    """Write the new content beside `path`, then rename it over `path`."""
    temporary = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
    try:
        write(temporary)
        os.replace(temporary, path)
    finally:
        temporary.unlink(missing_ok=True)


# Operational store


def erase_state(
    connection: Connection, subject: Subject, dry_run: bool
) -> tuple[dict[str, int], dict[str, dict[str, int]]]:
    """Delete an account's rows, or erase a person's identifier, in every state table.

    Tables are visited so that rows referencing an account's rows (such as the
    deliveries of its alerts) are deleted before the rows they reference. Then each
    mention of the subject in the text columns and JSON documents of the remaining
    rows (a note, an override reason, an API token's name) is replaced by ERASED.

    Returns
    -------
    tuple of dict
        Rows per table that were (or, with `dry_run`, would be) changed, and per
        table the fields where the subject was found (see `state_fields`).
    """
    counts: dict[str, int] = {}
    fields: dict[str, Counter[str]] = {}
    deleted: dict[str, Any] = {}
    if subject.kind == "account":
        for match in state_matches(connection, subject):
            deleted[match.table.name] = match.where
            count = _count(connection, match.table, match.where)
            if not count:
                continue
            counts[match.table.name] = count
            fields[match.table.name] = state_fields(connection, match, subject)
            if not dry_run:
                connection.execute(delete(match.table).where(match.where))
    # Outside a dry run the rows to delete are gone already, so none is excluded.
    excluded = deleted if dry_run else {}
    for match in mention_matches(connection, subject, excluded):
        count = _count(connection, match.table, match.where)
        if not count:
            continue
        counts[match.table.name] = counts.get(match.table.name, 0) + count
        found = state_fields(connection, match, subject)
        fields[match.table.name] = fields.get(match.table.name, Counter()) + found
        if not dry_run:
            _redact_mentions(connection, match.table, subject)
    return counts, {table: _sorted_counts(found) for table, found in fields.items()}


def state_fields(
    connection: Connection, match: StateMatch, subject: Subject
) -> Counter[str]:
    """Count the rows of a match per field that ties them to the subject.

    A JSON column is broken down by key path, as ``detail.reason``, and counts the
    strings there that mention the subject (see `mention_paths`).
    """
    found: Counter[str] = Counter()
    for name, clause in match.fields.items():
        column = match.table.c[name]
        if is_json_column(column):
            for (document,) in connection.execute(select(column).where(clause)):
                found += mention_paths(document, subject, name)
        else:
            found[name] += _count(connection, match.table, clause)
    return +found


def _sorted_counts(counts: Mapping[str, int]) -> dict[str, int]:
    return {name: counts[name] for name in sorted(counts) if counts[name]}


def _zero_erased_content(connection: Connection) -> None:
    """Make SQLite overwrite deleted and replaced content with zeros.

    Without it, a deleted row or the old text of an updated one stays in the free
    space of its page, and the checkpoint copies that page into the database file.
    The setting lasts for the connection, which belongs to the erasure's own engine.
    """
    if connection.dialect.name == "sqlite":
        connection.exec_driver_sql("PRAGMA secure_delete = ON")


def checkpoint_wal(state: StateStore) -> str | None:
    """Move a SQLite store's write-ahead log into the database file and truncate it.

    `PRAGMA wal_checkpoint(TRUNCATE)` waits up to `CHECKPOINT_TIMEOUT_MS` for
    readers that still use the log. Returns the log's path when a reader kept the
    checkpoint from finishing, so the log may still hold erased rows. Returns None
    when it finished, and for PostgreSQL and in-memory SQLite, which have no log
    file.
    """
    url = state.engine.url
    if url.get_backend_name() != "sqlite" or is_memory_sqlite(url):
        return None
    connection = state.engine.raw_connection()
    try:
        cursor = connection.cursor()
        try:
            database = _main_database_file(cursor)
            if not database:
                return None
            busy = _run_checkpoint(cursor)
        finally:
            cursor.close()
    finally:
        connection.close()
    if not busy:
        return None
    wal = f"{database}-wal"
    # The report returns the log to the caller, which warns once about it.
    logger.info(
        "could not truncate %s after the erasure, because another connection was "
        "reading from it, so it may still hold erased rows",
        wal,
    )
    return wal


def checkpoint_project_wal(project: Project) -> str | None:
    """Checkpoint the project's store like `checkpoint_wal`, if it is on SQLite.

    A rerun of an erasure that finds nothing more to erase calls it, so that its
    checkpoint can finish where the first one was kept from it. PostgreSQL is not
    opened.
    """
    url = project.config.store.state
    if parse_state_url(url).get_backend_name() != "sqlite":
        return None
    with StateStore.open(url, project.root) as state:
        return checkpoint_wal(state)


def _main_database_file(cursor: Any) -> str:
    """Return the path of the main database file, or "" for a temporary database."""
    for _number, name, path in cursor.execute("PRAGMA database_list").fetchall():
        if name == "main":
            return str(path or "")
    return ""


def _run_checkpoint(cursor: Any) -> bool:
    """Run a TRUNCATE checkpoint and return whether readers kept it from finishing."""
    cursor.execute(f"PRAGMA busy_timeout = {int(CHECKPOINT_TIMEOUT_MS)}")
    try:
        busy, _frames, _copied = cursor.execute(
            "PRAGMA wal_checkpoint(TRUNCATE)"
        ).fetchone()
    except sqlite3.OperationalError as exc:
        code = getattr(exc, "sqlite_errorcode", None)
        if code not in (sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED):
            raise
        busy = 1
    finally:
        cursor.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
    return bool(busy)


def _count(connection: Connection, table: Any, where: Any) -> int:
    query = select(func.count()).select_from(table).where(where)
    return int(connection.execute(query).scalar_one())


def _redact_mentions(connection: Connection, table: Any, subject: Subject) -> None:
    documents = list(json_rows(connection, table, subject, in_text=True))
    for column in text_columns(table):
        for value in mentioning_values(connection, column, subject):
            connection.execute(
                update(table)
                .where(column == value)
                .values({column.name: subject.redact_text(value)})
            )
    key = primary_key(table)
    for row_key, column, document in documents:
        connection.execute(
            update(table)
            .where(key == row_key)
            .values({column.name: redact_document(document, subject)})
        )


def _record(
    connection: Connection,
    report: ErasureReport,
    hashed_subject: str,
    author: str,
    at: datetime,
) -> int:
    statement = (
        insert(audit)
        .values(
            at=at,
            actor=author,
            action=FORGET_ACTION,
            subject_kind=report.subject_kind,
            count=report.total_rows,
            detail=report.audit_detail(hashed_subject),
        )
        .returning(audit.c.id)
    )
    return int(connection.execute(statement).scalar_one())
