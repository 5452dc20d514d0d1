"""The socialnet example against the results of the book "Fighting Churn With Data".

The book's own SQL computed per-account metrics at weekly dates from the same files
(examples/socialnet/reference). healthscore must give the same value for every account,
metric and date listed there.
"""

from __future__ import annotations

from datetime import date, timedelta
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from healthscore.config import load_project
from healthscore.engine import Engine
from healthscore.metrics import compute_metrics
from healthscore.outcomes import churn_labels, last_complete_as_of

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "socialnet"

# The book stores metric values as 4-byte floats (PostgreSQL `real`), which keep
# about seven significant digits.
FLOAT32_RTOL = 1e-6


@pytest.fixture(scope="module")
def engine():
    project = load_project(EXAMPLE)
    # The book computes event metrics for every account with events, active or not.
    project.config.scoring.population = "all"
    return Engine.open(project)


@pytest.fixture(scope="module")
def reference():
    names = pd.read_csv(EXAMPLE / "reference" / "metric_name.csv")
    values = pd.read_csv(EXAMPLE / "reference" / "metric_until_2020-03-29.csv.gz")
    values["metric"] = values["metric_name_id"].map(
        names.set_index("metric_name_id")["metric_name"]
    )
    values["account_id"] = values["account_id"].astype(str)
    return values


def ours_at(engine, as_of: date) -> pd.DataFrame:
    return compute_metrics(engine.project, engine.sources, as_of).values


def test_reference_covers_every_book_metric(engine, reference):
    assert set(reference["metric"]) <= set(engine.project.config.metrics)
    assert reference["metric_date"].nunique() == 9


def test_metrics_equal_book_values_at_every_date(engine, reference):
    mismatches = []
    for metric_date, rows in reference.groupby("metric_date"):
        as_of = date.fromisoformat(metric_date)
        values = ours_at(engine, as_of)
        following_day = ours_at(engine, as_of + timedelta(days=1))
        for metric, group in rows.groupby("metric"):
            ids = group["account_id"].to_numpy()
            if metric == "days_since_newfriend":
                # The book counts events of the as-of day itself, which come after
                # the midnight point where its counts stop. healthscore never reads
                # past the as-of point, so the book's value at d is ours at d + 1
                # minus that day.
                ours = following_day[metric].reindex(ids).to_numpy() - 1
            else:
                ours = values[metric].reindex(ids).to_numpy(dtype=float)
            equal = np.isclose(
                ours, group["metric_value"], rtol=FLOAT32_RTOL, atol=1e-7
            )
            if not equal.all():
                mismatches.append(
                    (metric_date, metric, int((~equal).sum()), len(group))
                )
    assert mismatches == []


def test_book_zero_counts_have_no_row(engine, reference):
    rows = reference[
        (reference["metric_date"] == "2020-03-29")
        & (reference["metric"] == "post_per_month")
    ]
    values = ours_at(engine, date(2020, 3, 29))["post_per_month"]
    without_row = values.drop(index=rows["account_id"])
    assert (without_row == 0).all()
    assert len(without_row) > 0


@pytest.mark.parametrize(
    ("start", "active", "churned"),
    [
        # The book's churn rates (listing 2.2) for the months from March to May 2020.
        (date(2020, 3, 1), 5206, 134),
        (date(2020, 4, 1), 5617, 117),
        (date(2020, 5, 1), 6107, 105),
    ],
)
def test_churn_labels_equal_book_churn_rates(engine, start, active, churned):
    labels = churn_labels(engine.project, engine.sources, start)
    assert len(labels) == active
    assert int(labels.sum()) == churned


def test_last_complete_as_of_leaves_a_full_month_of_outcomes(engine):
    assert last_complete_as_of(engine.project) == date(2020, 5, 1)
    late = churn_labels(engine.project, engine.sources, date(2020, 5, 2))
    assert late.empty
