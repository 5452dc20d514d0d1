"""The healthscore command line, run through Typer's CliRunner on small real projects.

The tiny project below is scored by hand. As of 2024-04-01 (as-of point 2024-04-01
00:00, UTC) the 28-day window is [2024-03-04, 2024-04-01):

    account  events_28d  logins_28d  score = 0.75 * events/10*100 + 0.25 * logins/4*100
    a1       6           2           0.75 * 60 + 0.25 * 50 = 57.5   stable
    a2       2           1           0.75 * 20 + 0.25 * 25 = 21.25  at risk
    a3       0           0           0                              at risk

As of 2024-03-15 the window is [2024-02-16, 2024-03-15): a1 has 5 events and 2 logins,
so 0.75 * 50 + 0.25 * 50 = 50.
"""

from __future__ import annotations

import io
import json
import re
from datetime import UTC, date, datetime
from pathlib import Path

import pandas as pd
import pytest
from rich.console import Console
from typer.testing import CliRunner, Result

import healthscore
from healthscore.cli import app
from healthscore.cli.common import StepProgress, parse_date, plural, row_location
from healthscore.cli.display import source_table
from healthscore.config import load_project
from healthscore.report.summary import SourceSummary
from healthscore.store import SnapshotStore, StateStore

AS_OF = "2024-04-01"
EARLIER = "2024-03-15"

ACCOUNTS = """account_id,name,segment,owner,arr
a1,Acme,enterprise,alice,120000
a2,Globex,smb,bob,9000
a3,Initech,smb,bob,4000
"""

# a2 ends before the horizon after 2024-04-01 ends (2024-05-01), so it churned.
SUBSCRIPTIONS = """account_id,start,end
a1,2024-01-01,2024-07-01
a2,2024-01-01,2024-04-15
a3,2024-01-01,2024-05-15
"""

# Data rows 10 to 12: later than the as-of date, an unreadable time stamp, and an
# account that is not in the accounts source.
EVENTS = """account_id,timestamp,event_type
a1,2024-03-10 09:00:00,login
a1,2024-03-11 09:00:00,login
a1,2024-03-12 09:00:00,view
a1,2024-03-13 09:00:00,view
a1,2024-03-14 09:00:00,view
a1,2024-03-15 09:00:00,view
a2,2024-03-20 09:00:00,view
a2,2024-03-21 09:00:00,login
a3,2024-02-01 09:00:00,view
a1,2024-04-05 09:00:00,view
a2,not a date,view
a9,2024-03-20 09:00:00,view
"""

PROJECT_YML = """name: tiny
sources:
  accounts:
    kind: accounts
    path: accounts.csv
  subscriptions:
    kind: subscriptions
    path: subscriptions.csv
  events:
    kind: events
    path: events.csv
metrics:
  events_28d:
    type: count
    source: events
    window: 28d
    description: Events in the 28 days before the as-of date.
  logins_28d:
    type: count
    source: events
    where: event_type == 'login'
    window: 28d
  segment:
    type: attribute
    column: segment
scorecards:
  - name: default
    components:
      usage:
        weight: 1
        measures:
          - metric: events_28d
            weight: 3
            normalize: {method: bounds, min: 0, max: 10}
          - metric: logins_28d
            normalize: {method: bounds, min: 0, max: 4}
outcomes:
  horizon: 1mo
  observed_until: 2024-06-30
"""

EXPECTED_SCORES = {"a1": 57.5, "a2": 21.25, "a3": 0.0}


def build_project(root: Path, project_yml: str = PROJECT_YML) -> Path:
    """Write the tiny project into `root` and return the folder."""
    root.mkdir(parents=True, exist_ok=True)
    files = {
        "accounts.csv": ACCOUNTS,
        "subscriptions.csv": SUBSCRIPTIONS,
        "events.csv": EVENTS,
        "healthscore.yml": project_yml,
    }
    for name, text in files.items():
        (root / name).write_text(text, encoding="utf-8")
    return root.resolve()


@pytest.fixture
def project(tmp_path: Path) -> Path:
    return build_project(tmp_path / "tiny")


def run(*args: str | Path) -> Result:
    """Invoke the CLI with a wide terminal, so table rows stay on one line."""
    runner = CliRunner(env={"COLUMNS": "200", "NO_COLOR": "1"})
    return runner.invoke(app, [str(arg) for arg in args], prog_name="healthscore")


def succeeded(result: Result) -> Result:
    assert result.exit_code == 0, (
        f"exit {result.exit_code}\nstdout:\n{result.stdout}\nstderr:\n"
        f"{result.stderr}\nexception: {result.exception!r}"
    )
    return result


def lines(text: str) -> list[str]:
    return [line.rstrip() for line in text.splitlines()]


def plain(text: str) -> str:
    """Text of a Rich error box: box characters dropped, whitespace collapsed."""
    return " ".join(re.sub(r"[╭╮╰╯─│]", " ", text).split())


def yml_file(root: Path) -> Path:
    return root / "healthscore.yml"


# Errors


def test_invalid_yaml_lists_file_and_line(tmp_path):
    root = build_project(tmp_path / "p", "name: tiny\nsources: [\n")

    result = run("validate", "--project", root)

    assert result.exit_code == 1
    assert result.stdout == ""
    assert result.stderr == (
        "error: 1 problem in the project:\n"
        f"  {yml_file(root)}:3: invalid YAML: expected the node content, but found "
        "'<stream end>'\n"
    )


@pytest.mark.parametrize(
    ("text", "line", "message"),
    [
        (
            "name: tiny\nsources: {}\nowner: ana\x07\n",
            3,
            "the control character U+0007 is not allowed in YAML; remove it",
        ),
        ("name: tiny\nsources: *accounts\n", 2, "found undefined alias 'accounts'"),
        ("name: 'tiny\nsources: {}\n", 3, "found unexpected end of stream"),
    ],
)
def test_invalid_yaml_names_the_fault(tmp_path, text, line, message):
    root = build_project(tmp_path / "p", text)

    result = run("validate", "--project", root)

    assert result.exit_code == 1
    assert result.stderr == (
        "error: 1 problem in the project:\n"
        f"  {yml_file(root)}:{line}: invalid YAML: {message}\n"
    )


