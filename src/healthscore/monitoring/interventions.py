"""Outcomes and interventions: what happened to accounts, and what was done for them.

Both are imported from CSV files. An import checks every row first and stores nothing
when any row is invalid; otherwise all rows go in one transaction. A problem names the
data row, counted from 1 without blank lines, and the file's line, counted from 1 with
the header and blank lines, for example `row 2 (line 4)`. One error lists every
problem of a file: invalid values, repeated rows and, for outcomes, conflicts.
With `replace`, a row of the file replaces the stored rows that it repeats with other
values or, for outcomes, conflicts with, in the same transaction.
Completing a task stores an intervention too (see `healthscore.monitoring.playbooks`).
"""

from __future__ import annotations

import csv
import logging
import math
from collections.abc import Callable, Collection, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from itertools import groupby
from operator import attrgetter
from pathlib import Path
from typing import Any

import pandas as pd
from sqlalchemy import Connection, Table, delete, insert, select, tuple_
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import DBAPIError

from healthscore.config import Project
from healthscore.dates import EARLIEST_DATE, LATEST_DATE, iso_date
from healthscore.store import StateStore, StateStoreError
from healthscore.store.database import describe_url, lock_for_write, write_engine
from healthscore.store.schema import audit
from healthscore.store.tables_tasks import OUTCOME_KINDS, interventions, outcomes

logger = logging.getLogger(__name__)

#: Problems of one kind listed in one error message; the rest are counted.
MAX_LISTED_ERRORS = 20

OUTCOME_COLUMNS = ("account_id", "kind", "occurred_on")
OUTCOME_OPTIONAL = ("arr_before", "arr_after", "source")
#: Columns that identify an outcome, as the store's unique constraint does.
OUTCOME_KEY = ("account_id", "kind", "occurred_on")
#: Columns whose difference lets a row that repeats a stored outcome replace it with
#: `replace`. The source only records where a row comes from, so it does not count,
#: but the replacing row's source is stored.
OUTCOME_VALUES = ("arr_before", "arr_after")
INTERVENTION_COLUMNS = ("account_id", "kind", "occurred_on", "author")
INTERVENTION_OPTIONAL = ("note",)
#: Columns that identify an imported intervention: a repeat of them is skipped.
INTERVENTION_KEY = ("account_id", "kind", "occurred_on", "author")
#: Columns that a row repeating a stored intervention can change with `replace`.
INTERVENTION_VALUES = ("note",)


#: Last line of a conflict error when a stored outcome takes part in a conflict.
REPLACE_HINT = (
    "If a stored outcome named above is wrong, pass --replace to replace it with the "
    "row that conflicts with it."
)
UNKNOWN_ACCOUNT_HINT = (
    "Fix the ids, add the accounts to the accounts source, or pass --allow-unknown "
    "to store them anyway."
)


class ImportValidationError(ValueError):
    """A CSV file with invalid rows or columns; nothing of it was stored."""


@dataclass(frozen=True)
class ImportResult:
    """Rows stored by an import, rows skipped because they were already stored, and
    stored rows that the import replaced."""

    file: Path
    stored: int
    skipped: int
    warnings: tuple[str, ...] = ()
    """Problems with stored rows that did not stop the import, one message each."""
    replaced: tuple[dict[str, Any], ...] = ()
    """Stored rows that the import deleted because rows of the file replace them.

    Each has the columns of its table and `replaced_by`, the row of the file that
    replaces it, such as `row 2 (line 3)`.
    """


@dataclass(frozen=True)
class Difference:
    """A row that repeats a stored row with other values, so it was skipped."""

    location: str
    """The row's place, such as `row 2 (line 3)` or `outcomes[2]`."""
    changed: dict[str, tuple[Any, Any]]
    """Each column whose value differs, with the stored value and the row's value."""


@dataclass(frozen=True)
class RowChanges:
    """Changes that storing rows makes, decided before anything is written."""

    new: list[dict[str, Any]]
    """Rows to insert."""
    replaced: list[dict[str, Any]]
    """Stored rows to delete, with their `id` and `replaced_by`."""
    skipped: int
    """Rows not inserted because they repeat a stored row."""
    differing: list[Difference] = field(default_factory=list)
    """Skipped rows whose other values differ from the stored row."""


@dataclass(frozen=True)
class StoredRows:
    """Rows that a write stored and skipped, and the stored rows it replaced."""

    stored: int
    skipped: int
    replaced: list[dict[str, Any]]
    """Deleted rows with the columns of their table and `replaced_by`."""
    differing: list[Difference]
    """Skipped rows whose other values differ from the stored row."""


@dataclass
class ImportProblems:
    """Problems of rows to store, by kind, raised together in one error."""

    invalid: list[str] = field(default_factory=list)
    repeated: list[str] = field(default_factory=list)
    conflicts: list[str] = field(default_factory=list)
    hints: list[str] = field(default_factory=list)
    """Sentences after the problems that explain how to fix them."""

    def raise_if_any(self, origin: Path | str) -> None:
        """Raise ImportValidationError listing every problem, if there is one."""
        sections = (
            (self.invalid, "invalid value", "invalid values"),
            (self.repeated, "repeated row", "repeated rows"),
            (self.conflicts, "conflict between outcomes", "conflicts between outcomes"),
        )
        counts = [
            f"{len(found):,} {singular if len(found) == 1 else plural}"
            for found, singular, plural in sections
            if found
        ]
        if not counts:
            return
        summary = counts[0]
        if len(counts) > 1:
            summary = f"{', '.join(counts[:-1])} and {counts[-1]}"
        lines = [f"{origin} has {summary}; nothing was stored:"]
        for found, _singular, _plural in sections:
            lines += [f"  {problem}" for problem in found[:MAX_LISTED_ERRORS]]
            if len(found) > MAX_LISTED_ERRORS:
                lines.append(f"  and {len(found) - MAX_LISTED_ERRORS:,} more")
        raise ImportValidationError("\n".join(lines + self.hints))


