"""Score snapshots: one Parquet partition per as-of date, replaced atomically.

Layout of a snapshot folder::

    <folder>/as_of=2026-06-30/scores.parquet
    <folder>/as_of=2026-06-30/measures.parquet
    <folder>/as_of=2026-06-30/run.json
    <folder>/.staging/   partitions being written
    <folder>/.trash/     partitions being replaced
    <folder>/.lock       serialises writers across processes
    <folder>/.table_pending/2026-06-30
                         a date whose rows `store.snapshot_table` may lack

The `as_of=YYYY-MM-DD` folder names follow the Hive partitioning convention, so DuckDB
reads every date of a table with
``read_parquet('<folder>/as_of=*/scores.parquet', hive_partitioning = true)`` and gets
an `as_of` column of type DATE.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import socket
import uuid
from collections.abc import Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any, TypeAlias

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from healthscore.errors import SnapshotNotFoundError

try:
    import fcntl
except ImportError:  # Windows has no fcntl
    fcntl = None  # type: ignore[assignment]

logger = logging.getLogger(__name__)

PARTITION_PREFIX = "as_of="
RUN_FILE = "run.json"
STAGING_DIR = ".staging"
TRASH_DIR = ".trash"
LOCK_FILE = ".lock"
TABLE_PENDING_DIR = ".table_pending"

#: Keys of run.json that the store fills in itself.
RESERVED_RUN_KEYS = ("as_of", "row_counts")

_TABLE_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_ISO_DATE = re.compile(r"^\d{4}-\d{2}-\d{2}$")


#: A table to store: a DataFrame, or an Arrow table (stored as it is).
Table: TypeAlias = pd.DataFrame | pa.Table


class SnapshotStore:
    """Score snapshots kept as Parquet files, one partition folder per as-of date.

    Writing a date replaces that date's partition atomically. The tables are written
    and fsynced in a staging folder, then swapped into place with two renames. Other
    dates are never touched, so history is append-only apart from re-runs of a date.

    Opening a store calls :meth:`recover`, which repairs what an interrupted write left
    behind. It is skipped while another writer holds the folder's lock, because that
    writer recovered before it started.

    Parameters
    ----------
    folder : Path
        Snapshot folder, created on the first write.

    Notes
    -----
    A reader that lists or opens a date during the swap of that same date can miss it
    for the instant between the two renames. Readers of other dates are unaffected.
    """

    def __init__(self, folder: Path) -> None:
        self.folder = Path(folder)
        if self.folder.is_dir():
            with self._lock(blocking=False) as locked:
                if locked:
                    self._recover_locked()

    def __repr__(self) -> str:
        return f"SnapshotStore({str(self.folder)!r})"

    # Writing

    def write(
        self,
        as_of: date,
        tables: Mapping[str, Table],
        run_info: Mapping[str, Any],
    ) -> Path:
        """Store the tables of one as-of date, replacing any snapshot of that date.

        Parameters
        ----------
        as_of : date
            As-of date of the scoring run.
        tables : mapping of str to DataFrame or pyarrow.Table
            Tables by name, for example ``{"scores": ..., "measures": ...}``. Names
            are letters, digits and underscores. A table may have an ``as_of`` column
            only when every value in it is `as_of`. An Arrow table is stored with
            its own schema and metadata, except that a table with dictionary
            columns is stored without its Arrow schema, so those columns read back
            as text (pandas metadata then sets the dtypes).
        run_info : mapping
            Run metadata stored in ``run.json``, such as scorecard versions and a
            source summary. Values must be JSON types, dates or datetimes. The store
            adds ``as_of``, ``row_counts`` and, unless given, ``created_at`` (UTC).

        Returns
        -------
        Path
            The partition folder ``<folder>/as_of=YYYY-MM-DD``.

        Raises
        ------
        ValueError
            When an argument is invalid or a table cannot be stored as Parquet. The
            previous snapshot of the date is then left as it was.
        """
        _check_as_of(as_of)
        _check_tables(as_of, tables)
        run_json = _run_json(as_of, tables, run_info)

        self.folder.mkdir(parents=True, exist_ok=True)
        with self._lock(blocking=True):
            self._recover_locked()
            staging = self._stage(as_of, tables, run_json)
            target = self._swap_in(as_of, staging)

        _log_stored(as_of, tables, target)
        return target

    def write_many(
        self,
        snapshots: Sequence[tuple[date, Mapping[str, Table], Mapping[str, Any]]],
        *,
        workers: int = 2,
    ) -> list[Path]:
        """Store the snapshots of several dates, as `write` does for each.

        The partitions are written by `workers` threads, and each is fsynced before
        it is swapped into place, so each date is still replaced atomically. The
        snapshot folder is fsynced once after all swaps instead of once per date.
        Every argument is checked before anything is written. When a partition
        fails to write, no date of the call is swapped in.

        Returns
        -------
        list of Path
            The partition folders, in the order of `snapshots`.

        Raises
        ------
        ValueError
            As `write`, or when a date is given twice.
        """
        days = [as_of for as_of, _, _ in snapshots]
        repeated = sorted({day for day in days if days.count(day) > 1})
        if repeated:
            raise ValueError(
                f"the snapshot of {repeated[0]} is given twice; give each date once"
            )
        prepared = []
        for as_of, tables, run_info in snapshots:
            _check_as_of(as_of)
            _check_tables(as_of, tables)
            prepared.append((as_of, tables, _run_json(as_of, tables, run_info)))
        if not prepared:
            return []

        self.folder.mkdir(parents=True, exist_ok=True)
        with self._lock(blocking=True):
            self._recover_locked()
            staged = self._stage_many(prepared, workers)
            targets = []
            trashes = []
            for (as_of, _, _), staging in zip(prepared, staged, strict=True):
                target, trash = self._move_in(as_of, staging)
                targets.append(target)
                if trash is not None:
                    trashes.append(trash)
            _fsync_directory(self.folder)
            for trash in trashes:
                shutil.rmtree(trash)
        for (as_of, tables, _), target in zip(prepared, targets, strict=True):
            _log_stored(as_of, tables, target)
        return targets

    def _stage_many(
        self,
        prepared: list[tuple[date, Mapping[str, Table], bytes]],
        workers: int,
    ) -> list[Path]:
        """Stage every partition. On an error, remove them all and raise it."""
        with ThreadPoolExecutor(max_workers=max(workers, 1)) as pool:
            futures = [
                pool.submit(self._stage, as_of, tables, run_json)
                for as_of, tables, run_json in prepared
            ]
            staged = []
            failure: BaseException | None = None
            for future in futures:
                try:
                    staged.append(future.result())
                except BaseException as exc:
                    failure = failure or exc
        if failure is not None:
            for staging in staged:
                shutil.rmtree(staging, ignore_errors=True)
            raise failure
        return staged

    def _stage(self, as_of: date, tables: Mapping[str, Table], run_json: bytes) -> Path:
        """Write and fsync every file of the partition in a new staging folder."""
        staging_root = self.folder / STAGING_DIR
        staging_root.mkdir(exist_ok=True)
        staging = staging_root / f"{as_of.isoformat()}-{uuid.uuid4().hex}"
        staging.mkdir()
        try:
            for name, frame in tables.items():
                _write_parquet(staging / f"{name}.parquet", frame, name, as_of)
            _write_bytes(staging / RUN_FILE, run_json)
            _fsync_directory(staging)
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
        return staging

    def _swap_in(self, as_of: date, staging: Path) -> Path:
        """Move the staged partition into place, keeping the old one until it is in."""
        target, trash = self._move_in(as_of, staging)
        _fsync_directory(self.folder)
        if trash is not None:
            shutil.rmtree(trash)
        return target

    def _move_in(self, as_of: date, staging: Path) -> tuple[Path, Path | None]:
        """Rename the staged partition into place, the old one into the trash.

        Returns the partition and the old one's trash folder, which the caller
        removes after it has fsynced the snapshot folder.
        """
        target = self.partition_path(as_of)
        trash: Path | None = None
        if target.exists():
            trash_root = self.folder / TRASH_DIR
            trash_root.mkdir(exist_ok=True)
            trash = trash_root / f"{as_of.isoformat()}-{uuid.uuid4().hex}"
            os.rename(target, trash)

        try:
            os.rename(staging, target)
        except BaseException:
            self._restore_after_failed_swap(target, trash)
            shutil.rmtree(staging, ignore_errors=True)
            raise
        return target, trash

    def _restore_after_failed_swap(self, target: Path, trash: Path | None) -> None:
        """Put the old partition back after the new one failed to move in."""
        if trash is None or target.exists():
            return
        try:
            os.rename(trash, target)
        except OSError:
            # recover() restores it on the next open or write.
            logger.exception("could not restore %s from %s", target, trash)

    # Dates pending in the snapshot table

    def mark_table_pending(self, dates: Sequence[date]) -> None:
        """Record that the table rows of `dates` are about to be replaced.

        A caller that writes `store.snapshot_table` marks its dates before it stores
        their snapshots and clears them with `clear_table_pending` once the table
        has their rows. A run stopped in between, by a kill or a failed table write,
        leaves the marks, so a later run finds the dates with `table_pending`. Each
        mark is a file naming this process and host, made durable before this
        returns.
        """
        if not dates:
            return
        for as_of in dates:
            _check_as_of(as_of)
        self.folder.mkdir(parents=True, exist_ok=True)
        pending = self.folder / TABLE_PENDING_DIR
        if not pending.is_dir():
            pending.mkdir(exist_ok=True)
            _fsync_directory(self.folder)
        owner = f"{os.getpid()}\n{socket.gethostname()}\n".encode()
        for as_of in dates:
            _write_bytes(pending / as_of.isoformat(), owner)
        _fsync_directory(pending)

    def table_pending(self, *, running: bool = True) -> list[date]:
        """Return the marked dates of `mark_table_pending`, oldest first.

        With `running=False`, marks of another process on this host that is still
        running are left out: that run is between its Parquet and table writes of
        the date, and writes the table rows itself.

        NOTE: a mark made on another host counts as left behind, so two hosts that
        share a snapshot folder can still write one date's rows twice.
        """
        found = []
        try:
            with os.scandir(self.folder / TABLE_PENDING_DIR) as entries:
                for entry in entries:
                    as_of = _date_from_name(entry.name)
                    if as_of is None:
                        continue
                    if running or not _marked_by_running_process(Path(entry.path)):
                        found.append(as_of)
        except (FileNotFoundError, NotADirectoryError):
            return []
        return sorted(found)

    def clear_table_pending(self, dates: Sequence[date]) -> None:
        """Remove the marks of `dates`. A date without a mark is skipped.

        NOTE: two runs that write the same date at once share its mark, so the
        first to finish clears the mark of the other as well.
        """
        pending = self.folder / TABLE_PENDING_DIR
        for as_of in dates:
            (pending / as_of.isoformat()).unlink(missing_ok=True)

    # Recovery

    def recover(self) -> list[date]:
        """Repair what an interrupted write left behind and return the restored dates.

        A partition in ``.trash`` whose date folder is missing was moved aside by a
        write that stopped before the new partition moved in, so it is moved back.
        Any other ``.trash`` entry and every ``.staging`` entry is deleted. Waits
        while another process writes.
        """
        if not self.folder.is_dir():
            return []
        with self._lock(blocking=True):
            return self._recover_locked()

    def _recover_locked(self) -> list[date]:
        restored = [
            as_of
            for entry in _entries(self.folder / TRASH_DIR)
            if (as_of := self._recover_trash_entry(entry)) is not None
        ]
        for entry in _entries(self.folder / STAGING_DIR):
            logger.warning("removing unfinished snapshot write %s", entry)
            _remove(entry)
        return restored

    def _recover_trash_entry(self, entry: Path) -> date | None:
        """Restore one trash entry when its date is missing, else delete it."""
        as_of = _date_from_name(entry.name[:10])
        if as_of is not None and entry.is_dir() and not self.exists(as_of):
            os.rename(entry, self.partition_path(as_of))
            _fsync_directory(self.folder)
            logger.warning("restored snapshot %s from %s", as_of.isoformat(), entry)
            return as_of
        _remove(entry)
        return None

    @contextmanager
    def _lock(self, *, blocking: bool) -> Iterator[bool]:
        """Hold the folder's write lock; yield False if it is busy and not blocking."""
        if fcntl is None:
            # NOTE: without fcntl, concurrent writers to one folder are not serialised.
            yield True
            return
        try:
            handle = open(self.folder / LOCK_FILE, "a+b")  # noqa: SIM115
        except PermissionError:
            if blocking:
                raise
            # A read-only snapshot folder can still be read, just not repaired.
            yield False
            return
        with handle:
            flags = fcntl.LOCK_EX if blocking else fcntl.LOCK_EX | fcntl.LOCK_NB
            try:
                fcntl.flock(handle.fileno(), flags)
            except BlockingIOError:
                yield False
                return
            try:
                yield True
            finally:
                fcntl.flock(handle.fileno(), fcntl.LOCK_UN)

    # Reading

    def partition_path(self, as_of: date) -> Path:
        """Return the folder of the snapshot of `as_of`, whether or not it exists."""
        return self.folder / f"{PARTITION_PREFIX}{as_of.isoformat()}"

    def parquet_glob(self, table: str) -> str:
        """Return the glob of `table` across all dates, for Hive-partitioned readers."""
        return str(self.folder / f"{PARTITION_PREFIX}*" / f"{table}.parquet")

    def exists(self, as_of: date) -> bool:
        """Return whether a snapshot of `as_of` is stored."""
        return self.partition_path(as_of).is_dir()

    def dates(self) -> list[date]:
        """Return the stored as-of dates, oldest first."""
        # The service calls this on every read, so the folder is scanned with
        # os.scandir, whose entries know their type without a stat call each.
        found = []
        try:
            with os.scandir(self.folder) as entries:
                for entry in entries:
                    if entry.name.startswith(PARTITION_PREFIX) and entry.is_dir():
                        as_of = _date_from_name(
                            entry.name.removeprefix(PARTITION_PREFIX)
                        )
                        if as_of is not None:
                            found.append(as_of)
        except (FileNotFoundError, NotADirectoryError):
            return []
        return sorted(found)

    def latest(self, on_or_before: date | None = None) -> date | None:
        """Return the newest stored as-of date up to `on_or_before`, or None."""
        candidates = [
            as_of
            for as_of in self.dates()
            if on_or_before is None or as_of <= on_or_before
        ]
        return candidates[-1] if candidates else None

    def tables(self, as_of: date) -> list[str]:
        """Return the names of the tables stored for `as_of`, sorted."""
        partition = self._existing_partition(as_of)
        return sorted(path.stem for path in partition.glob("*.parquet"))

    def read(self, as_of: date, table: str) -> pd.DataFrame:
        """Read one table of the snapshot of `as_of`.

        Raises
        ------
        SnapshotNotFoundError
            When the date or the table is not stored.
        """
        partition = self._existing_partition(as_of)
        path = partition / f"{table}.parquet"
        if not path.is_file():
            stored = ", ".join(self.tables(as_of)) or "none"
            raise SnapshotNotFoundError(
                f"the snapshot of {as_of.isoformat()} in {self.folder} has no table "
                f"{table!r}; its tables are: {stored}"
            )
        return pd.read_parquet(path, engine="pyarrow")

    def read_many(self, table: str, dates: list[date] | None = None) -> pd.DataFrame:
        """Read `table` from several snapshots into one frame with an `as_of` column.

        Parameters
        ----------
        table : str
            Table name, for example ``"scores"``.
        dates : list of date, optional
            As-of dates to read; by default every stored date.

        Returns
        -------
        DataFrame
            Rows of all the dates, oldest date first, with a new RangeIndex. The
            first column, ``as_of``, contains `datetime.date` values. A table stored
            with its own ``as_of`` column keeps that column as stored.

        Raises
        ------
        SnapshotNotFoundError
            When no snapshot is stored, or a requested date or its table is missing.
        """
        selected = self.dates() if dates is None else sorted(set(dates))
        if not selected:
            raise SnapshotNotFoundError(
                f"no snapshots in {self.folder}; run `healthscore score --as-of DATE` "
                "first"
            )
        frames = [self._read_with_as_of(as_of, table) for as_of in selected]
        return pd.concat(frames, ignore_index=True)

    def _read_with_as_of(self, as_of: date, table: str) -> pd.DataFrame:
        frame = self.read(as_of, table)
        if "as_of" not in frame.columns:
            frame.insert(0, "as_of", np.full(len(frame), as_of, dtype=object))
        return frame

    def run_info(self, as_of: date) -> dict[str, Any]:
        """Read ``run.json`` of the snapshot of `as_of`."""
        partition = self._existing_partition(as_of)
        with open(partition / RUN_FILE, encoding="utf-8") as handle:
            info: dict[str, Any] = json.load(handle)
        return info

    def _existing_partition(self, as_of: date) -> Path:
        partition = self.partition_path(as_of)
        if not partition.is_dir():
            day = as_of.isoformat()
            raise SnapshotNotFoundError(
                f"no snapshot for {day} in {self.folder}; run "
                f"`healthscore score --as-of {day}` first"
            )
        return partition


