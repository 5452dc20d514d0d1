"""Churn classifiers, the hybrid blend, stored models, `train` and `explain --model`.

Synthetic data carry a known signal (see `churn_project.known_signal`), so a fitted
model is checked against the true churn probabilities: its ROC AUC against that of
the truth, its calibration error by an independent binning, and which features its
contributions credit.
"""

from __future__ import annotations

import json
from datetime import date
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from sklearn.base import clone
from sklearn.exceptions import NotFittedError
from sklearn.metrics import roc_auc_score
from typer.testing import CliRunner, Result

from churn_project import (
    SNAPSHOT_DATES,
    churn_config,
    churn_files,
    churn_project,
    known_signal,
)
from healthscore.cli import app
from healthscore.config import Project
from healthscore.models.errors import InsufficientLabels
from healthscore.models.hybrid import HybridScorer
from healthscore.models.ml import ChurnClassifier, leaf_rows
from healthscore.models.persist import (
    ModelNotFoundError,
    load_model,
    models_folder,
    save_model,
)
from healthscore.monitoring.backfill import backfill
from healthscore.pipeline import snapshot_store
from project_factory import write_project

KINDS = ["lightgbm", "logistic"]


def calibration_error(labels: np.ndarray, probability: np.ndarray) -> float:
    """Expected calibration error over ten equal-width bins, written out plainly."""
    total = 0.0
    for low in np.arange(0.0, 1.0, 0.1):
        inside = (probability >= low) & (probability < low + 0.1)
        if low >= 0.9:
            inside |= probability == 1.0
        if inside.any():
            gap = abs(labels[inside].mean() - probability[inside].mean())
            total += inside.sum() / len(labels) * gap
    return total


@pytest.fixture(scope="module")
def signal() -> tuple[pd.DataFrame, np.ndarray, np.ndarray]:
    return known_signal(12000, seed=1)


# ChurnClassifier on a known signal


@pytest.mark.parametrize("kind", KINDS)
def test_classifier_learns_known_signal(kind: str, signal) -> None:
    frame, labels, truth = signal
    model = ChurnClassifier(kind=kind).fit(frame[:8000], labels[:8000])
    churn = model.predict_proba(frame[8000:])[:, 1]
    test_labels = labels[8000:]
    best_possible = roc_auc_score(test_labels, truth[8000:])
    assert roc_auc_score(test_labels, churn) > best_possible - 0.02
    assert calibration_error(test_labels, churn) < 0.03
    assert model.calibration_ == "isotonic"
    assert model.split_ == "5 folds"
    assert model.notes_ == []


@pytest.mark.parametrize("kind", KINDS)
def test_contributions_sum_to_margin(kind: str, signal) -> None:
    frame, labels, _ = signal
    model = ChurnClassifier(kind=kind).fit(frame[:4000], labels[:4000])
    parts = model.contributions(frame[4000:4500])
    assert list(parts.columns) == [*frame.columns, "bias"]
    margin = model.decision_function(frame[4000:4500])
    np.testing.assert_allclose(parts.sum(axis=1).to_numpy(), margin, atol=1e-9)


@pytest.mark.parametrize("kind", KINDS)
def test_contributions_credit_signal_features(kind: str, signal) -> None:
    frame, labels, _ = signal
    model = ChurnClassifier(kind=kind).fit(frame[:6000], labels[:6000])
    strength = model.contributions(frame[6000:7000]).drop(columns="bias").abs().mean()
    assert strength["measure:usage"] > 5 * strength["measure:noise"]
    assert strength["measure:usage"] > 5 * strength["metric:random"]
    assert strength["metric:plan"] > strength["metric:random"]
    # Low usage raises the churn risk: its part falls as usage rises.
    parts = model.contributions(frame[6000:7000])["measure:usage"]
    usage = frame["measure:usage"][6000:7000]
    assert np.corrcoef(parts, usage)[0, 1] < -0.8


def test_logistic_contribution_is_coefficient_times_value() -> None:
    frame = pd.DataFrame({"x": [0.0, 1.0, 2.0, 3.0] * 50})
    labels = np.array([0, 0, 1, 1] * 50)
    model = ChurnClassifier(kind="logistic", calibration=None).fit(frame, labels)
    member = model.members_[0]
    coefficient = member.model.coef_[0][0]
    # One fold's part of x: coefficient times (x - mean) / standard deviation.
    mean, deviation = frame["x"].mean(), frame["x"].std()
    assert member.encoder is not None
    expected = coefficient * (3.0 - member.encoder.mean_[0]) / member.encoder.scale_[0]
    single = model._member_contributions(member, pd.DataFrame({"x": [3.0]}))
    assert single[0, 0] == pytest.approx(expected)
    assert member.encoder.mean_[0] == pytest.approx(mean, rel=0.2)
    assert member.encoder.scale_[0] == pytest.approx(deviation, rel=0.2)


