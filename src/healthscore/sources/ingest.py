"""Ingest files into the event store through a store source's reader settings.

`healthscore ingest --source NAME FILE...` reads each file exactly as a source with
the settings of `NAME` would read it (format or importer, columns, lookups, attribute
types and pseudonymization), checks every row, and appends the rows to the event
store. Every file is read and checked before anything is stored, so a bad file
stores nothing and the error names its file, row and column. Each file's result
counts the stored rows whose account is not in the accounts source.

For Segment and RudderStack files, the memberships that identify and group calls
declare are stored with the rows, and track calls without an account of their own
are mapped by the stored memberships too, as the web service does. Track calls
with a messageId stored before on the same days are left out.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Container, Iterable
from dataclasses import dataclass, field
from datetime import date, datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import duckdb
import pyarrow as pa
import pyarrow.compute as pc

from healthscore.config import Project
from healthscore.config.models import SourceConfig
from healthscore.config.retention import (
    is_store_source,
    numeric_columns,
)
from healthscore.engine import connect
from healthscore.importers.segment import MembershipScope, use_scope
from healthscore.sources.reader import LoadedSource, SourceError, quote, read_source
from healthscore.store.events import MEMBERSHIP_SCHEMA, EventStore, file_digest

logger = logging.getLogger(__name__)

#: Invalid rows listed in one error message; the rest are counted.
MAX_LISTED_ROWS = 10
#: Formats whose importer reads Segment-style calls with memberships and messageIds.
SEGMENT_FORMATS = ("segment", "rudderstack")
#: Unknown account ids listed in an ingest result; the rest are counted.
MAX_LISTED_ACCOUNTS = 5


class IngestError(ValueError):
    """Files that cannot be stored; nothing of them was stored."""


@dataclass
class UnknownAccounts:
    """Stored rows whose account id is not in the accounts source.

    Scoring leaves such rows out, and source reports count them as excluded, until
    the accounts source lists their account.
    """

    rows: int = 0
    """Rows stored with such an account id."""
    accounts: int = 0
    """Distinct account ids among those rows."""
    ids: list[str] = field(default_factory=list)
    """The first MAX_LISTED_ACCOUNTS of those ids, in sorted order."""


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
    duplicates: int = 0
    """Rows left out because their messageId was stored before or repeated."""
    memberships: int = 0
    """User-to-account memberships stored from the file's identify and group calls."""
    unknown_accounts: UnknownAccounts | None = None
    """Stored rows whose account is not in the accounts source. None when that
    source could not be read, so no account id was checked."""


