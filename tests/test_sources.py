"""Reading sources: formats, column mapping, row checks and time zones."""

from __future__ import annotations

import gzip
import json
import os
import subprocess
import sys
from datetime import date, datetime
from pathlib import Path

import duckdb
import pandas as pd
import pytest
from typer.testing import CliRunner, Result

from healthscore.cli import app
from healthscore.config import Project
from healthscore.engine import connect
from healthscore.sources import SourceError, load_sources
from project_factory import ACCOUNTS_CSV, minimal_config, write_project

EVENTS_CSV = """account_id,event_time,kind,user
a1,2024-03-01 10:00:00,login,u1
a1,2024-03-02 11:00:00,login,u2
a2,2024-03-03 09:30:00,export,u3
"""


def load(project):
    return load_sources(project, connect(project))


def test_csv_with_column_mapping(tmp_path):
    config = minimal_config()
    config["sources"]["events"]["columns"] = {
        "timestamp": "event_time",
        "event_type": "kind",
    }
    project = write_project(
        tmp_path, config, {"accounts.csv": ACCOUNTS_CSV, "events.csv": EVENTS_CSV}
    )
    rows = load(project).rows("events").execute().sort_values("timestamp")
    assert list(rows["account_id"]) == ["a1", "a1", "a2"]
    assert list(rows["event_type"]) == ["login", "login", "export"]
    assert list(rows["user"]) == ["u1", "u2", "u3"]
    assert rows["timestamp"].iloc[2] == pd.Timestamp("2024-03-03 09:30:00")


def events_file_content(frame: pd.DataFrame, name: str) -> object:
    """Return `frame` as write_project writes the file `name`: text, rows or a frame."""
    if name.endswith(".parquet"):
        return frame.assign(timestamp=pd.to_datetime(frame["timestamp"]))
    if name.endswith(".jsonl"):
        return frame.to_dict(orient="records")
    return frame.to_csv(index=False)


@pytest.mark.parametrize("name", ["events.csv.gz", "events.parquet", "events.jsonl"])
def test_every_format_gives_same_rows(tmp_path, name):
    frame = pd.DataFrame(
        {
            "account_id": ["a1", "a2"],
            "timestamp": ["2024-03-01 10:00:00", "2024-03-02 12:00:00"],
            "value": [1.5, 2.0],
        }
    )
    content = events_file_content(frame, name)
    config = minimal_config()
    config["sources"]["events"]["path"] = name
    project = write_project(
        tmp_path, config, {"accounts.csv": ACCOUNTS_CSV, name: content}
    )
    rows = load(project).rows("events").execute().sort_values("account_id")
    assert list(rows["value"]) == [1.5, 2.0]
    assert list(rows["timestamp"]) == [
        pd.Timestamp("2024-03-01 10:00:00"),
        pd.Timestamp("2024-03-02 12:00:00"),
    ]


def test_glob_reads_every_file(tmp_path):
    config = minimal_config()
    config["sources"]["events"]["path"] = "events/*.csv"
    files = {
        "accounts.csv": ACCOUNTS_CSV,
        "events/2024-03.csv": "account_id,timestamp\na1,2024-03-01\na2,2024-03-05\n",
        "events/2024-04.csv": "account_id,timestamp\na3,2024-04-01\n",
    }
    project = write_project(tmp_path, config, files)
    rows = load(project).rows("events").execute()
    assert sorted(rows["account_id"]) == ["a1", "a2", "a3"]


BAD_EVENTS = """account_id,timestamp,value
a1,2024-03-01 10:00:00,1
,2024-03-01 11:00:00,1
a2,not a time,1
a2,2024-03-02 10:00:00,abc
zz,2024-03-02 10:00:00,1
a3,2024-04-20 10:00:00,1
a3,2024-03-03 10:00:00,
"""


def test_bad_rows_reported_by_file_row_column_reason(tmp_path):
    project = write_project(
        tmp_path,
        minimal_config(),
        {"accounts.csv": ACCOUNTS_CSV, "events.csv": BAD_EVENTS},
    )
    sources = load(project)
    report = {r.source: r for r in sources.report(datetime(2024, 4, 1))}["events"]

    assert report.rows_read == 7
    assert report.rows_used == 2
    assert report.excluded == {
        "after_as_of:timestamp": 1,
        "missing_value:account_id": 1,
        "unknown_account:account_id": 1,
        "unparseable_value:timestamp": 1,
        "unparseable_value:value": 1,
    }
    examples = {(e.row, e.column, e.reason) for e in report.examples}
    assert examples == {
        (2, "account_id", "missing_value"),
        (3, "timestamp", "unparseable_value"),
        (4, "value", "unparseable_value"),
        (5, "account_id", "unknown_account"),
        (6, "timestamp", "after_as_of"),
    }
    assert all(e.file.endswith("events.csv") for e in report.examples)


def test_empty_row_reported_by_account_id(tmp_path):
    events = (
        "account_id,timestamp,value\n"
        "a1,2024-03-01 10:00:00,1\n"
        ",,\n"
        "a2,,2\n"
        ",2024-03-02 10:00:00,3\n"
    )
    project = write_project(
        tmp_path,
        minimal_config(),
        {"accounts.csv": ACCOUNTS_CSV, "events.csv": events},
    )
    sources = load(project)
    report = {r.source: r for r in sources.report(datetime(2024, 4, 1))}["events"]

    assert report.excluded == {
        "missing_value:account_id": 2,
        "missing_value:timestamp": 1,
    }
    examples = {(e.row, e.column) for e in report.examples}
    assert examples == {(2, "account_id"), (3, "timestamp"), (4, "account_id")}


def test_empty_optional_value_is_kept_as_missing(tmp_path):
    project = write_project(
        tmp_path,
        minimal_config(),
        {"accounts.csv": ACCOUNTS_CSV, "events.csv": BAD_EVENTS},
    )
    rows = load(project).rows("events", datetime(2024, 4, 1)).execute()
    a3 = rows[rows["account_id"] == "a3"]
    assert len(a3) == 1
    assert pd.isna(a3["value"].iloc[0])


def test_duplicate_account_ids_excluded(tmp_path):
    accounts = ACCOUNTS_CSV + "a2,Globex again,smb,bob,1\n"
    events = "account_id,timestamp\na2,2024-03-01\na1,2024-03-01\n"
    project = write_project(
        tmp_path, minimal_config(), {"accounts.csv": accounts, "events.csv": events}
    )
    sources = load(project)
    reports = {r.source: r for r in sources.report(datetime(2024, 4, 1))}
    assert reports["accounts"].excluded == {"duplicate_account_id:account_id": 2}
    assert sorted(e.row for e in reports["accounts"].examples) == [2, 4]
    assert list(sources.accounts().index) == ["a1", "a3"]
    assert reports["events"].excluded == {"duplicated_account:account_id": 1}


def test_row_numbers_count_per_file_in_glob(tmp_path):
    config = minimal_config()
    config["sources"]["events"]["path"] = "events/*.csv"
    files = {
        "accounts.csv": ACCOUNTS_CSV,
        "events/1.csv": "account_id,timestamp\na1,2024-03-01\na1,2024-03-02\n",
        "events/2.csv": "account_id,timestamp\na1,2024-03-01\na1,bad\n",
    }
    project = write_project(tmp_path, config, files)
    report = load(project).report(datetime(2024, 4, 1))[1]
    assert [(Path(e.file).name, e.row) for e in report.examples] == [("2.csv", 2)]


def test_missing_mapped_column_fails_clearly(tmp_path):
    config = minimal_config()
    config["sources"]["events"]["columns"] = {"timestamp": "event_time"}
    project = write_project(
        tmp_path,
        config,
        {"accounts.csv": ACCOUNTS_CSV, "events.csv": "account_id,ts\na1,2024-01-01\n"},
    )
    with pytest.raises(
        SourceError,
        match=r"source 'events': column 'event_time' for 'timestamp' not found in the "
        r"file; it has account_id, ts\. Fix sources\.events\.columns\.",
    ):
        load(project)


