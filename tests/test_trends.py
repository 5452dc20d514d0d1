"""Trends: hand-computed changes and slopes, and the arrow rule at its edges."""

from __future__ import annotations

from datetime import date, timedelta
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from healthscore.config.history import TrendConfig
from healthscore.monitoring.history import score_history
from healthscore.monitoring.trends import (
    ScoredUnder,
    compared_dates,
    compute_trends,
    scorecards_compared,
    trend_arrow,
)
from healthscore.store.snapshots import SnapshotNotFoundError, SnapshotStore

START = date(2024, 1, 1)
NAN = float("nan")


def _store(
    folder: Path,
    series: dict[str, list[float]],
    step: int = 7,
    versions: list[dict[str, str]] | None = None,
    scorecards: dict[str, list[str]] | None = None,
) -> SnapshotStore:
    """A store with one snapshot every `step` days; series[i] is the i-th score.

    `versions[i]` is the i-th run.json's `scorecard_versions`, and
    `scorecards[account][i]` the scorecard of the account's i-th score
    ("default" when not given).
    """
    store = SnapshotStore(folder)
    length = len(next(iter(series.values())))
    for index in range(length):
        as_of = START + timedelta(days=step * index)
        scores = pd.DataFrame(
            {
                "account_id": list(series),
                "as_of": [as_of] * len(series),
                "score": [values[index] for values in series.values()],
                "band": ["stable"] * len(series),
                "scorecard": [
                    (scorecards or {}).get(account, ["default"] * length)[index]
                    for account in series
                ],
            }
        )
        info = {} if versions is None else {"scorecard_versions": versions[index]}
        store.write(as_of, {"scores": scores}, info)
    return store


def _row(trends: pd.DataFrame, account: str) -> pd.Series:
    return trends.set_index("account_id").loc[account]


def test_changes_against_nearest_snapshots(tmp_path: Path) -> None:
    # Weekly scores 50, 52, ..., 76 over 14 weeks; as of week 13 (day 91).
    store = _store(tmp_path, {"a": [50 + 2 * i for i in range(14)]})
    as_of = START + timedelta(days=91)
    row = _row(compute_trends(store, as_of, TrendConfig()), "a")
    assert row["score"] == 76
    assert row["change_7d"] == 2  # day 84 scored 74
    # Day 61 is wanted: day 63 (score 68) is 2 days off, within half a week, while
    # day 56 is 5 days off.
    assert row["change_30d"] == 8
    # Day 1 is wanted; day 0 (score 50) is 1 day off.
    assert row["change_90d"] == 26


def test_change_tie_takes_earlier_snapshot(tmp_path: Path) -> None:
    # Snapshots every 4 days (tolerance 2); as of day 16, 7 days back is day 9,
    # 1 day from both day 8 (score 30) and day 12 (score 40).
    store = _store(tmp_path, {"a": [10, 20, 30, 40, 50]}, step=4)
    row = _row(compute_trends(store, START + timedelta(days=16), TrendConfig()), "a")
    assert row["change_7d"] == 20


def test_change_missing_without_close_snapshot(tmp_path: Path) -> None:
    store = _store(tmp_path, {"a": [50, 60, 70]}, step=7)
    row = _row(compute_trends(store, START + timedelta(days=14), TrendConfig()), "a")
    assert row["change_7d"] == 10
    assert np.isnan(row["change_30d"])
    assert np.isnan(row["change_90d"])
    assert row["arrow"] == "flat"


def test_change_never_compares_date_with_itself(tmp_path: Path) -> None:
    # Snapshots 30 days apart (tolerance 15): 7 days back from day 60 is day 53,
    # and the only snapshot within 15 days of it is day 60 itself.
    store = _store(tmp_path, {"a": [40, 55, 70]}, step=30)
    row = _row(compute_trends(store, START + timedelta(days=60), TrendConfig()), "a")
    assert np.isnan(row["change_7d"])
    assert row["change_30d"] == 15
    # Day -30 is wanted, and day 0 is 30 days off.
    assert np.isnan(row["change_90d"])


def test_slope_least_squares(tmp_path: Path) -> None:
    # Last four snapshots at days 7, 14, 21, 28 with scores 60, 58, 64, 66:
    # mean day 17.5, mean score 62; sum dx*dy = (-10.5)(-2) + (-3.5)(-4) + 3.5*2
    # + 10.5*4 = 84; sum dx^2 = 245; slope 84/245 per day = 10.2857 per 30 days.
    store = _store(tmp_path, {"a": [10, 60, 58, 64, 66]})
    trends = compute_trends(store, START + timedelta(days=28), TrendConfig())
    assert _row(trends, "a")["slope_30d"] == pytest.approx(84 / 245 * 30)


def test_slope_uses_configured_snapshots(tmp_path: Path) -> None:
    store = _store(tmp_path, {"a": [10, 60, 58, 64, 66]})
    settings = TrendConfig(slope_snapshots=2)
    trends = compute_trends(store, START + timedelta(days=28), settings)
    assert _row(trends, "a")["slope_30d"] == pytest.approx(2 / 7 * 30)


@pytest.mark.parametrize(
    ("change", "slope", "arrow"),
    [
        (5.0, 1.0, "up"),
        (4.999, 1.0, "flat"),
        (5.0, -1.0, "flat"),
        (-5.0, -0.5, "down"),
        (-4.999, -0.5, "flat"),
        (-5.0, 0.5, "flat"),
        (12.0, 0.0, "flat"),
        (float("nan"), 3.0, "flat"),
    ],
)
def test_arrow_rule_edges(change: float, slope: float, arrow: str) -> None:
    assert trend_arrow(change, slope, 5.0) == arrow


