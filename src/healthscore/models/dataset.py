"""Observations for backtests and models: one row per account and stored as-of date.

`build_observations` reads the stored snapshots (scores, measures and metrics), adds the
churn label of each row (see `healthscore.models.labels`) and the account columns the
models use (segment, renewal date, ARR).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import date
from typing import Literal

import numpy as np
import pandas as pd

from healthscore.config import Project
from healthscore.config.models import AttributeMetric
from healthscore.models.labels import LabelSet, build_labels, open_label_sources
from healthscore.sources import SourceSet
from healthscore.store.snapshots import SnapshotStore

__all__ = [
    "MAX_CATEGORIES",
    "MissingSnapshotsError",
    "Observations",
    "build_observations",
    "snapshot_store_of",
]

logger = logging.getLogger(__name__)

#: Text metrics with at most this many distinct values become one 0/1 column per
#: value (`metric:<name>=<value>`). Text metrics with more values are left out.
MAX_CATEGORIES = 20

FeatureKind = Literal["measures", "metrics", "all"]


class MissingSnapshotsError(LookupError):
    """Requested as-of dates that have no stored snapshot."""

    def __init__(self, missing: Sequence[date], stored: Sequence[date]) -> None:
        self.missing = list(missing)
        self.stored = list(stored)
        listed = ", ".join(day.isoformat() for day in self.missing[:10])
        more = f" and {len(self.missing) - 10} more" if len(self.missing) > 10 else ""
        super().__init__(
            f"no snapshot is stored for {listed}{more}; store them with `healthscore "
            f"backfill --from {self.missing[0].isoformat()} --to "
            f"{self.missing[-1].isoformat()} --every STEP`, or pass --backfill"
        )


@dataclass
class Observations:
    """Labelled observations of accounts at stored as-of dates."""

    frame: pd.DataFrame
    """One row per (account_id, as_of): segment, scorecard, score, band, label,
    churn_date, renewal_date, arr, then the feature columns."""
    measure_columns: list[str]
    """Normalized measure scores 0-100, named `measure:<name>`."""
    metric_columns: list[str]
    """Numeric metric values, named `metric:<name>` (`metric:<name>=<value>` for a
    value of a text metric)."""
    labels: LabelSet
    dates: list[date]
    notes: list[str] = field(default_factory=list)

    def features(self, kind: FeatureKind = "all") -> pd.DataFrame:
        """Return the feature columns of `kind`: measures, metrics or all."""
        if kind == "measures":
            columns = self.measure_columns
        elif kind == "metrics":
            columns = self.metric_columns
        elif kind == "all":
            columns = self.measure_columns + self.metric_columns
        else:
            raise ValueError(
                f"unknown feature kind {kind!r}; use measures, metrics or all"
            )
        return self.frame[columns]

    def labelled(self) -> Observations:
        """Return the observations whose label is known."""
        keep = self.frame["label"].notna().to_numpy()
        return self.subset(keep)

    def subset(self, rows: np.ndarray) -> Observations:
        """Return the observations at the boolean or integer positions `rows`."""
        frame = self.frame.iloc[rows].reset_index(drop=True)
        return Observations(
            frame,
            self.measure_columns,
            self.metric_columns,
            self.labels,
            sorted({stamp.date() for stamp in frame["as_of"]}),
            self.notes,
        )

    @property
    def label_counts(self) -> tuple[int, int]:
        """Churned and retained rows."""
        labels = self.frame["label"]
        return int((labels == 1).sum()), int((labels == 0).sum())


def snapshot_store_of(project: Project) -> SnapshotStore:
    """Return the project's snapshot store."""
    return SnapshotStore(project.path(project.config.store.snapshots))


def build_observations(
    project: Project,
    dates: Sequence[date] | None = None,
    *,
    sources: SourceSet | None = None,
    store: SnapshotStore | None = None,
) -> Observations:
    """Read the snapshots of `dates` (default: every stored date) and label them.

    Raises
    ------
    MissingSnapshotsError
        When a requested date has no stored snapshot, or none is stored at all.
    ValueError
        When the labels cannot be made, or a metric reads the label column.
    """
    store = store or snapshot_store_of(project)
    stored = store.dates()
    selected = sorted(set(dates)) if dates is not None else stored
    missing = [day for day in selected if day not in set(stored)]
    if missing or not selected:
        raise MissingSnapshotsError(missing or list(selected), stored)
    _check_label_column_unused(project)

    scores = _read(store, "scores", selected)
    frame = scores[["account_id", "as_of", "scorecard", "score", "band"]].copy()
    measures, measure_columns = _measure_features(store, selected)
    metrics, metric_columns = _metric_features(store, selected)
    frame = frame.merge(measures, on=["as_of", "account_id"], how="left")
    frame = frame.merge(metrics, on=["as_of", "account_id"], how="left")

    if sources is None:
        sources = open_label_sources(project)
    labels = build_labels(project, frame[["account_id", "as_of"]], sources)
    frame = frame.merge(
        labels.frame, on=["account_id", "as_of"], how="left", validate="one_to_one"
    )
    _add_account_columns(frame, sources.accounts())
    leading = [
        "account_id",
        "as_of",
        "segment",
        "scorecard",
        "score",
        "band",
        "label",
        "churn_date",
        "renewal_date",
        "arr",
    ]
    frame = frame[leading + measure_columns + metric_columns]
    frame = frame.sort_values(["as_of", "account_id"], kind="stable")
    frame = frame.reset_index(drop=True)
    notes = list(labels.notes)
    logger.info(
        "built %d observations over %d dates (%d churned, %d retained)",
        len(frame),
        len(selected),
        int((frame["label"] == 1).sum()),
        int((frame["label"] == 0).sum()),
    )
    return Observations(
        frame, measure_columns, metric_columns, labels, list(selected), notes
    )


