"""Warnings about settings and dates that are valid but unlikely to be meant.

A backfill up to a date after today stores snapshots whose windows reach past the
data, as `score --as-of` does, and a PostgreSQL snapshot table with upper-case
letters cannot be queried without quotes. Both still run, with a warning.
"""

from __future__ import annotations

import uuid
from datetime import date, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import psycopg
import yaml
from typer.testing import CliRunner, Result

from healthscore.cli import app
from healthscore.config import load_project
from healthscore.config.databases import snapshot_table_warnings
from healthscore.pipeline import score
from project_factory import ACCOUNTS_CSV, minimal_config, write_project

#: The time zone whose date is furthest ahead of UTC (UTC+14), so that for most of
#: the day its date differs from the date in UTC.
ZONE = "Pacific/Kiritimati"
EVENTS = "account_id,timestamp,event_type\na1,2024-03-01 09:00:00,login\n"
PG_URL = "postgresql://postgres@127.0.0.1:5432/test"


def run(*args: str | Path) -> Result:
    runner = CliRunner(env={"COLUMNS": "200", "NO_COLOR": "1"})
    return runner.invoke(app, [str(arg) for arg in args], prog_name="healthscore")


def project_today() -> date:
    return datetime.now(ZoneInfo(ZONE)).date()


# Backfill up to a date after today


def build(root: Path) -> Path:
    config = minimal_config(timezone=ZONE)
    files = {"accounts.csv": ACCOUNTS_CSV, "events.csv": EVENTS}
    return write_project(root, config, files).root


def backfill(root: Path, start: date, end: date) -> Result:
    return run(
        "backfill", "--project", root, "--from", start.isoformat(), "--to",
        end.isoformat(), "--every", "7d",
    )  # fmt: skip


def test_backfill_to_future_warns(tmp_path: Path) -> None:
    root = build(tmp_path / "p")
    today = project_today()
    last = today + timedelta(days=14)

    result = backfill(root, today - timedelta(days=7), last)

    assert result.exit_code == 0, result.output
    assert "stored 4 snapshots" in result.stdout
    warning = " ".join(result.stderr.split())
    assert warning.startswith(
        f"warning: the as-of date {last.isoformat()} is after today "
        f"({today.isoformat()} in the project time zone {ZONE})."
    )
    assert "windows that reach past today are partly empty" in warning
    assert "becomes the latest stored snapshot" in warning
    assert (
        f"2 dates of the backfill, from {(today + timedelta(days=7)).isoformat()} "
        f"to {last.isoformat()}, are after today."
    ) in warning


def test_backfill_one_future_date_not_counted(tmp_path: Path) -> None:
    root = build(tmp_path / "p")
    today = project_today()

    result = backfill(root, today - timedelta(days=6), today + timedelta(days=1))

    assert result.exit_code == 0, result.output
    warning = " ".join(result.stderr.split())
    assert f"the as-of date {(today + timedelta(days=1)).isoformat()}" in warning
    assert "dates of the backfill" not in warning


def test_backfill_to_today_does_not_warn(tmp_path: Path) -> None:
    root = build(tmp_path / "p")
    today = project_today()

    # --to is after today, but the last date of the 7-day steps is today.
    result = backfill(root, today - timedelta(days=7), today + timedelta(days=3))

    assert result.exit_code == 0, result.output
    assert "stored 2 snapshots" in result.stdout
    assert "after today" not in result.stderr


# Snapshot table names on PostgreSQL


def table_project(root: Path, connection: str, table: str) -> Path:
    config = minimal_config(
        store={"snapshot_table": {"connection": connection, "table": table}}
    )
    files = {"accounts.csv": ACCOUNTS_CSV, "events.csv": EVENTS}
    return write_project(root, config, files).root


