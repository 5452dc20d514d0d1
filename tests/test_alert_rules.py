"""Alert rules on hand-built snapshot histories, dedupe and cool-down in the store."""

from __future__ import annotations

import uuid
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from sqlalchemy import select

from healthscore.config import Project
from healthscore.config.models import ProjectConfig
from healthscore.metrics import MetricTable
from healthscore.monitoring.alerts import (
    History,
    RaisedAlert,
    ShownScore,
    dedupe_key,
    evaluate_alerts,
    find_alerts,
    rule_cooldowns,
    score_text,
)
from healthscore.monitoring.outbox import (
    CoolingAlert,
    NewAlert,
    add_alerts,
    cooling_alerts,
    list_alerts,
    release_held,
)
from healthscore.pipeline import ScoringRun
from healthscore.scoring import ScoreResult, round_half_up
from healthscore.store import StateStore
from healthscore.store.snapshots import SnapshotStore
from healthscore.store.tables_alerts import alerts as alerts_table
from healthscore.store.tables_alerts import deliveries

AS_OF = date(2026, 6, 30)
NOW = datetime(2026, 6, 30, 6, 0, tzinfo=UTC)


def config(rules: list[dict[str, Any]], **alerts: Any) -> ProjectConfig:
    return ProjectConfig.model_validate(
        {
            "name": "test",
            "sources": {"accounts": {"kind": "accounts", "path": "accounts.csv"}},
            "scorecards": [
                {
                    "name": "default",
                    "components": {
                        "usage": {
                            "weight": 1,
                            "measures": [
                                {
                                    "metric": "logins",
                                    "normalize": {
                                        "method": "bounds",
                                        "min": 0,
                                        "max": 10,
                                    },
                                }
                            ],
                        }
                    },
                }
            ],
            "alerts": {"rules": rules, **alerts},
        }
    )


def scores(values: dict[str, float | None], as_of: date = AS_OF) -> pd.DataFrame:
    """Scores table with bands from the default bands (0-40, 41-70, 71-100).

    A score's band is that of the score rounded half up, as in `assign_bands`.
    """
    rows = []
    for account, score in values.items():
        if score is None:
            band = "insufficient_data"
        elif round_half_up(np.float64(score)) <= 40:
            band = "at_risk"
        elif round_half_up(np.float64(score)) <= 70:
            band = "stable"
        else:
            band = "healthy"
        rows.append(
            {
                "account_id": account,
                "as_of": as_of,
                "score": np.nan if score is None else float(score),
                "band": band,
            }
        )
    return pd.DataFrame(rows)


def measures(accounts: list[str]) -> pd.DataFrame:
    """One measure per account that loses 100 - 30 = 70 points."""
    return pd.DataFrame(
        {
            "account_id": accounts,
            "component": "usage",
            "measure": "logins",
            "metric": "logins",
            "value": 3.0,
            "value_text": None,
            "normalized": 30.0,
            "effective_weight": 1.0,
            "contribution": 30.0,
        }
    )


def accounts_frame(rows: dict[str, dict[str, Any]]) -> pd.DataFrame:
    frame = pd.DataFrame.from_dict(rows, orient="index")
    frame.index.name = "account_id"
    return frame


def history_store(tmp_path: Path, snapshots: dict[date, dict[str, float | None]]):
    store = SnapshotStore(tmp_path / "snapshots")
    for day, values in snapshots.items():
        store.write(day, {"scores": scores(values, day)}, {})
    return store


def run_rules(
    rules: list[dict[str, Any]],
    current: dict[str, float | None],
    snapshots: dict[date, dict[str, float | None]],
    tmp_path: Path,
    *,
    metrics: pd.DataFrame | None = None,
    accounts: pd.DataFrame | None = None,
) -> list[RaisedAlert]:
    store = history_store(tmp_path, snapshots)
    ids = list(current)
    if metrics is None:
        metrics = pd.DataFrame(index=pd.Index(ids, name="account_id"))
    if accounts is None:
        accounts = accounts_frame({account: {"owner": None} for account in ids})
    history = History.load(store, AS_OF, days=90, count=5)
    return find_alerts(
        config(rules), AS_OF, scores(current), measures(ids), metrics, accounts,
        history,
    )  # fmt: skip


