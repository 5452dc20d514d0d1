"""Backtest measures against hand-computed cases, and time-ordered splits."""

from __future__ import annotations

import math
from datetime import date
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from healthscore.config import Project
from healthscore.config.models import ProjectConfig
from healthscore.models.backtest import make_splits
from healthscore.models.dataset import Observations
from healthscore.models.errors import InsufficientLabels
from healthscore.models.evaluation import (
    ScoreCalibrator,
    band_precision_recall,
    churn_by_band,
    expected_calibration_error,
    lead_times,
    lift,
    reliability_curve,
    roc_auc,
)
from healthscore.models.hybrid import RuleProbability
from healthscore.models.labels import LabelSet


def test_lift_top_decile_by_hand():
    # 20 rows, 4 churned (rate 0.2). The riskiest 2 rows hold 1 churned: 0.5 / 0.2.
    labels = np.array([1, 0] + [0] * 15 + [1, 1, 1], dtype=float)
    risk = np.arange(20, 0, -1, dtype=float)
    assert lift(labels, risk, 0.1) == pytest.approx(2.5)


def test_lift_shares_ties_at_the_cut():
    # The top 1 of 10 rows is one of two tied rows, one churned: 0.5 churned taken.
    labels = np.array([1, 0, 0, 0, 0, 0, 0, 0, 0, 1], dtype=float)
    risk = np.array([5, 5, 1, 1, 1, 1, 1, 1, 1, 0], dtype=float)
    assert lift(labels, risk, 0.1) == pytest.approx(0.5 / 0.2)


def test_lift_without_churn_is_nan():
    assert math.isnan(lift(np.zeros(10), np.arange(10.0)))


def test_ece_by_hand():
    # Bin [0.1, 0.2): 2 rows at 0.1 and 0.15, 1 churned -> |0.5 - 0.125| = 0.375.
    # Bin [0.9, 1.0]: 2 rows at 0.9 and 1.0, 2 churned -> |1 - 0.95| = 0.05.
    labels = np.array([1, 0, 1, 1], dtype=float)
    probability = np.array([0.1, 0.15, 0.9, 1.0])
    assert expected_calibration_error(labels, probability) == pytest.approx(
        0.5 * 0.375 + 0.5 * 0.05
    )


def test_reliability_curve_leaves_out_empty_bins():
    curve = reliability_curve(
        np.array([1.0, 0.0, 1.0, 1.0]), np.array([0.1, 0.15, 0.9, 1.0])
    )
    assert curve["bin"].tolist() == [1, 9]
    assert curve["rows"].tolist() == [2, 2]
    assert curve["observed"].tolist() == [0.5, 1.0]


def test_reliability_rejects_probabilities_above_one():
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        reliability_curve(np.array([1.0]), np.array([1.5]))


def test_precision_and_recall_by_hand():
    labels = np.array([1, 1, 0, 0, 1, np.nan])
    flagged = np.array([True, False, True, True, True, True])
    precision, recall = band_precision_recall(labels, flagged)
    assert precision == pytest.approx(2 / 4)
    assert recall == pytest.approx(2 / 3)


def test_churn_by_band_falls():
    labels = np.array([1, 1, 0, 1, 0, 0, 0, 0], dtype=float)
    bands = np.array(
        [
            "at_risk",
            "at_risk",
            "at_risk",
            "stable",
            "stable",
            "healthy",
            "healthy",
            "insufficient_data",
        ]
    )
    rates, falls = churn_by_band(labels, bands, ["at_risk", "stable", "healthy"])
    assert [(rate.rows, rate.churned) for rate in rates] == [
        (3, 2),
        (2, 1),
        (2, 0),
        (1, 0),
    ]
    # Rows of too few measures get their own rate, outside the band order.
    assert rates[-1].band == "insufficient_data"
    assert falls is True


def test_churn_by_band_not_falling():
    labels = np.array([0, 1], dtype=float)
    _, falls = churn_by_band(
        labels, np.array(["at_risk", "healthy"]), ["at_risk", "healthy"]
    )
    assert falls is False


