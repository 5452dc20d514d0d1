"""Hybrid churn probability: a blend of the rule score and a churn classifier.

The rule score (0-100, higher is healthier) is first turned into a churn probability
by a logistic regression on the score (Platt scaling), fitted on the training rows.
The hybrid probability is ``w * p_model + (1 - w) * p_rule``. The weight `w` is the
grid value with the lowest log loss on the validation rows, which come after the
training rows in time. A tie goes to the smaller weight, because that leans on the
rule score, which people can read. Rows without a rule score get the model's
probability.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd
from sklearn.base import BaseEstimator, ClassifierMixin, clone
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import log_loss, roc_auc_score
from sklearn.utils.validation import check_is_fitted

from healthscore.models.errors import InsufficientLabels
from healthscore.models.ml import MIN_CALIBRATION_ROWS, ChurnClassifier, binary_labels

__all__ = ["DEFAULT_WEIGHTS", "HybridScorer", "RuleProbability"]

#: Model weights tried on the validation rows: 0, 0.1, ..., 1.
DEFAULT_WEIGHTS: tuple[float, ...] = tuple(round(0.1 * step, 1) for step in range(11))


class RuleProbability:
    """Churn probability from a rule score by Platt scaling (a 1-feature logistic fit).

    Rows without a score get the training churn rate. A fit in which churn rises
    with the health score would turn the score upside down, so every row then
    gets the training churn rate of the scored rows (`constant_`), as
    `ScoreCalibrator` does for a falling risk.
    """

    def fit(self, score: Any, labels: np.ndarray) -> RuleProbability:
        values = np.asarray(score, dtype="float64")
        present = ~np.isnan(values)
        known = labels[present]
        positives = int(known.sum())
        negatives = len(known) - positives
        if min(positives, negatives) < MIN_CALIBRATION_ROWS:
            raise InsufficientLabels(
                positives,
                negatives,
                MIN_CALIBRATION_ROWS,
                "calibrate the rule score of",
            )
        self.model_ = LogisticRegression(C=1e6, max_iter=1000)
        self.model_.fit(values[present].reshape(-1, 1) / 100.0, known)
        self.base_rate_ = float(labels.mean())
        self.constant_: float | None = None
        if float(self.model_.coef_[0, 0]) > 0:
            self.constant_ = float(known.mean())
        return self

    def predict(self, score: Any) -> np.ndarray:
        values = np.asarray(score, dtype="float64")
        present = ~np.isnan(values)
        churn = np.full(len(values), self.base_rate_)
        if self.constant_ is not None:
            churn[present] = self.constant_
        elif present.any():
            scaled = values[present].reshape(-1, 1) / 100.0
            churn[present] = self.model_.predict_proba(scaled)[:, 1]
        return churn


class HybridScorer(ClassifierMixin, BaseEstimator):
    """Blend of the rule score's churn probability and a churn classifier's.

    Parameters
    ----------
    classifier : ChurnClassifier, optional
        The model to blend with; it is cloned, never changed. Default: LightGBM.
    weights : sequence of float
        Model weights to try, each from 0 to 1.
    refit : bool
        After choosing the weight, fit the classifier and the rule calibration again
        on the training and validation rows together.
    """

    def __init__(
        self,
        classifier: ChurnClassifier | None = None,
        weights: Sequence[float] = DEFAULT_WEIGHTS,
        refit: bool = True,
    ) -> None:
        self.classifier = classifier
        self.weights = weights
        self.refit = refit

    def fit(
        self,
        X: pd.DataFrame,
        y: Any,
        rule_score: Any,
        X_val: pd.DataFrame,
        y_val: Any,
        rule_score_val: Any,
        order: Any = None,
        order_val: Any = None,
    ) -> HybridScorer:
        """Fit on the training rows and choose the weight on the later validation rows.

        `order` and `order_val` are the times of the training and validation rows
        (such as as-of dates), passed on to the classifier for its hold-out part.

        Raises
        ------
        InsufficientLabels
            When the training or validation rows have too few churned or retained
            rows to fit the classifier, calibrate the rule score or compare weights.
        ValueError
            When a weight is outside 0-1.
        """
        weights = [float(weight) for weight in self.weights]
        if not weights or any(not 0.0 <= weight <= 1.0 for weight in weights):
            raise ValueError(f"weights must be numbers from 0 to 1, got {weights}")
        labels = binary_labels(y, len(X))
        val_labels = binary_labels(y_val, len(X_val))
        positives = int(val_labels.sum())
        if min(positives, len(val_labels) - positives) < MIN_CALIBRATION_ROWS:
            raise InsufficientLabels(
                positives,
                len(val_labels) - positives,
                MIN_CALIBRATION_ROWS,
                "choose the hybrid weight of",
            )
        template = self.classifier if self.classifier is not None else ChurnClassifier()
        model = clone(template).fit(X, labels, order=order)
        rule = RuleProbability().fit(rule_score, labels)

        model_churn = model.predict_proba(X_val)[:, 1]
        rule_churn = rule.predict(rule_score_val)
        losses = []
        aucs = []
        for weight in weights:
            blended = _blend(weight, model_churn, rule_churn, rule_score_val)
            losses.append(log_loss(val_labels, np.clip(blended, 1e-6, 1 - 1e-6)))
            aucs.append(roc_auc_score(val_labels, blended))
        best = min(range(len(weights)), key=lambda i: (round(losses[i], 9), weights[i]))
        self.weight_ = weights[best]
        self.validation_ = pd.DataFrame(
            {"weight": weights, "log_loss": losses, "roc_auc": aucs}
        )

        if self.refit:
            both = pd.concat([X, X_val])
            both_labels = np.concatenate([labels, val_labels])
            both_scores = np.concatenate(
                [
                    np.asarray(rule_score, dtype="float64"),
                    np.asarray(rule_score_val, dtype="float64"),
                ]
            )
            both_order = None
            if order is not None and order_val is not None:
                both_order = np.concatenate([np.asarray(order), np.asarray(order_val)])
            model = clone(template).fit(both, both_labels, order=both_order)
            rule = RuleProbability().fit(both_scores, both_labels)
        self.classifier_ = model
        self.rule_ = rule
        self.classes_ = np.array([0, 1])
        self.feature_names_in_ = model.feature_names_in_
        self.n_features_in_ = model.n_features_in_
        return self

    def predict_proba(self, X: pd.DataFrame, rule_score: Any) -> np.ndarray:
        """Probability of staying (column 0) and of churning (column 1) per row."""
        check_is_fitted(self, "weight_")
        model_churn = self.classifier_.predict_proba(X)[:, 1]
        rule_churn = self.rule_.predict(rule_score)
        churn = _blend(self.weight_, model_churn, rule_churn, rule_score)
        return np.column_stack([1.0 - churn, churn])

    def predict(self, X: pd.DataFrame, rule_score: Any) -> np.ndarray:
        """1 where the hybrid churn probability is at least 0.5, else 0."""
        return (self.predict_proba(X, rule_score)[:, 1] >= 0.5).astype(int)


def _blend(
    weight: float, model_churn: np.ndarray, rule_churn: np.ndarray, rule_score: Any
) -> np.ndarray:
    scored = ~np.isnan(np.asarray(rule_score, dtype="float64"))
    blended = weight * model_churn + (1.0 - weight) * rule_churn
    return np.where(scored, blended, model_churn)
