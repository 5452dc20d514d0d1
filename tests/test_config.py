"""Validation of healthscore.yml: every problem with file, line, key and a fix."""

from __future__ import annotations

import textwrap

import pytest

from healthscore.config import ConfigError, load_project
from healthscore.config.models import EngineConfig, parse_duration
from project_factory import ACCOUNTS_CSV

VALID = """\
name: test
sources:
  accounts:
    kind: accounts
    path: accounts.csv
  events:
    kind: events
    path: events.csv
metrics:
  logins:
    type: count
    source: events
    where: event_type == 'login'
    window: 28d
scorecards:
  - name: default
    components:
      usage:
        weight: 1
        measures:
          - metric: logins
            normalize: {method: bounds, min: 0, max: 10}
"""


def issues_of(tmp_path, text, files=None):
    (tmp_path / "accounts.csv").write_text(ACCOUNTS_CSV)
    (tmp_path / "events.csv").write_text("account_id,timestamp,event_type\n")
    for name, content in (files or {}).items():
        (tmp_path / name).write_text(content)
    (tmp_path / "healthscore.yml").write_text(textwrap.dedent(text))
    with pytest.raises(ConfigError) as caught:
        load_project(tmp_path)
    return caught.value.issues


def one_issue(tmp_path, text):
    issues = issues_of(tmp_path, text)
    assert len(issues) == 1, [str(issue) for issue in issues]
    return issues[0]


def test_valid_project_loads(tmp_path):
    (tmp_path / "accounts.csv").write_text(ACCOUNTS_CSV)
    (tmp_path / "events.csv").write_text("account_id,timestamp\n")
    (tmp_path / "healthscore.yml").write_text(VALID)
    project = load_project(tmp_path)
    assert project.config.metrics["logins"].window.length.days == 28


def test_missing_project_file(tmp_path):
    with pytest.raises(
        ConfigError, match="project file not found; run `healthscore init"
    ):
        load_project(tmp_path)


def test_invalid_yaml_names_line(tmp_path):
    issue = one_issue(tmp_path, "name: test\nsources: [unclosed\n")
    assert issue.line == 3
    assert issue.message.startswith("invalid YAML: ")


def test_unknown_key_suggests_intended_key(tmp_path):
    issue = one_issue(tmp_path, VALID.replace("    window: 28d", "    windw: 28d"))
    assert issue.key == "metrics.logins.windw"
    assert issue.line == 14
    assert issue.message == "unknown key"
    assert issue.suggestion == "window"
    assert str(issue).endswith(
        "healthscore.yml:14: metrics.logins.windw: unknown key (did you mean 'window'?)"
    )


def test_unknown_top_level_key_suggests(tmp_path):
    issue = one_issue(tmp_path, VALID + "scorecard: []\n")
    assert issue.key == "scorecard"
    assert issue.suggestion == "scorecards"


def test_unknown_nested_key_in_list_suggests(tmp_path):
    text = VALID.replace("        weight: 1", "        wieght: 1")
    issues = issues_of(tmp_path, text)
    keys = {issue.key: issue for issue in issues}
    assert "scorecards[0].components.usage.wieght" in keys
    assert keys["scorecards[0].components.usage.wieght"].suggestion == "weight"
    weight = keys["scorecards[0].components.usage.weight"]
    assert weight.message == "missing required setting 'weight'"


def test_bad_duration(tmp_path):
    issue = one_issue(tmp_path, VALID.replace("window: 28d", "window: 28 days"))
    assert issue.key == "metrics.logins.window.length"
    assert issue.message == (
        "invalid duration '28 days'; write a whole number with d, w or mo, "
        "for example 28d, 4w or 1mo, or a whole number of days such as 28"
    )


@pytest.mark.parametrize(
    ("text", "days"), [("28", 28), (" 7 ", 7), ("28d", 28), ("2w", 14)]
)
def test_duration_text_without_unit_is_days(text, days):
    duration = parse_duration(text)
    assert duration.amount * {"days": 1, "weeks": 7}[duration.unit] == days


def test_bad_expression(tmp_path):
    text = VALID.replace(
        "where: event_type == 'login'", "where: event_type.lower() == 1"
    )
    issue = one_issue(tmp_path, text)
    assert issue.key == "metrics.logins.where"
    assert issue.line == 13
    assert issue.message.startswith("unsupported syntax 'event_type.lower()'")


def test_unknown_metric_type(tmp_path):
    issue = one_issue(tmp_path, VALID.replace("type: count", "type: countt"))
    assert issue.key == "metrics.logins"
    assert "'countt'" in issue.message
    assert "'count'" in issue.message


