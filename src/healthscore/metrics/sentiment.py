"""Sentiment and NPS metrics, as means of the per-row scores of `sources.text`.

A `sentiment` metric is the mean of `<column>@compound` (statistic compound_mean) or
of `<column>@negative` (negative_share) over its window, and an `nps` metric the mean
of `<column>@nps`. `as_row_metric` rewrites them as `mean` metrics over those
columns, so the per-date query and the multi-date sweep of the backfill compute them
like any other mean.

`nps_by_group` splits the NPS of a date by an account column such as the segment.
"""

from __future__ import annotations

from datetime import datetime

import numpy as np
import pandas as pd

from healthscore.config.models import (
    AggregateMetric,
    MetricConfig,
    NpsMetric,
    SentimentMetric,
)
from healthscore.expressions import parse_expression
from healthscore.metrics.windows import current_span
from healthscore.sources import SourceSet
from healthscore.sources.text import compound_column, negative_column, nps_column

__all__ = [
    "ALL_GROUPS",
    "NO_GROUP",
    "as_row_metric",
    "definition",
    "nps_by_group",
    "score_column",
]

#: Account group of the accounts whose grouping column is missing.
NO_GROUP = "(none)"

#: Group name of the row that counts every account.
ALL_GROUPS = "(all)"


def score_column(metric: SentimentMetric | NpsMetric) -> str:
    """Return the per-row score column whose mean in the window is the metric."""
    if isinstance(metric, NpsMetric):
        return nps_column(metric.column)
    if metric.statistic == "negative_share":
        return negative_column(metric.column)
    return compound_column(metric.column)


def as_row_metric(metric: MetricConfig) -> MetricConfig:
    """Return a sentiment or NPS metric as a mean over its score column.

    Every other metric is returned as it is.
    """
    if not isinstance(metric, SentimentMetric | NpsMetric):
        return metric
    return AggregateMetric(
        type="mean",
        source=metric.source,
        column=score_column(metric),
        where=metric.where,
        window=metric.window,
        description=metric.description,
    )


def nps_by_group(
    sources: SourceSet,
    metric: NpsMetric,
    accounts: pd.DataFrame,
    point: datetime,
    by: str = "segment",
) -> pd.DataFrame:
    """Count the NPS responses of each group of accounts in the metric's window.

    Parameters
    ----------
    sources : SourceSet
        The project's sources, with the metric's source among them.
    metric : NpsMetric
        Source, score column, filter and window of the responses.
    accounts : DataFrame
        The accounts to count, indexed by account id, with column `by`; usually
        the population scored as of the date.
    point : datetime
        As-of point: the window ends there, and no later response is read.
    by : str
        Account column that names each account's group.

    Returns
    -------
    DataFrame
        One row per group, sorted by name, then a row ALL_GROUPS for every account:
        group, accounts, responses, promoters, passives, detractors, nps and
        out_of_range, the rows whose score is outside 0-10 and so not a response.
        The NPS weighs every response equally, so it is not the mean of the account
        NPS values, and it is NaN for a group without responses. Accounts whose `by`
        value is missing form the group NO_GROUP.
    """
    if by not in accounts.columns:
        raise ValueError(
            f"unknown account column {by!r}; use one of {', '.join(accounts.columns)}"
        )
    counts = _category_counts(sources, metric, point).reindex(accounts.index)
    counts = counts.fillna(0).astype("int64")
    groups = accounts[by].astype("string").fillna(NO_GROUP).rename("group")
    counts["accounts"] = 1
    per_group = counts.groupby(groups.to_numpy(), sort=True).sum()
    per_group.loc[ALL_GROUPS] = counts.sum()
    per_group.index.name = "group"
    per_group["responses"] = per_group[["promoters", "passives", "detractors"]].sum(
        axis=1
    )
    totals = per_group["responses"].to_numpy(dtype="float64")
    difference = (per_group["promoters"] - per_group["detractors"]).to_numpy("float64")
    with np.errstate(divide="ignore", invalid="ignore"):
        per_group["nps"] = np.where(totals > 0, 100 * difference / totals, np.nan)
    columns = [
        "accounts",
        "responses",
        "promoters",
        "passives",
        "detractors",
        "nps",
        "out_of_range",
    ]
    return per_group[columns].reset_index()


def _category_counts(
    sources: SourceSet, metric: NpsMetric, point: datetime
) -> pd.DataFrame:
    """Promoters, passives, detractors and other scores per account in the window."""
    table = sources.rows(metric.source, point)
    namespace = {column: table[column] for column in table.columns}
    if metric.window is not None:
        condition = current_span(metric.window, point).contains(table.timestamp)
    else:
        condition = table.timestamp < point
    if metric.where:
        condition = condition & parse_expression(metric.where).evaluate(namespace)
    category = table[nps_column(metric.column)]
    outside = table[metric.column].notnull() & category.isnull()
    frame = (
        table.group_by("account_id")
        .aggregate(
            promoters=table.count(where=condition & (category == 100)),
            passives=table.count(where=condition & (category == 0)),
            detractors=table.count(where=condition & (category == -100)),
            out_of_range=table.count(where=condition & outside),
        )
        .execute()
    )
    return frame.set_index("account_id")


def definition(metric: SentimentMetric | NpsMetric) -> str:
    """Say in words how the metric is computed, for the report's methodology."""
    if isinstance(metric, NpsMetric):
        return (
            f"Promoters ({metric.column} 9-10) minus detractors (0-6) as a percentage "
            "of the responses in the window; missing without responses."
        )
    if metric.statistic == "negative_share":
        return (
            f"Share of the texts in {metric.column} whose VADER compound score is "
            "-0.05 or less; missing without text."
        )
    return (
        f"Mean VADER compound score (-1 to 1) of the texts in {metric.column}; "
        "missing without text."
    )
