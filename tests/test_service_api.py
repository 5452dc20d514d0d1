"""The REST API: routes against a scored project, roles, tokens and the error shape."""

from __future__ import annotations

import asyncio
import csv
import io
import json
import logging
import re
import shutil
import socket
from collections.abc import Iterator
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
import yaml
from sqlalchemy import select, update
from typer.testing import CliRunner

from healthscore.cli import app as cli_app
from healthscore.config import Project, load_project
from healthscore.models.persist import save_results
from healthscore.pipeline import score
from healthscore.service import create_app
from healthscore.service import tokens as tokens_module
from healthscore.service.csv_export import csv_response
from healthscore.service.middleware import ServiceMiddleware
from healthscore.service.routers import accounts as accounts_routes
from healthscore.service.tokens import (
    create_token,
    list_tokens,
    revoke_token,
    verify_token,
)
from healthscore.store import StateStore
from healthscore.store.tables_tokens import api_tokens
from service_project import LATEST, TestClient, bearer, service_project, tokens

API = "/api/v1"


@pytest.fixture(scope="module")
def scored(tmp_path_factory: pytest.TempPathFactory) -> Project:
    """One scored project shared by the read-only tests of this module."""
    root = tmp_path_factory.mktemp("service") / "project"
    return service_project(root, "sqlite:///.healthscore/state.db")


@pytest.fixture(scope="module")
def reader(scored: Project) -> Iterator[tuple[TestClient, dict[str, str]]]:
    state = StateStore.open(scored.config.store.state, scored.root)
    with TestClient(create_app(scored, state=state)) as client:
        yield client, tokens(state)
    state.close()


