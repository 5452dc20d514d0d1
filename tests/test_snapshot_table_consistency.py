"""The snapshot table against the Parquet snapshots: project keys and failed writes.

A renamed project must write replayed dates under its current key on DuckDB and
on Spark alike, and `forget` must change only the rows of that key. A backfill
stopped by a rejected batch must name the dates the table lacks and the command
that writes them. The table is a DuckDB file that each test creates. Spark tests
start one local session (two cores, loopback only, no UI) for the module, and skip
where Java 17 or PySpark is missing.
"""

from __future__ import annotations

import importlib.util
import shutil
from collections.abc import Iterator
from datetime import date
from pathlib import Path
from typing import Any

import duckdb
import pytest
import yaml

from healthscore.config import Project, load_project
from healthscore.monitoring import backfill as backfill_module
from healthscore.monitoring.backfill import BackfillTableError, backfill
from healthscore.pipeline import snapshot_store
from healthscore.privacy import account_subject, forget
from healthscore.store.snapshot_tables import SNAPSHOT_TABLE_SCHEMA

# `pytestmark` gives these tests the warning filters of the other Spark tests.
from test_spark import SPARK_MISSING, pytestmark  # noqa: F401
from test_table_sources import (
    PG_ADMIN,
    csv_project,
    duckdb_table_rows,
    expected_scores,
    run_cli,
)

# Spark binds its driver to the loopback address and starts no UI.
SPARK_CONF = {
    "spark.driver.host": "127.0.0.1",
    "spark.driver.bindAddress": "127.0.0.1",
    "spark.ui.enabled": "false",
    "spark.ui.showConsoleProgress": "false",
    "spark.sql.shuffle.partitions": "2",
}
SPARK_ENGINE = {"kind": "spark", "master": "local[2]", "spark_conf": SPARK_CONF}
# Every date scores a1, a2 and a4 (see the files of test_table_sources).
DATES = [date(2026, 5, 1), date(2026, 5, 15), date(2026, 6, 1)]
ACCOUNTS = ["a1", "a2", "a4"]


@pytest.fixture(scope="module")
def spark_session() -> Iterator[Any]:
    if shutil.which("java") is None or importlib.util.find_spec("pyspark") is None:
        pytest.skip(SPARK_MISSING)
    from pyspark.sql import SparkSession

    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("SPARK_LOCAL_IP", "127.0.0.1")
        builder = SparkSession.builder.master("local[2]").appName("healthscore-tests")
        for key, value in SPARK_CONF.items():
            builder = builder.config(key, value)
        session = builder.getOrCreate()
        session.sparkContext.setLogLevel("ERROR")
        yield session
        session.stop()


@pytest.fixture(params=["duckdb", "spark"])
def engine_kind(request: pytest.FixtureRequest) -> str:
    """Each engine; on Spark, the module's session is active while the test runs."""
    if request.param == "spark":
        request.getfixturevalue("spark_session")
    return str(request.param)


def table_project(
    root: Path, database: Path | str, name: str, engine: str = "duckdb", **table: Any
) -> Project:
    """A project named `name` on `engine` that writes table `s` of `database`, a
    DuckDB file or a PostgreSQL URL.

    It has no pseudonymized columns, which Spark does not compute.
    """
    connection = f"duckdb://{database}" if isinstance(database, Path) else database
    settings = {"connection": connection, "table": "s"} | table
    return csv_project(
        root,
        name=name,
        engine=SPARK_ENGINE if engine == "spark" else "duckdb",
        store={"snapshot_table": settings},
        privacy={},
    )


def rename(project: Project, name: str) -> Project:
    """Change the project's `name` in its file, as an operator does, and reload it."""
    config = yaml.safe_load(project.file.read_text())
    config["name"] = name
    project.file.write_text(yaml.safe_dump(config, sort_keys=False))
    return load_project(project.root)


def rows_by_key(database: Path) -> dict[str, list[tuple[Any, ...]]]:
    """(as_of, account_id, score) of every row of table `s`, by project key."""
    found: dict[str, list[tuple[Any, ...]]] = {}
    for key, as_of, account, score in duckdb_table_rows(database, "s"):
        found.setdefault(key, []).append((as_of, account, score))
    return found


