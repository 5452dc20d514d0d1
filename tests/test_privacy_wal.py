"""Erasure from a SQLite store that a service keeps open in WAL mode.

The tests read the raw bytes of `state.db` and `state.db-wal`, because an erased
row is only gone when no file on disk still contains its text.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Connection, Engine, event, insert, select

from healthscore.config import Project
from healthscore.privacy import account_subject, forget, person_subject
from healthscore.privacy import erase as erase_module
from healthscore.privacy.erase import checkpoint_project_wal
from healthscore.store import StateStore
from healthscore.store.tables_tasks import notes
from project_factory import minimal_config, write_project
from test_privacy import run_cli

ACCOUNT = "acme-x1"
KEPT_ACCOUNT = "globex-x2"
# Unique texts: neither occurs anywhere else in the project's files.
ACCOUNT_NOTE = "renewal call 7f3a91c2 went badly"
PERSON = "zoe-5be0d417@example.com"
PERSON_NOTE = f"Call with {PERSON} about the renewal"
ACCOUNTS = f"""account_id,name,owner
{ACCOUNT},Acme,olivia@example.com
{KEPT_ACCOUNT},Globex,peter@example.com
"""


@pytest.fixture
def project(tmp_path: Path) -> Project:
    files = {"accounts.csv": ACCOUNTS, "events.csv": "account_id,timestamp\n"}
    return write_project(tmp_path / "project", minimal_config(), files)


@pytest.fixture(autouse=True)
def secure_delete_off() -> Iterator[None]:
    """Open every SQLite connection with secure_delete off, the upstream default.

    Some SQLite builds (Debian's, for one) turn it on by default, which would hide
    an erasure that leaves deleted text in the free space of a page.
    """

    def turn_off(dbapi_connection: Any, _record: Any) -> None:
        if type(dbapi_connection).__module__ == "sqlite3":
            dbapi_connection.execute("PRAGMA secure_delete = OFF")

    event.listen(Engine, "connect", turn_off)
    yield
    event.remove(Engine, "connect", turn_off)


@pytest.fixture
def service(project: Project) -> Iterator[Connection]:
    """An open connection to the store, like the one `healthscore serve` keeps."""
    state = StateStore.open(project.config.store.state, project.root)
    with state, state.engine.connect() as connection:
        yield connection


def state_file(project: Project) -> Path:
    return project.root / ".healthscore" / "state.db"


def wal_file(project: Project) -> Path:
    return project.root / ".healthscore" / "state.db-wal"


def on_disk(project: Project, text: str) -> dict[str, bool]:
    """Tell whether `text` occurs in the bytes of the database file and its log."""
    found = {}
    for path in (state_file(project), wal_file(project)):
        data = path.read_bytes() if path.exists() else b""
        found[path.name] = text.encode() in data
    return found


def add_note(connection: Connection, account: str, text: str) -> None:
    connection.execute(
        insert(notes).values(
            account_id=account,
            author="ana",
            noted_on=date(2026, 6, 1),
            text=text,
            created_at=datetime(2026, 6, 1, 12, tzinfo=UTC),
        )
    )
    connection.commit()


def note_texts(connection: Connection) -> list[str]:
    texts = list(
        connection.execute(select(notes.c.text).order_by(notes.c.id)).scalars()
    )
    connection.rollback()
    return texts


def note_texts_in_transaction(connection: Connection) -> list[str]:
    """Read the notes and keep the read transaction open."""
    return list(connection.execute(select(notes.c.text)).scalars())


def test_service_connection_uses_wal(project, service):
    mode = service.exec_driver_sql("PRAGMA journal_mode").scalar_one()
    service.rollback()
    add_note(service, ACCOUNT, ACCOUNT_NOTE)

    assert mode == "wal"
    # The note is in the log only, which is what the erasure must clean up.
    assert on_disk(project, ACCOUNT_NOTE) == {"state.db": False, "state.db-wal": True}


def test_forget_account_leaves_no_text(project, service):
    add_note(service, ACCOUNT, ACCOUNT_NOTE)
    add_note(service, KEPT_ACCOUNT, "kept note")

    report = forget(project, account_subject(ACCOUNT), author="dpo")

    assert report.state_rows == {"notes": 1}
    assert report.uncheckpointed_wal is None
    assert on_disk(project, ACCOUNT_NOTE) == {"state.db": False, "state.db-wal": False}
    assert note_texts(service) == ["kept note"]


def test_forget_person_leaves_no_text(project, service):
    add_note(service, KEPT_ACCOUNT, PERSON_NOTE)

    report = forget(project, person_subject(project, PERSON), author="dpo")

    assert report.state_rows == {"notes": 1}
    assert report.uncheckpointed_wal is None
    assert on_disk(project, PERSON) == {"state.db": False, "state.db-wal": False}
    assert note_texts(service) == ["Call with [erased] about the renewal"]


def test_reader_blocks_checkpoint_reported(project, service, monkeypatch):
    monkeypatch.setattr(erase_module, "CHECKPOINT_TIMEOUT_MS", 50)
    add_note(service, ACCOUNT, ACCOUNT_NOTE)
    # A request in progress: a read transaction on a snapshot from before the erasure.
    assert note_texts_in_transaction(service) == [ACCOUNT_NOTE]

    report = forget(project, account_subject(ACCOUNT), author="dpo")

    assert report.state_rows == {"notes": 1}
    assert report.uncheckpointed_wal == str(wal_file(project))
    # The warning is real: the log still contains the note's page from the insert.
    assert on_disk(project, ACCOUNT_NOTE)["state.db-wal"] is True
    service.rollback()
    assert checkpoint_project_wal(project) is None
    assert on_disk(project, ACCOUNT_NOTE) == {"state.db": False, "state.db-wal": False}


def test_cli_forget_warns_and_rerun_truncates(project, service, monkeypatch):
    monkeypatch.setattr(erase_module, "CHECKPOINT_TIMEOUT_MS", 50)
    add_note(service, ACCOUNT, ACCOUNT_NOTE)
    note_texts_in_transaction(service)
    forget_args = ("forget", "--account", ACCOUNT, "--author", "dpo", "--yes")

    blocked = run_cli(*forget_args, "--project", project.root)
    service.rollback()
    rerun = run_cli(*forget_args, "--project", project.root)

    assert blocked.exit_code == 2, blocked.output
    assert "Erased 1 row of the account." in blocked.output
    wal = str(wal_file(project))
    database = wal.removesuffix("-wal")
    warning = f"warning: {database} and its write-ahead log {wal} may still hold"
    assert warning in " ".join(blocked.output.split())
    assert "stop `healthscore serve`" in blocked.output
    assert rerun.exit_code == 0, rerun.output
    assert "Found no rows of the account" in rerun.output
    assert "warning" not in rerun.output
    assert on_disk(project, ACCOUNT_NOTE) == {"state.db": False, "state.db-wal": False}


def test_cli_forget_json_names_no_log(project, service):
    add_note(service, ACCOUNT, ACCOUNT_NOTE)

    result = run_cli(
        "forget", "--account", ACCOUNT, "--author", "dpo", "--yes", "--json",
        "--project", project.root,
    )  # fmt: skip

    assert result.exit_code == 0, result.output
    assert '"uncheckpointed_wal": null' in result.output
    assert on_disk(project, ACCOUNT_NOTE) == {"state.db": False, "state.db-wal": False}


def test_forget_note_on_any_store(tmp_path, store_url):
    config = minimal_config(store={"state": store_url})
    files = {"accounts.csv": ACCOUNTS, "events.csv": "account_id,timestamp\n"}
    project = write_project(tmp_path / "project", config, files)
    state = StateStore.open(project.config.store.state, project.root)
    with state, state.engine.connect() as connection:
        add_note(connection, ACCOUNT, ACCOUNT_NOTE)

    report = forget(project, account_subject(ACCOUNT), author="dpo")

    state = StateStore.open(project.config.store.state, project.root)
    with state, state.engine.connect() as connection:
        remaining = note_texts(connection)
    assert report.state_rows == {"notes": 1}
    assert report.uncheckpointed_wal is None
    assert remaining == []


def test_cli_rerun_still_blocked_exits_2(project, service, monkeypatch):
    monkeypatch.setattr(erase_module, "CHECKPOINT_TIMEOUT_MS", 50)
    add_note(service, ACCOUNT, ACCOUNT_NOTE)
    note_texts_in_transaction(service)
    forget_args = ("forget", "--account", ACCOUNT, "--author", "dpo", "--yes")

    first = run_cli(*forget_args, "--project", project.root)
    # The reader's transaction is still open, so the rerun cannot truncate either.
    rerun = run_cli(*forget_args, "--project", project.root, "--json")
    service.rollback()

    assert first.exit_code == 2, first.output
    assert rerun.exit_code == 2, rerun.output
    assert f'"uncheckpointed_wal": "{wal_file(project)}"' in rerun.output