def test_noise_below_threshold_is_flat(tmp_path: Path) -> None:
    generator = np.random.default_rng(3)
    noisy = {f"n{i}": list(60 + generator.uniform(-2.4, 2.4, 10)) for i in range(30)}
    store = _store(tmp_path, noisy)
    trends = compute_trends(store, START + timedelta(days=63), TrendConfig())
    assert (trends["change_30d"].abs() < 5).all()
    assert set(trends["arrow"]) == {"flat"}


def test_threshold_setting_moves_arrow(tmp_path: Path) -> None:
    store = _store(tmp_path, {"a": [50, 52, 54, 56, 58, 60]})
    as_of = START + timedelta(days=35)
    assert _row(compute_trends(store, as_of, TrendConfig()), "a")["arrow"] == "up"
    strict = TrendConfig(threshold=9)
    assert _row(compute_trends(store, as_of, strict), "a")["arrow"] == "flat"


def test_trends_need_snapshot_of_date(tmp_path: Path) -> None:
    store = _store(tmp_path, {"a": [50, 52]})
    with pytest.raises(SnapshotNotFoundError, match="no snapshot for 2024-01-03"):
        compute_trends(store, date(2024, 1, 3), TrendConfig())


def _day(days: int) -> date:
    return START + timedelta(days=days)


def test_compared_dates_of_weekly_snapshots() -> None:
    # 14 weekly dates, as of day 91: 7 days back is day 84; 30 days back is day 61,
    # nearest day 63; 90 days back is day 1, nearest day 0. The slope reads the
    # last 4 dates.
    dates = [_day(7 * index) for index in range(14)]

    compared = compared_dates(dates, _day(91), TrendConfig())

    assert compared.bases == {7: _day(84), 30: _day(63), 90: _day(0)}
    assert compared.slope == [_day(70), _day(77), _day(84), _day(91)]
    assert compared.all() == [_day(0), _day(63), _day(70), _day(77), _day(84), _day(91)]


def test_compared_dates_ignore_later_dates() -> None:
    dates = [_day(7 * index) for index in range(6)]

    compared = compared_dates(dates, _day(14), TrendConfig())

    assert compared.bases == {7: _day(7), 30: None, 90: None}
    assert compared.slope == [_day(0), _day(7), _day(14)]


def _groups(store: SnapshotStore, account: str, as_of: date) -> list[ScoredUnder]:
    history = score_history(store)
    return scorecards_compared(store, history, account, as_of, TrendConfig())


def test_scorecards_compared_one_version(tmp_path: Path) -> None:
    versions = [{"default": "v1"}] * 6
    store = _store(tmp_path, {"a": [50, 52, 54, 56, 58, 60]}, versions=versions)

    groups = _groups(store, "a", _day(35))

    # As of day 35: day 28 (7d), day 7 (30d: day 5 wanted) and days 14 to 35.
    assert groups == [
        ScoredUnder("default", "v1", [_day(7), _day(14), _day(21), _day(28), _day(35)])
    ]


def test_scorecards_compared_version_change(tmp_path: Path) -> None:
    versions = [{"default": "v1"}] * 4 + [{"default": "v2"}] * 2
    store = _store(tmp_path, {"a": [50, 52, 54, 56, 30, 32]}, versions=versions)

    groups = _groups(store, "a", _day(35))

    assert groups == [
        ScoredUnder("default", "v1", [_day(7), _day(14), _day(21)]),
        ScoredUnder("default", "v2", [_day(28), _day(35)]),
    ]


def test_scorecards_compared_scorecard_change(tmp_path: Path) -> None:
    # Account a moves from scorecard small to default on day 21; b stays on default,
    # whose version does not change.
    versions = [{"default": "d1", "small": "s1"}] * 4
    scorecards = {"a": ["small", "small", "small", "default"]}
    series = {"a": [40, 42, 44, 70], "b": [60, 60, 60, 60]}
    store = _store(tmp_path, series, versions=versions, scorecards=scorecards)

    assert _groups(store, "a", _day(21)) == [
        ScoredUnder("small", "s1", [_day(0), _day(7), _day(14)]),
        ScoredUnder("default", "d1", [_day(21)]),
    ]
    assert _groups(store, "b", _day(21)) == [
        ScoredUnder("default", "d1", [_day(0), _day(7), _day(14), _day(21)])
    ]


def test_scorecards_compared_without_versions(tmp_path: Path) -> None:
    # Snapshots stored without scorecard_versions join the one known version.
    versions = [{}, {}, {"default": "v1"}, {"default": "v1"}]
    store = _store(tmp_path, {"a": [50, 52, 54, 56]}, versions=versions)

    assert _groups(store, "a", _day(21)) == [
        ScoredUnder("default", "v1", [_day(0), _day(7), _day(14), _day(21)])
    ]


def test_scorecards_compared_skip_unscored_dates(tmp_path: Path) -> None:
    # Account a has no score on day 7, so that date's version does not count.
    versions = [{"default": "v1"}, {"default": "v2"}, {"default": "v3"}]
    store = _store(tmp_path, {"a": [50, NAN, 54], "b": [1, 2, 3]}, versions=versions)

    assert _groups(store, "a", _day(14)) == [
        ScoredUnder("default", "v1", [_day(0)]),
        ScoredUnder("default", "v3", [_day(14)]),
    ]