def flagged(alerts: list[RaisedAlert]) -> list[str]:
    return sorted(alert.account_id for alert in alerts)


# Rule kinds


def test_band_change_into_band(tmp_path):
    rules = [{"name": "risk", "kind": "band_change", "to": "at_risk"}]
    previous = {"a": 60, "b": 30, "c": 80}
    current = {"a": 35, "b": 20, "c": 39, "new": 10}

    alerts = run_rules(rules, current, {AS_OF - timedelta(days=7): previous}, tmp_path)

    assert flagged(alerts) == ["a", "c"]
    first = alerts[0]
    assert first.dedupe_key == "risk/a/band:at_risk/2026-06-30"
    assert first.title == "a moved into At risk from Stable"
    assert first.details["previous_score"] == 60.0
    assert first.details["change"] == -25.0
    assert first.details["band_left"] == "stable"
    assert first.details["band"] == "at_risk"
    assert first.details["band_label"] == "At risk"


def test_band_change_from_band(tmp_path):
    rules = [
        {"name": "risk", "kind": "band_change", "to": "at_risk", "from": "healthy"}
    ]
    previous = {"a": 60, "c": 80}

    alerts = run_rules(
        rules, {"a": 35, "c": 39}, {AS_OF - timedelta(days=7): previous}, tmp_path
    )

    assert flagged(alerts) == ["c"]


def test_message_scores_one_decimal(tmp_path):
    rules = [{"name": "risk", "kind": "band_change", "to": "at_risk"}]
    previous_as_of = AS_OF - timedelta(days=7)

    (alert,) = run_rules(rules, {"a": 39.04}, {previous_as_of: {"a": 41}}, tmp_path)

    # 39.04 - 41 = -1.96 shows as -2.0. Whole and fractional scores keep a decimal.
    assert alert.message == (
        "a moved into At risk from Stable. Score 39.0, band At risk "
        "(-2.0 since 2026-06-23, was 41.0 Stable). "
        "Top drivers: logins (-70.0 points)."
    )


def test_message_score_below_band_edge(tmp_path):
    rules = [{"name": "drop", "kind": "drop", "points": 15, "within": "30d"}]
    previous_as_of = AS_OF - timedelta(days=7)

    (alert,) = run_rules(rules, {"a": 40.46}, {previous_as_of: {"a": 60}}, tmp_path)

    # 40.46 is at risk (it rounds to 40), so it shows as 40.4, not 40.5.
    assert alert.details["band"] == "at_risk"
    assert alert.message.startswith(
        "a fell 19.5 points since 2026-06-23. Score 40.4, band At risk "
        "(-19.5 since 2026-06-23, was 60.0 Stable)."
    )


def test_message_previous_score_below_band_edge(tmp_path):
    rules = [{"name": "up", "kind": "band_change", "to": "stable"}]
    previous_as_of = AS_OF - timedelta(days=7)

    (alert,) = run_rules(rules, {"a": 50}, {previous_as_of: {"a": 40.46}}, tmp_path)

    assert alert.message.startswith(
        "a moved into Stable from At risk. Score 50.0, band Stable "
        "(+9.5 since 2026-06-23, was 40.4 At risk)."
    )


def test_score_text_keeps_band():
    cases = [
        # (score, one decimal, whole points)
        (40.46, "40.4", "40"),
        (40.45, "40.4", "40"),
        (40.4999, "40.4", "40"),
        (40.5, "40.5", "41"),
        (40.54, "40.5", "41"),
        (40.56, "40.6", "41"),
        (39.96, "40.0", "40"),
        (70.46, "70.4", "70"),
        (0.0, "0.0", "0"),
        (100.0, "100.0", "100"),
    ]
    for score, decimal, whole in cases:
        assert score_text(score) == decimal, score
        assert f"{ShownScore(score):.0f}" == whole, score
        assert round_half_up(np.float64(float(decimal))) == round_half_up(score)


