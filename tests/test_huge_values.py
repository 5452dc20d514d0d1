"""Metric values and scores near the float64 limit (about 1.8e308).

Every expected value is worked out by hand in the comments beside it.
"""

from __future__ import annotations

import logging
import math
from datetime import date
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from healthscore.config.models import NormalizeConfig, RatioMetric
from healthscore.metrics import compute_metrics
from healthscore.metrics.derived import ratio
from healthscore.pipeline import open_engine
from healthscore.scoring import normalize
from project_factory import minimal_config, write_project

AS_OF = date(2026, 3, 20)

ACCOUNTS = "account_id,name\nbig,Big\nneg,Neg\ntiny,Tiny\nsmall,Small\n"

# big: two values of 1e308, whose sum 2e308 overflows, and so does their mean.
# neg: -5 and -1e300. tiny: one value of 1e-300. small: 0.1, 0.2 and 0.4.
EVENTS = """account_id,timestamp,value
big,2026-03-10,1e308
big,2026-03-11,1e308
neg,2026-03-10,-5
neg,2026-03-11,-1e300
tiny,2026-03-10,1e-300
small,2026-03-10,0.1
small,2026-03-11,0.2
small,2026-03-12,0.4
"""

METRICS = {
    "vsum": {"type": "sum", "source": "events", "column": "value", "window": "28d"},
    "vmean": {"type": "mean", "source": "events", "column": "value", "window": "28d"},
    "n": {"type": "count", "source": "events", "window": "28d"},
    "ratio": {"type": "ratio", "numerator": "vsum", "denominator": "n"},
    "quotient": {"type": "formula", "expression": "vsum / n"},
}


def huge_values(tmp_path: Path) -> pd.DataFrame:
    config = minimal_config(metrics=METRICS)
    config["scorecards"][0]["components"]["usage"]["measures"] = [
        {"metric": "vmean", "normalize": {"method": "zscore"}}
    ]
    files: dict[str, Any] = {"accounts.csv": ACCOUNTS, "events.csv": EVENTS}
    project = write_project(tmp_path, config, files)
    return compute_metrics(project, open_engine(project).sources, AS_OF).values


def test_mean_whose_sum_overflows_is_infinite(tmp_path: Path) -> None:
    values = huge_values(tmp_path)
    # The engine adds in float64 before dividing: 1e308 + 1e308 is already inf.
    assert values.loc["big", "vmean"] == math.inf
    # (-5 - 1e300) / 2 = -5e299: the -5 is far below the precision of -1e300.
    assert values.loc["neg", "vmean"] == -5e299


def test_mean_of_ordinary_values_unchanged(tmp_path: Path) -> None:
    values = huge_values(tmp_path)
    # A single tiny value is its own mean.
    assert values.loc["tiny", "vmean"] == 1e-300
    # DuckDB adds 0.1 + 0.2 + 0.4 in float64, as Python does, then divides by 3.
    assert values.loc["small", "vmean"] == (0.1 + 0.2 + 0.4) / 3


def test_sum_beyond_float64_is_infinite(tmp_path: Path) -> None:
    values = huge_values(tmp_path)
    assert values.loc["big", "vsum"] == math.inf
    assert values.loc["neg", "vsum"] == -5 - 1e300


def test_ratio_and_formula_agree_on_overflow(tmp_path: Path) -> None:
    values = huge_values(tmp_path)
    # vsum of big is infinite, so vsum / n is not a number either way.
    assert math.isnan(values.loc["big", "ratio"])
    assert math.isnan(values.loc["big", "quotient"])
    # A finite quotient is the same for both: (-5 - 1e300) / 2.
    assert values.loc["neg", "ratio"] == (-5 - 1e300) / 2
    assert values.loc["neg", "quotient"] == (-5 - 1e300) / 2


