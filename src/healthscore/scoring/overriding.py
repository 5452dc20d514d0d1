"""Choice of the overrides that apply to one scoring run."""

from __future__ import annotations

import difflib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime

import numpy as np
import pandas as pd

from healthscore.config.models import ScorecardConfig
from healthscore.config.overrides import Override
from healthscore.scoring.bands import UNSCORED
from healthscore.scoring.routing import NO_SCORECARD


@dataclass(frozen=True)
class IgnoredOverride:
    """An active override that did not apply, with the reason."""

    override: Override
    reason: str


@dataclass
class OverridePlan:
    """Overrides that apply, by position of the account in the population."""

    #: (account position, measure name) to the override of that measure score.
    measures: dict[tuple[int, str], Override] = field(default_factory=dict)
    #: Account position to the override of the whole score.
    scores: dict[int, Override] = field(default_factory=dict)
    ignored: list[IgnoredOverride] = field(default_factory=list)


def plan_overrides(
    overrides: Iterable[Override],
    as_of: date,
    population: pd.Index,
    routes: np.ndarray,
    scorecards: Sequence[ScorecardConfig],
) -> OverridePlan:
    """Select the overrides that apply on `as_of` to the scored accounts.

    Expired overrides are dropped silently. Of several active overrides of the same
    score, the newest by `created_at` applies (then the highest `id`, then the last
    given). Overrides of accounts that are not scored, or of a measure that the
    account's scorecard lacks, are listed in `ignored` with the reason.
    """
    plan = OverridePlan()
    newest, older = newest_overrides(overrides, as_of)
    plan.ignored.extend(older)
    chosen = list(newest.values())
    positions = population.get_indexer([item.account_id for item in chosen])
    for item, position in zip(chosen, positions, strict=True):
        problem = _reason_to_ignore(item, int(position), routes, scorecards, as_of)
        if problem is not None:
            plan.ignored.append(IgnoredOverride(item, problem))
        elif item.measure is None:
            plan.scores[int(position)] = item
        else:
            plan.measures[(int(position), item.measure)] = item
    return plan


def newest_overrides(
    overrides: Iterable[Override], as_of: date
) -> tuple[dict[tuple[str, str | None], Override], list[IgnoredOverride]]:
    """Return the newest active override per account and target, and the older ones.

    The newest is the last by `override_age`. Each older active override is
    returned with the reason that it does not apply.
    """
    newest: dict[tuple[str, str | None], Override] = {}
    older: list[IgnoredOverride] = []
    active = [item for item in overrides if item.is_active(as_of)]
    for item in sorted(active, key=override_age):
        key = (item.account_id, item.measure)
        if key in newest:
            reason = f"a newer override of the same {newest[key].target} applies"
            older.append(IgnoredOverride(newest[key], reason))
        newest[key] = item
    return newest, older


def override_age(item: Override) -> tuple[datetime, int]:
    """Return the sort key of an override by age: creation time, then id.

    Of several active overrides of one score, the last in this order applies.
    """
    # Naive timestamps are read as UTC so they compare with aware ones.
    created = item.created_at
    if created.tzinfo is None:
        created = created.replace(tzinfo=UTC)
    return created, -1 if item.id is None else item.id


def _reason_to_ignore(
    item: Override,
    position: int,
    routes: np.ndarray,
    scorecards: Sequence[ScorecardConfig],
    as_of: date,
) -> str | None:
    if position < 0:
        return f"account {item.account_id!r} is not scored as of {as_of.isoformat()}"
    route = int(routes[position])
    if route == NO_SCORECARD:
        return f"account {item.account_id!r} matches no scorecard"
    scorecard = scorecards[route]
    if item.measure is not None and item.measure not in measure_names([scorecard]):
        return (
            f"scorecard {scorecard.name!r} of account {item.account_id!r} has no "
            f"measure {item.measure!r}"
        )
    return None


def measure_names(scorecards: Iterable[ScorecardConfig]) -> list[str]:
    """Return the sorted names of the measures of `scorecards`."""
    names = {
        measure.measure_name
        for scorecard in scorecards
        for component in scorecard.components.values()
        for measure in component.measures
    }
    return sorted(names)


def override_measure_problem(
    measure: str,
    scorecards: Sequence[ScorecardConfig],
    account_id: str,
    scored: tuple[date, ScorecardConfig | None] | None,
) -> str | None:
    """Say why an override of `measure` for the account would never apply.

    `scored` is the latest stored date with the scorecard that scored the account
    then (None when it matched none). When no score of the account is stored,
    `scored` is None and the measure is only checked against every scorecard.
    Returns None when the override can apply.
    """
    names = measure_names(scorecards)
    if measure not in names:
        close = difflib.get_close_matches(measure, names, n=1, cutoff=0.6)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        return (
            f"unknown measure {measure!r}{hint}; the scorecards' measures are: "
            f"{', '.join(names)}"
        )
    if scored is None:
        return None
    day, scorecard = scored
    if scorecard is None:
        return (
            f"account {account_id!r} matched no scorecard as of {day.isoformat()}, "
            f"so it has no measure {measure!r} to override; check the `when` "
            "conditions of the scorecards"
        )
    own = measure_names([scorecard])
    if measure in own:
        return None
    return (
        f"measure {measure!r} is not in scorecard {scorecard.name!r}, which scored "
        f"account {account_id!r} as of {day.isoformat()}; its measures are: "
        f"{', '.join(own)}. Give one of them, or leave out the measure to override "
        "the whole score"
    )


def scored_with(
    scorecards: Sequence[ScorecardConfig],
    as_of: date,
    row: pd.Series | None,
) -> tuple[date, ScorecardConfig | None] | None:
    """Return `as_of` and the scorecard of an account's stored score row.

    `row` is the account's row of the `scores` table of `as_of` (None when the
    account has none). The scorecard is None when the account matched none; the
    result is None without a row or when its scorecard is no longer configured.
    """
    if row is None:
        return None
    if row["band"] == UNSCORED:
        return as_of, None
    cards = {card.name: card for card in scorecards}
    card = cards.get(str(row["scorecard"]))
    return None if card is None else (as_of, card)
