"""Warnings of `score --as-of` and `backfill` about windows that reach purged days.

The store source `usage` has one row per account and day from 2026-01-01 to
2026-03-01. `retain` with today 2026-03-01 and `raw_events: 20d` purges the raw days
before 2026-02-09, so 2026-01-01 to 2026-02-08 keep only their daily rollup. As of
date D (00:00, `start_of_day`) the metrics read:

- raw_7d, a count of raw rows: [D - 7d, D)
- users_14d, a distinct count of raw rows: [D - 14d, D)
- raw_change, a change of raw_7d: [D - 14d, D), its window and the one before
- raw_share, a ratio of raw_7d to rows_28d, is computed from raw_7d
- rows_28d, a sum of `rows` on the rollup `usage_daily`, which stays exact

So as of 2026-02-12 the raw windows reach the purged days 2026-01-29 to 2026-02-08
(11 days). As of 2026-02-22 they reach 2026-02-08 alone, and as of 2026-02-23 no
purged day.
"""

from __future__ import annotations

import json
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from typer.testing import CliRunner, Result

from healthscore.cli import app
from healthscore.config import Project
from healthscore.monitoring.coverage import find_purged_windows
from healthscore.pipeline import snapshot_store
from healthscore.privacy.retention import retain
from healthscore.sources.ingest import event_store
from project_factory import ACCOUNTS_CSV, write_project

FIRST_DAY = date(2026, 1, 1)
TODAY = date(2026, 3, 1)
LAST_PURGED = date(2026, 2, 8)

RAW_METRICS = {
    "raw_7d": {"type": "count", "source": "usage", "window": "7d"},
    "users_14d": {
        "type": "distinct_count",
        "source": "usage",
        "column": "user",
        "window": "14d",
    },
    "raw_change": {"type": "change", "of": "raw_7d", "mode": "difference"},
}
ROLLUP_METRICS = {
    "rows_28d": {
        "type": "sum",
        "source": "usage_daily",
        "column": "rows",
        "window": "28d",
    },
}
RATIO_METRIC = {
    "raw_share": {"type": "ratio", "numerator": "raw_7d", "denominator": "rows_28d"}
}


def usage_rows() -> pd.DataFrame:
    """One row of a1 per day at 10:00, and one of a2 every other day at 23:00."""
    rows = []
    for offset in range((TODAY - FIRST_DAY).days + 1):
        day = datetime.combine(FIRST_DAY + timedelta(days=offset), datetime.min.time())
        rows.append(("a1", day + timedelta(hours=10), f"u{offset % 3}", 1.0))
        if offset % 2 == 0:
            rows.append(("a2", day + timedelta(hours=23), "u9", 2.0))
    return pd.DataFrame(rows, columns=["account_id", "timestamp", "user", "value"])


def config(metrics: dict[str, Any], retention: dict[str, Any]) -> dict[str, Any]:
    measures = [
        {"metric": name, "normalize": {"method": "bounds", "min": 0, "max": 10}}
        for name in metrics
    ]
    return {
        "name": "windows",
        "sources": {
            "accounts": {"kind": "accounts", "path": "accounts.csv"},
            "usage": {"kind": "events", "path": "store"},
        },
        "metrics": metrics,
        "scorecards": [
            {
                "name": "default",
                "components": {"usage": {"weight": 1, "measures": measures}},
            }
        ],
        "retention": retention,
    }


def purged_project(
    root: Path,
    metrics: dict[str, Any] | None = None,
    retention: dict[str, Any] | None = None,
) -> Project:
    """Store the usage rows, then purge the raw days before 2026-02-09."""
    if metrics is None:
        metrics = {**RAW_METRICS, **ROLLUP_METRICS, **RATIO_METRIC}
    settings = retention or {"raw_events": "20d"}
    project = write_project(
        root, config(metrics, settings), {"accounts.csv": ACCOUNTS_CSV}
    )
    event_store(project).append("usage", usage_rows(), numeric=["value"])
    retain(project, TODAY)
    purged = event_store(project).purged_days("usage")
    assert purged[0] == FIRST_DAY
    assert purged[-1] == LAST_PURGED
    return project


def run(*args: str | Path) -> Result:
    runner = CliRunner(env={"COLUMNS": "200", "NO_COLOR": "1"})
    return runner.invoke(app, [str(arg) for arg in args], prog_name="healthscore")


def score(project: Project, as_of: str, *extra: str) -> Result:
    return run("score", "--as-of", as_of, "--project", project.root, *extra)


def warning_text(result: Result) -> str:
    return " ".join(result.stderr.split())


def test_score_names_purged_days(tmp_path: Path) -> None:
    project = purged_project(tmp_path / "p")

    result = score(project, "2026-02-12")

    assert result.exit_code == 0, result.output
    warning = warning_text(result)
    assert warning.startswith(
        "warning: the metric windows of 2026-02-12 reach the raw days of store "
        "source usage from 2026-01-29 to 2026-02-08 (11 days)"
    )
    assert "purged by retention (retention.raw_events: 20d)" in warning
    assert "Metrics raw_7d, users_14d and raw_change read raw rows" in warning
    assert "computed from the rows that are left" in warning
    assert "Metric raw_share is computed from them" in warning
    assert "rows_28d" not in warning
    # A warning only: the date is scored and stored.
    assert snapshot_store(project).dates() == [date(2026, 2, 12)]


def test_score_names_one_purged_day(tmp_path: Path) -> None:
    project = purged_project(tmp_path / "p")

    result = score(project, "2026-02-22")

    assert result.exit_code == 0, result.output
    warning = warning_text(result)
    assert (
        "reach the raw day 2026-02-08 of store source usage, whose raw rows were purged"
    ) in warning
    # raw_7d reads 2026-02-15 to 2026-02-21, all kept.
    assert "Metrics users_14d and raw_change read raw rows" in warning
    assert "raw_share" not in warning


