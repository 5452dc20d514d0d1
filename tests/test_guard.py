"""The data-problem guard: band-change share, stale sources, distribution and PSI."""

from __future__ import annotations

import math
from datetime import UTC, date, datetime, timedelta

import numpy as np
import pandas as pd
import pytest

from healthscore.config import ConfigError, Project
from healthscore.config.alerts import GuardSettings
from healthscore.config.models import ProjectConfig
from healthscore.metrics import MetricTable
from healthscore.monitoring.alerts import evaluate_alerts
from healthscore.monitoring.guard import (
    PSI_EPSILON,
    bin_counts,
    check_guard,
    find_stale_sources,
    population_stability_index,
    score_distribution,
)
from healthscore.monitoring.outbox import (
    Delivery,
    deliver_pending,
    list_alerts,
    release_held,
)
from healthscore.pipeline import ScoringRun, score, snapshot_store
from healthscore.scoring import ScoreResult
from healthscore.store import StateStore
from healthscore.store.snapshots import SnapshotStore
from project_factory import ACCOUNTS_CSV, minimal_config, write_project

AS_OF = date(2026, 6, 30)
PREVIOUS = date(2026, 6, 23)
NOW = datetime(2026, 6, 30, 6, 0, tzinfo=UTC)


def band_of(score: float) -> str:
    """Return the default band of a score (0-40, 41-70, 71-100)."""
    if score <= 40:
        return "at_risk"
    if score <= 70:
        return "stable"
    return "healthy"


def scores(values: dict[str, float]) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "account_id": list(values),
            "score": list(values.values()),
            "band": [band_of(score) for score in values.values()],
        }
    )


# Distribution and PSI


def test_bins_include_edges():
    counts = bin_counts(pd.Series([0, 9.99, 10, 95, 100, np.nan]))

    assert counts.tolist() == [2, 1, 0, 0, 0, 0, 0, 0, 0, 2]


def test_distribution_shares():
    rows = score_distribution(pd.Series([5.0, 15.0, 15.0, 100.0]))

    assert rows[0] == {
        "bin": "0-10",
        "lower": 0,
        "upper": 10,
        "count": 1,
        "share": 0.25,
    }
    assert rows[1]["share"] == 0.5
    assert rows[9]["bin"] == "90-100"
    assert rows[9]["count"] == 1
    assert sum(row["count"] for row in rows) == 4


def test_psi_by_hand():
    before = bin_counts(pd.Series([45, 48, 55, 58]))
    after = bin_counts(pd.Series([45, 55, 58, 65]))

    psi = population_stability_index(before, after)

    # Shares before: 40-50 0.5, 50-60 0.5. After: 0.25, 0.5, and 60-70 0.25, where
    # the empty bin before counts as epsilon. The other bins add (e - e) ln 1 = 0.
    expected = (0.25 - 0.5) * math.log(0.25 / 0.5) + (0.25 - PSI_EPSILON) * math.log(
        0.25 / PSI_EPSILON
    )
    assert psi == pytest.approx(expected, rel=1e-12)
    assert psi == pytest.approx(2.1285, abs=1e-4)


def test_psi_identical_is_zero():
    counts = [3, 0, 5, 2, 0, 0, 0, 0, 0, 1]

    assert population_stability_index(counts, counts) == 0.0


def test_psi_empty_population():
    assert population_stability_index([0] * 10, [1] * 10) is None


# Checks


def test_band_change_share_over_limit():
    previous = scores({"a": 60, "b": 60, "c": 60, "d": 60, "e": 60})
    current = scores({"a": 30, "b": 30, "c": 60, "d": 60, "e": 60, "new": 10})

    decision = check_guard(GuardSettings(), AS_OF, current, previous, PREVIOUS)

    assert decision.accounts_compared == 5
    assert decision.accounts_changed_band == 2
    assert decision.band_change_share == 0.4
    assert decision.held is True
    assert decision.reasons() == [
        "2 of 5 accounts (40%) changed band since 2026-06-23, more than the limit "
        "of 20%"
    ]


