"""Type checks of conditions and normalizations that the project file makes possible.

The declared types of source columns and the types of metrics tell, before any data
is read, whether a condition gives true or false and whether a measure's values are
numbers. A project that passes `healthscore validate` must not fail `healthscore
score` on such a mistake, so each case below is rejected by the loader with its
file, line and key, and the accepted variants score.
"""

from __future__ import annotations

from datetime import date
from pathlib import Path

import pytest

from healthscore.config import ConfigError, ConfigIssue, load_project
from healthscore.pipeline import score

ACCOUNTS = """\
account_id,segment,seats,contract_start,region,trial
a1,enterprise,10,2025-01-15,EU,false
a2,smb,5,2025-06-01,US,true
a3,smb,2,2025-07-01,APAC,false
"""
EVENTS = """\
account_id,timestamp,event_type,plan
a1,2026-03-01 09:00:00,login,pro
a1,2026-03-02 09:00:00,export,pro
a2,2026-03-03 09:00:00,login,basic
"""

# Line numbers matter: the tests assert the line of each problem.
PROJECT = """\
name: types
sources:
  accounts:
    kind: accounts
    path: accounts.csv
    attributes: {region: string, trial: boolean}
  events:
    kind: events
    path: events.csv
    attributes: {plan: string}
metrics:
  logins_28d: {type: count, source: events, window: 28d, where: "event_type == 'login'"}
  region: {type: attribute, column: region}
  started: {type: attribute, column: contract_start}
  last_plan: {type: latest, source: events, column: plan}
  last_seen: {type: latest, source: events, column: timestamp}
scorecards:
  - name: main
    when: segment == 'enterprise' or seats > 3
    components:
      usage:
        weight: 1
        measures:
          - {metric: logins_28d, normalize: {method: bounds, min: 0, max: 10}}
          - {metric: region, normalize: {method: categories, scores: {EU: 80}}}
"""

#: Key path of the second measure's normalization method, and its line.
METHOD = "scorecards[0].components.usage.measures[1].normalize.method"
METHOD_LINE = 25


def write(root: Path, text: str) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    (root / "accounts.csv").write_text(ACCOUNTS, encoding="utf-8")
    (root / "events.csv").write_text(EVENTS, encoding="utf-8")
    (root / "healthscore.yml").write_text(text, encoding="utf-8")
    return root


def issues_of(root: Path, text: str) -> dict[str, ConfigIssue]:
    with pytest.raises(ConfigError) as caught:
        load_project(write(root, text))
    issues = caught.value.issues
    by_key = {issue.key: issue for issue in issues}
    assert len(by_key) == len(issues), [str(issue) for issue in issues]
    return by_key


def second_measure(text: str) -> str:
    """PROJECT with `text` in place of the second measure's settings."""
    return PROJECT.replace(
        "{metric: region, normalize: {method: categories, scores: {EU: 80}}}", text
    )


def test_base_project_validates_and_scores(tmp_path: Path) -> None:
    project = load_project(write(tmp_path, PROJECT))

    run = score(project, date(2026, 3, 10), store=False)

    scores = run.result.scores.set_index("account_id")
    # a1: 1 login of 10 -> 10, region EU -> 80; mean 45. a2 matches by seats: 1
    # login -> 10, region US unlisted -> no score, so 10 on the half that has data.
    assert scores.loc["a1", "score"] == pytest.approx(45.0)
    assert scores.loc["a2", "score"] == pytest.approx(10.0)
    assert scores.loc["a1", "scorecard"] == "main"


def test_bounds_of_text_attribute_rejected(tmp_path: Path) -> None:
    text = second_measure(
        "{metric: region, normalize: {method: bounds, min: 0, max: 1}}"
    )

    issues = issues_of(tmp_path, text)

    assert set(issues) == {METHOD}
    issue = issues[METHOD]
    assert issue.line == METHOD_LINE
    assert issue.message == (
        "metric 'region' contains text (column 'region' of source 'accounts' is of "
        "type string), but method bounds needs numbers; use method categories with "
        "a score for each value, or declare the column as number if it holds numbers"
    )


