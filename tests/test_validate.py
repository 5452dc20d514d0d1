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
    assert issues["sources"].message == "Field required"
