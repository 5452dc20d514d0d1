"""Read database tables as sources: PostgreSQL through Ibis, DuckDB files attached.

A source with `table` and `connection` becomes the same relation `source_<name>` as
a file source, with the same conversions and row checks (see `reader`), so its
`valid_` view and its report behave as for a file. `_file` is the connection URL
without password or query, then `#` and the table, and `_row` numbers the rows in
the order the database returned them.

- PostgreSQL: Ibis selects only the mapped columns in the database and streams the
  result as Arrow batches into a temporary table of the engine.
- DuckDB file: the engine attaches the file read-only and reads the table in place,
  and `_row` is the table's `rowid` + 1. A view of the file is copied once instead,
  numbered in scan order.
"""

from __future__ import annotations

import difflib
import hashlib
import logging
import os
import re
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import duckdb
import pyarrow as pa

from healthscore.config import Project
from healthscore.config.databases import (
    Database,
    parse_connection,
    quoted_table_problem,
    table_parts,
)
from healthscore.config.models import STANDARD_COLUMNS, SourceConfig
from healthscore.privacy.pseudonymize import pseudonymize_select
from healthscore.sources.columns import missing_columns
from healthscore.sources.lookups import lookup_joins
from healthscore.sources.reader import (
    _MEMORY_HINT,
    NUMERIC_TEXT,
    LoadedSource,
    SourceError,
    _columns_present,
    _first_line,
    _standard_select,
    check_whole_account_ids,
    literal,
    quote,
)

logger = logging.getLogger(__name__)

#: Rows per Arrow batch fetched from PostgreSQL.
FETCH_ROWS = 100_000

#: Seconds to wait for a PostgreSQL connection unless the URL sets connect_timeout.
CONNECT_TIMEOUT_SECONDS = 10

#: Seconds after a connection timeout during which other sources with the same
#: URL fail at once instead of waiting for the same server again.
RETRY_AFTER_SECONDS = 60

#: Connection URL of each server that timed out: (time.monotonic(), source name).
_timed_out: dict[str, tuple[float, str]] = {}

_ROW_COLUMN = "_row"

#: Prefix of the fetched text of an infinite date or time, before its column name.
_INFINITE = "_infinite:"

#: Columns in which PostgreSQL's `infinity` reads as missing, by source kind,
#: because a missing end means the subscription or contract has not ended.
OPEN_ENDS: dict[str, frozenset[str]] = {
    "subscriptions": frozenset({"end"}),
    "accounts": frozenset({"renewal_date"}),
}


def read_table_source(
    con: duckdb.DuckDBPyConnection, project: Project, name: str, source: SourceConfig
) -> LoadedSource:
    """Create the relation `source_<name>` from the database table of a source."""
    database = _database(project, name, source)
    if database.kind == "duckdb":
        return _read_duckdb_table(con, project, name, source, database)
    return _read_postgres_table(con, project, name, source, database)


def check_table_sources(project: Project) -> list[str]:
    """Check that every table source's table exists and has the columns it needs.

    The needed columns are the mapped ones and those that settings read, such as
    the column of a metric or a name in its `where` (see `missing_columns`). Only
    the tables' columns are read, no rows. Returns one message per problem, each
    naming the source, the table and what to do.
    """
    problems = []
    found: dict[str, LoadedSource] = {}
    for name, source in project.config.sources.items():
        if source.table is None:
            continue
        try:
            database = _database(project, name, source)
            column_types = table_columns(project, name, source, database)
            where = _where(database, source)
            columns = _columns_present(name, source, column_types, f"table {where}")
        except SourceError as exc:
            problems.append(str(exc))
            continue
        found[name] = LoadedSource(name, source, f"source_{name}", (where,), columns)
    return problems + missing_columns(project, found)


def table_columns(
    project: Project, name: str, source: SourceConfig, database: Database
) -> dict[str, str]:
    """Return the columns of a source's table with their types, reading no rows."""
    if database.kind == "duckdb":
        con = duckdb.connect()
        try:
            return _describe(con, name, source, database)
        finally:
            con.close()
    backend = _connect_postgres(project, name, source, database)
    try:
        table = _postgres_table(backend, name, source, database)
        return {column: str(dtype) for column, dtype in table.schema().items()}
    finally:
        backend.disconnect()


