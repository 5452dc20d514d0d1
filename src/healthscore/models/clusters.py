"""Behavioral clusters: groups of accounts with similar measures, named and sized.

The features (normalized measures, 0-100) are imputed with the training median and
standardized. k-means chooses the number of clusters `k` from 2 to `max_clusters` by
the highest silhouette score, computed on at most `silhouette_rows` random rows. A
Gaussian mixture (full covariance) chooses it by the lowest Bayesian information
criterion (BIC). Each cluster is named after its most distinctive measures: the
`name_measures` features whose cluster mean lies furthest from the overall mean, in
standard deviations, such as "strong post_per_month, weak unfriend_per_newfriend".
Measures read as strong or weak because 100 is the healthiest score whatever the
metric's direction. Raw metrics read as high or low.

A cluster's churn rate that rests on fewer than `min_churned` churned accounts
(default MIN_RATE_CHURNED) gets a note in `notes_` with its exact 95% interval.
"""

from __future__ import annotations

from typing import Any, Literal

import numpy as np
import pandas as pd
from scipy import stats
from sklearn.base import BaseEstimator, ClusterMixin
from sklearn.cluster import KMeans
from sklearn.metrics import silhouette_score
from sklearn.mixture import GaussianMixture
from sklearn.utils.validation import check_is_fitted
from threadpoolctl import threadpool_limits

from healthscore.models.ml import FeatureEncoder, binary_labels

__all__ = ["MIN_RATE_CHURNED", "SUMMARY_COLUMNS", "BehaviorClusters", "feature_label"]

#: Columns of the table `BehaviorClusters.summary` returns.
SUMMARY_COLUMNS = ["cluster", "name", "size", "share", "churned", "churn_rate"]

#: Distance from the overall mean, in standard deviations, below which a cluster
#: mean is called typical rather than high or low.
TYPICAL = 0.25

#: Churned accounts below which a cluster's churn rate gets a note. With k churned
#: accounts the relative standard error of a rate is about 1 / sqrt(k) (a Poisson
#: count), so below 10 it is a third or more. 10 is also the default of
#: `validation.min_churned`, the churned rows a method needs to be fitted.
MIN_RATE_CHURNED = 10


def feature_label(column: str) -> str:
    """Feature name without its `measure:` or `metric:` prefix."""
    return column.split(":", 1)[1] if ":" in column else column


