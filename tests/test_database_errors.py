"""Errors of table sources and snapshot tables that name the cause and the fix.

A server that accepts connections and never responds, a PostgreSQL `money` column,
a DuckDB file locked by another process and a quoted table name each get a message
that names the source or setting and what to do.
"""

from __future__ import annotations

import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from datetime import date
from pathlib import Path

import pandas as pd
import pytest

from healthscore.config import Project
from healthscore.pipeline import open_engine
from healthscore.sources import SourceError
from healthscore.sources.tables import check_table_sources
from healthscore.store.snapshot_tables import (
    SnapshotTableError,
    SnapshotTableWriter,
    check_snapshot_table,
)

# `pseudonymization_key` sets the key of the projects' pseudonymized columns, and
# `pg_schema` loads the project's rows into a new PostgreSQL schema.
from test_table_sources import (  # noqa: F401
    PG_ADMIN,
    PG_SOURCE,
    csv_project,
    pg_schema,
    pseudonymization_key,
    run_cli,
    write_project,
)

AS_OF = date(2026, 6, 1)
SOURCES = ("accounts", "subscriptions", "events")


@pytest.fixture
def silent_server() -> Iterator[int]:
    """Port of a TCP server on 127.0.0.1 that accepts connections and never responds."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(16)
    accepted: list[socket.socket] = []
    stopped = threading.Event()

    def accept() -> None:
        listener.settimeout(0.1)
        while not stopped.is_set():
            try:
                connection, _ = listener.accept()
            except TimeoutError:
                continue
            accepted.append(connection)

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    try:
        yield int(listener.getsockname()[1])
    finally:
        stopped.set()
        thread.join()
        for connection in accepted:
            connection.close()
        listener.close()


def silent_project(root: Path, port: int) -> Project:
    connection = f"postgresql://postgres@127.0.0.1:{port}/test?connect_timeout=1"
    locations = {
        name: {"table": f"crm.{name}", "connection": connection} for name in SOURCES
    }
    return write_project(root, locations)


def test_silent_server_waits_once(tmp_path: Path, silent_server: int) -> None:
    project = silent_project(tmp_path, silent_server)

    started = time.monotonic()
    with pytest.raises(SourceError) as caught:
        open_engine(project)
    elapsed = time.monotonic() - started

    # One timeout of 1 s, not one per source.
    assert elapsed < 2.5
    message = str(caught.value)
    display = f"postgresql://postgres@127.0.0.1:{silent_server}/test"
    assert (
        f"source 'accounts': cannot connect to {display} to read table "
        "'crm.accounts': connection timeout expired"
    ) in message
    assert "Sources subscriptions, events use the same connection" in message
    for name in ("subscriptions", "events"):
        assert (
            f"source {name!r}: not read, because {display} did not respond in time "
            "when source 'accounts' connected to it"
        ) in message


def test_validate_silent_server_waits_once(tmp_path: Path, silent_server: int) -> None:
    project = silent_project(tmp_path, silent_server)

    started = time.monotonic()
    problems = check_table_sources(project)
    elapsed = time.monotonic() - started

    assert elapsed < 2.5
    assert len(problems) == 3
    assert "connection timeout expired" in problems[0]
    assert "source 'subscriptions': not read" in problems[1]
    assert "source 'events': not read" in problems[2]


def test_postgres_money_reads_as_number(
    tmp_path: Path,
    pg_schema: str,  # noqa: F811
) -> None:
    import psycopg

    with psycopg.connect(PG_ADMIN, autocommit=True) as connection:
        connection.execute(
            f'ALTER TABLE "{pg_schema}".accounts ALTER COLUMN arr TYPE money '
            "USING CASE WHEN arr ~ '^[0-9.]+$' THEN arr::numeric::money END"
        )
        connection.execute(
            f"UPDATE \"{pg_schema}\".accounts SET arr = '1,234.56'::money "
            "WHERE account_id = 'a1'"
        )
    locations = {
        name: {"table": f"{pg_schema}.{name}", "connection": PG_SOURCE}
        for name in SOURCES
    }
    project = write_project(tmp_path, locations)

    engine = open_engine(project)

    arr = engine.con.con.execute(
        "SELECT arr FROM source_accounts WHERE account_id = 'a1'"
    ).fetchall()
    assert arr == [(1234.56,)]


def test_postgres_unreadable_type_names_columns(
    tmp_path: Path,
    pg_schema: str,  # noqa: F811
) -> None:
    import psycopg

    # A decimal that does not fit a double: numeric casts to double precision,
    # but a value past its range fails in the server.
    with psycopg.connect(PG_ADMIN, autocommit=True) as connection:
        connection.execute(
            f'ALTER TABLE "{pg_schema}".accounts ALTER COLUMN arr TYPE numeric '
            "USING CASE WHEN arr ~ '^[0-9.]+$' THEN arr::numeric END"
        )
        connection.execute(
            f"UPDATE \"{pg_schema}\".accounts SET arr = 1e400 WHERE account_id = 'a1'"
        )
    locations = {
        name: {"table": f"{pg_schema}.{name}", "connection": PG_SOURCE}
        for name in SOURCES
    }
    project = write_project(tmp_path, locations)

    with pytest.raises(SourceError) as caught:
        open_engine(project)

    message = str(caught.value)
    assert f"source 'accounts': reading {PG_SOURCE}#{pg_schema}.accounts failed" in (
        message
    )
    assert "check the types of the table's columns" in message
    assert "server is reachable" not in message


# DuckDB snapshot table held by another process

HOLD_FILE = """
import sys, time, duckdb
con = duckdb.connect(sys.argv[1])
print("open", flush=True)
time.sleep(float(sys.argv[2]))
con.close()
"""


def hold_file(path: Path, seconds: float) -> subprocess.Popen[str]:
    """Start a process that keeps the DuckDB file `path` open for `seconds`."""
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLD_FILE, str(path), str(seconds)],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert holder.stdout is not None
    with holder.stdout:
        assert holder.stdout.readline() == "open\n"
    return holder


def scores_frame() -> pd.DataFrame:
    return pd.DataFrame(
        {"account_id": ["a1", "a2"], "score": [50.0, 70.0], "band": ["b", "c"]}
    )


def duckdb_table_project(root: Path) -> Project:
    snapshot_table = {"connection": "duckdb://scores.duckdb", "table": "scores"}
    return csv_project(root, store={"snapshot_table": snapshot_table})


def test_locked_duckdb_file_is_named(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import healthscore.store.snapshot_tables as snapshot_tables

    monkeypatch.setattr(snapshot_tables, "LOCK_WAIT_SECONDS", 0.5)
    project = duckdb_table_project(tmp_path)
    settings = project.config.store.snapshot_table
    assert settings is not None
    holder = hold_file(tmp_path / "scores.duckdb", 30)
    writer = SnapshotTableWriter(project, settings)
    try:
        with pytest.raises(SnapshotTableError) as caught, writer:
            writer.write([(AS_OF, scores_frame())])
    finally:
        holder.kill()
        holder.wait()

    message = str(caught.value)
    assert f"another process (PID {holder.pid}) has the file open" in message
    assert "still open after 0.5 s" in message
    assert "run the commands one after another" in message
    assert "Check the server" not in message


def test_locked_duckdb_file_is_waited_for(tmp_path: Path) -> None:
    project = duckdb_table_project(tmp_path)
    settings = project.config.store.snapshot_table
    assert settings is not None
    holder = hold_file(tmp_path / "scores.duckdb", 1)
    try:
        with SnapshotTableWriter(project, settings) as writer:
            written = writer.write([(AS_OF, scores_frame())])
    finally:
        holder.wait()

    assert written == 2


def test_writer_releases_duckdb_file_between_writes(tmp_path: Path) -> None:
    project = duckdb_table_project(tmp_path)
    settings = project.config.store.snapshot_table
    assert settings is not None
    with SnapshotTableWriter(project, settings) as writer:
        writer.write([(AS_OF, scores_frame())])
        # Another process can open the file while the writer waits for its
        # next batch.
        holder = hold_file(tmp_path / "scores.duckdb", 0)
        holder.wait()
        writer.write([(date(2026, 6, 2), scores_frame())])

    assert holder.returncode == 0


# Quoted table names


def test_quoted_snapshot_table_is_rejected(tmp_path: Path) -> None:
    snapshot_table = {"connection": "duckdb://scores.duckdb", "table": 'main."q"'}
    project = csv_project(tmp_path, store={"snapshot_table": snapshot_table})
    settings = project.config.store.snapshot_table
    assert settings is not None

    with pytest.raises(SnapshotTableError) as caught:
        check_snapshot_table(project, settings)

    message = str(caught.value)
    assert f"{project.file}:" in message
    assert "store.snapshot_table.table: table 'main.\"q\"' contains quotes" in message
    assert "write it without quotes, as main.q" in message
    with pytest.raises(SnapshotTableError):
        SnapshotTableWriter(project, settings)
    assert not (tmp_path / "scores.duckdb").exists()


def test_validate_rejects_quoted_snapshot_table(tmp_path: Path) -> None:
    snapshot_table = {"connection": "duckdb://scores.duckdb", "table": 'main."q"'}
    project = csv_project(tmp_path, store={"snapshot_table": snapshot_table})

    result = run_cli("validate", "--project", project.root)

    assert result.exit_code != 0
    assert "contains quotes" in result.output


def test_quoted_source_table_is_rejected(tmp_path: Path) -> None:
    locations = {
        name: {"table": f'main."{name}"', "connection": "duckdb://crm.duckdb"}
        for name in SOURCES
    }
    project = write_project(tmp_path, locations)

    problems = check_table_sources(project)

    assert problems[0] == (
        "source 'accounts': table 'main.\"accounts\"' contains quotes, which would "
        "become part of the name; write it without quotes, as main.accounts. "
        "healthscore quotes the schema and the name itself, so their case is kept. "
        "Fix sources.accounts.table"
    )
