"""A running service returns what the command line shows after snapshots change."""

from __future__ import annotations

import math
import shutil
from collections.abc import Iterator
from datetime import date
from pathlib import Path
from typing import Any

import pytest

from healthscore.config import Project, load_project
from healthscore.monitoring.trends import compute_trends
from healthscore.pipeline import score, snapshot_store
from healthscore.service import create_app
from healthscore.store import StateStore
from service_project import LATEST, TestClient, bearer, service_project, tokens

API = "/api/v1"
#: A date after the stored ones: a1 drops from 20 to 0 and a4 from 80 to 0.
NEW_DATE = date(2026, 4, 1)
TREND_FIELDS = ("change_7d", "change_30d", "change_90d", "slope_30d")


@pytest.fixture(scope="module")
def template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("template") / "project"
    service_project(root, "sqlite:///.healthscore/state.db")
    return root


@pytest.fixture
def service(
    template: Path, tmp_path: Path
) -> Iterator[tuple[TestClient, str, Project]]:
    """A running service on a fresh copy of the scored project, and an admin token."""
    shutil.copytree(template, tmp_path / "project")
    project = load_project(tmp_path / "project")
    state = StateStore.open(project.config.store.state, project.root)
    app = create_app(project, state=state, rescore=False, deliver_alerts=False)
    with TestClient(app) as client:
        yield client, tokens(state)["admin"], project
    state.close()


def get(client: TestClient, token: str, path: str, **params: Any) -> Any:
    response = client.get(f"{API}{path}", headers=bearer(token), params=params)
    assert response.status_code == 200, response.text
    return response.json()


def cli_trends(project: Project, day: date) -> dict[str, dict[str, Any]]:
    """Trends as `healthscore trend` computes them, from the stored snapshots."""
    store = snapshot_store(project)
    frame = compute_trends(store, day, project.config.history.trend)
    return {str(row["account_id"]): row for row in frame.to_dict(orient="records")}


def same_number(served: float | None, expected: float) -> bool:
    if served is None:
        return math.isnan(expected)
    return served == pytest.approx(expected)


def test_new_date_has_cli_trends(service):
    client, token, project = service
    get(client, token, "/accounts")

    score(project, NEW_DATE)

    expected = cli_trends(project, NEW_DATE)
    assert expected["a1"]["arrow"] == "down"
    for _ in range(3):
        for account_id in ("a1", "a2", "a3", "a4"):
            body = get(client, token, f"/accounts/{account_id}", as_of=NEW_DATE)
            want = expected[account_id]
            for field in TREND_FIELDS:
                assert same_number(body[field], want[field]), (account_id, field)
            assert body["trend"] == want["arrow"], account_id


def test_new_date_trend_filter(service):
    client, token, project = service
    get(client, token, "/accounts")

    score(project, NEW_DATE)

    expected = cli_trends(project, NEW_DATE)
    down = sorted(key for key, row in expected.items() if row["arrow"] == "down")
    assert down
    listed = get(client, token, "/accounts", as_of=NEW_DATE, trend="down")
    assert sorted(item["account_id"] for item in listed["items"]) == down


def test_new_latest_date_in_history(service):
    client, token, project = service
    get(client, token, "/accounts/a1/history")

    score(project, NEW_DATE)

    body = get(client, token, "/accounts")
    history = get(client, token, "/accounts/a1/history")["history"]
    assert body["as_of"] == NEW_DATE.isoformat()
    assert history[-1]["as_of"] == NEW_DATE.isoformat()


def test_replaced_snapshot_read_fresh_at_once(service):
    client, token, project = service
    before = get(client, token, "/accounts/a2", as_of=LATEST)
    assert before["score"] == 50.0
    events = project.root / "events.csv"
    # Ten events of a2 in February instead of five: events_28d on 2026-03-01 is 10.
    with open(events, "a", encoding="utf-8") as handle:
        handle.writelines(f"a2,2026-02-{day:02d},v{day}\n" for day in range(15, 20))

    score(project, LATEST)

    after = get(client, token, "/accounts/a2", as_of=LATEST)
    listed = get(client, token, "/accounts", as_of=LATEST, sort="-score")
    assert after["score"] == 100.0
    assert listed["items"][0]["account_id"] == "a2"
    assert listed["items"][0]["score"] == 100.0
