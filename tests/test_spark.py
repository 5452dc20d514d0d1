"""The Spark engine against DuckDB: the same rows, checks, metrics, scores, snapshots.

One local Spark session (two cores, loopback only, no UI) serves the whole module,
because starting Spark costs far more than any query here.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
from datetime import date, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml

from healthscore.config import ConfigError, load_project
from healthscore.engine import Engine
from healthscore.pipeline import score
from healthscore.sources import SourceError, SourceReport, as_of_point
from healthscore.store.snapshots import SnapshotStore
from project_factory import ACCOUNTS_CSV, minimal_config, write_project
from test_sources_values import number_ids_project

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "socialnet"
SPARK_MISSING = "requires: Java 17 and pyspark (pip install -e '.[spark]')"
AS_OF_DATES = [date(2020, 3, 1), date(2020, 4, 1), date(2020, 5, 10)]
# py4j leaves its sockets to the garbage collector, and PySpark 4.0 passes pandas 3
# the deprecated copy keyword when it converts results.
pytestmark = [
    pytest.mark.filterwarnings(
        "ignore:The copy keyword is deprecated:pandas.errors.Pandas4Warning:pyspark"
    ),
    pytest.mark.filterwarnings("ignore:unclosed <socket.socket:ResourceWarning"),
    pytest.mark.filterwarnings(
        "ignore:Exception ignored in. <socket.socket"
        ":pytest.PytestUnraisableExceptionWarning"
    ),
]
TABLE_KEYS = {
    "scores": ["account_id"],
    "components": ["account_id", "component"],
    "measures": ["account_id", "metric"],
    "metrics": ["account_id", "metric"],
}


@pytest.fixture(scope="module")
def spark() -> Any:
    if shutil.which("java") is None or importlib.util.find_spec("pyspark") is None:
        pytest.skip(SPARK_MISSING)
    from pyspark.sql import SparkSession

    session = (
        SparkSession.builder.master("local[2]")
        .appName("healthscore-tests")
        .config("spark.ui.enabled", "false")
        .config("spark.driver.host", "127.0.0.1")
        .config("spark.driver.bindAddress", "127.0.0.1")
        .config("spark.sql.shuffle.partitions", "2")
        .config("spark.ui.showConsoleProgress", "false")
        # Splits of 16 KiB, so that files of this module span several partitions as
        # large files do, and example row numbers are checked across partitions.
        .config("spark.sql.files.maxPartitionBytes", "16k")
        .getOrCreate()
    )
    session.sparkContext.setLogLevel("ERROR")
    yield session
    session.stop()


@pytest.fixture(scope="module")
def socialnet(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The socialnet example as two projects, `duckdb/` and `spark/`.

    Both project files are the example's, with `engine: spark` in the second; they
    read the example's own data files, all 8.8 million events.
    """
    root = tmp_path_factory.mktemp("socialnet")
    config = yaml.safe_load((EXAMPLE / "healthscore.yml").read_text())
    for source in config["sources"].values():
        source["path"] = str(EXAMPLE / source["path"])
        for lookup in source.get("lookups", {}).values():
            lookup["path"] = str(EXAMPLE / lookup["path"])
    for engine in ("duckdb", "spark"):
        folder = root / engine
        folder.mkdir()
        config["engine"] = engine
        (folder / "healthscore.yml").write_text(yaml.safe_dump(config, sort_keys=False))
    return root


def sorted_table(frame: pd.DataFrame, keys: list[str]) -> pd.DataFrame:
    return frame.sort_values(keys).reset_index(drop=True)


def comparable(report: SourceReport) -> dict[str, Any]:
    """A report with normalized file paths, since the two projects differ in folder."""
    described = report.to_dict()
    described["files"] = [os.path.normpath(f) for f in described["files"]]
    for example in described["examples"]:
        example["file"] = os.path.normpath(example["file"])
    return described


def test_socialnet_scores_equal_duckdb(spark, socialnet):
    duckdb_project = load_project(socialnet / "duckdb")
    spark_project = load_project(socialnet / "spark")
    assert spark_project.config.engine.kind == "spark"
    # engine: spark starts a session; Spark returns the module's active one.
    spark_engine = Engine.open(spark_project)
    assert spark_engine.con.name == "pyspark"
    duckdb_engine = Engine.open(duckdb_project)
    for as_of in AS_OF_DATES:
        on_spark = score(spark_project, as_of, engine=spark_engine, monitor=False)
        on_duckdb = score(duckdb_project, as_of, engine=duckdb_engine, monitor=False)
        assert len(on_duckdb.result.scores) > 5000
        spark_tables = on_spark.tables()
        for table, keys in TABLE_KEYS.items():
            expected = sorted_table(on_duckdb.tables()[table], keys)
            pd.testing.assert_frame_equal(
                sorted_table(spark_tables[table], keys),
                expected,
                check_exact=False,
                rtol=1e-9,
                atol=1e-9,
                obj=f"{table} as of {as_of}",
            )
            stored = SnapshotStore(socialnet / "spark" / ".healthscore" / "snapshots")
            pd.testing.assert_frame_equal(
                sorted_table(stored.read(as_of, table), keys),
                sorted_table(
                    SnapshotStore(
                        socialnet / "duckdb" / ".healthscore" / "snapshots"
                    ).read(as_of, table),
                    keys,
                ),
                check_exact=False,
                rtol=1e-9,
                atol=1e-9,
                obj=f"stored {table} as of {as_of}",
            )
        assert [comparable(r) for r in on_spark.source_reports] == [
            comparable(r) for r in on_duckdb.source_reports
        ]


