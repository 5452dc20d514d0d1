"""The data-problem guard, and the score distribution with its stability (PSI).

A broken import looks like a crisis: every account changes band at once, or a source
stops growing and usage metrics collapse. The guard compares a run with the previous
snapshot and with the age of each source's newest row. When the run looks like a
data problem, its alerts are stored as held instead of being delivered.

An account scored under another scorecard version on the previous date, because the
scorecard, its metrics or the bands were edited, is left out of the band-change
share. Its band change comes from the edit, not from the data.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from typing import Any

import numpy as np
import pandas as pd

from healthscore.config.alerts import GuardSettings
from healthscore.sources import SourceSet

#: Edges of the 10 fixed score bins: [0, 10), [10, 20), ..., [90, 100].
SCORE_BIN_EDGES = tuple(range(0, 101, 10))

#: Share that replaces an empty bin in the PSI, so its logarithm is finite.
PSI_EPSILON = 1e-4

#: Source kinds whose rows carry a `timestamp` column.
_STAMPED_KINDS = ("events", "tickets", "invoices", "surveys", "notes")

#: Columns of a scores table that name the scorecard behind a score and its version,
#: the content hash of `Project.scorecard_version` that run.json records too.
VERSION_COLUMNS = ("scorecard", "scorecard_version")


@dataclass(frozen=True)
class StaleSource:
    """A source whose newest row is older than its `max_age` at the as-of point."""

    source: str
    newest: datetime | None
    age_days: float | None
    max_age_days: int

    def describe(self) -> str:
        """Return one sentence about the source's staleness."""
        if self.newest is None:
            return f"source {self.source} has no rows before the as-of point"
        return (
            f"source {self.source} is stale: its newest row ({self.newest.isoformat()})"
            f" is {self.age_days:.1f} days old, more than {self.max_age_days} days"
        )


@dataclass(frozen=True)
class GuardDecision:
    """The guard's checks of one run, and whether they hold the run's alerts.

    Attributes
    ----------
    as_of, previous_as_of
        The run's date and the previous snapshot's date (None for the first run).
    accounts_compared
        Accounts with a score on both dates under the same scorecard version.
    accounts_changed_band
        Those among them whose band differs between the two dates.
    accounts_changed_version
        Accounts with a score on both dates under different scorecard versions
        (or scorecards). They are left out of `accounts_compared`.
    band_change_share
        `accounts_changed_band / accounts_compared`, or None with nothing compared.
    max_band_change_share
        The configured limit of that share.
    stale_sources
        Sources older than their configured `max_age`.
    distribution
        Accounts per 10-point score bin, see `score_distribution`.
    psi
        Population stability index of the score against the previous snapshot.
    """

    as_of: date
    previous_as_of: date | None
    accounts_compared: int
    accounts_changed_band: int
    band_change_share: float | None
    max_band_change_share: float
    stale_sources: list[StaleSource] = field(default_factory=list)
    distribution: list[dict[str, Any]] = field(default_factory=list)
    psi: float | None = None
    accounts_changed_version: int = 0

    @property
    def too_many_band_changes(self) -> bool:
        """Whether the share of band changes is over the limit."""
        share = self.band_change_share
        return share is not None and share > self.max_band_change_share

    @property
    def held(self) -> bool:
        """Whether the run's alerts are held back."""
        return self.too_many_band_changes or bool(self.stale_sources)

    def reasons(self) -> list[str]:
        """Return one sentence per check that failed."""
        reasons = []
        if self.too_many_band_changes:
            assert self.band_change_share is not None
            share, limit = _percentages(
                self.band_change_share, self.max_band_change_share
            )
            reasons.append(
                f"{self.accounts_changed_band} of {self.accounts_compared} accounts "
                f"({share}) changed band since {_iso(self.previous_as_of)}, more "
                f"than the limit of {limit}"
            )
        reasons.extend(stale.describe() for stale in self.stale_sources)
        return reasons

    def to_dict(self) -> dict[str, Any]:
        """Return the decision as JSON types, for the run info and the guard alert."""
        return {
            "held": self.held,
            "reasons": self.reasons(),
            "as_of": self.as_of.isoformat(),
            "previous_as_of": _iso(self.previous_as_of),
            "accounts_compared": self.accounts_compared,
            "accounts_changed_band": self.accounts_changed_band,
            "accounts_changed_version": self.accounts_changed_version,
            "band_change_share": self.band_change_share,
            "max_band_change_share": self.max_band_change_share,
            "stale_sources": [
                {
                    "source": stale.source,
                    "newest": None
                    if stale.newest is None
                    else stale.newest.isoformat(),
                    "age_days": stale.age_days,
                    "max_age_days": stale.max_age_days,
                }
                for stale in self.stale_sources
            ],
            "distribution": self.distribution,
            "psi": self.psi,
        }


