"""Create the tasks, outcomes, interventions and notes tables.

Revision ID: 0003
Revises: 0002
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

_OPEN_TASK = "state = 'open'"


def upgrade() -> None:
    """Create `tasks`, `outcomes`, `interventions` and `notes`."""
    _create_tasks()
    _create_outcomes()
    _create_interventions()
    _create_notes()


def _create_tasks() -> None:
    op.create_table(
        "tasks",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("playbook", sa.String, nullable=False),
        sa.Column("account_id", sa.String, nullable=False),
        sa.Column("cause_key", sa.String, nullable=False),
        sa.Column("title", sa.Text, nullable=False),
        sa.Column("description", sa.Text, nullable=False),
        sa.Column("owner", sa.String, nullable=True),
        sa.Column("due_on", sa.Date, nullable=False),
        sa.Column("priority", sa.String, nullable=False),
        sa.Column("state", sa.String, nullable=False),
        sa.Column("rank", sa.Integer, nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("closed_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("closed_by", sa.String, nullable=True),
        sa.Column("note", sa.Text, nullable=True),
        sa.CheckConstraint(
            "state IN ('open', 'completed', 'dismissed')", name="ck_tasks_state"
        ),
        sa.CheckConstraint(
            "priority IN ('low', 'medium', 'high', 'urgent')", name="ck_tasks_priority"
        ),
        sa.CheckConstraint(
            "(state = 'open' AND closed_at IS NULL AND closed_by IS NULL) OR "
            "(state <> 'open' AND closed_at IS NOT NULL AND closed_by IS NOT NULL)",
            name="ck_tasks_closed",
        ),
    )
    op.create_index("ix_tasks_account_id", "tasks", ["account_id"])
    op.create_index(
        "uq_tasks_open_cause",
        "tasks",
        ["cause_key"],
        unique=True,
        sqlite_where=sa.text(_OPEN_TASK),
        postgresql_where=sa.text(_OPEN_TASK),
    )


def _create_outcomes() -> None:
    op.create_table(
        "outcomes",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("account_id", sa.String, nullable=False),
        sa.Column("kind", sa.String, nullable=False),
        sa.Column("occurred_on", sa.Date, nullable=False),
        sa.Column("arr_before", sa.Float, nullable=True),
        sa.Column("arr_after", sa.Float, nullable=True),
        sa.Column("source", sa.String, nullable=True),
        sa.Column("imported_at", sa.DateTime(timezone=True), nullable=False),
        sa.CheckConstraint(
            "kind IN ('churned', 'renewed', 'expanded', 'contracted')",
            name="ck_outcomes_kind",
        ),
        sa.CheckConstraint(
            "(arr_before IS NULL OR arr_before >= 0) AND "
            "(arr_after IS NULL OR arr_after >= 0)",
            name="ck_outcomes_arr",
        ),
        sa.UniqueConstraint(
            "account_id", "kind", "occurred_on", name="uq_outcomes_account_kind_date"
        ),
    )


def _create_interventions() -> None:
    op.create_table(
        "interventions",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("account_id", sa.String, nullable=False),
        sa.Column("kind", sa.String, nullable=False),
        sa.Column("occurred_on", sa.Date, nullable=False),
        sa.Column("task_id", sa.Integer, sa.ForeignKey("tasks.id"), nullable=True),
        sa.Column("author", sa.String, nullable=False),
        sa.Column("note", sa.Text, nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.UniqueConstraint("task_id", name="uq_interventions_task_id"),
    )
    op.create_index("ix_interventions_account_id", "interventions", ["account_id"])


def _create_notes() -> None:
    op.create_table(
        "notes",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("account_id", sa.String, nullable=False),
        sa.Column("author", sa.String, nullable=False),
        sa.Column("noted_on", sa.Date, nullable=False),
        sa.Column("sentiment", sa.Integer, nullable=True),
        sa.Column("text", sa.Text, nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.CheckConstraint(
            "sentiment IS NULL OR (sentiment >= 1 AND sentiment <= 5)",
            name="ck_notes_sentiment",
        ),
    )
    op.create_index("ix_notes_account_id", "notes", ["account_id"])


def downgrade() -> None:
    """Drop `notes`, `interventions`, `outcomes` and `tasks`."""
    op.drop_index("ix_notes_account_id", table_name="notes")
    op.drop_table("notes")
    op.drop_index("ix_interventions_account_id", table_name="interventions")
    op.drop_table("interventions")
    op.drop_table("outcomes")
    op.drop_index("uq_tasks_open_cause", table_name="tasks")
    op.drop_index("ix_tasks_account_id", table_name="tasks")
    op.drop_table("tasks")