ACCOUNTS_WITH_PROBLEMS = (
    ACCOUNTS_CSV + "a2,Globex again,smb,bob,1\n,Nameless,smb,bob,5\n"
)
BAD_EVENTS = """account_id,timestamp,value,event_type
a1,2024-03-01 10:00:00,1,1
,2024-03-01 11:00:00,1,1
a3,not a time,1,1
a3,2024-03-02 10:00:00,abc,1
zz,2024-03-02 10:00:00,1,1
a3,2024-04-20 10:00:00,1,1
a3,2024-03-03 10:00:00,,1
a1,2024-03-04 10:00:00,2,9
a2,2024-03-05 10:00:00,2,1
"""
EVENT_TYPES = "code,name\n1,login\n2,export\n"
BAD_SUBSCRIPTIONS = """account_id,start,end,mrr
a1,2024-01-01,2024-02-01,10
a1,2024-03-01,2024-02-01,10
a3,someday,2024-02-01,10
a3,2024-05-01,,10
"""
PARQUET_EVENTS = pd.DataFrame(
    {
        "account_id": ["a1", None, "a3", "zz"],
        "timestamp": pd.to_datetime(
            [
                "2024-03-01 10:00",
                "2024-03-02 10:00",
                "2024-05-01 00:00",
                "2024-03-02 00:00",
            ]
        ),
        "value": [1.0, 2.0, 3.0, 4.0],
    }
)
JSON_EVENTS = [
    {"account_id": "a1", "timestamp": "2024-03-01 10:00:00", "value": 1},
    {"account_id": "a3", "timestamp": "yesterday", "value": 2},
    {"account_id": "a3", "timestamp": "2024-03-02T10:00:00+01:00", "value": 3},
]


@pytest.fixture
def project_with_bad_rows(tmp_path):
    config = minimal_config()
    config["sources"] = {
        "accounts": {"kind": "accounts", "path": "accounts.csv"},
        "subscriptions": {"kind": "subscriptions", "path": "subscriptions.csv"},
        "events": {
            "kind": "events",
            "path": "events/*.csv",
            "lookups": {
                "event_type": {
                    "path": "event_types.csv",
                    "key": "code",
                    "value": "name",
                }
            },
        },
        "exports": {"kind": "events", "path": "exports.parquet"},
        "logins": {"kind": "events", "path": "logins.jsonl"},
    }
    files = {
        "accounts.csv": ACCOUNTS_WITH_PROBLEMS,
        "subscriptions.csv": BAD_SUBSCRIPTIONS,
        "events/1.csv": "account_id,timestamp,value,event_type\na1,2024-03-01,1,2\n",
        "events/2.csv": BAD_EVENTS,
        "event_types.csv": EVENT_TYPES,
        "exports.parquet": PARQUET_EVENTS,
        "logins.jsonl": JSON_EVENTS,
    }
    return write_project(tmp_path, config, files)


def test_bad_rows_report_equals_duckdb(spark, project_with_bad_rows):
    point = datetime(2024, 4, 1)
    on_spark = Engine.open(project_with_bad_rows, spark=spark).sources.report(point)
    on_duckdb = Engine.open(project_with_bad_rows).sources.report(point)
    assert [r.to_dict() for r in on_spark] == [r.to_dict() for r in on_duckdb]

    reports = {r.source: r for r in on_spark}
    assert reports["accounts"].excluded == {
        "duplicate_account_id:account_id": 2,
        "missing_value:account_id": 1,
    }
    assert reports["subscriptions"].excluded == {
        "after_as_of:start": 1,
        "end_before_start:end": 1,
        "unparseable_value:start": 1,
    }

    events = reports["events"]
    assert events.rows_read == 10
    assert events.excluded == {
        "after_as_of:timestamp": 1,
        "duplicated_account:account_id": 1,
        "missing_value:account_id": 1,
        "unknown_account:account_id": 1,
        "unknown_code:event_type": 1,
        "unparseable_value:timestamp": 1,
        "unparseable_value:value": 1,
    }
    examples = {(Path(e.file).name, e.row, e.column, e.reason) for e in events.examples}
    assert ("2.csv", 3, "timestamp", "unparseable_value") in examples
    assert ("2.csv", 8, "event_type", "unknown_code") in examples

    assert reports["exports"].excluded == {
        "after_as_of:timestamp": 1,
        "missing_value:account_id": 1,
        "unknown_account:account_id": 1,
    }
    assert reports["logins"].excluded == {"unparseable_value:timestamp": 1}


