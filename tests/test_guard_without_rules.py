"""The data guard when a flagged run has no alert to hold.

The guard's own alert (rule `guard`, account `*`) gives the reasons a date's alerts
are held and how to release them. A run that the guard flags but that stores no
alert has nothing to release, so it stays flagged without that alert and without a
warning about holding 0 alerts.
"""

from __future__ import annotations

import json
import logging
import math
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from typer.testing import CliRunner

from healthscore.cli import app
from healthscore.config import Project
from healthscore.monitoring.alerts import evaluate_alerts
from healthscore.monitoring.guard import PSI_EPSILON
from healthscore.monitoring.outbox import list_alerts
from healthscore.pipeline import score, snapshot_store
from healthscore.service.rescore import rescore_accounts, today
from healthscore.sources.ingest import event_store
from healthscore.store import StateStore
from project_factory import ACCOUNTS_CSV, minimal_config, write_project

FIRST = "2026-06-01"
SECOND = "2026-07-15"
ALERTS_LOGGER = "healthscore.monitoring.alerts"

#: Ten events of a1 in May: as of FIRST a1 scores 100 (bounds 0-10), a2 and a3 0.
#: As of SECOND the events are out of the 28-day window, so a1 scores 0 too and
#: 1 account of 3 (33 %) changes band, more than the default limit of 20 %.
EVENTS_CSV = "account_id,timestamp,event_type\n" + "".join(
    f"a1,2026-05-{day:02d} 10:00:00,login\n" for day in range(10, 20)
)


def flagged_project(root: Path, **overrides: Any) -> Project:
    """The project with FIRST stored; scoring SECOND makes the guard flag the run."""
    project = write_project(
        root,
        minimal_config(**overrides),
        {"accounts.csv": ACCOUNTS_CSV, "events.csv": EVENTS_CSV},
    )
    score(project, datetime.fromisoformat(FIRST).date(), monitor=False)
    return project


def stored_alerts(project: Project) -> list[tuple[str, str, bool]]:
    with StateStore.open(project.config.store.state, project.root) as state:
        records = list_alerts(state)
    return sorted(
        (record.alert.rule, record.alert.account_id, record.held) for record in records
    )


def alert_messages(caplog: pytest.LogCaptureFixture, level: int) -> list[str]:
    return [
        record.getMessage()
        for record in caplog.records
        if record.name == ALERTS_LOGGER and record.levelno == level
    ]


def run_cli(*args: str | Path) -> Any:
    runner = CliRunner(env={"COLUMNS": "200", "NO_COLOR": "1"})
    return runner.invoke(app, [str(arg) for arg in args], prog_name="healthscore")


# Without alert rules


def test_flagged_run_without_rules_stores_nothing(tmp_path, caplog):
    project = flagged_project(tmp_path)
    run = score(project, datetime.fromisoformat(SECOND).date(), monitor=False)

    caplog.set_level(logging.DEBUG, logger=ALERTS_LOGGER)
    with StateStore.open(project.config.store.state, project.root) as state:
        outcome = evaluate_alerts(project, run, snapshot_store(project), state)

    assert outcome.held is True
    assert outcome.raised == []
    assert outcome.suppressed == []
    assert stored_alerts(project) == []
    # The decision keeps the comparison: a1 left the healthy band.
    assert outcome.guard.accounts_compared == 3
    assert outcome.guard.accounts_changed_band == 1
    assert outcome.guard.reasons() == [
        "1 of 3 accounts (33%) changed band since 2026-06-01, more than the limit "
        "of 20%"
    ]
    warnings = alert_messages(caplog, logging.WARNING)
    assert not any("holding" in message for message in warnings)
    assert warnings == [
        "the guard flagged the run of 2026-07-15 as a possible data problem, but "
        "the run stored no new alert, so none was held and no guard alert was "
        "raised: 1 of 3 accounts (33%) changed band since 2026-06-01, more than the "
        "limit of 20%"
    ]


