"""Start-up of the command line: help output without the data and model libraries.

`healthscore --help` and each command's `--help` only build the Typer app, so they
must not load pandas, pyarrow, DuckDB, SQLAlchemy or the model libraries. Each check
runs in a fresh interpreter, because the test process has loaded them all already.
"""

from __future__ import annotations

import functools
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import typer

from healthscore.cli.common import handle_errors

#: Libraries that no help output needs, and that took most of the start-up time
#: while the command modules imported them at module level.
HEAVY_MODULES = (
    "pandas",
    "numpy",
    "pyarrow",
    "ibis",
    "duckdb",
    "sqlalchemy",
    "scipy",
    "sklearn",
    "lightgbm",
    "lifelines",
    "matplotlib",
    "plotly",
)

#: Argument lists for the app. An empty list only imports `healthscore.cli`.
STARTUP_ARGUMENTS = (
    (),
    ("--help",),
    ("score", "--help"),
    ("alerts", "list", "--help"),
    ("token", "create", "--help"),
)

#: Every top-level command and command group, in the order `--help` lists them.
COMMANDS = (
    "init",
    "validate",
    "score",
    "metrics",
    "explain",
    "report",
    "demo",
    "backfill",
    "trend",
    "nps",
    "effect",
    "forget",
    "export-subject",
    "ingest",
    "retain",
    "compact",
    "backtest",
    "learn",
    "drivers",
    "compare",
    "train",
    "forecast",
    "clusters",
    "serve",
    "override",
    "alerts",
    "tasks",
    "outcomes",
    "interventions",
    "note",
    "token",
    "writekey",
)

# Runs the app with the given arguments, then prints the exit code and the names of
# the loaded modules as JSON on the last line of stderr.
_REPORT_MODULES = """
import json
import sys

from healthscore.cli import app

exit_code = None
if sys.argv[1:]:
    try:
        app(sys.argv[1:], prog_name="healthscore")
    except SystemExit as exc:
        exit_code = exc.code
report = {"exit_code": exit_code, "modules": sorted(sys.modules)}
print(json.dumps(report), file=sys.stderr)
"""


def _environment() -> dict[str, str]:
    # A wide terminal keeps each command on one line of the help output.
    return {**os.environ, "COLUMNS": "200"}


@functools.cache
def _startup(arguments: tuple[str, ...]) -> tuple[int | None, frozenset[str]]:
    """Return the exit code and the loaded top-level modules of a fresh run."""
    result = subprocess.run(
        [sys.executable, "-c", _REPORT_MODULES, *arguments],
        env=_environment(),
        capture_output=True,
        text=True,
        check=True,
    )
    report = json.loads(result.stderr.strip().splitlines()[-1])
    top_level = frozenset(name.split(".")[0] for name in report["modules"])
    return report["exit_code"], top_level


@pytest.mark.parametrize("arguments", STARTUP_ARGUMENTS, ids=" ".join)
def test_startup_exit_code(arguments):
    exit_code, _ = _startup(arguments)
    assert exit_code in (None, 0)


@pytest.mark.parametrize("module", HEAVY_MODULES)
@pytest.mark.parametrize("arguments", STARTUP_ARGUMENTS, ids=" ".join)
def test_startup_skips_heavy_module(arguments, module):
    _, loaded = _startup(arguments)
    assert module not in loaded


def test_startup_check_sees_loaded_modules():
    # The check above is only meaningful if a loaded library shows up in the report.
    _, loaded = _startup(())
    assert "typer" in loaded
    assert "healthscore" in loaded


@functools.cache
def _console_help() -> subprocess.CompletedProcess[str]:
    command = Path(sys.executable).parent / "healthscore"
    return subprocess.run(
        [str(command), "--help"],
        env=_environment(),
        capture_output=True,
        text=True,
        check=False,
    )


def _listed_commands(help_text: str) -> list[str]:
    """Return the first word of each row of the Commands panel of Rich's help."""
    names = []
    inside = False
    for line in help_text.splitlines():
        if "Commands" in line and line.lstrip().startswith("╭"):
            inside = True
            continue
        if inside and line.lstrip().startswith("╰"):
            break
        words = line.strip("│ ").split()
        if inside and words:
            names.append(words[0])
    return names


def test_help_exits_zero():
    result = _console_help()
    assert result.returncode == 0, result.stderr


def test_help_lists_every_command():
    assert _listed_commands(_console_help().stdout) == list(COMMANDS)


def test_unexpected_error_propagates():
    # handle_errors turns known errors into exit code 1. Any other error, such as
    # this KeyError, which is neither a handled type nor a DuckDB error, propagates.
    @handle_errors
    def failing(verbose: int = 0) -> None:
        raise KeyError("account_id")

    with pytest.raises(KeyError, match="account_id"):
        failing()


def test_handled_error_exits_one(capsys):
    @handle_errors
    def failing(verbose: int = 0) -> None:
        raise ValueError("window must be positive")

    with pytest.raises(typer.Exit) as caught:
        failing()

    assert caught.value.exit_code == 1
    assert "error: window must be positive" in capsys.readouterr().err
