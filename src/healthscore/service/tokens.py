"""API tokens: creation, listing, revocation and verification in the operational store.

A token reads ``hs_<id>_<secret>``, where the secret is 32 random bytes in URL-safe
Base64. The store keeps only the SHA-256 hash of the secret, and verification
compares hashes with `hmac.compare_digest`, so its duration does not depend on how
many leading characters of a guess are right.

The service verifies a token on every request. The stored row of a verified token
is kept in memory for up to `ROW_CACHE_SECONDS`, so a burst of requests with the
same token reads the store once. A revocation through this process takes effect at
once; one made elsewhere (another process, or the command line) within that time.
"""

from __future__ import annotations

import dataclasses
import hashlib
import hmac
import logging
import re
import secrets
import threading
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Row, Table, insert, select, update
from sqlalchemy.exc import DBAPIError

from healthscore.store import StateStore, StateStoreError
from healthscore.store.database import describe_url, write_engine
from healthscore.store.tables_tokens import TOKEN_ROLES, api_tokens

logger = logging.getLogger(__name__)

TOKEN_PREFIX = "hs_"
SECRET_BYTES = 32

_TOKEN_PATTERN = re.compile(r"^hs_([0-9]{1,18})_([A-Za-z0-9_-]{43})$")

# Hash compared against when the token id is unknown, so that path does the same work.
_UNKNOWN_HASH = hashlib.sha256(b"no such token").hexdigest()

#: Seconds a verified token's or write key's stored row is reused without reading
#: the store again.
ROW_CACHE_SECONDS = 1.0

# (store URL, table, id) -> (monotonic time read, row). Only found rows are kept,
# so a token created just now is not refused from a cached miss.
_rows: dict[tuple[str, str, int], tuple[float, Row[Any]]] = {}
_rows_guard = threading.Lock()


class TokenNotFoundError(LookupError):
    """A token id that is not in the store."""


@dataclass(frozen=True)
class TokenInfo:
    """A stored token without its secret."""

    id: int
    name: str
    role: str
    owner: str | None
    created_at: datetime
    revoked_at: datetime | None

    @property
    def actor(self) -> str:
        """Name recorded as the author of changes made with the token."""
        return self.owner or self.name


@dataclass(frozen=True)
class CreatedToken:
    """A new token: its stored record and the token text, shown only once."""

    info: TokenInfo
    token: str


def hash_secret(secret: str) -> str:
    """Return the hex SHA-256 of a token's secret part."""
    return hashlib.sha256(secret.encode("ascii")).hexdigest()


def create_token(
    state: StateStore,
    *,
    role: str,
    name: str,
    owner: str | None = None,
    now: datetime | None = None,
) -> CreatedToken:
    """Store a new token and return it with its text.

    Raises
    ------
    ValueError
        When the role is unknown, the name is empty, or a `csm` token has no owner.
    """
    if role not in TOKEN_ROLES:
        raise ValueError(f"unknown role {role!r}; use one of {', '.join(TOKEN_ROLES)}")
    if not name or not name.strip():
        raise ValueError("token name must not be empty; give the person or system")
    if owner is not None and not owner.strip():
        raise ValueError("owner must not be empty; give the account owner's name")
    if role == "csm" and owner is None:
        raise ValueError(
            "a csm token needs --owner, the account owner whose accounts it sees"
        )
    created_at = now if now is not None else datetime.now(UTC)
    secret = secrets.token_urlsafe(SECRET_BYTES)
    label = name.strip()
    owner_name = owner.strip() if owner is not None else None
    values = {
        "name": label,
        "role": role,
        "owner": owner_name,
        "secret_sha256": hash_secret(secret),
        "created_at": created_at,
    }
    try:
        with write_engine(state.engine).begin() as connection:
            token_id = connection.execute(
                insert(api_tokens).values(**values).returning(api_tokens.c.id)
            ).scalar_one()
    except DBAPIError as exc:
        raise _store_error(state, exc) from exc
    logger.info("created token %d with role %s", token_id, role)
    info = TokenInfo(
        id=token_id,
        name=label,
        role=role,
        owner=owner_name,
        created_at=created_at,
        revoked_at=None,
    )
    return CreatedToken(info=info, token=f"{TOKEN_PREFIX}{token_id}_{secret}")