@dataclass
class CheckedRows:
    """Rows read from one file or request, with what the Segment importer found."""

    table: pa.Table
    """Rows with the source's standard and attribute columns."""
    message_ids: list[str | None] | None = None
    """messageId per row; None for sources that are not read as Segment calls."""
    memberships: pa.Table | None = None
    """Memberships declared by identify and group calls, as MEMBERSHIP_SCHEMA."""


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

    Each append adds a part file to its days, so `apply` for every source also
    merges the parts of the recorded days that are before today (in the project's
    time zone) once they have more than `store.compact_parts` parts. Today keeps
    receiving rows, so only its newest parts below RECENT_PART_BYTES are merged
    (`EventStore.compact_recent`): each merge then rewrites recent rows only.
    """

    def __init__(self, project: Project) -> None:
        self.project = project
        self.store = event_store(project)
        self._lock = threading.Lock()
        self._days: dict[str, set[date]] = {}
        # Days that received rows, kept until they are before today and compacted.
        self._to_compact: dict[str, set[date]] = {}
        self.applied_at = time.monotonic()

    def add(self, source: str, days: Iterable[date]) -> None:
        """Record that rows of `source` were appended to `days` without rollup."""
        days = set(days)
        with self._lock:
            self._days.setdefault(source, set()).update(days)
            self._to_compact.setdefault(source, set()).update(days)

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
            self.compact(project_today(self.project))
            self.applied_at = time.monotonic()
        if failure is not None:
            raise failure
        return changed

    def compact(self, today: date) -> dict[str, dict[date, int]]:
        """Merge the parts of recorded days before `today` that have too many.

        Returns the parts merged per compacted day, per source. A source whose
        compaction fails keeps its days for the next call, and the error is logged.
        """
        max_parts = self.project.config.store.compact_parts
        with self._lock:
            due = {
                source: {day for day in days if day < today}
                for source, days in self._to_compact.items()
            }
            for source, days in due.items():
                self._to_compact[source] -= days
            receiving = [
                source for source, days in self._to_compact.items() if today in days
            ]
        compacted: dict[str, dict[date, int]] = {}
        for source in receiving:
            try:
                count = self.store.compact_recent(
                    source, today, max_parts, RECENT_PART_BYTES
                )
            except (OSError, ValueError) as exc:
                logger.error(
                    "merging today's new parts of %s failed (%s: %s); trying again "
                    "at the next rollup update",
                    source,
                    type(exc).__name__,
                    exc,
                )
                continue
            if count:
                compacted.setdefault(source, {})[today] = count
        for source, days in due.items():
            if not days:
                continue
            try:
                merged = self.store.compact(source, max_parts, days=days, before=today)
            except (OSError, ValueError) as exc:
                with self._lock:
                    self._to_compact.setdefault(source, set()).update(days)
                logger.error(
                    "compacting %d days of %s failed (%s: %s); trying again at the "
                    "next rollup update",
                    len(days),
                    source,
                    type(exc).__name__,
                    exc,
                )
                continue
            if merged:
                compacted.setdefault(source, {}).update(merged)
        return compacted


#: Size below which a part of today counts as new and is merged with the other new
#: parts. Rows of the service benchmark's project took about 10 bytes each in a
#: merged part, so 1 MiB contains about 100 s of rows at 1,000 events a second.
RECENT_PART_BYTES = 1 << 20


def project_today(project: Project) -> date:
    """Return today's date in the project's time zone."""
    return datetime.now(ZoneInfo(project.config.timezone)).date()


def compact_store(
    project: Project,
    sources: list[str] | None = None,
    *,
    max_parts: int | None = None,
    before: date | None = None,
) -> dict[str, dict[date, int]]:
    """Merge the raw parts of every day with more than `max_parts` parts into one.

    `max_parts` defaults to `store.compact_parts` and `sources` to every store
    source. Only days before `before` are merged when it is given.

    Returns
    -------
    dict
        Per source, the parts merged per compacted day.
    """
    names = sources if sources is not None else _store_names(project)
    for name in names:
        settings = project.config.sources.get(name)
        if settings is None or not is_store_source(settings):
            raise IngestError(
                f"{name!r} is not a store source; the store sources are "
                f"{', '.join(_store_names(project)) or 'none'}"
            )
    limit = project.config.store.compact_parts if max_parts is None else max_parts
    store = event_store(project)
    return {name: store.compact(name, limit, before=before) for name in names}


def ingest_files(project: Project, name: str, files: list[Path]) -> list[IngestedFile]:
    """Read, check and append `files` to store source `name`, all of them or none.

    Returns one result per file. Each counts the stored rows whose account is not
    in the accounts source, which scoring leaves out until that source lists them.

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
    store = event_store(project)
    # One scope for every file, so a file's track calls are mapped by the
    # memberships of the files before it, as if those had been stored already.
    scope = membership_scope(project, name, store) if is_segment(source) else None
    checked = []
    for file in files:
        checked.append((file, read_file_rows(project, name, file, scope)))
        if scope is not None:
            scope.remember(scope.declared)

    known = _known_accounts(project)
    numeric = numeric_columns(source)
    results = []
    for file, rows in checked:
        added = 0
        if rows.memberships is not None and rows.memberships.num_rows:
            added = store.add_memberships(name, rows.memberships)
        stored = store.append(
            name,
            rows.table,
            numeric=numeric,
            batch_id=file_digest(file),
            origin=str(file),
            message_ids=rows.message_ids,
        )
        unknown = None
        if known is not None:
            # Only the rows stored: none of a skipped file, and no row left out
            # as a repeated messageId.
            table = rows.table.slice(0, 0) if stored.skipped else rows.table
            if stored.kept is not None:
                table = table.filter(pa.array(stored.kept, pa.bool_()))
            unknown = find_unknown_accounts(table, known)
        results.append(
            IngestedFile(
                file=str(file),
                rows=stored.rows,
                days=stored.raw_days,
                rollup_only_days=stored.rollup_only_days,
                skipped=stored.skipped,
                duplicates=stored.duplicates,
                memberships=added,
                unknown_accounts=unknown,
            )
        )
    return results


