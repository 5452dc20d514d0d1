"""Driver analysis: which measures separate churned from retained accounts, by segment.

For each segment and measure, `segment_drivers` compares the measure scores of the
labelled observations that churned with those that were retained. It reports the mean
of each group, the difference, and the ROC AUC of the score as a predictor of staying.
An AUC of 1.0 means every retained account scored higher than every churned one, 0.5
means no separation, and below 0.5 churned accounts scored higher.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from healthscore.models.dataset import Observations
from healthscore.models.errors import UNDATED_LABELS
from healthscore.models.evaluation import roc_auc

__all__ = ["DRIVER_COLUMNS", "NoSegmentCompared", "segment_drivers"]

DRIVER_COLUMNS = [
    "segment",
    "measure",
    "churned_mean",
    "retained_mean",
    "difference",
    "auc",
    "churned",
    "retained",
]


class NoSegmentCompared(ValueError):
    """Every segment has too few churned or retained observations to compare.

    `notes` name each segment that was left out, with its counts.
    """

    def __init__(self, message: str, notes: list[str]) -> None:
        super().__init__(message)
        self.notes = notes


def segment_drivers(
    observations: Observations, min_churned: int = 10
) -> tuple[pd.DataFrame, list[str]]:
    """Rank the measures of each segment by how well they separate churn.

    Rows are sorted by segment, then by the distance of the AUC from 0.5, largest
    first. A segment with fewer than `min_churned` churned or retained observations
    is left out, and a note records it.

    Raises
    ------
    NoSegmentCompared
        When there are labelled observations but every segment is left out.
    """
    labelled = observations.labelled().frame
    rows = []
    notes = []
    segments = labelled.groupby("segment", sort=True, dropna=False)
    for segment, group in segments:
        labels = group["label"].to_numpy(dtype=float)
        churned = int(labels.sum())
        retained = len(labels) - churned
        if min(churned, retained) < min_churned:
            notes.append(
                f"segment {segment}: left out, {churned} churned and {retained} "
                f"retained observations, and each needs at least {min_churned}"
            )
            continue
        for column in observations.measure_columns:
            values = group[column].to_numpy(dtype=float)
            present = ~np.isnan(values)
            if present.sum() == 0:
                continue
            churned_values = values[present & (labels == 1)]
            retained_values = values[present & (labels == 0)]
            churned_mean = _mean(churned_values)
            retained_mean = _mean(retained_values)
            rows.append(
                {
                    "segment": str(segment),
                    "measure": column.removeprefix("measure:"),
                    "churned_mean": churned_mean,
                    "retained_mean": retained_mean,
                    "difference": retained_mean - churned_mean,
                    "auc": roc_auc(1 - labels[present], values[present]),
                    "churned": int(churned_values.size),
                    "retained": int(retained_values.size),
                }
            )
    if segments.ngroups and len(notes) == segments.ngroups:
        raise NoSegmentCompared(
            _no_segment_message(segments.ngroups, min_churned, observations), notes
        )
    frame = pd.DataFrame(rows, columns=DRIVER_COLUMNS)
    if frame.empty:
        return frame, notes
    frame["separation"] = (frame["auc"] - 0.5).abs()
    frame = frame.sort_values(
        ["segment", "separation"], ascending=[True, False], kind="stable"
    )
    return frame.drop(columns="separation").reset_index(drop=True), notes


def _no_segment_message(
    segments: int, min_churned: int, observations: Observations
) -> str:
    """Return the error that no segment was compared, with how to get more rows."""
    counted = (
        "the one segment does not have"
        if segments == 1
        else f"none of the {segments:,} segments has"
    )
    problem = (
        f"no measure was compared, because {counted} at least {min_churned} churned "
        f"and {min_churned} retained observations (validation.min_churned)"
    )
    if observations.labels.source == "column":
        more = f"add accounts to the accounts source, because {UNDATED_LABELS}"
    else:
        more = (
            "score more as-of dates with `healthscore backfill --from DATE --to DATE "
            "--every 1mo`, so that each segment has more labelled observations"
        )
    return f"{problem}; lower validation.min_churned in healthscore.yml, or {more}"


def _mean(values: np.ndarray) -> float:
    return float(values.mean()) if values.size else math.nan
