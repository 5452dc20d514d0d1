"""Normalization of metric values to 0-100 measure scores.

`normalize` turns one metric column into scores with the method named in a
`NormalizeConfig`. A missing value (None, NaN or an infinite number) stays missing: it
gets no score, and percentile and zscore leave it out of the population. An infinite
value is also logged as a warning, because it means that a metric overflowed the
float64 range (about 1.8e308).

Direction `lower` (a lower value is better) is applied as `100 - score` for bounds,
percentile and zscore. Steps and categories list explicit scores, so they ignore the
direction. Target has its own rule for each direction, see `_target`.

With `log: true` the values go through log(1 + value) first. Negative values are
clipped to 0 before the transform because the option is meant for counts and amounts,
which are never negative. The thresholds of bounds, steps and target are written in
original units and transformed the same way. A fixed zscore `mean` and `std` describe
the transformed values, so they are in log(1 + value) units.
"""

from __future__ import annotations

import logging
from typing import Literal

import numpy as np
import pandas as pd

from healthscore.config.models import NormalizeConfig

Direction = Literal["higher", "lower"]

logger = logging.getLogger(__name__)

#: Number of account ids that the warning about infinite values lists.
_EXAMPLE_IDS = 5


class NormalizationError(ValueError):
    """Values or settings that a normalization method cannot score."""


def normalize(
    values: pd.Series,
    config: NormalizeConfig,
    direction: Direction = "higher",
    groups: pd.Series | None = None,
    partition: np.ndarray | None = None,
) -> pd.Series:
    """Score metric values from 0 to 100.

    Parameters
    ----------
    values
        Metric values, one per account. Numeric methods need numbers (or booleans).
        The categories method looks values up as text.
    config
        Method and its settings.
    direction
        `higher` when a higher value is better, `lower` when a lower value is better.
    groups
        For percentile and zscore, the group of each account (aligned with `values`
        on the index). Accounts are compared only within their group. Accounts with
        a missing group, or absent from `groups`, form one group of their own. None
        compares all values.
    partition
        For percentile and zscore, an integer per value (such as an as-of date's
        position) that splits the values into populations scored apart, each
        with its own `groups`. None scores all values as one population.

    Returns
    -------
    pd.Series
        float64 scores in [0, 100] on the index of `values`, NaN where the value is
        missing or, for categories, unlisted without a default.

    Raises
    ------
    NormalizationError
        When a numeric method gets text values, or when `log` collapses the bounds.
    """
    if config.method == "categories":
        scores = _categories(values, config)
    else:
        numbers = _as_numbers(values, config.method)
        if config.log:
            numbers = _log1p(numbers)
        if groups is not None and not groups.index.equals(values.index):
            groups = groups.reindex(values.index)
        keys = None
        if config.method in ("percentile", "zscore"):
            keys = _group_keys(groups, len(numbers), partition)
        scores = _numeric_scores(numbers, config, direction, keys)
    return pd.Series(scores, index=values.index, name=values.name, dtype="float64")


def _numeric_scores(
    numbers: np.ndarray,
    config: NormalizeConfig,
    direction: Direction,
    keys: np.ndarray | None,
) -> np.ndarray:
    """Dispatch to the numeric method; `numbers` are already transformed by `log`.

    `keys` are the comparison groups of percentile and zscore, from `_group_keys`.
    """
    if config.method == "steps":
        return _steps(numbers, config)
    if config.method == "target":
        return _target(numbers, config, direction)
    if config.method == "bounds":
        scores = _bounds(numbers, config)
    elif config.method == "percentile":
        assert keys is not None
        scores = _percentile(numbers, keys)
    else:
        assert keys is not None
        scores = _zscore(numbers, config, keys)
    return 100.0 - scores if direction == "lower" else scores


def _as_numbers(values: pd.Series, method: str) -> np.ndarray:
    """Convert to float64 with NaN for missing and infinite values."""
    if pd.api.types.is_bool_dtype(values) or pd.api.types.is_numeric_dtype(values):
        numbers = values.astype("float64").to_numpy(na_value=np.nan)
    else:
        try:
            numbers = (
                pd.to_numeric(values, errors="raise")
                .astype("float64")
                .to_numpy(na_value=np.nan)
            )
        except (ValueError, TypeError):
            sample = _first_text(values)
            raise NormalizationError(
                f"method {method} needs numbers but the values include text such as "
                f"{sample!r}; use method categories to score text values"
            ) from None
    numbers = numbers.copy()
    infinite = np.isinf(numbers)
    if infinite.any():
        _warn_infinite(values, infinite, method)
    numbers[infinite] = np.nan
    return numbers


