"""Playbooks open tasks for accounts; tasks are completed or dismissed by people.

After a scoring run and its alerts, `apply_playbooks` finds the playbooks whose
trigger holds for each account and opens one task per playbook and account. A run
whose alerts the guard held opens no task, because its data may be wrong. When the
alerts are released, `open_released_tasks` opens the tasks of their `on_alert`
playbooks.

A task is never opened twice for the same cause (playbook, account and trigger)
while one is open. The insert checks for an open task in the same transaction, and
a partial unique index on open tasks rejects a second one that a concurrent run
inserts. A cause whose task was completed or dismissed less than the playbook's
`reopen_after` ago gets no new task either, so a dismissal holds for that long.

A rerun of a date passes the alerts that an earlier run of the date stored. Such an
alert opens its task only if its cause got no task since the alert was stored, so a
rerun completes the tasks of a run whose playbook step failed and reopens nothing
that was closed since.

Ranks order the open tasks of each account 1..n. Rank 1 goes to the task whose
playbook addresses the measures that lose the most points, so the task most likely
to lift the score comes first. Points lost are `effective_weight * (100 -
normalized)` of the latest run, as in `healthscore.scoring.top_drivers`, and a
component addresses all its measures. Every run whose alerts are not held ranks
the open tasks of its accounts again, and closing a task moves the account's later
tasks up by one.
"""

from __future__ import annotations

import logging
import math
import string
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, date, datetime, timedelta
from typing import TYPE_CHECKING, Any

import pandas as pd
from sqlalchemy import Connection, Row, func, insert, select, update
from sqlalchemy.exc import IntegrityError

from healthscore.config import Project
from healthscore.config.playbooks import PRIORITIES, PlaybookConfig
from healthscore.metrics.windows import shift
from healthscore.monitoring.alerts import ShownScore
from healthscore.monitoring.interventions import record_audit, write_transaction
from healthscore.pipeline import ScoringRun, score
from healthscore.scoring.routing import AccountColumns
from healthscore.store import StateStore
from healthscore.store.database import lock_for_write
from healthscore.store.tables_alerts import alerts
from healthscore.store.tables_tasks import TASK_STATES, interventions, tasks

if TYPE_CHECKING:
    from healthscore.engine import Engine

logger = logging.getLogger(__name__)

#: Text that a template shows for a missing value, whatever the format spec.
MISSING_TEXT = "n/a"


class TaskNotFoundError(LookupError):
    """A task id that is not in the store."""


@dataclass(frozen=True)
class Task:
    """A piece of work a playbook opened for one account."""

    id: int
    playbook: str
    account_id: str
    cause_key: str
    title: str
    description: str
    owner: str | None
    due_on: date
    priority: str
    state: str
    rank: int
    created_at: datetime
    closed_at: datetime | None
    closed_by: str | None
    note: str | None


# Opening tasks


def apply_playbooks(
    project: Project,
    run: ScoringRun,
    raised_alerts: Sequence[Any],
    state: StateStore,
    *,
    now: datetime | None = None,
    stored_alerts: Sequence[Any] = (),
    held: bool = False,
) -> list[Task]:
    """Open the tasks of every playbook whose trigger holds, and return the new ones.

    Parameters
    ----------
    project : Project
        Project whose `playbooks` apply.
    run : ScoringRun
        The scoring run; its accounts, metrics, scores and measures are read.
    raised_alerts : sequence of RaisedAlert
        Alerts raised for this run; `rule`, `account_id`, `owner` and `title` are read.
    state : StateStore
        Store that keeps the tasks.
    now : datetime, optional
        Timezone-aware creation time, by default the current time.
    stored_alerts : sequence of RaisedAlert
        Alerts of this run's date that an earlier run stored (the duplicates of a
        rerun); `dedupe_key` is read too. Each triggers like a raised alert, unless
        its cause has a task created at or after the alert was stored, or the
        alert was stored held.
    held : bool
        Whether the guard held the run's alerts. No task is opened then, not even
        by `when` conditions, because the run's data may be wrong.

    Returns
    -------
    list of Task
        The tasks opened now, by account and rank. Causes that already have an
        open task, or whose task was closed within `reopen_after`, are skipped.

    Raises
    ------
    ValueError
        When a `when` condition cannot be evaluated or a template names an unknown
        field.
    """
    if held:
        logger.info(
            "the guard held the alerts of %s, so its playbooks open no task",
            run.as_of,
        )
        return []
    return _open_tasks(
        project,
        project.config.playbooks,
        run,
        raised_alerts,
        stored_alerts,
        state,
        now,
    )


