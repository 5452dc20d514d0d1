"""Routes of follow-up work: alerts, tasks, outcomes and interventions."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from typing import Annotated, Any, Literal
from zoneinfo import ZoneInfo

from fastapi import APIRouter, Body, Path, Query, status
from sqlalchemy import select

from healthscore.monitoring.interventions import (
    INTERVENTION_KEY,
    LOCATION,
    OUTCOME_KEY,
    RowChanges,
    StoredRows,
    interventions_frame,
    outcomes_frame,
    plan_outcomes,
    store_interventions,
    store_outcomes,
)
from healthscore.monitoring.outbox import (
    AlertNotFoundError,
    get_alert,
    list_alerts,
    set_alert_state,
)
from healthscore.monitoring.playbooks import (
    Task,
    TaskNotFoundError,
    complete_task,
    dismiss_task,
    list_tasks,
)
from healthscore.service.auth import Access, AccessDependency
from healthscore.service.context import API_PREFIX
from healthscore.service.errors import ApiError, layer_errors, not_found
from healthscore.service.schemas import (
    MAX_ID,
    InterventionsCreate,
    OutcomesCreate,
    TaskComplete,
    TaskDismiss,
)
from healthscore.service.serialize import alert_json, jsonable
from healthscore.store.tables_tasks import tasks

router = APIRouter(prefix=API_PREFIX, tags=["work"])

AlertId = Annotated[int, Path(ge=1, le=MAX_ID, description="Alert id.")]
TaskId = Annotated[int, Path(ge=1, le=MAX_ID, description="Task id.")]

AlertState = Literal["open", "acknowledged", "resolved"]
TaskState = Literal["open", "completed", "dismissed"]

#: Largest number of alerts one request lists.
MAX_ALERTS = 1000


# Alerts


@router.get("/alerts")
def get_alerts(
    access: AccessDependency,
    state: Annotated[AlertState | None, Query(description="Only this state.")] = None,
    limit: Annotated[
        int, Query(ge=1, le=MAX_ALERTS, description="Most alerts listed.")
    ] = 100,
    offset: Annotated[int, Query(ge=0, description="Alerts skipped.")] = 0,
) -> dict[str, Any]:
    """List stored alerts, newest first, with their deliveries.

    A `csm` token lists the alerts of its own accounts only, and no alert about a
    whole run.
    """
    visible = access.visible_ids()
    records = list_alerts(
        access.context.state, state, offset + limit if visible is None else None
    )
    if visible is not None:
        records = [item for item in records if item.alert.account_id in visible]
    records = records[offset : offset + limit]
    return {"alerts": [alert_json(item) for item in records]}


@router.get("/alerts/{alert_id}")
def get_one_alert(alert_id: AlertId, access: AccessDependency) -> dict[str, Any]:
    """Return one alert with its deliveries."""
    return alert_json(_visible_alert(access, alert_id))


@router.post("/alerts/{alert_id}/acknowledge")
def acknowledge_alert(alert_id: AlertId, access: AccessDependency) -> dict[str, Any]:
    """Acknowledge an open alert."""
    return _move_alert(access, alert_id, "acknowledged")


@router.post("/alerts/{alert_id}/resolve")
def resolve_alert(alert_id: AlertId, access: AccessDependency) -> dict[str, Any]:
    """Resolve an open or acknowledged alert."""
    return _move_alert(access, alert_id, "resolved")


def _visible_alert(access: Access, alert_id: int) -> Any:
    """Return the alert, or raise the same 404 whether it is unknown or invisible.

    One message for both cases keeps a `csm` token from learning which ids exist,
    and it leaves out the store's URL that the outbox's own error contains.
    """
    with layer_errors():
        try:
            record = get_alert(access.context.state, alert_id)
        except AlertNotFoundError as exc:
            raise _alert_not_found(alert_id) from exc
    if not access.can_see(record.alert.account_id):
        raise _alert_not_found(alert_id)
    return record


def _alert_not_found(alert_id: int) -> ApiError:
    return not_found(f"alert {alert_id} not found; list the alerts at /api/v1/alerts")


def _move_alert(access: Access, alert_id: int, new_state: str) -> dict[str, Any]:
    _visible_alert(access, alert_id)
    access.require_writer()
    with layer_errors(conflict=True):
        try:
            set_alert_state(
                access.context.state,
                alert_id,
                new_state,
                now=datetime.now(UTC),
                actor=access.token.actor,
            )
        except AlertNotFoundError as exc:
            raise _alert_not_found(alert_id) from exc
    return alert_json(_visible_alert(access, alert_id))


# Tasks


@router.get("/tasks")
def get_tasks(
    access: AccessDependency,
    state: Annotated[TaskState | None, Query(description="Only this state.")] = None,
    owner: Annotated[
        str | None,
        # PostgreSQL text cannot contain NUL, so such a value is invalid here.
        Query(pattern=r"^[^\x00]*$", description="Only this task owner."),
    ] = None,
) -> dict[str, Any]:
    """List tasks by due date, rank and id. A `csm` token gets its accounts' tasks."""
    found = list_tasks(access.context.state, owner=owner, task_state=state)
    keep = access.filter_ids(task.account_id for task in found)
    return {
        "tasks": jsonable([task for task, ok in zip(found, keep, strict=True) if ok])
    }


