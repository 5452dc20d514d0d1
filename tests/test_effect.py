"""Effect of interventions and alert precision, on a small history computed by hand.

Wilson and Newcombe values were computed from their formulas with z = 1.959964 and
agree with published tables to four places (1 of 3: 0.0615 to 0.7923; 2 of 4:
0.1500 to 0.8500).
The Welch groups have equal variances and sizes, so the degrees of freedom are the
whole number 2 and t(0.975, 2) = 4.302653 comes from a t table.
"""

from __future__ import annotations

import json
import math
from datetime import UTC, date, datetime

import pandas as pd
import pytest
from typer.testing import CliRunner

from healthscore.cli import app
from healthscore.monitoring.effect import (
    CAVEAT,
    alert_precision,
    compute_effect,
    newcombe_interval,
    welch_interval,
    wilson_interval,
)
from healthscore.monitoring.outbox import NewAlert, add_alerts
from healthscore.pipeline import score
from healthscore.store import StateStore
from project_factory import minimal_config, write_project
from test_channels import sample_alert

JAN = date(2026, 1, 1)
APR = date(2026, 4, 1)  # JAN + 90 days
HORIZON = 90
ACCOUNTS = "account_id,segment\na1,smb\na2,smb\na3,smb\n"


def history() -> pd.DataFrame:
    rows = [
        # account, band at JAN, score at JAN, score at APR (None: no row)
        ("t1", "at_risk", 30, None),
        ("t2", "at_risk", 20, 50),
        ("t3", "at_risk", 35, 45),
        ("c1", "at_risk", 30, None),
        ("c2", "at_risk", 25, None),
        ("c3", "at_risk", 38, 54),
        ("c4", "at_risk", 10, 6),
        ("e1", "at_risk", 30, 80),  # other segment
        ("h1", "healthy", 90, 90),  # other band
        ("k1", "at_risk", 30, 90),  # treated by another kind within the horizon
    ]
    records = []
    for account, band, before, after in rows:
        records.append((JAN, account, float(before), band))
        if after is not None:
            records.append((APR, account, float(after), "stable"))
    return pd.DataFrame(records, columns=["as_of", "account_id", "score", "band"])


SEGMENTS = pd.Series(
    {name: "smb" for name in ["t1", "t2", "t3", "c1", "c2", "c3", "c4", "h1", "k1"]}
    | {"e1": "enterprise"}
)

INTERVENTIONS = pd.DataFrame(
    [
        ("t1", "ebr", JAN),
        ("t2", "ebr", JAN),
        ("t3", "ebr", JAN),
        ("k1", "call", date(2026, 2, 1)),
        ("zz", "ebr", JAN),  # no snapshot of this account
    ],
    columns=["account_id", "kind", "occurred_on"],
)

CHURN = pd.DataFrame(
    [
        ("t1", date(2026, 2, 15)),
        ("c1", date(2026, 3, 1)),
        ("c2", date(2026, 4, 1)),  # last day of the horizon counts
        ("c3", date(2026, 4, 2)),  # a day after the horizon does not
    ],
    columns=["account_id", "occurred_on"],
)


def effects():
    return compute_effect(
        history(),
        INTERVENTIONS,
        CHURN,
        horizon_days=HORIZON,
        observed_until=APR,
        segments=SEGMENTS,
    )


def test_wilson_matches_table():
    interval = wilson_interval(1, 3)

    assert interval.low == pytest.approx(0.06149, abs=1e-5)
    assert interval.high == pytest.approx(0.79234, abs=1e-5)


def test_wilson_bounds_exact_at_none_and_all():
    none, every = wilson_interval(0, 24), wilson_interval(24, 24)

    assert none.low == 0.0
    assert every.high == 1.0
    assert none.high == pytest.approx(1 - every.low)


def test_wilson_empty_group_has_no_interval():
    interval = wilson_interval(0, 0)

    assert interval.low is None
    assert interval.high is None


def test_newcombe_by_hand():
    # d = 1/3 - 1/2; L = d - sqrt((1/3 - 0.06149)^2 + (0.84996 - 0.5)^2)
    # U = d + sqrt((0.79234 - 1/3)^2 + (0.5 - 0.15004)^2)
    interval = newcombe_interval(1, 3, 2, 4)

    assert interval.low == pytest.approx(-0.60980, abs=1e-4)
    assert interval.high == pytest.approx(0.41054, abs=1e-4)


