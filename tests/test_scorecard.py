"""Scorecards: routing, weights, coverage, bands and overrides, checked by hand."""

from __future__ import annotations

import math
from datetime import date, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from healthscore.config import Project, ProjectConfig
from healthscore.config.overrides import Override
from healthscore.scoring import (
    COMPONENT_COLUMNS,
    MEASURE_COLUMNS,
    SCORE_COLUMNS,
    ScoreResult,
    ScoringInputError,
    assign_bands,
    score_accounts,
)

AS_OF = date(2024, 3, 1)
NAN = float("nan")


def bounds(low: float = 0, high: float = 100) -> dict[str, Any]:
    return {"method": "bounds", "min": low, "max": high}


def build_config(
    scorecards: list[dict[str, Any]],
    metrics: list[str],
    metric_settings: dict[str, Any] | None = None,
    **extra: Any,
) -> ProjectConfig:
    """Project with count metrics `metrics` plus `metric_settings` by name."""
    counts = {name: {"type": "count", "source": "accounts"} for name in metrics}
    return ProjectConfig.model_validate(
        {
            "name": "test",
            "sources": {"accounts": {"kind": "accounts", "path": "accounts.csv"}},
            "metrics": counts | (metric_settings or {}),
            "scorecards": scorecards,
            **extra,
        }
    )


def frame(rows: dict[str, dict[str, Any]]) -> pd.DataFrame:
    table = pd.DataFrame.from_dict(rows, orient="index")
    table.index.name = "account_id"
    return table


def versions_of(config: ProjectConfig) -> dict[str, str]:
    project = Project(root=Path("."), config=config)
    return {card.name: project.scorecard_version(card) for card in config.scorecards}


def run(
    config: ProjectConfig,
    metrics: pd.DataFrame,
    accounts: pd.DataFrame | None = None,
    overrides: list[Override] | None = None,
    as_of: date = AS_OF,
) -> ScoreResult:
    if accounts is None:
        accounts = pd.DataFrame(index=metrics.index)
    return score_accounts(
        config, metrics, accounts, overrides or [], as_of, versions_of(config)
    )


def by_account(table: pd.DataFrame) -> pd.DataFrame:
    return table.set_index("account_id")


def measure_row(result: ScoreResult, account: str, measure: str) -> pd.Series:
    rows = result.measures
    match = rows[(rows["account_id"] == account) & (rows["measure"] == measure)]
    assert len(match) == 1
    return match.iloc[0]


def override(**fields: Any) -> Override:
    defaults = {
        "reason": "renewal signed",
        "author": "ann",
        "created_at": datetime(2024, 2, 1, 9, 0),
        "expires_on": date(2024, 3, 31),
    }
    return Override.model_validate(defaults | fields)


# A 3-measure, 2-component scorecard. Configured shares of the score:
# usage 3/4 (logins 1/4 of it = 0.1875, seats 3/4 of it = 0.5625), support 1/4
# (tickets = 0.25).
HAND_SCORECARD = {
    "name": "default",
    "components": {
        "usage": {
            "weight": 3,
            "measures": [
                {"metric": "logins", "weight": 1, "normalize": bounds(0, 10)},
                {"metric": "seats", "weight": 3, "normalize": bounds(0, 100)},
            ],
        },
        "support": {
            "weight": 1,
            "measures": [
                {
                    "metric": "tickets",
                    "direction": "lower",
                    "normalize": bounds(0, 10),
                }
            ],
        },
    },
}


@pytest.fixture
def hand_result() -> ScoreResult:
    config = build_config([HAND_SCORECARD], ["logins", "seats", "tickets"])
    metrics = frame(
        {
            "full": {"logins": 5.0, "seats": 80.0, "tickets": 2.0},
            "no_logins": {"logins": NAN, "seats": 40.0, "tickets": 5.0},
            "usage_only": {"logins": 10.0, "seats": NAN, "tickets": NAN},
            "empty": {"logins": NAN, "seats": NAN, "tickets": NAN},
        }
    )
    return run(config, metrics)


# weights and coverage