# Imports


def import_outcomes(
    state: StateStore,
    path: Path,
    *,
    now: datetime | None = None,
    known_accounts: Collection[str] | None = None,
    latest_date: date | None = None,
    first_scored: date | None = None,
    replace: bool = False,
) -> ImportResult:
    """Store the outcomes of a CSV file, all of them or none.

    Columns: `account_id`, `kind` (churned, renewed, expanded or contracted),
    `occurred_on` (YYYY-MM-DD), and optionally `arr_before`, `arr_after` (numbers of
    at least 0) and `source` (default: the file name). With both ARR values, an
    expanded row needs `arr_after` above `arr_before`, and a contracted row below
    (see `arr_change_problem`). A row with the account, kind and date of a stored
    outcome is skipped, so a grown file can be imported again.
    With `known_accounts`, a row whose account is not in it is invalid. With
    `latest_date` (usually today), a row dated after it is invalid.

    The rows are also checked against each other and the stored outcomes of their
    accounts (see `plan_outcomes`), which `replace` lets rows replace. With
    `first_scored`, the as-of date of the first stored snapshot, a churn on or
    before it gets a warning in the result.

    Raises
    ------
    ImportValidationError
        When a column is missing or unknown, a row is invalid or repeated, or two
        outcomes conflict. The message names the file, row and column of each
        problem, and lists the problems of every kind.
    """
    parsed = _read_rows(
        path,
        OUTCOME_COLUMNS,
        OUTCOME_OPTIONAL,
        _outcome_row,
        latest_date,
        known_accounts,
    )
    for row in parsed.rows:
        row["source"] = row["source"] or path.name
    problems = parsed.problems(OUTCOME_KEY)
    warnings: list[str] = []

    def plan(stored: list[dict[str, Any]]) -> RowChanges:
        changes = plan_outcomes(
            path, parsed.rows, stored, replace=replace, problems=problems
        )
        warnings.extend(early_churn_warnings(path, parsed.rows, stored, first_scored))
        return changes

    written = store_outcomes(state, parsed.rows, origin=path, now=now, plan=plan)
    if written.differing:
        warnings.append(
            _differing_warning(
                path,
                [difference.location for difference in written.differing],
                "outcome",
                OUTCOME_KEY,
                OUTCOME_VALUES,
            )
        )
    logger.info("imported %d outcomes from %s", written.stored, path)
    if written.replaced:
        logger.info("replaced %d stored outcomes", len(written.replaced))
    # The caller shows the warnings, so they are not logged as well.
    return ImportResult(
        path, written.stored, written.skipped, tuple(warnings), tuple(written.replaced)
    )


def store_outcomes(
    state: StateStore,
    rows: list[dict[str, Any]],
    *,
    origin: Path | dict[str, Any],
    actor: str = "import",
    now: datetime | None = None,
    plan: Callable[[list[dict[str, Any]]], RowChanges] | None = None,
) -> StoredRows:
    """Store checked outcome rows in one transaction, all of them or none.

    `plan` gets the stored outcomes of the rows' accounts and returns the changes,
    usually with `plan_outcomes`. It runs in the transaction before any row is
    written, so an exception it raises stores nothing. Without it, a row with the
    account, kind and date of a stored outcome is skipped, and nothing is checked.
    `origin` (the file, or a description of the request) goes into the audit
    entries. Concurrent calls run one after the other, so each one checks the rows
    that the others stored. A row whose account, kind and date another writer
    stored after this one read the stored outcomes is skipped too.
    """
    imported_at = _aware_now(now)
    with write_transaction(state) as connection:
        lock_for_write(connection, "outcomes")
        stored = _stored_outcomes_of(
            connection, {row["account_id"] for row in rows if row["account_id"]}
        )
        if plan is None:
            changes = _plan_repeats(rows, stored, OUTCOME_KEY, OUTCOME_VALUES)
        else:
            changes = plan(stored)
        return _write_changes(
            connection,
            outcomes,
            changes,
            {"imported_at": imported_at},
            at=imported_at,
            subject="outcome",
            origin=origin,
            actor=actor,
            unique_key=OUTCOME_KEY,
        )


def import_interventions(
    state: StateStore,
    path: Path,
    *,
    now: datetime | None = None,
    known_accounts: Collection[str] | None = None,
    latest_date: date | None = None,
    replace: bool = False,
) -> ImportResult:
    """Store the interventions of a CSV file, all of them or none.

    Columns: `account_id`, `kind` (the playbook name, or another kind of action),
    `occurred_on` (YYYY-MM-DD), `author`, and optionally `note`. A row equal in
    account, kind, date and author to an imported intervention is skipped, unless
    `replace` is true and its note differs, in which case it replaces the stored
    one. With
    `known_accounts`, a row whose account is not in it is invalid. With
    `latest_date` (usually today), a row dated after it is invalid.

    Raises
    ------
    ImportValidationError
        When a column is missing or unknown or a row is invalid or repeated. The
        message names the file, row and column of each problem.
    """
    parsed = _read_rows(
        path,
        INTERVENTION_COLUMNS,
        INTERVENTION_OPTIONAL,
        _intervention_row,
        latest_date,
        known_accounts,
    )
    parsed.problems(INTERVENTION_KEY).raise_if_any(path)
    written = store_interventions(
        state, parsed.rows, origin=path, now=now, replace=replace
    )
    warnings: tuple[str, ...] = ()
    if written.differing:
        warnings = (
            _differing_warning(
                path,
                [difference.location for difference in written.differing],
                "intervention",
                INTERVENTION_KEY,
                INTERVENTION_VALUES,
            ),
        )
    logger.info("imported %d interventions from %s", written.stored, path)
    if written.replaced:
        logger.info("replaced %d stored interventions", len(written.replaced))
    return ImportResult(
        path, written.stored, written.skipped, warnings, tuple(written.replaced)
    )


