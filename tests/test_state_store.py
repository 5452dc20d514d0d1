"""Operational store: overrides and audit log on SQLite and PostgreSQL."""

from __future__ import annotations

import socket
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import create_engine, insert, inspect
from sqlalchemy.exc import IntegrityError

import healthscore.store.database as database
import healthscore.store.state as state_module
from healthscore.config.overrides import Override
from healthscore.store import (
    OverrideNotFoundError,
    StateStore,
    StateStoreError,
)
from healthscore.store.database import MIGRATIONS_FOLDER, resolve_url
from healthscore.store.schema import VERSION_TABLE, metadata, overrides

NOW = datetime(2026, 6, 1, 9, 30, tzinfo=UTC)
JUNE_1 = date(2026, 6, 1)
JUNE_30 = date(2026, 6, 30)


# Fixtures


@pytest.fixture
def store(store_url, tmp_path) -> Iterator[StateStore]:
    with StateStore.open(store_url, tmp_path) as opened:
        yield opened


def add(store: StateStore, account_id: str = "acme", **fields) -> int:
    values = {
        "score": 80.0,
        "reason": "renewal signed last week",
        "author": "ana@example.com",
        "expires_on": JUNE_30,
        "now": NOW,
    }
    values.update(fields)
    return store.add_override(account_id, **values)


# Opening and schema


def test_open_resolves_sqlite_path_against_root(tmp_path):
    with StateStore.open("sqlite:///state/state.db", tmp_path) as store:
        assert store.engine.url.database == str(tmp_path / "state" / "state.db")
    assert (tmp_path / "state" / "state.db").is_file()


def test_open_enables_wal_and_busy_timeout(tmp_path):
    with (
        StateStore.open("sqlite:///state.db", tmp_path) as store,
        store.engine.connect() as connection,
    ):
        journal_mode = connection.exec_driver_sql("PRAGMA journal_mode").scalar()
        busy_timeout = connection.exec_driver_sql("PRAGMA busy_timeout").scalar()

    assert journal_mode == "wal"
    assert busy_timeout == 30_000


def head_revision() -> str:
    """The newest revision of the shipped migrations, which form one chain."""
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_FOLDER))
    heads = ScriptDirectory.from_config(config).get_heads()
    assert len(heads) == 1, f"migrations have several heads: {heads}"
    return heads[0]


def test_migrated_schema_matches_metadata(store):
    with store.engine.connect() as connection:
        context = MigrationContext.configure(
            connection, opts={"version_table": VERSION_TABLE}
        )
        differences = compare_metadata(context, metadata)
        revision = context.get_current_revision()

    assert differences == []
    assert revision == head_revision()


def test_reopen_keeps_data_and_revision(store_url, tmp_path):
    with StateStore.open(store_url, tmp_path) as first:
        override_id = add(first)

    with StateStore.open(store_url, tmp_path) as second:
        listed = second.active_overrides(JUNE_1)

    assert [item.id for item in listed] == [override_id]


def test_score_range_checked_by_database(store):
    row = {
        "account_id": "acme",
        "score": 150.0,
        "reason": "typo",
        "author": "ana",
        "created_at": NOW,
        "expires_on": JUNE_30,
    }
    with (
        pytest.raises(IntegrityError, match="ck_overrides_score_range"),
        store.engine.begin() as connection,
    ):
        connection.execute(insert(overrides).values(**row))


def test_migrations_downgrade_and_upgrade_again(tmp_path):
    StateStore.open("sqlite:///state.db", tmp_path).close()
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_FOLDER))
    config.set_main_option("sqlalchemy.url", f"sqlite:///{tmp_path / 'state.db'}")

    command.downgrade(config, "base")
    engine = create_engine(f"sqlite:///{tmp_path / 'state.db'}")
    tables_after_downgrade = set(inspect(engine).get_table_names())
    engine.dispose()
    with StateStore.open("sqlite:///state.db", tmp_path) as store:
        tables_after_upgrade = set(inspect(store.engine).get_table_names())

    assert tables_after_downgrade == {VERSION_TABLE}
    assert tables_after_upgrade == {VERSION_TABLE, *metadata.tables}
    assert {"overrides", "audit"} <= tables_after_upgrade


def test_in_memory_sqlite_keeps_data(tmp_path):
    with StateStore.open("sqlite://", tmp_path) as store:
        override_id = add(store)
        assert [item.id for item in store.active_overrides(JUNE_1)] == [override_id]


