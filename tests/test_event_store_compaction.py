"""Compaction of the event store: a day's part files merged into one, crash-safely."""

from __future__ import annotations

import json
import shutil
import threading
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest
import typer
from typer.testing import CliRunner

from healthscore.cli.events import compact_command
from healthscore.config import Project
from healthscore.service.ingest import GroupCommitter
from healthscore.sources.ingest import (
    RollupUpdates,
    event_store,
    project_today,
)
from healthscore.store import events as events_module
from healthscore.store.events import MESSAGE_ID_COLUMN, EventStore
from project_factory import ACCOUNTS_CSV, minimal_config, write_project

DAY = date(2026, 3, 2)
OTHER_DAY = date(2026, 3, 3)


@pytest.fixture
def project(tmp_path: Path) -> Project:
    config = minimal_config()
    config["sources"]["usage"] = {"kind": "events", "path": "store"}
    config["store"] = {"compact_parts": 2}
    files = {
        "accounts.csv": ACCOUNTS_CSV,
        "events.csv": "account_id,timestamp\na1,2026-01-01T00:00:00\n",
    }
    return write_project(tmp_path / "p", config, files)


def batch(day: date, start: int, count: int) -> pa.Table:
    """Rows `start` to `start + count - 1` of a day, one account per row parity."""
    return pa.table(
        {
            "account_id": [
                f"a{1 + index % 2}" for index in range(start, start + count)
            ],
            "timestamp": pa.array(
                [
                    datetime(day.year, day.month, day.day, 8) + timedelta(minutes=i)
                    for i in range(start, start + count)
                ],
                pa.timestamp("us"),
            ),
            "user": [f"u{index}" for index in range(start, start + count)],
            "value": [float(index) for index in range(start, start + count)],
        }
    )


def append_parts(
    store: EventStore, day: date, parts: int, size: int = 3, start: int = 0
) -> None:
    """Append `parts` parts of `size` rows each, with message ids from `start`."""
    for part in range(parts):
        first = start + part * size
        ids = [f"{day}-m{first + i}" for i in range(size)]
        store.append(
            "usage", batch(day, first, size), numeric=["value"], message_ids=ids
        )


def sorted_rows(store: EventStore, day: date) -> list[dict[str, Any]]:
    table = store.read_raw("usage", day)
    assert table is not None
    return table.sort_by([("user", "ascending")]).to_pylist()


def day_folder(project: Project, day: date) -> Path:
    return project.root / ".healthscore/events/usage" / f"day={day.isoformat()}"


def parts_of(project: Project, day: date) -> list[Path]:
    return sorted(day_folder(project, day).glob("part-*.parquet"))


def hidden_entries(project: Project) -> list[str]:
    folder = project.root / ".healthscore/events/usage"
    return sorted(
        p.name for p in folder.iterdir() if p.name.startswith(".") and p.is_dir()
    )


def test_compaction_keeps_rows_in_one_part(project):
    store = event_store(project)
    append_parts(store, DAY, 5)
    append_parts(store, OTHER_DAY, 1)
    before = sorted_rows(store, DAY)
    rollup_before = store.read_rollup("usage", DAY)
    newest = parts_of(project, DAY)[-1].name

    merged = store.compact("usage", 2)

    assert merged == {DAY: 5}
    assert len(parts_of(project, DAY)) == 1
    assert len(parts_of(project, OTHER_DAY)) == 1
    assert sorted_rows(store, DAY) == before
    assert len(before) == 15
    assert store.read_rollup("usage", DAY).equals(rollup_before)
    # The merged part keeps the store time of the newest part it replaces.
    assert parts_of(project, DAY)[0].name.split("-")[1] == newest.split("-")[1]
    assert hidden_entries(project) == []


def test_compaction_keeps_row_order(project):
    store = event_store(project)
    append_parts(store, DAY, 3)
    before = store.read_raw("usage", DAY)

    store.compact("usage", 1)

    assert store.read_raw("usage", DAY).equals(before)


def test_compaction_skips_small_and_recent_days(project):
    store = event_store(project)
    append_parts(store, DAY, 2)
    append_parts(store, OTHER_DAY, 4)

    assert store.compact("usage", 2) == {OTHER_DAY: 4}
    append_parts(store, DAY, 1, start=50)
    assert store.compact("usage", 1, before=OTHER_DAY) == {DAY: 3}
    assert len(parts_of(project, DAY)) == 1


def test_compaction_rejects_zero_max_parts(project):
    with pytest.raises(ValueError, match="max_parts is 0"):
        event_store(project).compact("usage", 0)


