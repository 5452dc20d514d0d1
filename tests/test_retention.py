"""Retention of the event store: purges, rollup metrics and the checks of validate."""

from __future__ import annotations

import copy
import re
from datetime import date, datetime, timedelta

import pandas as pd
import pytest
import yaml
from typer.testing import CliRunner

from healthscore import pipeline
from healthscore.cli import app
from healthscore.config import ConfigError
from healthscore.privacy.retention import cutoff_day, retain
from healthscore.sources.ingest import event_store
from project_factory import ACCOUNTS_CSV, write_project

AS_OF = date(2026, 3, 1)
FIRST_DAY = date(2026, 1, 1)


def usage_rows() -> pd.DataFrame:
    """Sixty days of events; a2 also has events stamped exactly at midnight."""
    rows = []
    for offset in range(60):
        day = datetime.combine(FIRST_DAY + timedelta(days=offset), datetime.min.time())
        rows.append(("a1", day + timedelta(hours=10), "u1", float(offset)))
        if offset % 3 == 0:
            rows.append(("a2", day, "u2", 1.0))
            rows.append(("a2", day + timedelta(hours=23), "u3", 2.5))
        if offset < 30:
            rows.append(("a3", day + timedelta(hours=12), "u4", None))
    return pd.DataFrame(rows, columns=["account_id", "timestamp", "user", "value"])


def measure(metric: str, high: float) -> dict:
    return {"metric": metric, "normalize": {"method": "bounds", "min": 0, "max": high}}


def retention_config(**retention) -> dict:
    return {
        "name": "retention",
        "sources": {
            "accounts": {"kind": "accounts", "path": "accounts.csv"},
            "usage": {"kind": "events", "path": "store"},
        },
        "metrics": {
            "raw_7d": {"type": "count", "source": "usage", "window": "7d"},
            "users_14d": {
                "type": "distinct_count",
                "source": "usage",
                "column": "user",
                "window": "14d",
            },
            "rows_45d": {
                "type": "sum",
                "source": "usage_daily",
                "column": "rows",
                "window": "45d",
            },
            "value_45d": {
                "type": "sum",
                "source": "usage_daily",
                "column": "value_sum",
                "window": "45d",
            },
            "max_value_45d": {
                "type": "max",
                "source": "usage_daily",
                "column": "value_max",
                "window": "45d",
            },
            "days_quiet": {"type": "days_since", "source": "usage_daily"},
        },
        "scorecards": [
            {
                "name": "default",
                "components": {
                    "usage": {
                        "weight": 1,
                        "measures": [
                            measure("raw_7d", 10),
                            measure("users_14d", 3),
                            measure("rows_45d", 90),
                            measure("value_45d", 1000),
                            measure("max_value_45d", 60),
                            measure("days_quiet", 40),
                        ],
                    }
                },
            }
        ],
        "retention": retention or {"raw_events": "20d"},
    }


@pytest.fixture
def project(tmp_path):
    project = write_project(
        tmp_path / "p", retention_config(), {"accounts.csv": ACCOUNTS_CSV}
    )
    event_store(project).append("usage", usage_rows(), numeric=["value"])
    return project


def snapshot(project, as_of: date) -> dict[str, pd.DataFrame]:
    store = pipeline.snapshot_store(project)
    return {name: store.read(as_of, name) for name in store.tables(as_of)}


def test_purge_keeps_snapshots_identical(project):
    pipeline.score(project, AS_OF, monitor=False)
    before = snapshot(project, AS_OF)

    results = retain(project, AS_OF)

    assert results[0].cutoff == date(2026, 2, 9)
    assert min(event_store(project).raw_days("usage")) == date(2026, 2, 9)
    pipeline.score(project, AS_OF, monitor=False)
    after = snapshot(project, AS_OF)
    assert before.keys() == after.keys()
    for name, frame in before.items():
        pd.testing.assert_frame_equal(after[name], frame, obj=name)


