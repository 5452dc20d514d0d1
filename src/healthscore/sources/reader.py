"""Read source files into DuckDB with standard column names, types and row checks.

Each source becomes one relation named `source_<name>` with:

- the standard columns of its kind that the file has, converted to their types;
- its declared attributes;
- `_file` and `_row` (a running row number; see SourceSet.report) for error reports;
- `_problem`: NULL for a usable row, else `reason:column` for the first check it fails.

CSV and JSON Lines files are copied into a temporary table once per run, because
scanning a gzip CSV again for every metric would cost more than the copy. Parquet
files stay as a view so that DuckDB can skip row groups outside a metric's window.
When their footers' statistics rule out a missing or blank value in a column, its
check is left out of `_problem`, so no scan evaluates it per row.
"""

from __future__ import annotations

import glob
from dataclasses import dataclass
from pathlib import Path

import duckdb

from healthscore.config import Project
from healthscore.config.models import REQUIRED_COLUMNS, STANDARD_COLUMNS, SourceConfig
from healthscore.privacy.pseudonymize import pseudonymize_select
from healthscore.sources.csv_rows import fields_count, find_field_count_error

_SQL_TYPES = {
    "string": "VARCHAR",
    "number": "DOUBLE",
    "boolean": "BOOLEAN",
    "date": "DATE",
    "timestamp": "TIMESTAMP",
}


_NUMERIC_TYPES = {
    "TINYINT", "SMALLINT", "INTEGER", "BIGINT", "HUGEINT", "UTINYINT", "USMALLINT",
    "UINTEGER", "UBIGINT", "FLOAT", "DOUBLE",
}  # fmt: skip


class SourceError(Exception):
    """A source that cannot be read at all; nothing is computed or stored."""


@dataclass(frozen=True)
class LoadedSource:
    """A source read into the engine: its relation name and the columns it has."""

    name: str
    config: SourceConfig
    relation: str
    files: tuple[str, ...]
    columns: dict[str, str]
    """Standard or attribute column name to its type (string, number, ...)."""
    running_rows: bool = False
    """Whether `_row` numbers rows across all files rather than within each file."""
    unchecked: bool = False
    """Whether every row is usable by itself: `_problem` is NULL in every row."""


def quote(identifier: str) -> str:
    """Quote an SQL identifier for DuckDB."""
    return '"' + identifier.replace('"', '""') + '"'


def literal(value: str) -> str:
    """Quote an SQL string literal for DuckDB."""
    return "'" + value.replace("'", "''") + "'"


def file_list(files: list[str]) -> str:
    """Return `files` as a DuckDB list literal, for read_csv and its siblings."""
    return "[" + ", ".join(literal(file) for file in files) + "]"


def resolve_files(project: Project, name: str, source: SourceConfig) -> list[str]:
    """Expand the source's path or glob into sorted file names."""
    if source.table is not None:
        raise SourceError(
            f"source {name!r} reads table {source.table!r}, so it has no files; "
            f"only a source with sources.{name}.path has"
        )
    pattern = str(project.path(source.path))
    files = sorted(glob.glob(pattern))
    if not files:
        raise SourceError(
            f"source {name!r}: no file matches {source.path!r} "
            f"(looked in {project.root}); check sources.{name}.path"
        )
    return files


