"""Outcomes and interventions: what happened to accounts, and what was done for them.

Both are imported from CSV files. An import checks every row first and stores nothing
when any row is invalid; otherwise all rows go in one transaction. A problem names the
data row, counted from 1 without blank lines, and the file's line, counted from 1 with
the header and blank lines, for example `row 2 (line 4)`.
Completing a task stores an intervention too (see `healthscore.monitoring.playbooks`).
"""

from __future__ import annotations

import csv
import logging
import math
from collections.abc import Callable, Collection, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, date, datetime
from itertools import groupby
from operator import attrgetter
from pathlib import Path
from typing import Any

import pandas as pd
from sqlalchemy import Connection, insert, select, tuple_
from sqlalchemy.exc import DBAPIError

from healthscore.config import Project
from healthscore.store import StateStore, StateStoreError
from healthscore.store.database import describe_url, write_engine
from healthscore.store.schema import audit
from healthscore.store.tables_tasks import OUTCOME_KINDS, interventions, outcomes

logger = logging.getLogger(__name__)

#: Invalid rows listed in one error message; the rest are counted.
MAX_LISTED_ERRORS = 20

OUTCOME_COLUMNS = ("account_id", "kind", "occurred_on")
OUTCOME_OPTIONAL = ("arr_before", "arr_after", "source")
INTERVENTION_COLUMNS = ("account_id", "kind", "occurred_on", "author")
INTERVENTION_OPTIONAL = ("note",)
#: Columns that identify an imported intervention: a repeat of them is skipped.
INTERVENTION_KEY = ("account_id", "kind", "occurred_on", "author")


class ImportValidationError(ValueError):
    """A CSV file with invalid rows or columns; nothing of it was stored."""


@dataclass(frozen=True)
class ImportResult:
    """Rows stored by an import, and rows skipped because they were already stored."""

    file: Path
    stored: int
    skipped: int
    warnings: tuple[str, ...] = ()
    """Problems with stored rows that did not stop the import, one message each."""


# Imports


def import_outcomes(
    state: StateStore,
    path: Path,
    *,
    now: datetime | None = None,
    known_accounts: Collection[str] | None = None,
    latest_date: date | None = None,
    first_scored: date | None = None,
) -> ImportResult:
    """Store the outcomes of a CSV file, all of them or none.

    Columns: `account_id`, `kind` (churned, renewed, expanded or contracted),
    `occurred_on` (YYYY-MM-DD), and optionally `arr_before`, `arr_after` (numbers of
    at least 0) and `source` (default: the file name). A row with the account, kind
    and date of a stored outcome is skipped, so a grown file can be imported again.
    With `known_accounts`, a row whose account is not in it is invalid. With
    `latest_date` (usually today), a row dated after it is invalid.

    The rows are also checked against each other and the stored outcomes of their
    accounts (see `check_outcome_conflicts`). With `first_scored`, the as-of date of
    the first stored snapshot, a churn on or before it gets a warning in the result.

    Raises
    ------
    ImportValidationError
        When a column is missing or unknown, a row is invalid, or two outcomes
        conflict. The message names the file, row and column of each problem.
    """
    located = _read_rows(
        path,
        OUTCOME_COLUMNS,
        OUTCOME_OPTIONAL,
        _outcome_row,
        latest_date,
        known_accounts,
    )
    _check_unique(path, located, ("account_id", "kind", "occurred_on"))
    rows = _without_locations(located)
    for row in rows:
        row["source"] = row["source"] or path.name
    warnings: list[str] = []

    def check(connection: Connection) -> None:
        stored = _stored_outcomes_of(connection, {row["account_id"] for row in rows})
        check_outcome_conflicts(path, located, stored)
        warnings.extend(early_churn_warnings(path, located, stored, first_scored))

    stored, skipped = store_outcomes(state, rows, origin=path, now=now, check=check)
    logger.info("imported %d outcomes from %s", stored, path)
    # The caller shows the warnings, so they are not logged as well.
    return ImportResult(path, stored, skipped, tuple(warnings))


