"""The health check, and route responses when the operational store fails."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.exc import IntegrityError, OperationalError

from healthscore.config import load_project
from healthscore.service import create_app
from healthscore.service import tokens as tokens_module
from healthscore.service.errors import store_unavailable
from healthscore.store import StateStore
from service_project import TestClient, bearer, service_project, tokens
from test_dashboard import login


@pytest.fixture(scope="module")
def template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("health") / "project"
    service_project(root, "sqlite:///.healthscore/state.db")
    return root


@pytest.fixture
def site(template: Path, tmp_path: Path) -> Iterator[tuple[TestClient, dict[str, str]]]:
    shutil.copytree(template, tmp_path / "project")
    project = load_project(tmp_path / "project")
    state = StateStore.open(project.config.store.state, project.root)
    with TestClient(create_app(project, state=state)) as client:
        yield client, tokens(state)
    state.close()


def test_health_ok(site):
    client, _token = site
    response = client.get("/health")
    assert response.status_code == 200
    assert response.json() == {"status": "ok"}
    assert client.head("/health").status_code == 200


def test_missing_table_503_sqlite(site, monkeypatch):
    client, token = site
    # Keep the checked token's row in memory for the whole test, however slow the
    # machine, so that the requests below reach the tasks table.
    monkeypatch.setattr(tokens_module, "ROW_CACHE_SECONDS", 600.0)
    login(client, token["admin"])
    state = client.app.state.context.state
    with state.engine.begin() as connection:
        connection.execute(text("ALTER TABLE api_tokens RENAME TO api_tokens_old"))
        connection.execute(text("ALTER TABLE tasks RENAME TO tasks_old"))

    health = client.get("/health")
    # Tokens that were checked a moment ago are served from memory, so these
    # requests get as far as the tasks table.
    api = client.get("/api/v1/tasks", headers=bearer(token["admin"]))
    page = client.get("/tasks", follow_redirects=False)

    assert health.status_code == 503
    error = health.json()["error"]
    assert error["code"] == "unavailable"
    reason = "the operational store cannot be read (no such table: api_tokens)"
    assert reason in error["message"]
    assert api.status_code == 503
    assert "no such table: tasks" in api.json()["error"]["message"]
    assert page.status_code == 503
    assert page.headers["content-type"].startswith("text/html")
    assert "<h1>Error 503</h1>" in page.text
    assert "the operational store cannot be read (no such table:" in page.text


def test_renamed_schema_503_postgresql(template, tmp_path, postgres_server):
    schema = "healthscore_health_test"
    renamed = f"{schema}_moved"
    admin = create_engine(postgres_server)
    with admin.begin() as connection:
        connection.execute(text(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE'))
        connection.execute(text(f'DROP SCHEMA IF EXISTS "{renamed}" CASCADE'))
        connection.execute(text(f'CREATE SCHEMA "{schema}"'))
    url = f"{postgres_server}?options=-csearch_path%3D{schema}"
    shutil.copytree(template, tmp_path / "project")
    project = load_project(tmp_path / "project")
    state = StateStore.open(url, project.root)
    try:
        with TestClient(create_app(project, state=state)) as client:
            token = tokens(state)["admin"]
            assert client.get("/health").status_code == 200
            with admin.begin() as connection:
                connection.execute(
                    text(f'ALTER SCHEMA "{schema}" RENAME TO "{renamed}"')
                )
            health = client.get("/health")
            api = client.get("/api/v1/tasks", headers=bearer(token))
    finally:
        state.close()
        with admin.begin() as connection:
            connection.execute(text(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE'))
            connection.execute(text(f'DROP SCHEMA IF EXISTS "{renamed}" CASCADE'))
        admin.dispose()

    assert health.status_code == 503
    message = health.json()["error"]["message"]
    assert 'relation "api_tokens" does not exist' in message
    assert "check store.state in healthscore.yml" in message
    assert api.status_code == 503
    assert api.json()["error"]["code"] == "unavailable"


def test_constraint_violation_not_unavailable(tmp_path):
    engine = create_engine(f"sqlite:///{tmp_path / 'store.db'}")
    with engine.begin() as connection:
        connection.execute(text("CREATE TABLE items (id INTEGER PRIMARY KEY)"))
        connection.execute(text("INSERT INTO items VALUES (1)"))
    with pytest.raises(IntegrityError) as duplicate, engine.begin() as connection:
        connection.execute(text("INSERT INTO items VALUES (1)"))
    with pytest.raises(OperationalError) as missing, engine.begin() as connection:
        connection.execute(text("SELECT id FROM absent"))
    engine.dispose()

    assert store_unavailable(duplicate.value) is None
    unavailable = store_unavailable(missing.value)
    assert unavailable is not None
    assert unavailable.status == 503
    assert "(no such table: absent)" in unavailable.message