def test_lead_time_counts_unbroken_at_risk_run():
    rows = pd.DataFrame(
        {
            "account_id": ["a", "a", "a", "b", "b", "c"],
            "as_of": pd.to_datetime(
                [
                    "2024-01-01",
                    "2024-02-01",
                    "2024-03-01",
                    "2024-01-01",
                    "2024-02-01",
                    "2024-01-01",
                ]
            ),
            "flagged": [False, True, True, True, False, True],
            "churn_date": pd.to_datetime(
                [None, None, "2024-03-20", None, "2024-02-10", None]
            ),
        }
    )
    leads = lead_times(rows)
    # a: at risk from 2024-02-01 until churning on 2024-03-20 (48 days).
    assert leads.to_dict() == {"a": 48.0}


def test_roc_auc_with_one_class_is_nan():
    assert math.isnan(roc_auc(np.zeros(5), np.arange(5.0)))
    assert roc_auc(np.array([0, 1.0]), np.array([0.1, 0.9])) == 1.0


def test_calibrator_raises_with_few_churned():
    with pytest.raises(InsufficientLabels) as caught:
        ScoreCalibrator(min_churned=10).fit(
            np.arange(30.0), np.array([1] * 3 + [0] * 27)
        )
    assert caught.value.positives == 3
    assert caught.value.negatives == 27


def noisy_risk(rows: int) -> tuple[np.ndarray, np.ndarray]:
    generator = np.random.default_rng(0)
    risk = generator.uniform(0, 100, rows)
    labels = (generator.uniform(size=rows) < risk / 200).astype(float)
    return risk, labels


@pytest.mark.parametrize(("rows", "method"), [(1000, "sigmoid"), (4000, "isotonic")])
def test_calibrator_auto_method(rows, method):
    risk, labels = noisy_risk(rows)
    calibrator = ScoreCalibrator().fit(risk, labels)
    assert calibrator.method_ == method
    predicted = calibrator.predict(np.array([10.0, 50.0, 90.0]))
    assert predicted[0] <= predicted[1] <= predicted[2]
    # The true churn probability at risk 50 is 0.25.
    assert predicted[1] == pytest.approx(0.25, abs=0.06)


def make_observations(
    days: list[str], rows_per_day: int, churned_per_day: int
) -> Observations:
    frames = []
    for day in days:
        day_labels = [1.0] * churned_per_day + [0.0] * (rows_per_day - churned_per_day)
        frames.append(
            pd.DataFrame(
                {
                    "account_id": [f"a{i}" for i in range(rows_per_day)],
                    "as_of": pd.Timestamp(day),
                    "label": day_labels,
                }
            )
        )
    frame = pd.concat(frames, ignore_index=True)
    label_set = LabelSet(frame[["account_id", "as_of", "label"]], "subscriptions", None)
    dates = sorted({date.fromisoformat(day) for day in days})
    return Observations(frame, [], [], label_set, dates)


def monthly_project() -> Project:
    config = ProjectConfig.model_validate(
        {
            "name": "splits",
            "sources": {"accounts": {"kind": "accounts", "path": "a.csv"}},
            "scorecards": [
                {
                    "name": "default",
                    "components": {
                        "usage": {
                            "weight": 1,
                            "measures": [
                                {
                                    "metric": "m",
                                    "normalize": {
                                        "method": "bounds",
                                        "min": 0,
                                        "max": 1,
                                    },
                                }
                            ],
                        }
                    },
                }
            ],
            "outcomes": {"horizon": "1mo"},
        }
    )
    return Project(root=Path("."), config=config)


def test_time_splits_train_only_on_finished_horizons():
    observations = make_observations(
        ["2024-01-01", "2024-01-15", "2024-02-01", "2024-03-01"], 20, 5
    )
    splits, description, notes = make_splits(
        monthly_project(), observations, min_churned=3
    )
    as_of = observations.frame["as_of"].dt.date.to_numpy()
    trained = {split.name: sorted(set(as_of[split.train])) for split in splits}
    # 2024-01-15 has no date whose month ended by then, so it is not a test date.
    assert list(trained) == ["2024-02-01", "2024-03-01"]
    assert trained["2024-02-01"] == [date(2024, 1, 1)]
    assert trained["2024-03-01"] == [
        date(2024, 1, 1),
        date(2024, 1, 15),
        date(2024, 2, 1),
    ]
    assert "time-ordered" in description
    assert notes == []


