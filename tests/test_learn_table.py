"""The weights table of `healthscore learn` at 80 columns.

The churn project's scorecard is renamed with long names made of words joined by
underscores and hyphens. The table breaks them after those separators, not inside
a word.
"""

from __future__ import annotations

from typer.testing import CliRunner

from churn_project import SNAPSHOT_DATES, churn_config, churn_files
from healthscore.cli import app
from healthscore.monitoring.backfill import backfill
from project_factory import write_project
from test_tasks_table import Span, column_cells

SCORECARD = "monthly-subscribers"
COMPONENT = "login_activity_and_engagement"
MEASURES = {
    "logins": "logins_in_the_last_28_days",
    "logins_7d": "logins_in_the_last_7_days",
    "days_since_login": "days_since_the_latest_login",
}


def test_learn_weights_break_names_between_words(tmp_path):
    config = churn_config()
    card = config["scorecards"][0]
    card["name"] = SCORECARD
    component = card["components"].pop("usage")
    for measure in component["measures"]:
        measure["name"] = MEASURES[measure["metric"]]
    card["components"][COMPONENT] = component
    project = write_project(tmp_path / "project", config, churn_files())
    backfill(project, SNAPSHOT_DATES)

    result = CliRunner().invoke(
        app, ["learn", "--project", str(project.root)], env={"COLUMNS": "80"}
    )

    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    top = next(i for i, line in enumerate(lines) if "Learned weights" in line)
    bottom = next(i for i, line in enumerate(lines) if line.startswith("└"))
    assert max(len(line) for line in lines[top : bottom + 1]) <= 80
    # Box characters become spaces, so that only cell text remains.
    borders = str.maketrans(dict.fromkeys("┏┓┃┳┡┩━╇│└┘┴─", " "))
    table = "\n".join(lines[top:bottom]).translate(borders)
    heading = next(line for line in table.splitlines() if "scorecard" in line)
    for header in ("scorecard", "component", "measure", "current", "proposed"):
        assert header in heading.split()
    # Only the first line of a row has numbers.
    numbers = ("current", "proposed")

    def cells(column: Span) -> list[list[str]]:
        return column_cells(table, column, numbers, first="scorecard")

    scorecards = cells(("scorecard", "component"))
    components = cells(("component", "measure"))
    measures = cells(("measure", "current"))
    assert len(measures) == 3
    for lines in scorecards:
        assert lines == ["monthly-", "subscribers"] or lines == [SCORECARD]
    for lines in components:
        assert "".join(lines) == COMPONENT
        assert all(line.endswith("_") for line in lines[:-1]), lines
    assert sorted("".join(lines) for lines in measures) == sorted(MEASURES.values())
    for lines in measures:
        assert all(line.endswith("_") for line in lines[:-1]), lines
