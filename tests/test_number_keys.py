"""Whole numbers as lookup codes and as JSON Lines account ids.

A lookup matches a code written as 1001.000 in its file with the value 1001 of a
source, whether the source column contains integers, decimals, floats or text. A
JSON Lines account id written as the number 1001.0 reads as `1001`, the id that a
CSV file, a Parquet file or a database table gives for 1001.
"""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from healthscore.config import Project
from healthscore.config.models import LookupConfig
from healthscore.engine import connect
from healthscore.sources import SourceError, SourceReport, SourceSet, load_sources
from healthscore.sources.lookups import lookup_key_sql, read_lookup
from healthscore.sources.reader import NUMERIC_TEXT
from project_factory import minimal_config, write_project

POINT = datetime(2024, 4, 1)
ACCOUNTS = "account_id,name\na1,Acme\na2,Globex\n"
ORGS = "org_id,account\n1001.000,a1\n1002,a2\n"
STAMPS = ["2024-03-01 10:00:00", "2024-03-02 10:00:00", "2024-03-03 10:00:00"]


def org_events_project(
    root: Path, orgs: pa.Array | list[str], lookup: str = ORGS
) -> Project:
    """Events whose `org` column is looked up in orgs.csv to give the account id.

    A list of texts is written as CSV, an Arrow array as Parquet.
    """
    root.mkdir(parents=True, exist_ok=True)
    config = minimal_config()
    files: dict[str, Any] = {"accounts.csv": ACCOUNTS, "orgs.csv": lookup}
    if isinstance(orgs, list):
        path = "events.csv"
        rows = [f"{org},{stamp}\n" for org, stamp in zip(orgs, STAMPS, strict=False)]
        files[path] = "org,timestamp\n" + "".join(rows)
    else:
        path = "events.parquet"
        stamps = pa.array(STAMPS[: len(orgs)])
        pq.write_table(pa.table({"org": orgs, "timestamp": stamps}), root / path)
    config["sources"]["events"] = {
        "kind": "events",
        "path": path,
        "columns": {"account_id": "org"},
        "lookups": {
            "account_id": {"path": "orgs.csv", "key": "org_id", "value": "account"}
        },
    }
    return write_project(root, config, files)


def events_report(sources: SourceSet) -> SourceReport:
    return {r.source: r for r in sources.report(POINT)}["events"]


def event_accounts(sources: SourceSet) -> list[tuple[Any, ...]]:
    relation = sources.loaded["events"].relation
    return sources.con.con.execute(
        f'SELECT account_id, _problem FROM "{relation}" ORDER BY _row'
    ).fetchall()


# Lookups whose source column contains numbers or number texts


@pytest.mark.parametrize(
    "orgs",
    [
        pa.array([1001.0, 1002.0, 1002.0], pa.float64()),
        pa.array([1001.0, 1002.0, 1002.0], pa.float32()),
        pa.array([Decimal("1001.000"), Decimal("1002.000"), Decimal("1002.000")]),
        pa.array([1001, 1002, 1002], pa.int64()),
        ["1001", "1002.0", "1002"],
    ],
    ids=["double", "float", "decimal", "bigint", "csv_text"],
)
def test_lookup_matches_whole_number_codes(tmp_path: Path, orgs: Any) -> None:
    project = org_events_project(tmp_path, orgs)

    sources = load_sources(project, connect(project))

    assert event_accounts(sources) == [("a1", None), ("a2", None), ("a2", None)]
    report = events_report(sources)
    assert report.rows_used == 3
    assert report.excluded == {}


def test_lookup_compares_other_texts_as_written(tmp_path: Path) -> None:
    lookup = "org_id,account\n1.5,a1\n007,a2\n"
    project = org_events_project(tmp_path, ["1.5", "7", "007"], lookup)

    sources = load_sources(project, connect(project))

    assert event_accounts(sources) == [
        ("a1", None),
        (None, "unknown_code:account_id"),
        ("a2", None),
    ]


