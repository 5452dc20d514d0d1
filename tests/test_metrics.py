"""Metric values against hand-computed results, window edges and the no-leakage rule."""

from __future__ import annotations

import math
from datetime import date

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from healthscore.config import load_project
from healthscore.engine import connect
from healthscore.metrics import compute_metrics
from healthscore.metrics.aggregates import MetricError
from healthscore.pipeline import open_engine
from healthscore.sources import load_sources
from project_factory import ACCOUNTS_CSV, minimal_config, write_project

AS_OF = date(2024, 4, 1)  # as-of point 2024-04-01 00:00

# a1: two subscriptions 14 days apart, one run since 1 January (91 days on 1 April).
# a2: a 43-day gap starts a new run on 15 March (17 days). a3: ended 1 March.
SUBSCRIPTIONS = """account_id,start,end
a1,2024-01-01,2024-02-01
a1,2024-02-15,2024-05-01
a2,2024-01-01,2024-02-01
a2,2024-03-15,
a3,2024-01-01,2024-03-01
"""

EVENTS = """account_id,timestamp,event_type,user,value
a1,2024-01-20 10:00:00,integration,u1,0
a1,2024-02-10 09:00:00,login,u1,7
a1,2024-03-04 00:00:00,login,u1,2
a1,2024-03-20 10:00:00,report,u1,5
a1,2024-03-31 23:59:00,login,u2,3
a1,2024-04-01 00:00:00,login,u3,100
a1,2024-04-02 08:00:00,login,u4,1000
a2,2024-03-10 12:00:00,login,u9,4
"""

LOGIN = "event_type == 'login'"

METRICS = {
    "logins_28d": {
        "type": "count",
        "source": "events",
        "where": LOGIN,
        "window": "28d",
    },
    "login_value_left": {
        "type": "sum",
        "source": "events",
        "column": "value",
        "where": LOGIN,
        "window": "28d",
    },
    "login_value_right": {
        "type": "sum",
        "source": "events",
        "column": "value",
        "where": LOGIN,
        "window": {"length": "28d", "closed": "right"},
    },
    "users_28d": {
        "type": "distinct_count",
        "source": "events",
        "column": "user",
        "window": "28d",
    },
    "mean_value": {
        "type": "mean",
        "source": "events",
        "column": "value",
        "window": "4w",
    },
    "min_value": {
        "type": "min",
        "source": "events",
        "column": "value",
        "window": "28d",
    },
    "max_value": {
        "type": "max",
        "source": "events",
        "column": "value",
        "window": "28d",
    },
    "latest_value": {"type": "latest", "source": "events", "column": "value"},
    "latest_type": {"type": "latest", "source": "events", "column": "event_type"},
    "days_since_login": {"type": "days_since", "source": "events", "where": LOGIN},
    "days_since_event": {"type": "days_since", "source": "events"},
    "logins_per_week": {
        "type": "rate",
        "source": "events",
        "where": LOGIN,
        "window": "28d",
        "per": "7d",
    },
    "logins_per_tenure": {
        "type": "rate",
        "source": "events",
        "where": LOGIN,
        "window": {"length": "28d", "closed": "right"},
        "per": "28d",
        "exposure": "tenure",
        "min_tenure": "10d",
    },
    "tenure": {"type": "tenure", "source": "subscriptions", "max_gap": "31d"},
    "days_to_integration": {
        "type": "days_to_milestone",
        "source": "events",
        "where": "event_type == 'integration'",
    },
    "days_to_integration_or_missing": {
        "type": "days_to_milestone",
        "source": "events",
        "where": "event_type == 'integration'",
        "if_not_reached": "missing",
    },
    "value_per_login": {
        "type": "ratio",
        "numerator": "login_value_left",
        "denominator": "logins_28d",
    },
    "value_per_login_or_missing": {
        "type": "ratio",
        "numerator": "login_value_left",
        "denominator": "logins_28d",
        "zero_denominator": None,
    },
    "login_change": {"type": "change", "of": "logins_28d"},
    "login_difference": {"type": "change", "of": "logins_28d", "mode": "difference"},
    "weighted": {"type": "formula", "expression": "logins_28d * 2 + users_28d"},
    "segment": {"type": "attribute", "column": "segment"},
    "arr": {"type": "attribute", "column": "arr"},
}