@router.post("/tasks/{task_id}/complete")
def complete(
    task_id: TaskId,
    access: AccessDependency,
    body: Annotated[TaskComplete, Body(default_factory=TaskComplete)],
) -> dict[str, Any]:
    """Mark an open task completed; it then counts as an intervention dated today."""
    return _close_task(access, task_id, complete_task, note=body.note)


@router.post("/tasks/{task_id}/dismiss")
def dismiss(
    task_id: TaskId, body: TaskDismiss, access: AccessDependency
) -> dict[str, Any]:
    """Dismiss an open task that is not needed, with a reason."""
    return _close_task(access, task_id, dismiss_task, reason=body.reason)


def _close_task(
    access: Access, task_id: int, close: Callable[..., Task], **fields: Any
) -> dict[str, Any]:
    """Complete or dismiss a visible task with `close`, as the token's actor."""
    _check_task(access, task_id)
    access.require_writer()
    with layer_errors(conflict=True):
        try:
            task = close(
                access.context.state,
                task_id,
                access.token.actor,
                now=access.context.local_now(),
                **fields,
            )
        except TaskNotFoundError as exc:
            raise _task_not_found(task_id) from exc
    return _task_json(task)


def _check_task(access: Access, task_id: int) -> None:
    """Raise 404 unless the task exists and its account is visible to the token."""
    with access.context.state.engine.connect() as connection:
        account_id = connection.execute(
            select(tasks.c.account_id).where(tasks.c.id == task_id)
        ).scalar_one_or_none()
    if account_id is None or not access.can_see(account_id):
        raise _task_not_found(task_id)


def _task_not_found(task_id: int) -> ApiError:
    return not_found(f"task {task_id} not found; list the tasks at /api/v1/tasks")


def _task_json(task: Task) -> dict[str, Any]:
    result: dict[str, Any] = jsonable(task)
    return result


# Outcomes and interventions


@router.get("/outcomes")
def get_outcomes(access: AccessDependency) -> dict[str, Any]:
    """List the imported outcomes (churned, renewed, expanded, contracted)."""
    frame = outcomes_frame(access.context.state)
    return {"outcomes": jsonable(_visible_rows(access, frame))}


@router.get("/interventions")
def get_interventions(access: AccessDependency) -> dict[str, Any]:
    """List the interventions: imported ones and completed tasks, oldest first."""
    frame = interventions_frame(access.context.state)
    return {"interventions": jsonable(_visible_rows(access, frame))}