@pytest.mark.parametrize(
    ("churned", "rows", "expected"),
    [
        (500, 10000, 800),  # 5 % churned: 40 / 0.05
        (3000, 10000, 134),  # 30 %: ceil(133.3)
        (6000, 10000, 100),  # retained rows are the rarer class: 40 / 0.4
        (400, 1000, 100),  # 40 %: 40 / 0.4
        (10, 1000, 5),  # fewer than 160 churned rows: half of them
        (900, 1000, 50),  # 100 retained rows are the rarer class: half of them
        (0, 1000, 50),  # one class only
        (200, 250, 25),  # 50 retained rows: half of them
        (160, 641, 160),  # 40 / (160 / 641) = 160.25, capped at a quarter of 641
    ],
)
def test_leaf_rows_rule(churned: int, rows: int, expected: int) -> None:
    labels = np.zeros(rows, dtype=int)
    labels[:churned] = 1
    assert leaf_rows(labels) == expected


def test_leaf_rows_balanced_classes() -> None:
    labels = np.array([0, 1] * 500)
    # 500 churned rows at 50 %: 40 / 0.5 rows per leaf.
    assert leaf_rows(labels) == 80
    labels = np.array([0, 1] * 100)
    # 100 churned rows, fewer than 160: half of them.
    assert leaf_rows(labels) == 50


def test_default_leaf_size_follows_churn_rate(signal) -> None:
    frame, labels, _ = signal
    model = ChurnClassifier().fit(frame[:6000], labels[:6000])
    # The last fold's training rows set the recorded size.
    _, holdout = model._splits(labels[:6000], None)[-1]
    fit_labels = np.delete(labels[:6000], holdout)
    assert model.min_child_samples_ == leaf_rows(fit_labels)
    member = model.members_[-1].model
    assert member.get_params()["min_child_samples"] == model.min_child_samples_
    fixed = ChurnClassifier(min_child_samples=20).fit(frame[:6000], labels[:6000])
    assert fixed.members_[0].model.get_params()["min_child_samples"] == 20
    assert not hasattr(fixed, "min_child_samples_")


def test_time_order_holds_out_latest_dates(signal) -> None:
    frame, labels, _ = signal
    order = np.repeat(pd.date_range("2024-01-01", periods=10, freq="MS"), 600)
    model = ChurnClassifier().fit(frame[:6000], labels[:6000], order=order)
    assert model.split_ == "time"
    # The latest two dates hold 20 % of the rows.
    assert model.holdout_size_ == 1200
    assert len(model.members_) == 1


def test_few_churned_in_latest_dates_uses_folds(signal) -> None:
    frame, labels, _ = signal
    order = np.repeat(pd.date_range("2024-01-01", periods=10, freq="MS"), 600)
    labels = labels[:6000].copy()
    labels[4800:] = 0  # no churn in the two latest dates
    model = ChurnClassifier(kind="logistic").fit(frame[:6000], labels, order=order)
    assert model.split_ == "5 folds"
    assert any("stratified folds of all dates" in text for text in model.notes_)
    assert model.calibration_ == "isotonic"


def test_calibration_falls_back_to_sigmoid(signal) -> None:
    frame, labels, _ = signal
    model = ChurnClassifier(kind="logistic").fit(frame[:1500], labels[:1500])
    # Each fold contains 300 rows, fewer than the 1,000 isotonic calibration needs.
    assert model.calibration_ == "sigmoid"


def test_too_few_to_calibrate_notes_it() -> None:
    frame, labels, _ = known_signal(400, seed=3)
    labels = np.zeros(400, dtype=int)
    labels[:30] = 1
    model = ChurnClassifier(kind="logistic").fit(frame, labels)
    # 30 churned rows in 5 folds leave 6 per fold, fewer than 10.
    assert model.calibration_ is None
    assert any("not calibrated" in text for text in model.notes_)


def test_explicit_isotonic_with_too_few_raises() -> None:
    frame, _, _ = known_signal(400, seed=3)
    labels = np.zeros(400, dtype=int)
    labels[:30] = 1
    with pytest.raises(InsufficientLabels, match="6 churned") as caught:
        ChurnClassifier(kind="logistic", calibration="isotonic").fit(frame, labels)
    assert caught.value.minimum == 10