def test_unreadable_file_fails_clearly(tmp_path):
    config = minimal_config()
    config["sources"]["events"]["path"] = "events.parquet"
    project = write_project(
        tmp_path,
        config,
        {"accounts.csv": ACCOUNTS_CSV, "events.parquet": "this is not parquet"},
    )
    with pytest.raises(
        SourceError, match=r"source 'events': cannot read .*events\.parquet"
    ):
        load(project)


OFFSET_EVENTS = """account_id,timestamp
a1,2024-03-31 23:30:00
a1,2024-03-31 23:30:00+00:00
a1,2024-04-01T00:30:00+02:00
"""


def test_timestamps_follow_project_time_zone(tmp_path):
    project = write_project(
        tmp_path,
        minimal_config(timezone="Europe/Berlin"),
        {"accounts.csv": ACCOUNTS_CSV, "events.csv": OFFSET_EVENTS},
    )
    rows = load(project).rows("events").execute()
    # Naive: read as Berlin wall-clock time. 23:30 UTC is 01:30 in Berlin on 1 April
    # (summer time starts 31 March 2024). 00:30+02:00 is 00:30 Berlin time.
    assert sorted(rows["timestamp"]) == [
        pd.Timestamp("2024-03-31 23:30:00"),
        pd.Timestamp("2024-04-01 00:30:00"),
        pd.Timestamp("2024-04-01 01:30:00"),
    ]


def test_results_do_not_depend_on_host_time_zone(tmp_path):
    config = minimal_config(timezone="America/New_York")
    config["metrics"]["events_1d"] = {
        "type": "count",
        "source": "events",
        "window": "1d",
    }
    # 02:00 UTC on 1 April is 22:00 on 31 March in New York. The naive 02:00 is
    # read as New York time, so it falls on 1 April, outside the window.
    events = OFFSET_EVENTS + "a1,2024-04-01 02:00:00+00:00\na1,2024-04-01 02:00:00\n"
    write_project(
        tmp_path, config, {"accounts.csv": ACCOUNTS_CSV, "events.csv": events}
    )
    script = (
        "import json, sys\n"
        "from datetime import date\n"
        "from healthscore.config import load_project\n"
        "from healthscore.engine import connect\n"
        "from healthscore.sources import load_sources\n"
        "from healthscore.metrics import compute_metrics\n"
        "p = load_project(sys.argv[1])\n"
        "s = load_sources(p, connect(p))\n"
        "m = compute_metrics(p, s, date(2024, 4, 1))\n"
        "rows = s.rows('events').execute()\n"
        "print(json.dumps({'metrics': m.values.to_dict(),"
        " 'times': sorted(str(t) for t in rows['timestamp'])}))\n"
    )
    outputs = []
    for host_zone in ("Asia/Tokyo", "America/Los_Angeles"):
        env = {**os.environ, "TZ": host_zone}
        completed = subprocess.run(
            [sys.executable, "-c", script, str(tmp_path)],
            capture_output=True,
            text=True,
            env=env,
            check=True,
        )
        outputs.append(json.loads(completed.stdout))
    assert outputs[0] == outputs[1]
    # In New York time, four of the five rows fall on 31 March.
    assert outputs[0]["metrics"]["events_1d"]["a1"] == 4.0


def test_rows_after_point_are_hidden(tmp_path):
    config = minimal_config()
    config["sources"]["events"]["columns"] = {"timestamp": "event_time"}
    project = write_project(
        tmp_path, config, {"accounts.csv": ACCOUNTS_CSV, "events.csv": EVENTS_CSV}
    )
    rows = load(project).rows("events", datetime(2024, 3, 2, 11, 0)).execute()
    assert sorted(rows["timestamp"]) == [
        pd.Timestamp("2024-03-01 10:00:00"),
        pd.Timestamp("2024-03-02 11:00:00"),
    ]


def test_empty_file_fails_clearly(tmp_path):
    project = write_project(
        tmp_path, minimal_config(), {"accounts.csv": ACCOUNTS_CSV, "events.csv": ""}
    )
    with pytest.raises(
        SourceError,
        match=r"source 'events': .*events\.csv is empty; a csv file needs at least a "
        r"header row",
    ):
        load(project)


EVENT_RECORDS = [
    {"account_id": "a1", "timestamp": "2024-03-01 10:00:00", "event_type": "login"},
    {"account_id": "a2", "timestamp": "2024-03-02 10:00:00", "event_type": "login"},
]


def test_jsonl_glob_with_empty_days(tmp_path):
    # Daily exports: a day without events gives an empty file, or one blank line.
    config = minimal_config()
    config["sources"]["events"]["path"] = "events/*.jsonl"
    files = {
        "accounts.csv": ACCOUNTS_CSV,
        "events/2024-03-01.jsonl": EVENT_RECORDS[:1],
        "events/2024-03-02.jsonl": "",
        "events/2024-03-03.jsonl": "\n",
        "events/2024-03-04.jsonl": EVENT_RECORDS[1:],
    }
    project = write_project(tmp_path, config, files)
    sources = load(project)
    rows = sources.rows("events").execute().sort_values("timestamp")
    assert list(rows["account_id"]) == ["a1", "a2"]
    report = sources.report(datetime(2024, 3, 10))[1]
    assert (report.rows_read, report.rows_used) == (2, 2)


@pytest.mark.parametrize("content", ["", "\n", " \n\r\n\n"])
def test_jsonl_without_records_has_no_rows(tmp_path, content):
    # Like a CSV file with only a header row, and with every column of the kind.
    config = minimal_config()
    config["sources"]["events"]["path"] = "events.jsonl"
    config["metrics"]["value_sum"] = {
        "type": "sum",
        "source": "events",
        "column": "value",
        "window": "28d",
    }
    files = {"accounts.csv": ACCOUNTS_CSV, "events.jsonl": content}
    project = write_project(tmp_path, config, files)
    sources = load(project)
    assert len(sources.rows("events").execute()) == 0
    assert list(sources.columns("events")) == [
        "account_id", "timestamp", "user", "event_type", "value"
    ]  # fmt: skip
    result = CliRunner().invoke(
        app, ["score", "--as-of", "2024-03-10", "--project", str(tmp_path)]
    )
    assert result.exit_code == 0, result.output


def test_csv_without_header_still_fails(tmp_path):
    project = write_project(
        tmp_path, minimal_config(), {"accounts.csv": ACCOUNTS_CSV, "events.csv": "\n"}
    )
    with pytest.raises(SourceError, match=r"source 'events': "):
        load(project)


def test_csv_repeated_column_fails(tmp_path):
    config = minimal_config()
    config["sources"]["events"]["path"] = "events/*.csv"
    files = {
        "accounts.csv": ACCOUNTS_CSV,
        "events/1.csv": "account_id,timestamp\na1,2024-03-01\n",
        "events/2.csv": "account_id,timestamp,note,account_id\na1,2024-03-01,x,a2\n",
    }
    project = write_project(tmp_path, config, files)
    with pytest.raises(SourceError) as caught:
        load(project)
    assert str(caught.value) == (
        f"source 'events': the header of {tmp_path / 'events' / '2.csv'} has column "
        "'account_id' twice, as columns 1 and 4, so it is unclear which one to read. "
        "Rename or remove one of them."
    )


def test_csv_repeated_unread_column_passes(tmp_path):
    events = "account_id,timestamp,note,note\na1,2024-03-01,x,y\n"
    files = {"accounts.csv": ACCOUNTS_CSV, "events.csv": events}
    project = write_project(tmp_path, minimal_config(), files)
    rows = load(project).rows("events").execute()
    assert list(rows["account_id"]) == ["a1"]


def test_wrong_delimiter_gets_a_hint(tmp_path):
    events = "account_id;timestamp\na1;2024-03-01\n"
    project = write_project(
        tmp_path, minimal_config(), {"accounts.csv": ACCOUNTS_CSV, "events.csv": events}
    )
    with pytest.raises(
        SourceError,
        match=r"The header looks separated by ';': set sources\.events\.delimiter\.",
    ):
        load(project)


