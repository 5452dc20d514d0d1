"""Safety of `score`: stored scores kept from an empty source, the snapshot table's
schema checked before anything is stored, and raw days purged after scoring."""

from __future__ import annotations

import json
import logging
import socket
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import duckdb
import pandas as pd
import psycopg
import pytest
from typer.testing import CliRunner, Result

from healthscore.cli import app
from healthscore.errors import ScoringInputError, SnapshotTableError
from healthscore.pipeline import score, snapshot_store
from healthscore.sources.ingest import event_store
from project_factory import ACCOUNTS_CSV, minimal_config, write_project

AS_OF = date(2026, 6, 1)
HEADER = ACCOUNTS_CSV.splitlines()[0] + "\n"
EVENTS_CSV = (
    "account_id,timestamp,event_type\n"
    "a1,2026-05-20 10:00:00,login\n"
    "a2,2026-05-21 10:00:00,view\n"
)
SUBSCRIPTIONS_CSV = "account_id,start,end\na1,2026-01-01,\na2,2026-01-01,\n"
PG_URL = "postgresql://postgres@127.0.0.1:5432/test"


def make_project(root: Path, **overrides: object):
    files: dict[str, str] = {"accounts.csv": ACCOUNTS_CSV, "events.csv": EVENTS_CSV}
    if "sources" in overrides:
        files["subscriptions.csv"] = SUBSCRIPTIONS_CSV
    return write_project(root, minimal_config(**overrides), files)


def with_subscriptions() -> dict[str, object]:
    sources = minimal_config()["sources"]
    sources["subscriptions"] = {"kind": "subscriptions", "path": "subscriptions.csv"}
    return {"sources": sources}


def stored_ids(project, as_of: date = AS_OF) -> list[str]:
    scores = snapshot_store(project).read(as_of, "scores")
    return sorted(scores["account_id"].astype(str))


def run(*args: str | Path) -> Result:
    runner = CliRunner(env={"COLUMNS": "200", "NO_COLOR": "1"})
    return runner.invoke(app, [str(arg) for arg in args], prog_name="healthscore")


def flat(text: str) -> str:
    return " ".join(text.split())


# An empty population source does not replace stored scores


def test_empty_accounts_keep_stored_scores(tmp_path):
    project = make_project(tmp_path)
    score(project, AS_OF, monitor=False)
    created = snapshot_store(project).run_info(AS_OF)["created_at"]
    (tmp_path / "accounts.csv").write_text(HEADER)

    with pytest.raises(ScoringInputError) as raised:
        score(project, AS_OF, monitor=False)

    message = flat(str(raised.value))
    assert message.startswith(
        "no account was scored as of 2026-06-01 because the accounts source "
        "'accounts' has no rows. The stored snapshot of 2026-06-01 has the scores "
        "of 3 accounts, so it was kept and nothing was stored."
    )
    assert "run `healthscore score` with --allow-empty" in message
    assert stored_ids(project) == ["a1", "a2", "a3"]
    assert snapshot_store(project).run_info(AS_OF)["created_at"] == created


def test_allow_empty_replaces_stored_scores(tmp_path):
    project = make_project(tmp_path)
    score(project, AS_OF, monitor=False)
    (tmp_path / "accounts.csv").write_text(HEADER)

    run_ = score(project, AS_OF, monitor=False, allow_empty=True)

    assert run_.result.scores.empty
    assert stored_ids(project) == []


def test_empty_accounts_store_new_date(tmp_path):
    project = make_project(tmp_path)
    (tmp_path / "accounts.csv").write_text(HEADER)

    run_ = score(project, AS_OF, monitor=False)

    assert run_.snapshot is not None
    assert stored_ids(project) == []


def test_excluded_accounts_keep_stored_scores(tmp_path):
    project = make_project(tmp_path)
    score(project, AS_OF, monitor=False)
    # Rows without an account id are excluded.
    (tmp_path / "accounts.csv").write_text(HEADER + ",Acme,smb,bob,1\n,X,smb,bob,2\n")

    with pytest.raises(ScoringInputError) as raised:
        score(project, AS_OF, monitor=False)

    assert (
        "the accounts source 'accounts' has no usable row: all 2 of its rows were "
        "excluded"
    ) in flat(str(raised.value))
    assert stored_ids(project) == ["a1", "a2", "a3"]


