"""Alert rules and the guard across an edit of the scorecard (a new version).

The project scores `events_28d` with bounds 0..max, so a score is events / max * 100.
Four weekly dates are scored: D1 and D2 with max 10, D3 and D4 with max 20.

Events (28-day windows end on each date):

- a1: 8 events on 02-25, so 8 on every date: 80, 80, then 40, 40.
- a2: 2 on 02-05, 5 on 02-25, 1 on 03-12, so 7, 5, 6, 6: 70, 50, then 30, 30.
- a3: 4 on 02-20, 2 on 02-25, so 6, 6, 6, 2: 60, 60, then 30, 10.
"""

from __future__ import annotations

import logging
from datetime import date
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
import yaml

from healthscore.config import Project, load_project
from healthscore.monitoring.alerts import AlertOutcome, History, version_change_note
from healthscore.pipeline import score, snapshot_store
from healthscore.store.snapshots import SnapshotStore
from project_factory import minimal_config, write_project

D1, D2 = date(2026, 3, 1), date(2026, 3, 8)
D3, D4 = date(2026, 3, 15), date(2026, 3, 22)

ACCOUNTS = """account_id,name,owner
a1,Acme,ana
a2,Globex,ana
a3,Initech,ana
"""

EVENTS = "account_id,timestamp\n" + "".join(
    f"{account},{day}\n"
    for account, day, count in [
        ("a1", "2026-02-25", 8),
        ("a2", "2026-02-05", 2),
        ("a2", "2026-02-25", 5),
        ("a2", "2026-03-12", 1),
        ("a3", "2026-02-20", 4),
        ("a3", "2026-02-25", 2),
    ]
    for _ in range(count)
)

RULES: list[dict[str, Any]] = [
    {"name": "fell", "kind": "drop", "points": 10, "within": "30d", "cooldown": "0d"},
    {"name": "entered", "kind": "band_change", "to": "at_risk", "cooldown": "0d"},
    {"name": "falling", "kind": "trend", "snapshots": 3, "cooldown": "0d"},
    {
        "name": "busy",
        "kind": "metric",
        "condition": "events_28d >= 8",
        "cooldown": "0d",
    },
]


def project_config(maximum: int) -> dict[str, Any]:
    config = minimal_config(alerts={"rules": RULES})
    measure = config["scorecards"][0]["components"]["usage"]["measures"][0]
    measure["normalize"]["max"] = maximum
    return config


def edit_scorecard(project: Project, maximum: int) -> Project:
    text = yaml.safe_dump(project_config(maximum), sort_keys=False)
    (project.root / "healthscore.yml").write_text(text)
    return load_project(project.root)


def alerts_of(outcome: AlertOutcome) -> list[tuple[str, str]]:
    return sorted((alert.rule, alert.account_id) for alert in outcome.raised)


def monitored(project: Project, day: date) -> AlertOutcome:
    run = score(project, day)
    assert run.monitoring is not None
    return run.monitoring.alerts


@pytest.fixture
def project(tmp_path: Path) -> Project:
    files = {"accounts.csv": ACCOUNTS, "events.csv": EVENTS}
    return write_project(tmp_path, project_config(10), files)


@pytest.fixture
def edited(project: Project) -> tuple[Project, list[AlertOutcome]]:
    """The project scored on D1 and D2, then edited to max 20 and scored on D3."""
    before = [monitored(project, D1), monitored(project, D2)]
    project = edit_scorecard(project, 20)
    return project, [*before, monitored(project, D3)]


def test_scores_before_and_after_edit(edited):
    project, _ = edited
    store = snapshot_store(project)
    scores = store.read_many("scores").set_index(["as_of", "account_id"])["score"]

    assert scores[(D2, "a1")] == pytest.approx(80.0)
    assert scores[(D2, "a2")] == pytest.approx(50.0)
    assert scores[(D3, "a1")] == pytest.approx(40.0)
    assert scores[(D3, "a2")] == pytest.approx(30.0)
    assert scores[(D3, "a3")] == pytest.approx(30.0)
    versions = store.read_many("scores").groupby("as_of")["scorecard_version"].unique()
    assert versions[D1].tolist() == versions[D2].tolist()
    assert versions[D2].tolist() != versions[D3].tolist()


def test_rules_before_edit_compare_history(edited):
    _, outcomes = edited

    assert alerts_of(outcomes[0]) == [("busy", "a1")]
    # a2 fell from 70 to 50 under one scorecard version: a real drop.
    assert alerts_of(outcomes[1]) == [("busy", "a1"), ("fell", "a2")]


