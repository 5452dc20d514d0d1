"""Normalization methods: values computed by hand or by an independent definition."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from healthscore.config.models import NormalizeConfig
from healthscore.scoring import NormalizationError, normalize

NAN = float("nan")


def config(**options: Any) -> NormalizeConfig:
    return NormalizeConfig.model_validate(options)


def scores(values: list[Any], options: dict[str, Any], **kwargs: Any) -> list[float]:
    series = pd.Series(values, index=[f"a{i}" for i in range(len(values))])
    return normalize(series, config(**options), **kwargs).tolist()


def assert_scores(actual: list[float], expected: list[float]) -> None:
    assert len(actual) == len(expected)
    for got, want in zip(actual, expected, strict=True):
        if math.isnan(want):
            assert math.isnan(got), f"expected NaN, got {got}"
        else:
            assert got == pytest.approx(want, abs=1e-12)


def logistic(z: float) -> float:
    return 100.0 / (1.0 + math.exp(-z))


# bounds


def test_bounds_linear_and_clipped() -> None:
    options = {"method": "bounds", "min": 0, "max": 10}
    actual = scores([-5.0, 0.0, 2.5, 10.0, 15.0, None], options)
    assert_scores(actual, [0, 0, 25, 100, 100, NAN])


def test_bounds_lower_is_better() -> None:
    options = {"method": "bounds", "min": 0, "max": 10}
    actual = scores([-5.0, 2.5, 15.0, None], options, direction="lower")
    assert_scores(actual, [100, 75, 0, NAN])


def test_bounds_log_transforms_thresholds() -> None:
    # log1p(9) / log1p(99) = ln 10 / ln 100 = 0.5
    options = {"method": "bounds", "min": 0, "max": 99, "log": True}
    actual = scores([0.0, 9.0, 99.0, 500.0], options)
    assert_scores(actual, [0, 50, 100, 100])


def test_log_clips_negative_values_to_zero() -> None:
    options = {"method": "bounds", "min": 0, "max": 99, "log": True}
    assert_scores(scores([-3.0], options), [0])


def test_bounds_log_collapsed_rejected() -> None:
    options = {"method": "bounds", "min": -5, "max": -1, "log": True}
    with pytest.raises(NormalizationError, match=r"bounds -5.0..-1.0 are equal after"):
        scores([1.0], options)


def test_bounds_negative_min_with_log() -> None:
    # min -5 clips to 0 before the transform, so 0 scores 0 and 9 scores 50.
    options = {"method": "bounds", "min": -5, "max": 99, "log": True}
    assert_scores(scores([-1.0, 0.0, 9.0], options), [0, 0, 50])


# percentile


def test_percentile_mid_rank_with_ties() -> None:
    # Average ranks 1, 2.5, 2.5, 4 of n = 4: 100 * (rank - 0.5) / 4.
    actual = scores([10.0, 20.0, 20.0, 30.0, None], {"method": "percentile"})
    assert_scores(actual, [12.5, 50, 50, 87.5, NAN])


def test_percentile_lower_is_better() -> None:
    actual = scores(
        [10.0, 20.0, 20.0, 30.0], {"method": "percentile"}, direction="lower"
    )
    assert_scores(actual, [87.5, 50, 50, 12.5])


def test_percentile_within_groups() -> None:
    values = pd.Series([1.0, 2.0, 100.0, 7.0, 3.0], index=list("abcde"))
    groups = pd.Series(["x", "x", "y", None, "x"], index=list("abcde"))
    actual = normalize(values, config(method="percentile"), groups=groups)
    # x: 1, 2, 3 rank 1, 2, 3 of 3; y and the missing group hold one value each.
    expected = [100 * 0.5 / 3, 100 * 1.5 / 3, 50, 50, 100 * 2.5 / 3]
    assert_scores(actual.tolist(), expected)


def test_percentile_groups_aligned_on_index() -> None:
    values = pd.Series([1.0, 2.0, 3.0], index=["a", "b", "c"])
    groups = pd.Series(["y", "x", "x"], index=["c", "b", "a"])
    actual = normalize(values, config(method="percentile"), groups=groups)
    # a and b are group x (ranks 1 and 2); c is alone in group y.
    assert_scores(actual.tolist(), [25, 75, 50])


def test_percentile_single_value_scores_50() -> None:
    assert_scores(scores([42.0, None], {"method": "percentile"}), [50, NAN])


def test_percentile_log_keeps_ranks() -> None:
    plain = scores([1.0, 5.0, 50.0], {"method": "percentile"})
    logged = scores([1.0, 5.0, 50.0], {"method": "percentile", "log": True})
    assert_scores(logged, plain)


@settings(max_examples=60, deadline=None)
@given(
    st.lists(
        st.one_of(st.none(), st.integers(min_value=-5, max_value=5)),
        min_size=1,
        max_size=30,
    )
)
def test_percentile_matches_count_definition(values: list[int | None]) -> None:
    # Independent definition: (values below + half the equal values, itself
    # included) / count of present values.
    present = [value for value in values if value is not None]
    expected = []
    for value in values:
        if value is None:
            expected.append(NAN)
            continue
        below = sum(other < value for other in present)
        equal = sum(other == value for other in present)
        expected.append(100.0 * (below + 0.5 * equal) / len(present))
    numbers = [NAN if value is None else float(value) for value in values]
    assert_scores(scores(numbers, {"method": "percentile"}), expected)


# steps


def test_steps_highest_matching_step() -> None:
    options = {
        "method": "steps",
        "steps": [
            {"from": 0, "score": 10},
            {"from": 5, "score": 50},
            {"from": 10, "score": 90},
        ],
    }
    actual = scores([-1.0, 0.0, 4.99, 5.0, 12.0, None], options)
    assert_scores(actual, [10, 10, 10, 50, 90, NAN])


def test_steps_ignore_direction() -> None:
    options = {
        "method": "steps",
        "steps": [{"from": 0, "score": 20}, {"from": 5, "score": 80}],
    }
    higher = scores([1.0, 6.0], options)
    lower = scores([1.0, 6.0], options, direction="lower")
    assert_scores(lower, higher)


def test_steps_log_thresholds_in_original_units() -> None:
    options = {
        "method": "steps",
        "log": True,
        "steps": [{"from": 0, "score": 0}, {"from": 9, "score": 60}],
    }
    assert_scores(scores([8.99, 9.0, 1000.0], options), [0, 60, 60])


# target


def test_target_higher_is_better() -> None:
    options = {"method": "target", "target": 20}
    actual = scores([-5.0, 0.0, 10.0, 20.0, 40.0, None], options)
    assert_scores(actual, [0, 0, 50, 100, 100, NAN])


def test_target_lower_is_better() -> None:
    options = {"method": "target", "target": 20}
    actual = scores([-5.0, 10.0, 20.0, 40.0, 80.0, None], options, direction="lower")
    assert_scores(actual, [100, 100, 100, 50, 25, NAN])


def test_target_log() -> None:
    options = {"method": "target", "target": 99, "log": True}
    assert_scores(scores([9.0, 99.0], options), [50, 100])
    lower = scores([9.0, 9999.0], options, direction="lower")
    # log1p(99) / log1p(9999) = ln 100 / ln 10000 = 0.5
    assert_scores(lower, [100, 50])


# zscore


def test_zscore_population_mean_and_std() -> None:
    # Mean 5 and population standard deviation 2.
    values = [2.0, 4.0, 4.0, 4.0, 5.0, 5.0, 7.0, 9.0]
    actual = scores(values, {"method": "zscore"})
    expected = [logistic((value - 5.0) / 2.0) for value in values]
    assert_scores(actual, expected)


def test_zscore_lower_is_better() -> None:
    values = [2.0, 4.0, 4.0, 4.0, 5.0, 5.0, 7.0, 9.0]
    actual = scores(values, {"method": "zscore"}, direction="lower")
    expected = [logistic(-(value - 5.0) / 2.0) for value in values]
    assert_scores(actual, expected)


def test_zscore_fixed_mean_and_std() -> None:
    options = {"method": "zscore", "mean": 10, "std": 4}
    actual = scores([10.0, 14.0, 2.0, None], options)
    assert_scores(actual, [50, logistic(1.0), logistic(-2.0), NAN])


def test_zscore_fixed_mean_uses_group_spread() -> None:
    # Population std of 0 and 4 is 2; the fixed mean replaces only the centre.
    actual = scores([0.0, 4.0], {"method": "zscore", "mean": 0})
    assert_scores(actual, [50, logistic(2.0)])


def test_zscore_zero_spread_scores_50() -> None:
    actual = scores([0.1, 0.1, 0.1, None], {"method": "zscore"})
    assert_scores(actual, [50, 50, 50, NAN])


def test_zscore_within_groups() -> None:
    values = pd.Series([1.0, 3.0, 100.0], index=["a", "b", "c"])
    groups = pd.Series(["x", "x", "y"], index=["a", "b", "c"])
    actual = normalize(values, config(method="zscore"), groups=groups)
    assert_scores(actual.tolist(), [logistic(-1.0), logistic(1.0), 50])


def test_zscore_extreme_values_do_not_overflow() -> None:
    options = {"method": "zscore", "mean": 0, "std": 0.001}
    actual = scores([-1e6, 1e6], options)
    assert_scores(actual, [0, 100])


def test_zscore_log_uses_log_units() -> None:
    options = {"method": "zscore", "log": True, "mean": 0, "std": 1}
    assert_scores(scores([math.e - 1.0], options), [logistic(1.0)])


# categories


def test_categories_scores_and_default() -> None:
    options = {
        "method": "categories",
        "scores": {"gold": 100, "silver": 60},
        "default": 10,
    }
    actual = scores(["gold", "silver", "bronze", None], options)
    assert_scores(actual, [100, 60, 10, NAN])


def test_categories_unlisted_without_default() -> None:
    options = {"method": "categories", "scores": {"gold": 100}}
    assert_scores(scores(["gold", "tin"], options), [100, NAN])


def test_categories_ignore_direction() -> None:
    options = {"method": "categories", "scores": {"gold": 100, "tin": 0}}
    actual = scores(["gold", "tin"], options, direction="lower")
    assert_scores(actual, [100, 0])


def test_categories_booleans_and_whole_numbers() -> None:
    options = {"method": "categories", "scores": {"true": 90, "false": 20, "3": 70}}
    actual = scores([True, False, 3.0, 3.5], options)
    assert_scores(actual, [90, 20, 70, NAN])


def test_categories_pandas_text_dtype() -> None:
    values = pd.Series(["gold", None, "silver"], dtype="str")
    options = config(method="categories", scores={"gold": 100, "silver": 60})
    assert_scores(normalize(values, options).tolist(), [100, NAN, 60])


# inputs


def test_numeric_method_rejects_text() -> None:
    values = pd.Series(["12", "gold"], dtype=object)
    with pytest.raises(
        NormalizationError,
        match=r"method bounds needs numbers but the values include text such as "
        r"'gold'; use method categories to score text values",
    ):
        normalize(values, config(method="bounds", min=0, max=1))


def test_numeric_text_values_are_parsed() -> None:
    values = pd.Series(["5", None], dtype=object)
    actual = normalize(values, config(method="bounds", min=0, max=10))
    assert_scores(actual.tolist(), [50, NAN])


def test_infinite_values_are_missing() -> None:
    actual = scores([np.inf, -np.inf, 1.0], {"method": "zscore"})
    assert_scores(actual, [NAN, NAN, 50])


def test_result_keeps_index_name_and_dtype() -> None:
    values = pd.Series([1, 2], index=["x", "y"], name="logins", dtype="Int64")
    result = normalize(values, config(method="bounds", min=0, max=2))
    assert result.index.tolist() == ["x", "y"]
    assert result.name == "logins"
    assert result.dtype == np.float64
    assert result.tolist() == [50.0, 100.0]


def test_nullable_missing_value() -> None:
    values = pd.Series([4, None], dtype="Int64")
    actual = normalize(values, config(method="target", target=8))
    assert_scores(actual.tolist(), [50, NAN])
