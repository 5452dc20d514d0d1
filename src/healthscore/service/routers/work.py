"""Routes of follow-up work: alerts, tasks, outcomes and interventions."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Annotated, Any, Literal
from zoneinfo import ZoneInfo

from fastapi import APIRouter, Body, Path, Query, status
from pydantic import BaseModel, ValidationError
from sqlalchemy import select

from healthscore.monitoring.interventions import (
    INTERVENTION_KEY,
    LOCATION,
    MAX_LISTED_ERRORS,
    OUTCOME_KEY,
    Difference,
    OutcomeConflict,
    RowChanges,
    StoredRows,
    arr_change_problem,
    check_outcomes,
    conflict_hints,
    early_churn_warnings,
    interventions_frame,
    outcomes_frame,
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
from healthscore.service.errors import (
    ApiError,
    layer_errors,
    location,
    not_found,
    validation_detail,
)
from healthscore.service.schemas import (
    MAX_ID,
    InterventionCreate,
    InterventionsCreate,
    OutcomeCreate,
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

    Every account must be known and visible to the token, unless `allow_unknown`
    is true, which accepts accounts missing from the accounts source. No two
    outcomes of the request may share account, kind and day, an expanded outcome
    needs `arr_after` above `arr_before` and a contracted one below (when both are
    given), and none may conflict with another or with a stored outcome of its
    account, as in `healthscore outcomes import`: a churn and another kind on one
    day, or two churns with no other outcome between them. An outcome dated after
    today is rejected unless `allow_future` is true.

    One error lists every problem of the request, with a `details` entry per item
    and problem. Its status is 404 when every problem is an account not found,
    and 422 otherwise. With `replace`, an outcome replaces the stored outcomes it
    conflicts with or repeats with other ARR, and the response lists them under
    `replaced`. Without it, the response has `warnings`, one per skipped outcome
    whose ARR differs from the stored one. New churns dated on or before the first
    stored snapshot get one warning at `body.outcomes`, with the text of
    `healthscore outcomes import`.
    """
    access.require_writer()
    _check_allow_unknown(access, allow_unknown)
    located, invalid = _validated_items("outcomes", body.outcomes, OutcomeCreate)
    for row in located:
        row["source"] = row["source"] or "api"
    usable = _usable_accounts(access, located)
    problems = invalid + _item_problems(
        access, "outcomes", located, OUTCOME_KEY, usable, allow_future, allow_unknown
    )
    problems += _arr_problems(located)
    # A limited token learns nothing of the stored outcomes of accounts it does
    # not see, so their items take no part in the conflict checks.
    checked = [
        row for row, ok in zip(located, usable, strict=True) if ok or not access.limited
    ]
    scored = access.context.data.snapshots.dates()
    first_scored = scored[0] if scored else None
    early_churns: list[str] = []

    def plan(stored: list[dict[str, Any]]) -> RowChanges:
        changes, conflicts = check_outcomes(checked, stored, replace=replace)
        found = problems + _conflict_problems(conflicts, replace)
        if found:
            # Raised inside the transaction, so nothing is written.
            raise _request_error(found)
        early_churns.extend(
            early_churn_warnings("request body", checked, stored, first_scored)
        )
        return changes

    with layer_errors():
        written = store_outcomes(
            access.context.state,
            checked,
            origin={"request": "POST /api/v1/outcomes"},
            actor=access.token.actor,
            plan=plan,
        )
    result = _written_json(written, replace, "outcome", OUTCOME_KEY)
    if early_churns:
        warnings = [
            {"location": "body.outcomes", "message": message}
            for message in early_churns
        ]
        result["warnings"] = warnings + result.get("warnings", [])
    return result


