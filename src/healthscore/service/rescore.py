"""Rescoring of the accounts that received events, in small batches, in the service.

The ingest routes hand the account ids of stored rows to a `RescoreWorker`. Its
thread waits up to `interval` seconds after the first id (or until `max_accounts`
ids are pending), then rescores as of today and replaces today's snapshot, which
the account routes read as the latest date, and today's rows of
`store.snapshot_table` when one is set. Alert rules and playbooks then run for the
rescored accounts only, with the dedupe and cool-down of a nightly run.

A failed write of the snapshot table is logged and does not fail the batch: the
snapshot is stored and alerts run. Table writes then pause for
`SNAPSHOT_TABLE_RETRY_SECONDS`, and the first batch after the pause writes the
whole day again.

Scores as of today count the rows stored up to now: the live run places the as-of
point at the end of today (`as_of_point: end_of_day`), whatever the project sets.
The worker's `LiveScorer` (`healthscore.service.live`) computes the metrics of a
batch's accounts only and scores them against the values of the population that it
holds; its docstring lists where that can differ from a full run.

A high-water mark (`.rescore-mark.json` in the events folder) records the store
time up to which every stored row has been rescored. On start the worker queues the
accounts of the raw parts stored after the mark, so rows stored just before a
crash or a restart are rescored too.

Request processes of the same project that do not run the worker hand it their
accounts and lagging days through notices (`healthscore.service.handoff`), which
the worker reads every `NOTICE_POLL_SECONDS`.
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
from collections.abc import Iterable
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import pyarrow.compute as pc
import pyarrow.parquet as pq

from healthscore.config import Project
from healthscore.config.retention import ROLLUP_SUFFIX, store_sources
from healthscore.service.handoff import NOTICE_POLL_SECONDS, notice_folder, take_notices
from healthscore.service.live import (
    FULL_INTERVAL_SECONDS,
    SNAPSHOT_TABLE_RETRY_SECONDS,
    LiveScorer,
    RescoreResult,
    ScorerProcess,
    live_project,
    today,
)
from healthscore.sources.ingest import RollupUpdates, event_store
from healthscore.sources.stored import rollups_used

__all__ = [
    "LiveScorer",
    "RescoreResult",
    "RescoreWorker",
    "ScorerProcess",
    "accounts_stored_since",
    "live_project",
    "read_mark",
    "rescore_accounts",
    "today",
    "write_mark",
]

logger = logging.getLogger(__name__)

MARK_FILE = ".rescore-mark.json"
#: Seconds of stored rows rescored again after a restart, before the mark. It
#: covers rows whose part was named before the mark and whose request queued
#: their accounts after it, so a restart cannot miss them.
MARK_OVERLAP_SECONDS = 60.0
#: Pause after a failed batch before its accounts are tried again, in seconds.
RETRY_PAUSE_SECONDS = 5.0
#: Seconds between updates of every lagging daily rollup. Rollups that metrics read
#: are updated before each batch.
ROLLUP_INTERVAL_SECONDS = 30.0

_PART_TIME_FORMAT = "%Y%m%dT%H%M%S%f"


def rescore_accounts(
    project: Project, accounts: Iterable[str], as_of: date | None = None
) -> RescoreResult:
    """Score the population as of `as_of` (default today) and store the snapshot.

    A full scoring run: alert rules and playbooks run for `accounts` only. Accounts
    that are not in the population (no active subscription, for example) get no
    score and raise nothing.
    """
    scorer = LiveScorer(project)
    try:
        return scorer.rescore(accounts, as_of)
    finally:
        scorer.close()


# High-water mark


def mark_path(project: Project) -> Path:
    """Return the path of the rescore high-water mark."""
    return project.path(project.config.store.events) / MARK_FILE


def read_mark(project: Project) -> datetime | None:
    """Return the store time up to which rows were rescored, or None."""
    path = mark_path(project)
    if not path.is_file():
        return None
    try:
        stored = json.loads(path.read_text(encoding="utf-8"))
        return datetime.fromisoformat(stored["rescored_through"])
    except (ValueError, KeyError, TypeError) as exc:
        logger.warning(
            "rescore mark %s is unreadable (%s); rescoring every stored row's account",
            path,
            exc,
        )
        return None


def write_mark(project: Project, moment: datetime) -> None:
    """Store the high-water mark durably (write, fsync, rename)."""
    path = mark_path(project)
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.tmp")
    with open(temporary, "w", encoding="utf-8") as handle:
        json.dump({"rescored_through": moment.isoformat()}, handle)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(temporary, path)


def accounts_stored_since(project: Project, moment: datetime | None) -> set[str]:
    """Return the accounts of the raw parts stored after `moment` (all when None).

    The store time is read from the part's file name. Rows added to the rollup of
    an already purged day have no raw part, so they are not found here.
    """
    accounts: set[str] = set()
    for _source, name in _parts_stored_since(project, moment):
        column = pq.read_table(name, columns=["account_id"])["account_id"]
        accounts |= {str(value) for value in pc.unique(column).to_pylist()}
    return accounts


def _parts_stored_since(
    project: Project, moment: datetime | None
) -> list[tuple[str, str]]:
    """Return (source, file) of the raw parts stored after `moment` (all when None)."""
    store = event_store(project)
    found = []
    for source in store_sources(project.config):
        for name in store.raw_files(source):
            stamp = _part_time(Path(name).name)
            if moment is not None and stamp is not None and stamp <= moment:
                continue
            found.append((source, name))
    return found


def _part_time(name: str) -> datetime | None:
    # Part names read `part-<UTC store time>-<random>.parquet`.
    try:
        stamp = name.removeprefix("part-").split("-", 1)[0]
        return datetime.strptime(stamp, _PART_TIME_FORMAT).replace(tzinfo=UTC)
    except ValueError:
        return None


# Worker


class RescoreWorker:
    """Thread that rescores the accounts queued by the ingest routes.

    Parameters
    ----------
    project : Project
        The project served.
    interval : float
        Seconds to wait after the first queued account before a batch starts.
    max_accounts : int
        Accounts per batch; a batch starts at once when this many are queued.
    full_interval : float
        Seconds after a full scoring run when a batch runs a full run again.
    process : bool
        Score in a child process (`ScorerProcess`) instead of this thread, as the
        service does, so that batches do not hold the GIL of the requests.
    """

    def __init__(
        self,
        project: Project,
        *,
        interval: float = 0.25,
        max_accounts: int = 1000,
        full_interval: float = FULL_INTERVAL_SECONDS,
        process: bool = False,
    ) -> None:
        self.project = project
        self.interval = interval
        self.max_accounts = max_accounts
        self.scorer: LiveScorer | ScorerProcess = (
            ScorerProcess(project, full_interval=full_interval)
            if process
            else LiveScorer(project, full_interval=full_interval)
        )
        self.rollups = RollupUpdates(project)
        # Rollup sources that metrics read, brought up to date before each batch.
        self._read_rollups = [
            name.removesuffix(ROLLUP_SUFFIX) for name in rollups_used(project)
        ]
        self._condition = threading.Condition()
        # Account id -> store time (UTC) at which it was first queued.
        self._pending: dict[str, datetime] = {}
        self._stopping = False
        self._thread: threading.Thread | None = None
        self._notice_thread: threading.Thread | None = None
        self._notices = notice_folder(project)
        self._sources = set(store_sources(project.config))
        self.batches = 0
        self.failures = 0
        self.table_failures = 0
        self.last_result: RescoreResult | None = None

    def start(self) -> None:
        """Queue the rows stored after the mark, then start the thread."""
        mark = read_mark(self.project)
        since = None if mark is None else mark - timedelta(seconds=MARK_OVERLAP_SECONDS)
        parts = _parts_stored_since(self.project, since)
        store = event_store(self.project)
        for source in store_sources(self.project.config):
            # Rollups lag behind appends until the worker updates them, so after a
            # crash they can lag on days stored before the mark too.
            self.rollups.add(source, store.lagging_rollup_days(source))
        missed = accounts_stored_since(self.project, since) if parts else set()
        if missed:
            logger.info("rescoring %d accounts stored before a restart", len(missed))
            self.notify(missed)
        self._take_notices()
        if isinstance(self.scorer, ScorerProcess):
            self.scorer.start()
        self._thread = threading.Thread(
            target=self._run, name="healthscore-rescore", daemon=True
        )
        self._thread.start()
        self._notice_thread = threading.Thread(
            target=self._poll_notices, name="healthscore-rescore-notices", daemon=True
        )
        self._notice_thread.start()
        logger.info("rescore worker started")

    def stop(self, timeout: float = 30.0) -> None:
        """Finish the current batch and stop; queued accounts wait for the mark."""
        with self._condition:
            self._stopping = True
            self._condition.notify_all()
        if self._notice_thread is not None:
            self._notice_thread.join(timeout)
        if self._thread is not None:
            self._thread.join(timeout)
            if self._thread.is_alive():
                logger.warning("rescore worker did not stop within %.0f s", timeout)
            else:
                self.scorer.close()
        # Notices left now are read by the next worker on its start.
        self._update_rollups(every=True)
        logger.info("rescore worker stopped")

    def notify(self, accounts: Iterable[str]) -> None:
        """Queue accounts whose rows were just stored."""
        now = datetime.now(UTC)
        self._queue({account: now for account in accounts})

    def _queue(self, accounts: dict[str, datetime]) -> None:
        with self._condition:
            for account, queued_at in accounts.items():
                earlier = self._pending.get(account, queued_at)
                self._pending[account] = min(earlier, queued_at)
            self._condition.notify_all()

    def _take_notices(self) -> None:
        """Queue the accounts and lagging days of other processes' notices."""
        try:
            notices = take_notices(self._notices)
        except OSError as exc:
            logger.error("reading the rescore notices failed: %s", exc)
            return
        accounts: dict[str, datetime] = {}
        for notice in notices:
            for source, days in notice.rollups.items():
                if source in self._sources:
                    self.rollups.add(source, days)
                else:
                    logger.warning(
                        "skipping the rollup days of %r in a rescore notice: it is "
                        "not a store source of the project",
                        source,
                    )
            for account in notice.accounts:
                accounts.setdefault(account, notice.queued_at)
        if accounts:
            self._queue(accounts)

    def _poll_notices(self) -> None:
        while True:
            with self._condition:
                if self._condition.wait_for(
                    lambda: self._stopping, NOTICE_POLL_SECONDS
                ):
                    return
            try:
                self._take_notices()
            except Exception as exc:  # the polling must go on for later notices
                logger.error("queueing the rescore notices failed: %s", exc)

    def pending(self) -> int:
        """Return the number of queued accounts."""
        with self._condition:
            return len(self._pending)

    def _run(self) -> None:
        while True:
            batch = self._next_batch()
            if batch is None:
                return
            stale = (
                time.monotonic() - self.rollups.applied_at >= ROLLUP_INTERVAL_SECONDS
            )
            if not batch:
                # No events for a while: bring the rollups up to date anyway.
                if stale and self.rollups.pending():
                    self._update_rollups(every=True)
                continue
            started = datetime.now(UTC)
            self._update_rollups(every=stale)
            try:
                self.last_result = self.scorer.rescore(list(batch))
            except Exception as exc:  # the worker must keep running
                self.failures += 1
                # The error's text can name accounts, so the default level logs
                # its type only, and -vv the text and traceback.
                kind = getattr(exc, "kind", None) or type(exc).__name__
                logger.error(
                    "rescoring %d accounts failed (%s); retrying in %.0f s "
                    "(failure %d); run the service with -vv for the error text",
                    len(batch),
                    kind,
                    RETRY_PAUSE_SECONDS,
                    self.failures,
                )
                logger.debug("rescore failure: %s", exc, exc_info=True)
                # The held values may be half updated, so the next batch runs a
                # full scoring run.
                self.scorer.close()
                self._queue(batch)
                with self._condition:
                    self._condition.wait_for(
                        lambda: self._stopping, RETRY_PAUSE_SECONDS
                    )
                continue
            self.batches += 1
            self._advance_mark(started)
            self._report_table_error(self.last_result)
            self._log_batch(self.last_result, len(batch))

    def _log_batch(self, result: RescoreResult, queued: int) -> None:
        """Log the accounts scored, and those queued but not in the population."""
        suffix = " (full run)" if result.full else ""
        outside = queued - len(result.accounts)
        if outside:
            suffix += (
                f"; {outside} queued accounts are not in the population as of "
                f"{result.as_of}"
            )
        logger.info(
            "rescored %d accounts in %.2f s%s",
            len(result.accounts),
            result.seconds,
            suffix,
        )

    def _report_table_error(self, result: RescoreResult) -> None:
        if result.snapshot_table_error is None:
            return
        self.table_failures += 1
        logger.error(
            "rescored %d accounts as of %s, but writing store.snapshot_table failed "
            "(failure %d): %s. The Parquet snapshot is stored and alert rules ran. "
            "The first batch after %.0f s writes the table again",
            len(result.accounts),
            result.as_of,
            self.table_failures,
            result.snapshot_table_error,
            SNAPSHOT_TABLE_RETRY_SECONDS,
        )

    def _next_batch(self) -> dict[str, datetime] | None:
        """Wait for queued accounts and return a batch; None when stopping.

        Returns an empty batch when none came within ROLLUP_INTERVAL_SECONDS.
        """
        with self._condition:
            self._condition.wait_for(
                lambda: self._pending or self._stopping, ROLLUP_INTERVAL_SECONDS
            )
            if self._stopping:
                return None
            if not self._pending:
                return {}
            deadline = time.monotonic() + self.interval
            while len(self._pending) < self.max_accounts and not self._stopping:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                self._condition.wait(remaining)
            if self._stopping:
                return None
            chosen = list(self._pending)[: self.max_accounts]
            return {account: self._pending.pop(account) for account in chosen}

    def _update_rollups(self, *, every: bool) -> None:
        """Compute lagging rollups: those that metrics read, or `every` one."""
        if not every and not self._read_rollups:
            return
        try:
            changed = self.rollups.apply(None if every else self._read_rollups)
        except (OSError, ValueError) as exc:
            # The days stay queued and are tried again before the next batch.
            logger.error("updating the daily rollups failed: %s", exc)
            return
        days = sum(len(found) for found in changed.values())
        if days:
            logger.debug("updated the rollups of %d days", days)

    def _advance_mark(self, started: datetime) -> None:
        # Rows of accounts still queued are not rescored yet, so the mark stays
        # before the earliest of them.
        with self._condition:
            earliest = min(self._pending.values(), default=started)
        try:
            write_mark(self.project, min(earliest, started))
        except OSError as exc:
            logger.error("writing the rescore mark failed: %s", exc)
