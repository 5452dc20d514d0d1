"""CSV files of one glob with different headers on Spark: columns matched by name.

Spark's CSV reader takes the column names from the header of one file and matches
the fields of every other file by position, so a file with its columns in another
order would put values in the wrong columns. Each test builds the files, computes
the expected values by hand, and compares the Spark engine with DuckDB where DuckDB
reads the files too.
"""

from __future__ import annotations

from datetime import date, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd
import pytest

from healthscore.config import Project
from healthscore.engine import Engine
from healthscore.metrics import compute_metrics
from healthscore.sources import SourceError, as_of_point
from project_factory import ACCOUNTS_CSV, minimal_config, write_project
from test_spark import pytestmark as spark_warnings
from test_spark import spark  # noqa: F401 (the module's Spark session fixture)

if TYPE_CHECKING:
    from pyspark.sql import SparkSession

# PySpark's warnings, which test_spark ignores for the same session.
pytestmark = spark_warnings

AS_OF = date(2024, 3, 10)
FIRST_EVENTS = (
    "account_id,timestamp,value\na1,2024-03-01 10:00:00,1\na2,2024-03-02 10:00:00,2\n"
)
# The same columns as FIRST_EVENTS in another order. The third row's time cannot
# be read, so the row is excluded and named as row 3 of the file.
REORDERED_EVENTS = (
    "timestamp,value,account_id\n2024-03-03 10:00:00,4,a1\n"
    "2024-03-04 10:00:00,8,a3\nnot a time,16,a2\n"
)


def events_config() -> dict[str, Any]:
    config = minimal_config()
    config["sources"]["events"]["path"] = "events/*.csv"
    config["metrics"]["value_28d"] = {
        "type": "sum",
        "source": "events",
        "column": "value",
        "window": "28d",
    }
    return config


def events_project(root: Path, events: dict[str, str | bytes]) -> Project:
    """Write a project whose events source reads `events/*.csv`."""
    (root / "events").mkdir(parents=True)
    for name, content in events.items():
        path = root / "events" / name
        if isinstance(content, bytes):
            path.write_bytes(content)
        else:
            path.write_text(content)
    return write_project(root, events_config(), {"accounts.csv": ACCOUNTS_CSV})


def spark_metrics(session: SparkSession, project: Project) -> pd.DataFrame:
    sources = Engine.open(project, spark=session).sources
    return compute_metrics(project, sources, AS_OF).values.sort_index()


def duckdb_metrics(project: Project) -> pd.DataFrame:
    values = compute_metrics(project, Engine.open(project).sources, AS_OF).values
    return values.sort_index()


def csv_scan_count(session: SparkSession, project: Project) -> int:
    """Count the CSV file scans in the physical plan of the events source."""
    sources = Engine.open(project, spark=session).sources
    frame = sources.session.table("raw_events")
    return str(frame._jdf.queryExecution().executedPlan()).count("FileScan csv")


def test_reordered_columns_matched_by_name(spark, tmp_path):  # noqa: F811
    project = events_project(
        tmp_path, {"1.csv": FIRST_EVENTS, "2.csv": REORDERED_EVENTS}
    )

    on_spark = spark_metrics(spark, project)

    # a1: 1 (1.csv) + 4 (2.csv); a2: 2, because its row of 2.csv has no valid time;
    # a3: 8.
    assert on_spark.loc["a1", "value_28d"] == 5
    assert on_spark.loc["a2", "value_28d"] == 2
    assert on_spark.loc["a3", "value_28d"] == 8
    assert on_spark.loc["a1", "events_28d"] == 2
    assert on_spark.loc["a2", "events_28d"] == 1
    assert on_spark.loc["a3", "events_28d"] == 1
    pd.testing.assert_frame_equal(on_spark, duckdb_metrics(project))


def test_reordered_columns_report_rows(spark, tmp_path):  # noqa: F811
    project = events_project(
        tmp_path, {"1.csv": FIRST_EVENTS, "2.csv": REORDERED_EVENTS}
    )
    point = as_of_point(project, AS_OF)

    on_spark = Engine.open(project, spark=spark).sources
    report = on_spark.report(point)[1]

    assert report.rows_read == 5
    assert report.excluded == {"unparseable_value:timestamp": 1}
    assert [example.file for example in report.examples] == [
        str(tmp_path / "events" / "2.csv")
    ]
    assert [example.row for example in report.examples] == [3]
    assert report.to_dict() == Engine.open(project).sources.report(point)[1].to_dict()


def test_later_file_missing_column_rejected(spark, tmp_path):  # noqa: F811
    second = "account_id,timestamp\na1,2024-03-05 10:00:00\n"
    project = events_project(tmp_path, {"1.csv": FIRST_EVENTS, "2.csv": second})

    with pytest.raises(SourceError) as on_spark:
        Engine.open(project, spark=spark)
    with pytest.raises(SourceError) as on_duckdb:
        Engine.open(project)

    message = str(on_spark.value)
    assert "2.csv has no column 'value', which the first file" in message
    assert message == str(on_duckdb.value)


