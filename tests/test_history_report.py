"""Score history in the report, and the guard numbers after `healthscore score`."""

from __future__ import annotations

import json
import math
import shlex
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from healthscore.cli import app
from healthscore.cli.history import _limited_dates, _trend_line, rescore_command
from healthscore.config import Project
from healthscore.monitoring.alerts import RaisedAlert
from healthscore.monitoring.outbox import NewAlert, add_alerts
from healthscore.pipeline import score, snapshot_store
from healthscore.report import from_snapshot, render_report
from healthscore.report.history import account_history_chart
from healthscore.report.outcomes import churn_summary
from healthscore.store.state import StateStore
from project_factory import ACCOUNTS_CSV, minimal_config, write_project

DATES = [date(2024, 3, 1), date(2024, 3, 8), date(2024, 3, 15)]

# Events per account in the 7 days before each date: a1 grows, a2 fades, a3 is flat.
DAILY = {"a1": [1, 4, 9], "a2": [9, 5, 1], "a3": [3, 3, 3]}


def _events_csv() -> str:
    lines = ["account_id,timestamp,event_type"]
    for account, counts in DAILY.items():
        for as_of, count in zip(DATES, counts, strict=True):
            for index in range(count):
                stamp = datetime(as_of.year, as_of.month, as_of.day) - timedelta(
                    days=1 + index % 6, hours=3
                )
                lines.append(f"{account},{stamp.isoformat(' ')},login")
    return "\n".join(lines) + "\n"


def _project(root: Path) -> Project:
    config = minimal_config()
    config["metrics"]["events_28d"]["window"] = "7d"
    files = {"accounts.csv": ACCOUNTS_CSV, "events.csv": _events_csv()}
    return write_project(root, config, files)


def _report(project: Project, as_of: date) -> str:
    accounts = pd.DataFrame(index=pd.Index(["a1", "a2", "a3"], name="account_id"))
    scored = from_snapshot(project, as_of, accounts)
    churn = churn_summary(project, None, scored.scores, as_of, as_of)
    return render_report(scored, churn, generated_at=datetime(2024, 4, 1))


def _plot_data(html: str, div_id: str) -> list[dict[str, Any]]:
    """The traces that the page's script passes to Plotly.newPlot for `div_id`."""
    start = html.index(f'"{div_id}",', html.index("Plotly.newPlot"))
    start = html.index("[", start)
    data, _ = json.JSONDecoder().raw_decode(html[start:])
    return data  # type: ignore[no-any-return]


@pytest.fixture(scope="module")
def history_project(tmp_path_factory: pytest.TempPathFactory) -> Project:
    project = _project(tmp_path_factory.mktemp("history"))
    for as_of in DATES:
        score(project, as_of)
    return project


def _add_alert(project: Project, account: str, as_of: date, title: str) -> None:
    alert = RaisedAlert(
        rule="drop",
        kind="score_drop",
        account_id=account,
        as_of=as_of,
        severity="warning",
        owner=None,
        escalate_to=None,
        dedupe_key=f"drop:{account}:{as_of.isoformat()}",
        title=title,
        message=title,
        details={},
    )
    with StateStore.open(project.config.store.state, project.root) as state:
        add_alerts(state, [NewAlert(alert, ())], now=datetime(2024, 4, 1, tzinfo=UTC))


def test_band_history_counts(history_project: Project) -> None:
    html = _report(history_project, DATES[-1])
    assert '<h2 id="history-heading">Score history</h2>' in html
    store = snapshot_store(history_project)
    traces = {trace["name"]: trace for trace in _plot_data(html, "band-history")}
    labels = {
        band.name: band.label or band.name for band in history_project.config.bands
    }
    expected: dict[str, list[int]] = {}
    for as_of in DATES:
        counts = store.read(as_of, "scores")["band"].value_counts()
        for band, count in counts.items():
            expected.setdefault(labels[str(band)], [0] * len(DATES))
            expected[labels[str(band)]][DATES.index(as_of)] = int(count)
    assert set(traces) == set(expected)
    for label, counts in expected.items():
        assert traces[label]["x"] == [day.isoformat() for day in DATES], label
        assert traces[label]["y"] == counts, label
    assert len(expected) > 1


def test_history_stops_at_report_date(history_project: Project) -> None:
    html = _report(history_project, DATES[1])
    for trace in _plot_data(html, "band-history"):
        assert trace["x"] == [day.isoformat() for day in DATES[:2]]


def test_single_date_has_no_history(tmp_path: Path) -> None:
    project = _project(tmp_path)
    score(project, DATES[0])
    html = _report(project, DATES[0])
    assert "Score history" not in html
    assert "band-history" not in html
    assert "Score stability" not in html


