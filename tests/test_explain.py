"""Explanations of a score, of its change between dates, and of its top drivers."""

from __future__ import annotations

import io
import math
from datetime import date, datetime
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from rich.console import Console
from rich.table import Table

from healthscore.cli.explain import _account_table, _change_table
from healthscore.config import Project, ProjectConfig
from healthscore.config.overrides import Override
from healthscore.scoring import (
    ScoreResult,
    change_total,
    explain_account,
    explain_change,
    score_accounts,
    top_drivers,
)

NAN = float("nan")
BEFORE = date(2024, 3, 1)
AFTER = date(2024, 4, 1)


def bounds(low: float, high: float) -> dict[str, Any]:
    return {"method": "bounds", "min": low, "max": high}


def measure(metric: str, high: float, **extra: Any) -> dict[str, Any]:
    return {"metric": metric, "normalize": bounds(0, high)} | extra


# "default" has shares logins 0.1875, seats 0.5625 and tickets 0.25. "small" has
# logins 0.5 (bounds 0..20) and tickets 0.5.
CONFIG = ProjectConfig.model_validate(
    {
        "name": "test",
        "sources": {"accounts": {"kind": "accounts", "path": "accounts.csv"}},
        "metrics": {
            name: {"type": "count", "source": "accounts"}
            for name in ("logins", "seats", "tickets")
        },
        "scorecards": [
            {
                "name": "small",
                "when": "segment == 'smb'",
                "components": {
                    "usage": {"weight": 1, "measures": [measure("logins", 20)]},
                    "support": {
                        "weight": 1,
                        "measures": [measure("tickets", 10, direction="lower")],
                    },
                },
            },
            {
                "name": "default",
                "components": {
                    "usage": {
                        "weight": 3,
                        "measures": [
                            measure("logins", 10, weight=1),
                            measure("seats", 100, weight=3),
                        ],
                    },
                    "support": {
                        "weight": 1,
                        "measures": [measure("tickets", 10, direction="lower")],
                    },
                },
            },
        ],
    }
)


PROJECT = Project(root=Path("."), config=CONFIG)
VERSIONS = {card.name: PROJECT.scorecard_version(card) for card in CONFIG.scorecards}


def run(
    values: dict[str, dict[str, float]],
    segments: dict[str, str] | None = None,
    overrides: list[Override] | None = None,
    as_of: date = BEFORE,
) -> ScoreResult:
    metrics = pd.DataFrame.from_dict(values, orient="index")
    accounts = pd.DataFrame(
        {"segment": [(segments or {}).get(name, "mid") for name in metrics.index]},
        index=metrics.index,
    )
    return score_accounts(CONFIG, metrics, accounts, overrides or [], as_of, VERSIONS)


def rows_of(result: ScoreResult, account: str) -> tuple[pd.DataFrame, pd.Series]:
    measures = result.measures[result.measures["account_id"] == account]
    score = result.scores.set_index("account_id", drop=False).loc[account]
    return measures, score


def score_override(account: str, score: float, reason: str) -> Override:
    return Override(
        account_id=account,
        score=score,
        reason=reason,
        author="ann",
        created_at=datetime(2024, 1, 1),
        expires_on=date(2024, 12, 31),
    )


def parts_by_measure(parts: pd.DataFrame) -> dict[str, float]:
    return dict(zip(parts["measure"], parts["change"], strict=True))


FULL = {"logins": 5.0, "seats": 80.0, "tickets": 2.0}
USAGE_ONLY = {"logins": 10.0, "seats": 40.0, "tickets": NAN}


# explain_account


def test_account_sorted_by_points_lost() -> None:
    measures, score = rows_of(run({"a": FULL}), "a")
    table = explain_account(measures, score)
    # points lost: seats 0.5625 * 20, logins 0.1875 * 50, tickets 0.25 * 20
    assert table["measure"].tolist() == ["seats", "logins", "tickets"]
    assert table["points_lost"].tolist() == pytest.approx([11.25, 9.375, 5.0])
    assert table["contribution"].tolist() == pytest.approx([45.0, 9.375, 20.0])
    assert set(table["kind"]) == {"measure"}
    assert math.fsum(table["contribution"]) == pytest.approx(score["score"], abs=1e-9)


def test_account_missing_measure_last() -> None:
    measures, score = rows_of(run({"a": USAGE_ONLY}), "a")
    table = explain_account(measures, score)
    assert table["measure"].tolist() == ["seats", "logins", "tickets"]
    assert math.isnan(table.loc[2, "points_lost"])
    assert table.loc[2, "contribution"] == 0.0


