"""Scores of each run written into a database table (`store.snapshot_table`).

The table has the columns of the snapshot's scores table, with `as_of` as a DATE,
and `project`, the key of the project that wrote the row (`project_key`). So it
contains one row per project, account and as-of date, and several projects can
share it. Writing deletes the project's rows of the written dates and inserts the
new ones in one transaction, so a re-run replaces a date and a failed write leaves
the earlier rows of its dates as they were. Rows of other projects are not touched.
`write_snapshot_table` writes one date; `SnapshotTableWriter` writes batches of dates
over one connection, as a backfill does. The table is written through Ibis, on
PostgreSQL or a DuckDB file, and created when missing.

The Parquet snapshot of a date is stored before its rows are written, so a run
stopped in between leaves a snapshot whose rows the table lacks. `pipeline.score`
and a backfill therefore mark their dates in the snapshot store first
(`SnapshotStore.mark_table_pending`) and clear the marks once the table has the
rows. `SnapshotTableWriter.write_pending` writes the rows of the dates still marked
from their stored snapshots. The marks decide which dates to write, not a
comparison of the table's dates with the stored ones. Such a comparison would also
find snapshots stored before the table was configured, dates written under an
earlier project key and snapshots without accounts, none of which has rows under
the current key.
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Collection, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any
from urllib.parse import urlsplit

import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from healthscore.config import Project
from healthscore.config.databases import (
    Database,
    parse_connection,
    quoted_table_problem,
    snapshot_table_error,
    table_parts,
)
from healthscore.config.models import SnapshotTableConfig
from healthscore.errors import SnapshotNotFoundError, SnapshotTableError
from healthscore.store.snapshots import SnapshotStore

logger = logging.getLogger(__name__)

#: Seconds to wait for a PostgreSQL connection unless the URL sets connect_timeout.
CONNECT_TIMEOUT_SECONDS = 10

#: Seconds to wait for a DuckDB file that another process has open, such as a
#: backfill writing the same file, which keeps it open only while it writes a batch.
LOCK_WAIT_SECONDS = 30


#: Rows of pending dates after which `write_pending` commits a transaction, so a
#: transaction contains at most this many rows plus those of one date. It equals
#: the bound of a backfill batch (`monitoring.backfill.ROWS_PER_BATCH`).
PENDING_ROWS_PER_WRITE = 500_000

#: Column with the key of the project that wrote each row.
PROJECT_COLUMN = "project"

#: Columns of the snapshot table: those of the snapshot's scores table
#: (`scoring.tables.SCORE_COLUMNS`), with `as_of` as a date, then the project key.
#: The project column comes last because tables written before it existed get it
#: appended by ALTER TABLE.
SNAPSHOT_TABLE_SCHEMA = pa.schema(
    [
        ("account_id", pa.string()),
        ("as_of", pa.date32()),
        ("scorecard", pa.string()),
        ("scorecard_version", pa.string()),
        ("scorecard_label", pa.string()),
        ("score", pa.float64()),
        ("band", pa.string()),
        ("coverage", pa.float64()),
        ("override_reason", pa.string()),
        ("override_author", pa.string()),
        ("computed_score", pa.float64()),
        (PROJECT_COLUMN, pa.string()),
    ]
)


@dataclass(frozen=True)
class PendingWrite:
    """Rows written for the dates that earlier runs left pending in the table (see
    `SnapshotTableWriter.write_pending`)."""

    written: tuple[date, ...] = ()
    """Dates whose rows were written from their Parquet snapshots, oldest first."""
    rows: int = 0
    """Rows written for the dates of `written`."""
    unwritten: tuple[date, ...] = ()
    """Dates still pending because a write failed, oldest first. They stay marked."""
    error: str | None = None
    """The error of the failed write, or None."""

    def to_dict(self) -> dict[str, Any]:
        """Return the write as JSON-ready values, with dates as ISO text."""
        return {
            "written": [as_of.isoformat() for as_of in self.written],
            "rows": self.rows,
            "unwritten": [as_of.isoformat() for as_of in self.unwritten],
            "error": self.error,
        }


@dataclass(frozen=True)
class TableWrite:
    """Rows that a command wrote into the snapshot table."""

    table: str
    """The table as `store.snapshot_table.table` names it."""
    connection: str
    """The connection URL without password or query."""
    rows: int
    pending: PendingWrite | None = None
    """The rows written for dates that earlier runs left pending, or None when the
    command did not look for such dates."""

    def to_dict(self) -> dict[str, Any]:
        """Return the write as JSON-ready values."""
        return {
            "table": self.table,
            "connection": self.connection,
            "rows": self.rows,
            "pending_dates": None if self.pending is None else self.pending.to_dict(),
        }


def table_write(
    project: Project,
    settings: SnapshotTableConfig,
    rows: int,
    pending: PendingWrite | None = None,
) -> TableWrite:
    """Describe `rows` written into the snapshot table of `settings`, and the rows
    written for `pending` dates.

    Raises SnapshotTableError when the connection URL cannot be resolved.
    """
    display = _database(project, settings).display
    return TableWrite(settings.table, display, rows, pending)


def project_key(project: Project, settings: SnapshotTableConfig) -> str:
    """Return the key of the project's rows: `settings.project`, else the name.

    Pass the current project. A project replayed from a kept configuration
    (`monitoring.history.replay_project`) carries the `name` of that time, so a
    project renamed since would get its old key.
    """
    return settings.project if settings.project is not None else project.config.name


def write_snapshot_table(
    project: Project, settings: SnapshotTableConfig, as_of: date, scores: pd.DataFrame
) -> int:
    """Replace the project's rows of `as_of` in the snapshot table with `scores`.

    Returns the number of rows written. Raises SnapshotTableError when the database
    cannot be reached or written; the rows of the date stay as they were then.
    """
    with SnapshotTableWriter(project, settings) as writer:
        return writer.write([(as_of, scores)])


def write_run(
    project: Project,
    settings: SnapshotTableConfig,
    store: SnapshotStore,
    as_of: date,
    scores: pd.DataFrame,
) -> TableWrite:
    """Replace the project's rows of `as_of` with `scores`, then write the dates
    that earlier runs left pending in `store`.

    The mark of `as_of` is cleared once its rows are written. Raises
    SnapshotTableError when the rows of `as_of` cannot be written; the table keeps
    its earlier rows of the date, and every mark stays. A failed write of the
    pending dates raises nothing (see `SnapshotTableWriter.write_pending`).
    """
    with SnapshotTableWriter(project, settings) as writer:
        rows = writer.write([(as_of, scores)])
        store.clear_table_pending([as_of])
        pending = writer.write_pending(store)
    return TableWrite(settings.table, writer.database.display, rows, pending)


class SnapshotTableWriter:
    """A connection that writes the scores of many as-of dates into the snapshot table.

    Each `write` replaces the project's rows of its dates in one transaction, so a
    failed write leaves every one of its dates with the rows it had before. The
    connection opens on the first `write`, is closed after a failed one (the next
    `write` opens a new one), and closes with `close` or at the end of a `with`
    block. A DuckDB file is the exception: it is closed after each `connect`,
    `write` and `delete_account`, because DuckDB lets only one process open a
    file for writing, so that another run can write between two batches. When a
    table source of the project reads the file, the engine can attach it then,
    and the writer writes through the engine's connection (see
    `healthscore.store.duckdb_files`).

    Raises SnapshotTableError on creation when the connection URL cannot be resolved,
    for example when it names an unset variable.
    """

    def __init__(self, project: Project, settings: SnapshotTableConfig) -> None:
        self.settings = settings
        self.project_key = project_key(project, settings)
        self.database = _database(project, settings)
        problem = quoted_table_problem(settings.table)
        if problem is not None:
            raise SnapshotTableError(f"store.snapshot_table.table: {problem}")
        self._schema, self._name = table_parts(settings.table)
        self._backend: Any = None

    def __enter__(self) -> SnapshotTableWriter:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def connect(self) -> None:
        """Open the connection and create or check the table, unless it is open.

        Raises SnapshotTableError when the database cannot be reached, or the table
        cannot be created or is not a table with the needed columns.
        """
        self._open()
        self._close_duckdb_file()

    def close(self) -> None:
        """Close the connection, if one is open.

        Raises SnapshotTableError when the DuckDB file of the engine's sources
        cannot be attached read-only again after a write through the engine.
        """
        backend, self._backend = self._backend, None
        if backend is None:
            return
        try:
            backend.disconnect()
        except Exception as exc:
            if not _is_database_error(exc):
                raise
            raise SnapshotTableError(
                f"attaching {self.database.display} read-only again for the "
                f"sources after writing table {self.settings.table!r} failed: "
                f"{_first_line(exc)}. Close programs that write to the file and "
                "run the command again"
            ) from None

    def _close_duckdb_file(self) -> None:
        """Close a connection to a DuckDB file, which other runs and the engine's
        sources may need."""
        if self.database.kind == "duckdb":
            self.close()

    def write(self, scores: Sequence[tuple[date, pd.DataFrame | pa.Table]]) -> int:
        """Replace the project's rows of each listed date with its scores, in one
        transaction.

        `scores` lists (as-of date, scores table) pairs, each date once. A table is
        a snapshot's scores table as a DataFrame or an Arrow table. Returns the
        number of rows written. Raises SnapshotTableError when the database cannot
        be reached or written; every listed date keeps its earlier rows then.
        """
        dates = [as_of for as_of, _ in scores]
        if len(set(dates)) != len(dates):
            raise ValueError(f"a date is listed twice in {dates}; list each date once")
        if not dates:
            return 0
        rows = pa.concat_tables(
            [_as_arrow(as_of, frame, self.project_key) for as_of, frame in scores]
        )
        started = time.perf_counter()
        backend = self._open()
        with self._database_errors(
            f"writing the scores of {_describe(dates)} into table "
            f"{self.settings.table!r} of {self.database.display} failed, so the "
            f"table keeps its earlier rows of {_those(dates)}"
        ):
            self._replace(backend, dates, rows)
        self._close_duckdb_file()
        logger.info(
            "wrote %d scores of %s into %s#%s in %.2f s",
            rows.num_rows,
            _describe(dates),
            self.database.display,
            self.settings.table,
            time.perf_counter() - started,
        )
        return rows.num_rows

    def write_pending(
        self, store: SnapshotStore, skip: Collection[date] = ()
    ) -> PendingWrite:
        """Write the rows of the dates marked in `store` from their Parquet
        snapshots, and clear the marks.

        `score` and a backfill mark their dates before they store the snapshots and
        clear the marks once the table has the rows (see
        `SnapshotStore.mark_table_pending`), so the marked dates are those of runs
        that stopped in between. Dates in `skip` keep their marks, for a caller
        that writes them itself. A marked date without a stored snapshot or scores
        table has nothing to write, so only its mark is cleared. The dates are
        written oldest first, in transactions of up to about PENDING_ROWS_PER_WRITE
        rows.

        Raises nothing when a snapshot cannot be read or the table cannot be
        written. The result then lists the dates left unwritten with the error,
        and they stay marked. Logs a warning that names the dates written or left.
        """
        marked = [
            as_of for as_of in store.table_pending(running=False) if as_of not in skip
        ]
        if not marked:
            return PendingWrite()
        written: list[date] = []
        rows = 0
        batch: list[tuple[date, pd.DataFrame]] = []
        size = 0
        try:
            for as_of in marked:
                scores = _stored_scores(store, as_of)
                if scores is None:
                    store.clear_table_pending([as_of])
                    continue
                batch.append((as_of, scores))
                size += len(scores)
                if size >= PENDING_ROWS_PER_WRITE:
                    rows += self._write_marked(store, batch, written)
                    batch, size = [], 0
            rows += self._write_marked(store, batch, written)
        except (SnapshotTableError, OSError, pa.ArrowException) as exc:
            done = set(written)
            left = tuple(
                as_of
                for as_of in store.table_pending(running=False)
                if as_of not in done and as_of not in skip
            )
            result = PendingWrite(tuple(written), rows, left, _first_line(exc))
        else:
            result = PendingWrite(tuple(written), rows)
        self._log_pending(result)
        return result

    def _write_marked(
        self,
        store: SnapshotStore,
        batch: list[tuple[date, pd.DataFrame]],
        written: list[date],
    ) -> int:
        """Write one transaction of marked dates, clear their marks and add the
        dates to `written`. Returns the rows written."""
        if not batch:
            return 0
        rows = self.write(batch)
        dates = [as_of for as_of, _ in batch]
        store.clear_table_pending(dates)
        written.extend(dates)
        return rows

    def _log_pending(self, result: PendingWrite) -> None:
        table = f"table {self.settings.table!r} of {self.database.display}"
        if result.written:
            logger.warning(
                "a run stored the Parquet snapshots of %s and stopped before it "
                "wrote their rows into %s, or its write failed; wrote the %d rows "
                "of those snapshots now",
                _list_dates(result.written),
                table,
                result.rows,
            )
        if result.unwritten:
            logger.warning(
                "a run stored the Parquet snapshots of %s and stopped before it "
                "wrote their rows into %s, or its write failed, and writing them "
                "now failed too: %s. The dates stay marked in the snapshot folder, "
                "so the next `healthscore score` or `healthscore backfill` of this "
                "project writes them, once the table can be written",
                _list_dates(result.unwritten),
                table,
                result.error,
            )

    def account_rows(self, account_id: str) -> dict[str, int]:
        """Count the rows of one account per project key, changing nothing.

        A missing table contains no rows. The rows of a table without the project
        column count under this project's key, which its first write gives them.
        Raises SnapshotTableError when the database cannot be reached or read.
        """
        import ibis.common.exceptions as ibis_errors

        backend = _open_backend(self.database, self.settings)
        try:
            with self._database_errors(
                f"counting an account's rows in table {self.settings.table!r} of "
                f"{self.database.display} failed"
            ):
                try:
                    schema = backend.get_schema(self._name, database=self._schema)
                except ibis_errors.TableNotFound:
                    return {}
                key = (
                    PROJECT_COLUMN
                    if PROJECT_COLUMN in schema.names
                    else _text_sql(self.project_key)
                )
                table = _table_sql(backend, self._schema, self._name)
                rows = _fetch(
                    backend,
                    self.database,
                    f"SELECT {key}, count(*) FROM {table} "
                    f"WHERE account_id = {_text_sql(account_id)} GROUP BY 1",
                )
        finally:
            backend.disconnect()
        return {str(owner): int(count) for owner, count in rows}

    def key_dates(self) -> list[date]:
        """Return the as-of dates that have rows of this project's key, oldest first.

        Changes nothing. A missing table has no dates. The rows of a table without
        the project column count under this project's key, which its first write
        gives them. Raises SnapshotTableError when the database cannot be reached
        or read.
        """
        import ibis.common.exceptions as ibis_errors

        backend = _open_backend(self.database, self.settings)
        try:
            with self._database_errors(
                f"listing the dates of project {self.project_key!r} in table "
                f"{self.settings.table!r} of {self.database.display} failed"
            ):
                try:
                    schema = backend.get_schema(self._name, database=self._schema)
                except ibis_errors.TableNotFound:
                    return []
                table = _table_sql(backend, self._schema, self._name)
                where = (
                    f" WHERE {PROJECT_COLUMN} = {_text_sql(self.project_key)}"
                    if PROJECT_COLUMN in schema.names
                    else ""
                )
                rows = _fetch(
                    backend,
                    self.database,
                    f"SELECT DISTINCT as_of FROM {table}{where}",
                )
        finally:
            backend.disconnect()
        return sorted(_as_date(as_of) for (as_of,) in rows if as_of is not None)

    def delete_account(self, account_id: str) -> None:
        """Delete the project's rows of one account, of every date, in one transaction.

        Raises SnapshotTableError when the database cannot be reached or written;
        the table keeps its rows then.
        """
        backend = self._open()
        table = _table_sql(backend, self._schema, self._name)
        rows = (
            f"{PROJECT_COLUMN} = {_text_sql(self.project_key)} "
            f"AND account_id = {_text_sql(account_id)}"
        )
        with (
            self._database_errors(
                f"deleting an account's rows from table {self.settings.table!r} of "
                f"{self.database.display} failed, so the table keeps them"
            ),
            _transaction(backend, self.database),
        ):
            _execute(
                backend,
                self.database,
                f"DELETE FROM {table} WHERE {rows}",
            )
        self._close_duckdb_file()

    @contextmanager
    def _database_errors(self, failure: str) -> Iterator[None]:
        """Close the connection on an error; raise a database error as a
        SnapshotTableError whose message starts with `failure`."""
        try:
            yield
        except SnapshotTableError:
            self.close()
            raise
        except Exception as exc:
            self.close()
            if not _is_database_error(exc):
                raise
            raise SnapshotTableError(
                f"{failure}: {self.database.redact(_first_line(exc))}"
            ) from None

    def _open(self) -> Any:
        """Return the open connection, opening it and checking the table first."""
        if self._backend is not None:
            return self._backend
        backend = _open_backend(self.database, self.settings)
        try:
            _ensure_table(
                backend,
                self.database,
                self.settings,
                self._schema,
                self._name,
                self.project_key,
            )
        except BaseException:
            backend.disconnect()
            raise
        self._backend = backend
        return backend

    def _replace(self, backend: Any, dates: list[date], rows: pa.Table) -> None:
        database, schema, name = self.database, self._schema, self._name
        with _transaction(backend, database):
            if database.kind == "postgres":
                # Two runs of one date would otherwise both delete before either
                # inserts, and leave the rows twice. Readers are not blocked.
                _execute(backend, database, _lock_sql(backend, schema, name))
            delete = _delete_sql(backend, schema, name, dates, self.project_key)
            _execute(backend, database, delete)
            if rows.num_rows and database.kind == "postgres":
                _copy_rows(backend, schema, name, rows)
            elif rows.num_rows:
                backend.insert(name, rows, database=schema)


def check_snapshot_table(
    project: Project,
    settings: SnapshotTableConfig,
    *,
    check_schema: bool = False,
    check_columns: bool = False,
) -> list[str]:
    """Resolve the table's connection URL and check the table name.

    With `check_schema`, the database is reached to check that the schema of a
    `schema.name` table exists, and the columns are checked too. With
    `check_columns`, the database is reached, read-only, to check that an existing
    table has the columns and types of `SNAPSHOT_TABLE_SCHEMA`. Raises
    SnapshotTableError when the URL cannot be resolved, the name contains quotes,
    the schema is missing or the table cannot be written, with the message that a
    write would raise. A run calls this before scoring, so such a problem stops it
    before anything is stored. Returns warnings about column checks that could not
    run, for example because the database could not be reached; the write reports
    such an error itself.
    """
    database = _database(project, settings)
    problem = quoted_table_problem(settings.table)
    if problem is not None:
        error = snapshot_table_error(project)
        where = str(error) if error is not None else ""
        raise SnapshotTableError(where or f"store.snapshot_table.table: {problem}")
    schema, _ = table_parts(settings.table)
    if check_schema and schema is not None and not _schema_exists(database, schema):
        raise SnapshotTableError(
            f"store.snapshot_table.table: schema {schema!r} of table "
            f"{settings.table!r} does not exist in {database.display}, and "
            "healthscore does not create schemas. Create it (CREATE SCHEMA "
            f"{_quoted_name(schema)}) or correct the schema name; nothing was stored"
        )
    if not (check_schema or check_columns):
        return []
    return _check_existing_table(database, settings)


def _check_existing_table(
    database: Database, settings: SnapshotTableConfig
) -> list[str]:
    """Check the columns of the table, when it exists, without writing anything.

    Raises SnapshotTableError as `_check_columns` does. Returns a warning when the
    database cannot be reached or read.
    """
    import ibis
    import ibis.common.exceptions as ibis_errors

    schema, name = table_parts(settings.table)
    try:
        if database.kind == "duckdb":
            assert database.path is not None
            if not database.path.exists():
                return []  # the first write creates the file and the table
            # Read-only, so the check takes no write lock from another run. DuckDB
            # 2.0 rejects the connection while this process has the file open in
            # another mode, and the check is then skipped.
            backend = ibis.duckdb.connect(str(database.path), read_only=True)
        else:
            backend = _connect_server(database)
    except ImportError:
        return []  # the write reports the missing driver
    except Exception as exc:
        if not _is_database_error(exc):
            raise
        return [_unchecked(database, settings, exc)]
    try:
        try:
            present = backend.get_schema(name, database=schema)
        except ibis_errors.TableNotFound:
            return []  # the first write creates it
        _check_columns(backend, database, settings, schema, name, present)
    except Exception as exc:
        if not _is_database_error(exc):
            raise
        return [_unchecked(database, settings, exc)]
    finally:
        backend.disconnect()
    return []


def _unchecked(
    database: Database, settings: SnapshotTableConfig, exc: Exception
) -> str:
    logger.debug(
        "cannot check table %s in %s: %s",
        settings.table,
        database.display,
        database.redact(_first_line(exc)),
    )
    return (
        f"the columns of table {settings.table!r} in {database.display} were not "
        f"checked, because reading them failed: {database.redact(_first_line(exc))}. "
        "Check the server or file and store.snapshot_table.connection"
    )


#: Schema that every DuckDB database file has from its creation.
DUCKDB_DEFAULT_SCHEMA = "main"


def _schema_exists(database: Database, schema: str) -> bool:
    """Tell whether `schema` exists in the database; True when that is unknown.

    A database that cannot be reached or read counts as unknown, so the write
    after scoring reports that error, as it does for a table without a schema.
    """
    import duckdb

    if database.kind == "duckdb":
        assert database.path is not None
        if not database.path.exists():
            # The write creates the file, which has only DuckDB's schema `main`.
            return schema.lower() == DUCKDB_DEFAULT_SCHEMA
        try:
            # Read-only, so the check takes no write lock from another run. DuckDB
            # 2.0 rejects the connection while this process has the file open in
            # another mode, and the check is then skipped. DuckDB matches names
            # whatever their case, so the comparison does too.
            with duckdb.connect(str(database.path), read_only=True) as con:
                rows = con.execute(
                    "SELECT 1 FROM information_schema.schemata "
                    "WHERE lower(schema_name) = lower(?) "
                    "AND catalog_name = current_database()",
                    [schema],
                ).fetchall()
        except duckdb.Error as exc:
            logger.debug(
                "cannot check schema %s in %s: %s", schema, database.display, exc
            )
            return True
        return bool(rows)
    try:
        import psycopg
    except ImportError:
        return True  # the write reports the missing driver
    options: dict[str, Any] = dict(database.credentials())
    if "connect_timeout" not in urlsplit(database.url).query:
        options["connect_timeout"] = CONNECT_TIMEOUT_SECONDS
    try:
        with psycopg.connect(database.url, **options) as con:
            rows = con.execute(
                "SELECT 1 FROM pg_catalog.pg_namespace WHERE nspname = %s", [schema]
            ).fetchall()
    except psycopg.Error as exc:
        logger.debug(
            "cannot check schema %s in %s: %s",
            schema,
            database.display,
            database.redact(_first_line(exc)),
        )
        return True
    return bool(rows)


def _quoted_name(name: str) -> str:
    """Return `name` as a quoted SQL identifier, as healthscore writes it."""
    return '"' + name.replace('"', '""') + '"'


def _database(project: Project, settings: SnapshotTableConfig) -> Database:
    try:
        return parse_connection(project, settings.connection)
    except ValueError as exc:
        raise SnapshotTableError(
            f"store.snapshot_table.connection: {exc}; fix the setting"
        ) from None


def _as_arrow(as_of: date, scores: pd.DataFrame | pa.Table, key: str) -> pa.Table:
    """Return the rows to write, typed as the table; `as_of` and the project `key`
    are set on every row."""
    count = len(scores)
    names = set(scores.column_names if isinstance(scores, pa.Table) else scores.columns)
    columns: list[pa.Array | pa.ChunkedArray] = []
    for field in SNAPSHOT_TABLE_SCHEMA:
        if field.name == "as_of":
            columns.append(pa.array([as_of] * count, type=pa.date32()))
        elif field.name == PROJECT_COLUMN:
            columns.append(pa.array([key] * count, type=pa.string()))
        elif field.name not in names:
            columns.append(pa.nulls(count, type=field.type))
        elif isinstance(scores, pa.Table):
            # Casting also decodes the dictionary columns of backfilled tables.
            columns.append(pc.cast(scores[field.name], field.type))
        else:
            values = scores[field.name]
            columns.append(pa.array(values, type=field.type, from_pandas=True))
    return pa.Table.from_arrays(columns, schema=SNAPSHOT_TABLE_SCHEMA)


def _stored_scores(store: SnapshotStore, as_of: date) -> pd.DataFrame | None:
    """Read the scores table of the snapshot of `as_of`, or None when the snapshot
    or its scores table is not stored."""
    try:
        return store.read(as_of, "scores")
    except SnapshotNotFoundError:
        return None


def _as_date(value: Any) -> date:
    """Return a DATE value as DuckDB or psycopg returns it, as a `date`."""
    # datetime is a subclass of date, so it is checked first.
    if isinstance(value, datetime):
        return value.date()
    if isinstance(value, date):
        return value
    return date.fromisoformat(str(value)[:10])


def _describe(dates: list[date]) -> str:
    """Name the dates of a write in a message: one date, or the count and range."""
    if len(dates) == 1:
        return dates[0].isoformat()
    return f"{len(dates)} dates from {min(dates)} to {max(dates)}"


def _list_dates(dates: Sequence[date]) -> str:
    """Name sorted dates in a message: up to six, else the count, the first three
    and the last."""
    texts = [as_of.isoformat() for as_of in dates]
    if len(texts) == 1:
        return texts[0]
    if len(texts) <= 6:
        return f"{', '.join(texts[:-1])} and {texts[-1]}"
    return f"{len(texts)} dates ({', '.join(texts[:3])}, ..., {texts[-1]})"


def _those(dates: list[date]) -> str:
    return "that date" if len(dates) == 1 else "those dates"


def _open_backend(database: Database, settings: SnapshotTableConfig) -> Any:
    """Connect to the table's database. Raises SnapshotTableError when that fails."""
    from healthscore.store.duckdb_files import open_attached_backend

    try:
        if database.kind == "duckdb":
            assert database.path is not None
            # An engine of this process that reads sources from the file has it
            # attached, and DuckDB lets no second database of the process write it.
            backend = open_attached_backend(database.path)
            if backend is None:
                database.path.parent.mkdir(parents=True, exist_ok=True)
                backend = _connect_duckdb_file(database, settings)
        else:
            backend = _connect_server(database)
    except ImportError:
        raise SnapshotTableError(
            "writing scores into PostgreSQL needs psycopg; install healthscore with "
            "the postgres extra: pip install 'healthscore[postgres]'"
        ) from None
    except Exception as exc:
        # OSError: the folder of a DuckDB file cannot be created.
        if not (_is_database_error(exc) or isinstance(exc, OSError)):
            raise
        raise SnapshotTableError(
            f"cannot connect to {database.display} to write the scores into table "
            f"{settings.table!r}: {database.redact(_first_line(exc))}. Check the "
            "server or file and store.snapshot_table.connection"
        ) from None
    return backend