# DuckDB files


def _read_duckdb_table(
    con: duckdb.DuckDBPyConnection,
    project: Project,
    name: str,
    source: SourceConfig,
    database: Database,
) -> LoadedSource:
    file_types = _describe(con, name, source, database)
    where = _where(database, source)
    columns = _columns_present(name, source, file_types, f"table {where}")
    select = _standard_select(
        project, name, source, columns, file_types, keep_values=True
    )
    qualified = _attached_table(con, name, source, database)
    is_view = _is_view(con, qualified)
    # rowid numbers a table's rows in scan order. A view has no rowid, so its rows
    # are numbered before the lookup joins and copied once, so the numbers stay.
    scanned = qualified.sql
    row = "raw.rowid + 1"
    if is_view:
        scanned = f"(SELECT *, row_number() OVER () AS _row FROM {qualified.sql})"
        row = "raw._row"
    materialize = is_view or bool(source.lookups) or source.kind == "accounts"
    query = (
        f"SELECT {select}, {literal(where)} AS _file, {row} AS _row "
        f"FROM {scanned} AS raw "
        f"{lookup_joins(con, project, name, source, file_types)}"
    )
    query = pseudonymize_select(con, project, columns, query)
    kind = "TEMP TABLE" if materialize else "TEMP VIEW"
    relation = f"source_{name}"
    try:
        con.execute(f"CREATE OR REPLACE {kind} {quote(relation)} AS {query}")
    except duckdb.Error as exc:
        raise SourceError(
            f"source {name!r}: reading {where} failed: {_first_line(exc)}"
        ) from None
    check_whole_account_ids(con, name, source, relation, file_types)
    kept_values = _has_value_column(con, relation)
    return LoadedSource(
        name, source, relation, (where,), columns, kept_values=kept_values
    )


def _has_value_column(con: duckdb.DuckDBPyConnection, relation: str) -> bool:
    """Tell whether a relation keeps unreadable values (see `_standard_select`)."""
    described = con.execute(f"DESCRIBE {quote(relation)}").fetchall()
    return any(row[0] == "_value" for row in described)


@dataclass(frozen=True)
class _Qualified:
    catalog: str
    schema: str
    table: str

    @property
    def sql(self) -> str:
        return ".".join(quote(part) for part in (self.catalog, self.schema, self.table))


def _attached_table(
    con: duckdb.DuckDBPyConnection,
    name: str,
    source: SourceConfig,
    database: Database,
) -> _Qualified:
    """Attach the DuckDB file read-only, once per connection, and name the table."""
    assert database.path is not None and source.table is not None
    # DuckDB keeps the path without `..` parts, so the attachment is found by an
    # alias made from the normalized path instead of by the path as written.
    path = os.path.normpath(os.path.abspath(database.path))
    alias = "source_db_" + hashlib.sha256(path.encode()).hexdigest()[:12]
    # fetchall, not fetchone: DuckDB 2 rejects the next statement on a connection
    # whose last result was not read to its end.
    found = con.execute(
        "SELECT database_name FROM duckdb_databases() WHERE database_name = ?", [alias]
    ).fetchall()
    if not found:
        if not database.path.is_file():
            raise SourceError(
                f"source {name!r}: DuckDB file {path} not found; check "
                f"sources.{name}.connection"
            )
        if not _is_duckdb_file(database.path):
            raise SourceError(
                f"source {name!r}: {path} is not a DuckDB database file. Name a "
                f"file written by DuckDB in sources.{name}.connection, or read a "
                f"CSV, Parquet or JSON Lines file with sources.{name}.path instead "
                "of table and connection"
            )
        try:
            con.execute(f"ATTACH {literal(path)} AS {quote(alias)} (READ_ONLY)")
        except duckdb.Error as exc:
            raise SourceError(
                f"source {name!r}: cannot open DuckDB file {path}: "
                f"{_first_line(exc)}. Close programs that write to it, or check "
                f"sources.{name}.connection"
            ) from None
    schema, table = table_parts(source.table)
    return _Qualified(alias, schema or "main", table)


def _is_duckdb_file(path: Path) -> bool:
    """Tell whether a file starts like a DuckDB database: `DUCK` at byte 8."""
    with path.open("rb") as file:
        head = file.read(12)
    return head[8:12] == b"DUCK"


