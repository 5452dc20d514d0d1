"""Score forecasts with intervals and at-risk dates, and the `forecast` command."""

from __future__ import annotations

import json
from datetime import date, timedelta
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from churn_project import (
    SNAPSHOT_DATES,
    churn_config,
    churn_files,
    churn_project,
)
from healthscore.cli import app
from healthscore.config import Project
from healthscore.config.models import BandConfig
from healthscore.models.forecast import (
    _first_crossing,
    at_risk_threshold,
    forecast_columns,
    forecast_scores,
)
from healthscore.monitoring.backfill import backfill
from healthscore.pipeline import snapshot_store
from project_factory import write_project

START = date(2024, 1, 1)


def mean_reverting_history(
    accounts: int, weeks: int, seed: int = 0
) -> tuple[pd.DataFrame, np.ndarray]:
    """Weekly scores that drift back to 50: x' = 50 + 0.9 (x - 50) + noise(sd 3).

    Returns the history and the scores of the week after it, drawn the same way.
    """
    generator = np.random.default_rng(seed)
    score = generator.uniform(10, 90, accounts)
    rows = []
    for week in range(weeks):
        day = START + timedelta(weeks=week)
        rows.append(pd.DataFrame({"as_of": day, "account_id": range(accounts),
                                  "score": score.copy()}))  # fmt: skip
        score = 50 + 0.9 * (score - 50) + generator.normal(0, 3, accounts)
    history = pd.concat(rows, ignore_index=True)
    history["account_id"] = history["account_id"].map(lambda i: f"a{i}")
    return history, score


def test_learns_mean_reversion() -> None:
    history, _ = mean_reverting_history(500, 20)
    table = forecast_scores(history, horizons=(7, 28))
    assert list(table.columns) == forecast_columns((7, 28))
    # Seven days ahead the expected score is 50 + 0.9 (x - 50); 28 days: 0.9^4.
    expected_7 = 50 + 0.9 * (table["score"] - 50)
    expected_28 = 50 + 0.9**4 * (table["score"] - 50)
    assert np.abs(table["score_7d"] - expected_7).max() < 1.0
    assert np.abs(table["score_28d"] - expected_28).max() < 2.0
    assert (table["lower_7d"] < table["score_7d"]).all()
    assert (table["upper_7d"] > table["score_7d"]).all()
    width_7 = (table["upper_7d"] - table["lower_7d"]).median()
    width_28 = (table["upper_28d"] - table["lower_28d"]).median()
    assert width_28 > width_7


def test_interval_covers_its_level() -> None:
    history, next_week = mean_reverting_history(4000, 12, seed=1)
    table = forecast_scores(history, horizons=(7,), level=0.8)
    actual = (
        table["account_id"]
        .str.removeprefix("a")
        .astype(int)
        .map(dict(enumerate(next_week)))
    )
    inside = (actual >= table["lower_7d"]) & (actual <= table["upper_7d"])
    assert 0.77 < inside.mean() < 0.83


def test_only_dates_up_to_as_of_are_used() -> None:
    history, _ = mean_reverting_history(100, 20)
    day = START + timedelta(weeks=10)
    cut = forecast_scores(history[history["as_of"] <= day], horizons=(7,))
    full = forecast_scores(history, horizons=(7,), as_of=day)
    pd.testing.assert_frame_equal(cut, full)
    assert (full["as_of"] == day).all()


def test_horizon_longer_than_history_is_empty() -> None:
    history, _ = mean_reverting_history(100, 6)
    table = forecast_scores(history, horizons=(14, 90))
    assert table["score_14d"].notna().all()
    assert table["score_90d"].isna().all()
    assert table["lower_90d"].isna().all()
    assert "no snapshots far enough apart for 90d" in table["method"].iloc[0]


def test_horizon_with_few_examples_names_them() -> None:
    # 3 accounts on 6 weekly dates: 5 pairs a week apart, 15 examples for 7d, and
    # one pair 35 days apart, 3 examples for 35d. Both are below the 30 needed.
    history, _ = mean_reverting_history(3, 6)
    table = forecast_scores(history, horizons=(7, 35, 90))
    method = table["method"].iloc[0]
    assert table["score_7d"].isna().all()
    assert "too few examples for 7d (15), 35d (3)" in method
    assert "no snapshots far enough apart for 90d" in method
    assert "far enough apart for 7d" not in method