def test_first_file_missing_column_reads_as_null(spark, tmp_path):  # noqa: F811
    first = "account_id,timestamp\na1,2024-03-05 10:00:00\n"
    project = events_project(tmp_path, {"1.csv": first, "2.csv": FIRST_EVENTS})

    sources = Engine.open(project, spark=spark).sources
    rows = sources.rows("events").execute().sort_values("timestamp")
    on_spark = spark_metrics(spark, project)

    assert list(rows["account_id"]) == ["a1", "a2", "a1"]
    assert rows["value"].iloc[0] == 1
    assert rows["value"].iloc[1] == 2
    assert pd.isna(rows["value"].iloc[2])
    # The row without a value counts as an event but adds nothing to the sum.
    assert on_spark.loc["a1", "value_28d"] == 1
    assert on_spark.loc["a1", "events_28d"] == 2
    assert on_spark.loc["a2", "value_28d"] == 2


def test_single_header_read_with_one_scan(spark, tmp_path):  # noqa: F811
    # The quotes differ, but both headers parse to the same column names.
    quoted = '"account_id","timestamp","value"\na1,2024-03-05 10:00:00,4\n'
    project = events_project(tmp_path, {"1.csv": FIRST_EVENTS, "2.csv": quoted})

    on_spark = spark_metrics(spark, project)

    assert csv_scan_count(spark, project) == 1
    assert on_spark.loc["a1", "value_28d"] == 5
    pd.testing.assert_frame_equal(on_spark, duckdb_metrics(project))


def test_two_headers_read_with_two_scans(spark, tmp_path):  # noqa: F811
    project = events_project(
        tmp_path, {"1.csv": FIRST_EVENTS, "2.csv": REORDERED_EVENTS}
    )
    assert csv_scan_count(spark, project) == 2


def spark_error(session: SparkSession, project: Project) -> str:
    with pytest.raises(SourceError) as caught:
        Engine.open(project, spark=session)
    return str(caught.value)


def duckdb_error(project: Project) -> str:
    with pytest.raises(SourceError) as caught:
        Engine.open(project)
    return str(caught.value)


def test_extra_field_in_reordered_file_named(spark, tmp_path):  # noqa: F811
    second = REORDERED_EVENTS + "2024-03-05 10:00:00,1,a1,x\n"
    project = events_project(tmp_path, {"1.csv": FIRST_EVENTS, "2.csv": second})
    file = tmp_path / "events" / "2.csv"
    expected = (
        f"source 'events': cannot read {file} as csv: line 5 has 4 fields but the "
        "header has 3. Fix the row, or put double quotes around each value that "
        "contains ','."
    )
    assert spark_error(spark, project) == expected
    assert duckdb_error(project) == expected


def test_latin1_byte_in_reordered_file_named(spark, tmp_path):  # noqa: F811
    # 0xe9 is "é" in Latin-1, and it is not UTF-8.
    second = REORDERED_EVENTS.encode() + b"2024-03-05 10:00:00,1,caf\xe9\n"
    project = events_project(tmp_path, {"1.csv": FIRST_EVENTS, "2.csv": second})
    file = tmp_path / "events" / "2.csv"
    fixed = file.with_name("2.utf8.csv")
    expected = (
        f"source 'events': cannot read {file} as csv: line 5 is not valid UTF-8 "
        "(byte 26 of the line is 0xe9). CSV files are read as UTF-8, so save the "
        "file as UTF-8. A Latin-1 file, for example, converts with "
        f"`iconv -f LATIN1 -t UTF-8 {file} > {fixed}`."
    )
    assert spark_error(spark, project) == expected
    assert duckdb_error(project) == expected


def test_repeated_column_rejected_as_on_duckdb(spark, tmp_path):  # noqa: F811
    second = "account_id,timestamp,account_id\na1,2024-03-05 10:00:00,a2\n"
    project = events_project(tmp_path, {"1.csv": FIRST_EVENTS, "2.csv": second})
    file = tmp_path / "events" / "2.csv"
    expected = (
        f"source 'events': the header of {file} has column 'account_id' twice, as "
        "columns 1 and 3, so it is unclear which one to read. Rename or remove one "
        "of them."
    )
    assert spark_error(spark, project) == expected
    assert duckdb_error(project) == expected


def test_rows_of_both_files_kept(spark, tmp_path):  # noqa: F811
    project = events_project(
        tmp_path, {"1.csv": FIRST_EVENTS, "2.csv": REORDERED_EVENTS}
    )
    rows = Engine.open(project, spark=spark).sources.rows("events").execute()
    by_time = rows.sort_values("timestamp")
    assert list(by_time["account_id"]) == ["a1", "a2", "a1", "a3"]
    assert list(by_time["value"]) == [1, 2, 4, 8]
    assert list(by_time["timestamp"]) == [
        pd.Timestamp(datetime(2024, 3, day, 10)) for day in (1, 2, 3, 4)
    ]


@pytest.mark.parametrize(
    "header",
    ["account_id, timestamp ,value", "Account_Id,Timestamp,VALUE"],
    ids=["spaces", "letter-case"],
)
def test_header_spelling_matched_as_on_duckdb(spark, tmp_path, header):  # noqa: F811
    second = f"{header}\na2,2024-03-05 10:00:00,4\n"
    project = events_project(tmp_path, {"1.csv": FIRST_EVENTS, "2.csv": second})

    on_spark = spark_metrics(spark, project)

    # a2: 2 from the first file and 4 from the second, in two events.
    assert on_spark.loc["a2", "value_28d"] == 6
    assert on_spark.loc["a2", "events_28d"] == 2
    pd.testing.assert_frame_equal(on_spark, duckdb_metrics(project))
