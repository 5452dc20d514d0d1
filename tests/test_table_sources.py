"""Sources read from database tables, and scores written into a snapshot table.

One small project is scored from CSV files, from the same rows loaded into
PostgreSQL tables and from a DuckDB database file. The snapshots must be equal and
the source reports must count the same rows, because tables go through the same
conversions and checks as files. PostgreSQL tests use a new schema per test on the
server at 127.0.0.1:5432 and skip where it is not reachable.
"""

from __future__ import annotations

import logging
import math
import shutil
import socket
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any
from urllib.parse import quote

import duckdb
import pandas as pd
import pyarrow as pa
import pytest
from typer.testing import CliRunner

from healthscore.cli import app
from healthscore.config import ConfigError, Project, load_project
from healthscore.pipeline import open_engine, score, snapshot_store
from healthscore.scoring.tables import SCORE_COLUMNS
from healthscore.sources import SourceError, as_of_point
from healthscore.store.snapshot_tables import (
    SNAPSHOT_TABLE_SCHEMA,
    SnapshotTableError,
    SnapshotTableWriter,
    write_snapshot_table,
)

PG_ADMIN = "postgresql://postgres@127.0.0.1:5432/test"
PG_SOURCE = "postgresql://postgres@127.0.0.1:5432/test"
AS_OF = date(2026, 6, 1)
KEY_VARIABLE = "HEALTHSCORE_TEST_TABLE_KEY"

ACCOUNTS_CSV = """account_id,company,segment,arr,plan
a1,Acme,enterprise,120000,gold
a2,Globex,smb,9000,silver
a3,Initech,smb,abc,silver
a4,Umbrella,smb,4000,bronze
"""

SUBSCRIPTIONS_CSV = """account_id,start,end,mrr
a1,2025-01-01,,10000
a2,2025-06-01,2026-12-31,750
a4,2026-03-01,2026-02-01,300
a4,2026-03-01,,300
"""

# Times without an offset are wall-clock times in the project zone (Europe/Berlin).
# Row 3 is 2026-06-01 00:30 in Berlin, after the as-of point. Row 6 has no account
# id, and row 7 names an unknown account.
EVENTS_CSV = """customer,event_time,kind,amount,user
a1,2026-05-20 10:00:00,login,1,u1
a1,2026-05-25 23:30:00,login,2.5,u2
a1,2026-05-31 22:30:00+00,export,,u1
a2,2026-05-10 08:00:00+02,login,3,u3
a2,2026-04-01 08:00:00,login,1,u3
,2026-05-21 08:00:00,login,1,u9
a9,2026-05-21 08:00:00,login,1,u9
a4,2026-05-30 12:00:00,login,4,u4
a4,2026-05-30 12:00:00,export,,u5
"""

EXPECTED_EXCLUDED = {
    "accounts": {"unparseable_value:arr": 1},
    "subscriptions": {"end_before_start:end": 1},
    "events": {
        "after_as_of:timestamp": 1,
        "missing_value:account_id": 1,
        "unknown_account:account_id": 1,
    },
}
EXPECTED_EXAMPLE_ROWS = {
    "accounts": [3],
    "subscriptions": [3],
    "events": [3, 6, 7],
}

SNAPSHOT_TABLES = ("scores", "components", "measures", "metrics")


def base_config() -> dict[str, Any]:
    """Settings shared by the file and table versions of the project."""
    bounds = {"method": "bounds", "min": 0, "max": 5}
    return {
        "name": "tables",
        "timezone": "Europe/Berlin",
        "sources": {},
        "metrics": {
            "logins_28d": {
                "type": "count",
                "source": "events",
                "where": "event_type == 'login'",
                "window": "28d",
            },
            "amount_28d": {
                "type": "sum",
                "source": "events",
                "column": "value",
                "window": "28d",
            },
            "users_28d": {
                "type": "distinct_count",
                "source": "events",
                "column": "user",
                "window": "28d",
            },
            "days_since_event": {"type": "days_since", "source": "events"},
            "tenure": {"type": "tenure", "source": "subscriptions"},
            "plan": {"type": "attribute", "column": "plan"},
        },
        "scorecards": [
            {
                "name": "default",
                "components": {
                    "usage": {
                        "weight": 2,
                        "measures": [
                            {"metric": "logins_28d", "normalize": bounds},
                            {"metric": "amount_28d", "normalize": bounds},
                            {"metric": "users_28d", "normalize": bounds},
                        ],
                    },
                    "recency": {
                        "weight": 1,
                        "measures": [
                            {
                                "metric": "days_since_event",
                                "direction": "lower",
                                "normalize": {
                                    "method": "bounds",
                                    "min": 0,
                                    "max": 30,
                                },
                            },
                            {
                                "metric": "tenure",
                                "normalize": {
                                    "method": "bounds",
                                    "min": 0,
                                    "max": 365,
                                },
                            },
                        ],
                    },
                },
            }
        ],
        "privacy": {"pseudonymize": {"columns": ["user"], "key_env": KEY_VARIABLE}},
    }


def source_settings() -> dict[str, dict[str, Any]]:
    """Mapping and attributes of each source, without its location."""
    return {
        "accounts": {
            "kind": "accounts",
            "columns": {"name": "company"},
            "attributes": {"plan": "string"},
        },
        "subscriptions": {"kind": "subscriptions"},
        "events": {
            "kind": "events",
            "columns": {
                "account_id": "customer",
                "timestamp": "event_time",
                "event_type": "kind",
                "value": "amount",
            },
        },
    }


def write_project(
    root: Path,
    locations: dict[str, dict[str, str]],
    files: dict[str, str] | None = None,
    **overrides: Any,
) -> Project:
    """Write a project whose sources are at `locations` (path, or table and
    connection) and load it."""
    import yaml

    config = base_config()
    for name, settings in source_settings().items():
        config["sources"][name] = {**settings, **locations[name]}
    config.update(overrides)
    root.mkdir(parents=True, exist_ok=True)
    for name, content in (files or {}).items():
        (root / name).write_text(content)
    (root / "healthscore.yml").write_text(yaml.safe_dump(config, sort_keys=False))
    return load_project(root)


def csv_project(root: Path, **overrides: Any) -> Project:
    files = {
        "accounts.csv": ACCOUNTS_CSV,
        "subscriptions.csv": SUBSCRIPTIONS_CSV,
        "events.csv": EVENTS_CSV,
    }
    locations = {
        name: {"path": f"{name}.csv"}
        for name in ("accounts", "subscriptions", "events")
    }
    return write_project(root, locations, files, **overrides)


@pytest.fixture(autouse=True)
def pseudonymization_key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(KEY_VARIABLE, "a test key of at least sixteen characters")


# PostgreSQL


