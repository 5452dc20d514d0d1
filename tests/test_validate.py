"""`healthscore validate`: model and reference problems of healthscore.yml in one run.

A setting that fails its model, such as a channel of an unknown type, must not hide
the reference problems of the other settings, such as an unknown band or metric.
The projects below mix both kinds. Each problem is listed once with its line, and no
name is reported as unknown only because its definition failed.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner, Result

from healthscore.cli import app
from healthscore.config import ConfigError, ConfigIssue, load_project

ACCOUNTS = "account_id,name,owner,arr\na1,Acme,alice,120000\n"
EVENTS = "account_id,timestamp,event_type\na1,2024-03-10 09:00:00,login\n"

# Line numbers matter: the tests assert the line of each problem.
PROJECT = """\
name: mixed
sources:
  accounts:
    kind: accounts
    path: accounts.csv
  events:
    kind: events
    path: events.csv
metrics:
  logins_28d:
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
          - metric: logins_28d
            normalize: {method: bounds, min: 0, max: 10}
alerts:
  channels:
    team:
      type: pager
      url: https://hooks.example.com/team
  rules:
    - name: fell_to_risk
      kind: band_change
      to: at_rsk
      channels: [team]
    - name: quiet
      kind: metric
      condition: logins_7d < 1 and arr > 1000
