"""Rescoring of a batch's accounts against the population held by the service."""

from __future__ import annotations

import logging
import os
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import duckdb
import pandas as pd
import pyarrow as pa
import pytest
import yaml

from healthscore.config import Project
from healthscore.engine import Engine
from healthscore.errors import ScoringInputError
from healthscore.metrics import compute_metrics
from healthscore.pipeline import score, snapshot_store
from healthscore.service import live as live_module
from healthscore.service import rescore as rescore_module
from healthscore.service.ingest import GroupCommitter
from healthscore.service.live import (
    AccountSubset,
    LiveScorer,
    RescoreProcessError,
    ScorerProcess,
    live_project,
    today,
)
from healthscore.service.rescore import RescoreWorker
from healthscore.sources.ingest import RollupUpdates, event_store
from healthscore.store.events import EventStoreError
from project_factory import minimal_config, write_project
from test_table_sources import closed_port, expected_scores, plain

ACCOUNTS = """account_id,name,segment,owner,arr
a1,Acme,enterprise,alice,120000
a2,Globex,smb,bob,9000
a3,Initech,smb,bob,4000
a4,Umbrella,smb,carol,1000
"""


def live_config() -> dict[str, Any]:
    """Events of the last 28 days scored by percentile and by zscore per segment."""
    config = minimal_config(store={"state": "sqlite:///.healthscore/state.db"})
    config["sources"] = {
        "accounts": {"kind": "accounts", "path": "accounts.csv"},
        "usage": {"kind": "events", "path": "store"},
    }
    config["metrics"] = {
        "usage_28d": {"type": "count", "source": "usage", "window": "28d"},
    }
    config["scorecards"][0]["components"]["usage"]["measures"] = [
        {
            "name": "usage_rank",
            "metric": "usage_28d",
            "normalize": {"method": "percentile"},
        },
        {
            "name": "usage_z",
            "metric": "usage_28d",
            "normalize": {"method": "zscore", "within": "segment"},
        },
    ]
    return config


@pytest.fixture
def project(tmp_path: Path) -> Project:
    return write_project(tmp_path / "p", live_config(), {"accounts.csv": ACCOUNTS})


@pytest.fixture
def scorer(project: Project) -> Any:
    live = LiveScorer(project)
    yield live
    live.close()


def add_events(project: Project, counts: dict[str, int]) -> None:
    now = datetime.now(UTC).replace(tzinfo=None)
    accounts = [account for account, count in counts.items() for _ in range(count)]
    frame = pd.DataFrame({"account_id": accounts, "timestamp": [now] * len(accounts)})
    event_store(project).append("usage", frame, numeric=[])


def full_run(project: Project) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Scores and measures of a full run of today, indexed by account."""
    run = score(live_project(project), today(project), store=False, monitor=False)
    measures = run.result.measures.set_index(["account_id", "measure"])
    return run.result.scores.set_index("account_id"), measures


def stored(project: Project) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Scores and measures of today's stored snapshot, indexed by account."""
    store = snapshot_store(project)
    scores = store.read(today(project), "scores").set_index("account_id")
    measures = store.read(today(project), "measures")
    return scores, measures.set_index(["account_id", "measure"])


def test_first_batch_is_full_run(project, scorer):
    add_events(project, {"a1": 2})

    result = scorer.rescore(["a1"])

    assert result.full
    assert result.accounts == ["a1"]
    assert result.population == 4


def test_partial_run_matches_full_run(project, scorer):
    scorer.rescore(["a1"])  # every account has 0 events: the full run of the day
    add_events(project, {"a1": 3, "a3": 1})

    result = scorer.rescore(["a1", "a3"])
    scores, measures = stored(project)
    full_scores, full_measures = full_run(project)

    assert not result.full
    assert result.accounts == ["a1", "a3"]
    # Mid-rank percentiles of 3, 1, 0, 0 among four accounts.
    assert measures.loc[("a1", "usage_rank"), "normalized"] == 87.5
    assert measures.loc[("a3", "usage_rank"), "normalized"] == 62.5
    for account in ("a1", "a3"):
        for measure in ("usage_rank", "usage_z"):
            key = (account, measure)
            assert (
                measures.loc[key, "normalized"] == full_measures.loc[key, "normalized"]
            )
        assert scores.loc[account, "score"] == full_scores.loc[account, "score"]