def test_all_measures_present(hand_result: ScoreResult) -> None:
    scores = by_account(hand_result.scores)
    # 0.1875 * 50 + 0.5625 * 80 + 0.25 * (100 - 20) = 9.375 + 45 + 20
    assert scores.loc["full", "score"] == pytest.approx(74.375, abs=1e-12)
    assert scores.loc["full", "coverage"] == pytest.approx(1.0)
    assert scores.loc["full", "band"] == "healthy"
    logins = measure_row(hand_result, "full", "logins")
    assert logins["normalized"] == 50.0
    assert logins["weight"] == pytest.approx(0.1875)
    assert logins["effective_weight"] == pytest.approx(0.1875)
    assert logins["contribution"] == pytest.approx(9.375)


def test_component_scores(hand_result: ScoreResult) -> None:
    components = hand_result.components
    full = components[components["account_id"] == "full"].set_index("component")
    # usage = (1 * 50 + 3 * 80) / 4
    assert full.loc["usage", "score"] == pytest.approx(72.5)
    assert full.loc["support", "score"] == pytest.approx(80.0)
    assert full.loc["usage", "weight"] == pytest.approx(0.75)
    assert full.loc["support", "effective_weight"] == pytest.approx(0.25)


def test_missing_measure_weight_spreads_in_component(hand_result: ScoreResult) -> None:
    scores = by_account(hand_result.scores)
    # usage is seats alone (40); score = 0.75 * 40 + 0.25 * 50
    assert scores.loc["no_logins", "score"] == pytest.approx(42.5, abs=1e-12)
    # coverage = 0.5625 + 0.25
    assert scores.loc["no_logins", "coverage"] == pytest.approx(0.8125)
    seats = measure_row(hand_result, "no_logins", "seats")
    assert seats["weight"] == pytest.approx(0.5625)
    assert seats["effective_weight"] == pytest.approx(0.75)
    logins = measure_row(hand_result, "no_logins", "logins")
    assert math.isnan(logins["normalized"])
    assert math.isnan(logins["value"])
    assert logins["effective_weight"] == 0.0
    assert logins["contribution"] == 0.0


def test_missing_component_weight_spreads(hand_result: ScoreResult) -> None:
    scores = by_account(hand_result.scores)
    assert scores.loc["usage_only", "score"] == pytest.approx(100.0)
    assert scores.loc["usage_only", "coverage"] == pytest.approx(0.1875)
    logins = measure_row(hand_result, "usage_only", "logins")
    assert logins["effective_weight"] == pytest.approx(1.0)
    components = hand_result.components
    support = components[
        (components["account_id"] == "usage_only")
        & (components["component"] == "support")
    ].iloc[0]
    assert math.isnan(support["score"])
    assert support["effective_weight"] == 0.0
    assert support["weight"] == pytest.approx(0.25)


def test_low_coverage_band_keeps_score(hand_result: ScoreResult) -> None:
    scores = by_account(hand_result.scores)
    # 0.1875 is below the default min_coverage of 0.5.
    assert scores.loc["usage_only", "band"] == "insufficient_data"
    assert scores.loc["usage_only", "score"] == pytest.approx(100.0)


def test_zero_coverage_has_no_score(hand_result: ScoreResult) -> None:
    scores = by_account(hand_result.scores)
    assert math.isnan(scores.loc["empty", "score"])
    assert math.isnan(scores.loc["empty", "computed_score"])
    assert scores.loc["empty", "coverage"] == 0.0
    assert scores.loc["empty", "band"] == "insufficient_data"


def test_coverage_at_minimum_is_enough() -> None:
    # Shares 0.1, 0.1, 0.1, 0.7: 0.1 + 0.1 + 0.7 sums to 0.8999999999999999 in floats.
    components = {
        f"c{i}": {
            "weight": weight,
            "measures": [{"metric": f"m{i}", "normalize": bounds()}],
        }
        for i, weight in enumerate([1, 1, 1, 7])
    }
    card = {"name": "default", "min_coverage": 0.9, "components": components}
    config = build_config([card], ["m0", "m1", "m2", "m3"])
    metrics = frame({"a": {"m0": 50.0, "m1": 50.0, "m2": NAN, "m3": 50.0}})
    scores = by_account(run(config, metrics).scores)
    assert scores.loc["a", "band"] == "stable"
    assert scores.loc["a", "coverage"] == pytest.approx(0.9)


def test_contributions_sum_to_score(hand_result: ScoreResult) -> None:
    totals = hand_result.measures.groupby("account_id")["contribution"].sum()
    scores = by_account(hand_result.scores)["score"]
    for account in ("full", "no_logins", "usage_only"):
        assert totals[account] == pytest.approx(scores[account], abs=1e-9)