def test_account_history_marks_alerts(tmp_path: Path) -> None:
    project = _project(tmp_path)
    for as_of in DATES:
        score(project, as_of)
    html = _report(project, DATES[-1])
    traces = _plot_data(html, "account-history")
    assert all(trace["mode"] == "lines+markers" for trace in traces)

    _add_alert(project, "a1", DATES[1], "a1 dropped")
    html = _report(project, DATES[-1])
    traces = {trace["name"]: trace for trace in _plot_data(html, "account-history")}
    assert "a1 alerts" in traces
    stored = snapshot_store(project).read(DATES[1], "scores").set_index("account_id")
    assert traces["a1 alerts"]["x"] == [DATES[1].isoformat()]
    assert traces["a1 alerts"]["y"] == [stored.loc["a1", "score"]]
    assert traces["a1 alerts"]["customdata"] == ["a1 dropped"]
    assert "a2 alerts" not in traces


def _plot_layout(html: str, div_id: str) -> dict[str, Any]:
    """The layout that the page's script passes to Plotly.newPlot for `div_id`."""
    start = html.index(f'"{div_id}",', html.index("Plotly.newPlot"))
    start = html.index("[", start)
    decoder = json.JSONDecoder()
    _, end = decoder.raw_decode(html, start)
    layout, _ = decoder.raw_decode(html, html.index("{", end))
    return layout  # type: ignore[no-any-return]


def test_account_history_dates_in_order() -> None:
    # a1 is drawn first but starts a week after a2, and a3 skips 2024-03-08, so
    # Plotly's own order of first appearance would put 2024-03-01 after the others.
    rows = [
        ("a1", DATES[1], 40.0),
        ("a1", DATES[2], 45.0),
        ("a2", DATES[0], 70.0),
        ("a2", DATES[1], 65.0),
        ("a2", DATES[2], 60.0),
        ("a3", DATES[2], 50.0),
        ("a3", DATES[0], 55.0),
    ]
    history = pd.DataFrame(rows, columns=["account_id", "as_of", "score"])
    alerts = pd.DataFrame(columns=["account_id", "as_of", "title", "severity"])

    html = account_history_chart(history, ["a1", "a3", "a2"], alerts, "chart")

    xaxis = _plot_layout(html, "chart")["xaxis"]
    assert xaxis["type"] == "category"
    assert xaxis["categoryorder"] == "array"
    assert xaxis["categoryarray"] == ["2024-03-01", "2024-03-08", "2024-03-15"]
    traces = {trace["name"]: trace for trace in _plot_data(html, "chart")}
    assert traces["a1"]["x"] == ["2024-03-08", "2024-03-15"]
    assert traces["a3"]["x"] == ["2024-03-01", "2024-03-15"]
    assert traces["a3"]["y"] == [55.0, 50.0]


def _psi_by_hand(before: np.ndarray, after: np.ndarray) -> float:
    """PSI over 10-point bins, written out independently of the guard module."""
    edges = np.linspace(0, 100, 11)
    expected = np.histogram(before, edges)[0] / len(before)
    actual = np.histogram(after, edges)[0] / len(after)
    expected = np.where(expected == 0, 1e-4, expected)
    actual = np.where(actual == 0, 1e-4, actual)
    return float(
        sum((a - e) * math.log(a / e) for a, e in zip(actual, expected, strict=True))
    )


def test_summary_shows_psi(history_project: Project) -> None:
    store = snapshot_store(history_project)
    before = store.read(DATES[1], "scores")["score"].to_numpy(float)
    after = store.read(DATES[2], "scores")["score"].to_numpy(float)
    psi = _psi_by_hand(before, after)
    assert psi > 0.1
    html = _report(history_project, DATES[2])
    assert (
        f"<dt>Score stability</dt><dd>PSI {psi:.4g} against the snapshot of "
        f"{DATES[1].isoformat()}" in html
    )
    assert "<caption>Accounts per 10-point score bin</caption>" in html


def test_cli_score_prints_guard(history_project: Project) -> None:
    runner = CliRunner()
    arguments = ["score", "--as-of", DATES[2].isoformat()]
    arguments += ["--project", str(history_project.root)]
    result = runner.invoke(app, [*arguments, "--json"])
    assert result.exit_code == 0, result.output
    guard = json.loads(result.stdout)["guard"]
    store = snapshot_store(history_project)
    before = store.read(DATES[1], "scores")
    after = store.read(DATES[2], "scores")
    assert guard["previous_as_of"] == DATES[1].isoformat()
    psi = _psi_by_hand(before["score"].to_numpy(float), after["score"].to_numpy(float))
    assert guard["psi"] == pytest.approx(psi)
    changed = int((before["band"].to_numpy() != after["band"].to_numpy()).sum())
    assert guard["accounts_changed_band"] == changed
    assert len(guard["distribution"]) == 10

    text = runner.invoke(app, arguments)
    assert text.exit_code == 0, text.output
    assert f"PSI of the scores against the snapshot of {DATES[1]}: {psi:.4f}." in (
        text.output
    )
    share = changed / 3
    assert f"{changed:,} of 3 accounts ({share:.1%}) changed band since" in text.output


