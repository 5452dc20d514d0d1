"""Erasure, export and pseudonymization of personal data, on real stores and files."""

from __future__ import annotations

import gzip
import hashlib
import hmac
import json
import re
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from sqlalchemy import (
    Boolean,
    CheckConstraint,
    Date,
    DateTime,
    Float,
    Integer,
    Table,
    insert,
    inspect,
    select,
)
from sqlalchemy.types import JSON, TypeDecorator
from typer.testing import CliRunner

from healthscore import pipeline
from healthscore.cli import app
from healthscore.config import ConfigError, Project
from healthscore.config.models import ProjectConfig
from healthscore.engine import Engine
from healthscore.monitoring.alerts import RaisedAlert
from healthscore.monitoring.outbox import NewAlert, add_alerts
from healthscore.privacy import (
    ERASED,
    PrivacyError,
    Subject,
    account_subject,
    export_subject,
    forget,
    person_subject,
)
from healthscore.report import read_account_sources
from healthscore.service.app import create_app
from healthscore.service.tokens import create_token
from healthscore.sources.ingest import event_store, ingest_files
from healthscore.store import StateStore
from healthscore.store import events as events_module
from healthscore.store.events import MANIFEST_FILE, file_digest
from healthscore.store.schema import metadata
from project_factory import minimal_config, write_project
from service_project import TestClient, bearer

# Ids use letters outside 0-9a-f, so they cannot occur inside a hex hash by chance.
ERASED_ACCOUNT = "acme-x1"
KEPT_ACCOUNT = "globex-x2"
#: State tables that are not about accounts: API tokens belong to the service's
#: users and write keys to store sources. Their seeded text names an account only
#: because seed_row puts the account id into every text column.
NOT_ACCOUNT_TABLES = frozenset({"api_tokens", "write_keys"})
ACCOUNTS = f"""account_id,name,owner
{ERASED_ACCOUNT},Acme,olivia@example.com
{KEPT_ACCOUNT},Globex,peter@example.com
initech-x3,Initech,peter@example.com
"""
EVENTS = f"""account_id,timestamp,user
{ERASED_ACCOUNT},2026-06-01T10:00:00,zoe@example.com
{ERASED_ACCOUNT},2026-06-02T10:00:00,yann@example.com
{ERASED_ACCOUNT},2026-06-03T10:00:00,zoe@example.com
{KEPT_ACCOUNT},2026-06-01T11:00:00,xavier@example.com
{KEPT_ACCOUNT},2026-06-05T11:00:00,wanda@example.com
initech-x3,2026-06-04T09:00:00,wanda@example.com
"""
RAW_USERS = ("zoe@example.com", "yann@example.com", "xavier@example.com")
DATES = (date(2026, 6, 10), date(2026, 6, 17))
KEY = "a-long-random-test-secret-0123456789"
KEY_VARIABLE = "HEALTHSCORE_TEST_PSEUDONYM_KEY"


def privacy_config(**privacy: Any) -> dict[str, Any]:
    """A project with a distinct-user measure and the latest user as a category."""
    config = minimal_config()
    config["metrics"]["users_28d"] = {
        "type": "distinct_count",
        "source": "events",
        "column": "user",
        "window": "28d",
    }
    config["metrics"]["last_user"] = {
        "type": "latest",
        "source": "events",
        "column": "user",
    }
    measures = config["scorecards"][0]["components"]["usage"]["measures"]
    measures.append(
        {"metric": "users_28d", "normalize": {"method": "bounds", "min": 0, "max": 5}}
    )
    measures.append(
        {
            "metric": "last_user",
            "normalize": {"method": "categories", "scores": {"n": 1}, "default": 50},
        }
    )
    # Rows that `healthscore ingest` keeps in the event store.
    config["sources"]["stored"] = {"kind": "events", "path": "store"}
    if privacy:
        config["privacy"] = privacy
    return config


def seed_event_store(project) -> None:
    """Store raw rows of both accounts, one of them on a day already purged."""
    rows = pd.DataFrame(
        {
            "account_id": [ERASED_ACCOUNT, ERASED_ACCOUNT, KEPT_ACCOUNT, KEPT_ACCOUNT],
            "timestamp": pd.to_datetime(
                [
                    "2026-05-01T10:00",
                    "2026-06-01T10:00",
                    "2026-05-01T11:00",
                    "2026-06-01T12:00",
                ]
            ).as_unit("us"),
            "user": [
                "zoe@example.com",
                "yann@example.com",
                "wanda@example.com",
                "zoe@example.com",
            ],
            "value": [1.0, 2.0, 3.0, 4.0],
        }
    )
    store = event_store(project)
    store.append("stored", rows, numeric=["value"])
    store.purge("stored", before=date(2026, 5, 2))


def event_store_rows(project, account: str) -> tuple[int, int]:
    """Raw and rollup rows of `account` in the event store."""
    store = event_store(project)
    raw = store.read_raw("stored")
    daily = store.read_rollup("stored")
    raw_rows = 0 if raw is None else raw.to_pandas()["account_id"].eq(account).sum()
    daily_rows = (
        0 if daily is None else daily.to_pandas()["account_id"].eq(account).sum()
    )
    return int(raw_rows), int(daily_rows)


@pytest.fixture
def project(tmp_path):
    project = write_project(
        tmp_path / "project",
        privacy_config(),
        {"accounts.csv": ACCOUNTS, "events.csv": EVENTS},
    )
    for as_of in DATES:
        pipeline.score(project, as_of)
    return project


def run_cli(*args: object, input: str | None = None):
    runner = CliRunner(env={"COLUMNS": "200", "NO_COLOR": "1"})
    return runner.invoke(
        app, [str(arg) for arg in args], input=input, prog_name="healthscore"
    )


# Seeding every state table


def allowed_value(table: Table, column: str) -> str | None:
    """Return the first value a `column IN (...)` check constraint allows."""
    for constraint in table.constraints:
        if not isinstance(constraint, CheckConstraint):
            continue
        found = re.search(rf"\b{column}\s+IN\s*\(\s*'([^']*)'", str(constraint.sqltext))
        if found:
            return found.group(1)
    return None


def seed_row(table: Table, account: str, number: int, parents: dict) -> dict:
    """Build a valid row of any state table for `account`."""
    row: dict[str, Any] = {}
    for column in table.columns:
        if column.primary_key:
            continue
        kind = (
            column.type.impl if isinstance(column.type, TypeDecorator) else column.type
        )
        foreign = next(iter(column.foreign_keys), None)
        if column.nullable and foreign is None and column.name != "account_id":
            # Optional columns stay empty, which every check constraint allows.
            row[column.name] = None
        elif foreign is not None:
            row[column.name] = parents[(foreign.column.table.name, account)]
        elif column.name == "account_id":
            row[column.name] = account
        elif isinstance(kind, JSON):
            row[column.name] = {"account_id": account, "step": number}
        elif isinstance(kind, Boolean):
            row[column.name] = False
        elif isinstance(kind, Integer | Float):
            row[column.name] = 1
        elif isinstance(kind, DateTime):
            row[column.name] = datetime(2026, 6, 1, 12, tzinfo=UTC)
        elif isinstance(kind, Date):
            row[column.name] = date(2026, 6, 1)
        else:
            allowed = allowed_value(table, column.name)
            row[column.name] = allowed or f"{column.name}-{account}-{number}"
    return row


def seed_state(project) -> dict[str, dict[str, list[dict]]]:
    """Insert one row per account into every table; return the rows per table."""
    seeded: dict[str, dict[str, list[dict]]] = {}
    parents: dict[tuple[str, str], int] = {}
    state = StateStore.open(project.config.store.state, project.root)
    with state, state.engine.begin() as connection:
        for number, table in enumerate(existing_tables(connection)):
            seeded[table.name] = {}
            for account in (ERASED_ACCOUNT, KEPT_ACCOUNT):
                row = seed_row(table, account, number, parents)
                key = connection.execute(
                    insert(table).values(**row).returning(*table.primary_key)
                ).scalar_one()
                parents[(table.name, account)] = key
                seeded[table.name][account] = row
    return seeded