"""


def write(root: Path, text: str) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    (root / "accounts.csv").write_text(ACCOUNTS, encoding="utf-8")
    (root / "events.csv").write_text(EVENTS, encoding="utf-8")
    (root / "healthscore.yml").write_text(text, encoding="utf-8")
    return root


def issues_of(root: Path) -> list[ConfigIssue]:
    with pytest.raises(ConfigError) as caught:
        load_project(root)
    return caught.value.issues


def keyed(issues: list[ConfigIssue]) -> dict[str, ConfigIssue]:
    by_key = {issue.key: issue for issue in issues}
    assert len(by_key) == len(issues), [str(issue) for issue in issues]
    return by_key


def run(*args: str | Path) -> Result:
    runner = CliRunner(env={"COLUMNS": "200", "NO_COLOR": "1"})
    return runner.invoke(app, [str(arg) for arg in args], prog_name="healthscore")


def test_validate_lists_model_and_reference_problems(tmp_path: Path) -> None:
    root = write(tmp_path / "p", PROJECT)
    file = root / "healthscore.yml"

    result = run("validate", "--project", root)

    assert result.exit_code == 1
    output = " ".join(result.output.split())
    assert "3 problems in the project" in output
    assert f"{file}:25: alerts.channels.team: Input tag 'pager'" in output
    assert (
        f"{file}:31: alerts.rules[0].to: unknown band 'at_rsk'; the bands are "
        "at_risk, healthy, stable (did you mean 'at_risk'?)"
    ) in output
    assert (
        f"{file}:35: alerts.rules[1].condition: unknown account column or metric "
        "'logins_7d' (did you mean 'logins_28d'?)"
    ) in output


def test_validate_json_lists_all_three(tmp_path: Path) -> None:
    root = write(tmp_path / "p", PROJECT)

    result = run("validate", "--project", root, "--json")

    assert result.exit_code == 1
    data = json.loads(result.stdout)
    assert data["valid"] is False
    assert [(issue["line"], issue["key"]) for issue in data["issues"]] == [
        (25, "alerts.channels.team"),
        (31, "alerts.rules[0].to"),
        (35, "alerts.rules[1].condition"),
    ]


def test_failed_channel_not_reported_unknown(tmp_path: Path) -> None:
    issues = issues_of(write(tmp_path / "p", PROJECT))

    assert not [issue for issue in issues if "channel" in issue.message]
    assert "alerts.rules[0].channels[0]" not in keyed(issues)


def test_unknown_channel_named_at_rule(tmp_path: Path) -> None:
    text = PROJECT.replace("      type: pager", "      type: slack").replace(
        "channels: [team]", "channels: [teams]"
    )
    issues = keyed(issues_of(write(tmp_path / "p", text)))

    issue = issues["alerts.rules[0].channels[0]"]
    assert issue.line == 32
    assert issue.message == "unknown channel 'teams'; the channels are team"
    assert issue.suggestion == "team"
    assert set(issues) == {
        "alerts.rules[0].channels[0]",
        "alerts.rules[0].to",
        "alerts.rules[1].condition",
    }


def test_failed_metric_not_reported_unknown(tmp_path: Path) -> None:
    # logins_28d fails (no such metric type), so the measure and the condition that
    # use it must not call it unknown. The unknown band is still reported.
    text = PROJECT.replace("    type: count", "    type: cuont").replace(
        "logins_7d < 1", "logins_28d < 1"
    )
    issues = keyed(issues_of(write(tmp_path / "p", text)))

    assert set(issues) == {
        "metrics.logins_28d",
        "alerts.channels.team",
        "alerts.rules[0].to",
    }
    assert issues["metrics.logins_28d"].suggestion == "count"


def test_failed_accounts_source_hides_column_checks(tmp_path: Path) -> None:
    # With the accounts source failed, its columns are unknown: `logins_7d` may be
    # one of them, so the condition is not checked. The missing accounts source is
    # a consequence of the same problem.
    text = PROJECT.replace("    kind: accounts", "    kind: acounts")
    issues = keyed(issues_of(write(tmp_path / "p", text)))

    assert set(issues) == {
        "sources.accounts.kind",
        "alerts.channels.team",
        "alerts.rules[0].to",
    }
    assert issues["sources.accounts.kind"].suggestion == "accounts"


def test_later_rule_keeps_its_place(tmp_path: Path) -> None:
    # The first rule fails, so the partial settings contain one rule fewer. The
    # problem of the rule after it must still name rules[1] and its line.
    text = PROJECT.replace("      kind: band_change", "      kind: band_chnage")
    issues = keyed(issues_of(write(tmp_path / "p", text)))

    assert set(issues) == {
        "alerts.channels.team",
        "alerts.rules[0]",
        "alerts.rules[1].condition",
    }
    assert issues["alerts.rules[1].condition"].line == 35


def test_playbook_names_unknown_rule(tmp_path: Path) -> None:
    text = PROJECT + (
        "playbooks:\n"
        "  - name: call\n"
        "    on_alert: fell_to_risc\n"
        "    addresses: [usage, adoption]\n"
        "    task: {title: 'Call {account_id}'}\n"
        "  - name: rescue\n"
        "    on_alert: quiet\n"
        "    task: {title: 'Rescue {account_id}'}\n"
    )
    issues = keyed(issues_of(write(tmp_path / "p", text)))

    assert issues["playbooks[0].on_alert"].line == 38
    assert issues["playbooks[0].on_alert"].suggestion == "fell_to_risk"
    assert issues["playbooks[0].addresses[1]"].line == 39
    assert issues["playbooks[0].addresses[1]"].message == (
        "'adoption' is not a measure or component of any scorecard; use one of: "
        "logins_28d, usage"
    )
    assert "playbooks[1].on_alert" not in issues


def test_valid_parts_of_failed_rule_unchecked(tmp_path: Path) -> None:
    # A playbook that names a rule whose settings failed gets no unknown-rule issue.
    text = PROJECT.replace("      kind: metric", "      kind: metrik") + (
        "playbooks:\n"
        "  - name: rescue\n"
        "    on_alert: quiet\n"
        "    task: {title: 'Rescue {account_id}'}\n"
    )
    issues = keyed(issues_of(write(tmp_path / "p", text)))

    assert set(issues) == {
        "alerts.channels.team",
        "alerts.rules[1]",
        "alerts.rules[0].to",
    }


def test_failed_bands_still_define_names(tmp_path: Path) -> None:
    # The bands leave a gap, so the defaults replace them in the partial settings.
    # `at_rsk` is one of the file's bands and must not be called unknown.
    bands = (
        "bands:\n"
        "  - {name: at_rsk, label: At risk, min: 0, max: 40, color: red}\n"
        "  - {name: fine, label: Fine, min: 50, max: 100, color: blue}\n"
    )
    issues = keyed(issues_of(write(tmp_path / "p", PROJECT + bands)))

    assert set(issues) == {
        "alerts.channels.team",
        "bands",
        "alerts.rules[1].condition",
    }
    assert issues["bands"].line == 36


def test_misspelt_section_hides_its_names(tmp_path: Path) -> None:
    # The rules are under a misspelt key, so a playbook that names one gets no
    # unknown-rule issue. The metric that the playbook names is still checked.
    text = PROJECT.replace("  rules:", "  rulez:") + (
        "playbooks:\n"
        "  - name: rescue\n"
        "    on_alert: quiet\n"
        "    when: logins_7d < 1\n"
        "    task: {title: 'Rescue {account_id}'}\n"
    )
    issues = keyed(issues_of(write(tmp_path / "p", text)))

    assert set(issues) == {
        "alerts.channels.team",
        "alerts.rulez",
        "playbooks[0].when",
    }
    assert issues["alerts.rulez"].suggestion == "rules"
    assert issues["playbooks[0].when"].line == 39


def test_missing_sources_hide_source_checks(tmp_path: Path) -> None:
    # Without `sources`, the metric's source and the account columns are unknown, so
    # neither they nor the condition are checked. A measure names metrics only, so
    # its unknown metric is reported, as is the unknown band.
    start = PROJECT.index("sources:")
    text = PROJECT[:start] + PROJECT[PROJECT.index("metrics:") :]
    text = text.replace("- metric: logins_28d", "- metric: logins_7d")
    issues = keyed(issues_of(write(tmp_path / "p", text)))

    assert set(issues) == {
        "sources",
        "scorecards[0].components.usage.measures[0].metric",
        "alerts.channels.team",
        "alerts.rules[0].to",
    }
    assert issues["sources"].message == "missing required setting 'sources'"


# PROJECT with its three problems fixed; the tests below add one kind of problem.
VALID = (
    PROJECT.replace("type: pager", "type: slack")
    .replace("to: at_rsk", "to: at_risk")
    .replace("logins_7d < 1", "logins_28d < 1")
)


def with_metrics(text: str) -> str:
    """Return VALID with `text` added to the metrics, from line 15 on."""
    return VALID.replace("scorecards:\n", text + "scorecards:\n", 1)


def test_valid_base_project_passes(tmp_path: Path) -> None:
    project = load_project(write(tmp_path / "p", VALID))

    assert list(project.config.metrics) == ["logins_28d"]


def test_impossible_dates_listed_with_others(tmp_path: Path) -> None:
    text = PROJECT + (
        "outcomes:\n  observed_until: 2026-13-01\nextra:\n  x: 2025-02-29\n"
    )
    issues = keyed(issues_of(write(tmp_path / "p", text)))

    assert set(issues) == {
        "outcomes.observed_until",
        "extra",
        "extra.x",
        "alerts.channels.team",
        "alerts.rules[0].to",
        "alerts.rules[1].condition",
    }
    assert issues["outcomes.observed_until"].line == 37
    assert issues["outcomes.observed_until"].message.startswith(
        "'2026-13-01' is not a valid date"
    )
    assert issues["extra.x"].line == 39
    assert issues["extra.x"].message.startswith("'2025-02-29' is not a valid date")
    assert issues["extra"].message == "unknown key"


def test_valid_date_still_read(tmp_path: Path) -> None:
    text = VALID + "outcomes:\n  observed_until: 2024-02-29\n"
    project = load_project(write(tmp_path / "p", text))

    assert str(project.config.outcomes.observed_until) == "2024-02-29"


def test_impossible_date_in_json_output(tmp_path: Path) -> None:
    root = write(tmp_path / "p", VALID + "outcomes: {observed_until: 2026-13-01}\n")

    result = run("validate", "--project", root, "--json")

    assert result.exit_code == 1
    data = json.loads(result.stdout)
    assert [(issue["line"], issue["key"]) for issue in data["issues"]] == [
        (36, "outcomes.observed_until")
    ]
    assert "not a valid date" in data["issues"][0]["message"]


def test_duplicate_keys_each_reported(tmp_path: Path) -> None:
    text = with_metrics(
        "  logins_28d:\n    type: count\n    source: events\n    window: 7d\n"
    )
    text = text.replace("  events:\n", "  events:\n    kind: events\n", 1)
    text += "name: again\n"
    issues = keyed(issues_of(write(tmp_path / "p", text)))

    assert set(issues) == {"metrics.logins_28d", "sources.events.kind", "name"}
    assert issues["metrics.logins_28d"].line == 16
    assert issues["metrics.logins_28d"].message.startswith(
        "key 'logins_28d' appears twice, first at line 11"
    )
    assert issues["sources.events.kind"].line == 8
    assert "first at line 7" in issues["sources.events.kind"].message
    assert issues["name"].line == 41
    assert "first at line 1" in issues["name"].message


def test_duplicate_section_listed_with_others(tmp_path: Path) -> None:
    text = PROJECT + "metrics:\n  other:\n    type: count\n    source: events\n"
    issues = keyed(issues_of(write(tmp_path / "p", text)))

    assert issues["metrics"].line == 36
    assert "key 'metrics' appears twice, first at line 9" in issues["metrics"].message
    assert "alerts.channels.team" in issues


@pytest.mark.parametrize("kind", ["sum", "mean", "min", "max"])
def test_aggregate_of_text_column(tmp_path: Path, kind: str) -> None:
    text = with_metrics(
        f"  kinds:\n    type: {kind}\n    source: events\n    column: event_type\n"
    )
    issues = keyed(issues_of(write(tmp_path / "p", text)))

    assert set(issues) == {"metrics.kinds.column"}
    assert issues["metrics.kinds.column"].line == 18
    assert issues["metrics.kinds.column"].message == (
        f"column 'event_type' of source 'events' contains text, but {kind} needs "
        "a number column; use one of: value"
    )


def test_aggregate_of_text_attribute(tmp_path: Path) -> None:
    text = with_metrics(
        "  plans:\n    type: sum\n    source: events\n    column: plan\n"
    )
    text = text.replace(
        "    path: events.csv\n",
        "    path: events.csv\n    attributes: {plan: string}\n",
    )
    issues = keyed(issues_of(write(tmp_path / "p", text)))

    assert set(issues) == {"metrics.plans.column"}
    assert "contains text, but sum needs a number column" in (
        issues["metrics.plans.column"].message
    )


@pytest.mark.parametrize(
    ("base", "what"),
    [
        ("    type: days_since\n    source: events\n", "is of type days_since"),
        ("    type: count\n    source: events\n", "has no window"),
        ("    type: change\n    of: logins_28d\n", "is of type change"),
    ],
)
def test_change_of_unwindowed_metric(tmp_path: Path, base: str, what: str) -> None:
    text = with_metrics(f"  base:\n{base}  trend:\n    type: change\n    of: base\n")
    issues = keyed(issues_of(write(tmp_path / "p", text)))

    assert set(issues) == {"metrics.trend.of"}
    assert issues["metrics.trend.of"].line == 20
    assert issues["metrics.trend.of"].message.startswith(f"metric 'base' {what}, ")
    assert "(logins_28d)" in issues["metrics.trend.of"].message


def test_change_of_windowed_metric_passes(tmp_path: Path) -> None:
    text = with_metrics("  trend:\n    type: change\n    of: logins_28d\n")

    assert "trend" in load_project(write(tmp_path / "p", text)).config.metrics


def test_milestone_start_column_checked(tmp_path: Path) -> None:
    text = with_metrics(
        "  to_login:\n"
        "    type: days_to_milestone\n"
        "    source: events\n"
        "    start_column: contract_begin\n"
        "  to_owner:\n"
        "    type: days_to_milestone\n"
        "    source: events\n"
        "    start_column: owner\n"
        "  to_renewal:\n"
        "    type: days_to_milestone\n"
        "    source: events\n"
        "    start_column: contract_start\n"
    )
    issues = keyed(issues_of(write(tmp_path / "p", text)))

    assert set(issues) == {
        "metrics.to_login.start_column",
        "metrics.to_owner.start_column",
    }
    unknown = issues["metrics.to_login.start_column"]
    assert unknown.line == 18
    assert unknown.message.startswith("unknown column 'contract_begin' of the accounts")
    assert unknown.suggestion == "contract_start"
    text_column = issues["metrics.to_owner.start_column"]
    assert text_column.line == 22
    assert text_column.message.startswith(
        "column 'owner' of the accounts source is of type string, but start_column "
        "needs a date or timestamp column"
    )


@pytest.mark.parametrize(
    "metric",
    [
        "    type: count\n",
        "    type: distinct_count\n    column: owner\n",
        "    type: sum\n    column: arr\n",
        "    type: latest\n    column: arr\n",
        "    type: days_since\n",
    ],
)
def test_row_metric_on_accounts_source(tmp_path: Path, metric: str) -> None:
    text = with_metrics(f"  rows:\n    source: accounts\n{metric}")
    issues = keyed(issues_of(write(tmp_path / "p", text)))

    assert set(issues) == {"metrics.rows.source"}
    assert issues["metrics.rows.source"].line == 16
    assert issues["metrics.rows.source"].message.startswith(
        "source 'accounts' is the accounts source, which has one row per account"
    )


def test_guard_source_checked(tmp_path: Path) -> None:
    text = VALID + "  guard:\n    max_age: {event: 2d, accounts: 1d, events: 2d}\n"
    issues = keyed(issues_of(write(tmp_path / "p", text)))

    assert set(issues) == {
        "alerts.guard.max_age.event",
        "alerts.guard.max_age.accounts",
    }
    unknown = issues["alerts.guard.max_age.event"]
    assert unknown.line == 37
    assert unknown.message.startswith("unknown source 'event'")
    assert unknown.suggestion == "events"
    assert "have no date" in issues["alerts.guard.max_age.accounts"].message


def test_validation_files_and_columns_checked(tmp_path: Path) -> None:
    text = VALID + (
        "validation:\n"
        "  shadow: [proposed.yml, missing.yml]\n"
        "  label_column: {column: churned}\n"
    )
    root = write(tmp_path / "p", text)
    (root / "proposed.yml").write_text("scorecards: []\n", encoding="utf-8")
    issues = keyed(issues_of(root))

    assert set(issues) == {
        "validation.shadow[1]",
        "validation.label_column.column",
    }
    assert issues["validation.shadow[1]"].line == 37
    assert issues["validation.shadow[1]"].message.startswith(
        f"shadow scorecard file 'missing.yml' not found (relative to {root})"
    )
    assert issues["validation.label_column.column"].line == 38
    assert issues["validation.label_column.column"].message.startswith(
        "unknown column 'churned' of the accounts source"
    )


def test_label_column_attribute_passes(tmp_path: Path) -> None:
    text = (
        VALID.replace(
            "    path: accounts.csv\n",
            "    path: accounts.csv\n    attributes: {churned: string}\n",
        )
        + "validation:\n  label_column: {column: churned}\n"
    )

    load_project(write(tmp_path / "p", text))


def test_empty_window_and_rate_period_rejected(tmp_path: Path) -> None:
    text = with_metrics(
        "  empty:\n    type: count\n    source: events\n    window: 0d\n"
        "  rate:\n    type: rate\n    source: events\n    window: 28d\n    per: 0d\n"
    )
    issues = keyed(issues_of(write(tmp_path / "p", text)))

    assert set(issues) == {"metrics.empty.window.length", "metrics.rate.per"}
    assert (
        "a window of 0d covers no day" in issues["metrics.empty.window.length"].message
    )
    assert "the rate's period of 0d covers no day" in issues["metrics.rate.per"].message


def test_problems_listed_in_file_order(tmp_path: Path) -> None:
    # The unknown metric of the measure comes before the channel's model problem.
    text = PROJECT.replace("- metric: logins_28d", "- metric: logins_29d")
    issues = issues_of(write(tmp_path / "p", text))

    assert [issue.key for issue in issues] == [
        "scorecards[0].components.usage.measures[0].metric",
        "alerts.channels.team",
        "alerts.rules[0].to",
        "alerts.rules[1].condition",
    ]
    lines = [issue.line for issue in issues]
    assert lines == sorted(lines)


# Rules appended to VALID start at line 36, after the rules fell_to_risk (line 29)
# and quiet (line 33).
REPEATED_RULE = (
    "    - name: quiet\n"  # 36
    "      kind: drop\n"
    "      points: -3\n"  # 38
    "      within: 30d\n"
    "    - name: slipped\n"  # 40
    "      kind: band_change\n"
    "      severity: critcal\n"  # 42
    "      to: at_rsk\n"  # 43
)


def test_repeated_rule_name_at_its_entry(tmp_path: Path) -> None:
    issues = keyed(issues_of(write(tmp_path / "p", VALID + REPEATED_RULE)))

    assert set(issues) == {
        "alerts.rules[2].name",
        "alerts.rules[2].points",
        "alerts.rules[3].severity",
        "alerts.rules[3].to",
    }
    repeated = issues["alerts.rules[2].name"]
    assert repeated.line == 36
    assert repeated.message == (
        "rule name 'quiet' is already used by alerts.rules[1] at line 33; give each "
        "rule its own name"
    )
    assert issues["alerts.rules[3].severity"].line == 42
    assert issues["alerts.rules[3].severity"].suggestion == "critical"
    assert issues["alerts.rules[3].to"].line == 43


def test_repeated_rule_name_in_valid_rules(tmp_path: Path) -> None:
    text = VALID + REPEATED_RULE.replace("points: -3", "points: 3").replace(
        "severity: critcal", "severity: critical"
    )
    issues = keyed(issues_of(write(tmp_path / "p", text)))

    assert set(issues) == {"alerts.rules[2].name", "alerts.rules[3].to"}
    assert issues["alerts.rules[2].name"].line == 36


def test_repeated_playbook_name_at_its_entry(tmp_path: Path) -> None:
    text = VALID + (
        "playbooks:\n"
        "  - name: call\n"  # 37
        "    on_alert: quiet\n"
        "    task: {title: 'Call {account_id}'}\n"
        "  - name: rescue\n"  # 40
        "    on_alert: qiet\n"  # 41
        "    task: {title: 'Rescue {account_id}'}\n"
        "  - name: call\n"  # 43
        "    on_alert: fell_to_risk\n"
        "    task: {title: 'Call {acount_id}'}\n"  # 45
    )
    issues = keyed(issues_of(write(tmp_path / "p", text)))

    assert set(issues) == {
        "playbooks[1].on_alert",
        "playbooks[2].name",
        "playbooks[2].task.title",
    }
    repeated = issues["playbooks[2].name"]
    assert repeated.line == 43
    assert repeated.message == (
        "playbook name 'call' is already used by playbooks[0] at line 37; give each "
        "playbook its own name"
    )
    assert issues["playbooks[1].on_alert"].line == 41
    assert issues["playbooks[1].on_alert"].message == (
        "unknown alert rule 'qiet'; the rules are fell_to_risk, quiet"
    )
    assert issues["playbooks[1].on_alert"].suggestion == "quiet"
    assert issues["playbooks[2].task.title"].suggestion == "account_id"


def test_reserved_rule_name_at_its_key(tmp_path: Path) -> None:
    text = VALID + "    - name: guard\n      kind: band_change\n      to: at_rsk\n"
    issues = keyed(issues_of(write(tmp_path / "p", text)))

    assert set(issues) == {"alerts.rules[2].name"}
    assert issues["alerts.rules[2].name"].line == 36
    assert "reserved for the guard's alerts" in issues["alerts.rules[2].name"].message


def test_rule_with_bad_setting_still_checked(tmp_path: Path) -> None:
    # The severity and the escalation fail their models, but the rule's band and
    # channel are still checked in the same run.
    text = VALID + (
        "    - name: slipped\n"  # 36
        "      kind: band_change\n"
        "      severity: loud\n"  # 38
        "      to: at_rsk\n"  # 39
        "      channels: [teem]\n"  # 40
        "      escalation: {when: 'arr >', escalate_to: boss}\n"  # 41
    )
    issues = keyed(issues_of(write(tmp_path / "p", text)))

    assert set(issues) == {
        "alerts.rules[2].severity",
        "alerts.rules[2].to",
        "alerts.rules[2].channels[0]",
        "alerts.rules[2].escalation.when",
    }
    assert issues["alerts.rules[2].to"].line == 39
    assert issues["alerts.rules[2].channels[0]"].line == 40
    assert issues["alerts.rules[2].channels[0]"].suggestion == "team"
    assert issues["alerts.rules[2].escalation.when"].line == 41


def test_playbook_with_bad_priority_still_checked(tmp_path: Path) -> None:
    text = VALID + (
        "playbooks:\n"
        "  - name: rescue\n"
        "    on_alert: qiet\n"  # 38
        "    when: logins_7d < 1\n"  # 39
        "    task: {title: 'Rescue {acount_id}', priority: hihg}\n"  # 40
    )
    issues = keyed(issues_of(write(tmp_path / "p", text)))

    assert set(issues) == {
        "playbooks[0].on_alert",
        "playbooks[0].when",
        "playbooks[0].task.title",
        "playbooks[0].task.priority",
    }
    assert issues["playbooks[0].task.priority"].suggestion == "high"
    assert issues["playbooks[0].when"].suggestion == "logins_28d"
    assert issues["playbooks[0].task.title"].line == 40


def test_metric_with_bad_window_still_checked(tmp_path: Path) -> None:
    # The window fails, so the metric is checked without one. The change metric
    # that compares its windows must not be reported for a base without a window.
    text = VALID.replace("    source: events\n", "    source: evnts\n", 1).replace(
        "    window: 28d\n",
        "    window: 28x\n  trend:\n    type: change\n    of: logins_28d\n",
        1,
    )
    issues = keyed(issues_of(write(tmp_path / "p", text)))

    assert set(issues) == {
        "metrics.logins_28d.source",
        "metrics.logins_28d.window.length",
    }
    assert issues["metrics.logins_28d.source"].line == 12
    assert issues["metrics.logins_28d.source"].suggestion == "events"


def test_default_of_failed_setting_unchecked(tmp_path: Path) -> None:
    # The band of the renewal rule fails, and its default at_risk is no band of
    # this project; only the model problem is reported.
    bands = (
        "bands:\n"
        "  - {name: low, label: Low, min: 0, max: 50, color: red}\n"
        "  - {name: high, label: High, min: 51, max: 100, color: blue}\n"
    )
    text = VALID.replace("to: at_risk", "to: low") + (
        "    - name: renewal\n"
        "      kind: renewal_risk\n"
        "      within: 90d\n"
        "      band: [low]\n"  # 39
    )
    issues = keyed(issues_of(write(tmp_path / "p", text + bands)))

    assert set(issues) == {"alerts.rules[2].band"}
    assert issues["alerts.rules[2].band"].line == 39


def test_paths_omit_rule_and_channel_type(tmp_path: Path) -> None:
    text = VALID.replace(
        "  rules:\n",
        "    mail:\n"  # 28
        "      type: email\n"
        "      host: smtp.example.com\n"
        "      port: 99999\n"  # 31
        "      from: alerts@example.com\n"
        "      to: 5\n"  # 33
        "  rules:\n",
    ) + (
        "    - name: fell\n"  # 42
        "      kind: drop\n"
        "      points: -3\n"  # 44
        "      within: 30d\n"
        "      cooldwn: 7d\n"  # 46
    )
    issues = keyed(issues_of(write(tmp_path / "p", text)))

    assert set(issues) == {
        "alerts.channels.mail.port",
        "alerts.channels.mail.to",
        "alerts.rules[2].points",
        "alerts.rules[2].cooldwn",
    }
    assert issues["alerts.channels.mail.port"].line == 31
    assert issues["alerts.channels.mail.to"].line == 33
    assert issues["alerts.channels.mail.to"].message == (
        "Input should be a valid list or 'owner'"
    )
    assert issues["alerts.rules[2].points"].line == 44
    assert issues["alerts.rules[2].cooldwn"].line == 46
    assert issues["alerts.rules[2].cooldwn"].suggestion == "cooldown"


def test_union_member_errors_kept_inside(tmp_path: Path) -> None:
    # A list in `to` has the shape of the list member, so only its bad entry is
    # reported, not also that the value is not 'owner'.
    text = VALID.replace(
        "  rules:\n",
        "    mail:\n"
        "      type: email\n"
        "      host: smtp.example.com\n"
        "      from: alerts@example.com\n"
        "      to: [ops@example.com, [x]]\n"  # 32
        "  rules:\n",
    )
    issues = keyed(issues_of(write(tmp_path / "p", text)))

    assert set(issues) == {"alerts.channels.mail.to[1]"}
    assert issues["alerts.channels.mail.to[1]"].line == 32
    assert issues["alerts.channels.mail.to[1]"].message == (
        "expected text, got a list: [x]"
    )


def test_bad_spark_setting_one_problem(tmp_path: Path) -> None:
    engine = (
        "engine:\n"
        "  kind: spark\n"
        "  spark_conf:\n"
        "    spark.executor.memory: 4g\n"
        "    spark.executor.cores: [2]\n"  # 6
        "    spark.sql.ansi.enabled: true\n"
    )
    text = VALID.replace("name: mixed\n", "name: mixed\n" + engine)
    issues = issues_of(write(tmp_path / "p", text))

    assert len(issues) == 1
    assert issues[0].key == "engine.spark_conf.spark.executor.cores"
    assert issues[0].line == 6
    assert issues[0].message == (
        "expected a single text, number or true/false value, got a list; write one "
        "value, for example spark.executor.memory: 4g"
    )


def test_spark_settings_read_as_written(tmp_path: Path) -> None:
    engine = (
        "engine:\n"
        "  kind: spark\n"
        "  spark_conf: {spark.executor.memory: 4g, spark.executor.cores: 2, "
        "spark.sql.ansi.enabled: true, spark.memory.fraction: 0.5}\n"
    )
    text = VALID.replace("name: mixed\n", "name: mixed\n" + engine)
    project = load_project(write(tmp_path / "p", text))

    assert project.config.engine.spark_settings() == {
        "spark.executor.memory": "4g",
        "spark.executor.cores": "2",
        "spark.sql.ansi.enabled": "true",
        "spark.memory.fraction": "0.5",
    }


def test_missing_accounts_source_says_fix(tmp_path: Path) -> None:
    text = VALID.replace("    kind: accounts\n", "    kind: subscriptions\n")
    issues = keyed(issues_of(write(tmp_path / "p", text)))

    assert issues["sources"].message == (
        "exactly one source of kind accounts is required, but there is none; add a "
        "source with kind: accounts"
    )


def test_tenure_on_events_names_subscriptions(tmp_path: Path) -> None:
    text = with_metrics("  age:\n    type: tenure\n    source: events\n")
    text = text.replace(
        "  events:\n",
        "  subscriptions:\n    kind: subscriptions\n    path: events.csv\n  events:\n",
    )
    issues = keyed(issues_of(write(tmp_path / "p", text)))

    assert issues["metrics.age.source"].message == (
        "tenure needs a subscriptions source; use subscriptions"
    )


def test_rule_kind_under_other_key(tmp_path: Path) -> None:
    text = VALID + "    - name: slip\n      type: drop\n      points: 5\n"
    issues = keyed(issues_of(write(tmp_path / "p", text)))

    assert set(issues) == {"alerts.rules[2]"}
    assert issues["alerts.rules[2]"].line == 36
    assert issues["alerts.rules[2]"].message == (
        "missing key 'kind'; set it to one of band_change, drop, metric, trend, "
        "renewal_risk (the entry has type: drop; rename the key)"
    )


def test_unknown_rule_lists_failed_rules(tmp_path: Path) -> None:
    # The rule `slow` fails its own model, yet a playbook may still name it.
    text = VALID + (
        "    - name: slow\n"
        "      kind: drop\n"
        "      points: -5\n"
        "      within: 30d\n"
        "playbooks:\n"
        "  - name: call\n"
        "    on_alert: slw\n"
        "    task: {title: 'Call {account_id}'}\n"
    )
    issues = keyed(issues_of(write(tmp_path / "p", text)))

    assert set(issues) == {"alerts.rules[2].points", "playbooks[0].on_alert"}
    assert issues["playbooks[0].on_alert"].message == (
        "unknown alert rule 'slw'; the rules are fell_to_risk, quiet, slow"
    )
    assert issues["playbooks[0].on_alert"].suggestion == "slow"


def test_misspelt_band_in_conditions(tmp_path: Path) -> None:
    text = VALID + (
        "    - name: slipping\n"
        "      kind: metric\n"
        "      condition: band in ['at_risk', 'stabel']\n"  # 38
        "playbooks:\n"
        "  - name: call\n"
        "    when: band != 'healty' and score < 50\n"  # 41
        "    task: {title: 'Call {account_id}'}\n"
        "  - name: check\n"
        "    when: band == 'insufficient_data'\n"
        "    task: {title: 'Check {account_id}'}\n"
    )
    issues = keyed(issues_of(write(tmp_path / "p", text)))

    assert set(issues) == {"alerts.rules[2].condition", "playbooks[0].when"}
    assert issues["alerts.rules[2].condition"].line == 38
    assert issues["alerts.rules[2].condition"].suggestion == "stable"
    assert issues["playbooks[0].when"].line == 41
    assert issues["playbooks[0].when"].message == (
        "compares band with 'healty', which is not a band; the bands are at_risk, "
        "stable, healthy, insufficient_data"
    )
    assert issues["playbooks[0].when"].suggestion == "healthy"


@pytest.mark.parametrize(
    ("entry", "key", "message"),
    [
        (
            "  weekly: [count, events]\n",
            "metrics.weekly",
            "expected a mapping of settings, got a list: [count, events]",
        ),
        (
            "  weekly: count\n",
            "metrics.weekly",
            "expected a mapping of settings, got the text 'count'",
        ),
        (
            "  weekly:\n",
            "metrics.weekly",
            "expected a mapping of settings, got an empty value",
        ),
    ],
)
def test_metric_of_wrong_shape_shows_value(
    tmp_path: Path, entry: str, key: str, message: str
) -> None:
    issues = keyed(issues_of(write(tmp_path / "p", with_metrics(entry))))

    assert set(issues) == {key}
    assert issues[key].line == 15
    assert issues[key].message == message


def test_rule_of_wrong_shape_shows_value(tmp_path: Path) -> None:
    text = VALID + "    - [drop, 10]\n"
    issues = keyed(issues_of(write(tmp_path / "p", text)))

    assert set(issues) == {"alerts.rules[2]"}
    assert issues["alerts.rules[2]"].line == 36
    assert issues["alerts.rules[2]"].message == (
        "expected a mapping of settings, got a list: [drop, 10]"
    )


def test_rules_as_mapping_shows_value(tmp_path: Path) -> None:
    text = VALID.split("  rules:\n")[0] + (
        "  rules:\n    fell:\n      kind: drop\n      points: 5\n      within: 30d\n"
    )
    issues = keyed(issues_of(write(tmp_path / "p", text)))

    assert set(issues) == {"alerts.rules"}
    assert issues["alerts.rules"].message == (
        "expected a list, got a mapping: {fell: {kind: drop, points: 5, within: 30d}}"
    )


def test_long_value_shortened(tmp_path: Path) -> None:
    words = ", ".join(f"word{index}" for index in range(40))
    issues = keyed(
        issues_of(write(tmp_path / "p", with_metrics(f"  long: [{words}]\n")))
    )

    message = issues["metrics.long"].message
    assert message.startswith("expected a mapping of settings, got a list: [word0, ")
    assert message.endswith("...")
    assert len(message) < 160


def test_missing_kind_lists_entry_settings(tmp_path: Path) -> None:
    text = VALID + "    - name: slip\n      points: 5\n      within: 30d\n"
    issues = keyed(issues_of(write(tmp_path / "p", text)))

    assert set(issues) == {"alerts.rules[2]"}
    assert issues["alerts.rules[2]"].message == (
        "missing key 'kind'; set it to one of band_change, drop, metric, trend, "
        "renewal_risk (the entry sets name: slip, points: 5, within: 30d)"
    )


def test_settings_nested_under_kind(tmp_path: Path) -> None:
    text = VALID + "    - name: slip\n      drop: {points: 5, within: 30d}\n"
    issues = keyed(issues_of(write(tmp_path / "p", text)))

    assert set(issues) == {"alerts.rules[2]"}
    assert issues["alerts.rules[2]"].message == (
        "missing key 'kind'; set it to one of band_change, drop, metric, trend, "
        "renewal_risk (the entry nests points, within under drop; write kind: drop "
        "and move them up one level)"
    )


@pytest.mark.parametrize(
    ("normalize", "message"),
    [
        (
            "{method: bounds, min: 10, max: 0}",
            "bounds needs max > min, got 10.0..0.0 (the entry sets min: 10, max: 0)",
        ),
        (
            "{method: bounds, min: 10}",
            "bounds needs min and max (the entry sets min: 10)",
        ),
        (
            "{method: bounds}",
            "bounds needs min and max (the entry sets no min or max)",
        ),
        (
            "{method: steps}",
            "steps needs at least one step (the entry sets no steps)",
        ),
    ],
)
def test_entry_check_names_settings(
    tmp_path: Path, normalize: str, message: str
) -> None:
    text = VALID.replace("{method: bounds, min: 0, max: 10}", normalize)
    issues = keyed(issues_of(write(tmp_path / "p", text)))

    key = "scorecards[0].components.usage.measures[0].normalize"
    assert set(issues) == {key}
    assert issues[key].line == 22
    assert issues[key].message == message


def test_source_check_names_settings(tmp_path: Path) -> None:
    text = VALID.replace(
        "    path: events.csv\n",
        "    path: events.csv\n    table: events\n    connection: duckdb:///e.db\n",
    )
    issues = keyed(issues_of(write(tmp_path / "p", text)))

    assert set(issues) == {"sources.events"}
    assert issues["sources.events"].message == (
        "set either path or table, not both (the entry sets path: events.csv, "
        "table: events)"
    )


def test_source_check_shows_quoted_setting(tmp_path: Path) -> None:
    text = VALID.replace(
        "    path: events.csv\n", "    path: events.csv\n    columns: {timestmp: ts}\n"
    )
    issues = keyed(issues_of(write(tmp_path / "p", text)))

    assert set(issues) == {"sources.events"}
    assert issues["sources.events"].message.endswith(
        "or list it under attributes (the entry sets columns: {timestmp: ts})"
    )


def test_playbook_check_names_unset_keys(tmp_path: Path) -> None:
    text = VALID + (
        "playbooks:\n  - name: call\n    task: {title: 'Call {account_id}'}\n"
    )
    issues = keyed(issues_of(write(tmp_path / "p", text)))

    assert set(issues) == {"playbooks[0]"}
    assert issues["playbooks[0]"].message == (
        "playbook 'call' has no trigger; set on_alert to an alert rule name, when to "
        "a condition, or both (the entry sets no on_alert or when)"
    )


def test_engine_check_names_settings(tmp_path: Path) -> None:
    engine = "engine:\n  kind: duckdb\n  master: local[2]\n  threads: 2\n"
    text = VALID.replace("name: mixed\n", "name: mixed\n" + engine)
    issues = keyed(issues_of(write(tmp_path / "p", text)))

    assert set(issues) == {"engine"}
    assert issues["engine"].message == (
        "master applies only to engine kind spark, not duckdb; remove it or set "
        "kind: spark (the entry sets kind: duckdb, master: local[2])"
    )


def test_validate_prints_entry_settings(tmp_path: Path) -> None:
    root = write(tmp_path / "p", with_metrics("  weekly: [count, events]\n"))

    result = run("validate", "--project", root)

    assert result.exit_code == 1
    output = " ".join(result.output.split())
    assert (
        f"{root / 'healthscore.yml'}:15: metrics.weekly: expected a mapping of "
        "settings, got a list: [count, events]"
    ) in output


# Shadow scorecard files

SHADOW_UNKNOWN_METRIC = """\
scorecards:
- name: default
  components:
    usage:
      weight: 1
      measures:
      - metric: logins_29d
        normalize: {method: bounds, min: 0, max: 10}