def test_unknown_metric_reference_suggests(tmp_path):
    issue = one_issue(tmp_path, VALID.replace("- metric: logins", "- metric: login"))
    assert issue.key == "scorecards[0].components.usage.measures[0].metric"
    assert issue.line == 21
    assert issue.message == "unknown metric 'login'"
    assert issue.suggestion == "logins"


def test_unknown_source_suggests(tmp_path):
    issue = one_issue(tmp_path, VALID.replace("source: events", "source: event"))
    assert issue.key == "metrics.logins.source"
    assert issue.message == "unknown source 'event'"
    assert issue.suggestion == "events"


def test_unknown_column_in_filter(tmp_path):
    issue = one_issue(tmp_path, VALID.replace("event_type ==", "event_typ =="))
    assert issue.key == "metrics.logins.where"
    assert issue.message == "unknown column 'event_typ' of source 'events'"
    assert issue.suggestion == "event_type"


def test_missing_source_file(tmp_path):
    issue = one_issue(tmp_path, VALID.replace("path: events.csv", "path: data/*.csv"))
    assert issue.key == "sources.events.path"
    assert issue.line == 8
    assert issue.message.startswith("no file matches 'data/*.csv'")


def test_unset_environment_variable_in_path(tmp_path, monkeypatch):
    monkeypatch.delenv("HEALTHSCORE_TEST_DATA", raising=False)
    text = VALID.replace("path: events.csv", "path: ${HEALTHSCORE_TEST_DATA}/e.csv")
    issue = one_issue(tmp_path, text)
    assert issue.message == (
        "environment variable HEALTHSCORE_TEST_DATA is not set; set it or write "
        "${HEALTHSCORE_TEST_DATA:-default}"
    )


def test_cycle_between_metrics(tmp_path):
    text = VALID.replace(
        "scorecards:",
        "  a:\n    type: ratio\n    numerator: b\n    denominator: logins\n"
        "  b:\n    type: formula\n    expression: a * 2\nscorecards:",
    )
    issue = one_issue(tmp_path, text)
    assert issue.message == "metrics refer to each other in a cycle: a -> b -> a"


def test_bands_must_cover_range(tmp_path):
    text = VALID + textwrap.dedent(
        """\
        bands:
          - {name: low, label: Low, min: 0, max: 40, color: "#000"}
          - {name: high, label: High, min: 50, max: 100, color: "#fff"}
        """
    )
    issue = one_issue(tmp_path, text)
    assert issue.key == "bands"
    assert issue.message == (
        "bands, listed in any order, must cover 0-100 without gaps or overlaps; no "
        "band covers the scores 41-49 between band 'low' (bands[0], 0-40) and band "
        "'high' (bands[1], 50-100)"
    )


def test_empty_bands_named(tmp_path):
    issue = one_issue(tmp_path, VALID + "bands: []\n")
    assert issue.key == "bands"
    assert issue.message == (
        "no band is listed; list bands that cover the scores 0-100, or remove "
        "bands to use the default at_risk, stable and healthy"
    )


def test_unknown_time_zone(tmp_path):
    issue = one_issue(
        tmp_path, VALID.replace("name: test", "name: test\ntimezone: Mars/Base")
    )
    assert issue.key == "timezone"
    assert issue.message == (
        "unknown time zone 'Mars/Base'; use an IANA name such as UTC or Europe/Berlin"
    )


def test_bounds_need_max_above_min(tmp_path):
    issue = one_issue(tmp_path, VALID.replace("min: 0, max: 10", "min: 10, max: 10"))
    assert issue.key == "scorecards[0].components.usage.measures[0].normalize"
    assert issue.message == (
        "bounds needs max > min, got 10.0..10.0 (the entry sets min: 10, max: 10)"
    )


def test_standard_column_typo_in_mapping(tmp_path):
    text = VALID.replace(
        "    path: events.csv", "    path: events.csv\n    columns: {timestmp: ts}"
    )
    issue = one_issue(tmp_path, text)
    assert issue.key == "sources.events"
    assert issue.message.startswith(
        "'timestmp' is not a standard column of events sources; use one of account_id,"
    )


