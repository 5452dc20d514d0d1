"""The API's explanation of a change across a change of scorecard, as `explain`."""

from __future__ import annotations

import copy
import json
from collections.abc import Iterator
from datetime import date
from typing import Any

import pytest
from typer.testing import CliRunner

from healthscore.cli import app as cli_app
from healthscore.config import Project
from healthscore.pipeline import score
from healthscore.service import create_app
from healthscore.store import StateStore
from project_factory import write_project
from service_project import (
    ACCOUNTS,
    DATES,
    LATEST,
    TestClient,
    bearer,
    service_config,
    service_project,
    tokens,
)
from test_dashboard import login

API = "/api/v1"
STATE_URL = "sqlite:///.healthscore/state.db"
PREVIOUS = DATES[-2]
CHANGE_FIELDS = (
    "scorecard",
    "compare_scorecard",
    "scorecard_version",
    "compare_scorecard_version",
    "scorecard_changed",
)


def changed_config() -> dict[str, Any]:
    """The service project's settings with the bounds of events_28d at 0-20, and
    scorecard big for the enterprise account a1."""
    config = service_config(STATE_URL)
    default = config["scorecards"][0]
    measure = default["components"]["usage"]["measures"][0]
    measure["normalize"]["max"] = 20
    big = copy.deepcopy(default)
    big.update(name="big", when="segment == 'enterprise'")
    config["scorecards"] = [big, default]
    return config


def default_version(project: Project) -> str:
    """Return the version of scorecard default in `project`."""
    (card,) = [card for card in project.config.scorecards if card.name == "default"]
    return project.scorecard_version(card)


@pytest.fixture(scope="module")
def rescored(tmp_path_factory: pytest.TempPathFactory) -> tuple[Project, Project]:
    """The service project whose latest date is rescored with changed scorecards.

    Returns the project as it was before the change and as it is after it.
    """
    root = tmp_path_factory.mktemp("service_explain") / "project"
    before = service_project(root, STATE_URL)
    events = (root / "events.csv").read_text()
    files = {"accounts.csv": ACCOUNTS, "events.csv": events}
    after = write_project(root, changed_config(), files)
    score(after, LATEST)
    return before, after


@pytest.fixture(scope="module")
def client(
    rescored: tuple[Project, Project],
) -> Iterator[tuple[TestClient, dict[str, str]]]:
    project = rescored[1]
    state = StateStore.open(project.config.store.state, project.root)
    with TestClient(create_app(project, state=state)) as test_client:
        yield test_client, tokens(state)
    state.close()


def explanation(
    client: tuple[TestClient, dict[str, str]],
    as_of: date,
    compare_to: date,
    account: str = "a2",
) -> dict[str, object]:
    test_client, token = client
    response = test_client.get(
        f"{API}/accounts/{account}/explanation",
        headers=bearer(token["viewer"]),
        params={"as_of": as_of.isoformat(), "compare_to": compare_to.isoformat()},
    )
    assert response.status_code == 200, response.text
    body: dict[str, object] = response.json()
    return body


def cli_explanation(
    project: Project, as_of: date, compare_to: date, account: str = "a2"
) -> dict:
    arguments = ["explain", account, "--as-of", as_of.isoformat(), "--compare-to"]
    arguments += [compare_to.isoformat(), "--project", str(project.root), "--json"]
    result = CliRunner().invoke(cli_app, arguments)
    assert result.exit_code == 0, result.output
    data: dict = json.loads(result.stdout)
    return data


def test_explanation_new_scorecard_version(client, rescored):
    before, after = rescored
    old_version = default_version(before)
    new_version = default_version(after)
    assert old_version != new_version

    body = explanation(client, LATEST, PREVIOUS)

    assert body["scorecard_changed"] is True
    assert body["scorecard"] == "default"
    assert body["compare_scorecard"] == "default"
    assert body["compare_scorecard_version"] == old_version
    assert body["scorecard_version"] == new_version
    # a2 has 5 events in each 28-day window: 5/10 -> 50 before, 5/20 -> 25 after.
    assert body["compare_score"] == 50.0
    assert body["score"] == 25.0


def test_explanation_same_scorecard_version(client, rescored):
    before, _after = rescored
    version = default_version(before)

    body = explanation(client, PREVIOUS, DATES[0])

    assert body["scorecard_changed"] is False
    assert body["scorecard_version"] == version
    assert body["compare_scorecard_version"] == version


def test_explanation_new_scorecard(client):
    body = explanation(client, LATEST, PREVIOUS, account="a1")

    assert body["scorecard_changed"] is True
    assert body["scorecard"] == "big"
    assert body["compare_scorecard"] == "default"


@pytest.mark.parametrize(
    ("account", "as_of", "compare_to"),
    [("a2", LATEST, PREVIOUS), ("a2", PREVIOUS, DATES[0]), ("a1", LATEST, PREVIOUS)],
)
def test_explanation_fields_match_cli(client, rescored, account, as_of, compare_to):
    from_cli = cli_explanation(rescored[1], as_of, compare_to, account)

    body = explanation(client, as_of, compare_to, account)

    for field in CHANGE_FIELDS:
        assert body[field] == from_cli[field], field


def test_dashboard_last_change_notice(client, rescored):
    test_client, token = client
    old_version = default_version(rescored[0])
    new_version = default_version(rescored[1])
    login(test_client, token["viewer"])

    latest = " ".join(test_client.get("/accounts/a2").text.split())
    earlier = " ".join(
        test_client.get(
            "/accounts/a2", params={"as_of": PREVIOUS.isoformat()}
        ).text.split()
    )

    change = latest.split('id="change"', 1)[1].split("</section>", 1)[0]
    assert (
        f"Scorecard default changed between these dates (version {old_version} "
        f"on {PREVIOUS.isoformat()}, {new_version} on {LATEST.isoformat()}), so "
        "part of the change comes from its new settings, not from the account."
    ) in change
    assert "changed between these dates" not in earlier


def test_dashboard_new_scorecard_notice(client):
    test_client, token = client
    login(test_client, token["viewer"])

    page = " ".join(test_client.get("/accounts/a1").text.split())

    change = page.split('id="change"', 1)[1].split("</section>", 1)[0]
    assert (
        "The scorecard changed: default scored the account on 2026-02-01 and big on "
        "2026-03-01, so part of the change comes from the change of scorecard, not "
        "from the account."
    ) in change
