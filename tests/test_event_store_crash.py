"""An append killed part way stores nothing, and its retry stores every row once.

The kill is a real SIGKILL of an ingest or an append in a child process, sent after
a chosen file of the append is renamed into place or written. The next writer of the
source rolls the unfinished append back, so the retry of the same file is not
skipped and stores each row exactly once. Every rollup then equals the rollup
computed from the raw rows. For a purged day it equals the earlier rollup plus the
new rows, counted once.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import threading
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from typer.testing import CliRunner

from healthscore.cli import app
from healthscore.config import Project
from healthscore.sources.ingest import event_store, ingest_files
from healthscore.store import events as events_module
from healthscore.store.events import JOURNAL_PREFIX, EventStore, file_digest
from project_factory import ACCOUNTS_CSV, minimal_config, write_project

FIRST_DAY = date(2026, 1, 1)
DAYS = 40
ROWS_PER_DAY = 3

#: Ingests a file (or appends its rows without a batch id and without rollups, as
#: the web service does, or computes the rollups again) and kills its own process
#: with SIGKILL after the file number argv[4] of the kind argv[3] is in place.
#: Kinds: `rename` (a raw part or a rollup renamed into place), `record`
#: (ingested.json written) and `temporary` (a rollup written under its temporary
#: name). Arguments: project folder, file, operation (`ingest`, `append` or
#: `rebuild`), kind, number.
KILL_SCRIPT = """
import os
import signal
import sys
from pathlib import Path

import pandas as pd

from healthscore.config import load_project
from healthscore.sources.ingest import event_store, ingest_files
from healthscore.store import events

project_folder, file, operation, kind, number = sys.argv[1:6]
calls = []


def count(name):
    calls.append(name)
    if len(calls) == int(number):
        os.kill(os.getpid(), signal.SIGKILL)


real_replace = os.replace
real_write_temporary = events._write_temporary


def replace(source, target):
    real_replace(source, target)
    name = Path(target).name
    if kind == "rename" and (name.startswith("part-") or name == "rollup.parquet"):
        count(name)
    if kind == "record" and name == "ingested.json":
        count(name)


def write_temporary(target, table):
    temporary = real_write_temporary(target, table)
    if kind == "temporary" and target.name == "rollup.parquet":
        count(temporary.name)
    return temporary


os.replace = replace
events._write_temporary = write_temporary
project = load_project(project_folder)
if operation == "ingest":
    ingest_files(project, "usage", [Path(file)])
elif operation == "rebuild":
    event_store(project).rebuild_rollups("usage", ["value"])
else:
    frame = pd.read_csv(file, parse_dates=["timestamp"])
    frame["timestamp"] = frame["timestamp"].astype("datetime64[us]")
    event_store(project).append("usage", frame, numeric=["value"], rollup=False)