def test_ratio_quotient_beyond_float64_is_missing() -> None:
    metric = RatioMetric(type="ratio", numerator="top", denominator="bottom")
    frame = pd.DataFrame({"top": [1e300, 1e300], "bottom": [1e-10, 4.0]})
    quotients = ratio(frame, metric)
    # 1e300 / 1e-10 = 1e310 is beyond float64.
    assert math.isnan(quotients[0])
    assert quotients[1] == 2.5e299


def zscore_scores(values: list[float], **options: Any) -> list[float]:
    series = pd.Series(values, index=[f"a{i}" for i in range(len(values))])
    config = NormalizeConfig.model_validate({"method": "zscore", **options})
    return normalize(series, config).tolist()


def logistic(z: float) -> float:
    return 100.0 / (1.0 + math.exp(-z))


def test_zscore_of_huge_values() -> None:
    scores = zscore_scores([-1e300, 1e-300, 0.0])
    # In units of 1e300 the values are -1, 0, 0: mean -1/3, deviations -2/3, 1/3,
    # 1/3, population variance (4/9 + 1/9 + 1/9) / 3 = 2/9, std sqrt(2) / 3.
    # z = (-2/3) / (sqrt(2) / 3) = -sqrt(2) and (1/3) / (sqrt(2) / 3) = 1 / sqrt(2).
    assert scores[0] == pytest.approx(logistic(-math.sqrt(2)), abs=1e-9)
    assert scores[1] == pytest.approx(logistic(1 / math.sqrt(2)), abs=1e-9)
    assert scores[2] == pytest.approx(logistic(1 / math.sqrt(2)), abs=1e-9)
    assert round(scores[0], 1) == 19.6
    assert round(scores[1], 1) == 67.0


def test_zscore_near_float64_maximum() -> None:
    scores = zscore_scores([1.7e308, -1.7e308])
    # Mean 0, population std 1.7e308, so z = 1 and -1.
    assert scores[0] == pytest.approx(logistic(1.0), abs=1e-9)
    assert scores[1] == pytest.approx(logistic(-1.0), abs=1e-9)


def test_zscore_of_tiny_values_with_fixed_std() -> None:
    scores = zscore_scores([1e-300, 3e-300], mean=0.0, std=1e-300)
    # z = 1 and 3 with the fixed mean and std.
    assert scores[0] == pytest.approx(logistic(1.0), abs=1e-9)
    assert scores[1] == pytest.approx(logistic(3.0), abs=1e-9)


def test_bounds_spanning_float64_range() -> None:
    series = pd.Series([0.0, 1e308, -1e308, 5e307], index=["a", "b", "c", "d"])
    config = NormalizeConfig.model_validate(
        {"method": "bounds", "min": -1e308, "max": 1e308}
    )
    scores = normalize(series, config).tolist()
    # 100 * (value + 1e308) / 2e308: 50, 100, 0 and 75.
    assert scores == pytest.approx([50.0, 100.0, 0.0, 75.0], abs=1e-9)


def test_infinite_value_logs_warning(caplog: pytest.LogCaptureFixture) -> None:
    series = pd.Series(
        [math.inf, 3.0, -math.inf, 1.0], index=["big", "a1", "neg", "a2"], name="vsum"
    )
    config = NormalizeConfig.model_validate({"method": "bounds", "min": 0, "max": 10})
    with caplog.at_level(logging.WARNING, logger="healthscore"):
        scores = normalize(series, config)
    assert math.isnan(scores["big"])
    assert math.isnan(scores["neg"])
    assert scores["a1"] == 30.0
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1
    message = warnings[0].getMessage()
    assert "metric 'vsum'" in message
    assert "2 accounts" in message
    assert "big, neg" in message


def test_finite_values_log_no_warning(caplog: pytest.LogCaptureFixture) -> None:
    series = pd.Series([1e308, math.nan], index=["big", "a1"], name="vsum")
    config = NormalizeConfig.model_validate({"method": "bounds", "min": 0, "max": 10})
    with caplog.at_level(logging.WARNING, logger="healthscore"):
        normalize(series, config)
    assert not [r for r in caplog.records if r.levelno == logging.WARNING]
