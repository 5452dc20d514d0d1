"""Bad CSV files on Spark: the same errors as on DuckDB, naming the file and line.

Spark's CSV reader accepts a row with an extra or a missing field, and reads a byte
that is not UTF-8 as U+FFFD, so without checks of its own the Spark engine would
read files that the DuckDB engine rejects. Each test builds the bad file, expects
the message written out here, and checks that DuckDB gives the same one.
"""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from healthscore.config import Project
from healthscore.engine import Engine
from healthscore.sources import SourceError
from project_factory import ACCOUNTS_CSV, minimal_config, write_project
from test_spark import pytestmark as spark_warnings
from test_spark import spark  # noqa: F401 (the module's Spark session fixture)

if TYPE_CHECKING:
    from pyspark.sql import SparkSession

# PySpark's warnings, which test_spark ignores for the same session.
pytestmark = spark_warnings

NOTED_EVENTS_CONFIG = minimal_config()
# The note column is not a column of the source, so no query of the source reads
# it, and a check that reads only the source's columns misses a fault in it.
NOTED_EVENTS_HEADER = "account_id,timestamp,note\n"


def spark_error(session: SparkSession, project: Project) -> str:
    with pytest.raises(SourceError) as caught:
        Engine.open(project, spark=session)
    return str(caught.value)


def duckdb_error(project: Project) -> str:
    with pytest.raises(SourceError) as caught:
        Engine.open(project)
    return str(caught.value)


def extra_field_message(file: Path, line: int, found: int, expected: int) -> str:
    return (
        f"source 'events': cannot read {file} as csv: line {line} has {found} "
        f"fields but the header has {expected}. Fix the row, or put double quotes "
        "around each value that contains ','."
    )


def latin1_message(source: str, file: Path, line: int, byte: int) -> str:
    fixed = file.with_name(file.stem + ".utf8.csv")
    return (
        f"source {source!r}: cannot read {file} as csv: line {line} is not valid "
        f"UTF-8 (byte {byte} of the line is 0xe9). CSV files are read as UTF-8, so "
        "save the file as UTF-8. A Latin-1 file, for example, converts with "
        f"`iconv -f LATIN1 -t UTF-8 {file} > {fixed}`."
    )


def test_extra_field_named_on_spark(spark, tmp_path):  # noqa: F811
    events = (
        "account_id,timestamp\na1,2024-03-01 10:00:00\n"
        "a2,2024-03-02 10:00:00,x,y,z\na1,2024-03-03 10:00:00\n"
    )
    project = write_project(
        tmp_path, minimal_config(), {"accounts.csv": ACCOUNTS_CSV, "events.csv": events}
    )
    expected = extra_field_message(tmp_path / "events.csv", 3, 5, 2)
    assert spark_error(spark, project) == expected
    assert duckdb_error(project) == expected


def test_extra_field_in_unread_column_named(spark, tmp_path):  # noqa: F811
    events = (
        NOTED_EVENTS_HEADER + "a1,2024-03-01 10:00:00,ok\n"
        "a1,2024-03-02 10:00:00,ok\na2,2024-03-03 10:00:00,late,again\n"
    )
    project = write_project(
        tmp_path,
        NOTED_EVENTS_CONFIG,
        {"accounts.csv": ACCOUNTS_CSV, "events.csv": events},
    )
    expected = extra_field_message(tmp_path / "events.csv", 4, 4, 3)
    assert spark_error(spark, project) == expected
    assert duckdb_error(project) == expected


def test_missing_field_of_accounts_named(spark, tmp_path):  # noqa: F811
    accounts = ACCOUNTS_CSV + "a4,Umbrella,smb\n"
    events = "account_id,timestamp\na1,2024-03-01 10:00:00\n"
    project = write_project(
        tmp_path, minimal_config(), {"accounts.csv": accounts, "events.csv": events}
    )
    expected = (
        f"source 'accounts': cannot read {tmp_path / 'accounts.csv'} as csv: line 5 "
        "has 3 fields but the header has 5. Fix the row, or put double quotes around "
        "each value that contains ','."
    )
    assert spark_error(spark, project) == expected
    assert duckdb_error(project) == expected


