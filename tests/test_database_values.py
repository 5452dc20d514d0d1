"""Account ids and JSON values of database tables read like the same values of a file.

An account id stored as a whole number in a decimal or float column reads as the
digits that an integer column gives, so it matches the ids of the other sources.
An id with a fractional part stops the read with the table, column and row. A JSON
null reads as a missing value, like SQL NULL. PostgreSQL tests use a new schema on
the server at 127.0.0.1:5432 and skip where it is not reachable.
"""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Any

import duckdb
import pytest

from healthscore.config import Project
from healthscore.engine import connect
from healthscore.sources import SourceError, SourceReport, SourceSet, load_sources
from project_factory import minimal_config, write_project

PG_URL = "postgresql://postgres@127.0.0.1:5432/test"
POINT = datetime(2024, 4, 1)


def table_project(
    root: Path,
    connection: str,
    accounts: str,
    events: str,
    attributes: dict[str, str] | None = None,
) -> Project:
    """A project whose accounts and events are the tables `accounts` and `events`."""
    sources: dict[str, Any] = {
        "accounts": {"kind": "accounts", "table": accounts, "connection": connection},
        "events": {"kind": "events", "table": events, "connection": connection},
    }
    if attributes:
        sources["accounts"]["attributes"] = attributes
    return write_project(root, minimal_config(sources=sources), {})


def account_ids(sources: SourceSet) -> list[Any]:
    relation = sources.loaded["accounts"].relation
    found = sources.con.con.execute(
        f'SELECT account_id FROM "{relation}" ORDER BY account_id NULLS LAST'
    ).fetchall()
    return [account for (account,) in found]


def events_report(sources: SourceSet) -> SourceReport:
    return {r.source: r for r in sources.report(POINT)}["events"]


def pg_execute(*statements: str) -> None:
    import psycopg

    with psycopg.connect(PG_URL, autocommit=True) as connection:
        for statement in statements:
            connection.execute(statement)


def pg_events(schema: str) -> str:
    """Create events with bigint account ids 1001 (once) and 1002 (twice)."""
    return (
        f'CREATE TABLE "{schema}".events AS SELECT * FROM (VALUES '
        "(1001::bigint, timestamptz '2024-03-01 10:00+00'), "
        "(1002::bigint, timestamptz '2024-03-02 10:00+00'), "
        "(1002::bigint, timestamptz '2024-03-03 10:00+00')) AS t(account_id, timestamp)"
    )


# PostgreSQL


@pytest.mark.parametrize(
    ("id_type", "first", "second"),
    [
        ("numeric(12,0)", "1001", "1002"),
        ("numeric(12,3)", "1001", "1002.000"),
        # An unconstrained numeric keeps the scale of each value: 1001.0 and 1002.
        ("numeric", "1001.0", "1002"),
        ("double precision", "1001", "1002"),
        ("real", "1001", "1002"),
    ],
)
def test_postgres_number_ids_match_bigint(
    tmp_path: Path, postgres_schema: str, id_type: str, first: str, second: str
) -> None:
    pg_execute(
        f'CREATE TABLE "{postgres_schema}".accounts (account_id {id_type}, name text)',
        f'INSERT INTO "{postgres_schema}".accounts VALUES '
        f"({first}, 'Acme'), ({second}, 'Globex'), (NULL, 'Initech')",
        pg_events(postgres_schema),
    )
    project = table_project(
        tmp_path,
        PG_URL,
        f"{postgres_schema}.accounts",
        f"{postgres_schema}.events",
    )

    sources = load_sources(project, connect(project))

    assert account_ids(sources) == ["1001", "1002", None]
    report = events_report(sources)
    assert report.rows_used == 3
    assert report.excluded == {}


def test_postgres_long_numeric_id_is_exact(
    tmp_path: Path, postgres_schema: str
) -> None:
    # 17 digits: a double would read 12345678901234567 as ...568.
    pg_execute(
        f'CREATE TABLE "{postgres_schema}".accounts '
        "(account_id numeric(20,2), name text)",
        f'INSERT INTO "{postgres_schema}".accounts VALUES '
        "(12345678901234567.00, 'Acme')",
        f'CREATE TABLE "{postgres_schema}".events AS SELECT '
        "12345678901234567::bigint AS account_id, "
        "timestamptz '2024-03-01 10:00+00' AS timestamp",
    )
    project = table_project(
        tmp_path,
        PG_URL,
        f"{postgres_schema}.accounts",
        f"{postgres_schema}.events",
    )

    sources = load_sources(project, connect(project))

    assert account_ids(sources) == ["12345678901234567"]
    assert events_report(sources).rows_used == 1


