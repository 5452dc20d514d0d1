"""The CLI prints names, ids, file locations and values exactly as they are stored.

Rich reads `[tag]` as markup and `:name:` as an emoji code unless a console turns
both off, so these tests use account names, ids and metric names that contain them.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from click.testing import Result
from typer.testing import CliRunner

from healthscore.cli import app
from healthscore.cli.explain import _value
from project_factory import ACCOUNTS_CSV, minimal_config, write_project

AS_OF = "2024-03-01"

#: Names that Rich would read as an unmatched closing tag, as a style and as an emoji.
BAD_CLOSING_TAG = "[/x] Corp [Acme]"
STYLE_TAGS = "[bold]Markup[/bold]"
EMOJI_ID = ":fire:"

ACCOUNTS = (
    "account_id,name,segment,owner,arr\n"
    f"{EMOJI_ID},{BAD_CLOSING_TAG},smb,ann,3000\n"
    f"a2,{STYLE_TAGS},smb,bob,2000\n"
    "a3,Initech :100: Ltd,smb,bob,1000\n"
)

EVENTS = (
    "account_id,timestamp,value\n"
    f"{EMOJI_ID},2024-02-20,2\n"
    "a2,2024-02-21,5\n"
    "a2,2024-02-22,-1e300\n"
    "a3,2024-02-23,7\n"
)

#: A metric name with an unmatched closing tag and an emoji code.
MARKUP_METRIC = "[/m]:fire:_events"


def markup_config() -> dict[str, Any]:
    """Events counted by a metric whose name is markup, and summed in `value_sum`."""
    return minimal_config(
        metrics={
            MARKUP_METRIC: {"type": "count", "source": "events", "window": "28d"},
            "value_sum": {
                "type": "sum",
                "source": "events",
                "column": "value",
                "window": "28d",
            },
        },
        scorecards=[
            {
                "name": "default",
                "components": {
                    "usage": {
                        "weight": 1,
                        "measures": [
                            {
                                "metric": MARKUP_METRIC,
                                "normalize": {"method": "bounds", "min": 0, "max": 4},
                            },
                            {
                                "metric": "value_sum",
                                "normalize": {"method": "bounds", "min": 0, "max": 10},
                            },
                        ],
                    }
                },
            }
        ],
    )


@pytest.fixture
def project(tmp_path: Path) -> Path:
    root = tmp_path / "markup"
    write_project(
        root, markup_config(), {"accounts.csv": ACCOUNTS, "events.csv": EVENTS}
    )
    return root


def run(*args: str | Path, **env: str) -> Result:
    runner = CliRunner(env={"COLUMNS": "200", "NO_COLOR": "1", **env})
    return runner.invoke(app, [str(arg) for arg in args], prog_name="healthscore")


def succeeded(result: Result) -> Result:
    assert result.exit_code == 0, (
        f"exit {result.exit_code}\nstdout:\n{result.stdout}\nstderr:\n"
        f"{result.stderr}\nexception: {result.exception!r}"
    )
    return result


def table_row(text: str, first_cell: str) -> str:
    """Return the line of a Rich table whose first cell starts with `first_cell`."""
    rows = [line for line in text.splitlines() if line.strip().startswith(first_cell)]
    assert len(rows) == 1, f"no single row starts with {first_cell!r} in:\n{text}"
    return rows[0]


# score


def test_score_prints_account_names_exactly(project):
    result = succeeded(run("score", "--project", project, "--as-of", AS_OF))

    assert f"{EMOJI_ID} {BAD_CLOSING_TAG}" in table_row(result.stdout, EMOJI_ID)
    assert f"a2 {STYLE_TAGS}" in table_row(result.stdout, "a2")
    assert "a3 Initech :100: Ltd" in table_row(result.stdout, "a3")
    assert "🔥" not in result.stdout
    assert "💯" not in result.stdout


def test_score_prints_metric_names_exactly(project):
    result = succeeded(run("score", "--project", project, "--as-of", AS_OF))

    # a3 has 1 event of a maximum of 4, so the count measure, which weighs 50%,
    # loses 37.5 points.
    row = table_row(result.stdout, "a3")
    assert f"{MARKUP_METRIC} (37.5)" in row


def test_score_stores_snapshot_with_markup_names(project):
    succeeded(run("score", "--project", project, "--as-of", AS_OF))

    result = succeeded(
        run("explain", EMOJI_ID, "--project", project, "--as-of", AS_OF, "--json")
    )

    assert '"stored": true' in result.stdout
    assert "No snapshot" not in result.stderr


def test_score_progress_prints_source_names(tmp_path):
    # FORCE_COLOR makes Rich treat stderr as a terminal, so the step progress draws
    # its descriptions, which name the source of each metric.
    config = minimal_config()
    config["sources"]["[/x] events"] = config["sources"].pop("events")
    config["metrics"]["events_28d"]["source"] = "[/x] events"
    events = "account_id,timestamp\na1,2024-02-20\n"
    root = tmp_path / "progress"
    write_project(root, config, {"accounts.csv": ACCOUNTS_CSV, "events.csv": events})

    result = succeeded(
        run("score", "--project", root, "--as-of", AS_OF, FORCE_COLOR="1")
    )

    assert "metrics from [/x] events" in result.stderr


# explain


def test_explain_prints_account_id_exactly(project):
    result = succeeded(run("explain", EMOJI_ID, "--project", project, "--as-of", AS_OF))

    assert result.stdout.startswith(f"Account {EMOJI_ID} as of {AS_OF}: score ")
    assert "🔥" not in result.stdout


def test_explain_prints_measure_names_exactly(project):
    result = succeeded(run("explain", EMOJI_ID, "--project", project, "--as-of", AS_OF))

    # One event of a maximum of 4 normalizes to 25.0.
    row = table_row(result.stdout, MARKUP_METRIC)
    assert row.split()[:3] == [MARKUP_METRIC, "1", "25.0"]


def test_explain_change_prints_names_exactly(project):
    succeeded(run("score", "--project", project, "--as-of", "2024-02-25"))

    result = succeeded(
        run(
            *("explain", EMOJI_ID, "--project", project),
            *("--as-of", AS_OF, "--compare-to", "2024-02-25"),
        )
    )

    assert result.stdout.startswith(f"Account {EMOJI_ID}: score ")
    row = table_row(result.stdout, MARKUP_METRIC)
    assert row.split()[:4] == [MARKUP_METRIC, "1", "→", "1"]


def test_explain_prints_huge_value_compactly(project):
    result = succeeded(run("explain", "a2", "--project", project, "--as-of", AS_OF))

    # value_sum of a2 is 5 + -1e300, which is -1e300 as a float.
    assert table_row(result.stdout, "value_sum").split()[:2] == ["value_sum", "-1e+300"]
    assert "000,000" not in result.stdout


@pytest.mark.parametrize(
    ("number", "text"),
    [
        (-1e300, "-1e+300"),
        (1e15, "1e+15"),
        (123_456_789_012_345_678.0, "1.235e+17"),
        (999_999_999_999_999.0, "999,999,999,999,999"),
        (-1234.0, "-1,234"),
        (0.0, "0"),
        (0.125, "0.125"),
        (float("inf"), "inf"),
    ],
)
def test_value_formats_number(number, text):
    assert _value(number, None) == text


def test_value_prefers_text():
    assert _value(float("nan"), "[red]:fire:") == "[red]:fire:"
    assert _value(float("nan"), None) == "-"


# validate


def test_validate_prints_file_line_exactly(tmp_path):
    root = tmp_path / "line100"
    write_project(
        root, minimal_config(), {"accounts.csv": ACCOUNTS, "events.csv": EVENTS}
    )
    path = root / "healthscore.yml"
    lines = path.read_text().splitlines()
    # Comments push the misspelled key to line 100, so the location reads `:100:`.
    padding = [f"# comment {number}" for number in range(100 - len(lines) - 1)]
    path.write_text("\n".join([*lines, *padding, "sourcess: {}"]) + "\n")

    result = run("validate", "--project", root)

    assert result.exit_code == 1
    assert f"{path}:100: " in result.stderr
    assert "💯" not in result.stderr