def test_usable_rows_equal_duckdb(spark, project_with_bad_rows):
    on_spark = Engine.open(project_with_bad_rows, spark=spark).sources
    on_duckdb = Engine.open(project_with_bad_rows).sources
    for name in ("events", "exports", "logins", "subscriptions"):
        ours = on_spark.rows(name).execute()
        theirs = on_duckdb.rows(name).execute()
        keys = list(theirs.columns)
        pd.testing.assert_frame_equal(
            sorted_table(ours, keys), sorted_table(theirs, keys), check_dtype=False
        )
    logins = on_spark.rows("logins").execute()
    # 10:00 at +01:00 is 09:00 in UTC, the project's time zone.
    assert sorted(logins["timestamp"]) == [
        pd.Timestamp("2024-03-01 10:00:00"),
        pd.Timestamp("2024-03-02 09:00:00"),
    ]


def test_timestamps_follow_project_time_zone(spark, tmp_path):
    events = (
        "account_id,timestamp\na1,2024-03-31 23:30:00\na1,2024-03-31 23:30:00+00:00\n"
        "a1,2024-04-01T00:30:00+02:00\n"
    )
    project = write_project(
        tmp_path,
        minimal_config(timezone="Europe/Berlin"),
        {"accounts.csv": ACCOUNTS_CSV, "events.csv": events},
    )
    rows = Engine.open(project, spark=spark).sources.rows("events").execute()
    # Naive: Berlin wall-clock time. 23:30 UTC is 01:30 in Berlin on 1 April.
    assert sorted(rows["timestamp"]) == [
        pd.Timestamp("2024-03-31 23:30:00"),
        pd.Timestamp("2024-04-01 00:30:00"),
        pd.Timestamp("2024-04-01 01:30:00"),
    ]


def test_timestamp_format_parsed_on_spark(spark, tmp_path):
    config = minimal_config()
    config["sources"]["events"]["timestamp_format"] = "%d/%m/%Y %H:%M"
    events = "account_id,timestamp\na1,05/03/2024 10:30\na1,2024-03-05\n"
    project = write_project(
        tmp_path, config, {"accounts.csv": ACCOUNTS_CSV, "events.csv": events}
    )
    sources = Engine.open(project, spark=spark).sources
    rows = sources.rows("events").execute()
    assert list(rows["timestamp"]) == [pd.Timestamp("2024-03-05 10:30:00")]
    report = sources.report(as_of_point(project, date(2024, 4, 1)))[1]
    assert report.excluded == {"unparseable_value:timestamp": 1}


def test_engine_shorthand_and_mapping(tmp_path):
    project = write_project(
        tmp_path / "short",
        minimal_config(engine="spark"),
        {"accounts.csv": ACCOUNTS_CSV, "events.csv": "account_id,timestamp\n"},
    )
    assert project.config.engine.kind == "spark"
    settings = {
        "kind": "spark",
        "master": "spark://127.0.0.1:7077",
        "app_name": "scores",
        "spark_conf": {"spark.executor.memory": "2g", "spark.sql.ansi.enabled": False},
    }
    project = write_project(
        tmp_path / "mapping",
        minimal_config(engine=settings),
        {"accounts.csv": ACCOUNTS_CSV, "events.csv": "account_id,timestamp\n"},
    )
    engine = project.config.engine
    assert engine.master == "spark://127.0.0.1:7077"
    assert engine.spark_settings() == {
        "spark.executor.memory": "2g",
        "spark.sql.ansi.enabled": "false",
    }


@pytest.mark.parametrize(
    ("engine", "message"),
    [
        ({"kind": "spark", "threads": 4}, "threads applies only to engine kind duckdb"),
        (
            {"kind": "spark", "memory_limit": "4GB", "temp_directory": "tmp"},
            "memory_limit, temp_directory apply only to engine kind duckdb",
        ),
        ({"master": "local[2]"}, "master applies only to engine kind spark"),
        ("duckdb2", "engine.kind"),
        (
            {"kind": "spark", "master": "local[two]"},
            "invalid Spark master 'local[two]'; use local[*], local[N]",
        ),
    ],
)
def test_settings_of_other_engine_rejected(tmp_path, engine, message):
    with pytest.raises(ConfigError) as error:
        write_project(
            tmp_path,
            minimal_config(engine=engine),
            {"accounts.csv": ACCOUNTS_CSV, "events.csv": "account_id,timestamp\n"},
        )
    assert message in str(error.value)