def test_time_split_calibrates_on_latest_training_date():
    observations = make_observations(["2024-01-01", "2024-02-01", "2024-03-01"], 20, 5)
    splits, _, _ = make_splits(monthly_project(), observations, min_churned=3)
    as_of = observations.frame["as_of"].dt.date.to_numpy()
    assert set(as_of[splits[-1].calibrate]) == {date(2024, 2, 1)}


def test_one_date_uses_stratified_folds():
    observations = make_observations(["2024-01-01"], 100, 20)
    splits, description, notes = make_splits(
        monthly_project(), observations, 3, folds=5
    )
    assert len(splits) == 5
    labels = observations.frame["label"].to_numpy()
    assert all(labels[split.test].sum() == 4 for split in splits)
    assert "5-fold" in description
    assert notes == []


@pytest.mark.parametrize(
    ("churned", "rarer_label", "rarer"),
    [
        (3, 1.0, "3 labelled rows are churned"),
        (97, 0.0, "3 labelled rows are retained"),
    ],
)
def test_one_date_few_rows_fewer_folds(churned, rarer_label, rarer):
    observations = make_observations(["2024-01-01"], 100, churned)

    splits, description, notes = make_splits(
        monthly_project(), observations, 10, folds=10
    )

    assert [split.name for split in splits] == ["fold 1", "fold 2", "fold 3"]
    labels = observations.frame["label"].to_numpy()
    # Each fold tests one row of the rarer class and trains on the other two.
    for split in splits:
        assert (labels[split.test] == rarer_label).sum() == 1
        assert len(split.test) in (33, 34)
        assert split.held_out
    assert description == (
        "3-fold stratified cross-validation on the one labelled date, 2024-01-01"
    )
    assert notes == [
        "cross-validated with 3 folds, not validation.folds (10), because only "
        f"{rarer} and each fold needs one among its test rows"
    ]


def test_one_date_one_churned_no_folds():
    observations = make_observations(["2024-01-01"], 100, 1)

    splits, description, notes = make_splits(
        monthly_project(), observations, 10, folds=10
    )

    (split,) = splits
    assert split.name == "all rows"
    assert not split.held_out
    assert list(split.test) == list(range(100))
    assert list(split.train) == list(range(100))
    assert description.startswith(
        "none, because on the one labelled date, 2024-01-01, only 1 labelled row is "
        "churned, too few for 2 folds."
    )
    assert notes == []


def test_method_table_fits_80_columns(capsys, monkeypatch):
    from healthscore.cli.validation import _print_measures
    from healthscore.models.backtest import MethodResult

    monkeypatch.setenv("COLUMNS", "80")
    methods = ["rules", "weighted", "learned", "ml", "hybrid", "survival", "clusters"]
    results = [
        MethodResult(
            method=name, explainable=True, roc_auc=0.7051, lift_top_decile=3.42,
            ece=0.0136, lead_time_days=23.0, precision_at_risk=0.051,
            recall_at_risk=0.573, fit_seconds=24.5,
        )
        for name in methods
    ]  # fmt: skip
    _print_measures(results, "Scoring methods")
    lines = capsys.readouterr().out.splitlines()
    assert max(len(line) for line in lines) <= 80
    names = [line.split()[0] for line in lines if line.split()]
    for name in methods:
        assert name in names, name


def test_long_method_name_folds_not_numbers(capsys, monkeypatch):
    from healthscore.cli.validation import _print_measures
    from healthscore.models.backtest import MethodResult

    monkeypatch.setenv("COLUMNS", "80")
    name = "shadow:healthscore.proposed.yml"
    results = [
        MethodResult(
            method=method, explainable=True, roc_auc=0.8427, lift_top_decile=2.82,
            ece=0.0085, lead_time_days=float("nan"), precision_at_risk=0.59,
            recall_at_risk=0.677, fit_seconds=0.04,
        )
        for method in ("weighted", name)
    ]  # fmt: skip
    _print_measures(results, "Backtest of the scorecards")
    lines = capsys.readouterr().out.splitlines()
    assert max(len(line) for line in lines) <= 80
    shadow = next(line for line in lines if line.startswith(" shadow:"))
    assert shadow.split()[1:5] == ["0.843", "2.82", "0.0085", "-"]
    folded = [line.split()[0] for line in lines[lines.index(shadow) :] if line.split()]
    assert "".join(folded) == name


