"""Snapshot store: Parquet partitions per as-of date, atomic replacement, recovery."""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from datetime import UTC, date, datetime
from pathlib import Path

import duckdb
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pytest

import healthscore.store.snapshots as snapshots_module
from healthscore.store import SnapshotNotFoundError, SnapshotStore

MAY_1 = date(2020, 5, 1)
MAY_2 = date(2020, 5, 2)
MAY_3 = date(2020, 5, 3)


def scores_frame(offset: float = 0.0) -> pd.DataFrame:
    """A scores table with every column type a snapshot holds."""
    return pd.DataFrame(
        {
            "account_id": ["a1", "a2", None],
            "score": [55.5 + offset, np.nan, 12.0 + offset],
            "band": ["stable", None, "at_risk"],
            "overridden": [False, True, False],
            "renewal_date": [date(2021, 1, 31), None, date(2020, 12, 1)],
            "computed_at": pd.to_datetime(
                ["2020-05-01T06:00:00Z", None, "2020-05-01T06:00:01Z"]
            ),
            "seats": pd.array([10, None, 3], dtype="Int64"),
        }
    )


def measures_frame() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "account_id": ["a1", "a1", "a2"],
            "measure": ["logins", "tickets", "logins"],
            "normalized": [80.0, 20.0, np.nan],
        }
    )


def write_two_tables(store: SnapshotStore, as_of: date, offset: float = 0.0) -> Path:
    tables = {"scores": scores_frame(offset), "measures": measures_frame()}
    return store.write(as_of, tables, {"scorecard_versions": {"default": "v1"}})


def file_identities(partition: Path) -> dict[str, tuple[int, int, bytes]]:
    """Inode, modification time and bytes of each file in a partition."""
    identities = {}
    for path in sorted(partition.iterdir()):
        stat = path.stat()
        identities[path.name] = (stat.st_ino, stat.st_mtime_ns, path.read_bytes())
    return identities


def leftovers(folder: Path, kind: str) -> list[str]:
    inner = folder / kind
    return sorted(entry.name for entry in inner.iterdir()) if inner.is_dir() else []


# Round trip and metadata


def test_write_read_round_trip_keeps_dtypes(tmp_path):
    store = SnapshotStore(tmp_path / "snapshots")
    frame = scores_frame()

    store.write(MAY_1, {"scores": frame}, {})
    read_back = store.read(MAY_1, "scores")

    pd.testing.assert_frame_equal(read_back, frame)
    assert read_back["renewal_date"].tolist()[0] == date(2021, 1, 31)
    assert read_back["renewal_date"].isna().tolist() == [False, True, False]
    assert read_back["band"].isna().tolist() == [False, True, False]
    assert read_back["overridden"].dtype == bool
    assert str(read_back["computed_at"].dtype.tz) == "UTC"


def test_write_returns_hive_partition_folder(tmp_path):
    store = SnapshotStore(tmp_path / "snapshots")

    path = write_two_tables(store, MAY_1)

    assert path == tmp_path / "snapshots" / "as_of=2020-05-01"
    assert sorted(p.name for p in path.iterdir()) == [
        "measures.parquet",
        "run.json",
        "scores.parquet",
    ]


def test_run_info_adds_date_row_counts_created_at(tmp_path):
    store = SnapshotStore(tmp_path / "snapshots")
    before = datetime.now(UTC)

    store.write(
        MAY_1,
        {"scores": scores_frame(), "measures": measures_frame().head(2)},
        {"scorecard_versions": {"default": "v1"}, "data_through": date(2020, 4, 30)},
    )
    info = store.run_info(MAY_1)

    assert info["as_of"] == "2020-05-01"
    assert info["row_counts"] == {"scores": 3, "measures": 2}
    assert info["scorecard_versions"] == {"default": "v1"}
    assert info["data_through"] == "2020-04-30"
    assert datetime.fromisoformat(info["created_at"]) >= before


def test_run_info_keeps_given_created_at(tmp_path):
    store = SnapshotStore(tmp_path / "snapshots")
    created = datetime(2020, 5, 1, 7, 30, tzinfo=UTC)

    store.write(MAY_1, {"scores": scores_frame()}, {"created_at": created})

    assert store.run_info(MAY_1)["created_at"] == "2020-05-01T07:30:00+00:00"