def find_unknown_accounts(table: pa.Table, known: Container[str]) -> UnknownAccounts:
    """Count the rows of `table` whose `account_id` is not in `known`.

    The distinct ids are looked up in `known` one by one, so `known` may be any
    container with fast membership, such as a set or a pandas Index.
    """
    if table.num_rows == 0:
        return UnknownAccounts()
    accounts = pc.cast(table["account_id"], pa.string())
    distinct = pc.unique(accounts).drop_null().to_pylist()
    ids = sorted(account for account in distinct if account not in known)
    if not ids:
        return UnknownAccounts()
    rows = pc.sum(pc.is_in(accounts, value_set=pa.array(ids, pa.string()))).as_py()
    return UnknownAccounts(
        rows=int(rows or 0), accounts=len(ids), ids=ids[:MAX_LISTED_ACCOUNTS]
    )


def _known_accounts(project: Project) -> set[str] | None:
    """Return the usable account ids of the accounts source.

    Returns None when the project has no accounts source or it cannot be read, in
    which case ingest checks no account id, because a scoring run reports that
    source's problem itself.
    """
    config = project.config
    if not config.sources_of_kind("accounts"):
        return None
    name = config.accounts_source()
    backend = connect(project)
    try:
        loaded = read_source(backend.con, project, name, config.sources[name])
        found = backend.con.execute(
            f"SELECT DISTINCT account_id FROM {quote(loaded.relation)} "
            "WHERE _problem IS NULL"
        ).fetchall()
    except SourceError as exc:
        logger.warning("account ids were not checked: %s", exc)
        return None
    finally:
        backend.disconnect()
    return {str(account) for (account,) in found}


def read_checked(project: Project, name: str, file: Path) -> pa.Table:
    """Read one file with the settings of source `name`; every row must be valid.

    Returns the rows with the source's standard and attribute columns.
    """
    return read_file_rows(project, name, file, None).table


def read_file_rows(
    project: Project, name: str, file: Path, scope: MembershipScope | None
) -> CheckedRows:
    """Read one file like `read_checked`, inside `scope` when one is given."""
    source = project.config.sources[name]
    path = Path(file).resolve()
    if not path.is_file():
        raise IngestError(f"{file}: file not found; check the path")
    settings = source.model_copy(update={"path": str(path)})
    backend = connect(project)
    try:
        con = backend.con
        try:
            loaded = read_source_in_scope(con, project, name, settings, scope)
        except SourceError as exc:
            raise IngestError(f"{file}: {exc}") from None
        relation = quote(loaded.relation)
        value = "_value" if loaded.kept_values else "CAST(NULL AS VARCHAR)"
        problems = con.execute(
            f"SELECT _row, _problem, {value} FROM {relation} "
            "WHERE _problem IS NOT NULL ORDER BY _row"
        ).fetchall()
        if problems:
            raise IngestError(_problem_message(file, loaded, problems))
        rows = checked_rows(con, loaded, scope)
    finally:
        backend.disconnect()
    logger.info("read %d rows for %s from %s", rows.table.num_rows, name, file)
    return rows


# Segment memberships and message ids


def is_segment(settings: SourceConfig) -> bool:
    """Tell whether a source reads Segment-style calls."""
    return settings.format in SEGMENT_FORMATS


def membership_scope(project: Project, name: str, store: EventStore) -> MembershipScope:
    """Return a scope holding the memberships stored for source `name`."""
    scope = MembershipScope(
        user_key=user_key_function(project),
        earlier_user_key=earlier_user_key_function(project),
    )
    stored = store.read_memberships(name)
    if stored is not None:
        scope.remember(
            zip(
                stored["user"].to_pylist(),
                stored["account_id"].to_pylist(),
                stored["timestamp"].to_pylist(),
                strict=True,
            )
        )
    return scope


def user_key_function(project: Project) -> Callable[[str], str]:
    """Return the function that turns a user id into its stored membership key.

    When the `user` column is pseudonymized, memberships are stored under the
    user's pseudonym, so the event store keeps no raw user id there either.
    """
    key = _user_pseudonym_key(project)
    if key is None:
        return str
    # Imported here: the privacy package imports this module.
    from healthscore.privacy.pseudonymize import pseudonym

    return lambda user: pseudonym(user, key)