def test_partial_run_scores_every_account_held(project, scorer):
    scorer.rescore(["a1"])
    add_events(project, {"a2": 4})

    scorer.rescore(["a2"])
    scores, _ = stored(project)
    full_scores, _ = full_run(project)

    # The other accounts of the population are scored again with a2's new value.
    pd.testing.assert_series_equal(
        scores["score"].sort_index(), full_scores["score"].sort_index()
    )


def test_unqueued_change_is_missed_until_full_run(project):
    scorer = LiveScorer(project)
    try:
        scorer.rescore(["a1"])
        add_events(project, {"a1": 3, "a3": 3})
        scorer.rescore(["a1", "a3"])
        # Rows of a2 that no batch names, as `healthscore ingest` would store them.
        add_events(project, {"a2": 5, "a3": 0})
        scorer.rescore(["a3"])
        _, measures = stored(project)
        _, full_measures = full_run(project)

        # Held values 3, 3, 0, 0 give a3 rank 3.5 of 4; a full run sees a2 at 5.
        assert measures.loc[("a3", "usage_rank"), "normalized"] == 75.0
        assert full_measures.loc[("a3", "usage_rank"), "normalized"] == 50.0

        scorer.full_interval = 0.0
        result = scorer.rescore(["a3"])
        _, measures = stored(project)
    finally:
        scorer.close()

    assert result.full
    assert measures.loc[("a3", "usage_rank"), "normalized"] == 50.0


def test_replaced_snapshot_forces_full_run(project, scorer):
    scorer.rescore(["a1"])
    score(live_project(project), today(project), monitor=False)

    result = scorer.rescore(["a1"])

    assert result.full


def test_changed_accounts_file_forces_full_run(project, scorer):
    scorer.rescore(["a1"])
    path = project.path("accounts.csv")
    path.write_text(ACCOUNTS + "a5,Hooli,smb,dan,500\n")
    stamp = path.stat().st_mtime_ns + 1_000_000_000
    os.utime(path, ns=(stamp, stamp))

    result = scorer.rescore(["a1"])

    assert result.full
    assert result.population == 5


def test_account_subset_filters_every_source(project):
    add_events(project, {"a1": 2, "a2": 1, "a3": 4})
    engine = Engine.open(live_project(project))
    try:
        subset = AccountSubset(engine.sources, ["a3", "a1", "unknown"])
        rows = subset.rows("usage").execute()
        metrics = compute_metrics(live_project(project), subset, today(project))
    finally:
        engine.con.disconnect()

    assert sorted(set(rows["account_id"])) == ["a1", "a3"]
    assert list(metrics.values.index) == ["a1", "a3"]
    assert metrics.values.loc["a1", "usage_28d"] == 2
    assert metrics.values.loc["a3", "usage_28d"] == 4


# Rollups kept off the request path


def _rows(accounts: list[str], day: datetime, value: list[float]) -> pa.Table:
    return pa.table(
        {
            "account_id": accounts,
            "timestamp": pa.array([day] * len(accounts), pa.timestamp("us")),
            "value": value,
        }
    )


def test_append_without_rollup_then_update(project):
    store = event_store(project)
    day = datetime(2026, 3, 2, 12)
    store.append("usage", _rows(["a1"], day, [1.0]), numeric=["value"])
    updates = RollupUpdates(project)
    committer = GroupCommitter(store, updates)

    committer.append("usage", _rows(["a1", "a2"], day, [2.0, 5.0]), ["value"])
    lagging = store.read_rollup("usage").to_pylist()
    pending = updates.pending()
    changed = updates.apply()
    rollup = {row["account_id"]: row for row in store.read_rollup("usage").to_pylist()}

    assert [(row["account_id"], row["rows"]) for row in lagging] == [("a1", 1)]
    assert pending == {"usage": {day.date()}}
    assert changed == {"usage": [day.date()]}
    assert updates.pending() == {}
    assert rollup["a1"]["rows"] == 2
    assert rollup["a1"]["value_sum"] == 3.0
    assert rollup["a2"]["rows"] == 1
    assert rollup["a2"]["value_max"] == 5.0


