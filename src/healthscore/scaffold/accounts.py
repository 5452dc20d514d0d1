"""Plan the sample accounts: segment, hidden profile, health curve and billing periods.

Each account follows a hidden daily health curve between 0 and 1 chosen by its
profile (thriving, steady, declining, churned, churning or onboarding). Contracts run
for a year and are billed monthly. Churned and churning accounts leave at their first
anniversary, so churn shows both before and just after SAMPLE_AS_OF.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from healthscore.scaffold import texts
from healthscore.scaffold.common import (
    DATA_END,
    DATA_START,
    DAY_AFTER_END,
    add_months,
    iso_date,
    iso_dates,
    months_later,
    pick,
)

#: Share of accounts per hidden profile.
PROFILE_SHARES = {
    "thriving": 0.25,
    "steady": 0.25,
    "declining": 0.18,
    "churned": 0.12,
    "churning": 0.08,
    "onboarding": 0.12,
}

SEGMENT_SHARES = {"enterprise": 0.2, "mid_market": 0.35, "smb": 0.45}


@dataclass(frozen=True)
class SegmentTerms:
    """Commercial terms and service levels of one segment."""

    plan: str
    seat_price: int
    """USD per seat and month."""
    seats: tuple[int, int]
    """Lowest and highest seat count at signature."""
    payment_days: int
    """Invoices fall due this many days after they are issued."""
    tickets_per_month: float
    """Tickets filed per month by a fully healthy account."""
    note_every_days: float
    """Mean gap between two CSM notes."""
    owners: tuple[int, ...]
    """Indexes into texts.OWNERS of the CSMs who cover the segment."""


SEGMENTS = {
    "enterprise": SegmentTerms("enterprise", 60, (40, 120), 45, 1.5, 21, (0, 1)),
    "mid_market": SegmentTerms("growth", 45, (12, 40), 30, 0.8, 35, (2, 3)),
    "smb": SegmentTerms("starter", 30, (3, 12), 14, 0.3, 60, (4, 5)),
}

_FIRST_MONTH = str(DATA_START.astype("datetime64[M]"))
_START_MONTHS = {
    # Churned accounts reach their first anniversary before SAMPLE_AS_OF; churning
    # accounts reach it in the 28 days after it.
    "churned": (_FIRST_MONTH, "2025-05"),
    "churning": ("2025-06", "2025-06"),
    "onboarding": ("2026-03", "2026-05"),
}
_DEFAULT_START_MONTHS = (_FIRST_MONTH, "2025-11")

_SPONSOR_STATUS = ("engaged", "passive", "departed", "none")
_SPONSOR_CHANCES = {
    "thriving": (0.8, 0.2, 0.0, 0.0),
    "steady": (0.5, 0.4, 0.0, 0.1),
    "declining": (0.1, 0.4, 0.35, 0.15),
    "churned": (0.0, 0.2, 0.5, 0.3),
    "churning": (0.0, 0.3, 0.5, 0.2),
    "onboarding": (0.6, 0.3, 0.0, 0.1),
}


@dataclass(frozen=True)
class Account:
    """One simulated account and the hidden curves behind its rows."""

    account_id: str
    segment: str
    profile: str
    start: np.datetime64
    churn: np.datetime64 | None
    """End of the contract that was not renewed; None while the account stays."""
    days: np.ndarray
    """Each day with rows, from the start to the churn date or DATA_END."""
    health: np.ndarray
    """Hidden health of each day in `days`, 0 to 1."""
    period_starts: np.ndarray
    """Start of each monthly billing period."""
    period_seats: np.ndarray
    """Seats billed in each period."""
    owner: int

    @property
    def terms(self) -> SegmentTerms:
        return SEGMENTS[self.segment]

    @property
    def users(self) -> int:
        """Size of the account's user pool, which is its largest seat count."""
        return int(self.period_seats.max())

    def user_id(self, index: int) -> str:
        return f"{self.account_id}-U{index:03d}"

    def seats_by_day(self) -> np.ndarray:
        """Return the seats of the billing period that contains each day."""
        index = np.searchsorted(self.period_starts, self.days, side="right") - 1
        return self.period_seats[index]

    def health_on(self, day: np.datetime64) -> float:
        index = int((day - self.start).astype(int))
        return float(self.health[min(index, len(self.health) - 1)])


