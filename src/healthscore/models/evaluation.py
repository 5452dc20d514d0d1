"""Measures of how well a risk score predicts churn.

ROC AUC comes from scikit-learn. Lift, calibration error, the reliability curve, band
precision and recall, churn per band and lead time are written here, because their
definitions (ties, empty bins, censoring) must be stated exactly.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
from sklearn.isotonic import IsotonicRegression
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score

from healthscore.models.errors import InsufficientLabels

__all__ = [
    "BandRate",
    "ScoreCalibrator",
    "band_precision_recall",
    "churn_by_band",
    "expected_calibration_error",
    "lead_times",
    "lift",
    "reliability_curve",
    "roc_auc",
]

#: Positive rows needed before `ScoreCalibrator(method="auto")` uses isotonic
#: regression. With fewer it fits a logistic curve (Platt scaling), which has two
#: parameters and does not overfit a few positives.
ISOTONIC_MIN_POSITIVES = 500


def roc_auc(labels: np.ndarray, risk: np.ndarray) -> float:
    """Return the ROC AUC of `risk` (higher: likelier churn), NaN with one class."""
    labels, risk = _finite(labels, risk)
    if len(np.unique(labels)) < 2:
        return math.nan
    return float(roc_auc_score(labels, risk))


def lift(labels: np.ndarray, risk: np.ndarray, fraction: float = 0.1) -> float:
    """Churn rate of the riskiest `fraction` of rows divided by the overall rate.

    The riskiest part has round(fraction * n) rows, at least one. Rows tied with the
    last one taken share its places equally, so the result does not depend on the
    order of ties. NaN when no row churned.
    """
    if not 0 < fraction <= 1:
        raise ValueError(f"fraction must be in (0, 1], got {fraction}")
    labels, risk = _finite(labels, risk)
    n = len(labels)
    if n == 0 or labels.sum() == 0:
        return math.nan
    take = max(1, round(fraction * n))
    threshold = np.sort(risk)[::-1][take - 1]
    above = risk > threshold
    tied = risk == threshold
    churned_above = labels[above].sum()
    places_left = take - int(above.sum())
    churned_tied = labels[tied].sum() * places_left / int(tied.sum())
    top_rate = (churned_above + churned_tied) / take
    return float(top_rate / labels.mean())


def expected_calibration_error(
    labels: np.ndarray, probability: np.ndarray, bins: int = 10
) -> float:
    """Expected calibration error over `bins` equal-width probability bins.

    ECE = sum over bins of (rows in bin / rows) * |churn rate - mean probability|,
    with bins [0, 0.1), [0.1, 0.2), ..., [0.9, 1.0] for 10 bins (Naeini et al. 2015,
    Guo et al. 2017). NaN without rows.
    """
    curve = reliability_curve(labels, probability, bins)
    if curve.empty:
        return math.nan
    total = curve["rows"].sum()
    gaps = (curve["observed"] - curve["predicted"]).abs()
    return float((curve["rows"] * gaps).sum() / total)


def reliability_curve(
    labels: np.ndarray, probability: np.ndarray, bins: int = 10
) -> pd.DataFrame:
    """Mean probability and churn rate per equal-width bin, leaving out empty bins.

    Columns: bin (0-based), lower, upper, rows, predicted, observed.
    """
    labels, probability = _finite(labels, probability)
    if np.any((probability < 0) | (probability > 1)):
        raise ValueError("probabilities must lie in [0, 1]")
    edges = np.linspace(0.0, 1.0, bins + 1)
    # The last bin is closed on the right, so a probability of 1 falls into it.
    positions = np.clip(np.digitize(probability, edges[1:-1], right=False), 0, bins - 1)
    rows = []
    for position in range(bins):
        inside = positions == position
        count = int(inside.sum())
        if count == 0:
            continue
        rows.append(
            {
                "bin": position,
                "lower": float(edges[position]),
                "upper": float(edges[position + 1]),
                "rows": count,
                "predicted": float(probability[inside].mean()),
                "observed": float(labels[inside].mean()),
            }
        )
    columns = ["bin", "lower", "upper", "rows", "predicted", "observed"]
    return pd.DataFrame(rows, columns=columns)


def band_precision_recall(
    labels: np.ndarray, flagged: np.ndarray
) -> tuple[float, float]:
    """Precision and recall of the flagged (at-risk) rows as a churn prediction.

    Precision: churned flagged rows / flagged rows. Recall: churned flagged rows /
    churned rows. NaN where the denominator is 0.
    """
    labels = np.asarray(labels, dtype=float)
    flagged = np.asarray(flagged, dtype=bool)
    known = ~np.isnan(labels)
    labels, flagged = labels[known], flagged[known]
    hits = float(labels[flagged].sum())
    precision = hits / flagged.sum() if flagged.sum() else math.nan
    recall = hits / labels.sum() if labels.sum() else math.nan
    return precision, recall


@dataclass(frozen=True)
class BandRate:
    """Observations of one band with a known label, and how many churned."""

    band: str
    rows: int
    churned: int

    @property
    def rate(self) -> float:
        """Churned / rows, or NaN for an empty band."""
        return self.churned / self.rows if self.rows else math.nan


def churn_by_band(
    labels: np.ndarray, bands: np.ndarray, order: Sequence[str]
) -> tuple[list[BandRate], bool | None]:
    """Churn per band in `order` (worst first), and whether it falls band by band.

    Rows of other bands, such as `insufficient_data`, get a rate each after those
    of `order`, and are left out of whether the churn falls. The second value is
    None when fewer than two bands of `order` have rows.
    """
    labels = np.asarray(labels, dtype=float)
    bands = np.asarray(bands, dtype=object)
    known = ~np.isnan(labels)
    rates = []
    for name in order:
        inside = known & (bands == name)
        rates.append(BandRate(name, int(inside.sum()), int(labels[inside].sum())))
    present = [rate.rate for rate in rates if rate.rows]
    others = sorted(
        {band for band in bands[known] if isinstance(band, str)} - set(order)
    )
    extra = []
    for name in others:
        inside = known & (bands == name)
        extra.append(BandRate(name, int(inside.sum()), int(labels[inside].sum())))
    if len(present) < 2:
        return rates + extra, None
    falls = all(earlier > later for earlier, later in itertools.pairwise(present))
    return rates + extra, falls


def lead_times(observations: pd.DataFrame) -> pd.Series:
    """Days from entering at risk to churning, per churned account that was flagged.

    `observations` has account_id, as_of, flagged (bool) and churn_date (NaT unless
    the row's account churned within the horizon). For each account with a churn
    date, its rows before the churn date are taken in date order. When the last of
    them is flagged, the lead time is the churn date minus the first date of the
    unbroken run of flagged rows that ends there. Accounts not flagged on their last
    row before churning are missed and get no lead time.

    Returns the lead time in days by account id.
    """
    churned = observations[observations["churn_date"].notna()]
    if churned.empty:
        return pd.Series(dtype="float64", name="lead_time_days")
    churn_date = churned.groupby("account_id")["churn_date"].max()
    frame = observations[observations["account_id"].isin(churn_date.index)].copy()
    frame["churn_on"] = frame["account_id"].map(churn_date)
    frame = frame[frame["as_of"] < frame["churn_on"]]
    frame = frame.sort_values(["account_id", "as_of"], kind="stable")
    result = {}
    for account, rows in frame.groupby("account_id", sort=True):
        flags = rows["flagged"].to_numpy(dtype=bool)
        if not flags[-1]:
            continue
        run_start = len(flags) - 1
        while run_start > 0 and flags[run_start - 1]:
            run_start -= 1
        entered = rows["as_of"].iloc[run_start]
        result[account] = float((rows["churn_on"].iloc[-1] - entered).days)
    return pd.Series(result, dtype="float64", name="lead_time_days")


class ScoreCalibrator:
    """Maps a risk score to a churn probability, fitted on training rows.

    `method` is `isotonic`, `sigmoid` (Platt scaling: a logistic regression on the
    score) or `auto`: isotonic with at least ISOTONIC_MIN_POSITIVES churned rows,
    else sigmoid. `method_` records which one was fitted. Both give a probability
    that never falls as the risk rises. When the fitted sigmoid falls (the risk
    ranks churn the wrong way round), every row gets the training churn rate
    instead, as a flat isotonic fit would give, and `constant_` stores that rate.
    """

    def __init__(self, method: str = "auto", min_churned: int = 10) -> None:
        if method not in ("auto", "isotonic", "sigmoid"):
            raise ValueError(
                f"unknown calibration method {method!r}; use auto, isotonic or sigmoid"
            )
        self.method = method
        self.min_churned = min_churned

    def fit(self, risk: np.ndarray, labels: np.ndarray) -> ScoreCalibrator:
        """Fit on rows with a finite risk and a known label.

        Raises InsufficientLabels when either class has fewer than `min_churned` rows.
        """
        labels, risk = _finite(labels, risk)
        positives = int(labels.sum())
        negatives = len(labels) - positives
        if min(positives, negatives) < self.min_churned:
            raise InsufficientLabels(
                positives, negatives, self.min_churned, "calibrate"
            )
        method = self.method
        if method == "auto":
            method = "isotonic" if positives >= ISOTONIC_MIN_POSITIVES else "sigmoid"
        self.method_ = method
        self.isotonic_: IsotonicRegression | None = None
        self.logistic_: LogisticRegression | None = None
        self.constant_: float | None = None
        if method == "isotonic":
            model = IsotonicRegression(out_of_bounds="clip", y_min=0.0, y_max=1.0)
            model.fit(risk, labels)
            self.isotonic_ = model
            return self
        self.scale_ = float(np.std(risk)) or 1.0
        logistic = LogisticRegression(C=1e6, max_iter=1000)
        logistic.fit((risk / self.scale_).reshape(-1, 1), labels)
        if logistic.coef_[0, 0] < 0:
            self.constant_ = float(labels.mean())
        else:
            self.logistic_ = logistic
        return self

    def predict(self, risk: np.ndarray) -> np.ndarray:
        """Return the churn probability of each risk value (NaN stays NaN)."""
        risk = np.asarray(risk, dtype=float)
        out = np.full(len(risk), np.nan)
        finite = np.isfinite(risk)
        if not finite.any():
            return out
        if self.isotonic_ is not None:
            out[finite] = self.isotonic_.predict(risk[finite])
        elif self.constant_ is not None:
            out[finite] = self.constant_
        else:
            assert self.logistic_ is not None
            scaled = (risk[finite] / self.scale_).reshape(-1, 1)
            out[finite] = self.logistic_.predict_proba(scaled)[:, 1]
        return out


def _finite(labels: np.ndarray, values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Keep the rows with a known label and a finite value."""
    labels = np.asarray(labels, dtype=float)
    values = np.asarray(values, dtype=float)
    if labels.shape != values.shape:
        raise ValueError(
            f"labels and values differ in length ({len(labels)} and {len(values)})"
        )
    keep = ~np.isnan(labels) & np.isfinite(values)
    return labels[keep], values[keep]