def test_shown_score_other_specs():
    score = ShownScore(40.46)

    assert f"(score {score:.0f})" == "(score 40)"
    assert f"{score:>6.1f}|" == "  40.4|"
    assert f"{score:_.1f}" == "40.4"
    assert f"{score}" == "40.46"
    assert f"{ShownScore(float('nan')):.1f}" == "nan"
    assert score + 1 == pytest.approx(41.46)


def test_drop_title_and_message_same_fall(tmp_path):
    rules = [{"name": "drop", "kind": "drop", "points": 15, "within": "30d"}]
    previous_as_of = AS_OF - timedelta(days=7)
    cases = [
        # (previous score, score, fall and change as shown)
        (80.0, 60.0, "20.0"),
        # 80 - 59.96 = 20.04, and 59.96 shows as 60.0.
        (80.0, 59.96, "20.0"),
        (80.0, 59.44, "20.6"),
    ]
    for previous, current, displayed in cases:
        (alert,) = run_rules(
            rules, {"a": current}, {previous_as_of: {"a": previous}}, tmp_path
        )

        assert alert.title == f"a fell {displayed} points since 2026-06-23"
        assert f"(-{displayed} since 2026-06-23, was 80.0 Healthy)" in alert.message


def test_band_change_without_history(tmp_path):
    rules = [{"name": "risk", "kind": "band_change", "to": "at_risk"}]

    assert run_rules(rules, {"a": 10}, {}, tmp_path) == []


def test_drop_within_window(tmp_path):
    rules = [{"name": "drop", "kind": "drop", "points": 15, "within": "30d"}]
    snapshots = {
        AS_OF - timedelta(days=40): {"a": 95, "b": 90},
        AS_OF - timedelta(days=20): {"a": 80, "b": 72},
        AS_OF - timedelta(days=10): {"a": 70, "b": 70},
    }
    # a: peak 80 in the last 30 days, fall 20; b: peak 72, fall 14 (95 is too old).
    alerts = run_rules(rules, {"a": 60, "b": 58}, snapshots, tmp_path)

    assert flagged(alerts) == ["a"]
    assert alerts[0].details["fall"] == 20.0
    assert alerts[0].details["peak_as_of"] == "2026-06-10"
    assert alerts[0].dedupe_key == "drop/a/drop:15:30d/2026-06-30"


def test_drop_shorter_window_misses_older_peak(tmp_path):
    rules = [{"name": "drop", "kind": "drop", "points": 15, "within": "15d"}]
    snapshots = {
        AS_OF - timedelta(days=20): {"a": 80},
        AS_OF - timedelta(days=10): {"a": 70},
    }

    assert run_rules(rules, {"a": 60}, snapshots, tmp_path) == []


def test_metric_condition(tmp_path):
    rules = [{"name": "idle", "kind": "metric", "condition": "days_since_login >= 14"}]
    ids = ["a", "b", "c"]
    metrics = pd.DataFrame(
        {"days_since_login": [20.0, 3.0, np.nan]},
        index=pd.Index(ids, name="account_id"),
    )

    alerts = run_rules(
        rules, {"a": 50, "b": 50, "c": 50}, {}, tmp_path, metrics=metrics
    )

    assert flagged(alerts) == ["a"]
    assert alerts[0].details["values"] == {"days_since_login": 20.0}
    assert alerts[0].title == "a: days_since_login >= 14"