EXPECTED = {
    # [03-04, 04-01): a1 logins at 03-04 00:00 and 03-31 23:59; a2 at 03-10.
    "logins_28d": (2, 1, 0),
    "login_value_left": (2 + 3, 4, 0),
    # (03-04, 04-01): the rows at 03-04 00:00 and at the point 04-01 00:00 are out.
    "login_value_right": (3, 4, 0),
    "users_28d": (2, 1, 0),
    "mean_value": ((2 + 5 + 3) / 3, 4, math.nan),
    "min_value": (2, 4, math.nan),
    "max_value": (5, 4, math.nan),
    # Without a window, the row stamped exactly at the point is not seen.
    "latest_value": (3, 4, math.nan),
    "days_since_login": (1, 22, math.nan),
    "days_since_event": (1, 22, math.nan),
    "logins_per_week": (2 * 7 / 28, 1 * 7 / 28, 0),
    # (03-04, 04-01): a1 1 login (03-31), a2 1. Exposure min(28, tenure): a1 28
    # days, a2 17 days; a3 is not active.
    "logins_per_tenure": (1 * 28 / 28, 1 * 28 / 17, math.nan),
    "tenure": (91, 17, math.nan),
    # a1: 19 days after its first start; a2 and a3: 91 days elapsed, none reached.
    "days_to_integration": (19, 91, 91),
    "days_to_integration_or_missing": (19, math.nan, math.nan),
    "value_per_login": (5 / 2, 4, 0),
    "value_per_login_or_missing": (5 / 2, 4, math.nan),
    # previous window [02-05, 03-04): a1 had 1 login, a2 and a3 none.
    "login_change": (2 / 1 - 1, math.nan, math.nan),
    "login_difference": (1, 1, 0),
    "weighted": (2 * 2 + 2, 1 * 2 + 1, 0),
    "arr": (120000, 9000, 4000),
}


def project_with(
    tmp_path,
    population="all",
    events=EVENTS,
    subscriptions=SUBSCRIPTIONS,
    metrics=METRICS,
):
    config = {
        "name": "metrics",
        "sources": {
            "accounts": {
                "kind": "accounts",
                "path": "accounts.csv",
            },
            "subscriptions": {"kind": "subscriptions", "path": "subscriptions.csv"},
            "events": {"kind": "events", "path": "events.csv"},
        },
        "metrics": metrics,
        "scoring": {"population": population},
        "scorecards": [
            {
                "name": "default",
                "components": {
                    "usage": {
                        "weight": 1,
                        "measures": [
                            {
                                "metric": "logins_28d",
                                "normalize": {"method": "bounds", "min": 0, "max": 10},
                            }
                        ],
                    }
                },
            }
        ],
    }
    files = {
        "accounts.csv": ACCOUNTS_CSV,
        "subscriptions.csv": subscriptions,
        "events.csv": events,
    }
    return write_project(tmp_path, config, files)


def metrics_of(project, as_of=AS_OF):
    sources = load_sources(project, connect(project))
    return compute_metrics(project, sources, as_of)


@pytest.fixture(scope="module")
def values(tmp_path_factory):
    return metrics_of(project_with(tmp_path_factory.mktemp("metrics"))).values


@pytest.mark.parametrize("metric", sorted(EXPECTED))
def test_metric_matches_hand_computed_value(values, metric):
    actual = values.loc[["a1", "a2", "a3"], metric].astype(float).to_numpy()
    np.testing.assert_allclose(actual, EXPECTED[metric], rtol=1e-12, equal_nan=True)


def test_text_metrics_keep_text(values):
    assert values.loc["a1", "latest_type"] == "login"
    assert pd.isna(values.loc["a3", "latest_type"])
    assert list(values.loc[["a1", "a2", "a3"], "segment"]) == [
        "enterprise",
        "smb",
        "smb",
    ]