def test_scorecard_version_and_label() -> None:
    card = HAND_SCORECARD | {"version": "2024-q1"}
    config = build_config([card], ["logins", "seats", "tickets"])
    metrics = frame({"a": {"logins": 1.0, "seats": 1.0, "tickets": 1.0}})
    scores = run(config, metrics).scores
    expected = Project(root=Path("."), config=config).scorecard_version(
        config.scorecards[0]
    )
    assert scores.loc[0, "scorecard_version"] == expected
    assert scores.loc[0, "scorecard_label"] == "2024-q1"
    assert scores.loc[0, "as_of"] == AS_OF


# bands


def single_measure_config(**card: Any) -> ProjectConfig:
    scorecard = {
        "name": "default",
        "components": {
            "all": {"weight": 1, "measures": [{"metric": "x", "normalize": bounds()}]}
        },
    } | card
    return build_config([scorecard], ["x"])


@pytest.mark.parametrize(
    ("value", "band"),
    [
        (0.0, "at_risk"),
        (40.4, "at_risk"),
        (40.49, "at_risk"),
        (40.5, "stable"),
        (70.4, "stable"),
        (70.5, "healthy"),
        (100.0, "healthy"),
    ],
)
def test_band_edges_round_half_up(value: float, band: str) -> None:
    metrics = frame({"a": {"x": value}})
    scores = run(single_measure_config(), metrics).scores
    assert scores.loc[0, "score"] == pytest.approx(value)
    assert scores.loc[0, "band"] == band


def test_assign_bands_custom_bands() -> None:
    bands = [
        {"name": "red", "label": "Red", "min": 0, "max": 49, "color": "#f00"},
        {"name": "green", "label": "Green", "min": 50, "max": 100, "color": "#0f0"},
    ]
    scorecards = single_measure_config().model_dump(by_alias=True)["scorecards"]
    custom = build_config(scorecards, ["x"], bands=bands)
    actual = assign_bands(np.array([49.49, 49.5, NAN]), custom.bands)
    assert actual.tolist() == ["red", "green", None]


# routing


ROUTED = [
    {
        "name": "enterprise",
        "when": "segment == 'enterprise'",
        "components": {
            "usage": {
                "weight": 1,
                "measures": [{"metric": "logins", "normalize": bounds(0, 10)}],
            }
        },
    },
    {
        "name": "small",
        "when": "segment == 'smb' or arr < 1000",
        "components": {
            "usage": {
                "weight": 1,
                "measures": [{"metric": "logins", "normalize": bounds(0, 20)}],
            }
        },
    },
]


@pytest.fixture
def routed_result() -> ScoreResult:
    config = build_config(ROUTED, ["logins"])
    metrics = frame(
        {
            "big": {"logins": 5.0},
            "big_cheap": {"logins": 5.0},
            "small": {"logins": 5.0},
            "cheap": {"logins": 5.0},
            "other": {"logins": 5.0},
            "no_row": {"logins": 5.0},
        }
    )
    accounts = frame(
        {
            "big": {"segment": "enterprise", "arr": 50000.0},
            "big_cheap": {"segment": "enterprise", "arr": 500.0},
            "small": {"segment": "smb", "arr": 5000.0},
            "cheap": {"segment": "mid", "arr": 500.0},
            "other": {"segment": "mid", "arr": 5000.0},
            "ghost": {"segment": "smb", "arr": 1.0},
        }
    )
    return run(config, metrics, accounts)


def test_first_matching_scorecard_wins(routed_result: ScoreResult) -> None:
    scores = by_account(routed_result.scores)
    assert scores.loc["big", "scorecard"] == "enterprise"
    assert scores.loc["big_cheap", "scorecard"] == "enterprise"
    assert scores.loc["big_cheap", "score"] == pytest.approx(50.0)
    assert scores.loc["small", "scorecard"] == "small"
    assert scores.loc["small", "score"] == pytest.approx(25.0)
    assert scores.loc["cheap", "scorecard"] == "small"


