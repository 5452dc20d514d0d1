"""Notes that the model commands, such as clusters and train, print about labels.

These commands report no lead time, so they leave out a note that explains why there
is none. They recognize it as a `LeadTimeNote`, whatever its wording.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd
from typer.testing import CliRunner

from healthscore.cli import app
from healthscore.config import Project
from healthscore.models import labels
from healthscore.models.labels import LabelSet, LeadTimeNote
from test_backtest_notes import column_project as column_project
from test_backtest_notes import unwrapped


def clusters(project_dir: Path) -> str:
    """Run `clusters` and return its notes (stderr) as one line of words."""
    result = CliRunner().invoke(
        app, ["clusters", "--project", str(project_dir)], env={"COLUMNS": "80"}
    )
    assert result.exit_code == 0, result.output
    assert "clusters of 200 accounts" in unwrapped(result.stdout)
    return unwrapped(result.stderr)


def test_clusters_omit_lead_time_note(column_project):
    notes = clusters(column_project)

    assert "lead time" not in notes
    assert "has no dates" not in notes


def test_clusters_omit_reworded_note(column_project, monkeypatch):
    original = labels.column_labels

    def reworded(
        project: Project, pairs: pd.DataFrame, accounts: pd.DataFrame
    ) -> LabelSet:
        label_set = original(project, pairs, accounts)
        label_set.notes = [
            LeadTimeNote("churn timing is unknown for these labels"),
            "every label comes from one snapshot",
        ]
        return label_set

    monkeypatch.setattr(labels, "column_labels", reworded)

    notes = clusters(column_project)

    assert "churn timing is unknown" not in notes
    assert "every label comes from one snapshot" in notes
