"""Backfill: each swept date equals compute_metrics and pipeline.score for it."""

from __future__ import annotations

import json
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import duckdb
import numpy as np
import pandas as pd
import pytest
import yaml
from typer.testing import CliRunner

from healthscore.cli import app
from healthscore.config import Project, load_project
from healthscore.config.models import parse_duration
from healthscore.engine import Engine
from healthscore.errors import SourceError
from healthscore.metrics import compute_metrics
from healthscore.monitoring import backfill as backfill_module
from healthscore.monitoring import backfill_sweep
from healthscore.monitoring.backfill import (
    BackfillTableError,
    backfill,
    backfill_dates,
    sweep_metrics,
)
from healthscore.monitoring.backfill_sweep import SourceSweep, sweep_source_reports
from healthscore.monitoring.history import config_key, config_path, replay
from healthscore.pipeline import score, scorecard_versions, snapshot_store
from healthscore.scaffold import create_project
from healthscore.scoring import score_accounts
from healthscore.sources import SourceReport, as_of_point
from healthscore.store import snapshot_tables as snapshot_tables_module
from healthscore.store.snapshot_tables import SnapshotTableError
from healthscore.store.state import StateStore
from project_factory import write_project
from test_table_sources import (
    PG_ADMIN,
    closed_port,
    duckdb_rows,
    expected_scores,
    pg_rows,
)

ACCOUNTS = """account_id,name,segment,owner,arr,plan
a1,Acme,enterprise,alice,120000,gold
a2,Globex,smb,bob,9000,silver
a3,Initech,smb,bob,4000,gold
a4,Umbrella,smb,carol,1000,bronze
a5,Hooli,enterprise,carol,50000,silver
"""

SUBSCRIPTIONS = """account_id,start,end
a1,2024-01-01,2024-02-01
a1,2024-02-15,
a2,2024-01-10,2024-03-01
a2,2024-04-20,
a3,2024-02-01,2024-04-10
a4,2024-03-03,
a5,2024-01-05,
"""

# Events fall on the 150 days from FIRST_DAY, about 30 % of them exactly at midnight.
FIRST_DAY = datetime(2024, 1, 1)
DAYS = 150


def _events() -> pd.DataFrame:
    """Events of five accounts over 150 days, many stamped exactly at midnight."""
    generator = np.random.default_rng(11)
    size = 1500
    days = generator.integers(0, DAYS, size)
    at_midnight = generator.random(size) < 0.3
    seconds = np.where(at_midnight, 0, generator.integers(0, 86400, size))
    timestamps = [
        FIRST_DAY + timedelta(days=int(day), seconds=int(second))
        for day, second in zip(days, seconds, strict=True)
    ]
    values = generator.normal(10, 5, size).round(3)
    values[generator.random(size) < 0.1] = np.nan
    return pd.DataFrame(
        {
            "account_id": generator.choice(["a1", "a2", "a3", "a4", "a5"], size),
            "timestamp": timestamps,
            "event_type": generator.choice(["login", "report", "export"], size),
            "user": generator.choice([f"u{i}" for i in range(9)], size),
            "value": values,
            "channel": generator.choice(["web", "mobile", None], size),
        }
    )


def _windowed(kind: str, window: object, **extra: object) -> dict[str, object]:
    return {"type": kind, "source": "events", "window": window, **extra}


RIGHT_14 = {"length": "14d", "closed": "right"}
RIGHT_30 = {"length": "30d", "closed": "right"}

METRICS: dict[str, dict[str, object]] = {
    "logins_left": _windowed("count", "14d", where="event_type == 'login'"),
    "logins_right": _windowed("count", RIGHT_14, where="event_type == 'login'"),
    "events_month": _windowed("count", "1mo"),
    "events_ever": {"type": "count", "source": "events"},
    "users_left": _windowed("distinct_count", "10d", column="user"),
    "users_right": _windowed("distinct_count", RIGHT_30, column="user"),
    "users_ever": {"type": "distinct_count", "source": "events", "column": "user"},
    "value_sum": _windowed("sum", RIGHT_14, column="value"),
    "value_mean": _windowed("mean", "21d", column="value", where="value > 5"),
    "value_min": _windowed("min", RIGHT_30, column="value"),
    "value_max": _windowed("max", "9d", column="value"),
    "value_min_ever": {"type": "min", "source": "events", "column": "value"},
    "latest_channel": _windowed("latest", "12d", column="channel"),
    "latest_value_ever": {"type": "latest", "source": "events", "column": "value"},
    "days_since_export": {
        "type": "days_since",
        "source": "events",
        "where": "event_type == 'export'",
    },
    "tenure": {"type": "tenure", "source": "subscriptions", "max_gap": "31d"},
    "reports_rate": _windowed(
        "rate",
        {"length": "28d", "closed": "right"},
        where="event_type == 'report'",
        per="7d",
        exposure="tenure",
        min_tenure="3d",
    ),
    "first_export": {
        "type": "days_to_milestone",
        "source": "events",
        "where": "event_type == 'export' and value > 18",
    },
    "logins_change": {"type": "change", "of": "logins_left", "mode": "percent"},
    "users_change": {"type": "change", "of": "users_right", "mode": "difference"},
    # The minimum of a 30-day window is often negative, so this change often has a
    # negative earlier value (see test_sweep_sees_every_metric_type).
    "value_min_change": {"type": "change", "of": "value_min"},
    "value_min_rise": {"type": "change", "of": "value_min", "mode": "difference"},
    "login_share": {
        "type": "ratio",
        "numerator": "logins_left",
        "denominator": "events_month",
    },
    "activity": {"type": "formula", "expression": "logins_right + 2 * value_sum"},
    "plan": {"type": "attribute", "column": "plan"},
}


