"""Metric definitions at their edges, with values computed by hand.

- `change` in percent over a negative earlier value, on DuckDB and Spark.
- Tenure and the tenure exposure of `rate` with `as_of_point: end_of_day`, on one
  date and in the backfill sweep.
- `healthscore metrics --output` writes `value_text` even without text values.
"""

from __future__ import annotations

import math
from datetime import date
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from typer.testing import CliRunner

from healthscore.cli import app
from healthscore.config import Project
from healthscore.engine import Engine
from healthscore.metrics import compute_metrics
from healthscore.monitoring.backfill import sweep_metrics
from project_factory import minimal_config, write_project
from test_spark import pytestmark as spark_warnings
from test_spark import spark  # noqa: F401 (the module's Spark session fixture)

# PySpark's warnings, which test_spark ignores for the same session.
pytestmark = spark_warnings

AS_OF = date(2024, 3, 12)

ACCOUNTS = """account_id,name,segment,owner,arr
a1,Acme,enterprise,alice,1000
a2,Globex,smb,bob,2000
a3,Initech,smb,bob,3000
a4,Umbrella,smb,carol,4000
a5,Hooli,smb,carol,5000
"""

# As of 2024-03-12 00:00 the current 7-day window is [03-05, 03-12) and the earlier
# one [02-27, 03-05).
SIGNED_EVENTS = """account_id,timestamp,value
a1,2024-03-01 10:00:00,-4
a1,2024-03-10 10:00:00,2
a2,2024-03-01 10:00:00,-2
a2,2024-03-10 10:00:00,-3
a3,2024-03-01 10:00:00,4
a3,2024-03-10 10:00:00,5
a4,2024-03-10 10:00:00,3
a5,2024-03-01 10:00:00,-0.5
"""

SIGNED_METRICS = {
    "value_sum": {"type": "sum", "source": "events", "column": "value", "window": "7d"},
    "value_change": {"type": "change", "of": "value_sum"},
    "value_difference": {"type": "change", "of": "value_sum", "mode": "difference"},
}


def signed_project(root: Path, engine: str) -> Project:
    metrics = minimal_config()["metrics"] | SIGNED_METRICS
    config = minimal_config(engine=engine, metrics=metrics)
    files = {"accounts.csv": ACCOUNTS, "events.csv": SIGNED_EVENTS}
    return write_project(root, config, files)


def test_percent_change_of_negative_base(tmp_path, spark):  # noqa: F811
    # (current - previous) / |previous|, missing when previous is 0:
    # a1 (2 - -4) / 4 = 1.5, a rise; a2 (-3 - -2) / 2 = -0.5, a fall;
    # a3 (5 - 4) / 4 = 0.25; a4 previous 0 (no rows) -> missing;
    # a5 (0 - -0.5) / 0.5 = 1.0 (no current rows, so the sum is 0).
    expected = pd.Series(
        [1.5, -0.5, 0.25, math.nan, 1.0],
        index=pd.Index(["a1", "a2", "a3", "a4", "a5"], name="account_id"),
        name="value_change",
    )
    differences = [6.0, -1.0, 1.0, 3.0, 0.5]
    for kind in ("duckdb", "spark"):
        project = signed_project(tmp_path / kind, kind)
        engine = Engine.open(project, spark=spark if kind == "spark" else None)
        values = compute_metrics(project, engine.sources, AS_OF).values
        changes = values["value_change"].astype("float64")
        pd.testing.assert_series_equal(changes, expected, obj=kind)
        assert list(values["value_difference"]) == differences, kind


def test_percent_change_of_negative_base_in_sweep(tmp_path):
    project = signed_project(tmp_path, "duckdb")
    engine = Engine.open(project)
    table = next(sweep_metrics(project, engine.sources, [AS_OF]))
    changes = table.values["value_change"].astype("float64")
    assert changes["a1"] == 1.5
    assert changes["a2"] == -0.5
    assert changes["a3"] == 0.25
    assert math.isnan(changes["a4"])
    assert changes["a5"] == 1.0


# h1: earlier sum 1e-300, current 1e10. h2: current 1e308 + 1e308, which is
# infinite in float64, earlier 1. h3: earlier -1e308, current 1e308.
HUGE_EVENTS = """account_id,timestamp,value
h1,2024-03-01 10:00:00,1e-300
h1,2024-03-10 10:00:00,1e10
h2,2024-03-01 10:00:00,1
h2,2024-03-10 10:00:00,1e308
h2,2024-03-11 10:00:00,1e308
h3,2024-03-01 10:00:00,-1e308
h3,2024-03-10 10:00:00,1e308
"""


def test_change_beyond_float64_is_missing(tmp_path):
    metrics = minimal_config()["metrics"] | SIGNED_METRICS
    accounts = "account_id,name\nh1,H1\nh2,H2\nh3,H3\n"
    files = {"accounts.csv": accounts, "events.csv": HUGE_EVENTS}
    project = write_project(tmp_path, minimal_config(metrics=metrics), files)
    values = compute_metrics(project, Engine.open(project).sources, AS_OF).values
    # h1: 1e10 / 1e-300 - 1 = 1e310 is beyond float64; the difference is finite.
    assert math.isnan(values.loc["h1", "value_change"])
    assert values.loc["h1", "value_difference"] == 1e10
    # h2: an infinite current sum gives no change in either mode.
    assert values.loc["h2", "value_sum"] == math.inf
    assert math.isnan(values.loc["h2", "value_change"])
    assert math.isnan(values.loc["h2", "value_difference"])
    # h3: (1e308 - -1e308) / 1e308 = 2, although 1e308 - -1e308 overflows.
    assert values.loc["h3", "value_change"] == 2.0
    assert math.isnan(values.loc["h3", "value_difference"])


