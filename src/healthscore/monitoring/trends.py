"""Score trends per account from the stored snapshots: changes, slope and an arrow.

- `change_7d`, `change_30d`, `change_90d`: the score as of D minus the score of the
  snapshot nearest to D - n days (the earlier one on a tie), provided it is at most
  half the median step between snapshots away from D - n and earlier than D;
  missing otherwise. The nearest snapshot may lie a little after D - n, because
  with weekly snapshots the one on or before D - 30 is 5 days off, more than half a
  step. With monthly snapshots `change_7d` is missing, because no snapshot lies
  near D - 7 except D itself.
- `slope_30d`: least-squares slope of the score against time over the latest
  `slope_snapshots` snapshots up to D, in points per 30 days; missing with fewer
  than two scores.
- `arrow`: `up` when change_30d >= threshold and the slope is positive, `down` when
  change_30d <= -threshold and the slope is negative, else `flat`.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, timedelta

import numpy as np
import pandas as pd

from healthscore.config.history import TrendConfig
from healthscore.monitoring.history import score_history
from healthscore.store.snapshots import SnapshotNotFoundError, SnapshotStore

__all__ = [
    "CHANGE_DAYS",
    "TREND_COLUMNS",
    "ComparedDates",
    "ScoredUnder",
    "compared_dates",
    "compute_trends",
    "scorecards_compared",
    "trend_arrow",
]

#: Horizons of the score changes, in days.
CHANGE_DAYS = (7, 30, 90)

#: Columns of the table `compute_trends` returns.
TREND_COLUMNS = [
    "account_id",
    "score",
    "change_7d",
    "change_30d",
    "change_90d",
    "slope_30d",
    "arrow",
]


@dataclass(frozen=True)
class ComparedDates:
    """The stored dates whose scores a trend as of one date reads."""

    bases: dict[int, date | None]
    """Date of the earlier score of each change, by horizon in days; None when no
    snapshot is close enough."""
    slope: list[date]
    """Dates of the slope, oldest first; the last one is the trend's date."""

    def all(self) -> list[date]:
        """Return every date read, oldest first."""
        bases = {day for day in self.bases.values() if day is not None}
        return sorted(bases | set(self.slope))


@dataclass(frozen=True)
class ScoredUnder:
    """Dates on which one scorecard version scored an account."""

    scorecard: str
    version: str | None
    dates: list[date]


def compute_trends(
    store: SnapshotStore,
    as_of: date,
    settings: TrendConfig,
    history: pd.DataFrame | None = None,
) -> pd.DataFrame:
    """Trend of every account scored as of `as_of`, with the columns TREND_COLUMNS.

    Parameters
    ----------
    store : SnapshotStore
        Snapshots to read.
    as_of : date
        A stored as-of date.
    settings : TrendConfig
        Threshold of the arrow and the number of snapshots of the slope.
    history : DataFrame, optional
        `score_history(store)`, when the caller has read it already.

    Raises
    ------
    SnapshotNotFoundError
        When no snapshot of `as_of` is stored.
    """
    if not store.exists(as_of):
        raise SnapshotNotFoundError(
            f"no snapshot for {as_of.isoformat()} in {store.folder}; run "
            f"`healthscore score --as-of {as_of.isoformat()}` first"
        )
    if history is None:
        history = score_history(store)
    history = history[history["as_of"] <= as_of]
    scores = history.pivot(index="as_of", columns="account_id", values="score")
    scores = scores.sort_index()
    if as_of not in scores.index:
        # The date's snapshot scored no account (an empty population).
        text = ("account_id", "arrow")
        return pd.DataFrame(
            {
                column: pd.Series([], dtype=object if column in text else float)
                for column in TREND_COLUMNS
            }
        )
    current = scores.loc[as_of].dropna()
    accounts = current.index
    frame = pd.DataFrame({"account_id": accounts, "score": current.to_numpy()})

    compared = compared_dates(list(scores.index), as_of, settings)
    for days, base in compared.bases.items():
        if base is None:
            frame[f"change_{days}d"] = np.nan
        else:
            earlier = scores.loc[base].reindex(accounts).to_numpy()
            frame[f"change_{days}d"] = current.to_numpy() - earlier
    recent = scores.loc[compared.slope].reindex(columns=accounts)
    frame["slope_30d"] = _slopes(recent) * 30.0
    frame["arrow"] = [
        trend_arrow(change, slope, settings.threshold)
        for change, slope in zip(frame["change_30d"], frame["slope_30d"], strict=True)
    ]
    return frame[TREND_COLUMNS].sort_values("account_id").reset_index(drop=True)


