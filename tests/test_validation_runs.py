"""Stored runs of `healthscore backtest` and `healthscore compare`.

Every run is kept under `<models>/<command>.runs/`, with the scorecard versions and
config key it ran under, and the latest one stays in `<models>/<command>.json`,
where the report and the web service read it. Results stored before runs were kept
(one JSON file) are listed as a run and copied into the runs folder by the next run.
"""

from __future__ import annotations

import json
import os
import shutil
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from healthscore.config import load_project
from healthscore.models.persist import list_runs, load_results, save_results
from test_cli import run, succeeded

AS_OF_DATES = ("2026-04-01", "2026-05-01", "2026-06-01")


@pytest.fixture(scope="module")
def scored_demo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The `healthscore init` project, scored on three monthly as-of dates."""
    root = tmp_path_factory.mktemp("runs") / "demo"
    succeeded(run("init", root))
    for as_of in AS_OF_DATES:
        succeeded(run("score", "--project", root, "--as-of", as_of))
    return root


@pytest.fixture
def demo(scored_demo: Path, tmp_path: Path) -> Path:
    """A copy of the scored project that a test may change."""
    root = tmp_path / "demo"
    shutil.copytree(scored_demo, root)
    return root


def models(root: Path) -> Path:
    return root / ".healthscore" / "models"


def versions_of(root: Path) -> dict[str, str]:
    project = load_project(root)
    return {
        card.name: project.scorecard_version(card) for card in project.config.scorecards
    }


def history(root: Path, command: str = "backtest") -> list[dict[str, Any]]:
    result = succeeded(run(command, "--history", "--project", root, "--json"))
    runs: list[dict[str, Any]] = json.loads(result.stdout)
    return runs


def test_backtest_keeps_run_after_scorecard_change(demo):
    before = versions_of(demo)
    key_before = load_project(demo).settings_key()
    first = json.loads(succeeded(run("backtest", "--project", demo, "--json")).stdout)
    config = demo / "healthscore.yml"
    text = config.read_text(encoding="utf-8")
    # The usage component of the enterprise scorecard, the first `weight: 30`.
    config.write_text(text.replace("weight: 30", "weight: 20", 1), encoding="utf-8")
    after = versions_of(demo)
    second = json.loads(succeeded(run("backtest", "--project", demo, "--json")).stdout)

    runs = history(demo)

    assert after != before
    assert after["enterprise"] != before["enterprise"]
    assert len(runs) == 2
    assert runs[0]["scorecard_versions"] == before
    assert runs[1]["scorecard_versions"] == after
    assert runs[0]["config_key"] == key_before
    assert runs[1]["config_key"] == load_project(demo).settings_key()
    assert runs[0]["config_key"] != runs[1]["config_key"]
    assert runs[0]["created_at"] < runs[1]["created_at"]
    assert runs[0]["unrecorded"] is False
    assert runs[0]["first_date"] == "2026-04-01"
    assert runs[0]["last_date"] == "2026-06-01"
    assert runs[0]["date_count"] == 3
    assert runs[0]["methods"][0]["method"] == "weighted"
    assert runs[0]["methods"][0]["roc_auc"] == first["methods"][0]["roc_auc"]
    assert runs[1]["methods"][0]["roc_auc"] == second["methods"][0]["roc_auc"]
    # The snapshots were scored before the change, so the second run measured
    # scores of the earlier versions.
    assert runs[1]["snapshot_scorecard_versions"] == {
        name: [version] for name, version in sorted(before.items())
    }
    listing = succeeded(run("backtest", "--history", "--project", demo))
    assert (
        f"measured scores stored under other scorecard versions (enterprise "
        f"{before['enterprise']}); rescore those dates with `healthscore backfill`"
    ) in " ".join(listing.stderr.split())


def test_latest_stays_where_report_reads(demo):
    succeeded(run("backtest", "--project", demo))
    succeeded(run("backtest", "--project", demo))

    files = sorted((models(demo) / "backtest.runs").glob("*.json"))
    latest = json.loads((models(demo) / "backtest.json").read_text("utf-8"))
    newest = json.loads(files[-1].read_text("utf-8"))

    assert len(files) == 2
    assert latest == newest
    assert latest["run"]["id"] == files[-1].stem
    assert load_results(load_project(demo), "backtest") == latest


def test_history_table_lists_each_run(demo):
    succeeded(run("backtest", "--project", demo))
    versions = versions_of(demo)
    key = load_project(demo).settings_key()

    result = succeeded(run("backtest", "--history", "--project", demo))

    output = result.stdout
    assert "Stored backtest runs, oldest first" in output
    assert f"config key {key}" in output
    assert f"enterprise {versions['enterprise']}" in output
    assert f"default {versions['default']}" in output
    assert "2026-04-01 to 2026-06-01 (3 dates)" in output
    assert "weighted" in output


def test_history_without_runs(demo):
    result = succeeded(run("compare", "--history", "--project", demo))

    assert result.stdout.strip() == (
        "No compare runs are stored; run `healthscore compare` to store one."
    )
    assert history(demo, "compare") == []


@pytest.mark.parametrize(
    ("command", "option"),
    [
        (("backtest", "--from", "2026-04-01"), "--from"),
        (("backtest", "--backfill"), "--backfill"),
        (("compare", "--methods", "weighted"), "--methods"),
        (("compare", "--shadow"), "--shadow"),
    ],
)
def test_history_rejects_run_options(demo, command, option):
    result = run(*command, "--history", "--project", demo)

    assert result.exit_code == 2
    message = " ".join(result.output.split())
    assert f"--history lists the stored runs and takes no {option}" in message


def test_single_file_store_listed_then_kept(demo):
    # A store from before runs were kept: one backtest.json without a `run` key.
    folder = models(demo)
    folder.mkdir(parents=True, exist_ok=True)
    old = {
        "splits": "old",
        "dates": ["2026-01-01"],
        "methods": [{"method": "weighted", "roc_auc": 0.61}],
    }
    legacy = folder / "backtest.json"
    legacy.write_text(json.dumps(old), encoding="utf-8")
    written = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC).timestamp()
    os.utime(legacy, (written, written))
    project = load_project(demo)

    listed = history(demo)
    listing = succeeded(run("backtest", "--history", "--project", demo))
    table = listing.stdout

    assert load_results(project, "backtest") == old
    assert len(listed) == 1
    assert listed[0]["unrecorded"] is True
    assert listed[0]["created_at"] == "2026-01-02T03:04:05.000000+00:00"
    assert listed[0]["scorecard_versions"] is None
    assert listed[0]["methods"][0]["roc_auc"] == 0.61
    assert "2026-01-02 03:04:05 UTC" in table
    assert "config key unknown" in table
    assert "scorecard versions unknown" in table
    assert "were stored before each run was kept" in " ".join(listing.stderr.split())

    save_results(project, "backtest", {"splits": "new", "dates": [], "methods": []})
    runs = list_runs(project, "backtest")

    assert [stored["splits"] for stored in runs] == ["old", "new"]
    assert runs[0]["methods"] == old["methods"]
    assert runs[0]["run"]["id"] == "20260102T030405000000Z-unrecorded"
    assert len(list((folder / "backtest.runs").glob("*.json"))) == 2
    assert load_results(project, "backtest")["splits"] == "new"


def test_runs_listed_oldest_first(demo):
    project = load_project(demo)
    for index in range(3):
        save_results(project, "compare", {"splits": str(index), "methods": []})

    runs = list_runs(project, "compare")

    assert [stored["splits"] for stored in runs] == ["0", "1", "2"]
    assert len({stored["run"]["id"] for stored in runs}) == 3
    assert {stored["run"]["command"] for stored in runs} == {"compare"}


def test_invalid_run_file_named(demo):
    project = load_project(demo)
    path = save_results(project, "backtest", {"methods": []})
    path.write_text("{not json", encoding="utf-8")

    result = run("backtest", "--history", "--project", demo)

    assert result.exit_code == 1
    message = " ".join(result.output.split())
    assert f"{path} is not valid JSON" in message
    assert "delete it" in message


def test_unknown_results_name_rejected(demo):
    with pytest.raises(ValueError, match="unknown results 'learn'"):
        save_results(load_project(demo), "learn", {})