def _connect_duckdb_file(database: Database, settings: SnapshotTableConfig) -> Any:
    """Open the DuckDB file of the table, waiting up to `LOCK_WAIT_SECONDS` while
    another process holds its lock.

    Raises SnapshotTableError when the lock is still held then.
    """
    import duckdb
    import ibis

    deadline = time.monotonic() + LOCK_WAIT_SECONDS
    while True:
        try:
            return ibis.duckdb.connect(str(database.path))
        except duckdb.IOException as exc:
            holder = _LOCK_HOLDER.search(str(exc))
            if holder is None:
                raise
            if time.monotonic() < deadline:
                time.sleep(0.2)
                continue
            raise SnapshotTableError(
                f"cannot write the scores into table {settings.table!r} of "
                f"{database.display}: another process (PID {holder.group(1)}) has "
                f"the file open, for example another healthscore run that writes "
                f"the same table; it was still open after {LOCK_WAIT_SECONDS} s. "
                "Wait until that run ends, or run the commands one after another, "
                "then run this command again"
            ) from None


#: DuckDB's message when another process has the file open for writing.
_LOCK_HOLDER = re.compile(r"Conflicting lock is held in .* \(PID (\d+)\)")


@contextmanager
def _transaction(backend: Any, database: Database) -> Iterator[None]:
    """Run the block in one transaction of the backend's connection."""
    if database.kind == "postgres":
        # psycopg turns the transactions that Ibis opens inside into savepoints.
        with backend.con.transaction():
            yield
        return
    backend.con.begin()
    try:
        yield
    except BaseException:
        backend.con.rollback()
        raise
    backend.con.commit()