def store_interventions(
    state: StateStore,
    rows: list[dict[str, Any]],
    *,
    origin: Path | dict[str, Any],
    actor: str = "import",
    now: datetime | None = None,
    replace: bool = False,
) -> StoredRows:
    """Store checked intervention rows in one transaction, all of them or none.

    A row equal in account, kind, date and author to a stored intervention is
    skipped. With `replace`, such a row whose note differs replaces the stored
    intervention instead, unless that one is a completed task. Completed tasks are
    never replaced, so a row that repeats only a completed task is skipped whatever
    its note. Concurrent calls run one after the other, so a repeat of a row that
    another call stores is skipped as well.
    """
    created_at = _aware_now(now)
    with write_transaction(state) as connection:
        lock_for_write(connection, "interventions")
        imported, task_keys = _stored_interventions_of(connection, rows)
        task_keys -= {_intervention_key(row) for row in imported}
        planned = [row for row in rows if _intervention_key(row) not in task_keys]
        changes = _plan_repeats(
            planned, imported, INTERVENTION_KEY, INTERVENTION_VALUES, replace
        )
        repeats_of_tasks = len(rows) - len(planned)
        changes = RowChanges(
            changes.new,
            changes.replaced,
            changes.skipped + repeats_of_tasks,
            changes.differing,
        )
        return _write_changes(
            connection,
            interventions,
            changes,
            {"created_at": created_at, "task_id": None},
            at=created_at,
            subject="intervention",
            origin=origin,
            actor=actor,
        )


def _plan_repeats(
    rows: list[dict[str, Any]],
    stored: list[dict[str, Any]],
    key: tuple[str, ...],
    values: tuple[str, ...],
    replace: bool = False,
) -> RowChanges:
    """Decide which rows repeat a stored row (same `key`) and which are new.

    A repeat is skipped, unless `replace` is true and one of its `values` differs,
    in which case it replaces the stored row.
    """
    stored_by_key = {tuple(row[name] for name in key): row for row in stored}
    new: list[dict[str, Any]] = []
    replaced: list[dict[str, Any]] = []
    differing: list[Difference] = []
    skipped = 0
    for row in rows:
        old = stored_by_key.get(tuple(row[name] for name in key))
        if old is None:
            new.append(row)
        elif all(row[name] == old[name] for name in values):
            skipped += 1
        elif replace:
            new.append(row)
            replaced.append({**old, "replaced_by": row.get(LOCATION)})
        else:
            skipped += 1
            changed = {
                name: (old[name], row[name])
                for name in values
                if row[name] != old[name]
            }
            differing.append(Difference(row.get(LOCATION) or "a row", changed))
    return RowChanges(new, replaced, skipped, differing)


def _write_changes(
    connection: Connection,
    table: Table,
    changes: RowChanges,
    defaults: dict[str, Any],
    *,
    at: datetime,
    subject: str,
    origin: Path | dict[str, Any],
    actor: str,
    unique_key: tuple[str, ...] | None = None,
) -> StoredRows:
    """Delete the replaced rows, insert the new ones with `defaults`, and record
    both in the audit log with `subject` as the kind of row.

    With `unique_key`, the columns of a unique constraint of `table`, a new row
    that repeats a row stored since the plan was made is skipped, not an error.
    """
    if changes.replaced:
        replaced_ids = [row["id"] for row in changes.replaced]
        connection.execute(delete(table).where(table.c.id.in_(replaced_ids)))
    new = [{**_without_location(row), **defaults} for row in changes.new]
    inserted = len(new)
    if new and unique_key is not None:
        inserted = _insert_skipping_repeats(connection, table, new, unique_key)
    elif new:
        connection.execute(insert(table), new)
    skipped = changes.skipped + len(new) - inserted
    record_audit(connection, at, "import", subject, inserted, origin, actor)
    replaced = [
        {name: value for name, value in row.items() if name != "id"}
        for row in changes.replaced
    ]
    if replaced:
        detail: dict[str, Any] = (
            {"file": str(origin)} if isinstance(origin, Path) else dict(origin)
        )
        detail["replaced"] = [
            {
                name: value.isoformat() if isinstance(value, date) else value
                for name, value in row.items()
            }
            for row in replaced
        ]
        record_audit(connection, at, "replace", subject, len(replaced), detail, actor)
    return StoredRows(inserted, skipped, replaced, changes.differing)


def _insert_skipping_repeats(
    connection: Connection,
    table: Table,
    rows: list[dict[str, Any]],
    unique_key: tuple[str, ...],
) -> int:
    """Insert the rows whose `unique_key` is not stored yet; return how many."""
    statement: postgresql.Insert | sqlite.Insert
    if connection.dialect.name == "postgresql":
        statement = postgresql.insert(table)
    else:
        statement = sqlite.insert(table)
    skipping = statement.on_conflict_do_nothing(index_elements=list(unique_key))
    # A row skipped by ON CONFLICT DO NOTHING returns no id.
    inserted = connection.execute(skipping.returning(table.c.id), rows)
    return len(inserted.all())