def test_account_without_rows_is_scored_with_zero_counts(values):
    assert "a3" in values.index
    assert values.loc["a3", "logins_28d"] == 0


def test_active_population_leaves_out_ended_accounts(tmp_path):
    table = metrics_of(project_with(tmp_path, population="active"))
    assert list(table.values.index) == ["a1", "a2"]
    assert list(table.accounts.index) == ["a1", "a2"]


def test_population_defaults_to_active_with_subscriptions(tmp_path):
    project = project_with(tmp_path, population="all")
    project.config.scoring.population = None
    assert list(metrics_of(project).values.index) == ["a1", "a2"]


def test_long_form_lists_every_account_and_metric(values, tmp_path):
    table = metrics_of(project_with(tmp_path))
    long = table.long()
    assert list(long.columns) == ["account_id", "metric", "value"]
    assert len(long) == 3 * len(METRICS)
    row = long[(long.account_id == "a1") & (long.metric == "logins_28d")]
    assert row["value"].iloc[0] == 2


def test_end_of_day_point_sees_the_as_of_day(tmp_path):
    project = project_with(tmp_path)
    project.config.as_of_point = "end_of_day"
    values = metrics_of(project, date(2024, 3, 31)).values
    # Point 04-01 00:00: the same window as start_of_day on 1 April.
    assert values.loc["a1", "logins_28d"] == 2
    assert values.loc["a1", "days_since_login"] == 0


DISTINCT_METRICS = {
    "users_28d": METRICS["users_28d"],
    "login_users_28d": {
        "type": "distinct_count",
        "source": "events",
        "column": "user",
        "where": LOGIN,
        "window": "28d",
    },
    "users_14d_right": {
        "type": "distinct_count",
        "source": "events",
        "column": "user",
        "window": {"length": "14d", "closed": "right"},
    },
    "types_28d": {
        "type": "distinct_count",
        "source": "events",
        "column": "event_type",
        "window": "28d",
    },
    "logins_28d": METRICS["logins_28d"],
}


@pytest.mark.parametrize("with_history", [False, True])
def test_distinct_counts_per_window_and_filter(tmp_path, with_history):
    metrics = dict(DISTINCT_METRICS)
    if with_history:
        # A distinct count without a window makes the source one scan of all rows.
        metrics["types_ever"] = {
            "type": "distinct_count",
            "source": "events",
            "column": "event_type",
        }
    values = metrics_of(project_with(tmp_path, metrics=metrics)).values
    expected = {
        # [03-04, 04-01): a1 u1 (login, report) and u2 (login); a2 u9 (login).
        "users_28d": [2, 1, 0],
        "login_users_28d": [2, 1, 0],
        # (03-18, 04-01): a1 u1 at 03-20 and u2 at 03-31, but not u3 at the point
        # 04-01 00:00; a2's only row (03-10) lies in the scan but not in this
        # window, so 0, not missing.
        "users_14d_right": [2, 0, 0],
        "types_28d": [2, 1, 0],
        "logins_28d": [2, 1, 0],
    }
    if with_history:
        # Rows before the point: a1 integration, login, report; a2 login.
        expected["types_ever"] = [3, 1, 0]
    actual = values.loc[["a1", "a2", "a3"], list(expected)]
    assert actual.to_dict("list") == expected


# Rows at the point 2024-04-01 00:00 or later: no window reads them.
FUTURE_TIMES = st.one_of(
    st.just(pd.Timestamp("2024-04-01 00:00:00").to_pydatetime()),
    st.datetimes(
        min_value=pd.Timestamp("2024-04-01 00:00:00").to_pydatetime(),
        max_value=pd.Timestamp("2025-12-31").to_pydatetime(),
    ),
)


