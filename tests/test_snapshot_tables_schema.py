"""Snapshot tables whose columns have the wrong types, on DuckDB and PostgreSQL.

A write into such a table must name every wrong column with its expected and
found type before it changes anything: the table keeps its columns and rows, and
a table without the project column does not get it. `validate` and `score` must
report the same message before anything is written or stored. The PostgreSQL
tests use a new schema of the test server and skip when it cannot be reached.
"""

from __future__ import annotations

from datetime import date
from pathlib import Path
from typing import Any

import duckdb
import pandas as pd
import pytest

from healthscore.config import Project
from healthscore.pipeline import score, snapshot_store
from healthscore.store.snapshot_tables import (
    SnapshotTableError,
    write_snapshot_table,
)

# `pseudonymization_key` sets the key of the projects' pseudonymized columns.
from test_table_sources import (  # noqa: F401
    PG_ADMIN,
    csv_project,
    pseudonymization_key,
    run_cli,
)

AS_OF = date(2026, 6, 1)
EARLIER = date(2026, 5, 1)

#: Columns of a table written before the project column existed, with as_of an
#: INTEGER and score a text column.
LEGACY_WRONG_COLUMNS = (
    "account_id VARCHAR, as_of INTEGER, scorecard VARCHAR, scorecard_version "
    "VARCHAR, scorecard_label VARCHAR, score VARCHAR, band VARCHAR, coverage DOUBLE, "
    "override_reason VARCHAR, override_author VARCHAR, computed_score DOUBLE"
)


def scores_frame() -> pd.DataFrame:
    """One account's scores, as a snapshot's scores table has them."""
    return pd.DataFrame(
        {
            "account_id": ["a1"],
            "scorecard": ["default"],
            "scorecard_version": ["v1"],
            "scorecard_label": [None],
            "score": [71.5],
            "band": ["healthy"],
            "coverage": [1.0],
            "override_reason": [None],
            "override_author": [None],
            "computed_score": [71.5],
        }
    )


def duckdb_project(root: Path, database: Path) -> Project:
    settings = {"connection": f"duckdb://{database}", "table": "s"}
    return csv_project(root, store={"snapshot_table": settings})


def duckdb_table(database: Path, columns: str, row: str) -> None:
    con = duckdb.connect(str(database))
    try:
        con.execute(f"CREATE TABLE s ({columns})")
        con.execute(f"INSERT INTO s (account_id, as_of, score) VALUES ({row})")
    finally:
        con.close()


def duckdb_state(database: Path) -> tuple[list[tuple[Any, ...]], list[tuple[Any, ...]]]:
    """(name, type) of each column of table `s`, and its rows."""
    con = duckdb.connect(str(database), read_only=True)
    try:
        columns = con.execute(
            "SELECT column_name, data_type FROM information_schema.columns "
            "WHERE table_name = 's' ORDER BY ordinal_position"
        ).fetchall()
        rows = con.execute("SELECT * FROM s ORDER BY account_id").fetchall()
    finally:
        con.close()
    return columns, rows


def settings_of(project: Project) -> Any:
    settings = project.config.store.snapshot_table
    assert settings is not None
    return settings


# DuckDB


def test_duckdb_legacy_wrong_types_rejected(tmp_path: Path) -> None:
    database = tmp_path / "scores.duckdb"
    duckdb_table(database, LEGACY_WRONG_COLUMNS, "'old', 20260501, '50'")
    before = duckdb_state(database)
    project = duckdb_project(tmp_path / "p", database)

    with pytest.raises(SnapshotTableError) as caught:
        write_snapshot_table(project, settings_of(project), AS_OF, scores_frame())

    message = str(caught.value)
    assert message.startswith(f"table 's' in duckdb://{database} has columns of ")
    assert "as_of is INT but must be DATE" in message
    assert "score is VARCHAR but must be DOUBLE" in message
    # The first write after the fix adds the project column, so it is not named.
    assert "has no column" not in message
    assert "The table was not changed." in message
    assert "ALTER TABLE s ALTER COLUMN as_of TYPE DATE" in message
    assert duckdb_state(database) == before


