"""Sentiment and NPS metrics: windows, shares, segments, sweep, checks and accuracy.

Expected sentiment values come from calling vaderSentiment directly on the texts that
a window should contain, so the tests check which rows reach the metric and how they
are combined, independently of the engine path. The accuracy test compares VADER's
compound score with the human ratings that Hutto and Gilbert (ICWSM 2014) collected.
"""

from __future__ import annotations

import json
import math
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import duckdb
import numpy as np
import pandas as pd
import pytest
from duckdb.sqltypes import DOUBLE, VARCHAR
from scipy.stats import pearsonr
from typer.testing import CliRunner
from vaderSentiment.vaderSentiment import SentimentIntensityAnalyzer

from healthscore.cli import app
from healthscore.config import ConfigError, Project
from healthscore.config.models import NpsMetric, parse_duration
from healthscore.engine import Engine
from healthscore.metrics import compute_metrics
from healthscore.metrics.sentiment import ALL_GROUPS, NO_GROUP, nps_by_group
from healthscore.monitoring.backfill import backfill_dates, sweep_metrics
from healthscore.monitoring.notes import add_note
from healthscore.pipeline import open_engine
from healthscore.report.methodology import describe_metric
from healthscore.sources import as_of_point
from healthscore.sources.text import (
    COMPOUND_FUNCTION,
    VaderScorer,
    register_functions,
    score_columns,
)
from healthscore.store import StateStore
from project_factory import ACCOUNTS_CSV, minimal_config, write_project

ANALYZER = SentimentIntensityAnalyzer()
AS_OF = date(2024, 3, 10)

LOVE = "I love this product, great support!"
TERRIBLE = "Terrible outage, very angry."
NEUTRAL = "The invoice arrived."
FRUSTRATED = "We are frustrated and disappointed."
THANKS = "Thanks, the fix works."
BROKEN = "The export is broken and awful."

# As of 2024-03-10 a 28-day window is [2024-02-11 00:00, 2024-03-10 00:00).
TICKETS = [
    {"account_id": "a1", "timestamp": "2024-02-10T23:00:00", "text": FRUSTRATED},
    {"account_id": "a1", "timestamp": "2024-02-11T00:00:00", "text": LOVE},
    {
        "account_id": "a1",
        "timestamp": "2024-03-01T10:00:00",
        "text": TERRIBLE,
        "priority": "high",
    },
    {"account_id": "a1", "timestamp": "2024-03-05T10:00:00", "text": NEUTRAL},
    {"account_id": "a1", "timestamp": "2024-03-06T10:00:00", "text": "   "},
    {"account_id": "a1", "timestamp": "2024-03-10T00:00:00", "text": THANKS},
    {
        "account_id": "a2",
        "timestamp": "2024-03-02T10:00:00",
        "text": BROKEN,
        "priority": "high",
    },
    {"account_id": "a2", "timestamp": "2024-03-03T10:00:00", "text": None},
]

# a1 in the window: promoters 10, 9, 10; passive 8; detractors 6, 0; plus a CSAT
# response, a score of 11 and a response before the window, none of which count.
SURVEYS = """account_id,timestamp,score,survey_type
a1,2024-01-01T09:00:00,3,nps
a1,2024-02-20T09:00:00,10,nps
a1,2024-02-21T09:00:00,9,nps
a1,2024-02-22T09:00:00,10,nps
a1,2024-02-23T09:00:00,8,nps
a1,2024-02-24T09:00:00,6,nps
a1,2024-02-25T09:00:00,0,nps
a1,2024-02-26T09:00:00,2,csat
a1,2024-02-27T09:00:00,11,nps
a2,2024-03-01T09:00:00,7,nps
a2,2024-03-02T09:00:00,8,nps
a2,2024-03-03T09:00:00,,nps
"""

METRICS: dict[str, Any] = {
    "tone_28d": {"type": "sentiment", "source": "tickets", "column": "text",
                 "window": "28d"},
    "negative_28d": {"type": "sentiment", "source": "tickets", "column": "text",
                     "statistic": "negative_share", "window": "28d"},
    "tone_right": {"type": "sentiment", "source": "tickets", "column": "text",
                   "window": {"length": "28d", "closed": "right"}},
    "tone_high": {"type": "sentiment", "source": "tickets", "column": "text",
                  "where": "priority == 'high'", "window": "28d"},
    "tone_ever": {"type": "sentiment", "source": "tickets", "column": "text"},
    "negative_ever": {"type": "sentiment", "source": "tickets", "column": "text",
                      "statistic": "negative_share"},
    "nps_28d": {"type": "nps", "source": "surveys", "where": "survey_type == 'nps'",
                "window": "28d"},
}  # fmt: skip