def _read(store: SnapshotStore, table: str, dates: list[date]) -> pd.DataFrame:
    frame = store.read_many(table, dates)
    frame["as_of"] = pd.to_datetime(frame["as_of"]).astype("datetime64[ns]")
    frame["account_id"] = frame["account_id"].astype(str)
    return frame


def _measure_features(
    store: SnapshotStore, dates: list[date]
) -> tuple[pd.DataFrame, list[str]]:
    measures = _read(store, "measures", dates)
    wide = measures.pivot_table(
        index=["as_of", "account_id"],
        columns="measure",
        values="normalized",
        aggfunc="first",
        dropna=False,
    )
    wide.columns = [f"measure:{name}" for name in wide.columns]
    return wide.reset_index(), list(wide.columns)


def _metric_features(
    store: SnapshotStore, dates: list[date]
) -> tuple[pd.DataFrame, list[str]]:
    metrics = _read(store, "metrics", dates)
    numeric = metrics[metrics["value"].notna() | metrics["value_text"].isna()]
    text_names = set(metrics.loc[metrics["value_text"].notna(), "metric"])
    numeric = numeric[~numeric["metric"].isin(text_names)]
    wide = numeric.pivot_table(
        index=["as_of", "account_id"],
        columns="metric",
        values="value",
        aggfunc="first",
        dropna=False,
    )
    wide.columns = [f"metric:{name}" for name in wide.columns]
    wide = wide.reset_index()
    columns = [column for column in wide.columns if column.startswith("metric:")]
    text = metrics[metrics["metric"].isin(text_names) & metrics["value_text"].notna()]
    for name, rows in text.groupby("metric", sort=True):
        values = sorted(rows["value_text"].astype(str).unique())
        if len(values) > MAX_CATEGORIES:
            logger.info(
                "left out text metric %s: %d distinct values", name, len(values)
            )
            continue
        keys = rows[["as_of", "account_id"]]
        for value in values:
            column = f"metric:{name}={value}"
            flags = keys.assign(**{column: (rows["value_text"] == value).astype(float)})
            wide = wide.merge(flags, on=["as_of", "account_id"], how="outer")
            columns.append(column)
    return wide, columns


def _add_account_columns(frame: pd.DataFrame, accounts: pd.DataFrame) -> None:
    """Add segment, renewal_date and arr from the accounts source, as they are now."""
    # NOTE: snapshots do not store account columns, so these are today's values.
    ids = frame["account_id"]
    if "segment" in accounts.columns:
        segment = ids.map(accounts["segment"]).astype(object)
        frame["segment"] = segment.where(segment.notna(), frame["scorecard"])
    else:
        frame["segment"] = frame["scorecard"]
    if "renewal_date" in accounts.columns:
        renewal = pd.to_datetime(ids.map(accounts["renewal_date"]))
        frame["renewal_date"] = renewal.astype("datetime64[ns]")
    else:
        frame["renewal_date"] = pd.Series(pd.NaT, index=frame.index).astype(
            "datetime64[ns]"
        )
    if "arr" in accounts.columns:
        frame["arr"] = pd.to_numeric(ids.map(accounts["arr"]), errors="coerce")
    elif "mrr" in accounts.columns:
        frame["arr"] = 12 * pd.to_numeric(ids.map(accounts["mrr"]), errors="coerce")
    else:
        frame["arr"] = np.nan


def _check_label_column_unused(project: Project) -> None:
    setting = project.config.validation.label_column
    if setting is None:
        return
    for name, metric in project.config.metrics.items():
        if isinstance(metric, AttributeMetric) and metric.column == setting.column:
            raise ValueError(
                f"metric {name!r} reads the label column {setting.column!r}, so every "
                "score and model would see the answer; remove the metric or choose "
                "another validation.label_column"
            )