def store_outcomes(
    state: StateStore,
    rows: list[dict[str, Any]],
    *,
    origin: Path | dict[str, Any],
    actor: str = "import",
    now: datetime | None = None,
    check: Callable[[Connection], None] | None = None,
) -> tuple[int, int]:
    """Store checked outcome rows in one transaction; return (stored, skipped).

    A row with the account, kind and date of a stored outcome is skipped. `origin`
    (the file, or a description of the request) goes into the audit entry.
    `check` runs in the transaction before any row is written, so an exception it
    raises stores nothing.
    """
    imported_at = _aware_now(now)
    rows = [{**row, "imported_at": imported_at} for row in rows]
    with write_transaction(state) as connection:
        if check is not None:
            check(connection)
        stored = _stored_outcome_keys(connection, rows)
        new = [row for row in rows if _outcome_key(row) not in stored]
        if new:
            connection.execute(insert(outcomes), new)
        record_audit(
            connection, imported_at, "import", "outcome", len(new), origin, actor
        )
    return len(new), len(rows) - len(new)


def import_interventions(
    state: StateStore,
    path: Path,
    *,
    now: datetime | None = None,
    known_accounts: Collection[str] | None = None,
    latest_date: date | None = None,
) -> ImportResult:
    """Store the interventions of a CSV file, all of them or none.

    Columns: `account_id`, `kind` (the playbook name, or another kind of action),
    `occurred_on` (YYYY-MM-DD), `author`, and optionally `note`. A row equal in
    account, kind, date and author to an imported intervention is skipped. With
    `known_accounts`, a row whose account is not in it is invalid. With
    `latest_date` (usually today), a row dated after it is invalid.

    Raises
    ------
    ImportValidationError
        When a column is missing or unknown or a row is invalid; the message names
        the file, row and column of each problem.
    """
    rows = _read_rows(
        path,
        INTERVENTION_COLUMNS,
        INTERVENTION_OPTIONAL,
        _intervention_row,
        latest_date,
        known_accounts,
    )
    _check_unique(path, rows, INTERVENTION_KEY)
    rows = _without_locations(rows)
    stored, skipped = store_interventions(state, rows, origin=path, now=now)
    logger.info("imported %d interventions from %s", stored, path)
    return ImportResult(path, stored, skipped)


def store_interventions(
    state: StateStore,
    rows: list[dict[str, Any]],
    *,
    origin: Path | dict[str, Any],
    actor: str = "import",
    now: datetime | None = None,
) -> tuple[int, int]:
    """Store checked intervention rows in one transaction; return (stored, skipped).

    A row equal in account, kind, date and author to a stored intervention that is
    not a completed task is skipped.
    """
    created_at = _aware_now(now)
    rows = [{**row, "created_at": created_at, "task_id": None} for row in rows]
    with write_transaction(state) as connection:
        stored = _stored_intervention_keys(connection, rows)
        new = [
            row
            for row in rows
            if tuple(row[name] for name in INTERVENTION_KEY) not in stored
        ]
        if new:
            connection.execute(insert(interventions), new)
        record_audit(
            connection, created_at, "import", "intervention", len(new), origin, actor
        )
    return len(new), len(rows) - len(new)


def _stored_outcome_keys(
    connection: Connection, rows: list[dict[str, Any]]
) -> set[tuple[Any, ...]]:
    accounts = {row["account_id"] for row in rows}
    query = select(outcomes.c.account_id, outcomes.c.kind, outcomes.c.occurred_on)
    query = query.where(outcomes.c.account_id.in_(accounts))
    return {tuple(found) for found in connection.execute(query)}


def _outcome_key(row: dict[str, Any]) -> tuple[Any, ...]:
    return (row["account_id"], row["kind"], row["occurred_on"])


def _stored_intervention_keys(
    connection: Connection, rows: list[dict[str, Any]]
) -> set[tuple[Any, ...]]:
    columns = interventions.c
    keys = {(row["account_id"], row["kind"]) for row in rows}
    query = select(
        columns.account_id, columns.kind, columns.occurred_on, columns.author
    )
    query = query.where(
        columns.task_id.is_(None),
        tuple_(columns.account_id, columns.kind).in_(list(keys)),
    )
    return {tuple(found) for found in connection.execute(query)}


# Reading and checking CSV rows

RowParser = Callable[[dict[str, str], list[tuple[str, str]]], dict[str, Any]]