def test_at_risk_threshold() -> None:
    assert (
        at_risk_threshold(
            [
                BandConfig(
                    name="at_risk", label="At risk", min=0, max=40, color="#000"
                ),
                BandConfig(name="ok", label="OK", min=41, max=100, color="#fff"),
            ]
        )
        == 40.5
    )
    # Without a band named at_risk, the band of the lowest scores is used.
    assert (
        at_risk_threshold(
            [
                BandConfig(name="high", label="High", min=31, max=100, color="#fff"),
                BandConfig(name="low", label="Low", min=0, max=30, color="#000"),
            ]
        )
        == 30.5
    )


def test_first_crossing_by_hand() -> None:
    points = np.array([0.0, 30.0, 60.0])
    # 50 -> 40 over 30 days falls 1/3 point per day: below 40.5 after day 28.5.
    assert _first_crossing(points, np.array([50.0, 40.0, 30.0]), 40.5, START) == (
        START + timedelta(days=29)
    )
    # Crossing in the second segment: 45 at day 30 to 35 at day 60, below at 43.5.
    assert _first_crossing(points, np.array([50.0, 45.0, 35.0]), 40.5, START) == (
        START + timedelta(days=44)
    )
    assert _first_crossing(points, np.array([50.0, 45.0, 41.0]), 40.5, START) is None
    # Already at risk: no crossing date.
    assert _first_crossing(points, np.array([30.0, 20.0, 10.0]), 40.5, START) is None


def test_declining_accounts_get_crossing_dates() -> None:
    rows = []
    generator = np.random.default_rng(2)
    for account in range(300):
        start = generator.uniform(45, 90)
        for week in range(20):
            value = start - 1.5 * week + generator.normal(0, 0.5)
            rows.append((START + timedelta(weeks=week), f"a{account}", value))
    history = pd.DataFrame(rows, columns=["as_of", "account_id", "score"])
    table = forecast_scores(history, horizons=(28, 56, 84))
    last = START + timedelta(weeks=19)
    above = table[table["score"] >= 40.5]
    crossing = above[above["at_risk_date"].notna()]
    # Scores fall 1.5 points a week, so those within 6 points of the edge cross
    # within about 4 weeks.
    near = above[above["score"] < 46.0]
    assert near["at_risk_date"].notna().all()
    assert (crossing["at_risk_date"] > last).all()
    days = (pd.to_datetime(near["at_risk_date"]) - pd.Timestamp(last)).dt.days
    expected = (near["score"] - 40.5) / (1.5 / 7)
    assert np.abs(days - expected).max() < 8
    assert table.loc[table["score"] < 40.5, "at_risk_date"].isna().all()


def test_missing_scores_are_skipped() -> None:
    history, _ = mean_reverting_history(50, 10)
    history.loc[history["account_id"] == "a1", "score"] = np.nan
    table = forecast_scores(history, horizons=(7,))
    assert "a1" not in set(table["account_id"])
    assert len(table) == 49


def test_invalid_arguments() -> None:
    history, _ = mean_reverting_history(10, 5)
    with pytest.raises(ValueError, match="level must be between 0 and 1"):
        forecast_scores(history, level=1.2)
    with pytest.raises(ValueError, match="horizons must be positive"):
        forecast_scores(history, horizons=(0, 30))
    with pytest.raises(ValueError, match="lacks the columns score"):
        forecast_scores(history.drop(columns="score"))


# Commands


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Project:
    return churn_project(tmp_path_factory.mktemp("forecast"))


def invoke(project: Project, *arguments: str):
    return CliRunner().invoke(app, [*arguments, "--project", str(project.root)])


def test_forecast_json(project: Project) -> None:
    result = invoke(project, "forecast", "--json")
    assert result.exit_code == 0, result.output
    rows = json.loads(result.stdout)
    assert rows
    assert set(forecast_columns((30, 60, 90))) == set(rows[0])
    assert {row["as_of"] for row in rows} == {"2024-07-01"}