def _ensure_table(
    backend: Any,
    database: Database,
    settings: SnapshotTableConfig,
    schema: str | None,
    name: str,
    key: str,
) -> None:
    """Create the table when missing, or check that it has every needed column.

    A table that lacks only the project column, as tables written before it
    existed do, gets it, with its rows assigned to the project `key`.
    """
    import ibis
    import ibis.common.exceptions as ibis_errors

    expected = SNAPSHOT_TABLE_SCHEMA
    try:
        # get_schema, not list_tables: Ibis 12 lists DuckDB tables with a method
        # that DuckDB 2 no longer has.
        try:
            present = backend.get_schema(name, database=schema)
        except ibis_errors.TableNotFound:
            backend.create_table(
                name, schema=ibis.Schema.from_pyarrow(expected), database=schema
            )
            logger.info("created table %s in %s", settings.table, database.display)
            if database.kind == "postgres" and settings.table != settings.table.lower():
                # PostgreSQL folds unquoted names to lower case, so an unquoted
                # query of this name finds no table.
                logger.warning(
                    "created table %s in %s with its upper-case letters kept; "
                    "query it as %s, with the quotes",
                    settings.table,
                    database.display,
                    _table_sql(backend, schema, name),
                )
            return
    except Exception as exc:
        if not _is_database_error(exc):
            raise
        raise SnapshotTableError(
            f"cannot create or inspect table {settings.table!r} in "
            f"{database.display}: {database.redact(_first_line(exc))}. Check that "
            "the schema exists and the user may create tables in it"
        ) from None
    _check_columns(backend, database, settings, schema, name, present)
    if PROJECT_COLUMN not in present:
        _add_project_column(backend, database, settings, schema, name, key)