def test_append_without_rollup_rejects_changed_type(project):
    store = event_store(project)
    day = datetime(2026, 3, 2, 12)
    store.append("usage", _rows(["a1"], day, [1.0]), numeric=["value"], rollup=False)
    text = _rows(["a1"], day, [1.0]).set_column(2, "value", pa.array(["high"]))

    with pytest.raises(EventStoreError, match="do not fit the columns"):
        store.append("usage", text, numeric=["value"], rollup=False)

    assert store.read_raw("usage").num_rows == 1


def test_rollup_update_failure_keeps_days(project, monkeypatch):
    updates = RollupUpdates(project)
    updates.add("usage", [datetime(2026, 3, 2).date()])

    def fail(*_args: Any) -> list[Any]:
        raise OSError("disk full")

    monkeypatch.setattr(updates.store, "rebuild_rollups", fail)
    with pytest.raises(OSError, match="disk full"):
        updates.apply()

    assert updates.pending() == {"usage": {datetime(2026, 3, 2).date()}}


def test_new_day_forces_full_run(project, scorer):
    yesterday = today(project) - timedelta(days=1)
    scorer.rescore(["a1"], as_of=yesterday)

    result = scorer.rescore(["a1"])

    assert result.full
    assert result.as_of == today(project)


# An empty population


def ended_project(tmp_path: Path) -> Project:
    """The live project scoring active accounts, whose subscriptions all ended."""
    config = live_config()
    config["sources"]["subscriptions"] = {
        "kind": "subscriptions",
        "path": "subscriptions.csv",
    }
    config["scoring"] = {"population": "active"}
    subscriptions = "account_id,start,end\n" + "".join(
        f"{account},2024-01-01,2024-06-30\n" for account in ("a1", "a2", "a3", "a4")
    )
    files = {"accounts.csv": ACCOUNTS, "subscriptions.csv": subscriptions}
    return write_project(tmp_path / "p", config, files)


def test_empty_population_logs_warning_once(tmp_path, caplog):
    project = ended_project(tmp_path)
    add_events(project, {"a1": 1})
    scorer = LiveScorer(project)
    day = today(project).isoformat()
    try:
        with caplog.at_level(logging.DEBUG, "healthscore.service.live"):
            first = scorer.rescore(["a1", "a2"])
            second = scorer.rescore(["a1"])
    finally:
        scorer.close()

    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert first.full
    assert first.accounts == []
    assert first.population == 0
    assert not second.full
    assert second.accounts == []
    assert warnings == [
        f"no account has an active subscription (source subscriptions) on {day}, "
        "so none was scored and the snapshot is empty; score a date that the "
        "subscriptions cover, or set scoring.population: all in healthscore.yml "
        "to score every account"
    ]
    assert snapshot_store(project).read(today(project), "scores").empty


def test_worker_log_counts_scored_accounts(tmp_path, caplog):
    project = ended_project(tmp_path)
    add_events(project, {"a1": 1, "a2": 1})
    worker = RescoreWorker(project, interval=0.05)
    caplog.set_level(logging.INFO, logger="healthscore.service.rescore")
    worker.start()
    try:
        worker.notify(["a1", "a2"])
        deadline = time.monotonic() + 60
        while worker.batches == 0 and time.monotonic() < deadline:
            time.sleep(0.05)  # polls; no assertion depends on the time
    finally:
        worker.stop()

    messages = [record.getMessage() for record in caplog.records]
    logged = [text for text in messages if text.startswith("rescored ")]
    assert worker.batches == 1
    assert len(logged) == 1, messages
    assert logged[0].startswith("rescored 0 accounts in ")
    assert logged[0].endswith(
        " s (full run); 2 queued accounts are not in the population as of "
        f"{today(project).isoformat()}"
    )