def test_unmatched_account_is_unscored(routed_result: ScoreResult) -> None:
    scores = by_account(routed_result.scores)
    for account in ("other", "no_row"):
        assert scores.loc[account, "band"] == "unscored"
        assert pd.isna(scores.loc[account, "scorecard"])
        assert math.isnan(scores.loc[account, "score"])
    assert routed_result.unscored_count == 2
    assert "other" not in set(routed_result.measures["account_id"])
    assert "other" not in set(routed_result.components["account_id"])


def test_population_is_metrics_index(routed_result: ScoreResult) -> None:
    expected = ["big", "big_cheap", "small", "cheap", "other", "no_row"]
    assert routed_result.scores["account_id"].tolist() == expected


def test_when_reads_metric_and_account_id() -> None:
    cards = [
        ROUTED[0] | {"when": "logins > 3 and account_id != 'b'"},
        ROUTED[1] | {"when": None},
    ]
    config = build_config(cards, ["logins"])
    metrics = frame({"a": {"logins": 5.0}, "b": {"logins": 5.0}, "c": {"logins": 1.0}})
    scores = by_account(run(config, metrics).scores)
    assert scores["scorecard"].tolist() == ["enterprise", "small", "small"]


def test_when_name_clash_rejected() -> None:
    cards = [ROUTED[0] | {"when": "seats > 3"}, ROUTED[1] | {"when": None}]
    config = build_config(cards, ["logins", "seats"])
    metrics = frame({"a": {"logins": 1.0, "seats": 2.0}})
    accounts = frame({"a": {"seats": 10.0}})
    with pytest.raises(
        ScoringInputError,
        match=r"the when condition of scorecard 'enterprise' reads 'seats', which is "
        r"both a metric and an account column; rename the metric",
    ):
        run(config, metrics, accounts)


def test_attribute_metric_copy_is_not_a_clash() -> None:
    cards = [ROUTED[0], ROUTED[1] | {"when": None}]
    config = build_config(
        cards,
        ["logins"],
        metric_settings={"segment": {"type": "attribute", "column": "segment"}},
    )
    metrics = frame(
        {
            "a": {"logins": 1.0, "segment": "enterprise"},
            "b": {"logins": 1.0, "segment": "smb"},
        }
    )
    accounts = frame({"a": {"segment": "enterprise"}, "b": {"segment": "smb"}})
    scores = by_account(run(config, metrics, accounts).scores)
    assert scores["scorecard"].tolist() == ["enterprise", "small"]


def test_when_unknown_name_rejected() -> None:
    config = build_config([ROUTED[0] | {"when": "tier == 'gold'"}], ["logins"])
    metrics = frame({"a": {"logins": 1.0}})
    accounts = frame({"a": {"segment": "smb"}})
    with pytest.raises(
        ScoringInputError,
        match=r"the when condition of scorecard 'enterprise' reads unknown name "
        r"'tier'; available: account_id, logins, segment",
    ):
        run(config, metrics, accounts)


def test_when_not_boolean_rejected() -> None:
    config = build_config([ROUTED[0] | {"when": "logins + 1"}], ["logins"])
    metrics = frame({"a": {"logins": 1.0}})
    with pytest.raises(
        ScoringInputError,
        match=r"the when condition of scorecard 'enterprise' 'logins \+ 1' gives "
        r"float64 values instead of true or false",
    ):
        run(config, metrics)


def test_percentile_within_account_column() -> None:
    card = {
        "name": "default",
        "components": {
            "usage": {
                "weight": 1,
                "measures": [
                    {
                        "metric": "logins",
                        "normalize": {"method": "percentile", "within": "segment"},
                    }
                ],
            }
        },
    }
    config = build_config([card], ["logins"])
    metrics = frame(
        {"a": {"logins": 1.0}, "b": {"logins": 9.0}, "c": {"logins": 100.0}}
    )
    accounts = frame(
        {"a": {"segment": "x"}, "b": {"segment": "x"}, "c": {"segment": "y"}}
    )
    scores = by_account(run(config, metrics, accounts).scores)["score"]
    assert scores.tolist() == pytest.approx([25.0, 75.0, 50.0])