def test_rollup_metrics_match_raw_counts(project):
    events = usage_rows()
    start = datetime(2026, 1, 15)  # 45 days before the as-of point
    window = events[
        (events.timestamp >= start) & (events.timestamp < datetime(2026, 3, 1))
    ]
    expected_rows = window.groupby("account_id").size()
    expected_value = window.groupby("account_id")["value"].sum()
    retain(project, AS_OF)

    run = pipeline.score(project, AS_OF, store=False)

    values = run.metrics.values
    for account in ("a1", "a2", "a3"):
        assert values.loc[account, "rows_45d"] == expected_rows.get(account, 0)
        assert values.loc[account, "value_45d"] == pytest.approx(
            expected_value.get(account, 0.0)
        )
    assert values.loc["a1", "max_value_45d"] == 58.0  # day 59 is the as-of date
    assert values.loc["a1", "days_quiet"] == 1
    assert values.loc["a3", "days_quiet"] == 30  # last row on 2026-01-30


def test_stored_snapshot_files_unchanged_by_purge(project):
    pipeline.score(project, date(2026, 2, 1), monitor=False)
    folder = pipeline.snapshot_store(project).partition_path(date(2026, 2, 1))
    contents = {p.name: p.read_bytes() for p in folder.iterdir()}

    retain(project, AS_OF)

    assert {p.name: p.read_bytes() for p in folder.iterdir()} == contents


def test_cutoff_counts_calendar_months():
    assert cutoff_day(date(2026, 3, 31), _months(1)) == date(2026, 2, 28)
    assert cutoff_day(date(2026, 3, 1), _days(20)) == date(2026, 2, 9)


def _months(amount: int):
    from healthscore.config.models import Duration

    return Duration(amount=amount, unit="months")


def _days(amount: int):
    from healthscore.config.models import Duration

    return Duration(amount=amount, unit="days")


def test_score_purges_when_configured(tmp_path):
    config = retention_config(raw_events="20d", after_score=True)
    project = write_project(tmp_path / "p", config, {"accounts.csv": ACCOUNTS_CSV})
    event_store(project).append("usage", usage_rows(), numeric=["value"])

    pipeline.score(project, AS_OF, monitor=False)

    # The rows are from 2026 January and February, long before today.
    assert event_store(project).raw_days("usage") == []
    assert len(event_store(project).purged_days("usage")) == 60


ROLLUP = "compute it on the daily rollup as "
WINDOW_20D = "give it a window of at most 20d"
LOGINS = "event_type == 'login'"
OWN_SOURCE = (
    "keep the rows that its where selects in a store source of their own, and "
    "compute it on that source's daily rollup as "
)
NO_EVENT_TYPE = ", because 'usage_daily' keeps no event_type"


def keep_for(age: str, source: str = "usage") -> str:
    setting = f"retention.sources.{source}: {age}"
    return f"keep the raw rows of {source!r} for {age} or longer ({setting})"


