"""Finding a subject's rows: in snapshot frames, state tables and output files.

State tables are discovered from `healthscore.store.schema.metadata`, so tables that
other modules add are covered without changes here. A table refers to an account
when it has an ``account_id`` column, when a JSON column holds an ``account_id`` key
with the id, or when it references such a table: by a declared foreign key, or by a
column named ``<name>_id`` next to a table ``<name>s`` or ``<name>`` with a one-column
primary key (as ``deliveries.alert_id`` refers to ``alerts.id``).
"""

from __future__ import annotations

import graphlib
import html
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from sqlalchemy import (
    Column,
    ColumnElement,
    Connection,
    Table,
    func,
    inspect,
    or_,
    select,
)

from healthscore.privacy.subjects import (
    Subject,
    document_mentions,
    is_json_column,
    is_person_column,
)
from healthscore.store.schema import metadata

#: Table exports that the commands write (see `healthscore.cli.output`).
TABLE_SUFFIXES = (".csv", ".json", ".parquet")

#: Reports, which are erased by deleting them because they can be generated again.
REPORT_SUFFIXES = (".html", ".htm")


# Snapshot and export frames


def frame_row_mask(frame: pd.DataFrame, subject: Subject) -> np.ndarray:
    """Return a boolean mask of the rows of `frame` that concern `subject`.

    For an account, the rows whose ``account_id`` is the id. For a person, the rows
    with a text cell, in any column but ``account_id``, equal to the identifier or a
    pseudonym.
    """
    if subject.kind == "account":
        if "account_id" not in frame.columns:
            return np.zeros(len(frame), dtype=bool)
        return (frame["account_id"] == subject.identifier).to_numpy(dtype=bool)
    masks = person_cell_masks(frame, subject)
    combined = np.zeros(len(frame), dtype=bool)
    for mask in masks.values():
        combined |= mask
    return combined


def person_cell_masks(frame: pd.DataFrame, subject: Subject) -> dict[str, np.ndarray]:
    """Return, per text column with a match, the mask of cells equal to the person."""
    masks: dict[str, np.ndarray] = {}
    for column in frame.columns:
        series = frame[column]
        if column == "account_id" or not _is_text(series):
            continue
        mask = np.array(series.isin(subject.values), dtype=bool)
        if subject.is_email:
            folded = series.map(_casefold, na_action="ignore")
            equal = folded == subject.identifier.casefold()
            # A missing cell of a nullable text column compares as missing, not False.
            mask |= equal.fillna(False).to_numpy(dtype=bool)
        if mask.any():
            masks[str(column)] = mask
    return masks


def _is_text(series: pd.Series) -> bool:
    return pd.api.types.is_string_dtype(series) or series.dtype == object


def _casefold(value: object) -> object:
    return value.casefold() if isinstance(value, str) else value


# Operational store


@dataclass(frozen=True)
class StateMatch:
    """The rows of one state table that concern the subject."""

    table: Table
    where: ColumnElement[bool]


def state_matches(
    connection: Connection, subject: Subject, person_names: frozenset[str]
) -> list[StateMatch]:
    """Return a filter per existing state table with rows that concern `subject`.

    The list is ordered so that a table comes before every table it references,
    which is the order in which rows can be deleted. `person_names` are further
    column names that count as person columns.
    """
    existing = set(inspect(connection).get_table_names())
    tables = [table for table in metadata.sorted_tables if table.name in existing]
    references = {table.name: list(_references(table, tables)) for table in tables}

    filters: dict[str, ColumnElement[bool]] = {}
    for table in _parents_first(tables, references):
        clauses = _direct_clauses(connection, table, subject, person_names)
        if subject.kind == "account":
            for column, parent_column in references[table.name]:
                parent_filter = filters.get(parent_column.table.name)
                if parent_filter is not None:
                    parents = select(parent_column).where(parent_filter)
                    clauses.append(column.in_(parents))
        if clauses:
            filters[table.name] = or_(*clauses)

    ordered = reversed(_parents_first(tables, references))
    return [
        StateMatch(table, filters[table.name])
        for table in ordered
        if table.name in filters
    ]


def person_column_clause(column: Column[Any], subject: Subject) -> ColumnElement[bool]:
    """Return the condition that a person column is the subject."""
    clause: ColumnElement[bool] = column.in_(subject.values)
    if subject.is_email:
        clause = or_(clause, func.lower(column) == subject.identifier.lower())
    return clause


