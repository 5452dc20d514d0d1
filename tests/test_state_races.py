"""Concurrent writes to the operational store that read stored rows, then decide.

Each test starts its writers together behind a barrier, in threads of one process,
and runs on SQLite and on PostgreSQL. Under PostgreSQL's READ COMMITTED, two such
writes both read the stored rows before either commits, unless each takes a lock
first.
"""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Callable, Iterator
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import insert, select

from healthscore.monitoring.interventions import (
    ImportValidationError,
    RowChanges,
    import_interventions,
    import_outcomes,
    interventions_frame,
    outcomes_frame,
    store_outcomes,
)
from healthscore.monitoring.outbox import (
    NewAlert,
    add_alerts,
    get_alert,
    set_alert_state,
)
from healthscore.monitoring.playbooks import complete_task, dismiss_task
from healthscore.store import StateStore
from healthscore.store.tables_tasks import outcomes, tasks
from test_channels import sample_alert

NOW = datetime(2026, 3, 1, 8, 0, tzinfo=UTC)
DAY = date(2026, 2, 20)

#: Accounts, tasks or alerts raced at once; each gets its own group of writers.
SUBJECTS = 10


@pytest.fixture
def state(store_url, tmp_path) -> Iterator[StateStore]:
    with StateStore.open(store_url, tmp_path) as opened:
        yield opened