def test_every_unreadable_source_listed(tmp_path):
    config = minimal_config()
    config["sources"]["more"] = {"kind": "events", "path": "more.csv"}
    files = {
        "accounts.csv": ACCOUNTS_CSV,
        "events.csv": "account_id,other\na1,x\n",
        "more.csv": "",
    }
    project = write_project(tmp_path, config, files)
    with pytest.raises(SourceError) as caught:
        load(project)
    lines = str(caught.value).splitlines()
    assert len(lines) == 2
    assert lines[0].startswith("source 'events': column 'timestamp'")
    assert lines[1].startswith("source 'more': ")


def test_rows_of_duplicated_account_named_as_such(tmp_path):
    accounts = ACCOUNTS_CSV + "a2,Globex again,smb,bob,1\n"
    events = "account_id,timestamp\na2,2024-03-01\na1,2024-03-01\nzz,2024-03-01\n"
    project = write_project(
        tmp_path, minimal_config(), {"accounts.csv": accounts, "events.csv": events}
    )
    report = load(project).report(datetime(2024, 4, 1))[1]
    assert report.excluded == {
        "duplicated_account:account_id": 1,
        "unknown_account:account_id": 1,
    }
    assert [(e.row, e.reason) for e in report.examples] == [
        (1, "duplicated_account"),
        (3, "unknown_account"),
    ]


def test_account_examples_show_ids(tmp_path):
    # a4's arr cannot be read, so its account row is excluded. ' a5 ' and '8' are
    # accounts, but the events name them 'a5' and '8.0'.
    accounts = (
        ACCOUNTS_CSV
        + 'a4,Hooli,smb,bob,"12.000,50"\n'
        + " a5 ,Soylent,smb,bob,1\n"
        + "8,Wayne,smb,bob,1\n"
    )
    events = (
        "account_id,timestamp\n"
        "a1,2024-03-01\n"
        "a4,2024-03-01\n"
        "a4,2024-03-02\n"
        "a5,2024-03-01\n"
        "8.0,2024-03-01\n"
        "zz,2024-03-01\n"
    )
    project = write_project(
        tmp_path, minimal_config(), {"accounts.csv": accounts, "events.csv": events}
    )

    report = load(project).report(datetime(2024, 4, 1))[1]

    assert report.excluded == {
        "excluded_account:account_id": 2,
        "unknown_account:account_id": 3,
    }
    examples = [(e.row, e.reason, e.value, e.detail) for e in report.examples]
    accounts_file = tmp_path / "accounts.csv"
    problem = (
        f"{accounts_file}, row 4, column arr: value cannot be read as the column's "
        "type: '12.000,50'; expected a number such as 1250 or -0.5"
    )
    # One example per account id.
    assert examples == [
        (2, "excluded_account", "a4", problem),
        (4, "unknown_account", "a5", "the accounts source has ' a5 '"),
        (5, "unknown_account", "8.0", "the accounts source has '8'"),
        (6, "unknown_account", "zz", None),
    ]

    events_file = tmp_path / "events.csv"
    assert str(report.examples[0]) == (
        f"{events_file}, row 2, column account_id: account id's row in the accounts "
        f"source is excluded: 'a4' ({problem})"
    )
    assert str(report.examples[2]) == (
        f"{events_file}, row 5, column account_id: account id not found in the "
        "accounts source: '8.0' (the accounts source has '8')"
    )

    assert report.examples[0].to_dict() == {
        "file": str(events_file),
        "row": 2,
        "column": "account_id",
        "reason": "excluded_account",
        "value": "a4",
        "expected": None,
        "detail": problem,
    }


def test_swept_reports_of_excluded_accounts(tmp_path):
    from healthscore.monitoring.backfill_sweep import sweep_source_reports

    # No row names an unknown or duplicated account, only an excluded one.
    accounts = ACCOUNTS_CSV.replace("a2,Globex,smb,bob,9000", "a2,Globex,smb,bob,x")
    events = "account_id,timestamp\na1,2024-03-01\na2,2024-03-02\na2,2024-03-20\n"
    project = write_project(
        tmp_path, minimal_config(), {"accounts.csv": accounts, "events.csv": events}
    )
    sources = load(project)
    points = [datetime(2024, 3, 10), datetime(2024, 4, 1)]
    swept = sweep_source_reports(sources, points)
    for point, reports in zip(points, swept, strict=True):
        assert reports == sources.report(point), point
    assert swept[1][1].excluded == {"excluded_account:account_id": 2}


# Lookup files, and CSV rows whose field count differs from the header's.

OWNERS_CSV = "owner_id,name\nalice,Alice Ng\nbob,Bob Li\n"


def lookup_project(tmp_path: Path, owners: str) -> Project:
    """A project whose accounts replace owner ids with names from owners.csv."""
    config = minimal_config()
    config["sources"]["accounts"]["lookups"] = {
        "owner": {"path": "owners.csv", "key": "owner_id", "value": "name"}
    }
    files = {
        "accounts.csv": ACCOUNTS_CSV,
        "events.csv": "account_id,timestamp\na1,2024-03-01 10:00:00\n",
        "owners.csv": owners,
    }
    return write_project(tmp_path, config, files)


def run_cli(command: list[str], project: Project) -> Result:
    runner = CliRunner(env={"COLUMNS": "200", "NO_COLOR": "1"})
    args = [*command, "--project", str(project.root), "--as-of", "2024-04-01"]
    return runner.invoke(app, args, prog_name="healthscore")


def score(project: Project) -> Result:
    return run_cli(["score"], project)


def test_lookup_replaces_codes(tmp_path):
    project = lookup_project(tmp_path, OWNERS_CSV)
    accounts = load(project).accounts()
    assert accounts["owner"].to_dict() == {
        "a1": "Alice Ng",
        "a2": "Bob Li",
        "a3": "Bob Li",
    }


def test_lookup_row_with_extra_field_fails(tmp_path):
    project = lookup_project(tmp_path, OWNERS_CSV + "a1,x,smb\n")
    with pytest.raises(SourceError) as caught:
        load(project)
    assert str(caught.value) == (
        f"source 'accounts': lookup file {tmp_path / 'owners.csv'}, line 4: the row "
        "has 3 fields but the header has 2 (owner_id, name). Fix the row, or put "
        "double quotes around a value that contains ','."
    )


def test_lookup_row_with_missing_field_fails(tmp_path):
    project = lookup_project(tmp_path, "owner_id,name\nalice\nbob,Bob Li\n")
    with pytest.raises(
        SourceError, match=r"owners\.csv, line 2: the row has 1 field but"
    ):
        load(project)


def test_lookup_key_with_two_values_fails(tmp_path):
    project = lookup_project(tmp_path, OWNERS_CSV + "alice,Alice Other\n")
    with pytest.raises(SourceError) as caught:
        load(project)
    assert str(caught.value) == (
        f"source 'accounts': lookup file {tmp_path / 'owners.csv'}, line 4: key "
        "'alice' has the value 'Alice Other' but line 2 gives it 'Alice Ng'. Keep "
        "one row per key."
    )


def test_lookup_key_repeated_with_same_value_kept(tmp_path):
    project = lookup_project(tmp_path, OWNERS_CSV + "bob,Bob Li\n")
    sources = load(project)
    report = sources.report(datetime(2024, 4, 1))[0]
    assert report.rows_read == 3
    assert report.rows_used == 3
    assert report.excluded == {}
    assert sources.accounts()["owner"].to_dict() == {
        "a1": "Alice Ng",
        "a2": "Bob Li",
        "a3": "Bob Li",
    }


def test_lookup_separated_by_semicolons(tmp_path):
    project = lookup_project(tmp_path, OWNERS_CSV.replace(",", ";"))
    assert load(project).accounts()["owner"].to_dict() == {
        "a1": "Alice Ng",
        "a2": "Bob Li",
        "a3": "Bob Li",
    }


def test_lookup_without_key_column_fails(tmp_path):
    project = lookup_project(tmp_path, "owner,name\nalice,Alice Ng\n")
    with pytest.raises(SourceError) as caught:
        load(project)
    assert str(caught.value) == (
        f"source 'accounts': lookup file {tmp_path / 'owners.csv'} has no column "
        "'owner_id'; its header has owner, name. Fix "
        "sources.accounts.lookups.owner.key or the header."
    )


