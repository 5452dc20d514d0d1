"""Learned weights: a logistic regression turned into non-negative scorecard weights."""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from healthscore.config import Project
from healthscore.config.models import ProjectConfig, ScorecardConfig
from healthscore.models.dataset import Observations
from healthscore.models.errors import InsufficientLabels
from healthscore.models.labels import LabelSet
from healthscore.models.learned import (
    LearnedWeights,
    proposal_header,
    propose,
    proposed_card,
    scorecards_yaml,
    weigh_card,
    write_proposal,
)


def synthetic(rows: int = 4000, seed: int = 0) -> tuple[pd.DataFrame, np.ndarray]:
    generator = np.random.default_rng(seed)
    strong = generator.uniform(0, 100, rows)
    weak = generator.uniform(0, 100, rows)
    wrong = generator.uniform(0, 100, rows)
    margin = -0.06 * strong - 0.02 * weak + 0.02 * wrong + 2.0
    labels = (generator.uniform(size=rows) < 1 / (1 + np.exp(-margin))).astype(float)
    frame = pd.DataFrame(
        {"measure:strong": strong, "measure:weak": weak, "measure:wrong": wrong}
    )
    frame.loc[::10, "measure:weak"] = np.nan
    return frame, labels


def test_weights_follow_the_signal():
    frame, labels = synthetic()
    model = LearnedWeights().fit(frame, labels)
    weights = model.weights_
    assert weights["measure:wrong"] == 0.0
    assert weights.sum() == pytest.approx(1.0)
    # True per-point coefficients are 0.06 and 0.02, so the weights are near 3:1.
    assert weights["measure:strong"] / weights["measure:weak"] == pytest.approx(
        3, rel=0.25
    )
    assert model.removed_ == ["measure:wrong"]


def test_too_few_churned_raise():
    frame, labels = synthetic(200)
    labels[:] = 0
    labels[:4] = 1
    with pytest.raises(InsufficientLabels, match="found 4 churned"):
        LearnedWeights(min_churned=10).fit(frame, labels)


def test_no_negative_coefficient_raises():
    generator = np.random.default_rng(1)
    values = generator.uniform(0, 100, 2000)
    labels = (generator.uniform(size=2000) < values / 100).astype(float)
    with pytest.raises(ValueError, match="no weights can be learned"):
        LearnedWeights().fit(pd.DataFrame({"measure:a": values}), labels)


CARD = ScorecardConfig.model_validate(
    {
        "name": "default",
        "version": "v3",
        "components": {
            "usage": {
                "weight": 50,
                "measures": [
                    {
                        "metric": "strong",
                        "normalize": {"method": "bounds", "min": 0, "max": 1},
                    },
                    {
                        "metric": "weak",
                        "normalize": {"method": "bounds", "min": 0, "max": 1},
                    },
                ],
            },
            "other": {
                "weight": 50,
                "measures": [
                    {
                        "metric": "wrong",
                        "normalize": {"method": "bounds", "min": 0, "max": 1},
                    }
                ],
            },
        },
    }
)


def test_proposed_card_shares_equal_weights():
    weights = pd.Series(
        {"measure:strong": 0.7, "measure:weak": 0.3, "measure:wrong": 0.0}
    )
    card = proposed_card(CARD, weights)
    assert list(card.components) == ["usage"]
    assert [measure.weight for measure in card.components["usage"].measures] == [
        70.0,
        30.0,
    ]
    assert card.components["usage"].weight == 100.0
    frame = pd.DataFrame(
        {"measure:strong": [80.0, 50.0], "measure:weak": [20.0, np.nan]}
    )
    scores = weigh_card(card, frame)
    # A missing measure passes its weight to the present one of its component.
    assert scores.tolist() == pytest.approx([0.7 * 80 + 0.3 * 20, 50.0])


def test_proposed_card_keeps_version():
    weights = pd.Series(
        {"measure:strong": 0.7, "measure:weak": 0.3, "measure:wrong": 0.0}
    )
    card = proposed_card(CARD, weights)
    assert card.version == "v3"
    written = yaml.safe_load(scorecards_yaml([card]))
    assert written["scorecards"][0]["version"] == "v3"


