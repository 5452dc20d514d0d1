"""DuckDB's memory limit and spill folder, as engine.connect sets them up."""

from __future__ import annotations

import contextlib
import threading
from pathlib import Path

import pytest
import typer

from healthscore.cli.common import handle_errors
from healthscore.engine import connect
from healthscore.pipeline import open_engine
from healthscore.sources import SourceError
from project_factory import ACCOUNTS_CSV, minimal_config, write_project

EVENTS_CSV = "account_id,timestamp,event_type\na1,2026-01-01 10:00:00,login\n"

# A grouped sum over 4 million distinct keys. At 8 bytes for each key and 16 for each
# sum, its hash table needs about 100 MB before any overhead. That is more than the
# 64 MB limit below, so DuckDB has to spill to finish it.
SPILLING_QUERY = (
    "SELECT count(*), sum(total) FROM "
    "(SELECT i AS key, sum(i) AS total FROM range(4000000) AS t(i) GROUP BY key)"
)


def project_with_engine(tmp_path: Path, **engine: object):
    config = minimal_config(engine=engine) if engine else minimal_config()
    return write_project(
        tmp_path, config, {"accounts.csv": ACCOUNTS_CSV, "events.csv": EVENTS_CSV}
    )


def setting(con, name: str) -> str:
    return con.con.execute(f"SELECT current_setting('{name}')").fetchone()[0]


def test_spill_folder_defaults_under_project(tmp_path):
    project = project_with_engine(tmp_path)

    con = connect(project)

    assert setting(con, "temp_directory") == str(tmp_path / ".healthscore" / "tmp")
    assert (tmp_path / ".healthscore").is_dir()


def test_relative_spill_folder_is_in_project(tmp_path):
    project = project_with_engine(tmp_path, temp_directory="scratch/spill")

    con = connect(project)

    assert setting(con, "temp_directory") == str(tmp_path / "scratch" / "spill")
    assert (tmp_path / "scratch").is_dir()


def test_memory_limit_is_applied(tmp_path):
    project = project_with_engine(tmp_path, memory_limit="300MB")

    con = connect(project)

    # DuckDB reports 300 MB (10^6 bytes) in binary units.
    assert setting(con, "memory_limit") == "286.1 MiB"


def test_query_over_limit_spills_to_folder(tmp_path):
    project = project_with_engine(tmp_path, memory_limit="64MB", threads=1)
    spill = tmp_path / ".healthscore" / "tmp"
    con = connect(project)
    seen: list[int] = []
    stop = threading.Event()

    def watch() -> None:
        while not stop.wait(0.01):
            # DuckDB deletes spill files as it goes, so one listed may be gone
            # before its size is read, or the folder itself.
            with contextlib.suppress(FileNotFoundError):
                seen.append(sum(f.stat().st_size for f in spill.iterdir()))

    watcher = threading.Thread(target=watch)
    watcher.start()
    try:
        count, total = con.con.execute(SPILLING_QUERY).fetchone()
    finally:
        stop.set()
        watcher.join()
    con.con.close()

    assert count == 4_000_000
    assert total == 4_000_000 * 3_999_999 // 2
    assert max(seen, default=0) > 0
    assert not spill.exists()


def test_out_of_memory_names_the_limit(tmp_path):
    project = project_with_engine(tmp_path, memory_limit="1MB")

    with pytest.raises(SourceError) as caught:
        open_engine(project)

    message = str(caught.value)
    assert "Out of Memory" in message
    assert "raise engine.memory_limit in healthscore.yml" in message
    assert "delimiter" not in message


def test_spill_folder_under_a_file(tmp_path):
    project = project_with_engine(tmp_path, temp_directory="accounts.csv/spill/tmp")

    with pytest.raises(SourceError) as caught:
        connect(project)

    message = str(caught.value)
    assert f"cannot create {tmp_path / 'accounts.csv' / 'spill'}" in message
    assert "set engine.temp_directory in healthscore.yml" in message
    assert (tmp_path / "accounts.csv").is_file()