def test_unknown_key_suggests_the_known_one(tmp_path):
    text = PROJECT_YML.replace("    path: accounts.csv", "    pth: accounts.csv")
    root = build_project(tmp_path / "p", text)

    result = run("score", "--project", root, "--as-of", AS_OF)

    assert result.exit_code == 1
    assert result.stderr == (
        "error: 2 problems in the project:\n"
        f"  {yml_file(root)}:3: sources.accounts.path: missing required setting "
        "'path'\n"
        f"  {yml_file(root)}:5: sources.accounts.pth: unknown key (did you mean "
        "'path'?)\n"
    )
    assert "Traceback" not in result.output


def test_missing_source_file_names_key_and_line(tmp_path):
    text = PROJECT_YML.replace("path: events.csv", "path: missing.csv")
    root = build_project(tmp_path / "p", text)
    line = text.splitlines().index("    path: missing.csv") + 1

    result = run("validate", "--project", root)

    assert result.exit_code == 1
    assert result.stderr == (
        "error: 1 problem in the project:\n"
        f"  {yml_file(root)}:{line}: sources.events.path: no file matches "
        f"'missing.csv' (relative to {root})\n"
    )


def test_missing_project_file(tmp_path):
    result = run("score", "--project", tmp_path, "--as-of", AS_OF)

    assert result.exit_code == 1
    assert result.stderr == (
        "error: 1 problem in the project:\n"
        f"  {tmp_path.resolve() / 'healthscore.yml'}: project file not found; run "
        "`healthscore init DIR` to create a project or pass --project DIR\n"
    )


@pytest.mark.parametrize(
    "text", ["2024-02-30", "01/04/2024", "yesterday", "20240401", "2024-W14-1"]
)
def test_bad_date_is_usage_error(project, text):
    result = run("score", "--project", project, "--as-of", text)

    assert result.exit_code == 2
    assert (
        f"Invalid value for '--as-of': '{text}' is not a date in the form "
        "YYYY-MM-DD, for example 2020-05-01"
    ) in plain(result.stderr)
    assert not (project / ".healthscore" / "snapshots").exists()


@pytest.mark.parametrize(
    ("option", "text"),
    [
        ("--as-of", "1899-12-31"),
        ("--as-of", "0001-01-01"),
        ("--as-of", "3000-01-01"),
        ("--as-of", "9999-12-31"),
        ("--compare-to", "0001-01-01"),
    ],
)
def test_date_out_of_range_is_usage_error(project, option, text):
    command = ["explain", "a1"] if option == "--compare-to" else ["score"]
    extra = ["--as-of", AS_OF] if option == "--compare-to" else []

    result = run(*command, "--project", project, *extra, option, text)

    assert result.exit_code == 2
    assert (
        f"Invalid value for '{option}': {text} is outside the supported range "
        "1900-01-01 to 2999-12-31; give a date in that range"
    ) in plain(result.stderr)
    assert "Traceback" not in result.output


def test_override_expiry_out_of_range_is_usage_error(project):
    result = run(
        "override", "add", "a1", "--project", project, "--score", "50",
        "--reason", "r", "--author", "ana", "--expires", "9999-12-31",
    )  # fmt: skip

    assert result.exit_code == 2
    assert "Invalid value for '--expires': 9999-12-31 is outside" in plain(
        result.stderr
    )


@pytest.mark.parametrize("text", ["1900-01-01", "2999-12-31"])
def test_range_edge_dates_score(project, text):
    result = succeeded(run("score", "--project", project, "--as-of", text, "--json"))

    assert json.loads(result.stdout)["as_of"] == text


def test_parse_date_range_edges():
    assert parse_date("1900-01-01") == date(1900, 1, 1)
    assert parse_date(" 2999-12-31 ") == date(2999, 12, 31)


def test_bad_output_extension_is_usage_error(project):
    result = run(
        "score", "--project", project, "--as-of", AS_OF, "--output", "scores.xlsx"
    )

    assert result.exit_code == 2
    assert (
        "Invalid value for '--output': unsupported extension '.xlsx' of "
        "scores.xlsx; use .csv, .json or .parquet"
    ) in plain(result.stderr)


def test_unreadable_source_column_exits_1(tmp_path):
    root = build_project(tmp_path / "p")
    (root / "events.csv").write_text("account_id,when\na1,2024-03-10\n")

    result = run("score", "--project", root, "--as-of", AS_OF)

    assert result.exit_code == 1
    assert result.stderr.endswith(
        "error: source 'events': column 'timestamp' for 'timestamp' not found in the "
        "file; it has account_id, when. Fix sources.events.columns.\n"
    )
    assert "Traceback" not in result.output


def test_text_metric_with_numeric_method_exits_1(tmp_path):
    text = PROJECT_YML.replace(
        "          - metric: logins_28d\n",
        "          - metric: segment\n"
        "            normalize: {method: bounds, min: 0, max: 1}\n"
        "          - metric: logins_28d\n",
    )
    root = build_project(tmp_path / "p", text)

    result = run("score", "--project", root, "--as-of", AS_OF)

    # The loader rejects the measure from the column's declared type, before any
    # data is read.
    assert result.exit_code == 1
    assert (
        "scorecards[0].components.usage.measures[1].normalize.method: metric "
        "'segment' contains text (column 'segment' of source 'accounts' is of type "
        "string), but method bounds needs numbers; use method categories"
    ) in plain(result.stderr)


# validate


def test_validate_prints_counts(project):
    result = succeeded(run("validate", "--project", project))

    assert (
        result.stdout == "healthscore.yml is valid: 3 sources, 3 metrics, 1 scorecard\n"
    )