def test_score_stores_nothing_on_bad_lookup(tmp_path):
    project = lookup_project(tmp_path, OWNERS_CSV + "alice,Alice Other\n")
    result = score(project)
    assert result.exit_code == 1
    assert "line 4: key 'alice' has the value 'Alice Other'" in result.stderr
    assert not (tmp_path / ".healthscore" / "snapshots").exists()


def test_validate_data_reports_bad_lookup(tmp_path):
    project = lookup_project(tmp_path, OWNERS_CSV + "a1,x,smb\n")
    result = run_cli(["validate", "--data"], project)
    assert result.exit_code == 1
    assert "owners.csv, line 4: the row has 3 fields" in result.stderr
    assert "is valid" not in result.stdout


WIDE_ROW_EVENTS = """account_id,timestamp
a1,2024-03-01 10:00:00
a2,2024-03-02 10:00:00,x,y,z
a1,2024-03-03 10:00:00
"""


def test_csv_row_with_extra_fields_names_line(tmp_path):
    project = write_project(
        tmp_path,
        minimal_config(),
        {"accounts.csv": ACCOUNTS_CSV, "events.csv": WIDE_ROW_EVENTS},
    )
    with pytest.raises(SourceError) as caught:
        load(project)
    assert str(caught.value) == (
        f"source 'events': cannot read {tmp_path / 'events.csv'} as csv: line 3 has "
        "5 fields but the header has 2. Fix the row, or put double quotes around "
        "each value that contains ','."
    )


def test_csv_row_with_missing_fields_names_line(tmp_path):
    accounts = ACCOUNTS_CSV + "a4,Umbrella,smb\n"
    events = "account_id,timestamp\na1,2024-03-01 10:00:00\n"
    project = write_project(
        tmp_path, minimal_config(), {"accounts.csv": accounts, "events.csv": events}
    )
    with pytest.raises(SourceError) as caught:
        load(project)
    assert str(caught.value) == (
        f"source 'accounts': cannot read {tmp_path / 'accounts.csv'} as csv: line 5 "
        "has 3 fields but the header has 5. Fix the row, or put double quotes around "
        "each value that contains ','."
    )


def test_csv_bad_row_past_sniffer_sample_names_line(tmp_path):
    # DuckDB's sniffer reads the first 20,480 rows, so the bad row is found by the
    # scan itself. The quoted note spans two lines, so row 2 ends on line 3.
    rows = ['a1,2024-03-01 10:00:00,"first line', 'second line"']
    rows += ["a1,2024-03-01 10:00:00,plain"] * 30_000
    rows += ["a2,2024-03-02 10:00:00,a,b,c,d"]
    events = "account_id,timestamp,note\n" + "\n".join(rows) + "\n"
    config = minimal_config()
    config["sources"]["events"]["path"] = "events.csv.gz"
    project = write_project(
        tmp_path, config, {"accounts.csv": ACCOUNTS_CSV, "events.csv.gz": events}
    )
    with pytest.raises(SourceError) as caught:
        load(project)
    assert str(caught.value) == (
        f"source 'events': cannot read {tmp_path / 'events.csv.gz'} as csv: line "
        "30004 has 6 fields but the header has 3. Fix the row, or put double quotes "
        "around each value that contains ','."
    )


def test_semicolon_file_with_comma_value_gets_hint(tmp_path):
    # A comma inside a value makes the row split into two fields by ','.
    events = "account_id;timestamp;note\na1;2024-03-01;done, late\na1;2024-03-02;ok\n"
    project = write_project(
        tmp_path, minimal_config(), {"accounts.csv": ACCOUNTS_CSV, "events.csv": events}
    )
    with pytest.raises(SourceError) as caught:
        load(project)
    assert str(caught.value) == (
        f"source 'events': cannot read {tmp_path / 'events.csv'} as csv: line 2 has "
        "2 fields but the header has 1. The header looks separated by ';': set "
        "sources.events.delimiter."
    )


def test_csv_last_row_with_extra_field_names_line(tmp_path):
    # With the wide row last, DuckDB 2.0.1 would skip lines 1 and 2 and read line 3
    # as the header, unless the scan sets skip = 0.
    events = (
        "account_id,timestamp,value\n"
        "A0001,2026-05-25 10:00:00,1\n"
        "A0003,2026-05-25 10:00:00,2,9\n"
    )
    project = write_project(
        tmp_path, minimal_config(), {"accounts.csv": ACCOUNTS_CSV, "events.csv": events}
    )
    with pytest.raises(SourceError) as caught:
        load(project)
    assert str(caught.value) == (
        f"source 'events': cannot read {tmp_path / 'events.csv'} as csv: line 3 has "
        "4 fields but the header has 3. Fix the row, or put double quotes around "
        "each value that contains ','."
    )


# 0xe9 is "é" in Latin-1. In UTF-8 it starts a 3-byte sequence, which the line end
# breaks. DuckDB names the encoding in the first case, and fails to detect the
# dialect in the second, because line 3 also has an extra field.
@pytest.mark.parametrize("row", [b"a2,Caf\xe9", b"a2,Caf\xe9,x"])
def test_csv_latin1_byte_names_line(tmp_path, row):
    accounts = b"account_id,name\na1,Acme\n" + row + b"\na3,Initech\n"
    (tmp_path / "accounts.csv").write_bytes(accounts)
    project = write_project(
        tmp_path, minimal_config(), {"events.csv": "account_id,timestamp\n"}
    )
    file = tmp_path / "accounts.csv"
    with pytest.raises(SourceError) as caught:
        load(project)
    assert str(caught.value) == (
        f"source 'accounts': cannot read {file} as csv: line 3 is not valid UTF-8 "
        "(byte 7 of the line is 0xe9). CSV files are read as UTF-8, so save the "
        "file as UTF-8. A Latin-1 file, for example, converts with `iconv -f LATIN1 "
        f"-t UTF-8 {file} > {tmp_path / 'accounts.utf8.csv'}`."
    )


def test_gzip_csv_latin1_byte_past_sample_named(tmp_path):
    # Past DuckDB's 20,480-row sample, the scan itself meets the byte.
    rows = b"a1,2024-03-01 10:00:00\n" * 30_000
    events = b"account_id,timestamp\n" + rows + b"a2,2024-03-02 10:00:00 \xfc\n"
    project = events_project(tmp_path, events, "events.csv.gz")
    file = tmp_path / "events.csv.gz"
    with pytest.raises(SourceError) as caught:
        load(project)
    message = str(caught.value)
    assert message.startswith(
        f"source 'events': cannot read {file} as csv: line 30002 is not valid UTF-8 "
        "(byte 24 of the line is 0xfc)."
    )
    assert message.endswith(
        f"`gunzip -c {file} | iconv -f LATIN1 -t UTF-8 | gzip > "
        f"{tmp_path / 'events.csv.utf8.gz'}`."
    )


def test_score_stores_nothing_on_wide_row(tmp_path):
    project = write_project(
        tmp_path,
        minimal_config(),
        {"accounts.csv": ACCOUNTS_CSV, "events.csv": WIDE_ROW_EVENTS},
    )
    result = score(project)
    assert result.exit_code == 1
    assert "events.csv as csv: line 3 has 5 fields but the header has 2" in (
        result.stderr
    )
    assert not (tmp_path / ".healthscore" / "snapshots").exists()


# Line endings. DuckDB rejects a CSV file whose lines end in both CRLF and LF.


def crlf_events(rows: int, last: bytes = b"a2,2024-03-02 10:00:00\n") -> bytes:
    """Return events whose header and first `rows` rows end in CRLF, then `last`."""
    lines = [b"account_id,timestamp\r\n"]
    lines += [f"a1,2024-03-01 10:{i // 60 % 60:02d}:{i % 60:02d}\r\n".encode()
              for i in range(rows)]  # fmt: skip
    return b"".join(lines) + last


def events_project(tmp_path: Path, events: bytes, name: str = "events.csv") -> Project:
    config = minimal_config()
    config["sources"]["events"]["path"] = name
    # Loading the project needs the file, so its bytes are written first.
    (tmp_path / name).write_bytes(
        gzip.compress(events) if name.endswith(".gz") else events
    )
    return write_project(tmp_path, config, {"accounts.csv": ACCOUNTS_CSV})