def _scorecard(bounds_max: float = 10) -> list[dict[str, object]]:
    bounds = {"method": "bounds", "min": 0, "max": bounds_max}
    return [
        {
            "name": "default",
            "components": {
                "usage": {
                    "weight": 2,
                    "measures": [
                        {"metric": "logins_left", "normalize": bounds},
                        {
                            "metric": "users_right",
                            "normalize": {"method": "percentile"},
                        },
                        {"metric": "activity", "normalize": {"method": "zscore"}},
                    ],
                },
                "health": {
                    "weight": 1,
                    "measures": [
                        {
                            "metric": "days_since_export",
                            "direction": "lower",
                            "normalize": {"method": "bounds", "min": 0, "max": 30},
                        },
                        {
                            "metric": "plan",
                            "normalize": {
                                "method": "categories",
                                "scores": {"gold": 100, "silver": 60},
                                "default": 20,
                            },
                        },
                    ],
                },
            },
        }
    ]


def _config(**overrides: object) -> dict[str, object]:
    config: dict[str, object] = {
        "name": "sweep",
        "sources": {
            "accounts": {
                "kind": "accounts",
                "path": "accounts.csv",
                "attributes": {"plan": "string"},
            },
            "subscriptions": {"kind": "subscriptions", "path": "subscriptions.csv"},
            "events": {
                "kind": "events",
                "path": "events.parquet",
                "attributes": {"channel": "string"},
            },
        },
        "metrics": METRICS,
        "scorecards": _scorecard(),
    }
    config.update(overrides)
    return config


def _project(root: Path, **overrides: object) -> Project:
    files = {
        "accounts.csv": ACCOUNTS,
        "subscriptions.csv": SUBSCRIPTIONS,
        "events.parquet": _events(),
    }
    return write_project(root, _config(**overrides), files)


def _assert_same_metrics(got: pd.DataFrame, expected: pd.DataFrame, day: date) -> None:
    assert list(got.index) == list(expected.index), day
    assert list(got.columns) == list(expected.columns), day
    for column in expected.columns:
        left, right = got[column], expected[column]
        if left.dtype == object or right.dtype == object or str(right.dtype) == "str":
            same = left.isna() == right.isna()
            assert same.all(), (day, column)
            assert (left[left.notna()] == right[right.notna()]).all(), (day, column)
            continue
        np.testing.assert_allclose(
            left.to_numpy("float64"),
            right.to_numpy("float64"),
            rtol=1e-9,
            atol=1e-9,
            err_msg=f"{column} as of {day}",
        )


@pytest.fixture(scope="module")
def sweep_project(tmp_path_factory: pytest.TempPathFactory) -> Project:
    return _project(tmp_path_factory.mktemp("sweep"))


@pytest.mark.parametrize(
    ("every", "first", "last", "as_of_point"),
    [
        ("7d", date(2024, 1, 1), date(2024, 6, 3), "start_of_day"),
        ("3d", date(2024, 3, 1), date(2024, 4, 12), "end_of_day"),
        ("1mo", date(2024, 1, 31), date(2024, 5, 31), "start_of_day"),
    ],
)
def test_sweep_equals_compute_metrics(
    tmp_path: Path, every: str, first: date, last: date, as_of_point: str
) -> None:
    project = _project(tmp_path, as_of_point=as_of_point)
    engine = Engine.open(project)
    dates = backfill_dates(first, last, parse_duration(every))
    swept = list(sweep_metrics(project, engine.sources, dates))
    assert [table.as_of for table in swept] == dates
    for table in swept:
        expected = compute_metrics(project, engine.sources, table.as_of)
        _assert_same_metrics(table.values, expected.values, table.as_of)
        assert table.point == expected.point
        assert list(table.accounts.index) == list(expected.accounts.index)


LEFT_ONLY = [
    "logins_left", "events_month", "events_ever", "value_mean", "value_max",
    "latest_channel", "latest_value_ever", "days_since_export", "first_export",
]  # fmt: skip
RIGHT_ONLY = ["logins_right", "users_right", "value_sum", "value_min", "reports_rate"]


@pytest.mark.parametrize("names", [LEFT_ONLY, RIGHT_ONLY], ids=["left", "right"])
def test_sweep_of_one_bucketing(tmp_path: Path, names: list[str]) -> None:
    # Metrics whose windows all close on the same side take another path.
    metrics = {name: METRICS[name] for name in names}
    if "reports_rate" in names:
        metrics["tenure"] = METRICS["tenure"]
    bounds = {"method": "bounds", "min": 0, "max": 10}
    card = {"name": "one", "components": {"all": {"weight": 1, "measures": [
        {"metric": names[0], "normalize": bounds},
    ]}}}  # fmt: skip
    project = _project(tmp_path, metrics=metrics, scorecards=[card])
    engine = Engine.open(project)
    dates = backfill_dates(date(2024, 1, 1), date(2024, 6, 3), parse_duration("5d"))
    for table in sweep_metrics(project, engine.sources, dates):
        expected = compute_metrics(project, engine.sources, table.as_of)
        _assert_same_metrics(table.values, expected.values, table.as_of)


def test_sweep_distinct_counts_across_mask_words(tmp_path: Path) -> None:
    # Daily dates with windows of 10 and 30 days cut the 150 days into more
    # segments than two 63-bit mask words contain, so some windows span two words.
    names = ["users_left", "users_right", "users_ever"]
    metrics = {name: METRICS[name] for name in names}
    bounds = {"method": "bounds", "min": 0, "max": 10}
    card = {"name": "one", "components": {"all": {"weight": 1, "measures": [
        {"metric": "users_left", "normalize": bounds},
    ]}}}  # fmt: skip
    project = _project(tmp_path, metrics=metrics, scorecards=[card])
    engine = Engine.open(project)
    dates = backfill_dates(date(2024, 1, 5), date(2024, 6, 1), parse_duration("1d"))
    points = [as_of_point(project, day) for day in dates]
    accounts = pd.Index(engine.sources.accounts().index, name="account_id")
    sweep = SourceSweep(
        engine.sources, "events", names, project.config.metrics, points, accounts
    )
    assert max(int(part.high.max()) for part in sweep.sweeps) > 2 * 63
    swept = list(sweep_metrics(project, engine.sources, dates))
    assert len(swept) == len(dates)
    for table in swept:
        expected = compute_metrics(project, engine.sources, table.as_of)
        _assert_same_metrics(table.values, expected.values, table.as_of)
    assert max(table.values["users_left"].max() for table in swept) > 1