# Input checks


def _check_as_of(as_of: object) -> None:
    # datetime is a subclass of date, but a partition is for a whole day.
    if not isinstance(as_of, date) or isinstance(as_of, datetime):
        raise ValueError(
            f"as_of must be a datetime.date, got {as_of!r}; pass the day, for "
            "example date(2026, 6, 30)"
        )


def _check_tables(as_of: date, tables: Mapping[str, Table]) -> None:
    if not tables:
        raise ValueError(
            f"no tables given for the snapshot of {as_of.isoformat()}; pass at least "
            "one DataFrame"
        )
    for name, frame in tables.items():
        if not isinstance(name, str) or not _TABLE_NAME.match(name):
            raise ValueError(
                f"invalid table name {name!r}; use letters, digits and underscores, "
                "starting with a letter or underscore"
            )
        if isinstance(frame, pa.Table):
            if "as_of" in frame.column_names:
                _check_as_of_column(as_of, name, _arrow_days(frame["as_of"]))
            continue
        if not isinstance(frame, pd.DataFrame):
            raise ValueError(
                f"table {name!r} must be a pandas DataFrame or a pyarrow Table, got "
                f"{type(frame).__name__}"
            )
        if "as_of" in frame.columns:
            _check_as_of_column(as_of, name, frame["as_of"])