@pytest.mark.parametrize(
    ("id_type", "value", "shown"),
    [
        ("numeric(12,2)", "1002.5", "1002.50"),
        ("double precision", "1002.5", "1002.5"),
    ],
)
def test_postgres_fractional_id_is_error(
    tmp_path: Path, postgres_schema: str, id_type: str, value: str, shown: str
) -> None:
    pg_execute(
        f'CREATE TABLE "{postgres_schema}".accounts (account_id {id_type}, name text)',
        f'INSERT INTO "{postgres_schema}".accounts VALUES '
        f"(1001, 'Acme'), ({value}, 'Globex')",
        pg_events(postgres_schema),
    )
    project = table_project(
        tmp_path,
        PG_URL,
        f"{postgres_schema}.accounts",
        f"{postgres_schema}.events",
    )

    with pytest.raises(SourceError) as caught:
        load_sources(project, connect(project))

    message = str(caught.value)
    table = f"{PG_URL}#{postgres_schema}.accounts"
    assert (
        f"source 'accounts': column 'account_id' of {table} has the account id "
        f"{shown!r} in row 2, which is not a whole number"
    ) in message
    assert "sources.accounts.columns" in message


def test_postgres_json_null_reads_missing(tmp_path: Path, postgres_schema: str) -> None:
    pg_execute(
        f'CREATE TABLE "{postgres_schema}".accounts '
        "(account_id text, name text, meta jsonb, sent json, size jsonb)",
        f'INSERT INTO "{postgres_schema}".accounts VALUES '
        "('a1', 'Acme', 'null', ' null ', 'null'), "
        """('a2', 'Globex', '{"x": 1}', '"null"', '5'), """
        "('a3', 'Initech', NULL, 'null', NULL)",
        f'CREATE TABLE "{postgres_schema}".events AS SELECT '
        "'a1'::text AS account_id, timestamptz '2024-03-01 10:00+00' AS timestamp",
    )
    project = table_project(
        tmp_path,
        PG_URL,
        f"{postgres_schema}.accounts",
        f"{postgres_schema}.events",
        attributes={"meta": "string", "sent": "string", "size": "number"},
    )

    sources = load_sources(project, connect(project))

    relation = sources.loaded["accounts"].relation
    found = sources.con.con.execute(
        f'SELECT account_id, meta, sent, size, _problem FROM "{relation}" '
        "ORDER BY account_id"
    ).fetchall()
    assert found == [
        ("a1", None, None, None, None),
        ("a2", '{"x": 1}', '"null"', 5.0, None),
        ("a3", None, None, None, None),
    ]


# DuckDB files


def duckdb_tables(path: Path, *statements: str) -> str:
    """Run `statements` in a new DuckDB file and return its connection URL."""
    con = duckdb.connect(str(path))
    try:
        con.execute(
            "CREATE TABLE events AS SELECT * FROM (VALUES "
            "(1001::BIGINT, TIMESTAMP '2024-03-01 10:00'), "
            "(1002::BIGINT, TIMESTAMP '2024-03-02 10:00'), "
            "(1002::BIGINT, TIMESTAMP '2024-03-03 10:00')) AS t(account_id, timestamp)"
        )
        for statement in statements:
            con.execute(statement)
    finally:
        con.close()
    return f"duckdb://{path}"


@pytest.mark.parametrize(
    "id_type",
    ["DECIMAL(12,0)", "DECIMAL(12,3)", "DECIMAL(38,10)", "DOUBLE", "FLOAT", "HUGEINT"],
)
def test_duckdb_number_ids_match_bigint(tmp_path: Path, id_type: str) -> None:
    connection = duckdb_tables(
        tmp_path / "crm.duckdb",
        f"CREATE TABLE accounts (account_id {id_type}, name VARCHAR)",
        "INSERT INTO accounts VALUES (1001, 'Acme'), (1002, 'Globex'), "
        "(NULL, 'Initech')",
    )
    project = table_project(tmp_path, connection, "accounts", "events")

    sources = load_sources(project, connect(project))

    assert account_ids(sources) == ["1001", "1002", None]
    report = events_report(sources)
    assert report.rows_used == 3
    assert report.excluded == {}