def test_sweep_of_two_distinct_columns(tmp_path: Path) -> None:
    # Weekly dates over four months keep every segment in one mask word, and the
    # two columns (one with a filter) are grouped by separate queries over the same
    # rows.
    metrics = {
        "users_left": METRICS["users_left"],
        "users_ever": METRICS["users_ever"],
        "types_right": _windowed(
            "distinct_count", RIGHT_14, column="event_type", where="value > 5"
        ),
        "types_month": _windowed("distinct_count", "1mo", column="event_type"),
        "events_month": METRICS["events_month"],
    }
    bounds = {"method": "bounds", "min": 0, "max": 10}
    card = {"name": "one", "components": {"all": {"weight": 1, "measures": [
        {"metric": "types_right", "normalize": bounds},
    ]}}}  # fmt: skip
    project = _project(tmp_path, metrics=metrics, scorecards=[card])
    engine = Engine.open(project)

    dates = backfill_dates(date(2024, 1, 8), date(2024, 4, 22), parse_duration("1w"))
    points = [as_of_point(project, day) for day in dates]
    accounts = pd.Index(engine.sources.accounts().index, name="account_id")
    names = list(metrics)
    sweep = SourceSweep(
        engine.sources, "events", names, project.config.metrics, points, accounts
    )
    assert max(int(part.high.max()) for part in sweep.sweeps) < 63

    swept = list(sweep_metrics(project, engine.sources, dates))
    for table in swept:
        expected = compute_metrics(project, engine.sources, table.as_of)
        _assert_same_metrics(table.values, expected.values, table.as_of)
    assert max(table.values["types_right"].max() for table in swept) == 3
    assert max(table.values["users_left"].max() for table in swept) > 1


