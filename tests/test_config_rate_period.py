"""A rate's `per` counts a month as 30 days, and a 1mo window is a calendar month.

As of 2024-03-01 (start of day) a 1mo window is February 2024, which has 29 days. A
rate per 1mo scales the window's count by 30 / 29, the same as a rate per 30d.
"""

from __future__ import annotations

from datetime import date
from pathlib import Path

import pytest

from healthscore.pipeline import score
from project_factory import ACCOUNTS_CSV, minimal_config, write_project

# Two events in February 2024 and one on 2024-01-31, outside a 1mo window.
EVENTS = """account_id,timestamp
a1,2024-01-31 12:00:00
a1,2024-02-01 00:00:00
a1,2024-02-29 23:00:00
"""


def test_rate_per_month_is_30_days(tmp_path: Path) -> None:
    metrics = {
        "per_month": {"type": "rate", "source": "events", "window": "1mo",
                      "per": "1mo"},
        "per_30d": {"type": "rate", "source": "events", "window": "1mo",
                    "per": "30d"},
        "count_month": {"type": "count", "source": "events", "window": "1mo"},
    }  # fmt: skip
    config = minimal_config(metrics=metrics)
    measure = config["scorecards"][0]["components"]["usage"]["measures"][0]
    measure["metric"] = "per_month"
    project = write_project(
        tmp_path, config, {"accounts.csv": ACCOUNTS_CSV, "events.csv": EVENTS}
    )

    values = score(project, date(2024, 3, 1), store=False).metrics.values

    assert values.loc["a1", "count_month"] == 2
    assert values.loc["a1", "per_month"] == pytest.approx(2 * 30 / 29)
    assert values.loc["a1", "per_30d"] == pytest.approx(2 * 30 / 29)
