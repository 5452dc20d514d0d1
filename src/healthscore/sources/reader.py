"""Read source files into DuckDB with standard column names, types and row checks.

Each source becomes one relation named `source_<name>` with:

- the standard columns of its kind that the file has, converted to their types;
- its declared attributes;
- `_file` and `_row` for error reports: the row's number within its file, or a
  running number across the files (`LoadedSource.running_rows`). A row of a JSON
  Lines file is numbered by its line in the file, blank lines included;
- `_problem`: NULL for a usable row, else `reason:column` for the first check it fails.
  A number written as text rejects NaN and infinite values (`NaN`, `inf`, `1e400`)
  as unparseable. In a float column of a Parquet file or a database table, NaN is a
  missing value, as pandas writes one, and an infinite value is unparseable.

CSV and JSON Lines files are copied into a temporary table once per run, because
scanning a gzip CSV again for every metric would cost more than the copy. Parquet
files stay as a view so that DuckDB can skip row groups outside a metric's window.
When their footers' statistics rule out a missing or blank value in a column, or an
infinite value in a float column, its check is left out of `_problem`, so no scan
evaluates it per row.
"""

from __future__ import annotations

import csv
import glob
import logging
import math
import re
from dataclasses import dataclass
from datetime import date
from pathlib import Path

import duckdb
import pyarrow as pa

from healthscore.config import Project
from healthscore.config.models import REQUIRED_COLUMNS, STANDARD_COLUMNS, SourceConfig
from healthscore.dates import EARLIEST_DATE
from healthscore.errors import SourceError
from healthscore.privacy.pseudonymize import pseudonymize_select
from healthscore.sources.csv_rows import (
    csv_header,
    fields_count,
    file_signature,
    find_field_count_error,
    find_json_record_error,
    find_line_ending_change,
    find_repeated_column,
    has_json_record,
    json_line_shifts,
    open_binary,
)

logger = logging.getLogger(__name__)

_SQL_TYPES = {
    "string": "VARCHAR",
    "number": "DOUBLE",
    "boolean": "BOOLEAN",
    "date": "DATE",
    "timestamp": "TIMESTAMP",
}


#: DuckDB types whose every value converts to a finite DOUBLE; DECIMAL(p,s) too.
_EXACT_NUMBER_TYPES = {
    "TINYINT", "SMALLINT", "INTEGER", "BIGINT", "HUGEINT", "UTINYINT", "USMALLINT",
    "UINTEGER", "UBIGINT", "UHUGEINT",
}  # fmt: skip

#: DuckDB types that can contain NaN and infinite values.
_FLOAT_TYPES = {"FLOAT", "DOUBLE"}

#: Type name, in place of a DuckDB type, of a text column that contains the exact
#: text of decimal numbers, such as `-12.500`, `NaN` or `Infinity`. PostgreSQL
#: numeric values are fetched as such text, because Arrow's decimals are limited
#: to 38 digits.
NUMERIC_TEXT = "NUMERIC_TEXT"

#: Type name, in place of a DuckDB type, of the account id column of JSON Lines
#: files. It is read as JSON, so that a number id is distinguished from a string
#: id (see `_account_id_parts`).
JSON_ID = "JSON_ID"

#: Limit below which each float type stores every whole number exactly: 2**24 for
#: FLOAT and 2**53 for DOUBLE (IEEE 754 single and double precision). The limit
#: itself is excluded, because 2**53 + 1 rounds to 2**53 as a DOUBLE.
EXACT_FLOAT_LIMITS = {"FLOAT": 2**24, "DOUBLE": 2**53}

#: `_problem` of a row whose account id, read from a number column, is not a whole
#: number or is past `EXACT_FLOAT_LIMITS`. `check_whole_account_ids` raises
#: SourceError for such a row, so no report shows this reason.
FRACTIONAL_ID = "unparseable_value:account_id"

#: Source formats read as plain files; every other format names an importer.
_FILE_FORMATS = (None, "csv", "parquet", "jsonl")

#: First and last day of the dates and timestamps that a source row may contain.
#: A row with a time outside them, infinite ones included, is excluded. The last
#: day stays below 2262-04-11, where pandas' nanosecond timestamps end, because
#: query results reach Python as pandas frames.
EARLIEST_SOURCE_DATE = EARLIEST_DATE
LATEST_SOURCE_DATE = date(2261, 12, 31)

#: Text that a date or timestamp column reads without `timestamp_format`:
#: YYYY-MM-DD, optionally followed by `T` or one space and HH:MM, or HH:MM:SS with
#: up to 9 decimals and an optional offset (Z, +HH, +HHMM or +HH:MM). Any other
#: text is unparseable, because DuckDB and Spark accept different extra forms.
#: `\z` ends the match, because Java's `$` also matches before a final newline.
TIMESTAMP_TEXT = (
    r"^[0-9]{4}-[0-9]{2}-[0-9]{2}([T ]([01][0-9]|2[0-3]):[0-5][0-9]"
    r"(:[0-5][0-9]([.][0-9]{1,9})?(Z|[+-](0[0-9]|1[0-5])(:?[0-5][0-9])?)?)?)?\z"
)

