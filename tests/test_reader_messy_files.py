"""Reading messy file exports: globs whose files differ, encodings and formats."""

from __future__ import annotations

import gzip
import logging
from pathlib import Path

import pandas as pd
import pytest
from typer.testing import CliRunner

from healthscore.cli import app
from healthscore.config import ConfigError, Project
from healthscore.engine import connect
from healthscore.sources import SourceError, load_sources
from project_factory import ACCOUNTS_CSV, minimal_config, write_project

READER_LOGGER = "healthscore.sources.reader"


def load(project: Project):
    return load_sources(project, connect(project))


def glob_project(tmp_path: Path, pattern: str, files: dict[str, object]) -> Project:
    config = minimal_config()
    config["sources"]["events"]["path"] = pattern
    return write_project(tmp_path, config, {"accounts.csv": ACCOUNTS_CSV, **files})


def events_frame(account: str, time: str, **columns: float) -> pd.DataFrame:
    return pd.DataFrame(
        {"account_id": [account], "timestamp": [pd.Timestamp(time)], **columns}
    )


def reader_warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [
        record.getMessage()
        for record in caplog.records
        if record.name == READER_LOGGER and record.levelno == logging.WARNING
    ]


# A column that one file of a Parquet or JSON Lines glob lacks.


def renamed_parquet_project(tmp_path: Path) -> Project:
    return glob_project(
        tmp_path,
        "events/*.parquet",
        {
            "events/2026-01.parquet": events_frame("a1", "2026-01-04 10:00", value=1.5),
            "events/2026-02.parquet": events_frame(
                "a1", "2026-02-04 10:00", amount=2.5
            ),
            "events/2026-03.parquet": events_frame("a2", "2026-03-04 10:00", value=7.0),
        },
    )


def test_parquet_glob_renamed_column_warns(tmp_path, caplog):
    project = renamed_parquet_project(tmp_path)
    with caplog.at_level(logging.WARNING, logger=READER_LOGGER):
        rows = load(project).rows("events").execute().sort_values("timestamp")
    file = tmp_path / "events" / "2026-02.parquet"
    assert reader_warnings(caplog) == [
        f"source 'events': column 'value' not found in {file}, although other files "
        "of 'events/*.parquet' have it, so 'value' is missing in the file's 1 row. "
        "The file has 'amount', which no other file has. If that is the column "
        "renamed, rename it back in the file, because sources.events.columns maps "
        "one name for every file; otherwise read the file as a separate source with "
        "its own path."
    ]
    # The rows are still read, with the lacking column missing.
    assert list(rows["value"].isna()) == [False, True, False]


def test_jsonl_glob_renamed_column_warns(tmp_path, caplog):
    project = glob_project(
        tmp_path,
        "events/*.jsonl",
        {
            "events/2026-01.jsonl": [
                {"account_id": "a1", "timestamp": "2026-01-04 10:00", "value": 1.5}
            ],
            "events/2026-02.jsonl": [
                {"account_id": "a1", "timestamp": "2026-02-04 10:00", "amount": 2.5},
                {"account_id": "a2", "timestamp": "2026-02-05 10:00", "amount": 3.5},
            ],
            "events/2026-03.jsonl": [
                {"account_id": "a2", "timestamp": "2026-03-04 10:00", "value": 7}
            ],
        },
    )
    with caplog.at_level(logging.WARNING, logger=READER_LOGGER):
        load(project)
    file = tmp_path / "events" / "2026-02.jsonl"
    assert reader_warnings(caplog) == [
        f"source 'events': column 'value' not found in {file}, although other files "
        "of 'events/*.jsonl' have it, so 'value' is missing in the file's 2 rows. "
        "The file has 'amount', which no other file has. If that is the column "
        "renamed, rename it back in the file, because sources.events.columns maps "
        "one name for every file; otherwise read the file as a separate source with "
        "its own path."
    ]