def test_sweep_without_lookup_table(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # With too many (account, segment) cells for a table, lookups binary-search.
    monkeypatch.setattr(backfill_sweep, "_MAX_LOOKUP_CELLS", 0)
    row_names = [*LEFT_ONLY, "logins_right", "value_sum", "value_min"]
    metrics = {name: METRICS[name] for name in row_names}
    bounds = {"method": "bounds", "min": 0, "max": 10}
    card = {"name": "one", "components": {"all": {"weight": 1, "measures": [
        {"metric": "logins_left", "normalize": bounds},
    ]}}}  # fmt: skip
    project = _project(tmp_path, metrics=metrics, scorecards=[card])
    engine = Engine.open(project)
    dates = backfill_dates(date(2024, 1, 1), date(2024, 6, 3), parse_duration("6d"))
    points = [as_of_point(project, day) for day in dates]
    accounts = pd.Index(engine.sources.accounts().index, name="account_id")
    sweep = SourceSweep(
        engine.sources, "events", row_names, project.config.metrics, points, accounts
    )
    lookups = [partials.lookup for partials in sweep._partials.values()]
    assert lookups
    assert all(lookup is not None and lookup.table is None for lookup in lookups)
    for table in sweep_metrics(project, engine.sources, dates):
        expected = compute_metrics(project, engine.sources, table.as_of)
        _assert_same_metrics(table.values, expected.values, table.as_of)


def test_key_lookup_counts_smaller_keys() -> None:
    # The position of the first key at or after a pair is the number of keys
    # before it, here counted one pair at a time.
    generator = np.random.default_rng(5)
    accounts, segments = 7, 9
    pairs = {
        (int(account), int(segment))
        for account, segment in zip(
            generator.integers(0, accounts, 30),
            generator.integers(0, segments, 30),
            strict=True,
        )
    }
    # Account 3 has no keys.
    pairs = {pair for pair in pairs if pair[0] != 3}
    keys = np.array(sorted((account << 32) | segment for account, segment in pairs))
    lookup = backfill_sweep._KeyLookup(keys, accounts, segments)
    assert lookup.table is not None
    rows = [
        (account, segment)
        for account in range(accounts)
        for segment in range(segments + 1)
    ]
    positions = np.array([account for account, _ in rows])
    queried = np.array([segment for _, segment in rows])
    expected = [
        sum(1 for pair in pairs if pair < (account, segment))
        for account, segment in rows
    ]
    assert lookup.find(positions, queried).tolist() == expected


def test_sweep_sees_every_metric_type(sweep_project: Project) -> None:
    # Guards the specification test above against an empty or trivial data set.
    engine = Engine.open(sweep_project)
    table = next(sweep_metrics(sweep_project, engine.sources, [date(2024, 4, 1)]))
    filled = table.values.notna().sum()
    assert (filled > 0).all(), filled[filled == 0]
    assert table.values["users_right"].max() > 1
    earlier_min = table.values["value_min"] - table.values["value_min_rise"]
    assert (earlier_min < 0).any(), earlier_min
    assert table.values.loc[earlier_min < 0, "value_min_change"].notna().all()


def test_backfill_scores_equal_pipeline(sweep_project: Project) -> None:
    dates = backfill_dates(date(2024, 2, 5), date(2024, 5, 27), parse_duration("2w"))
    engine = Engine.open(sweep_project)
    result = backfill(sweep_project, dates, engine=engine)
    assert result.dates == dates
    store = snapshot_store(sweep_project)
    for as_of in dates:
        expected = score(sweep_project, as_of, engine=engine, store=False)
        for table, frame in expected.tables().items():
            stored = store.read(as_of, table)
            pd.testing.assert_frame_equal(
                stored.reset_index(drop=True),
                frame.reset_index(drop=True).astype(stored.dtypes.to_dict()),
                check_exact=False,
                rtol=1e-9,
                obj=f"{table} as of {as_of}",
            )


# Overrides are created before the backfilled range, so they may expire within it.
CREATED = datetime(2024, 1, 1, tzinfo=UTC)


def _two_scorecards() -> list[dict[str, object]]:
    """Enterprise accounts get their own scorecard, compared within segment."""
    within = {"method": "percentile", "within": "segment"}
    enterprise = {
        "name": "enterprise",
        "when": "segment == 'enterprise'",
        "components": {
            "usage": {
                "weight": 1,
                "measures": [
                    {"metric": "users_right", "normalize": within},
                    {"metric": "latest_channel", "normalize": {
                        "method": "categories", "scores": {"web": 80}, "default": 40,
                    }},
                ],
            },
        },
    }  # fmt: skip
    return [enterprise, *_scorecard()]


def test_backfill_files_equal_scored_files(tmp_path: Path) -> None:
    # Two scorecards, percentile within segment, text measures and overrides that
    # expire within the range: every stored table must read back exactly as the
    # snapshot that `score` stores for the date alone.
    backfilled = _project(tmp_path / "backfilled", scorecards=_two_scorecards())
    scored = _project(tmp_path / "scored", scorecards=_two_scorecards())
    for project in (backfilled, scored):
        with StateStore.open(project.config.store.state, project.root) as state:
            state.add_override(
                "a1", score=55, reason="call", author="ann",
                expires_on=date(2024, 3, 10), now=CREATED,
            )  # fmt: skip
            state.add_override(
                "a5", score=10, measure="users_right", reason="new users",
                author="ann", expires_on=date(2024, 4, 1), now=CREATED,
            )  # fmt: skip
    dates = backfill_dates(date(2024, 2, 5), date(2024, 5, 27), parse_duration("3w"))
    backfill(backfilled, dates)
    for as_of in dates:
        score(scored, as_of, monitor=False)
    got, expected = snapshot_store(backfilled), snapshot_store(scored)
    assert got.dates() == expected.dates() == dates
    for as_of in dates:
        for table in expected.tables(as_of):
            pd.testing.assert_frame_equal(
                got.read(as_of, table),
                expected.read(as_of, table),
                check_exact=False,
                rtol=1e-12,
                obj=f"{table} as of {as_of}",
            )
    overridden = got.read(date(2024, 2, 26), "scores").set_index("account_id")
    assert overridden.loc["a1", "override_reason"] == "call"
    assert got.read(date(2024, 3, 18), "scores")["override_reason"].isna().all()
    cards = set(got.read(date(2024, 2, 26), "scores")["scorecard"])
    assert cards == {"enterprise", "default"}


def test_backfill_batches_equal_one_batch(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Dates scored in batches of one or two dates store what one batch stores.
    dates = backfill_dates(date(2024, 2, 5), date(2024, 4, 15), parse_duration("2w"))
    whole = _project(tmp_path / "whole", scorecards=_two_scorecards())
    backfill(whole, dates)
    monkeypatch.setattr(backfill_module, "ROWS_PER_BATCH", 7)
    batched = _project(tmp_path / "batched", scorecards=_two_scorecards())
    backfill(batched, dates)
    for as_of in dates:
        for table in ("scores", "measures", "metrics"):
            pd.testing.assert_frame_equal(
                snapshot_store(batched).read(as_of, table),
                snapshot_store(whole).read(as_of, table),
                obj=f"{table} as of {as_of}",
            )


def test_backfill_dates_inclusive_range() -> None:
    dates = backfill_dates(date(2020, 2, 2), date(2020, 2, 16), parse_duration("7d"))
    assert dates == [date(2020, 2, 2), date(2020, 2, 9), date(2020, 2, 16)]
    months = backfill_dates(date(2024, 1, 31), date(2024, 4, 30), parse_duration("1mo"))
    assert months == [
        date(2024, 1, 31),
        date(2024, 2, 29),
        date(2024, 3, 31),
        date(2024, 4, 30),
    ]


def test_backfill_dates_rejects_reversed_range() -> None:
    with pytest.raises(ValueError, match=r"the range ends \(2020-01-01\) before it"):
        backfill_dates(date(2020, 2, 2), date(2020, 1, 1), parse_duration("7d"))


def test_replay_keeps_stored_scorecard(tmp_path: Path) -> None:
    project = _project(tmp_path)
    as_of = date(2024, 4, 1)
    original = score(project, as_of, store=False)
    backfill(project, [as_of])
    store = snapshot_store(project)
    assert config_path(store, project.settings_key()).is_file()

    config = yaml.safe_load(project.file.read_text())
    config["scorecards"] = _scorecard(bounds_max=3)
    project.file.write_text(yaml.safe_dump(config, sort_keys=False))
    changed = load_project(project.root)
    rescored = score(changed, as_of, store=False)
    assert not rescored.result.scores["score"].equals(original.result.scores["score"])

    replayed = replay(changed, as_of)
    pd.testing.assert_frame_equal(replayed.result.scores, original.result.scores)
    stored = store.read(as_of, "scores")
    assert list(stored["score"]) == list(original.result.scores["score"])


def test_scoring_keeps_project_file(tmp_path: Path) -> None:
    project = _project(tmp_path)
    score(project, date(2024, 4, 1))
    kept = config_path(snapshot_store(project), project.settings_key())
    assert kept.read_text() == project.file.read_text()
    assert snapshot_store(project).run_info(date(2024, 4, 1))["config_key"] == (
        project.settings_key()
    )


def test_replay_keeps_other_settings(tmp_path: Path) -> None:
    project = _project(tmp_path)
    as_of = date(2024, 4, 1)
    backfill(project, [as_of])
    store = snapshot_store(project)
    point = store.run_info(as_of)["as_of_point"]

    # Not a scorecard setting: the scorecard versions stay the same.
    config = yaml.safe_load(project.file.read_text())
    config["as_of_point"] = "end_of_day"
    project.file.write_text(yaml.safe_dump(config, sort_keys=False))
    changed = load_project(project.root)
    later = date(2024, 4, 8)
    backfill(changed, [later])
    # Each date is replayed under the settings it was scored with.
    replay(changed, as_of)
    replay(changed, later)

    assert store.run_info(as_of)["as_of_point"] == point == "2024-04-01T00:00:00"
    assert store.run_info(later)["as_of_point"] == "2024-04-09T00:00:00"
    assert store.run_info(as_of)["config_key"] != store.run_info(later)["config_key"]


def test_replay_reads_file_of_older_snapshot(tmp_path: Path) -> None:
    project = _project(tmp_path)
    as_of = date(2024, 4, 1)
    run = score(project, as_of)
    store = snapshot_store(project)
    # A snapshot stored before run.json had config_key kept its project file
    # under a hash of the scorecard versions.
    info_file = store.folder / f"as_of={as_of.isoformat()}" / "run.json"
    info = json.loads(info_file.read_text())
    del info["config_key"]
    info_file.write_text(json.dumps(info))
    kept = config_path(store, project.settings_key())
    kept.rename(config_path(store, config_key(run.versions)))

    replayed = replay(project, as_of)

    pd.testing.assert_frame_equal(replayed.result.scores, run.result.scores)
    assert kept.read_text() == project.file.read_text()


def test_replay_kept_config_with_unused_key(tmp_path: Path) -> None:
    project = _project(tmp_path)
    as_of = date(2024, 4, 1)
    run = score(project, as_of)
    # A file kept before unused normalize keys were rejected may still set one.
    kept = config_path(snapshot_store(project), project.settings_key())
    data = yaml.safe_load(kept.read_text())
    measures = [
        measure
        for scorecard in data["scorecards"]
        for component in scorecard["components"].values()
        for measure in component["measures"]
    ]
    bounded = [m for m in measures if m["normalize"]["method"] == "bounds"]
    bounded[0]["normalize"]["target"] = 5
    kept.write_text(yaml.safe_dump(data))

    replayed = replay(project, as_of)

    # The version hashes the changed scorecard, and the unused key changes nothing else.
    columns = ["account_id", "score", "band", "coverage"]
    pd.testing.assert_frame_equal(
        replayed.result.scores[columns], run.result.scores[columns]
    )


def test_replay_without_kept_config(tmp_path: Path) -> None:
    project = _project(tmp_path)
    score(project, date(2024, 4, 1))
    # A snapshot stored before project files were kept has no copy.
    config_path(snapshot_store(project), project.settings_key()).unlink()
    with pytest.raises(LookupError, match="no project file is kept for the snapshot"):
        replay(project, date(2024, 4, 1))


def test_cli_backfill_and_replay(tmp_path: Path) -> None:
    project = _project(tmp_path)
    runner = CliRunner()
    arguments = ["backfill", "--from", "2024-03-04", "--to", "2024-03-25"]
    arguments += ["--every", "1w", "--project", str(project.root)]
    result = runner.invoke(app, arguments)
    assert result.exit_code == 0, result.output
    assert "stored 4 snapshots from 2024-03-04 to 2024-03-25" in result.output
    assert snapshot_store(project).dates() == [
        date(2024, 3, 4),
        date(2024, 3, 11),
        date(2024, 3, 18),
        date(2024, 3, 25),
    ]
    replayed = runner.invoke(app, [*arguments[:-2], "--every", "1w", "--replay",
                                   "--project", str(project.root)])  # fmt: skip
    assert replayed.exit_code == 0, replayed.output
    assert "stored 4 snapshots" in replayed.output


def test_cli_replay_after_source_renamed(tmp_path: Path) -> None:
    # The events file is renamed after two dates were scored, and healthscore.yml
    # follows it, but the configuration kept for those dates names the old file.
    project = _project(tmp_path)
    dates = [date(2024, 3, 4), date(2024, 3, 11)]
    backfill(project, dates)
    store = snapshot_store(project)
    kept_file = config_path(store, project.settings_key())
    stored = {day: store.read(day, "scores") for day in dates}
    (project.root / "events.parquet").rename(project.root / "usage.parquet")
    config = yaml.safe_load(project.file.read_text())
    config["sources"]["events"]["path"] = "usage.parquet"
    project.file.write_text(yaml.safe_dump(config, sort_keys=False))
    arguments = ["backfill", "--from", "2024-03-04", "--to", "2024-03-11"]
    arguments += ["--every", "7d", "--project", str(project.root)]

    result = CliRunner().invoke(app, [*arguments, "--replay"])
    message = " ".join(result.stderr.split())

    assert result.exit_code == 1
    assert message.startswith(
        "error: cannot replay 2024-03-04: the configuration kept for it in "
        f"{kept_file}, which was in force when 2024-03-04 was scored, has a problem "
        "now: "
        "sources.events.path: no file matches 'events.parquet'"
    )
    assert "A replay reads that file, not healthscore.yml" in message
    assert "`healthscore score --as-of 2024-03-04`" in message
    for day in dates:
        pd.testing.assert_frame_equal(store.read(day, "scores"), stored[day])
    # Scoring the dates under the current configuration works.
    rescored = CliRunner().invoke(app, arguments)
    assert rescored.exit_code == 0, rescored.output
    assert "stored 2 snapshots" in rescored.output


def test_replay_names_kept_file_on_read_error(tmp_path: Path) -> None:
    # The kept configuration reads attribute channel, which the events file lost.
    project = _project(tmp_path)
    as_of = date(2024, 3, 4)
    score(project, as_of)
    kept_file = config_path(snapshot_store(project), project.settings_key())
    events = pd.read_parquet(project.root / "events.parquet")
    events.drop(columns=["channel"]).to_parquet(project.root / "events.parquet")

    with pytest.raises(SourceError) as caught:
        replay(project, as_of)

    message = str(caught.value)
    assert message.startswith(
        f"cannot replay 2024-03-04 under the configuration kept for it in {kept_file}: "
        "source 'events': attribute column 'channel' not found in the file"
    )
    assert "score the date with `healthscore score --as-of 2024-03-04`" in message


def test_cli_backfill_invalid_step(tmp_path: Path) -> None:
    project = _project(tmp_path)
    arguments = ["backfill", "--from", "2024-03-04", "--to", "2024-03-25"]
    arguments += ["--every", "weekly", "--project", str(project.root)]
    result = CliRunner().invoke(app, arguments)
    assert result.exit_code == 2
    assert "invalid duration 'weekly'" in result.output


def test_socialnet_sweep_equals_compute_metrics(repo_root: Path) -> None:
    project = load_project(repo_root / "examples" / "socialnet")
    engine = Engine.open(project)
    dates = backfill_dates(date(2020, 2, 2), date(2020, 5, 31), parse_duration("7d"))
    versions = scorecard_versions(project)
    for table in sweep_metrics(project, engine.sources, dates):
        expected = compute_metrics(project, engine.sources, table.as_of)
        _assert_same_metrics(table.values, expected.values, table.as_of)
        got_scores = score_accounts(
            project.config, table.values, table.accounts, [], table.as_of, versions
        ).scores
        expected_scores = score_accounts(
            project.config,
            expected.values,
            expected.accounts,
            [],
            table.as_of,
            versions,
        ).scores
        pd.testing.assert_frame_equal(got_scores, expected_scores, rtol=1e-9)


# Rows that every check of the source report rejects: a duplicated and a missing
# account id, unknown accounts, unreadable timestamps, subscriptions that end before
# they start, and usable rows spread over the dates, some exactly at midnight.
DIRTY_ACCOUNTS = ACCOUNTS + "a5,Hooli again,smb,dave,1,bronze\n,Nameless,smb,x,1,gold\n"
DIRTY_SUBSCRIPTIONS = SUBSCRIPTIONS + (
    "a6,2024-02-01,\na2,2024-05-01,2024-04-01\na3,2024-05-20,\n,2024-01-01,\n"
    "a1,not a date,\n"
)


def _tickets(seed: int, size: int) -> str:
    """Ticket rows as CSV text, with unknown, missing and unreadable values."""
    generator = np.random.default_rng(seed)
    lines = ["account_id,timestamp,priority"]
    for _ in range(size):
        day = FIRST_DAY + timedelta(days=int(generator.integers(0, DAYS)))
        second = 0 if generator.random() < 0.3 else int(generator.integers(0, 86400))
        stamp = (day + timedelta(seconds=second)).isoformat(" ")
        account = str(generator.choice(["a1", "a2", "a3", "a5", "zz", ""]))
        if generator.random() < 0.05:
            stamp = "yesterday"
        lines.append(f"{account},{stamp},high")
    return "\n".join(lines) + "\n"


def _dirty_project(root: Path, point_rule: str) -> Project:
    events = _events()
    events.loc[events.index[::40], "account_id"] = "unknown"
    config = _config(as_of_point=point_rule)
    config["sources"]["tickets"] = {"kind": "tickets", "path": "tickets/*.csv"}  # type: ignore[index]
    files = {
        "accounts.csv": DIRTY_ACCOUNTS,
        "subscriptions.csv": DIRTY_SUBSCRIPTIONS,
        "events.parquet": events,
        "tickets/part-1.csv": _tickets(1, 300),
        "tickets/part-2.csv": _tickets(2, 200),
    }
    return write_project(root, config, files)


def _canonical(report: SourceReport) -> SourceReport:
    """The report with its examples in (reason, column, file, row) order.

    `SourceSet.report` lists the reasons in the order the database grouped them,
    and no query fixes that order. Within a reason, examples are sorted by file and
    row.
    """
    report.examples.sort(key=lambda e: (e.reason, e.column, e.file, e.row))
    return report


@pytest.mark.parametrize("point_rule", ["start_of_day", "end_of_day"])
def test_swept_reports_equal_report(tmp_path: Path, point_rule: str) -> None:
    project = _dirty_project(tmp_path, point_rule)
    sources = Engine.open(project).sources
    dates = backfill_dates(date(2023, 12, 25), date(2024, 6, 10), parse_duration("1w"))
    points = [as_of_point(project, day) for day in dates]
    swept = sweep_source_reports(sources, points)
    assert len(swept) == len(dates)
    for point, reports in zip(points, swept, strict=True):
        expected = [_canonical(report) for report in sources.report(point)]
        assert reports == expected, point


def test_swept_reports_of_known_accounts(tmp_path: Path) -> None:
    # Every row without a problem has a known account here, so the late rows are
    # counted without looking up their accounts. Rows without an account id have
    # a problem and are never late.
    events = _events()
    events["account_id"] = events["account_id"].astype(object)
    events.loc[events.index[::50], "account_id"] = None
    files = {
        "accounts.csv": ACCOUNTS,
        "subscriptions.csv": SUBSCRIPTIONS,
        "events.parquet": events,
    }
    project = write_project(tmp_path, _config(), files)
    sources = Engine.open(project).sources
    dates = backfill_dates(date(2023, 12, 25), date(2024, 6, 10), parse_duration("9d"))
    points = [as_of_point(project, day) for day in dates]
    swept = sweep_source_reports(sources, points)
    for point, reports in zip(points, swept, strict=True):
        expected = [_canonical(report) for report in sources.report(point)]
        assert reports == expected, point
        for report in reports:
            assert "unknown_account:account_id" not in report.excluded
            assert "duplicated_account:account_id" not in report.excluded
    first = next(report for report in swept[0] if report.source == "events")
    assert first.excluded["after_as_of:timestamp"] == 1500 - 30
    assert first.excluded["missing_value:account_id"] == 30
    late = [example for example in first.examples if example.reason == "after_as_of"]
    assert len(late) == 5


def test_swept_reports_cover_every_reason(tmp_path: Path) -> None:
    # Guards the equality test above against data that excludes too little.
    project = _dirty_project(tmp_path, "start_of_day")
    sources = Engine.open(project).sources
    points = [datetime(2024, 1, 8), datetime(2024, 3, 4)]
    early, late = sweep_source_reports(sources, points)
    reasons = {key for report in early for key in report.excluded}
    assert reasons >= {
        "after_as_of:start",
        "after_as_of:timestamp",
        "duplicate_account_id:account_id",
        "missing_value:account_id",
        "end_before_start:end",
        "unknown_account:account_id",
        "unparseable_value:timestamp",
        "unparseable_value:start",
    }
    tickets_early = next(r for r in early if r.source == "tickets")
    tickets_late = next(r for r in late if r.source == "tickets")
    assert tickets_early.rows_read == 500
    assert tickets_early.rows_used < tickets_late.rows_used
    late_examples = [e for e in tickets_early.examples if e.reason == "after_as_of"]
    assert len(late_examples) == 5
    assert {e.file.rsplit("/", 1)[-1] for e in late_examples} == {"part-1.csv"}


def test_sweep_on_scaffold_with_windowed_metrics(tmp_path: Path) -> None:
    # Every metric of a source has a window here, so the sweep skips older rows.
    root = create_project(tmp_path / "sample", accounts=40)
    project = load_project(root)
    engine = Engine.open(project)
    dates = [date(2026, 5, 18), date(2026, 5, 25), date(2026, 6, 1)]
    swept = list(sweep_metrics(project, engine.sources, dates))
    for table in swept:
        expected = compute_metrics(project, engine.sources, table.as_of)
        _assert_same_metrics(table.values, expected.values, table.as_of)


# Shadow scores and the snapshot table

SHADOW_FILES = ["proposed.yml", "segmented.yml"]


def _shadow_project(root: Path, **overrides: object) -> Project:
    """The sweep project with two shadow files: other bounds, and two scorecards."""
    root.mkdir(parents=True, exist_ok=True)
    proposed = {"scorecards": _scorecard(bounds_max=3)}
    (root / "proposed.yml").write_text(yaml.safe_dump(proposed))
    (root / "segmented.yml").write_text(
        yaml.safe_dump({"scorecards": _two_scorecards()})
    )
    return _project(root, validation={"shadow": SHADOW_FILES}, **overrides)


# The first date comes before every subscription, so its population is empty.
TABLE_DATES = backfill_dates(
    date(2023, 12, 18), date(2024, 5, 27), parse_duration("3w")
)


@pytest.mark.parametrize("rows_per_batch", [500_000, 7])
def test_backfill_shadow_scores_equal_score(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, rows_per_batch: int
) -> None:
    monkeypatch.setattr(backfill_module, "ROWS_PER_BATCH", rows_per_batch)
    backfilled = _shadow_project(tmp_path / "backfilled")
    scored = _shadow_project(tmp_path / "scored")
    backfill(backfilled, TABLE_DATES)
    got, expected = snapshot_store(backfilled), snapshot_store(scored)
    for as_of in TABLE_DATES:
        score(scored, as_of, monitor=False)
        assert "shadow_scores" in got.tables(as_of), as_of
        pd.testing.assert_frame_equal(
            got.read(as_of, "shadow_scores"),
            expected.read(as_of, "shadow_scores"),
            check_exact=False,
            rtol=1e-12,
            obj=f"shadow_scores as of {as_of}",
        )
    assert len(got.read(TABLE_DATES[0], "shadow_scores")) == 0
    sample = date(2024, 3, 11)
    assert sample in TABLE_DATES
    shadow = got.read(sample, "shadow_scores")
    assert set(shadow["shadow"]) == set(SHADOW_FILES)
    # The tighter bounds of proposed.yml give other scores than the live scorecard.
    live = got.read(sample, "scores").set_index("account_id")["score"]
    proposed = shadow[shadow["shadow"] == "proposed.yml"].set_index("account_id")
    assert set(proposed.index) == set(live.index)
    assert (proposed["score"] != live.reindex(proposed.index)).any()
    segmented = shadow[shadow["shadow"] == "segmented.yml"]
    assert set(segmented["scorecard"]) == {"enterprise", "default"}


def test_backfill_without_shadow_stores_no_shadow_table(tmp_path: Path) -> None:
    project = _project(tmp_path)
    dates = TABLE_DATES[-2:]
    backfill(project, dates)
    for as_of in dates:
        assert "shadow_scores" not in snapshot_store(project).tables(as_of)


def _table_settings(kind: str, tmp_path: Path, request: Any) -> dict[str, str]:
    if kind == "duckdb":
        database = tmp_path / "out" / "scores.duckdb"
        return {"connection": f"duckdb://{database}", "table": "health_scores"}
    schema = request.getfixturevalue("postgres_schema")
    return {"connection": PG_ADMIN, "table": f"{schema}.health_scores"}


def _table_rows(project: Project, as_of: date) -> list[dict[str, Any]]:
    """Rows of the project's snapshot table of one date, as plain values."""
    settings = project.config.store.snapshot_table
    assert settings is not None
    if settings.connection.startswith("duckdb://"):
        path = Path(settings.connection.removeprefix("duckdb://"))
        return duckdb_rows(path, settings.table, as_of)
    schema, table = settings.table.split(".")
    return pg_rows(schema, table, as_of)


def _execute(project: Project, sql: str, *params: object) -> None:
    """Run one statement on the project's snapshot table database."""
    settings = project.config.store.snapshot_table
    assert settings is not None
    if settings.connection.startswith("duckdb://"):
        con = duckdb.connect(settings.connection.removeprefix("duckdb://"))
        try:
            con.execute(sql, list(params))
        finally:
            con.close()
        return
    import psycopg

    with psycopg.connect(PG_ADMIN, autocommit=True) as connection:
        connection.execute(sql.replace("?", "%s"), list(params))


@pytest.mark.parametrize("kind", ["duckdb", "postgres"])
def test_backfill_writes_snapshot_table(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    request: pytest.FixtureRequest,
    kind: str,
) -> None:
    # Batches of about two dates.
    monkeypatch.setattr(backfill_module, "ROWS_PER_BATCH", 7)
    opened: list[str] = []
    real_open = snapshot_tables_module._open_backend

    def counting_open(database: Any, settings: Any) -> Any:
        opened.append(database.display)
        return real_open(database, settings)

    monkeypatch.setattr(snapshot_tables_module, "_open_backend", counting_open)
    settings = _table_settings(kind, tmp_path, request)
    project = _shadow_project(tmp_path / "p", store={"snapshot_table": settings})

    backfill(project, TABLE_DATES)
    # PostgreSQL keeps one connection for the run. A DuckDB file is opened for
    # each write and closed after it, so other processes can write it in between.
    if kind == "postgres":
        assert len(opened) == 1
    else:
        assert len(opened) == 7
        assert len(set(opened)) == 1
    written = 0
    for as_of in TABLE_DATES:
        rows = _table_rows(project, as_of)
        assert rows == expected_scores(project, as_of), as_of
        written += len(rows)
    assert _table_rows(project, TABLE_DATES[0]) == []
    assert written == sum(
        len(snapshot_store(project).read(day, "scores")) for day in TABLE_DATES
    )
    assert written > 2 * len(TABLE_DATES)

    # A second backfill replaces the rows of its dates and keeps the other dates.
    table = settings["table"]
    outside = date(2023, 1, 2)
    key = project.config.name
    insert = f"INSERT INTO {table} (account_id, as_of, project) VALUES (?, ?, ?)"
    _execute(project, insert, "old", TABLE_DATES[2], key)
    _execute(project, insert, "kept", outside, key)
    backfill(project, TABLE_DATES)
    for as_of in TABLE_DATES:
        assert _table_rows(project, as_of) == expected_scores(project, as_of), as_of
    assert [row["account_id"] for row in _table_rows(project, outside)] == ["kept"]


def test_backfill_table_failure_keeps_date(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, postgres_schema: str
) -> None:
    # One date per batch, so the dates before the failing one are committed.
    monkeypatch.setattr(backfill_module, "ROWS_PER_BATCH", 1)
    table = f"{postgres_schema}.health_scores"
    settings = {"connection": PG_ADMIN, "table": table}
    project = _project(tmp_path, store={"snapshot_table": settings})
    dates = backfill_dates(date(2024, 2, 5), date(2024, 3, 4), parse_duration("2w"))
    failing = date(2024, 2, 19)
    assert dates == [date(2024, 2, 5), failing, date(2024, 3, 4)]
    backfill(project, dates[:1])
    store = snapshot_store(project)
    assert "a2" in set(store.read(dates[0], "scores")["account_id"])
    # Rows of earlier runs of the later dates, and a rule that a2's new row of the
    # failing date breaks after the date's old rows were deleted.
    insert = f"INSERT INTO {table} (account_id, as_of, project) VALUES ('old', ?, ?)"
    for as_of in dates[1:]:
        _execute(project, insert, as_of, project.config.name)
    _execute(
        project,
        f"ALTER TABLE {table} ADD CONSTRAINT no_a2 CHECK "
        f"(account_id <> 'a2' OR as_of <> DATE '{failing}') NOT VALID",
    )

    with pytest.raises(SnapshotTableError) as caught:
        backfill(project, dates)
    message = str(caught.value)
    assert f"writing the scores of {failing} into table" in message
    assert "keeps its earlier rows of that date" in message
    assert "no_a2" in message
    assert _table_rows(project, dates[0]) == expected_scores(project, dates[0])
    for as_of in dates[1:]:
        assert [row["account_id"] for row in _table_rows(project, as_of)] == ["old"]
    # The Parquet snapshot of the failing date is stored, the later date is not.
    assert store.exists(failing)
    assert not store.exists(dates[2])
    assert isinstance(caught.value, BackfillTableError)
    assert caught.value.stored == dates[:1]
    assert caught.value.files_only == [failing]
    assert caught.value.unwritten == dates[1:]


def test_backfill_unreachable_table_server(tmp_path: Path) -> None:
    connection = f"postgresql://postgres:hunter22@127.0.0.1:{closed_port()}/test"
    settings = {"connection": connection, "table": "scores"}
    project = _project(tmp_path, store={"snapshot_table": settings})
    dates = TABLE_DATES[-3:]
    with pytest.raises(SnapshotTableError) as caught:
        backfill(project, dates)
    message = str(caught.value)
    assert "cannot connect to postgresql://postgres@127.0.0.1:" in message
    assert "hunter22" not in message
    # The backfill connects before scoring, so the files and the table agree.
    assert message.endswith("The backfill stored nothing")
    assert snapshot_store(project).dates() == []


def test_backfill_of_dates_without_accounts(tmp_path: Path) -> None:
    # No subscription is active before 2024, so those dates score no account. A
    # batch of only such dates stores what `score` stores for each date alone, and
    # so does a batch that mixes them with scored dates.
    backfilled = _project(tmp_path / "backfilled")
    scored = _project(tmp_path / "scored")
    empty = backfill_dates(date(2023, 1, 2), date(2023, 1, 30), parse_duration("7d"))
    mixed = [date(2023, 12, 25), date(2024, 3, 4)]
    backfill(backfilled, empty)
    backfill(backfilled, mixed)
    for as_of in [*empty, *mixed]:
        score(scored, as_of, monitor=False)
    got, expected = snapshot_store(backfilled), snapshot_store(scored)
    assert got.dates() == expected.dates() == [*empty, *mixed]
    for as_of in [*empty, *mixed]:
        for table in expected.tables(as_of):
            pd.testing.assert_frame_equal(
                got.read(as_of, table),
                expected.read(as_of, table),
                obj=f"{table} as of {as_of}",
            )
    assert len(got.read(empty[0], "scores")) == 0
    assert len(got.read(mixed[1], "scores")) > 0


def test_cli_backfill_warns_of_empty_dates(tmp_path: Path) -> None:
    project = _project(tmp_path)
    # Both dates come before every subscription, the third after the first start.
    arguments = ["backfill", "--from", "2023-12-18", "--to", "2024-01-01"]
    arguments += ["--every", "1w", "--project", str(project.root)]
    result = CliRunner().invoke(app, arguments)

    assert result.exit_code == 0, result.output
    assert "stored 3 snapshots" in result.stdout
    # The warning of partial windows comes first; this one starts at its own mark.
    stderr = " ".join(result.stderr.split())
    empty = stderr[stderr.index("warning: 2 snapshots") :]
    assert empty.startswith(
        "warning: 2 snapshots (2023-12-18 and 2023-12-25) have no accounts"
    )
    assert "2024-01-01" not in empty