def read_source(
    con: duckdb.DuckDBPyConnection, project: Project, name: str, source: SourceConfig
) -> LoadedSource:
    """Create the relation `source_<name>` for one source."""
    # Imported here: the importers build on this module.
    from healthscore.importers import is_importer, read_with_importer
    from healthscore.sources.joins import load_joins
    from healthscore.sources.lookups import lookup_joins
    from healthscore.sources.stored import is_store_source, read_store_source
    from healthscore.sources.tables import read_table_source

    if source.table is not None:
        return read_table_source(con, project, name, source)
    if is_store_source(source):
        return read_store_source(con, project, name, source)
    if is_importer(source.format):
        return read_with_importer(con, project, name, source)
    files = resolve_files(project, name, source)
    file_format = source.resolved_format()
    empty = [file for file in files if Path(file).stat().st_size == 0]
    if empty:
        raise SourceError(
            f"source {name!r}: {_describe_files(empty)} is empty; a {file_format} "
            "file needs at least a header row"
        )
    scan = _scan_sql(file_format, files, source)
    try:
        described = con.execute(f"DESCRIBE SELECT * FROM {scan}").fetchall()
    except duckdb.Error as exc:
        raise _scan_error(name, source, files, file_format, exc) from None
    # filename and file_row_number are added by the scan, not columns of the file.
    file_types = {
        row[0]: row[1]
        for row in described
        if row[0] not in ("filename", "file_row_number")
    }
    if file_format == "jsonl":
        # DuckDB infers each key's type from the first lines (read_json's
        # sample_size, 20,480 by default). A later value that does not fit, such as
        # an invalid time after valid ones, would fail the read of the whole file.
        # Read as text, like CSV files, each value is checked on its own row.
        # Numbers, booleans and nested values keep their JSON text ('1.5', 'true').
        keys = [*file_types, *_late_json_keys(con, files, source, file_types)]
        scan = _scan_sql(file_format, files, source, text_keys=keys)
        file_types = dict.fromkeys(keys, "VARCHAR")
    columns = _columns_present(name, source, file_types)
    joined = load_joins(con, project, name, source)
    columns.update(joined.types)
    materialize = (
        file_format != "parquet"
        or source.lookups
        or source.joins
        or source.kind == "accounts"
    )
    # A materialized relation runs its checks once, so only a view gains from this.
    complete = frozenset() if materialize else complete_columns(con, files, file_types)
    select = _standard_select(
        project, name, source, columns, file_types, joined.values, complete
    )
    relation = f"source_{name}"
    kind = "TEMP TABLE" if materialize else "TEMP VIEW"
    # `_row` numbers rows in scan order; SourceSet.report turns it into the row within
    # the file by subtracting the file's first number. DuckDB keeps file order when it
    # scans with preserve_insertion_order (the default).
    row = "file_row_number + 1" if file_format == "parquet" else "row_number() OVER ()"
    if source.joins and file_format != "parquet":
        # A join may change the order of the rows, so they are numbered before it.
        scan = f"(SELECT *, {row} AS _scan_row FROM {scan})"
        row = "raw._scan_row"
    query = (
        f"SELECT {select}, raw.filename AS _file, {row} AS _row "
        f"FROM {scan} AS raw {lookup_joins(con, project, name, source)} {joined.sql}"
    )
    # Person columns are hashed here, before any metric or stored output reads them.
    query = pseudonymize_select(con, project, columns, query)
    sql = f"CREATE OR REPLACE {kind} {quote(relation)} AS {query}"
    try:
        con.execute(sql)
    except duckdb.Error as exc:
        field_count = _field_count_error(name, source, files, file_format, exc)
        if field_count is not None:
            raise field_count from None
        hint = _MEMORY_HINT if isinstance(exc, duckdb.OutOfMemoryException) else ""
        raise SourceError(
            f"source {name!r}: reading {_describe_files(files)} failed: "
            f"{_first_line(exc)}{hint}"
        ) from None
    running_rows = file_format in ("csv", "jsonl")
    unchecked = select.endswith(f"{_NO_PROBLEM} AS _problem")
    return LoadedSource(
        name, source, relation, tuple(files), columns, running_rows, unchecked
    )