def test_metric_condition_reads_score_and_band(tmp_path):
    rules = [
        {
            "name": "low_and_idle",
            "kind": "metric",
            "condition": "score < 40 and band == 'at_risk' and days_since_login >= 14",
        }
    ]
    ids = ["a", "b", "c"]
    metrics = pd.DataFrame(
        {"days_since_login": [20.0, 20.0, 3.0]},
        index=pd.Index(ids, name="account_id"),
    )

    # a scores 30 (at risk), b 60, c 30 but logged in recently.
    alerts = run_rules(
        rules, {"a": 30, "b": 60, "c": 30}, {}, tmp_path, metrics=metrics
    )

    assert flagged(alerts) == ["a"]
    assert alerts[0].details["values"]["score"] == 30


def test_trend_strictly_falling(tmp_path):
    rules = [{"name": "slide", "kind": "trend", "snapshots": 3}]
    snapshots = {
        AS_OF - timedelta(days=21): {"a": 99, "b": 50, "c": 70},
        AS_OF - timedelta(days=14): {"a": 70, "b": 80, "c": 70},
        AS_OF - timedelta(days=7): {"a": 65, "b": 75, "c": 70},
    }
    # a: 70 > 65 > 60 falls twice; b: 80 > 75 > 74 too; c stays flat once.
    alerts = run_rules(rules, {"a": 60, "b": 74, "c": 60}, snapshots, tmp_path)

    assert flagged(alerts) == ["a", "b"]
    assert [point["score"] for point in alerts[0].details["scores"]] == [70, 65, 60]
    assert alerts[0].title.endswith("fell 2 times in a row over the last 3 snapshots")


def test_trend_needs_enough_snapshots(tmp_path):
    rules = [{"name": "slide", "kind": "trend", "snapshots": 4}]
    snapshots = {
        AS_OF - timedelta(days=14): {"a": 80},
        AS_OF - timedelta(days=7): {"a": 70},
    }

    assert run_rules(rules, {"a": 60}, snapshots, tmp_path) == []


def test_renewal_risk(tmp_path):
    rules = [
        {
            "name": "renewal",
            "kind": "renewal_risk",
            "within": "90d",
            "drop_points": 10,
            "drop_within": "30d",
        }
    ]
    accounts = accounts_frame(
        {
            "risky": {"renewal_date": date(2026, 7, 30)},
            "falling": {"renewal_date": date(2026, 9, 28)},
            "far": {"renewal_date": date(2026, 12, 31)},
            "past": {"renewal_date": date(2026, 6, 1)},
            "fine": {"renewal_date": date(2026, 7, 15)},
        }
    )
    current = {"risky": 30, "falling": 60, "far": 20, "past": 20, "fine": 75}
    previous = {"risky": 35, "falling": 75, "far": 20, "past": 20, "fine": 76}

    alerts = run_rules(
        rules,
        current,
        {AS_OF - timedelta(days=7): previous},
        tmp_path,
        accounts=accounts,
    )

    assert flagged(alerts) == ["falling", "risky"]
    by_account = {alert.account_id: alert for alert in alerts}
    assert by_account["risky"].details["days_to_renewal"] == 30
    assert by_account["falling"].details["days_to_renewal"] == 90
    assert by_account["falling"].title == (
        "falling renews in 90 days and fell 15.0 points"
    )
    # The renewal date is data, so it stays out of the key; see the rerun test.
    assert by_account["risky"].dedupe_key == "renewal/risky/renewal/2026-06-30"


def test_renewal_risk_without_column(tmp_path):
    rules = [{"name": "renewal", "kind": "renewal_risk", "within": "90d"}]

    with pytest.raises(ValueError, match="reads the account column 'renewal_date'"):
        run_rules(rules, {"a": 10}, {}, tmp_path)