def _warn_infinite(values: pd.Series, infinite: np.ndarray, method: str) -> None:
    """Log a warning naming the metric and the accounts whose value is infinite.

    The index of `values` contains account ids, once per as-of date when several
    dates are scored at once, so each id is counted once.
    """
    ids = pd.unique(values.index[infinite].astype(str))
    examples = ", ".join(ids[:_EXAMPLE_IDS])
    if len(ids) > _EXAMPLE_IDS:
        examples += ", ..."
    accounts = "1 account" if len(ids) == 1 else f"{len(ids)} accounts"
    logger.warning(
        "metric %r is infinite for %s (%s): the value is beyond the float64 range "
        "of about 1.8e308, so method %s gives no score for it; check the source "
        "values that the metric reads",
        values.name,
        accounts,
        examples,
        method,
    )


def _first_text(values: pd.Series) -> object:
    """First value that does not parse as a number, for error messages."""
    for value in values.dropna():
        try:
            float(value)
        except (ValueError, TypeError):
            return value
    return None


def _log1p(numbers: np.ndarray) -> np.ndarray:
    return np.log1p(np.clip(numbers, 0.0, None))


def _threshold(value: float, config: NormalizeConfig) -> float:
    """Move a threshold in original units to the scale the values are on."""
    return float(np.log1p(max(value, 0.0))) if config.log else value


def _bounds(numbers: np.ndarray, config: NormalizeConfig) -> np.ndarray:
    """Linear from `min` (0) to `max` (100), clipped to [0, 100]."""
    assert config.min is not None and config.max is not None
    low = _threshold(config.min, config)
    high = _threshold(config.max, config)
    if high <= low:
        raise NormalizationError(
            f"bounds {config.min}..{config.max} are equal after log(1 + value) "
            "because negative values clip to 0; set max above 0 or remove log"
        )
    # Halving first keeps the differences inside the float64 range for any value
    # and bounds. Halving is exact, so other values get the same scores.
    share = (numbers / 2.0 - low / 2.0) / (high / 2.0 - low / 2.0)
    return np.clip(share, 0.0, 1.0) * 100.0


def _steps(numbers: np.ndarray, config: NormalizeConfig) -> np.ndarray:
    """Score of the highest step whose `from` is at most the value.

    A value below the first step gets the first step's score.
    """
    starts = np.array([_threshold(step.start, config) for step in config.steps])
    step_scores = np.array([step.score for step in config.steps])
    missing = np.isnan(numbers)
    positions = np.searchsorted(starts, np.where(missing, 0.0, numbers), side="right")
    scores = step_scores[np.clip(positions - 1, 0, None)]
    return np.where(missing, np.nan, scores)


def _target(
    numbers: np.ndarray, config: NormalizeConfig, direction: Direction
) -> np.ndarray:
    """Share of the target reached.

    Higher is better: min(value / target, 1) * 100, and 0 for negative values.
    Lower is better: 100 at or below the target, else target / value * 100.
    """
    assert config.target is not None
    target = _threshold(config.target, config)
    if direction == "higher":
        return np.clip(numbers / target, 0.0, 1.0) * 100.0
    # Values at or below the target are replaced by the target before dividing, so no
    # division by 0 happens and their quotient is 1.
    above = np.where(numbers > target, numbers, target)
    return np.where(np.isnan(numbers), np.nan, target / above * 100.0)


def _group_keys(
    groups: pd.Series | None, length: int, partition: np.ndarray | None = None
) -> np.ndarray:
    """Integer group code per value; a missing group value is a group of its own.

    With `partition`, values of different partitions never share a group.
    """
    if groups is None:
        codes = np.zeros(length, dtype=np.int64)
    else:
        codes, _ = pd.factorize(groups, use_na_sentinel=False)
        codes = codes.astype(np.int64)
    if partition is None:
        return codes
    width = int(codes.max()) + 1 if length else 1
    return np.asarray(partition, dtype=np.int64) * width + codes