@pytest.fixture(scope="module")
def template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A scored project folder that the tests which change state copy."""
    root = tmp_path_factory.mktemp("template") / "project"
    service_project(root, "sqlite:///.healthscore/state.db")
    return root


@pytest.fixture
def writer(
    template: Path, tmp_path: Path
) -> Iterator[tuple[TestClient, dict[str, str], Project]]:
    """A fresh copy of the scored project per test, for tests that change state."""
    shutil.copytree(template, tmp_path / "project")
    project = load_project(tmp_path / "project")
    state = StateStore.open(project.config.store.state, project.root)
    app = create_app(project, state=state)
    with TestClient(app, raise_server_exceptions=False) as client:
        yield client, tokens(state), project
    state.close()


def get(client: TestClient, token: str, path: str, **params: Any) -> Any:
    response = client.get(f"{API}{path}", headers=bearer(token), params=params)
    assert response.status_code == 200, response.text
    return response.json()


def ids(items: list[dict[str, Any]]) -> list[str]:
    return [item["account_id"] for item in items]


# Accounts


def test_accounts_sorted_by_score(reader):
    client, token = reader
    body = get(client, token["admin"], "/accounts")
    assert body["as_of"] == LATEST.isoformat()
    assert body["total"] == 4
    assert ids(body["items"]) == ["a3", "a1", "a2", "a4"]
    assert [item["score"] for item in body["items"]] == [0.0, 20.0, 50.0, 80.0]
    assert [item["band"] for item in body["items"]] == [
        "at_risk",
        "at_risk",
        "stable",
        "healthy",
    ]


def test_accounts_trend_of_drop(reader):
    client, token = reader
    body = get(client, token["admin"], "/accounts/a1")
    # 20 on 2026-03-01 against 100 on 2026-02-01, the snapshot nearest 30 days back.
    assert body["change_30d"] == -80.0
    assert body["trend"] == "down"
    assert body["owner"] == "alice"
    assert body["segment"] == "enterprise"
    assert body["arr"] == 120000.0


@pytest.mark.parametrize(
    ("params", "expected", "total"),
    [
        ({"band": "at_risk"}, ["a3", "a1"], 2),
        ({"segment": "enterprise"}, ["a1"], 1),
        ({"owner": "bob"}, ["a3", "a2"], 2),
        ({"trend": "down"}, ["a1"], 1),
        ({"sort": "-score"}, ["a4", "a2", "a1", "a3"], 4),
        ({"sort": "-arr"}, ["a1", "a2", "a3", "a4"], 4),
        ({"sort": "account_id", "limit": 2, "offset": 1}, ["a2", "a3"], 4),
        ({"as_of": "2026-01-01", "sort": "-score"}, ["a1", "a2", "a3", "a4"], 4),
    ],
)
def test_accounts_filter_sort_page(reader, params, expected, total):
    client, token = reader
    body = get(client, token["analyst"], "/accounts", **params)
    assert ids(body["items"]) == expected
    assert body["total"] == total


def test_account_history_and_components(reader):
    client, token = reader
    history = get(client, token["viewer"], "/accounts/a1/history")["history"]
    components = get(client, token["viewer"], "/accounts/a4/components")
    assert [point["score"] for point in history] == [100.0, 100.0, 20.0]
    assert [point["as_of"] for point in history] == [
        "2026-01-01",
        "2026-02-01",
        "2026-03-01",
    ]
    assert components["components"][0]["component"] == "usage"
    assert components["components"][0]["score"] == 80.0


def test_explanation_adds_up(reader):
    client, token = reader
    one = get(client, token["viewer"], "/accounts/a4/explanation")
    change = get(
        client, token["viewer"], "/accounts/a1/explanation", compare_to="2026-02-01"
    )
    assert one["score"] == 80.0
    assert sum(row["contribution"] for row in one["measures"]) == pytest.approx(80.0)
    assert one["measures"][0]["value"] == 8.0
    assert change["change"] == -80.0
    assert change["sum_of_parts"] == pytest.approx(-80.0, abs=1e-9)
    assert [part["measure"] for part in change["parts"]] == ["events_28d"]


def test_forecast_of_account(reader):
    client, token = reader
    body = get(client, token["viewer"], "/accounts/a1/forecast")
    assert body["account_id"] == "a1"
    assert body["score"] == 20.0
    assert body["change_30d"] == -80.0
    # Four accounts give fewer examples than a horizon needs, so no forecast yet.
    assert body["score_30d"] is None
    assert "no snapshots far enough apart" in body["method"]


def test_forecast_missing_module_404(reader, monkeypatch):
    client, token = reader
    monkeypatch.setattr(accounts_routes, "_forecast_function", lambda: None)
    response = client.get(f"{API}/accounts/a1/forecast", headers=bearer(token["admin"]))
    assert response.status_code == 404
    assert "no forecast is available" in response.json()["error"]["message"]


def test_portfolio_by_owner(reader):
    client, token = reader
    rows = get(
        client, token["viewer"], "/portfolio", by="owner", **{"from": "2026-03-01"}
    )
    by_group = {row["group"]: row for row in rows["rows"]}
    assert {row["as_of"] for row in rows["rows"]} == {"2026-03-01"}
    assert set(by_group) == {"alice", "bob", "(none)"}
    bob = by_group["bob"]
    assert bob["accounts"] == 2
    assert bob["mean_score"] == 25.0
    assert bob["arr"] == 13000.0
    assert bob["at_risk_arr"] == 4000.0
    assert (bob["band_at_risk"], bob["band_stable"], bob["band_healthy"]) == (1, 1, 0)
    assert by_group["(none)"]["band_healthy"] == 1


def test_portfolio_by_band_over_time(reader):
    client, token = reader
    rows = get(client, token["viewer"], "/portfolio", by="band")["rows"]
    counts = {(row["as_of"], row["group"]): row["accounts"] for row in rows}
    assert counts[("2026-01-01", "at_risk")] == 2
    assert counts[("2026-01-01", "healthy")] == 1
    assert counts[("2026-03-01", "at_risk")] == 2
    assert counts[("2026-03-01", "healthy")] == 1


def test_portfolio_range_reversed_422(reader):
    client, token = reader
    response = client.get(
        f"{API}/portfolio",
        headers=bearer(token["viewer"]),
        params={"from": "2026-03-01", "to": "2026-01-01"},
    )
    error = assert_error_shape(response, 422, "invalid_request")
    message = (
        "the range ends (2026-01-01) before it starts (2026-03-01); "
        "give `to` on or after `from`"
    )
    assert error["details"] == [{"location": "query.to", "message": message}]


def test_scorecard_and_backtest(reader, scored):
    client, token = reader
    card = get(client, token["viewer"], "/scorecard")
    missing = client.get(f"{API}/backtest", headers=bearer(token["viewer"]))
    save_results(scored, "backtest", {"methods": [{"name": "rules", "auc": 0.71}]})
    stored = get(client, token["viewer"], "/backtest")
    assert [item["name"] for item in card["scorecards"]] == ["default"]
    assert set(card["versions"]) == {"default"}
    assert [band["name"] for band in card["bands"]] == ["at_risk", "stable", "healthy"]
    assert missing.status_code == 404
    assert "healthscore backtest" in missing.json()["error"]["message"]
    assert stored["methods"] == [{"name": "rules", "auc": 0.71}]
    assert stored["run"]["command"] == "backtest"
    assert stored["run"]["scorecard_versions"] == card["versions"]


# Exports


def read_csv(text: str) -> list[dict[str, str]]:
    return list(csv.DictReader(io.StringIO(text)))


def test_export_accounts_csv(reader):
    client, token = reader
    response = client.get(
        f"{API}/exports/accounts.csv",
        headers=bearer(token["admin"]),
        params={"band": "at_risk"},
    )
    rows = read_csv(response.text)
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/csv")
    assert "accounts-2026-03-01.csv" in response.headers["content-disposition"]
    assert [row["account_id"] for row in rows] == ["a3", "a1"]
    assert [float(row["score"]) for row in rows] == [0.0, 20.0]


def test_export_history_csv_for_csm(reader):
    client, token = reader
    response = client.get(f"{API}/exports/history.csv", headers=bearer(token["csm"]))
    rows = read_csv(response.text)
    assert len(rows) == 6
    assert {row["account_id"] for row in rows} == {"a2", "a3"}


def test_csv_neutralizes_formulas():
    frame = pd.DataFrame(
        {"name": ["=HYPERLINK(1)", "+x", "@y", "plain"], "value": [-5.0, 1.0, 2.0, 3.0]}
    )
    rows = read_csv(csv_response(frame, "x.csv").body.decode())
    assert [row["name"] for row in rows] == ["'=HYPERLINK(1)", "'+x", "'@y", "plain"]
    assert rows[0]["value"] == "-5.0"


# Roles


def test_csm_sees_own_accounts_only(reader):
    client, token = reader
    listed = get(client, token["csm"], "/accounts")
    other = client.get(f"{API}/accounts/a1", headers=bearer(token["csm"]))
    unknown = client.get(f"{API}/accounts/zz", headers=bearer(token["csm"]))
    alerts = get(client, token["csm"], "/alerts")["alerts"]
    listed_tasks = get(client, token["csm"], "/tasks")["tasks"]
    assert ids(listed["items"]) == ["a3", "a2"]
    assert other.status_code == 404
    # An account of another owner looks exactly like an unknown one.
    assert other.json()["error"]["message"] == unknown.json()["error"][
        "message"
    ].replace("'zz'", "'a1'")
    assert alerts == []
    assert {task["account_id"] for task in listed_tasks} <= {"a2", "a3"}
    assert listed_tasks


@pytest.mark.parametrize(
    "path",
    [
        "/accounts/a1/history",
        "/accounts/a1/components",
        "/accounts/a1/explanation",
        "/accounts/a1/alerts",
        "/accounts/a1/tasks",
        "/accounts/a1/notes",
        "/accounts/a1/overrides",
        "/accounts/a1/forecast",
    ],
)
def test_csm_other_account_routes_404(reader, path):
    client, token = reader
    response = client.get(f"{API}{path}", headers=bearer(token["csm"]))
    assert response.status_code == 404


def test_unscored_account_routes_404(writer):
    client, token, project = writer
    accounts = project.root / "accounts.csv"
    accounts.write_text(accounts.read_text() + "a5,Hooli,smb,bob,7000\n")
    admin = bearer(token["admin"])
    for path in ("", "/components", "/explanation", "/forecast"):
        response = client.get(f"{API}/accounts/a5{path}", headers=admin)
        error = assert_error_shape(response, 404, "not_found")
        assert "a5" in error["message"], path
    # The account is known, so its empty history is not an error.
    history = get(client, token["admin"], "/accounts/a5/history")
    assert history["history"] == []


def remove_globex(project: Project) -> None:
    """Remove a2 (Globex, owner bob, 50 points on each stored date) from the source."""
    accounts = project.root / "accounts.csv"
    accounts.write_text(accounts.read_text().replace("a2,Globex,smb,bob,9000\n", ""))


def test_removed_account_keeps_stored_scores(writer):
    client, token, project = writer
    remove_globex(project)
    admin = token["admin"]

    row = get(client, admin, "/accounts/a2")
    history = get(client, admin, "/accounts/a2/history")
    components = get(client, admin, "/accounts/a2/components", as_of="2026-02-01")
    explanation = get(client, admin, "/accounts/a2/explanation")

    assert row["as_of"] == "2026-03-01"
    assert row["score"] == 50.0
    assert row["band"] == "stable"
    assert row["in_accounts_source"] is False
    assert row["name"] is None
    assert row["owner"] is None
    assert [point["score"] for point in history["history"]] == [50.0, 50.0, 50.0]
    assert history["in_accounts_source"] is False
    assert components["components"][0]["component"] == "usage"
    assert components["components"][0]["score"] == 50.0
    assert components["in_accounts_source"] is False
    assert explanation["score"] == 50.0
    assert explanation["measures"][0]["value"] == 5.0
    for path in ("/alerts", "/tasks", "/notes", "/overrides", "/forecast"):
        assert get(client, admin, f"/accounts/a2{path}")["account_id"] == "a2", path
    assert get(client, admin, "/accounts/a1")["in_accounts_source"] is True


def test_removed_account_rejects_changes(writer):
    client, token, project = writer
    remove_globex(project)

    note = client.post(
        f"{API}/accounts/a2/notes",
        headers=bearer(token["admin"]),
        json={"text": "Moved to a competitor"},
    )
    # The csm token of bob reads only the accounts that bob owns in the accounts source.
    by_csm = client.get(f"{API}/accounts/a2", headers=bearer(token["csm"]))
    never_scored = client.get(f"{API}/accounts/a9", headers=bearer(token["admin"]))

    error = assert_error_shape(note, 404, "not_found")
    assert "'a2' is no longer in the accounts source" in error["message"]
    assert by_csm.status_code == 404
    assert "account 'a2' not found" in by_csm.json()["error"]["message"]
    assert never_scored.status_code == 404
    assert "account 'a9' not found" in never_scored.json()["error"]["message"]


def test_removed_account_after_later_run(writer):
    client, token, project = writer
    remove_globex(project)
    # The run of 2026-04-01 scores the accounts of accounts.csv, so it leaves a2 out.
    score(load_project(project.root), date(2026, 4, 1))
    admin = bearer(token["admin"])

    latest = client.get(f"{API}/accounts/a2", headers=admin)
    earlier = get(client, token["admin"], "/accounts/a2", as_of="2026-03-01")
    history = get(client, token["admin"], "/accounts/a2/history")

    error = assert_error_shape(latest, 404, "not_found")
    assert "has no score as of 2026-04-01" in error["message"]
    assert "its latest stored score is as of 2026-03-01" in error["message"]
    assert earlier["score"] == 50.0
    assert earlier["in_accounts_source"] is False
    assert [point["as_of"] for point in history["history"]] == [
        "2026-01-01",
        "2026-02-01",
        "2026-03-01",
    ]


def test_removed_account_marked_in_list(writer):
    client, token, project = writer
    remove_globex(project)

    listed = get(client, token["admin"], "/accounts", sort="account_id")
    exported = client.get(
        f"{API}/exports/accounts.csv",
        headers=bearer(token["admin"]),
        params={"sort": "account_id"},
    )
    rows = read_csv(exported.text)

    items = {item["account_id"]: item for item in listed["items"]}
    assert ids(listed["items"]) == ["a1", "a2", "a3", "a4"]
    assert items["a2"]["in_accounts_source"] is False
    assert items["a2"]["name"] is None
    assert items["a2"]["owner"] is None
    assert items["a2"]["score"] == 50.0
    assert items["a1"]["in_accounts_source"] is True
    assert items["a1"]["name"] == "Acme"
    assert exported.status_code == 200
    assert [row["account_id"] for row in rows] == ["a1", "a2", "a3", "a4"]
    assert [row["in_accounts_source"] for row in rows] == [
        "True",
        "False",
        "True",
        "True",
    ]
    assert rows[1]["name"] == ""
    assert rows[1]["owner"] == ""


def test_removed_account_keeps_stored_attributes(tmp_path):
    root = tmp_path / "project"
    service_project(root, "sqlite:///.healthscore/state.db", scored=False)
    config = yaml.safe_load((root / "healthscore.yml").read_text())
    # Attribute metrics store each account's name and owner in the snapshot.
    config["metrics"]["account_name"] = {"type": "attribute", "column": "name"}
    config["metrics"]["account_owner"] = {"type": "attribute", "column": "owner"}
    config["metrics"]["account_arr"] = {"type": "attribute", "column": "arr"}
    (root / "healthscore.yml").write_text(yaml.safe_dump(config, sort_keys=False))
    project = load_project(root)
    score(project, LATEST)
    remove_globex(project)
    state = StateStore.open(project.config.store.state, project.root)
    with TestClient(create_app(project, state=state)) as client:
        token = tokens(state)
        listed = get(client, token["admin"], "/accounts", owner="bob")
        row = get(client, token["admin"], "/accounts/a2")
        exported = client.get(
            f"{API}/exports/accounts.csv",
            headers=bearer(token["admin"]),
            params={"owner": "bob", "sort": "account_id"},
        )
        by_csm = client.get(f"{API}/accounts/a2", headers=bearer(token["csm"]))
        listed_by_csm = get(client, token["csm"], "/accounts")
    state.close()
    rows = read_csv(exported.text)

    assert ids(listed["items"]) == ["a3", "a2"]
    assert row["name"] == "Globex"
    assert row["owner"] == "bob"
    assert row["arr"] == 9000.0
    assert row["segment"] is None
    assert row["in_accounts_source"] is False
    assert [row["account_id"] for row in rows] == ["a2", "a3"]
    assert rows[0]["name"] == "Globex"
    assert rows[0]["in_accounts_source"] == "False"
    # A csm token reads an account's owner from the accounts source only.
    assert by_csm.status_code == 404
    assert ids(listed_by_csm["items"]) == ["a3"]


def test_removed_account_scoped_routes_marked(writer):
    client, token, project = writer
    remove_globex(project)
    admin = token["admin"]
    paths = [
        "/explanation",
        "/forecast",
        "/alerts",
        "/tasks",
        "/notes",
        "/overrides",
    ]

    for path in paths:
        removed = get(client, admin, f"/accounts/a2{path}")
        kept = get(client, admin, f"/accounts/a1{path}")
        assert removed["account_id"] == "a2", path
        assert removed["in_accounts_source"] is False, path
        assert kept["in_accounts_source"] is True, path
    compared = get(client, admin, "/accounts/a2/explanation", compare_to="2026-01-01")
    assert compared["in_accounts_source"] is False
    assert compared["change"] == 0.0


def test_viewer_cannot_write(writer):
    client, token, _project = writer
    note = client.post(
        f"{API}/accounts/a2/notes", headers=bearer(token["viewer"]), json={"text": "x"}
    )
    ack = client.post(f"{API}/alerts/1/acknowledge", headers=bearer(token["viewer"]))
    listed = get(client, token["admin"], "/accounts/a2/notes")
    assert note.status_code == 403
    assert note.json()["error"]["code"] == "forbidden"
    assert ack.status_code == 403
    assert listed["notes"] == []


# Changes


def test_note_created_by_csm(writer):
    client, token, _project = writer
    created = client.post(
        f"{API}/accounts/a2/notes",
        headers=bearer(token["csm"]),
        json={
            "text": "Renewal call went well",
            "sentiment": 4,
            "noted_on": "2026-02-20",
        },
    )
    listed = get(client, token["admin"], "/accounts/a2/notes")["notes"]
    assert created.status_code == 201
    assert created.json()["author"] == "bob"
    assert [(n["text"], n["sentiment"], n["noted_on"]) for n in listed] == [
        ("Renewal call went well", 4, "2026-02-20")
    ]


def test_note_dated_after_today_rejected_at_its_field(writer):
    client, token, _project = writer
    response = client.post(
        f"{API}/accounts/a2/notes",
        headers=bearer(token["admin"]),
        json={"text": "Kick-off", "noted_on": "2999-01-01"},
    )
    error = assert_error_shape(response, 422, "invalid_request")
    assert error["message"].startswith("note date 2999-01-01 is after today")
    assert error["details"] == [
        {"location": "body.noted_on", "message": error["message"]}
    ]
    assert get(client, token["admin"], "/accounts/a2/notes")["notes"] == []


def test_note_other_owner_rejected(writer):
    client, token, _project = writer
    response = client.post(
        f"{API}/accounts/a1/notes", headers=bearer(token["csm"]), json={"text": "x"}
    )
    assert response.status_code == 404
    assert get(client, token["admin"], "/accounts/a1/notes")["notes"] == []


def test_task_complete_then_conflict(writer):
    client, token, _project = writer
    own = get(client, token["csm"], "/accounts/a2/tasks")["tasks"]
    task_id = own[0]["id"]
    done = client.post(
        f"{API}/tasks/{task_id}/complete",
        headers=bearer(token["csm"]),
        json={"note": "called"},
    )
    again = client.post(
        f"{API}/tasks/{task_id}/complete", headers=bearer(token["csm"]), json={}
    )
    interventions = get(client, token["admin"], "/interventions")["interventions"]
    assert done.status_code == 200
    assert done.json()["state"] == "completed"
    assert done.json()["closed_by"] == "bob"
    assert again.status_code == 409
    assert again.json()["error"]["code"] == "conflict"
    assert [(row["account_id"], row["task_id"]) for row in interventions] == [
        ("a2", task_id)
    ]


def test_task_complete_without_body(writer):
    client, token, _project = writer
    own = get(client, token["csm"], "/accounts/a2/tasks")["tasks"]

    done = client.post(
        f"{API}/tasks/{own[0]['id']}/complete", headers=bearer(token["csm"])
    )

    assert done.status_code == 200, done.text
    assert done.json()["state"] == "completed"
    assert done.json()["note"] is None


def test_alerts_pages_with_offset(reader):
    client, token = reader
    every = get(client, token["admin"], "/alerts")["alerts"]

    pages = [
        get(client, token["admin"], "/alerts", limit=1, offset=offset)["alerts"]
        for offset in range(len(every) + 1)
    ]

    assert every
    assert [page[0]["id"] for page in pages[:-1]] == [row["id"] for row in every]
    assert pages[-1] == []


def test_task_dismiss_of_other_owner_404(writer):
    client, token, _project = writer
    tasks = get(client, token["admin"], "/tasks", state="open")["tasks"]
    alice = [task for task in tasks if task["account_id"] == "a1"]
    response = client.post(
        f"{API}/tasks/{alice[0]['id']}/dismiss",
        headers=bearer(token["csm"]),
        json={"reason": "not mine"},
    )
    by_admin = client.post(
        f"{API}/tasks/{alice[0]['id']}/dismiss",
        headers=bearer(token["admin"]),
        json={"reason": "duplicate of a call"},
    )
    assert response.status_code == 404
    assert by_admin.status_code == 200
    assert by_admin.json()["state"] == "dismissed"
    assert by_admin.json()["note"] == "duplicate of a call"


def test_outcomes_posted_once(writer):
    client, token, _project = writer
    body = {
        "outcomes": [
            {"account_id": "a1", "kind": "churned", "occurred_on": "2026-03-20"},
            {
                "account_id": "a4",
                "kind": "expanded",
                "occurred_on": "2026-03-21",
                "arr_before": 10000,
                "arr_after": 15000,
                "source": "crm",
            },
        ]
    }
    first = client.post(f"{API}/outcomes", headers=bearer(token["admin"]), json=body)
    again = client.post(f"{API}/outcomes", headers=bearer(token["admin"]), json=body)
    listed = get(client, token["admin"], "/outcomes")["outcomes"]
    assert first.status_code == 201
    assert first.json() == {"stored": 2, "skipped": 0}
    assert again.status_code == 201
    assert again.json() == {"stored": 0, "skipped": 2}
    assert [
        (row["account_id"], row["kind"], row["occurred_on"], row["source"])
        for row in listed
    ] == [
        ("a1", "churned", "2026-03-20", "api"),
        ("a4", "expanded", "2026-03-21", "crm"),
    ]
    assert listed[1]["arr_after"] == 15000.0


@pytest.mark.parametrize(
    ("role", "outcome", "status"),
    [
        # bob's csm token does not see alice's account a1.
        ("csm", {"account_id": "a1", "kind": "churned"}, 404),
        ("admin", {"account_id": "nobody", "kind": "churned"}, 404),
        ("viewer", {"account_id": "a2", "kind": "churned"}, 403),
        ("admin", {"account_id": "a2", "kind": "lost"}, 422),
        ("admin", {"account_id": "a2", "kind": "renewed", "arr_after": -1}, 422),
    ],
)
def test_outcomes_rejected_store_nothing(writer, role, outcome, status):
    client, token, _project = writer
    valid = {"account_id": "a2", "kind": "renewed", "occurred_on": "2026-03-02"}
    rejected = {"occurred_on": "2026-03-03", **outcome}
    response = client.post(
        f"{API}/outcomes",
        headers=bearer(token[role]),
        json={"outcomes": [valid, rejected]},
    )
    assert response.status_code == status, response.text
    assert response.json()["error"]["status"] == status
    if outcome["kind"] == "lost":
        details = response.json()["error"]["details"]
        assert [d["location"] for d in details] == ["body.outcomes[1].kind"]
    assert get(client, token["admin"], "/outcomes")["outcomes"] == []


def test_outcomes_conflicting_with_stored_422(writer):
    client, token, _project = writer
    churn = {"account_id": "a2", "kind": "churned", "occurred_on": "2026-03-02"}
    first = client.post(
        f"{API}/outcomes", headers=bearer(token["admin"]), json={"outcomes": [churn]}
    )
    assert first.status_code == 201, first.text

    renewal = {"account_id": "a2", "kind": "renewed", "occurred_on": "2026-03-02"}
    again = {"account_id": "a2", "kind": "churned", "occurred_on": "2026-03-04"}
    response = client.post(
        f"{API}/outcomes",
        headers=bearer(token["admin"]),
        json={"outcomes": [renewal, again]},
    )

    assert response.status_code == 422, response.text
    message = response.json()["error"]["message"]
    assert message.startswith(
        "the request has 2 conflicts between outcomes; nothing was stored:"
    )
    assert (
        "a2 on 2026-03-02: the stored outcome from api records churned but "
        "outcomes[0] records renewed"
    ) in message
    assert (
        "a2: outcomes[1] records churned on 2026-03-04, 2 days after the stored "
        "outcome from api records churned on 2026-03-02, with no outcome between them"
    ) in message
    listed = get(client, token["admin"], "/outcomes")["outcomes"]
    assert [(row["kind"], row["occurred_on"]) for row in listed] == [
        ("churned", "2026-03-02")
    ]


def test_outcomes_repeat_in_request_422(writer):
    client, token, _project = writer
    item = {"account_id": "a2", "kind": "renewed", "occurred_on": "2026-03-02"}
    response = client.post(
        f"{API}/outcomes",
        headers=bearer(token["admin"]),
        json={"outcomes": [item, item]},
    )
    assert response.status_code == 422
    assert "outcomes[1] repeats outcomes[0]" in response.json()["error"]["message"]
    assert response.json()["error"]["details"] == [
        {
            "location": "body.outcomes[1]",
            "message": "repeats body.outcomes[0] (same account_id, kind, occurred_on)",
        }
    ]
    assert get(client, token["admin"], "/outcomes")["outcomes"] == []


@pytest.mark.parametrize("field", ["outcomes", "interventions"])
def test_future_dated_items_rejected_unless_allowed(writer, field):
    client, token, _project = writer
    item = {"account_id": "a2", "occurred_on": "2099-01-01"}
    item |= (
        {"kind": "renewed"}
        if field == "outcomes"
        else {"kind": "training", "author": "ann"}
    )
    today = {**item, "occurred_on": "2026-03-02"}
    body = {field: [today, item]}

    rejected = client.post(f"{API}/{field}", headers=bearer(token["admin"]), json=body)

    assert rejected.status_code == 422, rejected.text
    error = rejected.json()["error"]
    assert error["message"].startswith(f"1 of 2 {field} are dated after today")
    assert [d["location"] for d in error["details"]] == [f"body.{field}[1].occurred_on"]
    assert get(client, token["admin"], f"/{field}")[field] == []

    allowed = client.post(
        f"{API}/{field}?allow_future=true", headers=bearer(token["admin"]), json=body
    )

    assert allowed.status_code == 201, allowed.text
    assert allowed.json()["stored"] == 2


def unknown_items(field: str) -> list[dict[str, Any]]:
    """A known account's item between two of accounts missing from accounts.csv."""
    if field == "outcomes":
        extra = {"kind": "churned"}
    else:
        extra = {"kind": "training", "author": "ann"}
    return [
        {"account_id": "gone1", "occurred_on": "2026-03-02", **extra},
        {"account_id": "a2", "occurred_on": "2026-03-02", **extra},
        {"account_id": "gone2", "occurred_on": "2026-03-03", **extra},
    ]


