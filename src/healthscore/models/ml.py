"""Calibrated churn classifiers: LightGBM and a regularized logistic regression.

`ChurnClassifier` follows the scikit-learn estimator contract and takes pandas
DataFrames with missing values and text columns. Fitting keeps labelled rows out of
training: the latest dates when `order` is given, else each of five stratified folds
in turn. LightGBM stops adding trees when the log loss of the hold-out part has not
improved for `early_stopping_rounds` rounds, and the hold-out part then calibrates
the model's raw margin into a probability.

`contributions` splits each row's raw margin (log-odds before calibration) into one
part per feature and a `bias`: LightGBM's TreeSHAP values (``pred_contrib=True``) or,
for the logistic model, coefficient times standardized value.
"""

from __future__ import annotations

import inspect
import logging
import math
from dataclasses import dataclass
from typing import Any, Literal

import lightgbm
import numpy as np
import pandas as pd
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.isotonic import IsotonicRegression
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score
from sklearn.model_selection import StratifiedKFold
from sklearn.utils.validation import check_is_fitted

from healthscore.models.errors import InsufficientLabels

__all__ = [
    "FEW_CHURNED",
    "LEAF_CHURNED",
    "MIN_CALIBRATION_ROWS",
    "MIN_HOLDOUT_ROWS",
    "MIN_ISOTONIC_POSITIVES",
    "MIN_ISOTONIC_ROWS",
    "MIN_LEAF_ROWS",
    "MIN_TRAINING_ROWS",
    "ChurnClassifier",
    "FeatureEncoder",
    "binary_labels",
    "leaf_rows",
]

logger = logging.getLogger(__name__)

Kind = Literal["lightgbm", "logistic"]
Calibration = Literal["auto", "isotonic", "sigmoid"] | None

#: Churned and retained rows that training needs, each.
MIN_TRAINING_ROWS = 10
#: Churned and retained rows of the hold-out part for early stopping, each.
MIN_HOLDOUT_ROWS = 5
#: Churned and retained hold-out rows that a sigmoid (Platt) calibration needs, each.
MIN_CALIBRATION_ROWS = 10
#: Hold-out rows and churned hold-out rows above which `auto` calibrates with
#: isotonic regression. scikit-learn's CalibratedClassifierCV documentation advises
#: against isotonic calibration with far fewer than 1,000 rows, as it overfits.
MIN_ISOTONIC_ROWS = 1000
MIN_ISOTONIC_POSITIVES = 50
#: Skewness above which FeatureEncoder log-transforms a non-negative column.
SKEWED = 2.0
#: Trees of a LightGBM model fitted without a hold-out part to stop early on.
ROUNDS_WITHOUT_HOLDOUT = 200
#: Churned rows that a LightGBM leaf is sized to contain when `min_child_samples`
#: is None. On the socialnet example, an inner validation inside the training dates
#: (fit on the earlier training months, log loss on the latest) chose 800 rows per
#: leaf out of 25 to 3,200. At the churn rates of those fits, 4.3 and 6.1 %, that is
#: 34 to 49 churned rows (docs/validation.md).
LEAF_CHURNED = 40
#: Leaf size of that rule when the labels have a single class.
MIN_LEAF_ROWS = 50
#: Churned rows below which leaves are sized by the churned count, because with
#: fewer, no tree can have four leaves of LEAF_CHURNED churned rows each.
FEW_CHURNED = 4 * LEAF_CHURNED