def test_flagged_run_keeps_distribution_and_psi(tmp_path):
    project = flagged_project(tmp_path)
    run = score(project, datetime.fromisoformat(SECOND).date(), monitor=False)

    with StateStore.open(project.config.store.state, project.root) as state:
        outcome = evaluate_alerts(project, run, snapshot_store(project), state)

    # Before: a2 and a3 in bin 0-10 and a1 in bin 90-100; after: all three in 0-10.
    counts = [row["count"] for row in outcome.guard.distribution]
    assert counts == [3, 0, 0, 0, 0, 0, 0, 0, 0, 0]
    third = 1 / 3
    by_hand = (1 - 2 * third) * math.log(1 / (2 * third)) + (
        PSI_EPSILON - third
    ) * math.log(PSI_EPSILON / third)
    assert outcome.guard.psi == pytest.approx(by_hand)


def test_cli_flagged_run_without_rules(tmp_path):
    project = flagged_project(tmp_path)

    result = run_cli("score", "--project", project.root, "--as-of", SECOND, "--json")

    assert result.exit_code == 0, result.output
    output = json.loads(result.stdout)
    assert output["alerts_raised"] == 0
    assert output["guard"]["held"] is True
    assert output["guard"]["accounts_changed_band"] == 1
    assert stored_alerts(project) == []

    listed = run_cli("alerts", "list", "--project", project.root)

    assert listed.exit_code == 0, listed.output
    assert "held" not in listed.stdout
    assert "console" not in listed.stdout


def test_flag_warned_once_per_date(tmp_path, caplog):
    project = flagged_project(tmp_path)
    run = score(project, datetime.fromisoformat(SECOND).date(), monitor=False)

    caplog.set_level(logging.DEBUG, logger=ALERTS_LOGGER)
    with StateStore.open(project.config.store.state, project.root) as state:
        for _ in range(3):
            outcome = evaluate_alerts(project, run, snapshot_store(project), state)
            assert outcome.held is True

    assert len(alert_messages(caplog, logging.WARNING)) == 1
    assert stored_alerts(project) == []


# With alert rules


def test_flagged_run_without_matches_stores_nothing(tmp_path, caplog):
    # No account has more than 100 events, so the rule matches none.
    rules = [{"name": "busy", "kind": "metric", "condition": "events_28d > 100"}]
    project = flagged_project(tmp_path, alerts={"rules": rules})
    run = score(project, datetime.fromisoformat(SECOND).date(), monitor=False)

    caplog.set_level(logging.DEBUG, logger=ALERTS_LOGGER)
    with StateStore.open(project.config.store.state, project.root) as state:
        outcome = evaluate_alerts(project, run, snapshot_store(project), state)

    assert outcome.held is True
    assert outcome.raised == []
    assert stored_alerts(project) == []
    assert not any(
        "holding" in message for message in alert_messages(caplog, logging.WARNING)
    )


def test_flagged_run_with_alerts_raises_guard_alert(tmp_path, caplog):
    rules = [{"name": "quiet", "kind": "metric", "condition": "events_28d == 0"}]
    project = flagged_project(tmp_path, alerts={"rules": rules})
    run = score(project, datetime.fromisoformat(SECOND).date(), monitor=False)

    caplog.set_level(logging.DEBUG, logger=ALERTS_LOGGER)
    with StateStore.open(project.config.store.state, project.root) as state:
        outcome = evaluate_alerts(project, run, snapshot_store(project), state)
        again = evaluate_alerts(project, run, snapshot_store(project), state)

    assert [alert.rule for alert in outcome.raised] == [
        "quiet",
        "quiet",
        "quiet",
        "guard",
    ]
    assert stored_alerts(project) == [
        ("guard", "*", False),
        ("quiet", "a1", True),
        ("quiet", "a2", True),
        ("quiet", "a3", True),
    ]
    # The second evaluation finds the three alerts stored and holds nothing new.
    assert again.raised == []
    assert sorted(item.reason for item in again.suppressed) == ["duplicate"] * 3
    assert alert_messages(caplog, logging.WARNING) == [
        "holding 3 alert(s) of 2026-07-15: 1 of 3 accounts (33%) changed band since "
        "2026-06-01, more than the limit of 20%"
    ]


# In the service's rescoring batches

#: Ten accounts, so that one account is a tenth of the population.
TEN_ACCOUNTS = "account_id,name,segment,owner,arr\n" + "".join(
    f"a{index},Account {index},smb,alice,1000\n" for index in range(10)
)


