"""Notes of the stored backtest and comparison on the dashboard and in the report.

The project is the churn project of `churn_project` with the direction of every
measure reversed, so its scores rank churn the wrong way round. `backtest` and
`compare` then print notes: the first test date has no churn probability, the
calibrated probabilities of the later ones are constant, and the survival model is
skipped on one date, so it is tested on fewer rows. The /model page and the HTML
report must show the same notes as the commands print.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from html import unescape
from typing import Any

import pytest

from churn_project import SNAPSHOT_DATES, churn_config, churn_files
from healthscore.config import Project
from healthscore.monitoring.backfill import backfill
from healthscore.service import create_app
from healthscore.store import StateStore
from project_factory import write_project
from service_project import TestClient, tokens
from test_cli import run, succeeded
from test_dashboard import login


def reversed_config() -> dict[str, Any]:
    """The churn project's settings with the direction of every measure reversed."""
    config = churn_config()
    for measure in config["scorecards"][0]["components"]["usage"]["measures"]:
        measure["direction"] = (
            "higher" if measure.get("direction") == "lower" else "lower"
        )
    return config


def words(text: str) -> str:
    """Collapse the whitespace of `text`, which the CLI wraps at 80 columns."""
    return " ".join(text.split())


def printed_notes(stderr: str, first_method: str) -> str:
    """Return the method notes of a command's stderr, from the first one on.

    The lines before them count the observations and name the label source.
    """
    start = stderr.index(f"\n{first_method}: ") + 1
    return words(stderr[start:])


def listed(html: str, list_id: str) -> list[str]:
    """Return the items of the list `list_id` of a page, as plain text."""
    found = re.search(rf'<ul [^>]*id="{list_id}"[^>]*>(.*?)</ul>', html, re.DOTALL)
    assert found is not None, f"the page has no list {list_id}"
    items = re.findall(r"<li>(.*?)</li>", found.group(1), re.DOTALL)
    return [words(unescape(item)) for item in items]


def table_cells(html: str, heading_id: str) -> list[list[str]]:
    """Return the body cells of the first table after the heading `heading_id`."""
    after = html.split(f'id="{heading_id}"', 1)[1]
    body = after.split("<tbody>", 1)[1].split("</tbody>", 1)[0]
    rows = re.findall(r"<tr>(.*?)</tr>", body, re.DOTALL)
    return [
        [
            words(unescape(cell))
            for cell in re.findall(r"<t[dh][^>]*>(.*?)</t[dh]>", row)
        ]
        for row in rows
    ]


@pytest.fixture(scope="module")
def reversed_project(
    tmp_path_factory: pytest.TempPathFactory,
) -> tuple[Project, dict[str, str]]:
    """The project with its backtest and comparison stored, and their stderr."""
    root = tmp_path_factory.mktemp("reversed") / "project"
    project = write_project(root, reversed_config(), churn_files())
    backfill(project, SNAPSHOT_DATES)
    backtest = succeeded(run("backtest", "--project", root))
    compare = succeeded(
        run("compare", "--project", root, "--methods", "rules,weighted,survival")
    )
    return project, {"backtest": backtest.stderr, "compare": compare.stderr}


@pytest.fixture
def model_page(reversed_project) -> Iterator[str]:
    project, _ = reversed_project
    state = StateStore.open(project.config.store.state, project.root)
    try:
        with TestClient(create_app(project, state=state)) as client:
            login(client, tokens(state)["viewer"])
            response = client.get("/model")
            assert response.status_code == 200
            yield response.text
    finally:
        state.close()


def test_commands_print_the_notes(reversed_project):
    _, stderr = reversed_project

    backtest = printed_notes(stderr["backtest"], "weighted")
    assert "the calibrated churn probabilities are constant" in backtest
    assert "no churn probability" in backtest
    compare = printed_notes(stderr["compare"], "rules")
    assert "survival: tested on" in compare


def test_model_page_shows_backtest_notes(reversed_project, model_page):
    _, stderr = reversed_project

    notes = listed(model_page, "backtest-notes")

    assert " ".join(notes) == printed_notes(stderr["backtest"], "weighted")
    assert any("probabilities are constant" in line for line in notes)


def test_model_page_shows_compare_notes(reversed_project, model_page):
    _, stderr = reversed_project

    notes = listed(model_page, "compare-notes")

    assert " ".join(notes) == printed_notes(stderr["compare"], "rules")
    assert any(line.startswith("survival: tested on") for line in notes)


def test_model_page_shows_test_rows(reversed_project, model_page):
    project, _ = reversed_project
    stored = json.loads(
        (project.root / ".healthscore" / "models" / "compare.json").read_text()
    )
    expected = [[row["method"], f"{row['rows']:,}"] for row in stored["methods"]]

    cells = table_cells(model_page, "compare")

    assert [row[:2] for row in cells] == expected
    # The survival model is skipped on the first test date, so it has fewer rows.
    assert stored["methods"][2]["rows"] < stored["methods"][1]["rows"]


def test_report_shows_backtest_notes(reversed_project):
    project, stderr = reversed_project
    as_of = SNAPSHOT_DATES[-1].isoformat()
    succeeded(run("report", "--project", project.root, "--as-of", as_of))
    page = (project.root / "output" / f"report-{as_of}.html").read_text("utf-8")

    backtest = listed(page, "models-backtest-notes")
    compare = listed(page, "models-compare-notes")

    assert " ".join(backtest) == printed_notes(stderr["backtest"], "weighted")
    assert " ".join(compare) == printed_notes(stderr["compare"], "rules")
    # The reliability curve is drawn, and a note states what it cannot show.
    assert 'id="models-reliability"' in page
    assert any("probabilities are constant" in line for line in backtest)


def test_report_notes_of_older_runs():
    from healthscore.report.models import stored_notes

    # Runs stored before `method_notes` list each method's note after its name.
    stored = {
        "notes": ["the label column 'Churn' has no dates"],
        "methods": [
            {"method": "weighted", "note": ""},
            {"method": "ml", "note": "2024-03-01: skipped, too few rows"},
        ],
    }

    assert stored_notes(stored) == [
        "the label column 'Churn' has no dates",
        "ml: 2024-03-01: skipped, too few rows",
    ]
    assert stored_notes(None) == []


def test_report_notes_of_unmeasured_run():
    from healthscore.report.models import stored_notes

    stored = {
        "notes": [],
        "note": "No churned observations: none of the 9 labelled observations churned.",
        "method_notes": [],
        "methods": [],
    }

    assert stored_notes(stored) == [stored["note"]]
