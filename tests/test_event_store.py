"""The event store: ingest, daily rollups, purges and recovery, on real files."""

from __future__ import annotations

from datetime import date, datetime

import pandas as pd
import pyarrow.parquet as pq
import pytest

from healthscore.engine import Engine
from healthscore.sources.ingest import IngestError, event_store, ingest_files
from project_factory import ACCOUNTS_CSV, minimal_config, write_project

EVENTS_JAN = """account_id,timestamp,user,event_type,value
a1,2026-01-01T09:00:00,u1,login,2
a1,2026-01-01T17:30:00,u2,login,5
a2,2026-01-01T10:00:00,u3,export,
a1,2026-01-02T08:00:00,u1,login,-1
"""
BAD_TIMESTAMP = """account_id,timestamp,user,event_type,value
a1,2026-01-03T09:00:00,u1,login,1
a2,yesterday,u3,login,1
"""


def store_config(**extra):
    config = minimal_config()
    config["sources"]["usage"] = {"kind": "events", "path": "store"}
    config["metrics"]["usage_28d"] = {
        "type": "count",
        "source": "usage",
        "window": "28d",
    }
    config.update(extra)
    return config


@pytest.fixture
def project(tmp_path):
    return write_project(
        tmp_path / "p",
        store_config(),
        {
            "accounts.csv": ACCOUNTS_CSV,
            "events.csv": "account_id,timestamp\na1,2026-01-01T00:00:00\n",
            "in/jan.csv": EVENTS_JAN,
            "in/bad.csv": BAD_TIMESTAMP,
        },
    )


def test_ingest_writes_day_partitions(project):
    results = ingest_files(project, "usage", [project.root / "in/jan.csv"])

    assert results[0].rows == 4
    assert results[0].days == [date(2026, 1, 1), date(2026, 1, 2)]
    folder = project.root / ".healthscore/events/usage"
    assert len(list((folder / "day=2026-01-01").glob("part-*.parquet"))) == 1
    assert len(list((folder / "day=2026-01-02").glob("part-*.parquet"))) == 1
    raw = event_store(project).read_raw("usage").to_pandas()
    assert sorted(raw["user"]) == ["u1", "u1", "u2", "u3"]
    assert raw["value"].isna().sum() == 1


def test_rollup_matches_hand_computation(project):
    ingest_files(project, "usage", [project.root / "in/jan.csv"])

    rollup = event_store(project).read_rollup("usage").to_pandas()

    rows = {(r.account_id, r.day): r for r in rollup.itertuples()}
    assert set(rows) == {
        ("a1", date(2026, 1, 1)),
        ("a2", date(2026, 1, 1)),
        ("a1", date(2026, 1, 2)),
    }
    first = rows[("a1", date(2026, 1, 1))]
    assert first.rows == 2
    assert first.value_sum == 7.0
    assert first.value_min == 2.0
    assert first.value_max == 5.0
    assert first.first_timestamp == datetime(2026, 1, 1, 9, 0)
    assert first.last_timestamp == datetime(2026, 1, 1, 17, 30)
    empty = rows[("a2", date(2026, 1, 1))]
    assert empty.rows == 1
    assert pd.isna(empty.value_sum)
    assert rows[("a1", date(2026, 1, 2))].value_sum == -1.0


def test_bad_file_stores_nothing(project):
    files = [project.root / "in/jan.csv", project.root / "in/bad.csv"]

    with pytest.raises(IngestError) as raised:
        ingest_files(project, "usage", files)

    message = str(raised.value)
    assert "bad.csv" in message
    assert "row 2 (line 3), column timestamp" in message
    assert "'yesterday'; expected a time as YYYY-MM-DD HH:MM:SS" in message
    assert "nothing was stored" in message
    assert event_store(project).raw_days("usage") == []
    assert event_store(project).rollup_days("usage") == []


def test_same_file_twice_is_skipped(project):
    ingest_files(project, "usage", [project.root / "in/jan.csv"])

    again = ingest_files(project, "usage", [project.root / "in/jan.csv"])

    assert again[0].skipped
    assert event_store(project).read_raw("usage").num_rows == 4


def test_append_updates_rollup_of_day(project):
    store = event_store(project)
    ingest_files(project, "usage", [project.root / "in/jan.csv"])
    extra = pd.DataFrame(
        {
            "account_id": ["a1"],
            "timestamp": pd.to_datetime(["2026-01-01T20:00:00"]).as_unit("us"),
            "value": [10.0],
        }
    )

    store.append("usage", extra, numeric=["value"])

    rollup = store.read_rollup("usage", date(2026, 1, 1)).to_pandas()
    a1 = rollup[rollup["account_id"] == "a1"].iloc[0]
    assert a1["rows"] == 3
    assert a1["value_sum"] == 17.0
    assert a1["value_max"] == 10.0
    assert a1["last_timestamp"] == datetime(2026, 1, 1, 20, 0)
    assert store.read_raw("usage", date(2026, 1, 1)).num_rows == 4


def test_append_rejects_missing_account(project):
    rows = pd.DataFrame(
        {
            "account_id": ["a1", None],
            "timestamp": pd.to_datetime(["2026-01-01", "2026-01-02"]).as_unit("us"),
        }
    )

    with pytest.raises(ValueError, match="the first at row 2"):
        event_store(project).append("usage", rows, numeric=[])

    assert event_store(project).raw_days("usage") == []