def earlier_user_key_function(project: Project) -> Callable[[str], str] | None:
    """Return the membership key of a user id as healthscore stored it before it
    case-folded email addresses, or None when user ids are not pseudonymized.

    Memberships stored then keep mapping the later calls of a user whose address
    has capitals, until a new identify or group call stores the current key.
    """
    key = _user_pseudonym_key(project)
    if key is None:
        return None
    from healthscore.privacy.pseudonymize import exact_pseudonym

    return lambda user: exact_pseudonym(user, key)


def _user_pseudonym_key(project: Project) -> bytes | None:
    """Return the pseudonymization key when the `user` column is pseudonymized."""
    settings = project.config.privacy.pseudonymize
    if settings is None or "user" not in settings.columns:
        return None
    from healthscore.privacy.pseudonymize import read_key

    return read_key(project, settings)


def read_source_in_scope(
    con: duckdb.DuckDBPyConnection,
    project: Project,
    name: str,
    settings: SourceConfig,
    scope: MembershipScope | None,
) -> LoadedSource:
    """Read a source with `read_source`, inside `scope` when one is given."""
    if scope is None:
        return read_source(con, project, name, settings)
    with use_scope(scope):
        return read_source(con, project, name, settings)


def checked_rows(
    con: duckdb.DuckDBPyConnection, loaded: LoadedSource, scope: MembershipScope | None
) -> CheckedRows:
    """Select the rows of a read source, with the messageIds and memberships found."""
    relation = quote(loaded.relation)
    columns = ", ".join(quote(column) for column in loaded.columns)
    table = con.sql(
        f"SELECT {columns}, _file, _row FROM {relation} ORDER BY _file, _row"
    ).to_arrow_table()
    files = table["_file"].to_pylist()
    lines = table["_row"].to_pylist()
    table = table.drop_columns(["_file", "_row"])
    if scope is None:
        return CheckedRows(table)
    message_ids = [
        scope.message_ids.get((str(file), int(line)))
        for file, line in zip(files, lines, strict=True)
    ]
    memberships = pa.Table.from_pylist(
        [
            {"user": user, "account_id": account, "timestamp": moment, "sequence": 0}
            for user, account, moment in scope.declared
        ],
        schema=MEMBERSHIP_SCHEMA,
    )
    return CheckedRows(table, message_ids, memberships)


def _problem_message(
    file: Path, loaded: LoadedSource, problems: list[tuple[int, str, str | None]]
) -> str:
    """List the first invalid rows of `file`, with the line of each in a CSV file."""
    # Imported here: the reasons live with the source reports, which import this
    # module's package.
    from healthscore.sources import (
        VALUE_REASONS,
        cut_value,
        describe_problem,
        expected_format,
    )

    csv = loaded.config.resolved_format() == "csv"
    rows = "row" if len(problems) == 1 else "rows"
    lines = [f"{file} has {len(problems)} invalid {rows}; nothing was stored:"]
    for row, problem, raw in problems[:MAX_LISTED_ROWS]:
        reason, column = problem.split(":", 1)
        value = expected = None
        if raw is not None and reason in VALUE_REASONS:
            value = cut_value(raw)
            kind = loaded.columns.get(column, "string")
            expected = expected_format(kind, loaded.config.timestamp_format)
        location = f"row {row:,}"
        if csv:
            # NOTE: a quoted field that spans lines moves every later row further
            # down, so the line is exact up to the first such field only.
            location += f" (line {row + 1:,})"
        detail = describe_problem(reason, value, expected)
        lines.append(f"  {location}, column {column}: {detail}")
        if csv and raw is not None and '"' in raw:
            lines.append(
                '    the value contains a quote ("), so a quoted field may not be '
                "closed on its line; close the quote or remove it"
            )
    if len(problems) > MAX_LISTED_ROWS:
        lines.append(f"  and {len(problems) - MAX_LISTED_ROWS} more")
    return "\n".join(lines)


def _store_names(project: Project) -> list[str]:
    return [n for n, s in project.config.sources.items() if is_store_source(s)]