#: Query parameter that lets outcomes and interventions be dated after today.
AllowFuture = Annotated[
    bool,
    Query(
        alias="allow_future",
        description="Accept items dated after today in the project's time zone.",
    ),
]


#: Query parameter that lets outcomes and interventions name unknown accounts.
AllowUnknown = Annotated[
    bool,
    Query(
        alias="allow_unknown",
        description="Accept items whose account is not in the accounts source. "
        "Needs a token of role admin or analyst.",
    ),
]


#: Query parameter that lets posted items replace stored ones.
Replace = Annotated[
    bool,
    Query(
        alias="replace",
        description="Replace each stored item that a posted item repeats with other "
        "values or, for outcomes, conflicts with; the response lists the replaced "
        "items.",
    ),
]

#: Last line of a conflict error when a stored outcome takes part in a conflict.
REPLACE_HINT = (
    "If a stored outcome named above is wrong, send replace=true to replace it with "
    "the item that conflicts with it."
)


@router.post("/outcomes", status_code=status.HTTP_201_CREATED)
def create_outcomes(
    body: OutcomesCreate,
    access: AccessDependency,
    allow_future: AllowFuture = False,
    allow_unknown: AllowUnknown = False,
    replace: Replace = False,
) -> dict[str, Any]:
    """Store outcomes, all or none; a repeat of a stored outcome is skipped.

    Every account must be known and visible to the token (404 otherwise), unless
    `allow_unknown` is true, which accepts accounts missing from the accounts
    source. No two outcomes of the request may share account, kind and day (422),
    and none may conflict with another or with a stored outcome of its account, as
    in `healthscore outcomes import` (422): a churn and another kind on one day, or
    two churns with no other outcome between them. With `replace`, an outcome
    replaces the stored outcomes it conflicts with or repeats with other ARR, and
    the response lists them under `replaced`.
    An outcome dated after today is rejected (422) unless `allow_future` is true.
    """
    access.require_writer()
    rows = [item.model_dump() for item in body.outcomes]
    if not allow_future:
        _check_not_future(access, "outcomes", rows)
    _check_accounts(access, "outcomes", rows, allow_unknown)
    _check_repeats("outcomes", rows, OUTCOME_KEY)
    for row in rows:
        row["source"] = row["source"] or "api"
    located = _located("outcomes", rows)

    def plan(stored: list[dict[str, Any]]) -> RowChanges:
        return plan_outcomes(
            "the request",
            located,
            stored,
            replace=replace,
            replace_hint=REPLACE_HINT,
        )

    with layer_errors():
        written = store_outcomes(
            access.context.state,
            located,
            origin={"request": "POST /api/v1/outcomes"},
            actor=access.token.actor,
            plan=plan,
        )
    return _written_json(written, replace)


@router.post("/interventions", status_code=status.HTTP_201_CREATED)
def create_interventions(
    body: InterventionsCreate,
    access: AccessDependency,
    allow_future: AllowFuture = False,
    allow_unknown: AllowUnknown = False,
    replace: Replace = False,
) -> dict[str, Any]:
    """Store interventions, all or none; a repeat of a stored one is skipped.

    The author defaults to the token's owner or name. Every account must be known
    and visible to the token (404 otherwise), unless `allow_unknown` is true, which
    accepts accounts missing from the accounts source. An intervention dated after
    today is rejected (422) unless `allow_future` is true. With `replace`, an
    intervention that repeats a stored one (same account, kind, day and author)
    with another note replaces it, and the response lists it under `replaced`.
    """
    access.require_writer()
    rows = [item.model_dump() for item in body.interventions]
    if not allow_future:
        _check_not_future(access, "interventions", rows)
    for row in rows:
        row["author"] = row["author"] or access.token.actor
    _check_accounts(access, "interventions", rows, allow_unknown)
    _check_repeats("interventions", rows, INTERVENTION_KEY)
    with layer_errors():
        written = store_interventions(
            access.context.state,
            _located("interventions", rows),
            origin={"request": "POST /api/v1/interventions"},
            actor=access.token.actor,
            replace=replace,
        )
    return _written_json(written, replace)