@pytest.mark.parametrize("field", ["outcomes", "interventions"])
def test_unknown_accounts_stored_when_allowed(writer, field):
    client, token, _project = writer
    body = {field: unknown_items(field)}

    rejected = client.post(f"{API}/{field}", headers=bearer(token["admin"]), json=body)

    assert rejected.status_code == 404, rejected.text
    error = rejected.json()["error"]
    assert error["message"] == (
        f"{field}[0]: account 'gone1' is not in the accounts source (and 1 more); "
        "nothing was stored. Fix the account ids, add the accounts to the accounts "
        "source, or send allow_unknown=true to store them anyway"
    )
    assert error["details"] == [
        {
            "location": f"body.{field}[0].account_id",
            "message": "account 'gone1' not found",
        },
        {
            "location": f"body.{field}[2].account_id",
            "message": "account 'gone2' not found",
        },
    ]
    assert get(client, token["admin"], f"/{field}")[field] == []

    allowed = client.post(
        f"{API}/{field}?allow_unknown=true",
        headers=bearer(token["analyst"]),
        json=body,
    )

    assert allowed.status_code == 201, allowed.text
    assert allowed.json() == {"stored": 3, "skipped": 0}
    listed = get(client, token["admin"], f"/{field}")[field]
    assert sorted(row["account_id"] for row in listed) == ["a2", "gone1", "gone2"]


