"""Summaries of one scored date: bands, coverage, riskiest accounts and sources.

The CLI prints these summaries after a run and the HTML report renders them, so
both show the same numbers. Every function reads the `scores` and `measures` tables
of a scoring run or of a stored snapshot, and the source reports stored with it.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date
from typing import Any

import numpy as np
import pandas as pd

from healthscore.config.models import BandConfig, ProjectConfig
from healthscore.scoring import INSUFFICIENT_DATA, UNSCORED, top_drivers
from healthscore.sources import REASONS, describe_problem

#: Label and colour of the two bands that are not score ranges.
SPECIAL_BANDS = {
    INSUFFICIENT_DATA: ("Insufficient data", "#999999"),
    UNSCORED: ("Unscored", "#CCCCCC"),
}

#: Colour used in place of a band colour that is not a plain CSS colour.
FALLBACK_COLOR = "#999999"

#: Reason code of rows that are valid but stamped after the as-of point.
LATER_REASON = "after_as_of"
LATER_LABEL = "later than the as-of date"

#: Example rows listed per source.
EXAMPLES_PER_SOURCE = 3

# Hex, a colour name, or rgb()/hsl() with numbers only, so that a colour written into
# a style attribute cannot carry a URL or close the attribute.
_CSS_COLOR = re.compile(
    r"^(#[0-9a-fA-F]{3,8}|[a-zA-Z]+|(rgb|rgba|hsl|hsla)\([0-9.,%\s]+\))$"
)


def safe_color(color: str) -> str:
    """Return `color` when it is a plain CSS colour, else FALLBACK_COLOR."""
    return color if _CSS_COLOR.match(color.strip()) else FALLBACK_COLOR


@dataclass(frozen=True)
class BandCount:
    """Accounts in one band and their share of all accounts in the scores table."""

    name: str
    label: str
    color: str
    count: int
    share: float


def band_counts(scores: pd.DataFrame, bands: Sequence[BandConfig]) -> list[BandCount]:
    """Count the accounts per band, lowest band first.

    Every configured band is listed, with 0 when empty. `insufficient_data` and
    `unscored` follow the configured bands, and only when they have accounts.
    """
    counts = scores["band"].value_counts()
    total = len(scores)
    rows = []
    for band in sorted(bands, key=lambda item: item.min):
        count = int(counts.get(band.name, 0))
        rows.append(
            BandCount(band.name, band.label, safe_color(band.color), count, 0.0)
        )
    for name, (label, color) in SPECIAL_BANDS.items():
        count = int(counts.get(name, 0))
        if count:
            rows.append(BandCount(name, label, color, count, 0.0))
    return [
        BandCount(row.name, row.label, row.color, row.count, _share(row.count, total))
        for row in rows
    ]


def band_style(bands: Sequence[BandConfig]) -> dict[str, tuple[str, str]]:
    """Label and safe colour of every band name, the special bands included."""
    styles = {band.name: (band.label, safe_color(band.color)) for band in bands}
    styles.update(SPECIAL_BANDS)
    return styles


@dataclass(frozen=True)
class Coverage:
    """How much of the scorecards' weight had data, over the accounts with a score."""

    accounts: int
    scored: int
    mean_coverage: float | None
    insufficient_data: int
    unscored: int
    score_overrides: int


def coverage_summary(scores: pd.DataFrame) -> Coverage:
    """Summarise coverage, insufficient data, unscored accounts and score overrides."""
    matched = scores[scores["band"] != UNSCORED]
    mean = float(matched["coverage"].mean()) if len(matched) else math.nan
    return Coverage(
        accounts=len(scores),
        scored=int(scores["score"].notna().sum()),
        mean_coverage=None if math.isnan(mean) else mean,
        insufficient_data=int((scores["band"] == INSUFFICIENT_DATA).sum()),
        unscored=int((scores["band"] == UNSCORED).sum()),
        score_overrides=int(scores["override_reason"].notna().sum()),
    )