def test_account_score_override_row() -> None:
    result = run({"a": FULL}, overrides=[score_override("a", 30, "champion left")])
    measures, score = rows_of(result, "a")
    table = explain_account(measures, score)
    row = table[table["kind"] == "override"].iloc[0]
    # 30 - 74.375: the override takes 44.375 points away.
    assert row["contribution"] == pytest.approx(-44.375)
    assert row["points_lost"] == pytest.approx(44.375)
    assert row["override_reason"] == "champion left"
    assert table["measure"].iloc[0] == "override"
    assert math.fsum(table["contribution"]) == pytest.approx(30.0, abs=1e-9)


def test_account_rows_of_other_account_rejected() -> None:
    result = run({"a": FULL, "b": FULL})
    measures, _ = rows_of(result, "a")
    _, score = rows_of(result, "b")
    with pytest.raises(
        ValueError,
        match=r"the measure rows include account 'a' but the score row is account "
        r"'b'; pass the rows of one account",
    ):
        explain_account(measures, score)


# explain_change


def test_change_same_scorecard() -> None:
    before = rows_of(run({"a": FULL}), "a")
    after = rows_of(run({"a": USAGE_ONLY}, as_of=AFTER), "a")
    parts = explain_change(*before, *after)
    # logins 0.25 * 100 - 9.375, seats 0.75 * 40 - 45, tickets 0 - 20
    assert parts_by_measure(parts) == pytest.approx(
        {"logins": 15.625, "seats": -15.0, "tickets": -20.0}
    )
    assert parts["measure"].tolist() == ["tickets", "logins", "seats"]
    assert after[1]["score"] - before[1]["score"] == pytest.approx(-19.375)
    assert change_total(parts) == pytest.approx(
        after[1]["score"] - before[1]["score"], abs=1e-9
    )


def test_change_across_scorecards() -> None:
    before = rows_of(run({"a": FULL}, segments={"a": "smb"}), "a")
    after = rows_of(run({"a": FULL}, as_of=AFTER), "a")
    assert before[1]["scorecard"] == "small"
    assert after[1]["scorecard"] == "default"
    parts = explain_change(*before, *after)
    # small: logins 0.5 * 25, tickets 0.5 * 80; default as in the account test.
    assert parts_by_measure(parts) == pytest.approx(
        {"logins": -3.125, "seats": 45.0, "tickets": -20.0}
    )
    seats = parts[parts["measure"] == "seats"].iloc[0]
    assert seats["contribution_before"] == 0.0
    assert math.isnan(seats["normalized_before"])
    assert change_total(parts) == pytest.approx(74.375 - 52.5, abs=1e-9)


def test_change_with_override_after() -> None:
    before = rows_of(run({"a": FULL}), "a")
    overrides = [score_override("a", 90, "expansion signed")]
    after = rows_of(run({"a": USAGE_ONLY}, overrides=overrides, as_of=AFTER), "a")
    parts = explain_change(*before, *after)
    changes = parts_by_measure(parts)
    # The override lifts the computed 55 to 90.
    assert changes["override"] == pytest.approx(35.0)
    assert parts["kind"].tolist().count("override") == 1
    assert change_total(parts) == pytest.approx(90.0 - 74.375, abs=1e-9)


def test_change_with_override_on_both_dates() -> None:
    first = [score_override("a", 60, "at risk")]
    second = [score_override("a", 90, "saved")]
    before = rows_of(run({"a": FULL}, overrides=first), "a")
    after = rows_of(run({"a": USAGE_ONLY}, overrides=second, as_of=AFTER), "a")
    parts = explain_change(*before, *after)
    # before: 60 - 74.375 = -14.375; after: 90 - 55 = 35
    assert parts_by_measure(parts)["override"] == pytest.approx(49.375)
    assert change_total(parts) == pytest.approx(30.0, abs=1e-9)


def test_change_from_stored_snapshots(tmp_path: Path) -> None:
    tables = {"before": run({"a": FULL}), "after": run({"a": USAGE_ONLY}, as_of=AFTER)}
    loaded = {}
    for label, result in tables.items():
        result.measures.to_parquet(tmp_path / f"{label}_measures.parquet")
        result.scores.to_parquet(tmp_path / f"{label}_scores.parquet")
        measures = pd.read_parquet(tmp_path / f"{label}_measures.parquet")
        scores = pd.read_parquet(tmp_path / f"{label}_scores.parquet")
        loaded[label] = (measures, scores.iloc[0])
    parts = explain_change(*loaded["before"], *loaded["after"])
    assert change_total(parts) == pytest.approx(55.0 - 74.375, abs=1e-9)


def test_change_needs_both_scores() -> None:
    empty = {"logins": NAN, "seats": NAN, "tickets": NAN}
    before = rows_of(run({"a": empty}), "a")
    after = rows_of(run({"a": FULL}, as_of=AFTER), "a")
    with pytest.raises(
        ValueError,
        match=r"account 'a' has no earlier score \(band 'insufficient_data'\), so the "
        r"change cannot be split",
    ):
        explain_change(*before, *after)


