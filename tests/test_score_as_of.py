"""`healthscore score` with an as-of date after today in the project's time zone.

No row after today exists yet, so the windows of a future date are partly empty.
The command still scores and stores the date, because tests and what-if runs may
do that on purpose, but it warns on stderr.
"""

from __future__ import annotations

import json
from datetime import date, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

from typer.testing import CliRunner, Result

from healthscore.cli import app
from project_factory import ACCOUNTS_CSV, minimal_config, write_project

#: The time zone whose date is furthest ahead of UTC (UTC+14), so that for most of
#: the day its date differs from the date in UTC.
ZONE = "Pacific/Kiritimati"
EVENTS = "account_id,timestamp,event_type\na1,2024-03-01 09:00:00,login\n"


def build(root: Path) -> Path:
    config = minimal_config(timezone=ZONE)
    files = {"accounts.csv": ACCOUNTS_CSV, "events.csv": EVENTS}
    return write_project(root, config, files).root


def run(*args: str | Path) -> Result:
    runner = CliRunner(env={"COLUMNS": "200", "NO_COLOR": "1"})
    return runner.invoke(app, [str(arg) for arg in args], prog_name="healthscore")


def project_today() -> date:
    return datetime.now(ZoneInfo(ZONE)).date()


def test_future_date_warns_and_stores(tmp_path: Path) -> None:
    root = build(tmp_path / "p")
    today = project_today()
    future = today + timedelta(days=1)

    result = run("score", "--project", root, "--as-of", future.isoformat())

    assert result.exit_code == 0, result.output
    warning = " ".join(result.stderr.split())
    assert warning.startswith(
        f"warning: the as-of date {future.isoformat()} is after today "
        f"({today.isoformat()} in the project time zone {ZONE})."
    )
    assert "windows that reach past today are partly empty" in warning
    assert "becomes the latest stored snapshot" in warning
    assert "Stored the snapshot" in result.stdout
    assert (root / ".healthscore").exists()


def test_future_date_warns_with_json(tmp_path: Path) -> None:
    root = build(tmp_path / "p")
    future = project_today() + timedelta(days=400)

    result = run(
        "score", "--project", root, "--as-of", future.isoformat(), "--no-store",
        "--json",
    )  # fmt: skip

    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["as_of"] == future.isoformat()
    warning = " ".join(result.stderr.split())
    assert f"the as-of date {future.isoformat()} is after today" in warning
    # Nothing is stored, so no snapshot becomes the latest.
    assert "latest snapshot" not in warning


def test_today_and_past_dates_do_not_warn(tmp_path: Path) -> None:
    root = build(tmp_path / "p")

    for day in (project_today(), date(2024, 3, 10)):
        result = run("score", "--project", root, "--as-of", day.isoformat())

        assert result.exit_code == 0, result.output
        assert "after today" not in result.stderr


def test_metrics_command_warns_too(tmp_path: Path) -> None:
    root = build(tmp_path / "p")
    future = project_today() + timedelta(days=2)
    output = tmp_path / "metrics.csv"

    result = run(
        "metrics", "--project", root, "--as-of", future.isoformat(), "--output",
        output,
    )  # fmt: skip

    assert result.exit_code == 0, result.output
    assert f"the as-of date {future.isoformat()} is after today" in " ".join(
        result.stderr.split()
    )
    assert output.is_file()