def compound(text: str) -> float:
    return float(ANALYZER.polarity_scores(text)["compound"])


def mean_compound(*texts: str) -> float:
    return sum(compound(text) for text in texts) / len(texts)


def _config(metrics: dict[str, Any] | None = None) -> dict[str, Any]:
    config = minimal_config()
    config["sources"]["tickets"] = {
        "kind": "tickets",
        "path": "tickets.jsonl",
    }
    config["sources"]["surveys"] = {"kind": "surveys", "path": "surveys.csv"}
    config["metrics"].update(METRICS if metrics is None else metrics)
    return config


def _write(root: Path, config: dict[str, Any]) -> Project:
    files: dict[str, Any] = {
        "accounts.csv": ACCOUNTS_CSV,
        "events.csv": "account_id,timestamp\n",
        "tickets.jsonl": TICKETS,
        "surveys.csv": SURVEYS,
    }
    return write_project(root, config, files)


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Project:
    return _write(tmp_path_factory.mktemp("sentiment"), _config())


@pytest.fixture(scope="module")
def engine(project: Project) -> Engine:
    return Engine.open(project)


@pytest.fixture(scope="module")
def values(project: Project, engine: Engine) -> pd.DataFrame:
    return compute_metrics(project, engine.sources, AS_OF).values


# Sentiment over a window


def test_compound_mean_reads_window_texts(values):
    # LOVE is at the window start (in), FRUSTRATED before it and THANKS at the
    # as-of point (both out); the blank text is not a text.
    expected = mean_compound(LOVE, TERRIBLE, NEUTRAL)

    assert values.loc["a1", "tone_28d"] == pytest.approx(expected, abs=1e-12)
    assert values.loc["a2", "tone_28d"] == pytest.approx(compound(BROKEN))
    assert math.isnan(values.loc["a3", "tone_28d"])


def test_compound_mean_by_hand(values):
    # vaderSentiment 3.3.2 scores LOVE 0.906, TERRIBLE -0.7713 and NEUTRAL 0.0.
    assert values.loc["a1", "tone_28d"] == pytest.approx((0.906 - 0.7713 + 0.0) / 3)


def test_negative_share_counts_texts(values):
    assert compound(TERRIBLE) <= -0.05
    assert compound(NEUTRAL) > -0.05
    assert compound(LOVE) > -0.05

    # a1: TERRIBLE of LOVE, TERRIBLE, NEUTRAL; a2: BROKEN, its missing text left out.
    assert values.loc["a1", "negative_28d"] == pytest.approx(1 / 3)
    assert values.loc["a2", "negative_28d"] == 1.0
    assert math.isnan(values.loc["a3", "negative_28d"])


def test_right_closed_window_moves_edges(values):
    # (2024-02-11 00:00, 2024-03-10 00:00): LOVE drops out, and THANKS, stamped at
    # the as-of point, stays out as in every window.
    expected = mean_compound(TERRIBLE, NEUTRAL)

    assert values.loc["a1", "tone_right"] == pytest.approx(expected, abs=1e-12)


def test_where_filters_texts(values):
    assert values.loc["a1", "tone_high"] == pytest.approx(compound(TERRIBLE))
    assert values.loc["a2", "tone_high"] == pytest.approx(compound(BROKEN))


def test_no_window_reads_all_earlier_texts(values):
    expected = mean_compound(FRUSTRATED, LOVE, TERRIBLE, NEUTRAL)

    assert values.loc["a1", "tone_ever"] == pytest.approx(expected, abs=1e-12)
    assert values.loc["a1", "negative_ever"] == pytest.approx(2 / 4)