def existing_tables(connection) -> list[Table]:
    """Tables of the metadata that the migrations have created, parents first."""
    names = set(inspect(connection).get_table_names())
    return [table for table in metadata.sorted_tables if table.name in names]


def state_rows(project) -> dict[str, list[dict]]:
    state = StateStore.open(project.config.store.state, project.root)
    with state, state.engine.connect() as connection:
        return {
            table.name: [
                dict(row) for row in connection.execute(select(table)).mappings()
            ]
            for table in existing_tables(connection)
        }


def mentions(row: dict, account: str) -> bool:
    """Whether a state row names the account in any column or JSON document."""
    return account in json.dumps(row, default=str)


def snapshot_tables(project) -> dict[tuple[date, str], pd.DataFrame]:
    store = pipeline.snapshot_store(project)
    return {
        (as_of, name): store.read(as_of, name)
        for as_of in store.dates()
        for name in store.tables(as_of)
    }


def write_outputs(project) -> Path:
    output = project.root / "output"
    output.mkdir()
    scores = pipeline.snapshot_store(project).read(DATES[0], "scores")
    scores[["account_id", "score"]].to_csv(output / "scores.csv", index=False)
    scores[["account_id", "score"]].to_parquet(output / "scores.parquet", index=False)
    records = scores[["account_id", "score"]].to_dict(orient="records")
    (output / "scores.json").write_text(json.dumps(records))
    (output / "report-a.html").write_text(f"<td>{ERASED_ACCOUNT}</td>")
    (output / "report-b.html").write_text(f"<td>{KEPT_ACCOUNT}</td>")
    return output


# Forgetting an account


def test_forget_account_leaves_no_row_anywhere(project):
    seed_state(project)
    seed_event_store(project)
    assert event_store_rows(project, ERASED_ACCOUNT) == (1, 2)
    output = write_outputs(project)
    snapshots_before = snapshot_tables(project)
    state_before = state_rows(project)

    report = forget(
        project,
        account_subject(ERASED_ACCOUNT),
        author="dpo",
        output_folders=[output],
    )

    state_after = state_rows(project)
    for table, rows in state_after.items():
        if table in NOT_ACCOUNT_TABLES:
            continue
        left = [row for row in rows if mentions(row, ERASED_ACCOUNT)]
        assert left == [], f"{table} still has rows of the account"
    for table, rows in state_before.items():
        kept_before = [row for row in rows if mentions(row, KEPT_ACCOUNT)]
        kept_after = [row for row in state_after[table] if mentions(row, KEPT_ACCOUNT)]
        assert kept_after == kept_before, f"{table} changed other accounts' rows"
    assert "deliveries" not in state_before or report.state_rows["deliveries"] == 1

    snapshots_after = snapshot_tables(project)
    assert snapshots_after.keys() == snapshots_before.keys()
    for key, before in snapshots_before.items():
        after = snapshots_after[key]
        if "account_id" not in before.columns:
            continue
        assert (after["account_id"] == ERASED_ACCOUNT).sum() == 0
        kept = before[before["account_id"] != ERASED_ACCOUNT].reset_index(drop=True)
        pd.testing.assert_frame_equal(after, kept)

    assert ERASED_ACCOUNT not in (output / "scores.csv").read_text()
    assert KEPT_ACCOUNT in (output / "scores.csv").read_text()
    parquet = pd.read_parquet(output / "scores.parquet")
    assert list(parquet["account_id"]) == [KEPT_ACCOUNT, "initech-x3"]
    records = json.loads((output / "scores.json").read_text())
    assert [record["account_id"] for record in records] == [KEPT_ACCOUNT, "initech-x3"]
    assert not (output / "report-a.html").exists()
    assert (output / "report-b.html").exists()

    assert event_store_rows(project, ERASED_ACCOUNT) == (0, 0)
    assert event_store_rows(project, KEPT_ACCOUNT) == (1, 2)
    assert report.event_rows == {"stored": {"raw": 1, "daily": 2}}


def test_forget_account_in_other_rows_text(project):
    with StateStore.open(project.config.store.state, project.root) as state:
        state.add_override(
            KEPT_ACCOUNT,
            score=60,
            reason=f"sister company of {ERASED_ACCOUNT}, not {ERASED_ACCOUNT}-old",
            author="ops",
            expires_on=date(2099, 1, 1),
        )
    pipeline.score(project, DATES[1])

    dry = forget(project, account_subject(ERASED_ACCOUNT), author="dpo", dry_run=True)
    report = forget(project, account_subject(ERASED_ACCOUNT), author="dpo")

    rows = state_rows(project)
    reasons = [row["reason"] for row in rows["overrides"]]
    assert reasons == [f"sister company of {ERASED}, not {ERASED_ACCOUNT}-old"]
    details = [row["detail"] for row in rows["audit"] if row["action"] == "add"]
    assert details[0]["reason"] == reasons[0]
    assert report.state_rows["overrides"] == 1
    assert dry.state_rows == report.state_rows
    scores = pipeline.snapshot_store(project).read(DATES[1], "scores")
    kept = scores.loc[scores["account_id"] == KEPT_ACCOUNT, "override_reason"]
    assert list(kept) == reasons


def test_forget_account_rewrites_run_info(project):
    forget(project, account_subject(ERASED_ACCOUNT), author="dpo")

    store = pipeline.snapshot_store(project)
    info = store.run_info(DATES[0])
    assert info["accounts"] == 2
    assert info["row_counts"]["scores"] == 2
    assert info["erasures"][0]["subject_kind"] == "account"
    assert ERASED_ACCOUNT not in json.dumps(info)


def test_forget_audit_entry_holds_no_identifier(project):
    seed_state(project)

    report = forget(
        project,
        account_subject(ERASED_ACCOUNT),
        author="dpo",
        now=datetime(2026, 7, 1, tzinfo=UTC),
    )

    with StateStore.open(project.config.store.state, project.root) as state:
        entries = state.audit_entries(subject_kind="account")
    assert len(entries) == 1
    entry = entries[0]
    assert entry.id == report.audit_id
    assert entry.actor == "dpo"
    assert entry.action == "forget"
    assert entry.count == report.total_rows
    assert entry.detail["state_rows"] == report.state_rows
    assert ERASED_ACCOUNT not in json.dumps(entry.detail)
    key = (project.root / ".healthscore" / "audit.key").read_bytes().strip()
    expected = hmac.new(key, f"account:{ERASED_ACCOUNT}".encode(), hashlib.sha256)
    assert entry.detail["subject_hash"] == expected.hexdigest()


def test_forget_dry_run_changes_nothing(project):
    seed_state(project)
    snapshots_before = snapshot_tables(project)
    state_before = state_rows(project)

    report = forget(project, account_subject(ERASED_ACCOUNT), author="", dry_run=True)

    assert report.audit_id is None
    assert report.snapshot_rows[DATES[0].isoformat()]["scores"] == 1
    assert state_rows(project) == state_before
    for key, frame in snapshot_tables(project).items():
        pd.testing.assert_frame_equal(frame, snapshots_before[key])
    assert not (project.root / ".healthscore" / "audit.key").exists()


def test_forget_twice_finds_nothing(project):
    forget(project, account_subject(ERASED_ACCOUNT), author="dpo")

    again = forget(project, account_subject(ERASED_ACCOUNT), author="dpo")

    assert again.total_rows == 0
    assert again.snapshot_rows == {}


