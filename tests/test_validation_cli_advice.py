"""Advice of the validation and model commands when labels come from a column.

The project has 200 accounts scored on one as-of date, and the accounts column
`Churn` labels 8 of them churned. That is fewer than the 10 of each class a fit
needs, and 8 stratified folds are used (one churned account in each fold's test
rows), so every fold trains on 7 churned and 168 retained rows. The column has no
dates, so storing more as-of dates would only repeat its labels, and no advice may
suggest backfilling.
"""

from __future__ import annotations

import json
from datetime import date, timedelta
from pathlib import Path

import pytest
from typer.testing import CliRunner

from healthscore.cli import app
from healthscore.pipeline import score
from project_factory import label_column_config, write_project

AS_OF = date(2024, 3, 1)
ACCOUNTS = 200
CHURNED = 8


def column_files(labels: list[str]) -> dict[str, str]:
    """Accounts with the `Churn` values `labels`, each with one event in March."""
    accounts = ["account_id,segment,Churn"]
    events = ["account_id,timestamp"]
    for i, label in enumerate(labels):
        accounts.append(f"a{i},smb,{label}")
        day = AS_OF - timedelta(days=1 + i % 20)
        events.append(f"a{i},{day.isoformat()}T12:00:00")
    return {
        "accounts.csv": "\n".join(accounts) + "\n",
        "events.csv": "\n".join(events) + "\n",
    }


def few_churned_labels() -> list[str]:
    return ["Yes" if i < CHURNED else "No" for i in range(ACCOUNTS)]


def column_project(root: Path, labels: list[str], scored: bool = True) -> Path:
    project = write_project(root, label_column_config(), column_files(labels))
    if scored:
        score(project, AS_OF, monitor=False)
    return root


@pytest.fixture(scope="module")
def few_churned(tmp_path_factory) -> Path:
    return column_project(tmp_path_factory.mktemp("few_churned"), few_churned_labels())


def run(*args: str, code: int = 0) -> tuple[str, str]:
    """Run the CLI; return stdout and stderr, each as one line of words."""
    result = CliRunner().invoke(app, list(args), env={"COLUMNS": "80"})
    assert result.exit_code == code, result.output
    return unwrapped(result.stdout), unwrapped(result.stderr)


def unwrapped(text: str) -> str:
    return " ".join(text.split())


#: The advice of a step that lacks churned rows on this project.
MORE_CHURNED = (
    "the labels come from the label column (validation.label_column), which has no "
    "dates, so more as-of dates only repeat the same labels; add more churned "
    "accounts to the accounts source"
)


def test_learn_text_prints_method_notes(few_churned, tmp_path):
    _, notes = run(
        "learn",
        "--project",
        str(few_churned),
        "--output",
        str(tmp_path / "proposed.yml"),
    )

    assert (
        "weighted, learned: cross-validated with 8 folds, not validation.folds (10), "
        "because only 8 labelled rows are churned and each fold needs one among its "
        "test rows"
    ) in notes
    assert (
        "learned: fold 1 to fold 8 (8 splits): scorecard default keeps its "
        "configured weights: 7 churned and 168 retained training rows, 10 of each "
        "needed"
    ) in notes
    # The label column's own note already explains the missing lead time.
    assert notes.count("no lead time") == 1


def test_learn_text_notes_match_json(few_churned, tmp_path):
    output = str(tmp_path / "proposed.yml")
    _, notes = run("learn", "--project", str(few_churned), "--output", output)
    result = CliRunner().invoke(
        app, ["learn", "--project", str(few_churned), "--output", output, "--json"]
    )
    payload = json.loads(result.stdout)

    for method in payload["backtest"]:
        for line in method["note"].split("; "):
            if "lead time" not in line:
                assert unwrapped(line) in notes, line


def test_learn_kept_weights_advise_accounts(few_churned, tmp_path):
    stdout, notes = run(
        "learn",
        "--project",
        str(few_churned),
        "--output",
        str(tmp_path / "proposed.yml"),
    )

    assert (
        "scorecard default keeps its weights: too few labelled rows to learn "
        f"scorecard weights: found {CHURNED} churned and 192 retained, and each "
        f"needs at least 10 (validation.min_churned); {MORE_CHURNED}, or lower "
        "validation.min_churned"
    ) in notes
    assert "backfill" not in stdout + notes
    written = (tmp_path / "proposed.yml").read_text()
    assert "backfill" not in written


def test_compare_skips_advise_accounts(few_churned):
    _, notes = run(
        "compare", "--project", str(few_churned), "--methods", "ml,hybrid,survival"
    )

    assert "backfill" not in notes
    assert (
        "ml: fold 1 to fold 8 (8 splits): skipped, too few labelled rows to train a "
        "churn model: found 7 churned and 168 retained, and each needs at least 10; "
        f"{MORE_CHURNED}"
    ) in notes
    assert (
        "survival: fold 1 to fold 8 (8 splits): skipped, too few labelled rows to fit "
        "the survival model of a churn model: found 7 churned and 168 retained, and "
        f"each needs at least 10; {MORE_CHURNED}"
    ) in notes