def test_owner_escalation_and_drivers(tmp_path):
    rules = [
        {
            "name": "idle",
            "kind": "metric",
            "condition": "score_input < 5",
            "severity": "critical",
            "owner_column": "csm",
            "escalation": {"when": "arr >= 100000", "escalate_to": "vp@example.com"},
        }
    ]
    ids = ["big", "small"]
    metrics = pd.DataFrame(
        {"score_input": [1.0, 1.0]}, index=pd.Index(ids, name="account_id")
    )
    accounts = accounts_frame(
        {
            "big": {"csm": "ana@example.com", "arr": 250000.0, "name": "Big Co"},
            "small": {"csm": "bo@example.com", "arr": 5000.0, "name": "Small Co"},
        }
    )

    alerts = run_rules(
        rules,
        {"big": 30, "small": 30},
        {},
        tmp_path,
        metrics=metrics,
        accounts=accounts,
    )

    big, small = alerts
    assert big.owner == "ana@example.com"
    assert big.escalate_to == "vp@example.com"
    assert small.escalate_to is None
    assert big.severity == "critical"
    assert big.title == "Big Co: score_input < 5"
    assert big.details["top_drivers"] == [
        {"measure": "logins", "value": 3.0, "normalized": 30.0, "points_lost": 70.0}
    ]
    assert big.message == (
        "Big Co: score_input < 5. Score 30.0, band At risk. "
        "Top drivers: logins (-70.0 points)."
    )


def test_unknown_band_rejected(tmp_path):
    project = Project(root=tmp_path, config=config([
        {"name": "risk", "kind": "band_change", "to": "doomed"}
    ]))  # fmt: skip
    run = make_run(project, AS_OF, {"a": 10})

    with (
        StateStore.open("sqlite:///state.db", tmp_path) as state,
        pytest.raises(
            ValueError, match="alert rule 'risk' names unknown band 'doomed'; bands: "
        ),
    ):
        evaluate_alerts(project, run, SnapshotStore(tmp_path / "s"), state, now=NOW)


def test_dedupe_key_format():
    assert dedupe_key("r", "acme", "band:at_risk", AS_OF) == (
        "r/acme/band:at_risk/2026-06-30"
    )


# Evaluation with the store


def make_run(project: Project, as_of: date, values: dict[str, float | None]):
    ids = list(values)
    index = pd.Index(ids, name="account_id")
    metric_values = pd.DataFrame({"logins": [1.0] * len(ids)}, index=index)
    accounts = accounts_frame({account: {"owner": "ana"} for account in ids})
    table = MetricTable(as_of, datetime(2026, 1, 1), metric_values, accounts)
    result = ScoreResult(scores(values, as_of), pd.DataFrame(), measures(ids), [])
    return ScoringRun(project, as_of, table, result, [], {})


def evaluate(project, store, state, as_of, values):
    run = make_run(project, as_of, values)
    outcome = evaluate_alerts(project, run, store, state, now=NOW)
    store.write(as_of, {"scores": run.result.scores}, {})
    return outcome


@pytest.fixture
def project(tmp_path) -> Project:
    rules = [
        {"name": "idle", "kind": "metric", "condition": "logins < 5", "cooldown": "7d"}
    ]
    return Project(root=tmp_path, config=config(rules))


def test_rerun_same_date_raises_nothing_new(project, tmp_path):
    store = SnapshotStore(tmp_path / "snapshots")
    with StateStore.open("sqlite:///state.db", tmp_path) as state:
        first = evaluate(project, store, state, AS_OF, {"a": 50, "b": 60})
        again = evaluate(project, store, state, AS_OF, {"a": 50, "b": 60})
        stored = list_alerts(state)

    assert [alert.account_id for alert in first.raised] == ["a", "b"]
    assert again.raised == []
    assert [item.reason for item in again.suppressed] == ["duplicate", "duplicate"]
    assert len(stored) == 2


def test_cooldown_suppresses_then_expires(project, tmp_path):
    store = SnapshotStore(tmp_path / "snapshots")
    days = [AS_OF + timedelta(days=offset) for offset in (0, 3, 7, 8)]
    with StateStore.open("sqlite:///state.db", tmp_path) as state:
        outcomes = [evaluate(project, store, state, day, {"a": 50}) for day in days]

    assert len(outcomes[0].raised) == 1
    assert outcomes[1].raised == []
    assert [item.reason for item in outcomes[1].suppressed] == ["cooldown"]
    # The 7-day cool-down includes its last day, 7 days after the first alert.
    assert outcomes[2].raised == []
    assert [item.reason for item in outcomes[2].suppressed] == ["cooldown"]
    assert [alert.as_of for alert in outcomes[3].raised] == [days[3]]