def test_lookup_keys_of_one_number_conflict(tmp_path: Path) -> None:
    lookup = "org_id,account\n1001,a1\n1001.0,a2\n"
    project = org_events_project(tmp_path, ["1001"], lookup)

    with pytest.raises(SourceError) as caught:
        load_sources(project, connect(project))

    assert str(caught.value) == (
        f"source 'events': lookup file {tmp_path / 'orgs.csv'}, line 3: key "
        "'1001.0', read as '1001', has the value 'a2' but line 2 gives it 'a1'. "
        "Keep one row per key."
    )


def test_lookup_of_postgres_numbers(tmp_path: Path, postgres_schema: str) -> None:
    import psycopg

    table = f'"{postgres_schema}".events'
    with psycopg.connect(
        "postgresql://postgres@127.0.0.1:5432/test", autocommit=True
    ) as connection:
        connection.execute(
            f"CREATE TABLE {table} (decimal_org numeric(12,3), "
            "float_org double precision, timestamp timestamptz)"
        )
        connection.execute(
            f"INSERT INTO {table} VALUES (1001, 1001, '2024-03-01 10:00+00'), "
            "(1002, 1002, '2024-03-02 10:00+00')"
        )
    for column in ("decimal_org", "float_org"):
        config = minimal_config()
        config["sources"]["events"] = {
            "kind": "events",
            "table": f"{postgres_schema}.events",
            "connection": "postgresql://postgres@127.0.0.1:5432/test",
            "columns": {"account_id": column},
            "lookups": {
                "account_id": {"path": "orgs.csv", "key": "org_id", "value": "account"}
            },
        }
        root = tmp_path / column
        project = write_project(
            root, config, {"accounts.csv": ACCOUNTS, "orgs.csv": ORGS}
        )

        sources = load_sources(project, connect(project))

        assert event_accounts(sources) == [("a1", None), ("a2", None)], column
        assert events_report(sources).excluded == {}, column


# Keys of a lookup file, read for a column of a given type


def write_lookup(root: Path, keys: list[str]) -> tuple[Project, LookupConfig]:
    """Write orgs.csv with `keys`, each mapped to account `a<line>`."""
    rows = "".join(f"{key},a{line}\n" for line, key in enumerate(keys, start=2))
    project = org_events_project(root, ["1001"], "org_id,account\n" + rows)
    lookup = LookupConfig(path="orgs.csv", key="org_id", value="account")
    return project, lookup


def test_number_keys_read_as_digits(tmp_path: Path) -> None:
    keys = [
        "1001.000",
        " 1002 ",
        "1.003e3",
        "-4",
        "",
        "NaN",
        "nan",
        "12345678901234567",
    ]
    project, lookup = write_lookup(tmp_path, keys)

    pairs = read_lookup(project, "events", "account_id", lookup, "DECIMAL(20,3)")

    assert pairs == {
        "1001": "a2",
        "1002": "a3",
        "1003": "a4",
        "-4": "a5",
        "12345678901234567": "a9",
    }


def test_text_keys_drop_decimal_zeros(tmp_path: Path) -> None:
    keys = ["1001.000", "-2.", "1.5", "007", "abc", "1e3", "", " 9.0"]
    project, lookup = write_lookup(tmp_path, keys)

    pairs = read_lookup(project, "events", "account_id", lookup, "VARCHAR")
    written = read_lookup(project, "events", "account_id", lookup)

    assert pairs == {
        "1001": "a2",
        "-2": "a3",
        "1.5": "a4",
        "007": "a5",
        "abc": "a6",
        "1e3": "a7",
        " 9.0": "a9",
    }
    assert list(written) == ["1001.000", "-2.", "1.5", "007", "abc", "1e3", " 9.0"]