def test_forget_requires_author(project):
    with pytest.raises(ValueError, match="author must not be empty"):
        forget(project, account_subject(ERASED_ACCOUNT), author=" ")


# Forgetting a person


def seed_person_rows(project) -> None:
    with StateStore.open(project.config.store.state, project.root) as state:
        state.add_override(
            KEPT_ACCOUNT,
            score=60,
            reason="call went well",
            author="Olivia@Example.com",
            expires_on=date(2099, 1, 1),
        )
        state.add_override(
            KEPT_ACCOUNT,
            score=70,
            reason="renewal signed",
            author="peter@example.com",
            expires_on=date(2099, 1, 1),
        )


def test_forget_person_redacts_identifier(project):
    seed_person_rows(project)

    report = forget(
        project, person_subject(project, "olivia@example.com"), author="dpo"
    )

    rows = state_rows(project)
    authors = sorted(row["author"] for row in rows["overrides"])
    assert authors == [ERASED, "peter@example.com"]
    assert report.state_rows["overrides"] == 1
    # The audit entries of the overrides name their author as the actor.
    actors = [row["actor"] for row in rows["audit"] if row["action"] == "add"]
    assert sorted(actors) == [ERASED, "peter@example.com"]
    assert "olivia" not in json.dumps(rows, default=str).lower()
    assert len(rows["overrides"]) == 2


def test_forget_person_in_free_text(project):
    seed_person_rows(project)
    with StateStore.open(project.config.store.state, project.root) as state:
        state.add_override(
            "initech-x3",
            score=20,
            reason="escalated by OLIVIA@example.com; cc sofia.olivia@example.com",
            author="ops",
            expires_on=date(2099, 1, 1),
        )
    root = project.root
    note = "Olivia@Example.com asked for a call"
    added = run_cli(
        "note",
        "add",
        KEPT_ACCOUNT,
        "--author",
        "ops",
        "--text",
        note,
        "--project",
        root,
    )
    assert added.exit_code == 0, added.output
    token = run_cli(
        "token",
        "create",
        "--role",
        "admin",
        "--name",
        "olivia@example.com",
        "--project",
        root,
    )
    assert token.exit_code == 0, token.output
    pipeline.score(project, DATES[1])

    forget(project, person_subject(project, "olivia@example.com"), author="dpo")

    rows = state_rows(project)
    text = json.dumps(rows, default=str).lower()
    assert "olivia@example.com" not in text.replace("sofia.olivia@example.com", "")
    reasons = {row["account_id"]: row["reason"] for row in rows["overrides"]}
    expected = f"escalated by {ERASED}; cc sofia.olivia@example.com"
    assert reasons["initech-x3"] == expected
    assert [row["text"] for row in rows["notes"]] == [f"{ERASED} asked for a call"]
    assert [row["name"] for row in rows["api_tokens"]] == [ERASED]
    scores = pipeline.snapshot_store(project).read(DATES[1], "scores")
    snapshot_text = scores.astype(str).to_csv().lower()
    assert "escalated by [erased]" in snapshot_text
    assert " olivia@example.com" not in snapshot_text


def test_export_person_lists_their_rows(project):
    seed_person_rows(project)

    document = export_subject(project, person_subject(project, "OLIVIA@example.com"))

    overrides = document["state"]["overrides"]
    assert [row["reason"] for row in overrides] == ["call went well"]
    assert document["subject"]["kind"] == "person"


def test_forget_person_in_event_store(project):
    seed_event_store(project)

    report = forget(project, person_subject(project, "zoe@example.com"), author="dpo")

    raw = event_store(project).read_raw("stored").to_pandas()
    # The 2026-05-01 rows are purged; 2026-06-01 keeps yann and zoe's row.
    assert sorted(raw["user"]) == [ERASED, "yann@example.com"]
    assert report.event_rows == {"stored": {"raw": 1, "daily": 0}}


def ingest_named(project, name: str) -> tuple[Path, str]:
    """Ingest EVENTS from a file called `name` and return it with its SHA-256."""
    path = project.root / "exports" / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(EVENTS, encoding="utf-8")
    result = run_cli("ingest", "--source", "stored", path, "--project", project.root)
    assert result.exit_code == 0, result.output
    return path, file_digest(path)


def ingested_manifest(project) -> dict[str, Any]:
    store = event_store(project)
    path = store.events_folder / "stored" / MANIFEST_FILE
    manifest: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    return manifest


def test_forget_erases_ingested_file_names(project, tmp_path):
    name = f"{ERASED_ACCOUNT} zoe@example.com.csv"
    path, digest = ingest_named(project, name)
    exported = {
        "account": export_to(
            project, tmp_path / "account.json", "--account", ERASED_ACCOUNT
        ),
        "person": export_to(
            project, tmp_path / "person.json", "--person", "ZOE@example.com"
        ),
    }

    summary = run_cli(
        "export-subject", "--person", "zoe@example.com", "--output",
        tmp_path / "summary.json", "--json", "--project", project.root,
    )  # fmt: skip

    assert summary.exit_code == 0, summary.output
    assert json.loads(summary.stdout)["ingested_files"] == 1
    for kind, document in exported.items():
        origins = document["events"]["stored"]["origins"]
        assert [entry["origin"] for entry in origins] == [name], kind
        assert [entry["batch_id"] for entry in origins] == [digest], kind
        assert origins[0]["rows"] == 6, kind
    account = run_cli(
        "forget", "--account", ERASED_ACCOUNT, "--author", "dpo", "--yes",
        "--json", "--project", project.root,
    )  # fmt: skip
    person = run_cli(
        "forget", "--person", "zoe@example.com", "--author", "dpo", "--yes",
        "--json", "--project", project.root,
    )  # fmt: skip

    for result in (account, person):
        assert result.exit_code == 0, result.output
        report = json.loads(result.stdout)
        assert report["event_rows"]["stored"]["origins"] == 1
        assert report["event_fields"]["stored"]["origin"] == 1
    manifest = ingested_manifest(project)
    assert list(manifest) == [digest]
    assert manifest[digest]["origin"] == f"{ERASED} {ERASED}.csv"
    assert manifest[digest]["rows"] == 6
    text = (event_store(project).events_folder / "stored" / MANIFEST_FILE).read_text()
    assert ERASED_ACCOUNT not in text
    assert "zoe@example.com" not in text
    leftovers = [
        entry.name
        for entry in (event_store(project).events_folder / "stored").iterdir()
        if entry.name.endswith(".tmp")
    ]
    assert leftovers == []
    again = ingest_files(project, "stored", [path])
    assert again[0].skipped
    assert event_store_rows(project, ERASED_ACCOUNT) == (0, 0)
    for kind, subject in (
        ("account", ["--account", ERASED_ACCOUNT]),
        ("person", ["--person", "zoe@example.com"]),
    ):
        document = export_to(project, tmp_path / f"after-{kind}.json", *subject)
        assert "origins" not in document["events"].get("stored", {}), kind


def test_forget_person_only_in_file_name(project):
    ingest_named(project, "from quinn@example.com.csv")

    planned = run_cli(
        "forget", "--person", "quinn@example.com", "--dry-run", "--project",
        project.root,
    )  # fmt: skip
    unchanged = ingested_manifest(project)
    done = run_cli(
        "forget", "--person", "quinn@example.com", "--author", "dpo", "--yes",
        "--project", project.root,
    )  # fmt: skip

    assert planned.exit_code == 0, planned.output
    lines = planned.stdout.splitlines()
    assert lines[0] == "Would erase 1 row of the person."
    assert "  event store stored: raw 0, daily 0, origins 1 (origin 1)" in lines
    assert [entry["origin"] for entry in unchanged.values()] == [
        "from quinn@example.com.csv"
    ]
    assert done.exit_code == 0, done.output
    assert "Erased 1 row of the person." in done.stdout
    origins = [entry["origin"] for entry in ingested_manifest(project).values()]
    assert origins == [f"from {ERASED}.csv"]


