"""Joined files: CSV files whose columns are added to a source's rows by account id.

Each joined file becomes the temporary table `join_<source>_<index>` with the key
(`_key`), one column per attribute (`a0`, `a1`, ... as raw text), the file name
(`_file`), a running row number (`_row`) and the row's number within its file
(`_file_row`). The source's query then joins it with a LEFT JOIN after
`FROM ... AS raw`, so a source row without a joined row gets NULL attributes, and
`reader._standard_select` converts the values to their types like the source's own
attributes. A source row whose joined value cannot be read is excluded, and the
source report's example for it names the joined file, row and value
(`joined_values_sql`).

A key repeated in a joined file would multiply the source's rows, so it raises
SourceError naming the file and both lines. The lines are found with Python's csv
module after DuckDB found the repeat, because DuckDB numbers records, not lines.
"""

from __future__ import annotations

import csv
import glob
from dataclasses import dataclass, field
from itertools import islice

import duckdb

from healthscore.config import Project
from healthscore.config.models import JoinConfig, SourceConfig
from healthscore.sources.csv_rows import (
    csv_records,
    fields_count,
    find_field_count_error,
    find_line_ending_change,
)
from healthscore.sources.reader import (
    SourceError,
    account_id_sql,
    file_list,
    literal,
    quote,
)


@dataclass(frozen=True)
class JoinedColumns:
    """The joins of one source: their SQL and the raw value of each attribute."""

    sql: str = ""
    """LEFT JOIN clauses to add after `FROM ... AS raw`."""
    values: dict[str, str] = field(default_factory=dict)
    """Attribute name to the SQL expression of its raw text value."""
    types: dict[str, str] = field(default_factory=dict)
    """Attribute name to its declared type (string, number, ...)."""


def load_joins(
    con: duckdb.DuckDBPyConnection,
    project: Project,
    name: str,
    source: SourceConfig,
    file_types: dict[str, str] | None = None,
) -> JoinedColumns:
    """Read every joined file of a source into DuckDB and return how to join them.

    `file_types` gives the types of the source file's columns, so that an account
    id of a number column joins by the text that the source reads for it. Raises
    SourceError when a file is missing, unreadable, lacks the key or an attribute
    column, or repeats a key.
    """
    if not source.joins:
        return JoinedColumns()
    file_column = source.file_column("account_id")
    raw_type = (file_types or {}).get(file_column, "VARCHAR")
    account_id = account_id_sql(source, f"raw.{quote(file_column)}", raw_type)
    clauses: list[str] = []
    values: dict[str, str] = {}
    types: dict[str, str] = {}
    for index, join in enumerate(source.joins):
        table = _read_join(con, project, name, index, join)
        alias = quote(f"join_{index}")
        clauses.append(
            f"LEFT JOIN {quote(table)} AS {alias} ON {account_id} = {alias}._key"
        )
        for position, (attribute, kind) in enumerate(join.attributes.items()):
            values[attribute] = f"{alias}.{quote(f'a{position}')}"
            types[attribute] = kind
    return JoinedColumns(" ".join(clauses), values, types)


