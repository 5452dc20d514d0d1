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
    """Weigh normalized measure scores (accounts by measures, NaN for missing)."""
    owner = layout.measure_component
    present = ~np.isnan(normalized)
    scores = np.where(present, normalized, 0.0)
    present_weights = present * layout.measure_weights
    component_weights_present = _by_component(present_weights, layout)
    weighted_sums = _by_component(scores * present_weights, layout)
    component_scores = _divide(weighted_sums, component_weights_present, np.nan)

    components_present = component_weights_present > 0
    component_weights = components_present * layout.component_weights
    total = component_weights.sum(axis=1, keepdims=True)
    component_effective_weights = _divide(component_weights, total, 0.0)
    within = _divide(present_weights, component_weights_present[:, owner], 0.0)
    effective_weights = component_effective_weights[:, owner] * within

    contributions = scores * effective_weights
    score = contributions.sum(axis=1)
    score[~present.any(axis=1)] = np.nan
    return Weighted(
        effective_weights=effective_weights,
        contributions=contributions,
        component_scores=component_scores,
        component_effective_weights=component_effective_weights,
        coverage=np.minimum(_row_sums(present * layout.measure_shares), 1.0),
        score=score,
    )


def _by_component(matrix: np.ndarray, layout: Layout) -> np.ndarray:
    """Sum the measure columns of each component (accounts by components).

    These are column sums, not a product with `layout.one_hot`, because a matrix
    product goes through BLAS. Its worker threads made that product take 0.3 to
    0.5 s for 500 000 accounts and 5 measures on a busy 2-core machine.
    """
    sums = np.zeros((matrix.shape[0], len(layout.component_names)))
    for column, component in enumerate(layout.measure_component):
        sums[:, component] += matrix[:, column]
    return sums


def _row_sums(matrix: np.ndarray) -> np.ndarray:
    """Sum each row from the first column to the last."""
    sums = np.zeros(matrix.shape[0])
    for column in range(matrix.shape[1]):
        sums += matrix[:, column]
    return sums


def _divide(numerator: np.ndarray, denominator: np.ndarray, empty: float) -> np.ndarray:
    """Divide element-wise, with `empty` where the denominator is 0."""
    shape = np.broadcast_shapes(numerator.shape, denominator.shape)
    out = np.full(shape, empty)
    np.divide(numerator, denominator, out=out, where=denominator != 0)
    return out