@pytest.mark.parametrize("text", ["{not json", '["a.csv"]'])
def test_forget_names_invalid_ingested_json(project, text):
    ingest_named(project, "from quinn@example.com.csv")
    path = event_store(project).events_folder / "stored" / MANIFEST_FILE
    path.write_text(text, encoding="utf-8")

    result = run_cli(
        "forget", "--person", "quinn@example.com", "--author", "dpo", "--yes",
        "--project", project.root,
    )  # fmt: skip

    assert result.exit_code == 1
    assert str(path) in result.stderr
    assert "restore it from a backup, or delete it" in result.stderr
    assert path.read_text(encoding="utf-8") == text


def test_forget_keeps_file_names_when_write_fails(project, monkeypatch):
    ingest_named(project, "from quinn@example.com.csv")
    before = ingested_manifest(project)
    folder = event_store(project).events_folder / "stored"

    def fail_replace(source: object, target: object) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(events_module.os, "replace", fail_replace)
    with pytest.raises(OSError, match="No space left on device"):
        event_store(project).rewrite_origins(
            "stored", person_subject(project, "quinn@example.com").redact_text
        )

    assert ingested_manifest(project) == before
    assert [entry.name for entry in folder.iterdir() if entry.suffix == ".tmp"] == []


def seed_person_fields(project) -> Path:
    """Mention olivia@example.com under many fields; return the output folder.

    Spellings differ in letter case, which emails ignore. peter@example.com is
    never erased.
    """
    with StateStore.open(project.config.store.state, project.root) as state:
        state.add_override(
            KEPT_ACCOUNT,
            score=60,
            reason="call went well",
            author="Olivia@Example.com",
            expires_on=date(2099, 1, 1),
        )
        state.add_override(
            "initech-x3",
            score=20,
            reason="escalated by OLIVIA@example.com",
            author="ops",
            expires_on=date(2099, 1, 1),
        )
        alert = RaisedAlert(
            rule="idle",
            kind="metric",
            account_id=KEPT_ACCOUNT,
            as_of=DATES[1],
            severity="warning",
            owner="olivia@example.com",
            escalate_to="peter@example.com",
            dedupe_key="idle/globex-x2/condition/2026-06-17",
            title="Globex: idle",
            message="Globex: idle.",
            details={"values": {"csm": "Olivia@Example.com", "seats": 5}},
        )
        add_alerts(state, [NewAlert(alert, ("console",))], now=datetime.now(UTC))
    for author, text in (
        ("Olivia@Example.com", "renewal call booked"),
        ("ops", "olivia@example.com asked for a call"),
    ):
        added = run_cli(
            "note", "add", KEPT_ACCOUNT, "--author", author, "--text", text,
            "--project", project.root,
        )  # fmt: skip
        assert added.exit_code == 0, added.output
    # Monitoring is off, because the guard would store an alert about the run.
    pipeline.score(project, DATES[1], monitor=False)
    events = pd.DataFrame(
        {
            "account_id": [KEPT_ACCOUNT, KEPT_ACCOUNT],
            "timestamp": pd.to_datetime(["2026-06-01T10:00", "2026-06-02T10:00"]),
            "user": ["olivia@example.com", "peter@example.com"],
            "value": [1.0, 2.0],
        }
    )
    event_store(project).append("stored", events, numeric=["value"])
    output = project.root / "output"
    output.mkdir()
    people = {
        "owner": "olivia@example.com",
        "rows": [
            {"by": "Olivia@Example.com", "cc": "olivia@example.com"},
            {"by": "peter@example.com", "cc": ""},
        ],
    }
    (output / "people.json").write_text(json.dumps(people))
    (output / "owners.csv").write_text(
        f"account_id,csm\n{KEPT_ACCOUNT},olivia@example.com\n"
        "initech-x3,peter@example.com\n"
    )
    return output


#: Where `seed_person_fields` put the person, per place and field.
PERSON_STATE_FIELDS = {
    "alerts": {"details.values.csm": 1, "owner": 1},
    # The audit entries of the overrides and notes name their author as actor.
    "audit": {"actor": 2, "detail.reason": 1},
    "notes": {"author": 1, "text": 1},
    "overrides": {"author": 1, "reason": 1},
}
PERSON_SNAPSHOT_FIELDS = {
    DATES[1].isoformat(): {
        "scores": {"override_author": 1, "override_reason": 1},
    },
}


def test_forget_person_names_fields(project):
    output = seed_person_fields(project)
    root = project.root

    planned = run_cli(
        "forget", "--person", "olivia@example.com", "--dry-run", "--project", root
    )
    planned_json = run_cli(
        "forget", "--person", "olivia@example.com", "--dry-run", "--json",
        "--project", root,
    )  # fmt: skip
    done = run_cli(
        "forget", "--person", "olivia@example.com", "--author", "dpo", "--yes",
        "--json", "--project", root,
    )  # fmt: skip

    assert planned.exit_code == 0, planned.output
    lines = planned.stdout.splitlines()
    assert lines[0] == "Would erase 14 rows of the person."
    assert (
        lines[1] == "  In brackets: the fields that held the person, with their counts."
    )
    expected = [
        "  snapshot 2026-06-17: scores 2 (override_author 1, override_reason 1)",
        "  event store stored: raw 1, daily 0 (user 1)",
        "  state store alerts: 1 row (details.values.csm 1, owner 1)",
        "  state store audit: 3 rows (actor 2, detail.reason 1)",
        "  state store notes: 2 rows (author 1, text 1)",
        "  state store overrides: 2 rows (author 1, reason 1)",
        f"  {output / 'owners.csv'}: 1 row (csm 1)",
        f"  {output / 'people.json'}: 2 rows (owner 1, rows.by 1, rows.cc 1)",
    ]
    for line in expected:
        assert line in lines
    for result in (planned_json, done):
        assert result.exit_code == 0, result.output
        report = json.loads(result.stdout)
        assert report["state_fields"] == PERSON_STATE_FIELDS
        assert report["snapshot_fields"] == PERSON_SNAPSHOT_FIELDS
        assert report["event_fields"] == {"stored": {"user": 1}}
        assert report["file_fields"] == {
            str(output / "owners.csv"): {"csm": 1},
            str(output / "people.json"): {"owner": 1, "rows.by": 1, "rows.cc": 1},
        }
    rows = state_rows(project)
    assert [row["owner"] for row in rows["alerts"]] == [ERASED]
    assert rows["alerts"][0]["details"]["values"] == {"csm": ERASED, "seats": 5}
    assert rows["alerts"][0]["escalate_to"] == "peter@example.com"


def test_forget_account_names_fields(project):
    seed_state(project)
    seed_event_store(project)

    report = forget(project, account_subject(ERASED_ACCOUNT), author="dpo")

    # Every seeded JSON document is {"account_id": <account>, "step": <n>}.
    assert report.state_fields["alerts"] == {"account_id": 1, "details.account_id": 1}
    # The account's delivery goes with its alert, which it references.
    assert report.state_fields["deliveries"] == {"alert_id": 1}
    for day in DATES:
        assert report.snapshot_fields[day.isoformat()]["scores"] == {"account_id": 1}
    # seed_event_store keeps 1 raw row and 2 rollup rows of the account.
    assert report.event_fields == {"stored": {"account_id": 3}}


# Exporting an account