def _check_columns(
    backend: Any,
    database: Database,
    settings: SnapshotTableConfig,
    schema: str | None,
    name: str,
    present: Any,
) -> None:
    """Check an existing table before anything changes it.

    `present` is its Ibis schema. Raises SnapshotTableError when the relation is a
    view, lacks a column other than the project column, or has a column of the
    wrong type. The message names every such column.
    """
    try:
        view = _is_view(backend, database, schema, name)
    except Exception as exc:
        if not _is_database_error(exc):
            raise
        view = False  # the write then fails with the database's own message
    if view:
        raise SnapshotTableError(
            f"{settings.table!r} in {database.display} is a view, and rows cannot be "
            "deleted from or inserted into a view; point store.snapshot_table.table "
            "to a table, or to a name that does not exist yet to have it created"
        )
    missing = [
        column for column in SNAPSHOT_TABLE_SCHEMA.names if column not in present
    ]
    if missing == [PROJECT_COLUMN]:
        missing = []  # `_add_project_column` adds it
    wrong = [
        (field, present[field.name])
        for field in SNAPSHOT_TABLE_SCHEMA
        if field.name in present and not _fits(present[field.name], field.type)
    ]
    if not wrong:
        if missing:
            raise SnapshotTableError(
                f"table {settings.table!r} in {database.display} has no column "
                f"{', '.join(missing)}; point store.snapshot_table.table to a new "
                "table, or add the columns"
            )
        return
    kind = database.kind
    columns = "; ".join(
        f"{field.name} is {_found_type(found, kind)} but must be "
        f"{_COLUMN_TYPES[kind][field.type]}"
        for field, found in wrong
    )
    absent = f". It has no column {', '.join(missing)}" if missing else ""
    add = " and add the missing columns" if missing else ""
    field = wrong[0][0]
    expected = _COLUMN_TYPES[kind][field.type]
    convert = f" USING {field.name}::{expected}" if kind == "postgres" else ""
    raise SnapshotTableError(
        f"table {settings.table!r} in {database.display} has columns of the wrong "
        f"type: {columns}{absent}. The table was not changed. Point "
        "store.snapshot_table.table to a new table, which healthscore creates, or "
        f"change each column to its type{add}, for example: ALTER TABLE "
        f"{settings.table} ALTER COLUMN {field.name} TYPE {expected}{convert}"
    )