def compared_dates(
    dates: list[date], as_of: date, settings: TrendConfig
) -> ComparedDates:
    """Pick the dates that the trend as of `as_of` compares, as `compute_trends` does.

    `dates` are the stored dates; those after `as_of` are ignored.
    """
    known = sorted(day for day in dates if day <= as_of)
    tolerance = _half_step(known)
    earlier_dates = [day for day in known if day < as_of]
    bases = {
        days: _base_date(earlier_dates, as_of - timedelta(days=days), tolerance)
        for days in CHANGE_DAYS
    }
    return ComparedDates(bases=bases, slope=known[-settings.slope_snapshots :])


def scorecards_compared(
    store: SnapshotStore,
    history: pd.DataFrame,
    account: str,
    as_of: date,
    settings: TrendConfig,
) -> list[ScoredUnder]:
    """Group the dates that the account's trend compares by the scorecard behind them.

    The scorecard of a date is the one that scored the account, with its version
    from the date's run.json (see `healthscore.pipeline.scorecard_versions`), which
    changes with the scorecard, the metrics it reads and the bands. More than one
    group means that part of the trend comes from a change of those settings.
    A date whose run.json records no version, as in snapshots stored before
    versions were recorded, joins the one known version of its scorecard, or
    forms a group of its own when there are several.

    Parameters
    ----------
    store : SnapshotStore
        Snapshots that `history` was read from.
    history : DataFrame
        `score_history(store)`.
    account : str
        Account id.
    as_of : date
        The trend's date.
    settings : TrendConfig
        Number of snapshots of the slope.
    """
    stored = history[history["as_of"] <= as_of]
    own = stored[(stored["account_id"] == account) & stored["score"].notna()]
    scorecards = dict(zip(own["as_of"], own["scorecard"], strict=True))
    compared = compared_dates(sorted(set(stored["as_of"])), as_of, settings)
    groups: dict[tuple[str, str | None], list[date]] = {}
    for day in compared.all():
        if day in scorecards:
            name = str(scorecards[day])
            version = store.run_info(day).get("scorecard_versions", {}).get(name)
            groups.setdefault((name, version), []).append(day)
    for name, version in list(groups):
        known = [key for key in groups if key[0] == name and key[1] is not None]
        if version is None and len(known) == 1:
            groups[known[0]] = sorted(groups[known[0]] + groups.pop((name, None)))
    ordered = sorted(groups.items(), key=lambda item: item[1][0])
    return [ScoredUnder(name, version, days) for (name, version), days in ordered]


def trend_arrow(change_30d: float, slope_30d: float, threshold: float) -> str:
    """Return the arrow of one account: up, down or flat (see the module docstring)."""
    if np.isnan(change_30d) or np.isnan(slope_30d):
        return "flat"
    if change_30d >= threshold and slope_30d > 0:
        return "up"
    if change_30d <= -threshold and slope_30d < 0:
        return "down"
    return "flat"


def _half_step(dates: list[date]) -> timedelta:
    """Half the median gap between stored dates (zero with one date)."""
    if len(dates) < 2:
        return timedelta(0)
    gaps = np.diff([day.toordinal() for day in dates])
    return timedelta(days=float(np.median(gaps)) / 2)


def _base_date(dates: list[date], target: date, tolerance: timedelta) -> date | None:
    """Return the date nearest to `target` within `tolerance`, the earlier on a tie."""
    close = [day for day in dates if abs(day - target) <= tolerance]
    if not close:
        return None
    return min(close, key=lambda day: (abs(day - target), day))


def _slopes(scores: pd.DataFrame) -> np.ndarray:
    """Least-squares slope, in points per day, of each column against its dates."""
    days = np.array([day.toordinal() for day in scores.index], dtype="float64")
    values = scores.to_numpy("float64")
    present = ~np.isnan(values)
    count = present.sum(axis=0)
    x = np.where(present, days[:, None], 0.0)
    y = np.where(present, values, 0.0)
    with np.errstate(divide="ignore", invalid="ignore"):
        mean_x = x.sum(axis=0) / count
        mean_y = y.sum(axis=0) / count
        dx = np.where(present, days[:, None] - mean_x, 0.0)
        dy = np.where(present, values - mean_y, 0.0)
        slope = (dx * dy).sum(axis=0) / (dx * dx).sum(axis=0)
    return np.where(count >= 2, slope, np.nan)