@pytest.mark.parametrize("field", ["outcomes", "interventions"])
def test_csm_cannot_allow_unknown(writer, field):
    client, token, _project = writer
    own = unknown_items(field)[1]
    url = f"{API}/{field}"

    allowed = client.post(
        f"{url}?allow_unknown=true", headers=bearer(token["csm"]), json={field: [own]}
    )
    unknown = client.post(
        url, headers=bearer(token["csm"]), json={field: [{**own, "account_id": "zz"}]}
    )
    # a1 exists but belongs to alice, so bob's csm token does not see it.
    other = client.post(
        url, headers=bearer(token["csm"]), json={field: [{**own, "account_id": "a1"}]}
    )

    assert allowed.status_code == 403, allowed.text
    assert allowed.json()["error"]["message"] == (
        "role csm cannot send allow_unknown=true, because it changes only the "
        "accounts of its owner; leave it out, or use a token with role admin or "
        "analyst"
    )
    # The same message whether the account is unknown or another owner's.
    assert unknown.status_code == 404
    assert other.status_code == 404
    assert unknown.json()["error"]["message"] == (
        f"{field}[0]: account 'zz' not found; nothing was stored. List the accounts "
        "at /api/v1/accounts"
    )
    assert other.json()["error"]["message"] == (
        unknown.json()["error"]["message"].replace("'zz'", "'a1'")
    )
    assert get(client, token["admin"], f"/{field}")[field] == []