@pytest.fixture
def pg_schema(postgres_server: str) -> Iterator[str]:
    """A new schema holding the project's rows as tables, dropped afterwards.

    Accounts and subscriptions are text columns, as a CSV file is read; events
    have typed columns (timestamptz, numeric, text) loaded in the project's zone.
    """
    import psycopg

    schema = f"healthscore_tables_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(PG_ADMIN, autocommit=True) as connection:
        connection.execute(f'CREATE SCHEMA "{schema}"')
        connection.execute("SET TIME ZONE 'Europe/Berlin'")
        connection.execute(
            f'CREATE TABLE "{schema}".accounts (account_id text, company text, '
            "segment text, arr text, plan text)"
        )
        connection.execute(
            f'CREATE TABLE "{schema}".subscriptions (account_id text, start text, '
            '"end" text, mrr text)'
        )
        connection.execute(
            f'CREATE TABLE "{schema}".events (customer text, event_time timestamptz, '
            'kind text, amount numeric(10, 2), "user" text)'
        )
        for table, content in (
            ("accounts", ACCOUNTS_CSV),
            ("subscriptions", SUBSCRIPTIONS_CSV),
            ("events", EVENTS_CSV),
        ):
            copy = f'COPY "{schema}".{table} FROM STDIN WITH (FORMAT csv, HEADER true)'
            with connection.cursor().copy(copy) as writer:
                writer.write(content)
    try:
        yield schema
    finally:
        with psycopg.connect(PG_ADMIN, autocommit=True) as connection:
            connection.execute(f'DROP SCHEMA "{schema}" CASCADE')


def pg_project(root: Path, schema: str, **overrides: Any) -> Project:
    locations = {
        name: {"table": f"{schema}.{name}", "connection": PG_SOURCE}
        for name in ("accounts", "subscriptions", "events")
    }
    return write_project(root, locations, **overrides)


def test_invalid_port_message_masks_password(tmp_path: Path) -> None:
    connection = "postgresql://reader:s3cr3tPW@127.0.0.1:notaport/test"
    locations = {
        name: {"table": f"crm.{name}", "connection": connection}
        for name in ("accounts", "subscriptions", "events")
    }
    with pytest.raises((ConfigError, SourceError, ValueError)) as caught:
        project = write_project(tmp_path, locations)
        score(project, AS_OF, monitor=False)
    message = str(caught.value)
    assert "invalid port in 'postgresql://reader:***@127.0.0.1:notaport/test'" in (
        message
    )
    assert "s3cr3tPW" not in message


# DuckDB files


def duckdb_file(path: Path, csv_folder: Path) -> Path:
    """Load the CSV rows into a DuckDB file: text columns, amounts as DOUBLE."""
    for name, content in (
        ("accounts", ACCOUNTS_CSV),
        ("subscriptions", SUBSCRIPTIONS_CSV),
        ("events", EVENTS_CSV),
    ):
        (csv_folder / f"{name}.csv").write_text(content)
    con = duckdb.connect(str(path))
    try:
        con.execute("CREATE SCHEMA crm")
        for name in ("accounts", "subscriptions", "events"):
            file = str(csv_folder / f"{name}.csv")
            con.execute(
                f"CREATE TABLE crm.{name} AS SELECT * FROM "
                "read_csv(?, all_varchar = true, header = true)",
                [file],
            )
        con.execute(
            "ALTER TABLE crm.events ALTER amount SET DATA TYPE DOUBLE "
            "USING TRY_CAST(amount AS DOUBLE)"
        )
        con.execute("CREATE VIEW crm.events_view AS SELECT * FROM crm.events")
    finally:
        con.close()
    return path


def duckdb_project(root: Path, database: Path, **overrides: Any) -> Project:
    locations = {
        name: {"table": f"crm.{name}", "connection": f"duckdb://{database}"}
        for name in ("accounts", "subscriptions", "events")
    }
    return write_project(root, locations, **overrides)


# Comparisons


def snapshot_frames(project: Project, as_of: date) -> dict[str, pd.DataFrame]:
    store = snapshot_store(project)
    return {table: store.read(as_of, table) for table in SNAPSHOT_TABLES}


def assert_same_snapshots(expected: Project, actual: Project, as_of: date) -> None:
    wanted = snapshot_frames(expected, as_of)
    found = snapshot_frames(actual, as_of)
    for table in SNAPSHOT_TABLES:
        assert len(wanted[table]) > 0, table
        pd.testing.assert_frame_equal(found[table], wanted[table], obj=table)


def reports_without_files(project: Project, as_of: date) -> list[dict[str, Any]]:
    """Source reports of the stored run, with the file names left out."""
    reports = snapshot_store(project).run_info(as_of)["sources"]
    for report in reports:
        report.pop("files")
        for example in report["examples"]:
            example.pop("file")
    return reports


def assert_expected_reports(run_reports: list[Any], prefix: str, suffix: str) -> None:
    """Check the hand-counted exclusions, and that the report and its examples
    name the source as `prefix` + source name + `suffix`."""
    by_source = {report.source: report for report in run_reports}
    for name, excluded in EXPECTED_EXCLUDED.items():
        report = by_source[name]
        location = f"{prefix}{name}{suffix}"
        assert report.excluded == excluded, name
        rows = [example.row for example in report.examples]
        assert rows == EXPECTED_EXAMPLE_ROWS[name], name
        assert report.files == [location], name
        assert {example.file for example in report.examples} == {location}, name


def expected_scores(project: Project, as_of: date) -> list[dict[str, Any]]:
    """Rows of the snapshot table: the Parquet snapshot's scores as plain rows, with
    NaN as None, and the project's key."""
    frame = snapshot_store(project).read(as_of, "scores").sort_values("account_id")
    settings = project.config.store.snapshot_table
    assert settings is not None
    key = settings.project or project.config.name
    return [plain(row) | {"project": key} for row in frame.to_dict("records")]


def plain(row: dict[str, Any]) -> dict[str, Any]:
    return {
        key: None if isinstance(value, float) and math.isnan(value) else value
        for key, value in row.items()
    }


def pg_rows(schema: str, table: str, as_of: date | None = None) -> list[dict[str, Any]]:
    import psycopg
    from psycopg.rows import dict_row

    where = "" if as_of is None else " WHERE as_of = %s"
    params = [] if as_of is None else [as_of]
    with psycopg.connect(PG_ADMIN, row_factory=dict_row) as connection:
        rows = connection.execute(
            f'SELECT * FROM "{schema}".{table}{where} ORDER BY as_of, account_id',
            params,
        ).fetchall()
    return [plain(dict(row)) for row in rows]


def duckdb_rows(path: Path, table: str, as_of: date) -> list[dict[str, Any]]:
    con = duckdb.connect(str(path), read_only=True)
    try:
        frame = con.execute(
            f"SELECT * FROM {table} WHERE as_of = ? ORDER BY account_id", [as_of]
        ).df()
    finally:
        con.close()
    frame["as_of"] = [value.date() for value in frame["as_of"]]
    return [plain(row) for row in frame.to_dict("records")]


