"""Lookup files: CSV code tables that replace codes in a source column with names.

Every row of a lookup file is checked before a source joins it. A row with another
field count than the header, or a key repeated with a different value, raises
SourceError. A lenient read would turn such a file into wrong names or into rows
joined twice, and a wrong header makes DuckDB's CSV sniffer read no rows at all.
"""

from __future__ import annotations

import csv

import duckdb
import pyarrow as pa

from healthscore.config import Project
from healthscore.config.models import LookupConfig, SourceConfig
from healthscore.sources.csv_rows import csv_records, fields_count
from healthscore.sources.reader import SourceError, quote

#: Delimiters tried in turn: the first whose header has the key and value columns is
#: used, as DuckDB's sniffer found the delimiter of a lookup file before.
LOOKUP_DELIMITERS = (",", ";", "\t", "|")


def read_lookup(
    project: Project, name: str, column: str, lookup: LookupConfig
) -> dict[str, str | None]:
    """Read the lookup file of column `column` of source `name` into code to name.

    A blank name becomes None, and a row with a blank code is skipped, because a
    blank code in a source is never looked up. A code repeated with the same name is
    kept once. Raises SourceError naming the file and line of the first bad row.
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
            key, value = fields[key_at], fields[value_at] or None
            if key == "":
                continue
            if key in pairs and pairs[key] != value:
                raise error(
                    f", line {line}: key {key!r} has the value {value!r} but line "
                    f"{first_line[key]} gives it {pairs[key]!r}. Keep one row per key."
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


def _lookup_delimiter(path: str, lookup: LookupConfig) -> str:
    for delimiter in LOOKUP_DELIMITERS:
        first = next(csv_records(path, delimiter), None)
        if first is not None and {lookup.key, lookup.value} <= set(first[1]):
            return delimiter
    return LOOKUP_DELIMITERS[0]


def lookup_joins(
    con: duckdb.DuckDBPyConnection, project: Project, name: str, source: SourceConfig
) -> str:
    """Load the lookup files of a source into DuckDB and return the SQL joins.

    Each file becomes the temporary table `lookup_<source>_<column>` with one row
    per key. A query that selects `raw` and uses the source's standard select then
    adds these joins after `FROM ... AS raw`.
    """
    joins = []
    for column, lookup in source.lookups.items():
        pairs = read_lookup(project, name, column, lookup)
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
        joins.append(join_sql(source, column, table))
    return " ".join(joins)


def join_sql(source: SourceConfig, column: str, table: str) -> str:
    """Return the LEFT JOIN of the quoted lookup `table` (columns key and value).

    `reader._standard_select` reads the name as `"lookup_<column>".value`.
    """
    alias = quote("lookup_" + column)
    raw = f"CAST(raw.{quote(source.file_column(column))} AS VARCHAR)"
    return f"LEFT JOIN {table} AS {alias} ON {raw} = {alias}.key"
