"""Tables of tasks, outcomes, interventions and notes in the operational store.

Migration `0003_tasks.py` creates them. They are defined on the shared metadata of
`healthscore.store.schema`, which imports this module, so the schema test compares
them with the migrated database too.
"""

from __future__ import annotations

from sqlalchemy import (
    CheckConstraint,
    Column,
    Date,
    Float,
    ForeignKey,
    Index,
    Integer,
    String,
    Table,
    Text,
    UniqueConstraint,
    text,
)

from healthscore.store.schema import UTCDateTime, metadata

TASK_STATES = ("open", "completed", "dismissed")
TASK_PRIORITIES = ("low", "medium", "high", "urgent")
OUTCOME_KINDS = ("churned", "renewed", "expanded", "contracted")

#: Condition of the partial unique index: one open task per cause.
OPEN_TASK = "state = 'open'"


def _quoted(values: tuple[str, ...]) -> str:
    return ", ".join(f"'{value}'" for value in values)


tasks = Table(
    "tasks",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("playbook", String, nullable=False),
    Column("account_id", String, nullable=False),
    # Playbook, account and trigger, for example `ebr|a1|alert:score_drop`.
    Column("cause_key", String, nullable=False),
    Column("title", Text, nullable=False),
    Column("description", Text, nullable=False),
    Column("owner", String, nullable=True),
    Column("due_on", Date, nullable=False),
    Column("priority", String, nullable=False),
    Column("state", String, nullable=False),
    # Position among the account's open tasks, 1..n; 1 addresses the largest
    # points lost.
    Column("rank", Integer, nullable=False),
    Column("created_at", UTCDateTime, nullable=False),
    Column("closed_at", UTCDateTime, nullable=True),
    Column("closed_by", String, nullable=True),
    # Completion note or dismissal reason.
    Column("note", Text, nullable=True),
    CheckConstraint(f"state IN ({_quoted(TASK_STATES)})", name="ck_tasks_state"),
    CheckConstraint(
        f"priority IN ({_quoted(TASK_PRIORITIES)})", name="ck_tasks_priority"
    ),
    CheckConstraint(
        "(state = 'open' AND closed_at IS NULL AND closed_by IS NULL) OR "
        "(state <> 'open' AND closed_at IS NOT NULL AND closed_by IS NOT NULL)",
        name="ck_tasks_closed",
    ),
    Index("ix_tasks_account_id", "account_id"),
    Index(
        "uq_tasks_open_cause",
        "cause_key",
        unique=True,
        sqlite_where=text(OPEN_TASK),
        postgresql_where=text(OPEN_TASK),
    ),
)

outcomes = Table(
    "outcomes",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("account_id", String, nullable=False),
    Column("kind", String, nullable=False),
    Column("occurred_on", Date, nullable=False),
    Column("arr_before", Float, nullable=True),
    Column("arr_after", Float, nullable=True),
    # Where the row came from, for example the imported file's name.
    Column("source", String, nullable=True),
    Column("imported_at", UTCDateTime, nullable=False),
    CheckConstraint(f"kind IN ({_quoted(OUTCOME_KINDS)})", name="ck_outcomes_kind"),
    CheckConstraint(
        "(arr_before IS NULL OR arr_before >= 0) AND "
        "(arr_after IS NULL OR arr_after >= 0)",
        name="ck_outcomes_arr",
    ),
    UniqueConstraint(
        "account_id", "kind", "occurred_on", name="uq_outcomes_account_kind_date"
    ),
)

interventions = Table(
    "interventions",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("account_id", String, nullable=False),
    # Playbook name or another kind of action, such as `exec_call`.
    Column("kind", String, nullable=False),
    Column("occurred_on", Date, nullable=False),
    # Set when the intervention is a completed task; one intervention per task.
    Column("task_id", Integer, ForeignKey("tasks.id"), nullable=True),
    Column("author", String, nullable=False),
    Column("note", Text, nullable=True),
    Column("created_at", UTCDateTime, nullable=False),
    UniqueConstraint("task_id", name="uq_interventions_task_id"),
    Index("ix_interventions_account_id", "account_id"),
)

notes = Table(
    "notes",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("account_id", String, nullable=False),
    Column("author", String, nullable=False),
    Column("noted_on", Date, nullable=False),
    # 1 (very negative) to 5 (very positive); NULL when the author gave none.
    Column("sentiment", Integer, nullable=True),
    Column("text", Text, nullable=False),
    Column("created_at", UTCDateTime, nullable=False),
    CheckConstraint(
        "sentiment IS NULL OR (sentiment >= 1 AND sentiment <= 5)",
        name="ck_notes_sentiment",
    ),
    Index("ix_notes_account_id", "account_id"),
)
