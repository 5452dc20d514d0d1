"""Learned weights: a logistic regression turned into non-negative scorecard weights."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from healthscore.config.models import ScorecardConfig
from healthscore.models.errors import InsufficientLabels
from healthscore.models.learned import LearnedWeights, proposed_card, weigh_card


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