def test_extra_field_in_second_file_named(spark, tmp_path):  # noqa: F811
    config = minimal_config()
    config["sources"]["events"]["path"] = "events/*.csv"
    first = "account_id,timestamp\na1,2024-03-01 10:00:00\n"
    second = "account_id,timestamp\na2,2024-03-02 10:00:00\na2,2024-03-03,x\n"
    files = {
        "accounts.csv": ACCOUNTS_CSV,
        "events/1.csv": first,
        "events/2.csv": second,
    }
    project = write_project(tmp_path, config, files)
    expected = extra_field_message(tmp_path / "events" / "2.csv", 3, 3, 2)
    assert spark_error(spark, project) == expected
    assert duckdb_error(project) == expected


def test_extra_field_past_first_split_named(spark, tmp_path):  # noqa: F811
    # The test session splits files into 16 KiB partitions, so line 3002 lies in a
    # later partition than the header.
    rows = [f"a1,2024-03-01 10:00:00,{row}" for row in range(3000)]
    rows.append("a2,2024-03-02 10:00:00,a,b")
    events = NOTED_EVENTS_HEADER + "\n".join(rows) + "\n"
    assert len(events) > 4 * 16 * 1024
    project = write_project(
        tmp_path,
        NOTED_EVENTS_CONFIG,
        {"accounts.csv": ACCOUNTS_CSV, "events.csv": events},
    )
    expected = extra_field_message(tmp_path / "events.csv", 3002, 4, 3)
    assert spark_error(spark, project) == expected
    assert duckdb_error(project) == expected


# 0xe9 is "é" in Latin-1. The second row also has an extra field, which Spark
# meets first, and the message names the byte all the same, as on DuckDB.
@pytest.mark.parametrize("row", [b"a2,Caf\xe9", b"a2,Caf\xe9,x"])
def test_latin1_byte_named_on_spark(spark, tmp_path, row):  # noqa: F811
    accounts = b"account_id,name\na1,Acme\n" + row + b"\na3,Initech\n"
    (tmp_path / "accounts.csv").write_bytes(accounts)
    project = write_project(
        tmp_path, minimal_config(), {"events.csv": "account_id,timestamp\n"}
    )
    expected = latin1_message("accounts", tmp_path / "accounts.csv", 3, 7)
    assert spark_error(spark, project) == expected
    assert duckdb_error(project) == expected


def test_latin1_byte_in_unread_column_named(spark, tmp_path):  # noqa: F811
    events = (
        NOTED_EVENTS_HEADER.encode()
        + b"a1,2024-03-01 10:00:00,ok\na2,2024-03-02 10:00:00,caf\xe9\n"
    )
    (tmp_path / "events.csv").write_bytes(events)
    project = write_project(
        tmp_path, NOTED_EVENTS_CONFIG, {"accounts.csv": ACCOUNTS_CSV}
    )
    expected = latin1_message("events", tmp_path / "events.csv", 3, 27)
    assert spark_error(spark, project) == expected
    assert duckdb_error(project) == expected


def test_latin1_byte_in_header_named(spark, tmp_path):  # noqa: F811
    events = b"account_id,timestamp,caf\xe9\na1,2024-03-01 10:00:00,ok\n"
    (tmp_path / "events.csv").write_bytes(events)
    project = write_project(
        tmp_path, NOTED_EVENTS_CONFIG, {"accounts.csv": ACCOUNTS_CSV}
    )
    expected = latin1_message("events", tmp_path / "events.csv", 1, 25)
    assert spark_error(spark, project) == expected
    assert duckdb_error(project) == expected