def plan_accounts(rng: np.random.Generator, count: int) -> list[Account]:
    """Draw `count` accounts with segments and profiles in their set shares."""
    segments = _spread_labels(rng, count, SEGMENT_SHARES)
    profiles = _spread_labels(rng, count, PROFILE_SHARES)
    pairs = zip(segments, profiles, strict=True)
    return [
        _plan_account(rng, number, segment, profile)
        for number, (segment, profile) in enumerate(pairs, start=1)
    ]


def _spread_labels(
    rng: np.random.Generator, count: int, shares: dict[str, float]
) -> list[str]:
    """Return labels in proportion to `shares` (largest remainder method), shuffled."""
    exact = np.array(list(shares.values())) * count
    quotas = np.floor(exact).astype(int)
    leftover = count - int(quotas.sum())
    quotas[np.argsort(-(exact - quotas), kind="stable")[:leftover]] += 1
    # Small samples still get one account of every label.
    while (quotas == 0).any():
        quotas[np.argmax(quotas)] -= 1
        quotas[np.argmin(quotas)] += 1
    labels = np.repeat(list(shares), quotas)
    return [str(label) for label in rng.permutation(labels)]


def _plan_account(
    rng: np.random.Generator, number: int, segment: str, profile: str
) -> Account:
    start = _contract_start(rng, profile)
    churn = months_later(start, 12) if profile in ("churned", "churning") else None
    stop = DAY_AFTER_END if churn is None or churn > DAY_AFTER_END else churn
    days = np.arange(start, stop, dtype="datetime64[D]")
    period_starts, period_seats = _billing_periods(rng, segment, profile, start, churn)
    owners = SEGMENTS[segment].owners
    return Account(
        account_id=f"A{number:04d}",
        segment=segment,
        profile=profile,
        start=start,
        churn=churn,
        days=days,
        health=_health_curve(rng, profile, days),
        period_starts=period_starts,
        period_seats=period_seats,
        owner=owners[int(rng.integers(len(owners)))],
    )


def _contract_start(rng: np.random.Generator, profile: str) -> np.datetime64:
    first, last = (
        np.datetime64(month, "M")
        for month in _START_MONTHS.get(profile, _DEFAULT_START_MONTHS)
    )
    month = first + int(rng.integers(0, int((last - first).astype(int)) + 1))
    # Days 1-28 exist in every month, so billing dates never shift. A churning account
    # starts on day 2 or later so that its anniversary falls after SAMPLE_AS_OF.
    lowest_day = 2 if profile == "churning" else 1
    day = int(rng.integers(lowest_day, 29))
    return month.astype("datetime64[D]") + (day - 1)


def _health_curve(
    rng: np.random.Generator, profile: str, days: np.ndarray
) -> np.ndarray:
    elapsed = np.arange(len(days))
    level = _profile_level(rng, profile, days)
    cycle = rng.uniform(40, 90)
    phase = rng.uniform(0, 2 * np.pi)
    wave = 0.05 * np.sin(2 * np.pi * elapsed / cycle + phase)
    return np.clip(level + wave, 0.03, 0.99)


def _profile_level(
    rng: np.random.Generator, profile: str, days: np.ndarray
) -> np.ndarray:
    count = len(days)
    if profile == "thriving":
        return np.linspace(rng.uniform(0.6, 0.75), rng.uniform(0.85, 0.98), count)
    if profile == "steady":
        return np.full(count, rng.uniform(0.45, 0.7))
    if profile == "onboarding":
        return np.full(count, rng.uniform(0.25, 0.95))
    if profile == "declining":
        decline = np.datetime64("2025-12-01") + int(rng.integers(0, 106))
        turn = int((decline - days[0]).astype(int))
        return _decline(count, turn, rng.uniform(0.55, 0.75), rng.uniform(0.05, 0.2))
    turn = max(30, count - int(rng.integers(120, 240)))
    return _decline(count, turn, rng.uniform(0.55, 0.75), rng.uniform(0.05, 0.15))


def _decline(count: int, turn: int, high: float, low: float) -> np.ndarray:
    """Return `high` until day `turn`, then a straight fall to `low` on the last day."""
    elapsed = np.arange(count)
    share = np.clip((elapsed - turn) / max(count - 1 - turn, 1), 0.0, 1.0)
    return high + (low - high) * share


