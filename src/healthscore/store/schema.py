"""Tables of the operational store, as SQLAlchemy Core metadata.

The migrations in `healthscore/store/migrations/versions` create these tables. A test
in tests/test_state_store.py compares the migrated database with this metadata, so a
migration that disagrees with it fails the tests.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    CheckConstraint,
    Column,
    Date,
    DateTime,
    Dialect,
    Float,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.types import TypeDecorator

metadata = MetaData()

#: Name of Alembic's version table. The prefix leaves room for other applications that
#: keep their own Alembic history in the same PostgreSQL database.
VERSION_TABLE = "healthscore_schema_version"


class UTCDateTime(TypeDecorator[datetime]):
    """A timestamp stored in UTC and always read back timezone-aware.

    SQLite has no timezone type, so the UTC wall time is stored there and the UTC
    offset is attached again on read. Naive datetimes are rejected on write.
    """

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: Any, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if not isinstance(value, datetime) or value.tzinfo is None:
            raise ValueError(
                f"timestamp {value!r} has no time zone; pass an aware datetime such as "
                "datetime.now(UTC)"
            )
        in_utc = value.astimezone(UTC)
        return in_utc.replace(tzinfo=None) if dialect.name == "sqlite" else in_utc

    def process_result_value(self, value: Any, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value.astimezone(UTC)


# JSONB on PostgreSQL, so the detail can be indexed and queried, and JSON elsewhere.
JSONDocument = JSON().with_variant(JSONB(), "postgresql")

overrides = Table(
    "overrides",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("account_id", String, nullable=False),
    # NULL means the override replaces the whole score rather than one measure.
    Column("measure", String, nullable=True),
    Column("score", Float, nullable=False),
    Column("reason", Text, nullable=False),
    Column("author", String, nullable=False),
    Column("created_at", UTCDateTime, nullable=False),
    # Last as-of date on which the override applies.
    Column("expires_on", Date, nullable=False),
    Column("removed_at", UTCDateTime, nullable=True),
    CheckConstraint("score >= 0 AND score <= 100", name="ck_overrides_score_range"),
    Index("ix_overrides_account_id", "account_id"),
)

audit = Table(
    "audit",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("at", UTCDateTime, nullable=False),
    Column("actor", String, nullable=False),
    # For example `add` or `remove`.
    Column("action", String, nullable=False),
    # For example `override`.
    Column("subject_kind", String, nullable=False),
    # Number of subjects the action changed.
    Column("count", Integer, nullable=False),
    Column("detail", JSONDocument, nullable=False),
)

from healthscore.store import tables_alerts as _tables_alerts  # noqa: E402,F401
from healthscore.store import tables_tasks as _tables_tasks  # noqa: E402,F401
from healthscore.store import tables_tokens as _tables_tokens  # noqa: E402,F401
