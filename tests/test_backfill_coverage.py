"""Backfill warning about as-of dates whose metric windows start before the data.

The events below begin on 2024-01-10 at 15:00. The project scores a 28-day count as
of 00:00 of each date (start_of_day), so the window of date D starts at D - 28 days,
00:00. It starts before the first event when D - 28 days < 2024-01-10 15:00, that is
for every D up to 2024-02-07. The first date whose window is complete is 2024-02-08.
With --from 2024-01-15 --every 7d, the partial dates are 01-15, 01-22, 01-29 and
02-05; 02-12 is the first complete one.
"""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner, Result

from healthscore.cli import app
from healthscore.cli.history import partial_windows_warning
from healthscore.config import Project
from healthscore.config.models import parse_duration
from healthscore.engine import Engine
from healthscore.monitoring.backfill import backfill_dates
from healthscore.monitoring.coverage import Reach, find_partial_windows
from healthscore.pipeline import snapshot_store
from project_factory import ACCOUNTS_CSV, minimal_config, write_project

# The earliest event is not on the first line. A row whose time stamp cannot be read
# and an earlier row of an account missing from the accounts file are excluded.
EVENTS_CSV = """account_id,timestamp,event_type
a1,2024-02-20 09:00:00,login
a2,not a date,login
zz,2023-06-01 00:00:00,view
a2,2024-01-10 15:00:00,login
a1,2024-01-11 10:00:00,view
a3,2024-03-01 12:00:00,view
"""

FIRST_EVENT = datetime(2024, 1, 10, 15, 0)
PARTIAL = [date(2024, 1, 15), date(2024, 1, 22), date(2024, 1, 29), date(2024, 2, 5)]


def build(root: Path, **overrides: Any) -> Project:
    files = {"accounts.csv": ACCOUNTS_CSV, "events.csv": EVENTS_CSV}
    return write_project(root, minimal_config(**overrides), files)


def run(*args: str | Path) -> Result:
    runner = CliRunner(env={"COLUMNS": "200", "NO_COLOR": "1"})
    return runner.invoke(app, [str(arg) for arg in args], prog_name="healthscore")


def backfill_args(project: Project, start: str) -> list[str | Path]:
    return ["backfill", "--from", start, "--to", "2024-03-04", "--every", "7d",
            "--project", project.root]  # fmt: skip


def test_cli_warns_of_partial_windows(tmp_path: Path) -> None:
    project = build(tmp_path / "p")

    result = run(*backfill_args(project, "2024-01-15"))

    assert result.exit_code == 0, result.output
    warning = " ".join(result.stderr.split())
    assert warning.startswith(
        "warning: 4 of the 8 as-of dates are scored on partial windows"
    )
    assert (
        "2024-01-15, 2024-01-22, 2024-01-29 and 2024-02-05 for source events, whose "
        "first row is at 2024-01-10 15:00:00 (longest window 28d)"
    ) in warning
    assert "Start the backfill at 2024-02-08 or later (--from 2024-02-08)" in warning
    assert "2024-02-12" not in warning
    # A warning only: every date is scored and stored.
    assert "stored 8 snapshots from 2024-01-15 to 2024-03-04" in result.stdout
    assert len(snapshot_store(project).dates()) == 8


def test_cli_no_warning_from_first_complete_date(tmp_path: Path) -> None:
    project = build(tmp_path / "p")

    result = run(*backfill_args(project, "2024-02-08"))

    assert result.exit_code == 0, result.output
    assert "warning" not in result.stderr
    assert "stored 4 snapshots from 2024-02-08 to 2024-02-29" in result.stdout


def test_cli_range_ending_before_complete_windows(tmp_path: Path) -> None:
    # Every date up to 2024-02-07 has a partial window, so a range that ends on
    # 2024-02-05 has no complete date, and --from 2024-02-08 alone would make the
    # range empty. The warning also requests a --to on or after that date.
    project = build(tmp_path / "p")

    result = run("backfill", "--from", "2024-01-15", "--to", "2024-02-05", "--every",
                 "7d", "--project", project.root)  # fmt: skip

    assert result.exit_code == 0, result.output
    warning = " ".join(result.stderr.split())
    assert warning.startswith(
        "warning: 4 of the 4 as-of dates are scored on partial windows"
    )
    assert "Start the backfill at" not in warning
    assert (
        "No date from --from to --to has complete windows, because the first date "
        "that has them, 2024-02-08, is after --to (2024-02-05). Backfill from "
        "2024-02-08 on (--from 2024-02-08 and a --to on or after it) for complete "
        "windows."
    ) in warning
    assert "stored 4 snapshots from 2024-01-15 to 2024-02-05" in result.stdout


def test_cli_range_ending_on_first_complete_date(tmp_path: Path) -> None:
    # The range ends on 2024-02-08 but the weekly dates skip it, so --from
    # 2024-02-08 is the advice: it scores that date alone.
    project = build(tmp_path / "p")

    result = run("backfill", "--from", "2024-01-15", "--to", "2024-02-08", "--every",
                 "7d", "--project", project.root)  # fmt: skip

    assert result.exit_code == 0, result.output
    warning = " ".join(result.stderr.split())
    assert "Start the backfill at 2024-02-08 or later (--from 2024-02-08)" in warning
    assert "No date from --from to --to" not in warning