def _differing_warning(
    path: Path,
    locations: list[str],
    noun: str,
    key: tuple[str, ...],
    values: tuple[str, ...],
) -> str:
    """Warn that rows at `locations` repeat stored rows with other `values`."""
    listed = ", ".join(locations[:MAX_LISTED_ERRORS])
    if len(locations) > MAX_LISTED_ERRORS:
        listed += f" and {len(locations) - MAX_LISTED_ERRORS:,} more"
    if len(values) == 1:
        other = f"another {values[0]}"
    else:
        other = f"other values of {', '.join(values[:-1])} or {values[-1]}"
    if len(locations) == 1:
        counted, pronoun = f"1 row repeats a stored {noun}", "It was"
    else:
        counted, pronoun = f"{len(locations):,} rows repeat stored {noun}s", "They were"
    return (
        f"{path}: {counted} (same {', '.join(key[:-1])} and {key[-1]}) with {other}: "
        f"{listed}. {pronoun} skipped; pass --replace to store the values of the file."
    )


def _outcome_key(row: dict[str, Any]) -> tuple[Any, ...]:
    return tuple(row[name] for name in OUTCOME_KEY)


def _intervention_key(row: dict[str, Any]) -> tuple[Any, ...]:
    return tuple(row[name] for name in INTERVENTION_KEY)


def _stored_interventions_of(
    connection: Connection, rows: list[dict[str, Any]]
) -> tuple[list[dict[str, Any]], set[tuple[Any, ...]]]:
    """Find the stored interventions that share the account and kind of a row.

    Returns the imported ones, with their id and note, and the INTERVENTION_KEY
    values of the completed tasks.
    """
    columns = interventions.c
    keys = {(row["account_id"], row["kind"]) for row in rows}
    names = (*INTERVENTION_KEY, *INTERVENTION_VALUES, "id")
    query = select(*(columns[name] for name in names), columns.task_id)
    query = query.where(tuple_(columns.account_id, columns.kind).in_(list(keys)))
    imported: list[dict[str, Any]] = []
    task_keys: set[tuple[Any, ...]] = set()
    for found in connection.execute(query.order_by(columns.id)):
        values = {name: found._mapping[name] for name in names}
        if found.task_id is None:
            imported.append(values)
        else:
            task_keys.add(_intervention_key(values))
    return imported, task_keys


# Reading and checking CSV rows

RowParser = Callable[[dict[str, str], list[tuple[str, str]]], dict[str, Any]]


#: Key of a parsed row that stores its place in the file, removed before storing.
LOCATION = "_location"


@dataclass(frozen=True)
class _ParsedFile:
    """The rows of a CSV file and the problems of their values."""

    rows: list[dict[str, Any]]
    """Parsed rows with their LOCATION; a value that is not valid is None."""
    invalid: list[str]
    """Invalid values, as `row N (line L), column C: message`."""
    unknown_found: bool
    """Whether a row names an account missing from the known accounts."""

    def problems(self, key: tuple[str, ...]) -> ImportProblems:
        """Collect the invalid values, and the rows that repeat another's `key`."""
        return ImportProblems(
            invalid=list(self.invalid),
            repeated=_repeats(self.rows, key),
            hints=[UNKNOWN_ACCOUNT_HINT] if self.unknown_found else [],
        )


def _read_rows(
    path: Path,
    required: tuple[str, ...],
    optional: tuple[str, ...],
    parse: RowParser,
    latest_date: date | None = None,
    known_accounts: Collection[str] | None = None,
) -> _ParsedFile:
    """Parse every row, collecting each problem as (column, message) per row.

    Each parsed row gets its location (`row N (line L)`) under LOCATION. With
    `known_accounts`, an account missing from it is one more problem of its row,
    so one error lists every invalid row.

    Raises
    ------
    ImportValidationError
        When the header is missing or wrong, or the file has no rows.
    """
    rows: list[dict[str, Any]] = []
    problems: list[str] = []
    known = None if known_accounts is None else set(known_accounts)
    unknown_found = False
    if not Path(path).is_file():
        raise ValueError(f"{path}: file not found; check the path")
    with open(path, encoding="utf-8-sig", newline="", errors="strict") as handle:
        reader = csv.reader(_utf8_lines(handle, path))
        header = next(reader, None)
        _check_header(path, header, required, optional)
        assert header is not None
        last_line = reader.line_num
        for cells in reader:
            # A record starts on the line after the previous one ended. A quoted
            # field with line breaks makes one record span several lines.
            first_line, last_line = last_line + 1, reader.line_num
            if not cells:
                continue
            location = f"row {len(rows) + 1:,} (line {first_line:,})"
            errors: list[tuple[str, str]] = []
            if len(cells) > len(header):
                errors.append(("", "has more cells than the header has columns"))
            elif len(cells) < len(header):
                # A missing cell shifts the later values into the wrong columns.
                errors.append(
                    (
                        "",
                        "has fewer cells than the header has columns; write every "
                        "cell, an empty one as nothing between two commas",
                    )
                )
            raw = dict(zip(header, cells, strict=False))
            row = parse(raw, errors)
            account = row.get("account_id")
            if known is not None and account and account not in known:
                errors.append(
                    (
                        "account_id",
                        f"{account!r} is not an account of the accounts source",
                    )
                )
                unknown_found = True
            _check_not_after(row, latest_date, errors)
            problems.extend(
                f"{location}{f', column {column}' if column else ''}: {message}"
                for column, message in errors
            )
            rows.append({**row, LOCATION: location})
    if not rows:
        raise ImportValidationError(
            f"{path} has a header but no rows; nothing was stored. Add a row per "
            "outcome or intervention below the header"
        )
    return _ParsedFile(rows, problems, unknown_found)


def _check_not_after(
    row: dict[str, Any], latest_date: date | None, errors: list[tuple[str, str]]
) -> None:
    day = row.get("occurred_on")
    if latest_date is None or day is None or day <= latest_date:
        return
    errors.append(
        (
            "occurred_on",
            f"{day.isoformat()} is after today ({latest_date.isoformat()} in the "
            "project's time zone); fix the date, or pass --allow-future to store it",
        )
    )


