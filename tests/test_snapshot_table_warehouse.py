"""One DuckDB file as both the table sources and the snapshot table.

The sources attach the file read-only to the engine's connection, and DuckDB lets
one process open a file in a second database only when neither writes to it. The
snapshot table must still be written, by `score`, by `backfill` with and without an
open engine, and by the CLI. The engine must read its sources after each write, and
a failed write must leave the table's rows as they were.
"""

from __future__ import annotations

from datetime import date
from pathlib import Path

import duckdb
import pandas as pd
import pyarrow as pa
import pytest

from healthscore.config import Project
from healthscore.engine import Engine
from healthscore.monitoring.backfill import backfill
from healthscore.pipeline import open_engine, score, snapshot_store
from healthscore.store.snapshot_tables import (
    SNAPSHOT_TABLE_SCHEMA,
    SnapshotTableError,
    SnapshotTableWriter,
)

# `pseudonymization_key` sets the key of the projects' pseudonymized columns.
from test_table_sources import (  # noqa: F401
    duckdb_file,
    duckdb_project,
    duckdb_rows,
    expected_scores,
    pseudonymization_key,
    run_cli,
)

AS_OF = date(2026, 6, 1)
EARLIER = date(2026, 5, 15)


def warehouse_project(tmp_path: Path, table: str = "health_scores") -> Project:
    """A project whose sources and snapshot table are in one DuckDB file."""
    database = duckdb_file(tmp_path / "warehouse.duckdb", tmp_path)
    snapshot_table = {"connection": f"duckdb://{database}", "table": table}
    return duckdb_project(
        tmp_path / "p", database, store={"snapshot_table": snapshot_table}
    )


def warehouse(project: Project) -> Path:
    settings = project.config.store.snapshot_table
    assert settings is not None
    return Path(settings.connection.removeprefix("duckdb://"))


def attachments(engine: Engine) -> list[tuple[str, bool]]:
    """(alias, read_only) of each file attached to the engine's connection."""
    rows = engine.con.con.execute(
        "SELECT database_name, readonly FROM duckdb_databases() WHERE path IS NOT NULL"
    ).fetchall()
    return [(str(alias), bool(read_only)) for alias, read_only in rows]


def test_score_writes_table_of_source_file(tmp_path: Path) -> None:
    project = warehouse_project(tmp_path)
    engine = open_engine(project)
    attached = attachments(engine)
    assert [read_only for _, read_only in attached] == [True]

    score(project, EARLIER, engine=engine, monitor=False)
    # The same engine reads its sources again after the write.
    score(project, AS_OF, engine=engine, monitor=False)

    for as_of in (EARLIER, AS_OF):
        rows = duckdb_rows(warehouse(project), "health_scores", as_of)
        assert len(rows) == 3, as_of
        assert rows == expected_scores(project, as_of), as_of
    assert attachments(engine) == attached


def test_two_engines_read_after_write(tmp_path: Path) -> None:
    # Both engines attach the file read-only; the write detaches it from both.
    project = warehouse_project(tmp_path)
    first = open_engine(project)
    second = open_engine(project)

    score(project, AS_OF, engine=first, monitor=False)
    again = score(project, AS_OF, engine=second, store=False)

    rows = duckdb_rows(warehouse(project), "health_scores", AS_OF)
    assert rows == expected_scores(project, AS_OF)
    assert len(again.result.scores) == len(rows)
    for engine in (first, second):
        assert [read_only for _, read_only in attachments(engine)] == [True]


def test_score_without_engine_writes_table(tmp_path: Path) -> None:
    project = warehouse_project(tmp_path, table="crm.health_scores")
    run = score(project, AS_OF, monitor=False)
    rows = duckdb_rows(warehouse(project), "crm.health_scores", AS_OF)
    assert rows == expected_scores(project, AS_OF)
    assert len(rows) == len(run.result.scores)


def test_backfill_without_engine_writes_table(tmp_path: Path) -> None:
    # The writer checks the table before the engine attaches the file.
    project = warehouse_project(tmp_path)
    result = backfill(project, [EARLIER, AS_OF])
    assert result.dates == [EARLIER, AS_OF]
    for as_of in (EARLIER, AS_OF):
        rows = duckdb_rows(warehouse(project), "health_scores", as_of)
        assert rows == expected_scores(project, as_of), as_of


def test_backfill_with_engine_writes_table(tmp_path: Path) -> None:
    project = warehouse_project(tmp_path)
    engine = open_engine(project)
    backfill(project, [EARLIER, AS_OF], engine=engine)
    for as_of in (EARLIER, AS_OF):
        rows = duckdb_rows(warehouse(project), "health_scores", as_of)
        assert rows == expected_scores(project, as_of), as_of
    assert [read_only for _, read_only in attachments(engine)] == [True]


def test_cli_score_and_backfill_write_table(tmp_path: Path) -> None:
    project = warehouse_project(tmp_path)
    scored = run_cli("score", "--project", project.root, "--as-of", AS_OF.isoformat())
    assert scored.exit_code == 0, scored.output
    filled = run_cli(
        "backfill",
        "--project",
        project.root,
        "--from",
        "2026-05-18",
        "--to",
        AS_OF.isoformat(),
        "--every",
        "7d",
    )
    assert filled.exit_code == 0, filled.output
    for as_of in (date(2026, 5, 18), date(2026, 5, 25), AS_OF):
        rows = duckdb_rows(warehouse(project), "health_scores", as_of)
        assert rows == expected_scores(project, as_of), as_of


def test_failed_write_keeps_rows_and_sources(tmp_path: Path) -> None:
    project = warehouse_project(tmp_path)
    database = warehouse(project)
    # The new row of a2 on AS_OF breaks this rule, after both dates were deleted.
    types = {pa.string(): "VARCHAR", pa.date32(): "DATE", pa.float64(): "DOUBLE"}
    columns = ", ".join(
        f"{field.name} {types[field.type]}" for field in SNAPSHOT_TABLE_SCHEMA
    )
    con = duckdb.connect(str(database))
    try:
        con.execute(
            f"CREATE TABLE health_scores ({columns}, CHECK (account_id <> 'a2' OR "
            f"as_of <> DATE '{AS_OF}' OR score IS NULL OR score <> 1.0))"
        )
    finally:
        con.close()
    engine = open_engine(project)
    score(project, EARLIER, engine=engine, monitor=False)
    score(project, AS_OF, engine=engine, monitor=False)
    before = {
        as_of: duckdb_rows(database, "health_scores", as_of)
        for as_of in (EARLIER, AS_OF)
    }
    assert before[AS_OF] == expected_scores(project, AS_OF)
    changed = snapshot_store(project).read(AS_OF, "scores").assign(score=1.0)
    settings = project.config.store.snapshot_table
    assert settings is not None

    with (
        SnapshotTableWriter(project, settings) as writer,
        pytest.raises(SnapshotTableError) as caught,
    ):
        writer.write([(EARLIER, changed), (AS_OF, changed)])

    assert "keeps its earlier rows of those dates" in str(caught.value)
    for as_of in (EARLIER, AS_OF):
        assert duckdb_rows(database, "health_scores", as_of) == before[as_of], as_of
    assert [read_only for _, read_only in attachments(engine)] == [True]
    rerun = score(project, AS_OF, engine=engine, monitor=False)
    pd.testing.assert_frame_equal(
        rerun.result.scores.reset_index(drop=True),
        snapshot_store(project).read(AS_OF, "scores").reset_index(drop=True),
        check_dtype=False,
    )