def test_welch_by_hand():
    interval, df = welch_interval([30.0, 10.0], [16.0, -4.0])
    half = 4.302653 * math.sqrt(200 / 2 + 200 / 2)

    assert df == pytest.approx(2.0)
    assert interval.low == pytest.approx(14 - half, abs=1e-4)
    assert interval.high == pytest.approx(14 + half, abs=1e-4)


def test_welch_needs_two_values_per_group():
    interval, df = welch_interval([1.0], [2.0, 3.0])

    assert interval.low is None
    assert df is None


def test_effect_groups_and_counts():
    by_kind = {item.kind: item for item in effects()}
    ebr = by_kind["ebr"]

    assert ebr.treated.units == 3
    assert ebr.treated.churned == 1
    assert ebr.control.units == 4  # c1-c4; e1, h1 and k1 are not comparable
    assert ebr.control.churned == 2
    assert ebr.skipped["no_snapshot"] == 1


def test_effect_churn_difference():
    ebr = {item.kind: item for item in effects()}["ebr"]

    assert ebr.treated.churn_rate == pytest.approx(1 / 3)
    assert ebr.control.churn_rate == pytest.approx(2 / 4)
    assert ebr.churn_difference == pytest.approx(-1 / 6)
    assert ebr.churn_difference_interval.low == pytest.approx(-0.60980, abs=1e-4)
    assert ebr.churn_difference_interval.high == pytest.approx(0.41054, abs=1e-4)


def test_effect_score_change_difference():
    ebr = {item.kind: item for item in effects()}["ebr"]
    half = 4.302653 * math.sqrt(200)

    # Treated: t2 +30, t3 +10 (t1 churned, no later score); control: c3 +16, c4 -4.
    assert ebr.treated.score_changes == 2
    assert ebr.treated.mean_score_change == pytest.approx(20.0)
    assert ebr.control.mean_score_change == pytest.approx(6.0)
    assert ebr.score_change_difference == pytest.approx(14.0)
    assert ebr.welch_df == pytest.approx(2.0)
    assert ebr.score_change_interval.low == pytest.approx(14 - half, abs=1e-4)


def test_effect_skips_unobserved_horizon():
    call = {item.kind: item for item in effects()}["call"]

    assert call.treated.units == 0
    assert call.skipped["unobserved"] == 1
    assert call.churn_difference is None


def test_effect_without_segments_matches_band_only():
    ebr = compute_effect(
        history(), INTERVENTIONS, CHURN, horizon_days=HORIZON, observed_until=APR
    )[1]

    assert ebr.kind == "ebr"
    assert ebr.control.units == 5  # e1 joins c1-c4


def test_alert_precision_by_hand():
    alerts = pd.DataFrame(
        [
            ("score_drop", "t1", JAN),
            ("score_drop", "c3", JAN),
            ("score_drop", "c4", JAN),
            ("score_drop", "c4", date(2026, 2, 1)),  # horizon not over
            ("usage_gap", "t2", date(2026, 3, 1)),  # horizon not over
        ],
        columns=["rule", "account_id", "as_of"],
    )

    found = alert_precision(alerts, CHURN, horizon_days=HORIZON, observed_until=APR)
    by_rule = {item.rule: item for item in found}

    assert by_rule["score_drop"].alerted == 3
    assert by_rule["score_drop"].churned == 1
    assert by_rule["score_drop"].precision == pytest.approx(1 / 3)
    assert by_rule["score_drop"].interval.low == pytest.approx(0.06149, abs=1e-5)
    assert by_rule["usage_gap"].alerted == 0
    assert by_rule["usage_gap"].precision is None


def test_caveat_says_observational():
    assert "observational comparison, not a controlled experiment" in CAVEAT
    assert "does not prove" in CAVEAT
    assert "playbook or intervention" in CAVEAT


