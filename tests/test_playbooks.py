"""Playbooks and tasks, outcome and intervention imports, and their commands."""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError
from sqlalchemy import insert
from sqlalchemy.exc import IntegrityError
from typer.testing import CliRunner

from healthscore.cli import app
from healthscore.config import ConfigError
from healthscore.config.models import Duration, ProjectConfig
from healthscore.config.playbooks import PlaybookConfig
from healthscore.monitoring import playbooks
from healthscore.monitoring.interventions import (
    ImportValidationError,
    import_interventions,
    import_outcomes,
    interventions_frame,
    outcomes_frame,
    store_outcomes,
)
from healthscore.monitoring.outbox import release_held
from healthscore.monitoring.playbooks import (
    TaskNotFoundError,
    apply_playbooks,
    complete_task,
    dismiss_task,
    list_tasks,
)
from healthscore.pipeline import score
from healthscore.store import StateStore, StateStoreError
from healthscore.store.tables_tasks import tasks
from project_factory import minimal_config, write_project

AS_OF = date(2026, 3, 1)
NOW = datetime(2026, 3, 1, 8, 0, tzinfo=UTC)

ACCOUNTS = """account_id,name,segment,owner,arr
a1,Acme,enterprise,alice,120000
a2,Globex,smb,bob,9000
a3,Initech,smb,,4000
"""

# a1: 2 events by 2 users; a2: 10 events by 4 users; a3: none.
EVENTS = "account_id,timestamp,user\n" + "".join(
    [f"a1,2026-02-{day:02d},u{day}\n" for day in (10, 11)]
    + [f"a2,2026-02-{day:02d},u{day % 4}\n" for day in range(10, 20)]
)

PLAYBOOKS: list[dict[str, Any]] = [
    {
        "name": "training",
        "when": "score < 101",
        "addresses": ["adoption"],
        "task": {
            "title": "Training for {name} ({account_id})",
            "owner": "owner",
            "due_in": "2w",
            "priority": "medium",
        },
    },
    {
        "name": "ebr",
        "when": "band == 'at_risk' and arr >= 100000",
        "addresses": ["usage"],
        "task": {
            "title": "EBR with {account_id}: score {score:.0f}, band {band}",
            "description": "Owner {owner}, due {due_on}",
            "due_in": "1mo",
            "priority": "urgent",
        },
    },
    {
        "name": "rescue",
        "on_alert": "score_drop",
        "task": {"title": "Rescue {account_id}: {alert_title}"},
    },
]