def test_empty_subscriptions_keep_stored_scores(tmp_path):
    project = make_project(tmp_path, **with_subscriptions())
    score(project, AS_OF, monitor=False)
    assert stored_ids(project) == ["a1", "a2"]
    (tmp_path / "subscriptions.csv").write_text("account_id,start,end\n")

    with pytest.raises(ScoringInputError) as raised:
        score(project, AS_OF, monitor=False)

    assert "the subscriptions source 'subscriptions' has no rows" in str(raised.value)
    assert stored_ids(project) == ["a1", "a2"]


def test_empty_accounts_keep_table_rows(tmp_path):
    database = tmp_path / "scores.duckdb"
    table = {"connection": f"duckdb://{database}", "table": "scores"}
    project = make_project(tmp_path / "p", store={"snapshot_table": table})
    score(project, AS_OF, monitor=False)
    (tmp_path / "p" / "accounts.csv").write_text(HEADER)

    with pytest.raises(ScoringInputError):
        score(project, AS_OF, monitor=False)

    with duckdb.connect(str(database), read_only=True) as con:
        rows = con.execute("SELECT account_id FROM scores ORDER BY 1").fetchall()
    assert rows == [("a1",), ("a2",), ("a3",)]
    assert snapshot_store(project).table_pending() == []


def test_cli_empty_accounts_exit_1(tmp_path):
    project = make_project(tmp_path)
    root = project.root
    assert run("score", "--project", root, "--as-of", "2026-06-01").exit_code == 0
    (tmp_path / "accounts.csv").write_text(HEADER)

    refused = run("score", "--project", root, "--as-of", "2026-06-01")

    assert refused.exit_code == 1
    assert "Traceback" not in refused.output
    assert "the accounts source 'accounts' has no rows" in flat(refused.stderr)
    assert stored_ids(project) == ["a1", "a2", "a3"]

    allowed = run("score", "--project", root, "--as-of", "2026-06-01", "--allow-empty")

    assert allowed.exit_code == 0, allowed.output
    assert allowed.stdout.startswith("Scored 0 accounts of test as of 2026-06-01.")
    assert "warning: the accounts source has no usable account" in flat(allowed.stderr)
    assert stored_ids(project) == []


# The snapshot table's schema is checked before anything is stored


def test_missing_postgres_schema_stores_nothing(tmp_path, postgres_schema):
    missing = f"{postgres_schema}_missing"
    table = {"connection": PG_URL, "table": f"{missing}.scores"}
    project = make_project(tmp_path, store={"snapshot_table": table})

    with pytest.raises(SnapshotTableError) as raised:
        score(project, AS_OF, monitor=False)

    message = flat(str(raised.value))
    assert (
        f"schema '{missing}' of table '{missing}.scores' does not exist in "
        "postgresql://postgres@127.0.0.1:5432/test"
    ) in message
    assert f'CREATE SCHEMA "{missing}"' in message
    assert snapshot_store(project).dates() == []
    assert snapshot_store(project).table_pending() == []


def test_existing_postgres_schema_written(tmp_path, postgres_schema):
    table = {"connection": PG_URL, "table": f"{postgres_schema}.scores"}
    project = make_project(tmp_path, store={"snapshot_table": table})

    run_ = score(project, AS_OF, monitor=False)

    assert run_.snapshot_table is not None
    assert run_.snapshot_table.rows == 3
    with psycopg.connect(PG_URL) as con:
        rows = con.execute(
            f'SELECT account_id FROM "{postgres_schema}".scores ORDER BY 1'
        ).fetchall()
    assert rows == [("a1",), ("a2",), ("a3",)]


def test_cli_missing_schema_exit_1(tmp_path, postgres_schema):
    missing = f"{postgres_schema}_missing"
    table = {"connection": PG_URL, "table": f"{missing}.scores"}
    project = make_project(tmp_path, store={"snapshot_table": table})

    result = run("score", "--project", project.root, "--as-of", "2026-06-01")

    assert result.exit_code == 1
    assert f"schema '{missing}'" in flat(result.stderr)
    assert "nothing was stored" in flat(result.stderr)
    assert snapshot_store(project).dates() == []


