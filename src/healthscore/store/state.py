"""The operational store: overrides and their audit log, on SQLite or PostgreSQL.

SQLite is the default (``sqlite:///.healthscore/state.db`` in the project folder) and
is opened in WAL mode with a busy timeout, so the CLI and a long-running service can
use the same file at once. PostgreSQL is used when the URL starts with
``postgresql``. To keep the tables in a PostgreSQL schema other than ``public``, set
the search path in the URL, for example ``?options=-csearch_path%3Dhealthscore``.
"""

from __future__ import annotations

import logging
import numbers
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, date, datetime
from pathlib import Path
from types import TracebackType
from typing import Any

from sqlalchemy import Connection, Engine, Row, Select, insert, select, update
from sqlalchemy.exc import DBAPIError

from healthscore.config.overrides import Override
from healthscore.errors import OverrideNotFoundError
from healthscore.store.database import (
    StateStoreError,
    create_state_engine,
    describe_url,
    resolve_url,
    upgrade_schema,
    write_engine,
)
from healthscore.store.schema import audit, overrides

logger = logging.getLogger(__name__)

OVERRIDE_SUBJECT = "override"


@dataclass(frozen=True)
class AuditEntry:
    """One recorded change of the operational state."""

    id: int
    at: datetime
    actor: str
    action: str
    subject_kind: str
    count: int
    detail: dict[str, Any]


class StateStore:
    """Overrides and the audit log kept in a SQL database.

    Open it with :meth:`StateStore.open`, which also brings the schema up to date.
    Every change of an override is written together with its audit entry in one
    transaction.

    Parameters
    ----------
    engine : Engine
        Engine of a database whose schema is up to date.
    """

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self._writer = write_engine(engine)

    @classmethod
    def open(cls, url: str, root: Path) -> StateStore:
        """Connect to the store at `url` and apply any pending migrations.

        Parameters
        ----------
        url : str
            SQLAlchemy URL, such as ``sqlite:///.healthscore/state.db`` or
            ``postgresql+psycopg://user@host:5432/db``.
        root : Path
            Project folder that a relative SQLite path is resolved against.

        Raises
        ------
        ValueError
            When the URL is invalid or names an unsupported database.
        StateStoreError
            When the driver is missing or the database cannot be reached or migrated.
        """
        resolved = resolve_url(url, root)
        engine = create_state_engine(resolved)
        try:
            upgrade_schema(engine)
        except DBAPIError as exc:
            engine.dispose()
            raise StateStoreError(
                f"cannot open the state store at {describe_url(resolved)}: "
                f"{_first_line(exc.orig)}; check store.state in healthscore.yml and "
                "that the database is reachable"
            ) from exc
        return cls(engine)

    def close(self) -> None:
        """Close the store's database connections."""
        self.engine.dispose()

    def __enter__(self) -> StateStore:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"StateStore({describe_url(self.engine.url)!r})"

    # Overrides

    def add_override(
        self,
        account_id: str,
        *,
        score: float,
        reason: str,
        author: str,
        expires_on: date,
        measure: str | None = None,
        now: datetime | None = None,
    ) -> int:
        """Store a manual score for one account and return its id.

        Parameters
        ----------
        account_id : str
            Account the override applies to.
        score : float
            Score from 0 to 100 that replaces the computed one.
        reason : str
            Why the computed score is wrong.
        author : str
            Who sets the override; also recorded as the audit actor.
        expires_on : date
            Last as-of date on which the override applies; today or later.
        measure : str, optional
            Measure whose score is replaced; by default the whole health score.
        now : datetime, optional
            Timezone-aware creation time, by default the current time. Its date in its
            own time zone is "today" for the expiry check, so pass the project's
            local time to check against the project's calendar.

        Raises
        ------
        ValueError
            When a field is empty or out of range, or the expiry is in the past.
        """
        created_at = _aware_now(now)
        _check_override(account_id, score, reason, author, measure)
        _check_expiry(expires_on, created_at)
        values = {
            "account_id": account_id,
            "measure": measure,
            "score": float(score),
            "reason": reason,
            "author": author,
            "created_at": created_at,
            "expires_on": expires_on,
        }

        with self._write() as connection:
            statement = insert(overrides).values(**values).returning(overrides.c.id)
            override_id = connection.execute(statement).scalar_one()
            detail = _override_detail(override_id, values)
            record_audit(
                connection, created_at, author, "add", OVERRIDE_SUBJECT, detail
            )

        logger.info(
            "added override %d of %s for account %s",
            override_id,
            measure or "the score",
            account_id,
        )
        return override_id

    def remove_override(
        self, override_id: int, actor: str, *, now: datetime | None = None
    ) -> None:
        """Mark an override removed, so it no longer applies to any date.

        The row is kept, with its removal time, for the audit trail.

        Raises
        ------
        ValueError
            When `actor` is empty or the override was already removed.
        OverrideNotFoundError
            When no override has that id.
        """
        removed_at = _aware_now(now)
        _check_text("actor", actor, "give the name of the person removing it")

        with self._write() as connection:
            # FOR UPDATE makes a concurrent removal on PostgreSQL wait, then read
            # the removed_at that the first removal committed.
            row = connection.execute(
                select(overrides).where(overrides.c.id == override_id).with_for_update()
            ).first()
            row = self._check_removable(override_id, row)
            connection.execute(
                update(overrides)
                .where(overrides.c.id == override_id)
                .values(removed_at=removed_at)
            )
            detail = _override_detail(override_id, row._asdict())
            record_audit(
                connection, removed_at, actor, "remove", OVERRIDE_SUBJECT, detail
            )

        logger.info("removed override %d by %s", override_id, actor)

    def _check_removable(self, override_id: int, row: Row[Any] | None) -> Row[Any]:
        if row is None:
            raise OverrideNotFoundError(
                f"override {override_id} not found in "
                f"{describe_url(self.engine.url)}; list the overrides to see their ids"
            )
        if row.removed_at is not None:
            raise ValueError(
                f"override {override_id} was already removed at "
                f"{_as_utc(row.removed_at).isoformat()}"
            )
        return row

    def list_overrides(
        self,
        include_expired: bool = False,
        as_of: date | None = None,
        *,
        account_id: str | None = None,
    ) -> list[Override]:
        """List the overrides that were not removed, oldest first.

        Parameters
        ----------
        include_expired : bool
            Also list overrides whose expiry date is before `as_of`.
        as_of : date, optional
            Date that decides what is expired; by default today (UTC).
        account_id : str, optional
            Only the overrides of this account.
        """
        query = select(overrides).where(overrides.c.removed_at.is_(None))
        if not include_expired:
            day = as_of if as_of is not None else datetime.now(UTC).date()
            query = query.where(overrides.c.expires_on >= day)
        if account_id is not None:
            query = query.where(overrides.c.account_id == account_id)
        return self._fetch_overrides(query)

    def active_overrides(self, as_of: date) -> list[Override]:
        """Return the overrides that apply to scores as of `as_of`, oldest first.

        An override applies on every date up to and including its expiry date, also
        on dates before it was created, until it is removed.
        """
        query = select(overrides).where(
            overrides.c.removed_at.is_(None), overrides.c.expires_on >= as_of
        )
        return self._fetch_overrides(query)

    def _fetch_overrides(self, query: Select[Any]) -> list[Override]:
        ordered = query.order_by(overrides.c.created_at, overrides.c.id)
        with self.engine.connect() as connection:
            rows = connection.execute(ordered).all()
        return [_override_from_row(row) for row in rows]

    # Audit log

    def audit_entries(self, subject_kind: str | None = None) -> list[AuditEntry]:
        """Return the recorded changes, oldest first, optionally of one subject kind."""
        query = select(audit).order_by(audit.c.id)
        if subject_kind is not None:
            query = query.where(audit.c.subject_kind == subject_kind)
        with self.engine.connect() as connection:
            rows = connection.execute(query).all()
        return [AuditEntry(**row._asdict()) for row in rows]

    @contextmanager
    def _write(self) -> Iterator[Connection]:
        """Run a write transaction, reporting database failures as StateStoreError."""
        try:
            with self._writer.begin() as connection:
                yield connection
        except DBAPIError as exc:
            raise StateStoreError(
                f"writing to the state store at {describe_url(self.engine.url)} "
                f"failed: {_first_line(exc.orig)}; check that the database is "
                "reachable and writable"
            ) from exc