def test_percentile_compares_within_scorecard() -> None:
    cards = [
        ROUTED[0]
        | {
            "components": {
                "usage": {
                    "weight": 1,
                    "measures": [
                        {"metric": "logins", "normalize": {"method": "percentile"}}
                    ],
                }
            }
        },
        ROUTED[1] | {"when": None},
    ]
    config = build_config(cards, ["logins"])
    metrics = frame({"a": {"logins": 1.0}, "b": {"logins": 2.0}, "c": {"logins": 3.0}})
    accounts = frame(
        {
            "a": {"segment": "enterprise"},
            "b": {"segment": "smb"},
            "c": {"segment": "enterprise"},
        }
    )
    scores = by_account(run(config, metrics, accounts).scores)["score"]
    # Only a and c use the enterprise scorecard: ranks 1 and 2 of 2.
    assert scores["a"] == pytest.approx(25.0)
    assert scores["c"] == pytest.approx(75.0)


# text values


def test_text_metric_values() -> None:
    card = {
        "name": "default",
        "components": {
            "plan": {
                "weight": 1,
                "measures": [
                    {
                        "metric": "plan",
                        "normalize": {
                            "method": "categories",
                            "scores": {"gold": 100, "free": 20},
                        },
                    }
                ],
            }
        },
    }
    config = build_config(
        [card], [], metric_settings={"plan": {"type": "attribute", "column": "plan"}}
    )
    metrics = frame({"a": {"plan": "gold"}, "b": {"plan": "free"}, "c": {"plan": None}})
    result = run(config, metrics)
    gold = measure_row(result, "a", "plan")
    assert gold["value_text"] == "gold"
    assert math.isnan(gold["value"])
    assert gold["normalized"] == 100.0
    assert pd.isna(measure_row(result, "c", "plan")["value_text"])
    assert by_account(result.scores)["score"].tolist()[:2] == [100.0, 20.0]


def test_text_values_with_numeric_method_rejected() -> None:
    card = single_measure_config().scorecards[0].model_dump(by_alias=True)
    config = build_config(
        [card], [], metric_settings={"x": {"type": "attribute", "column": "plan"}}
    )
    metrics = frame({"a": {"x": "gold"}})
    with pytest.raises(
        ScoringInputError,
        match=r"measure 'x' of scorecard 'default': method bounds needs numbers but "
        r"the values include text such as 'gold'",
    ):
        run(config, metrics)


# input checks


def test_missing_metric_column_rejected() -> None:
    config = build_config([HAND_SCORECARD], ["logins", "seats", "tickets"])
    metrics = frame({"a": {"logins": 1.0, "seats": 1.0}})
    with pytest.raises(
        ScoringInputError,
        match=r"metric 'tickets' of measure 'tickets' in scorecard 'default' is "
        r"missing from the metrics table",
    ):
        run(config, metrics)


def test_missing_version_rejected() -> None:
    config = single_measure_config()
    metrics = frame({"a": {"x": 1.0}})
    with pytest.raises(ScoringInputError, match=r"no version for scorecard 'default'"):
        score_accounts(
            config, metrics, pd.DataFrame(index=metrics.index), [], AS_OF, {}
        )


def test_duplicate_account_rejected() -> None:
    metrics = pd.DataFrame(
        {"x": [1.0, 2.0]}, index=pd.Index(["a", "a"], name="account_id")
    )
    with pytest.raises(
        ScoringInputError,
        match=r"the metrics table lists account_id 'a' more than once",
    ):
        run(single_measure_config(), metrics)


# overrides


def test_measure_override_replaces_score() -> None:
    config = build_config([HAND_SCORECARD], ["logins", "seats", "tickets"])
    metrics = frame({"a": {"logins": NAN, "seats": 40.0, "tickets": 5.0}})
    item = override(account_id="a", measure="logins", score=90, reason="usage in app")
    result = run(config, metrics, overrides=[item])
    logins = measure_row(result, "a", "logins")
    assert logins["overridden"]
    assert logins["normalized"] == 90.0
    assert math.isnan(logins["value"])
    assert logins["override_reason"] == "usage in app"
    assert logins["override_author"] == "ann"
    scores = by_account(result.scores)
    # Now all present: 0.1875 * 90 + 0.5625 * 40 + 0.25 * 50
    assert scores.loc["a", "score"] == pytest.approx(16.875 + 22.5 + 12.5)
    assert scores.loc["a", "coverage"] == pytest.approx(1.0)
    assert not measure_row(result, "a", "seats")["overridden"]
    assert pd.isna(measure_row(result, "a", "seats")["override_reason"])