def test_worker_log_without_outside_accounts(project, caplog):
    add_events(project, {"a1": 1})
    worker = RescoreWorker(project, interval=0.05)
    caplog.set_level(logging.INFO, logger="healthscore.service.rescore")
    worker.start()
    try:
        worker.notify(["a1"])
        deadline = time.monotonic() + 60
        while worker.batches == 0 and time.monotonic() < deadline:
            time.sleep(0.05)  # polls; no assertion depends on the time
    finally:
        worker.stop()

    messages = [record.getMessage() for record in caplog.records]
    logged = [text for text in messages if text.startswith("rescored ")]
    assert len(logged) == 1, messages
    assert logged[0].startswith("rescored 1 accounts in ")
    assert logged[0].endswith(" s (full run)")


# Scoring in a child process


def test_scorer_process_keeps_population(project):
    scorer = ScorerProcess(project)
    try:
        first = scorer.rescore(["a1"])
        add_events(project, {"a1": 3, "a3": 1})
        second = scorer.rescore(["a3", "a1"])
    finally:
        scorer.close()
    _, measures = stored(project)

    assert first.full
    assert not second.full
    assert second.accounts == ["a1", "a3"]
    assert measures.loc[("a1", "usage_rank"), "normalized"] == 87.5


def test_scorer_process_error_then_restart(project):
    scorer = ScorerProcess(project)
    try:
        scorer.rescore(["a1"])
        (project.root / "accounts.csv").unlink()
        with pytest.raises(RescoreProcessError, match=r"SourceError: .*accounts"):
            scorer.rescore(["a1"])
        (project.root / "accounts.csv").write_text(ACCOUNTS)
        result = scorer.rescore(["a1"])
    finally:
        scorer.close()

    assert result.full
    assert result.population == 4


def test_failed_batch_logs_error_type_only(project, caplog, monkeypatch):
    monkeypatch.setattr(rescore_module, "RETRY_PAUSE_SECONDS", 0.05)
    worker = RescoreWorker(project, interval=0.05)
    calls: list[list[str]] = []

    def failing(accounts: list[str]) -> None:
        calls.append(accounts)
        raise RescoreProcessError("KeyError: 'a1'", "KeyError")

    monkeypatch.setattr(worker.scorer, "rescore", failing)
    with caplog.at_level(logging.DEBUG, "healthscore.service.rescore"):
        worker.start()
        worker.notify(["a1"])
        try:
            deadline = time.monotonic() + 10
            while worker.failures == 0 and time.monotonic() < deadline:
                time.sleep(0.02)
        finally:
            worker.stop()

    errors = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
    debug = [r.getMessage() for r in caplog.records if r.levelno == logging.DEBUG]
    assert calls[0] == ["a1"]
    assert "rescoring 1 accounts failed (KeyError)" in errors[0]
    assert all("a1" not in message for message in errors)
    assert any("KeyError: 'a1'" in message for message in debug)


def test_rescore_empty_accounts_keep_scores(project: Project) -> None:
    scorer = LiveScorer(project)
    try:
        first = scorer.rescore(["a1"])
        # A reload of the accounts file leaves only its header for a moment.
        (project.root / "accounts.csv").write_text(
            ACCOUNTS.splitlines()[0] + "\n", encoding="utf-8"
        )
        with pytest.raises(ScoringInputError) as raised:
            scorer.rescore(["a1"])
    finally:
        scorer.close()

    assert first.population == 4
    assert "The stored snapshot of" in str(raised.value)
    assert "has the scores of 4 accounts, so it was kept" in str(raised.value)
    stored = snapshot_store(project).read(today(project), "scores")
    assert sorted(stored["account_id"]) == ["a1", "a2", "a3", "a4"]


# Shadow scores and the snapshot table