def _billing_periods(
    rng: np.random.Generator,
    segment: str,
    profile: str,
    start: np.datetime64,
    churn: np.datetime64 | None,
) -> tuple[np.ndarray, np.ndarray]:
    """Return the monthly period starts up to the churn date or DATA_END, and seats."""
    last = DATA_END if churn is None else churn - 1
    span = last.astype("datetime64[M]") - start.astype("datetime64[M]")
    starts = add_months(start, np.arange(int(span.astype(int)) + 1))
    starts = starts[starts <= last]
    low, high = SEGMENTS[segment].seats
    first_seats = int(rng.integers(low, high + 1))
    seats = np.full(len(starts), first_seats)
    change = _seat_change(rng, profile, len(starts))
    if change is not None:
        index, factor = change
        seats[index:] = max(1, round(first_seats * factor))
    return starts, seats


def _seat_change(
    rng: np.random.Generator, profile: str, periods: int
) -> tuple[int, float] | None:
    """Return the period from which the seat count changes, and the factor."""
    if profile == "thriving" and periods >= 5 and rng.random() < 0.6:
        return int(rng.integers(3, periods)), rng.uniform(1.1, 1.4)
    shrinking = profile in ("declining", "churned", "churning")
    if shrinking and periods >= 3 and rng.random() < 0.5:
        return int(rng.integers(2 * periods // 3, periods)), rng.uniform(0.6, 0.85)
    return None


def accounts_table(rng: np.random.Generator, plans: list[Account]) -> pd.DataFrame:
    """Build the CRM export: one row per account, as of the end of DATA_END."""
    names = _company_names(rng, len(plans))
    rows = [
        _account_row(rng, plan, name) for plan, name in zip(plans, names, strict=True)
    ]
    return pd.DataFrame(rows)


def _account_row(
    rng: np.random.Generator, plan: Account, name: str
) -> dict[str, object]:
    seats = int(plan.period_seats[-1])
    sponsor = rng.choice(_SPONSOR_STATUS, p=_SPONSOR_CHANCES[plan.profile])
    return {
        "account_id": plan.account_id,
        "name": name,
        "segment": plan.segment,
        "owner_id": texts.OWNERS[plan.owner][0],
        "arr": seats * plan.terms.seat_price * 12,
        "seats": seats,
        "contract_start": iso_date(plan.start),
        "renewal_date": iso_date(_renewal_date(plan)),
        "industry": pick(rng, texts.INDUSTRIES),
        "region": pick(rng, texts.REGIONS),
        "sponsor_status": str(sponsor),
    }


def _company_names(rng: np.random.Generator, count: int) -> list[str]:
    pairs = [
        (word, trade) for word in texts.COMPANY_WORDS for trade in texts.COMPANY_TRADES
    ]
    order = rng.permutation(len(pairs))
    names = []
    for position in range(count):
        word, trade = pairs[order[position % len(pairs)]]
        repeat = position // len(pairs)
        names.append(f"{word} {trade}" + (f" {repeat + 1}" if repeat else ""))
    return names


def _renewal_date(plan: Account) -> np.datetime64:
    """Return the churn date, or the first contract anniversary after DATA_END."""
    if plan.churn is not None:
        return plan.churn
    span = DATA_END.astype("datetime64[Y]") - plan.start.astype("datetime64[Y]")
    years = int(span.astype(int))
    renewal = months_later(plan.start, 12 * years)
    return renewal if renewal > DATA_END else months_later(plan.start, 12 * (years + 1))


def subscriptions_table(plans: list[Account]) -> pd.DataFrame:
    """Build one row per monthly billing period; the current one ends after DATA_END."""
    frames = []
    for plan in plans:
        ends = add_months(plan.start, np.arange(1, len(plan.period_starts) + 1))
        frames.append(
            pd.DataFrame(
                {
                    "account_id": plan.account_id,
                    "plan": plan.terms.plan,
                    "period_start": iso_dates(plan.period_starts),
                    "period_end": iso_dates(ends),
                    "seats": plan.period_seats,
                    "mrr": plan.period_seats * plan.terms.seat_price,
                }
            )
        )
    return pd.concat(frames, ignore_index=True)
