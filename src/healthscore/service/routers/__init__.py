"""Routers of the service, one module per resource.

`ROUTERS` lists the API routers that `create_app` mounts; their paths start with
`/api/v1`. The
dashboard's page routers and the event-ingest router are to be mounted beside them.
"""

from __future__ import annotations

from fastapi import APIRouter

from healthscore.service.routers.accounts import router as accounts_router
from healthscore.service.routers.exports import router as exports_router
from healthscore.service.routers.portfolio import router as portfolio_router
from healthscore.service.routers.results import router as results_router
from healthscore.service.routers.work import router as work_router

ROUTERS: tuple[APIRouter, ...] = (
    accounts_router,
    portfolio_router,
    work_router,
    results_router,
    exports_router,
)