@settings(
    max_examples=8,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(
    rows=st.lists(
        st.tuples(
            st.sampled_from(["a1", "a2", "a3"]),
            FUTURE_TIMES,
            st.sampled_from(["login", "integration", "report"]),
            st.integers(min_value=-5, max_value=5000),
        ),
        min_size=1,
        max_size=30,
    ),
    new_start=st.dates(min_value=date(2024, 4, 2), max_value=date(2025, 6, 1)),
)
def test_rows_after_as_of_point_change_no_metric(
    tmp_path_factory, values, rows, new_start
):
    future_events = "".join(
        f"{account},{moment:%Y-%m-%d %H:%M:%S},{kind},u{value % 7},{value}\n"
        for account, moment, kind, value in rows
    )
    future_subscriptions = (
        f"a3,{new_start},\na2,{new_start},{new_start.replace(year=2026)}\n"
    )
    project = project_with(
        tmp_path_factory.mktemp("future"),
        events=EVENTS + future_events,
        subscriptions=SUBSCRIPTIONS + future_subscriptions,
    )
    with_future = metrics_of(project).values
    pd.testing.assert_frame_equal(with_future, values)


# Rows the checks exclude, a row of an account that is not in the accounts file,
# and rows after the point: none of them may move a metric.
EXCLUDED_EVENTS = """a2,,login,u1,1
,2024-03-30 10:00:00,login,u1,1
a9,2024-03-31 12:00:00,login,u1,1
a2,2024-05-01 00:00:00,login,u1,1
"""


def test_summaries_match_full_scans(tmp_path):
    project = project_with(tmp_path, events=EVENTS + EXCLUDED_EVENTS)
    sources = load_sources(project, connect(project))
    point = pd.Timestamp(AS_OF).to_pydatetime()
    scanned = compute_metrics(project, sources, AS_OF).values
    scanned_report = sources.report(point)
    with sources.row_summaries(point):
        summarized = compute_metrics(project, sources, AS_OF).values
        summarized_report = sources.report(point)
    pd.testing.assert_frame_equal(summarized, scanned)
    assert summarized_report == scanned_report
    days = summarized.loc[["a1", "a2", "a3"], "days_since_event"].to_numpy()
    np.testing.assert_array_equal(days, [1, 22, np.nan])
    events = {report.source: report for report in summarized_report}["events"]
    assert events.rows_read == 12
    assert events.excluded == {
        "after_as_of:timestamp": 2,
        "missing_value:account_id": 1,
        "missing_value:timestamp": 1,
        "unknown_account:account_id": 1,
    }
    # Leaving the block drops the summary tables.
    tables = sources.con.con.execute("SHOW TABLES").fetchall()
    assert not [name for (name,) in tables if name.startswith("_summary_")]


def test_project_loads_from_disk(tmp_path):
    project_with(tmp_path)
    assert load_project(tmp_path).config.name == "metrics"


def test_filter_the_engine_rejects_names_the_metric(tmp_path):
    project = project_with(tmp_path)
    # Arithmetic on a text column passes the config checks but not the engine.
    project.config.metrics["logins_28d"].where = "event_type * 2 > 1"
    with pytest.raises(
        MetricError,
        match=r"metric 'logins_28d': the filter 'event_type \* 2 > 1' cannot be "
        r"applied to the columns of source 'events': .*; "
        r"fix metrics\.logins_28d\.where",
    ):
        metrics_of(project)


@pytest.mark.parametrize(
    ("where", "gives", "comparison"),
    [
        ("user", "text", "user == 'value'"),
        ("value", "numbers", "value > 0"),
        ("value + 1", "numbers", "value + 1 > 0"),
        ("timestamp", "times", "timestamp is not None"),
        ("2", "the constant 2", "2 > 0"),
    ],
)
def test_non_boolean_filter_names_metric(tmp_path, where, gives, comparison):
    project = project_with(tmp_path)
    # The project file's checks reject these filters; the engine must too.
    project.config.metrics["logins_28d"].where = where
    with pytest.raises(MetricError) as caught:
        metrics_of(project)
    assert str(caught.value) == (
        f"metric 'logins_28d': the filter {where!r} gives {gives} instead of true "
        f"or false, so it cannot select rows; write a comparison, such as "
        f"{comparison}, in metrics.logins_28d.where"
    )


def test_csm_notes_metric_without_notes(tmp_path):
    # The operational store has no note yet, so the source has no rows and its
    # account ids have no type of their own.
    metrics = {
        **METRICS,
        "csm_sentiment": {
            "type": "latest",
            "source": "csm_notes",
            "column": "sentiment",
            "window": "90d",
        },
    }
    project = project_with(tmp_path, metrics=metrics)
    values = compute_metrics(project, open_engine(project).sources, AS_OF).values
    assert values["csm_sentiment"].isna().all()
    assert values.loc["a1", "logins_28d"] == 2

    # A backfill joins the rows' account ids with the accounts' in its sweep.
    from healthscore.monitoring.backfill import backfill

    dates = [date(2024, 3, 18), date(2024, 3, 25), AS_OF]
    result = backfill(project, dates)
    assert result.dates == dates
    assert result.accounts == {day: 3 for day in dates}


def test_metric_on_missing_column_fails(tmp_path):
    from typer.testing import CliRunner

    from healthscore.cli import app

    config = minimal_config()
    config["metrics"]["value_sum"] = {
        "type": "sum",
        "source": "events",
        "column": "value",
        "window": "28d",
    }
    events = "account_id,timestamp\na1,2024-03-01\n"
    project = write_project(
        tmp_path, config, {"accounts.csv": ACCOUNTS_CSV, "events.csv": events}
    )
    expected = (
        "metric 'value_sum' reads column 'value', which source 'events' does not "
        "have (it has account_id, timestamp)"
    )
    commands = [
        ["score", "--as-of", "2024-03-10"],
        ["validate", "--data"],
        ["backfill", "--from", "2024-03-03", "--to", "2024-03-10"],
    ]
    for command in commands:
        result = CliRunner().invoke(app, [*command, "--project", str(project.root)])
        assert result.exit_code == 1, result.output
        assert expected in " ".join(result.output.split())
        assert "Traceback" not in result.output


def test_parquet_scan_summary_matches_scans(tmp_path, monkeypatch):
    """Parquet rows without checks take their summary from the metric scan."""
    import io

    from healthscore.sources import SourceSet

    # A row of an account not in the accounts file, and rows after the point. No
    # row misses a value, so the Parquet view has no row checks.
    rows = EVENTS + (
        "a9,2024-03-31 12:00:00,login,u1,1\na2,2024-05-01 00:00:00,login,u1,1\n"
    )
    frame = pd.read_csv(io.StringIO(rows))
    frame["timestamp"] = pd.to_datetime(frame["timestamp"], format="%Y-%m-%d %H:%M:%S")
    project = project_with(tmp_path)
    frame.to_parquet(tmp_path / "events.parquet", index=False)
    settings = project.config.sources["events"]
    project.config.sources["events"] = settings.model_copy(
        update={"path": "events.parquet"}
    )
    built = []
    original = SourceSet.add_scan_summary

    def spy(self, name, point, lower, scanned):
        built.append(name)
        original(self, name, point, lower, scanned)

    monkeypatch.setattr(SourceSet, "add_scan_summary", spy)
    sources = load_sources(project, connect(project))
    point = pd.Timestamp(AS_OF).to_pydatetime()
    scanned = compute_metrics(project, sources, AS_OF).values
    scanned_report = sources.report(point)
    with sources.row_summaries(point):
        summarized = compute_metrics(project, sources, AS_OF).values
        summarized_report = sources.report(point)

    assert built == ["events"]
    pd.testing.assert_frame_equal(summarized, scanned)
    assert summarized_report == scanned_report
    for metric, expected in EXPECTED.items():
        actual = summarized.loc[["a1", "a2", "a3"], metric].astype(float).to_numpy()
        np.testing.assert_allclose(actual, expected, rtol=1e-12, equal_nan=True)
    events = {report.source: report for report in summarized_report}["events"]
    assert events.rows_read == 10
    assert events.excluded == {
        "after_as_of:timestamp": 2,
        "unknown_account:account_id": 1,
    }