def _describe(
    con: duckdb.DuckDBPyConnection,
    name: str,
    source: SourceConfig,
    database: Database,
) -> dict[str, str]:
    qualified = _attached_table(con, name, source, database)
    try:
        described = con.execute(f"DESCRIBE SELECT * FROM {qualified.sql}").fetchall()
    except duckdb.CatalogException:
        listed = con.execute(
            "SELECT schema_name || '.' || table_name FROM duckdb_tables() "
            "WHERE database_name = ? UNION ALL "
            "SELECT schema_name || '.' || view_name FROM duckdb_views() "
            "WHERE database_name = ? AND NOT internal",
            [qualified.catalog, qualified.catalog],
        ).fetchall()
        available = [str(row[0]).removeprefix("main.") for row in listed]
        raise SourceError(
            _missing_table_message(name, source, database, available)
        ) from None
    return {str(row[0]): str(row[1]) for row in described}


def _is_view(con: duckdb.DuckDBPyConnection, qualified: _Qualified) -> bool:
    found = con.execute(
        "SELECT count(*) FROM duckdb_views() WHERE database_name = ? "
        "AND schema_name = ? AND view_name = ?",
        [qualified.catalog, qualified.schema, qualified.table],
    ).fetchall()
    return bool(found[0][0])


# PostgreSQL


def _read_postgres_table(
    con: duckdb.DuckDBPyConnection,
    project: Project,
    name: str,
    source: SourceConfig,
    database: Database,
) -> LoadedSource:
    where = _where(database, source)
    backend = _connect_postgres(project, name, source, database)
    try:
        table = _postgres_table(backend, name, source, database)
        schema = {column: str(dtype) for column, dtype in table.schema().items()}
        columns = _columns_present(name, source, schema, f"table {where}")
        selected = table.select(**_fetched_columns(table, source, columns))
        # NOTE: every row is fetched, also for event kinds. A lower time bound would
        # have to cover the longest window of every metric and the source report,
        # which counts rows of all times.
        batches = selected.to_pyarrow_batches(chunk_size=FETCH_ROWS)
        decimal_ids = _decimal_id_columns(table, source)
        relation = _load_batches(
            con, project, name, source, columns, batches, where, decimal_ids
        )
    except SourceError:
        raise
    except Exception as exc:
        # The stream fails inside DuckDB's scan with the driver's error as text.
        if not _is_database_error(exc):
            raise
        raise SourceError(
            f"source {name!r}: reading {where} failed: "
            f"{_read_failure(name, database, exc)}"
        ) from None
    finally:
        backend.disconnect()
    kept_values = _has_value_column(con, relation)
    return LoadedSource(
        name, source, relation, (where,), columns, kept_values=kept_values
    )


def _connect_postgres(
    project: Project, name: str, source: SourceConfig, database: Database
) -> Any:
    try:
        import ibis
        import psycopg
    except ImportError:
        raise SourceError(
            f"source {name!r}: reading PostgreSQL tables needs psycopg; install "
            "healthscore with the postgres extra: pip install 'healthscore[postgres]'"
        ) from None
    # Ibis takes the user name from the URL still percent-encoded, so the decoded
    # user and password are passed on their own.
    options: dict[str, Any] = dict(database.credentials())
    if "connect_timeout" not in urlsplit(database.url).query:
        options["connect_timeout"] = CONNECT_TIMEOUT_SECONDS
    earlier = _timed_out.get(database.url)
    if earlier is not None and time.monotonic() - earlier[0] < RETRY_AFTER_SECONDS:
        raise SourceError(
            f"source {name!r}: not read, because {database.display} did not respond "
            f"in time when source {earlier[1]!r} connected to it. Check that the "
            f"server is running and reachable, or sources.{name}.connection"
        )
    try:
        backend = ibis.connect(database.url, **options)
    except psycopg.errors.ConnectionTimeout as exc:
        _timed_out[database.url] = (time.monotonic(), name)
        same = _sources_of(project, database, other_than=name)
        also = (
            f" Sources {', '.join(same)} use the same connection and are not tried."
            if same
            else ""
        )
        raise SourceError(
            f"source {name!r}: cannot connect to {database.display} to read table "
            f"{source.table!r}: {database.redact(_first_line(exc))} (the server "
            "accepted no connection or did not respond). Check that the server is "
            f"running and reachable, and sources.{name}.connection.{also}"
        ) from None
    except psycopg.Error as exc:
        raise SourceError(
            f"source {name!r}: cannot connect to {database.display} to read table "
            f"{source.table!r}: {database.redact(_first_line(exc))}. Check that the "
            f"server is running and accepts the user, and sources.{name}.connection"
        ) from None
    _timed_out.pop(database.url, None)
    return backend


