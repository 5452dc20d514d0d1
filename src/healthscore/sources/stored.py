"""Read the event store as sources: raw rows of `path: store` and their daily rollups.

The rows were checked, and pseudonymized where configured, when they were stored.
So every row counts as usable here, and only the account checks of
`SourceSet.report` still apply. The Parquet files stay as views, so DuckDB skips
row groups outside a metric's window.

Both read the store as of its last complete append (see
`healthscore.store.events.EventStore.rollup_snapshot`), so rows of an append that a
crash left unfinished are not counted.
"""

from __future__ import annotations

from datetime import date
from pathlib import Path

import duckdb
import pyarrow as pa

from healthscore.config import Project
from healthscore.config.models import STANDARD_COLUMNS, SourceConfig
from healthscore.config.retention import (
    ROLLUP_SUFFIX,
    is_store_source,
    rollup_columns,
    rollup_source,
)
from healthscore.sources.reader import (
    _SQL_TYPES,
    LoadedSource,
    SourceError,
    file_list,
    quote,
)
from healthscore.store.events import EventStore, EventStoreError, day_folder_name


def raw_folder(project: Project, name: str) -> Path:
    """Return the folder of the raw day partitions of store source `name`."""
    return project.path(project.config.store.events) / name


def daily_folder(project: Project, name: str) -> Path:
    """Return the folder of the daily rollups of store source `name`."""
    return project.path(project.config.store.daily) / name


def read_store_source(
    con: duckdb.DuckDBPyConnection, project: Project, name: str, source: SourceConfig
) -> LoadedSource:
    """Create the view `source_<name>` over the raw rows stored for a source."""
    columns: dict[str, str] = {**STANDARD_COLUMNS[source.kind], **source.attributes}
    try:
        files = _event_store(project).raw_files(name)
    except EventStoreError as exc:
        raise SourceError(f"source {name!r}: {exc}") from None
    relation = f"source_{name}"
    _create_view(con, name, relation, files, {c: c for c in columns}, columns)
    return LoadedSource(name, source, relation, tuple(files), columns)


def rollups_used(project: Project) -> list[str]:
    """Return the rollup sources (`<store source>_daily`) that metrics read."""
    used = []
    for metric in project.config.metrics.values():
        name = getattr(metric, "source", None)
        if name and name not in used and rollup_source(project.config, name):
            used.append(name)
    return used


def read_rollup_source(
    con: duckdb.DuckDBPyConnection, project: Project, name: str
) -> LoadedSource:
    """Create the view `source_<name>` over the daily rollups of a store source.

    Its `timestamp` is the last timestamp of the account's day, so a window counts
    a day exactly when every row of it is inside, and never before its last row.
    """
    found = rollup_source(project.config, name)
    if found is None:
        raise SourceError(
            f"source {name!r} is not the rollup of a source with path: store"
        )
    base, settings = found
    columns: dict[str, str] = {
        "account_id": "string",
        "timestamp": "timestamp",
        **settings.attributes,
    }
    file_columns = {column: column for column in columns}
    file_columns["timestamp"] = "last_timestamp"
    try:
        snapshot = _event_store(project).rollup_snapshot(base)
    except EventStoreError as exc:
        raise SourceError(f"source {name!r}: {exc}") from None
    computed = _computed_rollups(project, base, snapshot.computed)
    relation = f"source_{name}"
    _create_view(con, name, relation, snapshot.files, file_columns, columns, computed)
    origins = [
        str(raw_folder(project, base) / day_folder_name(day))
        for day in snapshot.computed
    ]
    return LoadedSource(name, settings, relation, (*snapshot.files, *origins), columns)


def _event_store(project: Project) -> EventStore:
    config = project.config.store
    return EventStore(project.path(config.events), project.path(config.daily))


def _computed_rollups(
    project: Project, base: str, computed: dict[date, pa.Table]
) -> pa.Table | None:
    """Join the rollups computed from raw parts, with the raw day folder as `_file`."""
    tables = []
    for day, table in sorted(computed.items()):
        origin = str(raw_folder(project, base) / day_folder_name(day))
        rows = table.num_rows
        table = table.append_column("_file", pa.array([origin] * rows, pa.string()))
        tables.append(
            table.append_column("_row", pa.array(range(1, rows + 1), pa.int64()))
        )
    if not tables:
        return None
    return pa.concat_tables(tables, promote_options="default")


def _create_view(
    con: duckdb.DuckDBPyConnection,
    name: str,
    relation: str,
    files: list[str],
    file_columns: dict[str, str],
    columns: dict[str, str],
    computed: pa.Table | None = None,
) -> None:
    """Create `relation` with typed `columns`, NULL where no stored file has one.

    The rows of `computed`, which has the columns of the files and `_file` and
    `_row`, follow those of the files. It is registered with `con` as long as the
    view reads it.
    """
    # (columns present, the `_file` and `_row` columns and the FROM clause) per scan
    scans: list[tuple[set[str], str]] = []
    if files:
        names = file_list(files)
        scan = (
            f"read_parquet({names}, union_by_name = true, filename = true, "
            "file_row_number = true, hive_partitioning = false)"
        )
        try:
            described = con.execute(f"DESCRIBE SELECT * FROM {scan}").fetchall()
        except duckdb.Error as exc:
            raise SourceError(
                f"source {name!r}: cannot read the stored files ({files[0]}, ...): "
                f"{str(exc).strip().splitlines()[0]}"
            ) from None
        present = {row[0] for row in described}
        row = "file_row_number + 1"
        scans.append((present, f"filename AS _file, {row} AS _row FROM {scan}"))
    computed_name = f"computed_{relation}"
    if computed is not None and computed.num_rows:
        con.register(computed_name, computed)
        scans.append(
            (set(computed.column_names), f"_file, _row FROM {quote(computed_name)}")
        )
    if not scans:
        tail = (
            "CAST(NULL AS VARCHAR) AS _file, CAST(NULL AS BIGINT) AS _row WHERE false"
        )
        scans.append((set(), tail))
    selects = []
    for present, tail in scans:
        selected = []
        for column, kind in columns.items():
            stored = file_columns[column]
            value = quote(stored) if stored in present else "NULL"
            selected.append(f"CAST({value} AS {_SQL_TYPES[kind]}) AS {quote(column)}")
        selects.append(
            "SELECT "
            + ", ".join(selected)
            + f", CAST(NULL AS VARCHAR) AS _problem, {tail}"
        )
    sql = f"CREATE OR REPLACE TEMP VIEW {quote(relation)} AS " + " UNION ALL ".join(
        selects
    )
    con.execute(sql)
    if computed is None or not computed.num_rows:
        con.unregister(computed_name)  # read by an earlier view of `relation`


__all__ = [
    "ROLLUP_SUFFIX",
    "daily_folder",
    "is_store_source",
    "raw_folder",
    "read_rollup_source",
    "read_store_source",
    "rollup_columns",
    "rollups_used",
]
