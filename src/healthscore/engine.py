"""Connections to the engine that computes metrics (DuckDB through Ibis)."""

from __future__ import annotations

import logging
from dataclasses import dataclass

import ibis
from ibis.backends.duckdb import Backend as DuckDBBackend

from healthscore.config import Project
from healthscore.sources import SourceSet, load_sources

logger = logging.getLogger(__name__)


def connect(project: Project) -> DuckDBBackend:
    """Open an in-process DuckDB connection set up for `project`.

    The session time zone is the project's, never the host's: DuckDB otherwise takes
    the host zone, and naive timestamps and date boundaries would move with it.
    """
    settings = project.config.engine
    con = ibis.duckdb.connect()
    raw = con.con
    raw.execute("SET enable_progress_bar = false")
    raw.execute("SET TimeZone = ?", [project.config.timezone])
    if settings.memory_limit:
        raw.execute("SET memory_limit = ?", [settings.memory_limit])
    if settings.threads:
        raw.execute(f"SET threads = {int(settings.threads)}")
    if settings.temp_directory:
        raw.execute(
            "SET temp_directory = ?", [str(project.path(settings.temp_directory))]
        )
    logger.debug(
        "opened DuckDB (time zone %s, memory limit %s)",
        project.config.timezone,
        settings.memory_limit or "default",
    )
    return con


@dataclass
class Engine:
    """An engine connection with the project's sources read into it."""

    project: Project
    con: DuckDBBackend
    sources: SourceSet

    @classmethod
    def open(cls, project: Project) -> Engine:
        """Connect and read every source of `project`; raises SourceError."""
        con = connect(project)
        return cls(project, con, load_sources(project, con))
