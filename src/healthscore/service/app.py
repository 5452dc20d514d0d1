"""The FastAPI application of a project: `create_app(project)`.

API routes live under `/api/v1`; `/health` and the OpenAPI docs (`/docs`,
`/openapi.json`) need no token. The dashboard's pages
(`healthscore.service.dashboard`) are mounted beside the API routers, and so
are the ingest routes (`healthscore.service.ingest`), which take write keys.
While the app runs, background threads rescore ingested events and send the alert
deliveries that are due.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from fastapi import Depends, FastAPI
from fastapi.middleware.cors import CORSMiddleware
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import HTMLResponse
from sqlalchemy import select
from sqlalchemy.exc import DBAPIError

import healthscore
from healthscore.config import Project
from healthscore.config.retention import store_sources
from healthscore.runtime import configure_process
from healthscore.service.auth import authenticate
from healthscore.service.context import ServiceContext
from healthscore.service.dashboard.routes import install_dashboard
from healthscore.service.data import ProjectData
from healthscore.service.delivery import AlertDeliveryDuty
from healthscore.service.errors import (
    ERROR_RESPONSES,
    ApiError,
    install_error_handlers,
    store_unavailable,
)
from healthscore.service.handoff import LEASE_RETRY_SECONDS, RescoreLease, RescoreRelay
from healthscore.service.ingest import router as ingest_router
from healthscore.service.logs import add_plain_handler
from healthscore.service.middleware import ServiceMiddleware
from healthscore.service.rescore import RescoreWorker
from healthscore.service.routers import ROUTERS
from healthscore.store import StateStore
from healthscore.store.tables_tokens import api_tokens

logger = logging.getLogger("healthscore.service")

#: Settings that `healthscore serve --workers N` hands to its request processes.
PROJECT_VARIABLE = "HEALTHSCORE_SERVE_PROJECT"
SECURE_COOKIES_VARIABLE = "HEALTHSCORE_SERVE_SECURE_COOKIES"
VERBOSE_VARIABLE = "HEALTHSCORE_SERVE_VERBOSE"

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
    deliver_alerts: bool = True,
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
    deliver_alerts : bool
        Whether to send the alert deliveries that are due every
        `alerts.delivery.service_interval` seconds while the app runs.
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
        # The ingest routes create their group committer on first use, with the
        # rollup updates of the current worker or relay.
        _app.state.ingest_committer = None
        rescoring = (
            RescoreDuty(_app, project)
            if rescore and store_sources(project.config)
            else None
        )
        if rescoring is not None:
            rescoring.start()
        delivery = AlertDeliveryDuty(project, store) if deliver_alerts else None
        _app.state.alert_delivery = delivery
        try:
            if delivery is not None:
                delivery.start()
            yield
        finally:
            # The delivery thread uses the store, so it stops before the store closes.
            if delivery is not None:
                delivery.stop()
            if rescoring is not None:
                rescoring.stop()
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
    app.state.alert_delivery = None
    install_error_handlers(app)
    app.add_api_route(
        "/health", _health_route(context), methods=["GET"], tags=["health"]
    )
    # HEAD for load balancers' checks, left out of the schema, whose operation ids
    # must be unique.
    app.add_api_route(
        "/health", _health_route(context), methods=["HEAD"], include_in_schema=False
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
            allow_methods=["GET", "POST", "DELETE"],
            allow_headers=["Authorization", "Content-Type"],
        )
    app.add_middleware(ServiceMiddleware, max_request_bytes=limit)
    return app


def service_log_levels(verbose: int) -> None:
    """Set the levels of healthscore's loggers for a service at `verbose`."""
    if verbose <= 1:
        # The layers below log account ids and people's names at INFO level, so at
        # the default verbosity only the service's own lines (access log) pass.
        logging.getLogger("healthscore").setLevel(logging.WARNING)
        logging.getLogger("healthscore.service").setLevel(logging.INFO)
    else:
        logging.getLogger("healthscore").setLevel(logging.DEBUG)