def test_weekly_runs_with_7d_cooldown(project, tmp_path):
    store = SnapshotStore(tmp_path / "snapshots")
    weeks = [AS_OF + timedelta(days=7 * week) for week in range(4)]
    with StateStore.open("sqlite:///state.db", tmp_path) as state:
        outcomes = [evaluate(project, store, state, day, {"a": 50}) for day in weeks]

    raised = [[alert.as_of for alert in outcome.raised] for outcome in outcomes]
    # A suppressed alert is not stored, so the cool-down runs from the raised one.
    assert raised == [[weeks[0]], [], [weeks[2]], []]


def test_backfill_in_order_matches_daily(tmp_path):
    rules = [{"name": "risk", "kind": "band_change", "to": "at_risk", "cooldown": "0d"}]
    # The only account changes band, which the guard would take for a data problem.
    settings = config(rules, guard={"max_band_change_share": 1.0})
    project = Project(root=tmp_path, config=settings)
    store = SnapshotStore(tmp_path / "snapshots")
    series = [{"a": 60}, {"a": 30}, {"a": 55}, {"a": 20}]
    with StateStore.open("sqlite:///state.db", tmp_path) as state:
        outcomes = [
            evaluate(project, store, state, AS_OF + timedelta(days=day), values)
            for day, values in enumerate(series)
        ]

    raised = [[alert.as_of for alert in outcome.raised] for outcome in outcomes]
    assert raised == [[], [date(2026, 7, 1)], [], [date(2026, 7, 3)]]


# Keys that survive data corrections, and a cool-down that counts released alerts


RULES_OF_EVERY_KIND: list[dict[str, Any]] = [
    {"name": "entered", "kind": "band_change", "to": "at_risk"},
    {"name": "fell", "kind": "drop", "points": 10, "within": "30d"},
    {"name": "idle", "kind": "metric", "condition": "logins < 5"},
    {"name": "falling", "kind": "trend", "snapshots": 3},
    {
        "name": "renewal",
        "kind": "renewal_risk",
        "within": "90d",
        "drop_points": 10,
        "drop_within": "30d",
    },
]


def renewal_run(project: Project, renewal: date, logins: float) -> ScoringRun:
    """A run of one account `a` at 30 points that renews on `renewal`."""
    index = pd.Index(["a"], name="account_id")
    metric_values = pd.DataFrame({"logins": [logins]}, index=index)
    accounts = pd.DataFrame({"owner": ["ana"], "renewal_date": [renewal]}, index=index)
    table = MetricTable(AS_OF, datetime(2026, 1, 1), metric_values, accounts)
    result = ScoreResult(scores({"a": 30}), pd.DataFrame(), measures(["a"]), [])
    return ScoringRun(project, AS_OF, table, result, [], {})


def test_rerun_after_data_fix_raises_nothing(tmp_path):
    # Only a's account data changes between the runs of AS_OF: the renewal date
    # moves by a day and the metric value behind the condition moves too.
    settings = config(RULES_OF_EVERY_KIND, guard={"max_band_change_share": 1.0})
    project = Project(root=tmp_path, config=settings)
    store = history_store(
        tmp_path,
        {
            AS_OF - timedelta(days=14): {"a": 70},
            AS_OF - timedelta(days=7): {"a": 50},
        },
    )
    with StateStore.open("sqlite:///state.db", tmp_path) as state:
        first = evaluate_alerts(
            project, renewal_run(project, date(2026, 7, 26), 1), store, state, now=NOW
        )
        again = evaluate_alerts(
            project, renewal_run(project, date(2026, 7, 27), 2), store, state, now=NOW
        )
        stored = list_alerts(state)

    assert sorted(alert.rule for alert in first.raised) == [
        "entered",
        "falling",
        "fell",
        "idle",
        "renewal",
    ]
    assert again.raised == []
    assert sorted((item.alert.rule, item.reason) for item in again.suppressed) == [
        ("entered", "duplicate"),
        ("falling", "duplicate"),
        ("fell", "duplicate"),
        ("idle", "duplicate"),
        ("renewal", "duplicate"),
    ]
    assert len(stored) == 5