def test_upper_case_table_warns(tmp_path: Path) -> None:
    root = table_project(tmp_path, PG_URL, "Reports.MyScores")
    project = load_project(root)
    text = (root / "healthscore.yml").read_text(encoding="utf-8")
    line = text.splitlines().index("    table: Reports.MyScores") + 1

    warnings = snapshot_table_warnings(project)

    assert len(warnings) == 1
    warning = warnings[0]
    assert warning.file == str(root / "healthscore.yml")
    assert warning.key == "store.snapshot_table.table"
    assert warning.line == line
    assert warning.message == (
        "table 'Reports.MyScores' has upper-case letters, which PostgreSQL keeps "
        "because healthscore quotes the name. PostgreSQL folds an unquoted name to "
        "lower case, so SELECT * FROM Reports.MyScores finds no table. Write table: "
        'reports.myscores, or query the table as "Reports"."MyScores", with the '
        "quotes. If schema 'Reports' was created with quotes in that case, lower "
        "the table name only: table: Reports.myscores"
    )


def test_lower_case_or_duckdb_table_does_not_warn(tmp_path: Path) -> None:
    cases = [
        (PG_URL, "reports.my_scores"),
        ("duckdb://scores.duckdb", "MyScores"),
    ]
    for index, (connection, table) in enumerate(cases):
        root = table_project(tmp_path / str(index), connection, table)

        assert snapshot_table_warnings(load_project(root)) == []


def test_suggested_table_name_queried_unquoted(
    tmp_path: Path, postgres_schema: str
) -> None:
    written = f"{postgres_schema}.MyScores"
    root = table_project(tmp_path, PG_URL, written)
    suggested = snapshot_table_warnings(load_project(root))[0].message
    lower = f"{postgres_schema}.myscores"
    assert f"Write table: {lower}," in suggested
    config = yaml.safe_load((root / "healthscore.yml").read_text(encoding="utf-8"))
    config["store"]["snapshot_table"]["table"] = lower
    (root / "healthscore.yml").write_text(yaml.safe_dump(config), encoding="utf-8")
    project = load_project(root)

    score(project, date(2024, 3, 10), monitor=False)

    assert snapshot_table_warnings(project) == []
    with psycopg.connect(PG_URL) as connection:
        rows = connection.execute(f"SELECT count(*) FROM {written}").fetchall()
    assert rows == [(3,)]


def test_validate_prints_table_name_warning(tmp_path: Path) -> None:
    root = table_project(tmp_path, PG_URL, "Reports.MyScores")

    result = CliRunner().invoke(app, ["validate", "--project", str(root)])

    # The schema "Reports" does not exist, and the warning comes before that error.
    assert result.exit_code == 1, result.output
    warning = " ".join(result.stderr.split())
    assert warning.startswith(f"warning: {root / 'healthscore.yml'}:"), warning
    assert "error: store.snapshot_table.table: schema 'Reports'" in warning
    assert (
        "store.snapshot_table.table: table 'Reports.MyScores' has upper-case letters"
        in warning
    )
    assert "Write table: reports.myscores," in warning


def test_quoted_schema_suggestion_written(tmp_path: Path) -> None:
    schema = f"HsMixed{uuid.uuid4().hex[:8]}"
    with psycopg.connect(PG_URL, autocommit=True) as connection:
        connection.execute(f'CREATE SCHEMA "{schema}"')
    try:
        root = table_project(tmp_path, PG_URL, f"{schema}.MyScores")
        suggested = snapshot_table_warnings(load_project(root))[0].message
        assert suggested.endswith(f"table: {schema}.myscores")
        config = yaml.safe_load((root / "healthscore.yml").read_text(encoding="utf-8"))
        config["store"]["snapshot_table"]["table"] = f"{schema}.myscores"
        (root / "healthscore.yml").write_text(yaml.safe_dump(config), encoding="utf-8")

        score(load_project(root), date(2024, 3, 10), monitor=False)

        with psycopg.connect(PG_URL) as connection:
            rows = connection.execute(
                f'SELECT count(*) FROM "{schema}".myscores'
            ).fetchone()
        assert rows == (3,)
    finally:
        with psycopg.connect(PG_URL, autocommit=True) as connection:
            connection.execute(f'DROP SCHEMA "{schema}" CASCADE')


def test_upper_case_schema_alone_does_not_warn(tmp_path: Path) -> None:
    root = table_project(tmp_path, PG_URL, "Reports.scores")

    assert snapshot_table_warnings(load_project(root)) == []