def _sources_of(project: Project, database: Database, other_than: str) -> list[str]:
    """Name the table sources other than `other_than` that use `database`'s URL."""
    names = []
    for name, source in project.config.sources.items():
        if name == other_than or source.connection is None:
            continue
        try:
            url = parse_connection(project, source.connection).url
        except ValueError:
            continue  # reading the source reports it
        if url == database.url:
            names.append(name)
    return names


def _postgres_table(
    backend: Any, name: str, source: SourceConfig, database: Database
) -> Any:
    import ibis.common.exceptions as ibis_errors

    assert source.table is not None
    schema, table = table_parts(source.table)
    try:
        return backend.table(table, database=schema)
    except ibis_errors.TableNotFound:
        available = [
            f"{schema}.{found}" if schema else found
            for found in backend.list_tables(database=schema)
        ]
        raise SourceError(
            _missing_table_message(name, source, database, available)
        ) from None


def _fetched_columns(
    table: Any, source: SourceConfig, columns: dict[str, str]
) -> dict[str, Any]:
    """Return the table columns to fetch, cast in the database where Arrow needs it.

    Text, numbers, booleans, dates and timestamps arrive as they are and are
    converted and checked in the engine, as for a file. An infinite date or time
    arrives missing, with its text in an extra column (see `_finite_time`). A
    decimal becomes a double (or text for a text column), through `numeric`
    because PostgreSQL casts `money` to no other number type. A json or jsonb
    value becomes its text, and a JSON null a missing value. Any other type
    becomes text, because PostgreSQL types such as uuid or arrays have no plain
    Arrow equivalent.
    """
    fetched: dict[str, Any] = {}
    for column, kind in columns.items():
        is_standard = column in STANDARD_COLUMNS[source.kind]
        file_column = source.file_column(column) if is_standard else column
        if file_column in fetched:
            continue
        value = table[file_column]
        dtype = value.type()
        if dtype.is_decimal() and kind == "number":
            value = value.cast("decimal").cast("float64")
        elif dtype.is_decimal():
            value = value.cast("string")
        elif dtype.is_date() or dtype.is_timestamp():
            value, fetched[_INFINITE + file_column] = _finite_time(value)
        elif dtype.is_json():
            value = _json_text(value)
        elif not (
            dtype.is_string()
            or dtype.is_integer()
            or dtype.is_floating()
            or dtype.is_boolean()
        ):
            value = value.cast("string")
        fetched[file_column] = value
    return fetched


def _json_text(value: Any) -> Any:
    """Return the text of a json or jsonb column, with a JSON null as missing.

    A jsonb null has the text `null`. A json value keeps the text as written, so
    its null may have spaces around it.
    """
    import ibis

    text = value.cast("string")
    return ibis.ifelse(text.strip() == "null", ibis.null("string"), text)


def _decimal_id_columns(table: Any, source: SourceConfig) -> frozenset[str]:
    """Return the account id column when it is a numeric with a fractional scale.

    `_fetched_columns` fetches it as text, which keeps every digit, and
    `_load_batches` marks its type NUMERIC_TEXT, so the engine reads 1001.000 as
    the id 1001. A numeric without a scale counts, because each of its values
    keeps the scale it was written with. A numeric of scale 0 reads as integer
    text already.
    """
    column = source.file_column("account_id")
    if column not in table.columns or "account_id" in source.lookups:
        return frozenset()
    dtype = table[column].type()
    if dtype.is_decimal() and dtype.scale != 0:
        return frozenset({column})
    return frozenset()