def test_glob_lacking_attribute_names_files(tmp_path, caplog):
    config = minimal_config()
    config["sources"]["events"]["path"] = "events/*.parquet"
    config["sources"]["events"]["attributes"] = {"plan": "string"}
    plan = {"plan": ["pro"]}
    files = {
        "accounts.csv": ACCOUNTS_CSV,
        "events/1.parquet": events_frame("a1", "2026-01-04 10:00").assign(**plan),
        "events/2.parquet": events_frame("a1", "2026-02-04 10:00"),
        "events/3.parquet": events_frame("a2", "2026-03-04 10:00"),
    }
    project = write_project(tmp_path, config, files)
    with caplog.at_level(logging.WARNING, logger=READER_LOGGER):
        load(project)
    file = tmp_path / "events" / "2.parquet"
    assert reader_warnings(caplog) == [
        f"source 'events': column 'plan' not found in {file} (and 1 more file), "
        "although other files of 'events/*.parquet' have it, so 'plan' is missing "
        "in the files' 2 rows. Add the column to the files, or read the files as "
        "a separate source with its own path."
    ]


def test_jsonl_key_written_as_null_does_not_warn(tmp_path, caplog):
    project = glob_project(
        tmp_path,
        "events/*.jsonl",
        {
            "events/1.jsonl": [
                {"account_id": "a1", "timestamp": "2026-01-04 10:00", "value": 1.5}
            ],
            "events/2.jsonl": [
                {"account_id": "a1", "timestamp": "2026-02-04 10:00", "value": None}
            ],
        },
    )
    with caplog.at_level(logging.WARNING, logger=READER_LOGGER):
        load(project)
    assert reader_warnings(caplog) == []


def test_column_lacking_in_every_file_does_not_warn(tmp_path, caplog):
    project = glob_project(
        tmp_path,
        "events/*.parquet",
        {
            "events/1.parquet": events_frame("a1", "2026-01-04 10:00", amount=1.0),
            "events/2.parquet": events_frame("a1", "2026-02-04 10:00", amount=2.0),
        },
    )
    with caplog.at_level(logging.WARNING, logger=READER_LOGGER):
        columns = load(project).columns("events")
    assert reader_warnings(caplog) == []
    assert "value" not in columns


def test_parquet_glob_alike_files_do_not_warn(tmp_path, caplog):
    project = glob_project(
        tmp_path,
        "events/*.parquet",
        {
            "events/1.parquet": events_frame("a1", "2026-01-04 10:00", value=1.0),
            "events/2.parquet": events_frame("a1", "2026-02-04 10:00", value=2.0),
        },
    )
    with caplog.at_level(logging.WARNING, logger=READER_LOGGER):
        load(project)
    assert reader_warnings(caplog) == []


def test_parquet_glob_letter_case_does_not_warn(tmp_path, caplog):
    project = glob_project(
        tmp_path,
        "events/*.parquet",
        {
            "events/1.parquet": events_frame("a1", "2026-01-04 10:00", value=1.0),
            "events/2.parquet": events_frame("a1", "2026-02-04 10:00", Value=2.0),
        },
    )
    with caplog.at_level(logging.WARNING, logger=READER_LOGGER):
        rows = load(project).rows("events").execute().sort_values("timestamp")
    assert reader_warnings(caplog) == []
    # DuckDB reads Value as value, so both rows have their value.
    assert list(rows["value"]) == [1.0, 2.0]


def test_validate_prints_glob_column_warning(tmp_path):
    project = renamed_parquet_project(tmp_path)
    result = CliRunner().invoke(
        app, ["validate", "--data", "--project", str(project.root)]
    )
    assert result.exit_code == 0, result.output
    assert "column 'value' not found in" in " ".join(result.stderr.split())


# A CSV glob whose files have different columns or delimiters.

CSV_JANUARY = "account_id,timestamp,value\na1,2026-01-04 10:00:00,1.5\n"
CSV_MARCH = "account_id,timestamp,value\na2,2026-03-04 10:00:00,7\n"


def test_csv_glob_renamed_column_named(tmp_path):
    project = glob_project(
        tmp_path,
        "events/*.csv",
        {
            "events/2026-01.csv": CSV_JANUARY,
            "events/2026-02.csv": "account_id,timestamp,amount\na1,2026-02-04,2.5\n",
            "events/2026-03.csv": CSV_MARCH,
        },
    )
    with pytest.raises(SourceError) as caught:
        load(project)
    first = tmp_path / "events" / "2026-01.csv"
    other = tmp_path / "events" / "2026-02.csv"
    assert str(caught.value) == (
        f"source 'events': cannot read the files of 'events/*.csv' as one table: "
        f"{other} has no column 'value', which the first file, {first}, has. It has "
        "'amount' instead. Each file of a CSV glob must have every column of the "
        "first file, and sources.events.columns maps one name for every file, so "
        "rename the column in the file, or move the file out of the folder or "
        "narrow sources.events.path."
    )