"""


@pytest.fixture
def project(tmp_path: Path) -> Project:
    config = minimal_config()
    config["sources"]["usage"] = {"kind": "events", "path": "store"}
    files = {
        "accounts.csv": ACCOUNTS_CSV,
        "events.csv": "account_id,timestamp\na1,2026-01-01T00:00:00\n",
    }
    return write_project(tmp_path / "p", config, files)


def write_events(path: Path, first: date, days: int, start: int = 0) -> pd.DataFrame:
    """Write ROWS_PER_DAY rows for each of `days` days from `first` to a CSV file."""
    rows = []
    for offset in range(days):
        day = first + timedelta(days=offset)
        for index in range(ROWS_PER_DAY):
            number = start + offset * ROWS_PER_DAY + index
            rows.append(
                {
                    "account_id": f"a{1 + number % 2}",
                    "timestamp": datetime(day.year, day.month, day.day, 8 + index),
                    "user": f"u{number}",
                    "value": float(number),
                }
            )
    frame = pd.DataFrame(rows)
    frame.to_csv(path, index=False)
    return frame


def killed(project: Project, file: Path, operation: str, kind: str, number: int):
    """Run an ingest or append of `file` in a child that SIGKILLs itself."""
    arguments = [str(project.root), str(file), operation, kind, str(number)]
    child = subprocess.run(
        [sys.executable, "-c", KILL_SCRIPT, *arguments],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert child.returncode == -signal.SIGKILL, child.stderr


def expected_rollup(frame: pd.DataFrame) -> dict[tuple[str, date], tuple[int, float]]:
    """(rows, value sum) per account and day, computed with pandas."""
    days = frame["timestamp"].dt.date
    grouped = frame.groupby([frame["account_id"], days])["value"].agg(["count", "sum"])
    return {
        (str(account), day): (int(row["count"]), float(row["sum"]))
        for (account, day), row in grouped.iterrows()
    }


def stored_rollup(store: EventStore) -> dict[tuple[str, date], tuple[int, float]]:
    table = store.read_rollup("usage")
    assert table is not None
    return {
        (row["account_id"], row["day"]): (row["rows"], row["value_sum"])
        for row in table.to_pylist()
    }


def stored_users(store: EventStore) -> list[str]:
    table = store.read_raw("usage")
    return [] if table is None else sorted(table["user"].to_pylist())


def leftovers(project: Project) -> list[str]:
    """Journals, temporaries and rollup backups anywhere in the store."""
    root = project.root / ".healthscore"
    return sorted(
        str(path.relative_to(root))
        for path in root.rglob(".*")
        if path.name.startswith(JOURNAL_PREFIX) or path.name.endswith((".tmp", ".bak"))
    )


def stored_parts(project: Project) -> list[Path]:
    return sorted((project.root / ".healthscore/events/usage").glob("day=*/part-*"))


# Renames of a 40-day ingest: a raw part, then the rollup, for each day in order.
@pytest.mark.parametrize(
    ("kind", "number"),
    [("rename", 1), ("rename", 41), ("rename", 2 * DAYS), ("temporary", 7)],
)
def test_killed_ingest_retry_stores_once(project, tmp_path, kind, number):
    file = tmp_path / "events.csv"
    frame = write_events(file, FIRST_DAY, DAYS)
    killed(project, file, "ingest", kind, number)
    on_disk = len(stored_parts(project))
    unread = stored_users(event_store(project))

    retried = ingest_files(project, "usage", [file])

    store = event_store(project)
    # A rename of a raw part is odd-numbered, so `number` renames put in the parts
    # of (number + 1) // 2 days. Before the first rename no row is in place.
    renamed_days = (number + 1) // 2 if kind == "rename" else 0
    assert on_disk == renamed_days
    assert unread == []
    assert not retried[0].skipped
    assert retried[0].rows == DAYS * ROWS_PER_DAY
    assert stored_users(store) == sorted(frame["user"])
    assert stored_rollup(store) == expected_rollup(frame)
    assert store.rebuild_rollups("usage", ["value"]) == []
    assert list(store.ingested_batches("usage")) == [file_digest(file)]
    assert leftovers(project) == []


def test_killed_after_record_keeps_append(project, tmp_path):
    file = tmp_path / "events.csv"
    frame = write_events(file, FIRST_DAY, DAYS)
    killed(project, file, "ingest", "record", 1)
    journals = [name for name in leftovers(project) if JOURNAL_PREFIX in name]
    # The batch is recorded, so readers count the append before any writer runs.
    read_before_retry = stored_users(event_store(project))

    retried = ingest_files(project, "usage", [file])

    store = event_store(project)
    # The batch is recorded, so the append is complete and the retry skips it.
    assert len(journals) == 1
    assert read_before_retry == sorted(frame["user"])
    assert retried[0].skipped
    assert stored_users(store) == sorted(frame["user"])
    assert stored_rollup(store) == expected_rollup(frame)
    assert leftovers(project) == []


def test_killed_ingest_restores_purged_rollups(project, tmp_path):
    first = tmp_path / "first.csv"
    second = tmp_path / "second.csv"
    early = write_events(first, FIRST_DAY, 10)
    ingest_files(project, "usage", [first])
    store = event_store(project)
    purged = store.purge("usage", FIRST_DAY + timedelta(days=5))
    # Days 3 to 5 are purged and take rollup rows only, days 6 to 8 raw rows too.
    late = write_events(second, FIRST_DAY + timedelta(days=2), 6, start=1000)
    before = stored_rollup(store)

    # Renames: the rollups of days 3, 4 and 5, then day 6's part and rollup.
    killed(project, second, "ingest", "rename", 4)
    # A killed append leaves its backups, which the next writer moves back.
    backups = [name for name in leftovers(project) if name.endswith(".bak")]
    store.rebuild_rollups("usage", ["value"])
    restored = stored_rollup(store)
    retried = ingest_files(project, "usage", [second])

    assert sorted(purged.purged) == [FIRST_DAY + timedelta(days=d) for d in range(5)]
    assert len(backups) == 3
    assert restored == before
    assert retried[0].rows == 6 * ROWS_PER_DAY
    assert stored_rollup(store) == expected_rollup(pd.concat([early, late]))
    assert leftovers(project) == []


def test_killed_service_append_rolls_back(project, tmp_path):
    file = tmp_path / "events.csv"
    frame = write_events(file, FIRST_DAY, DAYS)
    killed(project, file, "append", "rename", 25)
    store = event_store(project)
    assert len(stored_parts(project)) == 25
    assert stored_users(store) == []
    assert store.raw_files("usage") == []

    # Any writer of the source first rolls the unfinished append back.
    store.rebuild_rollups("usage", ["value"])

    assert stored_users(store) == []
    assert store.raw_days("usage") == []
    assert store.rollup_days("usage") == []
    assert leftovers(project) == []
    retry = pd.read_csv(file, parse_dates=["timestamp"])
    store.append("usage", retry, numeric=["value"], rollup=False)
    store.rebuild_rollups("usage", ["value"])
    assert stored_users(store) == sorted(frame["user"])
    assert stored_rollup(store) == expected_rollup(frame)


def test_recovery_removes_rollup_temporaries(project, tmp_path):
    file = tmp_path / "events.csv"
    write_events(file, FIRST_DAY, 2)
    killed(project, file, "ingest", "temporary", 1)
    daily = project.root / ".healthscore/daily/usage"
    left = sorted(p.name for p in daily.glob("day=*/.rollup.parquet.*.tmp"))

    event_store(project).rebuild_rollups("usage", ["value"])

    assert len(left) == 1
    assert list(daily.glob("day=*/.*")) == []
    assert leftovers(project) == []


def test_failed_rename_rolls_back_in_process(project, tmp_path, monkeypatch):
    file = tmp_path / "events.csv"
    frame = write_events(file, FIRST_DAY, DAYS)
    real_replace = events_module.os.replace
    renamed: list[str] = []

    def replace(source: Any, target: Any) -> None:
        if Path(target).name.startswith("part-"):
            renamed.append(Path(target).name)
            if len(renamed) == 10:
                raise OSError(28, "No space left on device")
        real_replace(source, target)

    monkeypatch.setattr(events_module.os, "replace", replace)
    with pytest.raises(OSError, match="No space left"):
        ingest_files(project, "usage", [file])
    monkeypatch.undo()
    store = event_store(project)
    left = stored_users(store)
    raw_days = store.raw_days("usage")
    rollup_days = store.rollup_days("usage")

    retried = ingest_files(project, "usage", [file])

    assert left == []
    assert raw_days == []
    assert rollup_days == []
    assert not retried[0].skipped
    assert stored_users(store) == sorted(frame["user"])
    assert stored_rollup(store) == expected_rollup(frame)
    assert leftovers(project) == []


def test_concurrent_appends_store_every_row(project):
    frames = []
    for writer in range(4):
        path = project.root / f"in-{writer}.csv"
        frames.append(write_events(path, FIRST_DAY, 10, start=1000 * writer))
    errors: list[BaseException] = []

    def ingest(writer: int) -> None:
        try:
            ingest_files(project, "usage", [project.root / f"in-{writer}.csv"])
        except BaseException as exc:  # reported by the assert below
            errors.append(exc)

    threads = [threading.Thread(target=ingest, args=(w,)) for w in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    store = event_store(project)
    every = pd.concat(frames)
    assert errors == []
    assert stored_users(store) == sorted(every["user"])
    assert stored_rollup(store) == expected_rollup(every)
    assert len(store.ingested_batches("usage")) == 4
    assert leftovers(project) == []


# Rows of the reader tests, stored before the killed append: days 2026-01-01 to
# 2026-01-03, then day 2026-01-01 is purged and keeps only its rollup.
BEFORE_CSV = """account_id,timestamp,user,value
a1,2026-01-01T08:00:00,u1,1
a1,2026-01-02T08:00:00,u2,2
a2,2026-01-02T09:00:00,u3,8
a1,2026-01-03T08:00:00,u4,4
"""
# One row on each of 2026-01-01 (purged, so rollup only) to 2026-01-05.
KILLED_CSV = """account_id,timestamp,user,value
a2,2026-01-01T10:00:00,k1,16
a1,2026-01-02T10:00:00,k2,32
a2,2026-01-03T10:00:00,k3,64
a1,2026-01-04T10:00:00,k4,128
a2,2026-01-05T10:00:00,k5,256
"""
# What the store contains before the killed append, counted by hand from BEFORE_CSV:
# raw rows of the kept days 2026-01-02 and 2026-01-03, and the rollups of all three.
USERS_BEFORE = ["u2", "u3", "u4"]
ROLLUP_BEFORE = {
    ("a1", date(2026, 1, 1)): (1, 1.0),
    ("a1", date(2026, 1, 2)): (1, 2.0),
    ("a2", date(2026, 1, 2)): (1, 8.0),
    ("a1", date(2026, 1, 3)): (1, 4.0),
}
# Per account: raw rows, rollup rows and the sum of the rollup's value_sum.
SCORED_BEFORE = {"a1": (2.0, 3.0, 7.0), "a2": (1.0, 1.0, 8.0), "a3": (0.0, 0.0, 0.0)}


@pytest.fixture
def scored_project(tmp_path: Path) -> Project:
    """A project whose metrics count the raw rows and the rollups of `usage`."""
    metrics = {
        "raw_rows": {"type": "count", "source": "usage", "window": "60d"},
        "rollup_rows": {
            "type": "sum",
            "source": "usage_daily",
            "column": "rows",
            "window": "60d",
        },
        "rollup_value": {
            "type": "sum",
            "source": "usage_daily",
            "column": "value_sum",
            "window": "60d",
        },
    }
    # Bounds wider than every value, so each metric is listed among the drivers.
    measures = [
        {"metric": name, "normalize": {"method": "bounds", "min": 0, "max": 1000}}
        for name in metrics
    ]
    config = minimal_config(metrics=metrics)
    config["sources"]["usage"] = {"kind": "events", "path": "store"}
    config["scorecards"][0]["components"]["usage"]["measures"] = measures
    files = {
        "accounts.csv": ACCOUNTS_CSV,
        "events.csv": "account_id,timestamp\na1,2026-01-01T00:00:00\n",
    }
    return write_project(tmp_path / "p", config, files)


def scored_values(project: Project) -> dict[str, tuple[float, float, float]]:
    """Run `healthscore score --json` and return the metric values per account."""
    runner = CliRunner()
    arguments = ["score", "--as-of", "2026-02-01", "--project", str(project.root)]
    result = runner.invoke(app, [*arguments, "--json"])
    assert result.exit_code == 0, result.output
    values = {}
    for account in json.loads(result.stdout)["riskiest"]:
        drivers = {d["metric"]: d["value"] for d in account["drivers"]}
        metrics = ("raw_rows", "rollup_rows", "rollup_value")
        values[account["account_id"]] = tuple(drivers[name] for name in metrics)
    return values


def store_before_killed_append(project: Project, tmp_path: Path) -> Path:
    """Store BEFORE_CSV, purge its first day, and return KILLED_CSV's path."""
    before = tmp_path / "before.csv"
    before.write_text(BEFORE_CSV)
    ingest_files(project, "usage", [before])
    purged = event_store(project).purge("usage", date(2026, 1, 2))
    assert list(purged.purged) == [date(2026, 1, 1)]
    killed_file = tmp_path / "killed.csv"
    killed_file.write_text(KILLED_CSV)
    return killed_file