def table_project(tmp_path: Path, settings: dict[str, str]) -> Project:
    """The live project, writing its scores into `store.snapshot_table` too."""
    config = live_config()
    config["store"]["snapshot_table"] = settings
    return write_project(tmp_path / "p", config, {"accounts.csv": ACCOUNTS})


def duckdb_table(path: Path) -> list[dict[str, Any]]:
    """Every row of the DuckDB snapshot table, by date and account."""
    con = duckdb.connect(str(path), read_only=True)
    try:
        frame = con.execute(
            "SELECT * FROM health_scores ORDER BY as_of, account_id"
        ).df()
    finally:
        con.close()
    frame["as_of"] = [value.date() for value in frame["as_of"]]
    return [plain(row) for row in frame.to_dict("records")]


def test_rescore_writes_snapshot_table(tmp_path: Path) -> None:
    database = tmp_path / "scores.duckdb"
    settings = {"connection": f"duckdb://{database}", "table": "health_scores"}
    project = table_project(tmp_path, settings)
    scorer = LiveScorer(project)
    try:
        first = scorer.rescore(["a1"])
        first_rows = duckdb_table(database)
        add_events(project, {"a1": 3, "a3": 1})
        second = scorer.rescore(["a1", "a3"])
        second_rows = duckdb_table(database)
    finally:
        scorer.close()

    assert first.full
    assert first.snapshot_table_error is None
    assert not second.full
    assert second.snapshot_table_error is None
    assert len(first_rows) == 4
    assert second_rows == expected_scores(project, today(project))
    # The batch changed the scores, and the table contains only the new ones.
    assert second_rows != first_rows


def test_rescore_stores_shadow_scores(tmp_path: Path) -> None:
    shadow = live_config()["scorecards"]
    shadow[0]["components"]["usage"]["measures"] = [
        {
            "metric": "usage_28d",
            "normalize": {"method": "bounds", "min": 0, "max": 2},
        }
    ]
    files = {"accounts.csv": ACCOUNTS, "proposed.yml": yaml.safe_dump(
        {"scorecards": shadow})}  # fmt: skip
    config = live_config()
    config["validation"] = {"shadow": ["proposed.yml"]}
    project = write_project(tmp_path / "p", config, files)
    scorer = LiveScorer(project)
    try:
        scorer.rescore(["a1"])
        add_events(project, {"a1": 1, "a2": 3})
        result = scorer.rescore(["a1", "a2"])
    finally:
        scorer.close()

    assert not result.full
    stored = snapshot_store(project).read(today(project), "shadow_scores")
    expected = score(live_project(project), today(project), store=False).shadow
    assert expected is not None
    pd.testing.assert_frame_equal(stored, expected)
    # Bounds 0 to 2 give 50 for one event and 100 for three, by hand.
    by_account = stored.set_index("account_id")["score"]
    assert by_account["a1"] == 50.0
    assert by_account["a2"] == 100.0
    assert by_account["a3"] == 0.0


@pytest.mark.parametrize(("pause", "retried"), [(60.0, False), (0.0, True)])
def test_rescore_table_failure_pauses_writes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, pause: float, retried: bool
) -> None:
    monkeypatch.setattr(live_module, "SNAPSHOT_TABLE_RETRY_SECONDS", pause)
    connection = f"postgresql://postgres:hunter22@127.0.0.1:{closed_port()}/test"
    project = table_project(tmp_path, {"connection": connection, "table": "scores"})
    scorer = LiveScorer(project)
    try:
        first = scorer.rescore(["a1"])
        add_events(project, {"a1": 2})
        second = scorer.rescore(["a1"])
    finally:
        scorer.close()

    assert first.snapshot_table_error is not None
    assert "cannot connect to postgresql://postgres@127.0.0.1:" in (
        first.snapshot_table_error
    )
    assert "hunter22" not in first.snapshot_table_error
    # The snapshot is stored and the alert step ran despite the failure.
    assert first.monitoring is not None
    scores = snapshot_store(project).read(today(project), "scores")
    assert scores.set_index("account_id").loc["a1", "score"] > 0
    assert (second.snapshot_table_error is not None) == retried