def choose_value_column(
    config: ProjectConfig, account_columns: Iterable[str]
) -> str | None:
    """Pick the account value that ranks the riskiest accounts: arr, mrr or none.

    `report.value_column` wins when set. Otherwise ARR is used when the accounts
    source has an `arr` column, else MRR when it has `mrr`, else no value.

    Raises
    ------
    ValueError
        When `report.value_column` names a column the accounts source lacks.
    """
    columns = set(account_columns)
    chosen = config.report.value_column
    if chosen is not None:
        if chosen not in columns:
            source = config.accounts_source()
            raise ValueError(
                f"report.value_column is {chosen!r} but the accounts source "
                f"{source!r} has no {chosen} column; map it under "
                f"sources.{source}.columns or remove report.value_column"
            )
        return chosen
    for candidate in ("arr", "mrr"):
        if candidate in columns:
            return candidate
    return None


@dataclass(frozen=True)
class Driver:
    """A measure that lowers an account's score, with the points it loses."""

    component: str
    measure: str
    metric: str
    value: float | None
    value_text: str | None
    normalized: float | None
    points_lost: float


@dataclass(frozen=True)
class RiskyAccount:
    """One of the riskiest accounts, with its top drivers."""

    account_id: str
    name: str | None
    value: float | None
    score: float
    band: str
    band_label: str
    color: str
    drivers: list[Driver] = field(default_factory=list)


def riskiest_accounts(
    scores: pd.DataFrame,
    measures: pd.DataFrame,
    bands: Sequence[BandConfig],
    accounts: pd.DataFrame,
    value_column: str | None,
    limit: int,
    drivers: int = 3,
) -> list[RiskyAccount]:
    """List the riskiest accounts with a score, most at risk first.

    Accounts are ordered by band, lowest band first, then by `value_column`
    (highest value first, missing values last), then by score (lowest first).
    Accounts with insufficient data or no scorecard are left out, because their
    score does not rest on enough data.

    Parameters
    ----------
    scores, measures
        The scores and measures tables of one date.
    bands
        The project's bands.
    accounts
        Account columns indexed by account id; `name` and `value_column` are read
        from it when present.
    value_column
        Account column with the account's value (ARR or MRR), or None.
    limit
        Maximum number of accounts.
    drivers
        Drivers listed per account.
    """
    rank = {band.name: band.min for band in bands}
    ranked = scores[scores["band"].isin(rank) & scores["score"].notna()].copy()
    ranked["band_rank"] = ranked["band"].map(rank)
    values = _account_column(accounts, value_column, ranked["account_id"])
    ranked["value"] = pd.to_numeric(
        pd.Series(values, index=ranked.index), errors="coerce"
    )
    ranked = ranked.sort_values(
        ["band_rank", "value", "score", "account_id"],
        ascending=[True, False, True, True],
        na_position="last",
        kind="stable",
    ).head(limit)
    names = _account_column(accounts, "name", ranked["account_id"])
    chosen = measures[measures["account_id"].isin(ranked["account_id"])]
    by_account = _drivers_by_account(top_drivers(chosen, drivers))
    styles = band_style(bands)
    return [
        RiskyAccount(
            account_id=str(row.account_id),
            name=_text_or_none(name),
            value=_float_or_none(row.value),
            score=float(row.score),
            band=str(row.band),
            band_label=styles[str(row.band)][0],
            color=styles[str(row.band)][1],
            drivers=by_account.get(str(row.account_id), []),
        )
        for row, name in zip(ranked.itertuples(), names, strict=True)
    ]


def _account_column(
    accounts: pd.DataFrame, column: str | None, ids: pd.Series
) -> np.ndarray:
    """Values of an account column aligned with `ids`, NaN when absent."""
    if column is None or column not in accounts.columns:
        return np.full(len(ids), np.nan, dtype=object)
    series = accounts[column]
    if not series.index.is_unique:
        series = series[~series.index.duplicated()]
    return series.reindex(ids.astype(str).to_numpy()).to_numpy()


def _drivers_by_account(table: pd.DataFrame) -> dict[str, list[Driver]]:
    found: dict[str, list[Driver]] = {}
    for row in table.itertuples():
        found.setdefault(str(row.account_id), []).append(
            Driver(
                component=str(row.component),
                measure=str(row.measure),
                metric=str(row.metric),
                value=_float_or_none(row.value),
                value_text=_text_or_none(row.value_text),
                normalized=_float_or_none(row.normalized),
                points_lost=float(row.points_lost),
            )
        )
    return found