def _without_location(row: dict[str, Any]) -> dict[str, Any]:
    return {name: value for name, value in row.items() if name != LOCATION}


def _utf8_lines(handle: Any, path: Any) -> Iterator[str]:
    """Lines of a text file, with a clear error when it is not UTF-8."""
    try:
        yield from handle
    except UnicodeDecodeError:
        raise ValueError(
            f"{path}: the file is not UTF-8 text; save it as UTF-8"
        ) from None


def _check_header(
    path: Path,
    header: Sequence[str] | None,
    required: tuple[str, ...],
    optional: tuple[str, ...],
) -> None:
    if not header:
        raise ImportValidationError(
            f"{path} is empty; the first row must name the columns "
            f"{', '.join(required)}"
        )
    missing = [name for name in required if name not in header]
    # Spreadsheet exports often end the header with empty cells.
    unnamed = [str(index) for index, name in enumerate(header, 1) if not name.strip()]
    named = [name for name in header if name.strip()]
    unknown = [name for name in named if name not in required + optional]
    # A row's dict would keep only the last cell of a repeated name.
    repeated = [name for name in dict.fromkeys(named) if named.count(name) > 1]
    if missing or unknown or repeated or unnamed:
        parts = []
        if unnamed:
            noun = "column" if len(unnamed) == 1 else "columns"
            parts.append(
                f"{noun} {', '.join(unnamed)} (counting from 1) without a name, "
                "which must be deleted"
            )
        if missing:
            noun = "column" if len(missing) == 1 else "columns"
            parts.append(f"missing {noun} {', '.join(missing)}")
        if unknown:
            noun = "column" if len(unknown) == 1 else "columns"
            parts.append(f"unknown {noun} {', '.join(unknown)}")
        if repeated:
            noun = "column" if len(repeated) == 1 else "columns"
            parts.append(f"repeated {noun} {', '.join(repeated)}")
        message = (
            f"{path}, line 1: {'; '.join(parts)}; the columns are "
            f"{', '.join(required)} and optionally {', '.join(optional)}"
        )
        separator = _other_separator(header)
        if separator:
            message += (
                f". The header is one column that contains {separator!r}, so save "
                "the file with commas between the columns"
            )
        raise ImportValidationError(message)


def _other_separator(header: Sequence[str]) -> str | None:
    """Return the separator of a header that csv read as one column, if it has one."""
    if len(header) != 1:
        return None
    return next((sep for sep in (";", "\t", "|") if sep in header[0]), None)


def account_ids(project: Project) -> set[str]:
    """Read the account ids of the project's accounts source (its valid rows)."""
    # Imported here: the engine reads every source, which this module needs rarely.
    from healthscore.engine import connect
    from healthscore.sources.reader import quote, read_source

    name = project.config.accounts_source()
    backend = connect(project)
    try:
        loaded = read_source(backend.con, project, name, project.config.sources[name])
        rows = backend.con.execute(
            f"SELECT DISTINCT account_id FROM {quote(loaded.relation)} "
            "WHERE _problem IS NULL"
        ).fetchall()
    finally:
        backend.disconnect()
    return {str(row[0]) for row in rows}


def _repeats(rows: list[dict[str, Any]], key: tuple[str, ...]) -> list[str]:
    """Name each row whose `key` repeats an earlier row's; invalid keys are left out."""
    first_row: dict[tuple[Any, ...], str] = {}
    problems = []
    for row in rows:
        values = tuple(row[name] for name in key)
        if None in values:
            continue
        if values in first_row:
            problems.append(
                f"{row[LOCATION]}: repeats {first_row[values]} (same "
                f"{', '.join(key)}); remove one of the two rows"
            )
        else:
            first_row[values] = row[LOCATION]
    return problems


# Checking outcomes against each other


@dataclass(frozen=True)
class _Outcome:
    """An outcome of the imported file or of the store, and how to name it."""

    account_id: str
    kind: str
    day: date
    place: str
    """`row N (line L)` for a row of the file, else the stored outcome's source."""
    new: bool
    """Whether the import stores it: a row of the file that is not stored yet."""
    stored_id: int | None
    """Id of a stored outcome that no row of the file repeats, else None."""


@dataclass(frozen=True)
class OutcomeConflict:
    """Two or more outcomes that contradict each other, at least one of them new."""

    message: str
    same_day: bool
    """Whether a churn and another kind share a day. If false, two churns follow
    each other with no return between them."""
    replaceable: tuple[tuple[int, str], ...]
    """(id, place) of each stored outcome in the conflict, and of the new row that
    contradicts it, which replaces it with `replace`."""
    items: tuple[str, ...] = ()
    """LOCATION of each row to store that takes part in the conflict."""


def _stored_outcomes_of(
    connection: Connection, accounts: Collection[str]
) -> list[dict[str, Any]]:
    columns = outcomes.c
    names = (*OUTCOME_KEY, *OUTCOME_VALUES, "source", "id")
    query = select(*(columns[name] for name in names))
    query = query.where(columns.account_id.in_(accounts)).order_by(columns.id)
    return [dict(row._mapping) for row in connection.execute(query)]


