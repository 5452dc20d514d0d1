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
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from sqlalchemy import (
    Column,
    ColumnElement,
    Connection,
    String,
    Table,
    and_,
    false,
    func,
    inspect,
    not_,
    or_,
    select,
)

from healthscore.privacy.subjects import (
    Subject,
    document_mentions,
    is_json_column,
    text_mentions,
)
from healthscore.store.schema import metadata

#: Top-level keys of every document that `export_subject` writes.
EXPORT_KEYS = frozenset({"subject", "exported_at"})


# Snapshot and export frames


def frame_row_mask(frame: pd.DataFrame, subject: Subject) -> np.ndarray:
    """Return a boolean mask of the rows of `frame` that concern `subject`.

    For an account, the rows whose ``account_id`` is the id. For a person, the rows
    with a text cell, in any column but ``account_id``, that mentions the identifier
    or a pseudonym.
    """
    if subject.kind == "account":
        if "account_id" not in frame.columns:
            return np.zeros(len(frame), dtype=bool)
        return (frame["account_id"] == subject.identifier).to_numpy(dtype=bool)
    masks = mention_cell_masks(frame, subject)
    combined = np.zeros(len(frame), dtype=bool)
    for mask in masks.values():
        combined |= mask
    return combined


def mention_cell_masks(frame: pd.DataFrame, subject: Subject) -> dict[str, np.ndarray]:
    """Return, per text column with a match, the mask of cells that mention `subject`.

    A cell matches when it is the identifier or a pseudonym, or contains one as a
    whole word (see `Subject.mentioned_in`). The ``account_id`` column is left out.
    """
    masks: dict[str, np.ndarray] = {}
    for column in frame.columns:
        series = frame[column]
        if column == "account_id" or not _is_text(series):
            continue
        try:
            # Each distinct value is tested once, because snapshot columns repeat a
            # few values (metric names, bands) over many rows.
            distinct = series.dropna().unique()
        except TypeError:
            # Cells holding lists or dicts cannot be hashed, so each cell is tested.
            found = (subject.mentioned_in(value) for value in series)
            mask = np.fromiter(found, dtype=bool, count=len(series))
        else:
            mentioning = [value for value in distinct if subject.mentioned_in(value)]
            mask = series.isin(mentioning).to_numpy(dtype=bool)
        if mask.any():
            masks[str(column)] = mask
    return masks


def _is_text(series: pd.Series) -> bool:
    return pd.api.types.is_string_dtype(series) or series.dtype == object


# Operational store


@dataclass(frozen=True)
class StateMatch:
    """The rows of one state table that concern the subject."""

    table: Table
    where: ColumnElement[bool]
    fields: dict[str, ColumnElement[bool]] = field(default_factory=dict)
    """Per column that ties rows to the subject, the condition on that column alone.
    The condition of a JSON column selects the rows whose document refers to it."""


def state_matches(connection: Connection, subject: Subject) -> list[StateMatch]:
    """Return a filter per existing state table with rows that concern `subject`.

    The list is ordered so that a table comes before every table it references,
    which is the order in which rows can be deleted.
    """
    existing = set(inspect(connection).get_table_names())
    tables = [table for table in metadata.sorted_tables if table.name in existing]
    references = {table.name: list(_references(table, tables)) for table in tables}

    filters: dict[str, ColumnElement[bool]] = {}
    fields: dict[str, dict[str, ColumnElement[bool]]] = {}
    for table in _parents_first(tables, references):
        clauses = _direct_clauses(connection, table, subject)
        if subject.kind == "account":
            for column, parent_column in references[table.name]:
                parent_filter = filters.get(parent_column.table.name)
                if parent_filter is not None:
                    parents = select(parent_column).where(parent_filter)
                    clauses[column.name] = column.in_(parents)
        if clauses:
            filters[table.name] = or_(*clauses.values())
            fields[table.name] = clauses

    ordered = reversed(_parents_first(tables, references))
    return [
        StateMatch(table, filters[table.name], fields[table.name])
        for table in ordered
        if table.name in filters
    ]


def text_columns(table: Table) -> list[Column[Any]]:
    """Return the text columns of a state table other than ``account_id``."""
    return [
        column
        for column in table.columns
        if isinstance(column.type, String) and column.name != "account_id"
    ]


def mentioning_values(
    connection: Connection, column: Column[Any], subject: Subject
) -> list[str]:
    """Return the distinct values of a text column that mention the subject.

    The database narrows the values down with a case-insensitive LIKE, and
    `Subject.mentioned_in` decides, so that only whole words match.
    """
    patterns = [
        func.lower(column).contains(value.lower(), autoescape=True)
        for value in subject.values
    ]
    query = select(column).distinct().where(or_(*patterns))
    return [
        value for (value,) in connection.execute(query) if subject.mentioned_in(value)
    ]


