"""When a scoring run opens the operational store to read the overrides."""

from __future__ import annotations

import sqlite3
import threading
from datetime import date, timedelta
from pathlib import Path

import pytest
from alembic import command
from alembic.config import Config
from alembic.script import ScriptDirectory
from sqlalchemy import inspect

from healthscore.config import Project
from healthscore.pipeline import ScoringRun, score
from healthscore.store.database import MIGRATIONS_FOLDER, SCHEMA_HEAD, stored_revision
from healthscore.store.state import StateStore
from project_factory import ACCOUNTS_CSV, minimal_config, write_project

EVENTS = """account_id,timestamp
a1,2024-03-20 10:00:00
a1,2024-03-21 10:00:00
a1,2024-03-22 10:00:00
a2,2024-03-25 10:00:00
"""
AS_OF = date(2024, 4, 1)
FILES = {"accounts.csv": ACCOUNTS_CSV, "events.csv": EVENTS}


def build(root: Path, state: str | None = None) -> Project:
    config = minimal_config()
    if state is not None:
        config["store"] = {"state": state}
    return write_project(root, config, dict(FILES))


def state_file(project: Project) -> Path:
    return project.root / ".healthscore" / "state.db"


def add_override(project: Project, account_id: str, value: float) -> None:
    with StateStore.open(project.config.store.state, project.root) as state:
        state.add_override(
            account_id=account_id,
            score=value,
            reason="renewal signed for three years",
            author="alice",
            expires_on=date.today() + timedelta(days=30),
        )


def test_run_without_store_creates_no_database(tmp_path: Path) -> None:
    project = build(tmp_path / "p")

    run = score(project, AS_OF, store=False)

    assert not state_file(project).exists()
    scores = run.result.scores.set_index("account_id")["score"]
    # events_28d on a 0-10 bounds scale: 3 events -> 30, 1 -> 10, 0 -> 0.
    assert scores.to_dict() == {"a1": 30.0, "a2": 10.0, "a3": 0.0}


def test_run_without_store_applies_overrides(tmp_path: Path) -> None:
    project = build(tmp_path / "p")
    add_override(project, "a3", 75)

    run = score(project, AS_OF, store=False)

    scores = run.result.scores.set_index("account_id")
    assert scores.loc["a3", "score"] == 75
    assert scores.loc["a3", "computed_score"] == 0
    assert scores.loc["a3", "override_author"] == "alice"
    assert scores.loc["a1", "score"] == 30


def test_run_with_state_elsewhere_applies_overrides(tmp_path: Path) -> None:
    state = tmp_path / "shared" / "state.db"
    project = build(tmp_path / "p", f"sqlite:///{state}")
    add_override(project, "a2", 90)

    run = score(project, AS_OF, store=False)

    scores = run.result.scores.set_index("account_id")
    assert scores.loc["a2", "score"] == 90
    assert scores.loc["a2", "computed_score"] == 10
    assert not state_file(project).exists()


def test_run_with_missing_relative_state_file(tmp_path: Path) -> None:
    project = build(tmp_path / "p", "sqlite:///nested/state.db")

    run = score(project, AS_OF, store=False)

    assert not (project.root / "nested" / "state.db").exists()
    assert run.result.scores["override_author"].isna().all()


def test_run_with_memory_state_store(tmp_path: Path) -> None:
    project = build(tmp_path / "p", "sqlite://")

    run = score(project, AS_OF, store=False)

    scores = run.result.scores.set_index("account_id")["score"]
    assert scores.to_dict() == {"a1": 30.0, "a2": 10.0, "a3": 0.0}


def test_run_with_invalid_state_url_raises(tmp_path: Path) -> None:
    project = build(tmp_path / "p", "mysql://db.example/state")

    with pytest.raises(ValueError, match="unsupported state store database 'mysql'"):
        score(project, AS_OF, store=False)


def test_stored_run_opens_state_for_alerts(tmp_path: Path) -> None:
    project = build(tmp_path / "p")

    score(project, AS_OF)

    # Alert rules and playbooks keep their state in the store, so a run that
    # stores its snapshot and checks them creates the database.
    assert state_file(project).is_file()


def migrations_config(database: Path | None = None) -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_FOLDER))
    if database is not None:
        config.set_main_option("sqlalchemy.url", f"sqlite:///{database}")
    return config


def test_schema_head_is_newest_migration() -> None:
    heads = ScriptDirectory.from_config(migrations_config()).get_heads()

    assert heads == [SCHEMA_HEAD]


def test_open_upgrades_older_revision(tmp_path: Path) -> None:
    StateStore.open("sqlite:///state.db", tmp_path).close()
    command.downgrade(migrations_config(tmp_path / "state.db"), "0004")

    with StateStore.open("sqlite:///state.db", tmp_path) as store:
        revision = stored_revision(store.engine)
        tables = set(inspect(store.engine).get_table_names())

    assert revision == SCHEMA_HEAD
    assert "write_keys" in tables


def test_run_reads_overrides_during_write_lock(tmp_path: Path) -> None:
    project = build(tmp_path / "p")
    add_override(project, "a3", 75)
    runs: list[ScoringRun] = []
    worker = threading.Thread(
        target=lambda: runs.append(score(project, AS_OF, store=False)), daemon=True
    )

    # Another writer, such as the service, holds SQLite's write lock meanwhile.
    writer = sqlite3.connect(state_file(project), isolation_level=None)
    writer.execute("BEGIN IMMEDIATE")
    try:
        worker.start()
        worker.join(timeout=20)
        finished = not worker.is_alive()
    finally:
        writer.execute("ROLLBACK")
        writer.close()
        worker.join()

    assert finished
    scores = runs[0].result.scores.set_index("account_id")
    assert scores.loc["a3", "score"] == 75