def test_too_few_churned_raises_with_counts() -> None:
    frame, _, _ = known_signal(200, seed=4)
    labels = np.zeros(200, dtype=int)
    labels[:7] = 1
    with pytest.raises(InsufficientLabels) as caught:
        ChurnClassifier().fit(frame, labels)
    assert caught.value.positives == 7
    assert caught.value.negatives == 193
    assert "found 7 churned and 193 retained" in str(caught.value)
    assert "at least 10" in str(caught.value)


def test_too_few_to_hold_out_fits_without_calibration() -> None:
    frame, _, _ = known_signal(300, seed=5)
    labels = np.zeros(300, dtype=int)
    labels[::25] = 1  # 12 churned: 2 per fold of 5, fewer than 5
    model = ChurnClassifier(kind="logistic").fit(frame, labels)
    assert model.split_ == "none"
    assert model.calibration_ is None
    assert any("without early stopping or calibration" in t for t in model.notes_)
    assert np.ptp(model.predict_proba(frame)[:, 1]) > 0


def test_constant_features_are_noted() -> None:
    frame = pd.DataFrame({"measure:flat": np.full(400, 50.0)})
    labels = np.array([0, 1] * 200)
    model = ChurnClassifier().fit(frame, labels)
    assert any("same churn probability" in text for text in model.notes_)


def test_censored_labels_are_rejected(signal) -> None:
    frame, labels, _ = signal
    with_nan = labels[:500].astype(float)
    with_nan[3] = np.nan
    with pytest.raises(ValueError, match="1 labels are missing"):
        ChurnClassifier().fit(frame[:500], with_nan)


@pytest.mark.parametrize("kind", KINDS)
def test_unseen_category_and_missing_values(kind: str, signal) -> None:
    frame, labels, _ = signal
    model = ChurnClassifier(kind=kind).fit(frame[:3000], labels[:3000])
    odd = frame[:2].copy()
    odd["metric:plan"] = ["enterprise", None]
    odd["measure:usage"] = [np.nan, 10.0]
    churn = model.predict_proba(odd)[:, 1]
    assert np.isfinite(churn).all()


def test_missing_feature_column_is_named(signal) -> None:
    frame, labels, _ = signal
    model = ChurnClassifier(kind="logistic").fit(frame[:2000], labels[:2000])
    with pytest.raises(ValueError, match="measure:usage"):
        model.predict_proba(frame.drop(columns="measure:usage")[:10])


def test_estimator_contract(signal) -> None:
    frame, labels, _ = signal
    model = ChurnClassifier(kind="logistic", C=0.5, random_state=3)
    copy = clone(model)
    assert copy.get_params() == model.get_params()
    with pytest.raises(NotFittedError):
        model.predict_proba(frame[:5])
    assert model.fit(frame[:2000], labels[:2000]) is model
    assert list(model.feature_names_in_) == list(frame.columns)
    assert list(model.classes_) == [0, 1]
    assert not hasattr(clone(model), "members_")


def test_numpy_input() -> None:
    generator = np.random.default_rng(0)
    features = generator.normal(size=(1000, 3))
    labels = (features[:, 0] + generator.normal(size=1000) > 1).astype(int)
    model = ChurnClassifier(kind="logistic").fit(features, labels)
    assert list(model.feature_names_in_) == ["x0", "x1", "x2"]
    assert roc_auc_score(labels, model.predict_proba(features)[:, 1]) > 0.8


# HybridScorer


def test_hybrid_prefers_model_over_noise_rule(signal) -> None:
    frame, labels, _ = signal
    generator = np.random.default_rng(0)
    noise_score = generator.uniform(0, 100, len(labels))
    scorer = HybridScorer(ChurnClassifier(kind="logistic"), refit=False)
    scorer.fit(frame[:4000], labels[:4000], noise_score[:4000],
               frame[4000:6000], labels[4000:6000], noise_score[4000:6000])  # fmt: skip
    assert scorer.weight_ >= 0.8
    churn = scorer.predict_proba(frame[6000:], noise_score[6000:])[:, 1]
    assert roc_auc_score(labels[6000:], churn) > 0.75


def test_hybrid_prefers_rule_over_noise_model(signal) -> None:
    frame, labels, truth = signal
    # The rule score follows the true risk, but the model gets only noise features.
    rule_score = 100.0 * (1.0 - truth)
    noise = frame[["measure:noise", "metric:random"]]
    scorer = HybridScorer(ChurnClassifier(kind="logistic"))
    scorer.fit(noise[:4000], labels[:4000], rule_score[:4000],
               noise[4000:6000], labels[4000:6000], rule_score[4000:6000])  # fmt: skip
    assert scorer.weight_ <= 0.2
    table = scorer.validation_
    assert list(table["weight"]) == pytest.approx([i / 10 for i in range(11)])
    best_row = table.loc[table["log_loss"].idxmin()]
    assert best_row["weight"] == scorer.weight_