def test_forecast_one_account(project: Project) -> None:
    rows = json.loads(invoke(project, "forecast", "--json").stdout)
    account = rows[0]["account_id"]
    result = invoke(project, "forecast", "--account", account)
    assert result.exit_code == 0, result.output
    assert account in result.stdout
    assert "In 30 days" in result.stdout


def test_forecast_unknown_account(project: Project) -> None:
    result = invoke(project, "forecast", "--account", "nobody")
    assert result.exit_code == 1
    assert "account 'nobody' has no score as of 2024-07-01" in result.output


def unwrapped(text: str) -> str:
    """Join the lines of wrapped output back into one line of words."""
    return " ".join(text.split())


def test_forecast_table_lists_crossings(project: Project) -> None:
    result = invoke(project, "forecast", "--as-of", "2024-06-01")
    assert result.exit_code == 0, result.output
    assert "are expected to cross into at risk within 90 days of 2024-06-01" in (
        unwrapped(result.stdout)
    )
    assert max(len(line) for line in result.stdout.splitlines()) <= 80


def test_forecast_without_history_says_why(project: Project) -> None:
    # 2024-02-01 is the first stored snapshot, so no earlier date pairs with it.
    result = invoke(project, "forecast", "--as-of", "2024-02-01")
    assert result.exit_code == 0, result.output
    text = unwrapped(result.stdout)
    assert "No score forecast as of 2024-02-01" in text
    assert "no snapshots far enough apart for 30d, 60d, 90d" in text
    assert "healthscore backfill" in text
    assert "expected to cross" not in text
    assert max(len(line) for line in result.stdout.splitlines()) <= 80


def test_forecast_names_horizons_left_out(project: Project) -> None:
    # Monthly snapshots from 2024-02-01: on 2024-04-01 pairs reach back 30 and 60
    # days, but none 90 days.
    result = invoke(project, "forecast", "--as-of", "2024-04-01")
    assert result.exit_code == 0, result.output
    text = unwrapped(result.stdout)
    assert "within 60 days of 2024-04-01" in text
    assert "No forecast 90 days ahead: no snapshots far enough apart for 90d." in text


def test_forecast_without_snapshots(tmp_path: Path) -> None:
    bare = churn_project(tmp_path, snapshots=False)
    result = invoke(bare, "forecast")
    assert result.exit_code == 1
    assert "no snapshots are stored" in result.output


def test_renewals_need_a_trained_model(tmp_path: Path) -> None:
    fresh = churn_project(tmp_path)
    result = invoke(fresh, "forecast", "--renewals")
    assert result.exit_code == 1
    assert "run `healthscore train` first" in result.output


def test_renewals_after_training(project: Project) -> None:
    trained = invoke(project, "train", "--model", "logistic", "--json")
    assert trained.exit_code == 0, trained.output
    result = invoke(project, "forecast", "--renewals", "--json")
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    periods = [row["period"] for row in data["renewals"]]
    assert periods == ["2024-08", "2024-09", "2024-10"]
    for row in data["renewals"]:
        assert row["retained_arr_low"] <= row["expected_retained_arr"]
        assert row["expected_retained_arr"] <= row["retained_arr_high"]
        assert row["retained_arr_high"] <= row["arr_up_for_renewal"]
    table = invoke(project, "forecast", "--renewals", "--period", "quarter")
    assert table.exit_code == 0, table.output
    assert "2024Q3" in table.stdout


def test_unknown_renewal_period(project: Project) -> None:
    result = invoke(project, "forecast", "--renewals", "--period", "week")
    assert result.exit_code == 2
    assert "unknown period 'week'" in result.output


