"""Writing into a DuckDB file that an engine of this process has attached.

DuckDB 2.0 lets a process open one database file in several databases only while
none of them writes to it. A second, writable open fails with "Unique file handle
conflict". Table sources attach their DuckDB file read-only to the engine's
connection, so a snapshot table in the same file cannot be opened by a connection
of its own. `attach_for_writing` therefore writes through the engine's connection:
it detaches the file from every engine connection that has it attached, attaches it
read-write under the same alias, and `WritableAttachment.release` attaches it
read-only again. The engine's views of the sources name the alias, so they read the
file again once it is attached.

NOTE: while a write runs, the file is not attached read-only, so a query of the
engine's sources from another thread fails then. Backfill's writer thread writes
while the next batch is scored, which reads no source.
"""

from __future__ import annotations

import logging
import os
import threading
import weakref
from dataclasses import dataclass
from pathlib import Path

import duckdb
from ibis.backends.duckdb import Backend as DuckDBBackend

logger = logging.getLogger(__name__)

_lock = threading.RLock()
_connections: weakref.WeakSet[duckdb.DuckDBPyConnection] = weakref.WeakSet()


def register_connection(con: duckdb.DuckDBPyConnection) -> None:
    """Let snapshot table writers of this process write through `con`.

    The registry keeps a weak reference, so it never keeps a connection open.
    """
    with _lock:
        _connections.add(con)


@dataclass
class _Attachment:
    con: duckdb.DuckDBPyConnection
    alias: str
    path: str
    read_only: bool


@dataclass
class WritableAttachment:
    """A DuckDB file attached read-write to an engine connection, for one write."""

    cursor: duckdb.DuckDBPyConnection
    """A connection of the engine's database whose default catalog is the file."""
    alias: str
    path: str
    detached: list[_Attachment]
    """The read-only attachments that `release` attaches again."""

    def release(self) -> None:
        """Close the cursor and attach the file read-only again where it was.

        Raises duckdb.Error when the file cannot be attached again, for example
        because another process opened it for writing meanwhile. The engine's
        sources from that file cannot be read then.
        """
        try:
            self.cursor.close()
            if self.detached:
                _detach(self.detached[0].con, self.alias)
                _attach_read_only(self.detached)
        finally:
            _lock.release()


class AttachedBackend(DuckDBBackend):
    """An Ibis DuckDB backend on a `WritableAttachment`; `disconnect` releases it."""

    attachment: WritableAttachment

    def disconnect(self) -> None:
        """Close the cursor and attach the file read-only again where it was."""
        self.attachment.release()


def open_attached_backend(path: Path) -> AttachedBackend | None:
    """Return a backend that writes `path` through an engine that attached it.

    Returns None when no engine connection of this process has the file attached.
    Raises duckdb.Error as `attach_for_writing` does.
    """
    attachment = attach_for_writing(path)
    if attachment is None:
        return None
    try:
        backend = AttachedBackend.from_connection(attachment.cursor)
    except BaseException:
        attachment.release()
        raise
    backend.attachment = attachment
    return backend


def attach_for_writing(path: Path) -> WritableAttachment | None:
    """Attach `path` read-write through an engine connection that has it attached.

    Returns None when no registered connection has the file attached, and the
    caller may open the file itself then. Otherwise the caller must call
    `release`, and other writers of this process wait until it does. Raises
    duckdb.Error when the file cannot be attached for writing; it is attached
    read-only again then.
    """
    _lock.acquire()
    try:
        found = _attachments(path)
        if not found:
            _lock.release()
            return None
        writable = [item for item in found if not item.read_only]
        if writable:
            # Attached read-write already, for example by another writer of
            # this thread, so nothing needs to be attached again.
            cursor = _use(writable[0].con.cursor(), writable[0].alias)
            return WritableAttachment(cursor, writable[0].alias, writable[0].path, [])
        target = found[0]
        for item in found:
            _detach(item.con, item.alias)
        try:
            cursor = target.con.cursor()
            cursor.execute(f"ATTACH {_literal(target.path)} AS {_name(target.alias)}")
        except duckdb.Error:
            _attach_read_only(found)
            raise
        logger.debug("attached %s read-write as %s", target.path, target.alias)
        return WritableAttachment(
            _use(cursor, target.alias), target.alias, target.path, found
        )
    except BaseException:
        _lock.release()
        raise


def _attachments(path: Path) -> list[_Attachment]:
    """Find the attachments of `path` to the registered connections."""
    real_path = os.path.realpath(path)
    found = []
    for con in list(_connections):
        try:
            cursor = con.cursor()
        except duckdb.ConnectionException:
            continue  # the connection is closed
        try:
            rows = cursor.execute(
                "SELECT database_name, path, readonly FROM duckdb_databases() "
                "WHERE path IS NOT NULL"
            ).fetchall()
        finally:
            cursor.close()
        for alias, attached, read_only in rows:
            if os.path.realpath(attached) == real_path:
                found.append(_Attachment(con, alias, attached, bool(read_only)))
    return found


def _use(cursor: duckdb.DuckDBPyConnection, alias: str) -> duckdb.DuckDBPyConnection:
    cursor.execute(f"USE {_name(alias)}")
    return cursor


def _detach(con: duckdb.DuckDBPyConnection, alias: str) -> None:
    cursor = con.cursor()
    try:
        cursor.execute(f"DETACH {_name(alias)}")
    finally:
        cursor.close()


def _attach_read_only(attachments: list[_Attachment]) -> None:
    for item in attachments:
        cursor = item.con.cursor()
        try:
            cursor.execute(
                f"ATTACH {_literal(item.path)} AS {_name(item.alias)} (READ_ONLY)"
            )
        finally:
            cursor.close()


def _name(identifier: str) -> str:
    return '"' + identifier.replace('"', '""') + '"'


def _literal(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"