def test_effect_command_end_to_end(tmp_path):
    accounts = "account_id,segment\na1,smb\na2,smb\na3,smb\n"
    project = write_project(
        tmp_path,
        minimal_config(),
        {"accounts.csv": accounts, "events.csv": "account_id,timestamp\n"},
    )
    for day in (date(2026, 2, 1), date(2026, 3, 1)):
        score(project, day)
    (tmp_path / "outcomes.csv").write_text(
        "account_id,kind,occurred_on\na2,churned,2026-02-20\n"
    )
    (tmp_path / "interventions.csv").write_text(
        "account_id,kind,occurred_on,author\na1,ebr,2026-02-01,ana\n"
    )
    runner = CliRunner()
    folder = ["--project", str(tmp_path)]
    for command in ("outcomes", "interventions"):
        path = str(tmp_path / f"{command}.csv")
        imported = runner.invoke(app, [command, "import", path, *folder])
        assert imported.exit_code == 0, imported.output

    result = runner.invoke(app, ["effect", "--horizon", "28d", "--json", *folder])
    report = json.loads(result.stdout)
    ebr = report["playbooks"][0]

    assert result.exit_code == 0, result.output
    assert report["observed_until"] == "2026-03-01"
    assert ebr["kind"] == "ebr"
    assert ebr["treated"]["units"] == 1
    assert ebr["control"]["units"] == 2
    assert ebr["control"]["churned"] == 1
    assert ebr["churn_difference"] == pytest.approx(-0.5)
    assert ebr["score_change_difference"] == pytest.approx(0.0)
    assert report["caveat"] == CAVEAT


def test_effect_command_rejects_bad_horizon(tmp_path):
    result = CliRunner().invoke(app, ["effect", "--horizon", "3 days"])

    assert result.exit_code == 2
    assert "invalid duration '3 days'" in result.output


def test_outcomes_import_missing_and_non_utf8_files(tmp_path):
    from healthscore.monitoring.interventions import import_outcomes
    from healthscore.store import StateStore

    with StateStore.open("sqlite:///state.db", tmp_path) as store:
        with pytest.raises(ValueError, match=r"missing\.csv: file not found"):
            import_outcomes(store, tmp_path / "missing.csv")
        latin = tmp_path / "latin.csv"
        latin.write_bytes(b"account_id,kind,occurred_on\nal\xe9,churned,2024-01-01\n")
        with pytest.raises(ValueError, match=r"latin\.csv: the file is not UTF-8 text"):
            import_outcomes(store, latin)


def test_effect_rejects_zero_horizon(tmp_path):
    from typer.testing import CliRunner

    from healthscore.cli import app

    runner = CliRunner(env={"COLUMNS": "200", "NO_COLOR": "1"})
    result = runner.invoke(
        app, ["effect", "--horizon", "0d", "--project", str(tmp_path)]
    )
    assert result.exit_code == 2
    assert "'--horizon': invalid duration '0d': it must be at least 1d" in " ".join(
        result.stderr.split()
    )


def test_effect_table_fits_80_columns(tmp_path):
    accounts = "account_id,segment\na1,smb\na2,smb\na3,smb\n"
    project = write_project(
        tmp_path,
        minimal_config(),
        {"accounts.csv": accounts, "events.csv": "account_id,timestamp\n"},
    )
    for day in (date(2026, 2, 1), date(2026, 3, 1)):
        score(project, day)
    (tmp_path / "interventions.csv").write_text(
        "account_id,kind,occurred_on,author\na1,ebr,2026-02-01,ana\n"
    )
    runner = CliRunner()
    folder = ["--project", str(tmp_path)]
    path = str(tmp_path / "interventions.csv")
    assert runner.invoke(app, ["interventions", "import", path, *folder]).exit_code == 0

    result = runner.invoke(
        app, ["effect", "--horizon", "28d", *folder], env={"COLUMNS": "80"}
    )
    header, row = _effect_header_and_row(result.output)

    assert result.exit_code == 0, result.output
    assert header[:3] == ["Kind", "Treated", "Control"]
    assert row[:3] == ["ebr", "1", "2"]


def _effect_header_and_row(output: str) -> tuple[list[str], list[str]]:
    """Return the words of the Effect table's header line and of its first row."""
    lines = output.splitlines()
    rule = next(i for i, line in enumerate(lines) if line.strip().startswith("─"))
    return lines[rule - 1].split(), lines[rule + 1].split()


