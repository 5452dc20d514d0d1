"""Change metrics over every windowed metric type, per date and in a backfill sweep."""

from __future__ import annotations

import math
from datetime import date

import numpy as np
import pytest

from healthscore.config.models import parse_duration
from healthscore.engine import Engine
from healthscore.metrics import compute_metrics
from healthscore.monitoring.backfill import backfill_dates, sweep_metrics
from project_factory import ACCOUNTS_CSV, minimal_config, write_project

AS_OF = date(2024, 4, 1)

# As of 2024-04-01 a 28-day window is [03-04, 04-01), the window before it
# [02-05, 03-04). A 1-month window is [03-01, 04-01) (31 days), the month before
# [02-01, 03-01) (29 days, 2024 is a leap year).
EVENTS = """account_id,timestamp,event_type,user,value
a1,2024-02-10 09:00:00,login,u1,7
a1,2024-03-04 00:00:00,login,u1,2
a1,2024-03-20 10:00:00,report,u1,5
a1,2024-03-31 23:59:00,login,u2,3
a2,2024-03-01 12:00:00,login,u9,6
a2,2024-03-10 12:00:00,login,u9,4
"""

# a1: one run since 2024-01-01, so 91 days on 04-01 and 63 days on 03-04.
# a2: since 2024-02-20, so 41 days on 04-01 and 13 days on 03-04.
# a3: ended on 03-01, so inactive on both dates.
SUBSCRIPTIONS = """account_id,start,end
a1,2024-01-01,
a2,2024-02-20,
a3,2024-01-01,2024-03-01
"""

LOGIN = "event_type == 'login'"


def _rate(**settings: object) -> dict[str, object]:
    return {"type": "rate", "source": "events", "where": LOGIN, **settings}


def _windowed(kind: str, **settings: object) -> dict[str, object]:
    return {"type": kind, "source": "events", "window": "28d", **settings}


METRICS: dict[str, dict[str, object]] = {
    "tenure": {"type": "tenure", "source": "subscriptions"},
    "rw": _rate(window="28d", per="7d"),
    "rwc": {"type": "change", "of": "rw"},
    "rwd": {"type": "change", "of": "rw", "mode": "difference"},
    "rm": _rate(window="1mo", per="7d"),
    "rmc": {"type": "change", "of": "rm"},
    "rt": _rate(window="28d", per="28d", exposure="tenure"),
    "rtc": {"type": "change", "of": "rt"},
    "rtd": {"type": "change", "of": "rt", "mode": "difference"},
    "rtm": _rate(window="28d", per="28d", exposure="tenure", min_tenure="14d"),
    "rtmd": {"type": "change", "of": "rtm", "mode": "difference"},
    "logins": _windowed("count", where=LOGIN),
    "logins_c": {"type": "change", "of": "logins"},
    "users": _windowed("distinct_count", column="user"),
    "users_d": {"type": "change", "of": "users", "mode": "difference"},
    "value_sum": _windowed("sum", column="value"),
    "value_sum_d": {"type": "change", "of": "value_sum", "mode": "difference"},
    "value_mean": _windowed("mean", column="value"),
    "value_mean_d": {"type": "change", "of": "value_mean", "mode": "difference"},
    "value_min": _windowed("min", column="value"),
    "value_min_d": {"type": "change", "of": "value_min", "mode": "difference"},
    "value_max": _windowed("max", column="value"),
    "value_max_c": {"type": "change", "of": "value_max"},
}

NAN = math.nan

EXPECTED = {
    # Logins per 7 days: a1 2 now, 1 before; a2 1 now (03-10), 1 before (03-01).
    "rw": (2 * 7 / 28, 1 * 7 / 28, 0),
    "rwc": ((2 * 7 / 28) / (1 * 7 / 28) - 1, 0, NAN),
    "rwd": (2 * 7 / 28 - 1 * 7 / 28, 0, 0),
    # a1: 2 logins in the 31 days of March, 1 in the 29 days of February; a2 2 and 0.
    "rm": (2 * 7 / 31, 2 * 7 / 31, 0),
    "rmc": ((2 * 7 / 31) / (1 * 7 / 29) - 1, NAN, NAN),
    # Exposure min(28, tenure): a1 28 days on both dates; a2 28 days now and
    # 13 days in the window before; a3 is inactive.
    "rt": (2 * 28 / 28, 1 * 28 / 28, NAN),
    "rtc": ((2 * 28 / 28) / (1 * 28 / 28) - 1, (1 * 28 / 28) / (1 * 28 / 13) - 1, NAN),
    "rtd": (2 - 1, 1 - 28 / 13, NAN),
    # With a minimum tenure of 14 days a2 has no rate before (13 days).
    "rtm": (2, 1, NAN),
    "rtmd": (2 - 1, NAN, NAN),
    "logins_c": (2 / 1 - 1, 1 / 1 - 1, NAN),
    # a1 u1 and u2 now, u1 before; a2 u9 in both.
    "users_d": (2 - 1, 1 - 1, 0),
    # a1 values 2, 5, 3 now and 7 before; a2 4 now and 6 before.
    "value_sum_d": (10 - 7, 4 - 6, 0),
    "value_mean_d": (10 / 3 - 7, 4 - 6, NAN),
    "value_min_d": (2 - 7, 4 - 6, NAN),
    "value_max_c": (5 / 7 - 1, 4 / 6 - 1, NAN),
}


@pytest.fixture(scope="module")
def project(tmp_path_factory):
    config = minimal_config(metrics=METRICS)
    config["sources"]["subscriptions"] = {
        "kind": "subscriptions",
        "path": "subscriptions.csv",
    }
    config["scoring"] = {"population": "all"}
    config["scorecards"][0]["components"]["usage"]["measures"][0]["metric"] = "rw"
    files = {
        "accounts.csv": ACCOUNTS_CSV,
        "events.csv": EVENTS,
        "subscriptions.csv": SUBSCRIPTIONS,
    }
    return write_project(tmp_path_factory.mktemp("change"), config, files)


@pytest.fixture(scope="module")
def engine(project):
    return Engine.open(project)


@pytest.mark.parametrize("metric", sorted(EXPECTED))
def test_change_matches_hand_computed_value(project, engine, metric):
    values = compute_metrics(project, engine.sources, AS_OF).values
    actual = values.loc[["a1", "a2", "a3"], metric].astype(float).to_numpy()
    np.testing.assert_allclose(actual, EXPECTED[metric], rtol=1e-12, equal_nan=True)


@pytest.mark.parametrize("metric", sorted(EXPECTED))
def test_swept_change_matches_hand_computed_value(project, engine, metric):
    dates = [date(2024, 3, 18), AS_OF]
    table = list(sweep_metrics(project, engine.sources, dates))[-1]
    assert table.as_of == AS_OF
    actual = table.values.loc[["a1", "a2", "a3"], metric].astype(float).to_numpy()
    np.testing.assert_allclose(actual, EXPECTED[metric], rtol=1e-12, equal_nan=True)


def test_swept_changes_equal_compute_metrics(project, engine):
    dates = backfill_dates(date(2024, 2, 1), date(2024, 4, 20), parse_duration("3d"))
    for table in sweep_metrics(project, engine.sources, dates):
        expected = compute_metrics(project, engine.sources, table.as_of).values
        for name in METRICS:
            np.testing.assert_allclose(
                table.values[name].astype(float).to_numpy(),
                expected[name].astype(float).to_numpy(),
                rtol=1e-12,
                equal_nan=True,
                err_msg=f"{name} as of {table.as_of}",
            )
