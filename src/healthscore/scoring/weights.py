"""Weights of a scorecard's measures and components, and the resulting scores.

A measure's configured share of the score is its component's share of the total
component weight times the measure's share of its component's weight. A measure with
no normalized score is left out and its weight goes to the present measures of its
component. A component with no present measure is left out and its weight goes to the
present components. What remains are the effective weights: they sum to 1 over the
present measures, so the score is exactly the sum of the contributions
(normalized score times effective weight).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from healthscore.config.models import MeasureConfig, ScorecardConfig


@dataclass(frozen=True)
class Layout:
    """Measures of a scorecard in a fixed order, with their weights as arrays."""

    component_names: list[str]
    measures: list[MeasureConfig]
    #: Position in `component_names` of each measure's component.
    measure_component: np.ndarray
    #: Configured weight of each measure within its component.
    measure_weights: np.ndarray
    component_weights: np.ndarray
    #: Configured share of the score of each component; sums to 1.
    component_shares: np.ndarray
    #: Configured share of the score of each measure; sums to 1.
    measure_shares: np.ndarray

    @classmethod
    def of(cls, scorecard: ScorecardConfig) -> Layout:
        names = list(scorecard.components)
        measures: list[MeasureConfig] = []
        owners: list[int] = []
        for position, name in enumerate(names):
            for measure in scorecard.components[name].measures:
                measures.append(measure)
                owners.append(position)
        owner = np.array(owners, dtype=np.int64)
        weights = np.array([measure.weight for measure in measures])
        component_weights = np.array([scorecard.components[n].weight for n in names])
        component_shares = component_weights / component_weights.sum()
        within = weights / np.bincount(owner, weights=weights)[owner]
        return cls(
            component_names=names,
            measures=measures,
            measure_component=owner,
            measure_weights=weights,
            component_weights=component_weights,
            component_shares=component_shares,
            measure_shares=component_shares[owner] * within,
        )

    @property
    def measure_names(self) -> list[str]:
        return [measure.measure_name for measure in self.measures]

    @property
    def one_hot(self) -> np.ndarray:
        """Measure-by-component matrix with 1 where the measure belongs."""
        positions = np.arange(len(self.component_names))
        return (self.measure_component[:, None] == positions[None, :]).astype(float)


@dataclass(frozen=True)
class Weighted:
    """Scores of accounts under one scorecard; matrices have one row per account."""

    #: Effective weight of each measure, 0 where the measure is missing.
    effective_weights: np.ndarray
    #: Points each measure adds to the score, 0 where the measure is missing.
    contributions: np.ndarray
    #: Weighted mean of each component's present measures, NaN when none is present.
    component_scores: np.ndarray
    #: Effective weight of each component, 0 where the component is missing.
    component_effective_weights: np.ndarray
    #: Sum of the configured shares of the present measures, from 0 to 1.
    coverage: np.ndarray
    #: Sum of the contributions, NaN when no measure is present.
    score: np.ndarray


def weigh(layout: Layout, normalized: np.ndarray) -> Weighted:
    """Weigh normalized measure scores (accounts by measures, NaN for missing).

    The steps run over one measure or component at a time, each on a contiguous
    array of every account's values. Steps over whole rows of a row-major matrix,
    such as a sum across its few measures, ran several times slower: they took
    0.36 s for a million accounts and five measures, against 0.06 s one column at
    a time. The returned matrices are row-major, so that `ravel` gives their rows
    without a copy. One scratch array serves every measure, because each new
    array of a million values costs thousands of page faults.
    """
    rows, count = normalized.shape
    owner = layout.measure_component
    components = len(layout.component_names)
    present = np.empty((count, rows), dtype=bool)
    np.isnan(normalized.T, out=present)
    np.logical_not(present, out=present)
    measure_scores = np.empty(rows)
    present_weight = np.empty(rows)
    product = np.empty(rows)

    weights_present = np.zeros((components, rows))
    weighted_sums = np.zeros((components, rows))
    coverage = np.zeros(rows)
    for m in range(count):
        _measure_scores(normalized, present, m, out=measure_scores)
        np.multiply(present[m], layout.measure_weights[m], out=present_weight)
        weights_present[owner[m]] += present_weight
        np.multiply(measure_scores, present_weight, out=product)
        weighted_sums[owner[m]] += product
        np.multiply(present[m], layout.measure_shares[m], out=product)
        coverage += product
    has_weight = weights_present != 0
    component_scores = np.full((rows, components), np.nan)
    np.divide(
        weighted_sums.T, weights_present.T, out=component_scores, where=has_weight.T
    )

    component_weights = np.empty((components, rows))
    total = np.zeros(rows)
    for c in range(components):
        np.multiply(
            weights_present[c] > 0,
            layout.component_weights[c],
            out=component_weights[c],
        )
        total += component_weights[c]
    component_effective_weights = np.zeros((rows, components))
    np.divide(
        component_weights.T,
        total[:, None],
        out=component_effective_weights,
        where=(total != 0)[:, None],
    )

    effective_weights = np.empty((rows, count))
    contributions = np.empty((rows, count))
    score = np.zeros(rows)
    within = present_weight
    for m in range(count):
        c = owner[m]
        np.multiply(present[m], layout.measure_weights[m], out=present_weight)
        # Where the component has no weight, the measure is missing too, so
        # `within` keeps its present weight of 0.
        np.divide(present_weight, weights_present[c], out=within, where=has_weight[c])
        np.multiply(component_effective_weights[:, c], within, out=within)
        effective_weights[:, m] = within
        _measure_scores(normalized, present, m, out=measure_scores)
        np.multiply(measure_scores, within, out=product)
        contributions[:, m] = product
        score += product
    score[total == 0] = np.nan
    return Weighted(
        effective_weights=effective_weights,
        contributions=contributions,
        component_scores=component_scores,
        component_effective_weights=component_effective_weights,
        coverage=np.minimum(coverage, 1.0, out=coverage),
        score=score,
    )


def _measure_scores(
    normalized: np.ndarray, present: np.ndarray, m: int, out: np.ndarray
) -> None:
    """Write the scores of measure `m` into `out`, with 0 where it is missing."""
    out.fill(0.0)
    np.copyto(out, normalized[:, m], where=present[m])
