"""Settings that read a standard column which the source's files lack.

Standard columns such as `seats` and `segment` are optional in a file, so the
project file alone passes validation. Reading the data must then name the setting,
the column, the source and its file, and the ways to fix it, in `validate --data`
as well as in `score`, instead of a KeyError or an unknown-name error.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner, Result

from healthscore.cli import app
from project_factory import minimal_config, write_project

EVENTS = (
    "account_id,timestamp,event_type\n"
    "a1,2024-03-01 09:00:00,login\n"
    "a2,2024-03-02 09:00:00,export\n"
)
ACCOUNTS_WITHOUT_SEATS = "account_id,name,segment,arr\na1,Acme,smb,100\na2,Bo,smb,50\n"
ACCOUNTS_WITHOUT_SEGMENT = "account_id,name,seats,arr\na1,Acme,5,100\na2,Bo,3,50\n"
BOUNDS = {"method": "bounds", "min": 0, "max": 9}
PERCENTILE = {"method": "percentile", "within": "segment"}
MEASURE = {"metric": "events_28d", "normalize": BOUNDS}


def run(*args: str | Path) -> Result:
    runner = CliRunner()
    return runner.invoke(app, [str(arg) for arg in args], prog_name="healthscore")


def flat(result: Result) -> str:
    return " ".join(result.output.split())


def project(root: Path, accounts: str, **overrides: Any) -> Path:
    config = minimal_config(**overrides)
    write_project(root, config, {"accounts.csv": accounts, "events.csv": EVENTS})
    return root


def seats_project(root: Path) -> Path:
    metrics = {
        "events_28d": {"type": "count", "source": "events", "window": "28d"},
        "seats": {"type": "attribute", "column": "seats"},
    }
    return project(root, ACCOUNTS_WITHOUT_SEATS, metrics=metrics)


def segment_project(root: Path) -> Path:
    scorecards = [
        {
            "name": "big",
            "when": "segment == 'enterprise'",
            "components": {"usage": {"weight": 1, "measures": [MEASURE]}},
        },
        {
            "name": "default",
            "components": {
                "usage": {
                    "weight": 1,
                    "measures": [{**MEASURE, "normalize": PERCENTILE}],
                }
            },
        },
    ]
    return project(root, ACCOUNTS_WITHOUT_SEGMENT, scorecards=scorecards)


def where_project(root: Path) -> Path:
    metrics = {
        "events_28d": {
            "type": "count",
            "source": "events",
            "window": "28d",
            "where": "value > 1",
        },
    }
    return project(root, ACCOUNTS_WITHOUT_SEATS, metrics=metrics)


@pytest.mark.parametrize("command", ["validate", "score"])
def test_attribute_metric_missing_column(tmp_path: Path, command: str) -> None:
    root = seats_project(tmp_path)
    extra = ["--data"] if command == "validate" else []
    result = run(command, *extra, "--project", root, "--as-of", "2024-04-01")
    output = flat(result)
    assert result.exit_code == 1, output
    assert "Traceback" not in output
    assert "metric 'seats' (metrics.seats.column) needs column 'seats'" in output
    assert "of source 'accounts', which accounts.csv does not have" in output
    assert "add the column to the file" in output
    assert "sources.accounts.columns" in output
    assert "remove metric 'seats'" in output


@pytest.mark.parametrize("command", ["validate", "score"])
def test_scorecard_missing_segment(tmp_path: Path, command: str) -> None:
    root = segment_project(tmp_path)
    extra = ["--data"] if command == "validate" else []
    result = run(command, *extra, "--project", root, "--as-of", "2024-04-01")
    output = flat(result)
    assert result.exit_code == 1, output
    assert "column 'segment' of source 'accounts' is not in accounts.csv" in output
    assert "2 settings read it: scorecards[0].when, " in output
    within = "scorecards[1].components.usage.measures[0].normalize.within"
    assert within in output
    assert "or change those settings" in output


@pytest.mark.parametrize("command", ["validate", "score"])
def test_where_missing_column(tmp_path: Path, command: str) -> None:
    root = where_project(tmp_path)
    extra = ["--data"] if command == "validate" else []
    result = run(command, *extra, "--project", root, "--as-of", "2024-04-01")
    output = flat(result)
    assert result.exit_code == 1, output
    expected = (
        "metric 'events_28d' (metrics.events_28d.where) needs column 'value' of "
        "source 'events', which events.csv does not have"
    )
    assert expected in output
    assert "sources.events.columns, or change metrics.events_28d.where" in output


def test_present_columns_pass(tmp_path: Path) -> None:
    accounts = "account_id,name,segment,seats,arr\na1,Acme,smb,5,100\n"
    metrics = {
        "events_28d": {"type": "count", "source": "events", "window": "28d"},
        "seats": {"type": "attribute", "column": "seats"},
    }
    root = project(tmp_path, accounts, metrics=metrics)
    result = run("validate", "--data", "--project", root, "--as-of", "2024-04-01")
    assert result.exit_code == 0, result.output