# 3 rows fail DuckDB's dialect detection; 30,000 rows take the LF row past the
# sniffer's sample, where the scan fails with "state machine reached an invalid state".
@pytest.mark.parametrize("rows", [3, 30_000])
def test_csv_mixed_line_endings_names_line(tmp_path, rows):
    events = crlf_events(rows)
    project = events_project(tmp_path, events)
    file = tmp_path / "events.csv"

    with pytest.raises(SourceError) as caught:
        load(project)

    assert str(caught.value) == (
        f"source 'events': cannot read {file} as csv: line {rows + 2} ends in LF but "
        "line 1 ends in CRLF, and a CSV file is read only when all its lines end "
        "alike. Convert the file to one line ending, for example with "
        f"`dos2unix {file}`."
    )
    # What dos2unix does: every CRLF becomes LF.
    file.write_bytes(events.replace(b"\r\n", b"\n"))
    assert len(load(project).rows("events").execute()) == rows + 1


def test_csv_lf_file_with_crlf_line_named(tmp_path):
    events = b"account_id,timestamp\na1,2024-03-01\na2,2024-03-02\r\na1,2024-03-03\n"
    project = events_project(tmp_path, events)

    with pytest.raises(SourceError) as caught:
        load(project)

    assert "events.csv as csv: line 3 ends in CRLF but line 1 ends in LF," in str(
        caught.value
    )


def test_gzip_csv_mixed_line_endings_advice(tmp_path):
    project = events_project(tmp_path, crlf_events(3), name="events.csv.gz")
    file = tmp_path / "events.csv.gz"

    with pytest.raises(SourceError) as caught:
        load(project)

    assert str(caught.value) == (
        f"source 'events': cannot read {file} as csv: line 5 ends in LF but line 1 "
        "ends in CRLF, and a CSV file is read only when all its lines end alike. "
        "Convert the file to one line ending, for example with "
        f"`gunzip -c {file} | dos2unix | gzip > {tmp_path / 'events.csv.lf.gz'}`."
    )


def test_csv_lone_carriage_return_named(tmp_path):
    # Line 3 ends in a CR that no LF follows, which DuckDB reads as a line ending.
    events = b"account_id,timestamp\na1,2024-03-01\na2,2024-03-02\ra1,2024-03-03\n"
    project = events_project(tmp_path, events)
    file = tmp_path / "events.csv"

    with pytest.raises(SourceError) as caught:
        load(project)

    assert str(caught.value) == (
        f"source 'events': cannot read {file} as csv: line 3 ends in CR but line 1 "
        "ends in LF, and a CSV file is read only when all its lines end alike. "
        "Convert the file to one line ending, for example with "
        f"`dos2unix {file}` followed by `mac2unix {file}`."
    )


def test_csv_quoted_line_break_not_compared(tmp_path):
    # The LF inside the quoted note of line 2 belongs to the value; the first line
    # that ends in LF is line 5.
    events = (
        b"account_id,timestamp,note\r\n"
        b'a1,2024-03-01,"first\nsecond"\r\n'
        b'a1,2024-03-02,"say ""hi"""\r\n'
        b"a2,2024-03-03,x\n"
    )
    project = events_project(tmp_path, events)

    with pytest.raises(SourceError) as caught:
        load(project)

    assert "events.csv as csv: line 5 ends in LF but line 1 ends in CRLF," in str(
        caught.value
    )


def test_cli_commands_name_mixed_line_ending(tmp_path):
    project = events_project(tmp_path, crlf_events(30_000))
    expected = (
        f"cannot read {tmp_path / 'events.csv'} as csv: line 30002 ends in LF but "
        "line 1 ends in CRLF"
    )
    backfill = ["backfill", "--from", "2024-03-04", "--to", "2024-03-18"]
    backfill += ["--every", "1w", "--project", str(project.root)]
    runner = CliRunner(env={"COLUMNS": "200", "NO_COLOR": "1"})

    validated = run_cli(["validate", "--data"], project)
    backfilled = runner.invoke(app, backfill, prog_name="healthscore")

    assert validated.exit_code == 1
    assert expected in " ".join(validated.stderr.split())
    assert "state machine" not in validated.stderr
    assert backfilled.exit_code == 1
    assert expected in " ".join(backfilled.stderr.split())
    assert not (tmp_path / ".healthscore" / "snapshots").exists()


def test_semicolon_file_read_with_delimiter_set(tmp_path):
    config = minimal_config()
    config["sources"]["events"]["delimiter"] = ";"
    events = "account_id;timestamp\na1;2024-03-01\na2;2024-03-02\n"
    project = write_project(
        tmp_path, config, {"accounts.csv": ACCOUNTS_CSV, "events.csv": events}
    )
    assert len(load(project).rows("events").execute()) == 2


def _parquet_events(path: Path, account_ids: list[object], **options: object) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    stamps = pd.date_range("2024-03-01 10:00", periods=len(account_ids), freq="h")
    table = pa.table(
        {
            "account_id": pa.array(account_ids, type=pa.string()),
            "timestamp": pa.array(stamps.to_pydatetime(), type=pa.timestamp("us")),
        }
    )
    # Two row groups, so that the footer statistics of both must agree.
    pq.write_table(table, path, row_group_size=2, **options)  # type: ignore[arg-type]


def _parquet_project(tmp_path: Path, account_ids: list[object], **options: object):
    config = minimal_config()
    config["sources"]["events"]["path"] = "events.parquet"
    _parquet_events(tmp_path / "events.parquet", account_ids, **options)
    return write_project(tmp_path, config, {"accounts.csv": ACCOUNTS_CSV})


def _events_view(sources) -> str:
    # fetchall: DuckDB 2 rejects the next statement while a result is unread.
    ((sql,),) = sources.con.con.execute(
        "SELECT sql FROM duckdb_views() WHERE view_name = 'source_events'"
    ).fetchall()
    return str(sql)


@pytest.mark.parametrize(
    ("account_ids", "missing"),
    [
        (["a1", "a2", "a3", "a1"], 0),
        (["a1", None, "a3", "a1"], 1),
        (["a1", "a2", " ", "a1"], 1),
        (["a1", "", "a3", "a1"], 1),
    ],
)
def test_parquet_footers_decide_checks(tmp_path, account_ids, missing):
    sources = load(_parquet_project(tmp_path, account_ids))
    report = {r.source: r for r in sources.report(datetime(2024, 4, 1))}["events"]
    assert report.rows_read == 4
    assert report.excluded.get("missing_value:account_id", 0) == missing
    # The timestamp column has no missing value in any file, so it is never checked.
    assert "missing_value:timestamp" not in _events_view(sources)
    checked = "missing_value:account_id" in _events_view(sources)
    assert checked == (missing > 0)


def test_parquet_without_statistics_keeps_checks(tmp_path):
    sources = load(
        _parquet_project(tmp_path, ["a1", "a2", "a3", "a1"], write_statistics=False)
    )
    view = _events_view(sources)
    assert "missing_value:account_id" in view
    assert "missing_value:timestamp" in view
    report = {r.source: r for r in sources.report(datetime(2024, 4, 1))}["events"]
    assert report.rows_used == 4


def test_jsonl_bad_value_after_sample(tmp_path):
    """DuckDB infers a JSON key's type from the first 20,480 lines only."""
    good = {"account_id": "a1", "timestamp": "2024-03-01 10:00:00", "value": 2}
    rows = [good] * 20_600 + [
        {"account_id": "a2", "timestamp": "not a time", "value": 1},
        {"account_id": "a2", "timestamp": "2024-03-02 10:00:00", "value": "many"},
        {"account_id": "a2", "timestamp": "2024-03-02T10:00:00+02:00", "value": 1.5},
    ]
    config = minimal_config()
    config["sources"]["events"]["path"] = "events.jsonl"
    project = write_project(
        tmp_path, config, {"accounts.csv": ACCOUNTS_CSV, "events.jsonl": rows}
    )
    sources = load(project)
    report = {r.source: r for r in sources.report(datetime(2024, 4, 1))}["events"]
    assert report.rows_read == 20_603
    assert report.excluded == {
        "unparseable_value:timestamp": 1,
        "unparseable_value:value": 1,
    }
    assert {(e.row, e.column) for e in report.examples} == {
        (20_601, "timestamp"),
        (20_602, "value"),
    }
    usable = sources.rows("events").execute()
    assert usable["value"].sum() == 20_600 * 2 + 1.5
    # The offset is applied: 10:00 at +02:00 is 08:00 in the project zone (UTC).
    assert usable["timestamp"].max() == pd.Timestamp("2024-03-02 08:00:00")


