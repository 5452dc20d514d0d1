"""Read access of the service to a project's snapshots and accounts, with caching.

The scoring run of the command line may replace a snapshot while the service reads
it. A snapshot write renames folders, so for an instant the date is absent. A read
that fails in that instant is retried a few times before it counts as an error.
Reads are served from memory. The scores of each date are kept until that date's
`run.json` changes, so replacing today's snapshot (as the rescore worker does after
every batch) rereads today's scores only. History, trends and the table of accounts
of a date are kept until a snapshot changes. The first read after a change rebuilds
the value, so a burst of reads after a rescoring batch rebuilds it once. Reads that
arrive during the rebuild get the value from before the change, so a read is at
most one rebuild behind the snapshots: about 40 ms after a new snapshot of one date
for the 6,107 accounts of examples/socialnet (see docs/service.md). When a rebuild
fails, the read gets the value from before the change and the error is logged, and
the next read tries again.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from datetime import date
from pathlib import Path
from typing import Any, TypeVar

import pandas as pd
import pyarrow as pa

from healthscore.config import Project
from healthscore.config.models import AttributeMetric
from healthscore.monitoring.history import HISTORY_COLUMNS
from healthscore.monitoring.trends import compute_trends
from healthscore.pipeline import snapshot_store
from healthscore.report import read_account_sources
from healthscore.service.errors import ApiError, not_found
from healthscore.sources.reader import SourceError, resolve_files
from healthscore.store.snapshots import RUN_FILE, SnapshotNotFoundError

logger = logging.getLogger(__name__)

T = TypeVar("T")

#: Attempts of a snapshot read that fails while a scoring run replaces the snapshot.
READ_ATTEMPTS = 5
#: Pause before the first retry, in seconds; it doubles on each retry.
RETRY_PAUSE_SECONDS = 0.05

#: Account columns the service shows beside the scores, when the source has them.
ACCOUNT_COLUMNS = ("name", "segment", "owner", "arr", "mrr")

#: Columns of the accounts table that an attribute metric can store in a snapshot.
#: An account removed from the accounts source keeps the stored values.
STORED_ATTRIBUTE_COLUMNS = ("name", "segment", "owner", "arr")

#: Seconds an accounts table read from a source without plain files is kept.
ACCOUNTS_TTL_SECONDS = 60.0


class ProjectData:
    """Snapshots, score history, trends and account attributes of one project."""

    def __init__(self, project: Project) -> None:
        self.project = project
        self.snapshots = snapshot_store(project)
        self._lock = threading.Lock()
        self._cache: dict[str, tuple[Any, Any]] = {}
        # One lock per cached value, held by the request that rebuilds it.
        self._builders: dict[str, threading.Lock] = {}
        # Dates found stored before; one missing now is probably being replaced.
        self._seen_dates: set[date] = set()
        # Number of builds that the current thread runs, one inside another.
        self._building = threading.local()

    # Dates

    def resolve_as_of(self, as_of: date | None) -> date:
        """Return `as_of`, or the latest stored date; 404 when it is not stored.

        A date that was stored before and is missing now is waited for briefly,
        because a scoring run that replaces it removes it for an instant.
        """
        if as_of is None:
            latest = self._wait_for(lambda: self._latest_not_older())
            if latest is None:
                raise not_found(
                    "no scores are stored yet; run `healthscore score --as-of DATE` "
                    "for the project first"
                )
            return latest
        stored: bool | None = self.snapshots.exists(as_of)
        if not stored and as_of in self._seen_dates:
            stored = self._wait_for(lambda: self.snapshots.exists(as_of) or None)
        if not stored:
            raise not_found(
                f"no scores are stored for {as_of.isoformat()}; pick a stored date "
                "or run `healthscore score` for it"
            )
        with self._lock:
            self._seen_dates.add(as_of)
        return as_of

    def _latest_not_older(self) -> date | None:
        """Return the latest date, or None while it is older than one seen before."""
        latest = self.snapshots.latest()
        with self._lock:
            seen = max(self._seen_dates, default=None)
            if latest is not None and (seen is None or latest >= seen):
                self._seen_dates.add(latest)
                return latest
        return None

    def _wait_for(self, probe: Callable[[], T | None]) -> T | None:
        """Return the first result of `probe` that is not None, retrying briefly.

        After READ_ATTEMPTS the last result is returned, because then the date was
        removed for good, for example by `healthscore forget` or by hand.
        """
        pause = RETRY_PAUSE_SECONDS
        for _attempt in range(READ_ATTEMPTS - 1):
            found = probe()
            if found is not None:
                return found
            time.sleep(pause)
            pause *= 2
        found = probe()
        if found is None and self.snapshots.latest() is not None:
            # Fall back to what is stored now, and stop waiting for the lost date.
            with self._lock:
                self._seen_dates = set(self.snapshots.dates())
            return probe()
        return found

    # Snapshot tables

    def table(self, as_of: date, name: str) -> pd.DataFrame:
        """Read table `name` of the snapshot of `as_of`, retrying during a rewrite."""
        return _retry(lambda: self.snapshots.read(as_of, name))

    def history(self) -> pd.DataFrame:
        """Return `score_history` of all stored dates, cached until snapshots change.

        Each date's scores are read once per version of its snapshot, so a new
        snapshot of one date rereads that date only.
        """
        return self._cached("history", self._read_history)

    def _read_history(self) -> pd.DataFrame:
        frames = [self._dated_scores(day) for day in self.snapshots.dates()]
        frames = [frame for frame in frames if frame is not None]
        if not frames:
            return pd.DataFrame(columns=["as_of", "account_id", "score", "band"])
        frame = pd.concat(frames, ignore_index=True)
        # The same rows and order as `score_history`.
        return frame.sort_values(["as_of", "account_id"], kind="stable").reset_index(
            drop=True
        )

    def latest_scored(self, account_id: str) -> date | None:
        """Return the latest stored date that scored the account, or None.

        It also finds accounts removed from the accounts source since. The dates
        are cached until a snapshot changes.
        """

        def compute() -> dict[str, date]:
            history = self.history()
            ids = history["account_id"].astype(str)
            latest = history["as_of"].groupby(ids).max()
            return {str(key): value for key, value in latest.items()}

        return self._cached("latest scored", compute).get(account_id)

    def _dated_scores(self, day: date) -> pd.DataFrame | None:
        """Return the HISTORY_COLUMNS of one date's scores; None once it is gone."""
        key = f"scores {day.isoformat()}"
        stamp = self._run_stamp(day)
        with self._lock:
            found = self._cache.get(key)
        if found is not None and found[0] == stamp and stamp is not None:
            cached: pd.DataFrame = found[1]
            return cached
        try:
            scores = _retry(lambda: self.snapshots.read(day, "scores"))
        except SnapshotNotFoundError:
            return None
        frame = scores[HISTORY_COLUMNS].copy()
        frame["as_of"] = pd.to_datetime(frame["as_of"]).dt.date
        with self._lock:
            self._cache[key] = (stamp, frame)
        return frame

    def _run_stamp(self, day: date) -> tuple[int, int] | None:
        """Return the modification time and inode of the date's run.json.

        A snapshot write swaps in a new run.json while the old one still exists,
        so the inode differs even when both writes fall in one clock tick.
        """
        try:
            path = self.snapshots.partition_path(day) / RUN_FILE
            stat = path.stat()
        except OSError:
            return None
        return (stat.st_mtime_ns, stat.st_ino)

    def account_frame(self, as_of: date) -> pd.DataFrame:
        """Return the accounts table of `as_of` for every account, indexed by id.

        `healthscore.service.views.build_account_table` builds it, and
        `_mark_removed_accounts` adds `in_accounts_source`. It is kept until a
        snapshot or the accounts source changes (a database table: until
        ACCOUNTS_TTL_SECONDS have passed). Callers must not modify it.
        """
        from healthscore.service.views import build_account_table

        def build() -> pd.DataFrame:
            frame = self._mark_removed_accounts(build_account_table(self, as_of), as_of)
            indexed = frame.set_index(frame["account_id"], drop=False)
            indexed.index.name = None
            return indexed

        key = f"accounts table {as_of.isoformat()}"
        version = (self._snapshot_version(), self._accounts_version())
        return self._current(key, version, build)

    def _mark_removed_accounts(self, frame: pd.DataFrame, as_of: date) -> pd.DataFrame:
        """Insert `in_accounts_source` after `arr`, false for removed accounts.

        A removed account is one that the accounts source no longer lists, although
        the snapshot of `as_of` scored it. Its row takes its attributes from that
        snapshot's attribute metrics where it stores them, and they stay missing
        otherwise.
        """
        ids = frame["account_id"].astype(str)
        known = ids.isin(self.accounts().index)
        frame.insert(frame.columns.get_loc("arr") + 1, "in_accounts_source", known)
        if known.all():
            return frame
        stored = self._stored_attributes(as_of, set(ids[~known]))
        for column, values in stored.items():
            frame[column] = frame[column].where(known, ids.map(values))
        return frame

    def _stored_attributes(
        self, as_of: date, account_ids: set[str]
    ) -> dict[str, pd.Series]:
        """Return STORED_ATTRIBUTE_COLUMNS of the accounts as the snapshot stores them.

        A column's values, indexed by account id, come from the metrics table of the
        snapshot of `as_of`: per account, from the first attribute metric in
        healthscore.yml that reads the column and has a value. Columns that no
        attribute metric reads are left out.
        """
        # NOTE: the metrics are matched by the names that healthscore.yml gives them
        # now, so a metric renamed or pointed at another column since the snapshot
        # was stored is missed or read as the column it reads now.
        readers = {
            name: metric.column
            for name, metric in self.project.config.metrics.items()
            if isinstance(metric, AttributeMetric)
            and metric.column in STORED_ATTRIBUTE_COLUMNS
        }
        if not readers:
            return {}
        metrics = self.table(as_of, "metrics")
        metrics = metrics[
            metrics["metric"].isin(readers)
            & metrics["account_id"].astype(str).isin(account_ids)
        ]
        stored: dict[str, pd.Series] = {}
        for name, column in readers.items():
            rows = metrics[metrics["metric"] == name]
            ids = rows["account_id"].astype(str).to_numpy()
            # Text columns are stored in value_text, number columns such as arr in
            # value, so each column keeps the dtype of its kind.
            text = pd.Series(rows["value_text"].to_numpy(), index=ids).dropna()
            numbers = pd.Series(rows["value"].to_numpy(), index=ids).dropna()
            found = numbers if text.empty else text
            previous = stored.get(column)
            if previous is not None:
                found = previous.combine_first(found)
            stored[column] = found
        return stored

    def trends(self, as_of: date) -> pd.DataFrame:
        """Return `compute_trends` as of `as_of`, cached until a snapshot changes."""
        settings = self.project.config.history.trend

        def compute() -> pd.DataFrame:
            return _retry(
                lambda: compute_trends(self.snapshots, as_of, settings, self.history())
            )

        return self._cached(f"trends {as_of.isoformat()}", compute)

    def _snapshot_version(self) -> tuple[tuple[date, tuple[int, int]], ...]:
        """Stored dates with the `_run_stamp` of their run.json."""
        version = []
        for day in self.snapshots.dates():
            stamp = self._run_stamp(day)
            if stamp is not None:
                version.append((day, stamp))
        return tuple(version)

    def _cached(self, key: str, compute: Callable[[], T]) -> T:
        return self._current(key, self._snapshot_version(), compute)

    def _current(self, key: str, version: Any, compute: Callable[[], T]) -> T:
        """Return the cached value of `key` if it is of `version`, else rebuild it.

        The first read that finds no value of `version` rebuilds it. Reads that
        arrive during that rebuild get the value from before the change, if one is
        cached, and otherwise wait for the rebuild and share its result. A value
        that a rebuild reads in turn is always of the current version, so nothing
        is cached as current that was built from an outdated value. When the
        rebuild fails and a value of another version is cached, the error is
        logged and that value is returned, unless the rebuild runs inside the
        rebuild of another value: then the error is raised.
        """
        with self._lock:
            found = self._cache.get(key)
            builder = self._builders.setdefault(key, threading.Lock())
        if found is not None and found[0] == version:
            value: T = found[1]
            return value
        nested = getattr(self._building, "depth", 0) > 0
        if found is None or nested:
            builder.acquire()
        elif not builder.acquire(blocking=False):
            # Another read is rebuilding it, which takes tens of milliseconds.
            stale: T = found[1]
            return stale
        try:
            return self._build(key, version, compute)
        except Exception as exc:
            if found is None or nested:
                raise
            logger.error(
                "rebuilding the service's %s failed, so the value from before "
                "the last snapshot change is served: %s",
                key,
                exc,
            )
            logger.debug("rebuild failure", exc_info=True)
            previous: T = found[1]
            return previous
        finally:
            builder.release()

    def _build(self, key: str, version: Any, compute: Callable[[], T]) -> T:
        """Compute and cache the value of `key`; call with its builder lock held."""
        with self._lock:
            found = self._cache.get(key)
        if found is not None and found[0] == version:
            built: T = found[1]
            return built
        self._building.depth = getattr(self._building, "depth", 0) + 1
        try:
            built = compute()
        finally:
            self._building.depth -= 1
        with self._lock:
            self._cache[key] = (version, built)
        return built

    # Accounts

    def accounts(self) -> pd.DataFrame:
        """Account attributes (ACCOUNT_COLUMNS that exist) indexed by account id.

        Read from the accounts source and cached until its files change.

        Raises
        ------
        ApiError
            503 when the accounts source cannot be read.
        """
        version = self._accounts_version()
        with self._lock:
            found = self._cache.get("accounts")
        if found is not None and found[0] == version:
            return found[1]
        try:
            frame = read_account_sources(self.project).accounts()
        except SourceError as exc:
            raise ApiError(503, f"the accounts source cannot be read: {exc}") from exc
        columns = [column for column in ACCOUNT_COLUMNS if column in frame.columns]
        attributes = frame[columns].copy()
        attributes.index = attributes.index.astype(str)
        with self._lock:
            self._cache["accounts"] = (version, attributes)
        return attributes

    def _accounts_version(self) -> tuple[Any, ...]:
        name = self.project.config.accounts_source()
        source = self.project.config.sources[name]
        try:
            files = resolve_files(self.project, name, source)
            stats = [_file_stamp(file) for file in files]
        except (SourceError, OSError):
            # No plain files to watch (or none yet): refresh on a timer instead.
            return ("ttl", int(time.monotonic() // ACCOUNTS_TTL_SECONDS))
        return ("files", *stats)

    def owner_of(self, account_id: str) -> str | None:
        """Return the account's owner, or None when it has none or is unknown."""
        accounts = self.accounts()
        if "owner" not in accounts.columns or account_id not in accounts.index:
            return None
        value = accounts.at[account_id, "owner"]
        return None if pd.isna(value) else str(value)

    def owned_ids(self, owner: str) -> set[str]:
        """Return the ids of the accounts whose owner is `owner`."""
        accounts = self.accounts()
        if "owner" not in accounts.columns:
            return set()
        return set(accounts.index[accounts["owner"] == owner])

    def is_known(self, account_id: str) -> bool:
        """Return whether `account_id` is an id of the accounts source."""
        return account_id in self.accounts().index


def _file_stamp(file: str) -> tuple[str, int, int]:
    stat = Path(file).stat()
    return (file, stat.st_mtime_ns, stat.st_size)


def _retry(read: Callable[[], T]) -> T:
    """Run `read`, retrying when a snapshot vanishes for a moment during a rewrite.

    A read that races the swap of a partition can also fail inside Arrow, as an
    ArrowTypeError did under the ingest benchmark. So Arrow errors are retried too,
    and one that persists is raised after the last attempt.
    """
    pause = RETRY_PAUSE_SECONDS
    for attempt in range(1, READ_ATTEMPTS + 1):
        try:
            return read()
        except (SnapshotNotFoundError, OSError, pa.ArrowException) as exc:
            if attempt == READ_ATTEMPTS:
                raise
            logger.debug("snapshot read failed (%s); retrying", type(exc).__name__)
            time.sleep(pause)
            pause *= 2
    raise AssertionError("unreachable")