def partial_windows(project: Project, start: date, end: date, every: str) -> Any:
    engine = Engine.open(project)
    dates = backfill_dates(start, end, parse_duration(every))
    return find_partial_windows(project, engine.sources, dates)


def test_partial_dates_of_28d_window(tmp_path: Path) -> None:
    project = build(tmp_path / "p")

    [found] = partial_windows(project, date(2024, 1, 15), date(2024, 3, 4), "7d")

    assert found.source == "events"
    assert found.first_row == FIRST_EVENT
    assert found.dates == PARTIAL
    assert found.longest == Reach(parse_duration("28d"))
    assert found.first_complete == date(2024, 2, 8)


def test_end_of_day_point_moves_dates(tmp_path: Path) -> None:
    # As of the end of day D the window starts at D + 1 day - 28 days, 00:00, which
    # is before 2024-01-10 15:00 up to D = 2024-02-06.
    project = build(tmp_path / "p", as_of_point="end_of_day")

    [found] = partial_windows(project, date(2024, 2, 4), date(2024, 2, 9), "1d")

    assert found.dates == [date(2024, 2, 4), date(2024, 2, 5), date(2024, 2, 6)]
    assert found.first_complete == date(2024, 2, 7)


def test_change_metric_reaches_two_windows(tmp_path: Path) -> None:
    # The change compares the 28 days before D with the 28 days before those, so it
    # reads from D - 56 days, 00:00, which is before the first event up to D =
    # 2024-03-06. So 2024-03-07 is the first complete date.
    metrics = {
        "events_28d": {"type": "count", "source": "events", "window": "28d"},
        "events_change": {"type": "change", "of": "events_28d"},
    }
    project = build(tmp_path / "p", metrics=metrics)

    [found] = partial_windows(project, date(2024, 3, 4), date(2024, 3, 8), "1d")

    assert found.dates == [date(2024, 3, 4), date(2024, 3, 5), date(2024, 3, 6)]
    assert found.longest == Reach(parse_duration("28d"), periods=2)
    assert found.first_complete == date(2024, 3, 7)


@pytest.mark.parametrize("window", [None, "1d"])
def test_complete_windows_give_nothing(tmp_path: Path, window: str | None) -> None:
    # Without a window a metric reads every row, so no window can be partial. A
    # 1-day window as of 2024-01-15 starts on 2024-01-14, after the first event.
    metric: dict[str, Any] = {"type": "count", "source": "events"}
    if window is not None:
        metric["window"] = window
    project = build(tmp_path / "p", metrics={"events_28d": metric})

    assert partial_windows(project, date(2024, 1, 15), date(2024, 3, 4), "7d") == []


def test_cli_names_each_source(tmp_path: Path) -> None:
    # Tickets begin on 2024-01-20 00:00 and have a 14-day window, which starts before
    # that up to D = 2024-02-02: of the weekly dates, 01-22 and 01-29 are partial,
    # while 01-15 comes before the first ticket, so it reads no ticket at all. The
    # events' dates (see above) include these, so 4 dates are partial in all, and
    # the events' first complete date, 2024-02-08, is the later one.
    tickets = "account_id,timestamp\na1,2024-02-01 10:00:00\na2,2024-01-20 00:00:00\n"
    config = minimal_config()
    config["sources"]["tickets"] = {"kind": "tickets", "path": "tickets.csv"}
    config["metrics"]["tickets_14d"] = {
        "type": "count",
        "source": "tickets",
        "window": "14d",
    }
    files = {
        "accounts.csv": ACCOUNTS_CSV,
        "events.csv": EVENTS_CSV,
        "tickets.csv": tickets,
    }
    project = write_project(tmp_path / "p", config, files)

    result = run(*backfill_args(project, "2024-01-15"))

    assert result.exit_code == 0, result.output
    warning = " ".join(result.stderr.split())
    assert warning.startswith("warning: 4 of the 8 as-of dates are scored")
    assert (
        "2024-01-22 and 2024-01-29 for source tickets, whose first row is at "
        "2024-01-20 00:00:00 (longest window 14d)."
    ) in warning
    assert (
        "1 of the 8 as-of dates is before the first row of a source, so its windowed "
        "metrics read no rows of it there: 2024-01-15 for source tickets, whose "
        "first row is at 2024-01-20 00:00:00."
    ) in warning
    assert "(--from 2024-02-08)" in warning
    assert warning.count("warning:") == 1


def utc_today() -> date:
    """Today in UTC, the time zone of `minimal_config` projects."""
    return datetime.now(UTC).date()