def test_every_problem_listed_at_once(tmp_path):
    text = VALID.replace("windw", "").replace("window: 28d", "windw: 28d")
    text = text.replace("- metric: logins", "- metric: login")
    issues = issues_of(tmp_path, text)
    # The model problem comes first, then the reference problems of the parts that
    # parsed: `login` is unknown even though the metric `logins` failed.
    assert [issue.key for issue in issues] == [
        "metrics.logins.windw",
        "scorecards[0].components.usage.measures[0].metric",
    ]
    fixed = text.replace("windw: 28d", "window: 28d")
    assert [issue.key for issue in issues_of(tmp_path, fixed)] == [
        "scorecards[0].components.usage.measures[0].metric"
    ]


def test_several_reference_problems_listed_together(tmp_path):
    text = VALID.replace("source: events", "source: event").replace(
        "- metric: logins", "- metric: nothing"
    )
    issues = issues_of(tmp_path, text)
    assert [issue.message for issue in issues] == [
        "unknown source 'event'",
        "unknown metric 'nothing'",
    ]


def test_issue_serializes_for_json(tmp_path):
    issue = one_issue(tmp_path, VALID.replace("windw", "").replace("window:", "windw:"))
    assert issue.to_dict() == {
        "file": str(tmp_path.resolve() / "healthscore.yml"),
        "line": 14,
        "key": "metrics.logins.windw",
        "message": "unknown key",
        "suggestion": "window",
    }


def test_number_column_compared_with_text(tmp_path):
    text = VALID.replace(
        "    path: events.csv", "    path: events.csv\n    attributes: {value: number}"
    ).replace("where: event_type == 'login'", "where: value > 'abc'")
    issue = one_issue(tmp_path, text)
    assert issue.key == "metrics.logins.where"
    assert issue.message == (
        "column 'value' holds numbers but is compared with the text 'abc'; "
        "compare it with a number"
    )


def test_text_column_compared_with_number(tmp_path):
    issue = one_issue(
        tmp_path, VALID.replace("event_type == 'login'", "event_type == 3")
    )
    assert issue.message == (
        "column 'event_type' holds text but is compared with the number 3; "
        "quote the value, as in event_type == '3'"
    )


def test_unknown_column_in_scorecard_condition(tmp_path):
    text = VALID.replace(
        "  - name: default\n", "  - name: default\n    when: segmnt == 'smb'\n"
    )
    issue = one_issue(tmp_path, text)
    assert issue.key == "scorecards[0].when"
    assert issue.message == "unknown account column or metric 'segmnt'"
    assert issue.suggestion == "segment"


def test_unknown_grouping_column(tmp_path):
    text = VALID.replace(
        "normalize: {method: bounds, min: 0, max: 10}",
        "normalize: {method: percentile, within: segmnt}",
    )
    issue = one_issue(tmp_path, text)
    assert issue.key == "scorecards[0].components.usage.measures[0].normalize.within"
    assert issue.suggestion == "segment"


def test_file_not_utf8(tmp_path):
    (tmp_path / "healthscore.yml").write_bytes(b"name: caf\xe9\n")
    with pytest.raises(ConfigError) as caught:
        load_project(tmp_path)
    (issue,) = caught.value.issues
    assert issue.message == "the file is not UTF-8 text (byte 9); save it as UTF-8"


MONITORED = VALID + textwrap.dedent(
    """\
    alerts:
      rules:
        - {name: into_risk, kind: band_change, to: at_rsk}
        - {name: quiet, kind: metric, condition: "logns >= 14"}
        - name: drops
          kind: drop
          points: 10
          within: 30d
          escalation:
            when: "arrr >= 50000"
            escalate_to: vp@example.com
    playbooks:
      - name: rescue
        on_alert: into_rsk
        when: "bandd == 'at_risk'"
        task:
          title: "Call {account_id} about {nofield}"
          owner: owner
    """
)


def test_alert_rule_and_playbook_names_checked(tmp_path):
    issues = {issue.key: issue for issue in issues_of(tmp_path, MONITORED)}
    assert issues["alerts.rules[0].to"].message.startswith("unknown band 'at_rsk'")
    assert issues["alerts.rules[0].to"].suggestion == "at_risk"
    quiet = issues["alerts.rules[1].condition"]
    assert quiet.message == "unknown account column or metric 'logns'"
    assert quiet.suggestion == "logins"
    escalation = issues["alerts.rules[2].escalation.when"]
    assert escalation.message == "unknown account column or metric 'arrr'"
    assert (
        escalation.line
        == MONITORED.splitlines().index('        when: "arrr >= 50000"') + 1
    )
    assert issues["playbooks[0].on_alert"].suggestion == "into_risk"
    assert issues["playbooks[0].when"].suggestion == "band"
    title = issues["playbooks[0].task.title"]
    assert title.message == "unknown template field {nofield}"


