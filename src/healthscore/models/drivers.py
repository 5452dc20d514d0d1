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
from healthscore.models.evaluation import roc_auc

__all__ = ["DRIVER_COLUMNS", "segment_drivers"]

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


def segment_drivers(
    observations: Observations, min_churned: int = 10
) -> tuple[pd.DataFrame, list[str]]:
    """Rank the measures of each segment by how well they separate churn.

    Rows are sorted by segment, then by the distance of the AUC from 0.5, largest
    first. A segment with fewer than `min_churned` churned or retained observations
    is left out, and a note records it.
    """
    labelled = observations.labelled().frame
    rows = []
    notes = []
    for segment, group in labelled.groupby("segment", sort=True, dropna=False):
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
    frame = pd.DataFrame(rows, columns=DRIVER_COLUMNS)
    if frame.empty:
        return frame, notes
    frame["separation"] = (frame["auc"] - 0.5).abs()
    frame = frame.sort_values(
        ["segment", "separation"], ascending=[True, False], kind="stable"
    )
    return frame.drop(columns="separation").reset_index(drop=True), notes


def _mean(values: np.ndarray) -> float:
    return float(values.mean()) if values.size else math.nan