def test_later_rows_change_nothing(tmp_path):
    later = [
        # At the as-of point itself, which no window reads, right-closed or not.
        {"account_id": "a2", "timestamp": "2024-03-10T00:00:00", "text": LOVE},
        {"account_id": "a1", "timestamp": "2024-03-10T00:00:01", "text": BROKEN},
        {"account_id": "a3", "timestamp": "2024-04-01T00:00:00", "text": LOVE},
    ]
    project = write_project(
        tmp_path / "later",
        _config(),
        {
            "accounts.csv": ACCOUNTS_CSV,
            "events.csv": "account_id,timestamp\n",
            "tickets.jsonl": TICKETS + later,
            "surveys.csv": SURVEYS + "a3,2024-03-11T00:00:00,0,nps\n",
        },
    )
    base = _write(tmp_path / "base", _config())
    got = compute_metrics(project, Engine.open(project).sources, AS_OF).values
    expected = compute_metrics(base, Engine.open(base).sources, AS_OF).values

    pd.testing.assert_frame_equal(got, expected)


def test_each_text_scored_once(project):
    engine = Engine.open(project)
    for day in (date(2024, 3, 1), AS_OF, date(2024, 3, 20)):
        compute_metrics(project, engine.sources, day)
    list(sweep_metrics(project, engine.sources, [date(2024, 3, 5), AS_OF]))

    scorer = engine.sources.text_scorer
    assert scorer is not None
    texts = {row["text"] for row in TICKETS if row["text"] and row["text"].strip()}
    assert scorer.texts_scored == len(texts)


# NPS


def test_nps_three_promoters_two_detractors(values):
    # 3 promoters, 1 passive, 2 detractors: 100 * (3 - 2) / 6.
    assert values.loc["a1", "nps_28d"] == pytest.approx(16.67, abs=0.005)
    assert values.loc["a1", "nps_28d"] == pytest.approx(100 / 6)


def test_nps_all_passives_is_zero(values):
    assert values.loc["a2", "nps_28d"] == 0.0


def test_nps_without_answers_is_missing(values):
    assert math.isnan(values.loc["a3", "nps_28d"])


@pytest.mark.parametrize(
    ("scores", "expected"),
    [
        ("10 10 10", 100.0),
        ("0 6 6", -100.0),
        ("9 8 7 6", 0.0),
        ("9 6.5 5", 0.0),
        ("10 9 0 7 8", 20.0),
    ],
)
def test_nps_categories(tmp_path, scores, expected):
    rows = "".join(
        f"a1,2024-03-0{day + 1}T08:00:00,{score},nps\n"
        for day, score in enumerate(scores.split())
    )
    config = _config({"nps_28d": METRICS["nps_28d"]})
    project = write_project(
        tmp_path,
        config,
        {
            "accounts.csv": ACCOUNTS_CSV,
            "events.csv": "account_id,timestamp\n",
            "tickets.jsonl": TICKETS,
            "surveys.csv": "account_id,timestamp,score,survey_type\n" + rows,
        },
    )
    table = compute_metrics(project, Engine.open(project).sources, AS_OF)

    assert table.values.loc["a1", "nps_28d"] == pytest.approx(expected)


def test_nps_by_segment(project, engine):
    accounts = engine.sources.accounts()
    point = as_of_point(project, AS_OF)
    metric = project.config.metrics["nps_28d"]
    assert isinstance(metric, NpsMetric)

    frame = nps_by_group(engine.sources, metric, accounts, point).set_index("group")

    assert list(frame.index) == ["enterprise", "smb", ALL_GROUPS]
    assert frame.loc["enterprise", "responses"] == 6
    assert frame.loc["enterprise", "nps"] == pytest.approx(100 / 6)
    # smb: a2's two passives and a3 without responses.
    assert frame.loc["smb", "accounts"] == 2
    assert frame.loc["smb", "responses"] == 2
    assert frame.loc["smb", "nps"] == 0.0
    # All: 3 promoters, 3 passives, 2 detractors, so 100 * (3 - 2) / 8.
    assert frame.loc[ALL_GROUPS, "promoters"] == 3
    assert frame.loc[ALL_GROUPS, "passives"] == 3
    assert frame.loc[ALL_GROUPS, "detractors"] == 2
    assert frame.loc[ALL_GROUPS, "nps"] == pytest.approx(12.5)
    assert frame.loc[ALL_GROUPS, "out_of_range"] == 1