def test_validate_missing_postgres_schema(tmp_path, postgres_schema):
    missing = f"{postgres_schema}_missing"
    table = {"connection": PG_URL, "table": f"{missing}.scores"}
    project = make_project(tmp_path, store={"snapshot_table": table})

    result = run("validate", "--project", project.root)

    assert result.exit_code == 1
    assert f"schema '{missing}' of table '{missing}.scores' does not exist" in flat(
        result.stderr
    )
    assert f'CREATE SCHEMA "{missing}"' in flat(result.stderr)


def test_validate_existing_duckdb_schema(tmp_path):
    database = tmp_path / "scores.duckdb"
    table = {"connection": f"duckdb://{database}", "table": "reports.scores"}
    project = make_project(tmp_path / "p", store={"snapshot_table": table})
    duckdb.connect(str(database)).close()

    missing = run("validate", "--project", project.root)

    assert missing.exit_code == 1
    assert "schema 'reports' of table 'reports.scores' does not exist" in flat(
        missing.stderr
    )

    with duckdb.connect(str(database)) as con:
        con.execute("CREATE SCHEMA reports")
    present = run("validate", "--project", project.root)

    assert present.exit_code == 0, present.output
    assert "healthscore.yml is valid" in present.stdout


def test_unreachable_schema_check_keeps_parquet(tmp_path):
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    connection = f"postgresql://postgres@127.0.0.1:{port}/test"
    table = {"connection": connection, "table": "reports.scores"}
    project = make_project(tmp_path, store={"snapshot_table": table})

    with pytest.raises(SnapshotTableError) as raised:
        score(project, AS_OF, monitor=False)

    message = flat(str(raised.value))
    assert f"cannot connect to postgresql://postgres@127.0.0.1:{port}/test" in message
    assert "The Parquet snapshot of 2026-06-01 is stored" in message
    assert stored_ids(project) == ["a1", "a2", "a3"]


def test_missing_duckdb_schema_stores_nothing(tmp_path):
    database = tmp_path / "scores.duckdb"
    table = {"connection": f"duckdb://{database}", "table": "reports.scores"}
    project = make_project(tmp_path / "p", store={"snapshot_table": table})

    # First without the file, then with a file that has no such schema.
    for _ in range(2):
        with pytest.raises(SnapshotTableError) as raised:
            score(project, AS_OF, monitor=False)
        assert "schema 'reports' of table 'reports.scores' does not exist" in str(
            raised.value
        )
        assert snapshot_store(project).dates() == []
        duckdb.connect(str(database)).close()

    with duckdb.connect(str(database)) as con:
        con.execute("CREATE SCHEMA reports")
    assert score(project, AS_OF, monitor=False).snapshot_table.rows == 3


# Raw days purged after scoring are reported


def retention_project(root: Path):
    config = minimal_config(
        sources={
            "accounts": {"kind": "accounts", "path": "accounts.csv"},
            "events": {"kind": "events", "path": "store"},
        },
        metrics={
            "events_28d": {"type": "count", "source": "events_daily", "window": "28d"}
        },
        retention={"raw_events": "20d", "after_score": True},
    )
    return write_project(root, config, {"accounts.csv": ACCOUNTS_CSV})


def test_score_reports_purged_days(tmp_path):
    project = retention_project(tmp_path)
    # Two rows a day for 10 days in 2025, so every day is past the retention age.
    first = datetime(2025, 1, 1, 10)
    rows = [
        (account, first + timedelta(days=offset), "login")
        for offset in range(10)
        for account in ("a1", "a2")
    ]
    events = pd.DataFrame(rows, columns=["account_id", "timestamp", "event_type"])
    event_store(project).append("events", events, numeric=[])
    cutoff = (datetime.now(UTC).date() - timedelta(days=20)).isoformat()

    result = run("score", "--project", tmp_path, "--as-of", "2026-06-01", "--json")

    assert result.exit_code == 0, result.output
    (purged,) = json.loads(result.stdout)["purged"]
    assert purged["source"] == "events"
    assert purged["cutoff"] == cutoff
    days = [(first.date() + timedelta(days=offset)).isoformat() for offset in range(10)]
    assert purged["purged"] == dict.fromkeys(days, 2)
    assert purged["kept"] == {}
    assert (
        f"Purged 10 raw days (20 rows) of events before {cutoff} "
        "(retention.after_score)."
    ) in flat(result.stderr)
    assert event_store(project).raw_days("events") == []


