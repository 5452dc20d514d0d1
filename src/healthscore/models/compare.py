"""The scoring methods compared on the same splits, and the comparison itself.

Methods (keys as in `healthscore compare --json`):

- `rules`: a checklist of red flags. Each measure scoring in the at-risk band's
  range is a red flag. The risk is the share of an account's present measures that
  are red. Having no bands, it flags each test date's riskiest rows, as the other
  methods without bands do (see `healthscore.models.backtest`).
- `weighted`: the configured scorecards, as stored in the snapshots.
- `learned`: scorecards with weights learned on the training rows
  (`healthscore.models.learned`).
- `ml`: a calibrated LightGBM classifier on every metric, fitted on stratified
  folds of all training dates.
- `hybrid`: a blend of the rule score's probability and the classifier's, the weight
  chosen on the latest training date.
- `survival`: a Cox proportional-hazards model of the days to churn, asked for the
  probability of churning within the horizon and recalibrated like the scores.
- `clusters`: behavioral clusters of the measure scores. The risk is the training
  churn rate of the account's cluster.

Probabilities of the score-based methods (rules, weighted, learned) and of the
survival model come from a calibration of their risk on training rows (see
`backtest.run_methods`).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from healthscore.config import Project
from healthscore.models import METHOD_KEYS
from healthscore.models.backtest import (
    FitContext,
    Method,
    MethodResult,
    Prediction,
    run_methods,
)
from healthscore.models.dataset import Observations
from healthscore.models.errors import InsufficientLabels
from healthscore.models.labels import horizon_days
from healthscore.models.learned import (
    LearnedWeights,
    card_measure_columns,
    proposed_card,
    weigh_card,
)
from healthscore.scoring.bands import assign_bands

__all__ = [
    "METHOD_KEYS",
    "ComparisonResult",
    "compare_methods",
    "make_method",
    "model_features",
]

logger = logging.getLogger(__name__)

#: Method keys in the order of the comparison table.


@dataclass
class ComparisonResult:
    """The measures of every method on the same splits."""

    results: list[MethodResult]
    splits: str
    observations: int
    churned: int
    notes: list[str]

    def rows(self) -> list[dict[str, Any]]:
        """Return one JSON object per method."""
        return [result.to_dict() for result in self.results]


def compare_methods(
    project: Project,
    observations: Observations,
    keys: Sequence[str] = METHOD_KEYS,
    *,
    progress: Callable[[str], None] | None = None,
) -> ComparisonResult:
    """Fit and measure the methods `keys` on the same splits of `observations`."""
    unknown = [key for key in keys if key not in METHOD_KEYS]
    if unknown:
        raise ValueError(
            f"unknown method {', '.join(unknown)}; use {', '.join(METHOD_KEYS)}"
        )
    methods = [make_method(key) for key in keys]
    results, splits = run_methods(project, observations, methods, progress=progress)
    churned, _ = observations.labelled().label_counts
    return ComparisonResult(
        results,
        splits,
        len(observations.labelled().frame),
        churned,
        list(observations.notes),
    )


def make_method(key: str) -> Method:
    """Return the method of `key`."""
    factories: dict[str, Callable[[], Method]] = {
        "rules": RedFlags,
        "weighted": Weighted,
        "learned": Learned,
        "ml": MachineLearning,
        "hybrid": Hybrid,
        "survival": Survival,
        "clusters": Clusters,
    }
    return factories[key]()


# Score-based methods


class RedFlags:
    """Share of present measures that score in the at-risk band's range."""

    key = "rules"
    explainable = True

    def fit_predict(
        self, train: pd.DataFrame, test: pd.DataFrame, context: FitContext
    ) -> Prediction:
        columns = context.observations.measure_columns
        bands = context.project.config.bands
        limit = min(bands, key=lambda band: band.min).max
        return Prediction(
            _red_share(train, columns, limit), _red_share(test, columns, limit)
        )


def _red_share(frame: pd.DataFrame, columns: list[str], limit: float) -> np.ndarray:
    values = frame[columns].to_numpy(dtype=float)
    present = ~np.isnan(values)
    red = present & (values <= limit)
    counts = present.sum(axis=1)
    share = np.full(len(frame), np.nan)
    np.divide(red.sum(axis=1), counts, out=share, where=counts > 0)
    return share


