"""One rescoring worker for every request process of a project.

`healthscore serve --workers N` runs N request processes. Each can store events,
but only one may rescore: two workers would replace today's snapshot in turn, each
with its own batches, and raise the same alerts twice. The process that holds the
project's rescore lease (an exclusive `flock` on `.rescore.lock` in the events
folder) runs the `RescoreWorker`. The others hand what they store to it through
notices: small JSON files in `.rescore-queue/` of the events folder, one per
append or per request, naming the accounts to rescore and the days whose rollups
now lag. The worker reads and deletes them every `NOTICE_POLL_SECONDS`.

A process without the lease tries to take it every `LEASE_RETRY_SECONDS`, so when
the process holding it stops or dies, another one starts rescoring, and the new
worker's restart scan (the rescore mark) finds the rows stored meanwhile. Two
`healthscore serve` commands on the same project share the lease the same way.

A notice is written after the rows it names are durably stored. Its file is
fsynced before the rename and its folder after it, so after a crash a notice is
either complete or missing, never empty. A request process can still die between
its append and its notice, or the machine can stop before the folder's fsync.
Those accounts are then rescored at their next event or by the next scoring run,
and their rollups by the worker's periodic update of lagging days.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import uuid
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from pathlib import Path
from typing import IO

from healthscore.config import Project

logger = logging.getLogger(__name__)

LEASE_FILE = ".rescore.lock"
NOTICE_FOLDER = ".rescore-queue"
#: Seconds between the worker's reads of the notice folder.
NOTICE_POLL_SECONDS = 0.1
#: Seconds between a request process's attempts to take the lease.
LEASE_RETRY_SECONDS = 2.0


def events_folder(project: Project) -> Path:
    """Return the project's event store folder (`store.events`)."""
    return project.path(project.config.store.events)


def notice_folder(project: Project) -> Path:
    """Return the folder of the notices for the rescore worker."""
    return events_folder(project) / NOTICE_FOLDER


class RescoreLease:
    """The exclusive right to rescore a project: a `flock` held while it is open.

    The kernel releases the lock when the holding process exits, however it exits,
    so a crashed holder does not keep the others from rescoring.
    """

    def __init__(self, project: Project) -> None:
        self.path = events_folder(project) / LEASE_FILE
        self._handle: IO[str] | None = None

    @property
    def held(self) -> bool:
        return self._handle is not None

    def acquire(self) -> bool:
        """Take the lease if no other process holds it; return whether it is held."""
        if self._handle is not None:
            return True
        self.path.parent.mkdir(parents=True, exist_ok=True)
        handle = open(self.path, "a+", encoding="utf-8")  # noqa: SIM115 - held open
        try:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.close()
            return False
        except BaseException:
            handle.close()
            raise
        self._handle = handle
        return True

    def release(self) -> None:
        if self._handle is None:
            return
        with contextlib.suppress(OSError):
            fcntl.flock(self._handle.fileno(), fcntl.LOCK_UN)
        self._handle.close()
        self._handle = None


@dataclass
class Notice:
    """The accounts and lagging days that one notice file hands to the worker."""

    queued_at: datetime
    accounts: list[str] = field(default_factory=list)
    rollups: dict[str, list[date]] = field(default_factory=dict)


def write_notice(folder: Path, notice: Notice) -> Path:
    """Write `notice` under a temporary name, fsync it and rename it into `folder`.

    The folder is fsynced after the rename, so the new name survives a crash too.
    """
    folder.mkdir(parents=True, exist_ok=True)
    stamp = notice.queued_at.strftime("%Y%m%dT%H%M%S%f")
    name = f"{stamp}-{os.getpid()}-{uuid.uuid4().hex[:8]}.json"
    body = {
        "queued_at": notice.queued_at.isoformat(),
        "accounts": notice.accounts,
        "rollups": {
            source: [day.isoformat() for day in days]
            for source, days in notice.rollups.items()
        },
    }
    temporary = folder / f".{name}.tmp"
    target = folder / name
    try:
        with open(temporary, "w", encoding="utf-8") as handle:
            handle.write(json.dumps(body))
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, target)
    finally:
        temporary.unlink(missing_ok=True)
    _fsync_folder(folder)
    return target


def _fsync_folder(folder: Path) -> None:
    """Flush a folder's entries, such as a rename into it, to disk.

    This module needs POSIX (it imports fcntl), where a folder can be opened
    read-only and fsynced.
    """
    descriptor = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


def take_notices(folder: Path) -> list[Notice]:
    """Read and delete the notices in `folder`, oldest first.

    A notice that cannot be read is logged and deleted, so it is not read again.
    """
    try:
        names = sorted(
            name
            for name in os.listdir(folder)
            if name.endswith(".json") and not name.startswith(".")
        )
    except FileNotFoundError:
        return []
    notices = []
    for name in names:
        path = folder / name
        try:
            body = json.loads(path.read_text(encoding="utf-8"))
            queued_at = datetime.fromisoformat(body["queued_at"])
            if queued_at.tzinfo is None:
                # Written without an offset by hand or by another tool: read as UTC.
                queued_at = queued_at.replace(tzinfo=UTC)
            accounts, rollups = body["accounts"], body["rollups"]
            if not isinstance(accounts, list) or not isinstance(rollups, dict):
                raise ValueError("accounts must be a list and rollups an object")
            notices.append(
                Notice(
                    queued_at=queued_at.astimezone(UTC),
                    accounts=[str(account) for account in accounts],
                    rollups={
                        str(source): [date.fromisoformat(day) for day in days]
                        for source, days in rollups.items()
                    },
                )
            )
        except FileNotFoundError:
            continue
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
            logger.error("skipping the unreadable rescore notice %s: %s", path, exc)
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
    return notices


class _RelayedRollups:
    """Replacement of `RollupUpdates` in a process without the lease."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder

    def add(self, source: str, days: Iterable[date]) -> None:
        found = sorted(set(days))
        if found:
            write_notice(
                self.folder,
                Notice(queued_at=datetime.now(UTC), rollups={source: found}),
            )


class RescoreRelay:
    """Replacement of the rescore worker in a request process without the lease.

    It has the two methods that the ingest routes call on a worker: `notify` for
    the accounts of stored rows, and `rollups.add` for the days appended without
    their rollups. Both write a notice for the worker of another process.
    """

    def __init__(self, project: Project) -> None:
        self.folder = notice_folder(project)
        self.rollups = _RelayedRollups(self.folder)

    def notify(self, accounts: Iterable[str]) -> None:
        found = sorted(set(accounts))
        if found:
            write_notice(
                self.folder, Notice(queued_at=datetime.now(UTC), accounts=found)
            )