def test_column_advice_names_label_column():
    error = InsufficientLabels(5, 7038, 10, "validate", source="column")
    assert "backfill" not in str(error)
    assert str(error).endswith(
        "each needs at least 10; the labels come from the label column "
        "(validation.label_column), which has no dates, so more as-of dates only "
        "repeat the same labels; add more churned accounts to the accounts source"
    )


@pytest.mark.parametrize(
    ("churned", "retained", "accounts"),
    [(3, 4, "churned and retained"), (500, 2, "retained")],
)
def test_column_advice_names_short_classes(churned, retained, accounts):
    error = InsufficientLabels(churned, retained, 10, "train", source="column")

    assert str(error).endswith(f"add more {accounts} accounts to the accounts source")


@pytest.mark.parametrize(
    ("source", "advice"),
    [
        (
            "column",
            "the labels come from the label column (validation.label_column), which "
            "has no dates, so more as-of dates only repeat the same labels; add more "
            "churned accounts to the accounts source, or lower validation.min_churned",
        ),
        (
            "subscriptions",
            "add as-of dates with known outcomes (backfill more dates) or use a "
            "longer outcome horizon (outcomes.horizon), or lower "
            "validation.min_churned",
        ),
    ],
)
def test_error_with_setting_advises_lowering(source, advice):
    error = InsufficientLabels(4, 300, 10, "train", source=source)

    named = error.with_setting("validation.min_churned")

    assert str(named).endswith(
        f"each needs at least 10 (validation.min_churned); {advice}"
    )
    assert named.with_source(source).setting == "validation.min_churned"
    assert named.with_action("learn scorecard weights").setting == named.setting
    assert str(pickle.loads(pickle.dumps(named))) == str(named)


def test_dated_advice_suggests_backfill():
    error = InsufficientLabels(5, 7038, 10, "validate", source="subscriptions")
    assert "backfill more dates" in str(error)


def learning_project() -> Project:
    config = ProjectConfig.model_validate(
        {
            "name": "learn",
            "sources": {"accounts": {"kind": "accounts", "path": "a.csv"}},
            "scorecards": [CARD.model_dump(mode="json", exclude_defaults=True)],
            "validation": {
                "label_column": {"column": "Churn", "churned": ["Yes"]},
                "min_churned": 10,
            },
        }
    )
    return Project(root=Path("."), config=config)


def observations(frame: pd.DataFrame, labels: np.ndarray) -> Observations:
    day = pd.Timestamp("2024-01-01")
    rows = frame.copy()
    rows.insert(0, "account_id", [f"a{index}" for index in range(len(rows))])
    rows.insert(1, "as_of", day)
    rows["scorecard"] = "default"
    rows["label"] = labels
    columns = ["measure:strong", "measure:weak", "measure:wrong"]
    label_frame = rows[["account_id", "as_of", "label"]].assign(churn_date=pd.NaT)
    label_set = LabelSet(label_frame, "column", None)
    return Observations(rows, columns, [], label_set, [day.date()])


def test_propose_without_enough_churn_keeps_weights():
    frame, labels = synthetic(200)
    labels[:] = 0
    labels[:4] = 1

    proposal = propose(learning_project(), observations(frame, labels))

    assert proposal.learned == []
    assert proposal.scorecards == [CARD]
    assert proposal.headline == (
        "No weights were learned, so every scorecard keeps its configured weights "
        "(as-of dates 2024-01-01 to 2024-01-01)."
    )
    header = proposal_header(learning_project(), proposal)
    text = " ".join(" ".join(header).split())
    assert "Weights learned" not in text
    assert "No weights were learned" in text
    assert (
        "scorecard default keeps its weights: too few labelled rows to learn "
        "scorecard weights"
    ) in text
    assert (
        "found 4 churned and 196 retained, and each needs at least 10 "
        "(validation.min_churned); the labels come from the label column"
    ) in text
    assert "add more churned accounts to the accounts source, or lower" in text
    assert "backfill" not in text


def test_propose_with_churn_learns_weights():
    frame, labels = synthetic()

    proposal = propose(learning_project(), observations(frame, labels))

    assert proposal.learned == ["default"]
    assert proposal.scorecards[0].version == "v3"
    assert proposal.headline == (
        "Weights learned from the churn outcomes of the as-of dates 2024-01-01 to "
        "2024-01-01, for default."
    )
    header = proposal_header(learning_project(), proposal)
    assert header[0] == "Scorecards proposed by `healthscore learn` for project learn."
    # Shadow scoring reads the dates back from this line.
    assert header[1] == proposal.headline
    assert any(line.startswith("Review the diff.") for line in header)


