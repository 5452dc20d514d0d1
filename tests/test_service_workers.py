"""Several request processes: one rescore worker, fed by the others' notices."""

from __future__ import annotations

import json
import logging
import os
import re
import signal
import subprocess
import sys
import time
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from typer.testing import CliRunner

from healthscore.cli import app as cli_app
from healthscore.cli.service import WORKER_HEALTHCHECK_SECONDS
from healthscore.config import Project
from healthscore.service import app as app_module
from healthscore.service import create_app
from healthscore.service.handoff import (
    LEASE_FILE,
    Notice,
    RescoreLease,
    RescoreRelay,
    events_folder,
    notice_folder,
    take_notices,
    write_notice,
)
from healthscore.service.live import ScorerProcess
from healthscore.service.protocol import JsonErrorProtocol
from healthscore.service.rescore import RescoreWorker
from healthscore.service.tokens import create_token
from healthscore.service.writekeys import create_write_key
from healthscore.sources.ingest import event_store
from service_project import TestClient
from test_ingest_api import (
    _free_port,
    _responds,
    account_alerts,
    basic,
    live_score,
    track,
    wait_for,
)
from test_ingest_api import project as project
from test_ingest_api import state as state

FIVE = {"batch": [track("a1") for _ in range(5)]}


def test_lease_is_exclusive_until_released(project):
    first, second = RescoreLease(project), RescoreLease(project)

    assert first.acquire()
    assert not second.acquire()
    first.release()
    assert second.acquire()
    second.release()


def test_notices_round_trip_and_bad_ones_are_dropped(tmp_path, caplog):
    folder = tmp_path / "notices"
    moment = datetime(2026, 3, 1, 9, 30, tzinfo=UTC)
    write_notice(folder, Notice(queued_at=moment, accounts=["a2", "a1"]))
    later = moment + timedelta(seconds=1)
    write_notice(folder, Notice(queued_at=later, rollups={"usage": [date(2026, 3, 1)]}))
    (folder / "20260301T000000000000-1-bad.json").write_text("{not json")

    with caplog.at_level(logging.ERROR, "healthscore.service.handoff"):
        notices = take_notices(folder)

    assert [n.accounts for n in notices] == [["a2", "a1"], []]
    assert notices[1].rollups == {"usage": [date(2026, 3, 1)]}
    assert notices[0].queued_at == moment
    assert "unreadable rescore notice" in caplog.text
    assert os.listdir(folder) == []
    assert take_notices(tmp_path / "missing") == []


def test_second_app_hands_accounts_to_lease_holder(project, state):
    key = create_write_key(state, project, "usage").key
    token = create_token(state, role="analyst", name="a").token

    with (
        TestClient(create_app(project, state=state)) as holder,
        TestClient(create_app(project, state=state)) as other,
    ):
        assert isinstance(holder.app.state.rescore_worker, RescoreWorker)
        assert isinstance(other.app.state.rescore_worker, RescoreRelay)
        posted = other.post("/v1/batch", json=FIVE, headers=basic(key))
        assert posted.status_code == 200, posted.text
        # Both processes read the snapshot that the one worker replaced.
        assert wait_for(lambda: live_score(other, token, "a1") == 50.0)
        assert live_score(holder, token, "a1") == 50.0
        worker = holder.app.state.rescore_worker
        assert worker.last_result.accounts == ["a1"]
        assert wait_for(lambda: not os.listdir(notice_folder(project)))

    # The day's rollup was brought up to date from the relayed notice.
    assert event_store(project).lagging_rollup_days("usage") == []
    assert len(account_alerts(state, "a1")) == 1


def test_relay_takes_over_when_holder_stops(project, state, monkeypatch):
    monkeypatch.setattr(app_module, "LEASE_RETRY_SECONDS", 0.2)
    key = create_write_key(state, project, "usage").key
    token = create_token(state, role="analyst", name="a").token

    holder = TestClient(create_app(project, state=state))
    holder.__enter__()
    with TestClient(create_app(project, state=state)) as other:
        assert isinstance(other.app.state.rescore_worker, RescoreRelay)
        holder.__exit__(None, None, None)
        assert wait_for(
            lambda: isinstance(other.app.state.rescore_worker, RescoreWorker), 10
        )
        posted = other.post("/v1/batch", json=FIVE, headers=basic(key))
        assert posted.status_code == 200, posted.text
        assert wait_for(lambda: live_score(other, token, "a1") == 50.0)

    # Stopping released the lease.
    lease = RescoreLease(project)
    assert lease.acquire()
    lease.release()