def test_parquet_metric_scan_builds_row_summary(tmp_path, monkeypatch):
    """A Parquet source without row checks takes its summary from the metric scan."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from healthscore.pipeline import score
    from healthscore.sources import SourceSet

    built = []
    original = SourceSet.add_scan_summary

    def spy(self, name, point, lower, scanned):
        built.append((name, lower, dict(scanned["rows"])))
        original(self, name, point, lower, scanned)

    monkeypatch.setattr(SourceSet, "add_scan_summary", spy)

    rows = [
        ("a1", "2024-01-05 10:00"),  # before the 28-day window of 2024-03-01
        ("a1", "2024-02-20 09:00"),
        ("a1", "2024-02-29 23:00"),
        ("a2", "2024-01-20 08:00"),  # only older rows: days since from the summary
        ("a3", "2024-03-01 00:00"),  # at the point: in the scan, not before it
        ("zz", "2024-02-10 12:00"),  # unknown account
        ("a3", "2024-03-05 10:00"),  # after the point
    ]
    table = pa.table(
        {
            "account_id": [account for account, _ in rows],
            "timestamp": pa.array(pd.to_datetime([moment for _, moment in rows])),
        }
    )
    pq.write_table(table, tmp_path / "events.parquet", row_group_size=3)
    config = minimal_config()
    config["sources"]["events"]["path"] = "events.parquet"
    config["metrics"]["days_since"] = {"type": "days_since", "source": "events"}
    project = write_project(tmp_path, config, {"accounts.csv": ACCOUNTS_CSV})

    run = score(project, date(2024, 3, 1), store=False, monitor=False)

    values = run.metrics.values.sort_index()
    assert list(values["events_28d"]) == [2.0, 0.0, 0.0]
    # a1: the 29th is 1 day ago; a2: 41 days; a3 has no row before the point.
    assert values.loc["a1", "days_since"] == 1.0
    assert values.loc["a2", "days_since"] == 41.0
    assert pd.isna(values.loc["a3", "days_since"])
    # The scan read the 28 days up to the point; the summary read the rest.
    assert built == [("events", datetime(2024, 2, 2), {"a1": 2, "a3": 1, "zz": 1})]
    report = {r.source: r for r in run.source_reports}["events"]
    assert report.rows_read == 7
    assert report.rows_used == 5
    assert report.excluded == {
        "after_as_of:timestamp": 1,
        "unknown_account:account_id": 1,
    }


def test_jsonl_late_key_is_read(tmp_path):
    """DuckDB lists the keys of the first 20,480 lines only."""
    early = {"account_id": "a1", "timestamp": "2024-03-01 10:00:00"}
    late = {**early, "value": 3, "plan": "pro"}
    config = minimal_config()
    config["sources"]["events"]["path"] = "events.jsonl"
    config["sources"]["events"]["attributes"] = {"plan": "string"}
    project = write_project(
        tmp_path,
        config,
        {"accounts.csv": ACCOUNTS_CSV, "events.jsonl": [early] * 21_000 + [late] * 2},
    )
    usable = load(project).rows("events").execute()
    assert len(usable) == 21_002
    assert usable["value"].sum() == 6.0
    assert list(usable["plan"].dropna()) == ["pro", "pro"]


def test_jsonl_attribute_missing_everywhere_fails(tmp_path):
    config = minimal_config()
    config["sources"]["events"]["path"] = "events.jsonl"
    config["sources"]["events"]["attributes"] = {"plan": "string"}
    rows = [{"account_id": "a1", "timestamp": "2024-03-01 10:00:00"}] * 3
    project = write_project(
        tmp_path, config, {"accounts.csv": ACCOUNTS_CSV, "events.jsonl": rows}
    )
    with pytest.raises(SourceError, match="attribute column 'plan' not found"):
        load(project)


def test_parquet_glob_with_differing_columns(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    folder = tmp_path / "events"
    folder.mkdir()
    stamps = pd.to_datetime(["2024-03-01 10:00", "2024-03-02 10:00"])
    first = pa.table(
        {"account_id": ["a1", "a2"], "timestamp": stamps, "value": [1.0, 2.0]}
    )
    # Other column order, no value column, and one file without account ids.
    second = pa.table({"timestamp": stamps, "account_id": ["a3", "a1"]})
    third = pa.table({"timestamp": stamps[:1]})
    pq.write_table(first, folder / "1.parquet")
    pq.write_table(second, folder / "2.parquet")
    pq.write_table(third, folder / "3.parquet")
    config = minimal_config()
    config["sources"]["events"]["path"] = "events/*.parquet"
    project = write_project(tmp_path, config, {"accounts.csv": ACCOUNTS_CSV})

    sources = load(project)

    usable = sources.rows("events").execute().sort_values(["account_id", "value"])
    assert list(usable["account_id"]) == ["a1", "a1", "a2", "a3"]
    assert usable["value"].isna().sum() == 2
    report = {r.source: r for r in sources.report(datetime(2024, 4, 1))}["events"]
    assert report.excluded == {"missing_value:account_id": 1}
    assert [(e.file.rsplit("/", 1)[-1], e.row) for e in report.examples] == [
        ("3.parquet", 1)
    ]


@pytest.mark.parametrize("name", ["events.csv", "events.parquet", "events.jsonl"])
def test_empty_text_missing_in_every_format(tmp_path, name):
    frame = pd.DataFrame(
        {
            "account_id": ["a1", "a1", "a2"],
            "timestamp": ["2024-03-01 10:00:00"] * 3,
            "label": ["red", "", " "],
        }
    )
    content = events_file_content(frame, name)
    config = minimal_config()
    config["sources"]["events"]["path"] = name
    config["sources"]["events"]["attributes"] = {"label": "string"}
    project = write_project(
        tmp_path, config, {"accounts.csv": ACCOUNTS_CSV, name: content}
    )
    rows = load(project).rows("events").execute()
    first = rows.loc[rows["account_id"] == "a1", "label"]
    second = rows.loc[rows["account_id"] == "a2", "label"]
    assert first.isna().sum() == 1
    assert list(first.dropna()) == ["red"]
    # Spaces are text: only the empty string counts as missing.
    assert list(second) == [" "]


def test_format_read_from_path_variable(tmp_path, monkeypatch):
    monkeypatch.setenv("HEALTHSCORE_TEST_EVENTS", "events.jsonl")
    config = minimal_config()
    config["sources"]["events"]["path"] = "${HEALTHSCORE_TEST_EVENTS}"
    rows = [{"account_id": "a1", "timestamp": "2024-03-01 10:00:00"}]
    project = write_project(
        tmp_path, config, {"accounts.csv": ACCOUNTS_CSV, "events.jsonl": rows}
    )
    assert len(load(project).rows("events").execute()) == 1


# JSON Lines rows are named by their line in the file, blank lines included.

JSONL_WITH_BLANK_LINES = (
    '{"account_id": "a1", "timestamp": "2024-03-01 10:00:00"}\n'
    "\n"
    "   \n"
    '{"account_id": "a1", "timestamp": "not a time"}\n'
    '{"account_id": "a2", "timestamp": "2024-03-02 10:00:00", "value": "x"}\n'
    "\r\n"
    '{"account_id": "zz", "timestamp": "2024-03-02 10:00:00"}\n'
)


@pytest.mark.parametrize("name", ["events.jsonl", "events.jsonl.gz"])
def test_jsonl_bad_rows_named_by_line(tmp_path, name):
    config = minimal_config()
    config["sources"]["events"]["path"] = name
    project = write_project(
        tmp_path,
        config,
        {"accounts.csv": ACCOUNTS_CSV, name: JSONL_WITH_BLANK_LINES},
    )
    report = load(project).report(datetime(2024, 4, 1))[1]
    assert report.rows_read == 4
    assert {(e.row, e.column, e.reason) for e in report.examples} == {
        (4, "timestamp", "unparseable_value"),
        (5, "value", "unparseable_value"),
        (7, "account_id", "unknown_account"),
    }


def test_jsonl_glob_rows_named_by_line(tmp_path):
    good = '{"account_id": "a1", "timestamp": "2024-03-01 10:00:00"}\n'
    bad = '{"account_id": "a1", "timestamp": "bad"}\n'
    config = minimal_config()
    config["sources"]["events"]["path"] = "events/*.jsonl"
    files = {
        "accounts.csv": ACCOUNTS_CSV,
        "events/1.jsonl": good + good + bad,
        "events/2.jsonl": "\n" + bad + good + "\n\n" + bad,
        "events/3.jsonl": good + bad,
    }
    project = write_project(tmp_path, config, files)
    report = load(project).report(datetime(2024, 4, 1))[1]
    assert report.rows_read == 8
    assert report.excluded == {"unparseable_value:timestamp": 4}
    assert [(Path(e.file).name, e.row) for e in report.examples] == [
        ("1.jsonl", 3),
        ("2.jsonl", 2),
        ("2.jsonl", 6),
        ("3.jsonl", 2),
    ]


@pytest.mark.parametrize(
    ("lines", "line"),
    [
        (["good", "", "", "good", "bad", "good"], 5),
        (["good", "bad", "good"], 2),
        (["", "bad", "good"], 2),
        (["good", "", "bad"], 3),
    ],
)
def test_jsonl_malformed_line_named(tmp_path, lines, line):
    texts = {
        "good": '{"account_id": "a1", "timestamp": "2024-03-01 10:00:00"}',
        "bad": '{"account_id": "a1", "timestamp": }',
        "": "",
    }
    content = "".join(texts[kind] + "\n" for kind in lines)
    config = minimal_config()
    config["sources"]["events"]["path"] = "events.jsonl"
    project = write_project(
        tmp_path, config, {"accounts.csv": ACCOUNTS_CSV, "events.jsonl": content}
    )
    with pytest.raises(SourceError) as caught:
        load(project)
    assert str(caught.value) == (
        f"source 'events': cannot read {tmp_path / 'events.jsonl'} as jsonl: line "
        f"{line} is not a valid JSON object (unexpected character). Fix the line: "
        "each line must contain one JSON object, or nothing but spaces."
    )


# Number columns reject NaN and infinite values.

NON_FINITE_EVENTS = """account_id,timestamp,value,duration
a1,2024-03-01 10:00:00,2.5,1
a1,2024-03-01 11:00:00,1e400,1
a1,2024-03-01 12:00:00,NaN,1
a2,2024-03-01 13:00:00,inf,1
a2,2024-03-01 14:00:00,-Infinity,1
a2,2024-03-01 15:00:00,1,nan
"""

# DuckDB's JSON reader accepts the NaN and Infinity tokens that Python's json writes.
NON_FINITE_JSONL = """\
{"account_id": "a1", "timestamp": "2024-03-01 10:00", "value": 2.5, "duration": 1}
{"account_id": "a1", "timestamp": "2024-03-01 11:00", "value": 1e400, "duration": 1}
{"account_id": "a1", "timestamp": "2024-03-01 12:00", "value": NaN, "duration": 1}
{"account_id": "a2", "timestamp": "2024-03-01 13:00", "value": "inf", "duration": 1}
{"account_id": "a2", "timestamp": "2024-03-01 14:00", "value": -Infinity, "duration": 1}
{"account_id": "a2", "timestamp": "2024-03-01 15:00", "value": 1, "duration": "nan"}
"""


@pytest.mark.parametrize(
    ("name", "content"),
    [("events.csv", NON_FINITE_EVENTS), ("events.jsonl", NON_FINITE_JSONL)],
)
def test_non_finite_numbers_rejected(tmp_path, name, content):
    config = minimal_config()
    config["sources"]["events"]["path"] = name
    config["sources"]["events"]["attributes"] = {"duration": "number"}
    project = write_project(
        tmp_path, config, {"accounts.csv": ACCOUNTS_CSV, name: content}
    )
    sources = load(project)
    report = sources.report(datetime(2024, 4, 1))[1]
    assert report.rows_read == 6
    assert report.excluded == {
        "unparseable_value:value": 4,
        "unparseable_value:duration": 1,
    }
    assert [(e.row, e.column) for e in report.examples] == [
        (6, "duration"),
        (2, "value"),
        (3, "value"),
        (4, "value"),
        (5, "value"),
    ]
    assert str(report.examples[0]) == (
        f"{tmp_path / name}, row 6, column duration: value cannot be read as the "
        "column's type: 'nan'; expected a number such as 1250 or -0.5"
    )
    usable = sources.rows("events").execute()
    assert list(usable["value"]) == [2.5]
    assert list(usable["duration"]) == [1.0]


def _write_float_parquet(path: Path, values: list[float | None], writer: str) -> None:
    """Write events whose `value` column contains `values`, with pyarrow or DuckDB."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    stamps = pd.date_range("2024-03-01 10:00", periods=len(values), freq="h")
    table = pa.table(
        {
            "account_id": pa.array(["a1"] * len(values), type=pa.string()),
            "timestamp": pa.array(stamps.to_pydatetime(), type=pa.timestamp("us")),
            "value": pa.array(values, type=pa.float64()),
        }
    )
    if writer == "pyarrow":
        pq.write_table(table, path)
        return
    con = duckdb.connect()
    try:
        con.register("events", table)
        con.execute(f"COPY events TO '{path}' (FORMAT parquet)")
    finally:
        con.close()


