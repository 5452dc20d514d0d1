"""Lookup files: CSV code tables that replace codes in a source column with names.

Every row of a lookup file is checked before a source joins it. A row with another
field count than the header, or a key repeated with a different value, raises
SourceError. A lenient read would turn such a file into wrong names or into rows
joined twice, and a wrong header makes DuckDB's CSV sniffer read no rows at all.

A lookup compares codes by the text that `lookup_key` gives a key of the file and
`lookup_key_sql` gives a value of the source, so that a whole number matches
however the two write it. Both depend on the type of the source column, which
`lookup_joins` takes from `file_types`:

- A column of numbers (integer, DECIMAL, FLOAT, DOUBLE or PostgreSQL numeric
  text) reads each value as the digits of its whole number, as a number account id
  reads (see `reader._account_id_parts`), so 1001.0 reads as `1001`. NaN, a value
  with a fractional part, an infinite value and a float past `EXACT_FLOAT_LIMITS`
  match no key. The file's keys are read as numbers too: `1001.000` and `1001`
  are both the key `1001`, and a blank or NaN key is skipped. A key that is not a
  whole number, or that the column cannot store exactly, raises SourceError.
- In a column of any other type, or one missing from `file_types`, a text
  written as a whole number with a decimal point and only zeros after it, such as
  `1001.000`, reads as its digits, in the source and in the file alike. Other
  texts, such as `1.5` or `007`, are compared as written.
"""

from __future__ import annotations

import csv
import math
import re
from decimal import Decimal

import duckdb
import pyarrow as pa

from healthscore.config import Project
from healthscore.config.models import LookupConfig, SourceConfig
from healthscore.sources.csv_rows import csv_records, fields_count
from healthscore.sources.reader import (
    _EXACT_NUMBER_TYPES,
    _FLOAT_TYPES,
    EXACT_FLOAT_LIMITS,
    NUMERIC_TEXT,
    SourceError,
    _account_id_parts,
    quote,
)

#: Delimiters tried in turn: the first whose header has the key and value columns is
#: used, as DuckDB's sniffer found the delimiter of a lookup file before.
LOOKUP_DELIMITERS = (",", ";", "\t", "|")

#: A number in decimal notation, with an optional exponent, as a lookup key.
_NUMBER_KEY = re.compile(r"[+-]?([0-9]+([.][0-9]*)?|[.][0-9]+)([eE][+-]?[0-9]+)?")

#: Infinite and NaN keys, in the spellings that DuckDB and Python read.
_INFINITE_KEY = re.compile(r"[+-]?(inf|infinity)", re.IGNORECASE)
_NAN_KEY = re.compile(r"[+-]?nan", re.IGNORECASE)

#: A text that reads as its digits in a column of text: a whole number with a
#: decimal point and only zeros after it.
_WHOLE_DECIMAL = re.compile(r"-?[0-9]+[.]0*")

#: `_WHOLE_DECIMAL`, and the point and zeros at its end, as regular expressions of
#: DuckDB and Spark SQL. `\z` ends a match, because Java's `$` also matches before
#: a final newline.
_WHOLE_DECIMAL_SQL = r"^-?[0-9]+[.]0*\z"
_DECIMAL_ZEROS_SQL = r"[.]0*\z"


