"""The benchmark's metric set, its time bounds, and the comparison of two results.

Every implementation returns one row per account of accounts.parquet, including
accounts without events, with these columns:

- ``events_28d``: events with ``as_of - 28 days <= timestamp < as_of``;
- ``users_28d``, ``event_types_28d``: distinct user_id and event_type in that window;
- ``events_prev_28d``: events with ``as_of - 56 days <= timestamp < as_of - 28 days``;
- ``events_ratio``: events_28d / events_prev_28d, missing when events_prev_28d is 0;
- ``days_since_last_event``: calendar days from the date of the last event before the
  as-of point to the as-of date (an event the day before is 1), missing without one.

The as-of point is midnight at the start of the as-of date, and timestamps are naive
UTC, as in the generated ``healthscore.yml`` (timezone UTC, start_of_day).
"""

from __future__ import annotations

from datetime import date, datetime, timedelta

import numpy as np
import pandas as pd

AS_OF = date(2026, 3, 1)
SPAN_DAYS = 180
WINDOW_DAYS = 28

METRICS = (
    "events_28d",
    "users_28d",
    "event_types_28d",
    "events_prev_28d",
    "events_ratio",
    "days_since_last_event",
)

#: Allowed difference between two float results, relative to max(1, |reference|).
TOLERANCE = 1e-9


def window_bounds(as_of: date = AS_OF) -> tuple[datetime, datetime, datetime]:
    """Return the as-of point and the starts of the 28-day and 56-day windows."""
    point = datetime.combine(as_of, datetime.min.time())
    return (
        point,
        point - timedelta(days=WINDOW_DAYS),
        point - timedelta(days=2 * WINDOW_DAYS),
    )


def standardize(result: pd.DataFrame) -> pd.DataFrame:
    """Return `result` indexed by account_id (sorted) with float64 metric columns.

    Accepts account_id as a column or as the index. Missing values become NaN.
    """
    frame = result
    if "account_id" in result.columns:
        frame = result.set_index("account_id")
    missing = [name for name in METRICS if name not in frame.columns]
    if missing:
        raise ValueError(f"result has no column {', '.join(missing)}")
    frame = frame.loc[:, list(METRICS)].astype("float64")
    frame.index = frame.index.astype(str)
    frame.index.name = "account_id"
    return frame.sort_index()


def compare(
    candidate: pd.DataFrame, reference: pd.DataFrame, limit: int = 5
) -> list[str]:
    """Return up to `limit` differences between two standardized results per metric.

    An empty list means both contain the same accounts and, for every metric, both
    values are missing or differ by at most TOLERANCE * max(1, |reference|).
    """
    problems = _account_differences(candidate, reference, limit)
    if problems:
        return problems
    for name in METRICS:
        problems += _value_differences(candidate, reference, name, limit)
    return problems


def _account_differences(
    candidate: pd.DataFrame, reference: pd.DataFrame, limit: int
) -> list[str]:
    extra = candidate.index.difference(reference.index)
    absent = reference.index.difference(candidate.index)
    problems = []
    if len(extra):
        sample = ", ".join(extra[:limit])
        problems.append(f"{len(extra)} accounts not in the reference, e.g. {sample}")
    if len(absent):
        sample = ", ".join(absent[:limit])
        problems.append(f"{len(absent)} accounts missing, e.g. {sample}")
    if candidate.index.has_duplicates:
        problems.append("some accounts have more than one row")
    return problems


def _value_differences(
    candidate: pd.DataFrame, reference: pd.DataFrame, name: str, limit: int
) -> list[str]:
    expected = reference[name].to_numpy()
    actual = candidate[name].to_numpy()
    both_missing = np.isnan(expected) & np.isnan(actual)
    with np.errstate(invalid="ignore"):
        close = np.abs(actual - expected) <= TOLERANCE * np.maximum(
            1.0, np.abs(expected)
        )
    wrong = np.flatnonzero(~(both_missing | close))
    problems = [
        f"{name} of {reference.index[i]}: {float(actual[i])!r}, "
        f"expected {float(expected[i])!r}"
        for i in wrong[:limit]
    ]
    if len(wrong) > limit:
        problems.append(f"{name}: {len(wrong) - limit} more accounts differ")
    return problems