def test_rescore_table_recovers_after_failure(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(live_module, "SNAPSHOT_TABLE_RETRY_SECONDS", 0.0)
    database = tmp_path / "scores.duckdb"
    settings = {"connection": f"duckdb://{database}", "table": "health_scores"}
    project = table_project(tmp_path, settings)
    # A table without the snapshot columns cannot be written.
    con = duckdb.connect(str(database))
    con.execute("CREATE TABLE health_scores (account_id VARCHAR)")
    con.close()
    scorer = LiveScorer(project)
    try:
        failed = scorer.rescore(["a1"])
        con = duckdb.connect(str(database))
        con.execute("DROP TABLE health_scores")
        con.close()
        add_events(project, {"a2": 1})
        recovered = scorer.rescore(["a2"])
    finally:
        scorer.close()

    assert failed.snapshot_table_error is not None
    assert "has no column as_of" in failed.snapshot_table_error
    assert recovered.snapshot_table_error is None
    assert duckdb_table(database) == expected_scores(project, today(project))
    assert snapshot_store(project).table_pending() == []


def test_rescore_table_failure_leaves_day_marked(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(live_module, "SNAPSHOT_TABLE_RETRY_SECONDS", 60.0)
    connection = f"postgresql://127.0.0.1:{closed_port()}/test"
    project = table_project(tmp_path, {"connection": connection, "table": "scores"})
    scorer = LiveScorer(project)
    try:
        failed = scorer.rescore(["a1"])
        add_events(project, {"a1": 1})
        paused = scorer.rescore(["a1"])
    finally:
        scorer.close()

    assert failed.snapshot_table_error is not None
    assert paused.snapshot_table_error is None  # skipped during the pause
    # Both batches stored the Parquet snapshot; the table still lacks the day, so
    # the day stays marked for the next writer.
    assert snapshot_store(project).table_pending() == [today(project)]


def test_rescore_writes_dates_left_pending(tmp_path: Path) -> None:
    database = tmp_path / "scores.duckdb"
    settings = {"connection": f"duckdb://{database}", "table": "health_scores"}
    project = table_project(tmp_path, settings)
    add_events(project, {"a1": 2, "a2": 1})
    earlier = today(project) - timedelta(days=3)
    score(live_project(project), earlier, monitor=False)
    # A run stopped between the Parquet snapshot and the table write leaves the
    # date marked and its rows missing from the table.
    con = duckdb.connect(str(database))
    con.execute("DELETE FROM health_scores WHERE as_of = ?", [earlier])
    con.close()
    snapshot_store(project).mark_table_pending([earlier])
    scorer = LiveScorer(project)
    try:
        result = scorer.rescore(["a1"])
    finally:
        scorer.close()

    assert result.snapshot_table_error is None
    rows = duckdb_table(database)
    assert sorted({row["as_of"] for row in rows}) == [earlier, today(project)]
    assert [row for row in rows if row["as_of"] == earlier] == expected_scores(
        project, earlier
    )
    assert snapshot_store(project).table_pending() == []


def test_worker_logs_table_failure(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    connection = f"postgresql://127.0.0.1:{closed_port()}/test"
    project = table_project(tmp_path, {"connection": connection, "table": "scores"})
    add_events(project, {"a1": 1})
    worker = RescoreWorker(project, interval=0.05)
    caplog.set_level(logging.ERROR, logger="healthscore.service.rescore")
    worker.start()
    try:
        worker.notify(["a1"])
        deadline = time.monotonic() + 60
        while worker.batches == 0 and time.monotonic() < deadline:
            time.sleep(0.05)  # polls; no assertion depends on the time
    finally:
        worker.stop()

    assert worker.batches >= 1
    assert worker.failures == 0
    assert worker.table_failures >= 1
    messages = [record.getMessage() for record in caplog.records]
    logged = [text for text in messages if "writing store.snapshot_table" in text]
    assert logged, messages
    assert "cannot connect to" in logged[0]
    assert "The Parquet snapshot is stored" in logged[0]