def closed_port() -> int:
    """Return a port on 127.0.0.1 that nothing listens on."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def run_cli(*args: str | Path) -> Any:
    runner = CliRunner(env={"COLUMNS": "200", "NO_COLOR": "1"})
    return runner.invoke(app, [str(arg) for arg in args], prog_name="healthscore")


# Table sources scored like files


def test_postgres_tables_score_like_files(tmp_path: Path, pg_schema: str) -> None:
    files = csv_project(tmp_path / "files")
    tables = pg_project(tmp_path / "tables", pg_schema)

    from_files = score(files, AS_OF, monitor=False)
    from_tables = score(tables, AS_OF, monitor=False)

    assert_same_snapshots(files, tables, AS_OF)
    assert reports_without_files(tables, AS_OF) == reports_without_files(files, AS_OF)
    assert_expected_reports(from_files.source_reports, f"{tmp_path}/files/", ".csv")
    prefix = f"{PG_SOURCE}#{pg_schema}."
    assert_expected_reports(from_tables.source_reports, prefix, "")


def test_postgres_scores_match_hand_count(tmp_path: Path, pg_schema: str) -> None:
    run = score(pg_project(tmp_path, pg_schema), AS_OF, monitor=False)
    metrics = run.metrics.values
    # a1: logins on 20 and 25 May; its export is after the as-of point.
    assert metrics.loc["a1", "logins_28d"] == 2
    assert metrics.loc["a1", "amount_28d"] == 3.5
    assert metrics.loc["a1", "users_28d"] == 2
    # a2: 10 May 08:00+02 is in the window, 1 April is not.
    assert metrics.loc["a2", "logins_28d"] == 1
    assert metrics.loc["a2", "days_since_event"] == 22
    # a4: the row with end before start is excluded, the other one counts.
    assert metrics.loc["a4", "tenure"] == 92
    assert metrics.loc["a4", "amount_28d"] == 4
    assert sorted(run.result.scores["account_id"]) == ["a1", "a2", "a4"]


def test_postgres_real_column_reads_as_written(tmp_path: Path, pg_schema: str) -> None:
    import psycopg

    with psycopg.connect(PG_ADMIN, autocommit=True) as connection:
        table = f'"{pg_schema}".events'
        connection.execute(f"ALTER TABLE {table} ALTER COLUMN amount TYPE real")
        connection.execute(
            f"UPDATE {table} SET amount = 0.1 WHERE customer = 'a4' AND kind = 'login'"
        )
    run = score(pg_project(tmp_path, pg_schema), AS_OF, monitor=False)

    # As a double, PostgreSQL's real 0.1 is 0.10000000149011612.
    assert run.metrics.values.loc["a4", "amount_28d"] == 0.1
    assert run.metrics.values.loc["a1", "amount_28d"] == 3.5


def test_postgres_source_pseudonymizes_users(tmp_path: Path, pg_schema: str) -> None:
    engine = open_engine(pg_project(tmp_path / "tables", pg_schema))
    file_engine = open_engine(csv_project(tmp_path / "files"))
    query = "SELECT DISTINCT user FROM source_events ORDER BY 1"
    users = engine.con.con.execute(query).fetchall()
    file_users = file_engine.con.con.execute(query).fetchall()
    assert users == file_users
    assert len(users) == 6
    assert not {"u1", "u2", "u3", "u4", "u5", "u9"} & {row[0] for row in users}


# The second password has the characters that end or split a URL's user part.
@pytest.mark.parametrize("password", ["s3cret-word", "p@ss/w:rd#1?x"])
def test_postgres_connection_reads_variables(
    tmp_path: Path, pg_schema: str, monkeypatch: pytest.MonkeyPatch, password: str
) -> None:
    # The server trusts local connections, so any password is accepted.
    monkeypatch.setenv("HEALTHSCORE_TEST_PGPASSWORD", password)
    connection = (
        "postgresql://postgres:${HEALTHSCORE_TEST_PGPASSWORD}@127.0.0.1:5432/test"
    )
    locations = {
        name: {"table": f"{pg_schema}.{name}", "connection": connection}
        for name in ("accounts", "subscriptions", "events")
    }
    project = write_project(tmp_path, locations)
    run = score(project, AS_OF, monitor=False)
    files = {file for report in run.source_reports for file in report.files}
    assert files == {
        f"{PG_SOURCE}#{pg_schema}.{name}"
        for name in ("accounts", "subscriptions", "events")
    }
    stored = str(snapshot_store(project).run_info(AS_OF))
    assert password not in stored
    assert quote(password, safe="") not in stored


def test_unset_connection_variable_is_config_error(tmp_path: Path) -> None:
    connection = "postgresql://reader:${HEALTHSCORE_TEST_UNSET_VARIABLE}@127.0.0.1/test"
    locations = {
        name: {"table": f"crm.{name}", "connection": connection}
        for name in ("accounts", "subscriptions", "events")
    }
    with pytest.raises(ConfigError) as caught:
        write_project(tmp_path, locations)
    keys = {issue.key for issue in caught.value.issues}
    assert "sources.events.connection" in keys
    assert "HEALTHSCORE_TEST_UNSET_VARIABLE is not set" in str(caught.value)


# DuckDB files


def test_duckdb_file_scores_like_files(tmp_path: Path) -> None:
    database = duckdb_file(tmp_path / "warehouse.duckdb", tmp_path)
    files = csv_project(tmp_path / "files")
    tables = duckdb_project(tmp_path / "tables", database)

    score(files, AS_OF, monitor=False)
    from_tables = score(tables, AS_OF, monitor=False)

    assert_same_snapshots(files, tables, AS_OF)
    assert reports_without_files(tables, AS_OF) == reports_without_files(files, AS_OF)
    prefix = f"duckdb://{database}#crm."
    assert_expected_reports(from_tables.source_reports, prefix, "")


def test_duckdb_file_is_attached_read_only(tmp_path: Path) -> None:
    database = duckdb_file(tmp_path / "warehouse.duckdb", tmp_path)
    engine = open_engine(duckdb_project(tmp_path / "tables", database))
    attached = engine.con.con.execute(
        "SELECT readonly FROM duckdb_databases() WHERE path = ?", [str(database)]
    ).fetchall()
    assert attached == [(True,)]
    # The events are read in place through a view, not copied.
    kinds = engine.con.con.execute(
        "SELECT table_type FROM information_schema.tables "
        "WHERE table_name = 'source_events'"
    ).fetchall()
    assert kinds == [("VIEW",)]


def test_duckdb_view_numbers_rows_in_order(tmp_path: Path) -> None:
    database = duckdb_file(tmp_path / "warehouse.duckdb", tmp_path)
    locations = {
        name: {"table": f"crm.{name}", "connection": f"duckdb://{database}"}
        for name in ("accounts", "subscriptions")
    }
    locations["events"] = {
        "table": "crm.events_view",
        "connection": f"duckdb://{database}",
    }
    run = score(write_project(tmp_path / "p", locations), AS_OF, monitor=False)
    events = next(r for r in run.source_reports if r.source == "events")
    assert events.excluded == EXPECTED_EXCLUDED["events"]
    assert [example.row for example in events.examples] == [3, 6, 7]


def test_duckdb_relative_path_is_in_project(tmp_path: Path) -> None:
    root = tmp_path / "p"
    root.mkdir()
    duckdb_file(root / "warehouse.duckdb", tmp_path)
    locations = {
        name: {"table": f"crm.{name}", "connection": "duckdb://warehouse.duckdb"}
        for name in ("accounts", "subscriptions", "events")
    }
    run = score(write_project(root, locations), AS_OF, monitor=False)
    assert len(run.result.scores) == 3


def test_duckdb_path_with_parent_parts(tmp_path: Path) -> None:
    # Three sources name the same file through `..`. DuckDB keeps the path without
    # those parts, and the file must still be attached only once.
    root = tmp_path / "p"
    root.mkdir()
    (tmp_path / "wh").mkdir()
    duckdb_file(tmp_path / "wh" / "warehouse.duckdb", tmp_path)
    locations = {
        name: {"table": f"crm.{name}", "connection": "duckdb://../wh/warehouse.duckdb"}
        for name in ("accounts", "subscriptions", "events")
    }
    run = score(write_project(root, locations), AS_OF, monitor=False)
    assert len(run.result.scores) == 3


# Errors


def test_postgres_missing_table_is_source_error(tmp_path: Path, pg_schema: str) -> None:
    project = pg_project(tmp_path, pg_schema)
    project.config.sources["events"].table = f"{pg_schema}.event"
    with pytest.raises(SourceError) as caught:
        open_engine(project)
    message = str(caught.value)
    assert f"source 'events': table '{pg_schema}.event' not found" in message
    assert PG_SOURCE in message
    assert "check sources.events.table, and that the user may read it" in message
    assert f"Similar tables: {pg_schema}.events" in message


def test_postgres_load_over_memory_limit(tmp_path: Path, pg_schema: str) -> None:
    import psycopg

    # 400 000 rows with long user names need far more than 2 MB of DuckDB memory.
    with psycopg.connect(PG_ADMIN, autocommit=True) as connection:
        connection.execute(
            f"INSERT INTO \"{pg_schema}\".events SELECT 'a1', "
            "timestamptz '2026-05-01 00:00+00' + n * interval '1 second', 'login', "
            "1, repeat(md5(n::text), 4) FROM generate_series(1, 400000) AS n"
        )
    project = pg_project(tmp_path, pg_schema, engine={"memory_limit": "2MB"})

    with pytest.raises(SourceError) as caught:
        open_engine(project)

    message = str(caught.value)
    assert message.startswith(f"source 'events': reading {PG_SOURCE}")
    assert "raise engine.memory_limit in healthscore.yml" in message
    assert "check that the server is reachable" not in message


def test_postgres_missing_column_is_source_error(
    tmp_path: Path, pg_schema: str
) -> None:
    project = pg_project(tmp_path, pg_schema)
    project.config.sources["events"].columns["timestamp"] = "occurred_at"
    with pytest.raises(SourceError) as caught:
        open_engine(project)
    message = str(caught.value)
    assert "column 'occurred_at' for 'timestamp' not found in table" in message
    assert f"{PG_SOURCE}#{pg_schema}.events" in message
    assert "customer, event_time, kind, amount, user" in message
    assert "Fix sources.events.columns" in message


def test_unreachable_server_is_source_error(tmp_path: Path) -> None:
    port = closed_port()
    connection = f"postgresql://postgres:hunter22@127.0.0.1:{port}/test"
    locations = {
        name: {"table": f"crm.{name}", "connection": connection}
        for name in ("accounts", "subscriptions", "events")
    }
    project = write_project(tmp_path, locations)
    with pytest.raises(SourceError) as caught:
        open_engine(project)
    message = str(caught.value)
    for name in ("accounts", "subscriptions", "events"):
        assert (
            f"source {name!r}: cannot connect to postgresql://postgres@127.0.0.1:"
            f"{port}/test to read table 'crm.{name}'"
        ) in message
    assert "Check that the server is running" in message
    assert "hunter22" not in message


def test_duckdb_table_case_hint(tmp_path: Path) -> None:
    database = duckdb_file(tmp_path / "warehouse.duckdb", tmp_path)
    project = duckdb_project(tmp_path / "p", database)
    project.config.sources["events"].table = "CRM.Evnts"
    with pytest.raises(SourceError) as caught:
        open_engine(project)

    assert "Similar tables: crm.events" in str(caught.value)


def test_duckdb_missing_table_and_file(tmp_path: Path) -> None:
    database = duckdb_file(tmp_path / "warehouse.duckdb", tmp_path)
    project = duckdb_project(tmp_path / "p", database)
    project.config.sources["events"].table = "crm.evnts"
    project.config.sources["subscriptions"].connection = "duckdb:///nowhere/x.duckdb"
    with pytest.raises(SourceError) as caught:
        open_engine(project)
    message = str(caught.value)
    assert "source 'events': table 'crm.evnts' not found" in message
    assert "check sources.events.table. Similar tables: crm.events" in message
    assert "may read it" not in message
    assert (
        "source 'subscriptions': DuckDB file /nowhere/x.duckdb not found; check "
        "sources.subscriptions.connection"
    ) in message


def test_csv_named_as_duckdb_file(tmp_path: Path) -> None:
    database = duckdb_file(tmp_path / "warehouse.duckdb", tmp_path)
    project = duckdb_project(tmp_path / "p", database)
    not_duckdb = tmp_path / "accounts.csv"
    not_duckdb.write_text(ACCOUNTS_CSV)
    project.config.sources["accounts"].connection = f"duckdb://{not_duckdb}"

    with pytest.raises(SourceError) as caught:
        open_engine(project)

    message = str(caught.value)
    assert f"source 'accounts': {not_duckdb} is not a DuckDB database file" in message
    assert "read a CSV, Parquet or JSON Lines file with sources.accounts.path" in (
        message
    )


def test_validate_reports_missing_table(tmp_path: Path) -> None:
    database = duckdb_file(tmp_path / "warehouse.duckdb", tmp_path)
    project = duckdb_project(tmp_path / "p", database)
    assert run_cli("validate", "--project", project.root).exit_code == 0

    config_file = project.root / "healthscore.yml"
    text = config_file.read_text().replace("crm.events", "crm.missing_events")
    config_file.write_text(text)
    result = run_cli("validate", "--project", project.root)
    assert result.exit_code == 1
    assert "table 'crm.missing_events' not found" in result.output


def test_validate_reports_missing_column(tmp_path: Path, pg_schema: str) -> None:
    project = pg_project(tmp_path, pg_schema)
    config_file = project.root / "healthscore.yml"
    config_file.write_text(config_file.read_text().replace("company", "firm"))
    result = run_cli("validate", "--project", project.root)
    assert result.exit_code == 1
    assert "column 'firm' for 'name' not found in table" in result.output


def test_validate_reports_metric_column(tmp_path: Path, pg_schema: str) -> None:
    import psycopg
    import yaml

    with psycopg.connect(PG_ADMIN, autocommit=True) as connection:
        connection.execute(
            f'CREATE TABLE "{pg_schema}".tickets (account_id text, created text)'
        )
    project = pg_project(tmp_path, pg_schema)
    config_file = project.root / "healthscore.yml"
    config = yaml.safe_load(config_file.read_text())
    config["sources"]["tickets"] = {
        "kind": "tickets",
        "table": f"{pg_schema}.tickets",
        "connection": PG_SOURCE,
        "columns": {"timestamp": "created"},
    }
    config["metrics"]["tone"] = {
        "type": "sentiment",
        "source": "tickets",
        "column": "text",
        "window": "28d",
    }
    config_file.write_text(yaml.safe_dump(config, sort_keys=False))

    result = run_cli("validate", "--project", project.root)

    output = " ".join(result.output.split())
    assert result.exit_code == 1, output
    assert (
        "metric 'tone' reads column 'text', which source 'tickets' does not have "
        "(it has account_id, timestamp)"
    ) in output
    assert "fix metrics.tone.column" in output


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        (
            {"path": "events.csv", "table": "events", "connection": "duckdb://x.db"},
            "set either path or table, not both",
        ),
        ({"table": "events"}, "table needs connection"),
        ({"table": "a.b.c", "connection": "duckdb://x.db"}, "invalid table 'a.b.c'"),
        (
            {"table": "events", "connection": "mysql://host/db"},
            "connection must start with postgresql://",
        ),
        ({"connection": "duckdb://x.db"}, "connection needs table"),
    ],
)
def test_table_settings_are_checked(
    tmp_path: Path, settings: dict[str, str], message: str
) -> None:
    locations = {
        "accounts": {"path": "accounts.csv"},
        "subscriptions": {"path": "subscriptions.csv"},
        "events": settings,
    }
    with pytest.raises(ConfigError) as caught:
        write_project(
            tmp_path,
            locations,
            {"accounts.csv": ACCOUNTS_CSV, "subscriptions.csv": SUBSCRIPTIONS_CSV},
        )
    assert message in str(caught.value)


# Snapshot tables


def test_snapshot_table_schema_matches_scores() -> None:
    assert SNAPSHOT_TABLE_SCHEMA.names == [*SCORE_COLUMNS, "project"]
    assert SNAPSHOT_TABLE_SCHEMA.field("as_of").type == pa.date32()


def test_postgres_snapshot_table_replaces_date(tmp_path: Path, pg_schema: str) -> None:
    table = f"{pg_schema}.health_scores"
    project = csv_project(
        tmp_path,
        store={"snapshot_table": {"connection": PG_SOURCE, "table": table}},
    )
    score(project, AS_OF, monitor=False)
    first = pg_rows(pg_schema, "health_scores")
    assert first == expected_scores(project, AS_OF)
    assert len(first) == 3

    score(project, AS_OF, monitor=False)
    assert pg_rows(pg_schema, "health_scores") == first

    earlier = date(2026, 5, 1)
    score(project, earlier, monitor=False)
    assert pg_rows(pg_schema, "health_scores", earlier) == expected_scores(
        project, earlier
    )
    assert pg_rows(pg_schema, "health_scores", AS_OF) == first


def test_postgres_snapshot_table_failure_keeps_date(
    tmp_path: Path, pg_schema: str
) -> None:
    import psycopg

    table = f"{pg_schema}.health_scores"
    project = csv_project(
        tmp_path,
        store={"snapshot_table": {"connection": PG_SOURCE, "table": table}},
    )
    score(project, AS_OF, monitor=False)
    before = pg_rows(pg_schema, "health_scores")
    # The new rows of a2 break this rule, after the old rows were deleted.
    with psycopg.connect(PG_ADMIN, autocommit=True) as connection:
        connection.execute(
            f'ALTER TABLE "{pg_schema}".health_scores ADD CONSTRAINT no_a2 '
            "CHECK (account_id <> 'a2') NOT VALID"
        )
    with pytest.raises(SnapshotTableError) as caught:
        score(project, AS_OF, monitor=False)
    assert "keeps its earlier rows" in str(caught.value)
    assert "no_a2" in str(caught.value)
    assert pg_rows(pg_schema, "health_scores") == before


def test_duckdb_snapshot_table_replaces_date(tmp_path: Path) -> None:
    database = tmp_path / "out" / "scores.duckdb"
    project = csv_project(
        tmp_path / "p",
        store={
            "snapshot_table": {
                "connection": f"duckdb://{database}",
                "table": "health.scores",
            }
        },
    )
    database.parent.mkdir()
    con = duckdb.connect(str(database))
    con.execute("CREATE SCHEMA health")
    con.close()

    score(project, AS_OF, monitor=False)
    first = duckdb_rows(database, "health.scores", AS_OF)
    assert first == expected_scores(project, AS_OF)
    assert len(first) == 3

    score(project, AS_OF, monitor=False)
    assert duckdb_rows(database, "health.scores", AS_OF) == first
    con = duckdb.connect(str(database), read_only=True)
    try:
        assert con.execute("SELECT count(*) FROM health.scores").fetchall() == [(3,)]
    finally:
        con.close()


def test_forget_account_erases_snapshot_table_rows(tmp_path: Path) -> None:
    from healthscore.privacy import account_subject, forget

    database = tmp_path / "scores.duckdb"
    project = csv_project(
        tmp_path / "p",
        store={"snapshot_table": {"connection": f"duckdb://{database}", "table": "s"}},
    )
    earlier = date(2026, 5, 1)
    score(project, earlier, monitor=False)
    score(project, AS_OF, monitor=False)
    ids = {row["account_id"] for row in duckdb_rows(database, "s", AS_OF)}
    assert "a2" in ids

    report = forget(project, account_subject("a2"), author="dpo")

    assert report.snapshot_table_dates == [earlier.isoformat(), AS_OF.isoformat()]
    for day in (earlier, AS_OF):
        rows = duckdb_rows(database, "s", day)
        assert {row["account_id"] for row in rows} == ids - {"a2"}
        assert rows == expected_scores(project, day)


def test_forget_account_deletes_rows_of_dates_gone(tmp_path: Path) -> None:
    from healthscore.privacy import account_subject, forget

    database = tmp_path / "scores.duckdb"
    project = csv_project(
        tmp_path / "p",
        store={"snapshot_table": {"connection": f"duckdb://{database}", "table": "s"}},
    )
    score(project, AS_OF, monitor=False)
    ids = {row["account_id"] for row in duckdb_rows(database, "s", AS_OF)}
    shutil.rmtree(snapshot_store(project).partition_path(AS_OF))

    report = forget(project, account_subject("a2"), author="dpo")

    assert report.snapshot_table_dates == []
    rows = duckdb_rows(database, "s", AS_OF)
    assert {row["account_id"] for row in rows} == ids - {"a2"}


def test_snapshot_table_unreachable_keeps_parquet(tmp_path: Path) -> None:
    port = closed_port()
    connection = f"postgresql://postgres:hunter22@127.0.0.1:{port}/test"
    project = csv_project(
        tmp_path,
        store={"snapshot_table": {"connection": connection, "table": "scores"}},
    )
    with pytest.raises(SnapshotTableError) as caught:
        score(project, AS_OF, monitor=False)
    message = str(caught.value)
    assert f"cannot connect to postgresql://postgres@127.0.0.1:{port}/test" in message
    assert "hunter22" not in message
    assert (
        f"The Parquet snapshot of {AS_OF.isoformat()} is stored and alert rules did "
        "not run; score the date again" in message
    )
    assert snapshot_store(project).exists(AS_OF)


def test_snapshot_table_error_in_cli(tmp_path: Path) -> None:
    project = csv_project(
        tmp_path,
        store={
            "snapshot_table": {
                "connection": f"postgresql://127.0.0.1:{closed_port()}/test",
                "table": "scores",
            }
        },
    )
    result = run_cli("score", "--project", project.root, "--as-of", "2026-06-01")
    assert result.exit_code == 1
    assert "cannot connect to" in result.output
    assert "Traceback" not in result.output


def test_duckdb_table_with_lookup(tmp_path: Path) -> None:
    database = duckdb_file(tmp_path / "warehouse.duckdb", tmp_path)
    con = duckdb.connect(str(database))
    try:
        con.execute(
            "CREATE TABLE crm.accounts_coded AS SELECT * REPLACE ("
            "CASE account_id WHEN 'a1' THEN 'E' WHEN 'a4' THEN 'X' ELSE 'S' END "
            "AS segment) FROM crm.accounts"
        )
    finally:
        con.close()
    root = tmp_path / "p"
    root.mkdir()
    (root / "segments.csv").write_text("code,label\nE,enterprise\nS,smb\n")
    connection = f"duckdb://{database}"
    locations = {
        "accounts": {
            "table": "crm.accounts_coded",
            "connection": connection,
            "lookups": {
                "segment": {"path": "segments.csv", "key": "code", "value": "label"}
            },
        },
        "subscriptions": {"table": "crm.subscriptions", "connection": connection},
        "events": {"table": "crm.events", "connection": connection},
    }
    project = write_project(root, locations)
    engine = open_engine(project)

    segments = engine.con.con.execute(
        "SELECT account_id, segment FROM valid_accounts ORDER BY account_id"
    ).fetchall()
    assert segments == [("a1", "enterprise"), ("a2", "smb")]
    accounts = engine.sources.report(as_of_point(project, AS_OF))[0]
    assert accounts.excluded == {
        "unknown_code:segment": 1,
        "unparseable_value:arr": 1,
    }
    examples = {example.reason: example.row for example in accounts.examples}
    assert examples == {"unknown_code": 4, "unparseable_value": 3}


def test_postgres_snapshot_writers_take_turns(tmp_path: Path, pg_schema: str) -> None:
    import threading

    import psycopg

    table = f"{pg_schema}.health_scores"
    settings = {"connection": PG_SOURCE, "table": table}
    project = csv_project(tmp_path, store={"snapshot_table": settings})
    score(project, AS_OF, monitor=False)
    before = pg_rows(pg_schema, "health_scores")
    scores = snapshot_store(project).read(AS_OF, "scores")

    # Another writer of the same project and date has inserted a row and not
    # committed yet. The run's write must wait for that commit, then replace that
    # row too; without waiting, its delete would miss the row and leave it there.
    with psycopg.connect(PG_ADMIN) as other:
        other.execute(
            f'INSERT INTO "{pg_schema}".health_scores (account_id, as_of, project) '
            "VALUES ('other', %s, %s)",
            [AS_OF, project.config.name],
        )
        failures: list[BaseException] = []

        def write() -> None:
            try:
                write_snapshot_table(
                    project, project.config.store.snapshot_table, AS_OF, scores
                )
            except BaseException as exc:  # reported by the assert below
                failures.append(exc)

        writer = threading.Thread(target=write)
        writer.start()
        with psycopg.connect(PG_ADMIN, autocommit=True) as watcher:
            waiting = 0
            while waiting == 0 and writer.is_alive():
                time.sleep(0.05)  # polls; no assertion depends on the time
                ((waiting,),) = watcher.execute(
                    "SELECT count(*) FROM pg_locks WHERE NOT granted "
                    "AND relation = %s::regclass",
                    [f'"{pg_schema}".health_scores'],
                ).fetchall()
        other.commit()
        writer.join()

    assert failures == []
    assert waiting == 1
    assert pg_rows(pg_schema, "health_scores") == before


def test_snapshot_writer_batch_is_one_transaction(
    tmp_path: Path, pg_schema: str
) -> None:
    import psycopg

    table = f"{pg_schema}.health_scores"
    project = csv_project(
        tmp_path,
        store={"snapshot_table": {"connection": PG_SOURCE, "table": table}},
    )
    earlier = date(2026, 5, 1)
    score(project, earlier, monitor=False)
    score(project, AS_OF, monitor=False)
    before = pg_rows(pg_schema, "health_scores")
    assert {row["as_of"] for row in before} == {earlier, AS_OF}
    changed = snapshot_store(project).read(AS_OF, "scores").assign(score=1.0)
    # The new row of a2 on AS_OF breaks this rule, after both dates were deleted.
    with psycopg.connect(PG_ADMIN, autocommit=True) as connection:
        connection.execute(
            f'ALTER TABLE "{pg_schema}".health_scores ADD CONSTRAINT no_a2 '
            f"CHECK (account_id <> 'a2' OR as_of <> DATE '{AS_OF}') NOT VALID"
        )
    settings = project.config.store.snapshot_table
    assert settings is not None

    with SnapshotTableWriter(project, settings) as writer:
        with pytest.raises(SnapshotTableError) as caught:
            writer.write([(earlier, changed), (AS_OF, changed)])
        after_failure = pg_rows(pg_schema, "health_scores")
        # The writer opens a new connection after the failed write.
        written = writer.write([(earlier, changed)])

    message = str(caught.value)
    assert f"the scores of 2 dates from {earlier} to {AS_OF}" in message
    assert "keeps its earlier rows of those dates" in message
    assert after_failure == before
    assert written == len(changed)
    rows = pg_rows(pg_schema, "health_scores", earlier)
    assert [row["score"] for row in rows] == [1.0] * len(changed)
    assert pg_rows(pg_schema, "health_scores", AS_OF) == [
        row for row in before if row["as_of"] == AS_OF
    ]


def test_snapshot_writer_rejects_repeated_date(tmp_path: Path) -> None:
    database = tmp_path / "scores.duckdb"
    settings = {"connection": f"duckdb://{database}", "table": "scores"}
    project = csv_project(tmp_path / "p", store={"snapshot_table": settings})
    run = score(project, AS_OF, monitor=False)
    config = project.config.store.snapshot_table
    assert config is not None
    with (
        SnapshotTableWriter(project, config) as writer,
        pytest.raises(ValueError, match="is listed twice"),
    ):
        writer.write([(AS_OF, run.result.scores), (AS_OF, run.result.scores)])


# Projects that share one snapshot table


def shared_table_project(
    root: Path, database: Path, name: str, **table: str
) -> Project:
    """A project named `name` that writes table `s` of the DuckDB file `database`."""
    settings = {"connection": f"duckdb://{database}", "table": "s", **table}
    return csv_project(root, name=name, store={"snapshot_table": settings})


def duckdb_table_rows(path: Path, table: str) -> list[tuple[Any, ...]]:
    """(project, as_of, account_id, score) of every row, sorted."""
    con = duckdb.connect(str(path), read_only=True)
    try:
        return con.execute(
            f"SELECT project, as_of, account_id, score FROM {table} "
            "ORDER BY project, as_of, account_id"
        ).fetchall()
    finally:
        con.close()


def test_shared_table_keeps_other_project_rows(tmp_path: Path) -> None:
    database = tmp_path / "scores.duckdb"
    north = shared_table_project(tmp_path / "north", database, "north")
    south = shared_table_project(tmp_path / "south", database, "south")

    score(north, AS_OF, monitor=False)
    score(south, AS_OF, monitor=False)
    both = duckdb_table_rows(database, "s")
    score(north, AS_OF, monitor=False)

    assert [row[0] for row in both] == ["north"] * 3 + ["south"] * 3
    assert duckdb_table_rows(database, "s") == both
    for project in (north, south):
        rows = duckdb_rows(database, "s", AS_OF)
        own = [row for row in rows if row["project"] == project.config.name]
        assert own == expected_scores(project, AS_OF)


def test_shared_table_forget_erases_own_rows(tmp_path: Path) -> None:
    from healthscore.privacy import account_subject, forget

    database = tmp_path / "scores.duckdb"
    north = shared_table_project(tmp_path / "north", database, "north")
    south = shared_table_project(tmp_path / "south", database, "south")
    earlier = date(2026, 5, 1)
    for project in (north, south):
        score(project, earlier, monitor=False)
        score(project, AS_OF, monitor=False)
    # Without north's snapshot of AS_OF, only the delete of the account's rows
    # reaches that date.
    shutil.rmtree(snapshot_store(north).partition_path(AS_OF))

    forget(north, account_subject("a2"), author="dpo")

    rows = duckdb_table_rows(database, "s")
    north_ids = {(day, account) for name, day, account, _ in rows if name == "north"}
    south_ids = {(day, account) for name, day, account, _ in rows if name == "south"}
    assert north_ids == {
        (day, account) for day in (earlier, AS_OF) for account in ("a1", "a4")
    }
    assert south_ids == {
        (day, account) for day in (earlier, AS_OF) for account in ("a1", "a2", "a4")
    }


def test_forget_rerun_deletes_rows_the_table_kept(tmp_path: Path) -> None:
    from healthscore.privacy import account_subject
    from healthscore.privacy.erase import erase_snapshots

    database = tmp_path / "scores.duckdb"
    north = shared_table_project(tmp_path / "north", database, "north")
    earlier = date(2026, 5, 1)
    score(north, earlier, monitor=False)
    score(north, AS_OF, monitor=False)
    # A forget whose table write failed: the snapshots are erased already.
    erase_snapshots(
        snapshot_store(north),
        account_subject("a2"),
        dry_run=False,
        at=datetime.now(UTC),
    )
    runner = CliRunner(env={"COLUMNS": "200", "NO_COLOR": "1"})
    command = ["forget", "--project", str(north.root), "--account", "a2"]

    planned = runner.invoke(app, [*command, "--dry-run"])
    result = runner.invoke(app, [*command, "--author", "dpo", "--yes"])

    assert planned.exit_code == 0, planned.output
    assert "Would erase 2 rows of the account." in planned.stdout
    assert "store.snapshot_table: would delete the account's 2 rows" in planned.stdout
    assert result.exit_code == 0, result.output
    assert "store.snapshot_table: deleted the account's 2 rows" in result.stdout
    accounts = {row[2] for row in duckdb_table_rows(database, "s")}
    assert accounts == {"a1", "a4"}


def test_forget_warns_of_rows_under_other_keys(tmp_path: Path) -> None:
    database = tmp_path / "scores.duckdb"
    before = shared_table_project(tmp_path / "north", database, "north-2025")
    score(before, date(2026, 5, 1), monitor=False)
    # The same folder renamed, without store.snapshot_table.project.
    north = shared_table_project(tmp_path / "north", database, "north")
    score(north, AS_OF, monitor=False)
    south = shared_table_project(tmp_path / "south", database, "south")
    score(south, AS_OF, monitor=False)
    runner = CliRunner(env={"COLUMNS": "200", "NO_COLOR": "1"})

    command = ["forget", "--project", str(north.root), "--account", "a2"]
    result = runner.invoke(app, [*command, "--author", "dpo", "--yes"])

    assert result.exit_code == 0, result.output
    # The date scored under the old name has no rows under "north" to write again.
    assert "store.snapshot_table: wrote again the rows of 1 date, and deleted " in (
        result.stdout
    )
    assert (
        "store.snapshot_table also holds rows of the account under other project "
        "keys, which were left as they are: 'north-2025' (1 row), 'south' (1 row)"
    ) in " ".join(result.stderr.split())
    left = {(row[0], row[2]) for row in duckdb_table_rows(database, "s")}
    assert ("north", "a2") not in left
    assert {("north-2025", "a2"), ("south", "a2")} <= left


def test_snapshot_table_that_is_a_view_is_named(tmp_path: Path) -> None:
    database = tmp_path / "scores.duckdb"
    north = shared_table_project(tmp_path / "north", database, "north")
    score(north, AS_OF, monitor=False)
    con = duckdb.connect(str(database))
    con.execute("CREATE VIEW v AS SELECT * FROM s")
    con.close()
    viewed = shared_table_project(tmp_path / "viewed", database, "viewed", table="v")

    with pytest.raises(SnapshotTableError) as caught:
        score(viewed, AS_OF, monitor=False)

    assert "'v' in " in str(caught.value)
    assert "is a view" in str(caught.value)
    assert "point store.snapshot_table.table to a table" in str(caught.value)
    assert len(duckdb_table_rows(database, "s")) == 3


def test_postgres_snapshot_table_view_is_named(tmp_path: Path, pg_schema: str) -> None:
    import psycopg

    with psycopg.connect(PG_ADMIN, autocommit=True) as connection:
        connection.execute(f"CREATE TABLE {pg_schema}.base (account_id text)")
        connection.execute(
            f"CREATE VIEW {pg_schema}.scores_view AS SELECT * FROM {pg_schema}.base"
        )
    project = csv_project(
        tmp_path,
        store={
            "snapshot_table": {
                "connection": PG_SOURCE,
                "table": f"{pg_schema}.scores_view",
            }
        },
    )

    with pytest.raises(SnapshotTableError, match="is a view"):
        score(project, AS_OF, monitor=False)


def test_snapshot_table_project_setting(tmp_path: Path) -> None:
    database = tmp_path / "scores.duckdb"
    first = shared_table_project(tmp_path / "a", database, "tables", project="crm-eu")
    second = shared_table_project(tmp_path / "b", database, "tables")

    score(first, AS_OF, monitor=False)
    score(second, AS_OF, monitor=False)

    projects = [row[0] for row in duckdb_table_rows(database, "s")]
    assert projects == ["crm-eu"] * 3 + ["tables"] * 3


def test_snapshot_table_project_blank_rejected(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as caught:
        shared_table_project(tmp_path / "p", tmp_path / "s.duckdb", "x", project=" ")
    message = str(caught.value)
    assert "store.snapshot_table.project" in message
    assert "invalid project ' ': it is blank" in message


def legacy_table(database: Path, account: str, as_of: date) -> None:
    """Create table `s` with the columns it had before the project column, and one
    row of `account`."""
    con = duckdb.connect(str(database))
    try:
        columns = ", ".join(
            f"{field.name} {'DATE' if field.name == 'as_of' else 'VARCHAR'}"
            if pa.types.is_string(field.type) or field.name == "as_of"
            else f"{field.name} DOUBLE"
            for field in SNAPSHOT_TABLE_SCHEMA
            if field.name != "project"
        )
        con.execute(f"CREATE TABLE s ({columns})")
        con.execute(
            "INSERT INTO s (account_id, as_of, score) VALUES (?, ?, 50)",
            [account, as_of],
        )
    finally:
        con.close()


def test_legacy_table_gets_project_column(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    database = tmp_path / "scores.duckdb"
    earlier = date(2026, 5, 1)
    legacy_table(database, "old", earlier)
    north = shared_table_project(tmp_path / "north", database, "north")
    south = shared_table_project(tmp_path / "south", database, "south")

    with caplog.at_level(logging.WARNING, logger="healthscore.store.snapshot_tables"):
        score(north, AS_OF, monitor=False)
    score(south, AS_OF, monitor=False)
    score(south, earlier, monitor=False)

    rows = duckdb_table_rows(database, "s")
    assert [(name, day, account) for name, day, account, _ in rows] == [
        ("north", earlier, "old"),
        ("north", AS_OF, "a1"),
        ("north", AS_OF, "a2"),
        ("north", AS_OF, "a4"),
        ("south", earlier, "a1"),
        ("south", earlier, "a2"),
        ("south", earlier, "a4"),
        ("south", AS_OF, "a1"),
        ("south", AS_OF, "a2"),
        ("south", AS_OF, "a4"),
    ]
    (warning,) = [record.getMessage() for record in caplog.records]
    assert "added column project to table 's'" in warning
    assert "assigned its 1 earlier row(s) to project 'north'" in warning


def test_legacy_view_without_project_column(tmp_path: Path) -> None:
    database = tmp_path / "scores.duckdb"
    legacy_table(database, "old", AS_OF)
    con = duckdb.connect(str(database))
    try:
        con.execute("CREATE VIEW v AS SELECT * FROM s")
    finally:
        con.close()
    settings = {"connection": f"duckdb://{database}", "table": "v"}
    project = csv_project(tmp_path / "p", store={"snapshot_table": settings})

    with pytest.raises(SnapshotTableError) as caught:
        score(project, AS_OF, monitor=False)

    # A view gets no column, so the message names the view instead.
    message = str(caught.value)
    assert message.startswith(f"'v' in duckdb://{database} is a view")


def test_postgres_shared_table_keeps_other_project_rows(
    tmp_path: Path, pg_schema: str
) -> None:
    settings = {"connection": PG_SOURCE, "table": f"{pg_schema}.health_scores"}
    north = csv_project(
        tmp_path / "north", name="north", store={"snapshot_table": settings}
    )
    south = csv_project(
        tmp_path / "south", name="south", store={"snapshot_table": settings}
    )

    score(north, AS_OF, monitor=False)
    score(south, AS_OF, monitor=False)
    both = pg_rows(pg_schema, "health_scores")
    score(north, AS_OF, monitor=False)
    after = pg_rows(pg_schema, "health_scores")

    def own(rows: list[dict[str, Any]], name: str) -> list[dict[str, Any]]:
        return sorted(
            (row for row in rows if row["project"] == name),
            key=lambda row: row["account_id"],
        )

    assert len(both) == 6
    assert own(after, "south") == own(both, "south")
    assert own(after, "north") == expected_scores(north, AS_OF)
    assert own(after, "south") == expected_scores(south, AS_OF)


def test_postgres_infinite_times_are_reported(
    tmp_path: Path, pg_schema: str, postgres_server: str
) -> None:
    import psycopg

    # Typed copies of two tables, with PostgreSQL's infinite dates and times.
    with psycopg.connect(PG_ADMIN, autocommit=True) as connection:
        connection.execute(
            f'CREATE TABLE "{pg_schema}".typed_subscriptions AS SELECT account_id, '
            'start::date AS start, "end"::date AS "end", mrr '
            f'FROM "{pg_schema}".subscriptions'
        )
        connection.execute(
            f'UPDATE "{pg_schema}".typed_subscriptions SET "end" = \'infinity\' '
            "WHERE account_id = 'a1'"
        )
        connection.execute(
            f'INSERT INTO "{pg_schema}".typed_subscriptions VALUES '
            "('a2', '-infinity', '2026-12-31', 10), "
            "('a2', '2026-01-01', '-infinity', 10)"
        )
        connection.execute(
            f'INSERT INTO "{pg_schema}".events VALUES '
            "('a2', 'infinity', 'login', 1, 'u3'), "
            "('a2', '-infinity', 'login', 1, 'u3')"
        )
    locations = {
        name: {"table": f"{pg_schema}.{name}", "connection": PG_SOURCE}
        for name in ("accounts", "events")
    }
    locations["subscriptions"] = {
        "table": f"{pg_schema}.typed_subscriptions",
        "connection": PG_SOURCE,
    }
    project = write_project(tmp_path, locations)

    run = score(project, AS_OF, monitor=False)

    reports = {report.source: report for report in run.source_reports}
    events = reports["events"]
    assert events.excluded["unparseable_value:timestamp"] == 2
    assert "missing_value:timestamp" not in events.excluded
    event_values = sorted(
        example.value
        for example in events.examples
        if example.reason == "unparseable_value" and example.column == "timestamp"
    )
    assert event_values == ["-infinity", "infinity"]
    subscriptions = reports["subscriptions"]
    assert subscriptions.excluded["unparseable_value:start"] == 1
    assert subscriptions.excluded["unparseable_value:end"] == 1
    assert "missing_value:start" not in subscriptions.excluded
    values_by_column = {
        example.column: example.value
        for example in subscriptions.examples
        if example.reason == "unparseable_value"
    }
    assert values_by_column == {"start": "-infinity", "end": "-infinity"}
    # a1's subscription ends at `infinity`, so it is still running.
    assert subscriptions.rows_used == subscriptions.rows_read - 3
    assert "a1" in set(run.result.scores["account_id"])