def notes_project(root: Path, notes: list[tuple[str, date]]) -> Project:
    """A project whose scorecard also reads the latest CSM note sentiment (30d)."""
    config = minimal_config()
    config["metrics"]["sentiment"] = {
        "type": "latest",
        "source": "csm_notes",
        "column": "sentiment",
        "window": "30d",
    }
    measure = {
        "metric": "sentiment",
        "normalize": {"method": "bounds", "min": 1, "max": 5},
    }
    config["scorecards"][0]["components"]["voice"] = {
        "weight": 1,
        "measures": [measure],
    }
    project = build(root, **config)
    for account, day in notes:
        added = run("note", "add", account, "--author", "ann", "--text", "call",
                    "--sentiment", "4", "--date", day.isoformat(),
                    "--project", project.root)  # fmt: skip
        assert added.exit_code == 0, added.output
    return project


def test_cli_notes_added_today_no_warning(tmp_path: Path) -> None:
    # The only note is from today, after every date, and the events' windows are
    # complete from 2024-02-08: nothing to warn about.
    project = notes_project(tmp_path / "p", [("a1", utc_today())])

    result = run(*backfill_args(project, "2024-02-08"))

    assert result.exit_code == 0, result.output
    assert "warning" not in result.stderr
    assert "stored 4 snapshots" in result.stdout


def test_cli_notes_never_advise_later_date(tmp_path: Path) -> None:
    # A note from today would put the first complete date 30 days after today; the
    # warning covers the events alone.
    project = notes_project(tmp_path / "p", [("a1", utc_today())])

    result = run(*backfill_args(project, "2024-01-15"))

    warning = " ".join(result.stderr.split())
    assert result.exit_code == 0, result.output
    assert warning.startswith(
        "warning: 4 of the 8 as-of dates are scored on partial windows"
    )
    assert "csm_notes" not in warning
    assert "Start the backfill at 2024-02-08 or later (--from 2024-02-08)" in warning


def test_cli_source_after_range(tmp_path: Path) -> None:
    # Tickets begin on 2024-03-20, after --to (2024-03-04): every date comes before
    # them, which is no partial window, and no advice names a date after --to.
    tickets = "account_id,timestamp\na1,2024-03-20 09:00:00\n"
    config = minimal_config()
    config["sources"]["tickets"] = {"kind": "tickets", "path": "tickets.csv"}
    config["metrics"]["tickets_14d"] = {
        "type": "count",
        "source": "tickets",
        "window": "14d",
    }
    files = {
        "accounts.csv": ACCOUNTS_CSV,
        "events.csv": EVENTS_CSV,
        "tickets.csv": tickets,
    }
    project = write_project(tmp_path / "p", config, files)

    result = run(*backfill_args(project, "2024-02-08"))

    warning = " ".join(result.stderr.split())
    assert result.exit_code == 0, result.output
    assert warning == (
        "warning: 4 of the 4 as-of dates are before the first row of a source, so its "
        "windowed metrics read no rows of it there: 2024-02-08, 2024-02-15, "
        "2024-02-22 and 2024-02-29 for source tickets, whose first row is at "
        "2024-03-20 09:00:00. Source tickets has no row up to --to (2024-03-04); "
        "check --from and --to against the dates of your data."
    )


def test_cli_later_dates_complete_no_advice(tmp_path: Path) -> None:
    # Events from 2024-01-15 on: 2024-01-01 comes before them, and the 28-day
    # window of 2024-03-01 starts after them, so that date is complete.
    events = (
        "account_id,timestamp,event_type\n"
        "a1,2024-01-15 09:00:00,login\n"
        "a1,2024-02-27 09:00:00,login\n"
    )
    project = write_project(
        tmp_path / "p",
        minimal_config(),
        {"accounts.csv": ACCOUNTS_CSV, "events.csv": events},
    )

    result = run(
        "backfill", "--project", project.root, "--from", "2024-01-01",
        "--to", "2024-03-01", "--every", "2mo",
    )  # fmt: skip

    warning = " ".join(result.stderr.split())
    assert result.exit_code == 0, result.output
    assert warning == (
        "warning: 1 of the 2 as-of dates is before the first row of a source, so its "
        "windowed metrics read no rows of it there: 2024-01-01 for source events, "
        "whose first row is at 2024-01-15 09:00:00."
    )


def test_warning_names_no_date_after_today(tmp_path: Path) -> None:
    # Events that begin 10 days before today, with a 28-day window: the first
    # complete date is 18 days after today, so no date is named.
    today = utc_today()
    start = today - timedelta(days=10)
    events = f"account_id,timestamp,event_type\na1,{start.isoformat()} 12:00:00,login\n"
    project = write_project(
        tmp_path / "p",
        minimal_config(),
        {"accounts.csv": ACCOUNTS_CSV, "events.csv": events},
    )
    dates = [today - timedelta(days=2), today]
    found = partial_windows(project, dates[0], dates[1], "2d")
    assert found[0].first_complete == start + timedelta(days=29)

    warning = partial_windows_warning(project, found, 2, today)

    assert warning is not None
    assert (
        "No date up to today has complete windows yet, because the data of these "
        "sources starts less than their longest window before today."
    ) in warning
    assert (start + timedelta(days=29)).isoformat() not in warning