def test_hybrid_uses_model_where_rule_score_missing(signal) -> None:
    frame, labels, truth = signal
    rule_score = 100.0 * (1.0 - truth)
    scorer = HybridScorer(ChurnClassifier(kind="logistic"), weights=[0.0], refit=False)
    scorer.fit(frame[:3000], labels[:3000], rule_score[:3000],
               frame[3000:5000], labels[3000:5000], rule_score[3000:5000])  # fmt: skip
    missing = np.full(5, np.nan)
    blended = scorer.predict_proba(frame[:5], missing)[:, 1]
    model_only = scorer.classifier_.predict_proba(frame[:5])[:, 1]
    np.testing.assert_allclose(blended, model_only)


def test_hybrid_with_too_few_validation_churns(signal) -> None:
    frame, labels, _ = signal
    few = np.zeros(200, dtype=int)
    few[:4] = 1
    with pytest.raises(InsufficientLabels, match="found 4 churned"):
        HybridScorer().fit(frame[:2000], labels[:2000], np.full(2000, 50.0),
                           frame[2000:2200], few, np.full(200, 50.0))  # fmt: skip


def test_hybrid_rejects_bad_weights(signal) -> None:
    frame, labels, _ = signal
    with pytest.raises(ValueError, match="weights must be numbers from 0 to 1"):
        HybridScorer(weights=[0.5, 1.5]).fit(
            frame[:100], labels[:100], np.zeros(100),
            frame[100:200], labels[100:200], np.zeros(100),
        )  # fmt: skip


# Stored models


@pytest.fixture
def bare_project(tmp_path: Path) -> Project:
    return Project(root=tmp_path, config=None)  # type: ignore[arg-type]


def test_model_round_trip(bare_project: Project, signal) -> None:
    frame, labels, _ = signal
    model = ChurnClassifier(kind="logistic").fit(frame[:2000], labels[:2000])
    folder = save_model(bare_project, "churn", model, {"kind": "logistic"})
    assert folder == models_folder(bare_project) / "churn"
    stored = load_model(bare_project, "churn")
    np.testing.assert_array_equal(
        stored.estimator.predict_proba(frame[2000:2100]),
        model.predict_proba(frame[2000:2100]),
    )
    assert stored.metadata["kind"] == "logistic"
    assert stored.metadata["libraries"]["scikit-learn"]
    assert len(stored.metadata["sha256"]) == 64


def test_changed_model_file_is_not_loaded(bare_project: Project) -> None:
    folder = save_model(bare_project, "churn", {"weights": [1, 2]}, {})
    with open(folder / "model.joblib", "ab") as handle:
        handle.write(b"tampered")
    with pytest.raises(ValueError, match="does not match the SHA-256"):
        load_model(bare_project, "churn")


def test_linked_model_folder_is_not_loaded(
    bare_project: Project, tmp_path: Path
) -> None:
    elsewhere = Project(root=tmp_path / "other", config=None)  # type: ignore[arg-type]
    outside = save_model(elsewhere, "churn", {"weights": [1]}, {})
    models_folder(bare_project).mkdir(parents=True)
    (models_folder(bare_project) / "churn").symlink_to(outside)
    with pytest.raises(ValueError, match="symbolic link or lies outside"):
        load_model(bare_project, "churn")


def test_missing_model_says_to_train(bare_project: Project) -> None:
    with pytest.raises(ModelNotFoundError, match="run `healthscore train` first"):
        load_model(bare_project, "churn")


def test_save_replaces_old_model(bare_project: Project) -> None:
    save_model(bare_project, "churn", {"version": 1}, {})
    save_model(bare_project, "churn", {"version": 2}, {})
    assert load_model(bare_project, "churn").estimator == {"version": 2}
    leftovers = [p.name for p in models_folder(bare_project).iterdir()]
    assert leftovers == ["churn"]


def test_invalid_model_name(bare_project: Project) -> None:
    with pytest.raises(ValueError, match="invalid model name"):
        save_model(bare_project, "../churn", {}, {})


# Commands


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> tuple[Project, dict]:
    project = churn_project(tmp_path_factory.mktemp("churn"))
    result = CliRunner().invoke(
        app, ["train", "--project", str(project.root), "--json"]
    )
    assert result.exit_code == 0, result.output
    return project, json.loads(result.stdout)


def test_train_stores_model_with_metadata(trained) -> None:
    project, result = trained
    assert result["kind"] == "lightgbm"
    assert result["training_dates"][0] == "2024-02-01"
    assert result["training_dates"][-1] == "2024-07-01"
    assert result["churned"] > 40
    stored = load_model(project, "churn")
    assert stored.metadata["features"] == result["features"]
    # A measure is left out when its metric is a feature: trees split on either.
    assert "metric:logins" in result["features"]
    assert "measure:logins" not in result["features"]
    assert "metric:days_since_login" in result["features"]
    assert stored.metadata["libraries"]["lightgbm"]