def test_features_of_duckdb_only_named(spark, tmp_path):
    config = minimal_config()
    config["sources"]["events"]["format"] = "segment"
    config["metrics"]["tone"] = {
        "type": "sentiment",
        "source": "events",
        "column": "text",
        "window": "28d",
    }
    config["sources"]["events"]["attributes"] = {"text": "string"}
    project = write_project(
        tmp_path,
        config,
        {"accounts.csv": ACCOUNTS_CSV, "events.csv": "account_id,timestamp,text\n"},
    )
    with pytest.raises(SourceError) as error:
        Engine.open(project, spark=spark)
    message = str(error.value)
    assert "sources.events.format" in message
    assert "metrics.tone" in message
    assert "engine: duckdb" in message


def test_unsupported_rejected_before_session(tmp_path, monkeypatch):
    import healthscore.engine as engine_module

    config = minimal_config(engine="spark")
    config["sources"]["events"]["format"] = "segment"
    project = write_project(
        tmp_path,
        config,
        {"accounts.csv": ACCOUNTS_CSV, "events.csv": "account_id,timestamp\n"},
    )

    def started(*_: object) -> None:
        raise AssertionError("a Spark session was started")

    monkeypatch.setattr(engine_module, "connect_spark", started)
    with pytest.raises(SourceError, match=r"sources\.events\.format"):
        Engine.open(project)


def test_backfill_on_spark_equals_duckdb(spark, tmp_path):
    from healthscore.monitoring.backfill import backfill

    dates = [date(2024, 3, 15), date(2024, 4, 1), date(2024, 4, 15)]
    events = (
        "account_id,timestamp,value\n"
        "a1,2024-03-01 10:00:00,1\n"
        "a1,2024-03-20 10:00:00,2\n"
        "a2,2024-04-10 10:00:00,5\n"
        "a3,2024-04-14 23:00:00,3\n"
    )
    config = minimal_config()
    config["metrics"] |= {
        "value_14d": {
            "type": "sum",
            "source": "events",
            "column": "value",
            "window": "14d",
        },
        "days_since_event": {"type": "days_since", "source": "events"},
    }
    stores = {}
    for engine in ("duckdb", "spark"):
        project = write_project(
            tmp_path / engine,
            config | {"engine": engine},
            {"accounts.csv": ACCOUNTS_CSV, "events.csv": events},
        )
        result = backfill(project, dates)
        assert result.dates == dates
        stores[engine] = SnapshotStore(tmp_path / engine / ".healthscore" / "snapshots")

    for as_of in dates:
        for table, keys in TABLE_KEYS.items():
            pd.testing.assert_frame_equal(
                sorted_table(stores["spark"].read(as_of, table), keys),
                sorted_table(stores["duckdb"].read(as_of, table), keys),
                check_exact=False,
                rtol=1e-9,
                atol=1e-9,
                obj=f"{table} as of {as_of}",
            )
    metrics = stores["spark"].read(date(2024, 4, 15), "metrics")
    values = metrics.set_index(["account_id", "metric"])["value"]
    # a2's event of April 10 and a3's of April 14, 23:00, are within the 14 days.
    assert values[("a2", "value_14d")] == 5
    assert values[("a3", "value_14d")] == 3
    assert values[("a3", "days_since_event")] == 1
    assert values[("a1", "days_since_event")] == 26


def test_stored_notes_added_as_source(spark, tmp_path):
    project = write_project(
        tmp_path,
        minimal_config(),
        {"accounts.csv": ACCOUNTS_CSV, "events.csv": "account_id,timestamp\n"},
    )
    notes = pd.DataFrame(
        {
            "account_id": ["a1", "a2"],
            "timestamp": pd.to_datetime(["2024-03-01 09:00", "2024-03-02 17:30"]),
            "author": ["alice", "bob"],
            "sentiment": [0.5, -1.0],
            "text": ["renewal agreed", "asked about cancelling"],
        }
    )
    sources = Engine.open(project, spark=spark).sources
    sources.add_frame("csm_notes", "notes", notes, "operational store")
    rows = sources.rows("csm_notes", datetime(2024, 3, 2)).execute()
    assert list(rows["account_id"]) == ["a1"]
    assert list(rows["timestamp"]) == [pd.Timestamp("2024-03-01 09:00")]
    report = {r.source: r for r in sources.report(datetime(2024, 3, 2))}
    assert report["csm_notes"].rows_read == 2
    assert report["csm_notes"].excluded == {"after_as_of:timestamp": 1}


def test_unreadable_file_names_source(spark, tmp_path):
    config = minimal_config()
    config["sources"]["events"]["path"] = "events.parquet"
    project = write_project(
        tmp_path,
        config,
        {"accounts.csv": ACCOUNTS_CSV, "events.parquet": "not a parquet file\n"},
    )
    with pytest.raises(SourceError, match=r"source 'events': cannot read .*events"):
        Engine.open(project, spark=spark)