def _subscription_project(tmp_path):
    """Three smb accounts: a1's subscription ends 2026-02-15 without renewal, a2's
    never ends, and a3's ends 2026-02-10 and is renewed the same day."""
    accounts = "account_id,segment\na1,smb\na2,smb\na3,smb\n"
    subscriptions = (
        "account_id,start,end\n"
        "a1,2026-01-01,2026-02-15\n"
        "a2,2026-01-01,\n"
        "a3,2026-01-01,2026-02-10\n"
        "a3,2026-02-10,\n"
    )
    sources = minimal_config()["sources"] | {
        "subscriptions": {"kind": "subscriptions", "path": "subscriptions.csv"}
    }
    rule = {"name": "idle", "kind": "metric", "condition": "events_28d < 5"}
    config = minimal_config(sources=sources, alerts={"rules": [rule]})
    return write_project(
        tmp_path,
        config,
        {
            "accounts.csv": accounts,
            "events.csv": "account_id,timestamp\n",
            "subscriptions.csv": subscriptions,
        },
    )


def test_effect_reads_churn_from_subscriptions(tmp_path):
    project = _subscription_project(tmp_path)
    for day in (date(2026, 2, 1), date(2026, 3, 1)):
        score(project, day)
    (tmp_path / "interventions.csv").write_text(
        "account_id,kind,occurred_on,author\na1,ebr,2026-02-01,ana\n"
    )
    runner = CliRunner()
    folder = ["--project", str(tmp_path)]
    path = str(tmp_path / "interventions.csv")
    assert runner.invoke(app, ["interventions", "import", path, *folder]).exit_code == 0
    # A guard alert is about a run, not an account, so it has no precision row.
    guard = sample_alert(
        rule="guard", kind="guard", account_id="*", as_of=date(2026, 2, 1),
        dedupe_key="guard/*/held/2026-02-01",
    )  # fmt: skip
    with StateStore.open(project.config.store.state, project.root) as state:
        add_alerts(state, [NewAlert(guard, ())], now=datetime.now(UTC))

    result = runner.invoke(app, ["effect", "--horizon", "28d", "--json", *folder])
    report = json.loads(result.stdout)
    ebr = report["playbooks"][0]
    idle = report["alert_precision"][0]
    assert [row["rule"] for row in report["alert_precision"]] == ["idle"]

    assert result.exit_code == 0, result.output
    assert report["churn_source"] == "subscriptions"
    # a1 has no subscription on 2026-03-01, the last day of its 28-day horizon.
    assert ebr["treated"]["units"] == 1
    assert ebr["treated"]["churned"] == 1
    assert ebr["control"]["units"] == 2
    assert ebr["control"]["churned"] == 0
    assert ebr["churn_difference"] == pytest.approx(1.0)
    # The 2026-03-01 alerts are left out: their horizon ends after 2026-03-01.
    assert idle["rule"] == "idle"
    assert idle["alerted"] == 3
    assert idle["churned"] == 1
    assert idle["precision"] == pytest.approx(1 / 3)


def test_effect_text_names_churn_source(tmp_path):
    project = _subscription_project(tmp_path)
    for day in (date(2026, 2, 1), date(2026, 3, 1)):
        score(project, day)

    result = CliRunner().invoke(
        app,
        ["effect", "--horizon", "28d", "--project", str(tmp_path)],
        env={"COLUMNS": "200"},
    )

    assert result.exit_code == 0, result.output
    assert "Churn from subscriptions: an account churned when it has no" in (
        result.stdout
    )
    lines = result.stdout.splitlines()
    idle = next(line.split() for line in lines if line.strip().startswith("idle"))
    assert idle[:4] == ["idle", "3", "1", "33.3%"]


def test_effect_table_keeps_words_whole_at_80_columns(tmp_path):
    project = _subscription_project(tmp_path)
    for day in (date(2026, 2, 1), date(2026, 3, 1)):
        score(project, day)
    (tmp_path / "interventions.csv").write_text(
        "account_id,kind,occurred_on,author\na1,executive_review,2026-02-01,ana\n"
    )
    runner = CliRunner(env={"COLUMNS": "80"})
    folder = ["--project", str(tmp_path)]
    path = str(tmp_path / "interventions.csv")
    assert runner.invoke(app, ["interventions", "import", path, *folder]).exit_code == 0

    result = runner.invoke(app, ["effect", "--horizon", "28d", *folder])

    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert max(len(line) for line in lines) <= 80
    words = set(" ".join(lines).split())
    for header in ("treated", "control", "diff.", "change", "(95%", "CI)"):
        assert header in words, header


