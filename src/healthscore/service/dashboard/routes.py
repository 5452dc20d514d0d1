"""Mounting of the dashboard on the app, with its login, logout and static files."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Annotated

import plotly
from fastapi import APIRouter, Depends, FastAPI, Query, Request
from fastapi.responses import FileResponse, HTMLResponse, Response
from fastapi.staticfiles import StaticFiles
from starlette.datastructures import FormData

from healthscore.config import Project
from healthscore.service.dashboard import actions, pages
from healthscore.service.dashboard.actions import checked_form, local_path
from healthscore.service.dashboard.sessions import (
    ENDED_SESSIONS_FILE,
    SESSION_KEY_FILE,
    EndedSessions,
    SessionKeyFile,
    SessionSigner,
    clear_session_cookie,
    load_session_key,
    new_session,
    set_session_cookie,
)
from healthscore.service.dashboard.web import (
    DashboardRoute,
    context_of,
    current_session,
    render,
    session_token,
    signer_of,
)
from healthscore.service.tokens import verify_token

logger = logging.getLogger("healthscore.service")

STATIC_FOLDER = Path(__file__).resolve().parents[1] / "static"
#: plotly.js as shipped inside the plotly Python package.
PLOTLY_JS = Path(plotly.__file__).resolve().parent / "package_data" / "plotly.min.js"
#: Seconds browsers may keep the static files without asking again.
STATIC_MAX_AGE_SECONDS = 3600

router = APIRouter(route_class=DashboardRoute, include_in_schema=False)


def install_dashboard(
    app: FastAPI, project: Project, *, secure_cookies: bool = False
) -> None:
    """Add the dashboard pages, forms, login and static files to `app`.

    Session cookies are marked Secure on https requests, and on every request when
    `secure_cookies` is set (for a proxy that ends TLS without forwarding the scheme).
    """
    # Read once here, so that an unusable key file stops the start with its reason.
    load_session_key(project)
    app.state.session_signer = SessionSigner(
        SessionKeyFile(project.path(SESSION_KEY_FILE)),
        ended=EndedSessions(project.path(ENDED_SESSIONS_FILE)),
    )
    app.state.secure_cookies = secure_cookies
    app.add_api_route(
        "/static/plotly.min.js", _plotly_js, methods=["GET"], include_in_schema=False
    )
    app.mount("/static", StaticFiles(directory=STATIC_FOLDER), name="static")
    app.include_router(router)
    app.include_router(pages.router)
    app.include_router(actions.router)


def _plotly_js() -> FileResponse:
    return FileResponse(
        PLOTLY_JS,
        media_type="text/javascript",
        headers={"Cache-Control": f"max-age={STATIC_MAX_AGE_SECONDS}"},
    )


@router.get("/login", response_class=HTMLResponse)
def login_page(
    request: Request, next_path: Annotated[str | None, Query(alias="next")] = None
) -> HTMLResponse:
    """Render the login form, where the user pastes an API token."""
    return render(
        request, "login.html", {"next": local_path(next_path, "/"), "error": None}
    )


@router.post("/login")
def login(
    request: Request, form: Annotated[FormData, Depends(checked_form)]
) -> Response:
    """Start a session for a valid API token and go to the page asked for."""
    context = context_of(request)
    back = local_path(form.get("next"), "/")
    text = form.get("token")
    token = verify_token(context.state, text.strip()) if isinstance(text, str) else None
    if token is None:
        logger.info("dashboard login rejected: invalid or revoked token")
        values = {
            "next": back,
            "error": "The token is invalid or revoked. Paste a token from "
            "`healthscore token create`.",
        }
        return render(request, "login.html", values, status_code=401)
    # A new session id at login, so a session id known before login is useless.
    session = new_session(token.id)
    response = Response(status_code=303, headers={"Location": back})
    set_session_cookie(response, request, signer_of(request), session)
    logger.info("dashboard login with token %d (%s)", token.id, token.role)
    return response


@router.post("/logout")
def logout(
    request: Request, _form: Annotated[FormData, Depends(checked_form)]
) -> Response:
    """End the session in every process of the service and go to the login page."""
    session = current_session(request)
    token = session_token(context_of(request).state, session)
    if session is not None and session.token_id is not None:
        signer_of(request).end(session)
    if token is not None:
        logger.info("dashboard logout of token %d", token.id)
    response = Response(status_code=303, headers={"Location": "/login"})
    clear_session_cookie(response)
    return response