def test_interventions_posted_by_csm(writer):
    client, token, _project = writer
    body = {
        "interventions": [
            {
                "account_id": "a2",
                "kind": "executive_review",
                "occurred_on": "2026-03-05",
                "note": "met the sponsor",
            }
        ]
    }
    created = client.post(
        f"{API}/interventions", headers=bearer(token["csm"]), json=body
    )
    other = client.post(
        f"{API}/interventions",
        headers=bearer(token["csm"]),
        json={"interventions": [{**body["interventions"][0], "account_id": "a1"}]},
    )
    listed = get(client, token["admin"], "/interventions")["interventions"]
    assert created.status_code == 201
    assert created.json() == {"stored": 1, "skipped": 0}
    assert other.status_code == 404
    assert [
        (row["account_id"], row["kind"], row["author"], row["note"], row["task_id"])
        for row in listed
    ] == [("a2", "executive_review", "bob", "met the sponsor", None)]


def test_alert_acknowledge_resolve(writer):
    client, token, _project = writer
    alerts = get(client, token["admin"], "/accounts/a1/alerts")["alerts"]
    alert_id = alerts[0]["id"]
    headers = bearer(token["analyst"])
    acknowledged = client.post(f"{API}/alerts/{alert_id}/acknowledge", headers=headers)
    twice = client.post(f"{API}/alerts/{alert_id}/acknowledge", headers=headers)
    resolved = client.post(f"{API}/alerts/{alert_id}/resolve", headers=headers)
    listed = get(client, token["admin"], "/alerts", state="resolved")["alerts"]
    assert acknowledged.json()["state"] == "acknowledged"
    assert twice.status_code == 409
    assert resolved.json()["state"] == "resolved"
    assert [item["id"] for item in listed] == [alert_id]
    # The analyst token's name is the actor of both changes in the audit log.
    with StateStore.open(_project.config.store.state, _project.root) as state:
        entries = state.audit_entries("alert")
    assert [(e.actor, e.action, e.detail["alert_id"]) for e in entries] == [
        ("ana", "acknowledged", alert_id),
        ("ana", "resolved", alert_id),
    ]


def test_override_created_with_author(writer):
    client, token, _project = writer
    body = {"score": 90, "reason": "renewal signed", "expires_on": "2999-01-01"}
    created = client.post(
        f"{API}/accounts/a2/overrides", headers=bearer(token["analyst"]), json=body
    )
    listed = get(client, token["viewer"], "/accounts/a2/overrides")["overrides"]
    bad_measure = client.post(
        f"{API}/accounts/a2/overrides",
        headers=bearer(token["analyst"]),
        json={**body, "measure": "event_28d"},
    )
    past = client.post(
        f"{API}/accounts/a2/overrides",
        headers=bearer(token["analyst"]),
        json={**body, "expires_on": "2000-01-01"},
    )
    assert created.status_code == 201
    assert created.json()["author"] == "ana"
    assert [(item["score"], item["reason"]) for item in listed] == [
        (90.0, "renewal signed")
    ]
    assert bad_measure.status_code == 422
    assert "events_28d" in bad_measure.json()["error"]["message"]
    assert past.status_code == 422
    assert "in the past" in past.json()["error"]["message"]


def test_overrides_mark_the_one_applied(writer):
    client, token, project = writer
    analyst = bearer(token["analyst"])
    bodies = [
        {"score": 90, "reason": "first", "expires_on": "2999-01-01"},
        {"score": 70, "reason": "second", "expires_on": "2999-01-01"},
        {"score": 10, "reason": "measure", "expires_on": "2999-01-01",
         "measure": "events_28d"},
    ]  # fmt: skip
    created = [
        client.post(f"{API}/accounts/a2/overrides", headers=analyst, json=body)
        for body in bodies
    ]
    with StateStore.open(project.config.store.state, project.root) as state:
        # Set in 2000 and expired since 2001.
        state.add_override(
            "a2",
            score=5,
            reason="expired",
            author="ops",
            expires_on=date(2001, 1, 1),
            now=datetime(2000, 1, 1, tzinfo=UTC),
        )
    listed = get(
        client, token["viewer"], "/accounts/a2/overrides", include_expired="true"
    )["overrides"]

    assert [response.status_code for response in created] == [201, 201, 201]
    assert [response.json()["applies"] for response in created] == [True, True, True]
    applies = {item["reason"]: item["applies"] for item in listed}
    assert applies == {"expired": False, "first": False, "second": True,
                       "measure": True}  # fmt: skip
    # Scoring uses the override marked: the whole score of a2 becomes 70.
    score(project, LATEST)
    assert get(client, token["viewer"], "/accounts/a2")["score"] == 70.0