WEEKS = [
    f"2026-0{month}-{day:02d}" for month, day in [(3, 2), (3, 9), (3, 16), (3, 23)]
]


def test_grouped_notes_merge_counts_and_dates():
    from healthscore.models.backtest import grouped_notes

    notes = [
        f"{day}: skipped: found 0 churned and {9 * (i + 1)} retained, 10 needed"
        for i, day in enumerate(WEEKS)
    ]
    notes += ["no churn dates, so no lead time", "no churn dates, so no lead time"]
    assert grouped_notes(notes, WEEKS) == [
        "2026-03-02 to 2026-03-23 (4 dates): skipped: found 0 churned and 9 to 36 "
        "retained, 10 needed",
        "no churn dates, so no lead time",
    ]


def test_grouped_notes_keep_decimals_and_gaps():
    from healthscore.models.backtest import grouped_notes

    notes = [
        "2026-03-02: model weight 0.35",
        "2026-03-16: model weight 0.35",
        "2026-03-09: model weight 0.40",
        "2026-03-23: horizon ends after 2026-04-20",
    ]
    assert grouped_notes(notes, WEEKS) == [
        "2026-03-02, 2026-03-16 (2 dates): model weight 0.35",
        "2026-03-09: model weight 0.40",
        "2026-03-23: horizon ends after 2026-04-20",
    ]


def test_grouped_notes_name_folds():
    from healthscore.models.backtest import grouped_notes

    folds = [f"fold {number}" for number in range(1, 6)]
    notes = [f"{fold}: too few rows" for fold in folds[:3]] + ["fold 5: too few rows"]
    assert grouped_notes(notes, folds) == [
        "fold 1 to fold 3, fold 5 (4 splits): too few rows"
    ]


class _LabelPeek:
    """A method whose risk is the row number, the same for every split."""

    key = "peek"
    explainable = True

    def fit_predict(self, train, test, context):
        from healthscore.models.backtest import Prediction

        risk = np.arange(len(test), dtype=float)
        return Prediction(train_risk=np.arange(len(train), dtype=float), test_risk=risk)


def test_mean_split_auc_skips_one_class():
    from healthscore.models.backtest import run_methods

    observations = make_observations(
        ["2024-01-01", "2024-02-01", "2024-03-01", "2024-04-01"], 20, 5
    )
    frame = observations.frame
    # No account churns after the last date, so its split has no ROC AUC of its own.
    frame.loc[frame["as_of"] == pd.Timestamp("2024-04-01"), "label"] = 0.0
    frame["churn_date"] = pd.NaT
    frame["band"] = "stable"

    (result,), _ = run_methods(monthly_project(), observations, [_LabelPeek()])

    data = result.to_dict()
    # Churned rows are the first five of each date, so the row number ranks them
    # lowest: each scored split's ROC AUC is 0.
    assert [item["roc_auc"] for item in result.splits] == [0.0, 0.0, None]
    assert data["split_count"] == 3
    assert data["roc_auc_mean_split_count"] == 2
    assert data["roc_auc_mean_split"] == 0.0
    assert "2024-04-01: no ROC AUC of its own" in data["note"]


def scorable(observations: Observations) -> Observations:
    """Add the columns that `run_methods` reads besides the label."""
    frame = observations.frame
    frame["churn_date"] = pd.NaT
    frame["band"] = "stable"
    return observations


def varied_observations(churned_per_day: list[int], rows: int = 40) -> Observations:
    """Monthly observations from 2024-01-01 with the given churned rows per date."""
    days = [f"2024-{month:02d}-01" for month in range(1, len(churned_per_day) + 1)]
    parts = [
        make_observations([day], rows, churned)
        for day, churned in zip(days, churned_per_day, strict=True)
    ]
    frame = pd.concat([part.frame for part in parts], ignore_index=True)
    label_set = LabelSet(frame[["account_id", "as_of", "label"]], "subscriptions", None)
    dates = [date.fromisoformat(day) for day in days]
    return scorable(Observations(frame, [], [], label_set, dates))


