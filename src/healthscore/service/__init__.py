"""The web service: a REST API over a project's scores, alerts, tasks and notes.

`create_app(project)` builds the FastAPI application; `healthscore serve` runs it
under Uvicorn. See docs/service.md.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from healthscore.service.app import create_app
    from healthscore.service.context import API_PREFIX

__all__ = ["API_PREFIX", "create_app"]


def __getattr__(name: str) -> Any:
    # FastAPI and the routers take about half a second to import, so the CLI, which
    # imports service modules such as `tokens`, loads them only when asked.
    if name == "create_app":
        from healthscore.service.app import create_app

        return create_app
    if name == "API_PREFIX":
        from healthscore.service.context import API_PREFIX

        return API_PREFIX
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
