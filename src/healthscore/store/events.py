"""The event store: rows that the product keeps itself, with daily rollups.

Layout, per store source::

    <events>/<source>/day=YYYY-MM-DD/part-*.parquet   raw rows of one day
    <events>/<source>/ingested.json                   content hashes of ingested batches
    <events>/<source>/memberships.parquet             user-to-account memberships
    <events>/<source>/.lock                           serialises writers
    <events>/<source>/.append-<id>.json               files of an unfinished append
    <events>/<source>/.last-append.json               journal of the latest ended append
    <daily>/<source>/day=YYYY-MM-DD/rollup.parquet    rollup of the day, per account
    <daily>/<source>/day=YYYY-MM-DD/purged.json       present once the raw day is purged

Every file is written under a temporary name, synced and renamed into place, so a
reader finds a part or a rollup whole or not at all. An append names its parts after
its id and lists them, with the rollups it replaces, in a journal before the first
rename. Until the append is complete (see `EventStore._commit_append`) the next
writer of the source rolls it back, so a retry after a crash stores every row once.
Readers take no lock. They leave out the parts of an append whose journal remains
and is not complete, and read each rollup that it replaced as the rollback restores
it (see `EventStore.rollup_snapshot`). So `read_raw`, `read_rollup`, `raw_files` and
the sources of `healthscore.sources.stored` see the store as of its last complete
append, also after a crash and before the next writer.

The rollup of a day is computed again from all of the day's raw parts whenever the
day changes, so a rollup left stale by a crash is repaired by the next append or
erasure. An append with
`rollup=False` leaves that to a later `rebuild_rollups`, as the web service does to
keep the work off its requests. A day is purged only when its rollup counts exactly
the rows of its raw parts.

`append` takes an Arrow table or a DataFrame, so the command line (`healthscore
ingest`) and a service that receives events use the same code. Given message ids, it
stores each id in the `_message_id` column of the raw part and skips rows whose id
was stored before on the days that the append touches (see `append`).

Every append adds one part file to each day it touches. `compact` merges the parts of
a day into one, swapping the day folder in with the same staged renames as an
erasure, so an interrupted merge leaves the old parts or the merged one, never both.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import shutil
import threading
import uuid
from collections import OrderedDict
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any, TypeVar

import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None  # type: ignore[assignment]

logger = logging.getLogger(__name__)

DAY_PREFIX = "day="
ROLLUP_FILE = "rollup.parquet"
PURGED_FILE = "purged.json"
MANIFEST_FILE = "ingested.json"
MEMBERSHIPS_FILE = "memberships.parquet"
LOCK_FILE = ".lock"
#: Name start of the journal that an append writes before it renames its files.
JOURNAL_PREFIX = ".append-"
#: The journal of the last append that was completed or rolled back, renamed so.
#: Readers compare it before and after they list the files (see `_read_complete`).
LAST_APPEND_FILE = ".last-append.json"
#: Times a reader lists the files of a source before it gives up waiting for a
#: moment in which no append ends.
READ_ATTEMPTS = 5
#: Column of the raw parts that keeps the message id of each row, when it has one.
MESSAGE_ID_COLUMN = "_message_id"
#: Columns of the memberships table: a user key, its account, the time of the call
#: that declared it (null when the call had none) and the order of storing.
MEMBERSHIP_SCHEMA = pa.schema(
    [
        ("user", pa.string()),
        ("account_id", pa.string()),
        ("timestamp", pa.timestamp("us")),
        ("sequence", pa.int64()),
    ]
)
#: Days whose stored message ids an EventStore keeps in memory, most recent use first.
MESSAGE_CACHE_DAYS = 8

# Folders of a day that is being purged, replaced or staged; never read as data.
_PURGING = ".purging-"
_OLD = ".old-"
_NEW = ".new-"

FrameEdit = Callable[[pd.DataFrame], tuple[pd.DataFrame, int]]
#: Journal entries of the appends that are not complete, by append id. An entry is
#: None when its journal was removed before the reader could read it.
Unfinished = dict[str, dict[str, Any] | None]
_Read = TypeVar("_Read")


class EventStoreError(ValueError):
    """Rows that cannot be stored, or a store folder that cannot be used."""


@dataclass
class AppendResult:
    """Rows stored by one append, per day."""

    rows: int
    raw_days: list[date] = field(default_factory=list)
    """Days that received raw rows."""
    rollup_only_days: list[date] = field(default_factory=list)
    """Days already purged, whose new rows went into the rollup only."""
    skipped: bool = False
    """Whether the batch had been stored before and was skipped."""
    duplicates: int = 0
    """Rows left out because their message id was stored before or repeated."""
    kept: list[bool] | None = None
    """Per given row, whether it was stored; None when no message ids were given."""


@dataclass
class RollupSnapshot:
    """The rollups of a source as of its last complete append."""

    files: list[str] = field(default_factory=list)
    """Rollup files to read, by day. Each is the day's rollup file or, for a purged
    day whose rollup an unfinished append replaced, the backup of the earlier one."""
    computed: dict[date, pa.Table] = field(default_factory=dict)
    """Rollups computed from the raw parts of complete appends, for the days without
    a purge whose rollup an unfinished append replaced."""


@dataclass
class PurgeResult:
    """Raw days purged, or with a dry run that would be, and days kept by a check."""

    source: str
    cutoff: date
    purged: dict[date, int] = field(default_factory=dict)
    """Raw rows per purged day."""
    kept: dict[date, str] = field(default_factory=dict)
    """Days older than the cutoff that were kept, with the reason."""


def day_folder_name(day: date) -> str:
    """Return the Hive-style folder name of a day."""
    return f"{DAY_PREFIX}{day.isoformat()}"


def rollup_table(table: pa.Table, numeric: list[str]) -> pa.Table:
    """Aggregate raw rows to one row per account and day.

    Columns: account_id, day, rows, first_timestamp, last_timestamp and, per numeric
    column present, `<column>_sum`, `_min` and `_max` (null when the day has no
    value). The day is the calendar day of the naive (project-zone) timestamp.
    """
    present = [column for column in numeric if column in table.column_names]
    days = pc.cast(table["timestamp"], pa.date32())
    keyed = pa.table(
        {
            "account_id": table["account_id"],
            "day": days,
            "timestamp": table["timestamp"],
            **{column: pc.cast(table[column], pa.float64()) for column in present},
        }
    )
    aggregations: list[tuple[str, str]] = [
        ("timestamp", "count"),
        ("timestamp", "min"),
        ("timestamp", "max"),
    ]
    for column in present:
        aggregations += [(column, "sum"), (column, "min"), (column, "max")]
    grouped = keyed.group_by(["account_id", "day"]).aggregate(aggregations)
    columns: dict[str, pa.Array | pa.ChunkedArray] = {
        "account_id": grouped["account_id"],
        "day": grouped["day"],
        "rows": pc.cast(grouped["timestamp_count"], pa.int64()),
        "first_timestamp": grouped["timestamp_min"],
        "last_timestamp": grouped["timestamp_max"],
    }
    for column in present:
        for statistic in ("sum", "min", "max"):
            columns[f"{column}_{statistic}"] = grouped[f"{column}_{statistic}"]
    result = pa.table(columns)
    return result.sort_by([("day", "ascending"), ("account_id", "ascending")])


def merge_rollups(tables: list[pa.Table]) -> pa.Table:
    """Combine rollups of the same days into one: counts and sums add up."""
    combined = pa.concat_tables(tables, promote_options="default")
    statistics = [
        c for c in combined.column_names if c.endswith(("_sum", "_min", "_max"))
    ]
    aggregations: list[tuple[str, str]] = [
        ("rows", "sum"),
        ("first_timestamp", "min"),
        ("last_timestamp", "max"),
    ]
    aggregations += [(c, c.rsplit("_", 1)[1]) for c in statistics]
    grouped = combined.group_by(["account_id", "day"]).aggregate(aggregations)
    columns: dict[str, Any] = {
        "account_id": grouped["account_id"],
        "day": grouped["day"],
        "rows": grouped["rows_sum"],
        "first_timestamp": grouped["first_timestamp_min"],
        "last_timestamp": grouped["last_timestamp_max"],
    }
    for column in statistics:
        columns[column] = grouped[f"{column}_{column.rsplit('_', 1)[1]}"]
    return pa.table(columns).sort_by(
        [("day", "ascending"), ("account_id", "ascending")]
    )


class EventStore:
    """Raw rows and daily rollups of the store sources of one project.

    Parameters
    ----------
    events_folder : Path
        Folder of the raw day partitions (``store.events``).
    daily_folder : Path
        Folder of the daily rollups (``store.daily``).
    """

    def __init__(self, events_folder: Path, daily_folder: Path) -> None:
        self.events_folder = Path(events_folder)
        self.daily_folder = Path(daily_folder)
        # (source, day) -> (names of the parts read, message ids found in them).
        # Part files are never changed in place, so a name's ids stay valid.
        self._message_cache: OrderedDict[
            tuple[str, date], tuple[frozenset[str], set[str]]
        ] = OrderedDict()
        self._cache_guard = threading.Lock()

    def __repr__(self) -> str:
        return f"EventStore({str(self.events_folder)!r}, {str(self.daily_folder)!r})"

    # Paths and reading

    def sources(self) -> list[str]:
        """Return the sources that have raw rows or rollups stored."""
        names: set[str] = set()
        for folder in (self.events_folder, self.daily_folder):
            if folder.is_dir():
                # Dot folders hold the service's rescore notices, not a source.
                names |= {
                    p.name
                    for p in folder.iterdir()
                    if p.is_dir() and not p.name.startswith(".")
                }
        return sorted(names)

    def raw_days(self, source: str) -> list[date]:
        """Return the days with raw rows, oldest first."""
        return _days_in(self.events_folder / source)

    def rollup_days(self, source: str) -> list[date]:
        """Return the days with a rollup, oldest first."""
        folder = self.daily_folder / source
        return [d for d in _days_in(folder) if self._rollup_path(source, d).is_file()]

    def lagging_rollup_days(self, source: str) -> list[date]:
        """Return the raw days whose rollup is missing or counts other rows.

        The row counts come from the parts' Parquet footers, so no rows are read.
        A day appended without its rollup (by the service) stays lagging until its
        rollup is computed again, also when the process stopped before that.
        """
        purged = set(self.purged_days(source))
        lagging = []
        for day in self.raw_days(source):
            if day in purged:
                continue
            raw = sum(
                pq.read_metadata(part).num_rows for part in self._parts(source, day)
            )
            path = self._rollup_path(source, day)
            counted = (
                pc.sum(pq.read_table(path, columns=["rows"])["rows"]).as_py() or 0
                if path.is_file()
                else None
            )
            if counted != raw:
                lagging.append(day)
        return lagging

    def purged_days(self, source: str) -> list[date]:
        """Return the days whose raw rows were purged, oldest first."""
        folder = self.daily_folder / source
        return [
            d
            for d in _days_in(folder)
            if (self._rollup_dir(source, d) / PURGED_FILE).is_file()
        ]

    def raw_files(self, source: str) -> list[str]:
        """Return the raw part files of the complete appends of a source.

        The files are sorted by day and name. Parts of an unfinished append are left
        out, as `read_raw` leaves them out.
        """
        parts = self._read_complete(
            source, lambda unfinished: self._complete_parts(source, unfinished)
        )
        return [str(part) for part in parts]

    def rollup_snapshot(self, source: str) -> RollupSnapshot:
        """Return the rollup files of a source, and rollups computed in their place.

        A rollup that an unfinished append replaced is read as the rollback of the
        append restores it. For a purged day that is the backup of the earlier
        rollup. For another day it is computed from the day's raw parts without the
        append's, in `RollupSnapshot.computed`. When no append is unfinished, only
        the rollup files are listed.
        """
        return self._read_complete(
            source, lambda unfinished: self._snapshot_rollups(source, unfinished)
        )

    def rollup_files(self, source: str) -> list[str]:
        """Return the rollup files of a source as of its last complete append, by day.

        Days whose rollup is computed from raw parts (see `rollup_snapshot`) have no
        file here, and `read_rollup` includes them.
        """
        return self.rollup_snapshot(source).files

    def read_raw(self, source: str, day: date | None = None) -> pa.Table | None:
        """Read the raw rows of one day, or of every day; None when there are none.

        Rows of an unfinished append are left out.
        """
        days = None if day is None else [day]

        def read(unfinished: Unfinished) -> list[pa.Table]:
            parts = self._complete_parts(source, unfinished, days)
            return [pq.read_table(part) for part in parts]

        tables = self._read_complete(source, read)
        if not tables:
            return None
        return pa.concat_tables(tables, promote_options="default")

    def read_rollup(self, source: str, day: date | None = None) -> pa.Table | None:
        """Read the rollup of one day, or of every day; None when there is none.

        Each rollup is read as of the last complete append (see `rollup_snapshot`).
        """
        days = None if day is None else [day]

        def read(unfinished: Unfinished) -> list[pa.Table]:
            snapshot = self._snapshot_rollups(source, unfinished, days)
            by_day = [(_folder_day(Path(f)), pq.read_table(f)) for f in snapshot.files]
            by_day += list(snapshot.computed.items())
            return [table for _, table in sorted(by_day, key=lambda item: item[0])]

        tables = self._read_complete(source, read)
        if not tables:
            return None
        return pa.concat_tables(tables, promote_options="default")

    def _read_complete(self, source: str, read: Callable[[Unfinished], _Read]) -> _Read:
        """Call `read` with the unfinished appends of `source`, again if one ended.

        Every append that ends, completed or rolled back, renames its journal to
        LAST_APPEND_FILE. So when that file is the same after `read` as before, and
        no journal appeared, no append renamed or deleted a file that `read` listed.
        A file deleted while `read` runs (by a rollback, a compaction or an erasure)
        also makes it read again.
        """
        marker = self.events_folder / source / LAST_APPEND_FILE
        for attempt in range(1, READ_ATTEMPTS + 1):
            last = _read_marker(marker)
            journals = self._journal_ids(source)
            unfinished = self._unfinished_appends(source, journals) if journals else {}
            try:
                result = read(unfinished)
            except FileNotFoundError:
                if attempt == READ_ATTEMPTS:
                    raise
                continue
            if _read_marker(marker) == last and self._journal_ids(source) <= journals:
                return result
        # NOTE: under a steady stream of appends this result can include some days
        # of an append that ended while the files were listed.
        logger.warning(
            "appends to %s ended while its files were read %d times; using the last "
            "read",
            source,
            READ_ATTEMPTS,
        )
        return result

    def _journal_ids(self, source: str) -> set[str]:
        """Return the ids of the appends whose journal is in the source folder."""
        try:
            names = os.listdir(self.events_folder / source)
        except (FileNotFoundError, NotADirectoryError):
            return set()
        return {
            name.removeprefix(JOURNAL_PREFIX).removesuffix(".json")
            for name in names
            if name.startswith(JOURNAL_PREFIX) and name.endswith(".json")
        }

    def _unfinished_appends(self, source: str, journals: set[str]) -> Unfinished:
        """Read the journals of `journals` and return those of unfinished appends.

        An append with a batch id is complete once the batch is in `ingested.json`,
        even while its journal remains.
        """
        manifest = self._manifest(source)
        unfinished: Unfinished = {}
        for append_id in sorted(journals):
            journal = self.events_folder / source / f"{JOURNAL_PREFIX}{append_id}.json"
            try:
                entry = _read_journal(journal)
            except FileNotFoundError:
                unfinished[append_id] = None  # it ended, so _read_complete reads again
                continue
            batch_id = entry.get("batch_id")
            if batch_id is None or batch_id not in manifest:
                unfinished[append_id] = entry
        return unfinished

    def _complete_parts(
        self, source: str, unfinished: Unfinished, days: list[date] | None = None
    ) -> list[Path]:
        """List the raw parts of `days` (default every raw day) not in `unfinished`.

        The name of each part of an append ends with the append's id.
        """
        endings = tuple(f"-{append_id}.parquet" for append_id in unfinished)
        parts: list[Path] = []
        for day in self.raw_days(source) if days is None else days:
            parts += [
                p for p in self._parts(source, day) if not p.name.endswith(endings)
            ]
        return parts

    def _snapshot_rollups(
        self, source: str, unfinished: Unfinished, days: list[date] | None = None
    ) -> RollupSnapshot:
        """Build the RollupSnapshot of `days` (default every day with a rollup)."""
        restored: dict[date, Path] = {}
        numeric_of: dict[date, list[str]] = {}
        for append_id, entry in unfinished.items():
            if entry is None:
                continue
            for text in entry["rollups"]:
                day = date.fromisoformat(text)
                if day in restored or day in numeric_of:
                    continue
                if text not in entry["backups"]:
                    numeric_of[day] = entry["numeric"]
                    continue
                backup = self._rollup_dir(source, day) / _backup_name(append_id)
                # A rollback that stopped part way has moved some backups back.
                restored[day] = (
                    backup if backup.is_file() else self._rollup_path(source, day)
                )
        if days is None:
            selected = set(self.rollup_days(source)) | set(restored) | set(numeric_of)
        else:
            selected = set(days)
        snapshot = RollupSnapshot()
        for day in sorted(selected):
            if day in numeric_of:
                parts = self._complete_parts(source, unfinished, [day])
                if parts:
                    raw = pa.concat_tables(
                        [pq.read_table(part) for part in parts],
                        promote_options="default",
                    )
                    snapshot.computed[day] = rollup_table(raw, numeric_of[day])
                continue
            path = restored.get(day, self._rollup_path(source, day))
            if path.is_file():
                snapshot.files.append(str(path))
        return snapshot

    def _stored_raw(self, source: str, day: date) -> pa.Table | None:
        """Read every raw part of a day; for writers, which hold the lock."""
        tables = [pq.read_table(part) for part in self._parts(source, day)]
        if not tables:
            return None
        return pa.concat_tables(tables, promote_options="default")

    def _stored_rollup(self, source: str, day: date) -> pa.Table | None:
        """Read the rollup file of a day; for writers, which hold the lock."""
        path = self._rollup_path(source, day)
        return pq.read_table(path) if path.is_file() else None

    def batch_stored(self, source: str, batch_id: str) -> bool:
        """Tell whether a batch with this id (a content hash) was stored before."""
        return batch_id in self._manifest(source)

    def ingested_batches(self, source: str) -> dict[str, dict[str, Any]]:
        """Return the entries of `ingested.json` by batch id: origin, rows, stored_at.

        Raises
        ------
        EventStoreError
            When `ingested.json` is not valid JSON or not an object of entries.
        """
        return self._manifest(source)

    # Writing

    def append(
        self,
        source: str,
        rows: pa.Table | pd.DataFrame,
        *,
        numeric: list[str],
        batch_id: str | None = None,
        origin: str = "",
        rollup: bool = True,
        message_ids: Sequence[str | None] | None = None,
    ) -> AppendResult:
        """Append checked rows to the raw days of `source` and update their rollups.

        Parameters
        ----------
        source : str
            Name of the store source.
        rows : pyarrow.Table or pandas.DataFrame
            Rows with the source's standard and attribute columns, at least
            ``account_id`` (text) and ``timestamp`` (naive, in the project's zone).
        numeric : list of str
            Numeric columns to sum, minimise and maximise in the rollup.
        batch_id : str, optional
            Identity of the batch, such as a file's SHA-256. A batch stored before is
            skipped, so ingesting the same file twice does not double its rows.
        origin : str
            What the rows came from, kept with the batch id.
        rollup : bool
            Whether to compute the rollups of the days with raw rows again now.
            Without it they count only the earlier rows until `rebuild_rollups`
            runs for those days. Rows of a purged day always go into its rollup.
        message_ids : sequence of str or None, optional
            One id per row, such as a Segment messageId, or None for a row without
            one. A row is left out when an earlier row of `rows` has the same id,
            or when a raw part of any day that `rows` fall on holds it. Raw days
            that were purged no longer hold their ids, so a row sent again for a
            purged day is counted twice in its rollup.

        Raises
        ------
        EventStoreError
            When a required column is missing or has an empty value, or the
            message ids are not one per row; nothing is stored then.
        """
        table = _as_table(rows)
        _check_rows(source, table)
        ids = _message_id_array(source, table, message_ids)
        with self._lock(source):
            self._recover(source)
            if batch_id is not None and batch_id in self._manifest(source):
                return AppendResult(rows=0, skipped=True)
            kept: list[bool] | None = None
            if ids is not None:
                keep = self._new_messages(source, table, ids)
                table = table.append_column(MESSAGE_ID_COLUMN, ids).filter(keep)
                kept = keep.to_pylist()
            result = AppendResult(
                rows=table.num_rows,
                duplicates=0 if kept is None else kept.count(False),
                kept=kept,
            )
            if table.num_rows == 0:
                if batch_id is not None:
                    self._record_batch(source, batch_id, origin, 0)
                return result
            purged = set(self.purged_days(source))
            days = pc.cast(table["timestamp"], pa.date32())
            append_id = uuid.uuid4().hex[:12]
            # Every file is written under a temporary name first, so rows that cannot
            # be stored (such as a column whose type changed) store nothing at all.
            staged: list[tuple[Path, Path]] = []
            backups: list[Path] = []
            try:
                for day in sorted(set(days.to_pylist())):
                    part = table.filter(pc.equal(days, pa.scalar(day, pa.date32())))
                    if day in purged:
                        staged += self._stage_rollup_merge(source, day, part, numeric)
                        backups += self._back_up_rollup(source, day, append_id)
                        result.rollup_only_days.append(day)
                    else:
                        staged += self._stage_day(
                            source, day, part, numeric, rollup=rollup, name=append_id
                        )
                        result.raw_days.append(day)
            except BaseException:
                for temporary, _ in staged:
                    temporary.unlink(missing_ok=True)
                for backup in backups:
                    backup.unlink(missing_ok=True)
                self._remove_empty_folders(source, set(days.to_pylist()))
                raise
            self._commit_append(
                source,
                append_id,
                staged,
                backups,
                numeric,
                batch=None if batch_id is None else (batch_id, origin, table.num_rows),
            )
            if ids is not None:
                self._cache_new_parts(source, table, [target for _, target in staged])
        logger.info(
            "stored %d rows of %s from %s in %d days (%d duplicates left out)",
            table.num_rows,
            source,
            origin or "a table",
            len(result.raw_days) + len(result.rollup_only_days),
            result.duplicates,
        )
        return result

    def _new_messages(
        self, source: str, table: pa.Table, ids: pa.Array
    ) -> pa.BooleanArray:
        """Mark the rows whose message id is neither repeated nor stored before."""
        days = set(pc.cast(table["timestamp"], pa.date32()).to_pylist())
        stored: set[str] = set()
        for day in sorted(days):
            stored |= self._stored_message_ids(source, day)
        seen: set[str] = set()
        keep = []
        for message_id in ids.to_pylist():
            if message_id is None:
                keep.append(True)
                continue
            keep.append(message_id not in stored and message_id not in seen)
            seen.add(message_id)
        return pa.array(keep, pa.bool_())

    def _cache_new_parts(
        self, source: str, table: pa.Table, targets: list[Path]
    ) -> None:
        """Add the ids of parts just written to the days already in the cache."""
        days = pc.cast(table["timestamp"], pa.date32()).to_pylist()
        by_day: dict[date, set[str]] = {}
        for day, message_id in zip(
            days, table[MESSAGE_ID_COLUMN].to_pylist(), strict=True
        ):
            if message_id is not None:
                by_day.setdefault(day, set()).add(message_id)
        with self._cache_guard:
            for target in targets:
                if not target.name.startswith("part-"):
                    continue  # a rollup
                day = date.fromisoformat(target.parent.name.removeprefix(DAY_PREFIX))
                cached = self._message_cache.get((source, day))
                if cached is None:
                    continue  # the next append of the day reads every part
                names, ids = cached
                ids |= by_day.get(day, set())
                self._message_cache[(source, day)] = (names | {target.name}, ids)

    def _cache_merged_parts(
        self, source: str, day: date, parts: list[Path], merged: str
    ) -> None:
        """Name the merged part in place of its parts in the day's message id cache.

        The merged part contains the same ids as its parts, so the next append of the
        day does not read every part again.
        """
        with self._cache_guard:
            cached = self._message_cache.get((source, day))
            replaced = {part.name for part in parts}
            if cached is None or not replaced <= cached[0]:
                return
            names, ids = cached
            self._message_cache[(source, day)] = ((names - replaced) | {merged}, ids)

    def _stored_message_ids(self, source: str, day: date) -> set[str]:
        """Return the message ids in the raw parts of a day; call under the lock.

        Only parts not read before are read, so appends to a day with many parts
        read one small file each.
        """
        # NOTE: the cache keeps every id of up to MESSAGE_CACHE_DAYS days in memory,
        # an estimated 100 bytes per 36-character id in a Python set.
        parts = {path.name: path for path in self._parts(source, day)}
        key = (source, day)
        with self._cache_guard:
            names, ids = self._message_cache.pop(key, (frozenset(), set()))
        if not names <= set(parts):
            # A part was replaced by a compaction or an erasure: read every part.
            names, ids = frozenset(), set()
        for name in sorted(set(parts) - names):
            ids |= _read_message_ids(parts[name])
        with self._cache_guard:
            self._message_cache[key] = (frozenset(parts), ids)
            while len(self._message_cache) > MESSAGE_CACHE_DAYS:
                self._message_cache.popitem(last=False)
        return ids

    def _remove_empty_folders(self, source: str, days: set[date]) -> None:
        """Remove the day folders that a failed append created and left empty."""
        folders = [self._day_dir(source, day) for day in days]
        folders += [self._rollup_dir(source, day) for day in days]
        folders.append(self.daily_folder / source)
        for folder in folders:
            with contextlib.suppress(OSError):
                folder.rmdir()  # fails, as it should, unless the folder is empty

    def _stage_day(
        self,
        source: str,
        day: date,
        part: pa.Table,
        numeric: list[str],
        *,
        rollup: bool = True,
        name: str = "",
    ) -> list[tuple[Path, Path]]:
        """Write a new raw part, and with `rollup` the day's new rollup, staged.

        `name` is the append id that the part's name ends with.
        """
        folder = self._day_dir(source, day)
        folder.mkdir(parents=True, exist_ok=True)
        target = folder / _part_name(name)
        if not rollup:
            self._check_fits_last_part(source, day, part)
            return [(_write_temporary(target, part), target)]
        staged = [(_write_temporary(target, part), target)]
        try:
            existing = [pq.read_table(p) for p in self._parts(source, day)]
            try:
                all_rows = pa.concat_tables(
                    [*existing, part], promote_options="default"
                )
            except (pa.ArrowInvalid, pa.ArrowTypeError) as exc:
                raise EventStoreError(
                    f"rows for {source!r} on {day} do not fit the columns stored "
                    f"before: {exc}; convert them to the stored types"
                ) from None
            rollup = rollup_table(all_rows, numeric)
            staged.append(self._stage_rollup(source, day, rollup))
        except BaseException:
            staged[0][0].unlink(missing_ok=True)
            raise
        return staged

    def _check_fits_last_part(self, source: str, day: date, part: pa.Table) -> None:
        """Raise EventStoreError when `part` does not fit the day's newest part.

        Only the newest part is read, so the check costs the same however many parts
        the day has. It is exact when every part has the same columns, as the parts
        of one source stored by the service have.
        """
        parts = self._parts(source, day)
        if not parts:
            return
        try:
            pa.unify_schemas([pq.read_schema(parts[-1]), part.schema])
        except (pa.ArrowInvalid, pa.ArrowTypeError) as exc:
            raise EventStoreError(
                f"rows for {source!r} on {day} do not fit the columns stored "
                f"before: {exc}; convert them to the stored types"
            ) from None

    def _stage_rollup_merge(
        self, source: str, day: date, part: pa.Table, numeric: list[str]
    ) -> list[tuple[Path, Path]]:
        """Stage the rollup of a purged day with the new rows added to it."""
        current = self._stored_rollup(source, day)
        added = rollup_table(part, numeric)
        merged = added if current is None else merge_rollups([current, added])
        return [self._stage_rollup(source, day, merged)]

    def _back_up_rollup(self, source: str, day: date, append_id: str) -> list[Path]:
        """Hard-link the rollup of a day under a name of the append; [] if none."""
        path = self._rollup_path(source, day)
        if not path.is_file():
            return []
        backup = path.with_name(_backup_name(append_id))
        backup.unlink(missing_ok=True)
        os.link(path, backup)
        _fsync_directory(path.parent)
        return [backup]

    def _commit_append(
        self,
        source: str,
        append_id: str,
        staged: list[tuple[Path, Path]],
        backups: list[Path],
        numeric: list[str],
        *,
        batch: tuple[str, str, int] | None,
    ) -> None:
        """Rename the staged files of an append into place, all or none of them.

        A journal listing the files goes first. The append is complete once its
        batch is recorded in `ingested.json` or, without a batch id, once the
        journal is removed. Until then `_recover` rolls the append back: it deletes
        the new raw parts, computes the rollups of raw days again from the parts
        that remain and restores the rollups of purged days from their backups.
        """
        journal = self.events_folder / source / f"{JOURNAL_PREFIX}{append_id}.json"
        entry: dict[str, Any] = {
            "id": append_id,
            "batch_id": None if batch is None else batch[0],
            "numeric": numeric,
            "parts": [],
            "rollups": [],
            "backups": [p.parent.name.removeprefix(DAY_PREFIX) for p in backups],
        }
        for _, target in staged:
            day = target.parent.name.removeprefix(DAY_PREFIX)
            key = "parts" if target.name.startswith("part-") else "rollups"
            entry[key].append(day if key == "rollups" else f"{day}/{target.name}")
        try:
            _write_text_atomic(journal, json.dumps(entry, indent=1))
            for temporary, target in staged:
                os.replace(temporary, target)
                _fsync_directory(target.parent)
            if batch is not None:
                self._record_batch(source, *batch)
        except BaseException:
            for temporary, _ in staged:
                temporary.unlink(missing_ok=True)
            if journal.is_file():
                self._roll_back_append(source, journal)
            else:
                for backup in backups:
                    backup.unlink(missing_ok=True)
                self._remove_empty_folders(
                    source, {_folder_day(target) for _, target in staged}
                )
            raise
        _end_journal(journal)
        for backup in backups:
            backup.unlink(missing_ok=True)

    def _finish_appends(self, source: str) -> None:
        """Roll back each append whose journal remains and that is not complete."""
        manifest: dict[str, Any] | None = None
        for journal in sorted((self.events_folder / source).glob(JOURNAL_PREFIX + "*")):
            entry = _read_journal(journal)
            if manifest is None:
                manifest = self._manifest(source)
            if entry.get("batch_id") is None or entry["batch_id"] not in manifest:
                self._roll_back_append(source, journal)
            else:
                _end_journal(journal)

    def _roll_back_append(self, source: str, journal: Path) -> None:
        """Undo the renames of the append that `journal` lists, then remove it."""
        entry = json.loads(journal.read_text(encoding="utf-8"))
        append_id = journal.stem.removeprefix(JOURNAL_PREFIX)
        for name in entry["parts"]:
            part = self.events_folder / source / (DAY_PREFIX + name)
            part.unlink(missing_ok=True)
        for text in entry["rollups"]:
            day = date.fromisoformat(text)
            path = self._rollup_path(source, day)
            backup = path.with_name(_backup_name(append_id))
            if text in entry["backups"]:
                # A backup already moved back by an interrupted rollback is gone.
                if backup.is_file():
                    os.replace(backup, path)
                    _fsync_directory(path.parent)
                continue
            raw = self.read_raw(source, day)
            if raw is not None:
                self._write_rollup(source, day, rollup_table(raw, entry["numeric"]))
            else:
                path.unlink(missing_ok=True)
        days = {date.fromisoformat(n.split("/", 1)[0]) for n in entry["parts"]}
        days |= {date.fromisoformat(text) for text in entry["rollups"]}
        self._remove_empty_folders(source, days)
        _end_journal(journal)
        logger.warning(
            "rolled back an unfinished append of %d raw parts of %s (append %s)",
            len(entry["parts"]),
            source,
            append_id,
        )

    def _stage_rollup(
        self, source: str, day: date, rollup: pa.Table
    ) -> tuple[Path, Path]:
        folder = self._rollup_dir(source, day)
        folder.mkdir(parents=True, exist_ok=True)
        target = folder / ROLLUP_FILE
        return _write_temporary(target, rollup), target

    def _write_rollup(self, source: str, day: date, rollup: pa.Table) -> None:
        folder = self._rollup_dir(source, day)
        folder.mkdir(parents=True, exist_ok=True)
        target = folder / ROLLUP_FILE
        if rollup.num_rows == 0:
            target.unlink(missing_ok=True)
            return
        os.replace(_write_temporary(target, rollup), target)
        _fsync_directory(folder)

    def rebuild_rollups(
        self, source: str, numeric: list[str], days: set[date] | None = None
    ) -> list[date]:
        """Compute the rollup of every raw day (or of `days`) again.

        Returns the days whose rollup changed.
        """
        changed: list[date] = []
        with self._lock(source):
            self._recover(source)
            for day in self.raw_days(source):
                if days is not None and day not in days:
                    continue
                if day in self.purged_days(source):
                    continue
                raw = self._stored_raw(source, day)
                if raw is None:
                    continue
                fresh = rollup_table(raw, numeric)
                current = self._stored_rollup(source, day)
                if current is None or not current.equals(fresh):
                    self._write_rollup(source, day, fresh)
                    changed.append(day)
        return changed

    # Memberships

    def read_memberships(self, source: str) -> pa.Table | None:
        """Read the stored user-to-account memberships of a source; None when none.

        Columns as MEMBERSHIP_SCHEMA, in the order they were stored.
        """
        path = self._memberships_path(source)
        if not path.is_file():
            return None
        return pq.read_table(path, schema=MEMBERSHIP_SCHEMA).sort_by("sequence")

    def add_memberships(self, source: str, memberships: pa.Table) -> int:
        """Store memberships (user, account_id, timestamp) not stored before.

        A membership equal in all three values to a stored one is skipped. The
        table is written whole under a temporary name, synced and renamed, so a
        reader finds the old table or the new one.

        Returns
        -------
        int
            Memberships added.
        """
        for column in ("user", "account_id"):
            if column not in memberships.column_names:
                raise EventStoreError(
                    f"memberships for {source!r} have no {column!r} column"
                )
            if memberships[column].null_count:
                raise EventStoreError(
                    f"{memberships[column].null_count} memberships for {source!r} "
                    f"have no {column}; nothing was stored"
                )
        with self._lock(source):
            current = self.read_memberships(source)
            known: set[tuple[Any, ...]] = set()
            sequence = 0
            if current is not None and current.num_rows:
                known = set(_membership_keys(current))
                sequence = int(pc.max(current["sequence"]).as_py()) + 1
            added: list[dict[str, Any]] = []
            for key in _membership_keys(memberships):
                if key in known:
                    continue
                known.add(key)
                user, account, moment = key
                added.append(
                    {
                        "user": user,
                        "account_id": account,
                        "timestamp": moment,
                        "sequence": sequence + len(added),
                    }
                )
            if not added:
                return 0
            table = pa.Table.from_pylist(added, schema=MEMBERSHIP_SCHEMA)
            if current is not None:
                table = pa.concat_tables([current, table])
            path = self._memberships_path(source)
            os.replace(_write_temporary(path, table), path)
            _fsync_directory(path.parent)
        logger.info("stored %d memberships of %s", len(added), source)
        return len(added)

    # Compaction

    def compact(
        self,
        source: str,
        max_parts: int,
        *,
        days: set[date] | None = None,
        before: date | None = None,
    ) -> dict[date, int]:
        """Merge the raw parts of each day that has more than `max_parts` into one.

        Only `days` (default every raw day) before `before` (default no limit) are
        merged. The merged part keeps every row once, in the order the parts were
        stored, and takes the store time of the newest part into its name, so the
        rescore worker's high-water mark still finds rows stored after it. A day is
        swapped in with staged renames under the source's lock; `_recover` finishes
        or undoes a swap that a crash interrupted.

        NOTE: a reader that listed the day's parts before the swap and opens them
        after it fails with file not found, as it does after an erasure, and has to
        read again.

        Returns
        -------
        dict of date to int
            Parts merged, per compacted day.
        """
        if max_parts < 1:
            raise EventStoreError(f"max_parts is {max_parts}; give 1 or more")
        compacted: dict[date, int] = {}
        with self._lock(source):
            self._recover(source)
            for day in self.raw_days(source):
                if days is not None and day not in days:
                    continue
                if before is not None and day >= before:
                    continue
                parts = self._parts(source, day)
                if len(parts) <= max_parts:
                    continue
                self._compact_day(source, day, parts)
                compacted[day] = len(parts)
        return compacted

    def compact_recent(
        self, source: str, day: date, max_parts: int, small_bytes: int
    ) -> int:
        """Merge the newest small parts of a day that still receives rows.

        When the day has more than `max_parts` parts, its newest parts smaller than
        `small_bytes` are merged into one part, and the older parts stay as they
        are. So while rows keep arriving, each merge rewrites only recent rows,
        and a day keeps about one part per `small_bytes` of rows plus a short run
        of new ones. Returns the parts merged (0 when none were).
        """
        if max_parts < 1:
            raise EventStoreError(f"max_parts is {max_parts}; give 1 or more")
        with self._lock(source):
            self._recover(source)
            parts = self._parts(source, day)
            if len(parts) <= max_parts:
                return 0
            recent: list[Path] = []
            for part in reversed(parts):
                if part.stat().st_size >= small_bytes:
                    break
                recent.append(part)
            if len(recent) < 2:
                return 0
            recent.reverse()
            self._compact_day(source, day, recent, keep=parts[: -len(recent)])
            return len(recent)

    def _compact_day(
        self, source: str, day: date, parts: list[Path], keep: list[Path] | None = None
    ) -> None:
        tables = [pq.read_table(part) for part in parts]
        try:
            merged = pa.concat_tables(tables, promote_options="default")
        except (pa.ArrowInvalid, pa.ArrowTypeError) as exc:
            raise EventStoreError(
                f"the parts of {source!r} on {day} have conflicting column types "
                f"and cannot be merged: {exc}"
            ) from None
        expected = sum(table.num_rows for table in tables)
        if merged.num_rows != expected:  # pragma: no cover - a broken invariant
            raise EventStoreError(
                f"merging the parts of {source!r} on {day} gave {merged.num_rows} "
                f"rows instead of {expected}; the parts were kept"
            )
        name = _merged_part_name(parts[-1].name)
        self._replace_day(source, day, merged, name=name, keep=keep or [])
        self._cache_merged_parts(source, day, parts, name)
        logger.info(
            "compacted %d parts of %s on %s into one (%d rows)",
            len(parts),
            source,
            day,
            merged.num_rows,
        )

    # Retention

    def purge(self, source: str, before: date, *, dry_run: bool = False) -> PurgeResult:
        """Delete raw days older than `before` whose rollup counts the same rows.

        A day whose rollup is missing or counts other rows is kept and listed in
        `PurgeResult.kept`. Each day is moved aside by one rename and then deleted,
        so an interrupted purge leaves no half-deleted day that is read as data, and
        the next write of the source finishes it.
        """
        result = PurgeResult(source, before)
        with self._lock(source):
            self._recover(source)
            for day in self.raw_days(source):
                if day >= before:
                    continue
                raw_rows = sum(
                    pq.ParquetFile(p).metadata.num_rows
                    for p in self._parts(source, day)
                )
                rollup = self._stored_rollup(source, day)
                if rollup is None:
                    result.kept[day] = "no rollup"
                    continue
                rollup_rows = int(pc.sum(rollup["rows"]).as_py() or 0)
                if rollup_rows != raw_rows:
                    result.kept[day] = (
                        f"rollup counts {rollup_rows} rows, raw parts hold {raw_rows}"
                    )
                    continue
                result.purged[day] = raw_rows
                if not dry_run:
                    self._purge_day(source, day, raw_rows)
        return result

    def _purge_day(self, source: str, day: date, raw_rows: int) -> None:
        folder = self._day_dir(source, day)
        aside = folder.with_name(_PURGING + folder.name)
        os.replace(folder, aside)
        _fsync_directory(folder.parent)
        self._finish_purge(source, day, aside, raw_rows)

    def _finish_purge(self, source: str, day: date, aside: Path, raw_rows: int) -> None:
        marker = self._rollup_dir(source, day) / PURGED_FILE
        if not marker.is_file():
            text = json.dumps(
                {
                    "purged_at": datetime.now(UTC).isoformat(timespec="seconds"),
                    "raw_rows": raw_rows,
                }
            )
            _write_text_atomic(marker, text)
        shutil.rmtree(aside)
        logger.info("purged raw rows of %s on %s (%d rows)", source, day, raw_rows)

    # Rewriting (erasure)

    def rewrite(
        self, source: str, edit: FrameEdit, numeric: list[str], *, dry_run: bool = False
    ) -> tuple[int, int, int]:
        """Apply `edit` to every raw day, every rollup and the memberships of `source`.

        `edit` returns the new frame and the number of rows it changed. A changed
        raw day is replaced whole (staged, then swapped in with two renames) and its
        rollup computed again. A purged day's rollup is edited directly. Memberships
        that the edit changes are dropped.

        Returns
        -------
        tuple of int
            Raw rows, rollup rows and memberships changed.
        """
        raw_changed = 0
        rollup_changed = 0
        with self._lock(source):
            self._recover(source)
            purged = set(self.purged_days(source))
            raw_days = set(self.raw_days(source))
            # Rollups first, so the counts are of the rollup rows before the edit.
            for day in self.rollup_days(source):
                rollup = self._stored_rollup(source, day)
                if rollup is None:
                    continue
                frame, count = edit(rollup.to_pandas())
                rollup_changed += count
                if dry_run or not count or (day in raw_days and day not in purged):
                    continue  # a raw day's rollup is computed again below
                edited = pa.Table.from_pandas(
                    frame, schema=rollup.schema, preserve_index=False
                )
                self._write_rollup(source, day, edited)
            for day in sorted(raw_days):
                raw = self._stored_raw(source, day)
                if raw is None:
                    continue
                frame, count = edit(raw.to_pandas())
                raw_changed += count
                if dry_run or not count:
                    continue
                edited = pa.Table.from_pandas(
                    frame, schema=raw.schema, preserve_index=False
                )
                self._replace_day(source, day, edited)
                if day not in purged:
                    self._write_rollup(source, day, rollup_table(edited, numeric))
            memberships = self._rewrite_memberships(source, edit, dry_run=dry_run)
        return raw_changed, rollup_changed, memberships

    def rewrite_origins(
        self, source: str, edit: Callable[[str], str], *, dry_run: bool = False
    ) -> int:
        """Apply `edit` to the origin (file name) of every ingested batch of `source`.

        The batch ids stay, so a file whose content was stored before is still
        skipped. `ingested.json` is written whole under a temporary name and renamed
        into place, so a failed write leaves the old file. Returns the origins
        changed, or with `dry_run` the origins that would change.
        """
        if not (self.events_folder / source / MANIFEST_FILE).is_file():
            return 0
        with self._lock(source):
            manifest = self._manifest(source)
            changed = 0
            for entry in manifest.values():
                origin = entry.get("origin")
                if not isinstance(origin, str):
                    continue
                edited = edit(origin)
                if edited != origin:
                    entry["origin"] = edited
                    changed += 1
            if changed and not dry_run:
                path = self.events_folder / source / MANIFEST_FILE
                _write_text_atomic(path, json.dumps(manifest, indent=1, sort_keys=True))
        return changed

    def _rewrite_memberships(
        self, source: str, edit: FrameEdit, *, dry_run: bool
    ) -> int:
        """Apply `edit` to the memberships and drop every membership it changed.

        A membership whose user or account was erased must map nothing, so it is
        dropped, not kept with a redacted key. Returns the memberships changed.
        """
        stored = self.read_memberships(source)
        if stored is None or not stored.num_rows:
            return 0
        frame = stored.to_pandas()
        edited, count = edit(frame)
        if dry_run or not count:
            return count
        # `sequence` is unique, so the inner join keeps exactly the rows that the
        # edit left as they were.
        kept = edited.merge(frame, how="inner", on=list(frame.columns))
        table = pa.Table.from_pandas(
            kept.sort_values("sequence"), schema=MEMBERSHIP_SCHEMA, preserve_index=False
        )
        path = self._memberships_path(source)
        os.replace(_write_temporary(path, table), path)
        _fsync_directory(path.parent)
        return count

    def _replace_day(
        self,
        source: str,
        day: date,
        table: pa.Table,
        *,
        name: str | None = None,
        keep: Sequence[Path] = (),
    ) -> None:
        """Swap in a day folder with `table` as a part, beside hard links of `keep`."""
        folder = self._day_dir(source, day)
        staging = folder.with_name(_NEW + folder.name)
        shutil.rmtree(staging, ignore_errors=True)
        staging.mkdir(parents=True)
        for part in keep:
            os.link(part, staging / part.name)
        if table.num_rows:
            name = name or _part_name()
            os.replace(_write_temporary(staging / name, table), staging / name)
            _fsync_directory(staging)
        old = folder.with_name(_OLD + folder.name)
        os.replace(folder, old)
        os.replace(staging, folder)
        _fsync_directory(folder.parent)
        shutil.rmtree(old)
        if not table.num_rows and not keep:
            folder.rmdir()

    # Housekeeping

    def _recover(self, source: str) -> None:
        """Finish purges, day swaps and appends that an interrupted process left.

        Also deletes the temporary files of writes that never completed, in the raw
        and in the rollup day folders.
        """
        folder = self.events_folder / source
        if not folder.is_dir():
            return
        for entry in sorted(folder.iterdir()):
            name = entry.name
            if name.startswith(_PURGING + DAY_PREFIX):
                day = date.fromisoformat(name.removeprefix(_PURGING + DAY_PREFIX))
                self._finish_purge(source, day, entry, raw_rows=-1)
            elif name.startswith(_OLD + DAY_PREFIX):
                target = folder / name.removeprefix(_OLD)
                staged = folder / (_NEW + target.name)
                if target.exists():
                    shutil.rmtree(entry)
                elif staged.exists():
                    os.replace(staged, target)
                    shutil.rmtree(entry)
                else:
                    os.replace(entry, target)
            elif name.startswith(_NEW + DAY_PREFIX):
                # With the old day set aside, the staged day is complete: the `.old-`
                # entry, which sorts after this one, moves it into place.
                if not (folder / (_OLD + name.removeprefix(_NEW))).exists():
                    shutil.rmtree(entry)
            elif entry.is_dir() and name.startswith(DAY_PREFIX):
                for leftover in entry.glob(".*.tmp"):
                    leftover.unlink()
        # Temporaries of ingested.json, memberships.parquet and append journals.
        for leftover in folder.glob(".*.tmp"):
            leftover.unlink()
        self._finish_appends(source)
        daily = self.daily_folder / source
        if daily.is_dir():
            for entry in daily.iterdir():
                if entry.is_dir() and entry.name.startswith(DAY_PREFIX):
                    for leftover in entry.glob(".*.tmp"):
                        leftover.unlink()
                    for leftover in entry.glob(f".{ROLLUP_FILE}.*.bak"):
                        leftover.unlink()  # the backup of a completed append

    def _manifest(self, source: str) -> dict[str, Any]:
        path = self.events_folder / source / MANIFEST_FILE
        if not path.is_file():
            return {}
        try:
            manifest = json.loads(path.read_text(encoding="utf-8"))
        except ValueError as exc:
            raise EventStoreError(
                f"{path} is not valid JSON ({exc}); restore it from a backup, or "
                "delete it, but then a file ingested again has its rows stored twice"
            ) from None
        if not isinstance(manifest, dict) or not all(
            isinstance(entry, dict) for entry in manifest.values()
        ):
            raise EventStoreError(
                f"{path} must be a JSON object of batch entries; restore it from a "
                "backup, or delete it, but then a file ingested again has its rows "
                "stored twice"
            )
        return manifest

    def _record_batch(self, source: str, batch_id: str, origin: str, rows: int) -> None:
        manifest = self._manifest(source)
        manifest[batch_id] = {
            "origin": Path(origin).name if origin else "",
            "rows": rows,
            "stored_at": datetime.now(UTC).isoformat(timespec="seconds"),
        }
        path = self.events_folder / source / MANIFEST_FILE
        _write_text_atomic(path, json.dumps(manifest, indent=1, sort_keys=True))

    @contextlib.contextmanager
    def _lock(self, source: str) -> Iterator[None]:
        folder = self.events_folder / source
        folder.mkdir(parents=True, exist_ok=True)
        if fcntl is None:  # pragma: no cover - Windows
            # NOTE: without fcntl, concurrent writers of one source are not serialised.
            yield
            return
        with open(folder / LOCK_FILE, "a+b") as handle:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(handle.fileno(), fcntl.LOCK_UN)

    def _day_dir(self, source: str, day: date) -> Path:
        return self.events_folder / source / day_folder_name(day)

    def _rollup_dir(self, source: str, day: date) -> Path:
        return self.daily_folder / source / day_folder_name(day)

    def _rollup_path(self, source: str, day: date) -> Path:
        return self._rollup_dir(source, day) / ROLLUP_FILE

    def _memberships_path(self, source: str) -> Path:
        return self.events_folder / source / MEMBERSHIPS_FILE

    def _parts(self, source: str, day: date) -> list[Path]:
        # Every append lists the parts of its days, and a day of the service can
        # hold thousands, so names are listed and sorted as text, not as Paths.
        folder = self._day_dir(source, day)
        try:
            names = os.listdir(folder)
        except (FileNotFoundError, NotADirectoryError):
            return []
        found = [n for n in names if n.startswith("part-") and n.endswith(".parquet")]
        return [folder / name for name in sorted(found)]


def file_digest(path: str | Path) -> str:
    """Return the hex SHA-256 of a file's content."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _part_name(append_id: str = "") -> str:
    # The time first, so a day's parts sort in the order they were stored, then the
    # id of the append that stored the part.
    suffix = append_id or uuid.uuid4().hex[:8]
    return f"part-{datetime.now(UTC):%Y%m%dT%H%M%S%f}-{suffix}.parquet"


def _folder_day(path: Path) -> date:
    return date.fromisoformat(path.parent.name.removeprefix(DAY_PREFIX))


def _read_journal(journal: Path) -> dict[str, Any]:
    """Read an append journal; raise FileNotFoundError when it is gone."""
    try:
        entry = json.loads(journal.read_text(encoding="utf-8"))
    except ValueError:
        entry = None
    if not isinstance(entry, dict):
        # The store renames a journal into place whole, so one that cannot be read
        # was not written by this store.
        raise EventStoreError(
            f"{journal} is not a valid append journal; move it out of the store "
            "folder, then check the raw days for parts named after its id "
            f"{journal.stem.removeprefix(JOURNAL_PREFIX)}"
        )
    return entry


def _end_journal(journal: Path) -> None:
    """Rename the journal of an append that ended to LAST_APPEND_FILE, durably."""
    os.replace(journal, journal.with_name(LAST_APPEND_FILE))
    _fsync_directory(journal.parent)


def _read_marker(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except FileNotFoundError:
        return b""


def _backup_name(append_id: str) -> str:
    """Name the copy of a rollup that the append `append_id` replaces."""
    return f".{ROLLUP_FILE}.{append_id}.bak"


def _merged_part_name(newest: str) -> str:
    """Name a merged part after the store time of the newest part it replaces."""
    stamp = newest.removeprefix("part-").split("-", 1)[0]
    try:
        datetime.strptime(stamp, "%Y%m%dT%H%M%S%f")
    except ValueError:
        return _part_name()
    return f"part-{stamp}-{uuid.uuid4().hex[:8]}.parquet"


def _message_id_array(
    source: str, table: pa.Table, message_ids: Sequence[str | None] | None
) -> pa.Array | None:
    if message_ids is None:
        return None
    if len(message_ids) != table.num_rows:
        raise EventStoreError(
            f"{len(message_ids)} message ids for {table.num_rows} rows of {source!r}; "
            "give one id (or None) per row"
        )
    return pa.array(
        [None if value is None else str(value) for value in message_ids], pa.string()
    )


def _read_message_ids(part: Path) -> set[str]:
    if MESSAGE_ID_COLUMN not in pq.read_schema(part).names:
        return set()
    column = pq.read_table(part, columns=[MESSAGE_ID_COLUMN])[MESSAGE_ID_COLUMN]
    return {str(value) for value in column.drop_null().to_pylist()}


def _membership_keys(table: pa.Table) -> Iterator[tuple[Any, ...]]:
    times = (
        table["timestamp"].to_pylist()
        if "timestamp" in table.column_names
        else [None] * table.num_rows
    )
    users = table["user"].to_pylist()
    accounts = table["account_id"].to_pylist()
    for user, account, moment in zip(users, accounts, times, strict=True):
        yield str(user), str(account), moment


def _days_in(folder: Path) -> list[date]:
    if not folder.is_dir():
        return []
    days = []
    for entry in folder.iterdir():
        if entry.is_dir() and entry.name.startswith(DAY_PREFIX):
            with contextlib.suppress(ValueError):
                days.append(date.fromisoformat(entry.name.removeprefix(DAY_PREFIX)))
    return sorted(days)


def _as_table(rows: pa.Table | pd.DataFrame) -> pa.Table:
    """Return the rows as Arrow, with plain strings and microsecond timestamps.

    pandas gives large strings and nanoseconds; one type per column keeps the parts
    of a day readable as one table.
    """
    table = (
        pa.Table.from_pandas(rows, preserve_index=False)
        if isinstance(rows, pd.DataFrame)
        else rows
    )
    fields = []
    for column in table.schema:
        kind = column.type
        if pa.types.is_large_string(kind):
            kind = pa.string()
        elif pa.types.is_timestamp(kind) and kind.tz is None:
            kind = pa.timestamp("us")
        fields.append(pa.field(column.name, kind))
    return table.cast(pa.schema(fields), safe=False)


def _check_rows(source: str, table: pa.Table) -> None:
    for column in ("account_id", "timestamp"):
        if column not in table.column_names:
            raise EventStoreError(
                f"rows for store source {source!r} have no {column!r} column; they "
                f"have {', '.join(table.column_names)}"
            )
    if not pa.types.is_timestamp(table["timestamp"].type):
        raise EventStoreError(
            f"column 'timestamp' of rows for {source!r} is {table['timestamp'].type}, "
            "not a timestamp; convert it first"
        )
    if table["timestamp"].type.tz is not None:
        raise EventStoreError(
            f"column 'timestamp' of rows for {source!r} has time zone "
            f"{table['timestamp'].type.tz}; convert it to naive wall-clock time in "
            "the project's time zone"
        )
    for column in ("account_id", "timestamp"):
        missing = table[column].null_count
        if missing:
            first = pc.index(pc.is_null(table[column]), True).as_py()
            raise EventStoreError(
                f"{missing} rows for {source!r} have no {column}, the first at row "
                f"{first + 1}; nothing was stored"
            )


def _write_temporary(target: Path, table: pa.Table) -> Path:
    """Write `table` as Parquet beside `target` under a hidden name, synced."""
    temporary = target.with_name(f".{target.name}.{uuid.uuid4().hex}.tmp")
    try:
        pq.write_table(table, temporary)
        with open(temporary, "rb") as handle:
            os.fsync(handle.fileno())
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise
    return temporary


def _write_text_atomic(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
    try:
        with open(temporary, "w", encoding="utf-8") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, path)
    finally:
        temporary.unlink(missing_ok=True)
    _fsync_directory(path.parent)


def _fsync_directory(path: Path) -> None:
    """Make renames and new entries in `path` durable (POSIX only)."""
    if os.name != "posix":
        return
    descriptor = os.open(path, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)