# Errors


def assert_error_shape(response: Any, status: int, code: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"error"}
    error = body["error"]
    assert set(error) == {"status", "code", "message", "details"}
    assert error["status"] == status
    assert error["code"] == code
    assert error["message"]
    return dict(error)


def test_error_paths_share_one_shape(writer):
    client, token, project = writer
    admin = bearer(token["admin"])

    @client.app.get(f"{API}/crash")  # type: ignore[attr-defined]
    def crash() -> None:
        raise RuntimeError("secret detail of a crash")

    cases = [
        (client.get(f"{API}/accounts"), 401, "unauthorized"),
        (client.get(f"{API}/accounts", headers=bearer("hs_1_" + "x" * 43)), 401,
         "unauthorized"),
        (client.get(f"{API}/accounts", headers={"Authorization": "Basic abc"}), 401,
         "unauthorized"),
        (client.post(f"{API}/accounts/a2/notes", headers=bearer(token["viewer"]),
                     json={"text": "x"}), 403, "forbidden"),
        (client.get(f"{API}/nothing-here", headers=admin), 404, "not_found"),
        (client.get(f"{API}/accounts/zz", headers=admin), 404, "not_found"),
        (client.get(f"{API}/accounts", headers=admin, params={"as_of": "2020-01-01"}),
         404, "not_found"),
        (client.delete(f"{API}/accounts", headers=admin), 405, "method_not_allowed"),
        (client.post(f"{API}/alerts/999/resolve", headers=admin), 404, "not_found"),
        (client.get(f"{API}/accounts", headers=admin, params={"limit": 0}), 422,
         "invalid_request"),
        (client.post(f"{API}/accounts/a2/notes", content=b"{not json",
                     headers={**admin, "Content-Type": "application/json"}),
         422, "invalid_request"),
        (client.post(f"{API}/accounts/a2/notes", headers=admin, content=b"{not json"),
         415, "unsupported_media_type"),
        (client.post(f"{API}/accounts/a2/notes", headers=admin,
                     json={"text": "x", "sentiment": 9}), 422, "invalid_request"),
        (client.post(f"{API}/accounts/a2/notes", headers=admin,
                     content=b"x" * (project.config.service.max_request_bytes + 1)),
         413, "request_too_large"),
        (client.get(f"{API}/crash", headers=admin), 500, "internal_error"),
    ]  # fmt: skip
    for response, status, code in cases:
        assert_error_shape(response, status, code)
    syntax_error = cases[10][0].json()["error"]["details"]
    assert [detail["location"] for detail in syntax_error] == ["body"]
    assert "at line 1, column 2" in syntax_error[0]["message"]
    assert cases[0][0].headers["www-authenticate"] == "Bearer"
    crash_message = cases[-1][0].json()["error"]["message"]
    assert "secret detail" not in crash_message


def test_validation_error_names_field(writer):
    client, token, _project = writer
    response = client.post(
        f"{API}/tasks/1/dismiss", headers=bearer(token["admin"]), json={}
    )
    error = assert_error_shape(response, 422, "invalid_request")
    assert [detail["location"] for detail in error["details"]] == ["body.reason"]


def test_request_limit_configurable(tmp_path):
    project = service_project(
        tmp_path / "p", "sqlite:///.healthscore/state.db", scored=False
    )
    state = StateStore.open(project.config.store.state, project.root)
    token = create_token(state, role="admin", name="ops").token
    app = create_app(project, state=state, max_request_bytes=100)
    with TestClient(app) as client:
        small = client.post(
            f"{API}/accounts/a2/notes", headers=bearer(token), json={"text": "short"}
        )
        large = client.post(
            f"{API}/accounts/a2/notes", headers=bearer(token), json={"text": "y" * 200}
        )
    state.close()
    assert small.status_code == 201
    error = assert_error_shape(large, 413, "request_too_large")
    assert "100 bytes" in error["message"]


def test_health_and_docs_need_no_token(reader):
    client, _token = reader
    schema = client.get("/openapi.json")
    assert client.get("/health").json() == {"status": "ok"}
    assert client.get("/docs").status_code == 200
    assert schema.status_code == 200
    assert schema.json()["components"]["securitySchemes"]["HTTPBearer"]["scheme"] == (
        "bearer"
    )


def test_docs_page_loads_local_assets(reader):
    client, _token = reader
    html = client.get("/docs").text
    assets = re.findall(r'(?:src|href)="([^"]+)"', html)
    assert "http://" not in html
    assert "https://" not in html
    assert any(asset.endswith(".js") for asset in assets)
    for asset in assets:
        assert asset.startswith("/static/"), asset
        assert client.get(asset).status_code == 200, asset


def test_cors_off_by_default(reader, scored):
    client, _token = reader
    preflight = {
        "Origin": "https://crm.example.com",
        "Access-Control-Request-Method": "GET",
    }
    closed = client.options(f"{API}/accounts", headers=preflight)
    state = StateStore.open(scored.config.store.state, scored.root)
    app = create_app(scored, state=state, cors_origins=["https://crm.example.com"])
    with TestClient(app) as open_client:
        opened = open_client.options(f"{API}/accounts", headers=preflight)
    state.close()
    assert "access-control-allow-origin" not in closed.headers
    assert opened.headers["access-control-allow-origin"] == "https://crm.example.com"


def test_cors_allows_removing_an_override(reader, scored):
    state = StateStore.open(scored.config.store.state, scored.root)
    app = create_app(scored, state=state, cors_origins=["https://crm.example.com"])
    preflight = {
        "Origin": "https://crm.example.com",
        "Access-Control-Request-Method": "DELETE",
    }
    with TestClient(app) as client:
        response = client.options(f"{API}/accounts/a1/overrides/1", headers=preflight)
    state.close()
    assert response.status_code == 200
    assert "DELETE" in response.headers["access-control-allow-methods"]


def test_access_log_has_no_personal_data(writer, caplog):
    client, token, _project = writer
    caplog.set_level(logging.INFO, logger="healthscore.service")
    text = "Customer mentioned churn risk privately"
    client.post(
        f"{API}/accounts/a2/notes", headers=bearer(token["csm"]), json={"text": text}
    )
    client.get(f"{API}/accounts/a3", headers=bearer(token["csm"]))
    lines = [
        record.getMessage()
        for record in caplog.records
        if record.name == "healthscore.service.access"
    ]
    logged = "\n".join(record.getMessage() for record in caplog.records)
    csm_id = token["csm"].split("_")[1]
    assert "POST /api/v1/accounts/{account_id}/notes 201" in lines[0]
    assert lines[0].endswith(f"token {csm_id}")
    assert "GET /api/v1/accounts/{account_id} 200" in lines[1]
    assert token["csm"] not in logged
    # The secret is URL-safe base64, which may itself contain "_".
    assert token["csm"].split("_", 2)[2] not in logged
    assert text not in logged
    assert "a3" not in "\n".join(lines)