def check_startup(project: Project) -> None:
    """Open what every request process needs, so that a failure is reported once.

    The operational store is opened (and migrated), and with store sources the
    rescore lease file is opened for writing. Under `serve --workers N`, Uvicorn
    logs a failure in a request process as a traceback and still exits with
    status 0, so `healthscore serve` calls this before it starts them.

    Raises
    ------
    StateStoreError
        When the operational store cannot be opened.
    OSError
        When the lease file cannot be created or opened for writing.
    """
    StateStore.open(project.config.store.state, project.root).close()
    if not store_sources(project.config):
        return
    path = RescoreLease(project).path
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "a+", encoding="utf-8"):
            pass
    except OSError as exc:
        raise OSError(
            f"the rescore lease {path} cannot be opened for writing "
            f"({exc.strerror or exc}); the service needs write access to the events "
            "folder (store.events)"
        ) from exc


def app_from_environment() -> FastAPI:
    """Build the app of one request process of `healthscore serve --workers N`.

    Uvicorn calls this in each process it starts. The project folder, the cookie
    setting and the verbosity come from the variables that the command sets, and
    log records go to stderr as plain lines, as in a single process.
    """
    from healthscore.config import load_project

    root = os.environ.get(PROJECT_VARIABLE)
    if not root:
        raise RuntimeError(
            f"{PROJECT_VARIABLE} is not set; start the service with `healthscore "
            "serve --workers N`"
        )
    verbose = int(os.environ.get(VERBOSE_VARIABLE) or "1")
    configure_process()
    add_plain_handler()
    service_log_levels(verbose)
    project = load_project(Path(root))
    return create_app(
        project, secure_cookies=bool(os.environ.get(SECURE_COOKIES_VARIABLE))
    )


class RescoreDuty:
    """Run the rescore worker in this process while it holds the project's lease.

    Without the lease, `app.state.rescore_worker` is a `RescoreRelay`, which hands
    stored accounts to the worker of the process that holds it, and a thread tries
    to take the lease every LEASE_RETRY_SECONDS. Once this process takes it, the
    worker starts here and replaces the relay.
    """

    def __init__(self, app: FastAPI, project: Project) -> None:
        self.app = app
        self.project = project
        self.lease = RescoreLease(project)
        self.worker: RescoreWorker | None = None
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        if self._promote():
            return
        logger.info(
            "another process of this project rescores; handing stored accounts to it"
        )
        self.app.state.rescore_worker = RescoreRelay(self.project)
        self._thread = threading.Thread(
            target=self._retry, name="healthscore-rescore-lease", daemon=True
        )
        self._thread.start()

    def _promote(self) -> bool:
        """Start the worker if the lease can be taken now; return whether it runs."""
        if not self.lease.acquire():
            return False
        worker = RescoreWorker(self.project, process=True)
        try:
            worker.start()
        except BaseException:
            self.lease.release()
            raise
        self.worker = worker
        self.app.state.rescore_worker = worker
        # A new committer records lagging days with this worker; appends of the
        # old one still reach it through notices.
        self.app.state.ingest_committer = None
        return True

    def _retry(self) -> None:
        while not self._stopping.wait(LEASE_RETRY_SECONDS):
            try:
                if self._promote():
                    logger.info("this process took over rescoring")
                    return
            except Exception as exc:  # the requests must keep being served
                logger.error("starting the rescore worker failed: %s", exc)

    def stop(self) -> None:
        self._stopping.set()
        if self._thread is not None:
            self._thread.join()
        if self.worker is not None:
            self.worker.stop()
        self.lease.release()


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
        """Report whether the service can read its operational store.

        The check reads a row of the API tokens table, which every API request
        reads, so a store whose tables are missing fails it as well as one that
        cannot be reached.
        """
        try:
            with context.state.engine.connect() as connection:
                connection.execute(select(api_tokens.c.id).limit(1)).all()
        except DBAPIError as exc:
            error = store_unavailable(exc)
            if error is None:
                error = ApiError(
                    503,
                    "the operational store cannot be read "
                    f"({type(exc).__name__}); check store.state in healthscore.yml",
                )
            logger.error("health check failed: %s", error.message)
            raise error from exc
        return {"status": "ok"}

    return health