def run_together(calls: list[Callable[[], Any]]) -> list[Any]:
    """Run every call in its own thread, all released at once.

    Returns each call's return value, or the exception it raised, in call order.
    """
    barrier = threading.Barrier(len(calls))
    results: list[Any] = [None] * len(calls)

    def work(index: int, call: Callable[[], Any]) -> None:
        barrier.wait()
        try:
            results[index] = call()
        except Exception as exc:
            results[index] = exc

    threads = [
        threading.Thread(target=work, args=(index, call))
        for index, call in enumerate(calls)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert not any(thread.is_alive() for thread in threads)
    return results


def write_csv(path: Path, header: str, line: str) -> Path:
    path.write_text(f"{header}\n{line}\n", encoding="utf-8")
    return path


def outcome_file(folder: Path, name: str, account: str, kind: str) -> Path:
    return write_csv(
        folder / name, "account_id,kind,occurred_on", f"{account},{kind},{DAY}"
    )


def add_open_tasks(state: StateStore, count: int) -> list[int]:
    rows = [
        {
            "playbook": "rescue",
            "account_id": f"a{index}",
            "cause_key": f"rescue|a{index}|manual",
            "title": f"Rescue a{index}",
            "description": "",
            "owner": None,
            "due_on": DAY + timedelta(days=14),
            "priority": "high",
            "state": "open",
            "rank": 1,
            "created_at": NOW,
        }
        for index in range(count)
    ]
    with state.engine.begin() as connection:
        return list(
            connection.execute(insert(tasks).returning(tasks.c.id), rows).scalars()
        )


# Outcomes


def test_churn_and_renewal_race_one_stored(state, tmp_path):
    calls = []
    for index in range(SUBJECTS):
        for kind in ("churned", "renewed"):
            path = outcome_file(tmp_path, f"{kind}{index}.csv", f"a{index}", kind)
            calls.append(lambda path=path: import_outcomes(state, path, now=NOW))

    results = run_together(calls)

    stored = outcomes_frame(state)
    per_account = Counter(stored["account_id"])
    assert dict(per_account) == {f"a{index}": 1 for index in range(SUBJECTS)}
    rejected = [result for result in results if isinstance(result, Exception)]
    assert len(rejected) == SUBJECTS
    for error in rejected:
        assert isinstance(error, ImportValidationError)
        assert "records churned but" in str(error)


def test_identical_outcomes_race_skipped(state, tmp_path):
    calls = []
    for index in range(SUBJECTS):
        for copy in range(3):
            path = outcome_file(
                tmp_path, f"o{index}_{copy}.csv", f"a{index}", "churned"
            )
            calls.append(lambda path=path: import_outcomes(state, path, now=NOW))

    results = run_together(calls)

    errors = [result for result in results if isinstance(result, Exception)]
    assert errors == []
    assert sum(result.stored for result in results) == SUBJECTS
    assert sum(result.skipped for result in results) == 2 * SUBJECTS
    assert len(outcomes_frame(state)) == SUBJECTS


def test_outcome_stored_meanwhile_skipped(postgres_url, tmp_path):
    row = {"account_id": "a1", "kind": "churned", "occurred_on": DAY}
    values = {**row, "arr_before": None, "arr_after": None, "source": "crm"}

    def plan_after_other_writer(stored: list[dict[str, Any]]) -> RowChanges:
        # A writer that takes no lock stores the same outcome after this write
        # read the stored rows. SQLite's write lock would make it wait instead.
        with state.engine.begin() as connection:
            connection.execute(insert(outcomes).values(**values, imported_at=NOW))
        return RowChanges(new=[{**row, "source": "api"}], replaced=[], skipped=0)

    with StateStore.open(postgres_url, tmp_path) as state:
        written = store_outcomes(
            state, [{**row, "source": "api"}], origin={}, plan=plan_after_other_writer
        )
        stored = outcomes_frame(state)

    assert (written.stored, written.skipped) == (0, 1)
    assert list(stored["source"]) == ["crm"]


# Interventions


def test_identical_interventions_race_skipped(state, tmp_path):
    calls = []
    for index in range(SUBJECTS):
        for copy in range(3):
            path = write_csv(
                tmp_path / f"i{index}_{copy}.csv",
                "account_id,kind,occurred_on,author",
                f"a{index},exec_call,{DAY},ana",
            )
            calls.append(lambda path=path: import_interventions(state, path, now=NOW))

    results = run_together(calls)

    errors = [result for result in results if isinstance(result, Exception)]
    assert errors == []
    assert sum(result.stored for result in results) == SUBJECTS
    assert sum(result.skipped for result in results) == 2 * SUBJECTS
    stored = interventions_frame(state)
    assert dict(Counter(stored["account_id"])) == {
        f"a{index}": 1 for index in range(SUBJECTS)
    }


# Tasks


def test_complete_and_dismiss_race_one_wins(state):
    task_ids = add_open_tasks(state, SUBJECTS)
    calls: list[Callable[[], Any]] = []
    for task_id in task_ids:
        calls.append(lambda task_id=task_id: complete_task(state, task_id, "ana"))
        calls.append(
            lambda task_id=task_id: dismiss_task(state, task_id, "bob", reason="n/a")
        )

    results = run_together(calls)

    with state.engine.connect() as connection:
        final = dict(connection.execute(select(tasks.c.id, tasks.c.state)).all())
    stored = interventions_frame(state)
    for position, task_id in enumerate(task_ids):
        completed, dismissed = results[2 * position], results[2 * position + 1]
        failures = [
            result for result in (completed, dismissed) if isinstance(result, Exception)
        ]
        assert len(failures) == 1, (task_id, completed, dismissed)
        assert isinstance(failures[0], ValueError)
        assert f"task {task_id} is already" in str(failures[0])
        winner = "dismissed" if isinstance(completed, Exception) else "completed"
        assert final[task_id] == winner
        recorded = int((stored["task_id"] == task_id).sum())
        assert recorded == (1 if winner == "completed" else 0)


# Alerts


def test_concurrent_acknowledges_one_wins(state):
    new = [
        NewAlert(
            sample_alert(account_id=f"a{index}", dedupe_key=f"risk/a{index}/{DAY}"),
            ("hook",),
        )
        for index in range(SUBJECTS)
    ]
    alert_ids = [result.id for result in add_alerts(state, new, now=NOW)]
    calls: list[Callable[[], Any]] = [
        lambda alert_id=alert_id, actor=actor: set_alert_state(
            state, alert_id, "acknowledged", now=NOW, actor=actor
        )
        for alert_id in alert_ids
        for actor in ("ana", "bob", "cy")
    ]

    results = run_together(calls)

    for position, alert_id in enumerate(alert_ids):
        group = results[3 * position : 3 * position + 3]
        failures = [result for result in group if isinstance(result, Exception)]
        assert len(failures) == 2, (alert_id, group)
        for error in failures:
            assert isinstance(error, ValueError)
            assert "is acknowledged and cannot become acknowledged" in str(error)
        assert get_alert(state, alert_id).state == "acknowledged"
    entries = [
        entry
        for entry in state.audit_entries("alert")
        if entry.action == "acknowledged"
    ]
    assert len(entries) == SUBJECTS


# Overrides


def test_concurrent_removals_one_wins(state):
    override_ids = [
        state.add_override(
            f"a{index}",
            score=50,
            reason="data gap",
            author="ana",
            expires_on=date(2099, 1, 1),
        )
        for index in range(SUBJECTS)
    ]
    calls: list[Callable[[], Any]] = [
        lambda override_id=override_id, actor=actor: state.remove_override(
            override_id, actor
        )
        for override_id in override_ids
        for actor in ("ana", "bob")
    ]

    results = run_together(calls)

    failures = [result for result in results if isinstance(result, Exception)]
    assert len(failures) == SUBJECTS
    for error in failures:
        assert isinstance(error, ValueError)
        assert "was already removed" in str(error)
    removals = [
        entry for entry in state.audit_entries("override") if entry.action == "remove"
    ]
    assert len(removals) == SUBJECTS