def test_train_as_of_before_horizon_end(few_churned):
    # The default outcome horizon is 1mo, so the outcome of the snapshot of
    # 2024-03-01 counts as known on 2024-04-01.
    _, error = run(
        "train", "--project", str(few_churned), "--as-of", "2024-03-15", code=1
    )

    assert error == (
        "error: no stored snapshot has a known churn outcome by 2024-03-15: the "
        "label column 'Churn' (validation.label_column) has no dates, so --as-of "
        "counts the outcome of a snapshot as known once its 1mo horizon "
        "(outcomes.horizon) has ended, on 2024-04-01 for the earliest snapshot; give "
        "--as-of 2024-04-01 or later, or leave out --as-of"
    )


def test_train_few_churned_advises_accounts(few_churned):
    _, error = run("train", "--project", str(few_churned), code=1)

    assert error == (
        "error: too few labelled rows to train a churn model: found 8 churned and "
        f"192 retained, and each needs at least 10; {MORE_CHURNED}"
    )


@pytest.mark.parametrize("command", ["backtest", "compare", "learn"])
def test_validation_without_snapshots_advises_score(tmp_path, command):
    root = column_project(tmp_path, few_churned_labels(), scored=False)

    _, error = run(command, "--project", str(root), code=1)

    assert error == (
        "error: no snapshots are stored, and the labels come from the label column "
        "(validation.label_column), which has no dates, so more as-of dates only "
        "repeat the same labels. Store one date with `healthscore score --as-of "
        "DATE`."
    )


@pytest.mark.parametrize("command", ["train", "clusters"])
def test_models_without_snapshots_advise_score(tmp_path, command):
    root = column_project(tmp_path, few_churned_labels(), scored=False)

    _, error = run(command, "--project", str(root), code=1)

    folder = unwrapped(str(root / ".healthscore" / "snapshots"))
    assert error == (
        f"error: no snapshots are stored in {folder}, and the labels come from the "
        "label column (validation.label_column), which has no dates, so more as-of "
        "dates only repeat the same labels; store one date with `healthscore score "
        "--as-of DATE` first"
    )


def test_empty_label_column_backtest_advice(tmp_path):
    root = column_project(tmp_path, [""] * ACCOUNTS)

    stdout, _ = run("backtest", "--project", str(root), code=1)

    assert stdout == (
        "No labelled observations: no observation has a known churn outcome, so "
        "there is nothing to backtest. Labels come from the accounts column 'Churn' "
        "(Yes = churned), set by validation.label_column. No account in the stored "
        "snapshots has a value in 'Churn': fill that column of the accounts source "
        "with each account's churn outcome."
    )


def test_empty_label_column_train_advice(tmp_path):
    root = column_project(tmp_path, [""] * ACCOUNTS)

    _, error = run("train", "--project", str(root), code=1)

    assert error == (
        "error: no account in the stored snapshots has a value in the label column "
        "'Churn' (validation.label_column); fill that column in the accounts source "
        "for the accounts to train on"
    )


def test_all_retained_column_names_no_horizon(tmp_path):
    root = column_project(tmp_path, ["No"] * ACCOUNTS)

    stdout, _ = run("backtest", "--project", str(root), code=1)

    assert stdout.startswith(
        "No churned observations: none of the 200 labelled observations churned, so "
        "there is nothing to measure the scores against and no backtest was run."
    )
    assert "horizon" not in stdout


def test_backtest_of_several_dates_folds_the_latest(tmp_path):
    # Every fifth account is churned: 40 of 200 at each of three dates. The labels
    # repeat at every date, so a split between dates would test the accounts of
    # its training rows. Only the 200 rows of the latest date are measured.
    labels = ["Yes" if i % 5 == 0 else "No" for i in range(ACCOUNTS)]
    project = write_project(tmp_path, label_column_config(), column_files(labels))
    for day in (date(2024, 1, 1), date(2024, 2, 1), AS_OF):
        score(project, day, monitor=False)

    result = CliRunner().invoke(app, ["backtest", "--project", str(tmp_path), "--json"])

    assert result.exit_code == 0, result.output
    payload = json.loads(result.stdout)
    assert payload["splits"] == (
        "10-fold stratified cross-validation on the latest labelled date, 2024-03-01"
    )
    weighted = next(m for m in payload["methods"] if m["method"] == "weighted")
    assert (weighted["rows"], weighted["churned"]) == (200, 40)
    assert [s["test_rows"] for s in weighted["splits"]] == [20] * 10
    assert [s["train_rows"] for s in weighted["splits"]] == [180] * 10
    assert (
        "only the latest date, 2024-03-01, is measured: the labels come from "
        "validation.label_column, which has no dates, so the 2 earlier dates repeat "
        "the same labels"
    ) in weighted["note"]