@router.post("/interventions", status_code=status.HTTP_201_CREATED)
def create_interventions(
    body: InterventionsCreate,
    access: AccessDependency,
    allow_future: AllowFuture = False,
    allow_unknown: AllowUnknown = False,
    replace: Replace = False,
) -> dict[str, Any]:
    """Store interventions, all or none; a repeat of a stored one is skipped.

    The author defaults to the token's owner or name, and a `csm` token may name
    no other author (403). Every account must be known and visible to the token,
    unless `allow_unknown` is true, which accepts accounts missing from the
    accounts source. No two interventions of the request may share account, kind,
    day and author, and one dated after today is rejected unless `allow_future` is
    true. One error lists every problem of the request, with a `details` entry per
    item and problem. Its status is the one that every problem shares (404 for
    accounts not found, 403 for other authors), and 422 for a mix. With
    `replace`, an intervention that repeats a stored one (same account, kind, day
    and author) with another note replaces it, and the response lists it under
    `replaced`. Without it, the response has `warnings`, one per skipped
    intervention whose note differs.
    """
    access.require_writer()
    _check_allow_unknown(access, allow_unknown)
    located, invalid = _validated_items(
        "interventions", body.interventions, InterventionCreate
    )
    for row in located:
        row["author"] = row["author"] or access.token.actor
    usable = _usable_accounts(access, located)
    problems = invalid + _item_problems(
        access,
        "interventions",
        located,
        INTERVENTION_KEY,
        usable,
        allow_future,
        allow_unknown,
    )
    problems += _author_problems(access, located, usable)
    if problems:
        raise _request_error(problems)
    with layer_errors():
        written = store_interventions(
            access.context.state,
            located,
            origin={"request": "POST /api/v1/interventions"},
            actor=access.token.actor,
            replace=replace,
        )
    return _written_json(written, replace, "intervention", INTERVENTION_KEY)


def _validated_items(
    field: str, items: list[Any], model: type[BaseModel]
) -> tuple[list[dict[str, Any]], list[_Problem]]:
    """Validate each item of a request with `model`.

    Returns the valid items, each with its LOCATION in the request such as
    `outcomes[2]`, and one problem that lists every invalid value of the others.
    The route checks the valid items further, so one error lists every problem.
    """
    rows = []
    details = []
    lines: list[str] = []
    invalid = 0
    for index, item in enumerate(items):
        try:
            valid = model.model_validate(item)
        except ValidationError as exc:
            invalid += 1
            for error in exc.errors():
                detail = validation_detail(error, None)
                detail["location"] = location(("body", field, index, *error["loc"]))
                # Message lines name items as the other problems do, without `body.`.
                line = location((field, index, *error["loc"]))
                lines.append(f"{line}: {detail['message']}")
                details.append(detail)
            continue
        rows.append({**valid.model_dump(), LOCATION: f"{field}[{index}]"})
    if not details:
        return rows, []
    problem = _Problem(
        status=422,
        counted=_counted(
            invalid, "item with invalid values", "items with invalid values"
        ),
        lines=lines,
        hints=[f"See /docs for the fields of each item of {field}."],
        details=details,
    )
    return rows, [problem]


def _written_json(
    written: StoredRows, replace: bool, noun: str, key: tuple[str, ...]
) -> dict[str, Any]:
    """Return the counts of a write, the replaced items when `replace` is set, and
    a warning per skipped item whose other values differ from the stored row."""
    result: dict[str, Any] = {"stored": written.stored, "skipped": written.skipped}
    if replace:
        result["replaced"] = jsonable(written.replaced)
    if written.differing:
        result["warnings"] = [
            _difference_warning(difference, noun, key)
            for difference in written.differing
        ]
    return result


def _difference_warning(
    difference: Difference, noun: str, key: tuple[str, ...]
) -> dict[str, str]:
    changed = ", ".join(
        f"{name} {_json_value(sent)} (stored: {_json_value(kept)})"
        for name, (kept, sent) in difference.changed.items()
    )
    same = f"{', '.join(key[:-1])} and {key[-1]}"
    return {
        "location": f"body.{difference.location}",
        "message": f"repeats a stored {noun} (same {same}) with other values: "
        f"{changed}; it was skipped. Send replace=true to store the values of the "
        "request",
    }


def _json_value(value: Any) -> str:
    return json.dumps(jsonable(value), ensure_ascii=False)


# Checking the items of a request


@dataclass(frozen=True)
class _Problem:
    """Items of a request that share one kind of problem, and how to fix them."""

    status: int
    counted: str
    """Count and kind of problem, such as `2 items dated after today`."""
    lines: list[str]
    """One line per problem, listed under the summary of the error message."""
    hints: list[str]
    """Sentences after the lines that explain how to fix the problems."""
    details: list[dict[str, str]]
    """Location and message of each item and problem."""
    message: str | None = None
    """Message of an error with only this kind of problem, or None to list lines."""


