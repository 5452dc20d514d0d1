"""Table of the web service's API tokens in the operational store.

Migration `0004_tokens.py` creates it. Only the SHA-256 hash of a token's secret is
stored, so the table cannot give a token back.
"""

from __future__ import annotations

from sqlalchemy import CheckConstraint, Column, Integer, String, Table, UniqueConstraint

from healthscore.choices import TOKEN_ROLES
from healthscore.store.schema import UTCDateTime, metadata


def _quoted(values: tuple[str, ...]) -> str:
    return ", ".join(f"'{value}'" for value in values)


api_tokens = Table(
    "api_tokens",
    metadata,
    Column("id", Integer, primary_key=True),
    # Label shown by `token list`, for example the person or system using it.
    Column("name", String, nullable=False),
    Column("role", String, nullable=False),
    # Account owner whose accounts a `csm` token can read; NULL for the other roles.
    Column("owner", String, nullable=True),
    # Hex SHA-256 of the token's secret part.
    Column("secret_sha256", String(64), nullable=False),
    Column("created_at", UTCDateTime, nullable=False),
    Column("revoked_at", UTCDateTime, nullable=True),
    CheckConstraint(f"role IN ({_quoted(TOKEN_ROLES)})", name="ck_api_tokens_role"),
    CheckConstraint(
        "(role = 'csm' AND owner IS NOT NULL) OR role <> 'csm'",
        name="ck_api_tokens_csm_owner",
    ),
    UniqueConstraint("secret_sha256", name="uq_api_tokens_secret_sha256"),
)


# Write keys of the ingest routes; migration `0005_write_keys.py` creates the table.
write_keys = Table(
    "write_keys",
    metadata,
    Column("id", Integer, primary_key=True),
    # Store source (a source with `path: store`) that the key appends to.
    Column("source", String, nullable=False),
    # Hex SHA-256 of the key's secret part.
    Column("secret_sha256", String(64), nullable=False),
    Column("created_at", UTCDateTime, nullable=False),
    Column("revoked_at", UTCDateTime, nullable=True),
    UniqueConstraint("secret_sha256", name="uq_write_keys_secret_sha256"),
)
