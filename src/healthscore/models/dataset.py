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
from healthscore.models.labels import (
    LABEL_COLUMNS,
    LabelSet,
    build_labels,
    label_source,
    open_label_sources,
)
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
    """Requested as-of dates, or a range of them, without a stored snapshot.

    `missing` lists the requested dates that have no snapshot. It is empty when the
    range from `start` to `end` (None: open on that side) contains no stored date.
    The message names the stored dates and how to store the missing ones, and
    `describe` gives it with the options of a calling command.
    """

    def __init__(
        self,
        missing: Sequence[date],
        stored: Sequence[date],
        start: date | None = None,
        end: date | None = None,
    ) -> None:
        self.missing = sorted(missing)
        self.stored = sorted(stored)
        self.start = start
        self.end = end
        super().__init__(self.describe())

    def __reduce__(
        self,
    ) -> tuple[
        type[MissingSnapshotsError],
        tuple[list[date], list[date], date | None, date | None],
    ]:
        return (type(self), (self.missing, self.stored, self.start, self.end))

    def describe(self, backfill_option: bool = False, every: str | None = None) -> str:
        """Return the message, with advice for a command that has these options.

        With `backfill_option`, the advice names --backfill, which scores and stores
        missing dates. `every` is the step between the requested dates, such as
        "1mo", for the `healthscore backfill` command that the advice gives.
        """
        if self.missing:
            problem = f"no snapshot is stored for {_listed_dates(self.missing)}"
        elif self.stored:
            problem = f"no snapshot is stored {self._range_text()}"
        else:
            problem = "no snapshots are stored"
        sentences = [problem]
        if self.stored:
            sentences.append(self._stored_text())
        sentences.append(self._advice(backfill_option, every))
        return ". ".join(sentences) + "."

    def _range_text(self) -> str:
        if self.start is not None and self.end is not None:
            return f"from {self.start.isoformat()} to {self.end.isoformat()}"
        if self.start is not None:
            return f"on or after {self.start.isoformat()}"
        if self.end is not None:
            return f"on or before {self.end.isoformat()}"
        return "for the requested as-of dates"

    def _stored_text(self) -> str:
        first, last = self.stored[0].isoformat(), self.stored[-1].isoformat()
        if len(self.stored) == 1:
            return f"The only stored snapshot is of {first}"
        return f"The {len(self.stored):,} stored snapshots run from {first} to {last}"

    def _advice(self, backfill_option: bool, every: str | None) -> str:
        step = every or "STEP"
        if self.missing:
            first, last = self.missing[0].isoformat(), self.missing[-1].isoformat()
            if len(self.missing) == 1:
                text = f"Store it with `healthscore score --as-of {first}`"
            else:
                command = f"healthscore backfill --from {first} --to {last}"
                text = f"Store them with `{command} --every {step}`"
            if backfill_option:
                pronoun = "it" if len(self.missing) == 1 else "them"
                text += f", or pass --backfill to store {pronoun} first"
            return text
        first = self.start.isoformat() if self.start is not None else "DATE"
        last = self.end.isoformat() if self.end is not None else "DATE"
        command = f"healthscore backfill --from {first} --to {last} --every {step}"
        if self.stored:
            text = (
                "Choose a range within the stored dates, or store this one with "
                f"`{command}`"
            )
        else:
            text = f"Store a range with `{command}`"
        if backfill_option:
            # Without --every, --backfill has no dates to store.
            options = [
                name
                for name, value in (("--from", self.start), ("--to", self.end))
                if value is None
            ]
            options += ["--every", "--backfill"]
            listed = f"{', '.join(options[:-1])} and {options[-1]}"
            text += f", or pass {listed} to store it first"
        return text