def open_released_tasks(
    project: Project,
    state: StateStore,
    alert_ids: Iterable[int],
    *,
    now: datetime | None = None,
    engine: Engine | None = None,
) -> list[Task]:
    """Open the tasks of the `on_alert` playbooks of alerts released from a hold.

    A run whose alerts the guard held opens no task, so releasing its alerts, as
    `healthscore alerts release` does, opens the tasks they would have opened.
    Each as-of date of the alerts is scored again from the sources, without
    storing anything, for the `when` conditions, ranks and task fields. Like the
    stored alerts of a rerun, an alert opens no task when its cause got a task
    since the alert was stored, so calling this twice, or scoring the date again
    after it, opens nothing twice. Alerts that are still held are skipped.

    Parameters
    ----------
    project : Project
        Project whose `playbooks` apply.
    state : StateStore
        Store that keeps the alerts and the tasks.
    alert_ids : iterable of int
        Ids of the released alerts.
    now : datetime, optional
        Timezone-aware creation time, by default the current time.
    engine : Engine, optional
        Engine with the project's sources; by default they are read again.

    Returns
    -------
    list of Task
        The tasks opened now, by date, account and rank.

    Raises
    ------
    SourceError, ConfigError, ScoringInputError
        When a date cannot be scored, as `healthscore.pipeline.score` raises them.
        The alerts stay released, and a rerun of the date that the guard does not
        hold opens their tasks.
    """
    playbooks = [item for item in project.config.playbooks if item.on_alert]
    rules = sorted({str(item.on_alert) for item in playbooks})
    ids = sorted(set(alert_ids))
    if not rules or not ids:
        return []
    by_date: dict[date, list[Any]] = {}
    with state.engine.connect() as connection:
        for start in range(0, len(ids), _IDS_PER_QUERY):
            chunk = ids[start : start + _IDS_PER_QUERY]
            rows = connection.execute(
                select(alerts).where(
                    alerts.c.id.in_(chunk),
                    alerts.c.rule.in_(rules),
                    alerts.c.held.is_(False),
                )
            )
            for row in rows:
                by_date.setdefault(row.as_of, []).append(_released_alert(row))
    opened = []
    for as_of in sorted(by_date):
        logger.info(
            "scoring %s again to open the tasks of %d released alert(s)",
            as_of,
            len(by_date[as_of]),
        )
        run = score(project, as_of, engine=engine, store=False, monitor=False)
        opened += _open_tasks(project, playbooks, run, (), by_date[as_of], state, now)
    return opened


#: Ids per `IN (...)` list, below 999, the default maximum of bound parameters of
#: SQLite before version 3.32.
_IDS_PER_QUERY = 500


@dataclass(frozen=True)
class _ReleasedAlert:
    """The fields of a stored alert that playbooks read."""

    rule: str
    account_id: str
    owner: str | None
    title: str
    dedupe_key: str


def _released_alert(row: Row[Any]) -> _ReleasedAlert:
    return _ReleasedAlert(
        row.rule, row.account_id, row.owner, row.title, row.dedupe_key
    )