def config(playbooks: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    measures = {
        "usage": {"metric": "events_28d", "min": 0, "max": 10},
        "adoption": {"metric": "users_28d", "min": 0, "max": 4},
    }
    return minimal_config(
        # The playbooks below react to alerts of this rule.
        alerts={
            "rules": [
                {"name": "score_drop", "kind": "drop", "points": 20, "within": "30d"}
            ]
        },
        metrics={
            "events_28d": {"type": "count", "source": "events", "window": "28d"},
            "users_28d": {
                "type": "distinct_count",
                "source": "events",
                "column": "user",
                "window": "28d",
            },
        },
        scorecards=[
            {
                "name": "default",
                "components": {
                    name: {
                        "weight": 1,
                        "measures": [
                            {
                                "metric": item["metric"],
                                "normalize": {
                                    "method": "bounds",
                                    "min": item["min"],
                                    "max": item["max"],
                                },
                            }
                        ],
                    }
                    for name, item in measures.items()
                },
            }
        ],
        playbooks=PLAYBOOKS if playbooks is None else playbooks,
    )


@dataclass(frozen=True)
class Alert:
    """The fields of a raised alert that playbooks read."""

    rule: str
    account_id: str
    owner: str | None
    title: str


@pytest.fixture
def project(tmp_path):
    return write_project(
        tmp_path / "project",
        config(),
        {"accounts.csv": ACCOUNTS, "events.csv": EVENTS},
    )


@pytest.fixture
def run(project):
    return score(project, AS_OF, store=False)


@pytest.fixture
def store(project):
    with StateStore.open(project.config.store.state, project.root) as opened:
        yield opened


# Settings


def test_playbook_needs_a_trigger():
    bad = config([{"name": "x", "task": {"title": "t"}}])

    with pytest.raises(ValidationError, match="playbook 'x' has no trigger"):
        ProjectConfig.model_validate(bad)


def test_playbook_addresses_known_names():
    bad = config(
        [
            {
                "name": "x",
                "when": "score < 50",
                "addresses": ["nps"],
                "task": {"title": "t"},
            }
        ]
    )

    with pytest.raises(ValidationError, match="addresses 'nps', which is not a"):
        ProjectConfig.model_validate(bad)


def test_playbook_names_unique():
    item = {"name": "x", "when": "score < 50", "task": {"title": "t"}}

    with pytest.raises(ValidationError, match="playbook name 'x' is used twice"):
        ProjectConfig.model_validate(config([item, item]))


def test_reopen_after_default_and_parsed():
    task = {"title": "t"}
    default = PlaybookConfig.model_validate({"name": "x", "when": "1", "task": task})
    weeks = PlaybookConfig.model_validate(
        {"name": "x", "when": "1", "task": task, "reopen_after": "2w"}
    )

    assert default.reopen_after == Duration(amount=30, unit="days")
    assert weeks.reopen_after.days == 14


def test_template_rejects_positional_field():
    bad = config([{"name": "x", "when": "score < 50", "task": {"title": "a {0}"}}])

    with pytest.raises(ValidationError, match="positional field"):
        ProjectConfig.model_validate(bad)


# Opening tasks


def test_scores_as_constructed(run):
    scores = run.result.scores.set_index("account_id")["score"]

    # a1: usage 2/10 -> 20, adoption 2/4 -> 50, each half of the score.
    assert scores["a1"] == pytest.approx(35.0)
    assert scores["a2"] == pytest.approx(100.0)
    assert scores["a3"] == pytest.approx(0.0)


def test_apply_opens_ranked_tasks(project, run, store):
    opened = apply_playbooks(project, run, [], store, now=NOW)
    found = {(task.account_id, task.playbook): task for task in opened}

    assert sorted(found) == [
        ("a1", "ebr"),
        ("a1", "training"),
        ("a2", "training"),
        ("a3", "training"),
    ]
    # a1 loses 40 points on usage (ebr) and 25 on adoption (training).
    assert found[("a1", "ebr")].rank == 1
    assert found[("a1", "training")].rank == 2
    assert found[("a3", "training")].rank == 1


def test_task_fields_from_template(project, run, store):
    opened = apply_playbooks(project, run, [], store, now=NOW)
    ebr = next(task for task in opened if task.playbook == "ebr")
    training = next(task for task in opened if task.account_id == "a2")

    assert ebr.title == "EBR with a1: score 35, band at_risk"
    assert ebr.description == "Owner alice, due 2026-04-01"
    assert ebr.due_on == date(2026, 4, 1)
    assert ebr.priority == "urgent"
    assert ebr.owner == "alice"
    assert ebr.cause_key == "ebr|a1|when"
    assert training.title == "Training for Globex (a2)"
    assert training.due_on == date(2026, 3, 15)


def test_alert_trigger_and_owner_fallback(project, run, store):
    alerts = [Alert("score_drop", "a3", "team-lead", "Score fell 30 points")]

    opened = apply_playbooks(project, run, alerts, store, now=NOW)
    rescue = [task for task in opened if task.playbook == "rescue"]

    assert [task.account_id for task in rescue] == ["a3"]
    assert rescue[0].title == "Rescue a3: Score fell 30 points"
    # a3 has no owner in the accounts, so the alert's owner is used.
    assert rescue[0].owner == "team-lead"
    assert rescue[0].cause_key == "rescue|a3|alert:score_drop"


def test_apply_twice_opens_nothing_new(project, run, store):
    first = apply_playbooks(project, run, [], store, now=NOW)
    second = apply_playbooks(project, run, [], store, now=NOW)

    assert len(first) == 4
    assert second == []
    assert len(list_tasks(store)) == 4


def close(store: StateStore, task_id: int, action: str, at: datetime) -> None:
    if action == "complete":
        complete_task(store, task_id, "bob", note="ran the session", now=at)
    else:
        dismiss_task(store, task_id, "bob", reason="trained last month", now=at)


@pytest.mark.parametrize("action", ["complete", "dismiss"])
def test_closed_cause_waits_reopen_after(project, run, store, action):
    first = apply_playbooks(project, run, [], store, now=NOW)
    done = next(task for task in first if task.account_id == "a2")
    close(store, done.id, action, NOW)

    # The default reopen_after is 30 days from the close.
    week = apply_playbooks(project, run, [], store, now=NOW + timedelta(days=7))
    almost = apply_playbooks(
        project, run, [], store, now=NOW + timedelta(days=30, seconds=-1)
    )
    month = apply_playbooks(project, run, [], store, now=NOW + timedelta(days=30))

    assert week == []
    assert almost == []
    assert [(task.account_id, task.playbook) for task in month] == [("a2", "training")]


def test_closed_cause_opens_again_with_0d(tmp_path):
    training = {**PLAYBOOKS[0], "reopen_after": "0d"}
    project = write_project(
        tmp_path / "project",
        config([training]),
        {"accounts.csv": ACCOUNTS, "events.csv": EVENTS},
    )
    run = score(project, AS_OF, store=False)
    with StateStore.open(project.config.store.state, project.root) as store:
        first = apply_playbooks(project, run, [], store, now=NOW)
        done = next(task for task in first if task.account_id == "a2")
        dismiss_task(store, done.id, "bob", reason="not needed", now=NOW)
        again = apply_playbooks(project, run, [], store, now=NOW)

    assert [(task.account_id, task.playbook) for task in again] == [("a2", "training")]


def test_held_run_opens_no_tasks(project, run, store):
    alerts = [Alert("score_drop", "a3", "team-lead", "Score fell 30 points")]

    opened = apply_playbooks(project, run, alerts, store, now=NOW, held=True)

    assert opened == []
    assert list_tasks(store) == []


# coach addresses adoption, on which a1 loses 25 points; rescue addresses usage, on
# which a1 loses 40.
RANKED_PLAYBOOKS: list[dict[str, Any]] = [
    {
        "name": "coach",
        "when": "score < 101",
        "addresses": ["adoption"],
        "task": {"title": "Coach {account_id}"},
    },
    {
        "name": "rescue",
        "on_alert": "score_drop",
        "addresses": ["usage"],
        "task": {"title": "Rescue {account_id}"},
    },
]


def ranks(store: StateStore, account_id: str) -> dict[str, int]:
    found = list_tasks(store, task_state="open", account_id=account_id)
    return {task.playbook: task.rank for task in found}


def test_ranks_span_account_open_tasks(tmp_path):
    project = write_project(
        tmp_path / "project",
        config(RANKED_PLAYBOOKS),
        {"accounts.csv": ACCOUNTS, "events.csv": EVENTS},
    )
    run = score(project, AS_OF, store=False)
    drop = [Alert("score_drop", "a1", None, "Score fell 30 points")]
    with StateStore.open(project.config.store.state, project.root) as store:
        first = apply_playbooks(project, run, [], store, now=NOW)
        after_first = ranks(store, "a1")
        second = apply_playbooks(project, run, drop, store, now=NOW)
        after_second = ranks(store, "a1")
        complete_task(store, second[0].id, "alice", note="called", now=NOW)
        after_close = ranks(store, "a1")

    assert [(task.account_id, task.rank) for task in first] == [
        ("a1", 1),
        ("a2", 1),
        ("a3", 1),
    ]
    assert after_first == {"coach": 1}
    # The new task addresses more points than the open one, so it goes first.
    assert [(task.playbook, task.rank) for task in second] == [("rescue", 1)]
    assert after_second == {"rescue": 1, "coach": 2}
    assert after_close == {"coach": 1}


def test_closing_moves_later_tasks_up(project, run, store):
    apply_playbooks(project, run, [], store, now=NOW)
    before = ranks(store, "a1")
    ebr = next(task for task in list_tasks(store) if task.playbook == "ebr")

    dismiss_task(store, ebr.id, "alice", reason="renewed", now=NOW)

    assert before == {"ebr": 1, "training": 2}
    assert ranks(store, "a1") == {"training": 1}


def test_open_cause_unique_in_database(project, run, store):
    opened = apply_playbooks(project, run, [], store, now=NOW)
    row = {
        column.name: getattr(opened[0], column.name)
        for column in tasks.columns
        if column.name != "id"
    }

    with (
        pytest.raises(IntegrityError, match="UNIQUE constraint failed"),
        store.engine.begin() as connection,
    ):
        connection.execute(insert(tasks).values(**row))


# After AS_OF the 28-day window empties: a1 falls from 35 to 0 and a2 from 100 to 0.
DROP_DAY = date(2026, 3, 20)


def rescue_project(root: Path) -> Any:
    """A project whose score_drop alerts of DROP_DAY open rescue tasks."""
    settings = config([PLAYBOOKS[2]])
    # a2 changes band, one account in three, which the default guard would hold.
    settings["alerts"]["guard"] = {"max_band_change_share": 1}
    return write_project(
        root, settings, {"accounts.csv": ACCOUNTS, "events.csv": EVENTS}
    )


def test_rerun_opens_tasks_after_failure(tmp_path, monkeypatch):
    project = rescue_project(tmp_path / "project")
    score(project, AS_OF)
    real_insert = playbooks._insert_tasks

    def failing_insert(*args: Any, **kwargs: Any) -> Any:
        raise StateStoreError("the operational store is unavailable")

    monkeypatch.setattr(playbooks, "_insert_tasks", failing_insert)
    with pytest.raises(StateStoreError, match="unavailable"):
        score(project, DROP_DAY)
    monkeypatch.setattr(playbooks, "_insert_tasks", real_insert)

    with StateStore.open(project.config.store.state, project.root) as store:
        assert list_tasks(store) == []
        rerun = score(project, DROP_DAY)
        again = score(project, DROP_DAY)
        opened = list_tasks(store)

    assert rerun.monitoring is not None
    assert rerun.monitoring.alerts.raised == []
    duplicates = rerun.monitoring.alerts.suppressed
    assert sorted(item.alert.account_id for item in duplicates) == ["a1", "a2"]
    assert sorted(task.account_id for task in opened) == ["a1", "a2"]
    assert {task.cause_key for task in opened} == {
        "rescue|a1|alert:score_drop",
        "rescue|a2|alert:score_drop",
    }
    assert again.monitoring is not None
    assert again.monitoring.tasks == []


def test_rerun_keeps_closed_task_closed(tmp_path):
    project = rescue_project(tmp_path / "project")
    score(project, AS_OF)
    first = score(project, DROP_DAY)
    assert first.monitoring is not None
    assert len(first.monitoring.tasks) == 2

    with StateStore.open(project.config.store.state, project.root) as store:
        complete_task(store, first.monitoring.tasks[0].id, "alice", note="called")
        rerun = score(project, DROP_DAY)
        states = sorted(task.state for task in list_tasks(store))

    assert rerun.monitoring is not None
    assert rerun.monitoring.tasks == []
    assert states == ["completed", "open"]


def test_release_opens_alert_tasks_once(tmp_path):
    # The default guard holds DROP_DAY: a2 changes band, one account in three.
    settings = config([PLAYBOOKS[0], PLAYBOOKS[2]])
    project = write_project(
        tmp_path / "project", settings, {"accounts.csv": ACCOUNTS, "events.csv": EVENTS}
    )
    score(project, AS_OF)
    held = score(project, DROP_DAY)
    assert held.monitoring is not None
    assert held.monitoring.alerts.held
    held_ids = held.monitoring.alerts.alert_ids

    with StateStore.open(project.config.store.state, project.root) as store:
        while_held = playbooks.open_released_tasks(project, store, held_ids)
        released = release_held(store, DROP_DAY, now=datetime.now(UTC), actor="ana")
        opened = playbooks.open_released_tasks(project, store, released)
        again = playbooks.open_released_tasks(project, store, released)
        rerun = score(project, DROP_DAY)
        rescues = list_tasks(store, task_state="open")

    assert while_held == []
    assert len(released) == 2
    # Only the on_alert playbook opens tasks; training has a `when` trigger only.
    assert [(task.account_id, task.cause_key) for task in opened] == [
        ("a1", "rescue|a1|alert:score_drop"),
        ("a2", "rescue|a2|alert:score_drop"),
    ]
    assert opened[0].title.startswith("Rescue a1: Acme fell 35.0 points since ")
    assert again == []
    assert rerun.monitoring is not None
    assert rerun.monitoring.alerts.held
    assert [task.playbook for task in rescues].count("rescue") == 2


def test_unknown_template_field(tmp_path):
    # Caught when the project loads, before anything is scored or stored.
    with pytest.raises(ConfigError, match=r"unknown template field \{nps\}"):
        write_project(
            tmp_path / "bad",
            config([{"name": "x", "when": "score < 50", "task": {"title": "{nps}"}}]),
            {"accounts.csv": ACCOUNTS, "events.csv": EVENTS},
        )


# Closing tasks


def test_complete_records_intervention(project, run, store):
    opened = apply_playbooks(project, run, [], store, now=NOW)
    task = complete_task(store, opened[0].id, "alice", note="done", now=NOW)

    stored = interventions_frame(store)

    assert task.state == "completed"
    assert task.closed_by == "alice"
    assert stored["task_id"].tolist() == [task.id]
    assert stored["kind"].tolist() == [task.playbook]
    assert stored["occurred_on"].tolist() == [date(2026, 3, 1)]


def test_dismiss_keeps_reason(project, run, store):
    opened = apply_playbooks(project, run, [], store, now=NOW)
    task = dismiss_task(store, opened[0].id, "alice", reason="renewed", now=NOW)

    assert task.state == "dismissed"
    assert task.note == "renewed"
    assert interventions_frame(store).empty


def test_close_twice_rejected(project, run, store):
    opened = apply_playbooks(project, run, [], store, now=NOW)
    dismiss_task(store, opened[0].id, "alice", reason="renewed", now=NOW)

    with pytest.raises(ValueError, match=r"is already dismissed \(by alice"):
        complete_task(store, opened[0].id, "alice", now=NOW)


def test_close_unknown_task(store):
    with pytest.raises(TaskNotFoundError, match="task 99 not found"):
        complete_task(store, 99, "alice", now=NOW)


def test_list_filters(project, run, store):
    apply_playbooks(project, run, [], store, now=NOW)

    assert {task.account_id for task in list_tasks(store, owner="bob")} == {"a2"}
    assert list_tasks(store, task_state="completed") == []
    with pytest.raises(ValueError, match="unknown task state 'done'"):
        list_tasks(store, task_state="done")


# Imports


def write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def test_import_outcomes(store, tmp_path):
    file = write(
        tmp_path / "outcomes.csv",
        "account_id,kind,occurred_on,arr_before,arr_after\n"
        "a1,churned,2026-02-01,120000,0\n"
        "a2,expanded,2026-02-03,9000,12000\n",
    )

    result = import_outcomes(store, file, now=NOW)
    again = import_outcomes(store, file, now=NOW)
    stored = outcomes_frame(store)

    assert (result.stored, result.skipped) == (2, 0)
    assert (again.stored, again.skipped) == (0, 2)
    assert stored["kind"].tolist() == ["churned", "expanded"]
    assert stored["source"].tolist() == ["outcomes.csv", "outcomes.csv"]


def test_import_outcomes_names_row_and_column(store, tmp_path):
    file = write(
        tmp_path / "outcomes.csv",
        "account_id,kind,occurred_on,arr_before\n"
        "a1,churned,2026-02-01,100\n"
        "a2,lost,2026-02-30,-5\n",
    )

    with pytest.raises(ImportValidationError) as caught:
        import_outcomes(store, file, now=NOW)
    message = str(caught.value)

    assert f"{file} has 3 invalid values; nothing was stored" in message
    assert "row 2 (line 3), column kind: 'lost' is not one of churned" in message
    assert "row 2 (line 3), column occurred_on: '2026-02-30' is not a date" in message
    assert "row 2 (line 3), column arr_before: '-5' is not a number of at least" in (
        message
    )
    assert outcomes_frame(store).empty


def test_import_rejects_missing_column(store, tmp_path):
    file = write(tmp_path / "o.csv", "account_id,kind,date\na1,churned,2026-01-01\n")

    with pytest.raises(
        ImportValidationError,
        match=r"line 1: missing column occurred_on; unknown column date",
    ):
        import_outcomes(store, file, now=NOW)


def test_import_names_other_separator(store, tmp_path):
    file = write(
        tmp_path / "o.csv", "account_id;kind;occurred_on\na1;churned;2026-01-01\n"
    )

    with pytest.raises(ImportValidationError) as caught:
        import_outcomes(store, file, now=NOW)
    message = str(caught.value)

    assert "line 1: missing columns account_id, kind, occurred_on; unknown column " in (
        message
    )
    assert "The header is one column that contains ';'" in message
    assert "save the file with commas between the columns" in message


def test_import_rejects_repeated_row(store, tmp_path):
    file = write(
        tmp_path / "i.csv",
        "account_id,kind,occurred_on,author\n"
        "a1,ebr,2026-01-05,ana\n"
        "a1,ebr,2026-01-05,ana\n",
    )

    with pytest.raises(
        ImportValidationError, match=r"row 2 \(line 3\): repeats row 1 \(line 2\)"
    ):
        import_interventions(store, file, now=NOW)
    assert interventions_frame(store).empty


def test_import_error_names_line_after_blank_line(store, tmp_path):
    file = write(
        tmp_path / "i.csv",
        "account_id,kind,occurred_on,author\na1,ebr,2026-01-05,ana\n\n,,,\n",
    )

    with pytest.raises(ImportValidationError) as caught:
        import_interventions(store, file, now=NOW)
    message = str(caught.value)

    assert f"{file} has 4 invalid values; nothing was stored" in message
    assert "row 2 (line 4), column account_id: is empty" in message
    assert "row 2 (line 4), column author: is empty" in message
    assert "line 3" not in message
    assert interventions_frame(store).empty


def test_import_names_line_after_multiline_note(store, tmp_path):
    file = write(
        tmp_path / "i.csv",
        "account_id,kind,occurred_on,author,note\n"
        'a1,ebr,2026-01-05,ana,"first line\nsecond line"\n'
        "a2,ebr,2026-01-05,,\n",
    )

    with pytest.raises(ImportValidationError) as caught:
        import_interventions(store, file, now=NOW)

    assert "row 2 (line 4), column author: is empty" in str(caught.value)


def test_import_names_row_with_missing_cell(store, tmp_path):
    file = write(
        tmp_path / "o.csv",
        "account_id,kind,occurred_on,source\n"
        "a1,churned,2026-01-01,crm\n"
        "a2,2026-01-02,crm\n",
    )

    with pytest.raises(ImportValidationError) as caught:
        import_outcomes(store, file, now=NOW)
    message = str(caught.value)

    assert "row 2 (line 3): has fewer cells than the header has columns" in message
    assert outcomes_frame(store).empty


def test_import_one_invalid_value_is_singular(store, tmp_path):
    file = write(
        tmp_path / "o.csv", "account_id,kind,occurred_on\na1,lost,2026-01-01\n"
    )

    with pytest.raises(ImportValidationError) as caught:
        import_outcomes(store, file, now=NOW)

    assert f"{file} has 1 invalid value; nothing was stored" in str(caught.value)


@pytest.mark.parametrize("importer", [import_outcomes, import_interventions])
def test_import_rejects_date_after_latest(store, tmp_path, importer):
    # The second row is a day after the latest date; the first is on it.
    header = (
        "account_id,kind,occurred_on\n"
        if importer is import_outcomes
        else "account_id,kind,occurred_on,author\n"
    )
    extra = "" if importer is import_outcomes else ",ana"
    file = write(
        tmp_path / "future.csv",
        f"{header}a1,churned,2026-03-01{extra}\na2,churned,2026-03-02{extra}\n",
    )

    with pytest.raises(ImportValidationError) as caught:
        importer(store, file, now=NOW, latest_date=date(2026, 3, 1))
    message = str(caught.value)

    assert f"{file} has 1 invalid value; nothing was stored" in message
    assert "row 2 (line 3), column occurred_on: 2026-03-02 is after today" in message
    assert "--allow-future" in message
    assert outcomes_frame(store).empty
    assert interventions_frame(store).empty
    assert importer(store, file, now=NOW).stored == 2


def test_import_lists_unknown_account_with_other_problems(store, tmp_path):
    file = write(
        tmp_path / "bad.csv",
        "account_id,kind,occurred_on\n"
        "a1,churnd,2026-02-01\nzz9,churned,2026-02-01\na2,renewed,2026-03-02\n",
    )

    with pytest.raises(ImportValidationError) as caught:
        import_outcomes(
            store,
            file,
            now=NOW,
            known_accounts={"a1", "a2"},
            latest_date=date(2026, 3, 1),
        )
    message = str(caught.value)

    assert f"{file} has 3 invalid values; nothing was stored" in message
    assert "row 1 (line 2), column kind: 'churnd'" in message
    assert "row 2 (line 3), column account_id: 'zz9' is not an account" in message
    assert "row 3 (line 4), column occurred_on: 2026-03-02 is after today" in message
    assert "--allow-unknown" in message
    assert outcomes_frame(store).empty


# Outcomes that conflict, as backtest labels read them


def test_same_day_churn_and_renewal_rejected(store, tmp_path):
    file = write(
        tmp_path / "o.csv",
        "account_id,kind,occurred_on\n"
        "a1,churned,2026-02-01\n"
        "a2,renewed,2026-02-01\n"
        "a1,renewed,2026-02-01\n"
        "a1,expanded,2026-02-01\n",
    )

    with pytest.raises(ImportValidationError) as caught:
        import_outcomes(store, file, now=NOW)

    assert str(caught.value) == (
        f"{file} has 1 conflict between outcomes; nothing was stored:\n"
        "  a1 on 2026-02-01: row 1 (line 2) records churned but row 3 (line 4) "
        "records renewed and row 4 (line 5) records expanded\n"
        "An account that churns cannot renew, expand or contract on the same day: "
        "remove the row that is wrong, or correct its date."
    )
    assert outcomes_frame(store).empty


def test_churns_two_days_apart_rejected(store, tmp_path):
    file = write(
        tmp_path / "o.csv",
        "account_id,kind,occurred_on\n"
        "a2,churned,2026-01-03\n"
        "a1,churned,2025-06-01\n"
        "a2,churned,2026-01-01\n"
        "a1,renewed,2025-09-01\n"
        "a1,churned,2026-01-01\n",
    )

    with pytest.raises(ImportValidationError) as caught:
        import_outcomes(store, file, now=NOW)

    # a1 churned twice too, but its renewal between the churns shows its return.
    assert str(caught.value) == (
        f"{file} has 1 conflict between outcomes; nothing was stored:\n"
        "  a2: row 1 (line 2) records churned on 2026-01-03, 2 days after row 3 "
        "(line 4) records churned on 2026-01-01, with no outcome between them\n"
        "Two churns of an account need an outcome between them that shows when it "
        "came back. If the two rows record one churn, remove the later row; if the "
        "account came back between them, add an outcome dated then, such as renewed."
    )
    assert outcomes_frame(store).empty


def test_import_checked_against_stored_outcomes(store, tmp_path):
    first = write(
        tmp_path / "first.csv", "account_id,kind,occurred_on\na1,churned,2026-02-01\n"
    )
    later = write(
        tmp_path / "later.csv",
        "account_id,kind,occurred_on\na1,renewed,2026-02-01\na1,churned,2026-02-05\n",
    )

    assert import_outcomes(store, first, now=NOW).stored == 1
    with pytest.raises(ImportValidationError) as caught:
        import_outcomes(store, later, now=NOW)
    lines = str(caught.value).splitlines()

    assert lines[0] == f"{later} has 2 conflicts between outcomes; nothing was stored:"
    assert lines[1] == (
        "  a1 on 2026-02-01: the stored outcome from first.csv records churned but "
        "row 1 (line 2) records renewed"
    )
    # The renewal is on the day of the first churn, so it does not show a return.
    assert lines[2] == (
        "  a1: row 2 (line 3) records churned on 2026-02-05, 4 days after the stored "
        "outcome from first.csv records churned on 2026-02-01, with no outcome "
        "between them"
    )
    assert len(outcomes_frame(store)) == 1


def test_import_leaves_stored_conflicts_alone(store, tmp_path):
    # Outcomes stored by the API are not checked against each other, so an import
    # of the same rows skips them without an error.
    rows = [
        {"account_id": "a1", "kind": kind, "occurred_on": date(2026, 2, 1),
         "arr_before": None, "arr_after": None, "source": "api"}
        for kind in ("churned", "renewed")
    ]  # fmt: skip
    store_outcomes(store, rows, origin={"request": "test"}, now=NOW)
    file = write(
        tmp_path / "o.csv",
        "account_id,kind,occurred_on\na1,churned,2026-02-01\na1,renewed,2026-02-01\n",
    )

    result = import_outcomes(store, file, now=NOW)

    assert (result.stored, result.skipped, result.warnings) == (0, 2, ())


def test_churn_before_first_score_warned(store, tmp_path):
    file = write(
        tmp_path / "o.csv",
        "account_id,kind,occurred_on\n"
        "a1,churned,2026-01-15\n"
        "a2,renewed,2026-01-20\n"
        "a2,churned,2026-02-01\n"
        "a3,churned,2026-02-02\n",
    )

    result = import_outcomes(store, file, now=NOW, first_scored=date(2026, 2, 1))
    again = import_outcomes(store, file, now=NOW, first_scored=date(2026, 2, 1))

    assert result.stored == 4
    assert result.warnings == (
        f"{file}: 2 churns are dated on or before 2026-02-01, the date of the first "
        "stored snapshot: row 1 (line 2) (a1 on 2026-01-15), row 3 (line 4) (a2 on "
        "2026-02-01). They were stored, but no stored score precedes them, so "
        "backtests get no label from them, and later scores of their accounts get "
        "none until a later outcome shows that the account came back. If a date is "
        "right, store snapshots from before it with `healthscore backfill --from DATE "
        "--to DATE --every 1mo`.",
    )
    # Rows already stored were warned about when they were stored.
    assert (again.skipped, again.warnings) == (4, ())


def test_import_interventions(store, tmp_path):
    file = write(
        tmp_path / "i.csv",
        "account_id,kind,occurred_on,author,note\n"
        "a1,ebr,2026-01-05,ana,went well\n"
        "a2,training,2026-01-06,bo,\n",
    )

    result = import_interventions(store, file, now=NOW)
    stored = interventions_frame(store)

    assert result.stored == 2
    assert stored["note"].iloc[0] == "went well"
    assert stored["note"].isna().iloc[1]
    assert stored["task_id"].isna().all()


# Commands


def test_cli_tasks_flow(project, run, store, tmp_path):
    apply_playbooks(project, run, [], store, now=NOW)
    runner = CliRunner()
    folder = ["--project", str(project.root)]

    listed = runner.invoke(app, ["tasks", "list", "--owner", "bob", "--json", *folder])
    completed = runner.invoke(
        app, ["tasks", "complete", "3", "--by", "bob", "--note", "ok", *folder]
    )
    missing = runner.invoke(
        app, ["tasks", "dismiss", "99", "--by", "bob", "--reason", "x", *folder]
    )

    assert listed.exit_code == 0, listed.output
    assert [task["title"] for task in json.loads(listed.output)] == [
        "Training for Globex (a2)"
    ]
    assert completed.exit_code == 0, completed.output
    assert "Completed task 3 (training for a2)." in completed.output
    assert missing.exit_code == 1
    assert "error: task 99 not found" in missing.output


def test_cli_outcomes_import_error(project, tmp_path):
    file = write(tmp_path / "o.csv", "account_id,kind,occurred_on\n,churned,x\n")

    result = CliRunner().invoke(
        app, ["outcomes", "import", str(file), "--project", str(project.root)]
    )

    assert result.exit_code == 1
    assert "row 1 (line 2), column account_id: is empty" in result.output


def test_cli_import_rejects_future_rows(project, tmp_path):
    file = write(
        tmp_path / "o.csv",
        "account_id,kind,occurred_on\na1,churned,2026-01-01\na2,churned,2999-01-01\n",
    )
    runner = CliRunner()
    folder = ["--project", str(project.root)]

    rejected = runner.invoke(app, ["outcomes", "import", str(file), *folder])
    with StateStore.open(project.config.store.state, project.root) as state:
        after_reject = len(outcomes_frame(state))
    allowed = runner.invoke(
        app, ["outcomes", "import", str(file), "--allow-future", *folder]
    )

    assert rejected.exit_code == 1
    assert "row 2 (line 3), column occurred_on: 2999-01-01 is after today" in (
        " ".join(rejected.output.split())
    )
    assert after_reject == 0
    assert allowed.exit_code == 0, allowed.output
    assert "Stored 2 outcomes from" in allowed.output


def test_cli_import_warns_of_early_churn(project, tmp_path):
    score(project, AS_OF)
    file = write(
        tmp_path / "o.csv",
        "account_id,kind,occurred_on\na1,churned,2026-02-15\na2,renewed,2026-02-20\n",
    )
    command = ["outcomes", "import", str(file), "--project", str(project.root)]

    result = CliRunner().invoke(app, [*command, "--json"])

    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["stored"] == 2
    assert json.loads(result.stdout)["warnings"] == [
        f"{file}: 1 churn is dated on or before 2026-03-01, the date of the first "
        "stored snapshot: row 1 (line 2) (a1 on 2026-02-15). They were stored, but no "
        "stored score precedes them, so backtests get no label from them, and later "
        "scores of their accounts get none until a later outcome shows that the "
        "account came back. If a date is right, store snapshots from before it with "
        "`healthscore backfill --from DATE --to DATE --every 1mo`."
    ]
    assert "warning: " in result.stderr
    assert "1 churn is dated on or before 2026-03-01" in " ".join(result.stderr.split())


def test_cli_import_rejects_repeated_churn(project, tmp_path):
    file = write(
        tmp_path / "o.csv",
        "account_id,kind,occurred_on\na1,churned,2026-02-01\na1,churned,2026-02-03\n",
    )

    result = CliRunner().invoke(
        app, ["outcomes", "import", str(file), "--project", str(project.root)]
    )
    with StateStore.open(project.config.store.state, project.root) as state:
        stored = outcomes_frame(state)

    assert result.exit_code == 1
    assert "has 1 conflict between outcomes; nothing was stored" in " ".join(
        result.output.split()
    )
    assert "2 days after row 1 (line 2) records churned on 2026-02-01" in " ".join(
        result.output.split()
    )
    assert stored.empty


def test_cli_import_stored_count_is_singular(project, tmp_path):
    file = write(
        tmp_path / "i.csv",
        "account_id,kind,occurred_on,author\na1,ebr,2026-01-01,ana\n",
    )

    result = CliRunner().invoke(
        app, ["interventions", "import", str(file), "--project", str(project.root)]
    )

    assert result.exit_code == 0, result.output
    assert "Stored 1 intervention from" in result.output


def test_task_table_title_at_80_columns():
    from io import StringIO

    from rich.console import Console

    from healthscore.cli.tasks import _task_table
    from healthscore.monitoring.playbooks import Task

    task = Task(
        id=16,
        playbook="drop_review",
        account_id="A0081",
        cause_key="drop_review|A0081|alert:big_drop",
        title="Rescue call with A0081 (score 39)",
        description="",
        owner="Kwame Mensah",
        due_on=date(2026, 6, 15),
        priority="medium",
        state="open",
        rank=1,
        created_at=NOW,
        closed_at=None,
        closed_by=None,
        note=None,
    )
    output = StringIO()
    table, fits = _task_table([task], "open", width=80)
    Console(file=output, width=80).print(table)
    text = output.getvalue()

    assert fits

    assert max(len(line) for line in text.splitlines()) <= 80
    assert "Title" in text
    for word in ("Rescue", "call", "with", "A0081", "(score", "39)"):
        assert word in text.split()


def test_cli_release_opens_alert_tasks(tmp_path):
    from typer.testing import CliRunner

    from healthscore.cli import app

    settings = config([PLAYBOOKS[0], PLAYBOOKS[2]])
    project = write_project(
        tmp_path / "project", settings, {"accounts.csv": ACCOUNTS, "events.csv": EVENTS}
    )
    score(project, AS_OF)
    held = score(project, DROP_DAY)
    arguments = ["alerts", "release", "--as-of", DROP_DAY.isoformat()]

    result = CliRunner().invoke(app, [*arguments, "--project", str(project.root)])

    assert held.monitoring is not None
    assert held.monitoring.tasks == []
    assert result.exit_code == 0, result.output
    assert f"Released 2 held alerts of {DROP_DAY.isoformat()}." in result.stdout
    assert "Opened 2 tasks; see `healthscore tasks list`." in result.stdout
    with StateStore.open(project.config.store.state, project.root) as store:
        opened = list_tasks(store, task_state="open")
    # The training tasks come from the first run, which the guard did not hold.
    assert sorted(task.cause_key for task in opened if task.playbook == "rescue") == [
        "rescue|a1|alert:score_drop",
        "rescue|a2|alert:score_drop",
    ]


def test_task_title_score_stays_in_band(tmp_path):
    settings = config()
    # a1: usage 20 with weight 19, adoption 50 with weight 41, so its score is
    # 40.5, which is stable, while Python's `{:.0f}` shows it as 40.
    settings["scorecards"][0]["components"]["usage"]["weight"] = 19
    settings["scorecards"][0]["components"]["adoption"]["weight"] = 41
    settings["playbooks"] = [
        {
            "name": "check",
            "when": "account_id == 'a1'",
            "task": {"title": "Check {account_id}: score {score:.0f}, band {band}"},
        }
    ]
    project = write_project(
        tmp_path / "project", settings, {"accounts.csv": ACCOUNTS, "events.csv": EVENTS}
    )
    run = score(project, AS_OF, store=False)
    scores = run.result.scores.set_index("account_id")

    with StateStore.open(project.config.store.state, project.root) as state:
        opened = apply_playbooks(project, run, [], state, now=NOW)

    assert scores.loc["a1", "score"] == pytest.approx(40.5)
    assert scores.loc["a1", "band"] == "stable"
    assert [task.title for task in opened] == ["Check a1: score 41, band stable"]


def template_project(root: Path, title: str, description: str = "") -> Any:
    task = {"title": title, "description": description}
    settings = config([{"name": "check", "when": "account_id == 'a1'", "task": task}])
    return write_project(
        root, settings, {"accounts.csv": ACCOUNTS, "events.csv": EVENTS}
    )


@pytest.mark.parametrize(
    ("key", "template", "error"),
    [
        ("title", "Low use at {name}: {score:.0q}", "Unknown format code 'q'"),
        ("title", "{arr:%Y}", "Invalid format specifier '%Y'"),
        ("description", "Owner {owner:.0f}", "Unknown format code 'f'"),
        ("description", "Band {band!r:d}", "Unknown format code 'd'"),
    ],
)
def test_template_format_spec_checked_at_load(tmp_path, key, template, error):
    # Caught when the project loads, before anything is scored or stored.
    texts = {"title": "Check {name}", "description": ""}
    texts[key] = template

    with pytest.raises(ConfigError) as raised:
        template_project(tmp_path, texts["title"], texts["description"])

    (issue,) = raised.value.issues
    lines = (tmp_path / "healthscore.yml").read_text().splitlines()
    assert issue.file == str(tmp_path / "healthscore.yml")
    assert issue.key == f"playbooks[0].task.{key}"
    assert issue.line is not None
    assert lines[issue.line - 1].lstrip().startswith(f"{key}:")
    assert error in issue.message
    assert "format spec" in issue.message


def test_template_valid_format_specs_render(tmp_path):
    title = "{name:>6}|{arr:,.0f}|{score:05.1f}|{as_of:%d %b %Y}|{due_on!s}"
    project = template_project(tmp_path, title, "[{segment:^12}]|{owner:_<7}")
    run = score(project, AS_OF, store=False)

    with StateStore.open(project.config.store.state, project.root) as state:
        (task,) = apply_playbooks(project, run, [], state, now=NOW)

    # a1 has 2 of 10 events (usage 20) and 2 of 4 users (adoption 50), so score 35.
    assert task.title == "  Acme|120,000|035.0|01 Mar 2026|2026-03-15"
    assert task.description == "[ enterprise ]|alice__"