def test_validate_data_reports_excluded_rows(project):
    result = succeeded(
        run("validate", "--project", project, "--data", "--as-of", AS_OF)
    )

    output = lines(result.stdout)
    assert output[0] == "healthscore.yml is valid: 3 sources, 3 metrics, 1 scorecard"
    events = next(line for line in output if line.strip().startswith("events "))
    assert events.split()[:5] == ["events", "12", "9", "1", "2"]
    events_file = project / "events.csv"
    assert (
        f"  events: {events_file}, row 11 (line 12), column timestamp: value cannot be "
        "read as the column's type: 'not a date'; expected a time as YYYY-MM-DD "
        "HH:MM:SS, optionally with a UTC offset"
    ) in output
    assert (
        f"  events: {events_file}, row 12 (line 13), column account_id: account id not "
        "found in the accounts source: 'a9'"
    ) in output
    assert (
        "1 row is later than the as-of date: valid, left for later dates, not errors."
        in output
    )
    assert "2 rows fail a check and are excluded from scores" in result.stderr
    advice = " ".join(result.stderr.split())
    assert "correct the source's columns or timestamp_format" in advice
    assert "decimal commas or thousands separators must be converted" in advice


def test_validate_json(project):
    result = succeeded(
        run("validate", "--project", project, "--data", "--as-of", AS_OF, "--json")
    )

    data = json.loads(result.stdout)
    assert data["valid"] is True
    assert (data["sources"], data["metrics"], data["scorecards"]) == (3, 3, 1)
    events = {source["source"]: source for source in data["data"]["sources"]}["events"]
    assert events["rows_read"] == 12
    assert events["rows_used"] == 9
    assert events["later"] == 1
    assert events["problems"] == {
        "account id not found in the accounts source (account_id)": 1,
        "value cannot be read as the column's type (timestamp)": 1,
    }


def test_validate_json_lists_issues_on_failure(tmp_path):
    text = PROJECT_YML.replace("    path: accounts.csv", "    pth: accounts.csv")
    root = build_project(tmp_path / "p", text)

    result = run("validate", "--project", root, "--json")

    assert result.exit_code == 1
    data = json.loads(result.stdout)
    assert data["valid"] is False
    assert data["issues"][1] == {
        "file": str(yml_file(root)),
        "line": 5,
        "key": "sources.accounts.pth",
        "message": "unknown key",
        "suggestion": "path",
    }


def test_validate_checks_snapshot_table_connection(tmp_path, monkeypatch):
    monkeypatch.delenv("HS_SCORES_DB", raising=False)
    text = PROJECT_YML.replace(
        "name: tiny\n",
        "name: tiny\nstore:\n  snapshot_table:\n"
        "    connection: duckdb:///${HS_SCORES_DB}\n    table: scores\n",
    )
    root = build_project(tmp_path / "p", text)

    result = run("validate", "--project", root)

    assert result.exit_code == 1
    assert "store.snapshot_table.connection" in result.stderr
    assert "environment variable HS_SCORES_DB is not set" in result.stderr
    monkeypatch.setenv("HS_SCORES_DB", str(tmp_path / "scores.duckdb"))
    succeeded(run("validate", "--project", root))
    # Validation reaches no database, so it creates no file either.
    assert not (tmp_path / "scores.duckdb").exists()


def test_validate_spark_rejects_sentiment_metric(tmp_path):
    text = PROJECT_YML.replace("name: tiny\n", "name: tiny\nengine: spark\n").replace(
        "metrics:\n",
        "metrics:\n  tone:\n    type: sentiment\n    source: events\n"
        "    column: event_type\n",
    )
    root = build_project(tmp_path / "p", text)

    result = run("validate", "--project", root)

    assert result.exit_code == 1
    assert "engine kind spark cannot run this project yet" in result.stderr
    assert (
        "metrics.tone: sentiment metrics score texts with a Python function that "
        "runs in DuckDB only"
    ) in result.stderr
    assert "Set engine: duckdb in healthscore.yml" in result.stderr


def test_validate_spark_project_without_data(tmp_path):
    text = PROJECT_YML.replace("name: tiny\n", "name: tiny\nengine: spark\n")
    root = build_project(tmp_path / "p", text)

    result = succeeded(run("validate", "--project", root))

    assert "healthscore.yml is valid: 3 sources" in result.stdout


def test_source_table_keeps_names_whole_at_80_columns():
    sources = [
        SourceSummary(
            source=name,
            kind=kind,
            files=[],
            rows_read=8_836_719,
            rows_used=5_691_579,
            later=3_145_140,
            problems={},
            examples=[],
        )
        for name, kind in [("subscriptions", "subscriptions"), ("events", "events")]
    ]
    console = Console(width=80, record=True, file=io.StringIO())

    console.print(source_table(sources, "2026-06-01"))

    rendered = lines(console.export_text())
    assert max(len(line) for line in rendered) <= 80
    assert any(line.split()[:1] == ["subscriptions"] for line in rendered)
    assert any(line.rstrip().endswith("Why excluded") for line in rendered)


def test_source_table_wraps_reasons_at_80_columns():
    reason = "value cannot be read as the column's type (timestamp)"
    sources = [
        SourceSummary(
            source="subscriptions",
            kind="subscriptions",
            files=[],
            rows_read=1_608,
            rows_used=1_513,
            later=95,
            problems={},
            examples=[],
        ),
        SourceSummary(
            source="events",
            kind="events",
            files=[],
            rows_read=372_619,
            rows_used=0,
            later=0,
            problems={reason: 372_619},
            examples=[],
        ),
    ]
    console = Console(width=80, record=True, file=io.StringIO())

    console.print(source_table(sources, "2026-06-01"))

    rendered = lines(console.export_text())
    assert max(len(line) for line in rendered) <= 80
    start = next(line for line in rendered if "Why excluded" in line).index(
        "Why excluded"
    )
    first = next(
        i for i, line in enumerate(rendered) if line.strip().startswith("events ")
    )
    cell_text = " ".join(line[start:] for line in rendered[first:])
    assert " ".join(cell_text.split()) == f"372,619 {reason}"