def _float_parquet_sources(tmp_path: Path, values: list[float | None], writer: str):
    _write_float_parquet(tmp_path / "events.parquet", values, writer)
    config = minimal_config()
    config["sources"]["events"]["path"] = "events.parquet"
    project = write_project(tmp_path, config, {"accounts.csv": ACCOUNTS_CSV})
    return load(project)


NAN = float("nan")
INF = float("inf")


@pytest.mark.parametrize(
    ("writer", "values", "rejected", "used"),
    [
        ("pyarrow", [1.0, NAN, 3.0, None], 0, [1.0, 3.0]),
        ("pyarrow", [5.0, NAN, 5.0], 0, [5.0, 5.0]),
        ("pyarrow", [1.0, INF, -INF, 2.0], 2, [1.0, 2.0]),
        ("pyarrow", [NAN, INF], 1, []),
        ("duckdb", [1.0, NAN, 3.0, None], 0, [1.0, 3.0]),
        ("duckdb", [1.0, 2.0, INF], 1, [1.0, 2.0]),
        ("duckdb", [-INF, 2.0], 1, [2.0]),
    ],
)
def test_parquet_float_nan_missing_inf_rejected(
    tmp_path, writer, values, rejected, used
):
    sources = _float_parquet_sources(tmp_path, values, writer)
    report = sources.report(datetime(2024, 4, 1))[1]
    usable = sources.rows("events").execute()
    assert report.rows_read == len(values)
    assert report.excluded.get("unparseable_value:value", 0) == rejected
    assert report.rows_used == len(values) - rejected
    # NaN and None are missing values: the row is used, its value is not.
    assert sorted(usable["value"].dropna()) == sorted(used)
    assert usable["value"].isna().sum() == len(values) - rejected - len(used)


def test_pyarrow_statistics_leave_out_nan(tmp_path):
    """pyarrow's footers ignore NaN, so they cannot tell a NaN-free column."""
    import pyarrow.parquet as pq

    _write_float_parquet(tmp_path / "events.parquet", [1.0, NAN, 3.0], "pyarrow")
    metadata = pq.ParquetFile(tmp_path / "events.parquet").metadata
    statistics = metadata.row_group(0).column(2).statistics
    assert (statistics.min, statistics.max, statistics.null_count) == (1.0, 3.0, 0)