@pytest.mark.parametrize(
    ("key", "column_type", "problem"),
    [
        ("1001.5", "DOUBLE", "is not a whole number"),
        ("1001.000001", NUMERIC_TEXT, "is not a whole number"),
        ("1e-3", "BIGINT", "is not a whole number"),
        ("inf", "DOUBLE", "is infinite"),
        ("-Infinity", "DECIMAL(12,3)", "is infinite"),
        ("1e400", "BIGINT", "is infinite"),
        ("abc", "INTEGER", "is not a number"),
        ("1_000", "DOUBLE", "is not a number"),
        (
            "9007199254740992",
            "DOUBLE",
            "is not below 9,007,199,254,740,992, the limit below which a DOUBLE "
            "column stores every whole number exactly",
        ),
        (
            "-16777216.0",
            "FLOAT",
            "is not below 16,777,216, the limit below which a FLOAT column stores "
            "every whole number exactly",
        ),
    ],
)
def test_bad_number_key_names_file_column_line(
    tmp_path: Path, key: str, column_type: str, problem: str
) -> None:
    project, lookup = write_lookup(tmp_path, ["1001", key])

    with pytest.raises(SourceError) as caught:
        read_lookup(project, "events", "account_id", lookup, column_type)

    assert str(caught.value) == (
        f"source 'events': lookup file {tmp_path / 'orgs.csv'}, line 3: key {key!r} "
        f"in column 'org_id' {problem}. A lookup matches the numbers of column "
        "'org' by their whole-number digits. Fix the key or remove its row."
    )


@pytest.mark.parametrize(
    ("keys", "column_type", "codes"),
    [
        (
            ["9007199254740991", "-9007199254740991.0"],
            "DOUBLE",
            ["9007199254740991", "-9007199254740991"],
        ),
        (["16777215", "-16777215.0"], "FLOAT", ["16777215", "-16777215"]),
        # Past the limit of a double, a key keeps every digit.
        (["9007199254740993"], "BIGINT", ["9007199254740993"]),
        (
            ["123456789012345678901234567890.000"],
            NUMERIC_TEXT,
            ["123456789012345678901234567890"],
        ),
    ],
)
def test_number_keys_inside_limits_kept_exact(
    tmp_path: Path, keys: list[str], column_type: str, codes: list[str]
) -> None:
    project, lookup = write_lookup(tmp_path, keys)

    pairs = read_lookup(project, "events", "account_id", lookup, column_type)

    assert list(pairs) == codes


# Codes of source values, computed by DuckDB


@pytest.mark.parametrize(
    ("column_type", "values", "codes"),
    [
        (
            "DOUBLE",
            ["1001.0", "-2", "1001.5", "NaN", "inf", "9007199254740992", None],
            ["1001", "-2", None, None, None, None, None],
        ),
        ("FLOAT", ["16777215", "16777216", "0.5"], ["16777215", None, None]),
        ("DECIMAL(12,3)", ["1001.000", "1001.250"], ["1001", None]),
        ("BIGINT", ["1001", "-5"], ["1001", "-5"]),
        (
            NUMERIC_TEXT,
            ["1001.000", "1001", "1001.5", "NaN", "123456789012345678901234567890.0"],
            ["1001", "1001", None, None, "123456789012345678901234567890"],
        ),
        (
            "VARCHAR",
            ["1001.000", "1001", "-2.", "1.5", "007.0", "a.0", "1001.0 ", None],
            ["1001", "1001", "-2", "1.5", "007", "a.0", "1001.0 ", None],
        ),
    ],
)
def test_source_values_read_as_codes(
    column_type: str, values: list[str | None], codes: list[str | None]
) -> None:
    sql_type = "VARCHAR" if column_type == NUMERIC_TEXT else column_type
    code = lookup_key_sql("value", column_type)

    found = duckdb.execute(
        f"SELECT {code} FROM (SELECT CAST(unnest($values) AS {sql_type}) AS value)",
        {"values": values},
    ).fetchall()

    assert [value for (value,) in found] == codes


def test_lookup_of_json_lines_numbers(tmp_path: Path) -> None:
    config = minimal_config()
    config["sources"]["events"] = {
        "kind": "events",
        "path": "events.jsonl",
        "columns": {"account_id": "org"},
        "lookups": {
            "account_id": {"path": "orgs.csv", "key": "org_id", "value": "account"}
        },
    }
    # Every standard column is present, so the reader needs no second pass to
    # look for columns that the first lines lack.
    other = '"user": "u1", "event_type": "login", "value": 1'
    events = (
        f'{{"org": 1001.0, "timestamp": "2024-03-01 10:00:00", {other}}}\n'
        f'{{"org": 1002, "timestamp": "2024-03-02 10:00:00", {other}}}\n'
        f'{{"org": "1002.00", "timestamp": "2024-03-03 10:00:00", {other}}}\n'
    )
    files = {"accounts.csv": ACCOUNTS, "orgs.csv": ORGS, "events.jsonl": events}
    project = write_project(tmp_path, config, files)

    sources = load_sources(project, connect(project))

    assert event_accounts(sources) == [("a1", None), ("a2", None), ("a2", None)]