def person_columns(table: Table, person_names: frozenset[str]) -> list[Column[Any]]:
    """Return the person columns of a state table."""
    return [
        column for column in table.columns if is_person_column(column, person_names)
    ]


def json_rows(
    connection: Connection, table: Table, subject: Subject
) -> Iterator[tuple[Any, Column[Any], Any]]:
    """Yield (primary key, column, document) for JSON documents about the subject."""
    key = primary_key(table)
    if key is None:
        return
    for column in (column for column in table.columns if is_json_column(column)):
        query = select(key, column).where(column.is_not(None))
        for row_key, document in connection.execute(query):
            if document_mentions(document, subject):
                yield row_key, column, document


def primary_key(table: Table) -> Column[Any] | None:
    """Return the table's primary key column when it is a single column."""
    columns = list(table.primary_key.columns)
    return columns[0] if len(columns) == 1 else None


def _direct_clauses(
    connection: Connection,
    table: Table,
    subject: Subject,
    person_names: frozenset[str],
) -> list[ColumnElement[bool]]:
    """Return the conditions on the table's own columns and JSON documents."""
    clauses: list[ColumnElement[bool]] = []
    if subject.kind == "account" and "account_id" in table.columns:
        clauses.append(table.c.account_id == subject.identifier)
    if subject.kind == "person":
        columns = person_columns(table, person_names)
        clauses.extend(person_column_clause(column, subject) for column in columns)
    keys = sorted({row_key for row_key, _, _ in json_rows(connection, table, subject)})
    key = primary_key(table)
    if keys and key is not None:
        clauses.append(key.in_(keys))
    return clauses


def _references(
    table: Table, tables: Sequence[Table]
) -> Iterator[tuple[Column[Any], Column[Any]]]:
    """Yield (column, referenced column) for foreign keys and `<name>_id` columns."""
    by_name = {candidate.name: candidate for candidate in tables}
    declared = set()
    for foreign_key in table.foreign_keys:
        declared.add(foreign_key.parent.name)
        if foreign_key.column.table.name in by_name:
            yield foreign_key.parent, foreign_key.column
    for column in table.columns:
        if column.name in declared or column.name == "account_id":
            continue
        if not column.name.endswith("_id"):
            continue
        stem = column.name.removesuffix("_id")
        parent = by_name.get(stem + "s") or by_name.get(stem)
        parent_key = primary_key(parent) if parent is not None else None
        if parent is not None and parent is not table and parent_key is not None:
            yield column, parent_key


def _parents_first(
    tables: Sequence[Table],
    references: dict[str, list[tuple[Column[Any], Column[Any]]]],
) -> list[Table]:
    """Order the tables so that every referenced table comes before its referrers."""
    by_name = {table.name: table for table in tables}
    graph = {
        name: {parent.table.name for _, parent in refs if parent.table.name != name}
        for name, refs in references.items()
    }
    try:
        order = list(graphlib.TopologicalSorter(graph).static_order())
    except graphlib.CycleError:
        # NOTE: tables that reference each other in a cycle are visited in metadata
        # order, so a referrer visited before its parent misses the parent's rows.
        return list(tables)
    return [by_name[name] for name in order]


# Output files


def output_files(folders: Sequence[Path]) -> list[Path]:
    """Return the table exports and reports under `folders`, sorted."""
    found: list[Path] = []
    for folder in folders:
        if not folder.is_dir():
            continue
        for path in sorted(folder.rglob("*")):
            suffix = path.suffix.lower()
            if path.is_file() and suffix in TABLE_SUFFIXES + REPORT_SUFFIXES:
                found.append(path)
    return found


def report_mentions(path: Path, subject: Subject) -> bool:
    """Return whether an HTML report contains the subject as a whole word."""
    text = path.read_text(encoding="utf-8", errors="replace")
    flags = re.IGNORECASE if subject.is_email else 0
    for value in subject.values:
        # Ids are compared as they appear in HTML text, with & and < escaped.
        escaped = re.escape(html.escape(value, quote=False))
        if re.search(rf"(?<![\w.@-]){escaped}(?![\w@-])", text, flags):
            return True
    return False
