"""The FastAPI application of a project: `create_app(project)`.

API routes live under `/api/v1`; `/health` and the OpenAPI docs (`/docs`,
`/openapi.json`) need no token. The dashboard's pages
(`healthscore.service.dashboard`) are mounted beside the API routers, and so
are the ingest routes (`healthscore.service.ingest`), which take write keys.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import Depends, FastAPI
from fastapi.middleware.cors import CORSMiddleware
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import HTMLResponse
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError

import healthscore
from healthscore.config import Project
from healthscore.config.retention import store_sources
from healthscore.service.auth import authenticate
from healthscore.service.context import ServiceContext
from healthscore.service.dashboard.routes import install_dashboard
from healthscore.service.data import ProjectData
from healthscore.service.errors import (
    ERROR_RESPONSES,
    ApiError,
    install_error_handlers,
)
from healthscore.service.ingest import router as ingest_router
from healthscore.service.middleware import ServiceMiddleware
from healthscore.service.rescore import RescoreWorker
from healthscore.service.routers import ROUTERS
from healthscore.store import StateStore

logger = logging.getLogger("healthscore.service")

# Every API route needs a token, whatever its own dependencies are.
_requires_token = Depends(authenticate)


def create_app(
    project: Project,
    *,
    state: StateStore | None = None,
    max_request_bytes: int | None = None,
    cors_origins: list[str] | None = None,
    secure_cookies: bool = False,
    rescore: bool = True,
) -> FastAPI:
    """Build the service of `project`.

    Parameters
    ----------
    project : Project
        The loaded project whose snapshots and operational store are served.
    state : StateStore, optional
        An open operational store; by default `store.state` of the project is opened
        (and migrated) now and closed when the app shuts down.
    max_request_bytes : int, optional
        Largest request body; default `service.max_request_bytes`.
    cors_origins : list of str, optional
        Origins allowed to call the API from a browser; default
        `service.cors_origins`, which is empty, so CORS is off.
    secure_cookies : bool
        Mark the dashboard's session cookie Secure on plain http requests too (it
        always is on https), for a proxy that ends TLS without forwarding the scheme.
    rescore : bool
        Whether to run the worker that rescores accounts after ingested events,
        when the project has store sources.
    """
    settings = project.config.service
    owns_state = state is None
    store = state or StateStore.open(project.config.store.state, project.root)
    limit = max_request_bytes or settings.max_request_bytes
    context = ServiceContext(
        project=project,
        state=store,
        data=ProjectData(project),
        max_request_bytes=limit,
    )

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        logger.info("serving project %s", project.config.name)
        worker = (
            RescoreWorker(project, process=True)
            if rescore and store_sources(project.config)
            else None
        )
        _app.state.rescore_worker = worker
        # The ingest routes create their group committer on first use, with the
        # rollup updates of this worker.
        _app.state.ingest_committer = None
        if worker is not None:
            worker.start()
        try:
            yield
        finally:
            if worker is not None:
                worker.stop()
            if owns_state:
                store.close()
            logger.info("stopped serving project %s", project.config.name)

    app = FastAPI(
        title=f"healthscore: {project.config.name}",
        version=healthscore.__version__,
        description="Customer health scores, their explanations, alerts and tasks. "
        "Send an API token from `healthscore token create` as a bearer token.",
        lifespan=lifespan,
        # The Swagger UI page is added below with scripts served by the app, so that
        # it works without internet access. FastAPI's ReDoc page is left out: ReDoc
        # loads its logo from its CDN.
        docs_url=None,
        redoc_url=None,
    )
    app.state.context = context
    app.state.rescore_worker = None
    install_error_handlers(app)
    app.add_api_route(
        "/health", _health_route(context), methods=["GET"], tags=["health"]
    )
    for router in ROUTERS:
        app.include_router(
            router,
            dependencies=[_requires_token],
            responses=ERROR_RESPONSES,
        )
    install_dashboard(app, project, secure_cookies=secure_cookies)
    _install_docs_page(app)
    app.include_router(ingest_router)
    origins = cors_origins if cors_origins is not None else settings.cors_origins
    if origins:
        app.add_middleware(
            CORSMiddleware,
            allow_origins=origins,
            allow_methods=["GET", "POST"],
            allow_headers=["Authorization", "Content-Type"],
        )
    app.add_middleware(ServiceMiddleware, max_request_bytes=limit)
    return app


def _install_docs_page(app: FastAPI) -> None:
    """Add the Swagger UI page `/docs`.

    Its script, style and icon come from the package's static folder (see its README
    for versions and licences) instead of FastAPI's default CDN addresses.
    """
    openapi_url = app.openapi_url or "/openapi.json"
    title = app.title

    def swagger_page() -> HTMLResponse:
        return get_swagger_ui_html(
            openapi_url=openapi_url,
            title=f"{title} - API",
            swagger_js_url="/static/swagger-ui-bundle.js",
            swagger_css_url="/static/swagger-ui.css",
            swagger_favicon_url="/static/swagger-ui-favicon.png",
        )

    app.add_api_route("/docs", swagger_page, methods=["GET"], include_in_schema=False)


def _health_route(context: ServiceContext) -> Any:
    def health() -> dict[str, str]:
        """Report whether the service can reach its operational store."""
        try:
            with context.state.engine.connect() as connection:
                connection.execute(text("SELECT 1"))
        except DBAPIError as exc:
            raise ApiError(
                503, "the operational store cannot be reached; check store.state"
            ) from exc
        return {"status": "ok"}

    return health