def test_latin1_byte_in_later_header_named(spark, tmp_path):  # noqa: F811
    # Spark takes the column names from one file and skips the others' headers.
    config = minimal_config()
    config["sources"]["events"]["path"] = "events/*.csv"
    (tmp_path / "events").mkdir()
    (tmp_path / "events" / "1.csv").write_text(
        "account_id,timestamp\na1,2024-03-01 10:00:00\n"
    )
    (tmp_path / "events" / "2.csv").write_bytes(
        b"account_id,timestamp\xe9\na2,2024-03-02 10:00:00\n"
    )
    project = write_project(tmp_path, config, {"accounts.csv": ACCOUNTS_CSV})
    file = tmp_path / "events" / "2.csv"
    expected = latin1_message("events", file, 1, 21)
    assert spark_error(spark, project) == expected
    assert duckdb_error(project) == expected


def test_replacement_character_read_on_spark(spark, tmp_path):  # noqa: F811
    # U+FFFD written as UTF-8 is valid text, unlike a byte that decodes to it.
    events = (
        NOTED_EVENTS_HEADER + "a1,2024-03-01 10:00:00,\ufffd\n"
        "a2,2024-03-02 10:00:00,ok\n"
    )
    project = write_project(
        tmp_path,
        NOTED_EVENTS_CONFIG,
        {"accounts.csv": ACCOUNTS_CSV, "events.csv": events},
    )
    sources = Engine.open(project, spark=spark).sources
    rows = sources.rows("events").execute()
    assert sorted(rows["account_id"]) == ["a1", "a2"]
    (report,) = [
        r for r in sources.report(datetime(2024, 4, 1)) if r.source == "events"
    ]
    assert report.rows_read == 2
    assert report.rows_used == 2


def test_quoted_line_break_named_on_spark(spark, tmp_path):  # noqa: F811
    # DuckDB reads the note as one value. Spark reads each line as a row, so the
    # row would be split in two, with the second half as a row of its own.
    events = (
        NOTED_EVENTS_HEADER + "a1,2024-03-01 10:00:00,ok\n"
        'a2,2024-03-02 10:00:00,"first\nsecond"\n'
    )
    project = write_project(
        tmp_path,
        NOTED_EVENTS_CONFIG,
        {"accounts.csv": ACCOUNTS_CSV, "events.csv": events},
    )
    rows = Engine.open(project).sources.rows("events").execute()
    assert sorted(rows["account_id"]) == ["a1", "a2"]
    assert spark_error(spark, project) == (
        f"source 'events': cannot read {tmp_path / 'events.csv'} as csv on Spark: "
        "the row that starts on line 3 spans 2 lines, because a quoted value in it "
        "contains a line break, but the Spark engine reads each line of a CSV file "
        "as one row. Remove the line breaks from the value, or set engine: duckdb "
        "in healthscore.yml."
    )


def test_backslash_before_quote_read_as_duckdb(spark, tmp_path):  # noqa: F811
    # RFC 4180 escapes a quote by doubling it, so a backslash is an ordinary
    # character, also right before the closing quote.
    config = minimal_config()
    config["sources"]["events"]["attributes"] = {"note": "string"}
    events = (
        NOTED_EVENTS_HEADER + 'a1,2024-03-01 10:00:00,"C:\\dir\\"\n'
        'a2,2024-03-02 10:00:00,"say ""hi"""\n'
    )
    project = write_project(
        tmp_path, config, {"accounts.csv": ACCOUNTS_CSV, "events.csv": events}
    )
    rows = Engine.open(project, spark=spark).sources.rows("events").execute()
    notes = dict(zip(rows["account_id"], rows["note"], strict=True))
    assert notes == {"a1": "C:\\dir\\", "a2": 'say "hi"'}
    on_duckdb = Engine.open(project).sources.rows("events").execute()
    assert dict(zip(on_duckdb["account_id"], on_duckdb["note"], strict=True)) == notes