# score


def test_score_summary_lines(project):
    result = succeeded(run("score", "--project", project, "--as-of", AS_OF))

    output = lines(result.stdout)
    assert output[0] == "Scored 3 accounts of tiny as of 2024-04-01."
    # Sentences wrap at 80 columns, whatever the terminal's width.
    coverage = output.index(
        "Coverage: 100.0% of the scorecard weight had data on average; 0 accounts have"
    )
    assert output[coverage + 1] == "insufficient data."
    snapshot = project / ".healthscore" / "snapshots" / "as_of=2024-04-01"
    assert f"Stored the snapshot in {snapshot}." in output
    assert (
        "1 row is later than the as-of date: valid, left for later dates, not errors."
        in output
    )


def test_score_band_rows(project):
    result = succeeded(run("score", "--project", project, "--as-of", AS_OF))

    bands = {
        match["label"]: (match["count"], match["share"])
        for match in re.finditer(
            r"██ (?P<label>[A-Za-z ]+?)\s+(?P<count>\d+)\s+(?P<share>[\d.]+%)\s*$",
            result.stdout,
            flags=re.MULTILINE,
        )
    }
    assert bands == {
        "At risk": ("2", "66.7%"),
        "Stable": ("1", "33.3%"),
        "Healthy": ("0", "0.0%"),
    }


def test_score_riskiest_by_arr_within_band(project):
    result = succeeded(run("score", "--project", project, "--as-of", AS_OF))

    output = lines(result.stdout)
    rows = [i for i, line in enumerate(output) if re.match(r"\s+a\d ", line)]
    assert [output[i].split()[0] for i in rows] == ["a2", "a3", "a1"]
    assert output[rows[0]].split()[2:5] == ["9,000", "21.2", "██"]
    # One driver per line, under the account's row.
    assert output[rows[0]].endswith("events_28d (60.0)")
    assert output[rows[0] + 1].strip() == "logins_28d (18.8)"
    assert output[rows[2]].endswith("events_28d (30.0)")
    assert output[rows[2] + 1].strip() == "logins_28d (12.5)"


def test_score_after_subscriptions_warns(project):
    result = succeeded(run("score", "--project", project, "--as-of", "2030-01-01"))

    assert lines(result.stdout)[0] == "Scored 0 accounts of tiny as of 2030-01-01."
    # The date may also be after today, which an earlier warning reports.
    warning = " ".join(result.stderr.split())
    assert (
        "warning: no account has an active subscription (source subscriptions) on "
        "2030-01-01, so none was scored"
    ) in warning
    assert "set scoring.population: all in healthscore.yml" in warning


def test_score_empty_accounts_warns(project):
    header = ACCOUNTS.splitlines()[0]
    (project / "accounts.csv").write_text(header + "\n", encoding="utf-8")

    result = succeeded(run("score", "--project", project, "--as-of", AS_OF))

    warning = " ".join(result.stderr.split())
    assert "warning: the accounts source has no usable account" in warning
    assert "scoring.population" not in warning


def test_score_json(project):
    result = succeeded(run("score", "--project", project, "--as-of", AS_OF, "--json"))

    data = json.loads(result.stdout)
    assert data["as_of"] == AS_OF
    assert data["accounts"] == 3
    assert [(band["name"], band["count"]) for band in data["bands"]] == [
        ("at_risk", 2),
        ("stable", 1),
        ("healthy", 0),
    ]
    assert data["value_column"] == "arr"
    assert [account["account_id"] for account in data["riskiest"]] == ["a2", "a3", "a1"]
    assert [account["score"] for account in data["riskiest"]] == [21.25, 0.0, 57.5]
    drivers = data["riskiest"][0]["drivers"]
    assert [(d["measure"], d["points_lost"]) for d in drivers] == [
        ("events_28d", 60.0),
        ("logins_28d", 18.75),
    ]
    assert data["coverage"]["mean_coverage"] == 1.0
    assert data["snapshot"] == str(
        project / ".healthscore" / "snapshots" / "as_of=2024-04-01"
    )


def test_score_stores_snapshot(project):
    succeeded(run("score", "--project", project, "--as-of", AS_OF))

    store = SnapshotStore(project / ".healthscore" / "snapshots")
    scores = store.read(date(2024, 4, 1), "scores").set_index("account_id")
    assert scores["score"].to_dict() == EXPECTED_SCORES


def test_score_no_store(project):
    result = succeeded(
        run("score", "--project", project, "--as-of", AS_OF, "--no-store")
    )

    assert "The snapshot was not stored (--no-store)." in lines(result.stdout)
    assert not (project / ".healthscore" / "snapshots").exists()


@pytest.mark.parametrize("suffix", [".csv", ".json", ".parquet"])
def test_score_output_formats(project, tmp_path, suffix):
    path = tmp_path / "out" / f"scores{suffix}"

    result = succeeded(
        run("score", "--project", project, "--as-of", AS_OF, "--output", path)
    )

    assert f"Wrote the scores of 3 accounts to {path}." in lines(result.stdout)
    if suffix == ".csv":
        frame = pd.read_csv(path, dtype={"as_of": str})
    elif suffix == ".json":
        frame = pd.DataFrame(json.loads(path.read_text(encoding="utf-8")))
    else:
        frame = pd.read_parquet(path)
    frame = frame.set_index("account_id")
    assert frame["score"].to_dict() == EXPECTED_SCORES
    assert frame["band"].to_dict() == {"a1": "stable", "a2": "at_risk", "a3": "at_risk"}
    assert {str(value) for value in frame["as_of"]} == {AS_OF}