def test_nps_by_group_without_answers(project, engine):
    accounts = engine.sources.accounts()
    accounts.loc["a1", "segment"] = None
    metric = project.config.metrics["nps_28d"]
    assert isinstance(metric, NpsMetric)
    point = as_of_point(project, date(2024, 1, 1))

    frame = nps_by_group(engine.sources, metric, accounts, point).set_index("group")

    assert list(frame.index) == [NO_GROUP, "smb", ALL_GROUPS]
    assert (frame["responses"] == 0).all()
    assert frame["nps"].isna().all()


def test_nps_by_unknown_column(project, engine):
    metric = project.config.metrics["nps_28d"]
    assert isinstance(metric, NpsMetric)
    point = as_of_point(project, AS_OF)

    with pytest.raises(ValueError, match="unknown account column 'region'"):
        nps_by_group(engine.sources, metric, engine.sources.accounts(), point, "region")


# Per-row score columns


def _column_values(sql: str, column: str, values: list[Any], kind: str) -> list[Any]:
    con = duckdb.connect()
    # The compound score of a text is the number it spells, so edges can be tested.
    con.create_function(
        COMPOUND_FUNCTION,
        lambda text, source, column: float(text),
        [VARCHAR, VARCHAR, VARCHAR],
        DOUBLE,
    )
    con.execute(f"CREATE TABLE rows ({column} {kind})")
    con.executemany("INSERT INTO rows VALUES (?)", [[value] for value in values])
    return [row[0] for row in con.execute(f"SELECT {sql} FROM rows").fetchall()]


def test_negative_threshold_is_inclusive(project):
    sql = score_columns(project.config, "tickets")["text@negative"]
    texts = ["-0.05", "-0.0499", "-0.9", "0.3", None]

    values = _column_values(sql, "text", texts, "VARCHAR")

    assert values == [1.0, 0.0, 1.0, 0.0, None]


def test_nps_category_edges(project):
    sql = score_columns(project.config, "surveys")["score@nps"]
    scores = [-1, 0, 6, 6.5, 7, 8.99, 9, 10, 10.5, float("nan"), None]

    values = _column_values(sql, "score", scores, "DOUBLE")

    assert values == [None, -100, -100, 0, 0, 0, 100, 100, None, None, None]


# The multi-date sweep of the backfill


SWEEP_TEXTS = [LOVE, TERRIBLE, NEUTRAL, FRUSTRATED, THANKS, BROKEN, "", None]
SWEEP_METRICS: dict[str, Any] = {
    **METRICS,
    "negative_right_14d": {"type": "sentiment", "source": "tickets", "column": "text",
                           "statistic": "negative_share",
                           "window": {"length": "14d", "closed": "right"}},
    "nps_ever": {"type": "nps", "source": "surveys"},
    "tone_change": {"type": "change", "of": "tone_28d", "mode": "difference"},
    "nps_change": {"type": "change", "of": "nps_28d", "mode": "difference"},
}  # fmt: skip


def _sweep_files() -> dict[str, Any]:
    generator = np.random.default_rng(5)
    start = datetime(2024, 1, 1)
    tickets, responses = [], ["account_id,timestamp,score,survey_type"]
    for _ in range(400):
        account = f"a{generator.integers(1, 4)}"
        # A third of the rows fall exactly at midnight, on a window edge.
        seconds = 0 if generator.random() < 0.33 else int(generator.integers(86400))
        moment = start + timedelta(days=int(generator.integers(120)), seconds=seconds)
        text = SWEEP_TEXTS[generator.integers(len(SWEEP_TEXTS))]
        priority = "high" if generator.random() < 0.3 else "low"
        tickets.append(
            {
                "account_id": account,
                "timestamp": moment.isoformat(),
                "text": text,
                "priority": priority,
            }
        )
        score = generator.integers(-1, 12)
        kind = "nps" if generator.random() < 0.85 else "csat"
        responses.append(
            f"{account},{moment.isoformat()},{'' if score < 0 else score},{kind}"
        )
    return {
        "accounts.csv": ACCOUNTS_CSV,
        "events.csv": "account_id,timestamp\n",
        "tickets.jsonl": tickets,
        "surveys.csv": "\n".join(responses) + "\n",
    }