def test_renewals_name_accounts_left_out(tmp_path: Path) -> None:
    files = churn_files()
    lines = files["accounts.csv"].splitlines()
    # Of accounts active on the last date: a0 has no renewal date, a2 no ARR, and
    # a3 renewed before that date.
    lines[1] = "a0,enterprise,1000,"
    lines[3] = "a2,enterprise,,2024-08-15"
    lines[4] = "a3,smb,4000,2024-01-15"
    files["accounts.csv"] = "\n".join(lines) + "\n"
    project = write_project(tmp_path, churn_config(), files)
    backfill(project, SNAPSHOT_DATES)

    trained = invoke(project, "train", "--survival-model", "weibull", "--json")
    result = invoke(project, "forecast", "--renewals", "--json")

    assert trained.exit_code == 0, trained.output
    assert json.loads(trained.stdout)["survival"]["model"] == "weibull"
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["notes"][0] == (
        "left out of the forecast: 1 account without a renewal date, 1 account "
        f"renewing before {data['as_of']}, 1 account without ARR"
    )
    scored = snapshot_store(project).read(date.fromisoformat(data["as_of"]), "scores")
    assert sum(row["accounts"] for row in data["renewals"]) == len(scored) - 3


def test_unknown_survival_model(project: Project) -> None:
    result = invoke(project, "train", "--survival-model", "aft")
    assert result.exit_code == 2
    words = unwrapped(result.output.replace("│", " "))
    assert "unknown survival model 'aft'; use cox or weibull" in words


def attribute_project(root: Path) -> Project:
    """40 accounts scored on their `seats` column, with labels in `Churn`.

    The accounts source is the only source, so the scores are the same on every
    as-of date.
    """
    rows = ["account_id,seats,Churn"]
    rows += [f"a{i},{i % 20},{'Yes' if i % 4 == 0 else 'No'}" for i in range(40)]
    measure = {
        "metric": "seats",
        "normalize": {"method": "bounds", "min": 0, "max": 19},
    }
    config = {
        "name": "attributes",
        "sources": {
            "accounts": {
                "kind": "accounts",
                "path": "accounts.csv",
                "attributes": {"seats": "number", "Churn": "string"},
            }
        },
        "metrics": {"seats": {"type": "attribute", "column": "seats"}},
        "scorecards": [
            {
                "name": "default",
                "components": {"size": {"weight": 1, "measures": [measure]}},
            }
        ],
        "validation": {"label_column": {"column": "Churn", "churned": ["Yes"]}},
    }
    return write_project(root, config, {"accounts.csv": "\n".join(rows) + "\n"})


def test_forecast_of_undated_scores_explains(tmp_path: Path) -> None:
    project = attribute_project(tmp_path)
    backfill(project, [START])

    result = invoke(project, "forecast")

    assert result.exit_code == 0, result.output
    text = unwrapped(result.stdout)
    assert text.startswith(
        "No score forecast as of 2024-01-01 for 40 accounts: no snapshots far "
        "enough apart for 30d, 60d, 90d."
    )
    assert (
        "The scorecards read only columns of the accounts source, which have no "
        "dates, so every as-of date gives the same scores. Snapshots of more dates "
        "would only repeat them and give a flat forecast."
    ) in text
    assert "at least 30 days apart" in text
    assert "backfill" not in text


def test_forecast_of_undated_scores_notes_flat(tmp_path: Path) -> None:
    project = attribute_project(tmp_path)
    backfill(project, [START + timedelta(weeks=week) for week in range(6)])

    result = invoke(project, "forecast", "--json")

    assert result.exit_code == 0, result.output
    rows = json.loads(result.stdout)
    assert all(row["score_30d"] == pytest.approx(row["score"]) for row in rows)
    printed = invoke(project, "forecast")
    assert printed.exit_code == 0, printed.output
    assert (
        "Note: The scorecards read only columns of the accounts source, which have "
        "no dates, so every as-of date gives the same scores. The forecast repeats "
        "the scores of 2024-02-05."
    ) in unwrapped(printed.stderr)


def test_renewals_print_horizon_note_once(project: Project) -> None:
    trained = invoke(project, "train", "--model", "logistic", "--json")
    assert trained.exit_code == 0, trained.output

    result = invoke(project, "forecast", "--renewals")

    assert result.exit_code == 0, result.output
    # The outcome horizon is 1mo, so the Cox model has seen durations up to about
    # 31 days, and renewals in 2024-10 are more than 90 days after 2024-07-01.
    notes = unwrapped(result.stderr)
    assert notes.count("beyond the longest observed duration") == 1
    assert "healthscore train --survival-model weibull" in notes
    assert "ChurnSurvival(" not in notes
