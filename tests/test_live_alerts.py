"""Alert rules and the guard in the service's rescoring batches."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pandas as pd
import pytest
from sqlalchemy import select

from healthscore.config import Project
from healthscore.pipeline import score
from healthscore.service.rescore import rescore_accounts, today
from healthscore.sources.ingest import event_store
from healthscore.store import StateStore
from healthscore.store.tables_alerts import alerts as alerts_table
from project_factory import minimal_config, write_project

#: Ten accounts, so that one account is a tenth of the population.
ACCOUNTS = "account_id,name,segment,owner,arr\n" + "".join(
    f"a{index},Account {index},smb,alice,1000\n" for index in range(10)
)


def live_alert_config() -> dict[str, Any]:
    """0 events = 100 points, 10 events = 0; drop and metric rules, default guard."""
    config = minimal_config(
        store={"state": "sqlite:///.healthscore/state.db"},
        alerts={
            "rules": [
                {"name": "score_drop", "kind": "drop", "points": 20, "within": "30d"},
                {"name": "busy", "kind": "metric", "condition": "events_28d >= 3"},
            ]
        },
    )
    config["sources"] = {
        "accounts": {"kind": "accounts", "path": "accounts.csv"},
        "usage": {"kind": "events", "path": "store"},
    }
    config["metrics"] = {
        "events_28d": {"type": "count", "source": "usage", "window": "28d"},
    }
    config["scorecards"][0]["components"]["usage"]["measures"] = [
        {
            "metric": "events_28d",
            "direction": "lower",
            "normalize": {"method": "bounds", "min": 0, "max": 10},
        }
    ]
    return config


@pytest.fixture
def project(tmp_path) -> Project:
    """The project with yesterday's run stored: every account at 100, healthy."""
    project = write_project(
        tmp_path / "p", live_alert_config(), {"accounts.csv": ACCOUNTS}
    )
    score(project, today(project) - timedelta(days=1))
    return project


def add_events(project: Project, account: str, count: int) -> None:
    now = datetime.now(UTC).replace(tzinfo=None)
    rows = pd.DataFrame({"account_id": [account] * count, "timestamp": [now] * count})
    event_store(project).append("usage", rows, numeric=[])


def stored_alerts(project: Project) -> list[tuple[str, str, bool]]:
    with (
        StateStore.open(project.config.store.state, project.root) as state,
        state.engine.connect() as connection,
    ):
        rows = connection.execute(select(alerts_table)).all()
    return sorted((row.rule, row.account_id, bool(row.held)) for row in rows)


def test_batch_alerts_skip_accounts_outside_batch(project):
    # a1 matches the metric rule too, but only a2 is in the batch.
    add_events(project, "a1", 3)
    add_events(project, "a2", 5)

    result = rescore_accounts(project, ["a2"])

    assert result.accounts == ["a2"]
    assert result.population == 10
    assert stored_alerts(project) == [
        ("busy", "a2", False),
        ("score_drop", "a2", False),
    ]


def test_guard_judges_population_not_batch(project):
    # One account of ten changes band (healthy to stable): 10 % of the population,
    # below the default 20 %, although it is every account of the batch.
    add_events(project, "a3", 5)

    result = rescore_accounts(project, ["a3"])

    guard = result.monitoring.alerts.guard
    assert guard.accounts_compared == 10
    assert guard.accounts_changed_band == 1
    assert guard.band_change_share == pytest.approx(0.1)
    assert not guard.held
    assert ("score_drop", "a3", False) in stored_alerts(project)


def test_guard_holds_batch_when_population_moves(project):
    # Three of ten accounts change band (30 %); only one is in the batch.
    for account in ("a4", "a5", "a6"):
        add_events(project, account, 5)

    result = rescore_accounts(project, ["a4"])

    guard = result.monitoring.alerts.guard
    assert guard.accounts_changed_band == 3
    assert guard.held
    assert ("score_drop", "a4", True) in stored_alerts(project)