# Replays after a rename


def test_replay_writes_current_key(tmp_path: Path, engine_kind: str) -> None:
    database = tmp_path / "scores.duckdb"
    before = table_project(tmp_path / "p", database, "north-2025", engine_kind)
    backfill(before, DATES)
    old_rows = rows_by_key(database)
    assert list(old_rows) == ["north-2025"]
    assert len(old_rows["north-2025"]) == len(DATES) * len(ACCOUNTS)

    renamed = rename(before, "north")
    result = backfill(renamed, DATES, replay=True)

    assert result.dates == DATES
    rows = rows_by_key(database)
    assert sorted(rows) == ["north", "north-2025"]
    # The kept configuration differs in its name only, so the replayed scores
    # equal the first ones. The rows of the old key stay as they were.
    assert rows["north"] == old_rows["north-2025"]
    assert rows["north-2025"] == old_rows["north-2025"]


def test_replay_writes_project_setting(tmp_path: Path) -> None:
    database = tmp_path / "scores.duckdb"
    before = table_project(tmp_path / "p", database, "north-2025", project="crm")
    backfill(before, DATES[:1])
    renamed = rename(before, "north")

    backfill(renamed, DATES[:1], replay=True)

    assert list(rows_by_key(database)) == ["crm"]
    assert len(rows_by_key(database)["crm"]) == len(ACCOUNTS)


def test_cli_replay_writes_current_key(tmp_path: Path) -> None:
    database = tmp_path / "scores.duckdb"
    before = table_project(tmp_path / "p", database, "north-2025")
    span = ["--from", "2026-05-01", "--to", "2026-06-01", "--every", "1mo"]
    first = run_cli("backfill", "--project", before.root, *span)
    assert first.exit_code == 0, first.output
    rename(before, "north")

    replayed = run_cli("backfill", "--project", before.root, *span, "--replay")

    assert replayed.exit_code == 0, replayed.output
    counts = {key: len(rows) for key, rows in rows_by_key(database).items()}
    assert counts == {"north": 2 * len(ACCOUNTS), "north-2025": 2 * len(ACCOUNTS)}


# forget after a rename


def test_forget_after_rename_keeps_old_key(tmp_path: Path) -> None:
    database = tmp_path / "scores.duckdb"
    before = table_project(tmp_path / "p", database, "north-2025")
    backfill(before, DATES[:2])
    renamed = rename(before, "north")
    backfill(renamed, DATES[2:])
    old_rows = rows_by_key(database)["north-2025"]
    command = ["forget", "--project", renamed.root, "--account", "a2"]

    planned = run_cli(*command, "--dry-run")
    result = run_cli(*command, "--author", "dpo", "--yes")

    assert planned.exit_code == 0, planned.output
    assert "would write again the rows of 1 date" in planned.stdout
    assert result.exit_code == 0, result.output
    assert "wrote again the rows of 1 date, and deleted the account's 1 row" in (
        result.stdout
    )
    warning = " ".join(result.stderr.split())
    assert "left as they are: 'north-2025' (2 rows)" in warning
    rows = rows_by_key(database)
    # The old key's dates are not written under the new key, and keep a2.
    assert rows["north-2025"] == old_rows
    assert [(row[0], row[1]) for row in rows["north"]] == [
        (DATES[2], "a1"),
        (DATES[2], "a4"),
    ]
    assert [row[1] for row in rows["north"]] == [
        row["account_id"] for row in expected_scores(renamed, DATES[2])
    ]


def test_forget_without_own_rows_writes_nothing(tmp_path: Path) -> None:
    database = tmp_path / "scores.duckdb"
    before = table_project(tmp_path / "p", database, "north-2025")
    backfill(before, DATES)
    renamed = rename(before, "north")
    old_rows = rows_by_key(database)

    report = forget(renamed, account_subject("a2"), author="dpo")

    assert report.snapshot_table_dates == []
    assert report.snapshot_table_rows == 0
    assert report.snapshot_table_other_rows == {"north-2025": 3}
    assert sorted(report.snapshot_rows) == [as_of.isoformat() for as_of in DATES]
    assert rows_by_key(database) == old_rows