@dataclass(frozen=True)
class ExampleRow:
    """An excluded row of a source file."""

    file: str
    row: int
    column: str
    reason: str


@dataclass(frozen=True)
class SourceSummary:
    """Rows of one source: read, used, later than the as-of date, and excluded.

    `problems` counts the rows excluded because they failed a check, by reason and
    column, for example ``value cannot be read as the column's type (arr)``. Rows
    that are valid but stamped after the as-of point are counted in `later`, not
    as problems.
    """

    source: str
    kind: str
    files: list[str]
    rows_read: int
    rows_used: int
    later: int
    problems: dict[str, int]
    examples: list[ExampleRow]

    @property
    def rows_with_problems(self) -> int:
        return sum(self.problems.values())


def source_summaries(reports: Iterable[Mapping[str, Any]]) -> list[SourceSummary]:
    """Summarise source reports as stored in `run.json` (`SourceReport.to_dict()`)."""
    return [_source_summary(report) for report in reports]


def _source_summary(report: Mapping[str, Any]) -> SourceSummary:
    later = 0
    problems: dict[str, int] = {}
    for key, count in report.get("excluded", {}).items():
        reason, _, column = str(key).partition(":")
        if reason == LATER_REASON:
            later += int(count)
            continue
        label = f"{REASONS.get(reason, reason)} ({column})" if column else reason
        problems[label] = problems.get(label, 0) + int(count)
    examples = [
        ExampleRow(
            file=str(example["file"]),
            row=int(example["row"]),
            column=str(example["column"]),
            reason=describe_problem(
                str(example["reason"]),
                example.get("value"),
                example.get("expected"),
                example.get("detail"),
            ),
        )
        for example in report.get("examples", [])
        if example["reason"] != LATER_REASON
    ]
    return SourceSummary(
        source=str(report["source"]),
        kind=str(report["kind"]),
        files=[str(file) for file in report.get("files", [])],
        rows_read=int(report["rows_read"]),
        rows_used=int(report["rows_used"]),
        later=later,
        problems=problems,
        examples=examples[:EXAMPLES_PER_SOURCE],
    )


def _share(count: int, total: int) -> float:
    return count / total if total else 0.0


def _float_or_none(value: Any) -> float | None:
    if value is None or (pd.api.types.is_scalar(value) and pd.isna(value)):
        return None
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


def _text_or_none(value: Any) -> str | None:
    if value is None or (pd.api.types.is_scalar(value) and pd.isna(value)):
        return None
    return str(value)


@dataclass(frozen=True)
class ScoreSummary:
    """Figures of one date that the run summary and the report's summary show."""

    as_of: date
    accounts: int
    bands: list[BandCount]
    coverage: Coverage
    value_column: str | None
    riskiest: list[RiskyAccount]
    sources: list[SourceSummary]
    versions: dict[str, str]


def summarize(
    config: ProjectConfig,
    as_of: date,
    scores: pd.DataFrame,
    measures: pd.DataFrame,
    accounts: pd.DataFrame,
    run_info: Mapping[str, Any],
) -> ScoreSummary:
    """Summarise the scores of one date.

    Parameters
    ----------
    config
        Project settings: bands and the `report` settings.
    as_of
        The scored date.
    scores, measures
        The scores and measures tables of the date.
    accounts
        Account columns indexed by account id.
    run_info
        Run metadata as stored in `run.json`; `sources` and `scorecard_versions`
        are read.

    Raises
    ------
    ValueError
        When `report.value_column` names a column the accounts lack.
    """
    value_column = choose_value_column(config, accounts.columns)
    return ScoreSummary(
        as_of=as_of,
        accounts=len(scores),
        bands=band_counts(scores, config.bands),
        coverage=coverage_summary(scores),
        value_column=value_column,
        riskiest=riskiest_accounts(
            scores,
            measures,
            config.bands,
            accounts,
            value_column,
            config.report.riskiest,
        ),
        sources=source_summaries(run_info.get("sources", [])),
        versions=dict(run_info.get("scorecard_versions", {})),
    )
