"""Stored runs of `healthscore backtest` and `healthscore compare`.

Each run is stored under `<models>/<command>.runs/`, with the scorecard versions and
config key it ran under, and the latest one stays in `<models>/<command>.json`,
where the report and the web service read it. Results stored before runs were kept
(one JSON file) are listed as a run and copied into the runs folder by the next run.
After each run, the runs beyond `validation.keep_runs` are deleted, oldest first.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from healthscore.config import load_project
from healthscore.models.persist import (
    list_runs,
    load_results,
    prune_runs,
    save_results,
)
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


# Deleting old runs (validation.keep_runs)


def set_keep_runs(root: Path, keep: int | str) -> None:
    """Set validation.keep_runs in the project file, which has no validation section."""
    config = root / "healthscore.yml"
    text = config.read_text(encoding="utf-8")
    assert "\nvalidation:" not in text
    config.write_text(f"{text}\nvalidation:\n  keep_runs: {keep}\n", encoding="utf-8")


def run_names(root: Path, command: str = "backtest") -> set[str]:
    return {path.name for path in (models(root) / f"{command}.runs").iterdir()}


def stored_run(run_id: str, command: str, splits: str) -> dict[str, Any]:
    """A run file's content as `save_results` writes it, with the fields read back."""
    return {
        "splits": splits,
        "methods": [],
        "run": {
            "id": run_id,
            "command": command,
            "created_at": f"{run_id[:4]}-{run_id[4:6]}-{run_id[6:8]}T00:00:00+00:00",
            "scorecard_versions": {},
            "config_key": "0" * 16,
            "healthscore_version": "0",
            "snapshot_scorecard_versions": None,
        },
    }


def test_keep_runs_deletes_oldest_runs(demo):
    set_keep_runs(demo, 3)
    project = load_project(demo)
    compare_paths = [
        save_results(project, "compare", {"splits": f"c{index}", "methods": []})
        for index in range(4)
    ]
    runs = models(demo) / "backtest.runs"
    runs.mkdir(parents=True)
    (runs / "notes.txt").write_text("kept by hand\n", encoding="utf-8")
    (runs / "summary.json").write_text('{"kept": true}\n', encoding="utf-8")

    paths = [
        save_results(project, "backtest", {"splits": str(index), "methods": []})
        for index in range(5)
    ]

    latest = json.loads((models(demo) / "backtest.json").read_text("utf-8"))
    assert run_names(demo) == {
        paths[2].name,
        paths[3].name,
        paths[4].name,
        "notes.txt",
        "summary.json",
    }
    assert (runs / "notes.txt").read_text("utf-8") == "kept by hand\n"
    assert latest["splits"] == "4"
    assert latest["run"]["id"] == paths[4].stem
    assert latest == json.loads(paths[4].read_text("utf-8"))
    assert [stored["splits"] for stored in list_runs(project, "backtest")] == [
        "2",
        "3",
        "4",
    ]
    assert [summary["id"] for summary in history(demo)] == [
        path.stem for path in paths[2:]
    ]
    # Each command keeps its own newest runs.
    assert run_names(demo, "compare") == {path.name for path in compare_paths[1:]}


def test_backtest_runs_pruned_and_history(demo):
    set_keep_runs(demo, 3)
    order: list[str] = []
    for _ in range(4):
        before = run_names(demo) if (models(demo) / "backtest.runs").exists() else set()
        succeeded(run("backtest", "--project", demo))
        (added,) = run_names(demo) - before
        order.append(added.removesuffix(".json"))

    runs = history(demo)
    listing = succeeded(run("backtest", "--history", "--project", demo))
    latest = load_results(load_project(demo), "backtest")

    assert run_names(demo) == {f"{run_id}.json" for run_id in order[1:]}
    assert [summary["id"] for summary in runs] == order[1:]
    assert latest is not None
    assert latest["run"]["id"] == order[-1]
    note = " ".join(listing.stderr.split())
    assert (
        "The newest 3 backtest runs are kept, and older ones are deleted after each "
        "run. Set validation.keep_runs in healthscore.yml to keep more or fewer."
    ) in note
    assert "are stored now" not in note
    assert listing.stdout.count("weighted") == 3


def test_lowered_keep_runs_applies_next_run(demo):
    project = load_project(demo)
    for index in range(5):
        save_results(project, "backtest", {"splits": str(index), "methods": []})
    set_keep_runs(demo, 2)

    listing = succeeded(run("backtest", "--history", "--project", demo))
    note = " ".join(listing.stderr.split())
    assert "The newest 2 backtest runs are kept" in note
    assert "5 runs are stored now, more than 2, so the next run deletes the" in note
    assert len(run_names(demo)) == 5

    path = save_results(load_project(demo), "backtest", {"splits": "5", "methods": []})

    assert [stored["splits"] for stored in list_runs(project, "backtest")] == [
        "4",
        "5",
    ]
    assert path.name in run_names(demo)


def test_keep_one_run_keeps_latest(demo):
    set_keep_runs(demo, 1)
    project = load_project(demo)
    folder = models(demo)
    folder.mkdir(parents=True, exist_ok=True)
    # Results stored before runs were kept are copied into the runs folder as a run,
    # so they count against the setting too.
    (folder / "backtest.json").write_text('{"splits": "old"}', encoding="utf-8")

    path = save_results(project, "backtest", {"splits": "new", "methods": []})
    listing = succeeded(run("backtest", "--history", "--project", demo))

    assert run_names(demo) == {path.name}
    assert load_results(project, "backtest") == json.loads(path.read_text("utf-8"))
    assert "Only the newest backtest run is kept" in " ".join(listing.stderr.split())