class _ConstantRisk:
    """A method that gives every row the same risk."""

    key = "constant"
    explainable = True

    def fit_predict(self, train, test, context):
        from healthscore.models.backtest import Prediction

        return Prediction(
            train_risk=np.zeros(len(train)), test_risk=np.zeros(len(test))
        )


def test_constant_probability_is_noted():
    from healthscore.models.backtest import run_methods

    # Each split calibrates on its latest training date, where 10 of 40 rows
    # churned, so a constant risk maps every test row to 10 / 40 = 25.0 %.
    observations = varied_observations([10, 10, 10, 10])

    (result,), _ = run_methods(monthly_project(), observations, [_ConstantRisk()])

    probability = result.predictions["probability"].to_numpy()
    assert probability == pytest.approx(np.full(len(probability), 0.25), abs=1e-3)
    assert result.ece == pytest.approx(0.0, abs=1e-3)
    note = result.to_dict()["note"]
    assert "calibrated churn probabilities are constant" in note
    assert "every test row gets 25.0%" in note


def test_calibrator_falling_sigmoid_gives_churn_rate():
    risk, labels = noisy_risk(1000)

    # Risk 100 - r ranks churn the wrong way round, so a fitted logistic curve
    # falls as the risk rises.
    calibrator = ScoreCalibrator("sigmoid").fit(100.0 - risk, labels)

    churn_rate = labels.mean()
    assert calibrator.constant_ == pytest.approx(churn_rate)
    predicted = calibrator.predict(np.array([10.0, 50.0, np.nan]))
    assert predicted[:2] == pytest.approx([churn_rate, churn_rate])
    assert np.isnan(predicted[2])


class _BackwardRisk:
    """A method whose risk is highest for the retained rows."""

    key = "backward"
    explainable = True

    def fit_predict(self, train, test, context):
        from healthscore.models.backtest import Prediction

        return Prediction(
            train_risk=1.0 - train["label"].to_numpy(),
            test_risk=1.0 - test["label"].to_numpy(),
        )


def test_backward_risk_probability_is_noted():
    from healthscore.models.backtest import run_methods

    # Each split calibrates on its latest training date, where 10 of 40 rows
    # churned. Platt scaling would fit a falling curve there, so every test row
    # gets that date's churn rate, 25.0 %.
    observations = varied_observations([10, 10, 10, 10])

    (result,), _ = run_methods(monthly_project(), observations, [_BackwardRisk()])

    assert result.roc_auc == 0.0
    assert result.calibration == "constant churn rate"
    probability = result.predictions["probability"].to_numpy()
    assert probability == pytest.approx(np.full(len(probability), 0.25))
    note = result.to_dict()["note"]
    assert "every test row gets 25.0%" in note


class _BackwardOnFebruary:
    """A method that ranks churn first, but the wrong way round on 2024-02-01."""

    key = "february"
    explainable = True

    def fit_predict(self, train, test, context):
        from healthscore.models.backtest import Prediction

        risks = []
        for frame in (train, test):
            labels = frame["label"].to_numpy()
            backward = (frame["as_of"] == pd.Timestamp("2024-02-01")).to_numpy()
            risks.append(np.where(backward, 1.0 - labels, labels))
        return Prediction(train_risk=risks[0], test_risk=risks[1])


def test_calibration_names_constant_and_platt():
    from healthscore.models.backtest import run_methods

    # The splits 2024-02-01, 2024-03-01 and 2024-04-01 calibrate on the date before
    # them, where 10 of 40 rows churned. Only the split 2024-03-01 calibrates on the
    # backward ranking of 2024-02-01, so only its test rows get the churn rate.
    observations = varied_observations([10, 10, 10, 10])

    (result,), _ = run_methods(monthly_project(), observations, [_BackwardOnFebruary()])

    assert result.calibration == "Platt (sigmoid) and constant churn rate"
    predictions = result.predictions
    march = predictions[predictions["split"] == "2024-03-01"]["probability"]
    assert march.to_numpy() == pytest.approx(np.full(len(march), 0.25))
    others = predictions[predictions["split"] != "2024-03-01"]["probability"]
    assert others.nunique() > 1