def test_rerun_finds_alert_under_older_key(project, tmp_path):
    # An alert of the same rule, account and date stored under another key, as an
    # older release wrote renewal keys, is the same alert.
    run = make_run(project, AS_OF, {"a": 50})
    (alert,) = find_alerts(
        project.config, AS_OF, run.result.scores, run.result.measures,
        run.metrics.values, run.metrics.accounts, History.load(
            SnapshotStore(tmp_path / "snapshots"), AS_OF, 0, 1
        ),
    )  # fmt: skip
    older = RaisedAlert(**{**vars(alert), "dedupe_key": "idle/a/older/2026-06-30"})
    with StateStore.open("sqlite:///state.db", tmp_path) as state:
        add_alerts(state, [NewAlert(older, ())], now=NOW)
        outcome = evaluate_alerts(
            project, run, SnapshotStore(tmp_path / "snapshots"), state, now=NOW
        )

    assert outcome.raised == []
    (duplicate,) = outcome.suppressed
    assert duplicate.reason == "duplicate"
    assert duplicate.alert.dedupe_key == "idle/a/older/2026-06-30"


def held_cooldown_project(tmp_path: Path) -> tuple[Project, SnapshotStore]:
    """The idle rule (7d cool-down) and a guard that holds when a band changes."""
    rules = [
        {"name": "idle", "kind": "metric", "condition": "logins < 5", "cooldown": "7d"}
    ]
    settings = config(rules, guard={"max_band_change_share": 0.5})
    store = history_store(tmp_path, {AS_OF - timedelta(days=7): {"a": 80, "b": 80}})
    return Project(root=tmp_path, config=settings), store


def test_held_alert_starts_no_cooldown(tmp_path):
    project, store = held_cooldown_project(tmp_path)
    week_later = AS_OF + timedelta(days=7)
    with StateStore.open("sqlite:///state.db", tmp_path) as state:
        # Both accounts fall from healthy to at risk, so the guard holds the run.
        held = evaluate(project, store, state, AS_OF, {"a": 30, "b": 30})
        later = evaluate(project, store, state, week_later, {"a": 30, "b": 30})

    assert held.held
    assert not later.held
    assert [(alert.account_id, alert.as_of) for alert in later.raised] == [
        ("a", week_later),
        ("b", week_later),
    ]
    assert later.suppressed == []


def test_released_alert_starts_cooldown(tmp_path):
    project, store = held_cooldown_project(tmp_path)
    with StateStore.open("sqlite:///state.db", tmp_path) as state:
        held = evaluate(project, store, state, AS_OF, {"a": 30, "b": 30})
        release_held(state, AS_OF, now=NOW, actor="ana")
        later = evaluate(
            project, store, state, AS_OF + timedelta(days=7), {"a": 30, "b": 30}
        )

    assert held.held
    assert later.raised == []
    assert [item.reason for item in later.suppressed] == ["cooldown", "cooldown"]


