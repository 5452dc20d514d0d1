"""`healthscore override add --expires` with a date before today."""

from __future__ import annotations

from datetime import datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

from typer.testing import CliRunner, Result

from healthscore.cli import app
from healthscore.store import StateStore
from project_factory import ACCOUNTS_CSV, minimal_config, write_project

ZONE = "Pacific/Kiritimati"
EVENTS = "account_id,timestamp\na1,2024-03-01 09:00:00\n"


def build(root: Path) -> Path:
    config = minimal_config(timezone=ZONE)
    files = {"accounts.csv": ACCOUNTS_CSV, "events.csv": EVENTS}
    return write_project(root, config, files).root


def add(root: Path, expires: str) -> Result:
    runner = CliRunner(env={"COLUMNS": "200", "NO_COLOR": "1"})
    arguments = ["override", "add", "a1", "--score", "80", "--reason", "renewal "
                 "signed", "--author", "ana", "--expires", expires, "--project",
                 str(root)]  # fmt: skip
    return runner.invoke(app, arguments, prog_name="healthscore")


def test_past_expiry_names_option(tmp_path: Path) -> None:
    root = build(tmp_path / "p")
    today = datetime.now(ZoneInfo(ZONE)).date()

    result = add(root, "2020-01-01")

    assert result.exit_code == 1
    message = " ".join(result.stderr.split())
    assert message == (
        f"error: --expires 2020-01-01 is in the past (today is {today.isoformat()} "
        f"in the project time zone {ZONE}); give today or a later date"
    )
    assert "expires_on" not in result.output
    with StateStore.open("sqlite:///.healthscore/state.db", root) as store:
        assert store.list_overrides(include_expired=True) == []


def test_expiry_today_accepted(tmp_path: Path) -> None:
    root = build(tmp_path / "p")
    today = datetime.now(ZoneInfo(ZONE)).date()

    result = add(root, today.isoformat())

    assert result.exit_code == 0, result.output
    assert f"up to {today.isoformat()}" in result.stdout


def test_expiry_yesterday_rejected(tmp_path: Path) -> None:
    root = build(tmp_path / "p")
    yesterday = datetime.now(ZoneInfo(ZONE)).date() - timedelta(days=1)

    result = add(root, yesterday.isoformat())

    assert result.exit_code == 1
    assert f"--expires {yesterday.isoformat()} is in the past" in result.stderr