def test_reliability_title_names_constant_calibration(capsys):
    from healthscore.cli.validation import _print_detail
    from healthscore.models.backtest import run_methods

    observations = varied_observations([10, 10, 10, 10])
    (result,), _ = run_methods(monthly_project(), observations, [_BackwardRisk()])

    _print_detail(result)

    output = capsys.readouterr().out
    assert "Reliability of backward (constant churn rate)" in output
    assert "Platt" not in output


def test_constant_probability_per_split_is_noted():
    from healthscore.models.backtest import run_methods

    # The calibration dates have 10, 12 and 14 churned rows of 40, so each split's
    # probability is constant but the pooled ones are not.
    observations = varied_observations([10, 12, 14, 10])

    (result,), _ = run_methods(monthly_project(), observations, [_ConstantRisk()])

    assert result.predictions["probability"].nunique() == 3
    note = result.to_dict()["note"]
    assert "every test row gets" not in note
    assert (
        "2024-02-01 to 2024-04-01 (3 dates): the calibrated churn probabilities "
        "are constant" in note
    )


class _NoisyLabel:
    """A method whose risk is the label plus noise, so it ranks churn first."""

    key = "noisy"
    explainable = True

    def fit_predict(self, train, test, context):
        from healthscore.models.backtest import Prediction

        generator = np.random.default_rng(0)
        risks = [
            frame["label"].to_numpy() + generator.uniform(0, 1.5, len(frame))
            for frame in (train, test)
        ]
        return Prediction(train_risk=risks[0], test_risk=risks[1])


class _InvertedLabel:
    """A method whose risk ranks every churned row below every retained one."""

    key = "inverted"
    explainable = True

    def fit_predict(self, train, test, context):
        from healthscore.models.backtest import Prediction

        generator = np.random.default_rng(0)
        risks = [
            -frame["label"].to_numpy() + generator.uniform(0, 0.5, len(frame))
            for frame in (train, test)
        ]
        return Prediction(train_risk=risks[0], test_risk=risks[1])


def test_inverted_risk_calibration_is_noted():
    from healthscore.models.backtest import run_methods

    # With 500 churned rows per date the calibration is isotonic. An increasing
    # map of a risk that ranks churn the wrong way round is flat at the churn rate
    # of the calibration date, 500 / 2000 = 25.0 %.
    observations = varied_observations([500, 500, 500, 500], rows=2000)

    (result,), _ = run_methods(monthly_project(), observations, [_InvertedLabel()])

    assert result.roc_auc == 0.0
    assert result.calibration == "isotonic"
    assert result.ece == pytest.approx(0.0, abs=1e-9)
    assert "every test row gets 25.0%" in result.to_dict()["note"]


def test_varied_probability_has_no_constant_note():
    from healthscore.models.backtest import run_methods

    observations = varied_observations([10, 10, 10, 10])

    (result,), _ = run_methods(monthly_project(), observations, [_NoisyLabel()])

    assert result.predictions["probability"].nunique() > 1
    assert "constant" not in result.to_dict()["note"]


@pytest.mark.parametrize(
    ("churned_per_day", "expected"),
    [
        ([1, 1, 1, 1], "only 3 churned test rows, fewer than"),
        ([1, 1, 0, 0], "only 1 churned test row, fewer than"),
        ([1, 0, 0, 0], "no churned test row, fewer than"),
        ([4, 4, 4, 4], None),
    ],
)
def test_few_churned_test_rows_are_noted(churned_per_day, expected):
    from healthscore.models.backtest import SharedNote, run_methods

    # validation.min_churned is 10 by default, and the first date is never tested.
    observations = varied_observations(churned_per_day)

    (result,), _ = run_methods(monthly_project(), observations, [_LabelPeek()])

    assert result.churned == sum(churned_per_day[1:])
    shared = [line for line in result.notes if isinstance(line, SharedNote)]
    if expected is None:
        assert shared == []
    else:
        (line,) = shared
        assert line.startswith(expected)
        assert "validation.min_churned (10)" in line
        assert "unreliable" in line