#: Text that a boolean column reads, in any letter case and without spaces. DuckDB
#: and Spark both read these, and Spark would also read them with spaces around.
BOOLEAN_TEXTS = ("true", "false", "t", "f", "yes", "no", "y", "n", "1", "0")


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
    kept_values: bool = False
    """Whether the relation has `_value`, the text of values that cannot be read."""


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
    from healthscore.sources.joins import load_joins
    from healthscore.sources.lookups import lookup_joins
    from healthscore.sources.stored import is_store_source, read_store_source
    from healthscore.sources.tables import read_table_source

    if source.table is not None:
        return read_table_source(con, project, name, source)
    if is_store_source(source):
        return read_store_source(con, project, name, source)
    if source.format not in _FILE_FORMATS:
        # Imported here: the importers build on this module, and a run that reads
        # plain files need not load them.
        from healthscore.importers import read_with_importer

        return read_with_importer(con, project, name, source)
    files = resolve_files(project, name, source)
    file_format = source.resolved_format()
    empty = [file for file in files if Path(file).stat().st_size == 0]
    # A JSON Lines file has no header, so an empty one is a file without records.
    if empty and file_format != "jsonl":
        raise SourceError(
            f"source {name!r}: {_describe_files(empty)} is empty; a {file_format} "
            "file needs at least a header row"
        )
    if file_format == "csv":
        _check_repeated_columns(name, source, files)
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
    if file_format == "jsonl" and _without_records(files, file_types):
        # Like a CSV file with only a header row, the source has no rows, and it
        # has every column of its kind, so its metrics are 0 or missing.
        keys = [source.file_column(column) for column in STANDARD_COLUMNS[source.kind]]
        file_types = dict.fromkeys([*keys, *source.attributes], "VARCHAR")
        scan = _scan_sql(file_format, files, source, text_keys=list(file_types))
    elif file_format == "jsonl":
        # DuckDB infers each key's type from the first lines (read_json's
        # sample_size, 20,480 by default). A later value that does not fit, such as
        # an invalid time after valid ones, would fail the read of the whole file.
        # Read as text, like CSV files, each value is checked on its own row.
        # Numbers, booleans and nested values keep their JSON text ('1.5', 'true').
        # The account id is read as JSON instead, so that a number id reads as the
        # digits of its whole number (see `_json_id_parts`).
        keys = [*file_types, *_late_json_keys(con, files, source, file_types)]
        ids = [key for key in keys if is_json_id(source, key)]
        scan = _scan_sql(file_format, files, source, text_keys=keys, json_keys=ids)
        file_types = dict.fromkeys(keys, "VARCHAR") | dict.fromkeys(ids, JSON_ID)
    columns = _columns_present(name, source, file_types)
    if file_format == "parquet" and len(files) > 1:
        _check_time_column_in_every_file(con, name, source, files)
        _check_time_types_agree(con, name, source, files, columns)
    joined = load_joins(con, project, name, source, file_types)
    columns.update(joined.types)
    materialize = (
        file_format != "parquet"
        or source.lookups
        or source.joins
        or source.kind == "accounts"
    )
    # A materialized relation runs its checks once, so only a view gains from this.
    footers = {} if materialize else read_footers(con, files)
    select = _standard_select(
        project,
        name,
        source,
        columns,
        file_types,
        joined.values,
        complete_columns(footers, file_types),
        finite_columns(footers, file_types) | dated_columns(footers, file_types),
        keep_values=True,
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
        f"FROM {scan} AS raw {lookup_joins(con, project, name, source, file_types)} "
        f"{joined.sql}"
    )
    # Person columns are hashed here, before any metric or stored output reads them.
    query = pseudonymize_select(con, project, columns, query)
    sql = f"CREATE OR REPLACE {kind} {quote(relation)} AS {query}"
    try:
        con.execute(sql)
    except duckdb.Error as exc:
        located = _line_error(name, source, files, file_format, exc)
        if located is not None:
            raise located from None
        hint = _MEMORY_HINT if isinstance(exc, duckdb.OutOfMemoryException) else ""
        raise SourceError(
            f"source {name!r}: reading {_describe_files(files)} failed: "
            f"{_first_line(exc)}{hint}"
        ) from None
    running_rows = file_format == "csv"
    if file_format == "jsonl":
        running_rows = not _number_json_lines(con, relation, files)
    check_whole_account_ids(con, name, source, relation, file_types, running_rows)
    if file_format in ("parquet", "jsonl") and len(files) > 1:
        _warn_column_lacking_in_files(
            con, name, source, files, file_format, relation, file_types, columns
        )
    unchecked = select.endswith(f"{_NO_PROBLEM} AS _problem")
    kept_values = select.endswith(" AS _value")
    return LoadedSource(
        name,
        source,
        relation,
        tuple(files),
        columns,
        running_rows,
        unchecked,
        kept_values,
    )


def _scan_sql(
    file_format: str,
    files: list[str],
    source: SourceConfig,
    text_keys: list[str] | None = None,
    json_keys: list[str] | None = None,
) -> str:
    """Return the scan of a source's files.

    JSON Lines keys in `text_keys` are read as text, or as JSON when they are in
    `json_keys` too.
    """
    names = file_list(files)
    if file_format == "csv":
        # skip = 0 keeps the header on line 1. DuckDB 2.0.1 otherwise may skip the
        # lines before a row with an extra field and read that row as the header.
        return (
            f"read_csv({names}, all_varchar = true, header = true, skip = 0, "
            f"delim = {literal(source.delimiter)}, filename = true)"
        )
    if file_format == "parquet":
        # Files of one glob may differ in their columns, or in their order; a
        # column that a file lacks reads as missing in its rows.
        union = ", union_by_name = true" if len(files) > 1 else ""
        return f"read_parquet({names}, filename = true, file_row_number = true{union})"
    columns = ""
    if text_keys is not None:
        types = {
            key: "JSON" if key in (json_keys or ()) else "VARCHAR" for key in text_keys
        }
        keys = ", ".join(
            f"{literal(key)}: {literal(kind)}" for key, kind in types.items()
        )
        columns = f", columns = {{{keys}}}"
    return f"read_json({names}, format = 'newline_delimited', filename = true{columns})"


def _check_repeated_columns(name: str, source: SourceConfig, files: list[str]) -> None:
    """Raise SourceError when a CSV header repeats a column that the source reads.

    DuckDB 2.0.1 reads a repeated name as `name`, `name_1` and so on, so the source
    would silently read the first one.
    """
    read = [source.file_column(column) for column in STANDARD_COLUMNS[source.kind]]
    found = find_repeated_column(files, source.delimiter, {*read, *source.attributes})
    if found is not None:
        raise SourceError(f"source {name!r}: {found.describe()}")


def _without_records(files: list[str], file_types: dict[str, str]) -> bool:
    """Tell whether JSON Lines `files` are all empty or contain only blank lines.

    DuckDB 2.0.1 describes such files as one column `json` of type JSON, so the
    files are read only when it does.
    """
    if file_types != {"json": "JSON"}:
        return False
    for file in files:
        try:
            if has_json_record(file):
                return False
        except (OSError, EOFError):
            return False  # the scan of the files reports the problem itself
    return True


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
        # fetchall(), because a result left open makes DuckDB reject a later
        # register() on the connection, such as that of a lookup file.
        (found,) = con.execute(f"SELECT {counts} FROM {scan}").fetchall()
    except duckdb.Error:
        return []  # the scan of the files reports the problem itself
    return [key for key, count in zip(missing, found, strict=True) if count]


def _scan_error(
    name: str,
    source: SourceConfig,
    files: list[str],
    file_format: str,
    exc: duckdb.Error,
) -> SourceError:
    """Turn DuckDB's failure to scan a source's files into a SourceError."""
    located = _line_error(name, source, files, file_format, exc)
    if located is not None:
        return located
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


def _line_error(
    name: str,
    source: SourceConfig,
    files: list[str],
    file_format: str,
    exc: duckdb.Error,
) -> SourceError | None:
    """Name the file line that made DuckDB fail to read a source, if one did."""
    if not isinstance(exc, duckdb.InvalidInputException):
        return None
    if file_format == "csv":
        # Checked first, because such a file fails every check by lines.
        signed = _signature_error(name, files)
        if signed is not None:
            return signed
        if _GLOB_MISMATCH in str(exc):
            found = _glob_columns_error(name, source, files)
            if found is not None:
                return found
        if _INVALID_UNICODE in str(exc):
            found = _encoding_error(name, files)
            if found is not None:
                return found
        # The field count scan stops at a line that is not UTF-8, so such a line
        # is looked for last, also when DuckDB failed to detect the dialect.
        return (
            _line_ending_error(name, files)
            or _field_count_error(name, source, files)
            or _encoding_error(name, files)
        )
    if file_format == "jsonl":
        return _malformed_json_error(name, exc)
    return None


def _signature_error(name: str, files: list[str]) -> SourceError | None:
    """Name the first CSV file whose first bytes show gzip data or UTF-16 or UTF-32
    text, if one does."""
    for file in files:
        try:
            found = file_signature(file)
        except (OSError, EOFError):
            continue  # such as a .zst file, so DuckDB's message is kept
        if found is None:
            continue
        kind, mark = found
        shown = " ".join(f"{byte:02X}" for byte in mark)
        failed = f"source {name!r}: cannot read {file} as csv: "
        if kind == "gzip":
            return SourceError(
                f"{failed}the file is gzip-compressed (it starts with the bytes "
                f"{shown}), but its name does not end in .gz, so it is read as plain "
                f"text. Decompress it with `mv {file} {file}.gz && gunzip {file}.gz`, "
                f"or rename it to end in .gz and change sources.{name}.path to match."
            )
        if file.endswith(".gz"):
            fixed = file.removesuffix(".gz") + ".utf8.gz"
            command = f"`gunzip -c {file} | iconv -f {kind} -t UTF-8 | gzip > {fixed}`"
        else:
            fixed = str(Path(file).with_suffix("")) + ".utf8" + Path(file).suffix
            command = f"`iconv -f {kind} -t UTF-8 {file} > {fixed}`"
        return SourceError(
            f"{failed}the file is {kind} text (it starts with the byte order mark "
            f"{shown}), but CSV files are read as UTF-8. Save it as UTF-8 (in Excel: "
            f"CSV UTF-8), or convert it with {command}."
        )
    return None


