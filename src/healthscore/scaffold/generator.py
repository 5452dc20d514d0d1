"""Generate the sample tables of a new project from one seeded random Generator.

Nothing here is real. Each account follows a hidden health curve (see
`healthscore.scaffold.accounts`) that drives its usage, tickets, payments, survey
answers and CSM notes, so that scores spread across the bands. The tables are drawn
in a fixed order from one numpy Generator, so the same seed and account count always
give the same tables.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from healthscore.choices import MAX_ACCOUNTS, MIN_ACCOUNTS
from healthscore.scaffold import texts
from healthscore.scaffold.accounts import (
    accounts_table,
    plan_accounts,
    subscriptions_table,
)
from healthscore.scaffold.billing import invoices_table
from healthscore.scaffold.feedback import notes_table, surveys_table
from healthscore.scaffold.support import tickets_table
from healthscore.scaffold.usage import events_table


@dataclass(frozen=True)
class SampleData:
    """The generated tables, one DataFrame per file of the sample."""

    accounts: pd.DataFrame
    owners: pd.DataFrame
    subscriptions: pd.DataFrame
    events: pd.DataFrame
    tickets: pd.DataFrame
    invoices: pd.DataFrame
    surveys: pd.DataFrame
    notes: pd.DataFrame
    profiles: pd.DataFrame
    """Hidden profile of each account; no file contains it, so no score can read it."""


def generate_sample(seed: int = 7, accounts: int = 120) -> SampleData:
    """Simulate accounts with every row that the scaffold's sources read.

    Parameters
    ----------
    seed : int
        Seed of the numpy random Generator, 0 or more.
    accounts : int
        Number of accounts, from MIN_ACCOUNTS to MAX_ACCOUNTS.

    Returns
    -------
    SampleData
        The tables, with rows through `healthscore.scaffold.common.DATA_END`.

    Raises
    ------
    ValueError
        If `seed` or `accounts` is out of range.
    """
    _check_arguments(seed, accounts)
    rng = np.random.default_rng(seed)
    plans = plan_accounts(rng, accounts)
    return SampleData(
        accounts=accounts_table(rng, plans),
        owners=pd.DataFrame(texts.OWNERS, columns=["owner_id", "name"]),
        subscriptions=subscriptions_table(plans),
        events=events_table(rng, plans),
        tickets=tickets_table(rng, plans),
        invoices=invoices_table(rng, plans),
        surveys=surveys_table(rng, plans),
        notes=notes_table(rng, plans),
        profiles=pd.DataFrame(
            {
                "account_id": [plan.account_id for plan in plans],
                "profile": [plan.profile for plan in plans],
            }
        ),
    )


def _check_arguments(seed: int, accounts: int) -> None:
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise ValueError(f"seed must be a whole number of 0 or more, got {seed!r}")
    if isinstance(accounts, bool) or not isinstance(accounts, int):
        raise ValueError(f"accounts must be a whole number, got {accounts!r}")
    if not MIN_ACCOUNTS <= accounts <= MAX_ACCOUNTS:
        raise ValueError(
            f"accounts must be between {MIN_ACCOUNTS} and {MAX_ACCOUNTS}, "
            f"got {accounts}"
        )
