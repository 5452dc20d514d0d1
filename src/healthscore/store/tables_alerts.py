"""Tables of the alert outbox: raised alerts and their deliveries, one per channel.

Migration 0002 creates them. The unique `dedupe_key` makes storing an alert
idempotent, and the unique `idempotency_key` is sent to the receiver on every attempt
to deliver the same alert to the same channel.
"""

from __future__ import annotations

from sqlalchemy import (
    Boolean,
    CheckConstraint,
    Column,
    Date,
    ForeignKey,
    Index,
    Integer,
    String,
    Table,
    Text,
    UniqueConstraint,
)

from healthscore.store.schema import JSONDocument, UTCDateTime, metadata

#: States of an alert, as an operator moves it along.
ALERT_STATES = ("open", "acknowledged", "resolved")

#: States of a delivery: waiting for its next attempt, delivered, or given up.
DELIVERY_STATES = ("pending", "sent", "dead")

alerts = Table(
    "alerts",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("rule", String, nullable=False),
    Column("kind", String, nullable=False),
    # `*` for an alert about the whole run, such as the guard's.
    Column("account_id", String, nullable=False),
    Column("as_of", Date, nullable=False),
    Column("severity", String, nullable=False),
    Column("owner", String, nullable=True),
    Column("escalate_to", String, nullable=True),
    Column("dedupe_key", String, nullable=False),
    Column("title", Text, nullable=False),
    Column("message", Text, nullable=False),
    Column("details", JSONDocument, nullable=False),
    Column("state", String, nullable=False),
    # A held alert is stored but not delivered until it is resent.
    Column("held", Boolean, nullable=False),
    Column("created_at", UTCDateTime, nullable=False),
    Column("updated_at", UTCDateTime, nullable=False),
    UniqueConstraint("dedupe_key", name="uq_alerts_dedupe_key"),
    CheckConstraint(
        "state IN ('open', 'acknowledged', 'resolved')", name="ck_alerts_state"
    ),
    CheckConstraint(
        "severity IN ('info', 'warning', 'critical')", name="ck_alerts_severity"
    ),
    Index("ix_alerts_rule_account", "rule", "account_id"),
)

deliveries = Table(
    "deliveries",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("alert_id", Integer, ForeignKey("alerts.id"), nullable=False),
    Column("channel", String, nullable=False),
    Column("state", String, nullable=False),
    Column("attempts", Integer, nullable=False),
    # NULL once the delivery is sent or dead.
    Column("next_attempt_at", UTCDateTime, nullable=True),
    Column("last_error", Text, nullable=True),
    Column("idempotency_key", String, nullable=False),
    Column("sent_at", UTCDateTime, nullable=True),
    UniqueConstraint("idempotency_key", name="uq_deliveries_idempotency_key"),
    CheckConstraint("state IN ('pending', 'sent', 'dead')", name="ck_deliveries_state"),
    Index("ix_deliveries_due", "state", "next_attempt_at"),
    Index("ix_deliveries_alert_id", "alert_id"),
)