def test_score_override_replaces_final_score() -> None:
    config = build_config([HAND_SCORECARD], ["logins", "seats", "tickets"])
    metrics = frame(
        {
            "a": {"logins": 5.0, "seats": 80.0, "tickets": 2.0},
            "b": {"logins": 5.0, "seats": 80.0, "tickets": 2.0},
        }
    )
    item = override(account_id="a", score=30, reason="champion left", author="bo")
    scores = by_account(run(config, metrics, overrides=[item]).scores)
    assert scores.loc["a", "score"] == 30.0
    assert scores.loc["a", "computed_score"] == pytest.approx(74.375)
    assert scores.loc["a", "band"] == "at_risk"
    assert scores.loc["a", "override_reason"] == "champion left"
    assert scores.loc["a", "override_author"] == "bo"
    assert pd.isna(scores.loc["b", "override_reason"])
    assert scores.loc["b", "score"] == pytest.approx(74.375)


def test_score_override_bands_insufficient_data() -> None:
    config = build_config([HAND_SCORECARD], ["logins", "seats", "tickets"])
    metrics = frame({"a": {"logins": NAN, "seats": NAN, "tickets": NAN}})
    item = override(account_id="a", score=80)
    scores = by_account(run(config, metrics, overrides=[item]).scores)
    assert scores.loc["a", "score"] == 80.0
    assert scores.loc["a", "band"] == "healthy"
    assert math.isnan(scores.loc["a", "computed_score"])


def test_override_active_through_expiry_date() -> None:
    config = single_measure_config()
    metrics = frame({"a": {"x": 10.0}})
    item = override(account_id="a", score=99, expires_on=date(2024, 3, 1))
    on_expiry = by_account(run(config, metrics, overrides=[item]).scores)
    assert on_expiry.loc["a", "score"] == 99.0
    after = run(config, metrics, overrides=[item], as_of=date(2024, 3, 2))
    assert by_account(after.scores).loc["a", "score"] == pytest.approx(10.0)
    assert after.ignored_overrides == []


def test_newest_override_wins() -> None:
    config = single_measure_config()
    metrics = frame({"a": {"x": 10.0}})
    old = override(account_id="a", score=20, created_at=datetime(2024, 1, 1))
    new = override(account_id="a", score=60, created_at=datetime(2024, 2, 1))
    result = run(config, metrics, overrides=[new, old])
    assert by_account(result.scores).loc["a", "score"] == 60.0
    assert len(result.ignored_overrides) == 1
    assert result.ignored_overrides[0].override == old
    assert (
        result.ignored_overrides[0].reason
        == "a newer override of the same score applies"
    )


def test_inapplicable_overrides_are_reported() -> None:
    config = build_config(ROUTED, ["logins"])
    metrics = frame({"a": {"logins": 1.0}, "b": {"logins": 1.0}})
    accounts = frame(
        {"a": {"segment": "smb", "arr": 5.0}, "b": {"segment": "x", "arr": 5e3}}
    )
    items = [
        override(account_id="zz", score=10),
        override(account_id="b", score=10),
        override(account_id="a", measure="nps", score=10),
    ]
    result = run(config, metrics, accounts, overrides=items)
    reasons = [ignored.reason for ignored in result.ignored_overrides]
    assert reasons == [
        "account 'zz' is not scored as of 2024-03-01",
        "account 'b' matches no scorecard",
        "scorecard 'small' of account 'a' has no measure 'nps'",
    ]
    assert by_account(result.scores).loc["a", "score"] == pytest.approx(5.0)


def test_override_model_validation() -> None:
    with pytest.raises(ValueError, match=r"reason\n  Value error, must not be empty"):
        override(account_id="a", score=10, reason="  ")
    with pytest.raises(
        ValueError, match=r"score\n  Input should be less than or equal"
    ):
        override(account_id="a", score=101)


# tables


def test_table_columns_and_dtypes(routed_result: ScoreResult) -> None:
    tables = {
        "scores": (routed_result.scores, SCORE_COLUMNS),
        "components": (routed_result.components, COMPONENT_COLUMNS),
        "measures": (routed_result.measures, MEASURE_COLUMNS),
    }
    for name, (table, spec) in tables.items():
        assert list(table.columns) == list(spec), name
        actual = {column: str(dtype) for column, dtype in table.dtypes.items()}
        assert actual == dict(spec), name