# a1's subscription starts on the as-of date, a2's eleven days before it.
SUBSCRIPTIONS = """account_id,start,end
a1,2024-03-12,
a2,2024-03-01,
"""

# a2 has one event in the earlier window of the 7-day rate and three in the current
# one. a1 has two on the as-of date, which only `end_of_day` sees.
TENURE_EVENTS = """account_id,timestamp,event_type
a1,2024-03-12 10:00:00,login
a1,2024-03-12 11:00:00,login
a2,2024-03-03 10:00:00,login
a2,2024-03-07 10:00:00,login
a2,2024-03-09 10:00:00,login
a2,2024-03-11 10:00:00,login
"""

TENURE_METRICS = {
    "tenure": {"type": "tenure", "source": "subscriptions"},
    "login_rate": {
        "type": "rate",
        "source": "events",
        "window": "7d",
        "per": "7d",
        "exposure": "tenure",
    },
    "rate_change": {"type": "change", "of": "login_rate"},
    "first_export": {
        "type": "days_to_milestone",
        "source": "events",
        "where": "event_type == 'export'",
    },
}


def tenure_project(root: Path, as_of_point: str) -> Project:
    sources: dict[str, Any] = minimal_config()["sources"]
    sources["subscriptions"] = {"kind": "subscriptions", "path": "subscriptions.csv"}
    metrics = minimal_config()["metrics"] | TENURE_METRICS
    config = minimal_config(metrics=metrics, sources=sources, as_of_point=as_of_point)
    files = {
        "accounts.csv": ACCOUNTS,
        "events.csv": TENURE_EVENTS,
        "subscriptions.csv": SUBSCRIPTIONS,
    }
    return write_project(root, config, files)


def tenure_values(project: Project) -> list[pd.DataFrame]:
    """The values as of AS_OF, from compute_metrics and from the backfill sweep."""
    engine = Engine.open(project)
    single = compute_metrics(project, engine.sources, AS_OF).values
    swept = next(sweep_metrics(project, engine.sources, [AS_OF])).values
    return [single, swept]


def test_tenure_counts_to_end_of_day_point(tmp_path):
    project = tenure_project(tmp_path, "end_of_day")
    for values in tenure_values(project):
        # The point is 03-13 00:00, so day 03-12 is seen: a1 has 1 day of tenure,
        # as many as the days elapsed without a milestone, and a2 has 12.
        assert values.loc["a1", "tenure"] == 1
        assert values.loc["a1", "first_export"] == 1
        assert values.loc["a2", "tenure"] == 12
        assert values.loc["a2", "first_export"] == 12
        # Window [03-06, 03-13): a1 2 logins over min(7, 1) days, a2 3 over 7.
        assert values.loc["a1", "login_rate"] == 2 * 7 / 1
        assert values.loc["a2", "login_rate"] == 3 * 7 / 7
        # Earlier window [02-28, 03-06) ends at the point of 03-05, where a2's
        # tenure is 5 days: 1 login * 7 / 5. a1 has no tenure then.
        assert values.loc["a2", "rate_change"] == pytest.approx(3 / (7 / 5) - 1)
        assert math.isnan(values.loc["a1", "rate_change"])


def test_tenure_at_start_of_day_point(tmp_path):
    project = tenure_project(tmp_path, "start_of_day")
    for values in tenure_values(project):
        # The point is 03-12 00:00: a1's first day has not begun, so it has no
        # exposure and no rate.
        assert values.loc["a1", "tenure"] == 0
        assert values.loc["a1", "first_export"] == 0
        assert math.isnan(values.loc["a1", "login_rate"])
        assert values.loc["a2", "tenure"] == 11
        # Window [03-05, 03-12): 3 logins over 7 days. Earlier window
        # [02-27, 03-05) ends at the point of 03-05, where a2's tenure is 4 days.
        assert values.loc["a2", "login_rate"] == 3
        assert values.loc["a2", "rate_change"] == pytest.approx(3 / (7 / 4) - 1)


@pytest.mark.parametrize("suffix", [".csv", ".parquet"])
def test_metrics_output_always_has_value_text(tmp_path, suffix):
    project = signed_project(tmp_path / "project", "duckdb")
    path = tmp_path / f"metrics{suffix}"
    arguments = ["metrics", "--project", str(project.root), "--as-of", "2024-03-12"]

    result = CliRunner().invoke(app, [*arguments, "--output", str(path)])

    assert result.exit_code == 0, result.output
    frame = pd.read_csv(path) if suffix == ".csv" else pd.read_parquet(path)
    assert list(frame.columns) == ["account_id", "metric", "value", "value_text"]
    assert frame["value_text"].isna().all()
    assert len(frame) == 5 * len(project.config.metrics)