def check_guard(
    settings: GuardSettings,
    as_of: date,
    current: pd.DataFrame,
    previous: pd.DataFrame | None,
    previous_as_of: date | None,
    stale_sources: Sequence[StaleSource] = (),
) -> GuardDecision:
    """Compare a run's scores with the previous snapshot's.

    Parameters
    ----------
    settings
        The guard settings.
    as_of
        The run's as-of date.
    current, previous
        Scores tables (`account_id`, `score`, `band`, and `scorecard` and
        `scorecard_version` when known) of the run and of the previous snapshot;
        `previous` is None for the first run. Accounts whose scorecard version
        differs between the two count in `accounts_changed_version` only.
    previous_as_of
        Date of the previous snapshot.
    stale_sources
        Result of `find_stale_sources`.
    """
    compared, changed, changed_version = _band_changes(current, previous)
    share = changed / compared if compared else None
    counts = bin_counts(current["score"])
    psi = None
    if previous is not None and len(previous):
        psi = population_stability_index(bin_counts(previous["score"]), counts)
    return GuardDecision(
        as_of=as_of,
        previous_as_of=previous_as_of,
        accounts_compared=compared,
        accounts_changed_band=changed,
        band_change_share=share,
        max_band_change_share=settings.max_band_change_share,
        stale_sources=list(stale_sources),
        distribution=score_distribution(current["score"]),
        psi=psi,
        accounts_changed_version=changed_version,
    )


def _band_changes(
    current: pd.DataFrame, previous: pd.DataFrame | None
) -> tuple[int, int, int]:
    """Count accounts scored on both dates under one scorecard version, those among
    them whose band changed, and the accounts scored under two versions."""
    if previous is None:
        return 0, 0, 0
    columns = ["account_id", "score", "band"]
    columns += [
        name
        for name in VERSION_COLUMNS
        if name in current.columns and name in previous.columns
    ]
    both = current[columns].merge(
        previous[columns], on="account_id", suffixes=("", "_previous")
    )
    both = both[both["score"].notna() & both["score_previous"].notna()]
    alike = same_scorecard_version(both, "_previous")
    both = both[alike]
    changed = int((both["band"] != both["band_previous"]).sum())
    return len(both), changed, int((~alike).sum())


def same_scorecard_version(frame: pd.DataFrame, suffix: str) -> np.ndarray:
    """Return which rows of a merged scores frame compare one scorecard version.

    `frame` has the `VERSION_COLUMNS` of one date and the same columns with
    `suffix` of another. A row matches when the scorecard and the version are
    equal on both dates. A missing value matches any value, as in snapshots that
    lack the columns or in accounts that no scorecard scored.
    """
    alike = np.ones(len(frame), dtype=bool)
    for name in VERSION_COLUMNS:
        other = f"{name}{suffix}"
        if name not in frame.columns or other not in frame.columns:
            continue
        left, right = frame[name], frame[other]
        alike &= (left.isna() | right.isna() | (left == right)).to_numpy(dtype=bool)
    return alike


def bin_counts(scores: pd.Series) -> np.ndarray:
    """Count scores in the 10 fixed bins; 100 falls in the last, NaN in none."""
    values = pd.to_numeric(scores, errors="coerce").dropna().to_numpy(dtype=float)
    # np.histogram closes only its last bin on the right, so 100 lands in [90, 100].
    counts, _ = np.histogram(values, bins=SCORE_BIN_EDGES)
    return counts


