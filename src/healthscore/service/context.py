"""Shared state of the routes: the project, its stores and the app's settings."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from zoneinfo import ZoneInfo

from fastapi import Request

from healthscore.config import Project
from healthscore.service.data import ProjectData
from healthscore.store import StateStore

#: Path prefix of the REST API's routes. Each router includes it in its own
#: prefix, so a route's `path` is its full template, as the access log shows it.
API_PREFIX = "/api/v1"


@dataclass
class ServiceContext:
    """The project served, its operational store and its snapshot reader."""

    project: Project
    state: StateStore
    data: ProjectData
    max_request_bytes: int

    def local_now(self) -> datetime:
        """Return the current time in the project's time zone."""
        return datetime.now(ZoneInfo(self.project.config.timezone))


async def get_context(request: Request) -> ServiceContext:
    """Return the context of the app that serves `request` (a route dependency).

    It is a coroutine because FastAPI runs a plain function dependency in its
    thread pool, and a hand-off to a thread costs more than this lookup.
    """
    context: ServiceContext = request.app.state.context
    return context