def test_export_account_contains_every_copy(project):
    seeded = seed_state(project)
    seed_event_store(project)
    output = write_outputs(project)

    document = export_subject(
        project, account_subject(ERASED_ACCOUNT), output_folders=[output]
    )

    assert sorted(document["snapshots"]) == [day.isoformat() for day in DATES]
    scores = document["snapshots"][DATES[0].isoformat()]["scores"]
    assert [row["account_id"] for row in scores] == [ERASED_ACCOUNT]
    for table in seeded.keys() - NOT_ACCOUNT_TABLES:
        assert len(document["state"][table]) == 1, table
    assert (
        document["state"]["overrides"][0]["reason"]
        == seeded["overrides"][ERASED_ACCOUNT]["reason"]
    )
    assert document["files"][str(output / "scores.csv")][0]["account_id"] == (
        ERASED_ACCOUNT
    )
    assert document["reports"] == [str(output / "report-a.html")]
    raw = document["events"]["stored"]["raw"]
    assert [row["timestamp"] for row in raw] == ["2026-06-01T10:00:00"]
    daily = document["events"]["stored"]["daily"]
    assert sorted(row["day"] for row in daily) == ["2026-05-01", "2026-06-01"]
    assert KEPT_ACCOUNT not in json.dumps(document)


# Command line


def test_cli_forget_asks_and_aborts(project):
    result = run_cli(
        "forget",
        "--account",
        ERASED_ACCOUNT,
        "--author",
        "dpo",
        "--project",
        project.root,
        input="n\n",
    )

    assert result.exit_code == 1
    assert "Nothing was erased." in result.output
    scores = pipeline.snapshot_store(project).read(DATES[0], "scores")
    assert ERASED_ACCOUNT in set(scores["account_id"])


def test_cli_forget_with_yes(project):
    result = run_cli(
        "forget",
        "--account",
        ERASED_ACCOUNT,
        "--author",
        "dpo",
        "--yes",
        "--project",
        project.root,
    )

    assert result.exit_code == 0, result.output
    # Per date: 1 score, 1 component, 3 measures and 3 metrics rows.
    assert "Erased 16 rows of the account." in result.output
    scores = pipeline.snapshot_store(project).read(DATES[0], "scores")
    assert ERASED_ACCOUNT not in set(scores["account_id"])


def test_cli_forget_unknown_account(project):
    result = run_cli(
        "forget",
        "--account",
        "nobody-x9",
        "--author",
        "dpo",
        "--yes",
        "--project",
        project.root,
    )

    assert result.exit_code == 0, result.output
    assert "Found no rows of the account, so nothing was erased" in result.output
    assert "Would erase" not in result.output
    audit_rows = state_rows(project)["audit"]
    assert [row for row in audit_rows if row["action"] == "forget"] == []


def test_cli_forget_needs_one_subject(project):
    result = run_cli("forget", "--dry-run", "--project", project.root)

    assert result.exit_code == 2
    assert "give exactly one of --account and --person" in result.output


def test_cli_forget_needs_author(project):
    result = run_cli("forget", "--account", ERASED_ACCOUNT, "--project", project.root)

    assert result.exit_code == 2
    assert "--author is required unless --dry-run is given" in result.output


def test_cli_export_subject_writes_json(project, tmp_path):
    target = tmp_path / "export.json"

    result = run_cli(
        "export-subject",
        "--account",
        ERASED_ACCOUNT,
        "--output",
        target,
        "--project",
        project.root,
    )

    assert result.exit_code == 0, result.output
    document = json.loads(target.read_text())
    assert document["subject"] == {
        "kind": "account",
        "identifier": ERASED_ACCOUNT,
        "pseudonyms": [],
    }
    assert len(document["snapshots"]) == 2


# Subject exports in the output folder


def export_to(project, path: Path, *subject: str) -> dict[str, Any]:
    """Run `export-subject` for `subject` (an option and its value) into `path`."""
    result = run_cli(
        "export-subject", *subject, "--output", path, "--project", project.root
    )
    assert result.exit_code == 0, result.output
    return json.loads(path.read_text())


def listed_rows(document: dict[str, Any]) -> int:
    """Rows of an export's sections, counted from its documented layout."""
    snapshots = sum(
        len(rows)
        for tables in document["snapshots"].values()
        for rows in tables.values()
    )
    events = sum(
        len(rows) for parts in document["events"].values() for rows in parts.values()
    )
    state = sum(len(rows) for rows in document["state"].values())
    files = sum(len(rows) for rows in document["files"].values())
    return snapshots + events + state + files + len(document["reports"])


def test_forget_deletes_subject_export(project):
    seed_state(project)
    output = write_outputs(project)
    document = export_to(project, output / "acme.json", "--account", ERASED_ACCOUNT)
    other = export_to(project, output / "globex.json", "--account", KEPT_ACCOUNT)

    dry = forget(
        project,
        account_subject(ERASED_ACCOUNT),
        author="",
        output_folders=[output],
        dry_run=True,
    )
    assert (output / "acme.json").exists()
    report = forget(
        project, account_subject(ERASED_ACCOUNT), author="dpo", output_folders=[output]
    )

    path = str(output / "acme.json")
    # The export lists the account's snapshot, state and file rows, and one report.
    assert listed_rows(document) > 10
    assert dry.deleted_exports == {path: listed_rows(document) + 1}
    assert report.deleted_exports == {path: listed_rows(document) + 1}
    assert not (output / "acme.json").exists()
    assert report.skipped_files == {}
    assert json.loads((output / "globex.json").read_text()) == other
    assert str(output / "globex.json") not in report.file_rows
    audit_rows = [
        row for row in state_rows(project)["audit"] if row["action"] == "forget"
    ]
    assert audit_rows[-1]["detail"]["exports_deleted"] == 1


def test_forget_rewrites_other_subject_export(project):
    seed_person_rows(project)
    with StateStore.open(project.config.store.state, project.root) as state:
        state.add_override(
            ERASED_ACCOUNT,
            score=40,
            reason="asked for a discount",
            author="olivia@example.com",
            expires_on=date(2099, 1, 1),
        )
    output = project.root / "output"
    output.mkdir()
    before = export_to(
        project, output / "olivia.json", "--person", "olivia@example.com"
    )
    rows = [row for tables in before["state"].values() for row in tables]
    of_account = [
        row for row in rows if f'"account_id": "{ERASED_ACCOUNT}"' in json.dumps(row)
    ]
    # The override on the account and its audit entry.
    assert len(of_account) == 2

    report = forget(
        project, account_subject(ERASED_ACCOUNT), author="dpo", output_folders=[output]
    )

    after = json.loads((output / "olivia.json").read_text())
    assert after["subject"] == before["subject"]
    assert ERASED_ACCOUNT not in json.dumps(after)
    assert listed_rows(after) == listed_rows(before) - len(of_account)
    assert report.file_rows == {str(output / "olivia.json"): len(of_account)}
    assert report.deleted_exports == {}


def test_cli_forget_person_deletes_their_export(project):
    output = project.root / "output"
    output.mkdir()
    export_to(project, output / "jane.json", "--person", "Jane@Example.com")

    result = run_cli(
        "forget",
        "--person",
        "jane@example.com",
        "--author",
        "dpo",
        "--yes",
        "--project",
        project.root,
    )

    # The export is the only copy: its subject entry is the one row erased.
    assert result.exit_code == 0, result.output
    assert "Erased 1 row of the person." in result.output
    assert f"{output / 'jane.json'}: export of this subject deleted" in result.output
    assert not (output / "jane.json").exists()