def live_project(root: Path, rules: list[dict[str, Any]]) -> Project:
    """Yesterday's run stored: no events, so every account scores 100, healthy."""
    config = minimal_config(
        store={"state": "sqlite:///.healthscore/state.db"}, alerts={"rules": rules}
    )
    config["sources"] = {
        "accounts": {"kind": "accounts", "path": "accounts.csv"},
        "usage": {"kind": "events", "path": "store"},
    }
    config["metrics"] = {
        "events_28d": {"type": "count", "source": "usage", "window": "28d"},
    }
    measure = config["scorecards"][0]["components"]["usage"]["measures"][0]
    measure["direction"] = "lower"
    project = write_project(root, config, {"accounts.csv": TEN_ACCOUNTS})
    score(project, today(project) - timedelta(days=1))
    return project


def add_events(project: Project, accounts: list[str], count: int) -> None:
    now = datetime.now(UTC).replace(tzinfo=None)
    rows = pd.DataFrame(
        {
            "account_id": [account for account in accounts for _ in range(count)],
            "timestamp": [now] * (count * len(accounts)),
        }
    )
    event_store(project).append("usage", rows, numeric=[])


def test_batches_without_rules_warn_once(tmp_path, caplog):
    project = live_project(tmp_path / "p", rules=[])
    # Three of ten accounts fall from healthy to stable (30 %), so every batch of
    # the day is flagged.
    add_events(project, ["a4", "a5", "a6"], 5)

    caplog.set_level(logging.DEBUG, logger=ALERTS_LOGGER)
    results = [rescore_accounts(project, [account]) for account in ("a4", "a5", "a6")]

    assert all(result.monitoring.alerts.held for result in results)
    assert all(result.monitoring.alerts.raised == [] for result in results)
    assert stored_alerts(project) == []
    warnings = alert_messages(caplog, logging.WARNING)
    assert not any("holding" in message for message in warnings)
    assert len(warnings) == 1
    assert "3 of 10 accounts (30%) changed band" in warnings[0]


def test_batches_with_rules_store_guard_alert_once(tmp_path, caplog):
    rules = [{"name": "busy", "kind": "metric", "condition": "events_28d >= 3"}]
    project = live_project(tmp_path / "p", rules=rules)
    add_events(project, ["a4", "a5", "a6"], 5)

    caplog.set_level(logging.DEBUG, logger=ALERTS_LOGGER)
    first = rescore_accounts(project, ["a4"])
    second = rescore_accounts(project, ["a5"])
    repeat = rescore_accounts(project, ["a4"])

    assert [alert.rule for alert in first.monitoring.alerts.raised] == [
        "busy",
        "guard",
    ]
    assert [alert.rule for alert in second.monitoring.alerts.raised] == ["busy"]
    assert repeat.monitoring.alerts.raised == []
    assert stored_alerts(project) == [
        ("busy", "a4", True),
        ("busy", "a5", True),
        ("guard", "*", False),
    ]
    warnings = alert_messages(caplog, logging.WARNING)
    assert len(warnings) == 1
    assert warnings[0].startswith("holding 1 alert(s) of ")
    infos = alert_messages(caplog, logging.INFO)
    assert any(message.startswith("holding 1 more alert(s) of ") for message in infos)


def test_cli_text_of_flagged_run_without_rules(tmp_path):
    project = flagged_project(tmp_path)

    result = run_cli("score", "--project", project.root, "--as-of", SECOND)

    assert result.exit_code == 0, result.output
    text = " ".join(result.stdout.split())
    assert "Run flagged, with no alert to hold: " in text
    assert "Alerts held" not in text
    assert "Raised 0 alerts and opened 0 tasks" in text


def test_cli_text_of_flagged_run_with_alerts(tmp_path):
    rules = [{"name": "quiet", "kind": "metric", "condition": "events_28d == 0"}]
    project = flagged_project(tmp_path, alerts={"rules": rules})
    run_cli("score", "--project", project.root, "--as-of", FIRST)

    result = run_cli("score", "--project", project.root, "--as-of", SECOND)

    assert result.exit_code == 0, result.output
    text = " ".join(result.stdout.split())
    assert "Alerts held: " in text
    assert "Run flagged" not in text
    assert "(held by the guard)" in text