def _percentile(numbers: np.ndarray, keys: np.ndarray) -> np.ndarray:
    """Mid-rank (Hazen) percentile within each group: 100 * (rank - 0.5) / n.

    `rank` is the average rank among the group's non-missing values, so ties share a
    score and a group of one scores 50. The scores of a group average exactly 50.
    """
    frame = pd.DataFrame({"key": keys, "value": numbers})
    by_group = frame.groupby("key", sort=False)["value"]
    ranks = by_group.rank(method="average").to_numpy()
    counts = by_group.transform("count").to_numpy(dtype="float64")
    return 100.0 * (ranks - 0.5) / counts


def _zscore(
    numbers: np.ndarray, config: NormalizeConfig, keys: np.ndarray
) -> np.ndarray:
    """Logistic of the z-score: 100 / (1 + exp(-z)) with z = (x - mean) / std.

    Mean and population standard deviation (ddof 0) come from each group unless the
    config fixes them. The standard deviation is taken around the group's own mean
    even when `mean` is fixed. A group with zero spread scores 50.
    """
    # Each group's values are divided by a power of two near their largest
    # magnitude, so that squared deviations can neither overflow nor vanish for
    # tiny values. Dividing by a power of two is exact, so z does not change where
    # the unscaled values would not overflow.
    scales = _group_scales(numbers, keys)
    scaled = numbers / scales
    frame = pd.DataFrame({"key": keys, "value": scaled})
    by_group = frame.groupby("key", sort=False)["value"]
    group_means = by_group.transform("mean").to_numpy()
    with np.errstate(over="ignore"):
        # A fixed mean or std far beyond the values' scale becomes infinite.
        means = config.mean / scales if config.mean is not None else group_means
        if config.std is not None:
            stds = config.std / scales
    if config.std is None:
        # Two passes (mean, then mean squared deviation) keep the variance accurate
        # for values far from 0, unlike mean(x**2) - mean(x)**2.
        deviations = pd.Series((scaled - group_means) ** 2)
        variances = deviations.groupby(keys, sort=False).transform("mean").to_numpy()
        stds = np.sqrt(variances)
        # Rounding in the mean of identical values leaves a spread near 1e-17 times
        # the mean. A spread this small relative to the mean, or to 1 in the units
        # of the values, counts as none.
        stds[stds <= 1e-12 * np.maximum(np.abs(group_means), 1.0 / scales)] = 0.0
    spread = stds > 0
    with np.errstate(over="ignore"):
        z = np.divide(scaled - means, stds, out=np.zeros(len(numbers)), where=spread)
    # tanh form of the logistic function: it does not overflow for large |z|.
    scores = 50.0 * (1.0 + np.tanh(z / 2.0))
    return np.where(np.isnan(numbers), np.nan, scores)


def _group_scales(numbers: np.ndarray, keys: np.ndarray) -> np.ndarray:
    """Return, per value, the largest power of two up to its group's maximum |value|.

    A group without a nonzero value gets 1.
    """
    magnitudes = pd.Series(np.abs(numbers)).groupby(keys, sort=False)
    largest = magnitudes.transform("max").to_numpy()
    largest = np.where(np.isfinite(largest) & (largest > 0), largest, 1.0)
    # frexp gives largest = m * 2**e with 0.5 <= m < 1. 2**e can be 2**1024, which
    # is infinite in float64, so the scale is 2**(e - 1).
    _, exponents = np.frexp(largest)
    return np.ldexp(1.0, exponents - 1)


def _categories(values: pd.Series, config: NormalizeConfig) -> np.ndarray:
    """Score of each value's category; unlisted values get `default` (or NaN).

    Values are matched as text. Booleans match `true` and `false`, and whole numbers
    match without a decimal point, so 3.0 matches the key `3`.
    """
    keys = values.map(_category_key, na_action="ignore")
    scores = keys.map(config.scores).astype("float64")
    if config.default is not None:
        unlisted = keys.notna() & scores.isna()
        scores = scores.mask(unlisted, config.default)
    return scores.to_numpy(dtype="float64", na_value=np.nan)


def _category_key(value: object) -> str:
    if isinstance(value, bool | np.bool_):
        return "true" if value else "false"
    if isinstance(value, float | np.floating) and float(value).is_integer():
        return str(int(value))
    return str(value)