def test_score_without_purge_reports_none(tmp_path):
    project = make_project(tmp_path)

    result = run("score", "--project", project.root, "--as-of", "2026-06-01", "--json")

    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["purged"] is None
    assert "Purged" not in result.stderr


def test_duckdb_main_schema_in_new_file(tmp_path):
    database = tmp_path / "scores.duckdb"
    table = {"connection": f"duckdb://{database}", "table": "main.scores"}
    project = make_project(tmp_path / "p", store={"snapshot_table": table})

    assert run("validate", "--project", project.root).exit_code == 0
    assert score(project, AS_OF, monitor=False).snapshot_table.rows == 3
    with duckdb.connect(str(database)) as con:
        assert con.execute("SELECT count(*) FROM main.scores").fetchone() == (3,)


def test_duckdb_schema_case_ignored(tmp_path):
    database = tmp_path / "scores.duckdb"
    with duckdb.connect(str(database)) as con:
        con.execute("CREATE SCHEMA reports")
    table = {"connection": f"duckdb://{database}", "table": "Reports.Scores"}
    project = make_project(tmp_path / "p", store={"snapshot_table": table})

    validated = run("validate", "--project", project.root)

    assert validated.exit_code == 0, validated.output
    assert score(project, AS_OF, monitor=False).snapshot_table.rows == 3
    with duckdb.connect(str(database)) as con:
        assert con.execute("SELECT count(*) FROM reports.scores").fetchone() == (3,)


def test_unusable_events_store_nothing(tmp_path):
    project = make_project(tmp_path)
    assert score(project, AS_OF, monitor=False).snapshot is not None
    before = stored_ids(project)
    # Every event row's timestamp is unreadable, so no event can count.
    (tmp_path / "events.csv").write_text(
        "account_id,timestamp\na1,yesterday\na2,someday\n"
    )

    with pytest.raises(ScoringInputError) as raised:
        score(project, AS_OF, monitor=False)

    message = flat(str(raised.value))
    assert message.startswith(
        "the events source 'events' has no usable row: all 2 of its rows were "
        "excluded (2 "
    )
    assert "nothing was stored for 2026-06-01" in message
    assert "--allow-empty" in message
    assert stored_ids(project) == before
    allowed = score(project, AS_OF, monitor=False, allow_empty=True)
    assert allowed.snapshot is not None


def test_backfill_unusable_events_store_nothing(tmp_path):
    from healthscore.monitoring.backfill import backfill

    project = make_project(tmp_path)
    (tmp_path / "events.csv").write_text(
        "account_id,timestamp\na1,yesterday\na2,someday\n"
    )
    dates = [date(2026, 5, 18), date(2026, 5, 25), AS_OF]

    with pytest.raises(ScoringInputError) as raised:
        backfill(project, dates)

    message = flat(str(raised.value))
    assert message.startswith(
        "the events source 'events' has no usable row: all 2 of its rows were excluded"
    )
    assert message.endswith("(`healthscore validate --data` shows example rows)")
    assert snapshot_store(project).dates() == []


def test_late_or_unknown_rows_still_score(tmp_path, caplog):
    project = make_project(tmp_path)
    # One row is later than the as-of date and one fails, so none is usable, but
    # the source may only start after the date.
    (tmp_path / "events.csv").write_text(
        "account_id,timestamp\na1,2026-07-01 10:00:00\na2,bad\n"
    )
    assert score(project, AS_OF, monitor=False).snapshot is not None

    # Rows of accounts that the accounts source lacks may be new accounts.
    (tmp_path / "events.csv").write_text(
        "account_id,timestamp\nnew1,2026-05-20 10:00:00\nnew2,2026-05-21 10:00:00\n"
    )
    with caplog.at_level(logging.WARNING, logger="healthscore.pipeline"):
        assert score(project, AS_OF, monitor=False).snapshot is not None
    assert (
        "every one of the 2 rows of source 'events' names an account that the "
        "accounts source lacks"
    ) in caplog.text
