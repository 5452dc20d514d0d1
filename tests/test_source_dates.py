"""Dates and timestamps of source rows: the supported range, infinite values and
the text forms that a date, timestamp or boolean column reads."""

from __future__ import annotations

from datetime import date, datetime
from pathlib import Path

import duckdb
import pytest
from typer.testing import CliRunner

from healthscore.cli import app
from healthscore.config import Project
from healthscore.engine import connect
from healthscore.pipeline import score
from healthscore.sources import SourceReport, load_sources
from project_factory import minimal_config, write_project

ACCOUNTS = "account_id,name\na1,A\na2,B\n"
POINT = datetime(2026, 3, 9)


def reports(project: Project) -> dict[str, SourceReport]:
    sources = load_sources(project, connect(project))
    return {r.source: r for r in sources.report(POINT)}


def subscriptions_project(root: Path, subscriptions: str) -> Project:
    config = minimal_config()
    config["sources"]["subscriptions"] = {
        "kind": "subscriptions",
        "path": "subscriptions.csv",
    }
    config["metrics"]["tenure"] = {"type": "tenure", "source": "subscriptions"}
    files = {
        "accounts.csv": ACCOUNTS,
        "events.csv": "account_id,timestamp\na1,2026-03-01 10:00:00\n",
        "subscriptions.csv": subscriptions,
    }
    return write_project(root, config, files)


@pytest.mark.parametrize(
    ("row", "column"),
    [
        ("a1,2025-01-01,infinity", "end"),
        ("a1,-infinity,", "start"),
        ("a1,2025-01-01,9999-12-31", "end"),
        ("a1,0001-01-01,", "start"),
    ],
)
def test_extreme_subscription_date_excluded(tmp_path, row, column):
    subscriptions = f"account_id,start,end\n{row}\na2,2025-01-01,\n"
    project = subscriptions_project(tmp_path, subscriptions)

    report = reports(project)["subscriptions"]
    run = score(project, date(2026, 3, 9), store=False, monitor=False)

    assert report.rows_used == 1
    assert sum(report.excluded.values()) == 1
    (problem,) = report.excluded
    assert problem.endswith(f":{column}")
    tenure = run.metrics.values["tenure"]
    assert tenure["a2"] > 0


def test_infinite_text_unparseable_with_value(tmp_path):
    subscriptions = "account_id,start,end\na1,2025-01-01,infinity\na2,2025-01-01,\n"
    project = subscriptions_project(tmp_path, subscriptions)

    report = reports(project)["subscriptions"]

    assert report.excluded == {"unparseable_value:end": 1}
    (example,) = report.examples
    assert example.value == "infinity"
    assert example.row == 1


def test_event_times_outside_range_excluded(tmp_path):
    events = (
        "account_id,timestamp\na1,2026-03-01 10:00:00\na2,9999-12-31 23:59:59\n"
        "a2,0001-01-01 00:00:00\na2,1899-12-31 23:59:59\na1,1900-01-01 00:00:00\n"
        "a1,2261-12-31 23:59:59\na2,2262-01-01 00:00:00\n"
    )
    project = write_project(
        tmp_path, minimal_config(), {"accounts.csv": ACCOUNTS, "events.csv": events}
    )

    report = reports(project)["events"]

    assert report.excluded == {
        "time_out_of_range:timestamp": 4,
        "after_as_of:timestamp": 1,
    }
    out_of_range = [e.row for e in report.examples if e.reason == "time_out_of_range"]
    assert sorted(out_of_range) == [2, 3, 4, 7]
    assert report.rows_used == 2


def test_backfill_with_far_future_event(tmp_path):
    events = (
        "account_id,timestamp\na1,2026-03-01 10:00:00\na2,2026-03-02 10:00:00\n"
        "a2,9999-12-31 23:59:59\n"
    )
    write_project(
        tmp_path, minimal_config(), {"accounts.csv": ACCOUNTS, "events.csv": events}
    )
    args = ["backfill", "--from", "2026-03-02", "--to", "2026-03-09"]

    result = CliRunner().invoke(
        app, [*args, "--project", str(tmp_path)], prog_name="healthscore"
    )

    assert result.exception is None, result.output
    assert result.exit_code == 0, result.output
    assert "stored 2 snapshots" in result.output


