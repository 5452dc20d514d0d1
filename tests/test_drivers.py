"""`healthscore drivers` when segments have too few churned or retained observations.

The project is the churn project of `churn_project`: 300 accounts in the segments
enterprise and smb, with monthly snapshots whose subscription labels hold some
churned and many retained observations in each segment.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from churn_project import SNAPSHOT_DATES, churn_config, churn_files
from healthscore.models.dataset import build_observations
from healthscore.monitoring.backfill import backfill
from project_factory import label_column_config, write_project
from test_cli import run, succeeded


def words(text: str) -> str:
    """Collapse the whitespace of `text`, which the CLI wraps at 80 columns."""
    return " ".join(text.split())


@pytest.fixture(scope="module")
def churn_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("drivers") / "project"
    project = write_project(root, churn_config(), churn_files())
    backfill(project, SNAPSHOT_DATES)
    return root


@pytest.fixture(scope="module")
def segment_counts(churn_root: Path) -> dict[str, tuple[int, int]]:
    """Churned and retained labelled observations per segment, counted with NumPy."""
    from healthscore.config import load_project

    project = load_project(churn_root)
    frame = build_observations(project, SNAPSHOT_DATES).frame
    counts = {}
    for segment in sorted(frame["segment"].unique()):
        labels = frame.loc[frame["segment"] == segment, "label"].to_numpy(float)
        known = labels[~np.isnan(labels)]
        counts[segment] = (int((known == 1).sum()), int((known == 0).sum()))
    return counts


def test_drivers_compares_segments(churn_root, segment_counts):
    result = succeeded(run("drivers", "--project", churn_root, "--json"))

    rows = json.loads(result.stdout)["drivers"]
    assert {row["segment"] for row in rows} == set(segment_counts)
    # A count of logins has a value for every observation, so its row counts every
    # labelled observation of the segment.
    logins = {
        row["segment"]: (row["churned"], row["retained"])
        for row in rows
        if row["measure"] == "logins"
    }
    assert logins == segment_counts


def test_drivers_every_segment_left_out(churn_root, segment_counts):
    # A minimum above every segment's churned count leaves every segment out.
    minimum = max(churned for churned, _ in segment_counts.values()) + 1
    yml = churn_root / "healthscore.yml"
    original = yml.read_text()
    yml.write_text(original + f"validation:\n  min_churned: {minimum}\n")
    try:
        result = run("drivers", "--project", churn_root)
    finally:
        yml.write_text(original)

    assert result.exit_code == 1
    stderr = words(result.stderr)
    for segment, (churned, retained) in segment_counts.items():
        assert (
            f"segment {segment}: left out, {churned} churned and {retained} "
            f"retained observations, and each needs at least {minimum}"
        ) in stderr
    assert (
        f"none of the 2 segments has at least {minimum} churned and {minimum} "
        "retained observations (validation.min_churned)"
    ) in stderr
    assert "lower validation.min_churned" in stderr
    assert "healthscore backfill --from DATE --to DATE --every 1mo" in stderr
    assert "Measures that separate" not in result.stdout


def test_drivers_json_every_segment_left_out(churn_root, segment_counts):
    minimum = max(churned for churned, _ in segment_counts.values()) + 1
    yml = churn_root / "healthscore.yml"
    original = yml.read_text()
    yml.write_text(original + f"validation:\n  min_churned: {minimum}\n")
    try:
        result = run("drivers", "--project", churn_root, "--json")
    finally:
        yml.write_text(original)

    assert result.exit_code == 1
    assert result.stdout == ""
    assert "validation.min_churned" in words(result.stderr)


def test_segment_drivers_raise_with_notes(churn_root, segment_counts):
    from healthscore.config import load_project
    from healthscore.models.drivers import NoSegmentCompared, segment_drivers

    project = load_project(churn_root)
    observations = build_observations(project, SNAPSHOT_DATES)
    minimum = max(churned for churned, _ in segment_counts.values()) + 1

    with pytest.raises(NoSegmentCompared) as raised:
        segment_drivers(observations, minimum)

    assert len(raised.value.notes) == len(segment_counts)
    assert "validation.min_churned" in str(raised.value)


def test_drivers_without_churned_observations(tmp_path):
    config = label_column_config()
    accounts = ["account_id,segment,Churn"] + [f"a{i},smb,No" for i in range(20)]
    events = ["account_id,timestamp"] + [f"a{i},2024-02-20T12:00:00" for i in range(20)]
    write_project(
        tmp_path,
        config,
        {
            "accounts.csv": "\n".join(accounts) + "\n",
            "events.csv": "\n".join(events) + "\n",
        },
    )
    succeeded(run("score", "--project", tmp_path, "--as-of", "2024-03-01"))

    result = run("drivers", "--project", tmp_path)

    assert result.exit_code == 1
    stderr = words(result.stderr)
    assert (
        "No churned observations: none of the 20 labelled observations churned, so "
        "no measure can be compared between churned and retained accounts"
    ) in stderr
    assert "validation.label_column.churned" in stderr


def test_segment_drivers_one_segment_left_out(churn_root, segment_counts):
    from healthscore.config import load_project
    from healthscore.models.drivers import NoSegmentCompared, segment_drivers

    observations = build_observations(load_project(churn_root), SNAPSHOT_DATES)
    observations.frame["segment"] = "all"
    churned = sum(count for count, _ in segment_counts.values())
    retained = sum(count for _, count in segment_counts.values())

    with pytest.raises(NoSegmentCompared) as raised:
        segment_drivers(observations, churned + 1)

    assert raised.value.notes == [
        f"segment all: left out, {churned} churned and {retained} retained "
        f"observations, and each needs at least {churned + 1}"
    ]
    assert str(raised.value).startswith(
        "no measure was compared, because the one segment does not have at least "
        f"{churned + 1} churned and {churned + 1} retained observations"
    )