def test_store_source_reads_stored_rows(project):
    ingest_files(project, "usage", [project.root / "in/jan.csv"])

    engine = Engine.open(project)

    rows = engine.con.con.execute(
        "SELECT account_id, count(*) FROM valid_usage GROUP BY 1 ORDER BY 1"
    ).fetchall()
    assert rows == [("a1", 3), ("a2", 1)]


def test_store_source_without_rows_is_empty(project):
    engine = Engine.open(project)

    count = engine.con.con.execute("SELECT count(*) FROM valid_usage").fetchone()

    assert count == (0,)


def test_purge_keeps_recent_and_unmatched_days(project):
    store = event_store(project)
    ingest_files(project, "usage", [project.root / "in/jan.csv"])
    late = pd.DataFrame(
        {
            "account_id": ["a1", "a2"],
            "timestamp": pd.to_datetime(["2026-01-05", "2026-01-06"]).as_unit("us"),
            "value": [1.0, 1.0],
        }
    )
    store.append("usage", late, numeric=["value"])
    # A rollup that no longer counts the raw rows must keep its day.
    (project.root / ".healthscore/daily/usage/day=2026-01-02/rollup.parquet").unlink()

    result = store.purge("usage", before=date(2026, 1, 6))

    assert result.purged == {date(2026, 1, 1): 3, date(2026, 1, 5): 1}
    assert result.kept == {date(2026, 1, 2): "no rollup"}
    assert store.raw_days("usage") == [date(2026, 1, 2), date(2026, 1, 6)]
    assert store.purged_days("usage") == [date(2026, 1, 1), date(2026, 1, 5)]
    assert store.rollup_days("usage") == [
        date(2026, 1, 1),
        date(2026, 1, 5),
        date(2026, 1, 6),
    ]


def test_purge_dry_run_deletes_nothing(project):
    store = event_store(project)
    ingest_files(project, "usage", [project.root / "in/jan.csv"])

    result = store.purge("usage", before=date(2026, 2, 1), dry_run=True)

    assert sum(result.purged.values()) == 4
    assert store.raw_days("usage") == [date(2026, 1, 1), date(2026, 1, 2)]
    assert store.purged_days("usage") == []


def test_rows_for_purged_day_go_to_rollup(project):
    store = event_store(project)
    ingest_files(project, "usage", [project.root / "in/jan.csv"])
    store.purge("usage", before=date(2026, 1, 2))
    late = pd.DataFrame(
        {
            "account_id": ["a1"],
            "timestamp": pd.to_datetime(["2026-01-01T23:00:00"]).as_unit("us"),
            "value": [3.0],
        }
    )

    result = store.append("usage", late, numeric=["value"])

    assert result.rollup_only_days == [date(2026, 1, 1)]
    assert date(2026, 1, 1) not in store.raw_days("usage")
    rollup = store.read_rollup("usage", date(2026, 1, 1)).to_pandas()
    a1 = rollup[rollup["account_id"] == "a1"].iloc[0]
    assert a1["rows"] == 3
    assert a1["value_sum"] == 10.0
    assert a1["first_timestamp"] == datetime(2026, 1, 1, 9, 0)
    assert a1["last_timestamp"] == datetime(2026, 1, 1, 23, 0)


def test_interrupted_purge_is_finished(project):
    store = event_store(project)
    ingest_files(project, "usage", [project.root / "in/jan.csv"])
    folder = project.root / ".healthscore/events/usage"
    # A purge that stopped after moving the day aside.
    (folder / "day=2026-01-01").rename(folder / ".purging-day=2026-01-01")
    engine = Engine.open(project)
    seen = engine.con.con.execute("SELECT count(*) FROM valid_usage").fetchone()
    assert seen == (1,)

    store.purge("usage", before=date(2026, 1, 1))

    assert not (folder / ".purging-day=2026-01-01").exists()
    assert store.purged_days("usage") == [date(2026, 1, 1)]


def test_interrupted_day_swap_is_restored(project):
    store = event_store(project)
    ingest_files(project, "usage", [project.root / "in/jan.csv"])
    folder = project.root / ".healthscore/events/usage"
    # A rewrite that stopped after moving the old day aside, before staging moved in.
    (folder / "day=2026-01-02").rename(folder / ".old-day=2026-01-02")

    store.purge("usage", before=date(2026, 1, 1))

    assert store.raw_days("usage") == [date(2026, 1, 1), date(2026, 1, 2)]
    assert store.read_raw("usage", date(2026, 1, 2)).num_rows == 1


def test_parts_keep_column_types(project):
    ingest_files(project, "usage", [project.root / "in/jan.csv"])

    part = next((project.root / ".healthscore/events/usage").rglob("part-*.parquet"))
    schema = pq.read_schema(part)

    assert str(schema.field("timestamp").type) == "timestamp[us]"
    assert str(schema.field("value").type) == "double"
    assert str(schema.field("account_id").type) == "string"
    assert part.parent.name.startswith("day=2026-01-0")


def test_append_of_changed_type_stores_nothing(project):
    store = event_store(project)
    ingest_files(project, "usage", [project.root / "in/jan.csv"])
    before = sorted(p.name for p in (project.root / ".healthscore").rglob("*"))
    rows = pd.DataFrame(
        {
            "account_id": ["a1", "a1"],
            "timestamp": pd.to_datetime(["2025-12-31", "2026-01-02"]).as_unit("us"),
            "value": ["high", "low"],
        }
    )

    with pytest.raises(ValueError, match="do not fit the columns stored before"):
        store.append("usage", rows, numeric=[])

    after = sorted(p.name for p in (project.root / ".healthscore").rglob("*"))
    assert after == before
    assert store.read_raw("usage").num_rows == 4