def test_serve_workers_starts_processes_from_environment(project, monkeypatch):
    calls: list[dict[str, Any]] = []
    monkeypatch.setattr(
        "uvicorn.run",
        lambda target, **options: calls.append({"target": target, **options}),
    )
    for name in (
        app_module.PROJECT_VARIABLE,
        app_module.SECURE_COOKIES_VARIABLE,
        app_module.VERBOSE_VARIABLE,
    ):
        monkeypatch.delenv(name, raising=False)

    result = CliRunner().invoke(
        cli_app,
        ["serve", "--workers", "3", "--secure-cookies", "--project", str(project.root)],
    )

    assert result.exit_code == 0, result.output
    assert calls == [
        {
            "target": "healthscore.service.app:app_from_environment",
            "factory": True,
            "workers": 3,
            "host": "127.0.0.1",
            "port": 8000,
            "access_log": False,
            "log_config": None,
            "http": JsonErrorProtocol,
            "timeout_worker_healthcheck": WORKER_HEALTHCHECK_SECONDS,
        }
    ]
    assert os.environ[app_module.PROJECT_VARIABLE] == str(project.root)
    # The processes' log handler and levels must not outlive this test.
    package = logging.getLogger("healthscore")
    monkeypatch.setattr(package, "handlers", [])
    monkeypatch.setattr(package, "level", package.level)
    monkeypatch.setattr(
        logging.getLogger("healthscore.service"),
        "level",
        logging.getLogger("healthscore.service").level,
    )
    built = app_module.app_from_environment()
    assert [type(handler).__name__ for handler in package.handlers] == ["StreamHandler"]
    with TestClient(built) as client:
        assert "Secure" in client.get("/login").headers["set-cookie"]


def test_app_from_environment_needs_project(monkeypatch):
    monkeypatch.delenv(app_module.PROJECT_VARIABLE, raising=False)
    with pytest.raises(RuntimeError, match="serve --workers"):
        app_module.app_from_environment()


def start_two_processes(
    project: Project, log_path: Path, environment: dict[str, str] | None = None
) -> tuple[subprocess.Popen[bytes], str]:
    """Start `healthscore serve --workers 2` logging to `log_path`; return its URL."""
    port = _free_port()
    with open(log_path, "w") as log:
        server = subprocess.Popen(
            [
                str(Path(sys.executable).parent / "healthscore"),
                "serve",
                "--workers",
                "2",
                "--port",
                str(port),
                "--project",
                str(project.root),
            ],
            stdout=subprocess.DEVNULL,
            stderr=log,
            env=environment,
        )
    return server, f"http://127.0.0.1:{port}"


def test_two_request_processes_rescore_once(project: Project, state, tmp_path):
    key = create_write_key(state, project, "usage").key
    token = create_token(state, role="analyst", name="a").token
    log_path = tmp_path / "server.log"
    server, url = start_two_processes(project, log_path)
    try:
        assert wait_for(lambda: _responds(url), seconds=60), log_path.read_text()
        # New connections go to either process; send enough to reach both.
        with httpx.Client(base_url=url) as client:
            for _ in range(6):
                with httpx.Client(base_url=url) as fresh:
                    response = fresh.post(
                        "/v1/batch",
                        json={"batch": [track("a2")]},
                        headers=basic(key),
                    )
                    assert response.status_code == 200, response.text

            def a2_score() -> float | None:
                found = client.get(
                    "/api/v1/accounts/a2",
                    headers={"Authorization": f"Bearer {token}"},
                )
                return found.json().get("score") if found.status_code == 200 else None

            assert wait_for(lambda: a2_score() == 40.0, 30), log_path.read_text()
    finally:
        server.send_signal(signal.SIGINT)
        server.wait(timeout=60)

    text = log_path.read_text()
    assert text.count("rescore worker started") == 1, text
    assert text.count("another process of this project rescores") == 1, text
    assert text.count("stopped serving project") == 2, text
    # The scoring process logs in the same format, with its own process id.
    scorer = re.search(r"started the scoring process \(pid (\d+)\)", text)
    assert scorer is not None, text
    assert re.search(
        rf" INFO healthscore\.service\.live \[{scorer.group(1)}\]: full scoring run",
        text,
    ), text
    assert len(account_alerts(state, "a2")) == 1