@pytest.mark.skipif(
    not Path("/proc/self").is_dir(),
    reason="needs Linux's /proc, where no folder can be created",
)
def test_spill_failure_names_the_setting(tmp_path, capsys):
    # The parent /proc exists, so connect succeeds and the query fails when
    # DuckDB creates the spill folder.
    project = project_with_engine(
        tmp_path,
        memory_limit="64MB",
        threads=1,
        temp_directory="/proc/healthscore-spill",
    )
    con = connect(project)

    @handle_errors
    def run_query(verbose: int = 0) -> None:
        con.con.execute(SPILLING_QUERY).fetchone()

    with pytest.raises(typer.Exit) as caught:
        run_query()

    assert caught.value.exit_code == 1
    message = " ".join(capsys.readouterr().err.split())
    assert 'Failed to create directory "/proc/healthscore-spill"' in message
    assert "set engine.temp_directory in healthscore.yml" in message
    assert "Traceback" not in message


def test_query_out_of_memory_names_settings(tmp_path, capsys):
    # Loading the project's small sources fits; the query does not, and with
    # spilling off DuckDB cannot move its data to disk.
    project = project_with_engine(tmp_path, memory_limit="16MB", threads=1)
    con = connect(project)
    con.con.execute("SET temp_directory = ''")

    @handle_errors
    def run_query(verbose: int = 0) -> None:
        con.con.execute(
            "SELECT count(DISTINCT i::VARCHAR) FROM range(3000000) AS t(i)"
        ).fetchone()

    with pytest.raises(typer.Exit) as caught:
        run_query()

    assert caught.value.exit_code == 1
    message = " ".join(capsys.readouterr().err.split())
    assert message.startswith("error: DuckDB ran out of memory while running a query")
    assert "Raise engine.memory_limit in healthscore.yml" in message
    assert "set engine.temp_directory" in message
    assert "Traceback" not in message


def out_of_memory_message(con, sql: str, capsys) -> str:
    """Run `sql` under handle_errors and return its error, on one line."""

    @handle_errors
    def run_query(verbose: int = 0) -> None:
        con.con.execute(sql).fetchone()

    with pytest.raises(typer.Exit) as caught:
        run_query()

    assert caught.value.exit_code == 1
    return " ".join(capsys.readouterr().err.split())


def test_memory_limit_too_small_despite_spilling(tmp_path, capsys):
    # One list of 3 million numbers is one value of 24 MB, which DuckDB cannot
    # spill in parts, so it fails although a spill folder is set.
    project = project_with_engine(
        tmp_path, memory_limit="16MB", threads=1, temp_directory="spill"
    )
    con = connect(project)

    sql = "SELECT list(i) FROM range(3000000) AS t(i)"
    message = out_of_memory_message(con, sql, capsys)

    assert message.startswith("error: DuckDB ran out of memory while running a query")
    # DuckDB reports 16 MB (10^6 bytes) as 15.2 MiB.
    assert "DuckDB's memory limit of 15.2 MiB (engine.memory_limit)" in message
    assert f"DuckDB could spill to {tmp_path / 'spill'}" in message
    assert "raise engine.memory_limit in healthscore.yml" in message
    assert "temp_directory" not in message
    assert "Traceback" not in message


def test_spill_size_limit_names_folder(tmp_path, capsys):
    project = project_with_engine(tmp_path, memory_limit="64MB", threads=1)
    con = connect(project)
    con.con.execute("SET max_temp_directory_size = '1MB'")

    message = out_of_memory_message(con, SPILLING_QUERY, capsys)

    spill = tmp_path / ".healthscore" / "tmp"
    assert message.startswith("error: DuckDB ran out of memory while running a query")
    assert f"the spill folder {spill} reached its size limit" in message
    assert "max_temp_directory_size" in message
    assert "set engine.temp_directory to a folder on a disk with more free" in message
    assert "Traceback" not in message