def test_json_lines_lookup_without_some_columns(tmp_path: Path) -> None:
    config = minimal_config()
    config["sources"]["events"]["path"] = "events.jsonl"
    config["sources"]["events"]["lookups"] = {
        "event_type": {"path": "types.csv", "key": "code", "value": "name"}
    }
    events = '{"account_id": "a1", "timestamp": "2024-03-01 10:00", "event_type": 1}\n'
    files = {
        "accounts.csv": ACCOUNTS,
        "types.csv": "code,name\n1.0,login\n",
        "events.jsonl": events,
    }
    project = write_project(tmp_path, config, files)

    sources = load_sources(project, connect(project))

    relation = sources.loaded["events"].relation
    found = sources.con.con.execute(
        f'SELECT account_id, event_type, _problem FROM "{relation}"'
    ).fetchall()
    assert found == [("a1", "login", None)]


def test_lookup_nan_code_is_missing(tmp_path: Path) -> None:
    orgs = pa.array([1001.0, float("nan"), 1002.0], pa.float64())
    project = org_events_project(tmp_path, orgs)

    sources = load_sources(project, connect(project))

    assert event_accounts(sources) == [
        ("a1", None),
        (None, "missing_value:account_id"),
        ("a2", None),
    ]


def test_lookup_fractional_key_of_number_column(tmp_path: Path) -> None:
    orgs = pa.array([1001.0, 1002.5], pa.float64())
    project = org_events_project(tmp_path, orgs, ORGS + "1002.5,a2\n")

    with pytest.raises(SourceError) as caught:
        load_sources(project, connect(project))

    assert str(caught.value) == (
        f"source 'events': lookup file {tmp_path / 'orgs.csv'}, line 4: key "
        "'1002.5' in column 'org_id' is not a whole number. A lookup matches the "
        "numbers of column 'org' by their whole-number digits. Fix the key or "
        "remove its row."
    )


# Account ids of JSON Lines files

JSON_ACCOUNTS = "account_id,name\n1001,Acme\n1002,Globex\n1.5,Initech\n"


def json_ids_project(root: Path, events: dict[str, str]) -> Project:
    """Accounts 1001, 1002 and 1.5 in CSV, events in the JSON Lines files `events`,
    and a joined file of plans by account id."""
    config = minimal_config()
    config["sources"]["events"] = {
        "kind": "events",
        "path": "events/*.jsonl",
        "joins": [{"path": "plans.csv", "key": "id", "attributes": {"plan": "string"}}],
    }
    files = {
        "accounts.csv": JSON_ACCOUNTS,
        "plans.csv": "id,plan\n1001,gold\n1002,silver\n",
        **{f"events/{name}": text for name, text in events.items()},
    }
    return write_project(root, config, files)


def json_event(account_id: str, day: int = 1) -> str:
    """A JSON Lines event whose account_id is the JSON text `account_id`."""
    return f'{{"account_id": {account_id}, "timestamp": "2024-03-0{day} 10:00"}}\n'


def test_json_lines_number_ids_read_as_digits(tmp_path: Path) -> None:
    ids = ["1001.0", "1002", "1.002e3", "1001.000", '"1002"', '"1.5"', "null", "NaN"]
    project = json_ids_project(tmp_path, {"1.jsonl": "".join(map(json_event, ids))})

    sources = load_sources(project, connect(project))

    relation = sources.loaded["events"].relation
    found = sources.con.con.execute(
        f'SELECT account_id, plan, _problem FROM "{relation}" ORDER BY _row'
    ).fetchall()
    assert found == [
        ("1001", "gold", None),
        ("1002", "silver", None),
        ("1002", "silver", None),
        ("1001", "gold", None),
        ("1002", "silver", None),
        ("1.5", None, None),
        (None, None, "missing_value:account_id"),
        (None, None, "missing_value:account_id"),
    ]
    report = events_report(sources)
    assert report.rows_used == 6
    assert report.excluded == {"missing_value:account_id": 2}