def test_worker_reads_notices_after_one_without_time_zone(project):
    # A notice whose queued_at has no UTC offset, for an account already queued,
    # must not stop the worker from reading the notices that follow it.
    worker = RescoreWorker(project, interval=60)
    worker.start()
    folder = notice_folder(project)
    try:
        worker.notify(["a1"])
        folder.mkdir(parents=True, exist_ok=True)
        body = {"queued_at": "2026-03-01T09:30:00", "accounts": ["a1"], "rollups": {}}
        (folder / "20260301T093000000000-1-naive.json").write_text(json.dumps(body))
        assert wait_for(lambda: not os.listdir(folder), 5)

        write_notice(folder, Notice(queued_at=datetime.now(UTC), accounts=["a2"]))

        assert wait_for(lambda: worker.pending() == 2, 5), os.listdir(folder)
    finally:
        worker.stop()


def test_scorer_process_survives_terminal_interrupt(project, caplog):
    # Ctrl-C in a terminal sends SIGINT to every process of the service. The
    # service stops its scoring process itself, after the current batch, so the
    # signal must not end that process in the middle of a batch.
    scorer = ScorerProcess(project)
    with caplog.at_level(logging.INFO, "healthscore.service.live"):
        try:
            assert scorer.rescore(["a1"]).accounts == ["a1"]
            started = [r for r in caplog.records if "started the scoring" in r.message]
            pid = int(started[0].message.rsplit("pid ", 1)[1].rstrip(")"))

            os.kill(pid, signal.SIGINT)
            time.sleep(0.5)

            assert scorer.rescore(["a2"]).accounts == ["a2"]
        finally:
            scorer.close()
    starts = [r for r in caplog.records if "started the scoring" in r.message]
    assert len(starts) == 1, [r.message for r in starts]


def test_serve_reports_unwritable_lease_before_start(project: Project):
    # A lease path that cannot be opened for writing, as in a read-only events
    # folder, fails every request process. serve reports it once and exits 1.
    lease = events_folder(project) / LEASE_FILE
    lease.mkdir(parents=True)

    result = CliRunner().invoke(
        cli_app, ["serve", "--workers", "2", "--project", str(project.root)]
    )

    assert result.exit_code == 1
    assert f"the rescore lease {lease} cannot be opened for writing" in result.output
    assert "write access to the events folder" in result.output


def test_notice_with_wrong_types_is_dropped(tmp_path, caplog):
    folder = tmp_path / "notices"
    folder.mkdir()
    moment = datetime(2026, 3, 1, 9, 30, tzinfo=UTC).isoformat()
    body = {"queued_at": moment, "accounts": "a9", "rollups": {}}
    (folder / "20260301T093000000000-1-a.json").write_text(json.dumps(body))

    with caplog.at_level(logging.ERROR, "healthscore.service.handoff"):
        notices = take_notices(folder)

    assert notices == []
    assert "accounts must be a list" in caplog.text
    assert os.listdir(folder) == []


def test_worker_skips_rollups_of_unknown_source(project, caplog):
    worker = RescoreWorker(project, interval=60)
    write_notice(
        notice_folder(project),
        Notice(queued_at=datetime.now(UTC), rollups={"nosuch": [date(2026, 3, 1)]}),
    )

    with caplog.at_level(logging.WARNING, "healthscore.service.rescore"):
        worker.start()
        worker.stop()

    assert "'nosuch'" in caplog.text
    assert not (events_folder(project) / "nosuch").exists()


# Imported by every interpreter whose PYTHONPATH has its folder. Only the request
# processes, which Uvicorn spawns with --multiprocessing-fork, wait before starting.
SLOW_START = """
import sys, time
if "--multiprocessing-fork" in sys.argv:
    time.sleep({seconds})
"""


def test_slow_request_processes_are_not_killed(project, tmp_path):
    # Uvicorn's default health check waits 5 s, so processes that take 8 s to
    # import were killed and restarted without end.
    site = tmp_path / "site"
    site.mkdir()
    (site / "sitecustomize.py").write_text(SLOW_START.format(seconds=8))
    environment = dict(os.environ)
    environment["PYTHONPATH"] = os.pathsep.join(
        [str(site), *filter(None, [os.environ.get("PYTHONPATH")])]
    )
    log_path = tmp_path / "server.log"
    server, url = start_two_processes(project, log_path, environment)
    try:
        assert wait_for(lambda: _responds(url), seconds=90), log_path.read_text()
    finally:
        server.send_signal(signal.SIGINT)
        server.wait(timeout=60)

    text = log_path.read_text()
    assert "died" not in text, text
    assert text.count("]: serving project") == 2, text