def _read_join(
    con: duckdb.DuckDBPyConnection,
    project: Project,
    name: str,
    index: int,
    join: JoinConfig,
) -> str:
    """Create the table of one joined file and return its name."""
    setting = f"sources.{name}.joins[{index}]"
    try:
        pattern = str(project.path(join.path))
    except ValueError as exc:
        raise SourceError(f"source {name!r}: {setting}.path: {exc}") from None
    files = sorted(glob.glob(pattern))
    if not files:
        raise SourceError(
            f"source {name!r}: no joined file matches {join.path!r} "
            f"(looked in {project.root}); check {setting}.path"
        )
    for file in files:
        _check_header(name, setting, file, join)
    names = file_list(files)
    # skip = 0 keeps the header on line 1. DuckDB 2.0.1 otherwise may skip the
    # lines before a row with an extra field and read that row as the header.
    scan = (
        f"read_csv({names}, all_varchar = true, header = true, skip = 0, "
        f"delim = {literal(join.delimiter)}, filename = true, union_by_name = true)"
    )
    attributes = ", ".join(
        f"{quote(column)} AS {quote(f'a{position}')}"
        for position, column in enumerate(join.attributes)
    )
    table = join_table(name, index)
    # Keys are compared as written: the source's account id is not trimmed either.
    numbered = (
        f"SELECT CAST({quote(join.key)} AS VARCHAR) AS _key, {attributes}, "
        f"filename AS _file, row_number() OVER () AS _row FROM {scan}"
    )
    # Rows are numbered within their file before the rows without a key are
    # dropped, so `_file_row` counts every data row of the file.
    in_file = (
        f"SELECT *, _row - min(_row) OVER (PARTITION BY _file) + 1 AS _file_row "
        f"FROM ({numbered})"
    )
    try:
        con.execute(
            f"CREATE OR REPLACE TEMP TABLE {quote(table)} AS SELECT * FROM "
            f"({in_file}) WHERE _key IS NOT NULL AND trim(_key) <> ''"
        )
    except duckdb.Error as exc:
        raise _scan_error(name, setting, files, join, exc) from None
    repeated = con.execute(
        f"SELECT _key FROM (SELECT _key, _row, row_number() OVER "
        f"(PARTITION BY _key ORDER BY _row) AS n FROM {quote(table)}) "
        "WHERE n = 2 ORDER BY _row LIMIT 1"
    ).fetchone()
    if repeated is not None:
        raise _repeated_key_error(con, name, table, files, join, str(repeated[0]))
    return table


def join_table(name: str, index: int) -> str:
    """Return the name of the table of a source's joined file at `index`."""
    return f"join_{name}_{index}"


def joined_values_sql(
    name: str, source: SourceConfig, attribute: str, keys: str, limit: int
) -> str:
    """Return DuckDB SQL that lists the joined rows of `attribute` for some keys.

    `keys` is a query of account ids. Each result row has the joined file, the
    row's number within it (data rows counted from 1, as a source row is) and the
    raw text of the attribute, in file order, at most `limit` rows. Raises
    ValueError when no join of the source has the attribute.
    """
    for index, join in enumerate(source.joins):
        if attribute in join.attributes:
            position = list(join.attributes).index(attribute)
            table = join_table(name, index)
            break
    else:
        raise ValueError(f"source {name!r} joins no attribute {attribute!r}")
    return (
        f"SELECT _file, _file_row, {quote(f'a{position}')} FROM {quote(table)} "
        f"WHERE _key IN ({keys}) ORDER BY _file, _file_row LIMIT {limit}"
    )


def _check_header(name: str, setting: str, file: str, join: JoinConfig) -> None:
    """Raise SourceError when the header is not line 1 or lacks a needed column.

    DuckDB reads the header from line 1 (see `skip = 0` in `_read_join`), so a
    file with blank lines or a title above its header is rejected.
    """
    try:
        first = next(csv_records(file, join.delimiter), None)
    except (OSError, EOFError) as exc:
        raise SourceError(
            f"source {name!r}: joined file {file} cannot be read: {exc}; check "
            f"{setting}.path"
        ) from None
    except UnicodeDecodeError as exc:
        raise SourceError(
            f"source {name!r}: joined file {file} is not UTF-8 text (byte "
            f"{exc.start}: {exc.reason}); save it as UTF-8"
        ) from None
    except csv.Error as exc:
        raise SourceError(
            f"source {name!r}: joined file {file} cannot be read as CSV: {exc}"
        ) from None
    if first is None:
        raise SourceError(
            f"source {name!r}: joined file {file} is empty; it needs a header row "
            f"with {join.key!r} and the attribute columns"
        )
    line, header = first
    if line > 1:
        blank = "blank line" if line == 2 else "blank lines"
        count = "1 blank line" if line == 2 else f"{line - 1} blank lines"
        raise SourceError(
            f"source {name!r}: joined file {file} starts with {count}, so its "
            f"header is on line {line}. Remove the {blank}, so that the header is "
            "line 1."
        )
    missing = [c for c in [join.key, *join.attributes] if c not in header]
    below = _header_line_below(file, join) if missing else None
    if below is not None:
        above = "the line" if below == 2 else f"the {below - 1} lines"
        raise SourceError(
            f"source {name!r}: joined file {file} has no "
            f"{'key ' if missing[0] == join.key else ''}column {missing[0]!r} on "
            f"line 1, but line {below} has the key and attribute columns. Remove "
            f"{above} above line {below}, so that the header is line 1."
        )
    if join.key not in header:
        raise SourceError(
            f"source {name!r}: joined file {file} has no key column {join.key!r}; "
            f"its header has {', '.join(header)}. Fix {setting}.key or the header."
            + _delimiter_hint(setting, header)
        )
    for column in join.attributes:
        if column not in header:
            raise SourceError(
                f"source {name!r}: joined file {file} has no column {column!r}; its "
                f"header has {', '.join(header)}. Fix {setting}.attributes or the "
                "header." + _delimiter_hint(setting, header)
            )