def test_nps_metric_equals_duckdb(spark, tmp_path):
    from healthscore.metrics import compute_metrics

    # a1 in the window: promoters 10, 9, 10; passive 8; detractors 6, 0. The CSAT
    # response, the score of 11 and the response before the window do not count.
    surveys = (
        "account_id,timestamp,score,survey_type\n"
        "a1,2024-01-01T09:00:00,3,nps\na1,2024-02-20T09:00:00,10,nps\n"
        "a1,2024-02-21T09:00:00,9,nps\na1,2024-02-22T09:00:00,10,nps\n"
        "a1,2024-02-23T09:00:00,8,nps\na1,2024-02-24T09:00:00,6,nps\n"
        "a1,2024-02-25T09:00:00,0,nps\na1,2024-02-26T09:00:00,2,csat\n"
        "a1,2024-02-27T09:00:00,11,nps\na2,2024-03-01T09:00:00,7,nps\n"
        "a2,2024-03-02T09:00:00,8,nps\na2,2024-03-03T09:00:00,,nps\n"
    )
    config = minimal_config()
    config["sources"]["surveys"] = {"kind": "surveys", "path": "surveys.csv"}
    config["metrics"]["nps_28d"] = {
        "type": "nps",
        "source": "surveys",
        "where": "survey_type == 'nps'",
        "window": "28d",
    }
    files = {
        "accounts.csv": ACCOUNTS_CSV,
        "events.csv": "account_id,timestamp\n",
        "surveys.csv": surveys,
    }
    project = write_project(tmp_path, config, files)
    as_of = date(2024, 3, 10)
    on_spark = compute_metrics(
        project, Engine.open(project, spark=spark).sources, as_of
    ).values
    on_duckdb = compute_metrics(project, Engine.open(project).sources, as_of).values
    assert on_spark.loc["a1", "nps_28d"] == pytest.approx(100 / 6, abs=1e-12)
    assert on_spark.loc["a2", "nps_28d"] == 0.0
    pd.testing.assert_frame_equal(on_spark.sort_index(), on_duckdb.sort_index())


def test_row_numbers_span_partitions(spark, tmp_path):
    lines = ["account_id,timestamp,value"]
    for row in range(1, 3001):
        value = "abc" if row in (1500, 2999) else str(row)
        lines.append(f"a1,2024-03-01 10:00:00,{value}")
    events = "\n".join(lines) + "\n"
    assert len(events) > 5 * 16 * 1024
    project = write_project(
        tmp_path, minimal_config(), {"accounts.csv": ACCOUNTS_CSV, "events.csv": events}
    )
    point = datetime(2024, 4, 1)
    sources = Engine.open(project, spark=spark).sources
    assert sources.session.table("source_events").rdd.getNumPartitions() > 1
    on_spark = sources.report(point)[1]
    on_duckdb = Engine.open(project).sources.report(point)[1]
    assert [e.row for e in on_spark.examples] == [1500, 2999]
    assert on_spark.to_dict() == on_duckdb.to_dict()


def test_lookup_key_with_two_values_fails(spark, project_with_bad_rows):
    lookup = project_with_bad_rows.root / "event_types.csv"
    lookup.write_text(EVENT_TYPES + "1,sign-in\n")
    with pytest.raises(SourceError) as caught:
        Engine.open(project_with_bad_rows, spark=spark)
    assert str(caught.value) == (
        f"source 'events': lookup file {lookup}, line 4: key '1' has the value "
        "'sign-in' but line 2 gives it 'login'. Keep one row per key."
    )


def test_non_finite_numbers_equal_duckdb(spark, tmp_path):
    config = minimal_config()
    config["sources"]["events"]["path"] = "events.csv"
    config["sources"]["exports"] = {"kind": "events", "path": "exports.parquet"}
    exports = pd.DataFrame(
        {
            "account_id": ["a1", "a1", "a2", "a2"],
            "timestamp": pd.to_datetime(["2024-03-01", "2024-03-02"] * 2),
            "value": [1.5, float("nan"), float("inf"), 2.0],
        }
    )
    files = {
        "accounts.csv": "account_id,name\na1,A\na2,B\n",
        "events.csv": "account_id,timestamp,value\na1,2024-03-01,2.5\n"
        "a1,2024-03-02,NaN\na2,2024-03-03,1e400\na2,2024-03-04,-inf\n",
        "exports.parquet": exports,
    }
    project = write_project(tmp_path, config, files)
    point = datetime(2024, 4, 1)

    on_spark = Engine.open(project, spark=spark).sources
    on_duckdb = Engine.open(project).sources
    spark_reports = [r.to_dict() for r in on_spark.report(point)]

    assert spark_reports == [r.to_dict() for r in on_duckdb.report(point)]
    reports = {r.source: r for r in on_spark.report(point)}
    assert reports["events"].excluded == {"unparseable_value:value": 3}
    # In a Parquet float column NaN is a missing value and infinity a bad row.
    assert reports["exports"].excluded == {"unparseable_value:value": 1}
    exported = on_spark.rows("exports").execute().sort_values("timestamp")
    assert exported["value"].isna().sum() == 1
    assert sorted(exported["value"].dropna()) == [1.5, 2.0]