def test_score_within_kept_days_no_warning(tmp_path: Path) -> None:
    project = purged_project(tmp_path / "p")

    result = score(project, "2026-02-23")

    assert result.exit_code == 0, result.output
    assert "warning" not in result.stderr
    assert "purged" not in result.stderr


def test_score_rollup_metrics_no_warning(tmp_path: Path) -> None:
    # The rollup of every purged day is kept, so rows_28d is exact.
    project = purged_project(tmp_path / "p", metrics=dict(ROLLUP_METRICS))

    result = score(project, "2026-02-05")

    assert result.exit_code == 0, result.output
    assert "purged" not in result.stderr


def test_score_names_source_setting(tmp_path: Path) -> None:
    retention = {"raw_events": "60d", "sources": {"usage": "20d"}}
    project = purged_project(tmp_path / "p", retention=retention)

    result = score(project, "2026-02-12")

    assert result.exit_code == 0, result.output
    warning = warning_text(result)
    assert "purged by retention (retention.sources.usage: 20d)" in warning
    assert "raw_events" not in warning


def test_score_json_lists_purged_windows(tmp_path: Path) -> None:
    project = purged_project(tmp_path / "p")

    result = score(project, "2026-02-12", "--json")

    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert len(data["purged_windows"]) == 1
    found = data["purged_windows"][0]
    assert found["source"] == "usage"
    assert found["setting"] == "retention.raw_events"
    assert found["age"] == "20d"
    assert found["first_day"] == "2026-01-29"
    assert found["last_day"] == "2026-02-08"
    assert found["days"] == 11
    assert found["metrics"] == ["raw_7d", "users_14d", "raw_change"]
    assert found["derived_metrics"] == ["raw_share"]
    assert found["dates"] == ["2026-02-12"]
    assert found["message"] == warning_text(result)


def test_score_json_empty_within_kept_days(tmp_path: Path) -> None:
    project = purged_project(tmp_path / "p")

    result = score(project, "2026-02-23", "--json")

    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["purged_windows"] == []


def test_backfill_names_purged_days(tmp_path: Path) -> None:
    # As of 2026-02-08 the raw windows start on 2026-01-25, and 2026-03-01 reaches
    # no purged day. rows_28d starts on 2026-01-11 at the earliest, after the first
    # stored row, so no window is partial for lack of data.
    project = purged_project(tmp_path / "p")

    result = run("backfill", "--from", "2026-02-08", "--to", "2026-03-01",
                 "--every", "7d", "--project", project.root)  # fmt: skip

    assert result.exit_code == 0, result.output
    warning = warning_text(result)
    assert warning.startswith(
        "warning: the metric windows of 3 of the 4 as-of dates (2026-02-08, "
        "2026-02-15 and 2026-02-22) reach the raw days of store source usage from "
        "2026-01-25 to 2026-02-08 (15 days)"
    )
    assert "purged by retention (retention.raw_events: 20d)" in warning
    assert "Metrics raw_7d, users_14d and raw_change read raw rows" in warning
    assert "rows_28d" not in warning
    # The raw rows start on 2026-02-09 now, but the data starts on 2026-01-01.
    assert "partial windows" not in warning
    assert "first row" not in warning
    assert len(snapshot_store(project).dates()) == 4


def test_backfill_json_lists_purged_windows(tmp_path: Path) -> None:
    project = purged_project(tmp_path / "p")

    result = run("backfill", "--from", "2026-02-08", "--to", "2026-03-01",
                 "--every", "7d", "--project", project.root, "--json")  # fmt: skip

    assert result.exit_code == 0, result.output
    found = json.loads(result.stdout)["purged_windows"]
    assert [entry["source"] for entry in found] == ["usage"]
    assert found[0]["dates"] == ["2026-02-08", "2026-02-15", "2026-02-22"]
    assert found[0]["first_day"] == "2026-01-25"
    assert found[0]["days"] == 15


def test_backfill_partial_before_first_stored_row(tmp_path: Path) -> None:
    # As of 2026-01-20 the 28-day window of rows_28d starts on 2025-12-23, before
    # the first stored row (2026-01-01 10:00), which the rollups still count.
    project = purged_project(tmp_path / "p")

    result = run("backfill", "--from", "2026-01-20", "--to", "2026-01-20",
                 "--project", project.root)  # fmt: skip

    assert result.exit_code == 0, result.output
    warning = warning_text(result)
    assert (
        "for source usage_daily, whose first row is at 2026-01-01 10:00:00"
    ) in warning
    assert "for source usage," not in warning
    assert "2026-01-06 to 2026-01-19 (14 days)" in warning


@pytest.mark.parametrize(
    ("as_of", "expected"),
    [
        ("2026-02-12", (date(2026, 1, 29), LAST_PURGED)),
        ("2026-02-22", (LAST_PURGED, LAST_PURGED)),
        ("2026-02-23", None),
    ],
)
def test_find_purged_windows_days(
    tmp_path: Path, as_of: str, expected: tuple[date, date] | None
) -> None:
    project = purged_project(tmp_path / "p")

    found = find_purged_windows(project, [date.fromisoformat(as_of)])

    if expected is None:
        assert found == []
        return
    assert len(found) == 1
    assert (found[0].days[0], found[0].days[-1]) == expected
    assert found[0].days == [
        expected[0] + timedelta(days=offset)
        for offset in range((expected[1] - expected[0]).days + 1)
    ]