def test_train_validates_on_latest_dates(trained) -> None:
    _, result = trained
    validation = result["validation"]
    assert validation["method"].startswith("time-ordered")
    assert validation["rows"] > 0
    # Churn follows activity, which the login measures see; the score itself has a
    # ROC AUC of 0.70 on these rows.
    assert validation["roc_auc"] > 0.6


def test_train_stores_survival_model(trained) -> None:
    project, result = trained
    survival = result["survival"]
    assert survival["concordance"] > 0.6
    assert load_model(project, "survival").metadata["features"] == survival["features"]


def test_train_prints_survival_notes(tmp_path: Path) -> None:
    from healthscore.monitoring.backfill import backfill
    from project_factory import write_project

    config = churn_config()
    # A metric of 5 for every account gives the measure 50 on every row.
    config["metrics"]["flat"] = {"type": "formula", "expression": "logins * 0 + 5"}
    config["scorecards"][0]["components"]["usage"]["measures"].append(
        {"metric": "flat", "normalize": {"method": "bounds", "min": 0, "max": 10}}
    )
    project = write_project(tmp_path, config, churn_files())
    backfill(project, SNAPSHOT_DATES)
    note = (
        "left out measure:flat (50.0 on every training row), because a feature "
        "that does not vary on the training rows cannot be fitted"
    )

    listed = CliRunner().invoke(app, ["train", "--project", str(tmp_path), "--json"])
    shown = CliRunner().invoke(app, ["train", "--project", str(tmp_path)])

    assert listed.exit_code == 0, listed.output
    survival = json.loads(listed.stdout)["survival"]
    assert survival["notes"] == [note]
    # The measures of the churn project's scorecard, without the flat one.
    fitted = [f"measure:{name}" for name in ("logins", "logins_7d", "days_since_login")]
    assert sorted(survival["features"]) == sorted(fitted)
    stored = load_model(project, "survival").metadata["features"]
    assert stored == survival["features"]
    assert shown.exit_code == 0, shown.output
    assert f"Survival model: {note}" in " ".join(shown.stderr.split())
    assert "Survival model (Cox, 3 measures)" in " ".join(shown.stdout.split())


def test_train_table_output(trained) -> None:
    project, _ = trained
    result = CliRunner().invoke(
        app, ["train", "--model", "logistic", "--project", str(project.root)]
    )
    assert result.exit_code == 0, result.output
    assert "Trained a logistic churn model" in result.stdout
    assert "ROC AUC" in result.stdout
    assert load_model(project, "churn").metadata["kind"] == "logistic"
    # Sentences wrap at 80 columns; only the line naming the stored file may not.
    long = [line for line in result.output.splitlines() if len(line) > 80]
    assert all(line.startswith("Stored in ") for line in long), long


def test_train_as_of_uses_known_outcomes_only(trained) -> None:
    project, _ = trained
    result = CliRunner().invoke(
        app,
        ["train", "--as-of", "2024-06-01", "--project", str(project.root), "--json"],
    )
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    # Outcomes of 2024-05-01 end on 2024-06-01; later dates are not known yet.
    assert data["training_dates"][-1] == "2024-05-01"


def test_explain_model_contributions_add_up(trained) -> None:
    project, _ = trained
    scores = snapshot_store(project).read(date(2024, 7, 1), "scores")
    account = str(scores["account_id"].iloc[0])
    arguments = ["explain", account, "--as-of", "2024-07-01", "--model"]
    result = CliRunner().invoke(
        app, [*arguments, "--project", str(project.root), "--json"]
    )
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    total = data["bias"] + sum(item["contribution"] for item in data["contributions"])
    assert total == pytest.approx(data["margin"], abs=1e-9)
    assert 0.0 <= data["churn_probability"] <= 1.0
    table = CliRunner().invoke(app, [*arguments, "--project", str(project.root)])
    assert table.exit_code == 0, table.output
    assert "churn probability" in table.stdout


def test_explain_model_unknown_account(trained) -> None:
    project, _ = trained
    arguments = ["explain", "nobody", "--as-of", "2024-07-01", "--model"]
    result = CliRunner().invoke(app, [*arguments, "--project", str(project.root)])
    assert result.exit_code == 1
    assert "'nobody' is not in the snapshot of 2024-07-01" in result.output


