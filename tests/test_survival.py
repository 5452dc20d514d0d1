"""The survival model of time to churn and the renewal forecast built on it."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from lifelines import CoxPHFitter, KaplanMeierFitter

from healthscore.models.errors import InsufficientLabels
from healthscore.models.survival import RENEWAL_COLUMNS, ChurnSurvival, survival_data


def exponential_times(
    rows: int, seed: int = 0, censor_at: float = 30.0
) -> tuple[pd.DataFrame, np.ndarray, np.ndarray, np.ndarray]:
    """Features, durations, events and hazards of exponential times to churn.

    The hazard per day is 0.01 * exp(1.0 * risk), where `risk` is the standardized
    feature `measure:risk`; `measure:noise` has no effect. Times after `censor_at`
    days are censored there.
    """
    generator = np.random.default_rng(seed)
    risk = generator.normal(size=rows)
    hazard = 0.01 * np.exp(1.0 * risk)
    times = generator.exponential(1.0 / hazard)
    frame = pd.DataFrame(
        {"measure:risk": risk, "measure:noise": generator.normal(size=rows)}
    )
    events = (times <= censor_at).astype(int)
    return frame, np.minimum(times, censor_at), events, hazard


@pytest.fixture(scope="module")
def fitted() -> tuple[ChurnSurvival, pd.DataFrame, np.ndarray]:
    frame, durations, events, hazard = exponential_times(4000)
    model = ChurnSurvival(penalizer=0.0).fit(frame, durations, events)
    return model, frame, hazard


def test_cox_recovers_churn_probability(fitted) -> None:
    model, frame, hazard = fitted
    churn = model.churn_probability(frame, 20)
    truth = 1.0 - np.exp(-hazard * 20)
    assert np.mean(np.abs(churn - truth)) < 0.02
    assert model.concordance_ > 0.65


def test_per_row_days(fitted) -> None:
    model, frame, _ = fitted
    days = np.where(np.arange(10) % 2 == 0, 10.0, 25.0)
    per_row = model.churn_probability(frame[:10], days)
    at_ten = model.churn_probability(frame[:10], 10)
    at_25 = model.churn_probability(frame[:10], 25)
    np.testing.assert_allclose(per_row, np.where(days == 10, at_ten, at_25))
    assert (at_25 > at_ten).all()


def test_without_effects_equals_kaplan_meier() -> None:
    frame, durations, events, _ = exponential_times(2000, seed=4)
    durations = np.ceil(durations)  # churn recorded by the day, so days have ties
    noise = frame[["measure:noise"]]
    # A huge penalty keeps the coefficient at 0, so every partial hazard is 1.
    model = ChurnSurvival(penalizer=1e6).fit(noise, durations, events)
    reference = KaplanMeierFitter().fit(durations, events)
    for day in (3.0, 10.0, 29.0):
        expected = 1.0 - float(reference.survival_function_at_times(day).iloc[0])
        ours = model.churn_probability(noise[:5], day)
        np.testing.assert_allclose(ours, expected, rtol=1e-3)


def test_churn_on_one_day_matches_rate() -> None:
    """With one outcome date per row, the probability is the churn rate itself."""
    generator = np.random.default_rng(5)
    frame = pd.DataFrame({"measure:noise": generator.normal(size=1000)})
    events = (generator.uniform(size=1000) < 0.3).astype(int)
    model = ChurnSurvival(penalizer=1e6).fit(frame, np.full(1000, 30.0), events)
    churn = model.churn_probability(frame, 30)
    np.testing.assert_allclose(churn, events.mean(), rtol=1e-3)


def test_no_churn_before_first_event() -> None:
    frame = pd.DataFrame({"measure:x": np.tile([0.0, 1.0], 20)})
    durations = np.full(40, 30.0)
    events = np.tile([1, 0], 20)
    durations[events == 1] = 10.0
    model = ChurnSurvival().fit(frame, durations, events)
    # Every churn happened on day 10, so no account churns within 9 days.
    assert (model.churn_probability(frame, 9) == 0.0).all()
    assert (model.churn_probability(frame, 10) > 0.0).all()
    assert (model.churn_probability(frame, 0) == 0.0).all()


def test_cox_beyond_longest_duration_is_noted(fitted) -> None:
    model, frame, _ = fitted
    assert model.churn_probability(frame[:5], 200) == pytest.approx(
        model.churn_probability(frame[:5], 30)
    )
    assert any("beyond the longest observed duration" in n for n in model.notes_)


def test_weibull_extrapolates() -> None:
    frame, durations, events, hazard = exponential_times(3000, seed=2)
    model = ChurnSurvival(model="weibull", penalizer=0.0).fit(frame, durations, events)
    churn = model.churn_probability(frame, 90)
    truth = 1.0 - np.exp(-hazard * 90)
    assert np.mean(np.abs(churn - truth)) < 0.05


def test_missing_feature_values(fitted) -> None:
    frame, durations, events, _ = exponential_times(1000, seed=3)
    frame.loc[::7, "measure:noise"] = np.nan
    model = ChurnSurvival().fit(frame, durations, events)
    assert np.isfinite(model.churn_probability(frame, 15)).all()


def test_too_few_churns_raise() -> None:
    frame = pd.DataFrame({"measure:x": np.arange(50.0)})
    events = np.zeros(50, dtype=int)
    events[:4] = 1
    with pytest.raises(InsufficientLabels, match="found 4 churned and 46 retained"):
        ChurnSurvival().fit(frame, np.full(50, 30.0), events)


def test_invalid_durations_raise() -> None:
    frame = pd.DataFrame({"measure:x": np.arange(40.0)})
    durations = np.full(40, 30.0)
    durations[3] = 0.0
    with pytest.raises(ValueError, match="durations must be positive"):
        ChurnSurvival().fit(frame, durations, np.tile([0, 1], 20))


def test_unknown_model_kind() -> None:
    frame = pd.DataFrame({"measure:x": np.arange(40.0)})
    with pytest.raises(ValueError, match="unknown survival model 'exponential'"):
        ChurnSurvival(model="exponential").fit(  # type: ignore[arg-type]
            frame, np.full(40, 30.0), np.tile([0, 1], 20)
        )


def test_survival_data_by_hand() -> None:
    frame = pd.DataFrame(
        {
            "as_of": pd.to_datetime(
                ["2024-01-01", "2024-01-01", "2024-01-01", "2024-03-01", "2024-03-20"]
            ),
            "label": [1.0, 1.0, 0.0, np.nan, np.nan],
            "churn_date": pd.to_datetime(["2024-01-11", None, None, None, None]),
        }
    )
    durations, events, rows = survival_data(
        frame, horizon_days=31, observed_until=pd.Timestamp("2024-03-15").date()
    )
    assert list(rows) == [0, 1, 2, 3]
    assert list(events) == [1, 1, 0, 0]
    assert list(durations) == [10.0, 31.0, 31.0, 14.0]


def test_survival_data_without_observed_until() -> None:
    frame = pd.DataFrame(
        {"as_of": pd.to_datetime(["2024-01-01"] * 2), "label": [0.0, np.nan]}
    )
    durations, _, rows = survival_data(frame, horizon_days=30)
    assert list(rows) == [0]
    assert list(durations) == [30.0]


# Renewal forecast


def test_renewal_forecast_sums_by_month(fitted) -> None:
    model, frame, _ = fitted
    rows = frame[:6].copy()
    rows["as_of"] = pd.Timestamp("2024-01-01")
    rows["renewal_date"] = pd.to_datetime(
        ["2024-01-20", "2024-01-25", "2024-02-10", None, "2023-12-01", "2024-02-01"]
    )
    rows["arr"] = [1000.0, 2000.0, 500.0, 800.0, 900.0, np.nan]
    table = model.renewal_forecast(rows, period="month")
    assert list(table.columns) == RENEWAL_COLUMNS
    assert list(table["period"]) == ["2024-01", "2024-02"]
    assert list(table["accounts"]) == [2, 1]
    assert list(table["arr_up_for_renewal"]) == [3000.0, 500.0]
    churn = np.array(
        [
            model.churn_probability(rows[:1], 19)[0],
            model.churn_probability(rows[1:2], 24)[0],
            model.churn_probability(rows[2:3], 40)[0],
        ]
    )
    expected = [1000 * (1 - churn[0]) + 2000 * (1 - churn[1]), 500 * (1 - churn[2])]
    assert table["expected_retained_arr"].tolist() == pytest.approx(expected)
    assert table["expected_churned_accounts"].tolist() == pytest.approx(
        [churn[0] + churn[1], churn[2]]
    )
    assert (table["retained_arr_low"] <= table["expected_retained_arr"]).all()
    assert (table["retained_arr_high"] >= table["expected_retained_arr"]).all()


def test_renewal_interval_of_one_account() -> None:
    frame = pd.DataFrame({"measure:x": np.tile([0.0, 1.0], 50)})
    durations = np.full(100, 30.0)
    events = np.tile([1, 1, 0, 0], 25)  # half of each x churn, on day 5
    durations[events == 1] = 5.0
    model = ChurnSurvival().fit(frame, durations, events)
    one = pd.DataFrame(
        {
            "measure:x": [0.0],
            "as_of": [pd.Timestamp("2024-01-01")],
            "renewal_date": [pd.Timestamp("2024-01-21")],
            "arr": [1200.0],
        }
    )
    churn = model.churn_probability(one, 20)[0]
    assert 0.05 < churn < 0.95
    table = model.renewal_forecast(one, level=0.9, simulations=4000)
    # The account renews (1,200) or not (0); both outcomes are more likely than 5 %.
    assert table["retained_arr_low"].iloc[0] == 0.0
    assert table["retained_arr_high"].iloc[0] == 1200.0
    assert table["expected_retained_arr"].iloc[0] == pytest.approx(1200 * (1 - churn))


def test_renewal_forecast_by_quarter(fitted) -> None:
    model, frame, _ = fitted
    rows = frame[:3].copy()
    rows["as_of"] = pd.Timestamp("2024-01-01")
    rows["renewal_date"] = pd.to_datetime(["2024-02-01", "2024-03-31", "2024-04-01"])
    rows["arr"] = 100.0
    table = model.renewal_forecast(rows, period="quarter")
    assert list(table["period"]) == ["2024Q1", "2024Q2"]
    assert list(table["accounts"]) == [2, 1]


def test_renewal_forecast_needs_columns(fitted) -> None:
    model, frame, _ = fitted
    with pytest.raises(ValueError, match="renewal_date, arr"):
        model.renewal_forecast(frame[:3].assign(as_of=pd.Timestamp("2024-01-01")))


def test_unfitted_model_raises() -> None:
    from sklearn.exceptions import NotFittedError

    with pytest.raises(NotFittedError):
        ChurnSurvival().churn_probability(pd.DataFrame({"x": [1.0]}), 10)


# lifelines 0.30 calls DataFrame.var with a positional argument, which pandas 3 warns
# about.
@pytest.mark.filterwarnings("ignore::pandas.errors.Pandas4Warning")
def test_lifelines_reference_model_agrees(fitted) -> None:
    """Our standardized fit ranks rows as a plain lifelines fit on raw columns does."""
    model, frame, _ = fitted
    frame_raw, durations, events, _ = exponential_times(4000)
    data = frame_raw.assign(duration=durations, event=events)
    reference = CoxPHFitter().fit(data, duration_col="duration", event_col="event")
    ours = model.churn_probability(frame[:200], 20)
    theirs = reference.predict_partial_hazard(frame_raw[:200]).to_numpy()
    assert (
        np.corrcoef(np.argsort(np.argsort(ours)), np.argsort(np.argsort(theirs)))[0, 1]
        > 0.99
    )


# Features that do not vary, and fits that do not converge


@pytest.mark.parametrize("kind", ["cox", "weibull"])
def test_constant_and_missing_features_left_out(kind) -> None:
    frame, durations, events, _ = exponential_times(2000, seed=6)
    padded = frame.assign(**{"measure:flat": 50.0, "measure:empty": np.nan})

    model = ChurnSurvival(model=kind).fit(padded, durations, events)

    assert model.left_out_ == ["measure:flat", "measure:empty"]
    assert model.notes_ == [
        "left out measure:flat (50.0 on every training row) and measure:empty "
        "(missing on every training row), because a feature that does not vary on "
        "the training rows cannot be fitted"
    ]
    # The same fit as on the varying features alone.
    alone = ChurnSurvival(model=kind).fit(frame, durations, events)
    np.testing.assert_allclose(
        model.churn_probability(padded[:50], 20),
        alone.churn_probability(frame[:50], 20),
        rtol=1e-9,
    )


def test_feature_constant_with_gaps_kept() -> None:
    """A feature of one value and gaps still shows which rows have a value."""
    frame, durations, events, _ = exponential_times(1000, seed=7)
    frame["measure:sparse"] = np.where(np.arange(1000) % 3 == 0, np.nan, 50.0)

    model = ChurnSurvival().fit(frame, durations, events)

    assert model.left_out_ == []
    assert model.notes_ == []
    assert "measure:sparse missing" in [
        model.encoder_.names_[position] for position in model.varying_columns_
    ]


def test_no_varying_feature_raises() -> None:
    frame = pd.DataFrame({"measure:region": np.full(60, 50.0)})
    events = np.tile([0, 1], 30)

    with pytest.raises(ValueError) as caught:
        ChurnSurvival().fit(frame, np.full(60, 30.0), events)

    assert str(caught.value) == (
        "no feature varies on the training rows, so the survival model has nothing "
        "to fit: measure:region (50.0 on every training row); add measures that "
        "differ between accounts to the scorecards"
    )


def test_no_convergence_names_columns_and_option() -> None:
    frame, durations, events, _ = exponential_times(300, seed=8)
    # Two equal columns leave an unpenalized Cox fit with a singular Hessian.
    twins = frame.assign(**{"measure:copy": frame["measure:risk"]})

    with pytest.raises(ValueError) as caught:
        ChurnSurvival(penalizer=0.0).fit(twins, durations, events)

    message = str(caught.value)
    assert message.startswith(
        "the cox survival model did not converge on 300 observations of "
        "measure:risk, measure:noise and measure:copy (lifelines: "
    )
    assert message.endswith(
        "). Fit a Weibull model instead with `healthscore train --survival-model "
        "weibull`"
    )
    assert "model='cox'" not in message
    weibull = ChurnSurvival(model="weibull", penalizer=0.0).fit(
        twins, durations, events
    )
    assert np.isfinite(weibull.churn_probability(twins[:5], 20)).all()


def test_no_convergence_names_flagged_columns() -> None:
    frame, durations, events, _ = exponential_times(300, seed=8)
    generator = np.random.default_rng(9)
    # 0 on every churned row: lifelines warns that the column separates them.
    separating = np.where(events == 1, 0.0, generator.uniform(1, 100, len(events)))
    flagged = frame.assign(
        **{"measure:copy": frame["measure:risk"], "measure:gap": separating}
    )

    with pytest.raises(ValueError) as caught:
        ChurnSurvival(penalizer=0.0).fit(flagged, durations, events)

    message = str(caught.value)
    assert (
        "; lifelines warned about measure:gap (nearly constant among churned or "
        "retained rows). Fit a Weibull model instead with `healthscore train "
        "--survival-model weibull`, or leave the measures it warned about out of "
        "the scorecards"
    ) in message


def test_baseline_survival_outside_float_bracket() -> None:
    """Extreme partial hazards put the conditional survival beyond 1 - 1e-15 or
    below 1e-300, where the root is kept at the nearer end."""
    from healthscore.models.survival import _kalbfleisch_prentice

    durations = np.array([1.0, 2.0])
    events = np.array([1, 0])
    # One churn of partial hazard p among p + 1 at risk: a ** p = 1 / (p + 1), so
    # a = 1 - 4.6e-19 for p = 1e20.
    days, survival = _kalbfleisch_prentice(durations, events, np.array([1e20, 1.0]))
    assert days.tolist() == [1.0]
    assert survival.tolist() == [1.0 - 1e-15]
    # p = 1e-10 among p + 1e-20 at risk: a ** p = 1e-10, so a = 10 ** -1e11.
    _, survival = _kalbfleisch_prentice(durations, events, np.array([1e-10, 1e-20]))
    assert survival.tolist() == [1e-300]


def test_leaking_feature_still_fits() -> None:
    """A feature equal to the days to churn or censoring gives extreme partial
    hazards, whose baseline survival still has a value on every churn day."""
    generator = np.random.default_rng(0)
    durations = generator.uniform(1, 30, 300)
    events = (generator.uniform(size=300) < 0.3).astype(int)
    frame = pd.DataFrame(
        {"measure:noise": generator.uniform(0, 100, 300), "measure:days": durations}
    )

    model = ChurnSurvival().fit(frame, durations, events)

    churn = model.churn_probability(frame, 10)
    assert np.isfinite(churn).all()
    assert model.concordance_ > 0.95
    # Rows that churned before day 5 are, by their leaked days, almost certain to
    # churn within 10 days.
    early = (events == 1) & (durations < 5)
    assert early.sum() == 12
    assert (churn[early] > 0.99).all()