def _open_tasks(
    project: Project,
    playbooks: Sequence[PlaybookConfig],
    run: ScoringRun,
    raised_alerts: Sequence[Any],
    stored_alerts: Sequence[Any],
    state: StateStore,
    now: datetime | None,
) -> list[Task]:
    """Open the tasks of `playbooks` for one run, then rank the run's open tasks."""
    if not playbooks or run.result.scores.empty:
        return []
    context = _RunContext(run, [*raised_alerts, *stored_alerts])
    candidates = []
    for playbook in playbooks:
        candidates += _fitting(playbook, context)
    if stored_alerts:
        handled = _handled_alerts(state, candidates, stored_alerts)
        candidates = [item for item in candidates if id(item.alert) not in handled]
    ranking = _Ranking(context, project.config.playbooks)
    # Inserted by account and likely rank, so task ids read in that order too.
    candidates.sort(key=ranking.candidate_key)
    created_at = _aware_now(now)
    rows = [_task_row(item, context, created_at) for item in candidates]
    reopen_after = {
        _cause_key(item): item.playbook.reopen_after.days for item in candidates
    }
    return _insert_tasks(state, rows, created_at, reopen_after, ranking)


def _handled_alerts(
    state: StateStore, candidates: list[_Candidate], stored_alerts: Sequence[Any]
) -> set[int]:
    """Return the ids (`id()`) of stored alerts that must not open a task.

    A stored alert is handled when it was stored held, or when the cause of its
    candidate has a task created at or after the alert's creation time.
    """
    earlier = {id(alert) for alert in stored_alerts}
    picked = [item for item in candidates if id(item.alert) in earlier]
    if not picked:
        return set()
    keys = {item.alert.dedupe_key for item in picked}
    causes = {_cause_key(item) for item in picked}
    with state.engine.connect() as connection:
        stored = {
            row.dedupe_key: row
            for row in connection.execute(
                select(alerts.c.dedupe_key, alerts.c.created_at, alerts.c.held).where(
                    alerts.c.dedupe_key.in_(keys)
                )
            )
        }
        latest_task = {
            cause: created_at
            for cause, created_at in connection.execute(
                select(tasks.c.cause_key, func.max(tasks.c.created_at))
                .where(tasks.c.cause_key.in_(causes))
                .group_by(tasks.c.cause_key)
            )
        }
    handled = set()
    for item in picked:
        row = stored.get(item.alert.dedupe_key)
        if row is None:
            # Not stored after all, so nothing can have handled it.
            continue
        task_time = latest_task.get(_cause_key(item))
        if row.held or (task_time is not None and task_time >= row.created_at):
            handled.add(id(item.alert))
    return handled


@dataclass(frozen=True)
class _Candidate:
    playbook: PlaybookConfig
    account_id: str
    trigger: str
    alert: Any


class _RunContext:
    """The columns of one run that conditions, ranks and templates read."""

    def __init__(self, run: ScoringRun, raised_alerts: Sequence[Any]) -> None:
        self.run = run
        scores = run.result.scores.set_index("account_id")
        self.scores = scores
        values = run.metrics.values.reindex(scores.index)
        values = values.assign(score=scores["score"], band=scores["band"])
        self.columns = AccountColumns(run.project.config, values, run.metrics.accounts)
        self.points = _points_lost(run.result.measures)
        self._addressed: dict[frozenset[str], pd.Series] = {}
        self.alerts: dict[tuple[str, str], Any] = {}
        for alert in raised_alerts:
            self.alerts.setdefault((alert.rule, alert.account_id), alert)

    def condition(self, playbook: PlaybookConfig) -> pd.Series:
        """Evaluate `when` per account; every account matches when it is not set."""
        index = self.scores.index
        if playbook.when is None:
            return pd.Series(True, index=index)
        context = f"the when condition of playbook {playbook.name!r}"
        mask = self.columns.evaluate_condition(playbook.when, context)
        return pd.Series(mask, index=index)

    def fields(self, account_id: str) -> dict[str, Any]:
        """Template fields of one account: account columns, metrics, score, band."""
        values: dict[str, Any] = {}
        accounts = self.columns.accounts
        if account_id in accounts.index:
            values.update(accounts.loc[account_id].to_dict())
        values.update(self.columns.metrics.loc[account_id].to_dict())
        return values

    def addressed_points(
        self, playbook: PlaybookConfig | None, account_id: str
    ) -> float:
        """Points the account loses on the measures the playbook addresses.

        A playbook that is not in the settings any more (None) addresses nothing.
        """
        if playbook is None or not playbook.addresses:
            return 0.0
        targets = frozenset(playbook.addresses)
        by_account = self._addressed.get(targets)
        if by_account is None:
            rows = self.points
            addressed = rows["measure"].isin(targets) | rows["component"].isin(targets)
            by_account = rows.loc[addressed].groupby("account_id")["points_lost"].sum()
            self._addressed[targets] = by_account
        return float(by_account.get(account_id, 0.0))