def list_tokens(state: StateStore, *, include_revoked: bool = False) -> list[TokenInfo]:
    """List the stored tokens by id, without their secrets."""
    query = select(api_tokens).order_by(api_tokens.c.id)
    if not include_revoked:
        query = query.where(api_tokens.c.revoked_at.is_(None))
    with state.engine.connect() as connection:
        rows = connection.execute(query).all()
    return [_info(row) for row in rows]


def revoke_token(
    state: StateStore, token_id: int, *, now: datetime | None = None
) -> TokenInfo:
    """Mark a token revoked, so it no longer authenticates.

    Raises
    ------
    TokenNotFoundError
        When no token has that id.
    ValueError
        When the token was revoked already.
    """
    revoked_at = now if now is not None else datetime.now(UTC)
    with write_engine(state.engine).begin() as connection:
        row = connection.execute(
            select(api_tokens).where(api_tokens.c.id == token_id)
        ).first()
        if row is None:
            raise TokenNotFoundError(
                f"token {token_id} not found; run `healthscore token list` to see ids"
            )
        if row.revoked_at is not None:
            raise ValueError(
                f"token {token_id} was already revoked at {row.revoked_at.isoformat()}"
            )
        connection.execute(
            update(api_tokens)
            .where(api_tokens.c.id == token_id)
            .values(revoked_at=revoked_at)
        )
    forget_cached_row(state, api_tokens, token_id)
    logger.info("revoked token %d", token_id)
    return dataclasses.replace(_info(row), revoked_at=revoked_at)


def verify_token(state: StateStore, token: str) -> TokenInfo | None:
    """Return the active token that `token` is the text of, or None.

    None covers malformed text, unknown ids, wrong secrets and revoked tokens alike.
    """
    row = find_active_row(state, api_tokens, _TOKEN_PATTERN, token)
    return _info(row) if row is not None else None


def find_active_row(
    state: StateStore, table: Table, pattern: re.Pattern[str], text: str
) -> Row[Any] | None:
    """Return the unrevoked row of `table` whose id and secret `text` carries, or None.

    `pattern` captures the id and the secret. An unknown id is compared against a
    fixed hash, so it takes as long as a wrong secret.
    """
    match = pattern.match(text)
    if match is None:
        return None
    row_id = int(match.group(1))
    secret_hash = hash_secret(match.group(2))
    key = (str(state.engine.url), table.name, row_id)
    with _rows_guard:
        cached = _rows.get(key)
    # Only a fresh cached row that accepts the token is trusted. Any other result
    # is checked against the store again.
    if (
        cached is not None
        and time.monotonic() - cached[0] < ROW_CACHE_SECONDS
        and _accepts(cached[1], secret_hash)
    ):
        return cached[1]
    read_at = time.monotonic()
    with state.engine.connect() as connection:
        row = connection.execute(select(table).where(table.c.id == row_id)).first()
    with _rows_guard:
        if row is None:
            _rows.pop(key, None)
        else:
            _rows[key] = (read_at, row)
    return row if _accepts(row, secret_hash) else None


def _accepts(row: Row[Any] | None, secret_hash: str) -> bool:
    expected = row.secret_sha256 if row is not None else _UNKNOWN_HASH
    matches = hmac.compare_digest(secret_hash, expected)
    return row is not None and matches and row.revoked_at is None


def forget_cached_row(state: StateStore, table: Table, row_id: int) -> None:
    """Drop the cached row of a token or write key, as its revocation does."""
    with _rows_guard:
        _rows.pop((str(state.engine.url), table.name, row_id), None)


def _info(row: Row[Any]) -> TokenInfo:
    return TokenInfo(
        id=row.id,
        name=row.name,
        role=row.role,
        owner=row.owner,
        created_at=row.created_at,
        revoked_at=row.revoked_at,
    )


def _store_error(state: StateStore, error: DBAPIError) -> StateStoreError:
    first = str(error.orig).strip().splitlines()[0] if error.orig else "unknown error"
    return StateStoreError(
        f"writing to the state store at {describe_url(state.engine.url)} failed: "
        f"{first}; check that the database is reachable and writable"
    )
