"""Form routes of the dashboard: notes, overrides, tasks and alerts.

Each form works twice over: a plain form post gets a 303 redirect back to the page
(so the dashboard works without JavaScript), and an HTMX post gets the updated
fragment of the page. Every post must carry the session's CSRF token, as the form
field `csrf_token` or the `X-CSRF-Token` header, or it is rejected with 403. The
changes go through the API route functions, so roles and account visibility are the
API's: a viewer gets 403, a csm 404 for an account it does not own.
"""

from __future__ import annotations

from typing import Annotated, Any, TypeVar

from fastapi import APIRouter, Depends, Path, Request
from fastapi.responses import Response
from pydantic import BaseModel, ValidationError
from starlette.datastructures import FormData

from healthscore.monitoring.notes import list_notes
from healthscore.service.auth import Access
from healthscore.service.dashboard.sessions import CSRF_FIELD, CSRF_HEADER
from healthscore.service.dashboard.views import account_view
from healthscore.service.dashboard.web import (
    DashboardRoute,
    current_session,
    is_htmx,
    render,
    require_access,
    signer_of,
)
from healthscore.service.errors import ApiError
from healthscore.service.paths import encode_segment
from healthscore.service.routers import accounts as account_routes
from healthscore.service.routers import work as work_routes
from healthscore.service.schemas import (
    MAX_ID,
    NoteCreate,
    OverrideCreate,
    TaskComplete,
    TaskDismiss,
)

router = APIRouter(route_class=DashboardRoute, include_in_schema=False)

PageAccess = Annotated[Access, Depends(require_access)]
ItemId = Annotated[int, Path(ge=1, le=MAX_ID)]
ModelT = TypeVar("ModelT", bound=BaseModel)


async def checked_form(request: Request) -> FormData:
    """Read the posted form; 403 unless it carries the session's CSRF token."""
    form = await request.form()
    sent = form.get(CSRF_FIELD) or request.headers.get(CSRF_HEADER)
    if not isinstance(sent, str) or not signer_of(request).check_csrf(
        current_session(request), sent
    ):
        raise ApiError(
            403,
            "the form has no valid CSRF token; reload the page and submit it again",
        )
    return form


CheckedForm = Annotated[FormData, Depends(checked_form)]


def local_path(value: Any, default: str) -> str:
    """Return `value` when it is a path on this site, else `default`.

    Only paths that start with one slash are followed, so a redirect never leaves
    the site (`//host` and `/\\host` name other hosts in browsers).
    """
    if (
        isinstance(value, str)
        and value.startswith("/")
        and not value.startswith(("//", "/\\"))
    ):
        return value
    return default


#: Messages of the form fields whose validation errors read poorly in a form, such
#: as "Input should be a valid string" for a reason left empty. An empty field is
#: sent to the model as None.
FIELD_MESSAGES = {
    "score": "enter a number from 0 to 100",
    "sentiment": "choose a sentiment from 1 to 5, or leave it empty",
}
#: Messages of the text fields that are required, used when they are left empty.
REQUIRED_MESSAGES = {
    "text": "the text of the note is required",
    "reason": "a reason is required",
    "expires_on": "enter the last day the override applies (YYYY-MM-DD)",
}
#: Pydantic error types of a field that was left empty.
_EMPTY_ERRORS = {"missing", "string_type", "string_too_short", "date_type"}


def parse_body(model: type[ModelT], values: dict[str, Any]) -> ModelT:
    """Validate form values with the API's request model; 422 naming the fields.

    Form values are text, so the model's strict number fields are read in lax mode.
    """
    try:
        return model.model_validate(values, strict=False)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(part) for part in error['loc'])}: {_form_message(error)}"
            for error in exc.errors()
        )
        raise ApiError(422, f"the form is invalid: {problems}") from None


def _form_message(error: Any) -> str:
    """Return the message of one validation error of a form field."""
    field = str(error["loc"][0]) if error["loc"] else ""
    if field in FIELD_MESSAGES:
        return FIELD_MESSAGES[field]
    if field in REQUIRED_MESSAGES and error["type"] in _EMPTY_ERRORS:
        return REQUIRED_MESSAGES[field]
    if error["type"] == "value_error" and (error.get("ctx") or {}).get("error"):
        # The text of the validator's ValueError, without pydantic's "Value error, ".
        return str(error["ctx"]["error"])
    return str(error["msg"])