class BusyCursor:
    """A cursor whose first `busy_calls` statements fail with SQLITE_BUSY."""

    def __init__(self, busy_calls: int, errorcode: int = sqlite3.SQLITE_BUSY):
        self.busy_calls = busy_calls
        self.errorcode = errorcode
        self.statements: list[str] = []

    def execute(self, statement: str) -> None:
        self.statements.append(statement)
        if len(self.statements) <= self.busy_calls:
            error = sqlite3.OperationalError("database is locked")
            error.sqlite_errorcode = self.errorcode
            raise error


def test_wal_switch_retried_while_busy():
    # SQLite cannot be made to return SQLITE_BUSY here on demand: it happened only
    # when several processes opened a new file at once.
    cursor = BusyCursor(busy_calls=2)

    database._enable_wal(cursor)

    assert cursor.statements == ["PRAGMA journal_mode = WAL"] * 3


def test_wal_switch_raises_other_errors():
    cursor = BusyCursor(busy_calls=1, errorcode=sqlite3.SQLITE_IOERR)

    with pytest.raises(sqlite3.OperationalError, match="database is locked"):
        database._enable_wal(cursor)
    assert len(cursor.statements) == 1


# URLs and connection errors


def test_resolve_url_variants(tmp_path):
    absolute = tmp_path / "elsewhere" / "state.db"

    relative = resolve_url("sqlite:///nested/dir/state.db", tmp_path)
    fixed = resolve_url(f"sqlite:///{absolute}", tmp_path / "project")
    postgres = resolve_url("postgresql://ana@db.internal/health", tmp_path)

    assert relative.database == str(tmp_path / "nested" / "dir" / "state.db")
    assert (tmp_path / "nested" / "dir").is_dir()
    assert fixed.database == str(absolute)
    assert postgres.drivername == "postgresql+psycopg"


@pytest.mark.parametrize(
    ("url", "message"),
    [
        (
            "not a url",
            "invalid state store URL 'not a url'; fix store.state in healthscore.yml, "
            "for example sqlite:///path/to/state.db or "
            "postgresql\\+psycopg://user@host:5432/database",
        ),
        (
            "mysql://root:secret@127.0.0.1/health",
            r"unsupported state store database 'mysql' in "
            r"mysql://root:\*\*\*@127.0.0.1/health; use sqlite or postgresql",
        ),
    ],
)
def test_open_rejects_bad_url(tmp_path, url, message):
    with pytest.raises(ValueError, match=message):
        StateStore.open(url, tmp_path)


def test_open_unreachable_postgres_hides_password(tmp_path):
    pytest.importorskip("psycopg", reason="requires: psycopg 3")
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        closed_port = probe.getsockname()[1]
    url = f"postgresql+psycopg://ana:secret@127.0.0.1:{closed_port}/health"

    with pytest.raises(StateStoreError) as raised:
        StateStore.open(url, tmp_path)

    message = str(raised.value)
    assert message.startswith(
        f"cannot open the state store at "
        f"postgresql+psycopg://ana:***@127.0.0.1:{closed_port}/health: "
    )
    assert message.endswith(
        "; check store.state in healthscore.yml and that the database is reachable"
    )
    assert "secret" not in message


# Adding and reading overrides


def test_add_override_round_trip(store):
    override_id = add(store, measure="weekly_logins", score=35)

    [stored] = store.active_overrides(JUNE_1)

    assert stored == Override(
        id=override_id,
        account_id="acme",
        measure="weekly_logins",
        score=35.0,
        reason="renewal signed last week",
        author="ana@example.com",
        created_at=NOW,
        expires_on=JUNE_30,
    )
    assert stored.created_at.tzinfo == UTC


def test_created_at_stored_in_utc(store):
    berlin_midnight = datetime(2026, 6, 1, 0, 30, tzinfo=ZoneInfo("Europe/Berlin"))

    add(store, now=berlin_midnight, expires_on=JUNE_1)
    [stored] = store.active_overrides(JUNE_1)

    assert stored.created_at == datetime(2026, 5, 31, 22, 30, tzinfo=UTC)
    assert stored.created_at.utcoffset() == timedelta(0)