@pytest.mark.parametrize("method", ["percentile", "zscore", "target", "steps"])
def test_numeric_methods_of_text_rejected(tmp_path: Path, method: str) -> None:
    settings = {
        "percentile": "{method: percentile}",
        "zscore": "{method: zscore}",
        "target": "{method: target, target: 5}",
        "steps": "{method: steps, steps: [{from: 0, score: 10}]}",
    }[method]
    text = second_measure(f"{{metric: last_plan, normalize: {settings}}}")

    issues = issues_of(tmp_path, text)

    assert set(issues) == {METHOD}
    assert issues[METHOD].message.startswith(
        "metric 'last_plan' contains text (column 'plan' of source 'events' is of "
        f"type string), but method {method} needs numbers"
    )


@pytest.mark.parametrize(
    ("metric", "words", "column", "source", "kind"),
    [
        ("started", "dates", "contract_start", "accounts", "date"),
        ("last_seen", "timestamps", "timestamp", "events", "timestamp"),
    ],
)
def test_numeric_method_of_dates_rejected(
    tmp_path: Path, metric: str, words: str, column: str, source: str, kind: str
) -> None:
    text = second_measure(f"{{metric: {metric}, normalize: {{method: percentile}}}}")

    issues = issues_of(tmp_path, text)

    assert set(issues) == {METHOD}
    assert issues[METHOD].message == (
        f"metric {metric!r} contains {words} (column {column!r} of source "
        f"{source!r} is of type {kind}), but method percentile needs numbers; "
        "score a number of days instead, such as a days_since metric"
    )


def test_when_of_bare_text_column_rejected(tmp_path: Path) -> None:
    text = PROJECT.replace("when: segment == 'enterprise' or seats > 3", "when: region")

    issues = issues_of(tmp_path, text)

    assert set(issues) == {"scorecards[0].when"}
    issue = issues["scorecards[0].when"]
    assert issue.line == 19
    assert issue.message == (
        "the condition gives text instead of true or false; write a comparison, "
        "such as region == 'value'"
    )


def test_when_comparing_number_with_text(tmp_path: Path) -> None:
    text = PROJECT.replace(
        "when: segment == 'enterprise' or seats > 3", "when: seats > 'x'"
    )

    issues = issues_of(tmp_path, text)

    assert set(issues) == {"scorecards[0].when"}
    assert issues["scorecards[0].when"].message == (
        "account column 'seats' holds numbers but is compared with the text 'x'; "
        "compare it with a number"
    )


@pytest.mark.parametrize(
    ("condition", "message"),
    [
        (
            "region > 3",
            "metric 'region' holds text but is compared with the number 3; quote "
            "the value, as in region == '3'",
        ),
        (
            "segment == 'smb' and seats",
            "'seats' gives numbers, but and, or and not need true or false; write "
            "a comparison, such as seats > 0",
        ),
        (
            "not started",
            "'started' gives dates, but and, or and not need true or false; write "
            "a comparison, such as started is not None",
        ),
        (
            "seats == region",
            "account column 'seats' holds numbers but is compared with metric "
            "'region', which holds text; compare values of one kind",
        ),
        (
            "trial == 'yes'",
            "account column 'trial' holds true or false values but is compared "
            "with the text 'yes'; compare it with true or false",
        ),
        (
            "contract_start > 3",
            "account column 'contract_start' holds dates but is compared with the "
            "number 3; compare it with a date as text, as in contract_start > "
            "'2026-01-01'",
        ),
        (
            "seats + region == 'x'",
            "'seats + region' computes with 'region', which gives text; + - * / "
            "need numbers",
        ),
        (
            "seats * 2",
            "the condition gives numbers instead of true or false; write a "
            "comparison, such as seats * 2 > 0",
        ),
    ],
)
def test_when_type_mistakes(tmp_path: Path, condition: str, message: str) -> None:
    text = PROJECT.replace(
        "when: segment == 'enterprise' or seats > 3", f'when: "{condition}"'
    )

    issues = issues_of(tmp_path, text)

    assert set(issues) == {"scorecards[0].when"}
    assert issues["scorecards[0].when"].message == message