@pytest.mark.parametrize("point_rule", ["start_of_day", "end_of_day"])
def test_sweep_equals_per_date(tmp_path, point_rule):
    config = _config(SWEEP_METRICS)
    config["as_of_point"] = point_rule
    project = write_project(tmp_path, config, _sweep_files())
    engine = Engine.open(project)
    dates = backfill_dates(date(2024, 1, 20), date(2024, 5, 5), parse_duration("6d"))

    swept = list(sweep_metrics(project, engine.sources, dates))

    assert [table.as_of for table in swept] == dates
    filled = pd.concat([table.values for table in swept]).notna().sum()
    assert (filled > 0).all(), filled[filled == 0]
    for table in swept:
        expected = compute_metrics(project, engine.sources, table.as_of).values
        assert list(table.values.columns) == list(expected.columns)
        for column in expected.columns:
            np.testing.assert_allclose(
                table.values[column].to_numpy("float64"),
                expected[column].to_numpy("float64"),
                rtol=1e-9,
                atol=1e-12,
                err_msg=f"{column} as of {table.as_of}",
            )


# CSM notes stored by the product


def test_sentiment_of_csm_notes(tmp_path):
    metrics = {
        "note_tone_90d": {"type": "sentiment", "source": "csm_notes",
                          "column": "text", "window": "90d"},
        "note_negative_90d": {"type": "sentiment", "source": "csm_notes",
                              "column": "text", "statistic": "negative_share",
                              "window": "90d"},
    }  # fmt: skip
    project = _write(tmp_path, _config(metrics))
    now = datetime(2024, 3, 30, 12, 0, tzinfo=UTC)
    with StateStore.open(project.config.store.state, project.root) as state:
        # A note is seen from the day after its date; the one of 2024-03-20 is later
        # than the as-of date.
        for day, text in [(1, LOVE), (9, FRUSTRATED), (20, THANKS)]:
            noted = date(2024, 3, day)
            add_note(state, "a1", author="ana", text=text, noted_on=noted, now=now)

    engine = open_engine(project)
    values = compute_metrics(project, engine.sources, date(2024, 3, 10)).values

    expected = mean_compound(LOVE, FRUSTRATED)
    assert values.loc["a1", "note_tone_90d"] == pytest.approx(expected, abs=1e-12)
    assert values.loc["a1", "note_negative_90d"] == pytest.approx(1 / 2)
    assert math.isnan(values.loc["a2", "note_tone_90d"])


# Settings checks


def _issues(tmp_path: Path, metrics: dict[str, Any]) -> dict[str, Any]:
    with pytest.raises(ConfigError) as caught:
        _write(tmp_path, _config(metrics))
    return {issue.key: issue for issue in caught.value.issues}


def test_sentiment_needs_text_column(tmp_path):
    metrics = {"tone": {"type": "sentiment", "source": "surveys", "column": "score"}}

    issue = _issues(tmp_path, metrics)["metrics.tone.column"]

    assert "column 'score' of source 'surveys' contains numbers" in issue.message
    assert "comment" in issue.message
    assert issue.line is not None
    assert issue.file.endswith("healthscore.yml")


def test_nps_needs_numeric_column(tmp_path):
    metrics = {"nps": {"type": "nps", "source": "surveys", "column": "comment"}}

    issue = _issues(tmp_path, metrics)["metrics.nps.column"]

    assert "contains text, but nps needs numeric 0-10 scores" in issue.message
    assert "use a column of type number: score" in issue.message


def test_statistic_typo_suggests_name(tmp_path):
    metrics = {"tone": {"type": "sentiment", "source": "tickets", "column": "text",
                        "statistic": "negative_shares"}}  # fmt: skip

    issue = _issues(tmp_path, metrics)["metrics.tone.statistic"]

    assert "'compound_mean' or 'negative_share'" in issue.message
    assert issue.suggestion == "negative_share"


def test_metric_type_typo_suggests_type(tmp_path):
    metrics = {"tone": {"type": "sentimnet", "source": "tickets", "column": "text"}}

    issue = _issues(tmp_path, metrics)["metrics.tone"]

    assert issue.suggestion == "sentiment"


def test_sentiment_unknown_column(tmp_path):
    metrics = {"tone": {"type": "sentiment", "source": "tickets", "column": "txet"}}

    issue = _issues(tmp_path, metrics)["metrics.tone.column"]

    assert "unknown column 'txet'" in issue.message
    assert issue.suggestion == "text"