#: Part of DuckDB 2.0.1's message for a file of a CSV glob that lacks a column of
#: the first file.
_GLOB_MISMATCH = "schema mismatch in glob"

#: Delimiters that a CSV header read as one column may turn out to use.
_DELIMITERS = (",", ";", "\t", "|")


def _glob_columns_error(
    name: str, source: SourceConfig, files: list[str]
) -> SourceError | None:
    """Name the files of a CSV glob whose header lacks a column of the first file.

    DuckDB 2.0.1 reads the columns of a glob from its first file, and rejects a
    later file that lacks one of them. A file whose header reads as one column
    containing another delimiter is named first, because every column then seems
    renamed. Returns None when the headers show no such file.
    """
    headers: dict[str, list[str]] = {}
    for file in files:
        try:
            header = csv_header(file, source.delimiter)
        except (OSError, EOFError, UnicodeDecodeError, csv.Error):
            return None  # the caller keeps DuckDB's message
        # DuckDB trims the spaces around a header name.
        headers[file] = [column.strip() for column in (header or [])]
    found = f"source {name!r}: cannot read the files of {source.path!r} "
    found += "as one table: "
    leave = f"move {{}} out of the folder or narrow sources.{name}.path."
    for file, header in headers.items():
        marks = [mark for mark in _DELIMITERS if len(header) == 1 and mark in header[0]]
        if marks and marks[0] != source.delimiter:
            return SourceError(
                f"{found}the header of {file} looks separated by {marks[0]!r}, but "
                f"every file of the glob is read with sources.{name}.delimiter, "
                f"{source.delimiter!r}. Save the file with {source.delimiter!r} "
                f"between its fields, or {leave.format('it')}"
            )
    first, *others = files
    expected = headers[first]
    # DuckDB matches the columns of the files by name, whatever their letter case.
    expected_folded = _folded(set(expected))
    differing = [
        file for file in others if expected_folded - _folded(set(headers[file]))
    ]
    if not differing:
        return None
    file = differing[0]
    present = _folded(set(headers[file]))
    lacked = [column for column in expected if column.casefold() not in present]
    extra = [
        column for column in headers[file] if column.casefold() not in expected_folded
    ]
    listed = _quoted_names(lacked)
    message = (
        f"{found}{file}{_more_files(len(differing) - 1)} has no column"
        f"{'s' if len(lacked) > 1 else ''} {listed}, which the first file, {first}, "
        f"has."
    )
    if extra:
        message += f" It has {_quoted_names(extra)} instead."
    return SourceError(
        f"{message} Each file of a CSV glob must have every column of the first "
        f"file, and sources.{name}.columns maps one name for every file, so rename "
        f"the column in the file, or {leave.format('the file')}"
    )


def _quoted_names(names: list[str]) -> str:
    """Return `names` quoted and joined with commas and a final "and"."""
    quoted = [repr(name) for name in names]
    if len(quoted) == 1:
        return quoted[0]
    return f"{', '.join(quoted[:-1])} and {quoted[-1]}"


#: Start of DuckDB 2.0.1's reason for a CSV line that is not valid UTF-8. Its
#: message starts with "CSV Error on Line: N" and gives the reason on a later line.
_INVALID_UNICODE = "Invalid unicode"


def _encoding_error(name: str, files: list[str]) -> SourceError | None:
    """Name the first CSV line of `files` that is not valid UTF-8, if one is."""
    for file in files:
        try:
            found = _invalid_utf8_line(file)
        except (OSError, EOFError):
            continue  # such as a .zst file, so DuckDB's message is kept
        if found is None:
            continue
        line, position, byte = found
        try:
            windows = _windows_1252_byte(file)
        except (OSError, EOFError):
            windows = None
        encoding = "LATIN1" if windows is None else "CP1252"
        if file.endswith(".gz"):
            fixed = file.removesuffix(".gz") + ".utf8.gz"
            command = (
                f"`gunzip -c {file} | iconv -f {encoding} -t UTF-8 | gzip > {fixed}`"
            )
        else:
            fixed = str(Path(file).with_suffix("")) + ".utf8" + Path(file).suffix
            command = f"`iconv -f {encoding} -t UTF-8 {file} > {fixed}`"
        advice = f"A Latin-1 file, for example, converts with {command}."
        if windows is not None:
            windows_line, windows_byte = windows
            character = bytes([windows_byte]).decode("cp1252")
            advice = (
                f"Line {windows_line} has the byte 0x{windows_byte:02x}, which is "
                f"{character!r} in Windows-1252 but a control character in Latin-1, "
                f"so the file is likely Windows-1252 and converts with {command}."
            )
        return SourceError(
            f"source {name!r}: cannot read {file} as csv: line {line} is not valid "
            f"UTF-8 (byte {position} of the line is 0x{byte:02x}). CSV files "
            f"are read as UTF-8, so save the file as UTF-8. {advice}"
        )
    return None


#: Bytes that Windows-1252 maps to printable characters, such as 0x80 to the euro
#: sign, and Latin-1 to C1 control characters. 0x81, 0x8d, 0x8f, 0x90 and 0x9d are
#: left out, because Windows-1252 does not define them.
_WINDOWS_1252_BYTES = re.compile(rb"[\x80\x82-\x8c\x8e\x91-\x9c\x9e\x9f]")


def _windows_1252_byte(path: str) -> tuple[int, int] | None:
    """Return the line and value of the first byte in a line that is not valid
    UTF-8 and that only Windows-1252 reads as a printable character, or None.

    Reads the whole file when it has no such byte. Raises OSError or EOFError when
    the file cannot be read.
    """
    with open_binary(path) as handle:
        for number, line in enumerate(handle, start=1):
            if line.isascii():
                continue
            try:
                line.decode("utf-8")
            except UnicodeDecodeError:
                found = _WINDOWS_1252_BYTES.search(line)
                if found is not None:
                    return number, line[found.start()]
    return None


def _invalid_utf8_line(path: str) -> tuple[int, int, int] | None:
    """Return the line, the byte position within it (from 1) and the value of the
    first byte of a file that is not valid UTF-8, or None when every line is.

    Lines end at LF, which no multi-byte UTF-8 sequence contains, so each line
    decodes on its own.
    """
    with open_binary(path) as handle:
        for number, line in enumerate(handle, start=1):
            try:
                line.decode("utf-8")
            except UnicodeDecodeError as exc:
                return number, exc.start + 1, line[exc.start]
    return None


def _line_ending_error(name: str, files: list[str]) -> SourceError | None:
    """Name the CSV line whose ending differs from the first line's, if one does.

    DuckDB 2.0.1 rejects such a file in strict mode, its default, as "CSV Parser
    state machine reached an invalid state" or as a failure to detect the dialect.
    Reading with strict_mode = false would accept the file, but it would also drop
    the extra fields of a row that has more than the header, so the file is
    rejected with the line and the fix instead.
    """
    found = find_line_ending_change(files)
    if found is None:
        return None
    return SourceError(
        f"source {name!r}: cannot read {found.file} as csv: {found.describe()}"
    )


