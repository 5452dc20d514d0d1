"""Explanations of a score, of its change between dates, and of its top drivers."""

from __future__ import annotations

import io
import json
import math
import shlex
from datetime import date, datetime
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from rich.console import Console
from rich.table import Table
from typer.testing import CliRunner

from healthscore import pipeline
from healthscore.cli import app
from healthscore.cli.explain import (
    _account_table,
    _change_table,
    _missing_sentences,
)
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
from project_factory import ACCOUNTS_CSV, minimal_config, write_project

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


def test_change_measure_moved_component() -> None:
    # "moved" keeps logins (bounds 0..10) in component engagement, tickets in
    # support, and adds seats in adoption: shares 0.25, 0.25 and 0.5.
    components = {
        "engagement": {"weight": 1, "measures": [measure("logins", 10)]},
        "support": {
            "weight": 1,
            "measures": [measure("tickets", 10, direction="lower")],
        },
        "adoption": {"weight": 2, "measures": [measure("seats", 100)]},
    }
    settings = CONFIG.model_dump(
        mode="json", by_alias=True, include={"name", "sources", "metrics"}
    )
    moved = ProjectConfig.model_validate(
        {**settings, "scorecards": [{"name": "moved", "components": components}]}
    )
    versions = {
        "moved": Project(root=Path("."), config=moved).scorecard_version(
            moved.scorecards[0]
        )
    }
    metrics = pd.DataFrame.from_dict({"a": FULL}, orient="index")
    accounts = pd.DataFrame({"segment": ["mid"]}, index=metrics.index)
    after = rows_of(score_accounts(moved, metrics, accounts, [], AFTER, versions), "a")
    before = rows_of(run({"a": FULL}, segments={"a": "smb"}), "a")
    assert before[1]["scorecard"] == "small"

    parts = explain_change(*before, *after).set_index("measure")

    # small: logins 0.5 * 25 = 12.5, tickets 0.5 * 80 = 40. moved: logins
    # 0.25 * 50 = 12.5, tickets 0.25 * 80 = 20, seats 0.5 * 80 = 40.
    assert sorted(parts.index) == ["logins", "seats", "tickets"]
    assert parts.loc["logins", "change"] == pytest.approx(0.0)
    assert parts.loc["logins", "component_before"] == "usage"
    assert parts.loc["logins", "component_after"] == "engagement"
    assert parts.loc["logins", "component"] == "engagement"
    assert parts.loc["tickets", "change"] == pytest.approx(-20.0)
    assert parts.loc["seats", "change"] == pytest.approx(40.0)
    assert pd.isna(parts.loc["seats", "component_before"])
    assert parts.loc["seats", "component_after"] == "adoption"
    assert change_total(parts) == pytest.approx(72.5 - 52.5, abs=1e-9)


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


def test_change_table_marks_moved_and_absent() -> None:
    before = rows_of(run({"a": FULL}, segments={"a": "smb"}), "a")
    after = rows_of(run({"a": USAGE_ONLY}, as_of=AFTER), "a")
    parts = explain_change(*before, *after)
    parts.loc[parts["measure"] == "logins", "component_after"] = "engagement"

    lines = rendered(_change_table(parts, width=80))
    seats = next(line for line in lines if line.split()[:1] == ["seats"])
    logins = next(line for line in lines if line.split()[:1] == ["logins"])
    moved = " ".join(" ".join(lines[lines.index(logins) + 1 :]).split())

    # seats is not in scorecard small, so its earlier side is n/a.
    assert seats.split()[1:4] == ["n/a", "→", "40"]
    assert "n/a → 40.0" in seats
    assert "n/a → 30.00" in seats
    assert moved == "(component usage → engagement)"


# Sentences about measures without a value


def missing_sentences(values: dict[str, float]) -> list[str]:
    measures, score = rows_of(run({"a": values}), "a")
    table = explain_account(measures, score)
    return _missing_sentences(table[table["kind"] == "measure"])


def test_missing_measure_weight_stays_in_component() -> None:
    sentences = missing_sentences({"logins": NAN, "seats": 40.0, "tickets": 2.0})

    assert sentences == [
        "Measure logins has no value, so its weight went to the other measures of "
        "component usage."
    ]


def test_infinite_measure_named() -> None:
    sentences = missing_sentences(
        {"logins": float("inf"), "seats": 40.0, "tickets": 2.0}
    )

    assert sentences == [
        "The value of logins is infinite, beyond the float64 range, so scoring "
        "leaves it out as missing.",
        "Measure logins has no value, so its weight went to the other measures of "
        "component usage.",
    ]