def _arrow_days(column: pa.ChunkedArray) -> pd.Series:
    """Return the distinct values of an Arrow column, for the as_of check."""
    return pd.Series(pc.unique(column).to_pylist(), dtype=object)


def _check_as_of_column(as_of: date, name: str, column: pd.Series) -> None:
    """Reject an `as_of` column that disagrees with the partition date.

    DuckDB's Hive partitioning reports the folder's date in place of the file's own
    `as_of` column, so a disagreeing column would read differently in DuckDB and pandas.
    """
    if column.empty:
        return
    try:
        days = set(pd.to_datetime(column).dt.strftime("%Y-%m-%d"))
    except (TypeError, ValueError):
        days = {"values that are not dates"}
    if days != {as_of.isoformat()}:
        found = ", ".join(sorted(str(day) for day in days))
        raise ValueError(
            f"table {name!r} has an as_of column with {found} but the snapshot is for "
            f"{as_of.isoformat()}; set every value to the snapshot date or drop the "
            "column"
        )


def _run_json(
    as_of: date, tables: Mapping[str, Table], run_info: Mapping[str, Any]
) -> bytes:
    """Serialise run.json before any file is written, so bad metadata writes nothing."""
    clashes = [key for key in RESERVED_RUN_KEYS if key in run_info]
    if clashes:
        raise ValueError(
            f"run_info must not contain {', '.join(clashes)}; the store fills in "
            f"{' and '.join(RESERVED_RUN_KEYS)} itself"
        )
    content = {
        "as_of": as_of.isoformat(),
        "created_at": datetime.now(UTC).isoformat(),
        "row_counts": {name: len(frame) for name, frame in tables.items()},
        **run_info,
    }
    try:
        text = json.dumps(
            content,
            indent=2,
            default=_json_default,
            allow_nan=False,
            ensure_ascii=False,
        )
    except (TypeError, ValueError) as exc:
        raise ValueError(
            f"run_info for {as_of.isoformat()} cannot be stored as JSON: {exc}; use "
            "strings, numbers, booleans, None, lists, dicts, dates or datetimes"
        ) from exc
    return (text + "\n").encode("utf-8")