def test_nps_column_defaults_to_score(tmp_path):
    project = _write(tmp_path, _config({"nps": {"type": "nps", "source": "surveys"}}))

    metric = project.config.metrics["nps"]

    assert isinstance(metric, NpsMetric)
    assert metric.column == "score"


# The command line


def test_cli_nps_json(project):
    runner = CliRunner()
    arguments = ["nps", "--as-of", "2024-03-10", "--json"]

    result = runner.invoke(app, [*arguments, "--project", str(project.root)])

    assert result.exit_code == 0, result.output
    document = json.loads(result.stdout)
    assert document["metric"] == "nps_28d"
    groups = {group["group"]: group for group in document["groups"]}
    assert groups["enterprise"]["nps"] == pytest.approx(100 / 6)
    assert groups["smb"]["responses"] == 2
    assert groups[ALL_GROUPS]["nps"] == pytest.approx(12.5)


def test_cli_nps_table_warns_out_of_range(project):
    runner = CliRunner(env={"COLUMNS": "200", "NO_COLOR": "1"})
    arguments = ["nps", "--as-of", "2024-03-10", "--by", "owner"]

    result = runner.invoke(app, [*arguments, "--project", str(project.root)])

    assert result.exit_code == 0, result.output
    lines = [line.split() for line in result.stdout.splitlines()]
    assert ["alice", "1", "6", "3", "1", "2", "16.7"] in lines
    assert ["bob", "2", "2", "0", "2", "0", "0.0"] in lines
    assert "1 row of surveys in the window has a score outside 0-10" in result.stderr


def test_cli_nps_without_metric(tmp_path):
    project = _write(tmp_path, _config({"tone": METRICS["tone_28d"]}))
    runner = CliRunner()

    result = runner.invoke(
        app, ["nps", "--as-of", "2024-03-10", "--project", str(project.root)]
    )

    assert result.exit_code == 1
    assert "the project has no nps metric" in result.stderr


def test_cli_nps_needs_choice_of_metric(tmp_path):
    metrics = {"first": METRICS["nps_28d"], "second": METRICS["nps_28d"]}
    project = _write(tmp_path, _config(metrics))
    runner = CliRunner()
    arguments = ["nps", "--as-of", "2024-03-10", "--project", str(project.root)]

    ambiguous = runner.invoke(app, arguments)
    chosen = runner.invoke(app, [*arguments, "--metric", "second", "--json"])

    assert ambiguous.exit_code == 1
    assert "choose one with --metric" in ambiguous.stderr
    assert chosen.exit_code == 0, chosen.output
    assert json.loads(chosen.stdout)["metric"] == "second"


TEXT_COMMANDS = [
    ["score", "--as-of", "2024-03-10"],
    ["metrics", "--as-of", "2024-03-10", "--output", "{root}/values.csv"],
    ["validate", "--data"],
    ["backfill", "--from", "2024-03-03", "--to", "2024-03-10"],
    ["nps", "--as-of", "2024-03-10", "--metric", "nps_28d"],
]


@pytest.mark.parametrize("command", TEXT_COMMANDS, ids=lambda command: command[0])
def test_text_metrics_on_absent_columns(tmp_path, command):
    # Text and score columns are optional, so the project file is valid while the
    # files lack them.
    metrics = {
        "tone": METRICS["tone_28d"],
        "comment_tone": {"type": "sentiment", "source": "surveys",
                         "column": "comment", "window": "28d"},
        "satisfaction_nps": {"type": "nps", "source": "tickets",
                             "column": "satisfaction", "window": "28d"},
        "nps_28d": METRICS["nps_28d"],
    }  # fmt: skip
    project = _write(tmp_path, _config(metrics))
    (tmp_path / "tickets.jsonl").write_text(
        '{"account_id": "a1", "timestamp": "2024-03-01T10:00:00"}\n'
    )
    arguments = [part.format(root=tmp_path) for part in command]

    result = CliRunner().invoke(app, [*arguments, "--project", str(project.root)])

    output = " ".join(result.output.split())
    assert result.exit_code == 1, output
    assert "Traceback" not in output
    assert "Binder Error" not in output
    assert (
        "metric 'tone' reads column 'text', which source 'tickets' does not have "
        "(it has account_id, timestamp); add the column to the source's files, map "
        "it in sources.tickets.columns, or fix metrics.tone.column"
    ) in output
    assert (
        "metric 'comment_tone' reads column 'comment', which source 'surveys' does "
        "not have (it has account_id, timestamp, score, survey_type)"
    ) in output
    assert (
        "metric 'satisfaction_nps' reads column 'satisfaction', which source "
        "'tickets' does not have"
    ) in output