class FeatureEncoder:
    """Numeric matrix from a feature frame: imputed, with missing flags, standardized.

    Numeric columns that are never negative and strongly right-skewed in training
    (skewness above SKEWED, as counts of events often are) are replaced by
    ``log1p(value)``, so a few very active accounts do not dominate a linear model.
    Numeric columns get their training median where a value is missing, plus a 0/1
    column flagging the missing values when the training data had any and
    `flag_missing` is set. Text and
    categorical columns become one 0/1 column per training category; a category not
    seen in training gives zeros. Every output column is then standardized with the
    training mean and standard deviation. `sources_` gives the input feature of each
    output column, so per-column parts can be summed back per feature.
    """

    def __init__(self, flag_missing: bool = True) -> None:
        self.flag_missing = flag_missing

    def fit(self, frame: pd.DataFrame) -> FeatureEncoder:
        self.numeric_ = [c for c in frame.columns if _is_numeric(frame[c])]
        self.categorical_ = [c for c in frame.columns if c not in self.numeric_]
        numbers = frame[self.numeric_].astype("float64")
        self.logged_ = [
            column
            for column in self.numeric_
            if numbers[column].min() >= 0 and numbers[column].skew() > SKEWED
        ]
        numbers = self._logged(numbers)
        medians = numbers.median()
        self.medians_ = medians.fillna(0.0)
        self.flagged_ = [
            c for c in self.numeric_ if self.flag_missing and numbers[c].isna().any()
        ]
        self.categories_ = {
            column: sorted(frame[column].dropna().astype(str).unique())
            for column in self.categorical_
        }
        raw = self._raw(frame)
        self.mean_ = raw.mean(axis=0)
        scale = raw.std(axis=0)
        self.scale_ = np.where(scale > 0, scale, 1.0)
        return self

    def transform(self, frame: pd.DataFrame) -> np.ndarray:
        return (self._raw(frame) - self.mean_) / self.scale_

    @property
    def names_(self) -> list[str]:
        """Name of each output column."""
        names = list(self.numeric_)
        names += [f"{column} missing" for column in self.flagged_]
        for column in self.categorical_:
            names += [f"{column}={value}" for value in self.categories_[column]]
        return names

    @property
    def sources_(self) -> list[str]:
        """Input feature of each output column."""
        sources = list(self.numeric_) + list(self.flagged_)
        for column in self.categorical_:
            sources += [column] * len(self.categories_[column])
        return sources

    def _logged(self, numbers: pd.DataFrame) -> pd.DataFrame:
        if not self.logged_:
            return numbers
        logged = numbers.copy()
        logged[self.logged_] = np.log1p(numbers[self.logged_].clip(lower=0.0))
        return logged

    def _raw(self, frame: pd.DataFrame) -> np.ndarray:
        parts: list[np.ndarray] = []
        numbers = self._logged(frame[self.numeric_].astype("float64"))
        parts.append(numbers.fillna(self.medians_).to_numpy(dtype="float64"))
        parts.append(numbers[self.flagged_].isna().to_numpy(dtype="float64"))
        for column in self.categorical_:
            text = frame[column].astype("string")
            for value in self.categories_[column]:
                parts.append((text == value).fillna(False).to_numpy("float64")[:, None])
        if not parts:
            return np.zeros((len(frame), 0))
        return np.hstack([part.reshape(len(frame), -1) for part in parts])


@dataclass
class _Member:
    """One fitted model with the calibration learned on its hold-out part."""

    model: Any
    encoder: FeatureEncoder | None
    calibrator: Any
    iterations: int
    holdout_auc: float | None = None