class Weighted:
    """The configured scorecards: risk is 100 minus the stored score."""

    key = "weighted"
    explainable = True

    def fit_predict(
        self, train: pd.DataFrame, test: pd.DataFrame, context: FitContext
    ) -> Prediction:
        return Prediction(
            100 - train["score"].to_numpy(dtype=float),
            100 - test["score"].to_numpy(dtype=float),
            test_band=test["band"].to_numpy(dtype=object),
        )


class Learned:
    """Scorecards with weights learned on the training rows."""

    key = "learned"
    explainable = True

    def fit_predict(
        self, train: pd.DataFrame, test: pd.DataFrame, context: FitContext
    ) -> Prediction:
        config = context.project.config
        train_score = np.full(len(train), np.nan)
        test_score = np.full(len(test), np.nan)
        notes = []
        for card in config.scorecards:
            columns = card_measure_columns(card)
            in_train = (train["scorecard"] == card.name).to_numpy()
            in_test = (test["scorecard"] == card.name).to_numpy()
            routed = train[in_train]
            try:
                model = LearnedWeights(min_churned=context.min_churned).fit(
                    routed.reindex(columns=columns), routed["label"]
                )
                learned = proposed_card(card, model.weights_)
            except InsufficientLabels as exc:
                notes.append(
                    f"scorecard {card.name} keeps its configured weights: "
                    f"{exc.positives} churned and {exc.negatives} retained training "
                    f"rows, {exc.minimum} of each needed"
                )
                learned = card
            except ValueError as exc:
                notes.append(
                    f"scorecard {card.name} keeps its configured weights: {exc}"
                )
                learned = card
            train_score[in_train] = weigh_card(learned, train[in_train])
            test_score[in_test] = weigh_card(learned, test[in_test])
        bands = assign_bands(test_score, config.bands)
        return Prediction(
            100 - train_score, 100 - test_score, test_band=bands, notes=notes
        )


# Model-based methods, from the churn model modules


def _feature_frame(frame: pd.DataFrame, context: FitContext) -> pd.DataFrame:
    return frame[model_features(context.project, context.observations)]


def model_features(project: Project, observations: Observations) -> list[str]:
    """Feature columns of the ML and hybrid methods: every metric column, and the
    measures whose metric has no column (a text metric with too many values). Such
    a metric that no measure scores is left out, and the observations' notes name it.

    A measure is a per-date transform of its metric, such as a percentile, so trees
    that see both can split on either. On the socialnet example an inner validation
    inside the training dates (fit on the earlier training months, log loss on the
    latest) was lower without the measures, 0.0888 against 0.0892 and 0.1088 against
    0.1117.
    """
    metrics = observations.metric_columns
    known = {column.removeprefix("metric:").split("=", 1)[0] for column in metrics}
    uncovered = {
        f"measure:{measure.measure_name}"
        for card in project.config.scorecards
        for component in card.components.values()
        for measure in component.measures
        if measure.metric not in known
    }
    measures = [
        column for column in observations.measure_columns if column in uncovered
    ]
    return metrics + measures


class MachineLearning:
    """A calibrated LightGBM classifier on every metric (see `model_features`)."""

    key = "ml"
    explainable = True

    def fit_predict(
        self, train: pd.DataFrame, test: pd.DataFrame, context: FitContext
    ) -> Prediction:
        from healthscore.models.ml import ChurnClassifier

        model = ChurnClassifier(kind="lightgbm", random_state=context.random_state)
        features = _feature_frame(train, context)
        # Without `order` the classifier fits stratified folds of every training
        # date, so the latest training month also trains trees instead of being
        # only a hold-out. On the socialnet example's monthly backtest this raised
        # the ROC AUC from 0.722 to 0.737, with an ECE below 0.01 both ways.
        model.fit(features, train["label"].to_numpy(dtype=int))
        train_probability = model.predict_proba(features)[:, 1]
        test_probability = model.predict_proba(_feature_frame(test, context))[:, 1]
        return Prediction(
            train_probability,
            test_probability,
            test_probability=test_probability,
            notes=list(getattr(model, "notes_", [])),
        )