def test_verbose_logs_to_stderr(project):
    quiet = succeeded(
        run("score", "--project", project, "--as-of", AS_OF, "--no-store")
    )
    loud = succeeded(
        run("score", "--project", project, "--as-of", AS_OF, "--no-store", "-v")
    )

    assert "scored 3 accounts as of 2024-04-01" not in quiet.stderr
    assert "scored 3 accounts as of 2024-04-01" in loud.stderr
    assert "scored 3 accounts" not in loud.stdout


def test_very_verbose_logs_handled_traceback(tmp_path):
    root = build_project(tmp_path / "p", "name: tiny\nsources: [\n")

    quiet = run("validate", "--project", root)
    loud = run("validate", "--project", root, "-vv")

    assert "ConfigError failed" not in quiet.stderr
    assert "ConfigError failed" in loud.stderr
    assert "Traceback (most recent call last)" in loud.stderr
    assert loud.exit_code == 1


# metrics


@pytest.mark.parametrize("suffix", [".csv", ".json", ".parquet"])
def test_metrics_long_form(project, tmp_path, suffix):
    path = tmp_path / f"metrics{suffix}"

    result = succeeded(
        run("metrics", "--project", project, "--as-of", AS_OF, "--output", path)
    )

    assert result.stdout == (
        f"Wrote 9 metric values (3 accounts, 3 metrics) as of 2024-04-01 to {path}.\n"
    )
    if suffix == ".csv":
        frame = pd.read_csv(path)
    elif suffix == ".json":
        frame = pd.DataFrame(json.loads(path.read_text(encoding="utf-8")))
    else:
        frame = pd.read_parquet(path)
    values = frame.set_index(["account_id", "metric"])
    assert values.loc[("a1", "events_28d"), "value"] == 6.0
    assert values.loc[("a1", "logins_28d"), "value"] == 2.0
    assert values.loc[("a2", "events_28d"), "value"] == 2.0
    assert values.loc[("a3", "events_28d"), "value"] == 0.0
    assert values.loc[("a1", "segment"), "value_text"] == "enterprise"
    assert pd.isna(values.loc[("a1", "segment"), "value"])
    assert list(frame.columns) == ["account_id", "metric", "value", "value_text"]


def test_metrics_requires_output(project):
    result = run("metrics", "--project", project, "--as-of", AS_OF)

    assert result.exit_code == 2
    assert "Missing option '--output'" in plain(result.stderr)


# explain


def test_explain_one_date(project):
    succeeded(run("score", "--project", project, "--as-of", AS_OF))

    result = succeeded(run("explain", "a1", "--project", project, "--as-of", AS_OF))

    output = lines(result.stdout)
    assert " ".join(output[:2]) == (
        "Account a1 as of 2024-04-01: score 57.5, band Stable (scorecard default, "
        "coverage 100.0%)."
    )
    assert max(len(line) for line in output[:2]) <= 80
    rows = {line.split()[0]: line.split()[1:] for line in output if "_28d " in line}
    assert rows["events_28d"] == ["6", "60.0", "75.0%", "45.00", "30.0"]
    assert rows["logins_28d"] == ["2", "50.0", "25.0%", "12.50", "12.5"]
    assert "The contributions add up to 57.50; the score is 57.50." in output
    assert result.stderr == ""


def test_explain_json_contributions_sum_to_score(project):
    result = succeeded(
        run("explain", "a2", "--project", project, "--as-of", AS_OF, "--json")
    )

    data = json.loads(result.stdout)
    assert data["stored"] is False
    assert data["score"] == 21.25
    contributions = {row["measure"]: row["contribution"] for row in data["measures"]}
    assert contributions == {"events_28d": 15.0, "logins_28d": 6.25}
    assert sum(contributions.values()) == data["score"]


def test_explain_unknown_account(project):
    succeeded(run("score", "--project", project, "--as-of", AS_OF))

    result = run("explain", "zz", "--project", project, "--as-of", AS_OF)

    assert result.exit_code == 1
    assert result.stderr == (
        "error: account 'zz' was not scored as of 2024-04-01: 'zz' is not an account "
        "id of the accounts source 'accounts'\n"
    )


def test_explain_account_with_excluded_row(project):
    accounts = project / "accounts.csv"
    accounts.write_text(ACCOUNTS.replace("bob,9000", "bob,lots"), encoding="utf-8")
    succeeded(run("score", "--project", project, "--as-of", AS_OF))

    result = run("explain", "a2", "--project", project, "--as-of", AS_OF)

    assert result.exit_code == 1
    message = " ".join(result.stderr.split())
    assert message.startswith(
        "error: account 'a2' was not scored as of 2024-04-01: its row in the "
        f"accounts source is excluded ({accounts}, row 2, column arr: value cannot "
        "be read as the column's type: 'lots'"
    )


def test_explain_account_outside_population(project):
    # a2's only subscription ends on 2024-04-15, so it is not active on 2024-05-01.
    result = run("explain", "a2", "--project", project, "--as-of", "2024-05-01")

    assert result.exit_code == 1
    assert result.stderr.startswith(
        "No snapshot of 2024-05-01; computing the scores without storing them (run "
        "`healthscore score --as-of 2024-05-01` to store them).\n"
    )
    assert " ".join(result.stderr.split()).endswith(
        "error: account 'a2' was not scored as of 2024-05-01: it is an account of the "
        "accounts source, but not in the population of active accounts of that date, "
        "because its subscription in the subscriptions source 'subscriptions' ended "
        "on 2024-04-15"
    )


def test_explain_change_parts_sum_to_change(project):
    succeeded(run("score", "--project", project, "--as-of", AS_OF))

    result = succeeded(
        run(
            "explain", "a1", "--project", project, "--as-of", AS_OF,
            "--compare-to", EARLIER,
        )
    )  # fmt: skip

    output = lines(result.stdout)
    assert (
        output[0] == "Account a1: score 50.00 as of 2024-03-15, 57.50 as of 2024-04-01."
    )
    assert "Sum of the parts: +7.50" in output
    assert "Change of the score: +7.50" in output
    events = next(line for line in output if line.strip().startswith("events_28d"))
    assert events.split() == [
        "events_28d", "5", "→", "6", "50.0", "→", "60.0", "37.50", "→", "45.00",
        "+7.50",
    ]  # fmt: skip
    assert "No snapshot of 2024-03-15" in result.stderr


