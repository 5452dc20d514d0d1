"""`healthscore train` errors when no snapshot has a known churn outcome.

The project has monthly subscriptions, a 1mo outcome horizon and outcomes complete
until 2024-07-01 (outcomes.observed_until).
"""

from __future__ import annotations

from datetime import date
from pathlib import Path

from typer.testing import CliRunner

from healthscore.cli import app
from healthscore.monitoring.backfill import backfill
from project_factory import write_project
from test_compare import build_files, config


def train_error(root: Path, *options: str) -> str:
    """Return the stderr of a failing `train` as one line: notes, then the error."""
    result = CliRunner().invoke(app, ["train", "--project", str(root), *options])
    assert result.exit_code == 1, result.output
    return " ".join(result.stderr.split())


def test_train_as_of_before_first_outcome(tmp_path: Path) -> None:
    project = write_project(tmp_path, config(), build_files())
    backfill(project, [date(2024, 2, 1), date(2024, 3, 1)])

    # The 1mo horizon of the 2024-02-01 snapshot ends on 2024-03-01.
    error = train_error(tmp_path, "--as-of", "2024-02-15")

    assert error.endswith(
        "error: no stored snapshot has a known churn outcome by 2024-02-15: --as-of "
        "trains only on snapshots whose 1mo horizon (outcomes.horizon) has ended by "
        "that date, and the earliest labelled snapshot's ends on 2024-03-01; give "
        "--as-of 2024-03-01 or later, leave out --as-of, or store earlier dates "
        "with `healthscore backfill --from DATE --to DATE --every 1mo`"
    )


def test_train_only_censored_snapshots(tmp_path: Path) -> None:
    project = write_project(tmp_path, config(), build_files())
    # The 1mo horizon of 2024-07-01 ends on 2024-08-01, after observed_until.
    backfill(project, [date(2024, 7, 1)])

    error = train_error(tmp_path)

    assert error.startswith("163 observations are censored (no label)")
    assert error.endswith(
        "error: no stored snapshot has a known churn outcome: the outcome of a "
        "snapshot is known once its 1mo horizon (outcomes.horizon) ends by the last "
        "date the outcomes are complete (2024-07-01); store earlier dates with "
        "`healthscore backfill --from DATE --to DATE --every 1mo`"
    )
