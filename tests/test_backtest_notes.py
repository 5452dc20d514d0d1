"""Notes of `healthscore backtest` and `compare` on labels from an accounts column.

The project has 200 accounts scored on one as-of date. Its labels come from the
accounts column `Churn`, which has no dates, so there is no lead time. Accounts below
an activity of 0.3 log few events and churn 60 % of the time, the others 10 %.
"""

from __future__ import annotations

import json
from datetime import date, timedelta
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from healthscore.cli import app
from healthscore.models.backtest import MethodResult, grouped_notes
from healthscore.models.labels import LeadTimeNote
from healthscore.pipeline import score
from project_factory import label_column_config, write_project

AS_OF = date(2024, 3, 1)
ACCOUNTS = 200

SHADOW = """scorecards:
- name: default
  components:
    usage:
      weight: 1
      measures:
      - metric: events_28d
        normalize: {method: bounds, min: 0, max: 40}
"""


def column_label_files() -> dict[str, str]:
    generator = np.random.default_rng(0)
    activity = generator.uniform(0, 1, ACCOUNTS)
    accounts = ["account_id,segment,Churn"]
    events = ["account_id,timestamp"]
    for i in range(ACCOUNTS):
        churned = generator.uniform() < (0.6 if activity[i] < 0.3 else 0.1)
        accounts.append(f"a{i},smb,{'Yes' if churned else 'No'}")
        for _ in range(generator.poisson(20 * activity[i] + 1)):
            day = AS_OF - timedelta(days=int(generator.integers(1, 28)))
            events.append(f"a{i},{day.isoformat()}T12:00:00")
    return {
        "accounts.csv": "\n".join(accounts) + "\n",
        "events.csv": "\n".join(events) + "\n",
        "shadow.yml": SHADOW,
    }


@pytest.fixture(scope="module")
def column_project(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("column_labels")
    config = label_column_config(folds=5, min_churned=5, shadow=["shadow.yml"])
    project = write_project(root, config, column_label_files())
    score(project, AS_OF, monitor=False)
    return root


def run(*args: str) -> tuple[str, str]:
    result = CliRunner().invoke(app, list(args), env={"COLUMNS": "80"})
    assert result.exit_code == 0, result.output
    return result.stdout, result.stderr


def unwrapped(text: str) -> str:
    return " ".join(text.split())


def test_backtest_says_no_lead_time_once(column_project):
    stdout, stderr = run("backtest", "--project", str(column_project))

    output = unwrapped(stdout + "\n" + stderr)
    # Both the weighted and the shadow scorecards are backtested.
    assert "shadow:shadow.yml" in output
    assert output.count("no lead time") == 1
    assert "the label column 'Churn' has no dates" in output


def test_compare_says_no_lead_time_once(column_project):
    stdout, stderr = run(
        "compare", "--project", str(column_project), "--methods", "rules,weighted"
    )

    assert unwrapped(stdout + "\n" + stderr).count("no lead time") == 1


def test_backtest_json_keeps_method_notes(column_project):
    stdout, _ = run("backtest", "--project", str(column_project), "--json")

    payload = json.loads(stdout)
    assert [row["method"] for row in payload["methods"]] == [
        "weighted",
        "shadow:shadow.yml",
    ]
    for row in payload["methods"]:
        assert row["note"] == "no churn dates, so no lead time"
    assert any("no lead time" in line for line in payload["notes"])


def test_grouped_notes_keep_lead_time_type():
    notes = [
        "fold 1: model weight 0.35",
        LeadTimeNote("no churn dates, so no lead time"),
        "fold 2: model weight 0.35",
        LeadTimeNote("no churn dates, so no lead time"),
    ]

    merged = grouped_notes(notes, ["fold 1", "fold 2"])

    assert merged == [
        "fold 1, fold 2 (2 splits): model weight 0.35",
        "no churn dates, so no lead time",
    ]
    assert isinstance(merged[1], LeadTimeNote)
    assert not isinstance(merged[0], LeadTimeNote)


def test_method_lead_time_note_is_marked():
    result = MethodResult("weighted", True, split_names=["fold 1"])
    result.notes.append(LeadTimeNote("no churn dates, so no lead time"))

    assert isinstance(result.grouped_notes()[0], LeadTimeNote)
    assert result.to_dict()["note"] == "no churn dates, so no lead time"


def test_long_shadow_name_folds_at_separators(column_project, tmp_path):
    import shutil

    import yaml

    root = tmp_path / "project"
    shutil.copytree(column_project, root)
    # Each piece fits the 10 characters that the number columns leave at 80.
    name = "proposals/health.proposed_card.yml"
    (root / "proposals").mkdir()
    (root / name).write_text(SHADOW)
    config = yaml.safe_load((root / "healthscore.yml").read_text())
    config["validation"]["shadow"] = [name]
    (root / "healthscore.yml").write_text(yaml.safe_dump(config))

    stdout, _ = run("backtest", "--project", str(root))

    method = f"shadow:{name}"
    lines = [line.split()[0] for line in stdout.splitlines() if line.strip()]
    pieces = [lines[lines.index("shadow:")]]
    while len("".join(pieces)) < len(method):
        pieces.append(lines[lines.index(pieces[0]) + len(pieces)])
    assert "".join(pieces) == method
    # Each line ends after a separator, except the last.
    assert all(piece[-1] in ":/._-" for piece in pieces[:-1]), pieces
    assert all(len(line) <= 80 for line in stdout.splitlines())


def test_drivers_leave_out_lead_time_note(column_project):
    stdout, stderr = run("drivers", "--project", str(column_project))

    output = unwrapped(stdout + "\n" + stderr)
    assert "no lead time" not in output
    assert "observations on 1 as-of date" in output


def test_train_few_column_labels_names_column(tmp_path):
    # 200 accounts on one date, 8 of them churned by the column Churn: fewer than
    # the 10 of each class that a churn model needs.
    accounts = ["account_id,segment,Churn"]
    events = ["account_id,timestamp"]
    for i in range(ACCOUNTS):
        accounts.append(f"a{i},smb,{'Yes' if i < 8 else 'No'}")
        day = AS_OF - timedelta(days=1 + i % 20)
        events.append(f"a{i},{day.isoformat()}T12:00:00")
    config = label_column_config()
    project = write_project(
        tmp_path,
        config,
        {
            "accounts.csv": "\n".join(accounts) + "\n",
            "events.csv": "\n".join(events) + "\n",
        },
    )
    score(project, AS_OF, monitor=False)

    result = CliRunner().invoke(app, ["train", "--project", str(tmp_path)])

    assert result.exit_code == 1, result.output
    assert unwrapped(result.stderr).endswith(
        "error: too few labelled rows to train a churn model: found 8 churned and "
        "192 retained, and each needs at least 10; the labels come from the label "
        "column (validation.label_column), which has no dates, so more as-of dates "
        "only repeat the same labels; add more churned accounts to the accounts "
        "source"
    )
    assert "backfill" not in result.output
    assert "horizon" not in result.output
