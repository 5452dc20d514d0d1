"""Write keys of the ingest routes: creation, listing, revocation and verification.

A write key reads ``wk_<id>_<secret>`` and appends events to one store source. As
with Segment's HTTP API, a client sends it as the user name of HTTP basic
authentication with an empty password. The store keeps only the SHA-256 hash of
the secret, compared with `hmac.compare_digest` as for API tokens.
"""

from __future__ import annotations

import dataclasses
import logging
import re
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Row, insert, select, update
from sqlalchemy.exc import DBAPIError

from healthscore.config import Project
from healthscore.config.retention import is_store_source
from healthscore.service.tokens import (
    SECRET_BYTES,
    find_active_row,
    forget_cached_row,
    hash_secret,
)
from healthscore.store import StateStore, StateStoreError
from healthscore.store.database import describe_url, write_engine
from healthscore.store.tables_tokens import write_keys

logger = logging.getLogger(__name__)

WRITE_KEY_PREFIX = "wk_"

_KEY_PATTERN = re.compile(r"^wk_([0-9]{1,18})_([A-Za-z0-9_-]{43})$")


class WriteKeyNotFoundError(LookupError):
    """A write key id that is not in the store."""


@dataclass(frozen=True)
class WriteKeyInfo:
    """A stored write key without its secret."""

    id: int
    source: str
    created_at: datetime
    revoked_at: datetime | None


@dataclass(frozen=True)
class CreatedWriteKey:
    """A new write key: its stored record and the key text, shown only once."""

    info: WriteKeyInfo
    key: str


def check_store_source(project: Project, source: str) -> None:
    """Raise ValueError unless `source` is a store source of `project`."""
    settings = project.config.sources.get(source)
    store_names = [n for n, s in project.config.sources.items() if is_store_source(s)]
    if settings is None or not is_store_source(settings):
        raise ValueError(
            f"{source!r} is not a store source (a source with `path: store`); use "
            f"one of: {', '.join(store_names) or 'none, so add one first'}"
        )


def create_write_key(
    state: StateStore, project: Project, source: str, *, now: datetime | None = None
) -> CreatedWriteKey:
    """Store a new write key for store source `source` and return it with its text.

    Raises ValueError when `source` is not a store source of `project`.
    """
    check_store_source(project, source)
    created_at = now if now is not None else datetime.now(UTC)
    secret = secrets.token_urlsafe(SECRET_BYTES)
    values = {
        "source": source,
        "secret_sha256": hash_secret(secret),
        "created_at": created_at,
    }
    try:
        with write_engine(state.engine).begin() as connection:
            key_id = connection.execute(
                insert(write_keys).values(**values).returning(write_keys.c.id)
            ).scalar_one()
    except DBAPIError as exc:
        first = str(exc.orig).strip().splitlines()[0] if exc.orig else "unknown error"
        raise StateStoreError(
            f"writing to the state store at {describe_url(state.engine.url)} "
            f"failed: {first}; check that the database is reachable and writable"
        ) from exc
    logger.info("created write key %d for source %s", key_id, source)
    info = WriteKeyInfo(
        id=key_id, source=source, created_at=created_at, revoked_at=None
    )
    return CreatedWriteKey(info=info, key=f"{WRITE_KEY_PREFIX}{key_id}_{secret}")


def list_write_keys(
    state: StateStore, *, include_revoked: bool = False
) -> list[WriteKeyInfo]:
    """List the stored write keys by id, without their secrets."""
    query = select(write_keys).order_by(write_keys.c.id)
    if not include_revoked:
        query = query.where(write_keys.c.revoked_at.is_(None))
    with state.engine.connect() as connection:
        rows = connection.execute(query).all()
    return [_info(row) for row in rows]


def revoke_write_key(
    state: StateStore, key_id: int, *, now: datetime | None = None
) -> WriteKeyInfo:
    """Mark a write key revoked, so it no longer authenticates.

    Raises WriteKeyNotFoundError for an unknown id and ValueError when the key was
    revoked already.
    """
    revoked_at = now if now is not None else datetime.now(UTC)
    with write_engine(state.engine).begin() as connection:
        row = connection.execute(
            select(write_keys).where(write_keys.c.id == key_id)
        ).first()
        if row is None:
            raise WriteKeyNotFoundError(
                f"write key {key_id} not found; run `healthscore writekey list` to "
                "see ids"
            )
        if row.revoked_at is not None:
            raise ValueError(
                f"write key {key_id} was already revoked at "
                f"{row.revoked_at.isoformat()}"
            )
        connection.execute(
            update(write_keys)
            .where(write_keys.c.id == key_id)
            .values(revoked_at=revoked_at)
        )
    forget_cached_row(state, write_keys, key_id)
    logger.info("revoked write key %d", key_id)
    return dataclasses.replace(_info(row), revoked_at=revoked_at)


def verify_write_key(state: StateStore, key: str) -> WriteKeyInfo | None:
    """Return the active write key that `key` is the text of, or None."""
    row = find_active_row(state, write_keys, _KEY_PATTERN, key)
    return _info(row) if row is not None else None


def _info(row: Row[Any]) -> WriteKeyInfo:
    return WriteKeyInfo(
        id=row.id,
        source=row.source,
        created_at=row.created_at,
        revoked_at=row.revoked_at,
    )