def test_cli_forget_warns_once_per_unreadable_file(project):
    output = project.root / "output"
    output.mkdir()
    (output / "broken.json").write_text("{not json")

    # Without --yes the plan is shown first, and the warning still comes once.
    confirmed = run_cli(
        "forget",
        "--account",
        ERASED_ACCOUNT,
        "--author",
        "dpo",
        "--project",
        project.root,
        input="y\n",
    )
    # Run again, it finds nothing left to erase and still names the file.
    result = run_cli(
        "forget",
        "--account",
        ERASED_ACCOUNT,
        "--author",
        "dpo",
        "--yes",
        "--project",
        project.root,
    )

    assert confirmed.exit_code == 0, confirmed.output
    assert confirmed.output.count("broken.json") == 1
    assert result.exit_code == 0, result.output
    assert result.output.count("broken.json") == 1
    assert "erase the subject from it yourself or delete it" in result.output
    assert (output / "broken.json").read_text() == "{not json"


def write_other_formats(project) -> Path:
    """Write the scores as JSON Lines and gzip CSV, JSON and JSON Lines, and a
    spreadsheet that healthscore does not read."""
    output = project.root / "output"
    output.mkdir()
    scores = pipeline.snapshot_store(project).read(DATES[0], "scores")
    table = scores[["account_id", "score"]]
    table.to_json(output / "scores.jsonl", orient="records", lines=True)
    table.to_csv(output / "scores.csv.gz", index=False, compression="gzip")
    with gzip.open(output / "scores.json.gz", "wt", encoding="utf-8") as handle:
        json.dump(table.to_dict(orient="records"), handle)
    table.to_json(output / "scores.ndjson.gz", orient="records", lines=True)
    (output / "scores.xlsx").write_bytes(b"PK\x03\x04 not read")
    return output


def jsonl_accounts(path: Path) -> list[str]:
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rt", encoding="utf-8") as handle:
        return [json.loads(line)["account_id"] for line in handle if line.strip()]


def test_forget_rewrites_jsonl_and_gzip_exports(project):
    output = write_other_formats(project)
    kept = [KEPT_ACCOUNT, "initech-x3"]

    report = forget(
        project, account_subject(ERASED_ACCOUNT), author="dpo", output_folders=[output]
    )

    assert jsonl_accounts(output / "scores.jsonl") == kept
    assert jsonl_accounts(output / "scores.ndjson.gz") == kept
    csv = pd.read_csv(output / "scores.csv.gz", compression="gzip")
    assert list(csv["account_id"]) == kept
    with gzip.open(output / "scores.json.gz", "rt", encoding="utf-8") as handle:
        assert [record["account_id"] for record in json.load(handle)] == kept
    files = ("scores.csv.gz", "scores.json.gz", "scores.jsonl", "scores.ndjson.gz")
    assert report.file_rows == {str(output / name): 1 for name in files}
    (reason,) = report.skipped_files.values()
    assert list(report.skipped_files) == [str(output / "scores.xlsx")]
    assert reason.startswith("healthscore searches only CSV, JSON, JSON Lines")
    assert reason.endswith("erase the subject from it yourself or delete it")
    assert (output / "scores.xlsx").read_bytes() == b"PK\x03\x04 not read"


def test_forget_skips_invalid_jsonl_line(project):
    output = project.root / "output"
    output.mkdir()
    text = f'{{"account_id": "{ERASED_ACCOUNT}"}}\n{{not json\n'
    (output / "broken.jsonl").write_text(text)

    report = forget(
        project, account_subject(ERASED_ACCOUNT), author="dpo", output_folders=[output]
    )

    reason = report.skipped_files[str(output / "broken.jsonl")]
    assert reason.startswith("line 2 is not valid JSON")
    assert (output / "broken.jsonl").read_text() == text


def test_export_reads_jsonl_and_gzip_exports(project):
    output = write_other_formats(project)
    (output / "broken.json").write_text("{not json")

    document = export_subject(
        project, account_subject(ERASED_ACCOUNT), output_folders=[output]
    )

    files = ("scores.csv.gz", "scores.json.gz", "scores.jsonl", "scores.ndjson.gz")
    assert sorted(document["files"]) == [str(output / name) for name in files]
    for rows in document["files"].values():
        assert [row["account_id"] for row in rows] == [ERASED_ACCOUNT]
    skipped = document["skipped_files"]
    assert sorted(skipped) == [str(output / "broken.json"), str(output / "scores.xlsx")]
    assert skipped[str(output / "scores.xlsx")].startswith("healthscore searches only")


def test_cli_export_subject_warns_of_unsearched_file(project, tmp_path):
    write_other_formats(project)

    result = run_cli(
        "export-subject",
        "--account",
        ERASED_ACCOUNT,
        "--output",
        tmp_path / "acme.json",
        "--project",
        project.root,
    )

    assert result.exit_code == 0, result.output
    assert "scores.xlsx was not searched for the export" in result.output


def test_export_lists_earlier_export_of_subject(project):
    output = project.root / "output"
    output.mkdir()
    first = export_to(project, output / "acme.json", "--account", ERASED_ACCOUNT)

    again = export_subject(
        project, account_subject(ERASED_ACCOUNT), output_folders=[output]
    )

    assert again["exports"] == [str(output / "acme.json")]
    assert again["files"] == {}
    assert again["snapshots"] == first["snapshots"]


# Pseudonymization


def expected_pseudonym(value: str, key: str) -> str:
    digest = hmac.new(key.encode(), value.encode(), hashlib.sha256).hexdigest()
    return "p_" + digest


def pseudonymized_project(root: Path, **settings: Any):
    privacy = {"pseudonymize": {"columns": ["user", "owner"], **settings}}
    return write_project(
        root,
        privacy_config(**privacy),
        {"accounts.csv": ACCOUNTS, "events.csv": EVENTS},
    )


def engine_users(project) -> list[str]:
    engine = Engine.open(project)
    rows = engine.con.con.execute('SELECT "user" FROM valid_events').fetchall()
    return sorted({row[0] for row in rows})


def test_pseudonyms_are_keyed_hashes(tmp_path, monkeypatch):
    monkeypatch.setenv(KEY_VARIABLE, KEY)
    project = pseudonymized_project(tmp_path / "p", key_env=KEY_VARIABLE)

    users = engine_users(project)

    raw = sorted({line.split(",")[2] for line in EVENTS.strip().splitlines()[1:]})
    assert users == sorted(expected_pseudonym(user, KEY) for user in raw)


def test_different_key_gives_different_pseudonyms(tmp_path, monkeypatch):
    monkeypatch.setenv(KEY_VARIABLE, KEY)
    project = pseudonymized_project(tmp_path / "p", key_env=KEY_VARIABLE)
    first = engine_users(project)
    again = engine_users(project)
    monkeypatch.setenv(KEY_VARIABLE, KEY + "-rotated")

    rotated = engine_users(project)

    assert again == first
    assert set(rotated).isdisjoint(first)


def test_pseudonymization_keeps_metric_values(tmp_path, monkeypatch):
    monkeypatch.setenv(KEY_VARIABLE, KEY)
    plain = write_project(
        tmp_path / "plain",
        privacy_config(),
        {"accounts.csv": ACCOUNTS, "events.csv": EVENTS},
    )
    hashed = pseudonymized_project(tmp_path / "hashed", key_env=KEY_VARIABLE)

    plain_run = pipeline.score(plain, DATES[0], store=False)
    hashed_run = pipeline.score(hashed, DATES[0], store=False)

    users = hashed_run.metrics.values["users_28d"]
    assert users.to_dict() == plain_run.metrics.values["users_28d"].to_dict()
    assert users[ERASED_ACCOUNT] == 2
    pd.testing.assert_series_equal(
        hashed_run.result.scores["score"], plain_run.result.scores["score"]
    )