class ChurnClassifier(ClassifierMixin, BaseEstimator):
    """Calibrated churn probability from account features.

    With `order` (the time of each row) the model is fitted once: the latest dates
    holding about `validation_fraction` of the rows are held out for early stopping
    and calibration. Without it, the rows are split into `cv_folds` stratified
    folds, and one model per fold is fitted on the other folds and calibrated on its
    own. The churn probability is then the mean of the folds' calibrated
    probabilities, as in scikit-learn's CalibratedClassifierCV with ``ensemble=True``.
    The margin and the contributions are the means of the folds' too. So every row
    serves for training and for calibration.

    Parameters
    ----------
    kind : {"lightgbm", "logistic"}
        Gradient-boosted trees (LightGBM) or an L2-regularized logistic regression.
    calibration : {"auto", "isotonic", "sigmoid", None}
        How a hold-out part maps the raw margin to a probability. ``auto`` uses
        isotonic regression with at least MIN_ISOTONIC_ROWS hold-out rows and
        MIN_ISOTONIC_POSITIVES churned ones, a sigmoid (Platt scaling) with fewer, and
        no calibration when the hold-out part has too few churned rows, which it
        records in `notes_`. An explicit method raises InsufficientLabels instead.
    random_state : int
        Seed of the split and of LightGBM's row and column sampling.
    n_estimators : int
        Maximum number of trees; early stopping usually ends sooner.
    learning_rate, num_leaves : float, int
        LightGBM settings. Small trees (7 leaves) keep the model from fitting noise
        on a few thousand accounts.
    min_child_samples : int or None
        Minimum number of rows in a LightGBM leaf. None sizes leaves to contain
        about LEAF_CHURNED churned rows at the training churn rate, or, with fewer
        than FEW_CHURNED churned rows, to half of them (see `leaf_rows`). With
        a few percent churning, a leaf of 50 rows contains one or two churned rows,
        so its value is mostly noise.
    early_stopping_rounds : int
        Rounds without a better hold-out log loss after which LightGBM stops.
    C : float
        Inverse L2 regularization strength of the logistic regression, on
        standardized features.
    validation_fraction : float
        Share of the rows held out by time when `order` is given.
    cv_folds : int
        Folds when `order` is not given.
    n_jobs : int
        Threads of LightGBM.
    """

    def __init__(
        self,
        kind: Kind = "lightgbm",
        calibration: Calibration = "auto",
        random_state: int = 0,
        n_estimators: int = 1000,
        learning_rate: float = 0.03,
        num_leaves: int = 7,
        min_child_samples: int | None = None,
        early_stopping_rounds: int = 50,
        C: float = 1.0,
        validation_fraction: float = 0.2,
        cv_folds: int = 5,
        n_jobs: int = 1,
    ) -> None:
        self.kind = kind
        self.calibration = calibration
        self.random_state = random_state
        self.n_estimators = n_estimators
        self.learning_rate = learning_rate
        self.num_leaves = num_leaves
        self.min_child_samples = min_child_samples
        self.early_stopping_rounds = early_stopping_rounds
        self.C = C
        self.validation_fraction = validation_fraction
        self.cv_folds = cv_folds
        self.n_jobs = n_jobs

    # Fitting

    def fit(self, X: Any, y: Any, order: Any = None) -> ChurnClassifier:
        """Fit the model and its calibration.

        Parameters
        ----------
        X : DataFrame or array
            Features, one row per observation; NaN marks a missing value.
        y : array-like of 0/1
            1 for churned within the horizon, 0 for retained. Censored rows (NaN)
            must be removed first.
        order : array-like, optional
            Time of each row, such as the as-of date. The latest times become the
            hold-out part, so early stopping and calibration look at later data
            than training, as a model in use does.

        Raises
        ------
        InsufficientLabels
            With fewer than MIN_TRAINING_ROWS churned or retained rows, or when an
            explicit `calibration` lacks MIN_CALIBRATION_ROWS of each in a hold-out
            part.
        ValueError
            When `kind` or `calibration` is unknown, or the labels are not 0/1.
        """
        if self.kind not in ("lightgbm", "logistic"):
            raise ValueError(
                f"unknown model kind {self.kind!r}; use lightgbm or logistic"
            )
        if self.calibration not in ("auto", "isotonic", "sigmoid", None):
            raise ValueError(
                f"unknown calibration {self.calibration!r}; use auto, isotonic, "
                "sigmoid or None"
            )
        frame = _as_frame(X)
        labels = binary_labels(y, len(frame))
        positives = int(labels.sum())
        negatives = len(labels) - positives
        if min(positives, negatives) < MIN_TRAINING_ROWS:
            raise InsufficientLabels(positives, negatives, MIN_TRAINING_ROWS, "train")

        self.feature_names_in_ = np.asarray(frame.columns, dtype=object)
        self.n_features_in_ = len(frame.columns)
        self.classes_ = np.array([0, 1])
        self.numeric_features_ = [c for c in frame.columns if _is_numeric(frame[c])]
        self.categories_ = {
            column: sorted(frame[column].dropna().astype(str).unique())
            for column in frame.columns
            if column not in self.numeric_features_
        }
        self.notes_: list[str] = []
        self.n_train_ = len(frame)
        self.n_positives_ = positives

        splits = self._splits(labels, order)
        if not splits:
            self._note(
                "too few churned or retained rows to hold out "
                f"({MIN_HOLDOUT_ROWS} of each needed in every hold-out part), so the "
                "model is fitted on all rows without early stopping or calibration"
            )
        self.split_ = (
            "none"
            if not splits
            else "time"
            if len(splits) == 1
            else f"{len(splits)} folds"
        )
        self.calibration_: str | None = None
        self.members_: list[_Member] = []
        parts: list[tuple[np.ndarray, np.ndarray | None]] = list(splits)
        if not parts:
            parts = [(np.arange(len(frame)), None)]
        for fit_rows, holdout_rows in parts:
            self.members_.append(
                self._fit_member(frame, labels, fit_rows, holdout_rows)
            )
        self.holdout_size_ = sum(len(rows) for _, rows in splits)
        self._check_holdout_auc()
        self.n_iterations_ = round(
            float(np.mean([member.iterations for member in self.members_]))
        )
        self._check_not_constant(frame)
        return self

    def _splits(
        self, labels: np.ndarray, order: Any
    ) -> list[tuple[np.ndarray, np.ndarray]]:
        """(training rows, hold-out rows) of each member; empty when impossible.

        When the latest dates have too few churned or retained rows to hold out,
        stratified folds are used instead, and `notes_` records that.
        """
        rows = np.arange(len(labels))
        if order is not None:
            latest = _latest_rows(np.asarray(order), self.validation_fraction)
            if latest is not None:
                by_time = [(np.setdiff1d(rows, latest), np.sort(latest))]
                if _enough_of_each(labels, by_time):
                    return by_time
                self._note(
                    "the latest dates have too few churned or retained rows to hold "
                    f"out ({MIN_HOLDOUT_ROWS} of each needed), so stratified folds "
                    "of all dates are held out instead"
                )
        folds = min(self.cv_folds, int(labels.sum()), int((labels == 0).sum()))
        if folds < 2:
            return []
        splitter = StratifiedKFold(
            n_splits=folds, shuffle=True, random_state=self.random_state
        )
        by_fold = list(splitter.split(rows, labels))
        return by_fold if _enough_of_each(labels, by_fold) else []

    def _fit_member(
        self,
        frame: pd.DataFrame,
        labels: np.ndarray,
        fit_rows: np.ndarray,
        holdout_rows: np.ndarray | None,
    ) -> _Member:
        if self.kind == "lightgbm":
            member = self._fit_lightgbm(frame, labels, fit_rows, holdout_rows)
        else:
            member = self._fit_logistic(frame, labels, fit_rows)
        if holdout_rows is not None:
            margin = self._member_margin(member, frame.iloc[holdout_rows])
            member.calibrator = self._calibrate(margin, labels[holdout_rows])
            member.holdout_auc = float(roc_auc_score(labels[holdout_rows], margin))
        return member

    def _fit_lightgbm(
        self,
        frame: pd.DataFrame,
        labels: np.ndarray,
        fit_rows: np.ndarray,
        holdout_rows: np.ndarray | None,
    ) -> _Member:
        model = lightgbm.LGBMClassifier(
            objective="binary",
            n_estimators=self.n_estimators
            if holdout_rows is not None
            else min(self.n_estimators, ROUNDS_WITHOUT_HOLDOUT),
            learning_rate=self.learning_rate,
            num_leaves=self.num_leaves,
            min_child_samples=self._leaf_rows(labels[fit_rows], labels),
            subsample=0.8,
            subsample_freq=1,
            colsample_bytree=0.8,
            reg_lambda=1.0,
            random_state=self.random_state,
            n_jobs=self.n_jobs,
            verbose=-1,
        )
        data = self._lightgbm_frame(frame)
        options: dict[str, Any] = {}
        if holdout_rows is not None:
            options.update(_eval_options(data.iloc[holdout_rows], labels[holdout_rows]))
            options["eval_metric"] = "binary_logloss"
            options["callbacks"] = [
                lightgbm.early_stopping(self.early_stopping_rounds, verbose=False)
            ]
        model.fit(data.iloc[fit_rows], labels[fit_rows], **options)
        best = getattr(model, "best_iteration_", None)
        iterations = int(best) if best else int(model.n_estimators)
        return _Member(model, None, None, iterations)

    def _leaf_rows(self, fit_labels: np.ndarray, labels: np.ndarray) -> int:
        """Leaf size of a fit on `fit_labels`, a part of the training `labels`.

        Whether the rule for few churned rows applies is decided on all the
        training labels, so that the members of one model use the same rule.
        """
        if self.min_child_samples is not None:
            return self.min_child_samples
        few = _rarer_rows(labels) < FEW_CHURNED
        self.min_child_samples_ = leaf_rows(fit_labels, few=few)
        return self.min_child_samples_

    def _fit_logistic(
        self, frame: pd.DataFrame, labels: np.ndarray, fit_rows: np.ndarray
    ) -> _Member:
        part = frame.iloc[fit_rows]
        encoder = FeatureEncoder().fit(part)
        model = LogisticRegression(C=self.C, max_iter=2000)
        model.fit(encoder.transform(part), labels[fit_rows])
        return _Member(model, encoder, None, int(np.max(model.n_iter_)))

    def _calibrate(self, margin: np.ndarray, labels: np.ndarray) -> Any:
        """Calibrator of the margin on a hold-out part, or None."""
        positives = int(labels.sum())
        negatives = len(labels) - positives
        method = self.calibration
        if method is None:
            return None
        if method == "auto":
            if len(labels) >= MIN_ISOTONIC_ROWS and positives >= MIN_ISOTONIC_POSITIVES:
                method = "isotonic"
            elif min(positives, negatives) >= MIN_CALIBRATION_ROWS:
                method = "sigmoid"
            else:
                if max(positives, negatives) < MIN_CALIBRATION_ROWS:
                    lacking = "of each"
                elif positives < MIN_CALIBRATION_ROWS:
                    lacking = "churned rows"
                else:
                    lacking = "retained rows"
                self._note(
                    f"a hold-out part has {positives} churned and {negatives} "
                    f"retained rows, fewer than {MIN_CALIBRATION_ROWS} {lacking}, so "
                    "its probabilities are not calibrated"
                )
                return None
        elif min(positives, negatives) < MIN_CALIBRATION_ROWS:
            raise InsufficientLabels(
                positives, negatives, MIN_CALIBRATION_ROWS, "calibrate"
            )
        if self.calibration_ is None or self.calibration_ == method:
            self.calibration_ = method
        else:
            self.calibration_ = "mixed"
        if method == "isotonic":
            isotonic = IsotonicRegression(y_min=0.0, y_max=1.0, out_of_bounds="clip")
            return isotonic.fit(margin, labels)
        platt = LogisticRegression(C=1e6, max_iter=1000)
        return platt.fit(margin.reshape(-1, 1), labels)

    def _check_holdout_auc(self) -> None:
        """Note the hold-out parts on which the model ranks worse than chance."""
        scores = [m.holdout_auc for m in self.members_ if m.holdout_auc is not None]
        below = [score for score in scores if score < 0.5]
        if not below:
            return
        values = ", ".join(f"{score:.3f}" for score in below)
        self._note(
            f"warning: the model ranks churn worse than chance on {len(below)} of "
            f"{len(scores)} hold-out parts (ROC AUC {values}, below 0.5), so it "
            "puts retained accounts above churned ones more often than a random "
            "order would; with few churned rows this can be chance, else check the "
            "features and the labels"
        )

    def _check_not_constant(self, frame: pd.DataFrame) -> None:
        margin = self.decision_function(frame)
        if len(margin) and np.ptp(margin) < 1e-12:
            self._note(
                "the model gives every training row the same churn probability, so "
                "it separates no accounts; check that the features vary"
            )

    def _note(self, text: str) -> None:
        # The callers print `notes_`, compare once per group of splits, so the log
        # keeps it at info level rather than warning once per fit.
        self.notes_.append(text)
        logger.info("churn model (%s): %s", self.kind, text)

    # Prediction

    def decision_function(self, X: Any) -> np.ndarray:
        """Raw margin of each row: log-odds of churn before calibration."""
        check_is_fitted(self, "members_")
        frame = self._checked_frame(X)
        margins = [self._member_margin(member, frame) for member in self.members_]
        return np.mean(margins, axis=0)

    def predict_proba(self, X: Any) -> np.ndarray:
        """Probability of staying (column 0) and of churning (column 1) per row."""
        check_is_fitted(self, "members_")
        frame = self._checked_frame(X)
        churn = np.zeros(len(frame))
        for member in self.members_:
            margin = self._member_margin(member, frame)
            churn += _calibrated(member.calibrator, margin)
        churn = np.clip(churn / len(self.members_), 0.0, 1.0)
        return np.column_stack([1.0 - churn, churn])

    def predict(self, X: Any) -> np.ndarray:
        """1 where the churn probability is at least 0.5, else 0."""
        return (self.predict_proba(X)[:, 1] >= 0.5).astype(int)

    def contributions(self, X: Any) -> pd.DataFrame:
        """Per-feature parts of each row's raw margin, in log-odds.

        Returns a DataFrame with one column per feature and a `bias` column, indexed
        like `X`; each row sums to `decision_function` of that row. For LightGBM they
        are TreeSHAP values. For the logistic model a feature's part is its
        coefficient times its standardized value (plus its missing flag and its
        categories), so it is zero for a feature at its training mean. With several
        folds the parts are the mean over the folds' models.
        """
        check_is_fitted(self, "members_")
        frame = self._checked_frame(X)
        names = [*map(str, self.feature_names_in_), "bias"]
        total = np.zeros((len(frame), len(names)))
        for member in self.members_:
            total += self._member_contributions(member, frame)
        return pd.DataFrame(
            total / len(self.members_), columns=names, index=frame.index
        )

    def _member_margin(self, member: _Member, frame: pd.DataFrame) -> np.ndarray:
        if member.encoder is None:
            margin = member.model.predict(self._lightgbm_frame(frame), raw_score=True)
        else:
            margin = member.model.decision_function(member.encoder.transform(frame))
        return np.asarray(margin, dtype="float64")

    def _member_contributions(self, member: _Member, frame: pd.DataFrame) -> np.ndarray:
        if member.encoder is None:
            values = member.model.predict(
                self._lightgbm_frame(frame), pred_contrib=True
            )
            return np.asarray(values, dtype="float64")
        per_column = member.encoder.transform(frame) * member.model.coef_[0]
        parts = np.zeros((len(frame), self.n_features_in_ + 1))
        position = {name: i for i, name in enumerate(self.feature_names_in_)}
        for column, source in enumerate(member.encoder.sources_):
            parts[:, position[source]] += per_column[:, column]
        parts[:, -1] = float(member.model.intercept_[0])
        return parts

    # Helpers

    def _checked_frame(self, X: Any) -> pd.DataFrame:
        frame = _as_frame(X)
        missing = [c for c in self.feature_names_in_ if c not in frame.columns]
        if missing:
            raise ValueError(
                f"the features lack {len(missing)} columns the model was trained on: "
                f"{', '.join(map(str, missing[:10]))}; pass the same feature columns "
                "as in training"
            )
        frame = frame[list(self.feature_names_in_)]
        for column in self.numeric_features_:
            if not _is_numeric(frame[column]):
                raise ValueError(
                    f"feature {column!r} was numeric in training but has values of "
                    f"type {frame[column].dtype} now; pass numbers or NaN"
                )
        return frame

    def _lightgbm_frame(self, frame: pd.DataFrame) -> pd.DataFrame:
        """Frame for LightGBM: plain column names, text as fixed categories.

        LightGBM rejects feature names with JSON punctuation such as ':', which the
        `measure:<name>` columns contain, so the columns become f0, f1, ...
        """
        columns: dict[str, Any] = {}
        for position, column in enumerate(frame.columns):
            values = frame[column]
            if column in self.categories_:
                known = self.categories_[column]
                text = values.astype("string").astype(object)
                # A category unseen in training is passed as missing.
                text = text.where(values.notna() & text.isin(known))
                columns[f"f{position}"] = pd.Categorical(text, categories=known)
            else:
                columns[f"f{position}"] = values.astype("float64").to_numpy()
        return pd.DataFrame(columns, index=frame.index)

    def __sklearn_tags__(self) -> Any:
        tags = super().__sklearn_tags__()
        tags.input_tags.allow_nan = True
        tags.input_tags.string = True
        return tags