#: Per metric type: a metric that reads past the 20d retention age of `usage`,
#: and each change that validate offers, in its order.
ADVICE_CASES = {
    "count": (
        {"type": "count", "source": "usage", "window": "30d"},
        [
            ROLLUP + "{type: sum, source: usage_daily, column: rows, window: 30d}",
            WINDOW_20D,
            keep_for("30d"),
        ],
    ),
    "count_all_rows": (
        {"type": "count", "source": "usage"},
        [ROLLUP + "{type: sum, source: usage_daily, column: rows}", WINDOW_20D],
    ),
    "count_where": (
        {"type": "count", "source": "usage", "window": "30d", "where": LOGINS},
        [
            OWN_SOURCE
            + "{type: sum, source: <source>_daily, column: rows, window: 30d}"
            + NO_EVENT_TYPE,
            WINDOW_20D,
            keep_for("30d"),
        ],
    ),
    "distinct_count": (
        {"type": "distinct_count", "source": "usage", "column": "user", "window": "4w"},
        [WINDOW_20D, keep_for("4w")],
    ),
    "sum": (
        {"type": "sum", "source": "usage", "column": "value", "window": "5w"},
        [
            ROLLUP + "{type: sum, source: usage_daily, column: value_sum, window: 5w}",
            WINDOW_20D,
            keep_for("5w"),
        ],
    ),
    "sum_right_closed": (
        {
            "type": "sum",
            "source": "usage",
            "column": "value",
            "window": {"length": "30d", "closed": "right"},
        },
        [
            ROLLUP + "{type: sum, source: usage_daily, column: value_sum, "
            "window: {length: 30d, closed: right}}",
            WINDOW_20D,
            keep_for("30d"),
        ],
    ),
    "mean": (
        {"type": "mean", "source": "usage", "column": "value", "window": "30d"},
        [WINDOW_20D, keep_for("30d")],
    ),
    "min": (
        {"type": "min", "source": "usage", "column": "value", "window": "30d"},
        [
            ROLLUP + "{type: min, source: usage_daily, column: value_min, window: 30d}",
            WINDOW_20D,
            keep_for("30d"),
        ],
    ),
    "max": (
        {"type": "max", "source": "usage", "column": "value", "window": "2mo"},
        [
            ROLLUP + "{type: max, source: usage_daily, column: value_max, window: 2mo}",
            WINDOW_20D,
            keep_for("2mo"),
        ],
    ),
    "latest": (
        {"type": "latest", "source": "usage", "column": "user"},
        [WINDOW_20D],
    ),
    "rate": (
        {"type": "rate", "source": "usage", "window": "30d", "per": "7d"},
        [WINDOW_20D, keep_for("30d")],
    ),
    "sentiment": (
        {"type": "sentiment", "source": "tickets", "column": "text", "window": "30d"},
        [WINDOW_20D, keep_for("30d", "tickets")],
    ),
    "nps": (
        {"type": "nps", "source": "surveys", "window": "3w"},
        [WINDOW_20D, keep_for("3w", "surveys")],
    ),
    "days_since": (
        {"type": "days_since", "source": "usage"},
        [ROLLUP + "{type: days_since, source: usage_daily}"],
    ),
    "days_since_where": (
        {"type": "days_since", "source": "usage", "where": LOGINS},
        [OWN_SOURCE + "{type: days_since, source: <source>_daily}" + NO_EVENT_TYPE],
    ),
    "days_to_milestone": (
        {
            "type": "days_to_milestone",
            "source": "usage",
            "start_column": "contract_start",
            "if_not_reached": "missing",
        },
        [
            ROLLUP + "{type: days_to_milestone, source: usage_daily, "
            "start_column: contract_start, if_not_reached: missing}"
        ],
    ),
    "days_to_milestone_where": (
        {
            "type": "days_to_milestone",
            "source": "usage",
            "start_column": "contract_start",
            "where": LOGINS,
        },
        [
            OWN_SOURCE + "{type: days_to_milestone, source: <source>_daily, "
            "start_column: contract_start}" + NO_EVENT_TYPE
        ],
    ),
    "days_to_milestone_timestamp_start": (
        {
            "type": "days_to_milestone",
            "source": "usage",
            "start_column": "signed_at",
        },
        ["keep the rows it reads in a store source that has no retention age"],
    ),
}

#: Accounts with a start date and a start time, for the days_to_milestone metrics.
STARTS_CSV = """account_id,name,contract_start,signed_at
a1,Acme,2025-12-01,2025-12-01T09:30:00
a2,Globex,2025-12-15,2025-12-15T16:00:00
a3,Initech,2025-11-20,2025-11-20T08:00:00
"""


def advice_config(metrics: dict[str, dict]) -> dict:
    config = retention_config()
    config["sources"]["accounts"]["path"] = "starts.csv"
    config["sources"]["accounts"]["attributes"] = {"signed_at": "timestamp"}
    config["sources"]["tickets"] = {"kind": "tickets", "path": "store"}
    config["sources"]["surveys"] = {"kind": "surveys", "path": "store"}
    config["metrics"].update(metrics)
    return config


def reach_advice(tmp_path, metrics: dict[str, dict]) -> dict[str, list[str]]:
    """Return the changes that validate offers per metric, in their order."""
    with pytest.raises(ConfigError) as raised:
        write_project(
            tmp_path / "p", advice_config(metrics), {"starts.csv": STARTS_CSV}
        )
    found = {}
    for issue in raised.value.issues:
        assert issue.line is not None
        name = issue.key.removeprefix("metrics.")
        assert " are purged after 20d; " in issue.message
        found[name] = issue.message.split("20d; ", 1)[1].split("; or ")
    return found