def test_missing_component_weight_to_other_components() -> None:
    assert missing_sentences(USAGE_ONLY) == [
        "Component support has no measure with a value, so its weight went to the "
        "other components."
    ]


def test_missing_measure_and_component() -> None:
    sentences = missing_sentences({"logins": NAN, "seats": 40.0, "tickets": NAN})

    assert sentences == [
        "Measure logins has no value, so its weight went to the other measures of "
        "component usage.",
        "Component support has no measure with a value, so its weight went to the "
        "other components.",
    ]


def test_no_missing_measure_no_sentence() -> None:
    assert missing_sentences(FULL) == []


def test_missing_sentences_plural() -> None:
    # usage keeps one of three measures; support and voice keep none.
    measures = pd.DataFrame(
        [
            ("usage", "logins", NAN),
            ("usage", "seats", 40.0),
            ("usage", "exports", NAN),
            ("support", "tickets", NAN),
            ("voice", "nps", NAN),
        ],
        columns=["component", "measure", "normalized"],
    )

    assert _missing_sentences(measures) == [
        "Measures logins and exports have no value, so their weight went to the "
        "other measures of component usage.",
        "Components support and voice have no measure with a value, so their weight "
        "went to the other components.",
    ]


def test_missing_sentences_all_missing() -> None:
    measures = pd.DataFrame(
        [("usage", "logins", NAN), ("support", "tickets", NAN)],
        columns=["component", "measure", "normalized"],
    )

    assert _missing_sentences(measures) == [
        "No measure has a value, so the scorecard computes no score."
    ]


# The explain command across a change of scorecard

D1 = date(2024, 3, 1)
D2 = date(2024, 3, 15)

# All logins at noon. As of D1 (00:00) the 28-day window contains 5 events and the
# 7-day window 3; as of D2 they contain 7 and 4. No account ever exports.
EXPLAIN_EVENTS = "account_id,timestamp,event_type\n" + "".join(
    f"{account},{day} 12:00:00,login\n"
    for account in ("a1", "a2")
    for day in ["2024-02-10"] * 2 + ["2024-02-27"] * 3 + ["2024-03-12"] * 4
)


def explain_config(changed: bool) -> dict[str, Any]:
    """Scorecard main, and after the change: main with wider bounds, and big."""
    config = minimal_config()
    config["metrics"] = {
        "events_28d": {"type": "count", "source": "events", "window": "28d"},
        "logins_7d": {"type": "count", "source": "events", "window": "7d"},
        "since_export": {
            "type": "days_since",
            "source": "events",
            "where": "event_type == 'export'",
        },
    }
    usage = {"weight": 2, "measures": [measure("events_28d", 20 if changed else 10)]}
    activity = {"weight": 1, "measures": [measure("logins_7d", 5)]}
    main = {"name": "main", "components": {"usage": usage, "activity": activity}}
    config["scorecards"] = [main]
    if changed:
        big = {
            "name": "big",
            "when": "segment == 'enterprise'",
            "components": {
                "engagement": {"weight": 1, "measures": [measure("events_28d", 20)]},
                "activity": activity,
                "exports": {
                    "weight": 1,
                    "measures": [measure("since_export", 30, direction="lower")],
                },
            },
        }
        config["scorecards"] = [big, main]
    return config


@pytest.fixture(scope="module")
def changed_project(tmp_path_factory: pytest.TempPathFactory) -> Project:
    root = tmp_path_factory.mktemp("explain")
    files = {"accounts.csv": ACCOUNTS_CSV, "events.csv": EXPLAIN_EVENTS}
    before = write_project(root, explain_config(changed=False), files)
    pipeline.score(before, D1)
    after = write_project(root, explain_config(changed=True), files)
    pipeline.score(after, D2)
    return after


def explain_cli(project: Project, account: str, *options: str) -> Any:
    arguments = ["explain", account, "--as-of", D2.isoformat(), "--compare-to"]
    arguments += [D1.isoformat(), "--project", str(project.root), *options]
    runner = CliRunner(env={"COLUMNS": "100", "NO_COLOR": "1"})
    return runner.invoke(app, arguments)