def test_forget_after_rename_on_postgres(tmp_path: Path, postgres_schema: str) -> None:
    import psycopg

    table = f"{postgres_schema}.s"
    before = table_project(tmp_path / "p", PG_ADMIN, "north-2025", table=table)
    backfill(before, DATES[:2])
    renamed = rename(before, "north")
    backfill(renamed, DATES[2:])

    report = forget(renamed, account_subject("a2"), author="dpo")

    assert report.snapshot_table_dates == [DATES[2].isoformat()]
    assert report.snapshot_table_other_rows == {"north-2025": 2}
    with psycopg.connect(PG_ADMIN) as connection:
        rows = connection.execute(
            f"SELECT project, as_of, account_id FROM {table} ORDER BY 1, 2, 3"
        ).fetchall()
    new_rows = [("north", DATES[2], "a1"), ("north", DATES[2], "a4")]
    old_rows = [
        ("north-2025", as_of, account) for as_of in DATES[:2] for account in ACCOUNTS
    ]
    assert rows == new_rows + old_rows


# A backfill whose table write fails


def strict_table(database: Path, account: str, as_of: date) -> None:
    """Create table `s` with a rule that rejects the row of `account` on `as_of`."""
    columns = ", ".join(
        f"{field.name} "
        + {"string": "VARCHAR", "date32[day]": "DATE", "double": "DOUBLE"}[
            str(field.type)
        ]
        for field in SNAPSHOT_TABLE_SCHEMA
    )
    rule = f"CHECK (account_id <> '{account}' OR as_of <> DATE '{as_of}')"
    con = duckdb.connect(str(database))
    try:
        con.execute(f"CREATE TABLE s ({columns}, {rule})")
    finally:
        con.close()


def relax_table(database: Path) -> None:
    """Copy table `s` into a new table `s` without its CHECK rule."""
    con = duckdb.connect(str(database))
    try:
        con.execute("CREATE TABLE relaxed AS SELECT * FROM s")
        con.execute("DROP TABLE s")
        con.execute("ALTER TABLE relaxed RENAME TO s")
    finally:
        con.close()


def table_dates(database: Path) -> list[date]:
    return sorted({row[1] for row in duckdb_table_rows(database, "s")})


def test_rejected_batch_names_unwritten_dates(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, engine_kind: str
) -> None:
    # One date per batch on DuckDB, as on Spark, so the first date is committed.
    monkeypatch.setattr(backfill_module, "ROWS_PER_BATCH", 1)
    database = tmp_path / "scores.duckdb"
    strict_table(database, "a2", DATES[1])
    project = table_project(tmp_path / "p", database, "north", engine_kind)
    progress: list[int] = []

    with pytest.raises(BackfillTableError) as caught:
        backfill(project, DATES, progress=lambda done, total: progress.append(done))

    error = caught.value
    assert error.stored == DATES[:1]
    assert error.unwritten == DATES[1:]
    assert error.files_only == DATES[1:2]
    message = str(error)
    assert f"writing the scores of {DATES[1]} into table 's'" in message
    assert "keeps its earlier rows of that date" in message
    assert (
        f"The backfill stopped, so the table lacks the new rows of 2 dates from "
        f"{DATES[1]} to {DATES[2]}. The Parquet snapshot of {DATES[1]} is stored, "
        f"and {DATES[2]} was not scored. Both the files and the table have "
        f"{DATES[0]}. Backfill 2 dates from {DATES[1]} to {DATES[2]} again once "
        "the table can be written."
    ) in message
    assert table_dates(database) == DATES[:1]
    assert snapshot_store(project).dates() == DATES[:2]
    assert progress == [1]