def _located(field: str, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Add to each item its LOCATION in the request, such as `outcomes[2]`."""
    return [{**row, LOCATION: f"{field}[{index}]"} for index, row in enumerate(rows)]


def _written_json(written: StoredRows, replace: bool) -> dict[str, Any]:
    """Return the counts of a write, and the replaced items when `replace` is set."""
    result: dict[str, Any] = {"stored": written.stored, "skipped": written.skipped}
    if replace:
        result["replaced"] = jsonable(written.replaced)
    return result


def _check_not_future(access: Access, field: str, rows: list[dict[str, Any]]) -> None:
    """Raise 422 naming every item dated after today in the project's time zone."""
    zone = ZoneInfo(access.context.project.config.timezone)
    today = datetime.now(zone).date()
    late = [
        (index, row["occurred_on"])
        for index, row in enumerate(rows)
        if row["occurred_on"] > today
    ]
    if late:
        raise ApiError(
            422,
            f"{len(late)} of {len(rows)} {field} are dated after today "
            f"({today.isoformat()} in the project's time zone); nothing was stored. "
            "Fix the dates, or send allow_future=true to store them",
            details=[
                {
                    "location": f"body.{field}[{index}].occurred_on",
                    "message": f"{day.isoformat()} is after {today.isoformat()}",
                }
                for index, day in late
            ],
        )


def _check_accounts(
    access: Access, field: str, rows: list[dict[str, Any]], allow_unknown: bool
) -> None:
    """Raise 404 naming every item whose account is unknown or not visible.

    With `allow_unknown`, accounts missing from the accounts source are accepted,
    but only from a token that may see every account (403 otherwise). A `csm` token
    changes only the accounts of its owner, and an unknown account has no owner.
    """
    if allow_unknown and access.limited:
        raise ApiError(
            403,
            f"role {access.token.role} cannot send allow_unknown=true, because it "
            "changes only the accounts of its owner; leave it out, or use a token "
            "with role admin or analyst",
        )
    if allow_unknown:
        return
    missing = [
        (index, row["account_id"])
        for index, row in enumerate(rows)
        if not access.is_usable(row["account_id"])
    ]
    if not missing:
        return
    index, account_id = missing[0]
    more = f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""
    if access.limited:
        # The same words for an unknown account and one of another owner, so that
        # the token cannot tell which ids exist.
        message = (
            f"{field}[{index}]: account {account_id!r} not found{more}; nothing was "
            "stored. List the accounts at /api/v1/accounts"
        )
    else:
        message = (
            f"{field}[{index}]: account {account_id!r} is not in the accounts "
            f"source{more}; nothing was stored. Fix the account ids, add the "
            "accounts to the accounts source, or send allow_unknown=true to store "
            "them anyway"
        )
    raise ApiError(
        404,
        message,
        details=[
            {
                "location": f"body.{field}[{index}].account_id",
                "message": f"account {account_id!r} not found",
            }
            for index, account_id in missing
        ],
    )


def _check_repeats(
    field: str, rows: list[dict[str, Any]], key: tuple[str, ...]
) -> None:
    """Raise 422 when two items of the request share `key`."""
    first: dict[tuple[Any, ...], int] = {}
    for index, row in enumerate(rows):
        values = tuple(row[name] for name in key)
        if values in first:
            same = f"(same {', '.join(key)})"
            raise ApiError(
                422,
                f"{field}[{index}] repeats {field}[{first[values]}] {same}; nothing "
                "was stored, remove one of them",
                details=[
                    {
                        "location": f"body.{field}[{index}]",
                        "message": f"repeats body.{field}[{first[values]}] {same}",
                    }
                ],
            )
        first[values] = index


def _visible_rows(access: Access, frame: Any) -> Any:
    if frame.empty:
        return frame
    return frame[access.filter_ids(frame["account_id"].astype(str))]
