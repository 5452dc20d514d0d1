"""Portfolio and dashboard of accounts whose ARR is missing in the accounts source."""

from __future__ import annotations

import re
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from healthscore.config import load_project
from healthscore.service import create_app
from healthscore.service.dashboard import views as dashboard_views
from healthscore.store import StateStore
from service_project import TestClient, bearer, service_project, tokens

API = "/api/v1"
LATEST = "2026-03-01"
# On 2026-03-01: a1 at_risk (score 20), a2 stable (50), a3 at_risk (0), a4 healthy.
NO_ARR = """account_id,name,segment,owner
a1,Acme,enterprise,alice
a2,Globex,smb,bob
a3,Initech,smb,bob
a4,Umbrella,smb,
"""
# ARR of a1 and a2 only; a3, at risk, has none.
SOME_ARR = """account_id,name,segment,owner,arr
a1,Acme,enterprise,alice,120000
a2,Globex,smb,bob,9000
a3,Initech,smb,bob,
a4,Umbrella,smb,,
"""


@pytest.fixture(scope="module")
def template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("template") / "project"
    service_project(root, "sqlite:///.healthscore/state.db")
    return root


@pytest.fixture
def serve(template: Path, tmp_path: Path) -> Iterator[Any]:
    """Return a function that serves a copy of the project with other accounts."""
    opened: list[tuple[TestClient, StateStore]] = []

    def start(accounts: str) -> tuple[TestClient, dict[str, str]]:
        root = tmp_path / f"project{len(opened)}"
        shutil.copytree(template, root)
        (root / "accounts.csv").write_text(accounts)
        project = load_project(root)
        state = StateStore.open(project.config.store.state, project.root)
        app = create_app(project, state=state, rescore=False, deliver_alerts=False)
        client = TestClient(app)
        client.__enter__()
        opened.append((client, state))
        return client, tokens(state)

    yield start
    for client, state in opened:
        client.__exit__(None, None, None)
        state.close()


def portfolio(client: TestClient, token: str, by: str) -> dict[str, dict[str, Any]]:
    response = client.get(
        f"{API}/portfolio", headers=bearer(token), params={"by": by, "from": LATEST}
    )
    assert response.status_code == 200, response.text
    return {row["group"]: row for row in response.json()["rows"]}


@pytest.mark.parametrize("by", ["band", "segment", "owner"])
def test_portfolio_unknown_arr_null(serve, by):
    client, token = serve(NO_ARR)
    rows = portfolio(client, token["viewer"], by)
    assert rows
    for group, row in rows.items():
        assert row["arr"] is None, group
        assert row["at_risk_arr"] is None, group


def test_portfolio_partly_known_arr(serve):
    client, token = serve(SOME_ARR)
    owners = portfolio(client, token["viewer"], "owner")
    bands = portfolio(client, token["viewer"], "band")
    # alice: a1, at risk with ARR 120000.
    assert (owners["alice"]["arr"], owners["alice"]["at_risk_arr"]) == (
        120000.0,
        120000.0,
    )
    # bob: a2 (9000, stable) and a3 (at risk, ARR missing): the ARR at risk is unknown.
    assert (owners["bob"]["arr"], owners["bob"]["at_risk_arr"]) == (9000.0, None)
    # (none): a4, healthy, ARR missing.
    assert (owners["(none)"]["arr"], owners["(none)"]["at_risk_arr"]) == (None, None)
    # stable: a2 only, so none of its 9000 is at risk.
    assert (bands["stable"]["arr"], bands["stable"]["at_risk_arr"]) == (9000.0, 0.0)
    assert (bands["at_risk"]["arr"], bands["at_risk"]["at_risk_arr"]) == (
        120000.0,
        120000.0,
    )


def login(client: TestClient, token: str) -> None:
    page = client.get("/login")
    match = re.search(r'name="csrf_token" value="([^"]+)"', page.text)
    assert match is not None
    response = client.post(
        "/login",
        data={"csrf_token": match.group(1), "token": token, "next": "/"},
        follow_redirects=False,
    )
    assert response.status_code == 303, response.text


def at_risk_ids(html: str) -> list[str]:
    section = html[html.index('id="at-risk"') :]
    section = section[: section.index("</section>")]
    return re.findall(r'href="/accounts/([^"]+)"', section)


def test_dashboard_at_risk_by_score(serve, monkeypatch):
    client, token = serve(NO_ARR)
    login(client, token["admin"])
    assert at_risk_ids(client.get("/").text) == ["a3", "a1"]
    # A list of one shows the riskiest account, not the first id.
    monkeypatch.setattr(dashboard_views, "AT_RISK_ROWS", 1)
    assert at_risk_ids(client.get("/").text) == ["a3"]


def test_dashboard_at_risk_arr_first(serve):
    client, token = serve(SOME_ARR)
    login(client, token["admin"])
    # a1 has ARR and a3 none, so a1 comes first although its score is higher.
    assert at_risk_ids(client.get("/").text) == ["a1", "a3"]