def test_explain_change_json(project):
    result = succeeded(
        run(
            "explain", "a1", "--project", project, "--as-of", AS_OF,
            "--compare-to", EARLIER, "--json",
        )
    )  # fmt: skip

    data = json.loads(result.stdout)
    assert (data["compare_score"], data["score"]) == (50.0, 57.5)
    assert data["change"] == 7.5
    assert data["sum_of_parts"] == 7.5
    parts = {part["measure"]: part["change"] for part in data["parts"]}
    assert parts == {"events_28d": 7.5, "logins_28d": 0.0}


# override


def test_override_add_list_remove(project):
    added = succeeded(
        run(
            "override", "add", "a3", "--project", project, "--score", "90",
            "--reason", "renewal signed", "--author", "ana", "--expires", "2099-01-01",
        )
    )  # fmt: skip
    assert added.stdout == (
        "Added override 1: the score of account a3 is 90 up to 2099-01-01.\n"
    )

    listed = json.loads(
        succeeded(run("override", "list", "--project", project, "--json")).stdout
    )
    assert [(item["id"], item["account_id"], item["score"]) for item in listed] == [
        (1, "a3", 90.0)
    ]
    assert listed[0]["reason"] == "renewal signed"

    scored = json.loads(
        succeeded(run("score", "--project", project, "--as-of", AS_OF, "--json")).stdout
    )
    assert scored["coverage"]["score_overrides"] == 1
    assert [band["count"] for band in scored["bands"]] == [1, 1, 1]

    removed = succeeded(
        run("override", "remove", "1", "--project", project, "--author", "bob")
    )
    assert removed.stdout == "Removed override 1.\n"
    empty = succeeded(run("override", "list", "--project", project))
    assert empty.stdout == "No overrides active today or later.\n"

    again = run("override", "remove", "1", "--project", project, "--author", "bob")
    assert again.exit_code == 1
    assert again.stderr.startswith("error: override 1 was already removed at ")


def test_measure_override_changes_score(project):
    succeeded(
        run(
            "override", "add", "a2", "--project", project, "--score", "100",
            "--measure", "events_28d", "--reason", "usage moved to a new product",
            "--author", "ana", "--expires", "2099-01-01",
        )
    )  # fmt: skip

    result = succeeded(
        run("explain", "a2", "--project", project, "--as-of", AS_OF, "--json")
    )

    data = json.loads(result.stdout)
    # 0.75 * 100 (overridden) + 0.25 * 25 = 81.25
    assert data["score"] == 81.25
    assert data["band"] == "healthy"


def test_override_outside_population_warns(project):
    succeeded(
        run(
            "override", "add", "a2", "--project", project, "--score", "80",
            "--reason", "r", "--author", "ana", "--expires", "2099-01-01",
        )
    )  # fmt: skip

    # a2's subscription ends on 2024-04-15, so a2 is not scored as of 2024-05-01.
    result = succeeded(run("score", "--project", project, "--as-of", "2024-05-01"))
    data = json.loads(
        succeeded(
            run("score", "--project", project, "--as-of", "2024-05-01", "--json")
        ).stdout
    )

    assert (
        "warning: override 1 of account a2 (score) was not applied: account 'a2' is "
        "not scored as of 2024-05-01"
    ) in lines(result.stderr)
    assert data["ignored_overrides"] == [
        {
            "id": 1,
            "account_id": "a2",
            "target": "score",
            "reason": "account 'a2' is not scored as of 2024-05-01",
        }
    ]


def test_override_unknown_measure_suggests(project):
    result = run(
        "override", "add", "a2", "--project", project, "--score", "100",
        "--measure", "event_28d", "--reason", "r", "--author", "ana",
        "--expires", "2099-01-01",
    )  # fmt: skip

    assert result.exit_code == 1
    assert result.stderr == (
        "error: --measure: unknown measure 'event_28d' (did you mean 'events_28d'?); "
        "the scorecards' measures are: events_28d, logins_28d\n"
    )


ROUTED_SCORECARDS = """scorecards:
  - name: enterprise
    when: "segment == 'enterprise'"
    components:
      usage:
        weight: 1
        measures:
          - metric: events_28d
            normalize: {method: bounds, min: 0, max: 10}
  - name: smb
    components:
      usage:
        weight: 1
        measures:
          - metric: logins_28d
            normalize: {method: bounds, min: 0, max: 4}
"""


def test_override_measure_of_other_scorecard_rejected(tmp_path):
    head = PROJECT_YML.split("scorecards:")[0]
    tail = "outcomes:" + PROJECT_YML.split("outcomes:")[1]
    project = build_project(tmp_path / "routed", head + ROUTED_SCORECARDS + tail)
    override = (
        "override", "add", "a2", "--project", project, "--score", "100",
        "--measure", "events_28d", "--reason", "r", "--author", "ana",
        "--expires", "2099-01-01",
    )  # fmt: skip
    # Before any score is stored, a measure of any scorecard is accepted.
    succeeded(run(*override))
    succeeded(run("score", "--project", project, "--as-of", AS_OF))

    result = run(*override)

    assert result.exit_code == 1
    assert result.stderr == (
        "error: --measure: measure 'events_28d' is not in scorecard 'smb', which "
        "scored account 'a2' as of 2024-04-01; its measures are: logins_28d. Give "
        "one of them, or leave out the measure to override the whole score\n"
    )
    succeeded(run(*override[:8], "logins_28d", *override[9:]))
    listed = json.loads(
        succeeded(run("override", "list", "--project", project, "--json")).stdout
    )
    assert sorted(item["measure"] for item in listed) == ["events_28d", "logins_28d"]