def test_effect_without_churn_source_says_so(tmp_path):
    project = write_project(
        tmp_path,
        minimal_config(),
        {"accounts.csv": ACCOUNTS, "events.csv": "account_id,timestamp\n"},
    )
    for day in (date(2026, 2, 1), date(2026, 3, 1)):
        score(project, day)
    (tmp_path / "interventions.csv").write_text(
        "account_id,kind,occurred_on,author\na1,ebr,2026-02-01,ana\n"
    )
    runner = CliRunner(env={"COLUMNS": "200"})
    folder = ["--project", str(tmp_path)]
    path = str(tmp_path / "interventions.csv")
    assert runner.invoke(app, ["interventions", "import", path, *folder]).exit_code == 0

    text = runner.invoke(app, ["effect", "--horizon", "28d", *folder])
    data = runner.invoke(app, ["effect", "--horizon", "28d", "--json", *folder])
    report = json.loads(data.stdout)
    ebr = report["playbooks"][0]

    assert text.exit_code == 0, text.output
    assert "Churn is not measured: the project has no subscriptions source" in (
        text.stdout
    )
    assert "0.0%" not in text.stdout
    assert report["churn_source"] is None
    assert ebr["treated"]["units"] == 1
    assert ebr["treated"]["churned"] is None
    assert ebr["treated"]["churn_rate"] is None
    assert ebr["churn_difference"] is None


def test_alert_precision_counts_left_out_alerts():
    alerts = pd.DataFrame(
        [
            ("drop", "t1", JAN),  # retained: t1 churns 2026-02-15, after 01-31
            ("drop", "t1", date(2026, 2, 20)),  # t1 churned before the alert
            ("drop", "c1", date(2026, 2, 10)),  # c1 churns 2026-03-01, within
            ("drop", "c2", date(2026, 3, 15)),  # horizon ends 04-14, after APR
            ("gap", "c3", date(2026, 3, 2)),  # horizon ends on APR: observed
            ("gap", "c3", date(2026, 3, 20)),  # horizon ends 04-19, after APR
        ],
        columns=["rule", "account_id", "as_of"],
    )

    found = alert_precision(alerts, CHURN, horizon_days=30, observed_until=APR)
    by_rule = {item.rule: item for item in found}

    assert by_rule["drop"].alerted == 2
    assert by_rule["drop"].churned == 1
    assert by_rule["drop"].skipped == {"unobserved": 1, "churned_before": 1}
    assert by_rule["gap"].alerted == 1
    assert by_rule["gap"].churned == 0
    assert by_rule["gap"].skipped == {"unobserved": 1, "churned_before": 0}


def test_effect_json_counts_unobserved_alerts(tmp_path):
    project = _subscription_project(tmp_path)
    for day in (date(2026, 2, 1), date(2026, 3, 1)):
        score(project, day)

    result = CliRunner().invoke(
        app, ["effect", "--horizon", "28d", "--json", "--project", str(tmp_path)]
    )

    assert result.exit_code == 0, result.output
    idle = json.loads(result.stdout)["alert_precision"][0]
    # a2 and a3 are alerted on 2026-03-01, whose 28-day horizon ends after the
    # last snapshot. a1 has no active subscription then, so it is not scored.
    assert idle["alerted"] == 3
    assert idle["skipped"] == {"unobserved": 2, "churned_before": 0}


def test_effect_text_counts_unobserved_alerts(tmp_path):
    project = _subscription_project(tmp_path)
    for day in (date(2026, 2, 1), date(2026, 3, 1)):
        score(project, day)

    result = CliRunner().invoke(
        app, ["effect", "--horizon", "28d", "--project", str(tmp_path)]
    )

    assert result.exit_code == 0, result.output
    assert "idle: left out 2 unobserved alerts." in " ".join(result.stdout.split())