def test_postgres_numeric_nan_id_is_missing(
    tmp_path: Path, postgres_schema: str
) -> None:
    pg_execute(
        f'CREATE TABLE "{postgres_schema}".accounts (account_id numeric, name text)',
        f'INSERT INTO "{postgres_schema}".accounts VALUES '
        "(1001, 'Acme'), ('NaN', 'Globex')",
        pg_events(postgres_schema),
    )
    project = table_project(
        tmp_path,
        PG_URL,
        f"{postgres_schema}.accounts",
        f"{postgres_schema}.events",
    )

    sources = load_sources(project, connect(project))

    relation = sources.loaded["accounts"].relation
    found = sources.con.con.execute(
        f'SELECT account_id, _problem FROM "{relation}" ORDER BY _row'
    ).fetchall()
    assert found == [("1001", None), (None, "missing_value:account_id")]


def test_duckdb_nan_id_is_missing(tmp_path: Path) -> None:
    connection = duckdb_tables(
        tmp_path / "crm.duckdb",
        "CREATE TABLE accounts (account_id DOUBLE, name VARCHAR)",
        "INSERT INTO accounts VALUES (1001, 'Acme'), ('NaN', 'Globex')",
    )
    project = table_project(tmp_path, connection, "accounts", "events")

    sources = load_sources(project, connect(project))

    relation = sources.loaded["accounts"].relation
    found = sources.con.con.execute(
        f'SELECT account_id, _problem FROM "{relation}" ORDER BY _row'
    ).fetchall()
    assert found == [("1001", None), (None, "missing_value:account_id")]


NOT_WHOLE = "which is not a whole number"


@pytest.mark.parametrize(
    ("id_type", "value", "shown", "problem"),
    [
        ("DECIMAL(12,2)", "1002.5", "1002.50", NOT_WHOLE),
        ("DOUBLE", "1002.5", "1002.5", NOT_WHOLE),
        ("DOUBLE", "'Infinity'", "inf", NOT_WHOLE),
        # 2**53 + 2 is whole, but a DOUBLE cannot hold every whole number past 2**53.
        ("DOUBLE", "9007199254740994", "9007199254740994.0", "which is not below 9,"),
        ("FLOAT", "16777218", "16777218.0", "which is not below 16,777,216, the"),
        # 2**53 + 1 is stored as 2**53, so the limit itself is not an exact id.
        ("DOUBLE", "9007199254740993", "9007199254740992.0", "which is not below 9,"),
        ("FLOAT", "16777217", "16777216.0", "which is not below 16,777,216, the"),
    ],
)
def test_duckdb_fractional_id_is_error(
    tmp_path: Path, id_type: str, value: str, shown: str, problem: str
) -> None:
    database = tmp_path / "crm.duckdb"
    connection = duckdb_tables(
        database,
        f"CREATE TABLE accounts (account_id {id_type}, name VARCHAR)",
        f"INSERT INTO accounts VALUES (1001, 'Acme'), ({value}, 'Globex')",
    )
    project = table_project(tmp_path, connection, "accounts", "events")

    with pytest.raises(SourceError) as caught:
        load_sources(project, connect(project))

    message = str(caught.value)
    assert (
        f"source 'accounts': column 'account_id' of duckdb://{database}#accounts has "
        f"the account id {shown!r} in row 2, {problem}"
    ) in message


def test_duckdb_json_null_reads_missing(tmp_path: Path) -> None:
    connection = duckdb_tables(
        tmp_path / "crm.duckdb",
        "CREATE TABLE accounts (account_id VARCHAR, name VARCHAR, meta JSON)",
        "INSERT INTO accounts VALUES ('a1', 'Acme', 'null'), "
        """('a2', 'Globex', '{"x": 1}'), ('a3', 'Initech', ' null ')""",
        "CREATE OR REPLACE TABLE events AS SELECT 'a1' AS account_id, "
        "TIMESTAMP '2024-03-01 10:00' AS timestamp",
    )
    project = table_project(
        tmp_path, connection, "accounts", "events", attributes={"meta": "string"}
    )

    sources = load_sources(project, connect(project))

    relation = sources.loaded["accounts"].relation
    found = sources.con.con.execute(
        f'SELECT account_id, meta FROM "{relation}" ORDER BY account_id'
    ).fetchall()
    assert found == [("a1", None), ("a2", '{"x": 1}'), ("a3", None)]