def _calibrated(calibrator: Any, margin: np.ndarray) -> np.ndarray:
    """Churn probability of a margin through a calibrator, or the logistic function."""
    if calibrator is None:
        return 1.0 / (1.0 + np.exp(-margin))
    if isinstance(calibrator, IsotonicRegression):
        return np.asarray(calibrator.predict(margin), dtype="float64")
    return np.asarray(calibrator.predict_proba(margin.reshape(-1, 1))[:, 1])


def leaf_rows(labels: np.ndarray, few: bool | None = None) -> int:
    """Return the minimum leaf size (LightGBM's `min_child_samples`) for `labels`.

    The rarer class (churned, unless most rows churned) sets the size. With at
    least FEW_CHURNED rarer rows, a leaf is sized to contain about LEAF_CHURNED of
    them: ``ceil(LEAF_CHURNED / rate)`` rows, which is then at most a quarter of
    the rows. With fewer, a leaf is half the rarer rows (at least one row), so a
    leaf of churned rows alone remains possible in each tree's 80 % row sample.
    Larger leaves allow no split on a metric that separates the churned rows from
    the others, and the model can then rank worse than chance. `few` overrides
    whether the second rule applies, for a part of a larger set of labels. Returns
    MIN_LEAF_ROWS when the labels have a single class.
    """
    rows = len(labels)
    rarer = _rarer_rows(labels)
    if rarer <= 0:
        return MIN_LEAF_ROWS
    if rarer < FEW_CHURNED if few is None else few:
        # NOTE: the size jumps at FEW_CHURNED, from 79 rows to ceil(40 / rate),
        # which is 800 rows at a 5 % rate. Leaves of 40 churned rows were measured
        # on parts with 195 or more churned rows, and this rule on 11 to 33, so no
        # size was measured in between.
        return max(1, rarer // 2)
    return min(math.ceil(LEAF_CHURNED / (rarer / rows)), rows // 4)


def _rarer_rows(labels: np.ndarray) -> int:
    """Rows of the rarer class of 0/1 `labels`."""
    churned = int(np.sum(labels))
    return min(churned, len(labels) - churned)


def binary_labels(y: Any, rows: int) -> np.ndarray:
    """Return `y` as an int array of 0/1, or raise ValueError naming the problem."""
    values = np.asarray(y, dtype="float64").ravel()
    if len(values) != rows:
        raise ValueError(f"got {len(values)} labels for {rows} feature rows")
    if np.isnan(values).any():
        raise ValueError(
            f"{int(np.isnan(values).sum())} labels are missing (censored rows); drop "
            "them before fitting"
        )
    if not np.isin(values, (0.0, 1.0)).all():
        raise ValueError("labels must be 0 (retained) or 1 (churned)")
    return values.astype(int)


def _eval_options(data: pd.DataFrame, labels: np.ndarray) -> dict[str, Any]:
    """Hold-out arguments of LGBMClassifier.fit in the form this LightGBM takes.

    LightGBM 4.7 renamed `eval_set` to `eval_X` and `eval_y` and warns on the old name.
    """
    parameters = inspect.signature(lightgbm.LGBMClassifier.fit).parameters
    if "eval_X" in parameters:
        return {"eval_X": (data,), "eval_y": (labels,)}
    return {"eval_set": [(data, labels)]}


def _as_frame(X: Any) -> pd.DataFrame:
    if isinstance(X, pd.DataFrame):
        return X
    array = np.asarray(X)
    if array.ndim != 2:
        raise ValueError(f"features must be 2-dimensional, got shape {array.shape}")
    return pd.DataFrame(array, columns=[f"x{i}" for i in range(array.shape[1])])


def _is_numeric(series: pd.Series) -> bool:
    return bool(
        pd.api.types.is_numeric_dtype(series) or pd.api.types.is_bool_dtype(series)
    )


def _enough_of_each(
    labels: np.ndarray, splits: list[tuple[np.ndarray, np.ndarray]]
) -> bool:
    """Tell whether every part of `splits` has MIN_HOLDOUT_ROWS of each class."""
    for fit_rows, held in splits:
        for part in (labels[fit_rows], labels[held]):
            if min(part.sum(), len(part) - part.sum()) < MIN_HOLDOUT_ROWS:
                return False
    return True


def _latest_rows(order: np.ndarray, fraction: float) -> np.ndarray | None:
    """Rows of the latest times that make up about `fraction` of all rows.

    The earliest time is never included. Returns None when the rows have fewer than
    two distinct times.
    """
    times = pd.Series(order)
    distinct = np.sort(times.dropna().unique())
    if len(distinct) < 2:
        return None
    counts = times.value_counts().reindex(distinct[::-1]).to_numpy()
    target_count = fraction * len(times)
    held_count = 0
    chosen: list[Any] = []
    for time, count in zip(distinct[::-1], counts, strict=True):
        if held_count >= target_count or len(chosen) == len(distinct) - 1:
            break
        chosen.append(time)
        held_count += int(count)
    return np.flatnonzero(times.isin(chosen).to_numpy())