def test_access_log_names_schema_route(writer, caplog):
    client, _token, _project = writer
    caplog.set_level(logging.INFO, logger="healthscore.service")

    client.get("/openapi.json")
    client.get("/no/such/page")

    lines = [
        record.getMessage()
        for record in caplog.records
        if record.name == "healthscore.service.access"
    ]
    assert lines[0].startswith("GET /openapi.json 200")
    assert lines[1].startswith("GET (no route) 404")


# Tokens


def test_token_round_trip(store_url, tmp_path):
    with StateStore.open(store_url, tmp_path) as state:
        created = create_token(state, role="csm", name="bob", owner="bob")
        verified = verify_token(state, created.token)
        wrong = verify_token(
            state, created.token[:-1] + ("A" if created.token[-1] != "A" else "B")
        )
        with state.engine.connect() as connection:
            stored = connection.execute(select(api_tokens)).one()
        revoke_token(state, created.info.id)
        after = verify_token(state, created.token)
        listed = list_tokens(state)
        listed_all = list_tokens(state, include_revoked=True)
    secret = created.token.split("_", 2)[2]
    assert created.token.startswith(f"hs_{created.info.id}_")
    assert verified is not None
    assert (verified.role, verified.owner) == ("csm", "bob")
    assert wrong is None
    assert secret not in "".join(str(value) for value in stored)
    assert len(stored.secret_sha256) == 64
    assert after is None
    assert listed == []
    assert [item.id for item in listed_all] == [created.info.id]
    assert listed_all[0].revoked_at is not None


def test_revocation_elsewhere_holds_for_cache_time(tmp_path, monkeypatch):
    clock = [1000.0]
    monkeypatch.setattr(tokens_module.time, "monotonic", lambda: clock[0])
    with (
        StateStore.open("sqlite:///state.db", tmp_path) as state,
        StateStore.open("sqlite:///state.db", tmp_path) as other,
    ):
        created = create_token(state, role="viewer", name="v")
        assert verify_token(state, created.token) is not None
        # Revoked as another process would: straight in the store.
        with other.engine.begin() as connection:
            connection.execute(update(api_tokens).values(revoked_at=datetime.now(UTC)))
        clock[0] += tokens_module.ROW_CACHE_SECONDS / 2
        within = verify_token(state, created.token)
        # A wrong secret is never accepted from the cache.
        last = "A" if created.token[-1] != "A" else "B"
        wrong = verify_token(state, created.token[:-1] + last)
        clock[0] += tokens_module.ROW_CACHE_SECONDS
        after = verify_token(state, created.token)
    assert within is not None
    assert after is None
    assert wrong is None


def test_revocation_here_is_immediate(tmp_path):
    with StateStore.open("sqlite:///state.db", tmp_path) as state:
        created = create_token(state, role="viewer", name="v")
        assert verify_token(state, created.token) is not None
        revoke_token(state, created.info.id)
        assert verify_token(state, created.token) is None


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"role": "root", "name": "x"}, "unknown role"),
        ({"role": "csm", "name": "x"}, "needs --owner"),
        ({"role": "admin", "name": " "}, "name must not be empty"),
    ],
)
def test_token_create_rejects(tmp_path, fields, message):
    with StateStore.open("sqlite:///state.db", tmp_path) as state:
        with pytest.raises(ValueError, match=message):
            create_token(state, **fields)
        assert list_tokens(state) == []


@pytest.mark.parametrize(
    "text",
    ["", "hs_", "hs_1_short", "Bearer hs_1_" + "a" * 43, "hs_99_" + "a" * 43],
)
def test_verify_rejects_malformed(tmp_path, text):
    with StateStore.open("sqlite:///state.db", tmp_path) as state:
        create_token(state, role="admin", name="ops")
        assert verify_token(state, text) is None


def test_token_commands(tmp_path):
    project = service_project(
        tmp_path / "p", "sqlite:///.healthscore/state.db", scored=False
    )
    runner = CliRunner()
    folder = ["--project", str(project.root)]
    created = runner.invoke(
        cli_app, ["token", "create", "--role", "csm", "--owner", "bob", *folder]
    )
    token = created.stdout.strip()
    listed = runner.invoke(cli_app, ["token", "list", "--json", *folder])
    token_id = token.split("_")[1]
    revoked = runner.invoke(cli_app, ["token", "revoke", token_id, *folder])
    again = runner.invoke(cli_app, ["token", "revoke", token_id, *folder])
    missing_owner = runner.invoke(
        cli_app, ["token", "create", "--role", "csm", *folder]
    )
    with StateStore.open(project.config.store.state, project.root) as state:
        after = verify_token(state, token)
    assert created.exit_code == 0, created.output
    assert token.startswith("hs_")
    assert '"role": "csm"' in listed.stdout
    assert token.split("_", 2)[2] not in listed.stdout
    assert revoked.exit_code == 0
    assert again.exit_code == 1
    assert "already revoked" in again.output
    assert missing_owner.exit_code == 1
    assert after is None


def test_csm_token_for_unknown_owner_warns(tmp_path):
    project = service_project(
        tmp_path / "p", "sqlite:///.healthscore/state.db", scored=False
    )
    runner = CliRunner()
    folder = ["--project", str(project.root)]

    known = runner.invoke(
        cli_app, ["token", "create", "--role", "csm", "--owner", "bob", *folder]
    )
    unknown = runner.invoke(
        cli_app, ["token", "create", "--role", "csm", "--owner", "Bob", *folder]
    )

    assert known.exit_code == 0, known.output
    assert "warning" not in known.stderr
    assert unknown.exit_code == 0, unknown.output
    assert unknown.stdout.startswith("hs_")
    assert (
        "warning: no account has the owner 'Bob', so this token sees no account "
        "until one has; the owners are alice, bob" in unknown.stderr
    )


def test_serve_uses_configured_address(tmp_path, monkeypatch):
    project = service_project(
        tmp_path / "p", "sqlite:///.healthscore/state.db", scored=False
    )
    calls: list[dict[str, Any]] = []

    def fake_run(app: Any, **options: Any) -> None:
        levels = {
            name: logging.getLogger(name).getEffectiveLevel()
            for name in ("healthscore.monitoring", "healthscore.service.access")
        }
        handlers = [
            type(handler).__name__
            for handler in logging.getLogger("healthscore").handlers
        ]
        calls.append({**options, "levels": levels, "handlers": handlers})

    monkeypatch.setattr("uvicorn.run", fake_run)
    runner = CliRunner()
    default = runner.invoke(cli_app, ["serve", "--project", str(project.root)])
    chosen = runner.invoke(
        cli_app, ["serve", "--port", "8123", "--project", str(project.root)]
    )
    assert default.exit_code == 0, default.output
    assert chosen.exit_code == 0, chosen.output
    assert (calls[0]["host"], calls[0]["port"]) == ("127.0.0.1", 8000)
    assert (calls[1]["host"], calls[1]["port"]) == ("127.0.0.1", 8123)
    assert calls[0]["access_log"] is False
    assert calls[0]["levels"] == {
        "healthscore.monitoring": logging.WARNING,
        "healthscore.service.access": logging.INFO,
    }
    # Plain text lines while serving, no Rich layout.
    assert calls[0]["handlers"] == ["StreamHandler"]