def test_dates_latest_exists(tmp_path):
    store = SnapshotStore(tmp_path / "snapshots")
    for as_of in (MAY_3, MAY_1):
        write_two_tables(store, as_of)
    (tmp_path / "snapshots" / "as_of=not-a-date").mkdir()

    assert store.dates() == [MAY_1, MAY_3]
    assert store.latest() == MAY_3
    assert store.latest(on_or_before=MAY_2) == MAY_1
    assert store.latest(on_or_before=date(2020, 4, 30)) is None
    assert store.exists(MAY_1)
    assert not store.exists(MAY_2)
    assert store.tables(MAY_1) == ["measures", "scores"]


def test_empty_store_lists_nothing(tmp_path):
    store = SnapshotStore(tmp_path / "never-written")

    assert store.dates() == []
    assert store.latest() is None
    assert not (tmp_path / "never-written").exists()


def test_read_many_adds_as_of_column(tmp_path):
    store = SnapshotStore(tmp_path / "snapshots")
    for offset, as_of in enumerate((MAY_1, MAY_2, MAY_3)):
        write_two_tables(store, as_of, offset=float(offset))

    history = store.read_many("scores", dates=[MAY_3, MAY_1])

    assert history.columns[0] == "as_of"
    assert history["as_of"].tolist() == [MAY_1] * 3 + [MAY_3] * 3
    assert history["score"].tolist()[3] == 57.5
    assert history.index.tolist() == list(range(6))
    assert len(store.read_many("scores")) == 9


def test_read_many_keeps_stored_as_of_column(tmp_path):
    store = SnapshotStore(tmp_path / "snapshots")
    frame = scores_frame()
    frame["as_of"] = pd.Timestamp(MAY_1)

    store.write(MAY_1, {"scores": frame}, {})
    history = store.read_many("scores")

    assert history.columns.tolist() == frame.columns.tolist()
    assert history["as_of"].tolist() == [pd.Timestamp(MAY_1)] * 3


def test_duckdb_reads_hive_partitioned_glob(tmp_path):
    store = SnapshotStore(tmp_path / "snapshots")
    write_two_tables(store, MAY_1)
    write_two_tables(store, MAY_2, offset=10.0)

    source = f"read_parquet('{store.parquet_glob('scores')}', hive_partitioning = true)"
    query = (
        f"SELECT as_of, count(*) AS rows, sum(score) AS total FROM {source} "
        "GROUP BY as_of ORDER BY as_of"
    )
    relation = duckdb.sql(query)

    assert relation.types[0] == duckdb.sqltype("DATE")
    assert relation.fetchall() == [(MAY_1, 3, 67.5), (MAY_2, 3, 87.5)]


def test_duckdb_sees_matching_as_of_column(tmp_path):
    store = SnapshotStore(tmp_path / "snapshots")
    frame = measures_frame()
    frame["as_of"] = MAY_2
    store.write(MAY_2, {"measures": frame}, {})

    rows = duckdb.sql(
        f"SELECT DISTINCT as_of FROM read_parquet('{store.parquet_glob('measures')}', "
        "hive_partitioning = true)"
    ).fetchall()

    assert rows == [(MAY_2,)]


# Errors


def test_read_missing_date_says_how_to_create_it(tmp_path):
    folder = tmp_path / "snapshots"
    store = SnapshotStore(folder)
    write_two_tables(store, MAY_2)

    expected = (
        f"no snapshot for 2020-05-01 in {folder}; run "
        "`healthscore score --as-of 2020-05-01` first"
    )
    with pytest.raises(SnapshotNotFoundError, match=expected):
        store.read(MAY_1, "scores")
    with pytest.raises(SnapshotNotFoundError, match=expected):
        store.run_info(MAY_1)
    with pytest.raises(SnapshotNotFoundError, match=expected):
        store.read_many("scores", dates=[MAY_2, MAY_1])


def test_read_missing_table_lists_stored_tables(tmp_path):
    store = SnapshotStore(tmp_path / "snapshots")
    write_two_tables(store, MAY_1)

    with pytest.raises(
        SnapshotNotFoundError,
        match="has no table 'components'; its tables are: measures, scores",
    ):
        store.read(MAY_1, "components")


