"""Simulate NPS survey answers and CSM notes, both following the account's health."""

from __future__ import annotations

import numpy as np
import pandas as pd

from healthscore.scaffold import texts
from healthscore.scaffold.accounts import Account
from healthscore.scaffold.common import at_working_hour, pick, table_of_rows

#: The NPS survey goes out on the 10th of every third month.
_SURVEY_DAYS = (
    np.arange(np.datetime64("2024-09", "M"), np.datetime64("2026-07", "M"), 3).astype(
        "datetime64[D]"
    )
    + 9
)
_SURVEY_AFTER_DAYS = 45
"""Accounts younger than this are left out of a survey round."""
_MAX_RESPONDENTS = 6


def surveys_table(rng: np.random.Generator, plans: list[Account]) -> pd.DataFrame:
    """Simulate NPS responses (0-10) with optional comments, one row per respondent."""
    rows = [row for plan in plans for row in _account_surveys(rng, plan)]
    return table_of_rows(
        rows, order=["responded_at", "account_id"], timestamps=("responded_at",)
    )


def _account_surveys(
    rng: np.random.Generator, plan: Account
) -> list[dict[str, object]]:
    rows = []
    last_day = plan.days[-1]
    for sent in _SURVEY_DAYS:
        if sent < plan.start + _SURVEY_AFTER_DAYS or sent > last_day:
            continue
        answers = rng.binomial(min(plan.users, _MAX_RESPONDENTS), 0.4)
        for user in rng.choice(plan.users, size=answers, replace=False):
            answered = sent + int(rng.integers(0, 10))
            if answered <= last_day:
                rows.append(_survey_row(rng, plan, answered, plan.user_id(int(user))))
    return rows


def _survey_row(
    rng: np.random.Generator, plan: Account, day: np.datetime64, respondent: str
) -> dict[str, object]:
    score = int(np.clip(round(rng.normal(1 + 9 * plan.health_on(day), 1.3)), 0, 10))
    comment = ""
    if rng.random() < 0.6:
        comment = pick(rng, texts.NPS_COMMENTS[_nps_category(score)])
    return {
        "account_id": plan.account_id,
        "responded_at": at_working_hour(rng, day),
        "survey_type": "nps",
        "score": score,
        "comment": comment,
        "respondent": respondent,
    }


def _nps_category(score: int) -> str:
    """Return the NPS category: promoters give 9-10, passives 7-8, detractors 0-6."""
    if score >= 9:
        return "promoter"
    if score >= 7:
        return "passive"
    return "detractor"


def notes_table(rng: np.random.Generator, plans: list[Account]) -> pd.DataFrame:
    """Simulate CSM notes with the sentiment (1-5) that the CSM recorded."""
    rows = [row for plan in plans for row in _account_notes(rng, plan)]
    return table_of_rows(
        rows,
        order=["created_at", "account_id"],
        timestamps=("created_at",),
        id_column="note_id",
        id_prefix="N",
    )


def _account_notes(rng: np.random.Generator, plan: Account) -> list[dict[str, object]]:
    rows = []
    author = texts.OWNERS[plan.owner][1]
    day = plan.start + int(rng.integers(3, 11))
    while day <= plan.days[-1]:
        health = plan.health_on(day)
        sentiment = int(np.clip(round(1 + 4 * health + rng.normal(0.0, 0.5)), 1, 5))
        rows.append(
            {
                "account_id": plan.account_id,
                "created_at": at_working_hour(rng, day),
                "author": author,
                "sentiment": sentiment,
                "text": pick(rng, texts.NOTE_TEXTS[sentiment]),
            }
        )
        day = day + max(3, int(rng.exponential(plan.terms.note_every_days)))
    return rows