def test_serve_port_in_use(tmp_path):
    project = service_project(
        tmp_path / "p", "sqlite:///.healthscore/state.db", scored=False
    )
    with socket.create_server(("127.0.0.1", 0)) as taken:
        port = taken.getsockname()[1]
        result = CliRunner().invoke(
            cli_app,
            ["serve", "--port", str(port), "--project", str(project.root)],
        )
    assert result.exit_code == 1, result.output
    assert (
        f"error: the service did not start on 127.0.0.1:{port}; the ERROR line above "
        "gives the cause. When the address is in use" in result.stderr
    )
    assert "pass --port with a free port" in result.stderr


def test_serve_secure_cookies_option(tmp_path, monkeypatch):
    project = service_project(
        tmp_path / "p", "sqlite:///.healthscore/state.db", scored=False
    )
    apps: list[Any] = []
    monkeypatch.setattr("uvicorn.run", lambda app, **options: apps.append(app))
    runner = CliRunner()
    folder = ["--project", str(project.root)]
    plain = runner.invoke(cli_app, ["serve", *folder])
    secure = runner.invoke(cli_app, ["serve", "--secure-cookies", *folder])
    assert plain.exit_code == 0, plain.output
    assert secure.exit_code == 0, secure.output
    cookies = []
    for app in apps:
        with TestClient(app) as client:
            cookies.append(client.get("/login").headers["set-cookie"])
    assert "Secure" not in cookies[0]
    assert "Secure" in cookies[1]


def test_created_at_is_aware(tmp_path):
    with StateStore.open("sqlite:///state.db", tmp_path) as state:
        now = datetime(2026, 3, 1, 9, 30, tzinfo=UTC)
        created = create_token(state, role="viewer", name="v", now=now)
        assert list_tokens(state)[0].created_at == now
    assert created.info.created_at.date() == date(2026, 3, 1)


def test_streamed_body_over_limit(tmp_path):
    project = service_project(
        tmp_path / "p", "sqlite:///.healthscore/state.db", scored=False
    )
    state = StateStore.open(project.config.store.state, project.root)
    token = create_token(state, role="admin", name="ops").token
    app = create_app(project, state=state, max_request_bytes=1000)
    # A generator body is sent chunked, without a Content-Length header.
    chunks = (b'{"text": "' + b"z" * 600, b"z" * 600 + b'"}')
    with TestClient(app) as client:
        response = client.post(
            f"{API}/accounts/a2/notes",
            headers={**bearer(token), "Content-Type": "application/json"},
            content=iter(chunks),
        )
        notes = client.get(f"{API}/accounts/a2/notes", headers=bearer(token))
    state.close()
    assert "content-length" not in response.request.headers
    assert_error_shape(response, 413, "request_too_large")
    assert notes.json()["notes"] == []


def test_invalid_content_length_400():
    messages: list[dict[str, Any]] = []

    async def application(scope: Any, receive: Any, send: Any) -> None:
        raise AssertionError("the application must not run")

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        messages.append(message)

    scope = {
        "type": "http",
        "method": "POST",
        "path": "/api/v1/accounts/a2/notes",
        "headers": [(b"content-length", b"12abc")],
    }
    middleware = ServiceMiddleware(application, max_request_bytes=100)
    asyncio.run(middleware(scope, receive, send))
    body = json.loads(messages[1]["body"])
    assert messages[0]["status"] == 400
    assert body["error"]["code"] == "bad_request"
    assert "Content-Length" in body["error"]["message"]


def test_alert_404_hides_store_url(reader, scored):
    client, token = reader
    response = client.get(f"{API}/alerts/99999", headers=bearer(token["admin"]))
    error = assert_error_shape(response, 404, "not_found")
    assert (
        error["message"] == "alert 99999 not found; list the alerts at /api/v1/alerts"
    )
    assert "sqlite" not in response.text
    assert str(scored.root) not in response.text


def test_csm_other_alert_looks_unknown(writer):
    client, token, _project = writer
    alerts = get(client, token["admin"], "/accounts/a1/alerts")["alerts"]
    other_id = alerts[0]["id"]
    unknown_id = 99999
    csm = bearer(token["csm"])
    for method, suffix in (("GET", ""), ("POST", "/acknowledge"), ("POST", "/resolve")):
        other = client.request(method, f"{API}/alerts/{other_id}{suffix}", headers=csm)
        unknown = client.request(
            method, f"{API}/alerts/{unknown_id}{suffix}", headers=csm
        )
        assert other.status_code == 404, (method, suffix, other.text)
        assert unknown.status_code == 404, (method, suffix, unknown.text)
        # Only the requested id differs between the two bodies.
        assert other.text == unknown.text.replace(str(unknown_id), str(other_id))
    # The alert of a1 was left open.
    after = get(client, token["admin"], f"/alerts/{other_id}")
    assert after["state"] == "open"


def test_accounts_unknown_band_422(reader):
    client, token = reader
    response = client.get(
        f"{API}/accounts", headers=bearer(token["admin"]), params={"band": "nope"}
    )
    error = assert_error_shape(response, 422, "invalid_request")
    allowed = "at_risk, stable, healthy, insufficient_data, unscored"
    assert error["message"] == f"invalid band 'nope'; the allowed values are: {allowed}"
    assert error["details"] == [{"location": "query.band", "message": error["message"]}]


def test_date_in_wrong_format_422(reader):
    client, token = reader
    cases = [
        ("01/06/2026", "invalid character in year"),
        ("2026-13-01", "month value is outside expected range of 1-12"),
        ("2026-06-01T10:00:00", "it has a time of day"),
        ("2026-03-01T00:00:00", "it has a time of day"),
        ("1772323200", "a number is not a date"),
    ]
    for value, reason in cases:
        response = client.get(
            f"{API}/accounts", headers=bearer(token["admin"]), params={"as_of": value}
        )
        error = assert_error_shape(response, 422, "invalid_request")
        assert error["details"] == [
            {
                "location": "query.as_of",
                "message": f"invalid date {value!r} ({reason}); "
                "write the date as YYYY-MM-DD, for example 2026-06-01",
            }
        ]


def test_outcome_date_in_wrong_format_422(writer):
    client, token, _project = writer
    outcome = {"account_id": "a1", "kind": "churned", "occurred_on": "20/06/2026"}
    response = client.post(
        f"{API}/outcomes", headers=bearer(token["admin"]), json={"outcomes": [outcome]}
    )
    error = assert_error_shape(response, 422, "invalid_request")
    assert error["details"] == [
        {
            "location": "body.outcomes[0].occurred_on",
            "message": "invalid date '20/06/2026' (invalid character in year); "
            "write the date as YYYY-MM-DD, for example 2026-06-01",
        }
    ]
    assert get(client, token["admin"], "/outcomes") == {"outcomes": []}


def test_accounts_unknown_trend_422(reader):
    client, token = reader
    response = client.get(
        f"{API}/accounts", headers=bearer(token["admin"]), params={"trend": "nope"}
    )
    error = assert_error_shape(response, 422, "invalid_request")
    assert error["details"] == [
        {"location": "query.trend", "message": "Input should be 'up', 'down' or 'flat'"}
    ]


def test_accounts_known_band_and_trend_filter(reader):
    client, token = reader
    # a3 scores 0 on every date, so it is at risk with a flat trend.
    listed = get(client, token["admin"], "/accounts", band="at_risk", trend="flat")
    assert "a3" in ids(listed["items"])
    assert all(item["band"] == "at_risk" for item in listed["items"])
    assert all(item["trend"] == "flat" for item in listed["items"])