def read_lookup(
    project: Project,
    name: str,
    column: str,
    lookup: LookupConfig,
    column_type: str | None = None,
) -> dict[str, str | None]:
    """Read the lookup file of column `column` of source `name` into code to name.

    `column_type` is the type of the source column, and each key becomes the code
    that `lookup_key` gives it. Without `column_type`, keys are kept as written. A
    row whose key gives no code, such as an empty key, is skipped, because a blank
    code in a source is never looked up. A blank name becomes None. A code
    repeated with the same name is kept once. Raises SourceError naming the file
    and line of the first bad row.
    """
    path = str(project.path(lookup.path))
    setting = f"sources.{name}.lookups.{column}"

    def error(problem: str) -> SourceError:
        return SourceError(f"source {name!r}: lookup file {path}{problem}")

    pairs: dict[str, str | None] = {}
    first_line: dict[str, int] = {}
    try:
        delimiter = _lookup_delimiter(path, lookup)
        records = csv_records(path, delimiter)
        first = next(records, None)
        if first is None:
            raise error(
                f" is empty; it needs a header row with {lookup.key!r} and "
                f"{lookup.value!r}"
            )
        header = first[1]
        for setting_name, expected in (("key", lookup.key), ("value", lookup.value)):
            if expected not in header:
                raise error(
                    f" has no column {expected!r}; its header has {', '.join(header)}. "
                    f"Fix {setting}.{setting_name} or the header."
                )
        key_at, value_at = header.index(lookup.key), header.index(lookup.value)
        for line, fields in records:
            if len(fields) != len(header):
                raise error(
                    f", line {line}: the row has {fields_count(len(fields))} but the "
                    f"header has {len(header)} ({', '.join(header)}). Fix the row, or "
                    f"put double quotes around a value that contains {delimiter!r}."
                )
            written, value = fields[key_at], fields[value_at] or None
            key: str | None = written or None
            if column_type is not None:
                try:
                    key = lookup_key(written, column_type)
                except ValueError as exc:
                    raise error(
                        f", line {line}: key {written!r} in column {lookup.key!r} "
                        f"{exc}. A lookup matches the numbers of column "
                        f"{_source_column(project, name, column)!r} by their "
                        "whole-number digits. Fix the key or remove its row."
                    ) from None
            if key is None:
                continue
            if key in pairs and pairs[key] != value:
                read_as = "" if key == written else f", read as {key!r},"
                raise error(
                    f", line {line}: key {written!r}{read_as} has the value "
                    f"{value!r} but line {first_line[key]} gives it {pairs[key]!r}. "
                    "Keep one row per key."
                )
            pairs.setdefault(key, value)
            first_line.setdefault(key, line)
    except FileNotFoundError:
        raise error(f" not found; check {setting}.path") from None
    except (OSError, EOFError) as exc:
        raise error(f" cannot be read: {exc}; check {setting}.path") from None
    except UnicodeDecodeError as exc:
        raise error(
            f" is not UTF-8 text (byte {exc.start}: {exc.reason}); save it as UTF-8"
        ) from None
    except csv.Error as exc:
        raise error(f" cannot be read as CSV: {exc}") from None
    return pairs


def _source_column(project: Project, name: str, column: str) -> str:
    """Return the file column of source `name` that standard column `column` reads."""
    source = project.config.sources.get(name)
    return column if source is None else source.file_column(column)


def _lookup_delimiter(path: str, lookup: LookupConfig) -> str:
    for delimiter in LOOKUP_DELIMITERS:
        first = next(csv_records(path, delimiter), None)
        if first is not None and {lookup.key, lookup.value} <= set(first[1]):
            return delimiter
    return LOOKUP_DELIMITERS[0]


def lookup_joins(
    con: duckdb.DuckDBPyConnection,
    project: Project,
    name: str,
    source: SourceConfig,
    file_types: dict[str, str] | None = None,
) -> str:
    """Load the lookup files of a source into DuckDB and return the SQL joins.

    Each file becomes the temporary table `lookup_<source>_<column>` with one row
    per key. A query that selects `raw` and uses the source's standard select then
    adds these joins after `FROM ... AS raw`. `file_types` gives the types of the
    source's columns. A column that it lacks is compared as text.
    """
    joins = []
    for column, lookup in source.lookups.items():
        column_type = (file_types or {}).get(source.file_column(column), "VARCHAR")
        pairs = read_lookup(project, name, column, lookup, column_type)
        table = quote(f"lookup_{name}_{column}")
        incoming = f"_incoming_lookup_{name}_{column}"
        arrow = pa.table(
            {
                "key": pa.array(list(pairs), pa.string()),
                "value": pa.array(list(pairs.values()), pa.string()),
            }
        )
        con.register(incoming, arrow)
        try:
            con.execute(
                f"CREATE OR REPLACE TEMP TABLE {table} AS "
                f"SELECT key, value FROM {quote(incoming)}"
            )
        finally:
            con.unregister(incoming)
        joins.append(join_sql(source, column, table, column_type))
    return " ".join(joins)