def test_csv_glob_renamed_column_in_several_files(tmp_path):
    renamed = "account_id,event_time,value\na1,2026-02-04,2.5\n"
    project = glob_project(
        tmp_path,
        "events/*.csv",
        {
            "events/2026-01.csv": CSV_JANUARY,
            "events/2026-02.csv": renamed,
            "events/2026-03.csv": renamed,
        },
    )
    with pytest.raises(SourceError) as caught:
        load(project)
    message = str(caught.value)
    other = tmp_path / "events" / "2026-02.csv"
    assert f"{other} (and 1 more file) has no column 'timestamp'" in message
    assert "It has 'event_time' instead." in message


def test_csv_glob_other_delimiter_named(tmp_path):
    project = glob_project(
        tmp_path,
        "events/*.csv",
        {
            "events/2026-01.csv": CSV_JANUARY,
            "events/2026-02.csv": "account_id;timestamp;value\na1;2026-02-04;2.5\n",
            "events/2026-03.csv": CSV_MARCH,
        },
    )
    with pytest.raises(SourceError) as caught:
        load(project)
    other = tmp_path / "events" / "2026-02.csv"
    assert str(caught.value) == (
        f"source 'events': cannot read the files of 'events/*.csv' as one table: "
        f"the header of {other} looks separated by ';', but every file of the glob "
        "is read with sources.events.delimiter, ','. Save the file with ',' "
        "between its fields, or move it out of the folder or narrow "
        "sources.events.path."
    )


# Text encodings and compression detected by a file's first bytes.


def events_bytes_project(tmp_path: Path, data: bytes, name: str) -> Project:
    config = minimal_config()
    config["sources"]["events"]["path"] = name
    (tmp_path / name).write_bytes(data)
    return write_project(tmp_path, config, {"accounts.csv": ACCOUNTS_CSV})


EVENTS_TEXT = "account_id,timestamp\r\na1,2026-03-04 10:00:00\r\n"


@pytest.mark.parametrize(
    ("encoding", "mark"), [("utf-16-le", "FF FE"), ("utf-16-be", "FE FF")]
)
def test_utf16_csv_named_as_such(tmp_path, encoding, mark):
    data = "\ufeff".encode(encoding) + EVENTS_TEXT.encode(encoding)
    project = events_bytes_project(tmp_path, data, "events.csv")
    with pytest.raises(SourceError) as caught:
        load(project)
    file = tmp_path / "events.csv"
    assert str(caught.value) == (
        f"source 'events': cannot read {file} as csv: the file is UTF-16 text (it "
        f"starts with the byte order mark {mark}), but CSV files are read as UTF-8. "
        "Save it as UTF-8 (in Excel: CSV UTF-8), or convert it with "
        f"`iconv -f UTF-16 -t UTF-8 {file} > {tmp_path / 'events.utf8.csv'}`."
    )
    # What the iconv command does: the byte order mark picks the byte order, and
    # the converted file reads.
    (tmp_path / "events.csv").write_bytes(data.decode("utf-16").encode("utf-8"))
    assert len(load(project).rows("events").execute()) == 1


def test_gzip_named_csv_named_as_such(tmp_path):
    data = gzip.compress(EVENTS_TEXT.encode())
    project = events_bytes_project(tmp_path, data, "events.csv")
    with pytest.raises(SourceError) as caught:
        load(project)
    file = tmp_path / "events.csv"
    assert str(caught.value) == (
        f"source 'events': cannot read {file} as csv: the file is gzip-compressed "
        "(it starts with the bytes 1F 8B), but its name does not end in .gz, so it "
        f"is read as plain text. Decompress it with `mv {file} {file}.gz && "
        f"gunzip {file}.gz`, or rename it to end in .gz and change "
        "sources.events.path to match."
    )
    # What the commands do.
    (tmp_path / "events.csv").write_bytes(gzip.decompress(data))
    assert len(load(project).rows("events").execute()) == 1