def test_learn_failure_writes_no_proposal(tmp_path):
    from datetime import date

    from typer.testing import CliRunner

    from churn_project import churn_config, churn_files
    from healthscore.cli import app
    from healthscore.monitoring.backfill import backfill
    from project_factory import write_project

    project = write_project(tmp_path / "project", churn_config(), churn_files())
    # Weekly dates within one outcome horizon leave no date to train on.
    backfill(project, [date(2024, 3, 1), date(2024, 3, 8), date(2024, 3, 15)])

    result = CliRunner().invoke(app, ["learn", "--project", str(project.root)])

    assert result.exit_code == 1
    assert "no labelled date has an earlier labelled date" in " ".join(
        result.output.split()
    )
    assert not (project.root / "healthscore.proposed.yml").exists()


@pytest.mark.parametrize(
    ("churned", "retained", "advice"),
    [
        (
            3,
            500,
            "add as-of dates with known outcomes (backfill more dates) or use a "
            "longer outcome horizon (outcomes.horizon)",
        ),
        (
            100,
            0,
            "add as-of dates with known outcomes (backfill more dates) or use a "
            "shorter outcome horizon (outcomes.horizon), within which fewer accounts "
            "churn",
        ),
        (3, 4, "add as-of dates with known outcomes (backfill more dates)"),
    ],
)
def test_dated_advice_follows_short_class(churned, retained, advice):
    error = InsufficientLabels(churned, retained, 10, "train", source="subscriptions")

    assert str(error).endswith(f"each needs at least 10; {advice}")


def test_error_with_action_names_it():
    error = InsufficientLabels(0, 0, 10, "split", source="outcomes")

    renamed = error.with_action("backtest the current and the learned weights")

    assert str(renamed).startswith(
        "too few labelled rows to backtest the current and the learned weights: "
        "found 0 churned and 0 retained"
    )
    assert "churn model" not in str(renamed)
    assert renamed.with_source("column").action == renamed.action
    assert str(pickle.loads(pickle.dumps(renamed))) == str(renamed)


def test_write_proposal_to_folder_leaves_no_file(tmp_path):
    frame, labels = synthetic(200)
    proposal = propose(learning_project(), observations(frame, labels))
    folder = tmp_path / "proposals"
    folder.mkdir()

    with pytest.raises(IsADirectoryError):
        write_proposal(proposal, folder, ["header"])

    assert list(folder.iterdir()) == []
    assert sorted(path.name for path in tmp_path.iterdir()) == ["proposals"]


def test_write_proposal_keeps_missing_folder_missing(tmp_path):
    frame, labels = synthetic(200)
    proposal = propose(learning_project(), observations(frame, labels))

    with pytest.raises(FileNotFoundError):
        write_proposal(proposal, tmp_path / "missing" / "p.yml", ["header"])

    assert list(tmp_path.iterdir()) == []


def test_zero_weight_notes_name_the_reason():
    frame, labels = synthetic()
    # weak gets one score on every row that has one, and wrong none at all.
    frame["measure:weak"] = frame["measure:weak"].where(
        frame["measure:weak"].isna(), 60.0
    )
    frame["measure:wrong"] = np.nan

    model = LearnedWeights().fit(frame, labels)
    proposal = propose(learning_project(), observations(frame, labels))

    assert model.missing_ == ["measure:wrong"]
    assert model.constant_ == ["measure:weak"]
    assert proposal.learned == ["default"]
    assert proposal.notes == [
        "scorecard default: weight 0 for wrong, whose scores are missing on every "
        "labelled row",
        "scorecard default: weight 0 for weak, whose scores do not vary across the "
        "labelled rows",
    ]


def test_zero_weight_note_for_rising_scores():
    frame, labels = synthetic()

    proposal = propose(learning_project(), observations(frame, labels))

    assert proposal.notes == [
        "scorecard default: weight 0 for wrong, whose scores do not fall with churn "
        "once the other measures are accounted for"
    ]