def _points_lost(measures: pd.DataFrame) -> pd.DataFrame:
    lost = measures["effective_weight"] * (100.0 - measures["normalized"])
    frame = measures[["account_id", "component", "measure"]].assign(points_lost=lost)
    return frame.dropna(subset=["points_lost"])


def _fitting(playbook: PlaybookConfig, context: _RunContext) -> list[_Candidate]:
    matches = context.condition(playbook)
    trigger = _trigger(playbook)
    found = []
    for account_id in matches.index[matches.to_numpy()]:
        alert = None
        if playbook.on_alert is not None:
            alert = context.alerts.get((playbook.on_alert, account_id))
            if alert is None:
                continue
        found.append(_Candidate(playbook, str(account_id), trigger, alert))
    return found


def _trigger(playbook: PlaybookConfig) -> str:
    parts = []
    if playbook.on_alert is not None:
        parts.append(f"alert:{playbook.on_alert}")
    if playbook.when is not None:
        parts.append("when")
    return "+".join(parts)


class _Ranking:
    """Orders an account's open tasks by the points their playbooks address."""

    def __init__(
        self, context: _RunContext, playbooks: Sequence[PlaybookConfig]
    ) -> None:
        self.context = context
        self.playbooks = {playbook.name: playbook for playbook in playbooks}
        self.position = {
            playbook.name: index for index, playbook in enumerate(playbooks)
        }

    def accounts(self) -> set[str]:
        """Return the accounts of the run, whose open tasks are ranked."""
        return {str(account) for account in self.context.scores.index}

    def candidate_key(self, candidate: _Candidate) -> tuple[str, float, int]:
        """Sort key of a candidate: account, then most points addressed, then order."""
        points = self.context.addressed_points(candidate.playbook, candidate.account_id)
        return (candidate.account_id, -points, self.position[candidate.playbook.name])

    def order(self, account_id: str, open_tasks: list[Any]) -> list[Any]:
        """Sort open tasks: most points addressed, then settings order, then id."""

        def key(row: Any) -> tuple[float, int, int]:
            playbook = self.playbooks.get(row.playbook)
            points = self.context.addressed_points(playbook, account_id)
            return (
                -points,
                self.position.get(row.playbook, len(self.position)),
                row.id,
            )

        return sorted(open_tasks, key=key)


def _task_row(
    candidate: _Candidate, context: _RunContext, created_at: datetime
) -> dict[str, Any]:
    playbook = candidate.playbook
    template = playbook.task
    fields = context.fields(candidate.account_id)
    owner = _owner(fields.get(template.owner), candidate.alert)
    as_of = context.run.as_of
    due_on = _due_on(as_of, template.due_in)
    fields.update(
        # Formatted like alert texts, so "(score 40)" never names another band.
        score=ShownScore(fields["score"]),
        account_id=candidate.account_id,
        owner=owner,
        playbook=playbook.name,
        as_of=as_of,
        due_on=due_on,
        alert_title=getattr(candidate.alert, "title", None),
    )
    return {
        "playbook": playbook.name,
        "account_id": candidate.account_id,
        "cause_key": _cause_key(candidate),
        "title": render(template.title, fields, playbook.name),
        "description": render(template.description, fields, playbook.name),
        "owner": owner,
        "due_on": due_on,
        "priority": template.priority,
        "state": "open",
        # A placeholder: `_rank_open_tasks` sets the rank in the same transaction.
        "rank": 0,
        "created_at": created_at,
    }