def test_override_unknown_account(project):
    result = run(
        "override", "add", "zz", "--project", project, "--score", "50",
        "--reason", "r", "--author", "ana", "--expires", "2099-01-01",
    )  # fmt: skip

    assert result.exit_code == 1
    assert result.stderr == (
        "error: account 'zz' not found in the accounts source 'accounts'; check the "
        "account id\n"
    )


def test_override_past_expiry_rejected(project):
    result = run(
        "override", "add", "a1", "--project", project, "--score", "50",
        "--reason", "r", "--author", "ana", "--expires", "2000-01-01",
    )  # fmt: skip

    assert result.exit_code == 1
    assert re.fullmatch(
        r"error: --expires 2000-01-01 is in the past \(today is \d{4}-\d\d-\d\d in "
        r"the project time zone UTC\); give today or a later date\n",
        result.stderr,
    )


def test_override_score_out_of_range_is_usage_error(project):
    result = run(
        "override", "add", "a1", "--project", project, "--score", "150",
        "--reason", "r", "--author", "ana", "--expires", "2099-01-01",
    )  # fmt: skip

    assert result.exit_code == 2
    assert "Invalid value for '--score'" in plain(result.stderr)


def test_override_list_all_shows_expired(project):
    config = load_project(project).config
    with StateStore.open(config.store.state, project) as store:
        store.add_override(
            "a1",
            score=10,
            reason="incident",
            author="ana",
            expires_on=date(2020, 6, 1),
            now=datetime(2020, 1, 1, tzinfo=UTC),
        )

    active = succeeded(run("override", "list", "--project", project))
    every = succeeded(run("override", "list", "--project", project, "--all"))

    assert active.stdout == "No overrides active today or later.\n"
    row = next(line for line in lines(every.stdout) if line.strip().startswith("1 "))
    assert row.split()[:6] == ["1", "a1", "score", "10", "2020-06-01", "(expired)"]


def test_override_list_all_shows_removed(project):
    config = load_project(project).config
    with StateStore.open(config.store.state, project) as store:
        store.add_override(
            "a2",
            score=70,
            reason="migration",
            author="ana",
            expires_on=date(2099, 1, 1),
            now=datetime(2024, 5, 1, 9, 0, tzinfo=UTC),
        )
        store.remove_override(1, "bob", now=datetime(2024, 5, 2, 14, 30, tzinfo=UTC))

    active = succeeded(run("override", "list", "--project", project))
    every = succeeded(run("override", "list", "--project", project, "--all"))
    data = json.loads(
        succeeded(
            run("override", "list", "--project", project, "--all", "--json")
        ).stdout
    )

    assert active.stdout == "No overrides active today or later.\n"
    row = next(line for line in lines(every.stdout) if line.strip().startswith("1 "))
    assert row.split() == [
        "1", "a2", "score", "70", "2099-01-01", "ana",
        "2024-05-02", "14:30", "UTC", "by", "bob", "migration",
    ]  # fmt: skip
    assert len(data) == 1
    assert data[0]["removed_at"] == "2024-05-02T14:30:00Z"
    assert data[0]["removed_by"] == "bob"
    assert data[0]["author"] == "ana"


def test_override_list_all_marks_current(project):
    config = load_project(project).config
    with StateStore.open(config.store.state, project) as store:
        store.add_override(
            "a1", score=20, reason="outage", author="ana",
            expires_on=date(2099, 1, 1),
        )  # fmt: skip

    every = succeeded(run("override", "list", "--project", project, "--all"))
    data = json.loads(
        succeeded(
            run("override", "list", "--project", project, "--all", "--json")
        ).stdout
    )

    row = next(line for line in lines(every.stdout) if line.strip().startswith("1 "))
    assert row.split() == ["1", "a1", "score", "20", "2099-01-01", "ana", "-", "outage"]
    assert data[0]["removed_at"] is None
    assert data[0]["removed_by"] is None


def test_override_add_help_states_dates():
    result = succeeded(run("override", "add", "--help"))

    text = plain(result.stdout)
    assert (
        "The override applies to every as-of date up to and including its expiry "
        "date, also to dates before it was created: rescoring an earlier date "
        "applies it too."
    ) in text
    assert "Last as-of date on which the override applies (included)" in text


# report and demo


def test_report_default_path(project):
    succeeded(run("score", "--project", project, "--as-of", AS_OF))

    result = succeeded(run("report", "--project", project, "--as-of", AS_OF))

    path = project / "output" / "report-2024-04-01.html"
    assert result.stdout == f"Wrote the report of 2024-04-01 to {path}.\n"
    html = path.read_text(encoding="utf-8")
    assert '<h2 id="churn-heading">Churn rate per band</h2>' in html
    assert result.stderr.count("No snapshot") == 0


def test_report_without_snapshot_computes(project, tmp_path):
    path = tmp_path / "r.html"

    result = succeeded(
        run(
            "report", "--project", project, "--as-of", AS_OF, "--output", path, "--json"
        )
    )

    assert json.loads(result.stdout) == {
        "as_of": AS_OF,
        "report": str(path),
        "snapshot": None,
    }
    assert "No snapshot of 2024-04-01" in result.stderr
    assert path.is_file()
    assert not (project / ".healthscore" / "snapshots").exists()


def test_report_rejects_other_extension(project):
    result = run("report", "--project", project, "--as-of", AS_OF, "--output", "r.txt")

    assert result.exit_code == 2
    assert (
        "Invalid value for '--output': unsupported extension '.txt' of r.txt; the "
        "report is HTML, so use .html"
    ) in plain(result.stderr)


