"""Create the overrides table and the audit log.

Revision ID: 0001
Revises:
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    """Create `overrides` and `audit`."""
    op.create_table(
        "overrides",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("account_id", sa.String, nullable=False),
        sa.Column("measure", sa.String, nullable=True),
        sa.Column("score", sa.Float, nullable=False),
        sa.Column("reason", sa.Text, nullable=False),
        sa.Column("author", sa.String, nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("expires_on", sa.Date, nullable=False),
        sa.Column("removed_at", sa.DateTime(timezone=True), nullable=True),
        sa.CheckConstraint(
            "score >= 0 AND score <= 100", name="ck_overrides_score_range"
        ),
    )
    op.create_index("ix_overrides_account_id", "overrides", ["account_id"])
    op.create_table(
        "audit",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("actor", sa.String, nullable=False),
        sa.Column("action", sa.String, nullable=False),
        sa.Column("subject_kind", sa.String, nullable=False),
        sa.Column("count", sa.Integer, nullable=False),
        sa.Column(
            "detail",
            sa.JSON().with_variant(postgresql.JSONB(), "postgresql"),
            nullable=False,
        ),
    )


def downgrade() -> None:
    """Drop `audit` and `overrides`."""
    op.drop_table("audit")
    op.drop_index("ix_overrides_account_id", table_name="overrides")
    op.drop_table("overrides")