def test_share_just_over_limit_decimals():
    # 20 of 98 is 20.4 %: in whole percents it would read as the 20 % limit itself.
    previous = scores({f"a{i}": 60 for i in range(98)})
    current = scores({f"a{i}": 30 if i < 20 else 60 for i in range(98)})

    decision = check_guard(GuardSettings(), AS_OF, current, previous, PREVIOUS)

    assert decision.held is True
    assert decision.reasons() == [
        "20 of 98 accounts (20.4%) changed band since 2026-06-23, more than the "
        "limit of 20.0%"
    ]


def test_band_change_share_at_limit_passes():
    previous = scores({"a": 60, "b": 60, "c": 60, "d": 60, "e": 60})
    current = scores({"a": 30, "b": 60, "c": 60, "d": 60, "e": 60})

    decision = check_guard(GuardSettings(), AS_OF, current, previous, PREVIOUS)

    assert decision.band_change_share == 0.2
    assert decision.held is False


def test_first_run_has_no_comparison():
    decision = check_guard(GuardSettings(), AS_OF, scores({"a": 50}), None, None)

    assert decision.band_change_share is None
    assert decision.psi is None
    assert decision.held is False
    assert decision.to_dict()["distribution"][5]["count"] == 1


def test_stale_source_found():
    point = datetime(2026, 6, 30)
    newest = {"events": datetime(2026, 6, 27, 12), "tickets": None}
    ages = GuardSettings.model_validate(
        {"max_age": {"events": "2d", "tickets": "7d"}}
    ).max_age

    stale = find_stale_sources(ages, newest, point)

    assert [item.source for item in stale] == ["events", "tickets"]
    assert stale[0].age_days == 2.5
    assert stale[0].describe() == (
        "source events is stale: its newest row (2026-06-27T12:00:00) is 2.5 days "
        "old, more than 2 days"
    )
    assert stale[1].describe() == "source tickets has no rows before the as-of point"


# With the outbox


class Recorder:
    def __init__(self) -> None:
        self.sent: list[Delivery] = []

    def send(self, delivery: Delivery) -> None:
        self.sent.append(delivery)


def make_run(project: Project, as_of: date, values: dict[str, float]) -> ScoringRun:
    index = pd.Index(list(values), name="account_id")
    metric_values = pd.DataFrame({"logins": 1.0}, index=index)
    accounts = pd.DataFrame({"owner": "ana"}, index=index)
    table = MetricTable(as_of, datetime(2026, 1, 1), metric_values, accounts)
    frame = scores(values).assign(as_of=as_of)
    result = ScoreResult(frame, pd.DataFrame(), _no_measures(), [])
    return ScoringRun(project, as_of, table, result, [], {})


def _no_measures() -> pd.DataFrame:
    columns = ["account_id", "component", "measure", "metric", "value"]
    columns += ["value_text", "normalized", "effective_weight", "contribution"]
    return pd.DataFrame({column: [] for column in columns})


def held_run(tmp_path) -> tuple[Project, SnapshotStore, ScoringRun]:
    """A run in which 2 of 5 accounts enter at risk, more than the guard allows."""
    config = minimal_config(
        alerts={"rules": [{"name": "risk", "kind": "band_change", "to": "at_risk"}]}
    )
    project = Project(root=tmp_path, config=ProjectConfig.model_validate(config))
    store = SnapshotStore(tmp_path / "snapshots")
    before = {"a": 60, "b": 60, "c": 60, "d": 60, "e": 60}
    store.write(PREVIOUS, {"scores": scores(before)}, {})
    run = make_run(project, AS_OF, {"a": 30, "b": 30, "c": 60, "d": 60, "e": 60})
    return project, store, run