def test_demo_on_given_project(project, tmp_path):
    # observed_until 2024-06-30 less the 1-month horizon gives 2024-05-30. Only a1
    # is active then. It has no events in the window, so it scores 0 (at risk). Its
    # subscription runs past 2024-06-30, so it did not churn.
    result = succeeded(
        run(
            "demo", "--project", project, "--output-dir", tmp_path / "out",
            "--store-dir", tmp_path / "store",
        )
    )  # fmt: skip

    output = lines(result.stdout)
    assert output[0] == "Scored 1 account of tiny as of 2024-05-30."
    at_risk = next(line for line in output if "██ At risk" in line)
    assert at_risk.split()[3:] == ["1", "100.0%", "1", "0", "0.00%"]
    assert "Too few bands have accounts to compare churn rates." in output
    report = tmp_path / "out" / "report-2024-05-30.html"
    assert f"Wrote the report to {report}" in output
    assert report.is_file()
    assert SnapshotStore(tmp_path / "store" / "snapshots").dates() == [
        date(2024, 5, 30)
    ]
    assert not (project / ".healthscore").exists()


def test_demo_example_not_found(tmp_path, monkeypatch):
    fake_source = tmp_path / "site" / "lib" / "healthscore" / "__init__.py"
    monkeypatch.setattr(healthscore, "__file__", str(fake_source))
    monkeypatch.chdir(tmp_path)

    result = run("demo", "--output-dir", tmp_path / "out")

    assert result.exit_code == 1
    in_folder = tmp_path / "examples" / "socialnet"
    beside_source = tmp_path / "site" / "examples" / "socialnet"
    assert result.stderr == (
        f"error: the socialnet example was not found in {in_folder} or "
        f"{beside_source}; "
        "run the demo from the root of the healthscore repository, or pass "
        "--project DIR\n"
    )


# init


def test_init_creates_project_and_prints_next_commands(tmp_path):
    folder = tmp_path / "new"

    result = succeeded(run("init", folder, "--accounts", "10"))

    output = lines(result.stdout)
    assert (
        output[0]
        == f"Created a healthscore project with 10 sample accounts in {folder}."
    )
    assert output[1] == "Next commands:"
    assert f"  healthscore score --project {folder} --as-of 2026-06-01" in output
    assert load_project(folder).config.scorecards

    again = run("init", folder, "--accounts", "10")
    assert again.exit_code == 1
    assert again.stderr.startswith(f"error: {folder} already contains healthscore.yml")

    forced = run("init", folder, "--accounts", "10", "--force")
    assert forced.exit_code == 0


# Helpers shared by the commands


@pytest.mark.parametrize(
    ("count", "noun", "plural_noun", "expected"),
    [
        (0, "row", None, "0 rows"),
        (1, "row", None, "1 row"),
        (2, "row", None, "2 rows"),
        (1204, "row", None, "1,204 rows"),
        (1, "entry", "entries", "1 entry"),
        (3, "entry", "entries", "3 entries"),
    ],
)
def test_plural_forms(count, noun, plural_noun, expected):
    assert plural(count, noun, plural_noun) == expected


@pytest.mark.parametrize(
    ("file", "row", "expected"),
    [
        ("data/events.csv", 11, "row 11 (line 12)"),
        ("data/EVENTS.CSV.GZ", 1, "row 1 (line 2)"),
        ("data/visits.tsv", 1999, "row 1,999 (line 2,000)"),
        ("data/invoices.parquet", 5, "row 5"),
        ("data/tickets.jsonl", 5, "row 5"),
    ],
)
def test_row_location(file, row, expected):
    assert row_location(file, row) == expected


def test_step_progress_silent_off_terminal(capsys, monkeypatch):
    monkeypatch.delenv("FORCE_COLOR", raising=False)
    monkeypatch.delenv("TTY_COMPATIBLE", raising=False)

    with StepProgress() as progress:
        progress("reading sources")
        progress("scoring")

    assert capsys.readouterr().err == ""


def test_step_progress_draws_on_terminal(capsys, monkeypatch):
    # Rich treats the console as a terminal when FORCE_COLOR is set.
    monkeypatch.setenv("FORCE_COLOR", "1")

    with StepProgress() as progress:
        progress("reading sources")

    assert "reading sources" in capsys.readouterr().err


def test_score_writes_no_progress_to_captured_stderr(project):
    result = succeeded(run("score", "--project", project, "--as-of", AS_OF))

    assert result.stderr == ""


def test_nps_fits_80_columns(tmp_path):
    root = tmp_path / "sample"
    succeeded(run("init", str(root)))
    runner = CliRunner(env={"COLUMNS": "80", "NO_COLOR": "1"})

    nps = runner.invoke(
        app, ["nps", "--project", str(root), "--as-of", "2026-06-01"], prog_name="hs"
    )

    assert nps.exit_code == 0, nps.output
    output = lines(nps.stdout)
    assert max(len(line) for line in output) <= 80
    assert " ".join(output[:2]).startswith(
        "NPS by segment as of 2026-06-01: metric nps_365d, responses from source"
    )


NPS_PROJECT = """name: nps
sources:
  accounts: {kind: accounts, path: accounts.csv, attributes: {region: string}}
  surveys: {kind: surveys, path: surveys.csv}
metrics:
  nps: {type: nps, source: surveys, column: score}
scorecards:
  - name: default
    components:
      voice:
        weight: 1
        measures:
          - {metric: nps, normalize: {method: bounds, min: -100, max: 100}}
"""


def test_nps_without_segment_column_names_by(tmp_path):
    root = tmp_path / "nps"
    root.mkdir()
    (root / "healthscore.yml").write_text(NPS_PROJECT)
    (root / "accounts.csv").write_text("account_id,region\na1,EU\na2,US\n")
    (root / "surveys.csv").write_text(
        "account_id,timestamp,score\na1,2024-03-01 10:00:00,9\n"
        "a2,2024-03-02 10:00:00,3\n"
    )

    result = run("nps", "--project", root, "--as-of", AS_OF)
    by_region = run("nps", "--project", root, "--as-of", AS_OF, "--by", "region")

    assert result.exit_code == 1
    assert " ".join(result.stderr.split()) == (
        "error: --by: the accounts have no column 'segment' (the default of --by); "
        "give --by with one of: region"
    )
    succeeded(by_region)
    assert "NPS by region" in by_region.stdout