def test_raw_values_absent_from_stored_outputs(tmp_path, monkeypatch):
    monkeypatch.setenv(KEY_VARIABLE, KEY)
    project = pseudonymized_project(tmp_path / "p", key_env=KEY_VARIABLE)

    pipeline.score(project, DATES[0])

    store = pipeline.snapshot_store(project)
    measures = store.read(DATES[0], "measures")
    last_users = set(measures.loc[measures["metric"] == "last_user", "value_text"])
    assert expected_pseudonym("zoe@example.com", KEY) in last_users
    stored = b"".join(
        path.read_bytes()
        for path in (project.root / ".healthscore").rglob("*")
        if path.is_file()
    )
    for value in (*RAW_USERS, "olivia@example.com", KEY):
        assert value.encode() not in stored


def test_forget_person_matches_pseudonym(tmp_path, monkeypatch):
    monkeypatch.setenv(KEY_VARIABLE, KEY)
    project = pseudonymized_project(tmp_path / "p", key_env=KEY_VARIABLE)
    pipeline.score(project, DATES[0])

    report = forget(project, person_subject(project, "zoe@example.com"), author="dpo")

    # The measure and the metric behind it both hold the pseudonym as text.
    assert report.snapshot_rows[DATES[0].isoformat()] == {"measures": 1, "metrics": 1}
    store = pipeline.snapshot_store(project)
    pseudonym = expected_pseudonym("zoe@example.com", KEY)
    for table in ("measures", "metrics"):
        values = set(store.read(DATES[0], table)["value_text"].dropna())
        assert pseudonym not in values, table
        assert ERASED in values, table


#: One person's email address in three spellings.
JANE_SPELLINGS = (
    "Jane.Doe@Example.com",
    "JANE.DOE@EXAMPLE.COM",
    "jane.doe@example.com",
)
#: Rows of the three spellings, and of a user id that is not an email in two cases.
SPELLING_EVENTS = f"""account_id,timestamp,user
{KEPT_ACCOUNT},2026-06-01T10:00:00,Jane.Doe@Example.com
{KEPT_ACCOUNT},2026-06-02T10:00:00,JANE.DOE@EXAMPLE.COM
{KEPT_ACCOUNT},2026-06-03T10:00:00,jane.doe@example.com
{ERASED_ACCOUNT},2026-06-03T11:00:00,Ops-Bot
{ERASED_ACCOUNT},2026-06-04T11:00:00,ops-bot
"""


def spelling_project(root: Path):
    privacy = {"pseudonymize": {"columns": ["user"], "key_env": KEY_VARIABLE}}
    return write_project(
        root,
        privacy_config(**privacy),
        {"accounts.csv": ACCOUNTS, "events.csv": SPELLING_EVENTS},
    )


def test_email_spellings_share_pseudonym(tmp_path, monkeypatch):
    monkeypatch.setenv(KEY_VARIABLE, KEY)
    project = spelling_project(tmp_path / "p")

    users = engine_users(project)
    run = pipeline.score(project, DATES[0], store=False)

    jane = expected_pseudonym("jane.doe@example.com", KEY)
    # User ids that are not emails keep their letter case.
    bots = [expected_pseudonym("Ops-Bot", KEY), expected_pseudonym("ops-bot", KEY)]
    assert users == sorted([jane, *bots])
    assert run.metrics.values.loc[KEPT_ACCOUNT, "users_28d"] == 1
    assert run.metrics.values.loc[ERASED_ACCOUNT, "users_28d"] == 2


def store_user_rows(project, users: list[str]) -> None:
    """Append one raw row per user to the store source, on 2026-06-01."""
    rows = pd.DataFrame(
        {
            "account_id": [KEPT_ACCOUNT] * len(users),
            "timestamp": pd.to_datetime(["2026-06-01T10:00"] * len(users)).as_unit(
                "us"
            ),
            "user": users,
        }
    )
    event_store(project).append("stored", rows, numeric=[])


def stored_users(project) -> list[str]:
    return sorted(event_store(project).read_raw("stored").to_pandas()["user"])


def test_forget_person_erases_every_spelling(tmp_path, monkeypatch):
    monkeypatch.setenv(KEY_VARIABLE, KEY)
    project = spelling_project(tmp_path / "p")
    spellings = tmp_path / "spellings.csv"
    spellings.write_text(SPELLING_EVENTS)
    ingest_files(project, "stored", [spellings])
    # Pseudonyms stored before emails were case-folded: one per spelling.
    old = {spelling: expected_pseudonym(spelling, KEY) for spelling in JANE_SPELLINGS}
    store_user_rows(project, list(old.values()))
    pipeline.score(project, DATES[0])
    jane = expected_pseudonym("jane.doe@example.com", KEY)
    bots = [expected_pseudonym("Ops-Bot", KEY), expected_pseudonym("ops-bot", KEY)]
    assert stored_users(project).count(jane) == 4  # three ingested and one old

    subject = person_subject(project, "jane.doe@example.com")
    exported = export_subject(project, subject)
    report = forget(project, subject, author="dpo")

    # The mixed-case old pseudonym is not among the spellings tried.
    assert stored_users(project) == sorted(
        [ERASED] * 5 + [old["Jane.Doe@Example.com"], *bots]
    )
    assert report.event_rows["stored"]["raw"] == 5
    assert len(exported["events"]["stored"]["raw"]) == 5
    assert exported["subject"]["pseudonyms"] == [jane, old["JANE.DOE@EXAMPLE.COM"]]
    measures = pipeline.snapshot_store(project).read(DATES[0], "measures")
    last_users = measures.loc[measures["metric"] == "last_user", "value_text"]
    assert jane not in set(last_users)
    assert ERASED in set(last_users)

    mixed = person_subject(project, "Jane.Doe@Example.com")
    again = forget(project, mixed, author="dpo")

    assert stored_users(project) == sorted([ERASED] * 6 + bots)
    assert again.event_rows["stored"]["raw"] == 1


def test_missing_key_variable_is_named(tmp_path, monkeypatch):
    monkeypatch.delenv(KEY_VARIABLE, raising=False)
    project = pseudonymized_project(tmp_path / "p", key_env=KEY_VARIABLE)

    with pytest.raises(PrivacyError, match=f"environment variable {KEY_VARIABLE} is"):
        Engine.open(project)


def test_missing_key_file_is_named(tmp_path):
    project = pseudonymized_project(tmp_path / "p", key_file="secrets/pseudonym.key")

    missing = re.escape(str(project.root / "secrets" / "pseudonym.key"))
    with pytest.raises(PrivacyError, match=f"key file {missing} cannot be read"):
        Engine.open(project)


def test_key_file_gives_same_pseudonyms_as_variable(tmp_path, monkeypatch):
    (tmp_path / "p").mkdir()
    (tmp_path / "p" / "pseudonym.key").write_text(KEY + "\n")
    project = pseudonymized_project(tmp_path / "p", key_file="pseudonym.key")

    users = engine_users(project)

    assert expected_pseudonym("zoe@example.com", KEY) in users


def test_unknown_pseudonymized_column_rejected(tmp_path):
    privacy = {"pseudonymize": {"columns": ["user", "usr"], "key_env": KEY_VARIABLE}}

    with pytest.raises(ConfigError) as raised:
        write_project(
            tmp_path / "p",
            privacy_config(**privacy),
            {"accounts.csv": ACCOUNTS, "events.csv": EVENTS},
        )

    (issue,) = raised.value.issues
    assert issue.key == "privacy.pseudonymize.columns[1]"
    assert issue.line is not None
    assert "'usr' is a standard column or attribute of no source" in issue.message


def test_numeric_pseudonymized_column_rejected(tmp_path):
    privacy = {"pseudonymize": {"columns": ["value"], "key_env": KEY_VARIABLE}}

    with pytest.raises(ConfigError, match="'value' is not a text column"):
        write_project(
            tmp_path / "p",
            privacy_config(**privacy),
            {"accounts.csv": ACCOUNTS, "events.csv": EVENTS},
        )