def _field_count_error(
    name: str, source: SourceConfig, files: list[str]
) -> SourceError | None:
    """Name the CSV row whose field count differs from the header's, if one does.

    DuckDB's own message lacks the line when its sniffer meets such a row, so the
    files are scanned again here, but only after DuckDB failed.
    """
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


#: DuckDB 2.0.1's message for a JSON Lines record it cannot parse.
_MALFORMED_JSON = re.compile(
    r'Malformed JSON in file "(?P<file>.+)", at byte \d+ in line (?P<line>\d+): '
    r"(?P<detail>[^.]+)"
)


def _malformed_json_error(name: str, exc: duckdb.Error) -> SourceError | None:
    """Name the file line of the JSON Lines record that DuckDB could not parse.

    DuckDB 2.0.1 names the record after the bad one as its "line N", and counts no
    blank line. The records N - 1 and N are checked with Python's json module, and
    the first one it rejects is named by its line in the file. When it rejects
    neither, DuckDB's own message is kept.
    """
    found = _MALFORMED_JSON.search(str(exc))
    if found is None:
        return None
    file, reported = found["file"], int(found["line"])
    bad = find_json_record_error(file, (reported - 1, reported))
    if bad is None:
        return None
    return SourceError(
        f"source {name!r}: cannot read {file} as jsonl: line {bad.line} is not a "
        f"valid JSON object ({found['detail']}). Fix the line: each line must "
        "contain one JSON object, or nothing but spaces."
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
    finite: frozenset[str] = frozenset(),
    keep_values: bool = False,
) -> str:
    """Return the select list of the typed columns and the `_problem` check.

    `joined` maps the attributes of joined files to the SQL of their raw text value
    (see `sources.joins`); the other columns are read from `raw`. A required column
    of the file that is in `complete` (see `complete_columns`) gets no check for a
    missing value. A float column of the file that is in `finite` (see
    `finite_columns`) gets no check for infinite values, nor does a time column in
    it (see `dated_columns`) get one for times out of range. With `keep_values`, the
    list ends with `_value`: the start of the text of the value that cannot be
    read, of the source's own file or of a joined file (see `VALUE_CHARS`), NULL in
    the other rows.
    """
    joined = joined or {}
    typed: dict[str, str] = {}
    checks: list[tuple[str, str]] = []
    missing: list[tuple[str, str]] = []
    id_checks: list[tuple[str, str]] = []
    raw_values: dict[str, str] = {}
    required = set(REQUIRED_COLUMNS[source.kind])
    for column, kind in columns.items():
        is_standard = column in STANDARD_COLUMNS[source.kind]
        # Footer statistics describe the file's columns, not joined ones.
        never_missing = never_infinite = False
        if column in joined:
            raw, raw_type = joined[column], "VARCHAR"
        else:
            file_column = source.file_column(column) if is_standard else column
            raw = f"raw.{quote(file_column)}"
            raw_type = file_types[file_column]
            never_missing = file_column in complete
            never_infinite = file_column in finite
        if raw_type == "JSON":
            # A JSON null, which a footer does not count as missing, reads as NULL.
            raw, raw_type, never_missing = _json_text(raw), "VARCHAR", False
        if is_number_account_id(source, column, raw_type):
            raw, value, fraction = _account_id_parts(raw, raw_type)
            # Checked first, so that `check_whole_account_ids` finds every such row.
            id_checks = [(fraction, FRACTIONAL_ID)]
            raw_values[FRACTIONAL_ID] = raw
            # A NaN reads as missing, and a footer does not count it as missing.
            never_missing = False
        elif column in source.lookups:
            if raw_type in _FLOAT_TYPES or raw_type == NUMERIC_TEXT:
                # NaN is a missing code, as it is a missing value of other columns.
                raw = _account_id_parts(raw, raw_type)[0]
            value = f"{quote('lookup_' + column)}.value"
            checks.append(
                (
                    f"{_present(raw, raw_type)} AND {value} IS NULL",
                    f"unknown_code:{column}",
                )
            )
        else:
            value = _typed(raw, kind, raw_type, source.timestamp_format)
            if kind in ("date", "timestamp") and not never_infinite:
                # Checked before the conversion's own check, because a time out of
                # range reads as missing.
                inside = _inside_supported_dates(value)
                reason = f"time_out_of_range:{column}"
                checks.append((f"NOT {inside}", reason))
                raw_values[reason] = raw
            if "TRY_" in value:  # only a TRY_ conversion can fail and give NULL
                reason = "unparseable_value"
                if column in joined:
                    reason = "unparseable_joined_value"
                raw_values[f"{reason}:{column}"] = raw
                checks.append(
                    (
                        f"{_present(raw, raw_type)} AND {value} IS NULL",
                        f"{reason}:{column}",
                    )
                )
            if kind == "number" and raw_type in _FLOAT_TYPES and not never_infinite:
                checks.append((f"isinf({raw})", f"unparseable_value:{column}"))
                # Spelled here, because DuckDB and Spark write infinity differently.
                infinity = f"CASE WHEN {raw} > 0 THEN 'inf' ELSE '-inf' END"
                raw_values[f"unparseable_value:{column}"] = infinity
            if kind == "string" and raw_type == "VARCHAR" and not never_missing:
                # An empty field of a CSV file reads as missing, so an empty text
                # in JSON Lines or Parquet does too.
                value = f"NULLIF({value}, '')"
            if kind in ("date", "timestamp") and not never_infinite:
                value = f"CASE WHEN {_inside_supported_dates(value)} THEN {value} END"
        if column in required and not never_missing:
            missing.append(
                (f"NOT {_present(raw, raw_type)}", f"missing_value:{column}")
            )
        typed[column] = value
    # The missing required values come first, in the order of the columns, so a
    # row without any value, such as an empty line of a CSV export, is reported
    # by its account id.
    checks = id_checks + missing + checks + _range_checks(source, typed)
    problem = _NO_PROBLEM
    if checks:
        cases = " ".join(
            f"WHEN {test} THEN {literal(reason)}" for test, reason in checks
        )
        problem = f"CASE {cases} END"
    selected = [f"{value} AS {quote(column)}" for column, value in typed.items()]
    selected.append(f"{problem} AS _problem")
    if keep_values and raw_values:
        # `_problem` is the alias above. DuckDB and Spark let a later item of a
        # select list read an alias, so the checks run once per row.
        shown = " ".join(
            f"WHEN {literal(reason)} THEN left(CAST({raw} AS VARCHAR), "
            f"{VALUE_CHARS + 1})"
            for reason, raw in raw_values.items()
        )
        selected.append(f"CASE _problem {shown} END AS _value")
    return ", ".join(selected)


@dataclass(frozen=True)
class ColumnFooters:
    """The statistics of one column over every row group of a source's Parquet files.

    A flag is false, and a value None, when a row group lacks that statistic.
    """

    everywhere: bool
    """Whether every row group of every file has the column."""
    null_counts: bool
    nulls: int | None
    """Sum of the row groups' null counts."""
    minimums: bool
    text_minimum: str | None
    """Smallest minimum, compared as text."""
    maximums: bool
    minimum: float | None
    """Smallest minimum as a number; None unless every minimum is one."""
    maximum: float | None
    """Largest maximum as a number; None unless every maximum is one."""
    earliest: date | None = None
    """Day of the smallest minimum as a time; None unless every minimum is one."""
    latest: date | None = None
    """Day of the largest maximum as a time; None unless every maximum is one."""