class BehaviorClusters(ClusterMixin, BaseEstimator):
    """Groups of accounts with similar behavior, each with a name and a churn rate.

    Parameters
    ----------
    method : {"kmeans", "gmm"}
        k-means, with k chosen by silhouette, or a Gaussian mixture, chosen by BIC.
    max_clusters : int
        Largest number of clusters tried; the smallest is 2.
    random_state : int
        Seed of the initializations and of the silhouette sample.
    silhouette_rows : int
        Rows that the silhouette score is computed on, because it costs
        O(rows squared).
    name_measures : int
        Distinctive measures in each cluster's name.
    min_churned : int
        Churned accounts below which a cluster's churn rate gets a note in
        `notes_`, with its exact (Clopper-Pearson) 95% interval.
    """

    def __init__(
        self,
        method: Literal["kmeans", "gmm"] = "kmeans",
        max_clusters: int = 8,
        random_state: int = 0,
        silhouette_rows: int = 5000,
        name_measures: int = 2,
        min_churned: int = MIN_RATE_CHURNED,
    ) -> None:
        self.method = method
        self.max_clusters = max_clusters
        self.random_state = random_state
        self.silhouette_rows = silhouette_rows
        self.name_measures = name_measures
        self.min_churned = min_churned

    def fit(self, X: pd.DataFrame, y: Any = None) -> BehaviorClusters:
        """Choose k, fit the clusters and name them; with `y`, learn churn rates.

        `y` contains 1 for churned and 0 for retained rows (NaN rows are left out of
        the churn rates only).

        Raises
        ------
        ValueError
            When `method` is unknown, `max_clusters` is below 2, a feature is not
            numeric, or the features have fewer than 3 distinct rows.
        """
        if self.method not in ("kmeans", "gmm"):
            raise ValueError(f"unknown method {self.method!r}; use kmeans or gmm")
        if self.max_clusters < 2:
            raise ValueError(
                f"max_clusters must be at least 2, got {self.max_clusters}"
            )
        frame = _numeric_frame(X)
        # Missing flags would make the accounts with a gap a cluster of their own.
        self.encoder_ = FeatureEncoder(flag_missing=False).fit(frame)
        data = self.encoder_.transform(frame)
        distinct = len(np.unique(np.round(data, 9), axis=0))
        if distinct < 3:
            raise ValueError(
                f"the features have {distinct} distinct rows; clustering needs at "
                "least 3"
            )
        largest = min(self.max_clusters, distinct - 1)
        self.criterion_ = "silhouette" if self.method == "kmeans" else "bic"
        scores: dict[int, float] = {}
        models: dict[int, Any] = {}
        # One thread: OpenMP start-up costs more than k-means saves on a few
        # thousand rows, and the machine may be shared.
        with threadpool_limits(limits=1):
            for k in range(2, largest + 1):
                model, score = self._fit_k(data, k)
                models[k] = model
                scores[k] = score
        if self.method == "kmeans":
            best = max(scores, key=lambda k: (scores[k], -k))
        else:
            best = min(scores, key=lambda k: (scores[k], k))
        self.scores_ = scores
        self.n_clusters_ = best
        self.model_ = models[best]
        raw = np.asarray(self.model_.predict(data), dtype=int)
        # Number the clusters by size, largest first, so the numbers mean something.
        sizes = np.bincount(raw, minlength=best)
        ranking = np.argsort(-sizes, kind="stable")
        self.relabel_ = np.empty(best, dtype=int)
        self.relabel_[ranking] = np.arange(best)
        self.labels_ = self.relabel_[raw]
        self.feature_names_in_ = np.asarray(frame.columns, dtype=object)
        self.n_features_in_ = len(frame.columns)
        self.profiles_ = self._profiles(frame)
        self.names_ = self._names()
        self.churn_rates_: dict[int, float] | None = None
        self.churned_: dict[int, float] = {}
        self.notes_: list[str] = []
        if y is not None:
            self.summary(y)
        return self

    def _fit_k(self, data: np.ndarray, k: int) -> tuple[Any, float]:
        if self.method == "kmeans":
            kmeans = KMeans(n_clusters=k, n_init=4, random_state=self.random_state)
            labels = kmeans.fit_predict(data)
            if len(np.unique(labels)) < 2:
                return kmeans, -1.0
            rows = min(self.silhouette_rows, len(data))
            score = silhouette_score(
                data, labels, sample_size=rows, random_state=self.random_state
            )
            return kmeans, float(score)
        mixture = GaussianMixture(
            n_components=k, covariance_type="full", random_state=self.random_state,
            reg_covar=1e-4, n_init=2,
        )  # fmt: skip
        mixture.fit(data)
        return mixture, float(mixture.bic(data))

    def _profiles(self, frame: pd.DataFrame) -> pd.DataFrame:
        """Mean of each feature per cluster, in standard deviations from the mean."""
        filled = frame.astype("float64").fillna(frame.median())
        deviation = filled.std().replace(0.0, 1.0).fillna(1.0)
        standard = (filled - filled.mean()) / deviation
        return standard.groupby(self.labels_).mean()

    def _names(self) -> dict[int, str]:
        """Name each cluster after its most distinctive features, unique among them.

        A cluster whose first `name_measures` features give the name of another
        cluster adds its next most distinctive features until the name is unique
        (four at most), and then gets its number as a suffix.
        """
        ranked = {
            int(str(cluster)): profile.abs().sort_values(ascending=False, kind="stable")
            for cluster, profile in self.profiles_.iterrows()
        }
        lengths = dict.fromkeys(ranked, self.name_measures)
        for _ in range(4):
            names = {
                cluster: self._name(cluster, list(order.index[: lengths[cluster]]))
                for cluster, order in ranked.items()
            }
            counts = pd.Series(list(names.values())).value_counts()
            repeated = [cluster for cluster, name in names.items() if counts[name] > 1]
            if not repeated:
                break
            for cluster in repeated:
                lengths[cluster] = min(lengths[cluster] + 1, len(ranked[cluster]))
        return _unique_names(names)

    def _name(self, cluster: int, columns: list[Any]) -> str:
        profile = self.profiles_.loc[cluster]
        parts = []
        for column in columns:
            value = float(profile[column])
            if abs(value) < TYPICAL:
                continue
            parts.append(
                f"{_level_word(str(column), value)} {feature_label(str(column))}"
            )
        return ", ".join(parts) if parts else "typical on all"

    def predict(self, X: pd.DataFrame) -> np.ndarray:
        """Cluster of each row."""
        check_is_fitted(self, "model_")
        frame = _numeric_frame(X)[list(self.feature_names_in_)]
        raw = np.asarray(self.model_.predict(self.encoder_.transform(frame)), dtype=int)
        return np.asarray(self.relabel_[raw])

    def summary(self, y: Any = None) -> pd.DataFrame:
        """Summarize the clusters of the fitted rows: name, size, share, churn rate.

        With `y` (labels of the fitted rows, NaN for unknown) the churn rates are
        computed from it and kept for `predict_risk`, and `notes_` names the rates
        that rest on fewer than `min_churned` churned accounts. Without it the table
        shows the rates of the last labelled fit or summary, or NaN.
        """
        check_is_fitted(self, "model_")
        clusters = np.arange(self.n_clusters_)
        sizes = np.bincount(self.labels_, minlength=self.n_clusters_)
        churned = np.full(self.n_clusters_, np.nan)
        rates = np.full(self.n_clusters_, np.nan)
        if y is not None:
            values = np.asarray(y, dtype="float64").ravel()
            if len(values) != len(self.labels_):
                raise ValueError(
                    f"got {len(values)} labels for {len(self.labels_)} clustered rows"
                )
            known = ~np.isnan(values)
            binary_labels(values[known], int(known.sum()))
            counts = np.bincount(self.labels_[known], minlength=self.n_clusters_)
            positives = np.bincount(
                self.labels_[known], weights=values[known], minlength=self.n_clusters_
            )
            churned = positives
            with np.errstate(divide="ignore", invalid="ignore"):
                rates = np.where(counts > 0, positives / counts, np.nan)
            self.churn_rates_ = {int(k): float(rates[k]) for k in clusters}
            self.churned_ = {int(k): float(churned[k]) for k in clusters}
            self.notes_ = self._rate_notes(counts, positives)
        elif self.churn_rates_ is not None:
            rates = np.array([self.churn_rates_[int(k)] for k in clusters])
            churned = np.array([self.churned_[int(k)] for k in clusters])
        table = pd.DataFrame(
            {
                "cluster": clusters,
                "name": [self.names_[int(k)] for k in clusters],
                "size": sizes,
                "share": sizes / max(len(self.labels_), 1),
                "churned": churned,
                "churn_rate": rates,
            }
        )
        return table[SUMMARY_COLUMNS]

    def _rate_notes(self, counts: np.ndarray, churned: np.ndarray) -> list[str]:
        """Name each churn rate that rests on fewer than `min_churned` churned
        accounts, with its exact 95% interval."""
        notes = []
        for cluster, (count, positives) in enumerate(zip(counts, churned, strict=True)):
            if count == 0 or positives >= self.min_churned:
                continue
            low, high = _exact_interval(int(positives), int(count))
            notes.append(
                f"cluster {cluster} ({self.names_[cluster]}): churn rate "
                f"{positives / count:.1%} from {int(positives):,} churned of "
                f"{int(count):,} accounts with a known outcome. With fewer than "
                f"{self.min_churned:,} churned accounts the rate is imprecise: its "
                f"exact 95% interval is {low:.1%} to {high:.1%}."
            )
        return notes

    def predict_risk(self, X: pd.DataFrame) -> np.ndarray:
        """Churn rate, learned on the training labels, of each row's cluster.

        Raises
        ------
        ValueError
            When the clusters were fitted without labels.
        """
        check_is_fitted(self, "model_")
        if self.churn_rates_ is None:
            raise ValueError(
                "the clusters have no churn rates; fit them with labels, "
                "fit(X, y), or call summary(y) first"
            )
        rates = np.array(
            [self.churn_rates_[k] for k in range(self.n_clusters_)], dtype="float64"
        )
        overall = float(np.nanmean(rates))
        risk = rates[self.predict(X)]
        return np.where(np.isnan(risk), overall, risk)


