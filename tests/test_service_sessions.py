"""The dashboard's session key file, followed by every process that serves a project."""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from healthscore.config import Project, load_project
from healthscore.service import create_app
from healthscore.service.dashboard.sessions import (
    COOKIE_NAME,
    SESSION_KEY_FILE,
    SessionKeyFile,
)
from healthscore.store import StateStore
from service_project import TestClient, service_project, tokens
from test_dashboard import csrf_of, login


@pytest.fixture(scope="module")
def template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("sessions") / "project"
    service_project(root, "sqlite:///.healthscore/state.db")
    return root


@pytest.fixture
def served(
    template: Path, tmp_path: Path
) -> Iterator[tuple[TestClient, TestClient, dict[str, str], Project]]:
    """Two apps on one project, as two request processes of `serve --workers 2`."""
    shutil.copytree(template, tmp_path / "project")
    project = load_project(tmp_path / "project")
    state = StateStore.open(project.config.store.state, project.root)
    with (
        TestClient(create_app(project, state=state)) as first,
        TestClient(create_app(project, state=state)) as second,
    ):
        yield first, second, tokens(state), project
    state.close()


def test_deleted_key_ends_session(served):
    first, _second, token, project = served
    login(first, token["admin"])
    key_file = project.root / SESSION_KEY_FILE
    old_key = key_file.read_text()
    assert first.get("/", follow_redirects=False).status_code == 200

    key_file.unlink()
    page = first.get("/", follow_redirects=False)

    assert page.status_code == 303
    assert page.headers["location"].startswith("/login")
    assert first.get("/api/v1/accounts").status_code == 401
    assert key_file.read_text() != old_key
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600


def test_deleted_key_ends_session_in_other_process(served):
    first, second, token, project = served
    login(first, token["admin"])
    saved = first.cookies[COOKIE_NAME]
    second.cookies.set(COOKIE_NAME, saved)
    assert second.get("/api/v1/accounts").status_code == 200

    (project.root / SESSION_KEY_FILE).unlink()
    # The first process to serve a request after the deletion writes the new key.
    assert first.get("/login").status_code == 200

    second.cookies.set(COOKIE_NAME, saved)
    assert second.get("/api/v1/accounts").status_code == 401
    page = second.get("/", follow_redirects=False)
    assert page.status_code == 303


def test_login_across_restarted_process(served):
    first, _second, token, project = served
    login(first, token["admin"])
    (project.root / SESSION_KEY_FILE).unlink()
    # A request process that starts now writes a new key; the running one follows.
    state = first.app.state.context.state
    with TestClient(create_app(project, state=state)) as restarted:
        for form_from, post_to in (
            (first, restarted),
            (restarted, first),
            (first, first),
        ):
            log_in_across(form_from, post_to, token["admin"])


def log_in_across(form_from: TestClient, post_to: TestClient, token: str) -> None:
    """Get the login form from one process and post it to another."""
    form_from.cookies.clear()
    page = form_from.get("/login")
    use_cookie(post_to, page.cookies[COOKIE_NAME])
    response = post_to.post(
        "/login",
        data={"csrf_token": csrf_of(page.text), "token": token},
        follow_redirects=False,
    )
    assert response.status_code == 303, response.text
    use_cookie(form_from, response.cookies[COOKIE_NAME])
    assert form_from.get("/", follow_redirects=False).status_code == 200


def use_cookie(client: TestClient, value: str) -> None:
    client.cookies.clear()
    client.cookies.set(COOKIE_NAME, value)


def test_replaced_key_rejects_old_cookie(served):
    first, second, token, project = served
    login(first, token["admin"])
    saved = first.cookies[COOKIE_NAME]
    second.cookies.set(COOKIE_NAME, saved)
    key_file = project.root / SESSION_KEY_FILE

    key_file.write_text("1f" * 32 + "\n")

    for client in (first, second):
        client.cookies.set(COOKIE_NAME, saved)
        assert client.get("/api/v1/accounts").status_code == 401
    assert key_file.read_text() == "1f" * 32 + "\n"


def test_empty_key_file_503(served):
    first, _second, token, project = served
    login(first, token["admin"])
    key_file = project.root / SESSION_KEY_FILE
    key_file.write_text("")

    page = first.get("/", follow_redirects=False)

    assert page.status_code == 503
    assert f"the session key file {key_file} is empty" in page.text
    key_file.unlink()
    assert first.get("/login").status_code == 200


_READ_KEY = """
import sys
from pathlib import Path
from healthscore.service.dashboard.sessions import SessionKeyFile
print(SessionKeyFile(Path(sys.argv[1])).current().decode())
"""


def test_missing_key_created_once_for_all_processes(tmp_path):
    path = tmp_path / ".healthscore" / "session.key"
    processes = [
        subprocess.Popen(
            [sys.executable, "-c", _READ_KEY, str(path)],
            stdout=subprocess.PIPE,
            text=True,
        )
        for _ in range(6)
    ]
    keys = [process.communicate(timeout=60)[0].strip() for process in processes]

    assert [process.returncode for process in processes] == [0] * 6
    assert len(set(keys)) == 1
    assert keys[0] == path.read_text().strip()
    assert len(keys[0]) == 64
    leftovers = [name for name in os.listdir(path.parent) if name != "session.key"]
    assert leftovers == []


def test_key_file_read_again_after_change(tmp_path):
    path = tmp_path / "session.key"
    path.write_text("aa" * 32 + "\n")
    keys = SessionKeyFile(path)
    assert keys.current() == b"aa" * 32

    replacement = tmp_path / "new.key"
    replacement.write_text("bb" * 32 + "\n")
    replacement.replace(path)

    assert keys.current() == b"bb" * 32
    path.unlink()
    created = keys.current()
    assert created == path.read_bytes().strip()
    assert created not in {b"aa" * 32, b"bb" * 32}