def read_footers(
    con: duckdb.DuckDBPyConnection, files: list[str]
) -> dict[str, ColumnFooters]:
    """Read the footer statistics of Parquet `files`, by column.

    Returns {} when a footer cannot be read, because the scan reports that itself.
    Reading the footers takes milliseconds.
    """
    names = file_list(files)
    try:
        rows = con.execute(
            f"WITH footers AS (SELECT * FROM parquet_metadata({names})) "
            "SELECT path_in_schema, count(*) = (SELECT count(DISTINCT (file_name, "
            "row_group_id)) FROM footers), bool_and(stats_null_count IS NOT NULL), "
            "sum(stats_null_count), bool_and(stats_min_value IS NOT NULL), "
            "min(stats_min_value), bool_and(stats_max_value IS NOT NULL), "
            "min(TRY_CAST(stats_min_value AS DOUBLE)), "
            "max(TRY_CAST(stats_max_value AS DOUBLE)), "
            "CAST(min(TRY_CAST(stats_min_value AS TIMESTAMP)) AS DATE), "
            "CAST(max(TRY_CAST(stats_max_value AS TIMESTAMP)) AS DATE) "
            "FROM footers GROUP BY path_in_schema"
        ).fetchall()
    except duckdb.Error:
        return {}
    return {str(row[0]): ColumnFooters(*row[1:]) for row in rows}


def complete_columns(
    footers: dict[str, ColumnFooters], file_types: dict[str, str]
) -> frozenset[str]:
    """Columns of Parquet files whose footers rule out a missing or blank value.

    `file_types` gives each column's DuckDB type. A column qualifies when every row
    group of every file has it with a null count of 0. A text column must also have
    a minimum whose first character sorts after a space, because a blank value (''
    or one starting with a space) would sort before it. A writer that leaves out
    statistics, or truncates a minimum to '', keeps the checks. Evaluating the
    checks took about 0.15 s per scan of 20 million rows.
    """
    complete = set()
    for column, stats in footers.items():
        # A file without the column gives missing values in its rows.
        if column not in file_types or not stats.everywhere:
            continue
        if not stats.null_counts or stats.nulls != 0:
            continue
        if file_types[column] == "VARCHAR" and not (
            stats.minimums and stats.text_minimum and stats.text_minimum[0] > " "
        ):
            continue
        complete.add(column)
    return frozenset(complete)


def finite_columns(
    footers: dict[str, ColumnFooters], file_types: dict[str, str]
) -> frozenset[str]:
    """Float columns of Parquet files whose footers rule out infinite values.

    A column qualifies when every row group of every file has it with a finite
    minimum and maximum. NaN needs no footer: it reads as a missing value (see
    `_typed`), and pyarrow 26 leaves it out of the minimum and maximum anyway.
    """
    finite = set()
    for column, stats in footers.items():
        if file_types.get(column) not in _FLOAT_TYPES or not stats.everywhere:
            continue
        if not (stats.minimums and stats.maximums):
            continue
        if stats.minimum is None or stats.maximum is None:
            continue
        if math.isfinite(stats.minimum) and math.isfinite(stats.maximum):
            finite.add(column)
    return frozenset(finite)


def dated_columns(
    footers: dict[str, ColumnFooters], file_types: dict[str, str]
) -> frozenset[str]:
    """Time columns of Parquet files whose footers rule out a time out of range.

    A column qualifies when every row group of every file has it with a minimum
    and maximum within `EARLIEST_SOURCE_DATE` and `LATEST_SOURCE_DATE`.
    """
    dated = set()
    for column, stats in footers.items():
        if not file_types.get(column, "").startswith(("DATE", "TIMESTAMP")):
            continue
        if not (stats.everywhere and stats.minimums and stats.maximums):
            continue
        if stats.earliest is None or stats.latest is None:
            continue
        if (
            stats.earliest >= EARLIEST_SOURCE_DATE
            and stats.latest <= LATEST_SOURCE_DATE
        ):
            dated.add(column)
    return frozenset(dated)


#: Characters of an unreadable value that a source report shows. The relation
#: keeps one more, so the report can tell that a longer value was cut.
VALUE_CHARS = 40

#: The `_problem` of a source without checks.
_NO_PROBLEM = "CAST(NULL AS VARCHAR)"


def _present(raw: str, file_type: str) -> str:
    if file_type not in ("VARCHAR", JSON_ID):
        return f"({raw} IS NOT NULL)"  # only text can be blank
    # Trimming every value is slow; only a value that starts with a space can be
    # blank without being empty.
    return (
        f"({raw} IS NOT NULL AND {raw} <> '' "
        f"AND (NOT starts_with({raw}, ' ') OR trim({raw}) <> ''))"
    )


def _finite(number: str) -> str:
    """Return SQL that is true for a finite number, false for NaN or an infinity."""
    # Not a comparison such as abs(x) <= 1.8e308, nor isnan(): DuckDB 2.0.1 folds
    # those to constants when a Parquet footer gives a finite min and max, and
    # pyarrow's footers leave NaN out of both. It evaluates isfinite() per row.
    return f"isfinite({number})"


def _inside_supported_dates(value: str) -> str:
    """Return SQL that is true for a date or timestamp within the supported range.

    It is NULL for a missing value, and false for an infinite one.
    """
    first = literal(EARLIEST_SOURCE_DATE.isoformat())
    last = literal(LATEST_SOURCE_DATE.isoformat())
    day = f"CAST({value} AS DATE)"
    return f"({day} BETWEEN CAST({first} AS DATE) AND CAST({last} AS DATE))"


def _typed(raw: str, kind: str, file_type: str, timestamp_format: str | None) -> str:
    if kind == "string":
        return f"CAST({raw} AS VARCHAR)"
    if kind == "number" and (
        file_type in _EXACT_NUMBER_TYPES or file_type.startswith("DECIMAL")
    ):
        return f"CAST({raw} AS DOUBLE)"  # a cast between number types cannot fail
    if kind == "number" and file_type in _FLOAT_TYPES:
        # NaN becomes missing, and an infinite value is kept for the caller's check.
        # Not `NOT isnan()`: DuckDB 2.0.1 folds it to true when a footer's minimum
        # and maximum are finite, which pyarrow writes for a column with NaN.
        kept = f"{_finite(raw)} OR isinf({raw})"
        number = f"CAST({raw} AS DOUBLE)"
        if file_type == "FLOAT":
            # A single-precision 0.1 widens to 0.10000000149011612. Its shortest
            # decimal text is the number that was stored, so it goes through that.
            number = f"CAST(CAST({raw} AS VARCHAR) AS DOUBLE)"
        return f"CASE WHEN {kept} THEN {number} END"
    if kind == "number":
        # DuckDB reads 'NaN', 'inf' and '-Infinity' as such, and '1e400' as
        # infinity, so a value that is not finite is unparseable too. It also
        # reads '1_000' as 1000, which Spark rejects: the engines must agree.
        parsed = f"TRY_CAST({raw} AS DOUBLE)"
        plain = f"instr(CAST({raw} AS VARCHAR), '_') = 0"
        return f"CASE WHEN {_finite(parsed)} AND {plain} THEN {parsed} END"
    if kind == "boolean" and (
        file_type in _EXACT_NUMBER_TYPES
        or file_type in _FLOAT_TYPES
        or file_type.startswith("DECIMAL")
    ):
        # A cast reads every number other than 0 as true, so 2 or 0.5 would pass
        # as a flag. Only 0 and 1 are read; any other number cannot be read.
        return f"TRY_CAST(CASE WHEN {raw} IN (0, 1) THEN {raw} END AS BOOLEAN)"
    if kind == "boolean" and file_type == "BOOLEAN":
        return raw
    if kind == "boolean":
        text = f"CAST({raw} AS VARCHAR)"
        listed = ", ".join(literal(word) for word in BOOLEAN_TEXTS)
        known = f"CASE WHEN lower({text}) IN ({listed}) THEN {text} END"
        return f"TRY_CAST({known} AS BOOLEAN)"
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
        # NOTE: the offset is lost here, so two instants of the hour repeated when
        # clocks go back read as the same wall-clock time (see `latest_key`).
        text = f"CAST({raw} AS VARCHAR)"
        matched = f"regexp_matches({text}, {literal(TIMESTAMP_TEXT)})"
        parsed = f"TRY_CAST(CASE WHEN {matched} THEN {text} END AS TIMESTAMPTZ)"
        local = f"CAST({parsed} AS TIMESTAMP)"
    return local if kind == "timestamp" else f"CAST({local} AS DATE)"