def plan_outcomes(
    origin: Path | str,
    rows: list[dict[str, Any]],
    stored: list[dict[str, Any]],
    *,
    replace: bool = False,
    problems: ImportProblems | None = None,
    replace_hint: str = REPLACE_HINT,
) -> RowChanges:
    """Decide which outcome rows to store, skip and replace, or raise every problem.

    `origin` names where the rows come from in the message, and `rows`, `stored`
    and `replace` are as in `check_outcomes`. `problems` found before, such as
    invalid values, are raised together with the conflicts. `replace_hint` ends the
    message when a stored outcome takes part in a conflict and `replace` is false.

    Raises
    ------
    ImportValidationError
        When `problems` has a problem or two outcomes conflict.
    """
    if problems is None:
        problems = ImportProblems()
    changes, conflicts = check_outcomes(rows, stored, replace=replace)
    problems.conflicts += [conflict.message for conflict in conflicts]
    problems.hints += conflict_hints(
        conflicts, replace=replace, replace_hint=replace_hint
    )
    problems.raise_if_any(origin)
    return changes


def check_outcomes(
    rows: list[dict[str, Any]],
    stored: list[dict[str, Any]],
    *,
    replace: bool = False,
) -> tuple[RowChanges, list[OutcomeConflict]]:
    """Decide which outcome rows to store, skip and replace, and find the conflicts.

    `rows` carry their LOCATION, such as `row 2 (line 3)` or `outcomes[2]` for an
    item of a request. `stored` are the stored outcomes of their accounts, with
    their ids. The rows are checked against each other and `stored` (see
    `_find_conflicts`). A row whose account, kind or date is invalid takes no part
    in the checks.

    A row with the account, kind and date of a stored outcome is skipped. With
    `replace`, a stored outcome is replaced by the row of `rows` that repeats it
    with other ARR, or that conflicts with it. The conflicts returned are those
    that remain after the replacements, such as two rows of `rows` that conflict.
    The changes must not be written while a conflict remains.
    """
    checked = _checkable_outcomes(rows)
    changes = _plan_repeats(checked, stored, OUTCOME_KEY, OUTCOME_VALUES, replace)
    conflicts = _find_conflicts(checked, stored)
    replaced = changes.replaced
    if replace and conflicts:
        replacing = {
            stored_id: place
            for conflict in conflicts
            for stored_id, place in conflict.replaceable
        }
        replaced += [
            {**row, "replaced_by": replacing[row["id"]]}
            for row in stored
            if row["id"] in replacing
        ]
        remaining = [row for row in stored if row["id"] not in replacing]
        conflicts = _find_conflicts(checked, remaining)
    order = {row["id"]: index for index, row in enumerate(stored)}
    replaced.sort(key=lambda row: order[row["id"]])
    changes = RowChanges(changes.new, replaced, changes.skipped, changes.differing)
    return changes, conflicts


def conflict_hints(
    conflicts: list[OutcomeConflict], *, replace: bool, replace_hint: str
) -> list[str]:
    """Return the sentences that explain how to fix `conflicts`, one per kind.

    `replace_hint` is added when a stored outcome takes part in a conflict and
    `replace` is false.
    """
    hints = []
    if any(conflict.same_day for conflict in conflicts):
        hints.append(
            "An account that churns cannot renew, expand or contract on the same "
            "day: remove the row that is wrong, or correct its date."
        )
    if any(not conflict.same_day for conflict in conflicts):
        hints.append(
            "Two churns of an account need an outcome between them that shows when "
            "it came back. If the two rows record one churn, remove the later row; "
            "if the account came back between them, add an outcome dated then, such "
            "as renewed."
        )
    if not replace and any(conflict.replaceable for conflict in conflicts):
        hints.append(replace_hint)
    return hints