def test_change_of_different_accounts_rejected() -> None:
    result = run({"a": FULL, "b": FULL})
    with pytest.raises(ValueError, match=r"the earlier score is account 'a' and"):
        explain_change(*rows_of(result, "a"), *rows_of(result, "b"))


values_strategy = st.fixed_dictionaries(
    {
        name: st.one_of(st.just(NAN), st.floats(min_value=0, max_value=150))
        for name in ("logins", "seats", "tickets")
    }
)


@settings(max_examples=60, deadline=None)
@given(
    values_strategy,
    values_strategy,
    st.sampled_from(["smb", "mid"]),
    st.sampled_from(["smb", "mid"]),
    st.one_of(st.none(), st.floats(min_value=0, max_value=100)),
    st.one_of(st.none(), st.floats(min_value=0, max_value=100)),
)
def test_change_parts_sum_property(
    before_values: dict[str, float],
    after_values: dict[str, float],
    before_segment: str,
    after_segment: str,
    before_override: float | None,
    after_override: float | None,
) -> None:
    def date_rows(
        values: dict[str, float], segment: str, score: float | None, as_of: date
    ) -> tuple[pd.DataFrame, pd.Series]:
        overrides = [] if score is None else [score_override("a", score, "judgement")]
        result = run({"a": values}, {"a": segment}, overrides, as_of)
        return rows_of(result, "a")

    before = date_rows(before_values, before_segment, before_override, BEFORE)
    after = date_rows(after_values, after_segment, after_override, AFTER)
    if math.isnan(before[1]["score"]) or math.isnan(after[1]["score"]):
        return
    parts = explain_change(*before, *after)
    expected = after[1]["score"] - before[1]["score"]
    assert abs(change_total(parts) - expected) <= 1e-9


# top_drivers


def test_top_drivers_per_account() -> None:
    result = run(
        {"full": FULL, "partial": {"logins": NAN, "seats": 40.0, "tickets": 5.0}}
    )
    drivers = top_drivers(result.measures, n=2)
    assert drivers["account_id"].tolist() == ["full", "full", "partial", "partial"]
    assert drivers["measure"].tolist() == ["seats", "logins", "seats", "tickets"]
    assert drivers["rank"].tolist() == [1, 2, 1, 2]
    # partial: seats 0.75 * 60, tickets 0.25 * 50
    assert drivers["points_lost"].tolist() == pytest.approx([11.25, 9.375, 45.0, 12.5])


def test_top_drivers_skip_measures_losing_nothing() -> None:
    result = run({"a": {"logins": 20.0, "seats": NAN, "tickets": 0.0}}, {"a": "smb"})
    drivers = top_drivers(result.measures, n=3)
    assert drivers.empty


def test_top_drivers_rejects_zero() -> None:
    with pytest.raises(ValueError, match=r"n must be at least 1, got 0"):
        top_drivers(run({"a": FULL}).measures, n=0)


# Tables of the explain command


LONG_NAMES = {
    "seats": "seats_used_per_licence_90d",
    "logins": "logins_per_active_user_28d",
    "tickets": "open_tickets_per_user_90d",
}


def rendered(view: Table) -> list[str]:
    console = Console(width=80, record=True, file=io.StringIO())
    console.print(view)
    return console.export_text().splitlines()


def test_account_table_long_names_whole() -> None:
    # Without tickets, seats and logins carry more than their configured shares
    # (0.5625 and 0.1875) and tickets none of its 0.25, so each Weight cell shows
    # the configured share under the effective one.
    measures, score = rows_of(run({"a": USAGE_ONLY}), "a")
    table = explain_account(measures, score)
    table["measure"] = table["measure"].map(LONG_NAMES)

    lines = rendered(_account_table(table, width=80))

    assert max(len(line) for line in lines) <= 80
    header = next(line for line in lines if line.split()[:1] == ["Measure"])
    assert header.split() == [
        "Measure", "Value", "Normalized", "Weight", "Points", "Lost"
    ]  # fmt: skip
    for name in LONG_NAMES.values():
        assert any(name in line for line in lines), name
    configured = [line.strip() for line in lines if "(of " in line]
    assert sorted(configured) == ["(of 18.8%)", "(of 25.0%)", "(of 56.2%)"]


def test_change_table_long_names_whole() -> None:
    before = rows_of(run({"a": FULL}), "a")
    after = rows_of(run({"a": USAGE_ONLY}, as_of=AFTER), "a")
    parts = explain_change(*before, *after)
    parts["measure"] = parts["measure"].map(LONG_NAMES)

    lines = rendered(_change_table(parts, width=80))

    assert max(len(line) for line in lines) <= 80
    header = next(line for line in lines if line.split()[:1] == ["Measure"])
    assert header.split() == ["Measure", "Value", "Normalized", "Points", "Change"]
    for name in LONG_NAMES.values():
        assert any(name in line for line in lines), name