def _json_text(raw: str) -> str:
    """Return SQL of the text of a JSON value, NULL for a JSON null."""
    text = f"CAST({raw} AS VARCHAR)"
    # A JSON column keeps the text as written, so a null may have spaces around.
    return f"CASE WHEN NOT regexp_full_match({text}, '\\s*null\\s*') THEN {text} END"


def is_number_account_id(source: SourceConfig, column: str, raw_type: str) -> bool:
    """Tell whether `column` is the account id, read from numbers that may have a
    fractional part: DECIMAL with a scale above 0, FLOAT, DOUBLE, NUMERIC_TEXT or
    JSON_ID.

    Such an id is read by `_account_id_parts`. An id that a lookup replaces is not.
    """
    if column != "account_id" or column in source.lookups:
        return False
    if raw_type in (NUMERIC_TEXT, JSON_ID) or raw_type in _FLOAT_TYPES:
        return True
    decimal = re.fullmatch(r"DECIMAL\(\d+, ?(\d+)\)", raw_type)
    return decimal is not None and int(decimal[1]) > 0


def is_json_id(source: SourceConfig, key: str) -> bool:
    """Tell whether JSON Lines key `key` is read as JSON_ID: the account id that no
    lookup replaces."""
    return (
        key == source.file_column("account_id") and "account_id" not in source.lookups
    )


def _account_id_parts(raw: str, raw_type: str) -> tuple[str, str, str]:
    """Return SQL of an account id read from a number column of type `raw_type`.

    Returns the raw value with NaN as NULL, the id's text, and a test that is
    true where the number is not a whole id. A whole number reads as the digits
    that an integer column gives (1001.000 and 1001.0 read as 1001), so it
    matches the ids of other sources. A number with a fractional part, an
    infinite one, and one past `EXACT_FLOAT_LIMITS` read as NULL and fail the
    test. A JSON_ID string reads as its text, and the raw value is then that text.
    """
    if raw_type == JSON_ID:
        return _json_id_parts(raw)
    if raw_type == NUMERIC_TEXT:
        # NaN is missing here too, as in a float column.
        raw = f"(CASE WHEN {raw} <> 'NaN' THEN {raw} END)"
        whole = f"regexp_full_match({raw}, '-?[0-9]+([.]0*)?')"
        text = f"regexp_replace({raw}, '[.]0*$', '')"
        return raw, f"CASE WHEN {whole} THEN {text} END", f"NOT {whole}"
    whole = f"{raw} = floor({raw})"
    if raw_type in _FLOAT_TYPES:
        # NaN is a missing value in a float column, as elsewhere (see `_typed`).
        raw = f"(CASE WHEN {_finite(raw)} OR isinf({raw}) THEN {raw} END)"
        limit = EXACT_FLOAT_LIMITS[raw_type]
        whole = f"{_finite(raw)} AND abs({raw}) < {limit} AND {raw} = floor({raw})"
    # 38 digits hold the whole part of every DECIMAL and of every float below
    # its limit.
    text = f"CAST(CAST({raw} AS DECIMAL(38, 0)) AS VARCHAR)"
    return raw, f"CASE WHEN {whole} THEN {text} END", f"NOT ({whole})"


def _json_id_parts(raw: str) -> tuple[str, str, str]:
    """Return the parts of `_account_id_parts` for a JSON_ID value.

    DuckDB's JSON reader keeps the digits of an integer, and reads a number with a
    decimal point or an exponent as a DOUBLE (1001.000 and 1.001e3 as 1001.0), so
    such a number is read as a DOUBLE id. An integer too large for a UBIGINT also
    has the JSON type DOUBLE, but keeps its digits as an integer does. Booleans,
    objects and arrays read as their JSON text, as a JSON Lines value read as text
    does.
    """
    kind = f"json_type({raw})"
    written = f"CAST({raw} AS VARCHAR)"
    floated = f"({kind} = 'DOUBLE' AND NOT regexp_full_match({written}, '-?[0-9]+'))"
    text = f"CASE WHEN {kind} = 'VARCHAR' THEN NULLIF({raw} ->> '$', '') "
    text += f"ELSE {written} END"
    number, digits, fraction = _account_id_parts(f"TRY_CAST({raw} AS DOUBLE)", "DOUBLE")
    present = f"(CASE WHEN NOT {floated} OR {number} IS NOT NULL THEN {text} END)"
    value = f"CASE WHEN {floated} THEN {digits} ELSE {text} END"
    return present, value, f"coalesce({floated} AND {fraction}, false)"


def account_id_sql(source: SourceConfig, raw: str, raw_type: str) -> str:
    """Return SQL of the text of account id `raw`, as `_standard_select` reads it."""
    if is_number_account_id(source, "account_id", raw_type):
        return _account_id_parts(raw, raw_type)[1]
    if raw_type == "JSON":
        return _json_text(raw)
    return f"CAST({raw} AS VARCHAR)"


def check_whole_account_ids(
    con: duckdb.DuckDBPyConnection,
    name: str,
    source: SourceConfig,
    relation: str,
    file_types: dict[str, str],
    running_rows: bool = False,
) -> None:
    """Raise SourceError when a number account id of `relation` is not a whole id.

    An id with a fractional part matches no id of an integer or text column, so
    every row of its account would be left out silently. Only a source whose
    account id column is a number type (see `is_number_account_id`) is scanned.
    `running_rows` tells whether `_row` numbers the rows across the files.
    """
    raw_type = file_types.get(source.file_column("account_id"), "VARCHAR")
    if not is_number_account_id(source, "account_id", raw_type):
        return
    found = con.execute(
        f"SELECT _file, _row, _value FROM {quote(relation)} "
        f"WHERE _problem = {literal(FRACTIONAL_ID)} ORDER BY _file, _row LIMIT 1"
    ).fetchall()
    if found:
        file, row, value = found[0]
        if running_rows:
            first = con.execute(
                f"SELECT min(_row) FROM {quote(relation)} WHERE _file = ?", [file]
            ).fetchall()[0][0]
            row = row - first + 1
        raise fractional_id_error(name, source, raw_type, str(file), int(row), value)