def test_active_through_expiry_day(store):
    whole = add(store, expires_on=JUNE_30)
    measure = add(store, measure="tickets", expires_on=JUNE_1)

    def active_ids(as_of: date) -> list[int]:
        return [item.id for item in store.active_overrides(as_of)]

    assert active_ids(date(2026, 1, 1)) == [whole, measure]
    assert active_ids(JUNE_1) == [whole, measure]
    assert active_ids(date(2026, 6, 2)) == [whole]
    assert active_ids(JUNE_30) == [whole]
    assert active_ids(date(2026, 7, 1)) == []


def test_overrides_ordered_by_creation(store):
    later = add(store, now=NOW + timedelta(hours=1))
    earlier = add(store, now=NOW)

    assert [item.id for item in store.active_overrides(JUNE_1)] == [earlier, later]


def test_list_overrides_filters(store):
    expired = add(
        store, now=datetime(2026, 1, 1, tzinfo=UTC), expires_on=date(2026, 2, 1)
    )
    current = add(store, now=datetime.now(UTC), expires_on=date.max)
    other = add(store, "globex", now=datetime.now(UTC), expires_on=date.max)

    def listed_ids(**options) -> list[int]:
        return [item.id for item in store.list_overrides(**options)]

    assert listed_ids() == [current, other]
    assert listed_ids(include_expired=True) == [expired, current, other]
    assert listed_ids(as_of=date(2026, 1, 15)) == [expired, current, other]
    assert listed_ids(account_id="globex") == [other]


# Removing overrides and the audit log


def test_remove_override_hides_it_and_audits(store):
    kept = add(store, author="ana")
    removed = add(store, measure="nps", score=10, author="ben")

    store.remove_override(removed, "carla", now=NOW + timedelta(days=1))

    assert [item.id for item in store.active_overrides(JUNE_1)] == [kept]
    assert [item.id for item in store.list_overrides(include_expired=True)] == [kept]
    entries = store.audit_entries()
    assert [(e.action, e.actor) for e in entries] == [
        ("add", "ana"),
        ("add", "ben"),
        ("remove", "carla"),
    ]
    assert len(store.audit_entries("override")) == 3
    assert store.audit_entries("alert") == []
    assert entries[2].at == NOW + timedelta(days=1)
    assert entries[2].subject_kind == "override"
    assert entries[2].count == 1
    assert entries[2].detail == {
        "override_id": removed,
        "account_id": "acme",
        "measure": "nps",
        "score": 10.0,
        "expires_on": "2026-06-30",
        "reason": "renewal signed last week",
    }


def test_remove_twice_raises(store):
    override_id = add(store)
    store.remove_override(override_id, "carla", now=NOW)

    with pytest.raises(
        ValueError,
        match=f"override {override_id} was already removed at "
        r"2026-06-01T09:30:00\+00:00",
    ):
        store.remove_override(override_id, "carla")
    assert len(store.audit_entries()) == 2


def test_remove_unknown_id_raises(store):
    with pytest.raises(
        OverrideNotFoundError,
        match=r"override 999 not found in .*; list the overrides to see their ids",
    ):
        store.remove_override(999, "carla")


def test_remove_requires_actor(store):
    override_id = add(store)

    with pytest.raises(ValueError, match="actor must not be empty, got ' '"):
        store.remove_override(override_id, " ")


def test_failed_audit_write_rolls_back_override(store, monkeypatch):
    def fail(*args, **kwargs):
        raise RuntimeError("audit write failed")

    monkeypatch.setattr(state_module, "record_audit", fail)

    with pytest.raises(RuntimeError, match="audit write failed"):
        add(store)

    assert store.list_overrides(include_expired=True) == []