@pytest.mark.parametrize(
    "condition",
    [
        "region == 'EU' and not seats < 3",
        "seats in [5, 10] or region in ['EU', 'US']",
        "started is not None",
        "contract_start > '2025-03-01' and trial == False",
        "seats * 2 > logins_28d",
        "segment == region",
    ],
)
def test_well_typed_when_accepted(tmp_path: Path, condition: str) -> None:
    text = PROJECT.replace(
        "when: segment == 'enterprise' or seats > 3", f'when: "{condition}"'
    )

    project = load_project(write(tmp_path, text))

    run = score(project, date(2026, 3, 10), store=False)
    assert len(run.result.scores) == 3


def test_where_of_bare_text_column_rejected(tmp_path: Path) -> None:
    text = PROJECT.replace("where: \"event_type == 'login'\"", "where: event_type")

    issues = issues_of(tmp_path, text)

    assert set(issues) == {"metrics.logins_28d.where"}
    issue = issues["metrics.logins_28d.where"]
    assert issue.line == 12
    assert issue.message == (
        "the condition gives text instead of true or false; write a comparison, "
        "such as event_type == 'value'"
    )


def test_alert_and_playbook_conditions_checked(tmp_path: Path) -> None:
    text = PROJECT + (
        "alerts:\n"
        "  rules:\n"
        "    - name: low\n"
        "      kind: metric\n"
        "      condition: score > 'low'\n"  # 30
        "playbooks:\n"
        "  - name: call\n"
        "    when: region\n"  # 33
        "    task: {title: 'Call {account_id}'}\n"
    )

    issues = issues_of(tmp_path, text)

    assert set(issues) == {"alerts.rules[0].condition", "playbooks[0].when"}
    assert issues["alerts.rules[0].condition"].line == 30
    assert issues["alerts.rules[0].condition"].message == (
        "column 'score' holds numbers but is compared with the text 'low'; "
        "compare it with a number"
    )
    assert issues["playbooks[0].when"].line == 33
    assert issues["playbooks[0].when"].message == (
        "the condition gives text instead of true or false; write a comparison, "
        "such as region == 'value'"
    )


def with_derived(settings: str) -> str:
    """PROJECT with a metric `derived` of `settings` added at line 16."""
    return PROJECT.replace("  last_seen:", f"  derived: {settings}\n  last_seen:")


@pytest.mark.parametrize(
    ("expression", "message"),
    [
        (
            "region * 2",
            "metric 'region' contains text (column 'region' of source 'accounts' is "
            "of type string), but a formula computes with numbers; declare the "
            "column as number if it holds numbers, or score the text in a scorecard "
            "with method categories",
        ),
        (
            "logins_28d + last_plan",
            "metric 'last_plan' contains text (column 'plan' of source 'events' is "
            "of type string), but a formula computes with numbers; declare the "
            "column as number if it holds numbers, or score the text in a scorecard "
            "with method categories",
        ),
        (
            "logins_28d - started",
            "metric 'started' contains dates (column 'contract_start' of source "
            "'accounts' is of type date), but a formula computes with numbers; "
            "compute a number of days instead, such as a days_since metric",
        ),
    ],
)
def test_formula_of_text_rejected(
    tmp_path: Path, expression: str, message: str
) -> None:
    text = with_derived(f'{{type: formula, expression: "{expression}"}}')

    issues = issues_of(tmp_path, text)

    assert set(issues) == {"metrics.derived.expression"}
    issue = issues["metrics.derived.expression"]
    assert issue.line == 16
    assert issue.message == message
    assert issue.file == str(tmp_path / "healthscore.yml")


def test_ratio_of_text_rejected(tmp_path: Path) -> None:
    text = with_derived("{type: ratio, numerator: logins_28d, denominator: region}")

    issues = issues_of(tmp_path, text)

    assert set(issues) == {"metrics.derived.denominator"}
    assert issues["metrics.derived.denominator"].line == 16
    assert issues["metrics.derived.denominator"].message.startswith(
        "metric 'region' contains text (column 'region' of source 'accounts' is of "
        "type string), but a ratio divides numbers;"
    )


def test_formula_of_numbers_scores(tmp_path: Path) -> None:
    text = with_derived('{type: formula, expression: "logins_28d * 2 + 1"}')
    project = load_project(write(tmp_path, text))

    run = score(project, date(2026, 3, 10), store=False)

    values = run.metrics.values["derived"]
    assert values.to_dict() == {"a1": 3.0, "a2": 3.0, "a3": 1.0}
