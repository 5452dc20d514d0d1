"""Simulate product usage events: sessions of users on the days they work in the app."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from healthscore.scaffold.accounts import Account
from healthscore.scaffold.common import working_hours

EVENT_TYPES = (
    "login",
    "dashboard_viewed",
    "report_created",
    "export",
    "workflow_run",
    "invite_sent",
    "integration_connected",
)

#: Events per session beyond the login: (type, count at zero health, added at full).
_SESSION_EVENTS = (
    ("dashboard_viewed", 0.5, 0.8),
    ("report_created", 0.0, 0.35),
    ("export", 0.0, 0.08),
    ("workflow_run", 0.0, 0.3),
    ("invite_sent", 0.0, 0.004),
    ("integration_connected", 0.0, 0.0015),
)

#: First-use milestones: (type, days at full health, days added at zero health).
_MILESTONES = (
    ("invite_sent", 1.0, 10.0),
    ("integration_connected", 3.0, 30.0),
)

_ADOPTION_DAYS = 30
"""A new account reaches its full usage level over its first month."""


@dataclass
class _Events:
    """Event columns of one account: time, user index, type index, value."""

    times: np.ndarray
    users: np.ndarray
    types: np.ndarray
    values: np.ndarray

    @classmethod
    def concat(cls, parts: list[_Events]) -> _Events:
        return cls(
            times=np.concatenate([part.times for part in parts]),
            users=np.concatenate([part.users for part in parts]),
            types=np.concatenate([part.types for part in parts]),
            values=np.concatenate([part.values for part in parts]),
        )


def events_table(rng: np.random.Generator, plans: list[Account]) -> pd.DataFrame:
    """Simulate the usage events of every account, sorted by account and time."""
    accounts, users, types, times, values = [], [], [], [], []
    for plan in plans:
        events = _account_events(rng, plan)
        order = np.argsort(events.times, kind="stable")
        pool = np.array([plan.user_id(index) for index in range(plan.users)])
        accounts.append(np.full(len(order), plan.account_id))
        users.append(pool[events.users[order]])
        types.append(events.types[order])
        times.append(events.times[order])
        values.append(events.values[order])
    return pd.DataFrame(
        {
            "account_id": np.concatenate(accounts),
            "occurred_at": np.concatenate(times).astype("datetime64[s]"),
            "user_id": np.concatenate(users),
            "event_type": np.array(EVENT_TYPES)[np.concatenate(types)],
            # Whole records, so the CSV shows 120 and not 120.0.
            "value": pd.Series(np.concatenate(values)).astype("Int64"),
        }
    )


def _account_events(rng: np.random.Generator, plan: Account) -> _Events:
    user_index, day_index = _active_user_days(rng, plan)
    sessions = plan.days[day_index].astype("datetime64[s]") + working_hours(
        rng, len(day_index)
    )
    firsts = {
        event_type: _milestone_day(rng, plan, fastest, slowest)
        for event_type, fastest, slowest in _MILESTONES
    }
    parts = [
        _Events(
            sessions,
            user_index,
            _type_codes(0, len(sessions)),
            _no_values(len(sessions)),
        )
    ]
    day_health = plan.health[day_index]
    for event_type, base, slope in _SESSION_EVENTS:
        counts = rng.poisson(base + slope * day_health)
        if event_type in firsts:
            # Repeats of a milestone event only follow the first one.
            first = firsts[event_type]
            before_first = len(plan.days) if first is None else first
            counts[day_index < before_first] = 0
        parts.append(_session_events(rng, event_type, counts, sessions, user_index))
    parts.extend(_milestone_events(rng, plan, firsts))
    return _Events.concat(parts)


def _active_user_days(
    rng: np.random.Generator, plan: Account
) -> tuple[np.ndarray, np.ndarray]:
    """Indexes of the (user, day) pairs on which the user worked in the product."""
    # A user stays in use while the account's health exceeds the user's threshold, so
    # a falling health curve leaves seats unused one user at a time.
    threshold = rng.random(plan.users)
    propensity = rng.beta(2.0, 4.0, plan.users)
    seated = np.arange(plan.users)[:, None] < plan.seats_by_day()[None, :]
    in_use = seated & (threshold[:, None] < plan.health[None, :])
    adoption = 0.35 + 0.65 * np.minimum(1.0, np.arange(len(plan.days)) / _ADOPTION_DAYS)
    day_chance = np.where(_is_weekday(plan.days), 0.6, 0.06) * adoption
    chance = in_use * propensity[:, None] * day_chance[None, :]
    active = rng.random(chance.shape) < chance
    user_index, day_index = np.nonzero(active)
    return user_index, day_index


def _is_weekday(days: np.ndarray) -> np.ndarray:
    # Day 0 of datetime64 is Thursday 1970-01-01; adding 3 makes Monday 0.
    return (days.astype(int) + 3) % 7 < 5


def _milestone_day(
    rng: np.random.Generator, plan: Account, fastest: float, slowest: float
) -> int | None:
    """Day index of the first milestone event, or None when it never happens."""
    level = float(plan.health[:60].mean())
    never = rng.random() < max(0.0, 0.55 - level)
    day = int(rng.gamma(2.0, fastest + slowest * (1 - level) ** 2))
    if never or day >= len(plan.days):
        return None
    return day


def _session_events(
    rng: np.random.Generator,
    event_type: str,
    counts: np.ndarray,
    sessions: np.ndarray,
    user_index: np.ndarray,
) -> _Events:
    total = int(counts.sum())
    offsets = rng.integers(60, 5400, total).astype("timedelta64[s]")
    if event_type == "workflow_run":
        # Records processed by the run.
        values = np.round(rng.lognormal(np.log(120.0), 0.9, total))
    else:
        values = _no_values(total)
    return _Events(
        times=np.repeat(sessions, counts) + offsets,
        users=np.repeat(user_index, counts),
        types=_type_codes(EVENT_TYPES.index(event_type), total),
        values=values,
    )


def _milestone_events(
    rng: np.random.Generator, plan: Account, firsts: dict[str, int | None]
) -> list[_Events]:
    """Make the first invite and integration events, by the account's first user."""
    parts = []
    for event_type, day in firsts.items():
        if day is None:
            continue
        seconds = 9 * 3600 + int(rng.integers(0, 8 * 3600))
        time = plan.days[day].astype("datetime64[s]") + np.timedelta64(seconds, "s")
        code = EVENT_TYPES.index(event_type)
        parts.append(
            _Events(
                np.array([time]), np.array([0]), _type_codes(code, 1), _no_values(1)
            )
        )
    return parts


def _type_codes(code: int, count: int) -> np.ndarray:
    return np.full(count, code, dtype=np.int64)


def _no_values(count: int) -> np.ndarray:
    return np.full(count, np.nan)