def test_duckdb_project_column_wrong_type(tmp_path: Path) -> None:
    database = tmp_path / "scores.duckdb"
    columns = LEGACY_WRONG_COLUMNS.replace("as_of INTEGER", "as_of DATE").replace(
        "score VARCHAR", "score DOUBLE"
    )
    duckdb_table(
        database,
        columns.replace("coverage DOUBLE", "coverage DECIMAL(5, 2)")
        + ", project INTEGER",
        f"'old', DATE '{EARLIER}', 50",
    )
    before = duckdb_state(database)
    project = duckdb_project(tmp_path / "p", database)

    with pytest.raises(SnapshotTableError) as caught:
        write_snapshot_table(project, settings_of(project), AS_OF, scores_frame())

    message = str(caught.value)
    assert "coverage is DECIMAL(5, 2) but must be DOUBLE" in message
    assert "project is INT but must be VARCHAR" in message
    assert "as_of" not in message
    assert duckdb_state(database) == before


def test_duckdb_missing_and_wrong_columns(tmp_path: Path) -> None:
    database = tmp_path / "scores.duckdb"
    duckdb_table(
        database,
        "account_id VARCHAR, as_of DATE, score BIGINT",
        f"'old', DATE '{EARLIER}', 50",
    )
    before = duckdb_state(database)
    project = duckdb_project(tmp_path / "p", database)

    with pytest.raises(SnapshotTableError) as caught:
        write_snapshot_table(project, settings_of(project), AS_OF, scores_frame())

    message = str(caught.value)
    assert "score is BIGINT but must be DOUBLE" in message
    assert (
        "has no column scorecard, scorecard_version, scorecard_label, band, "
        "coverage, override_reason, override_author, computed_score, project."
    ) in message
    assert "change each column to its type and add the missing columns" in message
    assert duckdb_state(database) == before


def test_score_stops_before_storing(tmp_path: Path) -> None:
    database = tmp_path / "scores.duckdb"
    duckdb_table(database, LEGACY_WRONG_COLUMNS, "'old', 20260501, '50'")
    before = duckdb_state(database)
    project = duckdb_project(tmp_path / "p", database)

    with pytest.raises(SnapshotTableError) as caught:
        score(project, AS_OF, monitor=False)

    assert "as_of is INT but must be DATE" in str(caught.value)
    assert snapshot_store(project).dates() == []
    assert duckdb_state(database) == before


def test_validate_reports_wrong_types(tmp_path: Path) -> None:
    database = tmp_path / "scores.duckdb"
    duckdb_table(database, LEGACY_WRONG_COLUMNS, "'old', 20260501, '50'")
    before = duckdb_state(database)
    project = duckdb_project(tmp_path / "p", database)
    with pytest.raises(SnapshotTableError) as caught:
        write_snapshot_table(project, settings_of(project), AS_OF, scores_frame())

    result = run_cli("validate", "--project", project.root)

    assert result.exit_code == 1
    output = " ".join(result.output.split())
    assert " ".join(str(caught.value).split()) in output
    assert duckdb_state(database) == before


def test_validate_accepts_legacy_table(tmp_path: Path) -> None:
    database = tmp_path / "scores.duckdb"
    columns = LEGACY_WRONG_COLUMNS.replace("as_of INTEGER", "as_of DATE").replace(
        "score VARCHAR", "score DOUBLE"
    )
    duckdb_table(database, columns, f"'old', DATE '{EARLIER}', 50")
    before = duckdb_state(database)
    project = duckdb_project(tmp_path / "p", database)

    result = run_cli("validate", "--project", project.root)

    assert result.exit_code == 0, result.output
    assert "healthscore.yml is valid" in result.output
    # The project column is added by the first write, not by validate.
    assert duckdb_state(database) == before


def test_validate_missing_file_not_created(tmp_path: Path) -> None:
    database = tmp_path / "scores.duckdb"
    project = duckdb_project(tmp_path / "p", database)

    result = run_cli("validate", "--project", project.root)

    assert result.exit_code == 0, result.output
    assert not database.exists()


# PostgreSQL


def pg_execute(*statements: str) -> None:
    import psycopg

    with psycopg.connect(PG_ADMIN, autocommit=True) as connection:
        for statement in statements:
            connection.execute(statement)


def pg_state(schema: str) -> tuple[list[tuple[Any, ...]], list[tuple[Any, ...]]]:
    """(name, type) of each column of table `s` in `schema`, and its rows."""
    import psycopg

    with psycopg.connect(PG_ADMIN) as connection:
        columns = connection.execute(
            "SELECT column_name, data_type FROM information_schema.columns "
            "WHERE table_schema = %s AND table_name = 's' ORDER BY ordinal_position",
            [schema],
        ).fetchall()
        rows = connection.execute(
            f'SELECT * FROM "{schema}".s ORDER BY account_id'
        ).fetchall()
    return columns, rows


