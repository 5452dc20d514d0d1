"""Unreadable values in source reports and in `healthscore ingest`.

An excluded row's example shows the text that could not be read, cut to 40
characters, and the format the column accepts. `ingest` gives the file line of a
CSV row, and notes the stored rows that name accounts the accounts source lacks.
"""

from __future__ import annotations

import json
from datetime import datetime
from decimal import Decimal
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner, Result

from healthscore.cli import app
from healthscore.config import Project
from healthscore.engine import connect
from healthscore.sources import ExcludedRow, SourceError, SourceReport, load_sources
from healthscore.sources.ingest import UnknownAccounts, ingest_files
from project_factory import ACCOUNTS_CSV, minimal_config, write_project

# A local Spark session for the one test that compares the engines.

LONG = "x" * 45
BAD_EVENTS = f"""account_id,timestamp,value
a1,2024-03-01 10:00:00,1
a2,30/03/2024 10:00,1
a2,2024-03-02 10:00:00,twelve
a3,2024-03-02 10:00:00,{LONG}
"""


def events_report(project: Project) -> SourceReport:
    sources = load_sources(project, connect(project))
    reports = {r.source: r for r in sources.report(datetime(2024, 4, 1))}
    return reports["events"]


def by_row(report: SourceReport) -> dict[int, ExcludedRow]:
    return {example.row: example for example in report.examples}


def test_example_shows_unreadable_value(tmp_path: Path) -> None:
    project = write_project(
        tmp_path,
        minimal_config(),
        {"accounts.csv": ACCOUNTS_CSV, "events.csv": BAD_EVENTS},
    )
    examples = by_row(events_report(project))

    assert sorted(examples) == [2, 3, 4]
    assert examples[2].value == "30/03/2024 10:00"
    assert examples[2].expected is not None
    assert "YYYY-MM-DD HH:MM:SS" in examples[2].expected
    assert examples[3].value == "twelve"
    assert examples[3].expected == "a number such as 1250 or -0.5"
    assert examples[4].value == "x" * 40 + "..."
    shown = str(examples[3])
    assert shown.endswith(
        "row 3, column value: value cannot be read as the column's type: 'twelve'; "
        "expected a number such as 1250 or -0.5"
    )


def test_example_value_in_report_dict(tmp_path: Path) -> None:
    project = write_project(
        tmp_path,
        minimal_config(),
        {"accounts.csv": ACCOUNTS_CSV, "events.csv": BAD_EVENTS},
    )
    stored = json.loads(json.dumps(events_report(project).to_dict()))
    example = next(e for e in stored["examples"] if e["row"] == 3)

    assert example["value"] == "twelve"
    assert example["expected"] == "a number such as 1250 or -0.5"


def test_timestamp_format_named_in_expected(tmp_path: Path) -> None:
    config = minimal_config()
    config["sources"]["events"]["timestamp_format"] = "%d/%m/%Y %H:%M"
    events = "account_id,timestamp\na1,01/03/2024 10:00\na2,2024-03-01\n"
    project = write_project(
        tmp_path, config, {"accounts.csv": ACCOUNTS_CSV, "events.csv": events}
    )
    examples = by_row(events_report(project))

    assert sorted(examples) == [2]
    assert examples[2].value == "2024-03-01"
    assert examples[2].expected == (
        "a time in the format '%d/%m/%Y %H:%M' of timestamp_format"
    )


def test_valid_view_has_no_value_column(tmp_path: Path) -> None:
    project = write_project(
        tmp_path,
        minimal_config(),
        {"accounts.csv": ACCOUNTS_CSV, "events.csv": BAD_EVENTS},
    )
    sources = load_sources(project, connect(project))

    assert "_value" not in sources.rows("events").columns
    assert sources.rows("events").count().execute() == 1


# healthscore ingest


STORE_CONFIG = minimal_config(
    sources={
        "accounts": {"kind": "accounts", "path": "accounts.csv"},
        "events": {"kind": "events", "path": "store"},
    }
)


def ingest(root: Path, file: Path) -> Result:
    runner = CliRunner()
    args = ["ingest", "--source", "events", str(file), "--project", str(root)]
    return runner.invoke(app, args, prog_name="healthscore")


def test_ingest_unclosed_quote_gives_line(tmp_path: Path) -> None:
    project = write_project(tmp_path, STORE_CONFIG, {"accounts.csv": ACCOUNTS_CSV})
    file = tmp_path / "f.csv"
    file.write_text(
        "account_id,timestamp,value\n"
        "a1,2024-03-01T10:00:00,4\n"
        'a2,"2024-03-02T10:00:00,5\n'
        "a1,2024-03-03T10:00:00,1\n"
    )
    result = ingest(project.root, file)
    output = " ".join(result.output.split())

    assert result.exit_code == 1, output
    assert "f.csv has 1 invalid row; nothing was stored" in output
    assert "row 2 (line 3), column timestamp" in output
    assert "'\"2024-03-02T10:00:00'" in output
    assert "a quoted field may not be closed on its line" in output


