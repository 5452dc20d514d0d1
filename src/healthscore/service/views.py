"""Tables the routes and CSV exports share: accounts with scores and trends, portfolio.

These combine layer results (snapshot tables, `compute_trends`, the accounts
source) and apply a token's account visibility; they compute nothing new.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import date
from typing import Any, Literal

import numpy as np
import pandas as pd

from healthscore.config.overrides import Override
from healthscore.scoring import INSUFFICIENT_DATA, UNSCORED
from healthscore.scoring.overriding import newest_overrides
from healthscore.service.auth import Access
from healthscore.service.data import ProjectData
from healthscore.service.serialize import jsonable

#: Columns of the accounts table, in order.
ACCOUNT_TABLE_COLUMNS = [
    "account_id",
    "name",
    "segment",
    "owner",
    "arr",
    "as_of",
    "score",
    "band",
    "scorecard",
    "coverage",
    "change_7d",
    "change_30d",
    "change_90d",
    "slope_30d",
    "trend",
]

SortKey = Literal[
    "score", "-score", "account_id", "-account_id", "arr", "-arr", "change_30d",
    "-change_30d", "name", "-name",
]  # fmt: skip

PortfolioGroup = Literal["band", "segment", "owner"]


def account_table(access: Access, as_of: date) -> pd.DataFrame:
    """Return every account scored as of `as_of` that the token can read.

    One row per account with ACCOUNT_TABLE_COLUMNS and `in_accounts_source` (see
    `ProjectData.account_frame`). Attributes that the accounts source lacks are
    empty, except those that a removed account's snapshot stores.
    """
    frame = access.context.data.account_frame(as_of)
    visible = frame[access.filter_ids(frame["account_id"])]
    return visible.reset_index(drop=True)


def account_row(access: Access, as_of: date, account_id: str) -> pd.Series | None:
    """Return the row of one account of `account_table`, or None without a score.

    The caller checks first that the token can read the account.
    """
    frame = access.context.data.account_frame(as_of)
    if account_id not in frame.index:
        return None
    row: pd.Series = frame.loc[account_id]
    return row


def build_account_table(data: ProjectData, as_of: date) -> pd.DataFrame:
    """Return the accounts table of `as_of` with every scored account.

    Scores of the snapshot, trends and account attributes, one row per account with
    ACCOUNT_TABLE_COLUMNS.
    """
    scores = data.table(as_of, "scores")
    frame = scores[["account_id", "score", "band", "scorecard", "coverage"]].copy()
    frame["account_id"] = frame["account_id"].astype(str)
    trends = data.trends(as_of).drop(columns=["score"])
    trends = trends.rename(columns={"arrow": "trend"})
    frame = frame.merge(trends, on="account_id", how="left")
    attributes = data.accounts()
    for column in ("name", "segment", "owner", "arr"):
        if column in attributes.columns:
            frame[column] = frame["account_id"].map(attributes[column])
        else:
            frame[column] = np.nan
    frame["as_of"] = as_of
    frame["trend"] = frame["trend"].fillna("flat")
    return frame[ACCOUNT_TABLE_COLUMNS].reset_index(drop=True)


def filter_accounts(
    frame: pd.DataFrame,
    *,
    band: str | None = None,
    segment: str | None = None,
    owner: str | None = None,
    trend: str | None = None,
) -> pd.DataFrame:
    """Keep the rows that match every filter given."""
    for column, value in (
        ("band", band),
        ("segment", segment),
        ("owner", owner),
        ("trend", trend),
    ):
        if value is not None:
            frame = frame[frame[column].astype("object") == value]
    return frame


def sort_accounts(frame: pd.DataFrame, sort: SortKey) -> pd.DataFrame:
    """Sort by `sort` (leading `-`: descending), missing values last, ties by id."""
    column = sort.removeprefix("-")
    ascending = not sort.startswith("-")
    if column == "account_id":
        return frame.sort_values("account_id", ascending=ascending, kind="stable")
    ordered = frame.sort_values("account_id", kind="stable")
    return ordered.sort_values(
        column, ascending=ascending, na_position="last", kind="stable"
    )


def applying_overrides(overrides: Iterable[Override], as_of: date) -> set[int]:
    """Return the ids of the overrides that scoring as of `as_of` uses.

    Of the active overrides of one account and measure (or whole score), scoring
    uses the newest (`newest_overrides`). Whether the account is scored on that
    date, and whether its scorecard has the measure, is not checked here.
    """
    newest, _ = newest_overrides(overrides, as_of)
    return {item.id for item in newest.values() if item.id is not None}


def override_rows(overrides: list[Override], as_of: date) -> list[dict[str, Any]]:
    """Return the overrides as JSON rows with `applies`, per `applying_overrides`."""
    applying = applying_overrides(overrides, as_of)
    rows: list[dict[str, Any]] = []
    for item in overrides:
        row: dict[str, Any] = jsonable(item)
        row["applies"] = item.id in applying
        rows.append(row)
    return rows


def portfolio_table(
    access: Access,
    by: PortfolioGroup,
    start: date | None = None,
    end: date | None = None,
) -> pd.DataFrame:
    """Summarize the stored scores per date and group: accounts, mean score, ARR, bands.

    Columns: `as_of`, `group`, `accounts`, `mean_score`, `arr`, `at_risk_arr`,
    one `band_<name>` count per configured band, then `band_insufficient_data` and
    `band_unscored`, so the band counts of a row add up to `accounts`, as in the
    HTML report's table of accounts per band. `mean_score` averages the accounts in
    configured bands only, because the score of an account with insufficient data
    does not rest on enough data (the report leaves such accounts out of its
    riskiest list for that reason); it is missing when the group has none. Accounts
    are grouped by their current segment and owner, because the accounts source
    keeps no earlier values.
    `arr` sums the known ARR of the group and `at_risk_arr` that of its at-risk
    accounts. Each is missing when no account it sums has a known ARR, except that
    `at_risk_arr` is 0 for a group with a known `arr` and no account at risk.
    """
    data = access.context.data
    history = data.history()
    if start is not None:
        history = history[history["as_of"] >= start]
    if end is not None:
        history = history[history["as_of"] <= end]
    history = history[access.filter_ids(history["account_id"].astype(str))]
    attributes = data.accounts()
    frame = history[["as_of", "account_id", "score", "band"]].copy()
    frame["account_id"] = frame["account_id"].astype(str)
    for column in ("segment", "owner", "arr"):
        if column in attributes.columns:
            frame[column] = frame["account_id"].map(attributes[column])
        else:
            frame[column] = np.nan
    configured = access.context.project.config.bands
    bands = [band.name for band in configured] + [INSUFFICIENT_DATA, UNSCORED]
    columns = ["as_of", "group", "accounts", "mean_score", "arr", "at_risk_arr"]
    if frame.empty:
        return pd.DataFrame(columns=[*columns, *(f"band_{name}" for name in bands)])
    frame["group"] = frame[by].astype("object").where(frame[by].notna(), None)
    frame["group"] = frame["group"].fillna("(none)")
    # The band named at_risk, else the lowest band, as the forecast module decides.
    lowest = min(configured, key=lambda band: band.min).name
    at_risk = "at_risk" if "at_risk" in bands else lowest
    frame["at_risk_arr"] = frame["arr"].where(frame["band"] == at_risk)
    in_bands = frame["band"].isin([band.name for band in configured])
    frame["banded_score"] = frame["score"].where(in_bands)
    grouped = frame.groupby(["as_of", "group"], sort=True)
    summary = grouped.agg(
        accounts=("account_id", "size"),
        mean_score=("banded_score", "mean"),
        arr=("arr", lambda values: values.sum(min_count=1)),
        at_risk_arr=("at_risk_arr", lambda values: values.sum(min_count=1)),
    ).reset_index()
    counts = pd.crosstab([frame["as_of"], frame["group"]], frame["band"])
    counts = counts.reindex(columns=bands, fill_value=0)
    counts.columns = [f"band_{name}" for name in counts.columns]
    summary = summary.merge(
        counts.reset_index(), on=["as_of", "group"], how="left"
    ).fillna({f"band_{name}": 0 for name in bands})
    for name in bands:
        summary[f"band_{name}"] = summary[f"band_{name}"].astype("int64")
    none_at_risk = summary[f"band_{at_risk}"] == 0
    summary.loc[none_at_risk & summary["arr"].notna(), "at_risk_arr"] = 0.0
    return summary