def _checkable_outcomes(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Return the rows with a valid account, kind and date, each key once."""
    seen: set[tuple[Any, ...]] = set()
    checkable = []
    for row in rows:
        key = _outcome_key(row)
        if None in key or row["kind"] not in OUTCOME_KINDS or key in seen:
            continue
        seen.add(key)
        checkable.append(row)
    return checkable


def _find_conflicts(
    rows: list[dict[str, Any]], stored: list[dict[str, Any]]
) -> list[OutcomeConflict]:
    """Find the outcomes that contradict each other, at least one of them new.

    `rows` are rows to store with their LOCATION, and `stored` the stored outcomes
    of their accounts. Backtest labels (see
    `healthscore.models.labels.outcome_labels`) take a churn as the end of an
    account until a later outcome of another kind shows that it came back. So two
    conflicts are rejected when one of their outcomes is a new row:

    - a churn and an outcome of another kind of one account on the same day,
      because the account cannot both leave and stay;
    - a churn after an earlier churn of the account with no outcome of another kind
      between them. Labels would read the later churn as the sign that the account
      came back, and label its scores between the two churns, when more likely
      one churn was recorded twice.

    Conflicts among stored outcomes alone are left alone: they were stored before.
    """
    conflicts: list[OutcomeConflict] = []
    for account, entries in _outcomes_by_account(rows, stored).items():
        conflicts += _same_day_conflicts(account, entries)
        conflicts += _repeated_churns(account, entries)
    return conflicts


def _outcomes_by_account(
    rows: list[dict[str, Any]], stored: list[dict[str, Any]]
) -> dict[str, list[_Outcome]]:
    """Merge the rows and the stored outcomes by account, oldest first."""
    stored_keys = {_outcome_key(row) for row in stored}
    file_keys = {_outcome_key(row) for row in rows}
    merged = [
        _located_outcome(row, row[LOCATION], _outcome_key(row) not in stored_keys)
        for row in rows
    ]
    merged += [
        _located_outcome(
            row,
            f"the stored outcome from {row['source'] or 'an earlier import'}",
            stored_id=row["id"],
        )
        for row in stored
        # A stored row that the file repeats is named by its row of the file.
        if _outcome_key(row) not in file_keys
    ]
    by_account: dict[str, list[_Outcome]] = {}
    for outcome in merged:
        by_account.setdefault(outcome.account_id, []).append(outcome)
    for entries in by_account.values():
        entries.sort(key=lambda outcome: outcome.day)
    return by_account


def _located_outcome(
    row: dict[str, Any], place: str, new: bool = False, stored_id: int | None = None
) -> _Outcome:
    return _Outcome(
        row["account_id"], row["kind"], row["occurred_on"], place, new, stored_id
    )


def _same_day_conflicts(account: str, entries: list[_Outcome]) -> list[OutcomeConflict]:
    conflicts = []
    # `entries` is sorted by day, so groupby gathers each day's outcomes.
    for day, outcomes_of_day in groupby(entries, key=attrgetter("day")):
        group = list(outcomes_of_day)
        churns = [outcome for outcome in group if outcome.kind == "churned"]
        others = [outcome for outcome in group if outcome.kind != "churned"]
        if not (churns and others and any(outcome.new for outcome in group)):
            continue
        stays = " and ".join(f"{other.place} records {other.kind}" for other in others)
        # A stored outcome is replaceable by a new row of the other side.
        replaceable = []
        for outcome in group:
            opposite = others if outcome.kind == "churned" else churns
            by = next((row.place for row in opposite if row.new), None)
            if outcome.stored_id is not None and by is not None:
                replaceable.append((outcome.stored_id, by))
        message = (
            f"{account} on {day.isoformat()}: {churns[0].place} records churned "
            f"but {stays}"
        )
        items = tuple(outcome.place for outcome in group if outcome.stored_id is None)
        conflicts.append(OutcomeConflict(message, True, tuple(replaceable), items))
    return conflicts


def _repeated_churns(account: str, entries: list[_Outcome]) -> list[OutcomeConflict]:
    conflicts = []
    last_churn: _Outcome | None = None
    came_back = False
    for outcome in entries:
        if outcome.kind != "churned":
            # An outcome on the day of the churn does not show a return, as in
            # the labels, which compare the latest outcome with the churn's day.
            if last_churn is not None and outcome.day > last_churn.day:
                came_back = True
            continue
        if last_churn is not None and not came_back and (outcome.new or last_churn.new):
            days = (outcome.day - last_churn.day).days
            message = (
                f"{account}: {outcome.place} records churned on "
                f"{outcome.day.isoformat()}, {days:,} {'day' if days == 1 else 'days'} "
                f"after {last_churn.place} records churned on "
                f"{last_churn.day.isoformat()}, with no outcome between them"
            )
            replaceable = [
                (older.stored_id, newer.place)
                for older, newer in ((last_churn, outcome), (outcome, last_churn))
                if older.stored_id is not None and newer.new
            ]
            items = tuple(
                churn.place
                for churn in (last_churn, outcome)
                if churn.stored_id is None
            )
            conflicts.append(OutcomeConflict(message, False, tuple(replaceable), items))
        last_churn = outcome
        came_back = False
    return conflicts


def early_churn_warnings(
    path: Path | str,
    rows: list[dict[str, Any]],
    stored: list[dict[str, Any]],
    first_scored: date | None,
) -> list[str]:
    """Warn about new churn rows dated on or before `first_scored`.

    A churn labels only the scores of its account dated before it, so a churn on
    or before the as-of date of the first stored snapshot labels none of them. A
    history imported at once has many such rows, so they are stored, and one
    warning, starting with `path` (the file, or the request body), lists them.
    Returns [] when `first_scored` is None: no score is stored.
    """
    if first_scored is None:
        return []
    stored_keys = {_outcome_key(row) for row in stored}
    early = [
        row
        for row in rows
        if row["kind"] == "churned"
        and row["occurred_on"] <= first_scored
        and _outcome_key(row) not in stored_keys
    ]
    if not early:
        return []
    listed = ", ".join(
        f"{row[LOCATION]} ({row['account_id']} on {row['occurred_on'].isoformat()})"
        for row in early[:MAX_LISTED_ERRORS]
    )
    if len(early) > MAX_LISTED_ERRORS:
        listed += f" and {len(early) - MAX_LISTED_ERRORS:,} more"
    counted = "1 churn is" if len(early) == 1 else f"{len(early):,} churns are"
    return [
        f"{path}: {counted} dated on or before {first_scored.isoformat()}, the date "
        f"of the first stored snapshot: {listed}. They were stored, but no stored "
        "score precedes them, so backtests get no label from them, and later scores "
        "of their accounts get none until a later outcome shows that the account "
        "came back. If a date is right, store snapshots from before it with "
        "`healthscore backfill --from DATE --to DATE --every 1mo`."
    ]


def _outcome_row(raw: dict[str, str], errors: list[tuple[str, str]]) -> dict[str, Any]:
    kind = _text(raw, "kind", errors)
    if kind is not None and kind not in OUTCOME_KINDS:
        errors.append(("kind", f"{kind!r} is not one of {', '.join(OUTCOME_KINDS)}"))
    account_id = _text(raw, "account_id", errors)
    occurred_on = _date(raw, "occurred_on", errors)
    arr_before = _amount(raw, "arr_before", errors)
    arr_after = _amount(raw, "arr_after", errors)
    arr_problem = arr_change_problem(kind, arr_before, arr_after)
    if arr_problem is not None:
        errors.append(("arr_after", arr_problem))
    return {
        "account_id": account_id,
        "kind": kind,
        "occurred_on": occurred_on,
        "arr_before": arr_before,
        "arr_after": arr_after,
        "source": (raw.get("source") or "").strip() or None,
    }


def arr_change_problem(
    kind: str | None, arr_before: float | None, arr_after: float | None
) -> str | None:
    """Describe why `arr_after` contradicts the outcome's kind, or return None.

    An expansion raises ARR and a contraction lowers it, so an expanded outcome
    needs `arr_after` above `arr_before` and a contracted one below. A renewal may
    keep, raise or lower ARR, so it is not checked. Without both values, nothing is
    checked.

    NOTE: a churn is not checked either, although its `arr_after` is usually 0,
    because a source may record another amount there, such as the ARR lost.
    """
    if arr_before is None or arr_after is None:
        return None
    after, before = _amount_text(arr_after), _amount_text(arr_before)
    if kind == "expanded" and arr_after <= arr_before:
        return (
            f"{after} is not above arr_before {before}, but an expansion raises ARR; "
            "correct arr_before or arr_after, or set kind to contracted if ARR went "
            "down, or to renewed if it stayed the same"
        )
    if kind == "contracted" and arr_after >= arr_before:
        return (
            f"{after} is not below arr_before {before}, but a contraction lowers "
            "ARR; correct arr_before or arr_after, or set kind to expanded if ARR "
            "went up, or to renewed if it stayed the same"
        )
    return None


def _amount_text(value: float) -> str:
    """Write an amount as `1200` or `1200.5`, without a `.0` for whole numbers."""
    return str(int(value)) if float(value).is_integer() else str(value)


def _intervention_row(
    raw: dict[str, str], errors: list[tuple[str, str]]
) -> dict[str, Any]:
    return {
        "account_id": _text(raw, "account_id", errors),
        "kind": _text(raw, "kind", errors),
        "occurred_on": _date(raw, "occurred_on", errors),
        "author": _text(raw, "author", errors),
        "note": (raw.get("note") or "").strip() or None,
    }


def _text(raw: dict[str, str], column: str, errors: list[tuple[str, str]]) -> Any:
    value = (raw.get(column) or "").strip()
    if not value:
        errors.append((column, "is empty; every row needs a value"))
        return None
    return value


def _date(raw: dict[str, str], column: str, errors: list[tuple[str, str]]) -> Any:
    value = (raw.get(column) or "").strip()
    if not value:
        errors.append((column, "is empty; every row needs a value"))
        return None
    day = iso_date(value)
    if day is None:
        errors.append(
            (
                column,
                f"{value!r} is not a date in the form YYYY-MM-DD, for example "
                "2026-03-01",
            )
        )
        return None
    if not EARLIEST_DATE <= day <= LATEST_DATE:
        errors.append(
            (
                column,
                f"{value!r} is outside the supported range "
                f"{EARLIEST_DATE.isoformat()} to {LATEST_DATE.isoformat()}; give a "
                "date in that range",
            )
        )
        return None
    return day


def _amount(raw: dict[str, str], column: str, errors: list[tuple[str, str]]) -> Any:
    value = (raw.get(column) or "").strip()
    if not value:
        return None
    try:
        number = float(value)
    except ValueError:
        number = math.nan
    if not math.isfinite(number) or number < 0:
        errors.append((column, f"{value!r} is not a number of at least 0"))
        return None
    return number


# Reading stored rows


def outcomes_frame(state: StateStore) -> pd.DataFrame:
    """Return the stored outcomes: account_id, kind, occurred_on, ARR and source."""
    columns = ["id", "account_id", "kind", "occurred_on", "arr_before", "arr_after"]
    query = select(*(outcomes.c[name] for name in [*columns, "source"]))
    return _frame(state, query.order_by(outcomes.c.occurred_on, outcomes.c.id))


def interventions_frame(state: StateStore) -> pd.DataFrame:
    """Return every intervention, imported ones and completed tasks, oldest first."""
    columns = ["id", "account_id", "kind", "occurred_on", "task_id", "author", "note"]
    query = select(*(interventions.c[name] for name in columns))
    order = (interventions.c.occurred_on, interventions.c.id)
    return _frame(state, query.order_by(*order))


def churn_dates(outcome_rows: pd.DataFrame) -> pd.DataFrame:
    """Select the churn outcomes as account_id and occurred_on."""
    churned = outcome_rows[outcome_rows["kind"] == "churned"]
    return churned[["account_id", "occurred_on"]].reset_index(drop=True)


def _frame(state: StateStore, query: Any) -> pd.DataFrame:
    with state.engine.connect() as connection:
        result = connection.execute(query)
        rows = result.all()
        names = list(result.keys())
    return pd.DataFrame([tuple(row) for row in rows], columns=names)


# Shared with the other monitoring stores


def record_audit(
    connection: Connection,
    at: datetime,
    action: str,
    subject_kind: str,
    count: int,
    detail: Any,
    actor: str = "import",
) -> None:
    """Add an audit entry; a Path as detail is stored as `{"file": ...}`."""
    if isinstance(detail, Path):
        detail = {"file": str(detail)}
    connection.execute(
        insert(audit).values(
            at=at,
            actor=actor,
            action=action,
            subject_kind=subject_kind,
            count=count,
            detail=detail,
        )
    )


@contextmanager
def write_transaction(state: StateStore) -> Iterator[Connection]:
    """Run a write transaction that takes SQLite's write lock at BEGIN.

    Raises
    ------
    StateStoreError
        When the database fails; the transaction is rolled back.
    """
    try:
        with write_engine(state.engine).begin() as connection:
            yield connection
    except DBAPIError as exc:
        raise _store_error(state, exc) from exc


def _store_error(state: StateStore, error: DBAPIError) -> StateStoreError:
    first_line = str(error.orig).strip().splitlines()[0] if error.orig else "error"
    return StateStoreError(
        f"writing to the state store at {describe_url(state.engine.url)} failed: "
        f"{first_line}; check that the database is reachable and writable"
    )


def _aware_now(now: datetime | None) -> datetime:
    if now is None:
        return datetime.now(UTC)
    if now.tzinfo is None:
        raise ValueError(
            f"now must be timezone-aware, got {now!r}; for example datetime.now(UTC)"
        )
    return now