def _text(form: FormData, name: str) -> str | None:
    value = form.get(name)
    if not isinstance(value, str) or not value.strip():
        return None
    return value


def _redirect(location: str) -> Response:
    return Response(status_code=303, headers={"Location": location})


# Notes and overrides


@router.post("/accounts/{account_id:account}/notes")
def post_note(
    request: Request, account_id: str, access: PageAccess, form: CheckedForm
) -> Response:
    """Add a note about the account, written by the logged-in token."""
    body = parse_body(
        NoteCreate, {"text": _text(form, "text"), "sentiment": _text(form, "sentiment")}
    )
    account_routes.create_note(account_id, body, access)
    if is_htmx(request):
        values = {
            # create_note accepts only accounts of the accounts source.
            "account": {"account_id": account_id, "in_accounts_source": True},
            "notes": list_notes(access.context.state, account_id),
            "message": "Note added.",
        }
        return render(request, "fragments/notes.html", values, access=access)
    return _redirect(f"/accounts/{encode_segment(account_id)}#notes")


@router.post("/accounts/{account_id:account}/overrides")
def post_override(
    request: Request, account_id: str, access: PageAccess, form: CheckedForm
) -> Response:
    """Set a manual score for the account or one measure, up to an expiry date."""
    body = parse_body(
        OverrideCreate,
        {
            "score": _text(form, "score"),
            "reason": _text(form, "reason"),
            "expires_on": _text(form, "expires_on"),
            "measure": _text(form, "measure"),
        },
    )
    account_routes.create_override(account_id, body, access)
    if is_htmx(request):
        values = account_view(access, account_id)
        values["message"] = "Override saved."
        return render(request, "fragments/overrides.html", values, access=access)
    return _redirect(f"/accounts/{encode_segment(account_id)}#overrides")


# Tasks


@router.post("/tasks/{task_id}/complete")
def post_complete_task(
    request: Request, task_id: ItemId, access: PageAccess, form: CheckedForm
) -> Response:
    """Mark an open task completed, with an optional note of what was done."""
    body = parse_body(TaskComplete, {"note": _text(form, "note")})
    task = work_routes.complete(task_id, access, body)
    return _task_response(request, access, form, task)


@router.post("/tasks/{task_id}/dismiss")
def post_dismiss_task(
    request: Request, task_id: ItemId, access: PageAccess, form: CheckedForm
) -> Response:
    """Dismiss an open task that is not needed, with a reason."""
    body = parse_body(TaskDismiss, {"reason": _text(form, "reason")})
    task = work_routes.dismiss(task_id, body, access)
    return _task_response(request, access, form, task)


def _task_response(
    request: Request, access: Access, form: FormData, task: dict[str, Any]
) -> Response:
    back = local_path(form.get("next"), "/tasks")
    if is_htmx(request):
        values = {"task": task, "next": back}
        return render(request, "fragments/task_row.html", values, access=access)
    return _redirect(back)


# Alerts


@router.post("/alerts/{alert_id}/acknowledge")
def post_acknowledge_alert(
    request: Request, alert_id: ItemId, access: PageAccess, form: CheckedForm
) -> Response:
    """Acknowledge an open alert."""
    alert = work_routes.acknowledge_alert(alert_id, access)
    return _alert_response(request, access, form, alert)


@router.post("/alerts/{alert_id}/resolve")
def post_resolve_alert(
    request: Request, alert_id: ItemId, access: PageAccess, form: CheckedForm
) -> Response:
    """Resolve an open or acknowledged alert."""
    alert = work_routes.resolve_alert(alert_id, access)
    return _alert_response(request, access, form, alert)


def _alert_response(
    request: Request, access: Access, form: FormData, alert: dict[str, Any]
) -> Response:
    back = local_path(form.get("next"), "/alerts")
    if is_htmx(request):
        values = {"alert": alert, "next": back}
        return render(request, "fragments/alert_row.html", values, access=access)
    return _redirect(back)