def _cause_key(candidate: _Candidate) -> str:
    return f"{candidate.playbook.name}|{candidate.account_id}|{candidate.trigger}"


def _owner(value: Any, alert: Any) -> str | None:
    if not _is_missing(value) and str(value).strip():
        return str(value)
    return getattr(alert, "owner", None)


def _due_on(as_of: date, due_in: Any) -> date:
    start = datetime(as_of.year, as_of.month, as_of.day)
    # shift moves back by `periods` durations, so -1 moves forward by one.
    return shift(start, due_in, periods=-1).date()


class _TemplateFormatter(string.Formatter):
    """`str.format` that shows missing values as MISSING_TEXT."""

    def format_field(self, value: Any, format_spec: str) -> str:
        if _is_missing(value):
            return MISSING_TEXT
        return super().format_field(value, format_spec)


def render(template: str, fields: Mapping[str, Any], playbook: str) -> str:
    """Fill a task template; missing values show as `n/a`.

    Raises
    ------
    ValueError
        When the template names an unknown field or a format spec does not fit the
        value.
    """
    try:
        return _TemplateFormatter().vformat(template, (), dict(fields))
    except KeyError as exc:
        names = ", ".join(sorted(fields))
        raise ValueError(
            f"the task template of playbook {playbook!r} uses unknown field "
            f"{{{exc.args[0]}}}; available fields: {names}"
        ) from None
    except (ValueError, TypeError, AttributeError, IndexError) as exc:
        raise ValueError(
            f"the task template of playbook {playbook!r} cannot be filled: {exc}; "
            "check the format specs such as {score:.0f}"
        ) from None


def _insert_tasks(
    state: StateStore,
    rows: list[dict[str, Any]],
    created_at: datetime,
    reopen_after: Mapping[str, int],
    ranking: _Ranking,
) -> list[Task]:
    """Insert the tasks whose cause is neither open nor recently closed, then rank.

    `reopen_after` gives the days of each cause key's `reopen_after`.
    """
    opened = []
    with write_transaction(state) as connection:
        lock_for_write(connection, "tasks")
        recent = _recently_closed(connection, reopen_after, created_at)
        for row in rows:
            if row["cause_key"] in recent:
                continue
            task = _insert_unless_open(connection, row)
            if task is not None:
                opened.append(task)
        ranks = _rank_open_tasks(connection, ranking)
        opened = [replace(task, rank=ranks[task.id]) for task in opened]
        if opened:
            detail = {"task_ids": [task.id for task in opened]}
            record_audit(
                connection, created_at, "open", "task", len(opened), detail, "playbooks"
            )
    skipped = len(rows) - len(opened)
    logger.info(
        "opened %d tasks; %d causes had an open task or one closed within reopen_after",
        len(opened),
        skipped,
    )
    return sorted(opened, key=lambda task: (task.account_id, task.rank))


def _recently_closed(
    connection: Connection, reopen_after: Mapping[str, int], now: datetime
) -> set[str]:
    """Return the cause keys with a task closed less than their reopen_after ago."""
    longest = max(reopen_after.values(), default=0)
    if longest == 0:
        return set()
    rows = connection.execute(
        select(tasks.c.cause_key, func.max(tasks.c.closed_at))
        .where(
            tasks.c.state != "open",
            tasks.c.closed_at > now - timedelta(days=longest),
        )
        .group_by(tasks.c.cause_key)
    )
    recent = set()
    for cause, closed_at in rows:
        days = reopen_after.get(cause, 0)
        if days > 0 and closed_at > now - timedelta(days=days):
            recent.add(cause)
    return recent