@pytest.mark.parametrize(
    ("writer", "values"),
    [
        ("pyarrow", [1.0, 2.5, NAN, -3.0]),
        # DuckDB writes NaN as the maximum, which keeps the check.
        ("duckdb", [1.0, 2.5, -3.0]),
    ],
)
def test_parquet_finite_floats_unchecked(tmp_path, writer, values):
    """Finite footer bounds rule out infinity, and NaN reads as missing: no check."""
    sources = _float_parquet_sources(tmp_path, values, writer)
    assert "unparseable_value:value" not in _events_view(sources)
    assert sources.loaded["events"].unchecked
    report = sources.report(datetime(2024, 4, 1))[1]
    assert report.rows_used == len(values)
    read = sources.rows("events").execute()["value"]
    assert sorted(read.dropna()) == [-3.0, 1.0, 2.5]
    assert read.isna().sum() == len(values) - 3


def test_parquet_infinite_bound_checked(tmp_path):
    sources = _float_parquet_sources(tmp_path, [1.0, INF], "pyarrow")
    assert "unparseable_value:value" in _events_view(sources)
    assert not sources.loaded["events"].unchecked


@pytest.mark.parametrize(
    "value_type", ["int64", "int32", "uint64", "decimal128(10, 2)"]
)
def test_parquet_exact_numbers_unchecked(tmp_path, value_type):
    from decimal import Decimal

    import pyarrow as pa
    import pyarrow.parquet as pq

    types = {
        "int64": pa.int64(),
        "int32": pa.int32(),
        "uint64": pa.uint64(),
        "decimal128(10, 2)": pa.decimal128(10, 2),
    }
    values = [Decimal("1.25"), Decimal("2.00")] if "decimal" in value_type else [1, 2]
    stamps = pd.to_datetime(["2024-03-01 10:00", "2024-03-02 10:00"])
    table = pa.table(
        {
            "account_id": ["a1", "a2"],
            "timestamp": stamps,
            "value": pa.array(values, type=types[value_type]),
        }
    )
    pq.write_table(table, tmp_path / "events.parquet")
    config = minimal_config()
    config["sources"]["events"]["path"] = "events.parquet"
    sources = load(write_project(tmp_path, config, {"accounts.csv": ACCOUNTS_CSV}))
    assert "_problem" in _events_view(sources)
    assert "unparseable_value" not in _events_view(sources)
    assert sources.loaded["events"].unchecked
    assert sorted(sources.rows("events").execute()["value"]) == [
        float(value) for value in values
    ]


def test_duckdb_table_infinite_floats_rejected(tmp_path):
    database = tmp_path / "crm.duckdb"
    con = duckdb.connect(str(database))
    try:
        con.execute(
            "CREATE TABLE events AS SELECT * FROM (VALUES "
            "('a1', TIMESTAMP '2024-03-01 10:00', 2.5::DOUBLE), "
            "('a1', TIMESTAMP '2024-03-01 11:00', 'nan'::DOUBLE), "
            "('a2', TIMESTAMP '2024-03-01 12:00', '-inf'::DOUBLE)) "
            "AS t(account_id, timestamp, value)"
        )
    finally:
        con.close()
    config = minimal_config()
    config["sources"]["events"] = {
        "kind": "events",
        "table": "events",
        "connection": f"duckdb://{database}",
    }
    sources = load(write_project(tmp_path, config, {"accounts.csv": ACCOUNTS_CSV}))
    report = sources.report(datetime(2024, 4, 1))[1]
    values = sources.rows("events").execute()["value"]
    # NaN is a missing value, infinity a row problem.
    assert report.excluded == {"unparseable_value:value": 1}
    assert values.iloc[0] == 2.5
    assert pd.isna(values.iloc[1])
    assert len(values) == 2


# A file of a Parquet glob must have the timestamp column.


def test_parquet_glob_file_without_timestamp_fails(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    folder = tmp_path / "events"
    folder.mkdir()
    stamps = pd.to_datetime(["2024-03-01 10:00", "2024-03-02 10:00"])
    pq.write_table(
        pa.table({"account_id": ["a1", "a2"], "ts": stamps}), folder / "1.parquet"
    )
    pq.write_table(
        pa.table({"account_id": ["a3"], "value": [1.0]}), folder / "2.parquet"
    )
    pq.write_table(
        pa.table({"ts": stamps, "account_id": ["a1", "a3"]}), folder / "3.parquet"
    )
    config = minimal_config()
    config["sources"]["events"]["path"] = "events/*.parquet"
    config["sources"]["events"]["columns"] = {"timestamp": "ts"}
    project = write_project(tmp_path, config, {"accounts.csv": ACCOUNTS_CSV})
    with pytest.raises(SourceError) as caught:
        load(project)
    assert str(caught.value) == (
        f"source 'events': column 'ts' for 'timestamp' not found in "
        f"{folder / '2.parquet'}, although other files of 'events/*.parquet' have "
        "it. Add the column to the file, move the file out of the folder, or narrow "
        "sources.events.path."
    )


def test_parquet_glob_files_without_timestamp_counted(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    folder = tmp_path / "events"
    folder.mkdir()
    stamps = pd.to_datetime(["2024-03-01 10:00"])
    pq.write_table(
        pa.table({"account_id": ["a1"], "timestamp": stamps}), folder / "a.parquet"
    )
    for name in ("b", "c", "d"):
        pq.write_table(pa.table({"account_id": ["a1"]}), folder / f"{name}.parquet")
    config = minimal_config()
    config["sources"]["events"]["path"] = "events/*.parquet"
    project = write_project(tmp_path, config, {"accounts.csv": ACCOUNTS_CSV})
    with pytest.raises(
        SourceError,
        match=r"column 'timestamp' for 'timestamp' not found in .*b\.parquet \(and 2 "
        r"more files\)",
    ):
        load(project)


def test_parquet_glob_time_as_number_fails(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    folder = tmp_path / "events"
    folder.mkdir()
    # 2024-03-01 00:00 UTC as milliseconds since 1970, then as Parquet timestamps.
    millis = pa.array([1709251200000], pa.int64())
    stamps = pa.array(pd.to_datetime(["2024-03-02 10:00"]), pa.timestamp("ms"))
    pq.write_table(pa.table({"account_id": ["a1"], "ts": millis}), folder / "a.parquet")
    for name in ("b", "c"):
        pq.write_table(
            pa.table({"account_id": ["a1"], "ts": stamps}), folder / f"{name}.parquet"
        )
    config = minimal_config()
    config["sources"]["events"]["path"] = "events/*.parquet"
    config["sources"]["events"]["columns"] = {"timestamp": "ts"}
    project = write_project(tmp_path, config, {"accounts.csv": ACCOUNTS_CSV})
    expected = (
        "source 'events': column 'ts' for 'timestamp' is BIGINT in "
        f"{folder / 'a.parquet'} but TIMESTAMP in {folder / 'b.parquet'} (and 1 "
        "more file), and a number cannot be read as a time. Write the column with "
        "the same type in every file of 'events/*.parquet', such as a Parquet "
        "timestamp, or narrow sources.events.path."
    )
    with pytest.raises(SourceError) as caught:
        load(project)
    assert str(caught.value) == expected
    for command in (["validate", "--data"], ["score", "--as-of", "2024-03-10"]):
        result = CliRunner().invoke(app, [*command, "--project", str(tmp_path)])
        assert result.exit_code == 1, result.output
        assert "Traceback" not in result.output
        assert expected in " ".join(result.output.split())


def test_digit_separators_rejected(tmp_path):
    # Spark rejects 1_000, so DuckDB must too, or the engines' scores differ.
    config = minimal_config()
    events = (
        "account_id,timestamp,value\n"
        "a1,2024-03-01 10:00:00,1_000\n"
        "a1,2024-03-01 11:00:00,1000\n"
        "a2,2024-03-01 12:00:00,1e3\n"
    )
    project = write_project(
        tmp_path, config, {"accounts.csv": ACCOUNTS_CSV, "events.csv": events}
    )
    sources = load(project)

    report = sources.report(datetime(2024, 4, 1))[1]

    assert report.excluded == {"unparseable_value:value": 1}
    assert [(e.row, e.column) for e in report.examples] == [(1, "value")]
    assert sorted(sources.rows("events").execute()["value"]) == [1000.0, 1000.0]