def test_explain_model_rejects_compare_to(trained) -> None:
    project, _ = trained
    arguments = ["explain", "a0", "--as-of", "2024-07-01", "--model"]
    arguments += ["--compare-to", "2024-06-01", "--project", str(project.root)]
    result = CliRunner().invoke(app, arguments)
    assert result.exit_code == 2
    assert "--model explains one date" in result.output


def profiled_files() -> dict[str, str]:
    """The churn project's files with four text columns on the accounts.

    `tier` is "gold" for every account. `plan21` has 21 values, `plan20` 20 and
    `color` 25, each account taking value i modulo their count.
    """
    files = churn_files()
    lines = files["accounts.csv"].splitlines()
    rows = [lines[0] + ",tier,plan21,plan20,color"]
    for i, line in enumerate(lines[1:]):
        rows.append(f"{line},gold,p{i % 21},q{i % 20},c{i % 25}")
    files["accounts.csv"] = "\n".join(rows) + "\n"
    return files


def profiled_config() -> dict:
    """The churn project with text metrics, and a profile component that scores
    `tier` (so the same 50 for every account) and `color`."""
    config = churn_config()
    config["sources"]["accounts"]["attributes"] = dict.fromkeys(
        ["tier", "plan21", "plan20", "color"], "string"
    )
    for name in ("tier", "plan21", "plan20", "color"):
        config["metrics"][name] = {"type": "attribute", "column": name}
    config["scorecards"][0]["components"]["profile"] = {
        "weight": 1,
        "measures": [
            {
                "metric": "tier",
                "normalize": {"method": "categories", "scores": {"gold": 50}},
            },
            {
                "metric": "color",
                "normalize": {
                    "method": "categories",
                    "scores": {"c0": 90},
                    "default": 50,
                },
            },
        ],
    }
    return config


@pytest.fixture(scope="module")
def profiled(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Result]:
    """`train` and `compare` on the project of `profiled_config`."""
    root = tmp_path_factory.mktemp("profiled")
    project = write_project(root, profiled_config(), profiled_files())
    backfill(project, SNAPSHOT_DATES)
    runner = CliRunner(env={"COLUMNS": "400"})
    results = {
        "train": runner.invoke(app, ["train", "--project", str(root), "--json"]),
        "compare": runner.invoke(
            app,
            ["compare", "--project", str(root), "--methods", "survival,ml", "--json"],
        ),
    }
    for result in results.values():
        assert result.exit_code == 0, result.output
    return results


def test_text_metric_with_many_values_noted(profiled) -> None:
    note = (
        "Text metric plan21 has 21 distinct values, more than 20, so the churn "
        "models (`healthscore train`, and the ml and hybrid methods of `healthscore "
        "compare`) leave it out rather than add a 0/1 column per value. To use it, "
        "group its values into at most 20 in the source, or add a scorecard measure "
        "of it with `normalize: {method: categories}`, whose score the models use."
    )
    train, compare = profiled["train"], profiled["compare"]
    features = json.loads(train.stdout)["features"]

    for result in (train, compare):
        notes = " ".join(result.stderr.split())
        assert notes.count(note) == 1
        # 20 values become 20 columns, and color's measure replaces its values.
        assert "Text metric plan20" not in notes
        assert "Text metric color" not in notes
    assert not [column for column in features if column.startswith("metric:plan21")]
    assert len([f for f in features if f.startswith("metric:plan20=")]) == 20
    assert "measure:color" in features


def test_constant_measure_left_out_of_survival(profiled) -> None:
    train = json.loads(profiled["train"].stdout)
    (survival,) = json.loads(profiled["compare"].stdout)[:1]

    assert survival["method"] == "survival"
    assert survival["roc_auc"] is not None
    assert (
        "left out measure:tier (50.0 on every training row), because a feature that "
        "does not vary on the training rows cannot be fitted"
    ) in survival["note"]
    assert "did not converge" not in survival["note"]
    assert train["survival"]["model"] == "cox"
    assert train["survival"]["concordance"] > 0.5


def test_train_without_snapshots_says_backfill(tmp_path: Path) -> None:
    project = churn_project(tmp_path, snapshots=False)
    result = CliRunner().invoke(app, ["train", "--project", str(project.root)])
    assert result.exit_code == 1
    assert "no snapshots are stored" in result.output
    assert "healthscore backfill" in result.output


def test_explain_model_without_training_says_train(tmp_path: Path) -> None:
    project = churn_project(tmp_path)
    arguments = ["explain", "a0", "--as-of", "2024-07-01", "--model"]
    result = CliRunner().invoke(app, [*arguments, "--project", str(project.root)])
    assert result.exit_code == 1
    assert "run `healthscore train` first" in result.output


