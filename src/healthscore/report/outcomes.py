"""Churn per band: how many accounts of each band churned over the following horizon.

The outcome of an account comes from `healthscore.outcomes.churn_labels`: it churned
when it had a subscription active on the as-of date and none on the day the horizon
ends. Outcomes exist only once the whole horizon has been observed, which is judged
as `healthscore backtest` judges it.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date

import pandas as pd

from healthscore.config import Project
from healthscore.config.models import BandConfig
from healthscore.models.labels import subscription_frame, subscriptions_observed_until
from healthscore.outcomes import churn_labels, horizon_end
from healthscore.report.summary import band_style
from healthscore.scoring import INSUFFICIENT_DATA
from healthscore.sources import SourceSet


@dataclass(frozen=True)
class BandChurn:
    """Accounts of one band with a known outcome, and how many of them churned."""

    name: str
    label: str
    color: str
    accounts: int
    churned: int

    @property
    def rate(self) -> float | None:
        """Churned accounts / accounts, None for an empty band."""
        return self.churned / self.accounts if self.accounts else None


@dataclass(frozen=True)
class ChurnSummary:
    """Churn per band after one as-of date, or the reason it is not known."""

    as_of: date
    horizon: str
    horizon_end: date
    bands: list[BandChurn]
    unavailable: str | None = None
    """Reason the outcomes are unknown, or None when `bands` contains them."""

    @property
    def falls(self) -> bool | None:
        """Whether the churn rate falls strictly from each band to the next better one.

        Only the configured bands with accounts take part; `insufficient_data` does
        not. None when outcomes are unavailable or fewer than two bands have
        accounts.
        """
        rates = [
            band.rate
            for band in self.bands
            if band.rate is not None and band.name != INSUFFICIENT_DATA
        ]
        if self.unavailable or len(rates) < 2:
            return None
        return all(earlier > later for earlier, later in itertools.pairwise(rates))


def churn_summary(
    project: Project,
    sources: SourceSet | None,
    scores: pd.DataFrame,
    as_of: date,
    today: date,
) -> ChurnSummary:
    """Count churned accounts per band over the horizon after `as_of`.

    The horizon is censored as `healthscore backtest` censors it: outcomes are
    complete up to `outcomes.observed_until`, or else up to the latest subscription
    start (`healthscore.models.labels.subscriptions_observed_until`).

    Parameters
    ----------
    project
        The project; its `outcomes` settings give the horizon and the last observed
        date.
    sources
        Sources with the project's subscriptions source read, or None when there is
        no subscriptions source.
    scores
        The scores table of `as_of`.
    as_of
        The scored date.
    today
        Today in the project's time zone. Without `outcomes.observed_until`, a
        horizon that ends today or later is censored too, even when the
        subscriptions hold later start dates.

    Returns
    -------
    ChurnSummary
        One row per configured band (lowest first), then insufficient data when it
        has accounts. Scored accounts without an outcome (no subscription active on
        `as_of`) are left out of the counts. When the horizon is censored, `bands`
        is empty and `unavailable` says how many scored accounts it censored.
    """
    outcomes = project.config.outcomes
    horizon = str(outcomes.horizon)
    end = horizon_end(project, as_of)
    names = project.config.sources_of_kind("subscriptions")
    if sources is None or not names:
        missing = (
            "the project has no source of kind subscriptions, so churn cannot be "
            "observed"
        )
        return ChurnSummary(as_of, horizon, end, [], missing)
    reason = _censored_reason(project, sources, names[0], scores, as_of, today)
    if reason is not None:
        return ChurnSummary(as_of, horizon, end, [], reason)
    labels = churn_labels(project, sources, as_of)
    bands = _band_rows(scores, labels, project.config.bands)
    return ChurnSummary(as_of, horizon, end, bands)


def _censored_reason(
    project: Project,
    sources: SourceSet,
    name: str,
    scores: pd.DataFrame,
    as_of: date,
    today: date,
) -> str | None:
    """Return why the horizon after `as_of` is not observed, or None when it is."""
    outcomes = project.config.outcomes
    end = horizon_end(project, as_of)
    subscriptions = subscription_frame(sources.rows(name).execute())
    try:
        observed, _ = subscriptions_observed_until(project, subscriptions)
    except ValueError as exc:
        return str(exc)
    accounts = len(scores)
    censored = (
        f"{accounts:,} scored {'account is' if accounts == 1 else 'accounts are'} "
        "censored (no outcome is known)"
    )
    horizon = (
        f"the {outcomes.horizon} horizon after {as_of.isoformat()} ends on "
        f"{end.isoformat()}"
    )
    if outcomes.observed_until is not None:
        # Read from the setting again, so that mypy infers a date and not None.
        observed = outcomes.observed_until
        if end <= observed:
            return None
        return (
            f"{horizon}, after outcomes.observed_until ({observed.isoformat()}), so "
            f"{censored}"
        )
    advice = "set outcomes.observed_until to the last date with complete subscriptions"
    if observed is None:
        return f"the subscriptions source {name!r} has no rows, so {censored}"
    if end > observed:
        return (
            f"{horizon}, after the latest subscription start ({observed.isoformat()}) "
            f"that marks the end of the observed data, so {censored}; {advice}"
        )
    if end >= today:
        return f"{horizon}, which is not in the past, so {censored}; {advice}"
    return None


def _band_rows(
    scores: pd.DataFrame, labels: pd.Series, bands: Sequence[BandConfig]
) -> list[BandChurn]:
    frame = scores[["account_id", "band"]].merge(
        labels.rename("churned").reset_index(), on="account_id", how="inner"
    )
    grouped = frame.groupby("band")["churned"].agg(["size", "sum"])
    styles = band_style(bands)
    names = [band.name for band in sorted(bands, key=lambda item: item.min)]
    if INSUFFICIENT_DATA in grouped.index:
        names.append(INSUFFICIENT_DATA)
    rows = []
    for name in names:
        accounts = int(grouped["size"].get(name, 0))
        churned = int(grouped["sum"].get(name, 0))
        label, color = styles[name]
        rows.append(BandChurn(name, label, color, accounts, churned))
    return rows