def _finite_time(value: Any) -> tuple[Any, Any]:
    """Split a PostgreSQL date or time column into finite values and infinite text.

    Returns the column with `infinity` and `-infinity` as missing, because Python's
    date types have no infinite value and the driver would fail the whole read,
    and a text column that holds those two words and is missing in other rows.
    `_infinite_checks` turns the words into row problems.
    """
    import ibis

    text = value.cast("string")
    infinite = text.isin(["infinity", "-infinity"])
    return (
        ibis.ifelse(infinite, ibis.null(value.type()), value),
        ibis.ifelse(infinite, text, ibis.null("string")),
    )


def _infinite_checks(
    source: SourceConfig, columns: dict[str, str], fetched: list[str]
) -> list[tuple[str, str, str]]:
    """Return (SQL test, column, SQL text) of each infinite date or time to reject.

    A row whose column was infinite gets the problem `unparseable_value:<column>`
    and the word as its value, as a file value that cannot be read does. The
    exception is `infinity` in a column of `OPEN_ENDS`, which reads as missing:
    a subscription or contract that has not ended.
    """
    checks = []
    for column in columns:
        is_standard = column in STANDARD_COLUMNS[source.kind]
        file_column = source.file_column(column) if is_standard else column
        if _INFINITE + file_column not in fetched:
            continue
        text = f"raw.{quote(_INFINITE + file_column)}"
        if column in OPEN_ENDS.get(source.kind, ()) and is_standard:
            checks.append((f"{text} = '-infinity'", column, text))
        else:
            checks.append((f"{text} IS NOT NULL", column, text))
    return checks


def _reject_infinite(
    query: str, select: str, checks: list[tuple[str, str, str]]
) -> str:
    """Wrap `query`, which selects the fetched infinite texts, so that `_problem`
    and `_value` report the `checks` and the texts are left out.

    An infinite value takes the place of a missing value of the same column,
    which is what it was read as, and of no other problem.
    """
    problem_cases = []
    value_cases = []
    for test, column, text in checks:
        free = f"(_problem IS NULL OR _problem = {literal('missing_value:' + column)})"
        problem_cases.append(
            f"WHEN {free} AND {test} THEN {literal('unparseable_value:' + column)}"
        )
        value_cases.append(f"WHEN {free} AND {test} THEN {text}")
    texts = ", ".join(text.removeprefix("raw.") for _, _, text in checks)
    problem = f"CASE {' '.join(problem_cases)} ELSE _problem END AS _problem"
    if select.endswith(" AS _value"):
        value = f"CASE {' '.join(value_cases)} ELSE _value END AS _value"
        listed = f"* EXCLUDE ({texts}) REPLACE ({problem}, {value})"
    else:
        value = f"CASE {' '.join(value_cases)} END AS _value"
        listed = f"* EXCLUDE ({texts}) REPLACE ({problem}), {value}"
    return f"SELECT {listed} FROM ({query}) AS raw"


def _load_batches(
    con: duckdb.DuckDBPyConnection,
    project: Project,
    name: str,
    source: SourceConfig,
    columns: dict[str, str],
    batches: pa.RecordBatchReader,
    where: str,
    decimal_texts: frozenset[str] = frozenset(),
) -> str:
    """Stream the fetched batches into the temporary table `source_<name>`.

    `decimal_texts` are fetched columns whose text is that of decimal numbers (see
    `_decimal_id_columns`).
    """
    numbered_schema = batches.schema.append(pa.field(_ROW_COLUMN, pa.int64()))
    incoming = f"_incoming_{name}"
    # The column types come from an empty table of the same schema, because
    # describing the stream itself could start reading it.
    con.register(incoming, numbered_schema.empty_table())
    try:
        described = con.execute(f"DESCRIBE SELECT * FROM {quote(incoming)}").fetchall()
    finally:
        con.unregister(incoming)
    file_types = {str(row[0]): str(row[1]) for row in described}
    file_types.update(dict.fromkeys(decimal_texts, NUMERIC_TEXT))
    select = _standard_select(
        project, name, source, columns, file_types, keep_values=True
    )
    checks = _infinite_checks(source, columns, list(file_types))
    texts = "".join(f", {text}" for _, _, text in checks)
    query = (
        f"SELECT {select}, {literal(where)} AS _file, raw._row AS _row{texts} "
        f"FROM {quote(incoming)} AS raw "
        f"{lookup_joins(con, project, name, source, file_types)}"
    )
    if checks:
        query = _reject_infinite(query, select, checks)
    query = pseudonymize_select(con, project, columns, query)
    relation = f"source_{name}"
    reader = pa.RecordBatchReader.from_batches(
        numbered_schema, _numbered(batches, numbered_schema)
    )
    con.register(incoming, reader)
    try:
        con.execute(f"CREATE OR REPLACE TEMP TABLE {quote(relation)} AS {query}")
    finally:
        con.unregister(incoming)
    ((count,),) = con.execute(f"SELECT count(*) FROM {quote(relation)}").fetchall()
    logger.info("fetched %d rows of %s", count, where)
    check_whole_account_ids(con, name, source, relation, file_types)
    return relation


