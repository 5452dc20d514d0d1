"""Why an account id has no score on a date: not an account, or not in the population.

The population of a date is every usable account of the accounts source, or with
`scoring.population: active` (the default with a subscriptions source) the accounts
with a subscription where start <= as-of date < end.
"""

from __future__ import annotations

from datetime import date
from typing import TYPE_CHECKING

import pandas as pd

from healthscore.config import Project

if TYPE_CHECKING:
    import ibis

    from healthscore.engine import Engine
    from healthscore.sources import SourceSet


def describe_outside_population(
    project: Project,
    engine: Engine | None,
    account_id: str,
    as_of: date,
    *,
    stored: bool,
) -> str:
    """Describe why `account_id` has no row in the scores of `as_of`.

    `engine` reads the sources as they are now; without it the reason is unknown.
    `stored` is true when the scores come from a stored snapshot, which may
    predate rows added to the sources since.
    """
    if engine is None:
        return "not in the population or not an account id"
    sources = engine.sources
    accounts = sources.accounts_name
    if not _usable_rows(sources, accounts, account_id).count().execute():
        return (
            f"{account_id!r} is not an account id of the accounts source {accounts!r}"
        )
    subscriptions = project.config.sources_of_kind("subscriptions")
    mode = project.config.scoring.population
    if mode is None:
        mode = "active" if subscriptions else "all"
    if mode == "active":
        inactive = _inactive_reason(sources, subscriptions[0], account_id, as_of)
        if inactive is not None:
            return (
                "it is an account of the accounts source, but not in the population "
                f"of active accounts of that date, because {inactive}"
            )
    day = as_of.isoformat()
    if stored:
        return (
            f"it is in the population of that date now, but the stored snapshot of "
            f"{day} was scored before; run `healthscore score --as-of {day}` to "
            "score the date again"
        )
    # NOTE: a run of the current sources scores every account of its population,
    # so this is reached only if `metrics.population` gains a rule not copied here.
    return "it is in the population of that date, but the scoring run left it out"


def _usable_rows(sources: SourceSet, name: str, account_id: str) -> ibis.Table:
    table = sources.rows(name)
    return table.filter(table.account_id == account_id)


def _inactive_reason(
    sources: SourceSet, name: str, account_id: str, as_of: date
) -> str | None:
    """Describe why the account has no active subscription; None when it has one."""
    rows = _usable_rows(sources, name, account_id)
    columns = ["start"] + (["end"] if "end" in rows.columns else [])
    frame = rows.select(*columns).execute()
    source = f"the subscriptions source {name!r}"
    if frame.empty:
        return f"it has no usable row in {source}"
    starts = pd.to_datetime(frame["start"])
    if "end" in frame:
        ends = pd.to_datetime(frame["end"])
    else:
        ends = pd.Series(pd.NaT, index=frame.index)
    day = pd.Timestamp(as_of)
    started = starts <= day
    if (started & (ends.isna() | (ends > day))).any():
        return None
    # Every subscription that started by `as_of` has ended by then.
    parts = []
    if started.any():
        parts.append(f"ended on {_day(ends[started].max())}")
    later = starts[~started]
    if not later.empty:
        next_start = "the next starts" if parts else "starts"
        parts.append(f"{next_start} on {_day(later.min())}")
    return f"its subscription in {source} " + " and ".join(parts)


def _day(value: pd.Timestamp) -> str:
    return value.date().isoformat()