def test_train_unknown_model_kind(tmp_path: Path) -> None:
    result = CliRunner().invoke(
        app, ["train", "--model", "forest", "--project", str(tmp_path)]
    )
    assert result.exit_code == 2
    assert "unknown model 'forest'" in result.output


# Real data


def test_telco_cross_validated_auc(require_shared) -> None:
    path = require_shared("telco-churn-ibm/WA_Fn-UseC_-Telco-Customer-Churn.csv")
    data = pd.read_csv(path)
    labels = (data["Churn"] == "Yes").to_numpy(dtype=int)
    features = data.drop(columns=["customerID", "Churn"])
    features["TotalCharges"] = pd.to_numeric(features["TotalCharges"], errors="coerce")
    # One split of 5, not the 10-fold measurement of docs/validation.md, for speed.
    test = np.random.default_rng(0).uniform(size=len(labels)) < 0.2
    model = ChurnClassifier().fit(features[~test], labels[~test])
    churn = model.predict_proba(features[test])[:, 1]
    assert roc_auc_score(labels[test], churn) > 0.83
    assert calibration_error(labels[test], churn) < 0.04


def test_explain_model_missing_date_names_stored(trained) -> None:
    project, _ = trained
    arguments = ["explain", "a0", "--as-of", "2023-01-01", "--model"]
    result = CliRunner().invoke(app, [*arguments, "--project", str(project.root)])

    assert result.exit_code == 1, result.output
    # explain has no --backfill option, so the message offers none.
    assert " ".join(result.stderr.split()) == (
        "error: no snapshot is stored for 2023-01-01. The 6 stored snapshots run "
        "from 2024-02-01 to 2024-07-01. Store it with `healthscore score --as-of "
        "2023-01-01`."
    )


def hold_out_counts(notes: list[str]) -> tuple[list[int], list[int]]:
    """Churned and retained counts of the notes about uncalibrated hold-out parts."""
    import re

    found = [
        re.search(r"has (\d+) churned and (\d+) retained rows", line) for line in notes
    ]
    matches = [match for match in found if match is not None]
    return (
        sorted({int(match.group(1)) for match in matches}),
        sorted({int(match.group(2)) for match in matches}),
    )


def counted(values: list[int]) -> str:
    return str(values[0]) if len(values) == 1 else f"{values[0]} to {values[-1]}"


def test_train_prints_each_note_once(tmp_path: Path) -> None:
    from healthscore.monitoring.backfill import backfill
    from project_factory import write_project
    from test_compare import MONTHS, build_files
    from test_compare import config as compare_config

    # About 35 churned rows before the held-out dates: each of the validation
    # model's 5 hold-out folds has 5 to 9 churned rows, too few to calibrate.
    project = write_project(tmp_path, compare_config(), build_files(churn=(0.15, 0.01)))
    backfill(project, [day.date() for day in MONTHS[1:-1]])
    data = json.loads(
        CliRunner().invoke(app, ["train", "--project", str(tmp_path), "--json"]).stdout
    )
    validation_notes = data["validation"]["notes"]
    assert len(validation_notes) == 5
    assert len(set(validation_notes)) < 5

    result = CliRunner().invoke(app, ["train", "--project", str(tmp_path)])

    assert result.exit_code == 0, result.output
    notes = " ".join(result.stderr.split())
    churned, retained = hold_out_counts(validation_notes)
    assert max(churned) < 10
    assert min(retained) >= 10
    line = (
        f"Validation model (5 fits): a hold-out part has {counted(churned)} churned "
        f"and {counted(retained)} retained rows, fewer than 10 churned rows, so "
        "its probabilities are not calibrated"
    )
    assert notes.count(line) == 1
    assert notes.count("Validation model") == 1
    final_notes = data["notes"]
    churned, retained = hold_out_counts(final_notes)
    line = (
        f"Note ({len(final_notes)} fits): a hold-out part has {counted(churned)} "
        f"churned and {counted(retained)} retained rows"
    )
    assert notes.count(line) == 1
    assert notes.count("Note") == 1