class Crash(BaseException):
    """Stands for the process being killed at this point."""


def crash_at_replace(monkeypatch: pytest.MonkeyPatch, count: int) -> None:
    """Make the `count`-th os.replace of the store raise Crash instead of running."""
    real = events_module.os.replace
    calls = {"n": 0}

    def replace(source: Any, target: Any) -> None:
        calls["n"] += 1
        if calls["n"] == count:
            raise Crash
        real(source, target)

    monkeypatch.setattr(events_module.os, "replace", replace)


# The renames of one compaction: 1 the merged part into the staged folder, 2 the day
# folder aside, 3 the staged folder into place.
@pytest.mark.parametrize("crash_point", [1, 2, 3])
def test_crash_during_compaction_recovers(project, monkeypatch, crash_point):
    store = event_store(project)
    append_parts(store, DAY, 4)
    before = sorted_rows(store, DAY)
    crash_at_replace(monkeypatch, crash_point)

    with pytest.raises(Crash):
        store.compact("usage", 1)
    monkeypatch.undo()
    left = hidden_entries(project)
    restarted = event_store(project)
    merged = restarted.compact("usage", 1)

    assert left  # the crash left a staged or set-aside folder behind
    assert sorted_rows(restarted, DAY) == before
    assert len(parts_of(project, DAY)) == 1
    assert hidden_entries(project) == []
    # A crash after the swap leaves the day as one part, so nothing is left to
    # merge. After a crash before it, the next compaction merges the four parts.
    assert merged == ({} if crash_point == 3 else {DAY: 4})


def test_crash_between_swap_and_cleanup_recovers(project, monkeypatch):
    store = event_store(project)
    append_parts(store, DAY, 3)
    before = sorted_rows(store, DAY)
    real = shutil.rmtree

    def rmtree(path: Any, *args: Any, **kwargs: Any) -> None:
        if Path(path).name.startswith(".old-"):
            raise Crash
        real(path, *args, **kwargs)

    monkeypatch.setattr(events_module.shutil, "rmtree", rmtree)
    with pytest.raises(Crash):
        store.compact("usage", 1)
    monkeypatch.undo()
    left = hidden_entries(project)
    restarted = event_store(project)
    restarted.append("usage", batch(DAY, 100, 1), numeric=["value"])

    assert left == [f".old-day={DAY.isoformat()}"]
    assert hidden_entries(project) == []
    rows = sorted_rows(restarted, DAY)
    assert [row for row in rows if row["user"] != "u100"] == before
    assert len(rows) == len(before) + 1


def test_crash_while_writing_merged_part(project, monkeypatch):
    store = event_store(project)
    append_parts(store, DAY, 3)
    before = sorted_rows(store, DAY)
    real = events_module.pq.write_table

    def write_half(table: pa.Table, where: Any, **kwargs: Any) -> None:
        if ".new-" in str(where):
            Path(where).write_bytes(b"PAR1 truncated")
            raise Crash
        real(table, where, **kwargs)

    monkeypatch.setattr(events_module.pq, "write_table", write_half)
    with pytest.raises(Crash):
        store.compact("usage", 1)
    monkeypatch.undo()
    restarted = event_store(project)

    assert sorted_rows(restarted, DAY) == before
    assert restarted.compact("usage", 1) == {DAY: 3}
    assert sorted_rows(restarted, DAY) == before
    assert hidden_entries(project) == []


def test_compaction_during_appends_loses_nothing(project):
    store = event_store(project)
    appends = 40
    errors: list[BaseException] = []

    def append_all() -> None:
        try:
            writer = event_store(project)
            for index in range(appends):
                writer.append(
                    "usage",
                    batch(DAY, index, 1),
                    numeric=["value"],
                    rollup=False,
                    message_ids=[f"m{index}"],
                )
        except BaseException as exc:  # reported by the assert below
            errors.append(exc)

    writer = threading.Thread(target=append_all)
    writer.start()
    compactions = 0
    while writer.is_alive():
        compactions += len(store.compact("usage", 1))
    writer.join()
    store.compact("usage", 1)

    assert errors == []
    assert compactions >= 1
    table = store.read_raw("usage", DAY)
    assert sorted(table[MESSAGE_ID_COLUMN].to_pylist()) == sorted(
        f"m{index}" for index in range(appends)
    )
    assert len(parts_of(project, DAY)) == 1