def _trend(project: Project, as_of: str, *options: str) -> Any:
    arguments = ["trend", "a1", "--as-of", as_of, "--project", str(project.root)]
    return CliRunner().invoke(app, [*arguments, *options])


def test_trend_between_snapshots_uses_earlier(history_project: Project) -> None:
    result = _trend(history_project, "2024-03-10", "--json")
    data = json.loads(result.stdout)

    assert result.exit_code == 0, result.output
    assert "showing the latest snapshot before it, 2024-03-08" in result.stderr
    assert data["as_of"] == "2024-03-08"
    assert data["requested_as_of"] == "2024-03-10"
    assert [point["as_of"] for point in data["history"]] == [
        "2024-03-01",
        "2024-03-08",
    ]


def test_trend_after_last_snapshot(history_project: Project) -> None:
    result = _trend(history_project, "2024-05-20")

    assert result.exit_code == 0, result.output
    assert "no snapshot for 2024-05-20" in result.stderr
    assert "2024-03-15" in result.stdout
    assert "Trend:" in result.stdout


def test_trend_on_snapshot_date_has_no_note(history_project: Project) -> None:
    result = _trend(history_project, "2024-03-08", "--json")

    assert result.exit_code == 0, result.output
    assert result.stderr == ""
    assert json.loads(result.stdout)["as_of"] == "2024-03-08"


def test_trend_before_first_snapshot_fails(history_project: Project) -> None:
    result = _trend(history_project, "2024-02-20")
    message = " ".join(result.output.split())

    assert result.exit_code == 1
    assert "no snapshot on or before 2024-02-20" in message
    assert "the earliest is 2024-03-01" in message


def test_trend_names_scorecard_change(tmp_path: Path) -> None:
    # 2024-03-01 and 2024-03-08 are scored with bounds 0 to 10, then the bounds
    # become 0 to 20 and 2024-03-15 is scored. The trend as of 2024-03-15 reads all
    # three dates: the 7-day change and the slope.
    project = _project(tmp_path / "p")
    score(project, DATES[0])
    score(project, DATES[1])
    config = minimal_config()
    config["metrics"]["events_28d"]["window"] = "7d"
    measure = config["scorecards"][0]["components"]["usage"]["measures"][0]
    measure["normalize"]["max"] = 20
    changed = write_project(project.root, config, {})
    score(changed, DATES[2])
    old = project.scorecard_version(project.config.scorecards[0])
    new = changed.scorecard_version(changed.config.scorecards[0])
    assert old != new

    result = _trend(changed, "2024-03-15", "--json")

    assert result.exit_code == 0, result.output
    warning = " ".join(result.stderr.split())
    assert warning.startswith(
        "warning: the trend of a1 compares scores from different scorecard "
        f"settings, scored 2024-03-01 and 2024-03-08 by scorecard default version "
        f"{old}; 2024-03-15 by scorecard default version {new}."
    )
    command = (
        f"healthscore backfill --project {shlex.quote(str(changed.root))} "
        "--from 2024-03-01 --to 2024-03-08 --every 7d"
    )
    assert (
        "To compare like with like, rescore the dates scored under settings that "
        f"healthscore.yml no longer contains (2024-03-01 and 2024-03-08) with "
        f"`{command}`. A backfill checks no alert rules"
    ) in warning
    data = json.loads(result.stdout)
    assert data["scored_under"] == [
        {
            "scorecard": "default",
            "version": old,
            "dates": ["2024-03-01", "2024-03-08"],
        },
        {"scorecard": "default", "version": new, "dates": ["2024-03-15"]},
    ]
    # The stored values stay as they are: a1 had 4 events, then 9 (see DAILY).
    assert data["trend"]["change_7d"] == pytest.approx(9 / 20 * 100 - 4 / 10 * 100)


