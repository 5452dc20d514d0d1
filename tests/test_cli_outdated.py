"""Commands that read a snapshot say when it was scored with other scorecards."""

from __future__ import annotations

import shlex

import yaml
from typer.testing import CliRunner

from healthscore.cli import app
from project_factory import ACCOUNTS_CSV, minimal_config, write_project

EVENTS = "account_id,timestamp\na1,2024-03-20 10:00:00\n"


def outdated(root: str) -> str:
    """The warning about the snapshot of 2024-04-01, with its rescoring command."""
    return (
        "The snapshot of 2024-04-01 was scored with other scorecards than "
        "healthscore.yml now holds, so it shows the scores as they were; run "
        f"`healthscore backfill --project {shlex.quote(root)} --from 2024-04-01 "
        "--to 2024-04-01` to rescore it without checking alert rules."
    )


def run(*arguments: str):
    runner = CliRunner(env={"COLUMNS": "200", "NO_COLOR": "1"})
    result = runner.invoke(app, list(arguments))
    assert result.exit_code == 0, result.output
    return result


def test_explain_warns_after_scorecard_change(tmp_path):
    project = write_project(
        tmp_path, minimal_config(), {"accounts.csv": ACCOUNTS_CSV, "events.csv": EVENTS}
    )
    root = str(project.root)
    run("score", "--as-of", "2024-04-01", "--project", root)
    unchanged = run("explain", "a1", "--as-of", "2024-04-01", "--project", root)
    assert "scored with other scorecards" not in unchanged.stderr

    config = yaml.safe_load(project.file.read_text())
    config["scorecards"][0]["components"]["usage"]["measures"][0]["normalize"][
        "max"
    ] = 5
    project.file.write_text(yaml.safe_dump(config, sort_keys=False))
    changed = run("explain", "a1", "--as-of", "2024-04-01", "--project", root)
    assert outdated(root) in " ".join(changed.stderr.split())
    report = run("report", "--as-of", "2024-04-01", "--project", root)
    assert outdated(root) in " ".join(report.stderr.split())
