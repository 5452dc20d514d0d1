"""Connections to the operational store: URL resolution, SQLite settings, migrations."""

from __future__ import annotations

import hashlib
import logging
import sqlite3
import time
from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config
from sqlalchemy import Connection, Engine, create_engine, event, text
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import ArgumentError, DBAPIError
from sqlalchemy.pool import StaticPool

from healthscore.config.databases import masked
from healthscore.errors import StateStoreError
from healthscore.store.schema import VERSION_TABLE

logger = logging.getLogger(__name__)

MIGRATIONS_FOLDER = Path(__file__).with_name("migrations")

#: How long a SQLite connection waits for another process's write lock, in ms.
BUSY_TIMEOUT_MS = 30_000

#: Pause between attempts to switch a SQLite file to WAL, in seconds.
WAL_RETRY_SECONDS = 0.01

#: Key of the PostgreSQL advisory lock that serialises schema upgrades ("health").
MIGRATION_LOCK_KEY = int.from_bytes(b"health", "big")

#: Execution option naming the SQLite BEGIN mode of a transaction.
SQLITE_BEGIN_OPTION = "healthscore_sqlite_begin"

SUPPORTED_BACKENDS = ("sqlite", "postgresql")

#: Revision of the newest migration in `migrations/versions`. Update it with each
#: new migration; a test compares it with Alembic's head.
SCHEMA_HEAD = "0005"


def resolve_url(url: str, root: Path) -> URL:
    """Parse a store URL, resolving a relative SQLite path against `root`.

    A relative SQLite path's parent folder is created. A plain ``postgresql://`` URL
    uses the psycopg 3 driver, which is the PostgreSQL driver healthscore supports.

    Raises
    ------
    ValueError
        When the URL cannot be parsed or names another database.
    """
    parsed = parse_state_url(url)
    backend = parsed.get_backend_name()
    if backend == "postgresql" and parsed.drivername == "postgresql":
        return parsed.set(drivername="postgresql+psycopg")
    if backend == "sqlite":
        return _resolve_sqlite_path(parsed, root)
    return parsed


def parse_state_url(url: str) -> URL:
    """Parse a store URL without touching any file or database.

    Raises ValueError, with the password masked, when the URL cannot be parsed or
    names a database other than SQLite and PostgreSQL.
    """
    try:
        parsed = make_url(url)
    except (ArgumentError, ValueError) as exc:
        # SQLAlchemy raises ValueError for a port that is not a number.
        reason = "the port is not a number" if isinstance(exc, ValueError) else ""
        raise ValueError(
            f"invalid state store URL {masked(url)!r}"
            + (f" ({reason})" if reason else "")
            + "; fix store.state in healthscore.yml, for example "
            "sqlite:///path/to/state.db or postgresql+psycopg://user@host:5432/database"
        ) from None
    backend = parsed.get_backend_name()
    if backend not in SUPPORTED_BACKENDS:
        raise ValueError(
            f"unsupported state store database {backend!r} in "
            f"{describe_url(parsed)}; use sqlite or postgresql"
        )
    return parsed


def _resolve_sqlite_path(url: URL, root: Path) -> URL:
    path = _sqlite_file(url, root)
    if path is None:
        return url
    path.parent.mkdir(parents=True, exist_ok=True)
    return url.set(database=str(path))


def _sqlite_file(url: URL, root: Path) -> Path | None:
    """Return the file of a SQLite URL, resolved against `root`.

    Returns None for an in-memory database and for a `file:` URI.
    """
    database = url.database
    if is_memory_sqlite(url) or database is None or database.startswith("file:"):
        return None
    path = Path(database).expanduser()
    if not path.is_absolute():
        path = Path(root) / path
    return path


def may_hold_rows(url: str, root: Path) -> bool:
    """Return whether the store at `url` can hold rows before anything opens it.

    Returns False for a SQLite file that does not exist, and for a private
    in-memory SQLite database, which every `StateStore.open` creates empty. Returns
    True for every other store, because only a query can show whether it has rows.
    Nothing is created.

    Raises
    ------
    ValueError
        When the URL is invalid or names an unsupported database, as `resolve_url`.
    """
    parsed = parse_state_url(url)
    if parsed.get_backend_name() != "sqlite":
        return True
    if is_memory_sqlite(parsed):
        return False
    path = _sqlite_file(parsed, root)
    return path is None or path.exists()


def is_memory_sqlite(url: URL) -> bool:
    """Return whether `url` names a private in-memory SQLite database."""
    return url.get_backend_name() == "sqlite" and url.database in (None, "", ":memory:")


def describe_url(url: URL) -> str:
    """Return the URL with its password masked, for messages and logs."""
    return url.render_as_string(hide_password=True)


