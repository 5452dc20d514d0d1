"""Request bodies of the API: JSON types of fields, and bodies that are not JSON."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from healthscore.config import Project, load_project
from healthscore.monitoring.notes import list_notes
from healthscore.service import create_app
from healthscore.store import StateStore
from service_project import TestClient, bearer, service_project, tokens

API = "/api/v1"
OUTCOME = {"account_id": "a2", "kind": "renewed", "occurred_on": "2026-01-15"}


@pytest.fixture(scope="module")
def template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("template") / "project"
    service_project(root, "sqlite:///.healthscore/state.db")
    return root


@pytest.fixture
def writer(
    template: Path, tmp_path: Path
) -> Iterator[tuple[TestClient, dict[str, str], Project, StateStore]]:
    shutil.copytree(template, tmp_path / "project")
    project = load_project(tmp_path / "project")
    state = StateStore.open(project.config.store.state, project.root)
    app = create_app(project, state=state, rescore=False, deliver_alerts=False)
    with TestClient(app) as client:
        yield client, tokens(state), project, state
    state.close()


def error_of(response: Any, status: int) -> dict[str, Any]:
    assert response.status_code == status, response.text
    error: dict[str, Any] = response.json()["error"]
    return error


@pytest.mark.parametrize(
    ("path", "body", "location"),
    [
        ("/accounts/a2/notes", {"text": "x", "sentiment": True}, "body.sentiment"),
        ("/accounts/a2/notes", {"text": "x", "sentiment": False}, "body.sentiment"),
        ("/accounts/a2/notes", {"text": "x", "sentiment": "3"}, "body.sentiment"),
        ("/accounts/a2/notes", {"text": "x", "sentiment": 3.0}, "body.sentiment"),
        (
            "/accounts/a2/overrides",
            {"score": True, "reason": "r", "expires_on": "2099-01-01"},
            "body.score",
        ),
        (
            "/accounts/a2/overrides",
            {"score": "55", "reason": "r", "expires_on": "2099-01-01"},
            "body.score",
        ),
        (
            "/outcomes",
            {"outcomes": [{**OUTCOME, "arr_before": True}]},
            "body.outcomes[0].arr_before",
        ),
        (
            "/outcomes",
            {"outcomes": [{**OUTCOME, "arr_after": False}]},
            "body.outcomes[0].arr_after",
        ),
    ],
)
def test_number_field_rejects_other_types(writer, path, body, location):
    client, token, _project, state = writer
    response = client.post(f"{API}{path}", headers=bearer(token["admin"]), json=body)
    error = error_of(response, 422)
    assert [detail["location"] for detail in error["details"]] == [location]
    assert list_notes(state, "a2") == []
    assert state.list_overrides(True, account_id="a2") == []


@pytest.mark.parametrize(
    ("path", "body", "location"),
    [
        ("/accounts/a2/notes", {"text": "x", "noted_on": 1767225600}, "body.noted_on"),
        (
            "/accounts/a2/overrides",
            {"score": 50, "reason": "r", "expires_on": 4102444800},
            "body.expires_on",
        ),
        (
            "/outcomes",
            {"outcomes": [{**OUTCOME, "occurred_on": True}]},
            "body.outcomes[0].occurred_on",
        ),
        (
            "/outcomes",
            {"outcomes": [{**OUTCOME, "occurred_on": "1770422400"}]},
            "body.outcomes[0].occurred_on",
        ),
        (
            "/accounts/a2/notes",
            {"text": "x", "noted_on": "2026-02-07T00:00:00"},
            "body.noted_on",
        ),
    ],
)
def test_date_field_rejects_other_forms(writer, path, body, location):
    client, token, _project, _state = writer
    response = client.post(f"{API}{path}", headers=bearer(token["admin"]), json=body)
    error = error_of(response, 422)
    assert [detail["location"] for detail in error["details"]] == [location]
    assert "YYYY-MM-DD" in error["details"][0]["message"]
    assert not error["details"][0]["message"].startswith("Value error")


def test_whole_numbers_accepted(writer):
    client, token, _project, state = writer
    admin = bearer(token["admin"])
    note = client.post(
        f"{API}/accounts/a2/notes", headers=admin, json={"text": "x", "sentiment": 3}
    )
    override = client.post(
        f"{API}/accounts/a2/overrides",
        headers=admin,
        json={"score": 55, "reason": "r", "expires_on": "2099-01-01"},
    )
    outcome = client.post(
        f"{API}/outcomes",
        headers=admin,
        json={"outcomes": [{**OUTCOME, "arr_before": 9000, "arr_after": 9500.5}]},
    )
    assert note.status_code == 201, note.text
    assert override.status_code == 201, override.text
    assert outcome.status_code == 201, outcome.text
    assert [item.sentiment for item in list_notes(state, "a2")] == [3]
    assert override.json()["score"] == 55.0


def test_body_not_utf8_422(writer):
    client, token, _project, state = writer
    headers = {**bearer(token["admin"]), "Content-Type": "application/json"}
    body = b'{\n  "text": "caf\xe9"\n}'
    response = client.post(f"{API}/accounts/a2/notes", headers=headers, content=body)
    error = error_of(response, 422)
    assert error["code"] == "invalid_request"
    assert [detail["location"] for detail in error["details"]] == ["body"]
    message = error["details"][0]["message"]
    # Line 2 has 14 bytes before 0xe9: two spaces and `"text": "caf`.
    assert "byte 0xe9 at line 2, column 15" in message
    assert "UTF-8" in message
    assert list_notes(state, "a2") == []


def test_body_nested_too_deep_422(writer):
    client, token, _project, _state = writer
    headers = {**bearer(token["admin"]), "Content-Type": "application/json"}
    depth = 100_000
    body = '{"text": ' + "[" * depth + "]" * depth + "}"
    response = client.post(f"{API}/accounts/a2/notes", headers=headers, content=body)
    error = error_of(response, 422)
    assert [detail["location"] for detail in error["details"]] == ["body"]
    assert "nested too deeply" in error["details"][0]["message"]
