"""Simulate support tickets: unhealthy accounts file more, and more urgent, tickets."""

from __future__ import annotations

import numpy as np
import pandas as pd

from healthscore.scaffold import texts
from healthscore.scaffold.accounts import Account
from healthscore.scaffold.common import (
    DAY_AFTER_END,
    at_working_hour,
    pick,
    table_of_rows,
)

_PRIORITIES = ("low", "normal", "high", "urgent")
_RESOLUTION_HOURS = {"low": 90.0, "normal": 40.0, "high": 20.0, "urgent": 6.0}
_CLOSE_AFTER_DAYS = 28
"""A solved ticket is closed this many days after it was solved."""


def tickets_table(rng: np.random.Generator, plans: list[Account]) -> pd.DataFrame:
    """Simulate tickets, with status as the help desk shows it at DATA_END's end."""
    rows = [row for plan in plans for row in _account_tickets(rng, plan)]
    tickets = table_of_rows(
        rows,
        order=["created_at", "account_id"],
        timestamps=("created_at", "resolved_at"),
        id_column="ticket_id",
        id_prefix="T",
    )
    tickets["satisfaction"] = tickets["satisfaction"].astype("Int64")
    return tickets


def _account_tickets(
    rng: np.random.Generator, plan: Account
) -> list[dict[str, object]]:
    daily_rate = plan.terms.tickets_per_month / 30 * (0.6 + 1.6 * (1 - plan.health))
    counts = rng.poisson(daily_rate)
    rows = []
    for day_index in np.repeat(np.arange(len(plan.days)), counts):
        created = at_working_hour(rng, plan.days[day_index])
        rows.append(_ticket_row(rng, plan, float(plan.health[day_index]), created))
    return rows


def _ticket_row(
    rng: np.random.Generator, plan: Account, health: float, created: np.datetime64
) -> dict[str, object]:
    priority = _priority(rng, health)
    hours = _RESOLUTION_HOURS[priority] * rng.lognormal(0.0, 0.7) * (2 - health)
    resolved = created + np.timedelta64(int(hours * 3600), "s")
    if resolved >= DAY_AFTER_END:
        resolved_at, status = None, pick(rng, ("open", "pending"))
    else:
        closed = resolved < DAY_AFTER_END - _CLOSE_AFTER_DAYS
        resolved_at, status = resolved, "closed" if closed else "solved"
    subject, text = _ticket_text(rng, health)
    return {
        "account_id": plan.account_id,
        "created_at": created,
        "priority": priority,
        "status": status,
        "resolved_at": resolved_at,
        "satisfaction": _satisfaction(rng, health, priority, resolved_at is not None),
        "subject": subject,
        "text": text,
    }


def _priority(rng: np.random.Generator, health: float) -> str:
    urgent = 0.03 + 0.15 * (1 - health)
    high = 0.12 + 0.2 * (1 - health)
    normal = 0.48
    chances = [1 - urgent - high - normal, normal, high, urgent]
    return str(rng.choice(_PRIORITIES, p=chances))


def _satisfaction(
    rng: np.random.Generator, health: float, priority: str, resolved: bool
) -> int | None:
    """CSAT from 1 to 5, given for about 40 % of the resolved tickets."""
    rated = rng.random() < 0.4
    if not (resolved and rated):
        return None
    penalty = 0.5 if priority == "urgent" else 0.0
    rating = 1.5 + 3.5 * health + rng.normal(0.0, 0.7) - penalty
    return int(np.clip(round(rating), 1, 5))


def _ticket_text(rng: np.random.Generator, health: float) -> tuple[str, str]:
    tone = _tone(health + rng.normal(0.0, 0.1))
    subject, detail = texts.TICKET_TOPICS[int(rng.integers(len(texts.TICKET_TOPICS)))]
    opening = pick(rng, texts.TICKET_OPENINGS[tone])
    closing = pick(rng, texts.TICKET_CLOSINGS[tone])
    return subject, f"{opening} {detail} {closing}"


def _tone(health: float) -> str:
    if health > 0.7:
        return "positive"
    if health < 0.35:
        return "negative"
    return "neutral"