def test_release_keeps_alert_within_cooldown(tmp_path):
    project, store = held_cooldown_project(tmp_path)
    cooldowns = rule_cooldowns(project.config)
    week_later = AS_OF + timedelta(days=7)
    with StateStore.open("sqlite:///state.db", tmp_path) as state:
        held = evaluate(project, store, state, AS_OF, {"a": 30, "b": 30})
        # At the edge of the 7-day cool-down, and only a is scored.
        later = evaluate(project, store, state, week_later, {"a": 30})
        cooling = cooling_alerts(state, AS_OF, cooldowns)
        released = release_held(state, AS_OF, now=NOW, actor="ana", cooldowns=cooldowns)
        again = release_held(state, AS_OF, now=NOW, actor="ana", cooldowns=cooldowns)
        stored = list_alerts(state)

    ids = {(item.alert.account_id, item.alert.as_of): item.id for item in stored}
    held_of_date = {
        item.alert.account_id: item.held for item in stored if item.alert.as_of == AS_OF
    }
    assert held.held
    assert [alert.account_id for alert in later.raised] == ["a"]
    assert cooling == [CoolingAlert(ids[("a", AS_OF)], "idle", "a", week_later)]
    assert released == [ids[("b", AS_OF)]]
    assert again == []
    assert held_of_date == {"a": True, "b": False, "*": False}


def test_release_cooldown_reach_per_rule(tmp_path):
    project, store = held_cooldown_project(tmp_path)
    with StateStore.open("sqlite:///state.db", tmp_path) as state:
        evaluate(project, store, state, AS_OF, {"a": 30, "b": 30})
        evaluate(project, store, state, AS_OF + timedelta(days=7), {"a": 30})
        # 6 days do not reach the alert 7 days later.
        short = cooling_alerts(state, AS_OF, {"idle": 6})
        # A rule missing from the settings has no cool-down.
        other = cooling_alerts(state, AS_OF, {"other": 30})
        released = release_held(state, AS_OF, now=NOW, cooldowns={"idle": 6})

    assert short == []
    assert other == []
    assert len(released) == 2


def test_cooldown_covers_earlier_date_scored_later(project, tmp_path):
    store = SnapshotStore(tmp_path / "snapshots")
    later = AS_OF + timedelta(days=7)
    with StateStore.open("sqlite:///state.db", tmp_path) as state:
        first = evaluate(project, store, state, later, {"a": 50})
        missed = evaluate(project, store, state, AS_OF, {"a": 50})
        # 8 days before the stored alert: outside the 7-day cool-down.
        older = evaluate(project, store, state, AS_OF - timedelta(days=1), {"a": 50})

    assert [alert.as_of for alert in first.raised] == [later]
    assert missed.raised == []
    assert [item.reason for item in missed.suppressed] == ["cooldown"]
    assert [alert.as_of for alert in older.raised] == [AS_OF - timedelta(days=1)]


def test_delivery_keys_name_the_project(tmp_path):
    """Two projects alerting on equal ids send different idempotency keys."""
    rules = [
        {"name": "idle", "kind": "metric", "condition": "logins < 5", "cooldown": "0d"}
    ]
    # The namespace of healthscore's delivery keys (monitoring/outbox.py).
    namespace = uuid.UUID("5b7e2f0c-3a43-4c1e-9a57-0d8c2a6f1e10")
    keys = {}
    for name in ("north", "south"):
        folder = tmp_path / name
        folder.mkdir()
        settings = config(rules).model_copy(update={"name": name})
        project = Project(root=folder, config=settings)
        store = SnapshotStore(folder / "snapshots")
        with StateStore.open("sqlite:///state.db", folder) as state:
            evaluate(project, store, state, AS_OF, {"a": 50})
            with state.engine.connect() as connection:
                rows = connection.execute(
                    select(
                        alerts_table.c.dedupe_key,
                        deliveries.c.channel,
                        deliveries.c.idempotency_key,
                    ).join(alerts_table, alerts_table.c.id == deliveries.c.alert_id)
                ).all()
        keys[name] = {
            str(uuid.uuid5(namespace, f"{name}\n{dedupe}\n{channel}")): key
            for dedupe, channel, key in rows
        }

    for name in ("north", "south"):
        assert len(keys[name]) == 1
        assert all(expected == key for expected, key in keys[name].items())
    assert set(keys["north"].values()) != set(keys["south"].values())