def test_empty_tables_keep_dtypes() -> None:
    config = build_config([ROUTED[0]], ["logins"])
    metrics = frame({"a": {"logins": 1.0}})
    accounts = frame({"a": {"segment": "smb"}})
    result = run(config, metrics, accounts)
    assert len(result.measures) == 0
    actual = {column: str(dtype) for column, dtype in result.measures.dtypes.items()}
    assert actual == MEASURE_COLUMNS


def test_tables_round_trip_parquet(tmp_path: Path) -> None:
    config = build_config([HAND_SCORECARD], ["logins", "seats", "tickets"])
    metrics = frame(
        {
            "a": {"logins": 5.0, "seats": 80.0, "tickets": 2.0},
            "b": {"logins": NAN, "seats": 40.0, "tickets": 5.0},
        }
    )
    items = [
        override(account_id="b", score=12),
        override(account_id="a", measure="seats", score=1),
    ]
    result = run(config, metrics, overrides=items)
    for name in ("scores", "components", "measures"):
        table = getattr(result, name)
        path = tmp_path / f"{name}.parquet"
        table.to_parquet(path)
        pd.testing.assert_frame_equal(pd.read_parquet(path), table)


# properties


@st.composite
def scorecard_cases(
    draw: st.DrawFn,
) -> tuple[list[list[int]], list[int], list[list[float]]]:
    component_count = draw(st.integers(min_value=1, max_value=4))
    measure_weights = [
        draw(st.lists(st.integers(min_value=1, max_value=9), min_size=1, max_size=3))
        for _ in range(component_count)
    ]
    component_weights = draw(
        st.lists(
            st.integers(min_value=1, max_value=9),
            min_size=component_count,
            max_size=component_count,
        )
    )
    width = sum(len(weights) for weights in measure_weights)
    value = st.one_of(st.just(NAN), st.floats(min_value=0, max_value=100))
    rows = draw(
        st.lists(
            st.lists(value, min_size=width, max_size=width), min_size=1, max_size=6
        )
    )
    return measure_weights, component_weights, rows


@settings(max_examples=60, deadline=None)
@given(scorecard_cases())
def test_contributions_sum_property(
    case: tuple[list[list[int]], list[int], list[list[float]]],
) -> None:
    measure_weights, component_weights, rows = case
    components = {}
    names = []
    for c, (weight, weights) in enumerate(
        zip(component_weights, measure_weights, strict=True)
    ):
        measures = []
        for m, measure_weight in enumerate(weights):
            names.append(f"m{c}_{m}")
            measures.append(
                {"metric": names[-1], "weight": measure_weight, "normalize": bounds()}
            )
        components[f"c{c}"] = {"weight": weight, "measures": measures}
    card = {"name": "default", "min_coverage": 0, "components": components}
    config = build_config([card], names)
    metrics = pd.DataFrame(
        rows, columns=names, index=[f"a{i}" for i in range(len(rows))]
    )
    result = run(config, metrics)
    scores = by_account(result.scores)
    for account, values in zip(metrics.index, rows, strict=True):
        account_rows = result.measures[result.measures["account_id"] == account]
        expected = nested_weighted_mean(values, measure_weights, component_weights)
        score = scores.loc[account, "score"]
        if expected is None:
            assert math.isnan(score)
            assert account_rows["effective_weight"].sum() == 0.0
            continue
        assert score == pytest.approx(expected, abs=1e-9)
        assert math.fsum(account_rows["contribution"]) == pytest.approx(score, abs=1e-9)
        assert math.fsum(account_rows["effective_weight"]) == pytest.approx(
            1.0, abs=1e-12
        )
        assert 0.0 <= scores.loc[account, "coverage"] <= 1.0


def nested_weighted_mean(
    values: list[float], measure_weights: list[list[int]], component_weights: list[int]
) -> float | None:
    """Score by definition: weighted mean of the components' weighted means."""
    position = 0
    component_scores: list[tuple[float, int]] = []
    for weight, weights in zip(component_weights, measure_weights, strict=True):
        chunk = values[position : position + len(weights)]
        position += len(weights)
        present = [
            (v, w) for v, w in zip(chunk, weights, strict=True) if not math.isnan(v)
        ]
        if present:
            mean = sum(v * w for v, w in present) / sum(w for _, w in present)
            component_scores.append((mean, weight))
    if not component_scores:
        return None
    return sum(s * w for s, w in component_scores) / sum(w for _, w in component_scores)
