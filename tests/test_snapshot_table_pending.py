"""Dates whose Parquet snapshot is stored but whose rows the snapshot table lacks.

`score` and `backfill` mark their dates in the snapshot folder before they store
the snapshots, and clear the marks once the table has the rows. A run killed in
between, or whose table write failed, leaves the marks, and the next `score` or
`backfill` writes those dates from their snapshots. Snapshots stored before the
table was configured carry no mark, so they are not written. The kill is a real
SIGKILL of a run in a child process, sent when a table write starts. The table is a
DuckDB file, or a new PostgreSQL schema on 127.0.0.1:5432 where that server is
reachable.
"""

from __future__ import annotations

import json
import logging
import signal
import subprocess
import sys
from datetime import date
from pathlib import Path
from typing import Any

import pytest

from healthscore.config import Project
from healthscore.monitoring import backfill as backfill_module
from healthscore.monitoring.backfill import BackfillTableError, backfill
from healthscore.pipeline import score, snapshot_store
from healthscore.store.snapshot_tables import (
    PendingWrite,
    SnapshotTableWriter,
    write_run,
)
from healthscore.store.snapshots import SnapshotStore
from test_snapshot_table_consistency import (
    ACCOUNTS,
    DATES,
    relax_table,
    strict_table,
    table_dates,
    table_project,
)
from test_table_sources import PG_ADMIN, csv_project, expected_scores, run_cli

#: A date outside DATES that also scores a1, a2 and a4.
LATER = date(2026, 6, 15)

#: Runs a backfill of one date per batch, or a scoring run of one date, and kills
#: its own process with SIGKILL when the table write number argv[2] starts.
#: Arguments: project folder, write number, then the ISO dates.
KILL_SCRIPT = """
import os
import signal
import sys
from datetime import date

from healthscore.config import load_project
from healthscore.monitoring import backfill as backfill_module
from healthscore.pipeline import score
from healthscore.store.snapshot_tables import SnapshotTableWriter

real_write = SnapshotTableWriter.write
calls = []


def write(self, scores):
    calls.append(len(scores))
    if len(calls) == int(sys.argv[2]):
        os.kill(os.getpid(), signal.SIGKILL)
    return real_write(self, scores)


SnapshotTableWriter.write = write
backfill_module.ROWS_PER_BATCH = 1
project = load_project(sys.argv[1])
dates = [date.fromisoformat(day) for day in sys.argv[3:]]
if len(dates) == 1:
    score(project, dates[0], monitor=False)
else:
    backfill_module.backfill(project, dates)
"""


