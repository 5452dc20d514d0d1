"""What `score` and `backfill` report about the snapshot table, and table names.

Each command prints one line with the table and the rows it wrote, and its --json
output has the same facts, so a user sees the write without -v. A mixed-case table
name on PostgreSQL is created quoted, and the warning shows the quoted name that
finds it. PostgreSQL tests use a new schema per test on the server at
127.0.0.1:5432 and skip where it is not reachable.
"""

from __future__ import annotations

import json
import logging
from datetime import date
from pathlib import Path
from typing import Any

import duckdb
import pytest

from healthscore.config import Project
from healthscore.pipeline import score

# `pseudonymization_key` sets the key of the projects' pseudonymized columns.
from test_table_sources import (  # noqa: F401
    PG_ADMIN,
    csv_project,
    pseudonymization_key,
    run_cli,
)

AS_OF = date(2026, 6, 1)
#: Dates of `backfill --from 2026-05-18 --to 2026-06-01 --every 7d`.
BACKFILL_DATES = [date(2026, 5, 18), date(2026, 5, 25), AS_OF]
#: `pending_dates` of a run that found no date left pending by an earlier run.
NO_PENDING_DATES = {"written": [], "rows": 0, "unwritten": [], "error": None}


def table_project(root: Path) -> tuple[Project, Path]:
    database = root / "scores.duckdb"
    settings = {"connection": f"duckdb://{database}", "table": "health_scores"}
    return csv_project(root / "p", store={"snapshot_table": settings}), database


def count_rows(database: Path) -> dict[date, int]:
    con = duckdb.connect(str(database), read_only=True)
    try:
        rows = con.execute(
            "SELECT as_of, count(*) FROM health_scores GROUP BY as_of"
        ).fetchall()
    finally:
        con.close()
    return {as_of: int(count) for as_of, count in rows}


def one_line(text: str) -> str:
    return " ".join(text.split())


def test_score_prints_table_rows(tmp_path: Path) -> None:
    project, database = table_project(tmp_path)
    result = run_cli("score", "--project", project.root, "--as-of", AS_OF.isoformat())
    assert result.exit_code == 0, result.output
    # The sample scores a1, a2 and a4 on that date.
    assert count_rows(database) == {AS_OF: 3}
    assert (
        f"Wrote 3 rows of {AS_OF} into table health_scores of duckdb://{database}."
        in one_line(result.stdout)
    )


def test_score_json_has_table_rows(tmp_path: Path) -> None:
    project, database = table_project(tmp_path)
    result = run_cli(
        "score", "--project", project.root, "--as-of", AS_OF.isoformat(), "--json"
    )
    assert result.exit_code == 0, result.output
    report: dict[str, Any] = json.loads(result.stdout)
    assert report["snapshot_table"] == {
        "table": "health_scores",
        "connection": f"duckdb://{database}",
        "rows": 3,
        "pending_dates": NO_PENDING_DATES,
    }


def test_score_without_table_write(tmp_path: Path) -> None:
    project, database = table_project(tmp_path)
    arguments = ("score", "--project", project.root, "--as-of", AS_OF.isoformat())
    result = run_cli(*arguments, "--no-store", "--json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["snapshot_table"] is None
    printed = run_cli(*arguments, "--no-store")
    assert printed.exit_code == 0, printed.output
    assert "into table" not in printed.stdout
    assert not database.exists()

    plain = csv_project(tmp_path / "plain")
    result = run_cli(
        "score", "--project", plain.root, "--as-of", AS_OF.isoformat(), "--json"
    )
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["snapshot_table"] is None


def test_backfill_prints_table_rows(tmp_path: Path) -> None:
    project, database = table_project(tmp_path)
    arguments = (
        "backfill",
        "--project",
        project.root,
        "--from",
        BACKFILL_DATES[0].isoformat(),
        "--to",
        AS_OF.isoformat(),
        "--every",
        "7d",
    )
    result = run_cli(*arguments, "--json")
    assert result.exit_code == 0, result.output
    counts = count_rows(database)
    assert sorted(counts) == BACKFILL_DATES
    assert all(count > 0 for count in counts.values())
    rows = sum(counts.values())
    report: dict[str, Any] = json.loads(result.stdout)
    assert report["snapshot_table"] == {
        "table": "health_scores",
        "connection": f"duckdb://{database}",
        "rows": rows,
        "pending_dates": NO_PENDING_DATES,
    }
    assert sum(report["accounts"].values()) == rows

    printed = run_cli(*arguments)
    assert printed.exit_code == 0, printed.output
    assert (
        f"Wrote {rows} rows of 3 dates into table health_scores of "
        f"duckdb://{database}." in one_line(printed.stdout)
    )
    assert count_rows(database) == counts


def test_mixed_case_table_warns_quoted_name(
    tmp_path: Path, postgres_schema: str, caplog: pytest.LogCaptureFixture
) -> None:
    import psycopg

    settings = {"connection": PG_ADMIN, "table": f"{postgres_schema}.MyScores"}
    project = csv_project(tmp_path, store={"snapshot_table": settings})
    with caplog.at_level(logging.WARNING, logger="healthscore"):
        score(project, AS_OF, monitor=False)
        score(project, AS_OF, monitor=False)

    quoted = f'"{postgres_schema}"."MyScores"'
    warnings = [
        record.getMessage()
        for record in caplog.records
        if record.levelno == logging.WARNING and "MyScores" in record.getMessage()
    ]
    # Only the run that creates the table warns.
    assert len(warnings) == 1, warnings
    assert f"query it as {quoted}" in warnings[0]
    with psycopg.connect(PG_ADMIN) as connection:
        found = connection.execute(f"SELECT count(*) FROM {quoted}").fetchall()
        assert found == [(3,)]
    with (
        psycopg.connect(PG_ADMIN) as connection,
        pytest.raises(psycopg.errors.UndefinedTable),
    ):
        connection.execute(f"SELECT count(*) FROM {postgres_schema}.MyScores")