def test_joined_files_equal_duckdb(spark, tmp_path):
    from test_source_joins import joined_project

    project = joined_project(tmp_path)
    as_of = date(2024, 1, 1)

    on_spark = score(
        project, as_of, engine=Engine.open(project, spark=spark), store=False,
        monitor=False,
    )  # fmt: skip
    on_duckdb = score(project, as_of, store=False, monitor=False)

    values = on_spark.metrics.values.sort_index()
    pd.testing.assert_frame_equal(
        values, on_duckdb.metrics.values.sort_index(), check_dtype=False
    )
    assert values.loc["a2", "industry"] == "tele\ncom"
    assert values.loc["a1", "employees"] == 250.0
    assert pd.isna(values.loc["a3", "employees"])
    scores = on_spark.result.scores.set_index("account_id").sort_index()
    assert list(scores["scorecard"]) == ["retail", "other", "other", "retail"]
    assert list(scores["score"]) == pytest.approx([25.0, 30.0, 30.0, 100.0])


def test_unreadable_joined_value_on_spark(spark, tmp_path):
    from test_source_joins import FIRMOGRAPHICS, joined_project

    firmographics = FIRMOGRAPHICS.replace("a4,1200,", "a4,many,")
    project = joined_project(tmp_path, firmographics_csv=firmographics)
    point = as_of_point(project, date(2024, 1, 1))
    (report,) = Engine.open(project, spark=spark).sources.report(point)
    assert report.excluded == {"unparseable_joined_value:employees": 1}
    assert report.rows_used == 3
    # Spark keeps no row numbers of joined files, so the example names the
    # excluded row of accounts.csv, with the joined value.
    assert [str(example) for example in report.examples] == [
        f"{tmp_path / 'accounts.csv'}, row 4, column employees: value of the joined "
        "file cannot be read as the column's type: 'many'; expected a number such "
        "as 1250 or -0.5"
    ]


def test_repeated_joined_key_fails_on_spark(spark, tmp_path):
    from test_source_joins import FIRMOGRAPHICS, joined_project

    repeated = FIRMOGRAPHICS + "a1,300,retail,1991\n"
    project = joined_project(tmp_path, firmographics_csv=repeated)
    with pytest.raises(SourceError, match=r"firmographics\.csv"):
        Engine.open(project, spark=spark)


def test_spark_start_failure_names_settings(tmp_path):
    import subprocess
    import sys

    project = write_project(
        tmp_path,
        minimal_config(engine={"kind": "spark", "master": "local[1]"}),
        {"accounts.csv": ACCOUNTS_CSV, "events.csv": "account_id,timestamp\n"},
    )
    # A JAVA_HOME without Java: the gateway exits before Spark starts.
    environment = {**os.environ, "JAVA_HOME": str(tmp_path / "no-java")}
    program = Path(sys.executable).with_name("healthscore")
    command = [str(program), "score", "--as-of", "2026-03-01"]

    result = subprocess.run(
        [*command, "--project", str(project.root)],
        env=environment,
        capture_output=True,
        text=True,
        timeout=300,
    )

    assert result.returncode == 1
    message = " ".join(result.stderr.split())
    assert "error: Spark could not start with engine.master 'local[1]'" in message
    assert "Java 17 is installed (JAVA_HOME)" in message
    assert "Traceback" not in message


def closed_port() -> int:
    """Return a port of 127.0.0.1 that nothing listens on: bound, then closed."""
    import socket

    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def spark_master_project(root: Path, master: str) -> Any:
    engine = {
        "kind": "spark",
        "master": master,
        "spark_conf": {
            "spark.driver.host": "127.0.0.1",
            "spark.driver.bindAddress": "127.0.0.1",
            "spark.ui.enabled": "false",
        },
    }
    return write_project(
        root,
        minimal_config(engine=engine),
        {"accounts.csv": ACCOUNTS_CSV, "events.csv": "account_id,timestamp\n"},
    )