def test_read_many_of_empty_store_raises(tmp_path):
    folder = tmp_path / "snapshots"
    store = SnapshotStore(folder)

    with pytest.raises(
        SnapshotNotFoundError,
        match=f"no snapshots in {folder}; run `healthscore score --as-of DATE` first",
    ):
        store.read_many("scores")


@pytest.mark.parametrize(
    ("as_of", "tables", "run_info", "message"),
    [
        (
            datetime(2020, 5, 1, 12, 0),
            {"scores": scores_frame()},
            {},
            r"as_of must be a datetime.date, got "
            r"datetime.datetime\(2020, 5, 1, 12, 0\)",
        ),
        (MAY_1, {}, {}, "no tables given for the snapshot of 2020-05-01"),
        (
            MAY_1,
            {"../scores": scores_frame()},
            {},
            r"invalid table name '../scores'; use letters, digits and underscores",
        ),
        (
            MAY_1,
            {"scores": [1, 2]},
            {},
            "table 'scores' must be a pandas DataFrame or a pyarrow Table, got list",
        ),
        (
            MAY_1,
            {"scores": pd.DataFrame({"as_of": [MAY_1, MAY_2]})},
            {},
            "table 'scores' has an as_of column with 2020-05-01, 2020-05-02 but the "
            "snapshot is for 2020-05-01; set every value to the snapshot date or drop "
            "the column",
        ),
        (
            MAY_1,
            {"scores": scores_frame()},
            {"row_counts": 3},
            "run_info must not contain row_counts; the store fills in as_of and "
            "row_counts itself",
        ),
        (
            MAY_1,
            {"scores": scores_frame()},
            {"source": object()},
            "run_info for 2020-05-01 cannot be stored as JSON: <object object at .*> "
            "of type object is not JSON serializable",
        ),
        (
            MAY_1,
            {"scores": scores_frame()},
            {"coverage": float("nan")},
            "run_info for 2020-05-01 cannot be stored as JSON: Out of range float",
        ),
    ],
)
def test_write_rejects_invalid_input(tmp_path, as_of, tables, run_info, message):
    folder = tmp_path / "snapshots"
    store = SnapshotStore(folder)

    with pytest.raises(ValueError, match=message):
        store.write(as_of, tables, run_info)

    assert store.dates() == []
    assert leftovers(folder, ".staging") == []


# Replacing a date


def test_rewrite_replaces_date_and_leaves_others(tmp_path):
    folder = tmp_path / "snapshots"
    store = SnapshotStore(folder)
    for as_of in (MAY_1, MAY_2, MAY_3):
        write_two_tables(store, as_of)
    untouched = {
        as_of: file_identities(store.partition_path(as_of)) for as_of in (MAY_1, MAY_3)
    }

    store.write(MAY_2, {"scores": scores_frame(offset=30.0)}, {"rerun": True})

    assert store.read(MAY_2, "scores")["score"].tolist()[0] == 85.5
    assert store.tables(MAY_2) == ["scores"]
    assert store.run_info(MAY_2)["rerun"] is True
    for as_of, identities in untouched.items():
        assert file_identities(store.partition_path(as_of)) == identities
    assert leftovers(folder, ".staging") == []
    assert leftovers(folder, ".trash") == []


def test_failed_serialisation_keeps_previous_snapshot(tmp_path):
    folder = tmp_path / "snapshots"
    store = SnapshotStore(folder)
    write_two_tables(store, MAY_1)
    before = file_identities(store.partition_path(MAY_1))
    broken = pd.DataFrame({"payload": [object(), object()]})

    with pytest.raises(
        ValueError,
        match=r"table 'broken' of the snapshot of 2020-05-01 cannot be stored as "
        r"Parquet: .*Conversion failed for column payload with type object",
    ):
        store.write(MAY_1, {"scores": scores_frame(5.0), "broken": broken}, {})

    assert file_identities(store.partition_path(MAY_1)) == before
    assert leftovers(folder, ".staging") == []
    assert SnapshotStore(folder).recover() == []
    pd.testing.assert_frame_equal(store.read(MAY_1, "scores"), scores_frame())


