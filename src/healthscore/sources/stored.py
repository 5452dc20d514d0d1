"""Read the event store as sources: raw rows of `path: store` and their daily rollups.

The rows were checked, and pseudonymized where configured, when they were stored.
So every row counts as usable here, and only the account checks of
`SourceSet.report` still apply. The Parquet files stay as views, so DuckDB skips
row groups outside a metric's window.
"""

from __future__ import annotations

import glob
from pathlib import Path

import duckdb

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
    pattern = str(raw_folder(project, name) / "day=*" / "part-*.parquet")
    files = sorted(glob.glob(pattern))
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
    pattern = str(daily_folder(project, base) / "day=*" / "rollup.parquet")
    files = sorted(glob.glob(pattern))
    relation = f"source_{name}"
    _create_view(con, name, relation, files, file_columns, columns)
    return LoadedSource(name, settings, relation, tuple(files), columns)


def _create_view(
    con: duckdb.DuckDBPyConnection,
    name: str,
    relation: str,
    files: list[str],
    file_columns: dict[str, str],
    columns: dict[str, str],
) -> None:
    """Create `relation` with typed `columns`, NULL where no stored file has one."""
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
        tail = f"filename AS _file, {row} AS _row FROM {scan}"
    else:
        present = set()
        tail = (
            "CAST(NULL AS VARCHAR) AS _file, CAST(NULL AS BIGINT) AS _row WHERE false"
        )
    selected = []
    for column, kind in columns.items():
        stored = file_columns[column]
        value = quote(stored) if stored in present else "NULL"
        selected.append(f"CAST({value} AS {_SQL_TYPES[kind]}) AS {quote(column)}")
    sql = (
        f"CREATE OR REPLACE TEMP VIEW {quote(relation)} AS SELECT "
        + ", ".join(selected)
        + f", CAST(NULL AS VARCHAR) AS _problem, {tail}"
    )
    con.execute(sql)


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