def create_state_engine(url: URL) -> Engine:
    """Create an engine for the store, with WAL and a busy timeout on SQLite.

    Raises
    ------
    StateStoreError
        When the database driver is not installed.
    """
    options: dict[str, Any] = {}
    if is_memory_sqlite(url):
        # One shared connection, or every checkout would see its own empty database.
        options = {
            "poolclass": StaticPool,
            "connect_args": {"check_same_thread": False},
        }
    try:
        engine = create_engine(url, **options)
    except ImportError as exc:
        raise StateStoreError(
            f"the driver for {describe_url(url)} is not installed ({exc}); for "
            "PostgreSQL run `pip install 'psycopg[binary]'`"
        ) from exc
    if url.get_backend_name() == "sqlite":
        event.listen(engine, "connect", _configure_sqlite_connection)
        event.listen(engine, "begin", _begin_sqlite_transaction)
    return engine


def write_engine(engine: Engine) -> Engine:
    """Return the engine with transactions that take SQLite's write lock at BEGIN.

    A deferred SQLite transaction that reads and then writes fails at once with
    "database is locked" when another process wrote in between, without waiting for
    the busy timeout. `BEGIN IMMEDIATE` takes the write lock first, so it waits.
    """
    return engine.execution_options(**{SQLITE_BEGIN_OPTION: "IMMEDIATE"})


def lock_for_write(connection: Connection, subject: str) -> None:
    """Serialise this write transaction with the others that lock `subject`.

    Call it first in a transaction that reads stored rows of `subject`, such as
    ``"outcomes"``, and then writes according to them. On PostgreSQL it takes a
    transaction-level advisory lock, held until commit or rollback, because READ
    COMMITTED lets two such transactions read before either commits. SQLite needs
    none, because a transaction of `write_engine` holds the write lock from BEGIN.
    """
    if connection.dialect.name == "postgresql":
        connection.execute(
            text("SELECT pg_advisory_xact_lock(:key)"),
            {"key": write_lock_key(subject)},
        )


def write_lock_key(subject: str) -> int:
    """Return the signed 64-bit PostgreSQL advisory lock key of `subject`."""
    digest = hashlib.blake2b(f"healthscore:{subject}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big", signed=True)


def _configure_sqlite_connection(dbapi_connection: Any, _record: Any) -> None:
    # In its default legacy mode, Python's sqlite3 module emits BEGIN only before
    # INSERT, UPDATE and DELETE. Turning that off lets _begin_sqlite_transaction emit
    # BEGIN for every transaction, as SQLAlchemy 2.1's SQLite dialect docs recommend.
    dbapi_connection.isolation_level = None
    cursor = dbapi_connection.cursor()
    try:
        cursor.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
        # WAL lets readers (a service) run while another process (the CLI) writes.
        _enable_wal(cursor)
        cursor.execute("PRAGMA foreign_keys = ON")
    finally:
        cursor.close()


def _enable_wal(cursor: Any) -> None:
    """Switch the database file to WAL, retrying while another process locks it.

    SQLite can return SQLITE_BUSY for this switch without calling the busy handler.
    This was seen when several processes opened a new file at once, so the busy
    timeout is applied here by hand.
    """
    deadline = time.monotonic() + BUSY_TIMEOUT_MS / 1000
    while True:
        try:
            cursor.execute("PRAGMA journal_mode = WAL")
            return
        except sqlite3.OperationalError as exc:
            busy = getattr(exc, "sqlite_errorcode", None) == sqlite3.SQLITE_BUSY
            if not busy or time.monotonic() > deadline:
                raise
            time.sleep(WAL_RETRY_SECONDS)


def _begin_sqlite_transaction(connection: Connection) -> None:
    mode = connection.get_execution_options().get(SQLITE_BEGIN_OPTION, "DEFERRED")
    connection.exec_driver_sql(f"BEGIN {mode}")


def upgrade_schema(engine: Engine) -> None:
    """Apply the migrations shipped in `healthscore/store/migrations` up to the newest.

    The upgrade runs in one transaction that holds SQLite's write lock or a
    PostgreSQL advisory lock, so processes that open a new database at the same time
    migrate it once. A database whose version table names `SCHEMA_HEAD` is left as
    it is, without that lock and without loading the migration scripts. Loading
    them took about 10 ms of each open (cProfile, 2 CPUs).
    """
    if stored_revision(engine) == SCHEMA_HEAD:
        logger.debug("state store schema is up to date at %s", describe_url(engine.url))
        return
    config = Config()
    # Config values go through configparser interpolation, where % is special.
    config.set_main_option("script_location", str(MIGRATIONS_FOLDER).replace("%", "%%"))
    with write_engine(engine).begin() as connection:
        if connection.dialect.name == "postgresql":
            connection.execute(
                text("SELECT pg_advisory_xact_lock(:key)"), {"key": MIGRATION_LOCK_KEY}
            )
        config.attributes["connection"] = connection
        command.upgrade(config, "head")
    logger.debug("state store schema is up to date at %s", describe_url(engine.url))


def stored_revision(engine: Engine) -> str | None:
    """Return the revision in the store's version table.

    Returns None when the table is missing, as in a new database, or does not hold
    exactly one revision. Raises DBAPIError when the database cannot be reached.
    """
    with engine.connect() as connection:
        try:
            rows = connection.execute(
                text(f"SELECT version_num FROM {VERSION_TABLE}")
            ).all()
        except DBAPIError:
            return None
    return str(rows[0][0]) if len(rows) == 1 else None