def _listed_dates(days: Sequence[date], limit: int = 10) -> str:
    """Join up to `limit` dates, as "2024-01-01, 2024-02-01 and 3 more"."""
    listed = [day.isoformat() for day in days[:limit]]
    if len(days) > limit:
        return f"{', '.join(listed)} and {len(days) - limit:,} more"
    if len(listed) == 1:
        return listed[0]
    return f"{', '.join(listed[:-1])} and {listed[-1]}"


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
    require_labels: bool = True,
) -> Observations:
    """Read the snapshots of `dates` (default: every stored date) and label them.

    With `require_labels` false, labels that cannot be made, such as when no
    outcome is imported, leave every row without a label, and a note gives the reason.

    Raises
    ------
    MissingSnapshotsError
        When a requested date has no stored snapshot, or none is stored at all.
    ValueError
        When the labels cannot be made and `require_labels` is true, or a metric
        reads the label column.
    """
    store = store or snapshot_store_of(project)
    stored = store.dates()
    selected = sorted(set(dates)) if dates is not None else stored
    missing = [day for day in selected if day not in set(stored)]
    if missing or not selected:
        raise MissingSnapshotsError(missing, stored)
    _check_label_column_unused(project)

    scores = _read(store, "scores", selected)
    frame = scores[["account_id", "as_of", "scorecard", "score", "band"]].copy()
    measures, measure_columns = _measure_features(store, selected)
    metrics, metric_columns, metric_notes = _metric_features(store, selected, project)
    frame = frame.merge(measures, on=["as_of", "account_id"], how="left")
    frame = frame.merge(metrics, on=["as_of", "account_id"], how="left")

    if sources is None:
        sources = open_label_sources(project)
    try:
        labels = build_labels(project, frame[["account_id", "as_of"]], sources)
    except ValueError as exc:
        if require_labels:
            raise
        labels = _no_labels(project, frame[["account_id", "as_of"]], str(exc))
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
    notes = list(labels.notes) + metric_notes
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


def _no_labels(project: Project, pairs: pd.DataFrame, reason: str) -> LabelSet:
    """Return a label set in which every pair of `pairs` has no label."""
    frame = pairs.copy()
    frame["label"] = np.nan
    frame["churn_date"] = pd.Series(pd.NaT, index=frame.index, dtype="datetime64[ns]")
    note = f"no account has a churn label: {reason}"
    return LabelSet(frame[LABEL_COLUMNS], label_source(project), None, [note])


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
    store: SnapshotStore, dates: list[date], project: Project
) -> tuple[pd.DataFrame, list[str], list[str]]:
    """Return the metric feature columns, their names, and notes on text metrics
    left out because they have more than MAX_CATEGORIES values."""
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
    scored = {
        measure.metric
        for card in project.config.scorecards
        for component in card.components.values()
        for measure in component.measures
    }
    notes = []
    for name, rows in text.groupby("metric", sort=True):
        values = sorted(rows["value_text"].astype(str).unique())
        if len(values) > MAX_CATEGORIES:
            logger.info(
                "left out text metric %s: %d distinct values", name, len(values)
            )
            # The churn models use the measure of a scored metric in its place.
            if name not in scored:
                notes.append(_left_out_text_note(str(name), len(values)))
            continue
        keys = rows[["as_of", "account_id"]]
        for value in values:
            column = f"metric:{name}={value}"
            flags = keys.assign(**{column: (rows["value_text"] == value).astype(float)})
            wide = wide.merge(flags, on=["as_of", "account_id"], how="outer")
            columns.append(column)
    return wide, columns, notes


def _left_out_text_note(name: str, count: int) -> str:
    return (
        f"Text metric {name} has {count:,} distinct values, more than "
        f"{MAX_CATEGORIES}, so the churn models (`healthscore train`, and the ml "
        "and hybrid methods of `healthscore compare`) leave it out rather than add "
        "a 0/1 column per value. To use it, group its values into at most "
        f"{MAX_CATEGORIES} in the source, or add a scorecard measure of it with "
        "`normalize: {method: categories}`, whose score the models use."
    )


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