def _json_default(value: object) -> str:
    if isinstance(value, date):  # datetime too
        return value.isoformat()
    raise TypeError(
        f"{value!r} of type {type(value).__name__} is not JSON serializable"
    )


# Files


def _log_stored(as_of: date, tables: Mapping[str, Table], target: Path) -> None:
    logger.info(
        "stored snapshot %s with tables %s in %s",
        as_of.isoformat(),
        ", ".join(f"{name} ({len(frame)} rows)" for name, frame in tables.items()),
        target,
    )


def _write_parquet(path: Path, frame: Table, name: str, as_of: date) -> None:
    try:
        table = frame if isinstance(frame, pa.Table) else pa.Table.from_pandas(frame)
    except (pa.ArrowException, TypeError, ValueError) as exc:
        raise ValueError(
            f"table {name!r} of the snapshot of {as_of.isoformat()} cannot be stored "
            f"as Parquet: {exc}; convert its columns to numbers, strings, booleans, "
            "dates or timestamps"
        ) from exc
    # Without the Arrow schema in the file, a dictionary-encoded text column reads
    # back as plain text, as it would have been stored from a DataFrame column.
    dictionaries = any(pa.types.is_dictionary(field.type) for field in table.schema)
    # Minimum and maximum statistics of text columns took about a third of the
    # encoding time of the snapshot tables (pyarrow 26, one date of the data of
    # benchmarks/backfill.py). A snapshot file has one or a few row groups, so
    # readers lose little pruning without them. Other columns keep theirs.
    statistics = [field.name for field in table.schema if not _is_text(field.type)]
    with open(path, "wb") as handle:
        pq.write_table(
            table,
            handle,
            store_schema=not dictionaries,
            write_statistics=statistics,
        )
        handle.flush()
        os.fsync(handle.fileno())