class Hybrid:
    """The rule score's probability blended with the classifier's."""

    key = "hybrid"
    explainable = True

    def fit_predict(
        self, train: pd.DataFrame, test: pd.DataFrame, context: FitContext
    ) -> Prediction:
        from healthscore.models.hybrid import HybridScorer

        features = _feature_frame(train, context)
        validation = _validation_rows(train, context)
        fit_part = ~validation
        scorer = HybridScorer()
        scorer.fit(
            features[fit_part],
            train["label"].to_numpy(dtype=int)[fit_part],
            train["score"].to_numpy(dtype=float)[fit_part],
            features[validation],
            train["label"].to_numpy(dtype=int)[validation],
            train["score"].to_numpy(dtype=float)[validation],
        )
        train_probability = scorer.predict_proba(features, train["score"])[:, 1]
        test_probability = scorer.predict_proba(
            _feature_frame(test, context), test["score"]
        )[:, 1]
        notes = list(getattr(scorer.classifier_, "notes_", []))
        if hasattr(scorer, "weight_"):
            notes.append(f"model weight {scorer.weight_:.2f}")
        return Prediction(
            train_probability,
            test_probability,
            test_probability=test_probability,
            notes=notes,
        )


def _validation_rows(train: pd.DataFrame, context: FitContext) -> np.ndarray:
    """Select the latest training date, or a stratified fifth of one-date rows."""
    as_of = train["as_of"].to_numpy()
    if len(np.unique(as_of)) > 1:
        return as_of == as_of.max()
    labels = train["label"].to_numpy(dtype=int)
    generator = np.random.default_rng(context.random_state)
    validation = np.zeros(len(train), dtype=bool)
    for value in (0, 1):
        positions = np.flatnonzero(labels == value)
        chosen = generator.choice(positions, size=len(positions) // 5, replace=False)
        validation[chosen] = True
    return validation


class Survival:
    """A Cox model of the days to churn, read at the outcome horizon."""

    key = "survival"
    explainable = True

    def fit_predict(
        self, train: pd.DataFrame, test: pd.DataFrame, context: FitContext
    ) -> Prediction:
        from healthscore.models.survival import ChurnSurvival, survival_data

        project = context.project
        train_days = np.array(
            [horizon_days(project, stamp.date()) for stamp in train["as_of"]]
        )
        durations, events, rows = survival_data(train, int(train_days.max()))
        # A retained row is censored at the end of its own horizon.
        retained = events == 0
        durations[retained] = train_days[rows][retained]
        columns = context.observations.measure_columns
        model = ChurnSurvival().fit(
            train.iloc[rows][columns].reset_index(drop=True), durations, events
        )
        test_days = [horizon_days(project, stamp.date()) for stamp in test["as_of"]]
        train_probability = model.churn_probability(
            train[columns].reset_index(drop=True), train_days
        )
        test_probability = model.churn_probability(
            test[columns].reset_index(drop=True), np.array(test_days)
        )
        # The Cox model's probabilities follow the mean churn rate of all training
        # dates, so like a score's risk they are recalibrated on the split's
        # calibration rows (the latest training date), which follow a falling churn
        # rate. On the socialnet example this lowered the ECE from 0.022 to 0.016
        # and left the ranking as it was.
        return Prediction(
            train_probability,
            test_probability,
            notes=list(getattr(model, "notes_", [])),
        )


class Clusters:
    """Behavioral clusters of measure scores, with the cluster's churn rate as risk."""

    key = "clusters"
    explainable = True

    def fit_predict(
        self, train: pd.DataFrame, test: pd.DataFrame, context: FitContext
    ) -> Prediction:
        from healthscore.models.clusters import BehaviorClusters

        labels = train["label"].to_numpy(dtype=int)
        churned = int(labels.sum())
        if min(churned, len(labels) - churned) < context.min_churned:
            raise InsufficientLabels(
                churned,
                len(labels) - churned,
                context.min_churned,
                "train",
                source=context.observations.labels.source,
            )
        columns = context.observations.measure_columns
        model = BehaviorClusters(random_state=context.random_state)
        model.fit(train[columns], labels)
        train_risk = np.asarray(model.predict_risk(train[columns]), dtype=float)
        test_risk = np.asarray(model.predict_risk(test[columns]), dtype=float)
        return Prediction(train_risk, test_risk)
