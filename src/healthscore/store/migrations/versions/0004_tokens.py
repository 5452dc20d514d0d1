"""Create the api_tokens table of the web service.

Revision ID: 0004
Revises: 0003
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    """Create `api_tokens`."""
    op.create_table(
        "api_tokens",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("name", sa.String, nullable=False),
        sa.Column("role", sa.String, nullable=False),
        sa.Column("owner", sa.String, nullable=True),
        sa.Column("secret_sha256", sa.String(64), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("revoked_at", sa.DateTime(timezone=True), nullable=True),
        sa.CheckConstraint(
            "role IN ('admin', 'analyst', 'csm', 'viewer')", name="ck_api_tokens_role"
        ),
        sa.CheckConstraint(
            "(role = 'csm' AND owner IS NOT NULL) OR role <> 'csm'",
            name="ck_api_tokens_csm_owner",
        ),
        sa.UniqueConstraint("secret_sha256", name="uq_api_tokens_secret_sha256"),
    )


def downgrade() -> None:
    """Drop `api_tokens`."""
    op.drop_table("api_tokens")