def join_sql(
    source: SourceConfig, column: str, table: str, column_type: str | None = None
) -> str:
    """Return the LEFT JOIN of the quoted lookup `table` (columns key and value).

    `reader._standard_select` reads the name as `"lookup_<column>".value`. With
    `column_type`, the type of the source column, the join matches the code that
    `lookup_key_sql` gives each value. Without it, the value's text as written.
    """
    alias = quote("lookup_" + column)
    raw = f"raw.{quote(source.file_column(column))}"
    code = f"CAST({raw} AS VARCHAR)"
    if column_type is not None:
        code = lookup_key_sql(raw, column_type)
    return f"LEFT JOIN {table} AS {alias} ON {code} = {alias}.key"


def is_number_type(column_type: str) -> bool:
    """Tell whether a lookup compares the values of a `column_type` column as numbers.

    `column_type` is a DuckDB type name or `NUMERIC_TEXT`.
    """
    return (
        column_type in _EXACT_NUMBER_TYPES
        or column_type in _FLOAT_TYPES
        or column_type == NUMERIC_TEXT
        or column_type.startswith("DECIMAL")
    )


def lookup_key(text: str, column_type: str) -> str | None:
    """Return the key that a lookup file row with key `text` has, None to skip it.

    `column_type` is the type of the source column that the lookup reads. Raises
    ValueError when the column contains numbers and `text` is not a whole number
    that the column can store exactly. The message describes the key, for
    example `is not a whole number`.
    """
    if not is_number_type(column_type):
        if _WHOLE_DECIMAL.fullmatch(text):
            return text.partition(".")[0]
        return text or None
    written = text.strip()
    if written == "" or _NAN_KEY.fullmatch(written):
        return None
    if _INFINITE_KEY.fullmatch(written):
        raise ValueError("is infinite")
    if not _NUMBER_KEY.fullmatch(written):
        raise ValueError("is not a number")
    number = Decimal(written)
    # DuckDB reads a number past the largest double, such as 1e400, as infinite.
    if not math.isfinite(float(number)):
        raise ValueError("is infinite")
    if number != number.to_integral_value():
        raise ValueError("is not a whole number")
    limit = EXACT_FLOAT_LIMITS.get(column_type)
    if limit is not None and abs(number) >= limit:
        raise ValueError(
            f"is not below {limit:,}, the limit below which a {column_type} column "
            "stores every whole number exactly"
        )
    return str(int(number))


def lookup_key_sql(raw: str, column_type: str) -> str:
    """Return SQL of the key that the lookup matches for source value `raw`.

    `column_type` is the type of `raw` in the source (see `lookup_key`). The SQL
    is NULL for a missing value, NaN, and a number that is not a whole number that
    the column can store exactly, so those match no key.
    """
    if column_type in _EXACT_NUMBER_TYPES:
        return f"CAST({raw} AS VARCHAR)"
    if is_number_type(column_type):
        return _account_id_parts(raw, column_type)[1]
    text = f"CAST({raw} AS VARCHAR)"
    # contains() rules out most texts before the regular expression runs.
    whole = f"contains({text}, '.') AND regexp_matches({text}, '{_WHOLE_DECIMAL_SQL}')"
    digits = f"regexp_replace({text}, '{_DECIMAL_ZEROS_SQL}', '')"
    return f"CASE WHEN {whole} THEN {digits} ELSE {text} END"
