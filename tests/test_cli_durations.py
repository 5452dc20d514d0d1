"""Duration options of the command line read a bare whole number as days.

`horizon: 28` in healthscore.yml means 28 days, so `--horizon 28` must too. The
commands below run in a folder without a project: the option is parsed first, so a
rejected duration exits with usage error 2, and an accepted one reaches the
project check, which fails with 1.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from healthscore.cli import app

DAYS = ["2024-03-01", "2024-03-29"]


@pytest.mark.parametrize(
    "arguments",
    [
        ["effect", "--horizon", "28"],
        ["backfill", "--from", DAYS[0], "--to", DAYS[1], "--every", "7"],
    ],
)
def test_bare_number_option_is_days(tmp_path: Path, arguments: list[str]) -> None:
    result = CliRunner().invoke(app, [*arguments, "--project", str(tmp_path)])
    output = " ".join(result.output.split())

    assert "invalid duration" not in output
    assert result.exit_code == 1, output
    assert "project file not found" in output


def test_word_duration_still_rejected(tmp_path: Path) -> None:
    arguments = ["effect", "--horizon", "28 days", "--project", str(tmp_path)]
    result = CliRunner().invoke(app, arguments)
    output = " ".join(result.output.split())

    assert result.exit_code == 2, output
    assert "invalid duration '28 days'" in output