def test_killed_ingest_unread_by_readers(scored_project, tmp_path):
    killed_file = store_before_killed_append(scored_project, tmp_path)
    # Renames: the rollup of the purged 2026-01-01, then a part and a rollup for
    # each of 2026-01-02, 01-03 and 01-04. So the killed append replaced four
    # rollups and put three parts in place.
    killed(scored_project, killed_file, "ingest", "rename", 7)
    store = event_store(scored_project)
    on_disk = len(stored_parts(scored_project))
    read_files = store.raw_files("usage")

    assert on_disk == 2 + 3
    assert len(read_files) == 2
    assert stored_users(store) == USERS_BEFORE
    assert stored_rollup(store) == ROLLUP_BEFORE
    assert scored_values(scored_project) == SCORED_BEFORE

    # A writer rolls the append back, and readers see the same store as before.
    store.rebuild_rollups("usage", ["value"])

    assert len(stored_parts(scored_project)) == 2
    assert stored_users(store) == USERS_BEFORE
    assert stored_rollup(store) == ROLLUP_BEFORE
    assert scored_values(scored_project) == SCORED_BEFORE
    assert leftovers(scored_project) == []


def test_killed_rollback_unread_by_readers(scored_project, tmp_path):
    killed_file = store_before_killed_append(scored_project, tmp_path)
    killed(scored_project, killed_file, "ingest", "rename", 7)
    # The rollback deletes the parts, then moves the backup of the purged day's
    # rollup back, and is killed there: the journal and three new rollups remain.
    killed(scored_project, killed_file, "rebuild", "rename", 1)
    store = event_store(scored_project)
    journals = [n for n in leftovers(scored_project) if JOURNAL_PREFIX in n]

    assert len(journals) == 1
    assert len(stored_parts(scored_project)) == 2
    assert stored_users(store) == USERS_BEFORE
    assert stored_rollup(store) == ROLLUP_BEFORE
    assert scored_values(scored_project) == SCORED_BEFORE


def test_reader_lists_again_after_append(project, tmp_path, monkeypatch):
    store = event_store(project)
    store.append("usage", write_events(tmp_path / "a.csv", FIRST_DAY, 3), numeric=[])
    later = write_events(tmp_path / "b.csv", FIRST_DAY, 3, start=100)
    reader = event_store(project)
    real_parts = reader._parts
    listed: list[date] = []

    def parts(source: str, day: date) -> list[Path]:
        found = real_parts(source, day)
        listed.append(day)
        if len(listed) == 1:
            # A whole append runs after the reader listed the first day only.
            store.append("usage", later, numeric=[])
        return found

    monkeypatch.setattr(reader, "_parts", parts)
    files = reader.raw_files("usage")

    # The first listing saw 1 + 2 + 2 parts, the second one 2 on each day.
    assert len(listed) == 6
    assert len(files) == 6
    assert len(stored_parts(project)) == 6
