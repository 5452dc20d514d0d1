"""Rescoring of the accounts that received events, in small batches, in the service.

The ingest routes hand the account ids of stored rows to a `RescoreWorker`. Its
thread waits up to `interval` seconds after the first id (or until `max_accounts`
ids are pending), then rescores as of today and replaces today's snapshot, which
the account routes read as the latest date. Alert rules and playbooks then run for
the rescored accounts only, with the dedupe and cool-down of a nightly run.

Scores as of today count the rows stored up to now: the live run places the as-of
point at the end of today (`as_of_point: end_of_day`), whatever the project sets.
Each batch computes the metrics of the whole population, because normalizations
such as percentiles within a segment need every account's value, so a rescored
account gets the score that a full `score` run with the same settings gives it.

A high-water mark (`.rescore-mark.json` in the events folder) records the store
time up to which every stored row has been rescored. On start the worker queues the
accounts of the raw parts stored after the mark, so rows stored just before a
crash or a restart are rescored too.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pandas as pd
import pyarrow.compute as pc
import pyarrow.parquet as pq

from healthscore.config import Project
from healthscore.config.retention import store_sources
from healthscore.metrics import compute_metrics
from healthscore.pipeline import (
    Monitoring,
    ScoringRun,
    active_overrides,
    open_engine,
    run_monitoring,
    scorecard_versions,
    snapshot_store,
)
from healthscore.scoring import score_accounts
from healthscore.sources import as_of_point
from healthscore.sources.ingest import event_store

logger = logging.getLogger(__name__)

MARK_FILE = ".rescore-mark.json"
#: Seconds of stored rows rescored again after a restart, before the mark. It
#: covers rows whose part was named before the mark and whose request queued
#: their accounts after it, so a restart cannot miss them.
MARK_OVERLAP_SECONDS = 60.0
#: Pause after a failed batch before its accounts are tried again, in seconds.
RETRY_PAUSE_SECONDS = 5.0

_PART_TIME_FORMAT = "%Y%m%dT%H%M%S%f"


@dataclass
class RescoreResult:
    """Accounts rescored by one batch and what the monitoring step raised."""

    as_of: date
    accounts: list[str]
    population: int
    seconds: float
    monitoring: Monitoring | None


def live_project(project: Project) -> Project:
    """Return `project` with the as-of point at the end of the day."""
    config = project.config.model_copy(update={"as_of_point": "end_of_day"})
    return dataclasses.replace(project, config=config)


def rescore_accounts(
    project: Project, accounts: Iterable[str], as_of: date | None = None
) -> RescoreResult:
    """Score the population as of `as_of` (default today) and store the snapshot.

    Alert rules and playbooks run for `accounts` only. Accounts that are not in the
    population (no active subscription, for example) get no score and raise
    nothing.
    """
    started = time.perf_counter()
    live = live_project(project)
    day = as_of or today(project)
    engine = open_engine(live)
    try:
        metrics = compute_metrics(live, engine.sources, day)
        versions = scorecard_versions(live)
        result = score_accounts(
            live.config,
            metrics.values,
            metrics.accounts,
            active_overrides(live, day),
            day,
            versions,
        )
        reports = engine.sources.report(as_of_point(live, day))
        run = ScoringRun(live, day, metrics, result, reports, versions)
        info = run.run_info()
        info["trigger"] = "ingest"
        run.snapshot = snapshot_store(live).write(day, run.tables(), info)
        wanted = set(accounts)
        subset = dataclasses.replace(
            result,
            scores=_rows_of(result.scores, wanted),
            components=_rows_of(result.components, wanted),
            measures=_rows_of(result.measures, wanted),
        )
        affected = dataclasses.replace(run, result=subset)
        monitoring = run_monitoring(live, affected, engine)
    finally:
        engine.con.disconnect()
    rescored = sorted(set(subset.scores["account_id"].astype(str)))
    return RescoreResult(
        as_of=day,
        accounts=rescored,
        population=len(result.scores),
        seconds=time.perf_counter() - started,
        monitoring=monitoring,
    )


def today(project: Project) -> date:
    """Return today's date in the project's time zone."""
    return datetime.now(ZoneInfo(project.config.timezone)).date()


def _rows_of(frame: pd.DataFrame, wanted: set[str]) -> pd.DataFrame:
    return frame[frame["account_id"].astype(str).isin(wanted)].reset_index(drop=True)


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
    store = event_store(project)
    accounts: set[str] = set()
    for source in store_sources(project.config):
        for name in store.raw_files(source):
            stamp = _part_time(Path(name).name)
            if moment is not None and stamp is not None and stamp <= moment:
                continue
            column = pq.read_table(name, columns=["account_id"])["account_id"]
            accounts |= {str(value) for value in pc.unique(column).to_pylist()}
    return accounts


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
    """

    def __init__(
        self, project: Project, *, interval: float = 0.5, max_accounts: int = 200
    ) -> None:
        self.project = project
        self.interval = interval
        self.max_accounts = max_accounts
        self._condition = threading.Condition()
        # Account id -> store time (UTC) at which it was first queued.
        self._pending: dict[str, datetime] = {}
        self._stopping = False
        self._thread: threading.Thread | None = None
        self.batches = 0
        self.failures = 0
        self.last_result: RescoreResult | None = None

    def start(self) -> None:
        """Queue the rows stored after the mark, then start the thread."""
        mark = read_mark(self.project)
        since = None if mark is None else mark - timedelta(seconds=MARK_OVERLAP_SECONDS)
        missed = accounts_stored_since(self.project, since)
        if missed:
            logger.info("rescoring %d accounts stored before a restart", len(missed))
            self.notify(missed)
        self._thread = threading.Thread(
            target=self._run, name="healthscore-rescore", daemon=True
        )
        self._thread.start()
        logger.info("rescore worker started")

    def stop(self, timeout: float = 30.0) -> None:
        """Finish the current batch and stop; queued accounts wait for the mark."""
        with self._condition:
            self._stopping = True
            self._condition.notify_all()
        if self._thread is not None:
            self._thread.join(timeout)
            if self._thread.is_alive():
                logger.warning("rescore worker did not stop within %.0f s", timeout)
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

    def pending(self) -> int:
        """Return the number of queued accounts."""
        with self._condition:
            return len(self._pending)

    def _run(self) -> None:
        while True:
            batch = self._next_batch()
            if batch is None:
                return
            started = datetime.now(UTC)
            try:
                self.last_result = rescore_accounts(self.project, list(batch))
            except Exception as exc:  # the worker must keep running
                self.failures += 1
                logger.error(
                    "rescoring %d accounts failed (%s: %s); retrying in %.0f s "
                    "(failure %d)",
                    len(batch),
                    type(exc).__name__,
                    exc,
                    RETRY_PAUSE_SECONDS,
                    self.failures,
                )
                logger.debug("rescore failure", exc_info=True)
                self._queue(batch)
                with self._condition:
                    self._condition.wait_for(
                        lambda: self._stopping, RETRY_PAUSE_SECONDS
                    )
                continue
            self.batches += 1
            self._advance_mark(started)
            logger.info(
                "rescored %d accounts in %.2f s",
                len(batch),
                self.last_result.seconds,
            )

    def _next_batch(self) -> dict[str, datetime] | None:
        """Wait for queued accounts and return a batch; None when stopping."""
        with self._condition:
            self._condition.wait_for(lambda: self._pending or self._stopping)
            if self._stopping:
                return None
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

    def _advance_mark(self, started: datetime) -> None:
        # Rows of accounts still queued are not rescored yet, so the mark stays
        # before the earliest of them.
        with self._condition:
            earliest = min(self._pending.values(), default=started)
        try:
            write_mark(self.project, min(earliest, started))
        except OSError as exc:
            logger.error("writing the rescore mark failed: %s", exc)