def test_version_change_raises_no_comparison_alert(edited):
    _, outcomes = edited

    # Without the version check: fell a1 (40), a2 (40), a3 (30), entered a1, a2,
    # a3 and falling a2 (70, 50, 30), all caused by the new bounds.
    assert alerts_of(outcomes[2]) == [("busy", "a1")]


def test_metric_alert_omits_change_across_versions(edited):
    _, outcomes = edited
    busy = outcomes[2].raised[0]

    assert busy.details["score"] == pytest.approx(40.0)
    assert busy.details["previous_score"] is None
    assert busy.details["change"] is None
    assert "since" not in busy.message


def test_guard_leaves_out_version_change(edited):
    _, outcomes = edited
    guard = outcomes[2].guard

    assert guard.previous_as_of == D2
    assert guard.accounts_compared == 0
    assert guard.accounts_changed_band == 0
    assert guard.accounts_changed_version == 3
    assert guard.to_dict()["accounts_changed_version"] == 3
    assert not guard.held


def test_outcome_reports_version_change(edited):
    project, outcomes = edited
    changes = outcomes[2].version_changes
    version = project.scorecard_version(project.config.scorecards[0])

    assert [(c.scorecard, c.version, c.since, c.accounts) for c in changes] == [
        ("default", version, D3, 3)
    ]
    assert outcomes[1].version_changes == []


def test_version_change_logged_once(project, caplog):
    monitored(project, D1)
    monitored(project, D2)
    project = edit_scorecard(project, 20)
    with caplog.at_level(logging.INFO, logger="healthscore.monitoring.alerts"):
        monitored(project, D3)
    notes = [
        record
        for record in caplog.records
        if "scorecard" in record.getMessage() and "version" in record.getMessage()
    ]

    assert len(notes) == 1
    assert notes[0].levelno == logging.WARNING
    message = notes[0].getMessage()
    assert "3 accounts were compared with no earlier snapshot" in message
    assert D3.isoformat() in message


def test_rules_restart_after_version_change(edited):
    project, _ = edited
    later = monitored(project, D4)

    # a3 fell from 30 to 10 under the new version. Without the version check, a1
    # would fall 40 from its peak of 80 on D2 and a3 would fall three times.
    assert alerts_of(later) == [("busy", "a1"), ("fell", "a3")]
    fell = next(alert for alert in later.raised if alert.rule == "fell")
    assert fell.details["fall"] == pytest.approx(20.0)
    assert fell.details["peak_as_of"] == D3.isoformat()
    assert [(c.since, c.accounts) for c in later.version_changes] == [(D3, 3)]
    note = version_change_note(later.version_changes, D4)
    assert "3 accounts were compared only with the snapshots from 2026-03-15" in note
    # D3 and D4 share a version, so the guard compares every account.
    assert later.guard.accounts_compared == 3
    assert "guard" not in note


def test_rescoring_changed_date_raises_nothing(edited):
    project, _ = edited
    again = monitored(project, D3)

    assert again.raised == []
    assert [(item.alert.rule, item.reason) for item in again.suppressed] == [
        ("busy", "duplicate")
    ]


def test_history_same_version_keeps_unknown(tmp_path):
    store = SnapshotStore(tmp_path / "snapshots")
    earlier = {
        "account_id": ["a", "b", "c"],
        "score": [50.0, 60.0, 70.0],
        "band": ["stable", "stable", "stable"],
        "scorecard": ["default", "default", "default"],
        "scorecard_version": ["v1", "v2", None],
    }
    store.write(D1, {"scores": pd.DataFrame(earlier)}, {})
    current = pd.DataFrame(
        {
            "account_id": ["a", "b", "c"],
            "scorecard": ["default"] * 3,
            "scorecard_version": ["v2"] * 3,
        }
    )
    history = History.load(store, D2, days=30, count=1)

    kept = history.same_version(current)

    # A row without a recorded version is taken as the current version.
    assert sorted(kept.on(D1).index) == ["b", "c"]
    assert kept.dates() == [D1]


def test_description_edit_keeps_version(project):
    for day in (D1, D2, D3):
        monitored(project, day)
    config = project_config(10)
    config["metrics"]["events_28d"]["description"] = "Events in the last 28 days."
    (project.root / "healthscore.yml").write_text(yaml.safe_dump(config))
    described = load_project(project.root)

    card = described.config.scorecards[0]
    assert described.scorecard_version(card) == project.scorecard_version(
        project.config.scorecards[0]
    )
    # With max 10 throughout, a3 falls from 60 on D3 to 20 on D4.
    outcome = monitored(described, D4)
    assert ("fell", "a3") in alerts_of(outcome)
    assert ("entered", "a3") in alerts_of(outcome)
    assert outcome.version_changes == []