def test_write_many_stores_each_date(tmp_path):
    folder = tmp_path / "snapshots"
    store = SnapshotStore(folder)
    write_two_tables(store, MAY_1)

    targets = store.write_many(
        [
            (MAY_1, {"scores": scores_frame(30.0)}, {"rerun": True}),
            (MAY_2, {"scores": scores_frame(), "measures": measures_frame()}, {}),
        ]
    )

    assert targets == [store.partition_path(MAY_1), store.partition_path(MAY_2)]
    assert store.dates() == [MAY_1, MAY_2]
    assert store.tables(MAY_1) == ["scores"]
    assert store.run_info(MAY_1)["rerun"] is True
    assert store.run_info(MAY_2)["row_counts"] == {"scores": 3, "measures": 3}
    pd.testing.assert_frame_equal(store.read(MAY_1, "scores"), scores_frame(30.0))
    pd.testing.assert_frame_equal(store.read(MAY_2, "measures"), measures_frame())
    assert leftovers(folder, ".staging") == []
    assert leftovers(folder, ".trash") == []


def test_write_many_failure_stores_nothing(tmp_path):
    folder = tmp_path / "snapshots"
    store = SnapshotStore(folder)
    write_two_tables(store, MAY_1)
    before = file_identities(store.partition_path(MAY_1))
    broken = pd.DataFrame({"payload": [object(), object()]})

    with pytest.raises(
        ValueError, match="table 'broken' of the snapshot of 2020-05-02"
    ):
        store.write_many(
            [
                (MAY_1, {"scores": scores_frame(5.0)}, {}),
                (MAY_2, {"broken": broken}, {}),
                (MAY_3, {"scores": scores_frame()}, {}),
            ]
        )

    assert store.dates() == [MAY_1]
    assert file_identities(store.partition_path(MAY_1)) == before
    assert leftovers(folder, ".staging") == []


def test_write_many_rejects_repeated_date(tmp_path):
    store = SnapshotStore(tmp_path / "snapshots")
    snapshot = (MAY_1, {"scores": scores_frame()}, {})

    with pytest.raises(ValueError, match="the snapshot of 2020-05-01 is given twice"):
        store.write_many([snapshot, snapshot])

    assert store.dates() == []


def test_arrow_dictionary_reads_back_as_text(tmp_path):
    store = SnapshotStore(tmp_path / "snapshots")
    frame = measures_frame()
    table = pa.Table.from_pandas(frame)
    encoded = table.set_column(
        0, "account_id", pc.dictionary_encode(table["account_id"])
    )

    store.write(MAY_1, {"measures": encoded}, {})

    pd.testing.assert_frame_equal(store.read(MAY_1, "measures"), frame)


def test_failed_swap_rolls_back_old_partition(tmp_path, monkeypatch):
    folder = tmp_path / "snapshots"
    store = SnapshotStore(folder)
    write_two_tables(store, MAY_1)
    before = file_identities(store.partition_path(MAY_1))
    fail_on_call(monkeypatch, failing_calls={2})

    with pytest.raises(OSError, match="simulated failure of rename 2"):
        write_two_tables(store, MAY_1, offset=5.0)

    assert file_identities(store.partition_path(MAY_1)) == before
    assert leftovers(folder, ".staging") == []
    assert leftovers(folder, ".trash") == []


def test_recover_restores_after_crash_between_renames(tmp_path, monkeypatch):
    folder = tmp_path / "snapshots"
    store = SnapshotStore(folder)
    write_two_tables(store, MAY_1)
    write_two_tables(store, MAY_2)
    before = file_identities(store.partition_path(MAY_1))
    # Every rename after the first fails, so the writer cannot roll back either.
    fail_on_call(monkeypatch, failing_calls={2, 3})

    with pytest.raises(OSError, match="simulated failure of rename 2"):
        write_two_tables(store, MAY_1, offset=5.0)
    assert not store.exists(MAY_1)
    assert len(leftovers(folder, ".trash")) == 1

    monkeypatch.undo()
    reopened = SnapshotStore(folder)

    assert reopened.dates() == [MAY_1, MAY_2]
    assert file_identities(reopened.partition_path(MAY_1)) == before
    assert leftovers(folder, ".trash") == []
    pd.testing.assert_frame_equal(reopened.read(MAY_1, "scores"), scores_frame())


def test_recover_returns_restored_dates(tmp_path):
    folder = tmp_path / "snapshots"
    store = SnapshotStore(folder)
    write_two_tables(store, MAY_1)
    (folder / ".trash").mkdir()
    os.rename(store.partition_path(MAY_1), folder / ".trash" / "2020-05-01-abc")

    assert store.recover() == [MAY_1]
    assert store.recover() == []
    assert store.dates() == [MAY_1]