# Validation


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"score": 100.5}, "score must be a number from 0 to 100, got 100.5"),
        ({"score": -1}, "score must be a number from 0 to 100, got -1"),
        ({"score": float("nan")}, "score must be a number from 0 to 100, got nan"),
        ({"score": True}, "score must be a number from 0 to 100, got True"),
        ({"score": "80"}, "score must be a number from 0 to 100, got '80'"),
        (
            {"reason": ""},
            "reason must not be empty, got ''; say why the computed score is wrong",
        ),
        (
            {"author": "  "},
            "author must not be empty, got '  '; give the name of the person "
            "setting it",
        ),
        ({"account_id": ""}, "account_id must not be empty, got ''"),
        ({"measure": ""}, "measure must not be empty, got ''; give a measure name"),
        (
            {"expires_on": date(2026, 5, 31)},
            "expires_on 2026-05-31 is in the past \\(today is 2026-06-01\\); choose "
            "today or a later date",
        ),
        (
            {"expires_on": datetime(2026, 7, 1, tzinfo=UTC)},
            "expires_on must be a datetime.date, got datetime.datetime",
        ),
        (
            {"now": datetime(2026, 6, 1, 9, 30)},
            "now must be timezone-aware, got datetime.datetime\\(2026, 6, 1, 9, 30\\)",
        ),
    ],
)
def test_add_override_rejects_invalid_fields(store, fields, message):
    values = {"account_id": "acme", **fields}
    account_id = values.pop("account_id")

    with pytest.raises(ValueError, match=message):
        add(store, account_id, **values)

    assert store.list_overrides(include_expired=True) == []
    assert store.audit_entries() == []


def test_expiry_checked_in_callers_time_zone(store):
    # 00:30 on June 1 in Berlin is still May 31 in UTC.
    berlin = datetime(2026, 6, 1, 0, 30, tzinfo=ZoneInfo("Europe/Berlin"))
    override_id = add(store, now=berlin, expires_on=JUNE_1)

    with pytest.raises(ValueError, match="today is 2026-06-01"):
        add(store, now=berlin, expires_on=date(2026, 5, 31))
    assert [item.id for item in store.active_overrides(JUNE_1)] == [override_id]


# Two processes at once

CONCURRENT_WRITER = """
import sys
import time
from datetime import date
from pathlib import Path

from healthscore.store import StateStore

root, writer = Path(sys.argv[1]), sys.argv[2]
(root / f"ready-{writer}").touch()
while not (root / "go").exists():
    time.sleep(0.001)
print(time.time())
with StateStore.open("sqlite:///state.db", root) as store:
    for number in range(40):
        override_id = store.add_override(
            f"{writer}-{number}",
            score=50,
            reason="concurrency check",
            author=writer,
            expires_on=date.max,
        )
        store.active_overrides(date(2026, 6, 1))
        if number % 4 == 0:
            store.remove_override(override_id, writer)
print(time.time())
"""


def test_two_processes_write_same_sqlite_file(tmp_path):
    names = ("cli", "service")
    writers = [start_writer(tmp_path, name) for name in names]
    wait_until_ready(tmp_path, names, writers)
    (tmp_path / "go").touch()
    outputs = [writer.communicate(timeout=120) for writer in writers]

    for writer, (_, stderr) in zip(writers, outputs, strict=True):
        assert writer.returncode == 0, stderr
    (cli_start, cli_end), (service_start, service_end) = [
        [float(line) for line in stdout.split()] for stdout, _ in outputs
    ]
    with StateStore.open("sqlite:///state.db", tmp_path) as store:
        listed = store.list_overrides(include_expired=True)
        entries = store.audit_entries()
    added = [entry.detail["override_id"] for entry in entries if entry.action == "add"]
    assert len(listed) == 60
    assert {item.author for item in listed} == set(names)
    assert len(entries) == 100
    assert sorted(added) == list(range(1, 81))
    # Each process was opening or writing while the other one was.
    assert cli_start < service_end
    assert service_start < cli_end


def start_writer(root: Path, name: str) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-c", CONCURRENT_WRITER, str(root), name],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def wait_until_ready(root: Path, names, writers) -> None:
    """Poll until every writer has started and waits for the go file."""
    deadline = time.monotonic() + 60
    while not all((root / f"ready-{name}").exists() for name in names):
        for writer in writers:
            if writer.poll() is not None:
                pytest.fail(f"writer exited early: {writer.communicate()[1]}")
        if time.monotonic() > deadline:
            pytest.fail("writers not ready after 60 s")
        time.sleep(0.005)


def test_bad_port_names_setting_and_masks_password(tmp_path):
    url = "postgresql+psycopg://postgres:s3cr3tPW@127.0.0.1:bad/test"

    with pytest.raises(ValueError) as caught:
        StateStore.open(url, tmp_path)

    message = str(caught.value)
    masked = "postgresql+psycopg://postgres:***@127.0.0.1:bad/test"
    assert message.startswith(
        f"invalid state store URL '{masked}' (the port is not a number); fix "
        "store.state in healthscore.yml"
    )
    assert "s3cr3tPW" not in message