@pytest.mark.parametrize("name", ADVICE_CASES)
def test_validate_advises_per_metric_type(tmp_path, name):
    metric, expected = ADVICE_CASES[name]

    assert reach_advice(tmp_path, {name: metric}) == {name: expected}


def applied(config: dict, name: str, advice: str) -> dict:
    """Return `config` with one change that validate offered for metric `name`."""
    config = copy.deepcopy(config)
    if advice.startswith((ROLLUP, OWN_SOURCE)):
        flow = re.search(r" as (\{.*\})", advice).group(1)
        config["metrics"][name] = yaml.safe_load(flow.replace("<source>", "logins"))
        config["sources"]["logins"] = {"kind": "events", "path": "store"}
    elif advice.startswith("give it a window of at most "):
        config["metrics"][name]["window"] = advice.rsplit(" ", 1)[1]
    elif advice.startswith("keep the raw rows of "):
        source, age = re.search(r"retention\.sources\.(\w+): (\w+)\)", advice).groups()
        config["retention"]["sources"] = {source: age}
    elif advice.startswith("keep the rows it reads in a store source"):
        config["sources"]["logins"] = {"kind": "events", "path": "store"}
        config["metrics"][name]["source"] = "logins"
        config["retention"] = {"sources": {"usage": "20d"}}
    else:
        raise AssertionError(f"no way to apply {advice!r}")
    return config


@pytest.mark.parametrize("name", ADVICE_CASES)
def test_validate_accepts_each_advice_applied(tmp_path, name):
    metric, advice = ADVICE_CASES[name]
    config = advice_config({name: metric})

    for number, change in enumerate(advice):
        root = tmp_path / str(number)
        write_project(root, applied(config, name, change), {"starts.csv": STARTS_CSV})


def test_rollup_advice_gives_raw_values(tmp_path):
    names = ["count", "count_all_rows", "sum", "min", "max", "days_since"]
    names.append("days_to_milestone")
    metrics = {name: ADVICE_CASES[name][0] for name in names}
    advice = reach_advice(tmp_path / "advice", metrics)
    kept = advice_config(metrics)
    kept["retention"] = {}
    raw = write_project(tmp_path / "raw", kept, {"starts.csv": STARTS_CSV})
    event_store(raw).append("usage", usage_rows(), numeric=["value"])
    rollup_config = advice_config({})
    for name in names:
        rollup_config = applied(rollup_config, name, advice[name][0])
    rolled = write_project(
        tmp_path / "rollup", rollup_config, {"starts.csv": STARTS_CSV}
    )
    event_store(rolled).append("usage", usage_rows(), numeric=["value"])
    assert retain(rolled, AS_OF)[0].purged

    expected = pipeline.score(raw, AS_OF, store=False).metrics.values
    values = pipeline.score(rolled, AS_OF, store=False).metrics.values

    # a3's last row, on 2026-01-30, is on the first day of the 30-day window. Its
    # first row, on 2026-01-01, came 42 days after its start on 2025-11-20.
    assert expected.loc["a3", "count"] == 1
    assert expected.loc["a3", "days_to_milestone"] == 42
    assert expected.loc["a1", "days_to_milestone"] == 31
    for name in names:
        pd.testing.assert_series_equal(values[name], expected[name], obj=name)


def test_validate_counts_previous_window_of_change(tmp_path):
    config = retention_config()
    config["metrics"]["raw_14d"] = {"type": "count", "source": "usage", "window": "14d"}
    config["metrics"]["raw_change"] = {"type": "change", "of": "raw_14d"}

    with pytest.raises(ConfigError) as raised:
        write_project(tmp_path / "p", config, {"accounts.csv": ACCOUNTS_CSV})

    (issue,) = raised.value.issues
    assert issue.key == "metrics.raw_change"
    assert "2 windows of 14d" in issue.message
    # Two windows of 10d fit in the 20d retention age.
    assert issue.message.split("20d; ", 1)[1].split("; or ") == [
        "compute 'raw_14d' on the daily rollup as "
        "{type: sum, source: usage_daily, column: rows, window: 14d}",
        "give 'raw_14d' a window of at most 10d",
        keep_for("28d"),
    ]