def _exact_interval(churned: int, count: int) -> tuple[float, float]:
    """Clopper-Pearson 95% interval of the rate `churned / count`."""
    low = stats.beta.ppf(0.025, churned, count - churned + 1) if churned else 0.0
    high = (
        stats.beta.ppf(0.975, churned + 1, count - churned) if churned < count else 1.0
    )
    return float(low), float(high)


def _level_word(column: str, value: float) -> str:
    """Word for a cluster mean above or below the overall mean.

    Measures are normalized so that 100 is healthiest, whatever the metric's
    direction, so they read as strong or weak. Other features read as high or low.
    """
    if column.startswith("measure:"):
        return "strong" if value > 0 else "weak"
    return "high" if value > 0 else "low"


def _numeric_frame(X: Any) -> pd.DataFrame:
    frame = X if isinstance(X, pd.DataFrame) else pd.DataFrame(np.asarray(X))
    text = [c for c in frame.columns if not pd.api.types.is_numeric_dtype(frame[c])]
    if text:
        raise ValueError(
            f"clustering takes numeric measures only; {', '.join(map(str, text[:5]))} "
            "are not numeric"
        )
    return frame


def _unique_names(names: dict[int, str]) -> dict[int, str]:
    """Suffix repeated names with the cluster number, so every name is unique."""
    counts = pd.Series(list(names.values())).value_counts()
    return {
        cluster: name if counts[name] == 1 else f"{name} ({cluster})"
        for cluster, name in names.items()
    }