@pytest.mark.parametrize("size", ["abc", "0", "10000", "-1GB", "0GB", "4 potatoes"])
def test_memory_limit_must_be_a_size(tmp_path, size):
    issue = one_issue(tmp_path, VALID + f"engine: {{memory_limit: '{size}'}}\n")
    assert issue.key == "engine.memory_limit"
    assert f"{size!r} is not a memory size" in issue.message
    assert "4GB, 1500MB" in issue.message


# DuckDB shows the limit in GiB with one decimal, cut off: 3e9 bytes are 2.79 GiB.
@pytest.mark.parametrize(
    ("size", "shown"),
    [
        ("3GB", "2.7 GiB"),
        ("1500MB", "1.3 GiB"),
        ("1.5 GiB", "1.5 GiB"),
        ("2000000000 bytes", "1.8 GiB"),
    ],
)
def test_memory_limit_sizes_applied(tmp_path, size, shown):
    from healthscore.engine import connect

    (tmp_path / "accounts.csv").write_text(ACCOUNTS_CSV)
    (tmp_path / "events.csv").write_text("account_id,timestamp\n")
    text = VALID + f"engine: {{memory_limit: '{size}'}}\n"
    (tmp_path / "healthscore.yml").write_text(text)
    connection = connect(load_project(tmp_path))
    setting = connection.con.execute("SELECT current_setting('memory_limit')")
    assert setting.fetchone() == (shown,)


WRONG_TYPES = [
    (
        VALID.replace("        weight: 1", "        weight: thirty"),
        "scorecards[0].components.usage.weight",
        "expected a number, got the text 'thirty'",
    ),
    (
        VALID + "outcomes:\n  observed_until: 30/06/2026\n",
        "outcomes.observed_until",
        "expected a date as YYYY-MM-DD, got the text '30/06/2026'",
    ),
    (
        VALID + "report:\n  riskiest: 2.5\n",
        "report.riskiest",
        "expected a whole number, got the number 2.5",
    ),
    (
        VALID.replace("    components:", "    min_coverage: 1.5\n    components:"),
        "scorecards[0].min_coverage",
        "expected a number of at most 1, got the number 1.5",
    ),
    (
        VALID + "as_of_point: noon\n",
        "as_of_point",
        "expected 'start_of_day' or 'end_of_day', got the text 'noon'",
    ),
]


@pytest.mark.parametrize(("text", "key", "message"), WRONG_TYPES)
def test_wrong_type_says_expected(tmp_path, text, key, message):
    issue = one_issue(tmp_path, text)
    assert issue.key == key
    assert issue.message == message


def test_band_without_label_names_setting(tmp_path):
    bands = (
        "bands:\n"
        "  - {name: low, label: Low, min: 0, max: 50, color: '#D55E00'}\n"
        "  - {name: high, min: 51, max: 100, color: '#0072B2'}\n"
    )
    issue = one_issue(tmp_path, VALID + bands)
    assert issue.key == "bands[1].label"
    assert issue.line == 25
    assert issue.message == "missing required setting 'label'"


@pytest.mark.parametrize("size", ["4B", "1KB", "383KiB", "0.3MB"])
def test_memory_limit_below_minimum(tmp_path, size):
    issue = one_issue(tmp_path, VALID + f"engine: {{memory_limit: '{size}'}}\n")
    assert issue.key == "engine.memory_limit"
    assert f"{size!r} is below the minimum of 384KiB" in issue.message
    assert "write a size such as 1GB" in issue.message


@pytest.mark.parametrize("size", ["384KiB", "393216 bytes", "1MB", "0.5%"])
def test_memory_limit_minimum_accepted(size):
    assert EngineConfig(memory_limit=size).memory_limit == size


def test_memory_limit_minimum_reads_csv(tmp_path):
    """DuckDB reads a small CSV file with the minimum limit, and fails with one
    block of 256 KiB less."""
    import duckdb

    path = tmp_path / "rows.csv"
    path.write_text("a,b\n1,x\n2,y\n")
    rows = {}
    for size in ("384KiB", "128KiB"):
        con = duckdb.connect()
        try:
            con.execute("SET memory_limit = ?", [size])
            rows[size] = con.execute(
                "SELECT * FROM read_csv(?)", [str(path)]
            ).fetchall()
        except duckdb.OutOfMemoryException:
            rows[size] = None
        finally:
            con.close()
    assert rows["384KiB"] == [(1, "x"), (2, "y")]
    assert rows["128KiB"] is None