def test_imported_source_is_pseudonymized(tmp_path, monkeypatch):
    monkeypatch.setenv(KEY_VARIABLE, KEY)
    fixtures = Path(__file__).parent / "fixtures" / "importers" / "segment"
    config = privacy_config(pseudonymize={"columns": ["user"], "key_env": KEY_VARIABLE})
    config["sources"]["events"] = {
        "kind": "events",
        "format": "segment",
        "path": "calls.jsonl",
    }
    project = write_project(
        tmp_path / "p",
        config,
        {
            "accounts.csv": "account_id,name,owner\nacme,Acme,x\nglobex,G,y\n",
            "calls.jsonl": (fixtures / "calls.jsonl").read_text(),
        },
    )

    users = engine_users(project)

    assert users
    assert "u1" not in users
    assert expected_pseudonym("u1", KEY) in users
    assert all(user.startswith("p_") for user in users)


def test_ingest_stores_pseudonyms_once(tmp_path, monkeypatch):
    monkeypatch.setenv(KEY_VARIABLE, KEY)
    project = write_project(
        tmp_path / "p",
        privacy_config(pseudonymize={"columns": ["user"], "key_env": KEY_VARIABLE}),
        {"accounts.csv": ACCOUNTS, "events.csv": EVENTS, "in.csv": EVENTS},
    )

    ingest_files(project, "stored", [project.root / "in.csv"])

    stored = event_store(project).read_raw("stored").to_pandas()
    assert expected_pseudonym("zoe@example.com", KEY) in set(stored["user"])
    assert "zoe@example.com" not in set(stored["user"])
    engine = Engine.open(project)
    read = engine.con.con.execute('SELECT DISTINCT "user" FROM valid_stored')
    assert {row[0] for row in read.fetchall()} == set(stored["user"])


def test_account_id_cannot_be_pseudonymized(tmp_path):
    privacy = {"pseudonymize": {"columns": ["account_id"], "key_env": KEY_VARIABLE}}

    with pytest.raises(ConfigError, match="'account_id' cannot be pseudonymized"):
        write_project(
            tmp_path / "p",
            privacy_config(**privacy),
            {"accounts.csv": ACCOUNTS, "events.csv": EVENTS},
        )


def test_pseudonymized_column_problems_listed_at_once(tmp_path):
    columns = ["usr", "account_id", "value"]
    privacy = {"pseudonymize": {"columns": columns, "key_env": KEY_VARIABLE}}

    with pytest.raises(ConfigError) as raised:
        write_project(
            tmp_path / "p",
            privacy_config(**privacy),
            {"accounts.csv": ACCOUNTS, "events.csv": EVENTS},
        )

    issues = {issue.key: issue for issue in raised.value.issues}
    assert sorted(issues) == [f"privacy.pseudonymize.columns[{i}]" for i in range(3)]
    misspelt, key, numeric = (
        issues[f"privacy.pseudonymize.columns[{i}]"] for i in range(3)
    )
    assert "'usr' is a standard column or attribute of no source" in misspelt.message
    assert misspelt.suggestion == "user"
    assert "'account_id' cannot be pseudonymized" in key.message
    assert "'value' is not a text column (number)" in numeric.message
    assert all(issue.line is not None for issue in issues.values())


def pseudonymized_user_project(root: Path) -> Project:
    """A project that pseudonymizes `user`, a column of the event sources only."""
    config = privacy_config(pseudonymize={"columns": ["user"], "key_env": KEY_VARIABLE})
    config["sources"]["subscriptions"] = {
        "kind": "subscriptions",
        "path": "subscriptions.csv",
    }
    subscriptions = (
        "account_id,start,end,mrr\n"
        f"{ERASED_ACCOUNT},2026-01-01,2026-06-30,100\n"
        f"{KEPT_ACCOUNT},2026-01-01,2026-12-31,200\n"
    )
    files = {
        "accounts.csv": ACCOUNTS,
        "events.csv": EVENTS,
        "subscriptions.csv": subscriptions,
    }
    return write_project(root, config, files)


def test_pseudonymized_project_reads_source_subsets(tmp_path, monkeypatch):
    monkeypatch.setenv(KEY_VARIABLE, KEY)
    project = pseudonymized_user_project(tmp_path / "p")
    for as_of in DATES:
        pipeline.score(project, as_of)

    # These commands read the accounts and subscriptions sources only. No outcome
    # horizon has ended, so the backtest measures nothing and exits with status 1.
    commands = [
        (("report", "--as-of", DATES[0]), 0),
        (("backtest",), 1),
        (("override", "add", KEPT_ACCOUNT, "--score", 70, "--reason", "renewal",
          "--author", "dpo", "--expires", "2099-01-01"), 0),
    ]  # fmt: skip
    for command, status in commands:
        result = run_cli(*command, "--project", project.root)
        assert result.exit_code == status, (command, result.output)
        if command == ("backtest",):
            assert "No labelled observations" in result.stdout
    with StateStore.open(project.config.store.state, project.root) as state:
        token = create_token(state, role="admin", name="ops").token
        with TestClient(create_app(project, state=state)) as client:
            response = client.get(
                f"/api/v1/accounts/{ERASED_ACCOUNT}", headers=bearer(token)
            )
    assert response.status_code == 200, response.text
    assert response.json()["owner"] == "olivia@example.com"

    run = pipeline.score(project, DATES[1], store=False)
    last_user = run.metrics.values["last_user"]
    assert last_user[ERASED_ACCOUNT] == expected_pseudonym("zoe@example.com", KEY)
    assert last_user[KEPT_ACCOUNT] == expected_pseudonym("wanda@example.com", KEY)


def test_project_built_in_code_reads_accounts(tmp_path, monkeypatch):
    monkeypatch.setenv(KEY_VARIABLE, KEY)
    loaded = pseudonymized_user_project(tmp_path / "p")
    data = loaded.config.model_dump(mode="json", by_alias=True, exclude_unset=True)
    project = Project(root=loaded.root, config=ProjectConfig.model_validate(data))

    accounts = read_account_sources(project).accounts()

    assert sorted(accounts.index) == sorted(
        [ERASED_ACCOUNT, KEPT_ACCOUNT, "initech-x3"]
    )


def test_project_built_in_code_checks_columns(tmp_path, monkeypatch):
    monkeypatch.setenv(KEY_VARIABLE, KEY)
    loaded = pseudonymized_user_project(tmp_path / "p")
    data = loaded.config.model_dump(mode="json", by_alias=True, exclude_unset=True)
    data["privacy"]["pseudonymize"]["columns"] = ["usr"]
    project = Project(root=loaded.root, config=ProjectConfig.model_validate(data))

    message = r"privacy.pseudonymize.columns\[0\]: 'usr' is a standard column"
    with pytest.raises(PrivacyError, match=message):
        Engine.open(project)


@pytest.mark.parametrize(
    ("kind", "identifier", "text", "expected"),
    [
        ("person", "jane@example.com", "ask JANE@Example.com.", f"ask {ERASED}."),
        (
            "person",
            "jane@example.com",
            "mary.jane@example.com",
            "mary.jane@example.com",
        ),
        (
            "person",
            "jane@example.com",
            "jane@example.community",
            "jane@example.community",
        ),
        ("person", "u12", "U12 and u123", "U12 and u123"),
        ("person", "u12", "by u12, twice: (u12)", f"by {ERASED}, twice: ({ERASED})"),
        ("account", "A0004", "A0004/A00041/A0004-old", f"{ERASED}/A00041/A0004-old"),
        ("account", "A0004", "A0004", ERASED),
    ],
)
def test_redact_text_whole_words(kind, identifier, text, expected):
    subject = Subject(kind, identifier)

    assert subject.redact_text(text) == expected
    assert subject.mentioned_in(text) == (expected != text)
