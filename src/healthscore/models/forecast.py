"""Score forecasts: each account's score 30, 60 and 90 days ahead, with an interval.

The forecast is learned from the stored history itself. For each horizon `h`, every
pair of snapshots about `h` days apart gives one example per account scored on both
dates: its score and its 30-day change on the earlier date, and its score on the
later one. A least-squares line over all accounts maps the first two to the third,
so it learns how far scores drift back toward the middle, which a straight
extrapolation of each account's own scores misses. The interval is the `level`
central range of the examples' residuals (an empirical prediction interval),
added to the forecast.

An account's expected date of crossing into at risk comes from its forecast path:
today's score, then the forecasts at the horizons, joined by straight lines. It is
the first day that path falls below the at-risk band's upper edge (scores round half
up, so 40.5 is the lowest score out of a 0-40 band). It is empty when the account is
at risk already or the path stays above the edge up to the longest horizon.

A horizon gets no forecast when no pair of snapshots is that far apart, or when its
pairs give fewer than MIN_EXAMPLES examples. Its columns are then NaN, and `method`
names the horizon and the reason, so the caller can tell the user what to store.

NOTE: the interval has the same width for every account, so it is too wide for
accounts whose score barely moves and too narrow for volatile ones. Its coverage is
met over the population, not per account.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import date, timedelta

import numpy as np
import pandas as pd

from healthscore.config.models import BandConfig, default_bands

__all__ = ["CHANGE_DAYS", "at_risk_threshold", "forecast_columns", "forecast_scores"]

#: Days back of the change that the forecast uses beside the score.
CHANGE_DAYS = 30
#: Examples a horizon needs for a forecast.
MIN_EXAMPLES = 30

LEARNED = "learned from history"


def at_risk_threshold(bands: Sequence[BandConfig]) -> float:
    """Lowest score that is not at risk: the at-risk band's upper edge plus 0.5.

    The at-risk band is the band named `at_risk`, or else the band with the lowest
    scores.
    """
    named = [band for band in bands if band.name == "at_risk"]
    band = named[0] if named else min(bands, key=lambda item: item.min)
    return band.max + 0.5


def forecast_columns(horizons: Sequence[int]) -> list[str]:
    """Columns of the table `forecast_scores` returns for `horizons`."""
    columns = ["account_id", "as_of", "score", "change_30d", "method"]
    for days in horizons:
        columns += [f"score_{days}d", f"lower_{days}d", f"upper_{days}d"]
    return [*columns, "at_risk_date"]


def forecast_scores(
    history: pd.DataFrame,
    horizons: Sequence[int] = (30, 60, 90),
    bands: Sequence[BandConfig] | None = None,
    as_of: date | None = None,
    level: float = 0.8,
) -> pd.DataFrame:
    """Forecast the score of every account scored as of `as_of`.

    Parameters
    ----------
    history : DataFrame
        Columns `as_of` (date), `account_id` and `score`, as `score_history` returns.
        Only dates up to `as_of` are used.
    horizons : sequence of int
        Days ahead to forecast.
    bands : sequence of BandConfig, optional
        The project's bands, for the at-risk edge; default: the default bands.
    as_of : date, optional
        Date to forecast from; default: the latest date in `history`.
    level : float
        Coverage of the interval, such as 0.8 for the 10th to 90th percentile.

    Returns
    -------
    DataFrame
        One row per account with the columns `forecast_columns(horizons)`; the
        forecasts are clipped to 0-100.
    """
    if not 0.0 < level < 1.0:
        raise ValueError(f"level must be between 0 and 1, got {level}")
    horizons = sorted({int(days) for days in horizons})
    if not horizons or horizons[0] <= 0:
        raise ValueError(f"horizons must be positive numbers of days, got {horizons}")
    missing = [c for c in ("as_of", "account_id", "score") if c not in history.columns]
    if missing:
        raise ValueError(f"the score history lacks the columns {', '.join(missing)}")
    frame = history[["as_of", "account_id", "score"]].copy()
    frame["as_of"] = pd.to_datetime(frame["as_of"])
    if as_of is not None:
        frame = frame[frame["as_of"] <= pd.Timestamp(as_of)]
    if frame["score"].notna().sum() == 0:
        return pd.DataFrame(columns=forecast_columns(horizons))
    scores = frame.pivot_table(
        index="as_of", columns="account_id", values="score", aggfunc="first"
    ).sort_index()
    end = scores.index[-1] if as_of is None else pd.Timestamp(as_of)
    if end not in scores.index:
        raise ValueError(f"no scores are stored for {end.date().isoformat()}")
    tolerance = _half_step(scores.index)
    changes = _changes(scores, tolerance)

    current = scores.loc[end].dropna()
    accounts = current.index
    result = pd.DataFrame(
        {
            "account_id": accounts.astype(str),
            "as_of": end.date(),
            "score": current.to_numpy(dtype="float64"),
            "change_30d": changes.loc[end, accounts].to_numpy(dtype="float64"),
        }
    )
    predictors = _predictors(
        result["score"].to_numpy(), result["change_30d"].to_numpy()
    )
    no_pairs: list[str] = []
    few_examples: list[str] = []
    for days in horizons:
        fitted = _fit_horizon(scores, changes, days, tolerance, level)
        if isinstance(fitted, int):
            if fitted == 0:
                no_pairs.append(f"{days}d")
            else:
                few_examples.append(f"{days}d ({fitted})")
            for prefix in ("score", "lower", "upper"):
                result[f"{prefix}_{days}d"] = np.nan
            continue
        coefficients, low, high = fitted
        predicted = predictors @ coefficients
        result[f"score_{days}d"] = np.clip(predicted, 0.0, 100.0)
        result[f"lower_{days}d"] = np.clip(predicted + low, 0.0, 100.0)
        result[f"upper_{days}d"] = np.clip(predicted + high, 0.0, 100.0)
    result["method"] = _method(no_pairs, few_examples)
    threshold = at_risk_threshold(bands if bands is not None else default_bands())
    result["at_risk_date"] = _crossing_dates(result, horizons, threshold, end.date())
    return result[forecast_columns(horizons)].reset_index(drop=True)


def _method(no_pairs: list[str], few_examples: list[str]) -> str:
    """Describe the forecast method and why each horizon without a forecast has none."""
    reasons = [LEARNED]
    if no_pairs:
        reasons.append(f"no snapshots far enough apart for {', '.join(no_pairs)}")
    if few_examples:
        reasons.append(
            f"too few examples for {', '.join(few_examples)}: a horizon needs "
            f"{MIN_EXAMPLES}, one per account scored on two snapshots that far apart"
        )
    return "; ".join(reasons)


def _half_step(dates: pd.Index) -> pd.Timedelta:
    """Half the median gap between stored dates, at least half a day."""
    if len(dates) < 2:
        return pd.Timedelta(hours=12)
    gaps = np.diff(dates.to_numpy()).astype("timedelta64[s]").astype("float64")
    return max(pd.Timedelta(seconds=float(np.median(gaps)) / 2), pd.Timedelta(hours=12))


def _nearest(dates: pd.Index, target: pd.Timestamp, tolerance: pd.Timedelta) -> int:
    """Position of the stored date nearest to `target` within `tolerance`, or -1."""
    distance = np.abs(dates - target)
    position = int(np.argmin(distance))
    return position if distance[position] <= tolerance else -1


def _changes(scores: pd.DataFrame, tolerance: pd.Timedelta) -> pd.DataFrame:
    """Compute each account's score change over the last CHANGE_DAYS days per date."""
    changes = pd.DataFrame(np.nan, index=scores.index, columns=scores.columns)
    for day in scores.index:
        before = _nearest(scores.index, day - pd.Timedelta(days=CHANGE_DAYS), tolerance)
        if before >= 0 and scores.index[before] < day:
            changes.loc[day] = scores.loc[day] - scores.iloc[before]
    return changes


