"""Churn labels, backtests, learned weights, shadow scorecards and churn models.

The package reads stored snapshots and outcomes and never the faces or monitoring
layers. The CLI and the report call it. `dataset.build_observations` builds the
labelled rows that every method is fitted and scored on, and `compare` runs all
methods on the same time-ordered splits.
"""

__all__ = ["METHOD_KEYS"]

#: Keys of the scoring methods that `compare` fits and measures, in table order.
METHOD_KEYS = ("rules", "weighted", "learned", "ml", "hybrid", "survival", "clusters")