def test_worker_updates_compact_past_and_today(project):
    store = event_store(project)
    updates = RollupUpdates(project)
    committer = GroupCommitter(store, updates)
    today = project_today(project)
    yesterday = today - timedelta(days=1)
    for day in (yesterday, today):
        for part in range(3):
            committer.append("usage", batch(day, part, 1), ["value"])

    updates.apply()

    assert len(parts_of(project, yesterday)) == 1
    assert len(parts_of(project, today)) == 1
    assert store.read_raw("usage", yesterday).num_rows == 3
    assert store.read_raw("usage", today).num_rows == 3
    rollup = store.read_rollup("usage", yesterday)
    assert sum(rollup["rows"].to_pylist()) == 3


def test_worker_merges_today_again_as_rows_arrive(project):
    store = event_store(project)
    updates = RollupUpdates(project)
    today = project_today(project)
    append_parts(store, today, 3)
    updates.add("usage", [today])

    assert updates.compact(today) == {"usage": {today: 3}}
    append_parts(store, today, 2, start=50)
    updates.add("usage", [today])
    # The merged part is still small, so it is merged with the two new ones.
    assert updates.compact(today) == {"usage": {today: 3}}
    assert len(parts_of(project, today)) == 1
    assert store.read_raw("usage", today).num_rows == 15


def test_recent_merge_keeps_large_parts(project):
    store = event_store(project)
    append_parts(store, DAY, 1, size=40)
    large = parts_of(project, DAY)[0]
    append_parts(store, DAY, 3, start=100)
    before = store.read_raw("usage", DAY)
    small_bytes = large.stat().st_size

    merged = store.compact_recent("usage", DAY, 2, small_bytes)

    assert merged == 3
    after = parts_of(project, DAY)
    assert len(after) == 2
    assert after[0].name == large.name
    assert store.read_raw("usage", DAY).equals(before)
    assert hidden_entries(project) == []


def test_recent_merge_needs_more_than_max_parts(project):
    store = event_store(project)
    append_parts(store, DAY, 2)

    assert store.compact_recent("usage", DAY, 2, 1 << 20) == 0
    assert len(parts_of(project, DAY)) == 2


def test_recent_merge_keeps_retries_deduplicated(project):
    store = event_store(project)
    append_parts(store, DAY, 4)
    store.compact_recent("usage", DAY, 2, 1 << 20)

    retried = store.append(
        "usage",
        batch(DAY, 0, 3),
        numeric=["value"],
        message_ids=[f"{DAY}-m{i}" for i in range(3)],
    )

    assert retried.rows == 0
    assert store.read_raw("usage", DAY).num_rows == 12


@pytest.mark.parametrize("crash_point", [1, 2, 3])
def test_recent_merge_recovers_from_crash(project, monkeypatch, crash_point):
    store = event_store(project)
    append_parts(store, DAY, 1, size=40)
    large = parts_of(project, DAY)[0]
    append_parts(store, DAY, 3, start=100)
    before = store.read_raw("usage", DAY)
    crash_at_replace(monkeypatch, crash_point)

    with pytest.raises(Crash):
        store.compact_recent("usage", DAY, 2, large.stat().st_size)
    monkeypatch.undo()

    fresh = EventStore(store.events_folder, store.daily_folder)
    fresh.append("usage", batch(DAY, 500, 1), numeric=["value"], message_ids=["late"])
    rows = fresh.read_raw("usage", DAY)
    assert rows.num_rows == before.num_rows + 1
    assert rows.slice(0, before.num_rows).equals(before)


def test_compact_command(project):
    store = event_store(project)
    append_parts(store, DAY, 3)
    append_parts(store, OTHER_DAY, 2)
    app = typer.Typer()
    app.command("compact")(compact_command)
    app.command("unused")(lambda: None)  # makes `compact` a named subcommand
    runner = CliRunner(env={"COLUMNS": "200", "NO_COLOR": "1"})

    result = runner.invoke(app, ["compact", "--project", str(project.root), "--json"])

    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout) == {"usage": {DAY.isoformat(): 3}}
    assert len(parts_of(project, DAY)) == 1
    assert len(parts_of(project, OTHER_DAY)) == 2


def test_compact_command_rejects_unknown_source(project):
    app = typer.Typer()
    app.command("compact")(compact_command)
    app.command("unused")(lambda: None)
    runner = CliRunner(env={"COLUMNS": "200", "NO_COLOR": "1"})

    result = runner.invoke(
        app, ["compact", "--project", str(project.root), "--source", "accounts"]
    )

    assert result.exit_code == 1
    assert "'accounts' is not a store source" in result.output