def test_infinite_table_values_excluded(tmp_path):
    database = tmp_path / "warehouse.duckdb"
    with duckdb.connect(str(database)) as con:
        con.execute("CREATE SCHEMA crm")
        con.execute("CREATE TABLE crm.accounts (account_id VARCHAR, name VARCHAR)")
        con.execute("INSERT INTO crm.accounts VALUES ('a1', 'A'), ('a2', 'B')")
        con.execute(
            "CREATE TABLE crm.subscriptions (account_id VARCHAR, start DATE, "
            '"end" DATE)'
        )
        con.execute(
            "INSERT INTO crm.subscriptions VALUES ('a1', DATE '2025-01-01', "
            "DATE 'infinity'), ('a2', DATE '-infinity', NULL), "
            "('a2', DATE '2025-01-01', NULL)"
        )
        con.execute("CREATE TABLE crm.events (account_id VARCHAR, timestamp TIMESTAMP)")
        con.execute(
            "INSERT INTO crm.events VALUES ('a1', TIMESTAMP '2026-03-01 10:00:00'), "
            "('a2', TIMESTAMP 'infinity')"
        )
    config = minimal_config()
    config["sources"] = {
        name: {
            "kind": name,
            "table": f"crm.{name}",
            "connection": f"duckdb://{database}",
        }
        for name in ("accounts", "subscriptions", "events")
    }
    config["metrics"]["tenure"] = {"type": "tenure", "source": "subscriptions"}
    project = write_project(tmp_path, config, {})

    found = reports(project)
    run = score(project, date(2026, 3, 9), store=False, monitor=False)

    assert found["subscriptions"].excluded == {
        "time_out_of_range:end": 1,
        "time_out_of_range:start": 1,
    }
    assert found["events"].excluded == {"time_out_of_range:timestamp": 1}
    assert found["events"].rows_used == 1
    # a1 has no usable subscription, so only a2 is in the population.
    assert list(run.result.scores["account_id"]) == ["a2"]


#: Timestamp texts and whether a timestamp column reads them.
TIMESTAMP_TEXTS = {
    "2026-03-07": True,
    "2026-03-07 12:00": True,
    "2026-03-07 12:00:00": True,
    "2026-03-07T12:00:00": True,
    "2026-03-07 12:00:00.5": True,
    "2026-03-07 12:00:00.123456789": True,
    "2026-03-07 12:00:00Z": True,
    "2026-03-07 12:00:00+01": True,
    "2026-03-07 12:00:00+0100": True,
    "2026-03-07 12:00:00-05:30": True,
    "2026-03-07T12:00Z": False,
    "2026-03-07  12:00:00": False,
    "2026/03/07 12:00:00": False,
    "2026-03-06 24:00:00": False,
    "2026-03-07 12:00:00 +01:00": False,
    "2026-03-07 12:00:00 UTC": False,
    "2026-03-07 12": False,
    "2026-3-7 12:00:00": False,
    " 2026-03-07 12:00:00": False,
    "2026-02-30 12:00:00": False,
    "infinity": False,
}

#: Boolean texts and whether a boolean column reads them.
BOOLEAN_TEXTS = {
    "true": True,
    "FALSE": True,
    "Yes": True,
    "n": True,
    "1": True,
    " true": False,
    "FALSE ": False,
    "on": False,
    "2": False,
}


def odd_texts_project(root: Path) -> Project:
    """A project whose row i of each file has the i-th text of the tables above."""
    names = [f"a{index}" for index in range(len(TIMESTAMP_TEXTS))]
    booleans = list(BOOLEAN_TEXTS) + ["true"] * (len(names) - len(BOOLEAN_TEXTS))
    accounts = "account_id,vip\n" + "".join(
        f'{name},"{flag}"\n' for name, flag in zip(names, booleans, strict=True)
    )
    events = "account_id,timestamp\n" + "".join(
        f'{name},"{text}"\n' for name, text in zip(names, TIMESTAMP_TEXTS, strict=True)
    )
    config = minimal_config(timezone="Europe/Berlin")
    config["sources"]["accounts"]["attributes"] = {"vip": "boolean"}
    return write_project(root, config, {"accounts.csv": accounts, "events.csv": events})


def test_timestamp_and_boolean_texts(tmp_path):
    project = odd_texts_project(tmp_path)
    sources = load_sources(project, connect(project))

    events = sources.con.raw_sql(
        "SELECT _problem IS NULL FROM source_events ORDER BY _row"
    ).fetchall()
    accounts = sources.con.raw_sql(
        "SELECT _problem IS NULL FROM source_accounts ORDER BY _row"
    ).fetchall()

    read = dict(zip(TIMESTAMP_TEXTS, [row[0] for row in events], strict=True))
    assert read == TIMESTAMP_TEXTS
    flags = [row[0] for row in accounts][: len(BOOLEAN_TEXTS)]
    assert dict(zip(BOOLEAN_TEXTS, flags, strict=True)) == BOOLEAN_TEXTS


def test_parquet_time_outside_range_excluded(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    moments = [datetime(2026, 3, 1, 10), datetime(9999, 12, 31, 23, 59, 59)]
    events = pa.table(
        {
            "account_id": ["a1", "a2"],
            "timestamp": pa.array(moments, pa.timestamp("us")),
        }
    )
    config = minimal_config()
    config["sources"]["events"]["path"] = "events.parquet"
    pq.write_table(events, tmp_path / "events.parquet")
    project = write_project(tmp_path, config, {"accounts.csv": ACCOUNTS})

    report = reports(project)["events"]

    assert report.excluded == {"time_out_of_range:timestamp": 1}
    assert report.rows_used == 1
