"""Ingest files into the event store through a store source's reader settings.

`healthscore ingest --source NAME FILE...` reads each file exactly as a source with
the settings of `NAME` would read it (format or importer, columns, lookups, attribute
types and pseudonymization), checks every row, and appends the rows to the event
store. Every file is read and checked before anything is stored, so a bad file
stores nothing and the error names its file, row and column.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path

import pyarrow as pa

from healthscore.config import Project
from healthscore.config.retention import is_store_source, numeric_columns
from healthscore.engine import connect
from healthscore.sources.reader import SourceError, quote, read_source
from healthscore.store.events import EventStore, file_digest

logger = logging.getLogger(__name__)

#: Invalid rows listed in one error message; the rest are counted.
MAX_LISTED_ROWS = 10


class IngestError(ValueError):
    """Files that cannot be stored; nothing of them was stored."""


@dataclass
class IngestedFile:
    """Rows and days that one file added to the event store."""

    file: str
    rows: int
    days: list[date] = field(default_factory=list)
    rollup_only_days: list[date] = field(default_factory=list)
    """Days already purged, whose rows went into the rollup only."""
    skipped: bool = False
    """Whether the same content had been ingested before and was skipped."""


def event_store(project: Project) -> EventStore:
    """Return the project's event store."""
    config = project.config.store
    return EventStore(project.path(config.events), project.path(config.daily))


class RollupUpdates:
    """Days of the event store whose rollups lag behind their raw rows.

    The web service appends with `rollup=False`, so that a request does not read
    every part of the day again, and records the days here. `apply` then computes
    those days' rollups again from their raw parts, off the request path. Until it
    runs, the rollups (and metrics of `<source>_daily`) miss the newest rows, and
    retention keeps the lagging days, because it purges a day only when its rollup
    counts every raw row.
    """

    def __init__(self, project: Project) -> None:
        self.project = project
        self.store = event_store(project)
        self._lock = threading.Lock()
        self._days: dict[str, set[date]] = {}
        self.applied_at = time.monotonic()

    def add(self, source: str, days: Iterable[date]) -> None:
        """Record that rows of `source` were appended to `days` without rollup."""
        with self._lock:
            self._days.setdefault(source, set()).update(days)

    def pending(self) -> dict[str, set[date]]:
        """Return the lagging days per source."""
        with self._lock:
            return {source: set(days) for source, days in self._days.items() if days}

    def apply(self, sources: Iterable[str] | None = None) -> dict[str, list[date]]:
        """Compute the rollups of the lagging days of `sources` (default all) again.

        Returns the days whose rollup changed, per source. A source whose update
        fails keeps its days, and the error is raised after the other sources.
        """
        wanted = None if sources is None else set(sources)
        with self._lock:
            taken = {
                source: days
                for source, days in self._days.items()
                if days and (wanted is None or source in wanted)
            }
            for source in taken:
                self._days[source] = set()
        changed: dict[str, list[date]] = {}
        failure: Exception | None = None
        for source, days in taken.items():
            settings = self.project.config.sources.get(source)
            numeric = [] if settings is None else numeric_columns(settings)
            try:
                changed[source] = self.store.rebuild_rollups(source, numeric, days)
            except Exception as exc:  # raised after the other sources are updated
                self.add(source, days)
                failure = failure or exc
        if wanted is None:
            self.applied_at = time.monotonic()
        if failure is not None:
            raise failure
        return changed


def ingest_files(project: Project, name: str, files: list[Path]) -> list[IngestedFile]:
    """Read, check and append `files` to store source `name`, all of them or none.

    Raises
    ------
    IngestError
        When `name` is not a store source, or a file cannot be read or has rows that
        fail a check. The message names the file, row and column.
    """
    source = project.config.sources.get(name)
    if source is None:
        raise IngestError(
            f"unknown source {name!r}; the store sources are "
            f"{', '.join(_store_names(project)) or 'none'}"
        )
    if not is_store_source(source):
        raise IngestError(
            f"source {name!r} reads {source.path!r}, not the event store; set "
            f"sources.{name}.path to store to ingest into it"
        )
    if not files:
        raise IngestError("give at least one file to ingest")
    tables = [(file, read_checked(project, name, file)) for file in files]

    store = event_store(project)
    numeric = numeric_columns(source)
    results = []
    for file, table in tables:
        stored = store.append(
            name, table, numeric=numeric, batch_id=file_digest(file), origin=str(file)
        )
        results.append(
            IngestedFile(
                file=str(file),
                rows=stored.rows,
                days=stored.raw_days,
                rollup_only_days=stored.rollup_only_days,
                skipped=stored.skipped,
            )
        )
    return results


def read_checked(project: Project, name: str, file: Path) -> pa.Table:
    """Read one file with the settings of source `name`; every row must be valid.

    Returns the rows with the source's standard and attribute columns.
    """
    source = project.config.sources[name]
    path = Path(file).resolve()
    if not path.is_file():
        raise IngestError(f"{file}: file not found; check the path")
    settings = source.model_copy(update={"path": str(path)})
    backend = connect(project)
    try:
        con = backend.con
        try:
            loaded = read_source(con, project, name, settings)
        except SourceError as exc:
            raise IngestError(f"{file}: {exc}") from None
        relation = quote(loaded.relation)
        problems = con.execute(
            f"SELECT _row, _problem FROM {relation} WHERE _problem IS NOT NULL "
            "ORDER BY _row"
        ).fetchall()
        if problems:
            raise IngestError(_problem_message(file, problems))
        columns = ", ".join(quote(column) for column in loaded.columns)
        table = con.sql(f"SELECT {columns} FROM {relation}").to_arrow_table()
    finally:
        backend.disconnect()
    logger.info("read %d rows for %s from %s", table.num_rows, name, file)
    return table


def _problem_message(file: Path, problems: list[tuple[int, str]]) -> str:
    # Imported here: the reasons live with the source reports, which import this
    # module's package.
    from healthscore.sources import REASONS

    lines = [f"{file} has {len(problems)} invalid rows; nothing was stored:"]
    for row, problem in problems[:MAX_LISTED_ROWS]:
        reason, column = problem.split(":", 1)
        lines.append(f"  row {row}, column {column}: {REASONS.get(reason, reason)}")
    if len(problems) > MAX_LISTED_ROWS:
        lines.append(f"  and {len(problems) - MAX_LISTED_ROWS} more")
    return "\n".join(lines)


def _store_names(project: Project) -> list[str]:
    return [n for n, s in project.config.sources.items() if is_store_source(s)]