def test_trend_names_off_grid_outdated_date(tmp_path: Path) -> None:
    # A weekly backfill under new bounds rescores DATES but not 2024-03-11, which
    # stays under the old version, so the warning names that date alone.
    project = _project(tmp_path / "p")
    for day in [*DATES, date(2024, 3, 11)]:
        score(project, day)
    config = minimal_config()
    config["metrics"]["events_28d"]["window"] = "7d"
    measure = config["scorecards"][0]["components"]["usage"]["measures"][0]
    measure["normalize"]["max"] = 20
    changed = write_project(project.root, config, {})
    root = shlex.quote(str(changed.root))
    weekly = ["backfill", "--project", str(changed.root)]
    weekly += ["--from", "2024-03-01", "--to", "2024-03-15", "--every", "7d"]
    runner = CliRunner(env={"COLUMNS": "200"})
    assert runner.invoke(app, weekly).exit_code == 0

    mixed = _trend(changed, "2024-03-15", "--json")
    warning = " ".join(mixed.stderr.split())
    command = f"healthscore backfill --project {root} --from 2024-03-11 --to 2024-03-11"
    rescored = runner.invoke(app, shlex.split(command)[1:])
    after = _trend(changed, "2024-03-15", "--json")

    assert mixed.exit_code == 0, mixed.output
    assert (
        "rescore the dates scored under settings that healthscore.yml no longer "
        f"contains (2024-03-11) with `{command}`."
    ) in warning
    assert rescored.exit_code == 0, rescored.output
    assert after.exit_code == 0, after.output
    assert "compares scores from different scorecard settings" not in after.stderr


def test_trend_of_account_left_out(tmp_path: Path) -> None:
    # a3 is scored on the first two dates, then dropped from the accounts.
    project = _project(tmp_path / "p")
    score(project, DATES[0])
    score(project, DATES[1])
    accounts = "".join(
        line for line in ACCOUNTS_CSV.splitlines(keepends=True) if "a3" not in line
    )
    (project.root / "accounts.csv").write_text(accounts)
    score(project, DATES[2])
    arguments = ["trend", "a3", "--as-of", "2024-03-15", "--project", str(project.root)]

    result = CliRunner().invoke(app, arguments)
    message = " ".join(result.output.split())

    assert result.exit_code == 1
    assert (
        "account 'a3' is not in the snapshot of 2024-03-15; its last score is as of "
        "2024-03-08, so pass --as-of 2024-03-08 for its trend up to that date"
    ) in message
    assert "score that date" not in message


@pytest.mark.parametrize(
    ("change", "shown"),
    [
        (4.95, "+4.95"),
        (-4.95, "-4.95"),
        (4.9999, "+4.9999"),
        (4.99999, "+4.9999"),
        (5.0, "+5.0"),
        (5.04, "+5.0"),
        (12.345, "+12.3"),
        (0.0, "0.0"),
    ],
)
def test_trend_line_keeps_threshold_side(change: float, shown: str) -> None:
    trend = {
        "arrow": "flat",
        "change_7d": None,
        "change_30d": change,
        "change_90d": None,
        "slope_30d": 1.0,
    }

    line = _trend_line(trend, 5.0)

    assert f"30d {shown}," in line


@pytest.mark.parametrize(
    ("change", "threshold", "shown"),
    [
        # 5.04 reaches 5.04, but its 1-decimal form 5.0 would not.
        (5.04, 5.04, "+5.04"),
        (5.04, 5.0, "+5.0"),
        # No form with up to 4 decimals reaches 5.000005, so the last digit is
        # rounded up; below it, down.
        (5.00001, 5.000005, "+5.0001"),
        (-5.00001, 5.000005, "-5.0001"),
        (5.000001, 5.000005, "+5.0"),
    ],
)
def test_trend_line_fractional_threshold(
    change: float, threshold: float, shown: str
) -> None:
    trend = {
        "arrow": "flat",
        "change_7d": 1.0,
        "change_30d": change,
        "change_90d": None,
        "slope_30d": 2.0,
    }

    assert f"30d {shown}," in _trend_line(trend, threshold)


def test_rescore_command_uneven_dates(history_project: Project) -> None:
    days = [date(2024, 3, 1), date(2024, 3, 8), date(2024, 3, 11)]
    root = shlex.quote(str(history_project.root))

    command = rescore_command(history_project, days)

    assert command == (
        "for day in 2024-03-01 2024-03-08 2024-03-11; do healthscore backfill "
        f'--project {root} --from "$day" --to "$day"; done'
    )


def test_limited_dates_counts_the_rest() -> None:
    days = [date(2024, 3, day) for day in range(1, 8)]

    assert _limited_dates(days[:1]) == "2024-03-01"
    assert _limited_dates(days[:2]) == "2024-03-01 and 2024-03-02"
    assert _limited_dates(days) == (
        "2024-03-01, 2024-03-02, 2024-03-03, 2024-03-04, 2024-03-05 and 2 more"
    )