def json_rows(
    connection: Connection, table: Table, subject: Subject, *, in_text: bool = False
) -> Iterator[tuple[Any, Column[Any], Any]]:
    """Yield (primary key, column, document) for JSON documents about the subject.

    With `in_text`, a document counts when any of its strings mentions the subject
    (see `text_mentions`), else when `document_mentions` returns true.
    """
    key = primary_key(table)
    if key is None:
        return
    found = text_mentions if in_text else document_mentions
    for column in (column for column in table.columns if is_json_column(column)):
        query = select(key, column).where(column.is_not(None))
        for row_key, document in connection.execute(query):
            if found(document, subject):
                yield row_key, column, document


def primary_key(table: Table) -> Column[Any] | None:
    """Return the table's primary key column when it is a single column."""
    columns = list(table.primary_key.columns)
    return columns[0] if len(columns) == 1 else None


def _direct_clauses(
    connection: Connection,
    table: Table,
    subject: Subject,
) -> dict[str, ColumnElement[bool]]:
    """Return the conditions on the table's own columns and JSON documents."""
    if subject.kind == "person":
        return mention_clauses(connection, table, subject)
    clauses: dict[str, ColumnElement[bool]] = {}
    if "account_id" in table.columns:
        clauses["account_id"] = table.c.account_id == subject.identifier
    clauses.update(_json_clauses(table, json_rows(connection, table, subject)))
    return clauses


def mention_clauses(
    connection: Connection, table: Table, subject: Subject
) -> dict[str, ColumnElement[bool]]:
    """Return, per column, the condition for rows whose text in it mentions the subject.

    A JSON column's condition selects the rows with a string in the document that
    mentions the subject. The ``account_id`` column is left out: it is an
    account's key, never text about another account.
    """
    clauses: dict[str, ColumnElement[bool]] = {}
    for column in text_columns(table):
        values = mentioning_values(connection, column, subject)
        if values:
            clauses[column.name] = column.in_(values)
    rows = json_rows(connection, table, subject, in_text=True)
    clauses.update(_json_clauses(table, rows))
    return clauses


def _json_clauses(
    table: Table, rows: Iterator[tuple[Any, Column[Any], Any]]
) -> dict[str, ColumnElement[bool]]:
    """Return, per JSON column of `rows`, the condition on the keys of those rows."""
    keys: dict[str, set[Any]] = {}
    for row_key, column, _document in rows:
        keys.setdefault(column.name, set()).add(row_key)
    key = primary_key(table)
    if key is None:
        return {}
    return {name: key.in_(sorted(found)) for name, found in keys.items()}


def mention_matches(
    connection: Connection,
    subject: Subject,
    excluded: dict[str, ColumnElement[bool]],
) -> list[StateMatch]:
    """Return a filter per existing state table with rows whose text mentions `subject`.

    `excluded` maps table names to filters of rows left out, such as the rows an
    erasure deletes anyway.
    """
    existing = set(inspect(connection).get_table_names())
    matches: list[StateMatch] = []
    for table in metadata.sorted_tables:
        if table.name not in existing:
            continue
        clauses = mention_clauses(connection, table, subject)
        if not clauses:
            continue
        where = or_(*clauses.values())
        left_out = excluded.get(table.name)
        if left_out is not None:
            # A NULL from the excluded filter means "not excluded".
            included = not_(func.coalesce(left_out, false()))
            where = and_(where, included)
            clauses = {name: and_(clause, included) for name, clause in clauses.items()}
        matches.append(StateMatch(table, where, clauses))
    return matches


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


def json_records(document: Any) -> Iterator[Any]:
    """Yield the records of a JSON document: the items of its outermost lists.

    A table export is one list of records. In other documents, such as the files
    that `export_subject` writes, the lists are found under their keys at any depth.
    """
    if isinstance(document, list):
        yield from document
    elif isinstance(document, dict):
        for value in document.values():
            yield from json_records(value)


def is_subject_export(document: Any) -> bool:
    """Return whether a JSON document is an export that `export_subject` wrote."""
    if not isinstance(document, dict) or not document.keys() >= EXPORT_KEYS:
        return False
    exported = document["subject"]
    return isinstance(exported, dict) and {"kind", "identifier"} <= exported.keys()


def exports_subject(document: Any, subject: Subject) -> bool:
    """Return whether a JSON document is the export of `subject` itself.

    The export's subject must be of the same kind, and its identifier or one of its
    pseudonyms must be the subject (emails in any letter case).
    """
    if not is_subject_export(document):
        return False
    exported = document["subject"]
    if exported["kind"] != subject.kind:
        return False
    pseudonyms = exported.get("pseudonyms")
    values = [
        exported["identifier"],
        *(pseudonyms if isinstance(pseudonyms, list) else []),
    ]
    return any(subject.matches(value) for value in values)


def export_rows(document: dict[str, Any]) -> int:
    """Return the rows that a subject export lists, plus one for its subject entry."""
    sections = ("snapshots", "events", "state", "files", "reports")
    return 1 + sum(len(list(json_records(document.get(name)))) for name in sections)


def report_mentions(path: Path, subject: Subject) -> bool:
    """Return whether an HTML report contains the subject as a whole word."""
    text = path.read_text(encoding="utf-8", errors="replace")
    # Entities such as &amp; are decoded, so ids are compared as the reader sees them.
    return subject.mentioned_in(html.unescape(text))