def _predictors(score: np.ndarray, change: np.ndarray) -> np.ndarray:
    """Design matrix: intercept, score, 30-day change (0 when missing), its flag."""
    known = ~np.isnan(change)
    return np.column_stack(
        [
            np.ones(len(score)),
            score,
            np.where(known, change, 0.0),
            (~known).astype("float64"),
        ]
    )


def _fit_horizon(
    scores: pd.DataFrame,
    changes: pd.DataFrame,
    days: int,
    tolerance: pd.Timedelta,
    level: float,
) -> tuple[np.ndarray, float, float] | int:
    """Coefficients and residual quantiles of the `days`-ahead line.

    Returns the number of examples found instead when it is below MIN_EXAMPLES. 0
    means that no pair of snapshots `days` apart has an account scored on both.
    """
    starts: list[np.ndarray] = []
    moves: list[np.ndarray] = []
    targets: list[np.ndarray] = []
    for position, day in enumerate(scores.index):
        later = _nearest(scores.index, day + pd.Timedelta(days=days), tolerance)
        if later <= position:
            continue
        base = scores.iloc[position].to_numpy(dtype="float64")
        target = scores.iloc[later].to_numpy(dtype="float64")
        both = ~np.isnan(base) & ~np.isnan(target)
        starts.append(base[both])
        moves.append(changes.iloc[position].to_numpy(dtype="float64")[both])
        targets.append(target[both])
    examples = sum(len(part) for part in starts)
    if examples < MIN_EXAMPLES:
        return examples
    design = _predictors(np.concatenate(starts), np.concatenate(moves))
    outcome = np.concatenate(targets)
    coefficients, *_ = np.linalg.lstsq(design, outcome, rcond=None)
    residuals = outcome - design @ coefficients
    tail = (1.0 - level) / 2.0
    low, high = np.quantile(residuals, [tail, 1.0 - tail])
    return coefficients, float(low), float(high)


def _crossing_dates(
    result: pd.DataFrame, horizons: Sequence[int], threshold: float, as_of: date
) -> list[date | None]:
    """First day each account's forecast path falls below `threshold`, or None."""
    known = [days for days in horizons if result[f"score_{days}d"].notna().any()]
    points = np.array([0, *known], dtype="float64")
    paths = np.column_stack(
        [result["score"].to_numpy()]
        + [result[f"score_{days}d"].to_numpy() for days in known]
    )
    dates: list[date | None] = []
    for path in paths:
        dates.append(_first_crossing(points, path, threshold, as_of))
    return dates


def _first_crossing(
    points: np.ndarray, path: np.ndarray, threshold: float, as_of: date
) -> date | None:
    if np.isnan(path[0]) or path[0] < threshold:
        return None
    for left in range(len(points) - 1):
        start, stop = path[left], path[left + 1]
        if np.isnan(stop) or stop >= threshold:
            continue
        # Straight line from (points[left], start) to (points[left + 1], stop).
        fraction = (start - threshold) / (start - stop)
        crossing = points[left] + fraction * (points[left + 1] - points[left])
        return as_of + timedelta(days=max(1, int(np.floor(crossing)) + 1))
    return None
