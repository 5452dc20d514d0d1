"""Reject on Spark the CSV files that the DuckDB reader rejects, with its messages.

Spark 4.0's CSV reader, with the options of `csv_options`, differs from DuckDB's in
ways that would let bad files through:

- In its default PERMISSIVE mode it fills a row that lacks fields with NULL and
  drops extra fields. In FAILFAST mode it raises for such a row, but only when the
  query reads every column: with column pruning
  (`spark.sql.csv.parser.columnPruning.enabled`, on by default) it parses only the
  columns that a query reads, and misses an extra field after them. The scan
  therefore adds `REPLACED_BYTES_COLUMN`, which reads every column, and
  `spark_reader` caches it with the source's rows.
- It decodes a byte that is not UTF-8 as U+FFFD in any mode. `REPLACED_BYTES_COLUMN`
  flags the rows with U+FFFD, and Python then looks for the byte in their files.
  Spark takes its column names from one file and skips the header line of the
  others, so Python checks the first line of every file before the scan.
- It matches the fields of every file to the column names of that one file by
  position. `header_groups` therefore groups the files by header, and the scan
  reads each group on its own and unions the groups by column name.
- It reads each line as a row, so a quoted value with a line break splits its row,
  which then has too few fields.

Spark's error names neither the file nor the line, so the files are scanned in
Python once Spark has failed, as the DuckDB reader does (see `reader._line_error`).
"""

from __future__ import annotations

import csv
import re
from typing import TYPE_CHECKING, Any

from healthscore.config.models import SourceConfig
from healthscore.sources.csv_rows import (
    csv_header,
    open_binary,
    open_csv_text,
)
from healthscore.sources.reader import (
    SourceError,
    _describe_files,
    _encoding_error,
    _field_count_error,
)

if TYPE_CHECKING:
    from pyspark.sql import Column

#: Column of the raw scan that is true when a value of the row contains U+FFFD.
REPLACED_BYTES_COLUMN = "_replaced_bytes"

#: Spark 4.0's message for a CSV row whose field count differs from the header's,
#: after its error class.
_MALFORMED = re.compile(
    r"\[MALFORMED_CSV_RECORD\] (?P<message>.*?)(?: SQLSTATE: \w+)?$", re.MULTILINE
)


def csv_options(source: SourceConfig) -> dict[str, Any]:
    """Return Spark's CSV options for a source's files.

    The escape character is the double quote, as in RFC 4180 and DuckDB, so that a
    backslash before a closing quote, as in "C:\\dir\\", stays part of the value.
    Spark's default escape character is the backslash.
    """
    return {
        "header": True,
        "sep": source.delimiter,
        "inferSchema": False,
        "mode": "FAILFAST",
        "escape": '"',
    }


def replaced_bytes(columns: list[str]) -> Column:
    """Return a Column that is true when a value of `columns` contains U+FFFD.

    It reads every column, so Spark parses every field of each row.
    """
    from pyspark.sql import functions as F

    found = F.lit(False)
    for column in columns:
        value = F.col("`" + column.replace("`", "``") + "`")
        found = found | F.coalesce(value.contains("\ufffd"), F.lit(False))
    return found


def check_header_encoding(name: str, files: list[str]) -> None:
    """Raise SourceError when the first line of a file is not valid UTF-8."""
    for file in files:
        try:
            with open_binary(file) as handle:
                first = handle.readline()
        except (OSError, EOFError):
            continue  # Spark's scan reports the file itself
        try:
            first.decode("utf-8")
        except UnicodeDecodeError:
            found = _encoding_error(name, [file])
            if found is not None:
                raise found from None


def header_key(column: str) -> str:
    """Return the form of a header name that columns are matched by across files.

    DuckDB trims the spaces around a header name and matches names whatever their
    letter case, so files whose headers differ only in that way read as one table.
    """
    return column.strip().casefold()


def header_groups(files: list[str], delimiter: str) -> list[list[str]]:
    """Group `files` by the column names of their header, in the order of `files`.

    The header is parsed with Python's csv module as RFC 4180 text, so headers that
    differ only in their quotes are in one group. A file whose header cannot be
    parsed is a group of its own, so that Spark reads it with its own header and
    reports what it cannot read.
    """
    groups: dict[tuple[str, ...] | int, list[str]] = {}
    for position, file in enumerate(files):
        key: tuple[str, ...] | int = position
        try:
            header = csv_header(file, delimiter)
        except (OSError, EOFError, UnicodeDecodeError, csv.Error):
            header = None
        if header is not None:
            key = tuple(header_key(column) for column in header)
        groups.setdefault(key, []).append(file)
    return list(groups.values())


def replaced_bytes_error(
    name: str, files: list[str], flagged: set[str]
) -> SourceError | None:
    """Name the first line that is not UTF-8 in the files of rows with U+FFFD.

    Returns None when these files are valid UTF-8, because a value may contain
    U+FFFD itself.
    """
    # NOTE: a file whose values contain U+FFFD is therefore scanned in Python at
    # each read on Spark.
    candidates = [file for file in files if file in flagged] or files
    return _encoding_error(name, candidates)


def is_malformed_record(exc: Exception) -> bool:
    """Tell whether Spark failed on a CSV row with too few or too many fields."""
    return _MALFORMED.search(str(exc)) is not None


def malformed_row_error(
    name: str, source: SourceConfig, files: list[str], exc: Exception
) -> SourceError:
    """Name the row of `files` that Spark could not split into the header's fields.

    The checks run in the DuckDB reader's order, because the field count scan
    stops at a line that is not UTF-8. A quoted line break is looked for last.
    """
    found = _field_count_error(name, source, files) or _encoding_error(name, files)
    if found is not None:
        return found
    spanning = find_quoted_line_break(files, source.delimiter)
    if spanning is not None:
        file, line, lines = spanning
        return SourceError(
            f"source {name!r}: cannot read {file} as csv on Spark: the row that "
            f"starts on line {line} spans {lines} lines, because a quoted value in "
            "it contains a line break, but the Spark engine reads each line of a "
            "CSV file as one row. Remove the line breaks from the value, or set "
            "engine: duckdb in healthscore.yml."
        )
    matched = _MALFORMED.search(str(exc))
    detail = matched["message"] if matched is not None else "a malformed row"
    return SourceError(
        f"source {name!r}: cannot read {_describe_files(files)} as csv: {detail}. "
        f"Check that each row has as many fields as the header, separated by "
        f"{source.delimiter!r}."
    )


def find_quoted_line_break(
    files: list[str], delimiter: str
) -> tuple[str, int, int] | None:
    """Return the file, first line and line count of the first row over many lines.

    Returns None when no row of `files` spans lines, or a file cannot be read as
    CSV text.
    """
    for file in files:
        try:
            with open_csv_text(file) as handle:
                reader = csv.reader(handle, delimiter=delimiter)
                start = 1
                for fields in reader:
                    if fields and reader.line_num > start:
                        return file, start, reader.line_num - start + 1
                    start = reader.line_num + 1
        except (OSError, EOFError, UnicodeDecodeError, csv.Error):
            continue
    return None