def _rank_open_tasks(connection: Connection, ranking: _Ranking) -> dict[int, int]:
    """Number the open tasks of each account of the run 1..n; return rank by task id.

    Only the rows whose rank changes are updated.
    """
    accounts = ranking.accounts()
    rows = connection.execute(
        select(tasks.c.id, tasks.c.account_id, tasks.c.playbook, tasks.c.rank).where(
            tasks.c.state == "open"
        )
    )
    by_account: dict[str, list[Any]] = {}
    for row in rows:
        if row.account_id in accounts:
            by_account.setdefault(row.account_id, []).append(row)
    ranks = {}
    for account_id, open_tasks in by_account.items():
        ordered = ranking.order(account_id, open_tasks)
        ranks.update(_renumber(connection, ordered))
    return ranks


def _renumber(connection: Connection, ordered: Sequence[Any]) -> dict[int, int]:
    """Give tasks the ranks 1..n in their order; return rank by task id."""
    ranks = {}
    for rank, row in enumerate(ordered, start=1):
        ranks[row.id] = rank
        if row.rank != rank:
            connection.execute(
                update(tasks).where(tasks.c.id == row.id).values(rank=rank)
            )
    return ranks


def _insert_unless_open(connection: Connection, row: dict[str, Any]) -> Task | None:
    """Insert an open task unless its cause has one; a savepoint isolates a race."""
    existing = connection.execute(
        select(tasks.c.id).where(
            tasks.c.cause_key == row["cause_key"], tasks.c.state == "open"
        )
    ).first()
    if existing is not None:
        return None
    try:
        with connection.begin_nested():
            inserted = connection.execute(insert(tasks).values(**row).returning(tasks))
            return _task_from_row(inserted.one())
    except IntegrityError:
        # Another process opened a task for this cause after the check above.
        logger.info("task for %s was opened concurrently", row["cause_key"])
        return None


# Reading and closing tasks


def list_tasks(
    state: StateStore,
    *,
    owner: str | None = None,
    task_state: str | None = None,
    account_id: str | None = None,
) -> list[Task]:
    """List tasks by due date, then rank and id, optionally of one owner or state.

    Raises
    ------
    ValueError
        When `task_state` is not open, completed or dismissed.
    """
    query = select(tasks)
    if task_state is not None:
        if task_state not in TASK_STATES:
            raise ValueError(
                f"unknown task state {task_state!r}; use one of "
                f"{', '.join(TASK_STATES)}"
            )
        query = query.where(tasks.c.state == task_state)
    if owner is not None:
        query = query.where(tasks.c.owner == owner)
    if account_id is not None:
        query = query.where(tasks.c.account_id == account_id)
    query = query.order_by(tasks.c.due_on, tasks.c.rank, tasks.c.id)
    with state.engine.connect() as connection:
        return [_task_from_row(row) for row in connection.execute(query)]


def complete_task(
    state: StateStore,
    task_id: int,
    by: str,
    *,
    note: str | None = None,
    now: datetime | None = None,
) -> Task:
    """Mark an open task completed and store it as an intervention.

    The intervention's kind is the playbook name and its date is the date of `now`
    in `now`'s own time zone, so pass the project's local time.

    Raises
    ------
    TaskNotFoundError
        When no task has that id.
    ValueError
        When `by` is empty or the task is not open.
    """
    closed_at = _aware_now(now)
    _check_text("by", by, "give the name of the person who completed it")
    with write_transaction(state) as connection:
        lock_for_write(connection, "tasks")
        row = _open_task(connection, state, task_id, "completed")
        _close(connection, task_id, "completed", closed_at, by, note)
        connection.execute(
            insert(interventions).values(
                account_id=row.account_id,
                kind=row.playbook,
                occurred_on=closed_at.date(),
                task_id=task_id,
                author=by,
                note=note,
                created_at=closed_at,
            )
        )
        detail = {"task_id": task_id, "account_id": row.account_id, "note": note}
        record_audit(connection, closed_at, "complete", "task", 1, detail, by)
        task = _task_from_row(_fetch(connection, task_id))
    logger.info("task %d completed by %s", task_id, by)
    return task