#: SQL type of each column type of `SNAPSHOT_TABLE_SCHEMA`, by database kind, as
#: messages name the expected types.
_COLUMN_TYPES = {
    "duckdb": {pa.string(): "VARCHAR", pa.date32(): "DATE", pa.float64(): "DOUBLE"},
    "postgres": {
        pa.string(): "TEXT",
        pa.date32(): "DATE",
        pa.float64(): "DOUBLE PRECISION",
    },
}


def _connect_server(database: Database) -> Any:
    """Connect to a database server, with a timeout unless the URL sets one."""
    import ibis

    options: dict[str, Any] = dict(database.credentials())
    if "connect_timeout" not in urlsplit(database.url).query:
        options["connect_timeout"] = CONNECT_TIMEOUT_SECONDS
    return ibis.connect(database.url, **options)


def _fits(found: Any, expected: pa.DataType) -> bool:
    """Tell whether a column of Ibis type `found` stores values of `expected` as
    they are.

    Text columns of any length fit, although PostgreSQL rejects a value longer
    than a VARCHAR(n) column. Numbers must be double precision or PostgreSQL's
    NUMERIC without precision, which keeps every digit of a double. REAL, integer
    and DECIMAL(p, s) columns round scores.
    """
    if pa.types.is_string(expected):
        return bool(found.is_string())
    if pa.types.is_date32(expected):
        return bool(found.is_date())
    if found.is_decimal():
        return found.precision is None and found.scale is None
    return bool(found.is_float64())