# Report and scorer


def test_methodology_describes_metrics(project):
    point = as_of_point(project, AS_OF)
    metrics = project.config.metrics

    tone = describe_metric("tone_28d", metrics["tone_28d"], point, metrics)
    share = describe_metric("negative_28d", metrics["negative_28d"], point, metrics)
    nps = describe_metric("nps_28d", metrics["nps_28d"], point, metrics)
    ever = describe_metric("tone_ever", metrics["tone_ever"], point, metrics)

    assert "VADER compound score" in tone.definition
    assert "-0.05 or less" in share.definition
    assert "Promoters (score 9-10) minus detractors (0-6)" in nps.definition
    assert ever.window is not None
    assert ever.window.startswith("all rows before the as-of point")


def test_scorer_blank_text_is_missing():
    scorer = VaderScorer()

    assert scorer.compound(None) is None
    assert scorer.compound(" \t\n") is None
    assert scorer.compound(LOVE) == compound(LOVE)
    assert scorer.compound(LOVE) == compound(LOVE)
    assert scorer.texts_scored == 1


def test_scorer_cache_limit():
    scorer = VaderScorer(cache_size=1)

    for _ in range(2):
        scorer.compound(LOVE)
        scorer.compound(TERRIBLE)

    # LOVE is kept; TERRIBLE finds the cache full and is scored each time.
    assert scorer.texts_scored == 3


# Accuracy against human ratings


def _ground_truth(path: Path) -> pd.DataFrame:
    """Read `id <TAB> mean rating <TAB> text` rows (CRLF line ends, no header)."""
    rows = []
    with path.open(encoding="utf-8", newline="") as handle:
        for line in handle:
            line = line.rstrip("\r\n")
            if line:
                _, rating, text = line.split("\t", 2)
                rows.append((float(rating), text))
    return pd.DataFrame(rows, columns=["rating", "text"])


def _engine_compound(texts: pd.Series) -> np.ndarray:
    """Score texts through the DuckDB function that the metrics use."""
    con = duckdb.connect()
    register_functions(con)
    con.register("texts", pd.DataFrame({"text": texts}))
    query = f"SELECT {COMPOUND_FUNCTION}(text, 'texts', 'text') FROM texts"
    return con.execute(query).df().iloc[:, 0].to_numpy("float64")


@pytest.mark.parametrize(
    ("file", "rows", "minimum"),
    [
        # Hutto & Gilbert (ICWSM 2014) report r = 0.881 on the tweets.
        ("tweets_GroundTruth.txt", 4200, 0.87),
        # They report r = 0.565 on the Amazon review snippets.
        ("amazonReviewSnippets_GroundTruth.txt", 3708, 0.55),
    ],
)
def test_compound_correlates_with_human_ratings(require_shared, file, rows, minimum):
    path = require_shared(f"vader-sentiment-groundtruth/{file}")
    truth = _ground_truth(path)

    scores = _engine_compound(truth["text"])
    correlation = pearsonr(scores, truth["rating"]).statistic

    assert len(truth) == rows
    assert not np.isnan(scores).any()
    assert correlation >= minimum


def test_nps_table_fits_80_columns():
    from io import StringIO

    from rich.console import Console

    from healthscore.cli.surveys import nps_table

    frame = pd.DataFrame(
        {
            "group": ["mid_market"],
            "accounts": [36],
            "responses": [263],
            "promoters": [44],
            "passives": [85],
            "detractors": [134],
            "nps": [100 * (44 - 134) / 263],
        }
    )
    output = StringIO()
    Console(file=output, width=80).print(nps_table(frame, "segment"))
    lines = [line.split() for line in output.getvalue().splitlines()]

    assert ["mid_market", "36", "263", "44", "85", "134", "-34.2"] in lines
