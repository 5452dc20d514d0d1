"""An append killed part way stores nothing, and its retry stores every row once.

The kill is a real SIGKILL of an ingest or an append in a child process, sent after
a chosen file of the append is renamed into place or written. The next writer of the
source rolls the unfinished append back, so the retry of the same file is not
skipped and stores each row exactly once. Every rollup then equals the rollup
computed from the raw rows. For a purged day it equals the earlier rollup plus the
new rows, counted once.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import threading
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from healthscore.config import Project
from healthscore.sources.ingest import event_store, ingest_files
from healthscore.store import events as events_module
from healthscore.store.events import JOURNAL_PREFIX, EventStore, file_digest
from project_factory import ACCOUNTS_CSV, minimal_config, write_project

FIRST_DAY = date(2026, 1, 1)
DAYS = 40
ROWS_PER_DAY = 3

#: Ingests a file (or appends its rows without a batch id and without rollups, as
#: the web service does) and kills its own process with SIGKILL after the file
#: number argv[4] of the kind argv[3] is in place. Kinds: `rename` (a raw part or a
#: rollup renamed into place), `record` (ingested.json written) and `temporary` (a
#: rollup written under its temporary name). Arguments: project folder, file,
#: operation (`ingest` or `append`), kind, number.
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


# Renames of a 40-day ingest: a raw part, then the rollup, for each day in order.
@pytest.mark.parametrize(
    ("kind", "number"),
    [("rename", 1), ("rename", 41), ("rename", 2 * DAYS), ("temporary", 7)],
)
def test_killed_ingest_retry_stores_once(project, tmp_path, kind, number):
    file = tmp_path / "events.csv"
    frame = write_events(file, FIRST_DAY, DAYS)
    killed(project, file, "ingest", kind, number)
    partial = len(stored_users(event_store(project)))

    retried = ingest_files(project, "usage", [file])

    store = event_store(project)
    # A rename of a raw part is odd-numbered, so `number` renames put in the parts
    # of (number + 1) // 2 days. Before the first rename no row is in place.
    renamed_days = (number + 1) // 2 if kind == "rename" else 0
    assert partial == renamed_days * ROWS_PER_DAY
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

    retried = ingest_files(project, "usage", [file])

    store = event_store(project)
    # The batch is recorded, so the append is complete and the retry skips it.
    assert len(journals) == 1
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
    assert len(stored_users(store)) == 25 * ROWS_PER_DAY

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