def _request_error(problems: list[_Problem]) -> ApiError:
    """Return one error that lists every problem of the request.

    The status is the one that every problem shares, such as 404 when every
    problem is an account not found, and 422 for a mix.
    """
    statuses = {problem.status for problem in problems}
    status = statuses.pop() if len(statuses) == 1 else 422
    details = [detail for problem in problems for detail in problem.details]
    if len(problems) == 1 and problems[0].message is not None:
        return ApiError(status, problems[0].message, details=details)
    counts = [problem.counted for problem in problems]
    summary = counts[0]
    if len(counts) > 1:
        summary = f"{', '.join(counts[:-1])} and {counts[-1]}"
    lines = [f"the request has {summary}; nothing was stored:"]
    for problem in problems:
        lines += [f"  {line}" for line in problem.lines[:MAX_LISTED_ERRORS]]
        if len(problem.lines) > MAX_LISTED_ERRORS:
            lines.append(f"  and {len(problem.lines) - MAX_LISTED_ERRORS:,} more")
    lines += [hint for problem in problems for hint in problem.hints]
    return ApiError(status, "\n".join(lines), details=details)


def _counted(count: int, singular: str, plural: str) -> str:
    return f"{count:,} {singular if count == 1 else plural}"


def _item_problems(
    access: Access,
    field: str,
    rows: list[dict[str, Any]],
    key: tuple[str, ...],
    usable: list[bool],
    allow_future: bool,
    allow_unknown: bool,
) -> list[_Problem]:
    """Find the items dated after today, with an account not found, or repeated."""
    found = []
    if not allow_future:
        found.append(_future_problem(access, field, rows))
    if not allow_unknown:
        found.append(_account_problem(access, rows, usable))
    found.append(_repeat_problem(rows, key))
    return [problem for problem in found if problem is not None]


def _future_problem(
    access: Access, field: str, rows: list[dict[str, Any]]
) -> _Problem | None:
    """Name every item dated after today in the project's time zone."""
    zone = ZoneInfo(access.context.project.config.timezone)
    today = datetime.now(zone).date()
    late = [
        (row[LOCATION], row["occurred_on"])
        for row in rows
        if row["occurred_on"] > today
    ]
    if not late:
        return None
    details = [
        {
            "location": f"body.{where}.occurred_on",
            "message": f"{day.isoformat()} is after {today.isoformat()}",
        }
        for where, day in late
    ]
    return _Problem(
        422,
        _counted(len(late), "item dated after today", "items dated after today"),
        [
            f"{where}.occurred_on: {day.isoformat()} is after today "
            f"({today.isoformat()} in the project's time zone)"
            for where, day in late
        ],
        ["Fix the dates after today, or send allow_future=true to store them."],
        details,
        message=(
            f"{len(late)} of {len(rows)} {field} are dated after today "
            f"({today.isoformat()} in the project's time zone); nothing was stored. "
            "Fix the dates, or send allow_future=true to store them"
        ),
    )


def _check_allow_unknown(access: Access, allow_unknown: bool) -> None:
    """Raise 403 when a token limited to its owner's accounts sends allow_unknown.

    A `csm` token changes only the accounts of its owner, and an unknown account
    has no owner.
    """
    if allow_unknown and access.limited:
        raise ApiError(
            403,
            f"role {access.token.role} cannot send allow_unknown=true, because it "
            "changes only the accounts of its owner; leave it out, or use a token "
            "with role admin or analyst",
        )


def _usable_accounts(access: Access, rows: list[dict[str, Any]]) -> list[bool]:
    """Return per item whether its account is known and visible to the token."""
    visible = access.visible_ids()
    return [
        access.context.data.is_known(row["account_id"])
        and (visible is None or row["account_id"] in visible)
        for row in rows
    ]


def _account_problem(
    access: Access, rows: list[dict[str, Any]], usable: list[bool]
) -> _Problem | None:
    """Name every item whose account is unknown or not visible to the token."""
    missing = [
        (row[LOCATION], row["account_id"])
        for row, ok in zip(rows, usable, strict=True)
        if not ok
    ]
    if not missing:
        return None
    where, account_id = missing[0]
    more = f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""
    if access.limited:
        # The same words for an unknown account and one of another owner, so that
        # the token cannot tell which ids exist.
        fix = "List the accounts at /api/v1/accounts"
        message = f"{where}: account {account_id!r} not found{more}"
    else:
        fix = (
            "Fix the account ids, add the accounts to the accounts source, or send "
            "allow_unknown=true to store them anyway"
        )
        message = f"{where}: account {account_id!r} is not in the accounts source{more}"
    return _Problem(
        404,
        _counted(
            len(missing),
            "item with an account not found",
            "items with an account not found",
        ),
        [
            f"{where}.account_id: account {account_id!r} not found"
            for where, account_id in missing
        ],
        [f"{fix}."],
        [
            {
                "location": f"body.{where}.account_id",
                "message": f"account {account_id!r} not found",
            }
            for where, account_id in missing
        ],
        message=f"{message}; nothing was stored. {fix}",
    )