def _numbered(
    batches: pa.RecordBatchReader, schema: pa.Schema
) -> Iterator[pa.RecordBatch]:
    """Add `_row`, numbering the rows from 1 in the order they arrive."""
    start = 1
    for batch in batches:
        numbers = pa.array(range(start, start + batch.num_rows), type=pa.int64())
        start += batch.num_rows
        yield pa.RecordBatch.from_arrays([*batch.columns, numbers], schema=schema)


def _read_failure(name: str, database: Database, exc: Exception) -> str:
    """Return the cause of a failed PostgreSQL read and what to do about it."""
    import psycopg

    # Loading the rows into DuckDB can exceed engine.memory_limit, which is no
    # fault of the server.
    if isinstance(exc, duckdb.OutOfMemoryException):
        return database.redact(_first_line(exc)) + _MEMORY_HINT
    kind: type[BaseException] = type(exc)
    cause = _first_line(exc)
    # An error while streaming reaches DuckDB as a Python traceback in the text,
    # whose last `psycopg.errors.<Name>: message` line is the driver's error.
    raised = _DRIVER_ERROR.findall(str(exc))
    if raised:
        class_name, cause = raised[-1]
        kind = getattr(psycopg.errors, class_name, kind)
    cause = database.redact(cause)
    if issubclass(kind, psycopg.OperationalError):
        return f"{cause}; check that the server is reachable and sources.{name}.table"
    return (
        f"{cause}; check the types of the table's columns that sources.{name}."
        f"columns and sources.{name}.attributes map, and map a column that cannot "
        "be read as its kind to a text attribute or leave it out"
    )


#: A driver error in a traceback: `psycopg.errors.<Name>: <message>`.
_DRIVER_ERROR = re.compile(r"^psycopg\.(?:errors\.)?(\w+): (.*)$", re.MULTILINE)


def _is_database_error(exc: Exception) -> bool:
    """Tell whether `exc` comes from the database or from the stream in DuckDB."""
    try:
        import psycopg
    except ImportError:
        return isinstance(exc, duckdb.Error)
    return isinstance(exc, psycopg.Error | duckdb.Error)


# Shared


def _database(project: Project, name: str, source: SourceConfig) -> Database:
    assert source.connection is not None and source.table is not None
    problem = quoted_table_problem(source.table)
    if problem is not None:
        raise SourceError(f"source {name!r}: {problem}. Fix sources.{name}.table")
    try:
        return parse_connection(project, source.connection)
    except ValueError as exc:
        raise SourceError(
            f"source {name!r}: {exc}; fix sources.{name}.connection"
        ) from None


def _where(database: Database, source: SourceConfig) -> str:
    """Name the table for reports: connection URL without password, `#`, table."""
    return f"{database.display}#{source.table}"


def _missing_table_message(
    name: str, source: SourceConfig, database: Database, available: list[str]
) -> str:
    assert source.table is not None
    # Compared in lower case, because a name written in another case, such as
    # BILLING.Events for billing.events, is the likeliest slip.
    by_lower = {table.lower(): table for table in available}
    close = difflib.get_close_matches(
        source.table.lower(), list(by_lower), n=3, cutoff=0.6
    )
    shown = [by_lower[table] for table in close]
    hint = f" Similar tables: {', '.join(shown)}." if shown else ""
    # A DuckDB file has no users, so only a server's permissions can hide a table.
    access = ", and that the user may read it" if database.kind == "postgres" else ""
    return (
        f"source {name!r}: table {source.table!r} not found in {database.display}; "
        f"check sources.{name}.table{access}.{hint}"
    )
