"""Simulate monthly invoices: unhealthy accounts pay late more often, and later."""

from __future__ import annotations

import numpy as np
import pandas as pd

from healthscore.scaffold.accounts import Account
from healthscore.scaffold.common import (
    DATA_END,
    DAY_AFTER_END,
    days_later,
    table_of_rows,
)

_ISSUE_HOUR = 6


def invoices_table(rng: np.random.Generator, plans: list[Account]) -> pd.DataFrame:
    """Simulate one invoice per billing period, with status as of DATA_END's end."""
    rows = [row for plan in plans for row in _account_invoices(rng, plan)]
    return table_of_rows(
        rows,
        order=["issued_at", "account_id"],
        timestamps=("issued_at", "due_at", "paid_at"),
        id_column="invoice_id",
        id_prefix="INV",
    )


def _account_invoices(
    rng: np.random.Generator, plan: Account
) -> list[dict[str, object]]:
    terms = plan.terms
    rows: list[dict[str, object]] = []
    for start, seats in zip(plan.period_starts, plan.period_seats, strict=True):
        issued = start.astype("datetime64[s]") + np.timedelta64(_ISSUE_HOUR * 3600, "s")
        due = days_later(issued, terms.payment_days)
        rows.append(
            {
                "account_id": plan.account_id,
                "issued_at": issued,
                "due_at": due,
                "paid_at": _payment_time(rng, plan, plan.health_on(start), issued, due),
                "amount": int(seats) * terms.seat_price,
                "currency": "USD",
            }
        )
    if plan.churn is not None and rng.random() < 0.5:
        rows[-1]["paid_at"] = (
            None  # a leaving customer often leaves its last bill unpaid
        )
    for row in rows:
        row["status"] = _invoice_status(plan, row["paid_at"] is not None)
    return rows


def _payment_time(
    rng: np.random.Generator,
    plan: Account,
    health: float,
    issued: np.datetime64,
    due: np.datetime64,
) -> np.datetime64 | None:
    """When the invoice was paid, or None when it was still unpaid at DATA_END."""
    if rng.random() < 0.03 + 0.6 * (1 - health) ** 2:
        paid = days_later(due, 1 + rng.exponential(5 + 30 * (1 - health)))
    elif plan.segment == "smb":
        # The card on file is charged within the hour.
        paid = days_later(issued, rng.uniform(0.0, 1 / 24))
    else:
        paid = days_later(issued, rng.uniform(0.3, 0.95) * plan.terms.payment_days)
    return paid if paid < DAY_AFTER_END else None


def _invoice_status(plan: Account, paid: bool) -> str:
    """Status in the billing system's terms: paid, open or uncollectible."""
    if paid:
        return "paid"
    if plan.churn is not None and plan.churn <= DATA_END:
        return "uncollectible"
    return "open"