def test_ingest_counts_invalid_rows_in_plural(tmp_path: Path) -> None:
    project = write_project(tmp_path, STORE_CONFIG, {"accounts.csv": ACCOUNTS_CSV})
    file = tmp_path / "f.csv"
    file.write_text(
        "account_id,timestamp,value\na1,soon,4\na2,2024-03-02T10:00:00,five\n"
    )
    result = ingest(project.root, file)
    output = " ".join(result.output.split())

    assert result.exit_code == 1, output
    assert "f.csv has 2 invalid rows; nothing was stored" in output
    assert "row 1 (line 2), column timestamp" in output
    assert "row 2 (line 3), column value" in output
    assert "'five'; expected a number" in output


UNKNOWN_ROWS = ["a1", "999", "999", "b1", "b2", "b3", "b4", "b5"]


def write_events(path: Path, accounts: list[str]) -> Path:
    path.write_text(
        "account_id,timestamp\n"
        + "".join(f"{account},2024-03-01T10:00:00\n" for account in accounts)
    )
    return path


def test_ingest_notes_unknown_accounts(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    project = write_project(tmp_path, STORE_CONFIG, {"accounts.csv": ACCOUNTS_CSV})
    file = write_events(tmp_path / "f.csv", UNKNOWN_ROWS)

    result = ingest(project.root, file)
    stderr = " ".join(result.stderr.split())

    assert result.exit_code == 0, result.output
    assert f"Stored 8 rows of {file} in 1 day." in result.stdout
    # 999 twice and b1 to b5 once: 7 rows of 6 accounts, 5 of them listed.
    assert (
        f"warning: 7 stored rows of {file} name accounts not in source 'accounts' "
        "(accounts.csv): 999, b1, b2, b3, b4 and 1 more." in stderr
    )
    assert "Scoring leaves these rows out" in stderr
    assert (
        "Add the accounts to it, or, when the file uses other ids, map them to "
        "account ids with sources.events.lookups.account_id." in stderr
    )
    assert stderr.count("not in source 'accounts'") == 1
    # The printed note replaces the log line, so the warning is shown once.
    assert not [r for r in caplog.records if r.levelname == "WARNING"]


def test_ingest_note_for_one_row(tmp_path: Path) -> None:
    project = write_project(tmp_path, STORE_CONFIG, {"accounts.csv": ACCOUNTS_CSV})
    file = write_events(tmp_path / "f.csv", ["a1", "zz"])

    result = ingest(project.root, file)
    stderr = " ".join(result.stderr.split())

    assert result.exit_code == 0, result.output
    assert (
        f"warning: 1 stored row of {file} names an account not in source "
        "'accounts' (accounts.csv): zz." in stderr
    )


def test_ingest_json_counts_unknown_accounts(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    project = write_project(tmp_path, STORE_CONFIG, {"accounts.csv": ACCOUNTS_CSV})
    file = write_events(tmp_path / "f.csv", UNKNOWN_ROWS)
    args = ["ingest", "--source", "events", str(file), "--project", str(project.root)]

    first = CliRunner().invoke(app, [*args, "--json"], prog_name="healthscore")
    again = CliRunner().invoke(app, [*args, "--json"], prog_name="healthscore")

    assert first.exit_code == 0, first.output
    stored = json.loads(first.stdout)[0]
    assert stored["rows"] == 8
    assert stored["unknown_accounts"] == {
        "rows": 7,
        "accounts": 6,
        "ids": ["999", "b1", "b2", "b3", "b4"],
    }
    assert "not in source" not in first.stderr
    assert not [r for r in caplog.records if r.levelname == "WARNING"]
    # The same file again is skipped, so it stores no row of an unknown account.
    assert again.exit_code == 0, again.output
    skipped = json.loads(again.stdout)[0]
    assert skipped["skipped"] is True
    assert skipped["unknown_accounts"] == {"rows": 0, "accounts": 0, "ids": []}


def test_ingest_known_accounts_no_note(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    project = write_project(tmp_path, STORE_CONFIG, {"accounts.csv": ACCOUNTS_CSV})
    file = write_events(tmp_path / "f.csv", ["a1", "a3", "a1"])

    result = ingest(project.root, file)
    results = ingest_files(
        project, "events", [write_events(tmp_path / "g.csv", ["a2"])]
    )

    assert result.exit_code == 0, result.output
    assert "not in source" not in result.stderr
    assert not [r for r in caplog.records if r.levelname == "WARNING"]
    assert results[0].rows == 1
    assert results[0].unknown_accounts == UnknownAccounts(rows=0, accounts=0, ids=[])


def test_ingest_unreadable_accounts_not_checked(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # The accounts file lacks its account_id column, so no id can be checked.
    project = write_project(
        tmp_path, STORE_CONFIG, {"accounts.csv": "id,name\na1,Acme\n"}
    )
    file = write_events(tmp_path / "f.csv", ["a1", "zz"])

    results = ingest_files(project, "events", [file])

    assert results[0].rows == 2
    assert results[0].unknown_accounts is None
    warnings = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert len(warnings) == 1
    assert warnings[0].startswith("account ids were not checked: ")


@pytest.mark.parametrize(
    ("values", "dtype"),
    [([1, 0, 2, -1], "int64"), ([1.0, 0.0, 2.0, 0.5], "float64")],
)
def test_boolean_number_column_reads_0_and_1(
    tmp_path: Path, values: list[float], dtype: str
) -> None:
    config = minimal_config()
    config["sources"]["events"] = {
        "kind": "events",
        "path": "events.parquet",
        "attributes": {"trial": "boolean"},
    }
    events = pd.DataFrame(
        {
            "account_id": ["a1", "a1", "a2", "a3"],
            "timestamp": pd.to_datetime(["2024-03-01 10:00"] * 4),
            "trial": pd.Series(values, dtype=dtype),
        }
    )
    project = write_project(
        tmp_path, config, {"accounts.csv": ACCOUNTS_CSV, "events.parquet": events}
    )
    report = events_report(project)
    examples = by_row(report)

    assert report.excluded == {"unparseable_value:trial": 2}
    assert sorted(examples) == [3, 4]
    assert examples[3].value in ("2", "2.0")
    assert examples[3].expected == "true or false, or 1 or 0"
    sources = load_sources(project, connect(project))
    kept = sources.rows("events").to_pandas().sort_values("trial")
    assert kept["trial"].tolist() == [False, True]


def test_single_precision_numbers_read_as_written(tmp_path: Path) -> None:
    config = minimal_config()
    config["sources"]["events"] = {"kind": "events", "path": "events.parquet"}
    events = pd.DataFrame(
        {
            "account_id": ["a1", "a1", "a2"],
            "timestamp": pd.to_datetime(["2024-03-01 10:00"] * 3),
            "value": pd.Series([0.1, 123456.789, float("inf")], dtype="float32"),
        }
    )
    project = write_project(
        tmp_path, config, {"accounts.csv": ACCOUNTS_CSV, "events.parquet": events}
    )
    sources = load_sources(project, connect(project))
    kept = sources.rows("events").to_pandas().sort_values("value")

    # float32 stores 0.1 as 0.100000001490116 and 123456.789 as 123456.7890625.
    assert kept["value"].tolist() == [0.1, 123456.79]
    assert events_report(project).excluded == {"unparseable_value:value": 1}


NUMBER_IDS_EVENTS = """account_id,timestamp
1001,2024-03-01 10:00:00
1002,2024-03-02 10:00:00
1002,2024-03-03 10:00:00
"""


def number_ids_project(root: Path, ids: pa.Array) -> Project:
    """Accounts in Parquet with account ids `ids`, events and a joined file by id."""
    root.mkdir(parents=True, exist_ok=True)
    names = pa.array([f"Account {n}" for n in range(len(ids))])
    pq.write_table(
        pa.table({"account_id": ids, "name": names}), root / "accounts.parquet"
    )
    config = minimal_config()
    config["sources"]["accounts"] = {
        "kind": "accounts",
        "path": "accounts.parquet",
        "joins": [{"path": "plans.csv", "key": "id", "attributes": {"plan": "string"}}],
    }
    files = {
        "events.csv": NUMBER_IDS_EVENTS,
        "plans.csv": "id,plan\n1001,gold\n1002,silver\n",
    }
    return write_project(root, config, files)


@pytest.mark.parametrize(
    "ids",
    [
        pa.array(
            [Decimal("1001.000"), Decimal("1002.000"), None], pa.decimal128(12, 3)
        ),
        pa.array([1001.0, 1002.0, None], pa.float64()),
        # pandas writes a missing value of a float column as NaN in some paths.
        pa.array([1001.0, 1002.0, float("nan")], pa.float64()),
        pa.array([1001.0, 1002.0, None], pa.float32()),
        pa.array([1001, 1002, None], pa.int64()),
    ],
    ids=["decimal", "double", "double_nan", "float", "bigint"],
)
def test_parquet_number_ids_match_text_ids(tmp_path: Path, ids: pa.Array) -> None:
    project = number_ids_project(tmp_path, ids)

    sources = load_sources(project, connect(project))

    relation = sources.loaded["accounts"].relation
    found = sources.con.con.execute(
        f'SELECT account_id, plan, _problem FROM "{relation}" ORDER BY _row'
    ).fetchall()
    assert found == [
        ("1001", "gold", None),
        ("1002", "silver", None),
        (None, None, "missing_value:account_id"),
    ]
    report = {r.source: r for r in sources.report(datetime(2024, 4, 1))}["events"]
    assert report.rows_used == 3
    assert report.excluded == {}


def test_parquet_fractional_id_is_error(tmp_path: Path) -> None:
    ids = pa.array([Decimal("1001.00"), None, Decimal("1002.25")], pa.decimal128(9, 2))
    project = number_ids_project(tmp_path, ids)

    with pytest.raises(SourceError) as caught:
        load_sources(project, connect(project))

    assert str(caught.value) == (
        f"source 'accounts': column 'account_id' of {tmp_path / 'accounts.parquet'} "
        "has the account id '1002.25' in row 3, which is not a whole number, so it "
        "cannot match the ids of other sources. Fix the value, or map a column of "
        "whole-number or text ids to account_id in sources.accounts.columns"
    )