def test_json_lines_huge_integer_ids_kept(tmp_path: Path) -> None:
    # Past 2^64 DuckDB gives these integers the JSON type DOUBLE, and they still
    # read as their digits.
    ids = ["123456789012345678901234567890", "-18446744073709551616", "1e30"]
    project = json_ids_project(tmp_path, {"1.jsonl": "".join(map(json_event, ids))})

    with pytest.raises(SourceError) as raised:
        load_sources(project, connect(project))
    # 1e30 is written with an exponent, so it is a double past 2^53: the first
    # two ids pass, and the error names the third row.
    assert "row 3" in str(raised.value) or "line 3" in str(raised.value)

    ids = ids[:2]
    project = json_ids_project(
        tmp_path / "ok", {"1.jsonl": "".join(map(json_event, ids))}
    )
    sources = load_sources(project, connect(project))
    relation = sources.loaded["events"].relation
    found = sources.con.con.execute(
        f'SELECT account_id, _problem FROM "{relation}" ORDER BY _row'
    ).fetchall()
    assert found == [
        ("123456789012345678901234567890", None),
        ("-18446744073709551616", None),
    ]


def test_json_lines_text_ids_kept(tmp_path: Path) -> None:
    ids = ['"1001.0"', '"a 1"', '""', "true"]
    project = json_ids_project(tmp_path, {"1.jsonl": "".join(map(json_event, ids))})

    sources = load_sources(project, connect(project))

    relation = sources.loaded["events"].relation
    found = sources.con.con.execute(
        f'SELECT account_id, _problem FROM "{relation}" ORDER BY _row'
    ).fetchall()
    assert found == [
        ("1001.0", None),
        ("a 1", None),
        (None, "missing_value:account_id"),
        ("true", None),
    ]


@pytest.mark.parametrize(
    ("value", "shown", "problem"),
    [
        ("1001.5", "1001.5", "which is not a whole number"),
        ("-Infinity", "-Infinity", "which is not a whole number"),
        (
            "9007199254740993.0",
            "9007199254740992.0",
            "which is not below 9,007,199,254,740,992, the limit below which a "
            "DOUBLE (DuckDB reads this number as one) stores every whole number "
            "exactly",
        ),
    ],
)
def test_json_lines_bad_number_id_is_error(
    tmp_path: Path, value: str, shown: str, problem: str
) -> None:
    # The bad id is on line 4 of the second file: after a blank line, and after
    # the records of the first file in the running order of the scan.
    events = {
        "1.jsonl": json_event("1001") + json_event("1002", 2),
        "2.jsonl": json_event("1001") + "\n" + json_event("1002") + json_event(value),
    }
    project = json_ids_project(tmp_path, events)

    with pytest.raises(SourceError) as caught:
        load_sources(project, connect(project))

    message = str(caught.value)
    assert message.startswith(
        f"source 'events': column 'account_id' of {tmp_path / 'events' / '2.jsonl'} "
        f"has the account id {shown!r} in row 4, {problem}"
    )
    assert message.endswith(
        "map a column of whole-number or text ids to account_id in "
        "sources.events.columns"
    )


def test_json_lines_bad_id_row_without_blank_lines(tmp_path: Path) -> None:
    events = {
        "1.jsonl": json_event("1001") + json_event("1002", 2),
        "2.jsonl": json_event("1001") + json_event("1002.25"),
    }
    project = json_ids_project(tmp_path, events)

    with pytest.raises(SourceError) as caught:
        load_sources(project, connect(project))

    assert str(caught.value) == (
        f"source 'events': column 'account_id' of {tmp_path / 'events' / '2.jsonl'} "
        "has the account id '1002.25' in row 2, which is not a whole number, so it "
        "cannot match the ids of other sources. Fix the value, or map a column of "
        "whole-number or text ids to account_id in sources.events.columns"
    )