def _is_text(column_type: pa.DataType) -> bool:
    if pa.types.is_dictionary(column_type):
        column_type = column_type.value_type
    return bool(
        pa.types.is_string(column_type) or pa.types.is_large_string(column_type)
    )


def _marked_by_running_process(mark: Path) -> bool:
    """Tell whether `mark` names another process of this host that still runs."""
    try:
        pid_text, host = mark.read_text(encoding="utf-8").split("\n")[:2]
        pid = int(pid_text)
    except (OSError, UnicodeDecodeError, ValueError):
        return False  # an unreadable or empty mark is one left behind
    if host != socket.gethostname() or pid == os.getpid():
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # a process of another user
    return True


def _write_bytes(path: Path, content: bytes) -> None:
    with open(path, "wb") as handle:
        handle.write(content)
        handle.flush()
        os.fsync(handle.fileno())


def _fsync_directory(path: Path) -> None:
    """Make renames and new entries in `path` durable (POSIX only)."""
    if os.name != "posix":
        return
    descriptor = os.open(path, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


def _entries(folder: Path) -> list[Path]:
    if not folder.is_dir():
        return []
    return sorted(folder.iterdir())


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    else:
        path.unlink()


def _date_from_name(text: str) -> date | None:
    if not _ISO_DATE.match(text):
        return None
    try:
        return date.fromisoformat(text)
    except ValueError:
        return None