def score_distribution(scores: pd.Series) -> list[dict[str, Any]]:
    """Tabulate the scores by 10-point bin, with the count and share of each bin."""
    counts = bin_counts(scores)
    total = int(counts.sum())
    rows = []
    for position, count in enumerate(counts):
        lower, upper = SCORE_BIN_EDGES[position], SCORE_BIN_EDGES[position + 1]
        rows.append(
            {
                "bin": f"{lower}-{upper}",
                "lower": lower,
                "upper": upper,
                "count": int(count),
                "share": count / total if total else 0.0,
            }
        )
    return rows


def population_stability_index(
    expected: Sequence[int] | np.ndarray,
    actual: Sequence[int] | np.ndarray,
    epsilon: float = PSI_EPSILON,
) -> float | None:
    """Compute the population stability index of `actual` against `expected`.

    PSI = sum over bins of (a_i - e_i) * ln(a_i / e_i), where a_i and e_i are the
    shares of the bin in each population; this is the formula in Arize's glossary
    (arize.com/glossary/population-stability-index-psi). A share of 0 is replaced by
    `epsilon`, so an empty bin adds a large but finite term. Returns None when
    either population is empty.
    """
    expected_counts = np.asarray(expected, dtype=float)
    actual_counts = np.asarray(actual, dtype=float)
    if expected_counts.sum() == 0 or actual_counts.sum() == 0:
        return None
    expected_shares = np.maximum(expected_counts / expected_counts.sum(), epsilon)
    actual_shares = np.maximum(actual_counts / actual_counts.sum(), epsilon)
    terms = (actual_shares - expected_shares) * np.log(actual_shares / expected_shares)
    return math.fsum(terms.tolist())


def newest_rows(
    sources: SourceSet, names: Sequence[str], point: datetime
) -> dict[str, datetime | None]:
    """Return the newest usable row's time of each source, at or before `point`.

    Subscriptions are dated by their start. Times are wall-clock times in the
    project's time zone, like `point`.
    """
    newest: dict[str, datetime | None] = {}
    for name in names:
        kind = sources.loaded[name].config.kind
        rows = sources.rows(name, point)
        column = rows.start if kind == "subscriptions" else rows.timestamp
        value = rows.aggregate(newest=column.max()).execute()["newest"].iloc[0]
        newest[name] = None if pd.isna(value) else pd.Timestamp(value).to_pydatetime()
    return newest


def find_stale_sources(
    max_age: Mapping[str, Any], newest: Mapping[str, datetime | None], point: datetime
) -> list[StaleSource]:
    """Compare each source's newest row with its maximum age at `point`.

    Parameters
    ----------
    max_age
        `GuardSettings.max_age`: a Duration per source name.
    newest
        Result of `newest_rows`.
    point
        The as-of point, naive wall-clock time in the project's time zone.
    """
    stale = []
    for name, age in max_age.items():
        limit = timedelta(days=age.days)
        found = newest.get(name)
        if found is None:
            stale.append(StaleSource(name, None, None, age.days))
            continue
        elapsed = point - found
        if elapsed > limit:
            days = elapsed.total_seconds() / 86_400
            stale.append(StaleSource(name, found, days, age.days))
    return stale


def check_max_age_sources(max_age: Mapping[str, Any], kinds: Mapping[str, str]) -> None:
    """Raise ValueError when `max_age` names an unknown or undated source.

    Parameters
    ----------
    max_age
        `GuardSettings.max_age`.
    kinds
        Source kind by source name.
    """
    for name in max_age:
        if name not in kinds:
            raise ValueError(
                f"alerts.guard.max_age names unknown source {name!r}; sources: "
                f"{', '.join(kinds)}"
            )
        if kinds[name] not in (*_STAMPED_KINDS, "subscriptions"):
            raise ValueError(
                f"alerts.guard.max_age names source {name!r} of kind {kinds[name]}, "
                "whose rows have no date; list a source with timestamps or "
                "subscription starts"
            )


def _iso(day: date | None) -> str | None:
    return None if day is None else day.isoformat()


def _percentages(share: float, limit: float) -> tuple[str, str]:
    """Format a share above its limit as percentages that tell the two apart.

    Whole percents are used unless both would read the same, as 20.4 % and 20 %
    would. Then each decimal up to the fourth is tried in turn.
    """
    for decimals in range(5):
        texts = f"{share:.{decimals}%}", f"{limit:.{decimals}%}"
        if texts[0] != texts[1]:
            return texts
    return texts
