"""Explanations of one account's score, of its change between dates, and of drivers.

All three read the rows of the `measures` and `scores` tables of `ScoreResult` (or
of a stored snapshot). A measure's contribution is the points it adds to the score,
and its points lost are what it would add at a score of 100 minus what it adds:
`effective_weight * (100 - normalized)`.

A score override makes the score differ from the sum of the contributions. The
explanations then show it as a part of kind `override` whose contribution is
`score - computed_score`, so the parts still add up to the score.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import pandas as pd

#: `kind` of a part that is a measure.
MEASURE = "measure"
#: `kind` of the part that a score override adds.
OVERRIDE = "override"


def explain_account(
    measures_rows: pd.DataFrame, score_row: Mapping[str, Any] | pd.Series
) -> pd.DataFrame:
    """Tabulate what makes up one account's score, the largest points lost first.

    Parameters
    ----------
    measures_rows
        The account's rows of the measures table.
    score_row
        The account's row of the scores table.

    Returns
    -------
    pd.DataFrame
        One row per measure with `kind`, `component`, `measure`, `metric`, `value`,
        `value_text`, `normalized`, `weight`, `effective_weight`, `contribution`,
        `points_lost`, `overridden`, `override_reason` and `override_author`,
        sorted by `points_lost` descending. Missing measures have NaN points lost
        and come last. An active score override adds a row of kind `override`, whose
        points lost are the points it takes away. The contributions add up to the
        score.

    Raises
    ------
    ValueError
        When `measures_rows` contains rows of another account.
    """
    _check_account(measures_rows, score_row)
    table = _measure_table(measures_rows)
    table["points_lost"] = table["effective_weight"] * (100.0 - table["normalized"])
    override = _override_points(score_row)
    if override is not None:
        table = pd.concat(
            [table, _override_row(score_row, override)], ignore_index=True
        )
    table = table.sort_values(
        "points_lost", ascending=False, na_position="last", kind="stable"
    )
    return table.reset_index(drop=True)


def explain_change(
    before_measures: pd.DataFrame,
    before_score: Mapping[str, Any] | pd.Series,
    after_measures: pd.DataFrame,
    after_score: Mapping[str, Any] | pd.Series,
) -> pd.DataFrame:
    """Split the change of one account's score between two dates into parts.

    Each measure of either date's rows is a part equal to its contribution after
    minus its contribution before, and a measure absent on a date contributes 0.
    Measures are matched by measure name, which is unique within a scorecard, so a
    measure kept through a change of scorecard is one part even when it moved to
    another component or reads another metric. A score override on either date
    adds a part of kind `override`. The parts add up to the later score minus the
    earlier one, to within float rounding (`change_total` sums them with
    `math.fsum`).

    Parameters
    ----------
    before_measures, after_measures
        The account's rows of the measures table on each date.
    before_score, after_score
        The account's row of the scores table on each date.

    Returns
    -------
    pd.DataFrame
        One row per part with `kind`, `component`, `measure`, `metric`,
        `component_before`, `component_after`, `metric_before`, `metric_after`,
        `value_before`, `value_after`, `value_text_before`, `value_text_after`,
        `normalized_before`, `normalized_after`, `contribution_before`,
        `contribution_after` and `change`, the largest absolute change first.
        `component` and `metric` are those of the later date, or of the earlier
        one for a measure absent later. `component_before` is missing for a
        measure absent on the earlier date, and `component_after` for one absent
        on the later date.

    Raises
    ------
    ValueError
        When the rows belong to different accounts or a score is missing.
    """
    _check_account(before_measures, before_score)
    _check_account(after_measures, after_score)
    _check_same_account(before_score, after_score)
    for label, row in (("earlier", before_score), ("later", after_score)):
        _check_has_score(row, label)
    before = _measure_table(before_measures)
    after = _measure_table(after_measures)
    parts = before.merge(
        after, on="measure", how="outer", suffixes=("_before", "_after")
    )
    parts = _combine_parts(parts)
    override = _override_change(before_score, after_score)
    if override is not None:
        parts = pd.concat([parts, override], ignore_index=True)
    order = parts["change"].abs().sort_values(ascending=False, kind="stable").index
    return parts.loc[order].reset_index(drop=True)


def change_total(parts: pd.DataFrame) -> float:
    """Sum the `change` column of `explain_change` exactly (`math.fsum`)."""
    return math.fsum(parts["change"].to_numpy(dtype="float64"))


def top_drivers(measures: pd.DataFrame, n: int = 3) -> pd.DataFrame:
    """Select each account's `n` measures that lose the most points.

    Parameters
    ----------
    measures
        Rows of the measures table, for any number of accounts.
    n
        Maximum number of drivers per account.

    Returns
    -------
    pd.DataFrame
        `account_id`, `rank` (1 for the largest loss), `component`, `measure`,
        `metric`, `value`, `value_text`, `normalized` and `points_lost`, ordered by
        account and rank. Measures that lose no points (missing, or scoring 100)
        are left out, so an account may have fewer than `n` rows.
    """
    if n < 1:
        raise ValueError(f"n must be at least 1, got {n}")
    points = measures["effective_weight"] * (100.0 - measures["normalized"])
    losing = measures.assign(points_lost=points)[points > 0]
    ranked = losing.sort_values("points_lost", ascending=False, kind="stable")
    top = ranked.groupby("account_id", sort=False).head(n)
    top = top.assign(rank=top.groupby("account_id", sort=False).cumcount() + 1)
    columns = ["account_id", "rank", "component", "measure", "metric", "value"]
    columns += ["value_text", "normalized", "points_lost"]
    return top.sort_values(["account_id", "rank"])[columns].reset_index(drop=True)


_TABLE_COLUMNS = [
    "kind",
    "component",
    "measure",
    "metric",
    "value",
    "value_text",
    "normalized",
    "weight",
    "effective_weight",
    "contribution",
    "overridden",
    "override_reason",
    "override_author",
]


def _measure_table(rows: pd.DataFrame) -> pd.DataFrame:
    """Select the explanation columns of measure rows, adding absent ones empty."""
    table = rows.reset_index(drop=True).assign(kind=MEASURE)
    for optional in ("override_reason", "override_author", "value_text"):
        if optional not in table.columns:
            table[optional] = None
    if "overridden" not in table.columns:
        table["overridden"] = False
    return table[_TABLE_COLUMNS].copy()


def _override_points(score_row: Mapping[str, Any] | pd.Series) -> float | None:
    """Points a score override adds (negative when it lowers the score), or None."""
    if _is_missing(score_row.get("override_reason")):
        return None
    computed = _number(score_row.get("computed_score"))
    # With no measure present the computed score is NaN and the contributions are 0.
    base = 0.0 if math.isnan(computed) else computed
    return _number(score_row.get("score")) - base


def _override_row(
    score_row: Mapping[str, Any] | pd.Series, points: float
) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "kind": [OVERRIDE],
            "measure": [OVERRIDE],
            "normalized": [_number(score_row.get("score"))],
            "contribution": [points],
            "points_lost": [-points],
            "overridden": [True],
            "override_reason": [score_row.get("override_reason")],
            "override_author": [score_row.get("override_author")],
        }
    )


def _combine_parts(parts: pd.DataFrame) -> pd.DataFrame:
    """Build one part per matched measure, with the change of its contribution."""
    before = parts["contribution_before"].fillna(0.0)
    after = parts["contribution_after"].fillna(0.0)
    return pd.DataFrame(
        {
            "kind": MEASURE,
            "component": parts["component_after"].fillna(parts["component_before"]),
            "measure": parts["measure"],
            "metric": parts["metric_after"].fillna(parts["metric_before"]),
            "component_before": parts["component_before"],
            "component_after": parts["component_after"],
            "metric_before": parts["metric_before"],
            "metric_after": parts["metric_after"],
            "value_before": parts["value_before"],
            "value_after": parts["value_after"],
            "value_text_before": parts["value_text_before"],
            "value_text_after": parts["value_text_after"],
            "normalized_before": parts["normalized_before"],
            "normalized_after": parts["normalized_after"],
            "contribution_before": before,
            "contribution_after": after,
            "change": after - before,
        }
    )


def _override_change(
    before_score: Mapping[str, Any] | pd.Series,
    after_score: Mapping[str, Any] | pd.Series,
) -> pd.DataFrame | None:
    before = _override_points(before_score)
    after = _override_points(after_score)
    if before is None and after is None:
        return None
    before_points = 0.0 if before is None else before
    after_points = 0.0 if after is None else after
    return pd.DataFrame(
        {
            "kind": [OVERRIDE],
            "measure": [OVERRIDE],
            "contribution_before": [before_points],
            "contribution_after": [after_points],
            "change": [after_points - before_points],
        }
    )


def _check_account(
    rows: pd.DataFrame, score_row: Mapping[str, Any] | pd.Series
) -> None:
    account = str(score_row.get("account_id"))
    if "account_id" in rows.columns:
        others = rows.loc[rows["account_id"] != account, "account_id"]
        if len(others):
            raise ValueError(
                f"the measure rows include account {others.iloc[0]!r} but the score "
                f"row is account {account!r}; pass the rows of one account"
            )


def _check_same_account(
    before: Mapping[str, Any] | pd.Series, after: Mapping[str, Any] | pd.Series
) -> None:
    if before.get("account_id") != after.get("account_id"):
        raise ValueError(
            f"the earlier score is account {before.get('account_id')!r} and the later "
            f"one {after.get('account_id')!r}; compare one account with itself"
        )


def _check_has_score(row: Mapping[str, Any] | pd.Series, label: str) -> None:
    if math.isnan(_number(row.get("score"))):
        raise ValueError(
            f"account {row.get('account_id')!r} has no {label} score (band "
            f"{row.get('band')!r}), so the change cannot be split; pick dates on "
            "which the account has a score"
        )


def _number(value: Any) -> float:
    return float("nan") if _is_missing(value) else float(value)


def _is_missing(value: Any) -> bool:
    return pd.api.types.is_scalar(value) and bool(pd.isna(value))