"""


def with_shadow(root: Path, files: dict[str, str]) -> Path:
    """Write VALID listing `files` under validation.shadow, and the files."""
    names = ", ".join(files)
    write(root, VALID + f"validation:\n  shadow: [{names}]\n")
    for name, text in files.items():
        (root / name).write_text(text, encoding="utf-8")
    return root


def test_validate_checks_shadow_files(tmp_path: Path) -> None:
    root = with_shadow(
        tmp_path / "p",
        {"unknown.yml": SHADOW_UNKNOWN_METRIC, "broken.yml": "scorecards: [\n"},
    )

    result = run("validate", "--project", root)

    assert result.exit_code == 1
    assert "is valid" not in result.stdout
    assert result.stderr.splitlines() == [
        "error: 2 problems in the project:",
        f"  {root / 'unknown.yml'}:7: scorecards[0].components.usage.measures[0]"
        ".metric: unknown metric 'logins_29d' (did you mean 'logins_28d'?)",
        f"  {root / 'broken.yml'}:2: invalid YAML: expected the node content, but "
        "found '<stream end>'",
    ]


def test_validate_json_lists_shadow_issues(tmp_path: Path) -> None:
    shadow = SHADOW_UNKNOWN_METRIC.replace("min: 0, max: 10", "min: 10, max: 0")
    root = with_shadow(tmp_path / "p", {"proposed.yml": shadow})

    result = run("validate", "--project", root, "--json")

    assert result.exit_code == 1
    data = json.loads(result.stdout)
    assert data["valid"] is False
    # The model problem hides the reference check of the measure's metric, as it
    # does in healthscore.yml.
    assert data["issues"] == [
        {
            "file": str(root / "proposed.yml"),
            "line": 8,
            "key": "scorecards[0].components.usage.measures[0].normalize",
            "message": "bounds needs max > min, got 10.0..0.0 (the entry sets min: "
            "10, max: 0)",
            "suggestion": None,
        }
    ]


@pytest.mark.parametrize(
    ("text", "line", "key", "message"),
    [
        (
            "name: proposal\n",
            1,
            "",
            "no `scorecards:` list; a shadow file lists scorecards as healthscore.yml "
            "does, such as the file `healthscore learn` writes",
        ),
        (
            "scorecards: []\n",
            1,
            "scorecards",
            "the list is empty; add at least one scorecard",
        ),
        (
            "# proposal\nscorecards: {default: 1}\n",
            2,
            "scorecards",
            "expected a list of scorecards, got a mapping: {default: 1}",
        ),
        (
            SHADOW_UNKNOWN_METRIC.replace("logins_29d", "logins_28d").replace(
                "- name: default", "- name: default\n  when: tier == 'gold'"
            ),
            3,
            "scorecards[0].when",
            "unknown account column or metric 'tier'",
        ),
    ],
)
def test_shadow_file_shapes_checked(
    tmp_path: Path, text: str, line: int, key: str, message: str
) -> None:
    root = with_shadow(tmp_path / "p", {"proposed.yml": text})

    result = run("validate", "--project", root, "--json")

    assert result.exit_code == 1
    issues = json.loads(result.stdout)["issues"]
    assert [(issue["line"], issue["key"]) for issue in issues] == [(line, key)]
    assert issues[0]["message"] == message
    assert issues[0]["file"] == str(root / "proposed.yml")


SHADOW_REPEATED_NAME = SHADOW_UNKNOWN_METRIC.replace("logins_29d", "logins_28d") + (
    """\