def test_half_written_run_file_skipped(demo, caplog):
    set_keep_runs(demo, 2)
    project = load_project(demo)
    first = save_results(project, "backtest", {"splits": "0", "methods": []})
    # A run file cut short, older by its name than every run.
    broken = first.with_name("20200101T000000000000Z-abcdef.json")
    broken.write_text('{"splits": "x", "meth', encoding="utf-8")

    with caplog.at_level(logging.WARNING, logger="healthscore.models.persist"):
        paths = [
            save_results(project, "backtest", {"splits": str(index), "methods": []})
            for index in (1, 2, 3)
        ]

    assert run_names(demo) == {broken.name, paths[1].name, paths[2].name}
    assert broken.read_text("utf-8") == '{"splits": "x", "meth'
    skipped = [
        record.getMessage()
        for record in caplog.records
        if str(broken) in record.getMessage()
    ]
    assert len(skipped) == 3
    assert "cannot be read as JSON" in skipped[0]
    assert "delete it if its run is not needed" in skipped[0]


def test_files_not_written_as_runs_stay(demo, tmp_path, caplog):
    set_keep_runs(demo, 1)
    project = load_project(demo)
    runs = models(demo) / "backtest.runs"
    runs.mkdir(parents=True)
    # A compare run copied into the backtest folder, a run file that records
    # another id, a JSON file without a run key, and a link to a file elsewhere.
    compare_id = "20200101T000000000000Z-aaaaaa"
    copied = runs / f"{compare_id}.json"
    copied.write_text(json.dumps(stored_run(compare_id, "compare", "c")), "utf-8")
    renamed = runs / "20200102T000000000000Z-bbbbbb.json"
    other = stored_run("20200103T000000000000Z-cccccc", "backtest", "r")
    renamed.write_text(json.dumps(other), encoding="utf-8")
    plain = runs / "20200104T000000000000Z-dddddd.json"
    plain.write_text('{"splits": "p"}', encoding="utf-8")
    target = tmp_path / "elsewhere.json"
    linked_id = "20200105T000000000000Z-eeeeee"
    target.write_text(json.dumps(stored_run(linked_id, "backtest", "l")), "utf-8")
    link = runs / f"{linked_id}.json"
    link.symlink_to(target)
    real_id = "20200106T000000000000Z-ffffff"
    real = runs / f"{real_id}.json"
    real.write_text(json.dumps(stored_run(real_id, "backtest", "old")), "utf-8")

    with caplog.at_level(logging.WARNING, logger="healthscore.models.persist"):
        path = save_results(project, "backtest", {"splits": "new", "methods": []})

    assert run_names(demo) == {
        copied.name,
        renamed.name,
        plain.name,
        link.name,
        path.name,
    }
    assert target.is_file()
    warned = " ".join(record.getMessage() for record in caplog.records)
    for skipped in (copied, renamed, plain):
        assert f"skipped {skipped} while deleting old backtest runs" in warned
    assert f"skipped {link} while deleting old backtest runs: it is not a regular" in (
        warned
    )


def test_new_run_kept_after_clock_set_back(demo):
    set_keep_runs(demo, 2)
    project = load_project(demo)
    older = save_results(project, "backtest", {"splits": "old", "methods": []})
    # Runs stored while the clock was ahead have ids later than the next run's.
    ahead = []
    for run_id in ("29991231T235959000000Z-abcdef", "29991231T235959999999Z-abcdef"):
        path = older.with_name(f"{run_id}.json")
        path.write_text(json.dumps(stored_run(run_id, "backtest", "a")), "utf-8")
        ahead.append(path)

    path = save_results(project, "backtest", {"splits": "new", "methods": []})

    assert run_names(demo) == {ahead[1].name, path.name}
    assert load_results(project, "backtest") == json.loads(path.read_text("utf-8"))


def test_prune_runs_without_new_run(demo):
    project = load_project(demo)
    paths = [
        save_results(project, "compare", {"splits": str(index), "methods": []})
        for index in range(4)
    ]
    set_keep_runs(demo, 2)

    deleted = prune_runs(load_project(demo), "compare")

    assert deleted == 2
    assert run_names(demo, "compare") == {paths[2].name, paths[3].name}
    assert prune_runs(load_project(demo), "compare") == 0


def test_run_file_without_run_key_named(demo):
    project = load_project(demo)
    path = save_results(project, "backtest", {"methods": []})
    path.write_text('{"methods": []}', encoding="utf-8")

    result = run("backtest", "--history", "--project", demo)

    assert result.exit_code == 1
    message = " ".join(result.output.split())
    assert f"{path} has no `run` key with an id and created_at" in message


@pytest.mark.parametrize(
    ("value", "problem"),
    [
        ("0", "expected a number of at least 1, got the number 0"),
        ("many", "expected a whole number, got the text 'many'"),
    ],
)
def test_invalid_keep_runs_rejected(demo, value, problem):
    set_keep_runs(demo, value)

    result = run("backtest", "--history", "--project", demo)

    assert result.exit_code == 1
    assert f"validation.keep_runs: {problem}" in " ".join(result.output.split())