def test_cli_explain_new_scorecard(changed_project: Project) -> None:
    result = explain_cli(changed_project, "a1")
    text = " ".join(result.stdout.split())

    assert result.exit_code == 0, result.output
    assert (
        "The scorecard changed: main scored the account as of 2024-03-01 and big "
        "as of 2024-03-15, so part of the change comes from the change of "
        "scorecard, not from the account."
    ) in text
    lines = result.stdout.splitlines()
    assert [line.split()[0] for line in lines if "→" in line and "(" not in line] == [
        "logins_7d",
        "events_28d",
        "since_export",
    ]
    # main as of D1: events 5/10 -> 50 * 2/3, logins 3/5 -> 60 * 1/3 = 53.33. big as
    # of D2 without exports: events 7/20 -> 35 / 2, logins 4/5 -> 80 / 2 = 57.5.
    assert "events_28d 5 → 7 50.0 → 35.0 33.33 → 17.50 -15.83" in text
    assert "(component usage → engagement)" in text
    assert "logins_7d 3 → 4 60.0 → 80.0 20.00 → 40.00 +20.00" in text
    assert "since_export n/a → - n/a → - n/a → 0.00 +0.00" in text
    assert "n/a: the measure is not in the account's scorecard on that date." in text
    assert f"Change of the score: {57.5 - 160 / 3:+.2f}" in text


def test_cli_explain_changed_version(changed_project: Project) -> None:
    config = ProjectConfig.model_validate(explain_config(changed=False))
    before = Project(root=changed_project.root, config=config)
    old_version = before.scorecard_version(config.scorecards[0])
    main = changed_project.config.scorecards[1]
    new_version = changed_project.scorecard_version(main)

    result = explain_cli(changed_project, "a2")
    text = " ".join(result.stdout.split())

    assert result.exit_code == 0, result.output
    assert (
        f"Scorecard main changed between the dates (version {old_version} as of "
        f"2024-03-01, {new_version} as of 2024-03-15), so part of the change comes "
        "from its new settings, not from the account."
    ) in text
    assert "n/a" not in text
    data = json.loads(explain_cli(changed_project, "a2", "--json").stdout)
    assert data["compare_scorecard_version"] == old_version
    assert data["scorecard_version"] == new_version
    assert data["scorecard_changed"] is True


def test_cli_explain_missing_component(changed_project: Project) -> None:
    arguments = ["explain", "a1", "--as-of", D2.isoformat()]
    arguments += ["--project", str(changed_project.root)]

    result = CliRunner(env={"COLUMNS": "100"}).invoke(app, arguments)
    text = " ".join(result.stdout.split())

    assert result.exit_code == 0, result.output
    assert (
        "Component exports has no measure with a value, so its weight went to the "
        "other components."
    ) in text
    assert "measures have no value" not in text


def outdated_project(root: Path) -> Project:
    """Scorecard main scored as of D1, then changed, with D1 not rescored."""
    files = {"accounts.csv": ACCOUNTS_CSV, "events.csv": EXPLAIN_EVENTS}
    before = write_project(root, explain_config(changed=False), files)
    pipeline.score(before, D1)
    return write_project(root, explain_config(changed=True), files)


def test_cli_explain_outdated_advice(tmp_path: Path) -> None:
    project = outdated_project(tmp_path / "p")
    root = str(project.root)
    runner = CliRunner(env={"COLUMNS": "200", "NO_COLOR": "1"})
    arguments = ["explain", "a2", "--as-of", D1.isoformat(), "--project", root]
    command = (
        f"healthscore backfill --project {shlex.quote(root)} --from 2024-03-01 "
        "--to 2024-03-01"
    )

    outdated = runner.invoke(app, arguments)
    advice = " ".join(outdated.stderr.split())
    rescored = runner.invoke(app, shlex.split(command)[1:])
    current = runner.invoke(app, arguments)

    assert outdated.exit_code == 0, outdated.output
    assert f"run `{command}` to rescore it without checking alert rules." in advice
    assert rescored.exit_code == 0, rescored.output
    assert current.exit_code == 0, current.output
    assert "was scored with other scorecards" not in current.stderr


def test_cli_explain_outdated_advice_in_project(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    project = outdated_project(tmp_path / "p")
    monkeypatch.chdir(project.root)
    runner = CliRunner(env={"COLUMNS": "200", "NO_COLOR": "1"})

    result = runner.invoke(app, ["explain", "a2", "--as-of", D1.isoformat()])
    advice = " ".join(result.stderr.split())

    assert result.exit_code == 0, result.output
    assert (
        "run `healthscore backfill --from 2024-03-01 --to 2024-03-01` to rescore it"
    ) in advice