#: Key of a parsed row that stores its place in the file, removed before storing.
LOCATION = "_location"


def _read_rows(
    path: Path,
    required: tuple[str, ...],
    optional: tuple[str, ...],
    parse: RowParser,
    latest_date: date | None = None,
    known_accounts: Collection[str] | None = None,
) -> list[dict[str, Any]]:
    """Parse every row, collecting each problem as (column, message) per row.

    Each parsed row gets its location (`row N (line L)`) under LOCATION. With
    `known_accounts`, an account missing from it is one more problem of its row,
    so one error lists every invalid row.
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
    if problems:
        message = _problem_message(path, problems)
        if unknown_found:
            message += (
                "\nFix the ids, add the accounts to the accounts source, or pass "
                "--allow-unknown to store them anyway."
            )
        raise ImportValidationError(message)
    if not rows:
        raise ImportValidationError(f"{path} has a header but no rows; nothing stored")
    return rows


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


def _without_locations(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [
        {name: value for name, value in row.items() if name != LOCATION} for row in rows
    ]


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
    unknown = [name for name in header if name not in required + optional]
    if missing or unknown:
        parts = []
        if missing:
            noun = "column" if len(missing) == 1 else "columns"
            parts.append(f"missing {noun} {', '.join(missing)}")
        if unknown:
            noun = "column" if len(unknown) == 1 else "columns"
            parts.append(f"unknown {noun} {', '.join(unknown)}")
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


def _problem_message(path: Path, problems: list[str]) -> str:
    listed = problems[:MAX_LISTED_ERRORS]
    count = len(problems)
    values = "invalid value" if count == 1 else "invalid values"
    lines = [f"{path} has {count:,} {values}; nothing was stored:"]
    lines += [f"  {problem}" for problem in listed]
    if len(problems) > len(listed):
        lines.append(f"  and {len(problems) - len(listed)} more")
    return "\n".join(lines)


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


def _check_unique(path: Path, rows: list[dict[str, Any]], key: tuple[str, ...]) -> None:
    first_row: dict[tuple[Any, ...], str] = {}
    for row in rows:
        values = tuple(row[name] for name in key)
        if values in first_row:
            raise ImportValidationError(
                f"{path}, {row[LOCATION]}: repeats {first_row[values]} (same "
                f"{', '.join(key)}); nothing was stored, remove one of the two rows"
            )
        first_row[values] = row[LOCATION]


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


def _stored_outcomes_of(
    connection: Connection, accounts: Collection[str]
) -> list[dict[str, Any]]:
    columns = outcomes.c
    query = select(
        columns.account_id, columns.kind, columns.occurred_on, columns.source
    ).where(columns.account_id.in_(accounts))
    return [dict(row._mapping) for row in connection.execute(query)]


def conflict_check(
    origin: Path | str, rows: list[dict[str, Any]]
) -> Callable[[Connection], None]:
    """Return a `store_outcomes` check that rejects `rows` conflicting with outcomes.

    `rows` carry their LOCATION, such as `outcomes[2]` for an item of a request,
    and `origin` names where they come from in the message.
    """

    def check(connection: Connection) -> None:
        accounts = {row["account_id"] for row in rows}
        check_outcome_conflicts(origin, rows, _stored_outcomes_of(connection, accounts))

    return check


def check_outcome_conflicts(
    path: Path | str, rows: list[dict[str, Any]], stored: list[dict[str, Any]]
) -> None:
    """Raise ImportValidationError when outcomes contradict each other.

    `rows` are the parsed rows of `path` with their LOCATION, and `stored` the
    stored outcomes of their accounts. Backtest labels (see
    `healthscore.models.labels.outcome_labels`) take a churn as the end of an
    account until a later outcome of another kind shows that it came back. So two
    conflicts are rejected when one of their outcomes is a new row of the file:

    - a churn and an outcome of another kind of one account on the same day,
      because the account cannot both leave and stay;
    - a churn after an earlier churn of the account with no outcome of another kind
      between them. Labels would read the later churn as the sign that the account
      came back, and label its scores between the two churns, when more likely
      one churn was recorded twice.

    Conflicts among stored outcomes alone are left alone: they were stored before.
    """
    problems: list[str] = []
    same_day = repeated = False
    for account, entries in _outcomes_by_account(rows, stored).items():
        found = _same_day_conflicts(account, entries)
        same_day = same_day or bool(found)
        problems += found
        found = _repeated_churns(account, entries)
        repeated = repeated or bool(found)
        problems += found
    if not problems:
        return
    noun = "conflict" if len(problems) == 1 else "conflicts"
    lines = [
        f"{path} has {len(problems):,} {noun} between outcomes; nothing was stored:"
    ]
    lines += [f"  {problem}" for problem in problems[:MAX_LISTED_ERRORS]]
    if len(problems) > MAX_LISTED_ERRORS:
        lines.append(f"  and {len(problems) - MAX_LISTED_ERRORS:,} more")
    if same_day:
        lines.append(
            "An account that churns cannot renew, expand or contract on the same "
            "day: remove the row that is wrong, or correct its date."
        )
    if repeated:
        lines.append(
            "Two churns of an account need an outcome between them that shows when "
            "it came back. If the two rows record one churn, remove the later row; "
            "if the account came back between them, add an outcome dated then, such "
            "as renewed."
        )
    raise ImportValidationError("\n".join(lines))


def _outcomes_by_account(
    rows: list[dict[str, Any]], stored: list[dict[str, Any]]
) -> dict[str, list[_Outcome]]:
    """Merge the file's rows and the stored outcomes by account, oldest first."""
    stored_keys = {_outcome_key(row) for row in stored}
    file_keys = {_outcome_key(row) for row in rows}
    merged = [
        _located_outcome(row, row[LOCATION], _outcome_key(row) not in stored_keys)
        for row in rows
    ]
    merged += [
        _located_outcome(
            row, f"the stored outcome from {row['source'] or 'an earlier import'}"
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


def _located_outcome(row: dict[str, Any], place: str, new: bool = False) -> _Outcome:
    return _Outcome(row["account_id"], row["kind"], row["occurred_on"], place, new)


def _same_day_conflicts(account: str, entries: list[_Outcome]) -> list[str]:
    problems = []
    # `entries` is sorted by day, so groupby gathers each day's outcomes.
    for day, outcomes_of_day in groupby(entries, key=attrgetter("day")):
        group = list(outcomes_of_day)
        churns = [outcome for outcome in group if outcome.kind == "churned"]
        others = [outcome for outcome in group if outcome.kind != "churned"]
        if not (churns and others and any(outcome.new for outcome in group)):
            continue
        stays = " and ".join(f"{other.place} records {other.kind}" for other in others)
        problems.append(
            f"{account} on {day.isoformat()}: {churns[0].place} records churned "
            f"but {stays}"
        )
    return problems


def _repeated_churns(account: str, entries: list[_Outcome]) -> list[str]:
    problems = []
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
            problems.append(
                f"{account}: {outcome.place} records churned on "
                f"{outcome.day.isoformat()}, {days:,} {'day' if days == 1 else 'days'} "
                f"after {last_churn.place} records churned on "
                f"{last_churn.day.isoformat()}, with no outcome between them"
            )
        last_churn = outcome
        came_back = False
    return problems


def early_churn_warnings(
    path: Path,
    rows: list[dict[str, Any]],
    stored: list[dict[str, Any]],
    first_scored: date | None,
) -> list[str]:
    """Warn about new churn rows dated on or before `first_scored`.

    A churn labels only the scores of its account dated before it, so a churn on
    or before the as-of date of the first stored snapshot labels none of them. A
    history imported at once has many such rows, so they are stored, and one
    warning lists them. Returns [] when `first_scored` is None: no score is stored.
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
    return {
        "account_id": _text(raw, "account_id", errors),
        "kind": kind,
        "occurred_on": _date(raw, "occurred_on", errors),
        "arr_before": _amount(raw, "arr_before", errors),
        "arr_after": _amount(raw, "arr_after", errors),
        "source": (raw.get("source") or "").strip() or None,
    }


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
    try:
        return date.fromisoformat(value)
    except ValueError:
        errors.append((column, f"{value!r} is not a date in the form YYYY-MM-DD"))
        return None


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