def _found_type(found: Any, kind: str) -> str:
    """Name the SQL type of a column of Ibis type `found`, as messages show it."""
    from ibis.backends.sql.datatypes import DuckDBType, PostgresType

    if found.is_string() and kind == "duckdb":
        return "VARCHAR"
    if found.is_string() and found.length is None:
        return "TEXT"
    mapper = DuckDBType if kind == "duckdb" else PostgresType
    return str(mapper.to_string(found.copy(nullable=True)))


def _add_project_column(
    backend: Any,
    database: Database,
    settings: SnapshotTableConfig,
    schema: str | None,
    name: str,
    key: str,
) -> None:
    """Add the project column to a table written before it existed, in one
    transaction, and assign the table's rows to the project `key`.

    IF NOT EXISTS and `WHERE project IS NULL` let a concurrent writer that added
    the column first win: this call then changes nothing.
    """
    table = _table_sql(backend, schema, name)
    text_type = "TEXT" if database.kind == "postgres" else "VARCHAR"
    add = f"ALTER TABLE {table} ADD COLUMN IF NOT EXISTS {PROJECT_COLUMN} {text_type}"
    assign = (
        f"UPDATE {table} SET {PROJECT_COLUMN} = {_text_sql(key)} "
        f"WHERE {PROJECT_COLUMN} IS NULL"
    )
    try:
        with _transaction(backend, database):
            _execute(backend, database, add)
            assigned = _execute_count(backend, database, assign)
    except Exception as exc:
        if not _is_database_error(exc):
            raise
        raise SnapshotTableError(
            f"table {settings.table!r} in {database.display} has no column "
            f"{PROJECT_COLUMN}, and adding it failed: "
            f"{database.redact(_first_line(exc))}. Add it and assign the rows to "
            f"the projects that wrote them, for example: ALTER TABLE {settings.table} "
            f"ADD COLUMN {PROJECT_COLUMN} {text_type}; UPDATE {settings.table} SET "
            f"{PROJECT_COLUMN} = {_text_sql(key)}"
        ) from None
    logger.warning(
        "added column %s to table %r of %s and assigned its %d earlier row(s) to "
        "project %r; if another project wrote some of them, set their %s column "
        "to that project's key",
        PROJECT_COLUMN,
        settings.table,
        database.display,
        assigned,
        key,
        PROJECT_COLUMN,
    )