def test_recover_discards_trash_of_finished_swap(tmp_path):
    folder = tmp_path / "snapshots"
    store = SnapshotStore(folder)
    write_two_tables(store, MAY_1, offset=1.0)
    (folder / ".trash").mkdir()
    old = folder / ".trash" / "2020-05-01-0123"
    shutil.copytree(store.partition_path(MAY_1), old)
    (folder / ".staging" / "2020-05-01-4567").mkdir(parents=True)

    assert SnapshotStore(folder).recover() == []

    assert leftovers(folder, ".trash") == []
    assert leftovers(folder, ".staging") == []
    assert store.read(MAY_1, "scores")["score"].tolist()[0] == 56.5


def test_open_skips_recovery_while_writer_holds_lock(tmp_path):
    folder = tmp_path / "snapshots"
    write_two_tables(SnapshotStore(folder), MAY_1)
    in_progress = folder / ".staging" / "2020-05-02-live"
    in_progress.mkdir(parents=True)

    with open(folder / ".lock", "a+b") as lock:
        fcntl.flock(lock.fileno(), fcntl.LOCK_EX)
        store = SnapshotStore(folder)
        assert in_progress.is_dir()
        assert store.dates() == [MAY_1]
        fcntl.flock(lock.fileno(), fcntl.LOCK_UN)

    SnapshotStore(folder)
    assert not in_progress.exists()


def fail_on_call(monkeypatch: pytest.MonkeyPatch, failing_calls: set[int]) -> None:
    """Make the listed calls of os.rename (counted from 1) raise OSError."""
    real_rename = os.rename
    calls = 0

    def rename(source, destination):
        nonlocal calls
        calls += 1
        if calls in failing_calls:
            raise OSError(f"simulated failure of rename {calls}")
        real_rename(source, destination)

    monkeypatch.setattr(snapshots_module.os, "rename", rename)


# A writer killed by SIGKILL

KILLED_WRITER = """
import sys
from datetime import date
from pathlib import Path

import numpy as np
import pandas as pd

from healthscore.store import SnapshotStore

frame = pd.DataFrame({"value": np.arange(2_000_000, dtype="float64")})
tables = {f"table_{i}": frame for i in range(40)}
SnapshotStore(Path(sys.argv[1])).write(date(2020, 5, 1), tables, {})
"""


def test_sigkill_during_write_keeps_old_snapshot(tmp_path):
    folder = tmp_path / "snapshots"
    write_two_tables(SnapshotStore(folder), MAY_1)
    before = file_identities(folder / "as_of=2020-05-01")

    writer = subprocess.Popen([sys.executable, "-c", KILLED_WRITER, str(folder)])
    try:
        wait_for_staged_file(folder / ".staging", writer)
    finally:
        writer.send_signal(signal.SIGKILL)
        writer.wait()

    assert writer.returncode == -signal.SIGKILL
    assert len(leftovers(folder, ".staging")) == 1
    assert file_identities(folder / "as_of=2020-05-01") == before

    store = SnapshotStore(folder)

    assert leftovers(folder, ".staging") == []
    assert store.dates() == [MAY_1]
    pd.testing.assert_frame_equal(store.read(MAY_1, "scores"), scores_frame())
    pd.testing.assert_frame_equal(store.read(MAY_1, "measures"), measures_frame())


def wait_for_staged_file(staging: Path, writer: subprocess.Popen) -> None:
    """Poll until the writer has started a Parquet file in its staging folder."""
    deadline = time.monotonic() + 60
    while not list(staging.glob("*/*.parquet")):
        if writer.poll() is not None:
            pytest.fail(f"writer exited with {writer.returncode} before staging a file")
        if time.monotonic() > deadline:
            pytest.fail(f"no staged file in {staging} after 60 s")
        time.sleep(0.002)


def test_run_json_is_indented_utf8(tmp_path):
    store = SnapshotStore(tmp_path / "snapshots")
    store.write(MAY_1, {"scores": scores_frame()}, {"owner": "Zoë"})

    text = (store.partition_path(MAY_1) / "run.json").read_text(encoding="utf-8")

    assert json.loads(text)["owner"] == "Zoë"
    assert '"owner": "Zoë"' in text
    assert text.endswith("}\n")