def test_unequal_rows_are_noted():
    from healthscore.models.backtest import MethodResult, SharedNote, note_unequal_rows

    full = MethodResult("weighted", True, rows=3543, churned=66)
    fewer = MethodResult("ml", True, rows=2976, churned=57)
    skipped = MethodResult("hybrid", True)

    note_unequal_rows([full, fewer, skipped])

    assert full.notes == []
    assert skipped.notes == []
    (line,) = fewer.notes
    assert isinstance(line, SharedNote)
    assert line.startswith("tested on 2,976 of the 3,543 test rows")
    assert "not directly comparable" in line


def test_skipped_method_json_nulls():
    from healthscore.models.backtest import MethodResult

    skipped = MethodResult("hybrid", True, fit_seconds=1.5).to_dict()
    scored = MethodResult("ml", False, fit_seconds=1.5, rows=10, churned=2).to_dict()

    assert skipped["explainable"] is None
    assert skipped["fit_seconds"] is None
    assert scored["explainable"] is False
    assert scored["fit_seconds"] == 1.5
    assert (scored["rows"], scored["churned"]) == (10, 2)


def test_method_table_shows_unequal_test_rows(capsys, monkeypatch):
    from healthscore.cli.validation import _print_measures
    from healthscore.models.backtest import MethodResult

    monkeypatch.setenv("COLUMNS", "80")
    counts = {"rules": 3543, "weighted": 3543, "ml": 2976, "hybrid": 0}
    results = [
        MethodResult(
            method=name, explainable=True, roc_auc=0.9431, lift_top_decile=8.14,
            ece=0.0049, lead_time_days=104.0, precision_at_risk=0.241,
            recall_at_risk=0.561, fit_seconds=33.52, rows=rows,
        )
        for name, rows in counts.items()
    ]  # fmt: skip

    _print_measures(results, "Comparison of scoring methods")

    lines = capsys.readouterr().out.splitlines()
    assert max(len(line) for line in lines) <= 80
    cells = {line.split()[0]: line.split() for line in lines if line.strip()}
    assert cells["rules"][1] == "3,543"
    assert cells["ml"][1] == "2,976"
    assert cells["hybrid"][1] == "-"
    assert cells["ml"][2] == "0.943"
    assert cells["ml"][-1] == "yes"


def test_method_table_leaves_out_equal_test_rows(capsys, monkeypatch):
    from healthscore.cli.validation import _print_measures
    from healthscore.models.backtest import MethodResult

    monkeypatch.setenv("COLUMNS", "80")
    results = [
        MethodResult(method=name, explainable=True, roc_auc=0.9431, rows=3543)
        for name in ("rules", "weighted")
    ]

    _print_measures(results, "Comparison of scoring methods")

    output = capsys.readouterr().out
    assert "test" not in output
    assert "3,543" not in output


def test_dates_within_one_horizon_say_so():
    from healthscore.models.backtest import run_methods

    observations = make_observations(["2024-01-01", "2024-01-08", "2024-01-15"], 40, 10)
    observations.frame["churn_date"] = pd.NaT
    observations.frame["band"] = "stable"

    with pytest.raises(ValueError) as caught:
        run_methods(monthly_project(), observations, [_LabelPeek()])

    message = str(caught.value)
    assert not isinstance(caught.value, InsufficientLabels)
    assert "no labelled date has an earlier labelled date whose outcome" in message
    assert "the 3 dates run from 2024-01-01 to 2024-01-15" in message
    assert "the first horizon ends on 2024-02-01" in message


class _ColumnRisk:
    """A method whose test risk is the column `r`, and whose training risk is 100
    higher, as when a model's probability level falls between dates."""

    key = "column-risk"
    explainable = True

    def fit_predict(self, train, test, context):
        from healthscore.models.backtest import Prediction

        return Prediction(
            train_risk=train["r"].to_numpy(dtype=float) + 100,
            test_risk=test["r"].to_numpy(dtype=float),
        )