def test_cli_rejected_batch_gives_command(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(backfill_module, "ROWS_PER_BATCH", 1)
    database = tmp_path / "scores.duckdb"
    strict_table(database, "a2", DATES[1])
    project = table_project(tmp_path / "p", database, "north")
    span = ["--from", "2026-05-01", "--to", "2026-06-01", "--every", "2w"]
    # 2w from 1 May gives 1 and 15 May and 29 May; --to keeps the last at 29 May.
    dates = [date(2026, 5, 1), date(2026, 5, 15), date(2026, 5, 29)]

    failed = run_cli("backfill", "--project", project.root, *span)

    assert failed.exit_code == 1
    stderr = " ".join(failed.stderr.split())
    command = (
        f"healthscore backfill --project {project.root} --from 2026-05-15 "
        "--to 2026-06-01 --every 2w"
    )
    assert stderr.endswith(f"To do so, run: {command}")
    assert "Traceback" not in failed.output
    assert table_dates(database) == dates[:1]
    assert snapshot_store(project).dates() == dates[:2]

    relax_table(database)
    rerun = run_cli(*command.split()[1:])

    assert rerun.exit_code == 0, rerun.output
    assert "stored 2 snapshots from 2026-05-15 to 2026-05-29" in rerun.stdout
    assert table_dates(database) == dates
    assert snapshot_store(project).dates() == dates
    for as_of in dates:
        rows = [row for row in duckdb_table_rows(database, "s") if row[1] == as_of]
        expected = expected_scores(project, as_of)
        assert [(row[2], row[3]) for row in rows] == [
            (row["account_id"], row["score"]) for row in expected
        ]


def test_cli_rerun_command_keeps_month_days(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(backfill_module, "ROWS_PER_BATCH", 1)
    database = tmp_path / "scores.duckdb"
    # From 31 March, monthly: 31 March, 30 April, 31 May. Started at 30 April,
    # the run would score 30 May instead of 31 May, so --from stays 31 March.
    strict_table(database, "a2", date(2026, 4, 30))
    project = table_project(tmp_path / "p", database, "north")
    span = ["--from", "2026-03-31", "--to", "2026-05-31", "--every", "1mo"]

    failed = run_cli("backfill", "--project", project.root, *span)

    assert failed.exit_code == 1
    stderr = " ".join(failed.stderr.split())
    assert stderr.endswith(
        f"To do so, run: healthscore backfill --project {project.root} "
        "--from 2026-03-31 --to 2026-05-31 --every 1mo"
    )
    assert "lacks the new rows of 2 dates from 2026-04-30 to 2026-05-31" in stderr


def test_scoring_error_reports_stored_batch(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(backfill_module, "ROWS_PER_BATCH", 1)
    database = tmp_path / "scores.duckdb"
    project = table_project(tmp_path / "p", database, "north")
    fail_on_call(monkeypatch, 2, RuntimeError("scoring failed"))
    progress: list[int] = []

    with pytest.raises(RuntimeError, match="scoring failed"):
        backfill(project, DATES, progress=lambda done, total: progress.append(done))

    # The first batch was being written when the second failed to score.
    assert progress == [1]
    assert snapshot_store(project).dates() == DATES[:1]
    assert table_dates(database) == DATES[:1]


def test_write_error_outranks_scoring_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(backfill_module, "ROWS_PER_BATCH", 1)
    database = tmp_path / "scores.duckdb"
    strict_table(database, "a2", DATES[0])
    project = table_project(tmp_path / "p", database, "north")
    fail_on_call(monkeypatch, 2, RuntimeError("scoring failed"))

    with pytest.raises(BackfillTableError) as caught:
        backfill(project, DATES)

    assert caught.value.stored == []
    assert caught.value.files_only == DATES[:1]
    assert caught.value.unwritten == DATES
    assert "Scoring the next batch failed too: RuntimeError: scoring failed." in (
        str(caught.value)
    )
    assert snapshot_store(project).dates() == DATES[:1]
    assert table_dates(database) == []


def fail_on_call(monkeypatch: pytest.MonkeyPatch, call: int, error: Exception) -> None:
    """Make the backfill's `score_dates` raise `error` on its `call`-th call."""
    real = backfill_module.score_dates
    calls = []

    def scoring(*args: Any, **kwargs: Any) -> Any:
        calls.append(1)
        if len(calls) == call:
            raise error
        return real(*args, **kwargs)

    monkeypatch.setattr(backfill_module, "score_dates", scoring)