def test_guard_holds_alerts_and_reports(tmp_path):
    project, store, run = held_run(tmp_path)
    recorder = Recorder()

    with StateStore.open("sqlite:///state.db", tmp_path) as state:
        outcome = evaluate_alerts(project, run, store, state, now=NOW)
        report = deliver_pending(state, {"console": recorder}, NOW)
        stored = list_alerts(state)

    assert outcome.held is True
    assert [alert.rule for alert in outcome.raised] == ["risk", "risk", "guard"]
    held = {record.alert.account_id: record.held for record in stored}
    assert held == {"a": True, "b": True, "*": False}
    assert [delivery.alert.rule for delivery in recorder.sent] == ["guard"]
    assert len(report.sent) == 1
    guard = outcome.raised[-1]
    assert guard.account_id == "*"
    assert guard.details["accounts_changed_band"] == 2
    assert guard.details["psi"] == pytest.approx(
        (0.4 - PSI_EPSILON) * math.log(0.4 / PSI_EPSILON)
        + (0.6 - 1.0) * math.log(0.6 / 1.0)
    )
    assert "2 of 5 accounts (40%) changed band since 2026-06-23" in guard.message


def test_release_sends_held_alerts_of_date(tmp_path):
    project, store, run = held_run(tmp_path)
    recorder = Recorder()
    later = NOW + timedelta(minutes=5)

    with StateStore.open("sqlite:///state.db", tmp_path) as state:
        outcome = evaluate_alerts(project, run, store, state, now=NOW)
        deliver_pending(state, {"console": recorder}, NOW)
        released = release_held(state, AS_OF, now=later, actor="ana")
        again = release_held(state, AS_OF, now=later, actor="ana")
        other_day = release_held(state, PREVIOUS, now=later, actor="ana")
        deliver_pending(state, {"console": recorder}, later)
        stored = list_alerts(state)

    held_ids = [record.id for record in stored if record.alert.rule == "risk"]
    assert sorted(released) == sorted(held_ids)
    assert again == []
    assert other_day == []
    assert not any(record.held for record in stored)
    # The guard's own alert went out first, then the two released ones, once each.
    sent = [(d.alert.rule, d.alert.account_id) for d in recorder.sent]
    assert sent[0] == ("guard", "*")
    assert sorted(sent[1:]) == [("risk", "a"), ("risk", "b")]
    assert f"alerts release --as-of {AS_OF.isoformat()}" in outcome.raised[-1].message


def idle_project(tmp_path) -> tuple[Project, SnapshotStore]:
    """A project on disk whose rule `idle` (7d cool-down) alerts about every
    account, with a console channel and a snapshot of five stable accounts."""
    config = minimal_config(
        alerts={
            "rules": [
                {"name": "idle", "kind": "metric", "condition": "events_28d < 5"}
            ],
            "channels": {"console": {"type": "console"}},
        }
    )
    files = {"accounts.csv": ACCOUNTS_CSV, "events.csv": "account_id,timestamp\n"}
    project = write_project(tmp_path / "p", config, files)
    store = snapshot_store(project)
    stable = {account: 60.0 for account in ("a", "b", "c", "d", "e")}
    store.write(PREVIOUS, {"scores": scores(stable).assign(as_of=PREVIOUS)}, {})
    return project, store


def evaluate_idle(project, store, state, as_of, values):
    """Evaluate the rules for a run of `values`, then store its snapshot."""
    index = pd.Index(list(values), name="account_id")
    metrics = pd.DataFrame({"events_28d": 1.0}, index=index)
    accounts = pd.DataFrame({"owner": "ana"}, index=index)
    table = MetricTable(as_of, datetime(2026, 1, 1), metrics, accounts)
    frame = scores(values).assign(as_of=as_of)
    result = ScoreResult(frame, pd.DataFrame(), _no_measures(), [])
    run = ScoringRun(project, as_of, table, result, [], {})
    outcome = evaluate_alerts(project, run, store, state, now=NOW)
    store.write(as_of, {"scores": frame}, {})
    return outcome