def test_unreachable_master_fails_fast(tmp_path):
    import subprocess
    import sys
    import time

    if shutil.which("java") is None or importlib.util.find_spec("pyspark") is None:
        pytest.skip(SPARK_MISSING)
    master = f"spark://127.0.0.1:{closed_port()}"
    project = spark_master_project(tmp_path, master)
    program = Path(sys.executable).with_name("healthscore")
    command = [str(program), "score", "--as-of", "2026-03-01"]

    started = time.monotonic()
    result = subprocess.run(
        [*command, "--project", str(project.root)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    elapsed = time.monotonic() - started

    assert result.returncode == 1
    # Starting Python and importing the CLI and PySpark take a few seconds of this.
    # Spark's own registration with a master that does not respond gives up after
    # 60 s.
    assert elapsed < 15, elapsed
    message = " ".join(result.stderr.split())
    assert f"error: Spark master {master!r} is not reachable" in message
    assert "Connection refused" in message
    assert "Check that the Spark master is running" in message
    assert "engine.master" in message
    assert "Traceback" not in message


def test_unreachable_masters_all_named(tmp_path):
    from healthscore.engine import start_spark_session

    first, second = closed_port(), closed_port()
    master = f"spark://127.0.0.1:{first},127.0.0.1:{second}"
    project = spark_master_project(tmp_path, master)

    with pytest.raises(SourceError) as error:
        start_spark_session(project)

    message = str(error.value)
    assert message.startswith(f"Spark master {master!r} is not reachable")
    assert f"127.0.0.1:{first}" in message
    assert f"127.0.0.1:{second}" in message


class RecordingBuilder:
    """SparkSession.builder stand-in that records the master it is given."""

    def __init__(self) -> None:
        self.masters: list[str] = []

    def master(self, value: str) -> RecordingBuilder:
        self.masters.append(value)
        return self

    def appName(self, _: str) -> RecordingBuilder:
        return self

    def config(self, _key: str, _value: str) -> RecordingBuilder:
        return self

    def getOrCreate(self) -> str:
        return "session"


@pytest.mark.parametrize(
    "master", ["local[1]", "yarn", "k8s://https://127.0.0.1:{port}"]
)
def test_other_masters_not_checked(tmp_path, monkeypatch, master):
    import socket

    import healthscore.engine as engine_module

    master = master.format(port=closed_port())
    project = spark_master_project(tmp_path, master)
    builder = RecordingBuilder()
    monkeypatch.setattr(
        engine_module,
        "_import_spark",
        lambda: type("SparkSession", (), {"builder": builder}),
    )
    connected: list[object] = []

    def refuse(address: object, *_: object, **__: object) -> None:
        connected.append(address)
        raise ConnectionRefusedError("connection refused")

    monkeypatch.setattr(socket, "create_connection", refuse)

    assert engine_module.start_spark_session(project) == "session"
    assert builder.masters == [master]
    assert connected == []


def test_listening_master_passes_check(tmp_path, monkeypatch):
    import socket

    import healthscore.engine as engine_module

    builder = RecordingBuilder()
    monkeypatch.setattr(
        engine_module,
        "_import_spark",
        lambda: type("SparkSession", (), {"builder": builder}),
    )
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        port = listener.getsockname()[1]
        # The first address refuses, so the check goes on to the second.
        master = f"spark://127.0.0.1:{closed_port()},127.0.0.1:{port}"
        project = spark_master_project(tmp_path, master)

        assert engine_module.start_spark_session(project) == "session"

    assert builder.masters == [master]


def test_time_and_boolean_texts_equal_duckdb(spark, tmp_path):
    from test_source_dates import BOOLEAN_TEXTS, TIMESTAMP_TEXTS, odd_texts_project

    project = odd_texts_project(tmp_path)
    point = datetime(2026, 3, 9)

    on_spark = Engine.open(project, spark=spark).sources
    on_duckdb = Engine.open(project).sources
    spark_reports = [r.to_dict() for r in on_spark.report(point)]

    assert spark_reports == [r.to_dict() for r in on_duckdb.report(point)]
    reports = {r.source: r for r in on_spark.report(point)}
    unread = sum(not read for read in TIMESTAMP_TEXTS.values())
    assert reports["events"].excluded["unparseable_value:timestamp"] == unread
    unread_flags = sum(not read for read in BOOLEAN_TEXTS.values())
    assert reports["accounts"].excluded == {"unparseable_value:vip": unread_flags}
    rows = on_spark.rows("events").execute().sort_values("timestamp")
    expected = on_duckdb.rows("events").execute().sort_values("timestamp")
    assert list(rows["timestamp"]) == list(expected["timestamp"])


def test_parquet_number_ids_alike_on_spark(
    tmp_path: Path,
    spark: Any,
) -> None:
    ids = pa.array(
        [Decimal("1001.000"), Decimal("1002.000"), None], pa.decimal128(12, 3)
    )
    project = number_ids_project(tmp_path / "decimal", ids)

    on_spark = Engine.open(project, spark=spark).sources

    found = on_spark.session.sql(
        "SELECT account_id, plan, _problem FROM source_accounts ORDER BY _row"
    ).collect()
    assert [tuple(row) for row in found] == [
        ("1001", "gold", None),
        ("1002", "silver", None),
        (None, None, "missing_value:account_id"),
    ]
    ids = pa.array([1001.0, float("nan"), 1002.5], pa.float64())
    project = number_ids_project(tmp_path / "fraction", ids)
    with pytest.raises(SourceError) as caught:
        Engine.open(project, spark=spark)
    assert ("has the account id '1002.5' in row 3, which is not a whole number") in str(
        caught.value
    )


def nanosecond_table(times: list[str], tz: str | None = None) -> pa.Array:
    """Parquet TIMESTAMP(NANOS) values, as pandas and pyarrow write them by default."""
    return pa.array([pd.Timestamp(t).value for t in times], pa.timestamp("ns", tz=tz))


def test_nanosecond_parquet_equals_duckdb(spark, tmp_path):
    from healthscore.metrics import compute_metrics

    # As of 2024-04-01 in Berlin, a 28-day window spans 2024-03-04 00:00 to
    # 2024-03-31 24:00, wall-clock time. Nanoseconds past those bounds must not
    # move a row across them.
    events = pa.table(
        {
            "account_id": ["a1", "a1", "a1", "a2", "a2"],
            "timestamp": nanosecond_table(
                [
                    "2024-03-03 23:59:59.999999999",  # before the window
                    "2024-03-04 00:00:00.000000001",
                    "2024-03-31 23:59:59.999999999",
                    "2024-03-15 10:00:00.123456789",
                    "2024-04-01 00:00:00.000000001",  # after the as-of date
                ]
            ),
            # Read by no source, and adjusted to UTC.
            "exported_at": nanosecond_table(["2024-04-02"] * 5, tz="UTC"),
        }
    )
    # Instants: 21:59:59.999999999 UTC is 23:59:59.999999 in Berlin on 31 March,
    # and 22:00 UTC is midnight of the as-of date.
    exports = pa.table(
        {
            "account_id": ["a1", "a1", "a3"],
            "timestamp": nanosecond_table(
                [
                    "2024-03-31 21:59:59.999999999",
                    "2024-03-31 22:00:00",
                    "2024-03-10 08:00:00.000000500",
                ],
                tz="UTC",
            ),
        }
    )
    config = minimal_config(timezone="Europe/Berlin")
    config["sources"]["events"]["path"] = "events.parquet"
    config["sources"]["exports"] = {"kind": "events", "path": "exports.parquet"}
    config["metrics"]["exports_28d"] = {
        "type": "count",
        "source": "exports",
        "window": "28d",
    }
    pq.write_table(events, tmp_path / "events.parquet")
    pq.write_table(exports, tmp_path / "exports.parquet")
    project = write_project(tmp_path, config, {"accounts.csv": ACCOUNTS_CSV})
    as_of = date(2024, 4, 1)

    on_spark = Engine.open(project, spark=spark).sources
    on_duckdb = Engine.open(project).sources
    spark_values = compute_metrics(project, on_spark, as_of).values.sort_index()
    duckdb_values = compute_metrics(project, on_duckdb, as_of).values.sort_index()

    assert spark_values.loc["a1", "events_28d"] == 2
    assert spark_values.loc["a2", "events_28d"] == 1
    assert spark_values.loc["a1", "exports_28d"] == 1
    assert spark_values.loc["a3", "exports_28d"] == 1
    pd.testing.assert_frame_equal(spark_values, duckdb_values)
    rows = on_spark.rows("exports").execute().sort_values("timestamp")
    assert list(rows["timestamp"]) == [
        pd.Timestamp("2024-03-10 09:00:00"),
        pd.Timestamp("2024-03-31 23:59:59.999999"),
        pd.Timestamp("2024-04-01 00:00:00"),
    ]
    rows = on_spark.rows("events").execute().sort_values("timestamp")
    expected = on_duckdb.rows("events").execute().sort_values("timestamp")
    assert pd.Timestamp("2024-03-15 10:00:00.123456") in list(rows["timestamp"])
    assert list(rows["timestamp"]) == list(expected["timestamp"])
    assert spark.conf.get("spark.sql.legacy.parquet.nanosAsLong", None) is None


def test_nanosecond_parquet_mixed_units_named(spark, tmp_path):
    config = minimal_config()
    config["sources"]["events"]["path"] = "events/*.parquet"
    folder = tmp_path / "events"
    folder.mkdir()
    times = nanosecond_table(["2024-03-01 10:00:00"])
    nanoseconds = pa.table({"account_id": ["a1"], "timestamp": times, "seen": times})
    micros = nanoseconds.cast(
        pa.schema(
            [
                ("account_id", pa.string()),
                ("timestamp", pa.timestamp("us")),
                ("seen", pa.timestamp("us")),
            ]
        )
    )
    pq.write_table(nanoseconds, folder / "1.parquet")
    pq.write_table(micros.drop_columns(["timestamp"]), folder / "2.parquet")
    project = write_project(tmp_path, config, {"accounts.csv": ACCOUNTS_CSV})
    # `seen` mixes units but no source reads it, and the second file lacks
    # `timestamp`, which then reads as missing in its row.
    sources = Engine.open(project, spark=spark).sources
    rows = sources.rows("events").execute()
    assert list(rows["timestamp"]) == [pd.Timestamp("2024-03-01 10:00:00")]

    pq.write_table(micros, folder / "2.parquet")
    with pytest.raises(SourceError) as caught:
        Engine.open(project, spark=spark)
    assert str(caught.value) == (
        f"source 'events': column 'timestamp' is INT64 (TIMESTAMP(NANOS,false)) in "
        f"{folder / '1.parquet'} but INT64 (TIMESTAMP(MICROS,false)) in "
        f"{folder / '2.parquet'}, and Spark reads a column of a glob with one type. "
        "Write the column with the same type in every file, such as microsecond "
        'timestamps (pyarrow: coerce_timestamps="us"), or narrow '
        "sources.events.path."
    )
