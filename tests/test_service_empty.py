"""The service on a date whose snapshot scored no account."""

from __future__ import annotations

from datetime import date

from typer.testing import CliRunner

from healthscore.cli import app as cli_app
from healthscore.config import load_project
from healthscore.monitoring.trends import TREND_COLUMNS, compute_trends
from healthscore.pipeline import snapshot_store
from healthscore.service import create_app
from healthscore.service.tokens import create_token
from healthscore.store import StateStore
from service_project import TestClient, bearer

#: After the sample project's subscriptions end, so no account is scored.
EMPTY_DATE = date(2030, 1, 1)


def empty_project(tmp_path):
    runner = CliRunner()
    root = tmp_path / "sample"
    created = runner.invoke(cli_app, ["init", str(root)])
    assert created.exit_code == 0, created.output
    scored = runner.invoke(
        cli_app, ["score", "--project", str(root), "--as-of", EMPTY_DATE.isoformat()]
    )
    assert scored.exit_code == 0, scored.output
    return load_project(root)


def test_trends_of_empty_snapshot(tmp_path):
    project = empty_project(tmp_path)

    trends = compute_trends(
        snapshot_store(project), EMPTY_DATE, project.config.history.trend
    )

    assert list(trends.columns) == TREND_COLUMNS
    assert len(trends) == 0


def test_account_routes_of_empty_snapshot(tmp_path):
    project = empty_project(tmp_path)
    with StateStore.open(project.config.store.state, project.root) as state:
        token = create_token(state, role="analyst", name="a").token

    with TestClient(create_app(project)) as client:
        listed = client.get("/api/v1/accounts", headers=bearer(token))
        single = client.get("/api/v1/accounts/A0004", headers=bearer(token))
        exported = client.get("/api/v1/exports/accounts.csv", headers=bearer(token))

    assert listed.status_code == 200, listed.text
    assert listed.json()["items"] == []
    assert listed.json()["total"] == 0
    assert single.status_code == 404
    assert single.json()["error"]["code"] == "not_found"
    assert exported.status_code == 200, exported.text
    assert exported.text.splitlines()[0].startswith("account_id")
    assert len(exported.text.splitlines()) == 1
