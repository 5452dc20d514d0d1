"""Create the alert outbox: `alerts` and `deliveries`.

Revision ID: 0002
Revises: 0001
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    """Create `alerts` and `deliveries`."""
    op.create_table(
        "alerts",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("rule", sa.String, nullable=False),
        sa.Column("kind", sa.String, nullable=False),
        sa.Column("account_id", sa.String, nullable=False),
        sa.Column("as_of", sa.Date, nullable=False),
        sa.Column("severity", sa.String, nullable=False),
        sa.Column("owner", sa.String, nullable=True),
        sa.Column("escalate_to", sa.String, nullable=True),
        sa.Column("dedupe_key", sa.String, nullable=False),
        sa.Column("title", sa.Text, nullable=False),
        sa.Column("message", sa.Text, nullable=False),
        sa.Column(
            "details",
            sa.JSON().with_variant(postgresql.JSONB(), "postgresql"),
            nullable=False,
        ),
        sa.Column("state", sa.String, nullable=False),
        sa.Column("held", sa.Boolean, nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.UniqueConstraint("dedupe_key", name="uq_alerts_dedupe_key"),
        sa.CheckConstraint(
            "state IN ('open', 'acknowledged', 'resolved')", name="ck_alerts_state"
        ),
        sa.CheckConstraint(
            "severity IN ('info', 'warning', 'critical')", name="ck_alerts_severity"
        ),
    )
    op.create_index("ix_alerts_rule_account", "alerts", ["rule", "account_id"])
    op.create_table(
        "deliveries",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("alert_id", sa.Integer, sa.ForeignKey("alerts.id"), nullable=False),
        sa.Column("channel", sa.String, nullable=False),
        sa.Column("state", sa.String, nullable=False),
        sa.Column("attempts", sa.Integer, nullable=False),
        sa.Column("next_attempt_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("last_error", sa.Text, nullable=True),
        sa.Column("idempotency_key", sa.String, nullable=False),
        sa.Column("sent_at", sa.DateTime(timezone=True), nullable=True),
        sa.UniqueConstraint("idempotency_key", name="uq_deliveries_idempotency_key"),
        sa.CheckConstraint(
            "state IN ('pending', 'sent', 'dead')", name="ck_deliveries_state"
        ),
    )
    op.create_index("ix_deliveries_due", "deliveries", ["state", "next_attempt_at"])
    op.create_index("ix_deliveries_alert_id", "deliveries", ["alert_id"])


def downgrade() -> None:
    """Drop `deliveries` and `alerts`."""
    op.drop_index("ix_deliveries_alert_id", table_name="deliveries")
    op.drop_index("ix_deliveries_due", table_name="deliveries")
    op.drop_table("deliveries")
    op.drop_index("ix_alerts_rule_account", table_name="alerts")
    op.drop_table("alerts")