# Line 2 has 0xe9 (é in both Latin-1 and Windows-1252), line 3 has 0x80: € in
# Windows-1252, but the control character U+0080 in Latin-1.
CP1252_EVENTS = (
    b"account_id,timestamp,note\n"
    b"a1,2026-03-04 10:00:00,caf\xe9\n"
    b"a1,2026-03-05 10:00:00,5 \x80\n"
)


def test_cp1252_csv_gets_cp1252_advice(tmp_path):
    project = events_bytes_project(tmp_path, CP1252_EVENTS, "events.csv")
    with pytest.raises(SourceError) as caught:
        load(project)
    file = tmp_path / "events.csv"
    assert str(caught.value) == (
        f"source 'events': cannot read {file} as csv: line 2 is not valid UTF-8 "
        "(byte 27 of the line is 0xe9). CSV files are read as UTF-8, so save the "
        "file as UTF-8. Line 3 has the byte 0x80, which is '€' in Windows-1252 but "
        "a control character in Latin-1, so the file is likely Windows-1252 and "
        f"converts with `iconv -f CP1252 -t UTF-8 {file} > "
        f"{tmp_path / 'events.utf8.csv'}`."
    )


def test_cp1252_gzip_csv_gets_cp1252_advice(tmp_path):
    data = gzip.compress(CP1252_EVENTS)
    project = events_bytes_project(tmp_path, data, "events.csv.gz")
    with pytest.raises(SourceError) as caught:
        load(project)
    file = tmp_path / "events.csv.gz"
    assert str(caught.value).endswith(
        f"`gunzip -c {file} | iconv -f CP1252 -t UTF-8 | gzip > "
        f"{tmp_path / 'events.csv.utf8.gz'}`."
    )


def test_latin1_csv_keeps_latin1_advice(tmp_path):
    data = CP1252_EVENTS.replace(b"\x80", b"\xa3")  # £ in Latin-1 and Windows-1252
    project = events_bytes_project(tmp_path, data, "events.csv")
    with pytest.raises(SourceError) as caught:
        load(project)
    assert "A Latin-1 file, for example, converts with `iconv -f LATIN1" in str(
        caught.value
    )
    assert "CP1252" not in str(caught.value)


# timestamp_format is checked when the project loads.


def format_issue(tmp_path: Path, timestamp_format: str) -> str:
    config = minimal_config()
    config["sources"]["events"]["timestamp_format"] = timestamp_format
    with pytest.raises(ConfigError) as caught:
        write_project(
            tmp_path,
            config,
            {"accounts.csv": ACCOUNTS_CSV, "events.csv": "account_id,timestamp\n"},
        )
    (issue,) = caught.value.issues
    assert issue.key == "sources.events.timestamp_format"
    return issue.message


def test_timestamp_format_unknown_specifier_rejected(tmp_path):
    message = format_issue(tmp_path, "%Q/%m")
    assert message.startswith(
        "'%Q/%m' has the specifier '%Q', which DuckDB's strptime does not support. "
        "Use the specifiers "
    )
    assert "%d" in message
    assert "%Y" in message
    assert "%-d" in message


def test_timestamp_format_epoch_seconds_rejected(tmp_path):
    message = format_issue(tmp_path, "%s")
    assert message == (
        "'%s' has the specifier '%s' (seconds since the Unix epoch), which is not "
        "read from files: a time column of a CSV, JSON Lines or Parquet file must "
        "contain text or a Parquet date or timestamp. Convert the column to text "
        "such as 2026-03-04 10:00:00 and remove timestamp_format. The importers of "
        "docs/importers.md read a number as Unix seconds without it"
    )


def test_timestamp_format_trailing_percent_rejected(tmp_path):
    message = format_issue(tmp_path, "%d/%m/%Y %")
    assert message == (
        "'%d/%m/%Y %' ends with a lone '%'; write '%%' for a percent sign"
    )


@pytest.mark.parametrize(
    "timestamp_format", ["%d/%m/%Y %H:%M", "%m/%d/%Y %I:%M %p", "%-d.%-m.%Y %%"]
)
def test_timestamp_format_supported_accepted(tmp_path, timestamp_format):
    config = minimal_config()
    config["sources"]["events"]["timestamp_format"] = timestamp_format
    project = write_project(
        tmp_path,
        config,
        {"accounts.csv": ACCOUNTS_CSV, "events.csv": "account_id,timestamp\n"},
    )
    assert project.config.sources["events"].timestamp_format == timestamp_format