def _is_view(backend: Any, database: Database, schema: str | None, name: str) -> bool:
    """Tell whether the relation `schema.name` is a view, from information_schema."""
    default = "current_schema()"
    # information_schema of DuckDB lists every attached database, so the engine's
    # connection (see `_open_backend`) also lists its in-memory views.
    sql = (
        "SELECT table_type FROM information_schema.tables WHERE table_name = "
        f"{_text_sql(name)} AND table_schema = "
        f"{_text_sql(schema) if schema is not None else default} "
        "AND table_catalog = current_database()"
    )
    rows = _fetch(backend, database, sql)
    return any(str(kind).upper() == "VIEW" for (kind,) in rows)


def _table_sql(backend: Any, schema: str | None, name: str) -> str:
    import sqlglot as sg

    return str(sg.table(name, db=schema, quoted=True).sql(backend.dialect))


def _delete_sql(
    backend: Any, schema: str | None, name: str, dates: list[date], key: str
) -> str:
    table = _table_sql(backend, schema, name)
    days = ", ".join(f"DATE '{as_of.isoformat()}'" for as_of in dates)
    return (
        f"DELETE FROM {table} WHERE {PROJECT_COLUMN} = {_text_sql(key)} "
        f"AND as_of IN ({days})"
    )


def _text_sql(value: str) -> str:
    """Return `value` as an SQL string literal.

    Doubling the quote is enough on DuckDB and on PostgreSQL with
    standard_conforming_strings on, its default since 9.1.
    """
    return "'" + value.replace("'", "''") + "'"


