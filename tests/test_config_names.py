"""Scorecards and bands are identified by name, so each name may appear once.

Snapshots, alert rules and reports refer to a scorecard or a band by its name.
Two scorecards named alike would store every score under one name, so the loader
rejects a repeated name at the entry that repeats it and names the line of the first.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from healthscore.cli import app
from healthscore.config import ConfigError, ConfigIssue, load_project

ACCOUNTS = "account_id,segment\na1,enterprise\na2,smb\n"
EVENTS = "account_id,timestamp,event_type\na1,2024-03-10 09:00:00,login\n"

# Line numbers matter: the tests assert the line of each entry.
SCORECARDS = """\
name: names
sources:
  accounts: {kind: accounts, path: accounts.csv}
  events: {kind: events, path: events.csv}
metrics:
  events_28d: {type: count, source: events, window: 28d}
scorecards:
  - name: enterprise
    when: segment == 'enterprise'
    components:
      usage:
        weight: 1
        measures:
          - {metric: events_28d, normalize: {method: bounds, min: 0, max: 10}}
  - name: enterprise
    components:
      usage:
        weight: 1
        measures:
          - {metric: events_28d, normalize: {method: percentile}}
"""

BANDS = """\
bands:
  - {name: low, label: Low, min: 0, max: 40, color: red}
  - {name: mid, label: Mid, min: 41, max: 70, color: orange}
  - {name: low, label: High, min: 71, max: 100, color: blue}
"""


def issues_of(root: Path, text: str) -> list[ConfigIssue]:
    root.mkdir(parents=True, exist_ok=True)
    (root / "accounts.csv").write_text(ACCOUNTS, encoding="utf-8")
    (root / "events.csv").write_text(EVENTS, encoding="utf-8")
    (root / "healthscore.yml").write_text(text, encoding="utf-8")
    with pytest.raises(ConfigError) as caught:
        load_project(root)
    return caught.value.issues


def test_repeated_scorecard_name_rejected(tmp_path: Path) -> None:
    issues = issues_of(tmp_path, SCORECARDS)

    assert len(issues) == 1, [str(issue) for issue in issues]
    issue = issues[0]
    assert issue.key == "scorecards[1].name"
    assert issue.line == 15
    assert issue.message == (
        "scorecard name 'enterprise' is already used by scorecards[0] at line 8; "
        "give each scorecard its own name"
    )
    assert str(issue).startswith(f"{tmp_path / 'healthscore.yml'}:15: ")


def test_repeated_band_name_rejected(tmp_path: Path) -> None:
    text = SCORECARDS.replace("name: enterprise\n    comp", "name: fallback\n    comp")
    issues = issues_of(tmp_path, text + BANDS)

    assert len(issues) == 1, [str(issue) for issue in issues]
    issue = issues[0]
    assert issue.key == "bands[2].name"
    assert issue.line == 24
    assert issue.message == (
        "band name 'low' is already used by bands[0] at line 22; give each band its "
        "own name"
    )


def test_repeated_name_with_other_problems(tmp_path: Path) -> None:
    # The second scorecard also fails its model, and both problems are listed.
    text = SCORECARDS.replace("method: percentile", "method: percentil")
    issues = {issue.key: issue for issue in issues_of(tmp_path, text)}

    assert set(issues) == {
        "scorecards[1].name",
        "scorecards[1].components.usage.measures[0].normalize.method",
    }
    assert issues["scorecards[1].name"].line == 15


def test_validate_command_rejects_repeated_scorecard(tmp_path: Path) -> None:
    issues_of(tmp_path, SCORECARDS)
    runner = CliRunner(env={"COLUMNS": "200", "NO_COLOR": "1"})

    result = runner.invoke(app, ["validate", "--project", str(tmp_path)])

    assert result.exit_code == 1
    output = " ".join(result.output.split())
    assert (
        "healthscore.yml:15: scorecards[1].name: scorecard name 'enterprise' is "
        "already used by scorecards[0] at line 8"
    ) in output


def test_distinct_names_load(tmp_path: Path) -> None:
    text = SCORECARDS.replace("name: enterprise\n    comp", "name: fallback\n    comp")
    (tmp_path / "accounts.csv").write_text(ACCOUNTS, encoding="utf-8")
    (tmp_path / "events.csv").write_text(EVENTS, encoding="utf-8")
    (tmp_path / "healthscore.yml").write_text(text, encoding="utf-8")

    project = load_project(tmp_path)

    assert [card.name for card in project.config.scorecards] == [
        "enterprise",
        "fallback",
    ]