def test_validate_advice_for_change_applies(tmp_path):
    config = retention_config()
    config["metrics"]["raw_14d"] = {"type": "count", "source": "usage", "window": "10d"}
    config["metrics"]["raw_change"] = {"type": "change", "of": "raw_14d"}
    write_project(tmp_path / "short", config, {"accounts.csv": ACCOUNTS_CSV})
    config["metrics"]["raw_14d"]["window"] = "14d"
    config["retention"]["sources"] = {"usage": "28d"}
    write_project(tmp_path / "kept", config, {"accounts.csv": ACCOUNTS_CSV})


def test_validate_rejects_raw_column_on_rollup(tmp_path):
    config = retention_config()
    config["metrics"]["logins"] = {
        "type": "count",
        "source": "usage_daily",
        "where": "event_type == 'login'",
    }

    with pytest.raises(ConfigError) as raised:
        write_project(tmp_path / "p", config, {"accounts.csv": ACCOUNTS_CSV})

    keys = [issue.key for issue in raised.value.issues]
    assert keys == ["metrics.logins.where"]
    assert "'event_type' is not a column of the daily rollup" in str(raised.value)


def test_validate_rejects_retention_of_file_source(tmp_path):
    config = retention_config(raw_events="20d", sources={"accounts": "10d"})

    with pytest.raises(ConfigError, match=r"retention\.sources\.accounts"):
        write_project(tmp_path / "p", config, {"accounts.csv": ACCOUNTS_CSV})


def test_cli_ingest_and_retain(tmp_path):
    project = write_project(
        tmp_path / "p",
        retention_config(),
        {
            "accounts.csv": ACCOUNTS_CSV,
            "jan.csv": "account_id,timestamp,value\na1,2026-01-02T10:00:00,4\n"
            "a2,2026-02-20T10:00:00,1\n",
        },
    )
    runner = CliRunner(env={"COLUMNS": "200", "NO_COLOR": "1"})
    root = str(project.root)

    ingested = runner.invoke(
        app, ["ingest", "--source", "usage", f"{root}/jan.csv", "--project", root]
    )
    dry = runner.invoke(
        app, ["retain", "--today", "2026-03-01", "--dry-run", "--project", root]
    )
    purged = runner.invoke(app, ["retain", "--today", "2026-03-01", "--project", root])

    assert ingested.exit_code == 0, ingested.output
    assert "Stored 2 rows" in ingested.output
    assert dry.exit_code == 0, dry.output
    assert "Would purge 1 raw day (1 row) of usage before 2026-02-09" in dry.output
    assert purged.exit_code == 0, purged.output
    assert event_store(project).raw_days("usage") == [date(2026, 2, 20)]


def test_rebuild_rollups_lets_day_go(project):
    store = event_store(project)
    rollup = project.root / ".healthscore/daily/usage/day=2026-01-03/rollup.parquet"
    rollup.unlink()

    kept = retain(project, AS_OF)
    rebuilt = retain(project, AS_OF, rebuild_rollups=True)

    assert kept[0].kept == {date(2026, 1, 3): "no rollup"}
    assert rebuilt[0].purged == {date(2026, 1, 3): 2}  # a1 and a3
    assert rebuilt[0].kept == {}
    day = store.read_rollup("usage", date(2026, 1, 3)).to_pandas()
    assert day["account_id"].tolist() == ["a1", "a3"]
    assert day["rows"].tolist() == [1, 1]


def test_validate_rejects_store_of_accounts(tmp_path):
    config = retention_config()
    config["sources"]["accounts"]["path"] = "store"

    with pytest.raises(ConfigError) as raised:
        write_project(tmp_path / "p", config, {})

    keys = [issue.key for issue in raised.value.issues]
    assert keys == ["sources.accounts.path"]
    assert "sources of kind accounts cannot be read" in str(raised.value)