def test_cli_release_keeps_alerts_in_cooldown(tmp_path):
    from typer.testing import CliRunner

    from healthscore.cli import app

    project, store = idle_project(tmp_path)
    later = AS_OF + timedelta(days=3)
    recorder = Recorder()
    with StateStore.open(project.config.store.state, project.root) as state:
        # Two of five accounts change band, so the guard holds the date.
        held = evaluate_idle(
            project, store, state, AS_OF, {"a": 30, "b": 30, "c": 60, "d": 60, "e": 60}
        )
        # The held alerts start no cool-down, so a, b and c alert again 3 days later.
        sent = evaluate_idle(project, store, state, later, {"a": 30, "b": 30, "c": 60})
        deliver_pending(state, {"console": recorder}, NOW)

    arguments = ["alerts", "release", "--as-of", AS_OF.isoformat()]
    result = CliRunner().invoke(app, [*arguments, "--project", str(project.root)])

    with StateStore.open(project.config.store.state, project.root) as state:
        # The command releases at the current time, later than NOW.
        deliver_pending(state, {"console": recorder}, datetime.now(UTC))
        stored = list_alerts(state)
    assert held.held
    assert not sent.held
    assert [alert.account_id for alert in sent.raised] == ["a", "b", "c"]
    assert result.exit_code == 0, result.output
    assert f"Released 2 held alerts of {AS_OF.isoformat()}." in result.stdout
    assert (
        "3 held alerts stay held, because their rule's cool-down counts an alert "
        "of the same account on another date:" in result.stdout
    )
    ids = {
        (record.alert.account_id, record.alert.as_of): record.id for record in stored
    }
    assert (
        f"alert {ids[('a', AS_OF)]} (rule idle, account a): alert of "
        f"{later.isoformat()}" in result.stdout
    )
    assert "`healthscore alerts resend ID`" in result.stdout
    sent_to = sorted(
        (delivery.alert.account_id, delivery.alert.as_of)
        for delivery in recorder.sent
        if delivery.alert.rule == "idle"
    )
    assert sent_to == [
        ("a", later),
        ("b", later),
        ("c", later),
        ("d", AS_OF),
        ("e", AS_OF),
    ]
    still_held = sorted(record.alert.account_id for record in stored if record.held)
    assert still_held == ["a", "b", "c"]


def test_stale_source_holds_real_run(tmp_path):
    events = "account_id,timestamp,event_type\na1,2026-06-20 10:00:00,login\n"
    config = minimal_config(alerts={"guard": {"max_age": {"events": "2d"}}})
    project = write_project(
        tmp_path, config, {"accounts.csv": ACCOUNTS_CSV, "events.csv": events}
    )
    run = score(project, AS_OF, monitor=False)

    with StateStore.open(project.config.store.state, project.root) as state:
        outcome = evaluate_alerts(project, run, snapshot_store(project), state, now=NOW)

    assert outcome.held is True
    (stale,) = outcome.guard.stale_sources
    assert stale.newest == datetime(2026, 6, 20, 10)
    assert stale.age_days == pytest.approx(9 + 14 / 24)
    # The project has no alert rules, so nothing is held and no guard alert raised.
    assert outcome.raised == []


def test_max_age_of_undated_source_rejected(tmp_path):
    config = minimal_config(alerts={"guard": {"max_age": {"accounts": "2d"}}})
    files = {"accounts.csv": ACCOUNTS_CSV, "events.csv": "account_id,timestamp\n"}

    with pytest.raises(ConfigError) as caught:
        write_project(tmp_path, config, files)

    (issue,) = caught.value.issues
    assert issue.key == "alerts.guard.max_age.accounts"
    assert "source 'accounts' is the accounts source, whose rows have no date" in (
        issue.message
    )


def test_newer_data_passes(tmp_path):
    events = "account_id,timestamp,event_type\na1,2026-06-29 10:00:00,login\n"
    config = minimal_config(alerts={"guard": {"max_age": {"events": "2d"}}})
    project = write_project(
        tmp_path, config, {"accounts.csv": ACCOUNTS_CSV, "events.csv": events}
    )
    run = score(project, AS_OF, monitor=False)

    with StateStore.open(project.config.store.state, project.root) as state:
        outcome = evaluate_alerts(project, run, snapshot_store(project), state, now=NOW)

    assert outcome.held is False
    assert outcome.raised == []
    assert outcome.guard.stale_sources == []