def dismiss_task(
    state: StateStore,
    task_id: int,
    by: str,
    *,
    reason: str,
    now: datetime | None = None,
) -> Task:
    """Mark an open task dismissed, with the reason in its note.

    Raises
    ------
    TaskNotFoundError
        When no task has that id.
    ValueError
        When `by` or `reason` is empty or the task is not open.
    """
    closed_at = _aware_now(now)
    _check_text("by", by, "give the name of the person who dismissed it")
    _check_text("reason", reason, "say why the task is not needed")
    with write_transaction(state) as connection:
        lock_for_write(connection, "tasks")
        row = _open_task(connection, state, task_id, "dismissed")
        _close(connection, task_id, "dismissed", closed_at, by, reason)
        detail = {"task_id": task_id, "account_id": row.account_id, "reason": reason}
        record_audit(connection, closed_at, "dismiss", "task", 1, detail, by)
        task = _task_from_row(_fetch(connection, task_id))
    logger.info("task %d dismissed by %s", task_id, by)
    return task


def _open_task(
    connection: Connection, state: StateStore, task_id: int, action: str
) -> Row[Any]:
    """Return the task's row, or raise unless the task is open.

    Call it after `lock_for_write(connection, "tasks")`, so that of two concurrent
    changes of one task, the second reads the state that the first committed.
    """
    row = connection.execute(select(tasks).where(tasks.c.id == task_id)).first()
    if row is None:
        raise TaskNotFoundError(
            f"task {task_id} not found; run `healthscore tasks list` to see the ids"
        )
    if row.state != "open":
        raise ValueError(
            f"task {task_id} is already {row.state} (by {row.closed_by} at "
            f"{row.closed_at.isoformat()}), so it cannot be {action}"
        )
    return row


def _close(
    connection: Connection,
    task_id: int,
    new_state: str,
    closed_at: datetime,
    by: str,
    note: str | None,
) -> None:
    """Close a task and move the account's open tasks ranked after it up by one."""
    account_id = connection.execute(
        update(tasks)
        .where(tasks.c.id == task_id)
        .values(state=new_state, closed_at=closed_at, closed_by=by, note=note)
        .returning(tasks.c.account_id)
    ).scalar_one()
    remaining = connection.execute(
        select(tasks.c.id, tasks.c.rank)
        .where(tasks.c.account_id == account_id, tasks.c.state == "open")
        .order_by(tasks.c.rank, tasks.c.id)
    ).all()
    _renumber(connection, remaining)


def _fetch(connection: Connection, task_id: int) -> Row[Any]:
    return connection.execute(select(tasks).where(tasks.c.id == task_id)).one()


def _task_from_row(row: Row[Any]) -> Task:
    values = row._asdict()
    return Task(**values)


def priority_order(priority: str) -> int:
    """Return 0 for urgent up to 3 for low, for sorting the most pressing first."""
    return len(PRIORITIES) - 1 - PRIORITIES.index(priority)


def _check_text(name: str, value: object, advice: str) -> None:
    if not isinstance(value, str) or not value.strip():
        raise ValueError(f"{name} must not be empty, got {value!r}; {advice}")


def _aware_now(now: datetime | None) -> datetime:
    if now is None:
        return datetime.now(UTC)
    if now.tzinfo is None:
        raise ValueError(
            f"now must be timezone-aware, got {now!r}; for example datetime.now(UTC)"
        )
    return now


def _is_missing(value: Any) -> bool:
    if value is None:
        return True
    if isinstance(value, float):
        return math.isnan(value)
    return pd.api.types.is_scalar(value) and bool(pd.isna(value))
