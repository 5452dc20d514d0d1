"""Templates, the logged-in user and HTML error pages of the dashboard's routes."""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Coroutine
from datetime import date, datetime
from pathlib import Path
from typing import Any
from urllib.parse import quote

from fastapi import Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse
from fastapi.routing import APIRoute
from jinja2 import Environment, FileSystemLoader, select_autoescape
from sqlalchemy.exc import DBAPIError

from healthscore.service.auth import Access
from healthscore.service.context import ServiceContext
from healthscore.service.dashboard.sessions import (
    CSRF_FIELD,
    CSRF_HEADER,
    Session,
    SessionSigner,
    new_session,
    read_session,
    session_token,
    set_session_cookie,
)
from healthscore.service.errors import ApiError, store_unavailable, validation_detail
from healthscore.service.middleware import TOKEN_ID_KEY
from healthscore.service.paths import encode_segment

logger = logging.getLogger(__name__)

TEMPLATE_FOLDER = Path(__file__).resolve().parents[2] / "templates" / "dashboard"

#: Headers that forbid any page, this site's included, to show a dashboard response
#: in a frame, so a form cannot be overlaid for clickjacking. X-Frame-Options is
#: there for browsers without CSP frame-ancestors.
FRAME_HEADERS = {
    "X-Frame-Options": "DENY",
    "Content-Security-Policy": "frame-ancestors 'none'",
}

#: Text and icon of each band tone, so a band never depends on colour alone.
BAND_ICONS = {"low": "▼", "middle": "◆", "high": "▲", "other": "○"}


class LoginRequired(Exception):
    """The page needs a logged-in session; the handler redirects to the login page."""


def _environment() -> Environment:
    environment = Environment(
        loader=FileSystemLoader(TEMPLATE_FOLDER),
        autoescape=select_autoescape(["html"]),
        trim_blocks=True,
        lstrip_blocks=True,
    )
    environment.filters["points"] = format_points
    environment.filters["money"] = format_money
    environment.filters["day"] = format_day
    environment.filters["text"] = format_text
    # An account id in a link or form action: `/` and `?` would end the segment.
    environment.filters["segment"] = encode_segment
    return environment


def format_points(value: Any, digits: int = 1) -> str:
    """Format a score or a change of score; a dash when missing."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    return f"{float(value):.{digits}f}"


def format_money(value: Any) -> str:
    """Format an amount such as ARR with thousands separators; a dash when missing."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    return f"{float(value):,.0f}"


def format_day(value: Any) -> str:
    """Format a date or time as ISO text; a dash when missing."""
    if isinstance(value, datetime):
        return value.strftime("%Y-%m-%d %H:%M")
    if isinstance(value, date):
        return value.isoformat()
    return "–" if value is None else str(value)


def format_text(value: Any) -> str:
    """Format a value that may be missing (None or NaN) as text."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    return str(value)


TEMPLATES = _environment()


def signer_of(request: Request) -> SessionSigner:
    """Return the app's session signer."""
    signer: SessionSigner = request.app.state.session_signer
    return signer


def context_of(request: Request) -> ServiceContext:
    """Return the app's service context."""
    context: ServiceContext = request.app.state.context
    return context


def current_session(request: Request) -> Session | None:
    """Return the request's valid session, or None."""
    return read_session(request, signer_of(request))


def require_access(request: Request) -> Access:
    """Return the Access of the logged-in session (a route dependency).

    Raises
    ------
    LoginRequired
        When the request has no session, or its token was revoked.
    """
    context = context_of(request)
    token = session_token(context.state, current_session(request))
    if token is None:
        raise LoginRequired
    request.scope.setdefault("state", {})[TOKEN_ID_KEY] = token.id
    return Access(token=token, context=context)


def render(
    request: Request,
    template: str,
    values: dict[str, Any],
    *,
    status_code: int = 200,
    access: Access | None = None,
) -> HTMLResponse:
    """Render `template` with the page values every template uses.

    A visitor without a valid session gets a new anonymous one, so every form on
    the page carries a CSRF token.
    """
    signer = signer_of(request)
    session = current_session(request)
    fresh = session is None
    if session is None:
        session = new_session(None)
    context = context_of(request)
    page = {
        "request": request,
        "project_name": context.project.config.name,
        "access": access,
        "user": access.token if access is not None else None,
        "can_write": access is not None and access.token.role != "viewer",
        "csrf_token": signer.csrf_token(session),
        "csrf_field": CSRF_FIELD,
        "csrf_header": CSRF_HEADER,
        "path": request.url.path,
        "band_icons": BAND_ICONS,
        **values,
    }
    html = TEMPLATES.get_template(template).render(page)
    response = HTMLResponse(html, status_code=status_code)
    if fresh:
        set_session_cookie(response, request, signer, session)
    return response


def is_htmx(request: Request) -> bool:
    """Return whether the request was sent by HTMX (and expects a fragment)."""
    return request.headers.get("HX-Request") == "true"


def login_redirect(request: Request) -> Response:
    """Send the browser to the login page, then back to the page it asked for."""
    target = request.url.path
    if request.url.query:
        target += "?" + request.url.query
    location = f"/login?next={quote(target, safe='')}"
    if is_htmx(request):
        # HTMX follows HX-Redirect with a full page load instead of a swap.
        return Response(status_code=401, headers={"HX-Redirect": location})
    return Response(status_code=303, headers={"Location": location})


def error_page(request: Request, error: ApiError) -> HTMLResponse:
    """Render an ApiError as an HTML page (or fragment for HTMX) with its status."""
    access = None
    try:
        access = require_access(request)
    except (LoginRequired, DBAPIError):
        # Without a readable store, the page is shown as to a visitor.
        access = None
    template = "fragments/error.html" if is_htmx(request) else "error.html"
    response = render(
        request,
        template,
        {"status": error.status, "message": error.message},
        status_code=error.status,
        access=access,
    )
    if is_htmx(request):
        # Show the message in the page's message area instead of the form's target.
        response.headers["HX-Retarget"] = "#messages"
        response.headers["HX-Reswap"] = "innerHTML"
    return response


def invalid_request(error: RequestValidationError) -> ApiError:
    """Return a 422 that names each invalid parameter of a dashboard request."""
    details = [validation_detail(item, None) for item in error.errors()]
    problems = "; ".join(
        f"{detail['location']}: {detail['message']}" for detail in details
    )
    return ApiError(422, f"the request is invalid: {problems}")


class DashboardRoute(APIRoute):
    """A route whose ApiError or invalid parameter gets an HTML error page, not JSON.

    So does a database error that means the operational store cannot be read (503).

    Every response of the route, error pages and redirects included, gets
    FRAME_HEADERS.
    """

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def handle(request: Request) -> Response:
            try:
                response = await handler(request)
            except LoginRequired:
                response = login_redirect(request)
            except ApiError as error:
                response = error_page(request, error)
            except RequestValidationError as error:
                response = error_page(request, invalid_request(error))
            except DBAPIError as error:
                unavailable = store_unavailable(error)
                if unavailable is None:
                    raise
                logger.error(
                    "%s %s: %s",
                    request.method,
                    request.url.path,
                    unavailable.message,
                )
                response = error_page(request, unavailable)
            response.headers.update(FRAME_HEADERS)
            return response

        return handle