def _scan_sql(
    file_format: str,
    files: list[str],
    source: SourceConfig,
    text_keys: list[str] | None = None,
) -> str:
    """Return the scan of a source's files; JSON Lines keys in `text_keys` as text."""
    names = file_list(files)
    if file_format == "csv":
        return (
            f"read_csv({names}, all_varchar = true, header = true, "
            f"delim = {literal(source.delimiter)}, filename = true)"
        )
    if file_format == "parquet":
        # Files of one glob may differ in their columns, or in their order; a
        # column that a file lacks reads as missing in its rows.
        union = ", union_by_name = true" if len(files) > 1 else ""
        return f"read_parquet({names}, filename = true, file_row_number = true{union})"
    columns = ""
    if text_keys is not None:
        keys = ", ".join(f"{literal(key)}: 'VARCHAR'" for key in text_keys)
        columns = f", columns = {{{keys}}}"
    return f"read_json({names}, format = 'newline_delimited', filename = true{columns})"


def _late_json_keys(
    con: duckdb.DuckDBPyConnection,
    files: list[str],
    source: SourceConfig,
    sampled: dict[str, str],
) -> list[str]:
    """Return the source's columns that JSON Lines `files` have only after the sample.

    DuckDB lists the keys of the first lines only. When a standard column or an
    attribute of the source is not among them, one more pass over the files looks
    for a value of it anywhere, so a key that first appears late is still read. A
    key whose every value is null counts as missing.
    """
    expected = [source.file_column(column) for column in STANDARD_COLUMNS[source.kind]]
    expected += list(source.attributes)
    missing = [column for column in dict.fromkeys(expected) if column not in sampled]
    if not missing:
        return []
    counts = ", ".join(f"count({quote(key)})" for key in missing)
    scan = _scan_sql("jsonl", files, source, text_keys=missing)
    try:
        found = con.execute(f"SELECT {counts} FROM {scan}").fetchone()
    except duckdb.Error:
        return []  # the scan of the files reports the problem itself
    assert found is not None
    return [key for key, count in zip(missing, found, strict=True) if count]


def _scan_error(
    name: str,
    source: SourceConfig,
    files: list[str],
    file_format: str,
    exc: duckdb.Error,
) -> SourceError:
    """Turn DuckDB's failure to scan a source's files into a SourceError."""
    field_count = _field_count_error(name, source, files, file_format, exc)
    if field_count is not None:
        return field_count
    hint = ""
    if isinstance(exc, duckdb.OutOfMemoryException):
        hint = _MEMORY_HINT
    elif file_format == "csv":
        hint = (
            f"; if its fields are separated by something else than "
            f"{source.delimiter!r}, set sources.{name}.delimiter"
        )
    return SourceError(
        f"source {name!r}: cannot read {_describe_files(files)} as {file_format}: "
        f"{_first_line(exc)}{hint}"
    )


def _field_count_error(
    name: str,
    source: SourceConfig,
    files: list[str],
    file_format: str,
    exc: duckdb.Error,
) -> SourceError | None:
    """Name the CSV row whose field count differs from the header's, if one does.

    DuckDB's own message lacks the line when its sniffer meets such a row, so the
    files are scanned again here, but only after DuckDB failed.
    """
    if file_format != "csv" or not isinstance(exc, duckdb.InvalidInputException):
        return None
    found = find_field_count_error(files, source.delimiter)
    if found is None:
        return None
    message = (
        f"source {name!r}: cannot read {found.file} as csv: line {found.line} has "
        f"{fields_count(found.found)} but the header has {found.expected}."
    )
    hint = _delimiter_hint(name, dict.fromkeys(found.header, "VARCHAR"))
    if hint:
        return SourceError(message + hint)
    return SourceError(
        f"{message} Fix the row, or put double quotes around each value that "
        f"contains {source.delimiter!r}."
    )


def _delimiter_hint(name: str, file_types: dict[str, str]) -> str:
    """Suggest a delimiter when a CSV header was read as one column."""
    if len(file_types) != 1:
        return ""
    (only,) = file_types
    used = [mark for mark in (";", "\t", "|") if mark in only]
    if not used:
        return ""
    return f" The header looks separated by {used[0]!r}: set sources.{name}.delimiter."