def fractional_id_error(
    name: str, source: SourceConfig, raw_type: str, file: str, row: int, value: str
) -> SourceError:
    """Build the error of a number account id that is not a whole id."""
    column = source.file_column("account_id")
    subject = f"column {column!r}"
    if column != "account_id":
        subject += " for 'account_id'"
    found = (
        f"source {name!r}: {subject} of {file} has the account id {value!r} in "
        f"row {row}"
    )
    fix = (
        f"map a column of whole-number or text ids to account_id in "
        f"sources.{name}.columns"
    )
    stored_as, store = f"a {raw_type} column", "Store the ids as integers or text"
    if raw_type == JSON_ID:
        raw_type, stored_as = "DOUBLE", "a DOUBLE (DuckDB reads this number as one)"
        store = "Write the ids as JSON integers or strings"
    limit = EXACT_FLOAT_LIMITS.get(raw_type)
    if limit is not None and _is_whole_text(value):
        return SourceError(
            f"{found}, which is not below {limit:,}, the limit below which "
            f"{stored_as} stores every whole number exactly, so the stored id may "
            f"differ from the one written. {store}, or {fix}"
        )
    return SourceError(
        f"{found}, which is not a whole number, so it cannot match the ids of other "
        f"sources. Fix the value, or {fix}"
    )


def _is_whole_text(value: str) -> bool:
    try:
        number = float(value)
    except ValueError:
        return False
    return math.isfinite(number) and number.is_integer()


def _check_time_column_in_every_file(
    con: duckdb.DuckDBPyConnection, name: str, source: SourceConfig, files: list[str]
) -> None:
    """Raise SourceError when a Parquet file of a glob lacks the timestamp column.

    The scan of a glob reads a column that one file lacks as missing in that file's
    rows, which suits an optional column. A file without the time of its rows is
    more likely a file of some other kind that the glob matched.
    """
    if "timestamp" not in REQUIRED_COLUMNS[source.kind]:
        return
    column = source.file_column("timestamp")
    try:
        rows = con.execute(
            f"SELECT file_name FROM parquet_schema({file_list(files)}) "
            f"GROUP BY file_name HAVING NOT bool_or(name = {literal(column)}) "
            "ORDER BY file_name"
        ).fetchall()
    except duckdb.Error:
        return  # the scan reports an unreadable footer itself
    if not rows:
        return
    lacking = [str(row[0]) for row in rows]
    more = f" (and {len(lacking) - 1} more files)" if len(lacking) > 1 else ""
    raise SourceError(
        f"source {name!r}: column {column!r} for 'timestamp' not found in "
        f"{lacking[0]}{more}, although other files of {source.path!r} have it. Add "
        f"the column to the file, move the file out of the folder, or narrow "
        f"sources.{name}.path."
    )


def _warn_column_lacking_in_files(
    con: duckdb.DuckDBPyConnection,
    name: str,
    source: SourceConfig,
    files: list[str],
    file_format: str,
    relation: str,
    file_types: dict[str, str],
    columns: dict[str, str],
) -> None:
    """Log a warning for each optional column that some files of a Parquet or JSON
    Lines glob have and other files with rows lack.

    The scan reads such a column as missing in the rows of the files that lack it,
    so a column renamed in one monthly export would go unnoticed. The warning names
    the columns that only the lacking files have, which may be the new name.
    Required columns are not checked here: a row without one is excluded and listed
    in the source report.
    """
    required = REQUIRED_COLUMNS[source.kind]
    # File column name to the source column it is read as.
    read: dict[str, str] = {}
    for column in columns:
        is_standard = column in STANDARD_COLUMNS[source.kind]
        file_column = source.file_column(column) if is_standard else column
        if column not in required and file_column in file_types:
            read[file_column] = column
    if not read:
        return
    try:
        if file_format == "parquet":
            lacking = _parquet_lacking_columns(con, files, read)
        else:
            lacking = _json_lacking_keys(con, files, relation, read)
    except duckdb.Error as exc:
        # The scan read these files, so this is unexpected; the check is skipped.
        logger.debug("columns of the files of source %s not compared: %s", name, exc)
        return
    for file_column, (lacking_files, rows, extra) in lacking.items():
        logger.warning(
            "%s",
            _lacking_column_message(
                name, source, file_column, read[file_column], lacking_files, rows, extra
            ),
        )


#: Per file column: the files with rows that lack it, their number of rows, and the
#: columns that only those files have.
_LackingColumns = dict[str, tuple[list[str], int, list[str]]]


def _parquet_lacking_columns(
    con: duckdb.DuckDBPyConnection, files: list[str], read: dict[str, str]
) -> _LackingColumns:
    """Find the columns of `read` that some Parquet files with rows lack.

    Only the footers are read.
    """
    names = file_list(files)
    schema = con.execute(
        "SELECT file_name, name, coalesce(num_children, 0) "
        f"FROM parquet_schema({names})"
    ).fetchall()
    elements: dict[str, list[tuple[str, int]]] = {}
    for file, column, children in schema:
        elements.setdefault(str(file), []).append((str(column), int(children)))
    keys = {file: _top_level_names(found) for file, found in elements.items()}
    rows = dict(
        con.execute(
            f"SELECT file_name, num_rows FROM parquet_file_metadata({names})"
        ).fetchall()
    )
    # DuckDB matches the columns of the files by name, whatever their letter case.
    folded = {file: _folded(found) for file, found in keys.items()}
    lacking: _LackingColumns = {}
    for column in read:
        key = column.casefold()
        without = [f for f in files if rows.get(f, 0) and key not in folded[f]]
        having = [f for f in files if key in folded[f]]
        if not without or not having:
            continue
        having_names = set().union(*(folded[f] for f in having))
        extra = {
            name
            for f in without
            for name in keys[f]
            if name.casefold() not in having_names
        }
        count = sum(rows[f] for f in without)
        lacking[column] = (without, count, sorted(extra))
    return lacking


def _folded(names: set[str]) -> set[str]:
    """Return the names case-folded, as DuckDB compares column names."""
    return {name.casefold() for name in names}


def _top_level_names(elements: list[tuple[str, int]]) -> set[str]:
    """Return the top-level column names of one file's Parquet schema.

    `elements` lists (name, number of children) in schema order, depth first,
    starting with the root.
    """
    names: set[str] = set()
    position = 1

    def skip(start: int) -> int:
        end = start + 1
        for _ in range(elements[start][1]):
            end = skip(end)
        return end

    for _ in range(elements[0][1] if elements else 0):
        names.add(elements[position][0])
        position = skip(position)
    return names


def _json_lacking_keys(
    con: duckdb.DuckDBPyConnection,
    files: list[str],
    relation: str,
    read: dict[str, str],
) -> _LackingColumns:
    """Find the keys of `read` that some JSON Lines files with records lack.

    The relation, already in memory, gives the files where a column has no value.
    Only those files are scanned again for their keys. The files that have the key
    are scanned too, but only when a file lacks it and has keys of its own. A key
    written with null in every record of a file counts as present.
    """
    counts = ", ".join(f"count({quote(column)})" for column in read.values())
    found = con.execute(
        f"SELECT _file, count(*), {counts} FROM {quote(relation)} GROUP BY _file"
    ).fetchall()
    rows = {str(row[0]): int(row[1]) for row in found}
    valued = {
        column: {str(row[0]) for row in found if row[2 + index]}
        for index, column in enumerate(read)
    }
    candidates = {
        column: [f for f in files if rows.get(f, 0) and f not in valued[column]]
        for column in read
    }
    checked = sorted({f for listed in candidates.values() for f in listed})
    if not checked:
        return {}
    keys = _json_keys(con, checked)
    lacking: _LackingColumns = {}
    for column in read:
        key = column.casefold()
        without = [
            f for f in candidates[column] if key not in _folded(keys.get(f, set()))
        ]
        having = sorted(valued[column])
        if not without or not having:
            continue
        extra = set().union(*(keys.get(f, set()) for f in without))
        if extra:
            having_names = _folded(set().union(*_json_keys(con, having).values()))
            extra = {name for name in extra if name.casefold() not in having_names}
        lacking[column] = (without, sum(rows[f] for f in without), sorted(extra))
    return lacking