def _lock_sql(backend: Any, schema: str | None, name: str) -> str:
    table = _table_sql(backend, schema, name)
    return f"LOCK TABLE {table} IN SHARE ROW EXCLUSIVE MODE"


def _copy_rows(backend: Any, schema: str | None, name: str, rows: pa.Table) -> None:
    """Send `rows` to a PostgreSQL table with COPY, inside the open transaction.

    Ibis inserts row by row on PostgreSQL: 100 000 scores took 6.8 s that way and
    about 1 s with COPY, on the 2-core development machine with a local server.
    """
    table = _table_sql(backend, schema, name)
    columns = ", ".join(f'"{column}"' for column in rows.column_names)
    values = zip(*(column.to_pylist() for column in rows.columns), strict=True)
    with (
        backend.con.cursor() as cursor,
        cursor.copy(f"COPY {table} ({columns}) FROM STDIN") as copy,
    ):
        for row in values:
            copy.write_row(row)


def _execute(backend: Any, database: Database, sql: str) -> None:
    """Run one statement on the backend's own connection, inside its transaction.

    Ibis' `raw_sql` on PostgreSQL rolls back on an error, which psycopg forbids
    inside a transaction block, so the statement runs on a cursor here.
    """
    if database.kind == "postgres":
        with backend.con.cursor() as cursor:
            cursor.execute(sql)
    else:
        backend.con.execute(sql).fetchall()


def _fetch(backend: Any, database: Database, sql: str) -> list[tuple[Any, ...]]:
    """Run one query on the backend's own connection and return its rows."""
    if database.kind == "postgres":
        with backend.con.cursor() as cursor:
            cursor.execute(sql)
            return list(cursor.fetchall())
    return backend.con.execute(sql).fetchall()


def _execute_count(backend: Any, database: Database, sql: str) -> int:
    """Run one UPDATE or DELETE like `_execute`; return the number of rows changed."""
    if database.kind == "postgres":
        with backend.con.cursor() as cursor:
            cursor.execute(sql)
            return int(cursor.rowcount)
    # DuckDB returns the count as the statement's one row.
    ((count,),) = backend.con.execute(sql).fetchall()
    return int(count)


def _is_database_error(exc: Exception) -> bool:
    """Tell whether `exc` comes from DuckDB, PostgreSQL or Ibis talking to them."""
    import duckdb
    import ibis.common.exceptions as ibis_errors

    kinds: tuple[type[BaseException], ...] = (duckdb.Error, ibis_errors.IbisError)
    try:
        import psycopg
    except ImportError:
        pass
    else:
        kinds = (*kinds, psycopg.Error)
    return isinstance(exc, kinds)


def _first_line(exc: Exception) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
