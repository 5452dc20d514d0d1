"""Connection URLs with `${NAME}` variables whose values hold URL delimiters.

A password such as `p@ss/w:rd#x?y%z+1` must reach the database as written,
wherever the URL puts it, and the host must stay the host. The server at
127.0.0.1:5432 trusts every local connection and ignores passwords, so the
checks are on the parsed URL; the PostgreSQL tests show that the host, the
database and the user name reach the server.
"""

from __future__ import annotations

from datetime import date
from pathlib import Path
from urllib.parse import parse_qs, unquote, urlsplit

import pytest

from healthscore.config.databases import parse_connection
from healthscore.pipeline import open_engine, score
from healthscore.sources import SourceError
from healthscore.store.snapshot_tables import SnapshotTableError

# `pseudonymization_key` sets the key of the projects' pseudonymized columns.
from test_table_sources import (  # noqa: F401
    PG_ADMIN,
    closed_port,
    csv_project,
    pg_rows,
    pseudonymization_key,
)

PASSWORD = "p@ss/w:rd#x?y%z+1"
USER = "admin@server"


@pytest.fixture
def secrets(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HEALTHSCORE_TEST_PW", PASSWORD)
    monkeypatch.setenv("HEALTHSCORE_TEST_USER", USER)


@pytest.mark.parametrize(
    "connection",
    [
        "postgresql://postgres:${HEALTHSCORE_TEST_PW}@127.0.0.1/test",
        "postgresql://postgres:${HEALTHSCORE_TEST_PW}@127.0.0.1:5432/test",
        "postgresql://postgres:${HEALTHSCORE_TEST_PW:-a/b@c}@127.0.0.1:5432/test",
        "postgresql://postgres:${UNSET_HEALTHSCORE_PW:-p@ss/w:rd#x?y%z+1}"
        "@127.0.0.1:5432/test",
    ],
)
def test_password_in_user_part(tmp_path: Path, secrets: None, connection: str) -> None:
    database = parse_connection(csv_project(tmp_path), connection)
    parts = urlsplit(database.url)
    assert parts.hostname == "127.0.0.1"
    assert parts.path == "/test"
    assert parts.username == "postgres"
    assert parts.password is not None
    assert unquote(parts.password) == PASSWORD
    assert database.credentials() == {"user": "postgres", "password": PASSWORD}
    assert database.display.startswith("postgresql://postgres@127.0.0.1")
    assert database.redact(f"failed for {PASSWORD}") == "failed for ***"


def test_password_in_query(tmp_path: Path, secrets: None) -> None:
    connection = (
        "postgresql://postgres@127.0.0.1/test?sslmode=disable"
        "&password=${HEALTHSCORE_TEST_PW}&application_name=scores"
    )
    database = parse_connection(csv_project(tmp_path), connection)
    parts = urlsplit(database.url)
    assert parts.hostname == "127.0.0.1"
    assert parts.fragment == ""
    assert parse_qs(parts.query) == {
        "sslmode": ["disable"],
        "password": [PASSWORD],
        "application_name": ["scores"],
    }
    assert database.display == "postgresql://postgres@127.0.0.1/test"
    assert database.redact(f"failed for {PASSWORD}") == "failed for ***"


def test_user_name_with_at_sign(tmp_path: Path, secrets: None) -> None:
    connection = (
        "postgresql://${HEALTHSCORE_TEST_USER}:${HEALTHSCORE_TEST_PW}@127.0.0.1/test"
    )
    database = parse_connection(csv_project(tmp_path), connection)
    parts = urlsplit(database.url)
    assert parts.hostname == "127.0.0.1"
    assert database.credentials() == {"user": USER, "password": PASSWORD}


def test_plain_values_unchanged(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HEALTHSCORE_TEST_HOST", "127.0.0.1")
    connection = (
        "postgresql://postgres@${HEALTHSCORE_TEST_HOST}:5432/test"
        "?options=-csearch_path%3Dscores"
    )
    database = parse_connection(csv_project(tmp_path), connection)
    assert database.url == (
        "postgresql://postgres@127.0.0.1:5432/test?options=-csearch_path%3Dscores"
    )
    assert database.credentials() == {"user": "postgres"}


def test_snapshot_table_with_delimiter_password(
    tmp_path: Path, secrets: None, postgres_schema: str
) -> None:
    connection = "postgresql://postgres:${HEALTHSCORE_TEST_PW}@127.0.0.1:5432/test"
    settings = {"connection": connection, "table": f"{postgres_schema}.health_scores"}
    project = csv_project(tmp_path, store={"snapshot_table": settings})
    run = score(project, date(2026, 6, 1), monitor=False)
    assert run.snapshot_table is not None
    assert run.snapshot_table.rows == 3
    assert len(pg_rows(postgres_schema, "health_scores")) == 3


def test_user_name_reaches_server(
    tmp_path: Path, secrets: None, postgres_schema: str
) -> None:
    # No role of that name exists, so the server's error shows the name it got.
    connection = (
        "postgresql://${HEALTHSCORE_TEST_USER}:${HEALTHSCORE_TEST_PW}"
        "@127.0.0.1:5432/test"
    )
    settings = {"connection": connection, "table": f"{postgres_schema}.health_scores"}
    project = csv_project(tmp_path, store={"snapshot_table": settings})
    with pytest.raises(SnapshotTableError) as caught:
        score(project, date(2026, 6, 1), monitor=False)
    message = str(caught.value)
    assert f'role "{USER}" does not exist' in message
    assert PASSWORD not in message


def test_query_password_masked_in_errors(tmp_path: Path, secrets: None) -> None:
    connection = (
        f"postgresql://postgres@127.0.0.1:{closed_port()}/test"
        "?password=${HEALTHSCORE_TEST_PW}"
    )
    settings = {"connection": connection, "table": "health_scores"}
    project = csv_project(tmp_path, store={"snapshot_table": settings})
    with pytest.raises(SnapshotTableError) as caught:
        score(project, date(2026, 6, 1), monitor=False)
    message = str(caught.value)
    assert "cannot connect to postgresql://postgres@127.0.0.1" in message
    assert PASSWORD not in message
    assert "p%40ss" not in message


def test_source_user_name_reaches_server(
    tmp_path: Path, secrets: None, postgres_schema: str
) -> None:
    connection = (
        "postgresql://${HEALTHSCORE_TEST_USER}:${HEALTHSCORE_TEST_PW}"
        "@127.0.0.1:5432/test"
    )
    project = csv_project(tmp_path)
    events = project.config.sources["events"]
    events.path = None
    events.table = f"{postgres_schema}.events"
    events.connection = connection

    with pytest.raises(SourceError) as caught:
        open_engine(project)

    message = str(caught.value)
    assert f'role "{USER}" does not exist' in message
    assert PASSWORD not in message
