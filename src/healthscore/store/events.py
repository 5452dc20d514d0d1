"""The event store: rows that the product keeps itself, with daily rollups.

Layout, per store source::

    <events>/<source>/day=YYYY-MM-DD/part-*.parquet   raw rows of one day
    <events>/<source>/ingested.json                   content hashes of ingested batches
    <events>/<source>/.lock                           serialises writers
    <daily>/<source>/day=YYYY-MM-DD/rollup.parquet    rollup of the day, per account
    <daily>/<source>/day=YYYY-MM-DD/purged.json       present once the raw day is purged

Every file is written under a temporary name, synced and renamed into place, so a
reader finds a part or a rollup whole or not at all. The rollup of a day is computed
again from all of the day's raw parts whenever the day changes, so a rollup left
stale by a crash is repaired by the next append or erasure. An append with
`rollup=False` leaves that to a later `rebuild_rollups`, as the web service does to
keep the work off its requests. A day is purged only when its rollup counts exactly
the rows of its raw parts.

`append` takes an Arrow table or a DataFrame, so the command line (`healthscore
ingest`) and a service that receives events use the same code.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import shutil
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

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
LOCK_FILE = ".lock"

# Folders of a day that is being purged, replaced or staged; never read as data.
_PURGING = ".purging-"
_OLD = ".old-"
_NEW = ".new-"

FrameEdit = Callable[[pd.DataFrame], tuple[pd.DataFrame, int]]


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

    def __repr__(self) -> str:
        return f"EventStore({str(self.events_folder)!r}, {str(self.daily_folder)!r})"

    # Paths and reading

    def sources(self) -> list[str]:
        """Return the sources that have raw rows or rollups stored."""
        names: set[str] = set()
        for folder in (self.events_folder, self.daily_folder):
            if folder.is_dir():
                names |= {p.name for p in folder.iterdir() if p.is_dir()}
        return sorted(names)

    def raw_days(self, source: str) -> list[date]:
        """Return the days with raw rows, oldest first."""
        return _days_in(self.events_folder / source)

    def rollup_days(self, source: str) -> list[date]:
        """Return the days with a rollup, oldest first."""
        folder = self.daily_folder / source
        return [d for d in _days_in(folder) if self._rollup_path(source, d).is_file()]

    def purged_days(self, source: str) -> list[date]:
        """Return the days whose raw rows were purged, oldest first."""
        folder = self.daily_folder / source
        return [
            d
            for d in _days_in(folder)
            if (self._rollup_dir(source, d) / PURGED_FILE).is_file()
        ]

    def raw_files(self, source: str) -> list[str]:
        """Return the raw part files of a source, by day and name."""
        files: list[str] = []
        for day in self.raw_days(source):
            files += [str(p) for p in self._parts(source, day)]
        return files

    def rollup_files(self, source: str) -> list[str]:
        """Return the rollup files of a source, by day."""
        return [str(self._rollup_path(source, d)) for d in self.rollup_days(source)]

    def read_raw(self, source: str, day: date | None = None) -> pa.Table | None:
        """Read the raw rows of one day, or of every day; None when there are none."""
        days = [day] if day is not None else self.raw_days(source)
        tables = [pq.read_table(p) for d in days for p in self._parts(source, d)]
        if not tables:
            return None
        return pa.concat_tables(tables, promote_options="default")

    def read_rollup(self, source: str, day: date | None = None) -> pa.Table | None:
        """Read the rollup of one day, or of every day; None when there is none."""
        days = [day] if day is not None else self.rollup_days(source)
        paths = [self._rollup_path(source, d) for d in days]
        tables = [pq.read_table(p) for p in paths if p.is_file()]
        if not tables:
            return None
        return pa.concat_tables(tables, promote_options="default")

    def batch_stored(self, source: str, batch_id: str) -> bool:
        """Tell whether a batch with this id (a content hash) was stored before."""
        return batch_id in self._manifest(source)

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

        Raises
        ------
        EventStoreError
            When a required column is missing or has an empty value; nothing is
            stored then.
        """
        table = _as_table(rows)
        _check_rows(source, table)
        with self._lock(source):
            self._recover(source)
            if batch_id is not None and batch_id in self._manifest(source):
                return AppendResult(rows=0, skipped=True)
            result = AppendResult(rows=table.num_rows)
            purged = set(self.purged_days(source))
            days = pc.cast(table["timestamp"], pa.date32())
            # Every file is written under a temporary name first, so rows that cannot
            # be stored (such as a column whose type changed) store nothing at all.
            staged: list[tuple[Path, Path]] = []
            try:
                for day in sorted(set(days.to_pylist())):
                    part = table.filter(pc.equal(days, pa.scalar(day, pa.date32())))
                    if day in purged:
                        staged += self._stage_rollup_merge(source, day, part, numeric)
                        result.rollup_only_days.append(day)
                    else:
                        staged += self._stage_day(
                            source, day, part, numeric, rollup=rollup
                        )
                        result.raw_days.append(day)
            except BaseException:
                for temporary, _ in staged:
                    temporary.unlink(missing_ok=True)
                self._remove_empty_folders(source, set(days.to_pylist()))
                raise
            # NOTE: a crash between these renames leaves some days appended; their
            # rollups are computed again from the raw rows by the next append.
            for temporary, target in staged:
                os.replace(temporary, target)
                _fsync_directory(target.parent)
            if batch_id is not None:
                self._record_batch(source, batch_id, origin, table.num_rows)
        logger.info(
            "stored %d rows of %s from %s in %d days",
            table.num_rows,
            source,
            origin or "a table",
            len(result.raw_days) + len(result.rollup_only_days),
        )
        return result

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
    ) -> list[tuple[Path, Path]]:
        """Write a new raw part, and with `rollup` the day's new rollup, staged."""
        folder = self._day_dir(source, day)
        folder.mkdir(parents=True, exist_ok=True)
        target = folder / _part_name()
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
        current = self.read_rollup(source, day)
        added = rollup_table(part, numeric)
        merged = added if current is None else merge_rollups([current, added])
        return [self._stage_rollup(source, day, merged)]

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
                raw = self.read_raw(source, day)
                if raw is None:
                    continue
                fresh = rollup_table(raw, numeric)
                current = self.read_rollup(source, day)
                if current is None or not current.equals(fresh):
                    self._write_rollup(source, day, fresh)
                    changed.append(day)
        return changed

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
                rollup = self.read_rollup(source, day)
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
    ) -> tuple[int, int]:
        """Apply `edit` to every raw day and every rollup of `source`.

        `edit` returns the new frame and the number of rows it changed. A changed
        raw day is replaced whole (staged, then swapped in with two renames) and its
        rollup computed again. A purged day's rollup is edited directly.

        Returns
        -------
        tuple of int
            Raw rows and rollup rows changed.
        """
        raw_changed = 0
        rollup_changed = 0
        with self._lock(source):
            self._recover(source)
            purged = set(self.purged_days(source))
            raw_days = set(self.raw_days(source))
            # Rollups first, so the counts are of the rollup rows before the edit.
            for day in self.rollup_days(source):
                rollup = self.read_rollup(source, day)
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
                raw = self.read_raw(source, day)
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
        return raw_changed, rollup_changed

    def _replace_day(self, source: str, day: date, table: pa.Table) -> None:
        folder = self._day_dir(source, day)
        staging = folder.with_name(_NEW + folder.name)
        shutil.rmtree(staging, ignore_errors=True)
        staging.mkdir(parents=True)
        if table.num_rows:
            name = _part_name()
            os.replace(_write_temporary(staging / name, table), staging / name)
            _fsync_directory(staging)
        old = folder.with_name(_OLD + folder.name)
        os.replace(folder, old)
        os.replace(staging, folder)
        _fsync_directory(folder.parent)
        shutil.rmtree(old)
        if not table.num_rows:
            folder.rmdir()

    # Housekeeping

    def _recover(self, source: str) -> None:
        """Finish purges and day swaps that an interrupted process left behind."""
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
                shutil.rmtree(entry)
            elif entry.is_dir() and name.startswith(DAY_PREFIX):
                for leftover in entry.glob(".*.tmp"):
                    leftover.unlink()

    def _manifest(self, source: str) -> dict[str, Any]:
        path = self.events_folder / source / MANIFEST_FILE
        if not path.is_file():
            return {}
        manifest: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
        return manifest

    def _record_batch(self, source: str, batch_id: str, origin: str, rows: int) -> None:
        # NOTE: a crash after the rows are stored and before this write lets the same
        # batch be stored a second time.
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

    def _parts(self, source: str, day: date) -> list[Path]:
        folder = self._day_dir(source, day)
        return sorted(folder.glob("part-*.parquet")) if folder.is_dir() else []


def file_digest(path: str | Path) -> str:
    """Return the hex SHA-256 of a file's content."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _part_name() -> str:
    # The time first, so a day's parts sort in the order they were stored.
    return f"part-{datetime.now(UTC):%Y%m%dT%H%M%S%f}-{uuid.uuid4().hex[:8]}.parquet"


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