def _repeat_problem(
    rows: list[dict[str, Any]], key: tuple[str, ...]
) -> _Problem | None:
    """Name every item that shares `key` with an earlier item of the request."""
    first: dict[tuple[Any, ...], str] = {}
    repeats: list[tuple[str, str]] = []
    for row in rows:
        values = tuple(row[name] for name in key)
        if values in first:
            repeats.append((row[LOCATION], first[values]))
        else:
            first[values] = row[LOCATION]
    if not repeats:
        return None
    same = f"(same {', '.join(key)})"
    where, earlier = repeats[0]
    more = f" (and {len(repeats) - 1} more)" if len(repeats) > 1 else ""
    return _Problem(
        422,
        _counted(len(repeats), "repeated item", "repeated items"),
        [f"{where}: repeats {earlier} {same}" for where, earlier in repeats],
        ["Remove each item that repeats an earlier one, or correct its values."],
        [
            {
                "location": f"body.{where}",
                "message": f"repeats body.{earlier} {same}",
            }
            for where, earlier in repeats
        ],
        message=(
            f"{where} repeats {earlier} {same}{more}; nothing was "
            "stored. Remove each item that repeats an earlier one, or correct its "
            "values"
        ),
    )


def _arr_problems(rows: list[dict[str, Any]]) -> list[_Problem]:
    """Name every outcome whose ARR change contradicts its kind."""
    found = []
    for row in rows:
        problem = arr_change_problem(row["kind"], row["arr_before"], row["arr_after"])
        if problem is not None:
            found.append((row[LOCATION], problem))
    if not found:
        return []
    return [
        _Problem(
            422,
            _counted(
                len(found),
                "ARR change that contradicts its kind",
                "ARR changes that contradict their kinds",
            ),
            [f"{place}.arr_after: {problem}" for place, problem in found],
            [],
            [
                {"location": f"body.{place}.arr_after", "message": problem}
                for place, problem in found
            ],
        )
    ]


def _conflict_problems(
    conflicts: list[OutcomeConflict], replace: bool
) -> list[_Problem]:
    """Describe the conflicts between outcomes, with a detail per item in each."""
    if not conflicts:
        return []
    return [
        _Problem(
            422,
            _counted(
                len(conflicts),
                "conflict between outcomes",
                "conflicts between outcomes",
            ),
            [conflict.message for conflict in conflicts],
            conflict_hints(conflicts, replace=replace, replace_hint=REPLACE_HINT),
            [
                {"location": f"body.{place}", "message": conflict.message}
                for conflict in conflicts
                for place in conflict.items
            ],
        )
    ]


def _author_problems(
    access: Access, rows: list[dict[str, Any]], usable: list[bool]
) -> list[_Problem]:
    """Name every item of a limited token whose author is not the token's actor.

    A `csm` token records interventions as its owner only, so that the author of
    an intervention is who acted. Tokens of other roles may name any author. An
    item whose account is not found gets only that problem, because the token
    cannot change that account with any author.
    """
    if not access.limited:
        return []
    actor = access.token.actor
    others = [
        (index, row["author"])
        for index, row in enumerate(rows)
        if row["author"] != actor and usable[index]
    ]
    if not others:
        return []
    index, author = others[0]
    more = f" (and {len(others) - 1} more)" if len(others) > 1 else ""
    fix = (
        f"Leave author out to record {actor!r}, or use a token with role admin or "
        "analyst to record another author"
    )
    return [
        _Problem(
            403,
            _counted(
                len(others), "item with another author", "items with another author"
            ),
            [
                f"interventions[{index}].author: {author!r} is not {actor!r}"
                for index, author in others
            ],
            [f"Role {access.token.role} records interventions as {actor!r}. {fix}."],
            [
                {
                    "location": f"body.interventions[{index}].author",
                    "message": f"{author!r} is not {actor!r}, the author of this "
                    f"token; leave author out, or use a token with role admin or "
                    "analyst",
                }
                for index, author in others
            ],
            message=(
                f"role {access.token.role} records interventions only as {actor!r}, "
                f"but interventions[{index}].author is {author!r}{more}; nothing was "
                f"stored. {fix}"
            ),
        )
    ]


def _visible_rows(access: Access, frame: Any) -> Any:
    if frame.empty:
        return frame
    return frame[access.filter_ids(frame["account_id"].astype(str))]
