"""Overrides through the API: the account's scorecard decides the measures, removal."""

from __future__ import annotations

import re
import shutil
from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from healthscore.config import Project, load_project
from healthscore.pipeline import score
from healthscore.service import create_app
from healthscore.store import StateStore
from healthscore.store.state import OVERRIDE_SUBJECT
from project_factory import write_project
from service_project import (
    ACCOUNTS,
    DATES,
    LATEST,
    TestClient,
    _events,
    bearer,
    service_config,
    tokens,
)

API = "/api/v1"
BODY = {"score": 10, "reason": "usage export is broken", "expires_on": "2999-01-01"}
MEASURE_OPTION = re.compile(r'<option value="([^"]+)">measure ')
CSRF_PATTERN = re.compile(r'name="csrf_token" value="([^"]+)"')

Site = tuple[TestClient, dict[str, str], Project, StateStore]


def two_scorecards(state_url: str) -> dict[str, Any]:
    """The service project's settings with one scorecard per segment.

    Enterprise accounts (a1) are scored on `events_28d`, smb accounts (a2 to a4) on
    `events_7d`, and the partner account a5 matches neither.
    """
    config = service_config(state_url)
    usage = config["scorecards"][0]["components"]["usage"]
    config["metrics"]["events_7d"] = {
        "type": "count",
        "source": "events",
        "window": "7d",
    }
    config["scorecards"] = [
        {"name": "enterprise", "when": "segment == 'enterprise'",
         "components": {"usage": usage}},
        {"name": "smb", "when": "segment == 'smb'",
         "components": {"usage": {"weight": 1, "measures": [
             {"metric": "events_7d",
              "normalize": {"method": "bounds", "min": 0, "max": 10}}]}}},
    ]  # fmt: skip
    return config


def build(root: Path, state_url: str) -> Project:
    """Write the project with two scorecards under `root` and score DATES."""
    files = {
        "accounts.csv": ACCOUNTS + "a5,Hooli,partner,bob,7000\n",
        "events.csv": _events(),
    }
    project = write_project(root, two_scorecards(state_url), files)
    for day in DATES:
        score(project, day)
    return project


def serve(project: Project) -> Iterator[Site]:
    state = StateStore.open(project.config.store.state, project.root)
    app = create_app(project, state=state)
    with TestClient(app, raise_server_exceptions=False) as client:
        yield client, tokens(state), project, state
    state.close()


@pytest.fixture(scope="module")
def template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("overrides") / "project"
    build(root, "sqlite:///.healthscore/state.db")
    return root


@pytest.fixture
def site(template: Path, tmp_path: Path) -> Iterator[Site]:
    """A fresh copy of the scored project on SQLite, served."""
    shutil.copytree(template, tmp_path / "project")
    yield from serve(load_project(tmp_path / "project"))


@pytest.fixture
def any_store(tmp_path: Path, store_url: str) -> Iterator[Site]:
    """The scored project with its store on SQLite or PostgreSQL, served."""
    yield from serve(build(tmp_path / "project", store_url))


def post_override(site: Site, account_id: str, **fields: Any) -> Any:
    client, token, _project, _state = site
    return client.post(
        f"{API}/accounts/{account_id}/overrides",
        headers=bearer(token["analyst"]),
        json={**BODY, **fields},
    )


def error_of(response: Any) -> dict[str, Any]:
    assert response.status_code == 422, response.text
    error: dict[str, Any] = response.json()["error"]
    return error


# Measures of the account's scorecard


def test_measure_of_other_scorecard_rejected(site):
    _client, _token, _project, state = site

    response = post_override(site, "a2", measure="events_28d")

    error = error_of(response)
    assert error["message"] == (
        "measure 'events_28d' is not in scorecard 'smb', which scored account 'a2' "
        "as of 2026-03-01; its measures are: events_7d. Give one of them, or leave "
        "out the measure to override the whole score"
    )
    assert error["details"] == [
        {"location": "body.measure", "message": error["message"]}
    ]
    assert state.list_overrides(True) == []


def test_measure_of_own_scorecard_applies(site):
    client, token, project, _state = site

    created = post_override(site, "a2", measure="events_7d")
    score(project, LATEST)

    assert created.status_code == 201, created.text
    assert created.json()["measure"] == "events_7d"
    explanation = client.get(
        f"{API}/accounts/a2/explanation", headers=bearer(token["viewer"])
    ).json()
    # The only measure of smb now scores 10, so the whole score is 10.
    assert explanation["score"] == 10.0
    measures = {row["measure"]: row for row in explanation["measures"]}
    assert measures["events_7d"]["normalized"] == 10.0


def test_unknown_measure_gets_hint(site):
    response = post_override(site, "a1", measure="event_7d")

    error = error_of(response)
    assert error["message"] == (
        "unknown measure 'event_7d' (did you mean 'events_7d'?); the scorecards' "
        "measures are: events_28d, events_7d"
    )
    assert error["details"][0]["location"] == "body.measure"


def test_measure_of_unrouted_account_rejected(site):
    _client, _token, _project, state = site

    response = post_override(site, "a5", measure="events_7d")

    error = error_of(response)
    assert error["message"] == (
        "account 'a5' matched no scorecard as of 2026-03-01, so it has no measure "
        "'events_7d' to override; check the `when` conditions of the scorecards"
    )
    assert state.list_overrides(True) == []


def test_past_expiry_rejected_at_field(site):
    _client, _token, project, state = site
    today = datetime.now(ZoneInfo(project.config.timezone)).date()
    yesterday = (today - timedelta(days=1)).isoformat()

    response = post_override(site, "a2", expires_on=yesterday)

    error = error_of(response)
    assert error["message"] == (
        f"expires_on {yesterday} is in the past (today is {today.isoformat()}); "
        "choose today or a later date"
    )
    assert error["details"] == [
        {"location": "body.expires_on", "message": error["message"]}
    ]
    assert state.list_overrides(True) == []