def _columns_present(
    name: str,
    source: SourceConfig,
    file_types: dict[str, str],
    container: str = "the file",
) -> dict[str, str]:
    present: dict[str, str] = {}
    for standard, kind in STANDARD_COLUMNS[source.kind].items():
        column = source.file_column(standard)
        if column in file_types:
            present[standard] = kind
        elif standard in source.columns or standard in REQUIRED_COLUMNS[source.kind]:
            raise SourceError(
                f"source {name!r}: column {column!r} for {standard!r} not found in "
                f"{container}; it has {', '.join(file_types)}. Fix "
                f"sources.{name}.columns." + _delimiter_hint(name, file_types)
            )
    for attribute, kind in source.attributes.items():
        if attribute not in file_types:
            raise SourceError(
                f"source {name!r}: attribute column {attribute!r} not found in "
                f"{container}; it has {', '.join(file_types)}. Fix "
                f"sources.{name}.attributes."
            )
        present[attribute] = kind
    return present


def _standard_select(
    project: Project,
    name: str,
    source: SourceConfig,
    columns: dict[str, str],
    file_types: dict[str, str],
    joined: dict[str, str] | None = None,
    complete: frozenset[str] = frozenset(),
) -> str:
    """Return the select list of the typed columns and the `_problem` check.

    `joined` maps the attributes of joined files to the SQL of their raw text value
    (see `sources.joins`); the other columns are read from `raw`. A required column
    of the file that is in `complete` (see `complete_columns`) gets no check for a
    missing value.
    """
    joined = joined or {}
    typed: dict[str, str] = {}
    checks: list[tuple[str, str]] = []
    required = set(REQUIRED_COLUMNS[source.kind])
    for column, kind in columns.items():
        is_standard = column in STANDARD_COLUMNS[source.kind]
        # Footer statistics describe the file's columns, not joined ones.
        never_missing = False
        if column in joined:
            raw, raw_type = joined[column], "VARCHAR"
        else:
            file_column = source.file_column(column) if is_standard else column
            raw = f"raw.{quote(file_column)}"
            raw_type = file_types[file_column]
            never_missing = file_column in complete
        if column in source.lookups:
            value = f"{quote('lookup_' + column)}.value"
            checks.append(
                (
                    f"{_present(raw, raw_type)} AND {value} IS NULL",
                    f"unknown_code:{column}",
                )
            )
        else:
            value = _typed(raw, kind, raw_type, source.timestamp_format)
            if "TRY_" in value:  # only a TRY_ conversion can fail and give NULL
                reason = "unparseable_value"
                if column in joined:
                    reason = "unparseable_joined_value"
                checks.append(
                    (
                        f"{_present(raw, raw_type)} AND {value} IS NULL",
                        f"{reason}:{column}",
                    )
                )
            if kind == "string" and raw_type == "VARCHAR" and not never_missing:
                # An empty field of a CSV file reads as missing, so an empty text
                # in JSON Lines or Parquet does too.
                value = f"NULLIF({value}, '')"
        if column in required and not never_missing:
            checks.insert(
                0, (f"NOT {_present(raw, raw_type)}", f"missing_value:{column}")
            )
        typed[column] = value
    checks.extend(_range_checks(source, typed))
    problem = _NO_PROBLEM
    if checks:
        cases = " ".join(
            f"WHEN {test} THEN {literal(reason)}" for test, reason in checks
        )
        problem = f"CASE {cases} END"
    selected = [f"{value} AS {quote(column)}" for column, value in typed.items()]
    return ", ".join([*selected, f"{problem} AS _problem"])


