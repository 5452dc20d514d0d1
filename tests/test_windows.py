"""Window edges: no window reads a row stamped at the as-of point or later."""

from __future__ import annotations

from datetime import date

import pytest

from healthscore.engine import Engine
from healthscore.metrics import compute_metrics
from healthscore.monitoring.backfill import sweep_metrics
from project_factory import ACCOUNTS_CSV, minimal_config, write_project

# a1 has rows dated by day only, so each is stamped at midnight, and one at noon.
EVENTS = """account_id,timestamp
a1,2024-03-08
a1,2024-03-09
a1,2024-03-10
a1,2024-03-10 12:00:00
a1,2024-03-11
"""


def _count(window: object = None) -> dict[str, object]:
    metric: dict[str, object] = {"type": "count", "source": "events"}
    if window is not None:
        metric["window"] = window
    return metric


METRICS = {
    "left_2d": _count("2d"),
    "right_2d": _count({"length": "2d", "closed": "right"}),
    "right_1d": _count({"length": "1d", "closed": "right"}),
    "right_1d_change": {"type": "change", "of": "right_1d", "mode": "difference"},
    "ever": _count(),
}

EXPECTED = {
    # Point 2024-03-10 00:00: the rows of 03-10 and later are never read.
    # left [03-08, 03-10): 03-08, 03-09; right (03-08, 03-10): 03-09;
    # right (03-09, 03-10): none; no window: 03-08, 03-09. The earlier window of
    # right_1d, (03-08, 03-09], ends before the point, so it keeps its end: 03-09.
    "start_of_day": {
        "left_2d": 2,
        "right_2d": 1,
        "right_1d": 0,
        "right_1d_change": -1,
        "ever": 2,
    },
    # Point 2024-03-11 00:00: the row of 03-11 is never read.
    # left [03-09, 03-11): 03-09, 03-10, 03-10 12:00; right (03-09, 03-11):
    # 03-10, 03-10 12:00; right (03-10, 03-11): 03-10 12:00; no window: 4 rows.
    # The earlier window of right_1d, (03-09, 03-10], has 03-10.
    "end_of_day": {
        "left_2d": 3,
        "right_2d": 2,
        "right_1d": 1,
        "right_1d_change": 0,
        "ever": 4,
    },
}


def _project(root, as_of_point):
    config = minimal_config(metrics=METRICS, as_of_point=as_of_point)
    config["scorecards"][0]["components"]["usage"]["measures"][0]["metric"] = "ever"
    files = {"accounts.csv": ACCOUNTS_CSV, "events.csv": EVENTS}
    return write_project(root, config, files)


@pytest.mark.parametrize("as_of_point", sorted(EXPECTED))
def test_windows_leave_out_point_and_later(tmp_path, as_of_point):
    project = _project(tmp_path, as_of_point)
    engine = Engine.open(project)
    values = compute_metrics(project, engine.sources, date(2024, 3, 10)).values
    assert values.loc["a1"].to_dict() == EXPECTED[as_of_point]


@pytest.mark.parametrize("as_of_point", sorted(EXPECTED))
def test_swept_windows_leave_out_point_and_later(tmp_path, as_of_point):
    project = _project(tmp_path, as_of_point)
    engine = Engine.open(project)
    dates = [date(2024, 3, day) for day in range(7, 14)]
    tables = sweep_metrics(project, engine.sources, dates)
    swept = {table.as_of: table for table in tables}
    assert swept[date(2024, 3, 10)].values.loc["a1"].to_dict() == EXPECTED[as_of_point]
    for day in dates:
        expected = compute_metrics(project, engine.sources, day).values
        assert swept[day].values.to_dict() == expected.to_dict(), day
