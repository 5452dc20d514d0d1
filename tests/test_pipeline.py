"""The scoring run end to end: what is stored, and what a failed run leaves behind."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from datetime import date, timedelta

import pandas as pd
import pytest

from healthscore.config import load_project
from healthscore.pipeline import score, snapshot_store
from healthscore.sources import SourceError
from healthscore.store.state import StateStore
from project_factory import ACCOUNTS_CSV, minimal_config, write_project

EVENTS = """account_id,timestamp
a1,2024-03-20 10:00:00
a1,2024-03-21 10:00:00
a1,2024-03-22 10:00:00
a2,2024-03-25 10:00:00
"""
AS_OF = date(2024, 4, 1)


@pytest.fixture
def project(tmp_path):
    return write_project(
        tmp_path, minimal_config(), {"accounts.csv": ACCOUNTS_CSV, "events.csv": EVENTS}
    )


def test_run_stores_scores_measures_and_metrics(project):
    run = score(project, AS_OF)
    store = snapshot_store(project)
    assert store.dates() == [AS_OF]
    scores = store.read(AS_OF, "scores").set_index("account_id")
    # events_28d on a 0-10 bounds scale: 3 events -> 30, 1 -> 10, 0 -> 0.
    assert scores["score"].to_dict() == {"a1": 30.0, "a2": 10.0, "a3": 0.0}
    assert scores["band"].to_dict() == {
        "a1": "at_risk",
        "a2": "at_risk",
        "a3": "at_risk",
    }
    measures = store.read(AS_OF, "measures")
    assert set(measures["measure"]) == {"events_28d"}
    metrics = store.read(AS_OF, "metrics")
    assert len(metrics) == 3
    info = store.run_info(AS_OF)
    assert info["scorecard_versions"] == run.versions
    assert info["sources"][1]["rows_used"] == 4


def test_override_changes_stored_score(project):
    with StateStore.open(project.config.store.state, project.root) as state:
        state.add_override(
            account_id="a3",
            measure=None,
            score=75,
            reason="signed a three-year renewal yesterday",
            author="alice",
            expires_on=date.today() + timedelta(days=30),
        )
    score(project, AS_OF)
    scores = snapshot_store(project).read(AS_OF, "scores").set_index("account_id")
    assert scores.loc["a3", "score"] == 75
    assert scores.loc["a3", "computed_score"] == 0
    assert scores.loc["a3", "band"] == "healthy"
    assert scores.loc["a3", "override_author"] == "alice"


def test_unreadable_source_stores_nothing(project):
    score(project, AS_OF)
    before = snapshot_store(project).read(AS_OF, "scores")
    (project.root / "events.csv").write_text("account_id,other\na1,x\n")
    with pytest.raises(
        SourceError, match="column 'timestamp' for 'timestamp' not found"
    ):
        score(load_project(project.root), AS_OF)
    after = snapshot_store(project).read(AS_OF, "scores")
    pd.testing.assert_frame_equal(before, after)


def test_no_store_writes_nothing(project):
    run = score(project, AS_OF, store=False)
    assert run.snapshot is None
    assert snapshot_store(project).dates() == []


KILL_SCRIPT = """
import sys
from datetime import date
from healthscore.config import load_project
from healthscore.pipeline import score
score(load_project(sys.argv[1]), date(2024, 4, 1))
"""


def test_killed_run_leaves_previous_snapshot_whole(tmp_path):
    # Enough accounts that writing the snapshot takes a noticeable time.
    ids = [f"acct-{n:06d}" for n in range(60_000)]
    accounts = "account_id\n" + "\n".join(ids) + "\n"
    events = "account_id,timestamp\n" + "\n".join(f"{i},2024-03-20" for i in ids) + "\n"
    project = write_project(
        tmp_path, minimal_config(), {"accounts.csv": accounts, "events.csv": events}
    )
    score(project, AS_OF)
    store = snapshot_store(project)
    before = store.read(AS_OF, "scores")
    staging = store.folder / ".staging"

    killed = False
    for _attempt in range(20):
        process = subprocess.Popen([sys.executable, "-c", KILL_SCRIPT, str(tmp_path)])
        deadline = time.monotonic() + 120
        while process.poll() is None and time.monotonic() < deadline:
            if staging.exists() and any(staging.iterdir()):
                os.kill(process.pid, signal.SIGKILL)
                killed = True
                break
            time.sleep(0.002)
        process.wait()
        if killed:
            break
    assert killed, "the scoring run always finished before it could be interrupted"

    reopened = snapshot_store(load_project(tmp_path))
    reopened.recover()
    pd.testing.assert_frame_equal(reopened.read(AS_OF, "scores"), before)
    assert reopened.dates() == [AS_OF]


def test_text_metrics_kept_in_snapshot(tmp_path):
    config = minimal_config()
    config["metrics"]["segment"] = {"type": "attribute", "column": "segment"}
    project = write_project(
        tmp_path, config, {"accounts.csv": ACCOUNTS_CSV, "events.csv": EVENTS}
    )
    score(project, AS_OF)
    metrics = snapshot_store(project).read(AS_OF, "metrics")
    segment = metrics[metrics["metric"] == "segment"].set_index("account_id")
    assert segment["value_text"].to_dict() == {
        "a1": "enterprise",
        "a2": "smb",
        "a3": "smb",
    }
    assert segment["value"].isna().all()
    counts = metrics[metrics["metric"] == "events_28d"].set_index("account_id")
    assert counts["value"].to_dict() == {"a1": 3.0, "a2": 1.0, "a3": 0.0}
    assert counts["value_text"].isna().all()