def test_expiry_today_accepted(site):
    _client, _token, project, _state = site
    today = datetime.now(ZoneInfo(project.config.timezone)).date()

    response = post_override(site, "a2", expires_on=today.isoformat())

    assert response.status_code == 201, response.text
    assert response.json()["expires_on"] == today.isoformat()


def test_whole_score_override_needs_no_measure(site):
    response = post_override(site, "a2")

    assert response.status_code == 201, response.text
    assert response.json()["measure"] is None


def test_dashboard_form_rejects_other_measure(site):
    client, token, _project, state = site
    csrf = dashboard_login(client, token["admin"])

    response = client.post(
        "/accounts/a2/overrides",
        data={"csrf_token": csrf, **BODY, "measure": "events_28d"},
        follow_redirects=False,
    )

    assert response.status_code == 422
    assert "is not in scorecard &#39;smb&#39;" in response.text
    assert state.list_overrides(True) == []


def test_dashboard_form_offers_own_measures(site):
    client, token, _project, _state = site
    dashboard_login(client, token["admin"])

    offered = {
        account_id: MEASURE_OPTION.findall(client.get(f"/accounts/{account_id}").text)
        for account_id in ("a1", "a2", "a5")
    }

    assert offered == {"a1": ["events_28d"], "a2": ["events_7d"], "a5": []}


def dashboard_login(client: TestClient, token: str) -> str:
    """Log in to the dashboard with `token`; return the session's CSRF token."""
    page = client.get("/login")
    match = CSRF_PATTERN.search(page.text)
    assert match is not None
    response = client.post(
        "/login",
        data={"csrf_token": match.group(1), "token": token, "next": "/"},
        follow_redirects=False,
    )
    assert response.status_code == 303, response.text
    found = CSRF_PATTERN.search(client.get("/").text)
    assert found is not None
    return found.group(1)


# Removal


def test_remove_override_records_audit(any_store):
    client, token, project, state = any_store
    created = post_override(any_store, "a2").json()
    kept = post_override(any_store, "a2", score=30, reason="kept").json()
    path = f"{API}/accounts/a2/overrides/{created['id']}"

    removed = client.delete(path, headers=bearer(token["analyst"]))
    listed = client.get(
        f"{API}/accounts/a2/overrides",
        headers=bearer(token["viewer"]),
        params={"include_expired": "true"},
    ).json()["overrides"]
    again = client.delete(path, headers=bearer(token["analyst"]))

    assert removed.status_code == 200, removed.text
    body = removed.json()
    assert body["id"] == created["id"]
    assert body["account_id"] == "a2"
    assert body["score"] == 10.0
    assert body["removed_by"] == "ana"
    assert body["removed_at"].endswith("Z")
    assert [item["id"] for item in listed] == [kept["id"]]
    entries = state.audit_entries(OVERRIDE_SUBJECT)
    removals = [entry for entry in entries if entry.action == "remove"]
    assert [(e.actor, e.detail["override_id"]) for e in removals] == [
        ("ana", created["id"])
    ]
    assert removals[0].detail["reason"] == "usage export is broken"
    assert again.status_code == 404
    assert "not found, or already removed" in again.json()["error"]["message"]
    # Scoring applies the override that is left.
    score(project, LATEST)
    account = client.get(f"{API}/accounts/a2", headers=bearer(token["viewer"]))
    assert account.json()["score"] == 30.0


def test_remove_override_roles(site):
    client, token, _project, state = site
    override_id = post_override(site, "a1").json()["id"]
    path = f"{API}/accounts/a1/overrides/{override_id}"

    viewer = client.delete(path, headers=bearer(token["viewer"]))
    # The csm token belongs to bob, and a1 is alice's.
    csm = client.delete(path, headers=bearer(token["csm"]))

    assert viewer.status_code == 403
    assert "role viewer is read only" in viewer.json()["error"]["message"]
    assert csm.status_code == 404
    assert csm.json()["error"]["message"].startswith("account 'a1' not found")
    assert [item.id for item in state.list_overrides(True)] == [override_id]


def test_csm_removes_override_of_own_account(site):
    client, token, _project, state = site
    override_id = post_override(site, "a2").json()["id"]

    response = client.delete(
        f"{API}/accounts/a2/overrides/{override_id}", headers=bearer(token["csm"])
    )

    assert response.status_code == 200, response.text
    assert response.json()["removed_by"] == "bob"
    assert state.list_overrides(True) == []


@pytest.mark.parametrize("override_id", ["999", "0", "x"])
def test_remove_unknown_override_404_or_422(site, override_id):
    client, token, _project, _state = site
    post_override(site, "a2")

    response = client.delete(
        f"{API}/accounts/a2/overrides/{override_id}", headers=bearer(token["admin"])
    )

    if override_id == "999":
        assert response.status_code == 404
        assert response.json()["error"]["message"].startswith(
            "override 999 of account 'a2' not found, or already removed"
        )
    else:
        assert response.status_code == 422
        assert response.json()["error"]["details"][0]["location"] == (
            "path.override_id"
        )


def test_remove_override_of_other_account_404(site):
    client, token, _project, state = site
    override_id = post_override(site, "a2").json()["id"]

    response = client.delete(
        f"{API}/accounts/a3/overrides/{override_id}", headers=bearer(token["admin"])
    )

    assert response.status_code == 404
    assert response.json()["error"]["message"].startswith(
        f"override {override_id} of account 'a3' not found"
    )
    assert [item.id for item in state.list_overrides(True)] == [override_id]