- name: default
  when: arr > 1000
  components:
    usage:
      weight: 1
      measures:
      - metric: logins_28d
        normalize: {method: percentile}
"""
)


def test_shadow_repeated_scorecard_name(tmp_path: Path) -> None:
    root = with_shadow(tmp_path / "p", {"proposed.yml": SHADOW_REPEATED_NAME})

    result = run("validate", "--project", root)

    assert result.exit_code == 1
    assert "is valid" not in result.stdout
    assert result.stderr.splitlines() == [
        "error: 1 problem in the project:",
        f"  {root / 'proposed.yml'}:9: scorecards[1].name: scorecard name 'default' "
        "is already used by scorecards[0] at line 2; give each scorecard its own "
        "name",
    ]


def test_shadow_repeated_name_with_model_problem(tmp_path: Path) -> None:
    text = SHADOW_REPEATED_NAME.replace("method: percentile", "method: percentil")
    root = with_shadow(tmp_path / "p", {"proposed.yml": text})

    result = run("validate", "--project", root, "--json")

    assert result.exit_code == 1
    issues = json.loads(result.stdout)["issues"]
    assert [(issue["line"], issue["key"]) for issue in issues] == [
        (9, "scorecards[1].name"),
        (16, "scorecards[1].components.usage.measures[0].normalize.method"),
    ]
    assert {issue["file"] for issue in issues} == {str(root / "proposed.yml")}


def test_shadow_repeated_band_name(tmp_path: Path) -> None:
    bands = (
        "bands:\n"
        "- {name: low, label: Low, min: 0, max: 40, color: red}\n"
        "- {name: low, label: High, min: 41, max: 100, color: blue}\n"
    )
    shadow = SHADOW_UNKNOWN_METRIC.replace("logins_29d", "logins_28d") + bands
    root = with_shadow(tmp_path / "p", {"proposed.yml": shadow})

    result = run("validate", "--project", root, "--json")

    assert result.exit_code == 1
    issues = json.loads(result.stdout)["issues"]
    assert issues == [
        {
            "file": str(root / "proposed.yml"),
            "line": 11,
            "key": "bands[1].name",
            "message": "band name 'low' is already used by bands[0] at line 10; give "
            "each band its own name",
            "suggestion": None,
        }
    ]


def test_validate_counts_valid_shadow_files(tmp_path: Path) -> None:
    shadow = SHADOW_UNKNOWN_METRIC.replace("logins_29d", "logins_28d")
    root = with_shadow(tmp_path / "p", {"a.yml": shadow, "b.yml": shadow})

    result = run("validate", "--project", root)

    assert result.exit_code == 0, result.output
    assert result.stdout == (
        "healthscore.yml is valid: 2 sources, 1 metric, 1 scorecard, 2 shadow "
        "scorecard files\n"
    )
