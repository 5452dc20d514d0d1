"""The CLI's scoring run and the running service on one project at the same time.

Uvicorn serves the app in a thread on a free port of 127.0.0.1 while
`healthscore score` runs in subprocesses on the same project, rewriting the
snapshot of the latest date and opening playbook tasks. Three client threads read
scores, explanations, the portfolio and tasks, add notes and complete tasks, on
SQLite and on PostgreSQL. No request may fail, every read must show the scores of
the project's data, and every write must be stored exactly once.
"""

from __future__ import annotations

import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from healthscore.monitoring.interventions import interventions_frame
from healthscore.monitoring.notes import list_notes
from healthscore.monitoring.playbooks import list_tasks
from healthscore.service import create_app
from healthscore.store import StateStore
from service_project import LATEST, bearer, served, service_project, tokens

#: Scores of the latest date that every read must return (see service_project).
EXPECTED_SCORES = {"a1": 20.0, "a2": 50.0, "a3": 0.0, "a4": 80.0}

#: Scoring runs of the CLI during the test.
SCORING_RUNS = 3


@pytest.fixture
def server(tmp_path: Path, store_url: str) -> Iterator[dict[str, Any]]:
    project = service_project(tmp_path / "project", store_url)
    state = StateStore.open(project.config.store.state, project.root)
    try:
        with served(create_app(project, state=state)) as url:
            yield {
                "url": url,
                "tokens": tokens(state),
                "project": project,
                "state": state,
            }
    finally:
        state.close()


def score_in_subprocess(project_root: Path) -> subprocess.CompletedProcess[str]:
    """Run `healthscore score` SCORING_RUNS times in one new Python process.

    One process for all runs saves the start-up time of the package's imports.
    """
    arguments = ["score", "--as-of", LATEST.isoformat(), "--project", str(project_root)]
    script = (
        "from healthscore.cli import app\n"
        f"for _ in range({SCORING_RUNS}):\n"
        f"    app({arguments!r}, prog_name='healthscore', standalone_mode=False)\n"
    )
    return subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=300
    )


class Client(threading.Thread):
    """Reads and writes in a loop until `stop` is set, recording every problem."""

    def __init__(self, base_url: str, token: str, account: str, stop: threading.Event):
        super().__init__(daemon=True)
        self.http = httpx.Client(base_url=base_url, headers=bearer(token), timeout=60)
        self.account = account
        self.stop = stop
        self.problems: list[str] = []
        self.notes_added = 0
        self.completed: list[int] = []
        self.requests = 0

    def run(self) -> None:
        try:
            while not self.stop.is_set():
                self.one_round()
        except Exception as exc:  # recorded, so the test reports it
            self.problems.append(f"{type(exc).__name__}: {exc}")
        finally:
            self.http.close()

    def expect(self, response: httpx.Response, status: int = 200) -> Any:
        self.requests += 1
        if response.status_code != status:
            self.problems.append(
                f"{response.request.method} {response.request.url.path}: "
                f"{response.status_code} {response.text[:300]}"
            )
            return None
        return response.json()

    def one_round(self) -> None:
        listed = self.expect(self.http.get("/api/v1/accounts"))
        if listed is not None:
            scores = {item["account_id"]: item["score"] for item in listed["items"]}
            if listed["as_of"] != LATEST.isoformat() or scores != EXPECTED_SCORES:
                self.problems.append(f"inconsistent accounts list: {listed}")
        explained = self.expect(
            self.http.get(
                "/api/v1/accounts/a1/explanation", params={"compare_to": "2026-02-01"}
            )
        )
        if explained is not None and abs(explained["sum_of_parts"] + 80.0) > 1e-9:
            self.problems.append(f"explanation does not add up: {explained}")
        self.expect(self.http.get("/api/v1/portfolio", params={"by": "owner"}))
        note = {"text": f"call {self.notes_added}", "sentiment": 3}
        if self.expect(
            self.http.post(f"/api/v1/accounts/{self.account}/notes", json=note), 201
        ):
            self.notes_added += 1
        tasks = self.expect(self.http.get(f"/api/v1/accounts/{self.account}/tasks"))
        open_tasks = [
            task for task in (tasks or {}).get("tasks", []) if task["state"] == "open"
        ]
        if open_tasks:
            task_id = open_tasks[0]["id"]
            done = self.expect(
                self.http.post(f"/api/v1/tasks/{task_id}/complete", json={"note": "ok"})
            )
            if done is not None:
                self.completed.append(task_id)


def test_scoring_while_serving(server):
    stop = threading.Event()
    clients = [
        Client(server["url"], server["tokens"]["admin"], account, stop)
        for account in ("a2", "a3", "a4")
    ]
    for client in clients:
        client.start()
    run = score_in_subprocess(server["project"].root)
    stop.set()
    for client in clients:
        client.join(timeout=60)

    state: StateStore = server["state"]
    problems = [problem for client in clients for problem in client.problems]
    stored_notes = list_notes(state)
    completed = {task.id for task in list_tasks(state, task_state="completed")}
    interventions = interventions_frame(state)
    requested = {task_id for client in clients for task_id in client.completed}

    assert run.returncode == 0, run.stderr
    assert run.stdout.count("Scored 4 accounts") == SCORING_RUNS, run.stdout
    assert problems == []
    assert sum(client.requests for client in clients) >= 30
    assert len(stored_notes) == sum(client.notes_added for client in clients)
    assert completed == requested
    assert sorted(interventions["task_id"].dropna().astype(int)) == sorted(requested)
    assert requested, "no task was completed while scoring ran"