# Validation


def _check_override(
    account_id: str, score: float, reason: str, author: str, measure: str | None
) -> None:
    _check_text("account_id", account_id, "give the id of the account")
    _check_score(score)
    _check_text("reason", reason, "say why the computed score is wrong")
    _check_text("author", author, "give the name of the person setting it")
    if measure is not None:
        _check_text("measure", measure, "give a measure name, or None for the score")


def _check_text(field: str, value: object, advice: str) -> None:
    if not isinstance(value, str) or not value.strip():
        raise ValueError(f"{field} must not be empty, got {value!r}; {advice}")


def _check_score(score: object) -> None:
    # NaN fails the range check too.
    if (
        isinstance(score, bool)
        or not isinstance(score, numbers.Real)
        or not 0 <= float(score) <= 100
    ):
        raise ValueError(f"score must be a number from 0 to 100, got {score!r}")


def _check_expiry(expires_on: date, created_at: datetime) -> None:
    if not isinstance(expires_on, date) or isinstance(expires_on, datetime):
        raise ValueError(f"expires_on must be a datetime.date, got {expires_on!r}")
    today = created_at.date()
    if expires_on < today:
        raise ValueError(
            f"expires_on {expires_on.isoformat()} is in the past (today is "
            f"{today.isoformat()}); choose today or a later date"
        )


def _aware_now(now: datetime | None) -> datetime:
    if now is None:
        return datetime.now(UTC)
    if now.tzinfo is None:
        raise ValueError(
            f"now must be timezone-aware, got {now!r}; for example datetime.now(UTC)"
        )
    return now


# Rows


def _override_from_row(row: Row[Any]) -> Override:
    return Override(
        id=row.id,
        account_id=row.account_id,
        measure=row.measure,
        score=row.score,
        reason=row.reason,
        author=row.author,
        created_at=_as_utc(row.created_at),
        expires_on=row.expires_on,
    )


def _override_detail(override_id: int, values: dict[str, Any]) -> dict[str, Any]:
    """Build the JSON detail of an override's audit entry."""
    return {
        "override_id": override_id,
        "account_id": values["account_id"],
        "measure": values["measure"],
        "score": values["score"],
        "expires_on": values["expires_on"].isoformat(),
        "reason": values["reason"],
    }


def record_audit(
    connection: Connection,
    at: datetime,
    actor: str,
    action: str,
    subject_kind: str,
    detail: dict[str, Any],
) -> None:
    """Write one audit entry about one subject, in the caller's transaction."""
    connection.execute(
        insert(audit).values(
            at=at,
            actor=actor,
            action=action,
            subject_kind=subject_kind,
            count=1,
            detail=detail,
        )
    )


def _as_utc(value: datetime) -> datetime:
    return value.astimezone(UTC)


def _first_line(error: BaseException | None) -> str:
    return str(error).strip().splitlines()[0] if error is not None else "unknown error"
