"""Churn outcomes read from subscriptions, for checking scores against what happened."""

from __future__ import annotations

from datetime import date, datetime

import pandas as pd

from healthscore.config import Project
from healthscore.metrics import derived
from healthscore.metrics.windows import shift
from healthscore.sources import SourceSet


def horizon_end(project: Project, as_of: date) -> date:
    """Return the end date of the churn horizon that starts at `as_of`."""
    horizon = project.config.outcomes.horizon
    start = datetime(as_of.year, as_of.month, as_of.day)
    return shift(start, horizon, periods=-1).date()


def churn_labels(project: Project, sources: SourceSet, as_of: date) -> pd.Series:
    """Label each account active on `as_of` churned if inactive at the horizon's end.

    An account churned when it has a subscription active on `as_of` and none active on
    the horizon's end date (active on d: start <= d < end). Returns a boolean Series by
    account id. It is empty when the horizon ends after `outcomes.observed_until`,
    because accounts whose renewal is not yet recorded would count as churned.
    """
    names = project.config.sources_of_kind("subscriptions")
    if not names:
        raise ValueError(
            "churn outcomes need a source of kind subscriptions; add one to sources"
        )
    end = horizon_end(project, as_of)
    observed = project.config.outcomes.observed_until
    if observed is not None and end > observed:
        return pd.Series(dtype=bool, name="churned")
    active_then = derived.active_accounts(sources, names[0], as_of)
    active_later = derived.active_accounts(sources, names[0], end)
    ids = sorted(active_then)
    labels = pd.Series([i not in active_later for i in ids], index=ids, name="churned")
    labels.index.name = "account_id"
    return labels


def last_complete_as_of(project: Project) -> date:
    """Latest as-of date whose churn horizon ends by `outcomes.observed_until`."""
    observed = project.config.outcomes.observed_until
    if observed is None:
        raise ValueError(
            "outcomes.observed_until is not set; set it to the last date for which "
            "subscriptions are complete, or pass --as-of"
        )
    point = datetime(observed.year, observed.month, observed.day)
    return shift(point, project.config.outcomes.horizon).date()