def all_churned_project(root: Path) -> Project:
    """20 accounts whose subscriptions end on 2024-03-15, scored on 2024-03-01.

    One more account subscribes from 2024-03-20, after the as-of date, so it has
    no label, and the subscriptions are complete until 2024-06-01.
    """
    from healthscore.pipeline import score
    from project_factory import minimal_config, write_project

    accounts = ["account_id,segment"]
    subscriptions = ["account_id,start,end"]
    events = ["account_id,timestamp"]
    for i in range(20):
        accounts.append(f"a{i},smb")
        subscriptions.append(f"a{i},2024-01-01,2024-03-15")
        events.append(f"a{i},2024-02-{1 + i:02d}T12:00:00")
    accounts.append("late,smb")
    subscriptions.append("late,2024-03-20,2024-06-01")
    config = minimal_config(
        sources={
            "accounts": {"kind": "accounts", "path": "accounts.csv"},
            "subscriptions": {"kind": "subscriptions", "path": "subscriptions.csv"},
            "events": {"kind": "events", "path": "events.csv"},
        },
        outcomes={"horizon": "1mo", "observed_until": "2024-06-01"},
    )
    files = {
        "accounts.csv": "\n".join(accounts) + "\n",
        "subscriptions.csv": "\n".join(subscriptions) + "\n",
        "events.csv": "\n".join(events) + "\n",
    }
    project = write_project(root, config, files)
    score(project, date(2024, 3, 1), monitor=False)
    return project


def test_train_all_churned_advises_shorter_horizon(tmp_path: Path) -> None:
    all_churned_project(tmp_path)

    result = CliRunner().invoke(app, ["train", "--project", str(tmp_path)])

    assert result.exit_code == 1, result.output
    assert " ".join(result.stderr.split()).endswith(
        "error: too few labelled rows to train a churn model: found 20 churned and "
        "0 retained, and each needs at least 10; add as-of dates with known "
        "outcomes (backfill more dates) or use a shorter outcome horizon "
        "(outcomes.horizon), within which fewer accounts churn"
    )
    assert "longer" not in result.output


def test_learn_all_churned_rejected(tmp_path: Path) -> None:
    all_churned_project(tmp_path)

    result = CliRunner().invoke(app, ["learn", "--project", str(tmp_path)])

    assert result.exit_code == 1, result.output
    assert " ".join(result.stderr.split()).endswith(
        "error: No retained observations: all 20 labelled observations churned "
        "within their 1mo horizon, so no scorecard weights can be learned, and no "
        "proposal was written. Labels come from the subscriptions source "
        "'subscriptions': an account churned when it had no active subscription at "
        "the end of the 1mo horizon after the as-of date (validation.labels: "
        "subscriptions). Either store a longer history with `healthscore backfill "
        "--from DATE --to DATE --every 1mo`, so that more horizons end inside the "
        "subscription data (outcomes.observed_until), or import churn outcomes with "
        "`healthscore outcomes import FILE` and set validation.labels to outcomes."
    )
    assert not (tmp_path / "healthscore.proposed.yml").exists()


def column_label_project(root: Path, dates: list[date]) -> Path:
    """Write and score a project whose labels come from the accounts column Churn.

    Account a<i> logs i // 10 events in the 28 days before each date, so every date
    gives the same scores, and the 60 least active of the 300 accounts churned.
    """
    from healthscore.pipeline import score
    from project_factory import label_column_config

    rows = ["account_id,segment,Churn"]
    events = ["account_id,timestamp"]
    for number in range(300):
        rows.append(f"a{number},smb,{'Yes' if number < 60 else 'No'}")
        for day in dates:
            for count in range(number // 10):
                stamp = day - pd.Timedelta(days=1 + count % 27)
                events.append(f"a{number},{stamp.isoformat()}T12:00:00")
    files = {
        "accounts.csv": "\n".join(rows) + "\n",
        "events.csv": "\n".join(events) + "\n",
    }
    project = write_project(root, label_column_config(), files)
    for day in dates:
        score(project, day, monitor=False)
    return root


def test_train_column_labels_hold_out_latest(tmp_path: Path) -> None:
    first, latest = date(2024, 2, 1), date(2024, 3, 1)
    one = column_label_project(tmp_path / "one", [latest])
    two = column_label_project(tmp_path / "two", [first, latest])

    results = []
    trained = []
    for root in (one, two):
        result = CliRunner().invoke(app, ["train", "--project", str(root), "--json"])
        assert result.exit_code == 0, result.output
        results.append(json.loads(result.stdout)["validation"])
        trained.append(json.loads(result.stdout))
    single, repeated = results

    # The final model, too, is fitted on the latest date's 300 accounts only.
    for summary in trained:
        assert summary["training_dates"] == ["2024-03-01"]
        assert (summary["rows"], summary["churned"]) == (300, 60)

    # A column label repeats on every date, so the earlier date adds no account:
    # the hold-out is 20 % of the latest date's 300 accounts, 12 of the 60 churned.
    assert repeated["method"].startswith("latest as-of date, 2024-03-01")
    assert (repeated["rows"], repeated["churned"]) == (60, 12)
    assert (single["rows"], single["churned"]) == (60, 12)
    for measure in ("roc_auc", "lift_top_decile", "ece", "brier"):
        assert repeated[measure] == pytest.approx(single[measure]), measure