def test_flagged_share_per_test_date_by_hand():
    from healthscore.models.backtest import run_methods

    days = {"2024-01-01": 20, "2024-02-01": 20, "2024-03-01": 10}
    frame = pd.concat(
        [make_observations([day], rows, 3).frame for day, rows in days.items()],
        ignore_index=True,
    )
    number = frame["account_id"].str[1:].astype(int)
    as_of = frame["as_of"].dt.strftime("%Y-%m-%d")
    # The live scorecard bands 4 of 20 rows at risk on 2024-01-01 and 10 of 20 on
    # 2024-02-01. The bands of the last date, only ever a test date, do not count.
    frame["band"] = "stable"
    frame.loc[(as_of == "2024-01-01") & (number < 4), "band"] = "at_risk"
    frame.loc[(as_of == "2024-02-01") & (number < 10), "band"] = "at_risk"
    frame["churn_date"] = pd.NaT
    frame["r"] = number.astype(float)
    march = {0: 9.0, 1: 8.0, 2: 7.0, 3: 7.0, 4: 7.0, 5: np.nan, 6: 5.0}
    for account, risk in march.items():
        frame.loc[(as_of == "2024-03-01") & (number == account), "r"] = risk
    frame.loc[(as_of == "2024-03-01") & (number > 6), "r"] = 0.0
    label_set = LabelSet(frame[["account_id", "as_of", "label"]], "subscriptions", None)
    observations = Observations(
        frame, [], [], label_set, [date.fromisoformat(day) for day in days]
    )

    (result,), _ = run_methods(monthly_project(), observations, [_ColumnRisk()])

    predictions = result.predictions
    flagged = {
        day.date().isoformat(): sorted(part.loc[part["flagged"], "account_id"])
        for day, part in predictions.groupby("as_of")
    }
    # 2024-02-01 trains on 2024-01-01, where 4 / 20 = 20 % of rows were banded at
    # risk: 4 of its 20 rows, the highest r.
    assert flagged["2024-02-01"] == ["a16", "a17", "a18", "a19"]
    # 2024-03-01 trains on both earlier dates, 14 / 40 = 35 % at risk: 3.5 of its 10
    # rows, rounded half up to 4. a0 and a1 rank first. a2, a3 and a4 tie at 7.0,
    # and the CRC-32 of their ids (4125628825, 2196711695 and 478919852) puts a4
    # and a3 first. a5 has no risk.
    assert flagged["2024-03-01"] == ["a0", "a1", "a3", "a4"]


def test_one_test_date_measures_lead_time():
    from healthscore.models.backtest import MethodResult, _measure

    # One test date, 2024-03-01. Of the churned accounts a, b and c, a and b are
    # flagged: they churn 10 and 20 days later, so the median lead time is 15 days.
    predictions = pd.DataFrame(
        {
            "account_id": ["a", "b", "c", "d"],
            "as_of": pd.Timestamp("2024-03-01"),
            "label": [1.0, 1.0, 1.0, 0.0],
            "churn_date": pd.to_datetime(
                ["2024-03-11", "2024-03-21", "2024-03-15", None]
            ),
            "risk": [0.9, 0.8, 0.1, 0.2],
            "probability": np.nan,
            "flagged": [True, True, False, False],
            "method_band": None,
        }
    )
    result = MethodResult("weighted", True)

    _measure(result, predictions, "at_risk", ["at_risk", "stable"])

    assert result.lead_time_days == 15.0
    assert result.flagged_churned_share == pytest.approx(2 / 3)
    assert result.notes == [
        "the lead time counts from the one test date, 2024-03-01, because no "
        "earlier test date shows when the accounts were first flagged"
    ]


def test_hybrid_rule_curve_rising_gives_churn_rate():
    risk, labels = noisy_risk(1000)
    # As a health score, the risk itself ranks churn the wrong way round: churn
    # rises with it.
    backward = RuleProbability().fit(risk, labels)
    forward = RuleProbability().fit(100.0 - risk, labels)

    churn_rate = labels.mean()
    assert backward.constant_ == pytest.approx(churn_rate)
    predicted = backward.predict(np.array([10.0, 90.0, np.nan]))
    assert predicted == pytest.approx([churn_rate] * 3)
    assert forward.constant_ is None
    high, low = forward.predict(np.array([10.0, 90.0]))
    assert high > churn_rate > low