def pg_project(root: Path, schema: str) -> Project:
    settings = {"connection": PG_ADMIN, "table": f"{schema}.s"}
    return csv_project(root, store={"snapshot_table": settings})


def test_postgres_legacy_wrong_types_rejected(
    tmp_path: Path, postgres_schema: str
) -> None:
    columns = (
        LEGACY_WRONG_COLUMNS.replace("VARCHAR", "TEXT")
        .replace("DOUBLE", "DOUBLE PRECISION")
        .replace("as_of INTEGER", "as_of TEXT")
        .replace("score TEXT", "score INTEGER")
    )
    pg_execute(
        f'CREATE TABLE "{postgres_schema}".s ({columns})',
        f'INSERT INTO "{postgres_schema}".s (account_id, as_of, score) '
        "VALUES ('old', '2026-05-01', 50)",
    )
    before = pg_state(postgres_schema)
    project = pg_project(tmp_path / "p", postgres_schema)

    with pytest.raises(SnapshotTableError) as caught:
        write_snapshot_table(project, settings_of(project), AS_OF, scores_frame())

    message = str(caught.value)
    assert message.startswith(f"table '{postgres_schema}.s' in postgresql://")
    assert "as_of is TEXT but must be DATE" in message
    assert "score is INT but must be DOUBLE PRECISION" in message
    assert "has no column" not in message
    assert "ALTER COLUMN as_of TYPE DATE USING as_of::DATE" in message
    assert pg_state(postgres_schema) == before

    result = run_cli("validate", "--project", project.root)

    assert result.exit_code == 1
    assert " ".join(message.split()) in " ".join(result.output.split())
    assert pg_state(postgres_schema) == before


def test_postgres_compatible_types_written(
    tmp_path: Path, postgres_schema: str
) -> None:
    # Bounded text columns and a legacy table without the project column work.
    columns = (
        LEGACY_WRONG_COLUMNS.replace("VARCHAR", "VARCHAR(200)")
        .replace("DOUBLE", "DOUBLE PRECISION")
        .replace("as_of INTEGER", "as_of DATE")
        .replace("score VARCHAR(200)", "score DOUBLE PRECISION")
    )
    pg_execute(f'CREATE TABLE "{postgres_schema}".s ({columns})')
    project = pg_project(tmp_path / "p", postgres_schema)

    result = run_cli("validate", "--project", project.root)
    rows = write_snapshot_table(project, settings_of(project), AS_OF, scores_frame())

    assert result.exit_code == 0, result.output
    assert rows == 1
    _, stored = pg_state(postgres_schema)
    assert stored == [
        (
            "a1",
            AS_OF,
            "default",
            "v1",
            None,
            71.5,
            "healthy",
            1.0,
            None,
            None,
            71.5,
            "tables",
        )
    ]


def test_postgres_unbounded_numeric_written(
    tmp_path: Path, postgres_schema: str
) -> None:
    # NUMERIC without precision keeps every digit of a double, so it fits.
    columns = (
        LEGACY_WRONG_COLUMNS.replace("VARCHAR", "TEXT")
        .replace("DOUBLE", "NUMERIC")
        .replace("as_of INTEGER", "as_of DATE")
        .replace("score TEXT", "score NUMERIC")
    )
    pg_execute(f'CREATE TABLE "{postgres_schema}".s ({columns})')
    project = pg_project(tmp_path / "p", postgres_schema)

    result = run_cli("validate", "--project", project.root)
    rows = write_snapshot_table(project, settings_of(project), AS_OF, scores_frame())

    assert result.exit_code == 0, result.output
    assert rows == 1
    _, stored = pg_state(postgres_schema)
    assert float(stored[0][5]) == 71.5
    assert float(stored[0][7]) == 1.0


def test_postgres_bounded_numeric_rejected(
    tmp_path: Path, postgres_schema: str
) -> None:
    columns = (
        LEGACY_WRONG_COLUMNS.replace("VARCHAR", "TEXT")
        .replace("DOUBLE", "DOUBLE PRECISION")
        .replace("as_of INTEGER", "as_of DATE")
        .replace("score TEXT", "score NUMERIC(5, 2)")
    )
    pg_execute(f'CREATE TABLE "{postgres_schema}".s ({columns})')
    before = pg_state(postgres_schema)
    project = pg_project(tmp_path / "p", postgres_schema)

    with pytest.raises(SnapshotTableError) as caught:
        write_snapshot_table(project, settings_of(project), AS_OF, scores_frame())

    assert "score is DECIMAL(5, 2) but must be DOUBLE PRECISION" in str(caught.value)
    assert pg_state(postgres_schema) == before