#: Records after line 1 in which a header is looked for. Titles and comments
#: above a header are a few lines, and the search only adds a hint to an error.
_HEADER_SEARCH_RECORDS = 20


def _header_line_below(file: str, join: JoinConfig) -> int | None:
    """Return the line of the first record after line 1 that has every column of
    `join`, when one of the next `_HEADER_SEARCH_RECORDS` records does."""
    needed = {join.key, *join.attributes}
    records = csv_records(file, join.delimiter)
    try:
        next(records, None)
        for line, fields in islice(records, _HEADER_SEARCH_RECORDS):
            if needed <= set(fields):
                return line
    except (OSError, EOFError, UnicodeDecodeError, csv.Error):
        return None
    finally:
        records.close()
    return None


def _delimiter_hint(setting: str, header: list[str]) -> str:
    """Suggest a delimiter when the header was read as one column."""
    if len(header) != 1:
        return ""
    used = [mark for mark in (";", "\t", "|") if mark in header[0]]
    if not used:
        return ""
    return f" The header looks separated by {used[0]!r}: set {setting}.delimiter."


def _scan_error(
    name: str, setting: str, files: list[str], join: JoinConfig, exc: duckdb.Error
) -> SourceError:
    """Turn DuckDB's failure to read joined files into a SourceError."""
    found = None
    if isinstance(exc, duckdb.InvalidInputException):
        found = find_field_count_error(files, join.delimiter)
    if found is not None:
        return SourceError(
            f"source {name!r}: cannot read joined file {found.file}: line "
            f"{found.line} has {fields_count(found.found)} but the header has "
            f"{found.expected}. Fix the row, or put double quotes around each value "
            f"that contains {join.delimiter!r}."
        )
    ending = find_line_ending_change(files)
    if ending is not None:
        return SourceError(
            f"source {name!r}: cannot read joined file {ending.file} as csv: "
            f"{ending.describe()}"
        )
    message = str(exc).strip().splitlines()[0]
    return SourceError(
        f"source {name!r}: cannot read joined file {', '.join(files)} as csv: "
        f"{message}; check {setting}"
    )


def _repeated_key_error(
    con: duckdb.DuckDBPyConnection,
    name: str,
    table: str,
    files: list[str],
    join: JoinConfig,
    key: str,
) -> SourceError:
    """Describe a key that appears twice, with the file and line of each row."""
    places = _key_lines(files, join, key)
    if len(places) < 2:
        # The csv module split the file differently from DuckDB: give DuckDB's rows.
        rows = con.execute(
            f"SELECT _file, _file_row FROM {quote(table)} "
            f"WHERE _key = {literal(key)} ORDER BY _row LIMIT 2"
        ).fetchall()
        places = [(str(file), f"data row {row}") for file, row in rows]
    (first_file, first), (second_file, second) = places[:2]
    if first_file == second_file:
        where = f"joined file {first_file}: key {key!r} of column {join.key!r} is on "
        where += f"{first} and again on {second}"
    else:
        where = f"joined files: key {key!r} of column {join.key!r} is on {first} of "
        where += f"{first_file} and again on {second} of {second_file}"
    return SourceError(
        f"source {name!r}: {where}. A joined file may have one row per account id: "
        "remove or merge the repeated rows."
    )


def _key_lines(files: list[str], join: JoinConfig, key: str) -> list[tuple[str, str]]:
    """Return the first two (file, "line N") places whose key field equals `key`."""
    places: list[tuple[str, str]] = []
    for file in files:
        records = csv_records(file, join.delimiter)
        first = next(records, None)
        if first is None or join.key not in first[1]:
            continue
        at = first[1].index(join.key)
        for line, fields in records:
            if at < len(fields) and fields[at] == key:
                places.append((file, f"line {line}"))
                if len(places) == 2:
                    return places
    return places