def complete_columns(
    con: duckdb.DuckDBPyConnection, files: list[str], file_types: dict[str, str]
) -> frozenset[str]:
    """Columns of Parquet `files` whose footers rule out a missing or blank value.

    `file_types` gives each column's DuckDB type. A column qualifies when every row
    group of every file has it with a null count of 0. A text column must also have
    a minimum whose first character sorts after a space, because a blank value (''
    or one starting with a space) would sort before it. A writer that leaves out
    statistics, or truncates a minimum to '', keeps the checks. Reading the footers
    takes milliseconds, and evaluating the checks took about 0.15 s per scan of 20
    million rows.
    """
    names = file_list(files)
    try:
        rows = con.execute(
            "WITH footers AS (SELECT * FROM parquet_metadata("
            f"{names})) SELECT path_in_schema, bool_and(stats_null_count IS NOT "
            "NULL), sum(stats_null_count), bool_and(stats_min_value IS NOT NULL), "
            "min(stats_min_value), count(*) = (SELECT count(DISTINCT (file_name, "
            "row_group_id)) FROM footers) FROM footers GROUP BY path_in_schema"
        ).fetchall()
    except duckdb.Error:
        return frozenset()  # the scan reports an unreadable footer itself
    complete = set()
    for column, counted, nulls, has_minimum, minimum, everywhere in rows:
        # A file without the column gives missing values in its rows.
        if not (counted and everywhere) or nulls != 0 or column not in file_types:
            continue
        if file_types[column] == "VARCHAR" and not (
            has_minimum and minimum and minimum[0] > " "
        ):
            continue
        complete.add(column)
    return frozenset(complete)


#: The `_problem` of a source without checks.
_NO_PROBLEM = "CAST(NULL AS VARCHAR)"


def _present(raw: str, file_type: str) -> str:
    if file_type != "VARCHAR":
        return f"({raw} IS NOT NULL)"  # only text can be blank
    # Trimming every value is slow; only a value that starts with a space can be
    # blank without being empty.
    return (
        f"({raw} IS NOT NULL AND {raw} <> '' "
        f"AND (NOT starts_with({raw}, ' ') OR trim({raw}) <> ''))"
    )


def _typed(raw: str, kind: str, file_type: str, timestamp_format: str | None) -> str:
    if kind == "string":
        return f"CAST({raw} AS VARCHAR)"
    if kind == "number" and file_type in _NUMERIC_TYPES:
        return f"CAST({raw} AS DOUBLE)"  # a cast between number types cannot fail
    if kind in ("number", "boolean"):
        return f"TRY_CAST({raw} AS {_SQL_TYPES[kind]})"
    if file_type == "TIMESTAMP":
        # A naive timestamp is already wall-clock time in the project zone.
        local = raw
    elif file_type == "DATE" or file_type.startswith("TIMESTAMP WITH TIME ZONE"):
        # DuckDB converts an instant to wall-clock time in the session time zone,
        # which connect() sets to the project's.
        local = f"CAST({raw} AS TIMESTAMP)"
    elif timestamp_format:
        parsed = f"TRY_STRPTIME(CAST({raw} AS VARCHAR), {literal(timestamp_format)})"
        local = f"CAST(CAST({parsed} AS TIMESTAMPTZ) AS TIMESTAMP)"
    else:
        # Text without an offset is read in the session zone; with an offset it is
        # converted to it.
        parsed = f"TRY_CAST(CAST({raw} AS VARCHAR) AS TIMESTAMPTZ)"
        local = f"CAST({parsed} AS TIMESTAMP)"
    return local if kind == "timestamp" else f"CAST({local} AS DATE)"


def _range_checks(source: SourceConfig, typed: dict[str, str]) -> list[tuple[str, str]]:
    if source.kind == "subscriptions" and "end" in typed:
        return [(f"{typed['end']} < {typed['start']}", "end_before_start:end")]
    return []


def _describe_files(files: list[str]) -> str:
    if len(files) == 1:
        return files[0]
    return f"{len(files)} files ({Path(files[0]).name}, ...)"


#: Added to a read error when DuckDB ran out of memory.
_MEMORY_HINT = (
    "; DuckDB ran out of memory, so raise engine.memory_limit in healthscore.yml"
)


def _first_line(exc: Exception) -> str:
    return str(exc).strip().splitlines()[0]