def killed_backfill(project: Project, dates: list[date], write: int) -> None:
    """Run a backfill of `dates`, or a scoring run of one date, in a child process
    that is killed with SIGKILL when its table write number `write` starts."""
    arguments = [str(project.root), str(write), *(day.isoformat() for day in dates)]
    child = subprocess.run(
        [sys.executable, "-c", KILL_SCRIPT, *arguments],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert child.returncode == -signal.SIGKILL, child.stderr


def rows_of(database: Path, as_of: date) -> list[tuple[Any, ...]]:
    """(account_id, score, project) of the rows of `as_of` in table `s`."""
    import duckdb

    con = duckdb.connect(str(database), read_only=True)
    try:
        return con.execute(
            "SELECT account_id, score, project FROM s WHERE as_of = ? "
            "ORDER BY account_id",
            [as_of],
        ).fetchall()
    finally:
        con.close()


def stored_rows(project: Project, as_of: date) -> list[tuple[Any, ...]]:
    """(account_id, score, project) of the Parquet snapshot's scores of `as_of`."""
    return [
        (row["account_id"], row["score"], row["project"])
        for row in expected_scores(project, as_of)
    ]


def pending_warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [
        " ".join(record.getMessage().split())
        for record in caplog.records
        if record.levelno == logging.WARNING and "Parquet snapshots" in record.message
    ]


# Marks in the snapshot store


def test_store_marks_and_clears_dates(tmp_path: Path) -> None:
    store = SnapshotStore(tmp_path / "snapshots")
    assert store.table_pending() == []

    store.mark_table_pending([DATES[2], DATES[0]])
    store.mark_table_pending([DATES[0]])

    assert store.table_pending() == [DATES[0], DATES[2]]
    # The marks are not snapshots.
    assert store.dates() == []
    store.clear_table_pending([DATES[0], DATES[1]])
    assert store.table_pending() == [DATES[2]]
    assert SnapshotStore(store.folder).table_pending() == [DATES[2]]


# A killed backfill


def test_killed_backfill_leaves_marked_date(tmp_path: Path) -> None:
    database = tmp_path / "scores.duckdb"
    project = table_project(tmp_path / "p", database, "north")

    killed_backfill(project, DATES, write=2)

    store = snapshot_store(project)
    # The first batch is in both stores. The second is stored as Parquet only,
    # and the third was not scored.
    assert table_dates(database) == DATES[:1]
    assert store.dates() == DATES[:2]
    assert store.table_pending() == [DATES[1]]


def test_next_backfill_writes_killed_batch(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    database = tmp_path / "scores.duckdb"
    project = table_project(tmp_path / "p", database, "north")
    killed_backfill(project, DATES[:2], write=2)

    with caplog.at_level(logging.WARNING, logger="healthscore"):
        result = backfill(project, [LATER])

    assert result.dates == [LATER]
    assert result.pending == PendingWrite(written=(DATES[1],), rows=len(ACCOUNTS))
    assert table_dates(database) == [DATES[0], DATES[1], LATER]
    assert rows_of(database, DATES[1]) == stored_rows(project, DATES[1])
    assert len(rows_of(database, DATES[1])) == len(ACCOUNTS)
    assert snapshot_store(project).table_pending() == []
    warnings = pending_warnings(caplog)
    assert warnings == [
        f"a run stored the Parquet snapshots of {DATES[1]} and stopped before it "
        f"wrote their rows into table 's' of duckdb://{database}, or its write "
        "failed; wrote the 3 rows of those snapshots now"
    ]


def test_cli_backfill_reports_written_dates(tmp_path: Path) -> None:
    database = tmp_path / "scores.duckdb"
    project = table_project(tmp_path / "p", database, "north")
    killed_backfill(project, DATES[:2], write=2)
    day = LATER.isoformat()

    result = run_cli(
        "backfill", "--project", project.root, "--from", day, "--to", day, "--json"
    )

    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["dates"] == [day]
    assert report["snapshot_table"]["rows"] == len(ACCOUNTS)
    assert report["snapshot_table"]["pending_dates"] == {
        "written": [DATES[1].isoformat()],
        "rows": len(ACCOUNTS),
        "unwritten": [],
        "error": None,
    }
    stderr = " ".join(result.stderr.split())
    assert f"a run stored the Parquet snapshots of {DATES[1]} and stopped" in stderr
    assert "wrote the 3 rows of those snapshots now" in stderr
    assert table_dates(database) == [DATES[0], DATES[1], LATER]


def test_backfill_of_marked_date_rescores_it(tmp_path: Path) -> None:
    database = tmp_path / "scores.duckdb"
    project = table_project(tmp_path / "p", database, "north")
    killed_backfill(project, DATES, write=2)

    result = backfill(project, DATES[1:])

    # The marked date is in the range, so it is written with its new scores.
    assert result.pending == PendingWrite()
    assert table_dates(database) == DATES
    assert rows_of(database, DATES[1]) == stored_rows(project, DATES[1])
    assert snapshot_store(project).table_pending() == []


def test_killed_backfill_on_postgres(tmp_path: Path, postgres_schema: str) -> None:
    import psycopg

    table = f"{postgres_schema}.s"
    project = table_project(tmp_path / "p", PG_ADMIN, "north", table=table)
    killed_backfill(project, DATES[:2], write=2)

    def rows(as_of: date) -> list[tuple[Any, ...]]:
        with psycopg.connect(PG_ADMIN) as connection:
            return connection.execute(
                f"SELECT account_id, score, project FROM {table} WHERE as_of = %s "
                "ORDER BY account_id",
                [as_of],
            ).fetchall()

    assert rows(DATES[1]) == []

    result = backfill(project, [LATER])

    assert result.pending == PendingWrite(written=(DATES[1],), rows=len(ACCOUNTS))
    assert rows(DATES[1]) == stored_rows(project, DATES[1])
    assert len(rows(LATER)) == len(ACCOUNTS)
    assert snapshot_store(project).table_pending() == []


# A failed table write


def test_failed_batch_written_by_next_backfill(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(backfill_module, "ROWS_PER_BATCH", 1)
    database = tmp_path / "scores.duckdb"
    strict_table(database, "a2", DATES[1])
    project = table_project(tmp_path / "p", database, "north")
    with pytest.raises(BackfillTableError):
        backfill(project, DATES[:2])
    assert snapshot_store(project).table_pending() == [DATES[1]]

    # The table still rejects the date's rows: the backfill warns and goes on.
    with caplog.at_level(logging.WARNING, logger="healthscore"):
        blocked = backfill(project, [LATER])

    assert blocked.dates == [LATER]
    assert blocked.pending is not None
    assert blocked.pending.written == ()
    assert blocked.pending.unwritten == (DATES[1],)
    assert blocked.pending.error is not None
    assert "Constraint Error" in blocked.pending.error
    assert table_dates(database) == [DATES[0], LATER]
    assert snapshot_store(project).table_pending() == [DATES[1]]
    (warning,) = pending_warnings(caplog)
    assert f"the Parquet snapshots of {DATES[1]} and stopped" in warning
    assert "writing them now failed too: writing the scores of" in warning
    assert (
        "the next `healthscore score` or `healthscore backfill` of this project "
        "writes them"
    ) in warning

    relax_table(database)
    repaired = backfill(project, [date(2026, 6, 22)])

    assert repaired.pending == PendingWrite(written=(DATES[1],), rows=len(ACCOUNTS))
    assert rows_of(database, DATES[1]) == stored_rows(project, DATES[1])
    assert snapshot_store(project).table_pending() == []


# Dates that need no rows


def test_unmarked_snapshots_not_written(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Snapshots stored before the table was configured have no mark.
    plain = csv_project(tmp_path / "p", privacy={})
    backfill(plain, DATES[:2])
    database = tmp_path / "scores.duckdb"
    project = table_project(tmp_path / "p", database, "north")
    reads: list[date] = []
    real_read = SnapshotStore.read

    def read(store: SnapshotStore, as_of: date, table: str) -> Any:
        reads.append(as_of)
        return real_read(store, as_of, table)

    monkeypatch.setattr(SnapshotStore, "read", read)

    result = backfill(project, DATES[2:])

    assert result.pending == PendingWrite()
    assert reads == []
    assert table_dates(database) == DATES[2:]


def test_marked_date_without_snapshot_cleared(tmp_path: Path) -> None:
    database = tmp_path / "scores.duckdb"
    project = table_project(tmp_path / "p", database, "north")
    store = snapshot_store(project)
    # Marked by a run killed before its snapshots were stored.
    store.mark_table_pending([DATES[0]])

    result = backfill(project, [LATER])

    assert result.pending == PendingWrite()
    assert store.table_pending() == []
    assert table_dates(database) == [LATER]


def test_mark_of_running_process_left_alone(tmp_path: Path) -> None:
    database = tmp_path / "scores.duckdb"
    project = table_project(tmp_path / "p", database, "north")
    store = snapshot_store(project)
    # Another run on this host marked a date and is still storing its snapshot.
    running = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys\n"
            "from datetime import date\n"
            "from healthscore.store.snapshots import SnapshotStore\n"
            "SnapshotStore(sys.argv[1]).mark_table_pending([date.fromisoformat(sys.argv[2])])\n"
            "print('marked', flush=True)\n"
            "sys.stdin.read()\n",
            str(store.folder),
            DATES[0].isoformat(),
        ],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert running.stdout is not None
        assert running.stdout.readline() == "marked\n"

        first = backfill(project, [LATER])

        assert first.pending == PendingWrite()
        assert store.table_pending() == [DATES[0]]
    finally:
        running.communicate("")
    # Once that run has ended, its mark is one left behind.
    backfill(project, [DATES[1]])

    assert store.table_pending() == []
    assert table_dates(database) == [DATES[1], LATER]


def test_marked_empty_snapshot_cleared(tmp_path: Path) -> None:
    database = tmp_path / "scores.duckdb"
    project = table_project(tmp_path / "p", database, "north")
    # No account has a subscription yet, so the snapshot has no scores.
    empty = date(2024, 6, 1)
    killed_backfill(project, [empty, DATES[0]], write=1)
    store = snapshot_store(project)
    assert store.table_pending() == [empty]
    assert len(store.read(empty, "scores")) == 0

    result = backfill(project, [LATER])

    assert result.pending == PendingWrite(written=(empty,), rows=0)
    assert store.table_pending() == []
    assert table_dates(database) == [LATER]


# A scoring run


def test_killed_score_written_by_next_score(tmp_path: Path) -> None:
    database = tmp_path / "scores.duckdb"
    project = table_project(tmp_path / "p", database, "north")

    killed_backfill(project, [DATES[0]], write=1)

    store = snapshot_store(project)
    assert store.dates() == [DATES[0]]
    assert store.table_pending() == [DATES[0]]
    # The run was killed before its first write created the table's file.
    assert not database.exists()

    result = run_cli(
        "score", "--project", project.root, "--as-of", DATES[1].isoformat(), "--json"
    )

    assert result.exit_code == 0, result.output
    written = json.loads(result.stdout)["snapshot_table"]
    assert written["rows"] == len(ACCOUNTS)
    assert written["pending_dates"] == {
        "written": [DATES[0].isoformat()],
        "rows": len(ACCOUNTS),
        "unwritten": [],
        "error": None,
    }
    stderr = " ".join(result.stderr.split())
    assert f"a run stored the Parquet snapshots of {DATES[0]} and stopped" in stderr
    assert table_dates(database) == DATES[:2]
    assert rows_of(database, DATES[0]) == stored_rows(project, DATES[0])
    assert store.table_pending() == []


def test_killed_backfill_written_by_score(tmp_path: Path) -> None:
    database = tmp_path / "scores.duckdb"
    project = table_project(tmp_path / "p", database, "north")
    killed_backfill(project, DATES[:2], write=2)

    run = score(project, LATER, monitor=False)

    assert run.snapshot_table is not None
    assert run.snapshot_table.pending == PendingWrite(
        written=(DATES[1],), rows=len(ACCOUNTS)
    )
    assert table_dates(database) == [DATES[0], DATES[1], LATER]
    assert rows_of(database, DATES[1]) == stored_rows(project, DATES[1])
    assert snapshot_store(project).table_pending() == []


# A scoring run's write


def test_write_run_writes_pending_dates(tmp_path: Path) -> None:
    database = tmp_path / "scores.duckdb"
    project = table_project(tmp_path / "p", database, "north")
    killed_backfill(project, DATES, write=2)
    store = snapshot_store(project)
    settings = project.config.store.snapshot_table
    assert settings is not None
    # A scoring run of DATES[0] marks its date and stores its snapshot first.
    store.mark_table_pending([DATES[0]])
    scores = store.read(DATES[0], "scores")

    written = write_run(project, settings, store, DATES[0], scores)

    assert written.rows == len(ACCOUNTS)
    assert written.pending == PendingWrite(written=(DATES[1],), rows=len(ACCOUNTS))
    assert table_dates(database) == DATES[:2]
    assert rows_of(database, DATES[1]) == stored_rows(project, DATES[1])
    assert store.table_pending() == []


def test_write_pending_in_bounded_transactions(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    database = tmp_path / "scores.duckdb"
    project = table_project(tmp_path / "p", database, "north")
    backfill(project, DATES)
    store = snapshot_store(project)
    store.mark_table_pending(DATES)
    settings = project.config.store.snapshot_table
    assert settings is not None
    # Two dates of three rows reach the bound, so the third is a second write.
    monkeypatch.setattr(
        "healthscore.store.snapshot_tables.PENDING_ROWS_PER_WRITE", 2 * len(ACCOUNTS)
    )
    writes: list[list[date]] = []
    real_write = SnapshotTableWriter.write

    def write(writer: SnapshotTableWriter, scores: Any) -> int:
        writes.append([as_of for as_of, _ in scores])
        return real_write(writer, scores)

    monkeypatch.setattr(SnapshotTableWriter, "write", write)

    with SnapshotTableWriter(project, settings) as writer:
        result = writer.write_pending(store)

    assert writes == [DATES[:2], DATES[2:]]
    assert result == PendingWrite(written=tuple(DATES), rows=3 * len(ACCOUNTS))
    assert store.table_pending() == []
    for as_of in DATES:
        assert rows_of(database, as_of) == stored_rows(project, as_of)