def _json_keys(con: duckdb.DuckDBPyConnection, files: list[str]) -> dict[str, set[str]]:
    """Return the top-level keys of the records of each JSON Lines file."""
    found = con.execute(
        "SELECT filename, list(DISTINCT key) FROM (SELECT filename, "
        "unnest(json_keys(json)) AS key FROM read_json_objects("
        f"{file_list(files)}, format = 'newline_delimited', filename = true)) "
        "GROUP BY filename"
    ).fetchall()
    return {str(file): set(keys) for file, keys in found}


def _lacking_column_message(
    name: str,
    source: SourceConfig,
    file_column: str,
    column: str,
    files: list[str],
    rows: int,
    extra: list[str],
) -> str:
    """Describe a column that `files` of a glob lack, and what to do."""
    subject = f"column {file_column!r}"
    if file_column != column:
        subject += f" for {column!r}"
    one = len(files) == 1
    owner = "the file's" if one else "the files'"
    found = (
        f"source {name!r}: {subject} not found in {files[0]}"
        f"{_more_files(len(files) - 1)}, although other files of {source.path!r} "
        f"have it, so {column!r} is missing in {owner} {rows} "
        f"row{'' if rows == 1 else 's'}."
    )
    file = "file" if one else "files"
    separate = f"read the {file} as a separate source with its own path."
    if not extra:
        return f"{found} Add the column to the {file}, or {separate}"
    shown = ", ".join(repr(key) for key in extra[:_EXTRA_SHOWN])
    if len(extra) > _EXTRA_SHOWN:
        shown += f" and {len(extra) - _EXTRA_SHOWN} more"
    return (
        f"{found} The {file} {'has' if one else 'have'} {shown}, which no other "
        f"file has. If that is the column renamed, rename it back in the {file}, "
        f"because sources.{name}.columns maps one name for every file; otherwise "
        f"{separate}"
    )


#: Columns that only the lacking files have, named in the warning at most.
_EXTRA_SHOWN = 5


#: DuckDB types of Parquet columns that contain times.
_TIME_TYPES = ("DATE", "TIME", "TIMESTAMP")


def _check_time_types_agree(
    con: duckdb.DuckDBPyConnection,
    name: str,
    source: SourceConfig,
    files: list[str],
    columns: dict[str, str],
) -> None:
    """Raise SourceError when files of a Parquet glob store a column as times in
    some files and as numbers or booleans in others.

    DuckDB 2.0.1 reads a glob's column with the type of one file and fails the
    first query that reads another file, as "Unimplemented type for cast (BIGINT
    -> TIMESTAMP)". Other mixes, such as integers and doubles, or text and times,
    it converts, and the row checks then handle the values.
    """
    # File column name to the source column it is read as.
    file_columns = {}
    for column in columns:
        is_standard = column in STANDARD_COLUMNS[source.kind]
        file_columns[source.file_column(column) if is_standard else column] = column
    names = ", ".join(literal(column) for column in file_columns)
    try:
        rows = con.execute(
            "SELECT name, duckdb_type, list(file_name ORDER BY file_name) "
            f"FROM parquet_schema({file_list(files)}) WHERE name IN ({names}) "
            "GROUP BY name, duckdb_type ORDER BY name, min(file_name)"
        ).fetchall()
    except duckdb.Error:
        return  # the scan reports an unreadable footer itself
    by_column: dict[str, list[tuple[str, list[str]]]] = {}
    for column, duckdb_type, in_files in rows:
        by_column.setdefault(str(column), []).append((str(duckdb_type), in_files))
    for column, types in by_column.items():
        times = [kind for kind, _ in types if kind.startswith(_TIME_TYPES)]
        others = [kind for kind, _ in types if not kind.startswith(_TIME_TYPES)]
        if not times or not others or "VARCHAR" in others:
            continue
        described = [
            f"{kind} in {in_files[0]}" + _more_files(len(in_files) - 1)
            for kind, in_files in types
        ]
        standard = file_columns[column]
        subject = (
            f"column {column!r} for {standard!r}"
            if standard in STANDARD_COLUMNS[source.kind]
            else f"attribute column {column!r}"
        )
        value = "a number"
        if "BOOLEAN" in others:
            value = "a boolean" if set(others) == {"BOOLEAN"} else "a number or boolean"
        raise SourceError(
            f"source {name!r}: {subject} is {', '.join(described[:-1])} but "
            f"{described[-1]}, and {value} cannot be read as a time. Write the "
            f"column with the same type in every file of {source.path!r}, such as "
            f"a Parquet timestamp, or narrow sources.{name}.path."
        )


def _more_files(count: int) -> str:
    if count == 0:
        return ""
    return f" (and {count} more file{'s' if count > 1 else ''})"


def _number_json_lines(
    con: duckdb.DuckDBPyConnection, relation: str, files: list[str]
) -> bool:
    """Renumber the rows of a JSON Lines relation by their line in the file.

    `_row` comes in as a running number across the files, which DuckDB's read_json
    gives to records, not lines. When a file has a blank line before a record, the
    relation is copied with `_row` set to the line within the file, and True is
    returned. Returns False, and leaves `_row` running, when no record follows a
    blank line, because the report then finds the line by subtracting the number of
    the file's first row.
    """
    shifted_files: list[str] = []
    records: list[int] = []
    shifts: list[int] = []
    for file in files:
        try:
            found = json_line_shifts(file)
        except (OSError, EOFError):
            # NOTE: a file that Python cannot read, such as a .zst file, keeps its
            # record numbers, which name the wrong line after a blank line.
            continue
        for record, blanks in found:
            shifted_files.append(file)
            records.append(record)
            shifts.append(blanks)
    if not records:
        return False
    table = pa.table(
        {
            "file": pa.array(shifted_files, pa.string()),
            "record": pa.array(records, pa.int64()),
            "shift": pa.array(shifts, pa.int64()),
        }
    )
    con.register("_json_line_shifts", table)
    try:
        # Records of a file are numbered consecutively in scan order, so a record's
        # number within its file is its `_row` minus the file's first `_row`, plus 1.
        # The ASOF join picks the last shift at or before each record.
        con.execute(
            f"CREATE OR REPLACE TEMP TABLE {quote(relation)} AS "
            "WITH numbered AS (SELECT *, _row - min(_row) OVER (PARTITION BY _file) "
            f"+ 1 AS _record FROM {quote(relation)}) "
            "SELECT n.* EXCLUDE (_record) REPLACE (n._record + coalesce(s.shift, 0) "
            "AS _row) FROM numbered AS n ASOF LEFT JOIN _json_line_shifts AS s "
            "ON n._file = s.file AND n._record >= s.record ORDER BY n._row"
        )
    finally:
        con.unregister("_json_line_shifts")
    return True


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
    """Return the first line of an error's message, or its type without one."""
    lines = str(exc).strip().splitlines()
    return lines[0] if lines else type(exc).__name__
