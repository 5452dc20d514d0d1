"""Settings that read a standard column which the source's files lack.

Standard columns such as `seats` and `segment` are optional in a file, so the
project file alone passes validation. Reading the data must then name the setting,
the column, the source and its file, and the ways to fix it, in `validate --data`
as well as in `score`, instead of a KeyError or an unknown-name error.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner, Result

from healthscore.cli import app
from healthscore.config.models import ProjectConfig
from healthscore.sources.columns import owner_email_channels
from project_factory import minimal_config, write_project

EVENTS = (
    "account_id,timestamp,event_type\n"
    "a1,2024-03-01 09:00:00,login\n"
    "a2,2024-03-02 09:00:00,export\n"
)
ACCOUNTS_WITHOUT_SEATS = "account_id,name,segment,arr\na1,Acme,smb,100\na2,Bo,smb,50\n"
ACCOUNTS_WITHOUT_SEGMENT = "account_id,name,seats,arr\na1,Acme,5,100\na2,Bo,3,50\n"
BOUNDS = {"method": "bounds", "min": 0, "max": 9}
PERCENTILE = {"method": "percentile", "within": "segment"}
MEASURE = {"metric": "events_28d", "normalize": BOUNDS}


def run(*args: str | Path) -> Result:
    runner = CliRunner()
    return runner.invoke(app, [str(arg) for arg in args], prog_name="healthscore")


def flat(result: Result) -> str:
    return " ".join(result.output.split())


def project(root: Path, accounts: str, **overrides: Any) -> Path:
    config = minimal_config(**overrides)
    write_project(root, config, {"accounts.csv": accounts, "events.csv": EVENTS})
    return root


def seats_project(root: Path) -> Path:
    metrics = {
        "events_28d": {"type": "count", "source": "events", "window": "28d"},
        "seats": {"type": "attribute", "column": "seats"},
    }
    return project(root, ACCOUNTS_WITHOUT_SEATS, metrics=metrics)


def segment_project(root: Path) -> Path:
    scorecards = [
        {
            "name": "big",
            "when": "segment == 'enterprise'",
            "components": {"usage": {"weight": 1, "measures": [MEASURE]}},
        },
        {
            "name": "default",
            "components": {
                "usage": {
                    "weight": 1,
                    "measures": [{**MEASURE, "normalize": PERCENTILE}],
                }
            },
        },
    ]
    return project(root, ACCOUNTS_WITHOUT_SEGMENT, scorecards=scorecards)


def where_project(root: Path) -> Path:
    metrics = {
        "events_28d": {
            "type": "count",
            "source": "events",
            "window": "28d",
            "where": "value > 1",
        },
    }
    return project(root, ACCOUNTS_WITHOUT_SEATS, metrics=metrics)


@pytest.mark.parametrize("command", ["validate", "score"])
def test_attribute_metric_missing_column(tmp_path: Path, command: str) -> None:
    root = seats_project(tmp_path)
    extra = ["--data"] if command == "validate" else []
    result = run(command, *extra, "--project", root, "--as-of", "2024-04-01")
    output = flat(result)
    assert result.exit_code == 1, output
    assert "Traceback" not in output
    assert "metric 'seats' (metrics.seats.column) needs column 'seats'" in output
    assert "of source 'accounts', which accounts.csv does not have" in output
    assert "add the column to the file" in output
    assert "sources.accounts.columns" in output
    assert "remove metric 'seats'" in output


@pytest.mark.parametrize("command", ["validate", "score"])
def test_scorecard_missing_segment(tmp_path: Path, command: str) -> None:
    root = segment_project(tmp_path)
    extra = ["--data"] if command == "validate" else []
    result = run(command, *extra, "--project", root, "--as-of", "2024-04-01")
    output = flat(result)
    assert result.exit_code == 1, output
    assert "column 'segment' of source 'accounts' is not in accounts.csv" in output
    assert "2 settings read it: scorecards[0].when, " in output
    within = "scorecards[1].components.usage.measures[0].normalize.within"
    assert within in output
    assert "or change those settings" in output


@pytest.mark.parametrize("command", ["validate", "score"])
def test_where_missing_column(tmp_path: Path, command: str) -> None:
    root = where_project(tmp_path)
    extra = ["--data"] if command == "validate" else []
    result = run(command, *extra, "--project", root, "--as-of", "2024-04-01")
    output = flat(result)
    assert result.exit_code == 1, output
    expected = (
        "metric 'events_28d' (metrics.events_28d.where) needs column 'value' of "
        "source 'events', which events.csv does not have"
    )
    assert expected in output
    assert "sources.events.columns, or change metrics.events_28d.where" in output


def glob_project(root: Path, metrics: dict[str, Any]) -> Path:
    """Events in two CSV files, of which only the later one has `value`."""
    config = minimal_config(metrics=metrics)
    config["sources"]["events"]["path"] = "events/*.csv"
    files = {
        "accounts.csv": ACCOUNTS_WITHOUT_SEATS,
        "events/1.csv": "account_id,timestamp\na1,2024-03-01 09:00:00\n",
        "events/2.csv": "account_id,timestamp,Value\na2,2024-03-02 09:00:00,4\n",
    }
    write_project(root, config, files)
    return root


def test_glob_where_column_later_file(tmp_path: Path) -> None:
    metrics = {
        "events_28d": {
            "type": "count",
            "source": "events",
            "window": "28d",
            "where": "value > 1",
        },
    }
    root = glob_project(tmp_path, metrics)
    result = run("score", "--project", root, "--as-of", "2024-04-01")
    output = flat(result)
    assert result.exit_code == 1, output
    expected = (
        "needs column 'value' of source 'events', which the source lacks: "
        "events/2.csv has it, but a CSV glob takes its columns from its first "
        "file, events/1.csv, which lacks it; add the column to the files"
    )
    assert expected in output


def test_glob_metric_column_later_file(tmp_path: Path) -> None:
    metrics = {
        "events_28d": {"type": "count", "source": "events", "window": "28d"},
        "value_28d": {
            "type": "sum",
            "source": "events",
            "column": "value",
            "window": "28d",
        },
    }
    root = glob_project(tmp_path, metrics)
    result = run("score", "--project", root, "--as-of", "2024-04-01")
    output = flat(result)
    assert result.exit_code == 1, output
    expected = (
        "metric 'value_28d' reads column 'value', which source 'events' does not "
        "have (it has account_id, timestamp): "
    )
    assert expected in output
    assert "events/2.csv has it, but a CSV glob takes its columns" in output
    assert "events/1.csv, which lacks it; add the column" in output


def test_present_columns_pass(tmp_path: Path) -> None:
    accounts = "account_id,name,segment,seats,arr\na1,Acme,smb,5,100\n"
    metrics = {
        "events_28d": {"type": "count", "source": "events", "window": "28d"},
        "seats": {"type": "attribute", "column": "seats"},
    }
    root = project(tmp_path, accounts, metrics=metrics)
    result = run("validate", "--data", "--project", root, "--as-of", "2024-04-01")
    assert result.exit_code == 0, result.output


# Alert rules and playbooks read account columns after scoring, so a column that
# the accounts file lacks must stop `score` before it stores the snapshot.

AS_OF = "2024-04-01"
ACCOUNTS_FULL = (
    "account_id,name,segment,owner,arr,renewal_date,csm\n"
    "a1,Acme,smb,alice@example.com,100,2024-05-01,carol\n"
    "a2,Bo,smb,bob@example.com,50,2024-12-01,dan\n"
)
ACCOUNTS_WITHOUT_ARR = "account_id,name,segment,owner\na1,Acme,smb,al\na2,Bo,smb,bo\n"
ACCOUNTS_BARE = "account_id,seats\na1,5\na2,3\n"
DROP_RULE = {"name": "drops", "kind": "drop", "points": 10, "within": "30d"}
MAIL_TO_OWNER = {
    "type": "email",
    "host": "127.0.0.1",
    "from": "health@example.com",
    "to": "owner",
}


def monitored_project(
    root: Path,
    accounts: str,
    rules: list[dict[str, Any]],
    playbooks: list[dict[str, Any]] | None = None,
    channels: dict[str, Any] | None = None,
) -> Path:
    alerts: dict[str, Any] = {"rules": rules}
    if channels is not None:
        alerts["channels"] = channels
    return project(root, accounts, alerts=alerts, playbooks=playbooks or [])


def check(root: Path, command: str) -> tuple[Result, str]:
    extra = ["--data"] if command == "validate" else []
    result = run(command, *extra, "--project", root, "--as-of", AS_OF)
    return result, flat(result)


def snapshots(root: Path) -> Path:
    return root / ".healthscore" / "snapshots"


@pytest.mark.parametrize("command", ["validate", "score"])
def test_alert_condition_missing_column(tmp_path: Path, command: str) -> None:
    rule = {"name": "big_accounts", "kind": "metric", "condition": "arr >= 100"}
    root = monitored_project(tmp_path, ACCOUNTS_WITHOUT_ARR, [DROP_RULE, rule])
    result, output = check(root, command)
    assert result.exit_code == 1, output
    assert "Traceback" not in output
    assert not snapshots(root).exists()
    expected = (
        "alert rule 'big_accounts' (alerts.rules[1].condition) needs column 'arr' "
        "of source 'accounts', which accounts.csv does not have; add the column to "
        "the file, map a column of the file to it in sources.accounts.columns, or "
        "change alerts.rules[1].condition"
    )
    assert expected in output


@pytest.mark.parametrize("command", ["validate", "score"])
def test_escalation_missing_column(tmp_path: Path, command: str) -> None:
    escalation = {"when": "arr >= 100000", "escalate_to": "vp@example.com"}
    rules = [
        {"name": "into_risk", "kind": "band_change", "to": "at_risk"},
        DROP_RULE,
        {"name": "trend", "kind": "trend", "escalation": escalation},
    ]
    root = monitored_project(tmp_path, ACCOUNTS_WITHOUT_ARR, rules)
    result, output = check(root, command)
    assert result.exit_code == 1, output
    assert not snapshots(root).exists()
    expected = (
        "alert rule 'trend' (alerts.rules[2].escalation.when) needs column 'arr' of "
        "source 'accounts', which accounts.csv does not have"
    )
    assert expected in output
    assert "or change alerts.rules[2].escalation.when" in output


@pytest.mark.parametrize("command", ["validate", "score"])
def test_renewal_rule_missing_renewal_date(tmp_path: Path, command: str) -> None:
    rule = {"name": "renewals", "kind": "renewal_risk", "within": "90d"}
    root = monitored_project(tmp_path, ACCOUNTS_WITHOUT_ARR, [rule])
    result, output = check(root, command)
    assert result.exit_code == 1, output
    assert not snapshots(root).exists()
    expected = (
        "alert rule 'renewals' (alerts.rules[0]) needs column 'renewal_date' of "
        "source 'accounts', which accounts.csv does not have"
    )
    assert expected in output
    assert "or remove alert rule 'renewals'" in output


@pytest.mark.parametrize("command", ["validate", "score"])
def test_owner_column_missing_standard(tmp_path: Path, command: str) -> None:
    rule = {**DROP_RULE, "owner_column": "name"}
    root = monitored_project(tmp_path, ACCOUNTS_BARE, [rule])
    result, output = check(root, command)
    assert result.exit_code == 1, output
    assert not snapshots(root).exists()
    expected = (
        "alert rule 'drops' (alerts.rules[0].owner_column) needs column 'name' of "
        "source 'accounts', which accounts.csv does not have"
    )
    assert expected in output
    assert "or change alerts.rules[0].owner_column" in output


@pytest.mark.parametrize("command", ["validate", "score"])
def test_owner_columns_undeclared(tmp_path: Path, command: str) -> None:
    rule = {**DROP_RULE, "owner_column": "csm"}
    playbook = {
        "name": "call",
        "on_alert": "drops",
        "task": {"title": "Call", "owner": "csm"},
    }
    root = monitored_project(tmp_path, ACCOUNTS_FULL, [rule], [playbook])
    result, output = check(root, command)
    assert result.exit_code == 1, output
    assert not snapshots(root).exists()
    expected = (
        "2 settings read column 'csm', which is neither a standard column nor an "
        "attribute of source 'accounts' (accounts.csv): alerts.rules[0].owner_column, "
        "playbooks[0].task.owner; declare it under sources.accounts.attributes, or "
        "change those settings"
    )
    assert expected in output


@pytest.mark.parametrize("command", ["validate", "score"])
def test_task_owner_undeclared(tmp_path: Path, command: str) -> None:
    playbook = {
        "name": "call",
        "when": "score < 50",
        "task": {"title": "Call", "owner": "csm"},
    }
    root = monitored_project(tmp_path, ACCOUNTS_FULL, [], [playbook])
    result, output = check(root, command)
    assert result.exit_code == 1, output
    assert not snapshots(root).exists()
    expected = (
        "playbook 'call' (playbooks[0].task.owner) reads column 'csm', which is "
        "neither a standard column nor an attribute of source 'accounts' "
        "(accounts.csv); declare it under sources.accounts.attributes, or change "
        "playbooks[0].task.owner"
    )
    assert expected in output


def test_email_to_owner_names_not_addresses(tmp_path: Path) -> None:
    # al and bo are names, not addresses, so every email to them would fail.
    channels = {"mail": MAIL_TO_OWNER}
    root = monitored_project(
        tmp_path, ACCOUNTS_WITHOUT_ARR, [DROP_RULE], channels=channels
    )
    result, output = check(root, "validate")
    assert result.exit_code == 0, output
    assert (
        "2 accounts have an owner in column 'owner' that is not an email address "
        "('al', 'bo'), but alerts.channels.mail.to sends alerts to the owner, so "
        "those emails will fail."
    ) in output

    addressed = monitored_project(
        tmp_path / "addressed", ACCOUNTS_FULL, [DROP_RULE], channels=channels
    )
    result, output = check(addressed, "validate")
    assert result.exit_code == 0, output
    assert "not an email address" not in output


@pytest.mark.parametrize("command", ["validate", "score"])
def test_email_to_owner_missing_owner(tmp_path: Path, command: str) -> None:
    channels = {"mail": MAIL_TO_OWNER}
    root = monitored_project(tmp_path, ACCOUNTS_BARE, [DROP_RULE], channels=channels)
    result, output = check(root, command)
    assert result.exit_code == 1, output
    assert not snapshots(root).exists()
    expected = (
        "email channel 'mail' (alerts.channels.mail.to) needs column 'owner' of "
        "source 'accounts', which accounts.csv does not have; add the column to the "
        "file, map a column of the file to it in sources.accounts.columns, or list "
        "recipients in alerts.channels.mail.to"
    )
    assert expected in output


@pytest.mark.parametrize("command", ["validate", "score"])
def test_playbook_when_missing_column(tmp_path: Path, command: str) -> None:
    playbooks = [
        {"name": "any_drop", "on_alert": "drops", "task": {"title": "Look"}},
        {"name": "smb_call", "when": "segment == 'smb'", "task": {"title": "Call"}},
    ]
    root = monitored_project(tmp_path, ACCOUNTS_BARE, [DROP_RULE], playbooks)
    result, output = check(root, command)
    assert result.exit_code == 1, output
    assert not snapshots(root).exists()
    expected = (
        "playbook 'smb_call' (playbooks[1].when) needs column 'segment' of source "
        "'accounts', which accounts.csv does not have"
    )
    assert expected in output
    assert "or change playbooks[1].when" in output


@pytest.mark.parametrize("command", ["validate", "score"])
def test_task_template_missing_column(tmp_path: Path, command: str) -> None:
    task = {"title": "Call {account_id}", "description": "ARR {arr:,.0f}, {score}"}
    playbook = {"name": "call", "when": "score < 50", "task": task}
    root = monitored_project(tmp_path, ACCOUNTS_WITHOUT_ARR, [], [playbook])
    result, output = check(root, command)
    assert result.exit_code == 1, output
    assert not snapshots(root).exists()
    expected = (
        "playbook 'call' (playbooks[0].task.description) needs column 'arr' of "
        "source 'accounts', which accounts.csv does not have"
    )
    assert expected in output
    assert "or change playbooks[0].task.description" in output


@pytest.mark.parametrize("command", ["validate", "score"])
def test_column_read_by_three_settings(tmp_path: Path, command: str) -> None:
    rule = {"name": "big_accounts", "kind": "metric", "condition": "arr >= 100"}
    task = {"title": "Call about {arr}"}
    playbook = {"name": "call", "when": "arr > 1", "task": task}
    root = monitored_project(tmp_path, ACCOUNTS_WITHOUT_ARR, [rule], [playbook])
    result, output = check(root, command)
    assert result.exit_code == 1, output
    assert not snapshots(root).exists()
    expected = (
        "column 'arr' of source 'accounts' is not in accounts.csv, but 3 settings "
        "read it: alerts.rules[0].condition, playbooks[0].when, "
        "playbooks[0].task.title; add the column"
    )
    assert expected in output


def test_default_owner_missing_passes(tmp_path: Path) -> None:
    # Without an owner column alerts have no owner and tasks take theirs. An
    # email channel to the owner that no rule sends through needs no owner.
    rule = {"name": "risky", "kind": "metric", "condition": "score < 50"}
    rule["channels"] = ["console"]
    channels = {"console": {"type": "console"}, "mail": MAIL_TO_OWNER}
    playbook = {"name": "call", "on_alert": "risky", "task": {"title": "Call"}}
    root = monitored_project(tmp_path, ACCOUNTS_BARE, [rule], [playbook], channels)
    validated, output = check(root, "validate")
    assert validated.exit_code == 0, output
    scored, output = check(root, "score")
    assert scored.exit_code == 0, output
    assert snapshots(root).exists()
    alerts = json.loads(run("alerts", "list", "--project", root, "--json").stdout)
    assert [alert["account_id"] for alert in alerts] == ["a2", "a1"]
    assert [alert["owner"] for alert in alerts] == [None, None]
    tasks = json.loads(run("tasks", "list", "--project", root, "--json").stdout)
    assert [task["account_id"] for task in tasks] == ["a1", "a2"]
    assert [task["owner"] for task in tasks] == [None, None]


def test_monitoring_columns_present_pass(tmp_path: Path) -> None:
    escalation = {"when": "segment == 'smb'", "escalate_to": "vp@example.com"}
    rules = [
        {
            "name": "big_accounts",
            "kind": "metric",
            "condition": "arr >= 100",
            "owner_column": "csm",
            "escalation": escalation,
        },
        {"name": "renewals", "kind": "renewal_risk", "within": "90d"},
    ]
    task = {"title": "Call {name}", "description": "ARR {arr:.0f}", "owner": "csm"}
    playbook = {"name": "call", "when": "segment == 'smb' and arr > 1", "task": task}
    config = minimal_config(
        alerts={"rules": rules, "channels": {"mail": MAIL_TO_OWNER}},
        playbooks=[playbook],
    )
    config["sources"]["accounts"]["attributes"] = {"csm": "string"}
    write_project(
        tmp_path, config, {"accounts.csv": ACCOUNTS_FULL, "events.csv": EVENTS}
    )

    validated, output = check(tmp_path, "validate")
    assert validated.exit_code == 0, output
    scored, output = check(tmp_path, "score")
    assert scored.exit_code == 0, output
    assert snapshots(tmp_path).exists()

    listed = run("alerts", "list", "--project", tmp_path, "--json")
    alerts = {alert["rule"]: alert for alert in json.loads(listed.stdout)}
    assert sorted(alerts) == ["big_accounts", "renewals"]
    assert alerts["big_accounts"]["account_id"] == "a1"
    assert alerts["big_accounts"]["owner"] == "carol"
    assert alerts["big_accounts"]["escalate_to"] == "vp@example.com"
    assert alerts["renewals"]["account_id"] == "a1"
    assert alerts["renewals"]["owner"] == "alice@example.com"
    assert alerts["renewals"]["details"]["days_to_renewal"] == 30

    listed = run("tasks", "list", "--project", tmp_path, "--json")
    tasks = {task["account_id"]: task for task in json.loads(listed.stdout)}
    assert tasks["a1"]["title"] == "Call Acme"
    assert tasks["a1"]["description"] == "ARR 100"
    assert tasks["a1"]["owner"] == "carol"
    assert tasks["a2"]["description"] == "ARR 50"
    assert tasks["a2"]["owner"] == "dan"


def test_task_owner_from_metric_passes(tmp_path: Path) -> None:
    metrics = {
        "events_28d": {"type": "count", "source": "events", "window": "28d"},
        "manager": {"type": "attribute", "column": "csm"},
    }
    task = {"title": "Call", "owner": "manager"}
    playbook = {"name": "call", "when": "score < 50", "task": task}
    config = minimal_config(metrics=metrics, playbooks=[playbook])
    config["sources"]["accounts"]["attributes"] = {"csm": "string"}
    files = {"accounts.csv": ACCOUNTS_FULL, "events.csv": EVENTS}
    write_project(tmp_path, config, files)

    scored, output = check(tmp_path, "score")
    assert scored.exit_code == 0, output
    listed = run("tasks", "list", "--project", tmp_path, "--json")
    owners = {task["account_id"]: task["owner"] for task in json.loads(listed.stdout)}
    assert owners == {"a1": "carol", "a2": "dan"}


def test_owner_checks_share_routing(tmp_path: Path) -> None:
    # to_console sends to the console, by_name to mail and by_owner to mail2, so
    # mail writes to the values of column `name` and mail2 to those of `owner`.
    rules = [
        {**DROP_RULE, "name": "to_console", "channels": ["console"]},
        {**DROP_RULE, "name": "by_name", "owner_column": "name", "channels": ["mail"]},
        {**DROP_RULE, "name": "by_owner", "channels": ["mail2"]},
    ]
    channels = {
        "console": {"type": "console"},
        "mail": MAIL_TO_OWNER,
        "mail2": MAIL_TO_OWNER,
    }
    config = ProjectConfig.model_validate(
        minimal_config(alerts={"rules": rules, "channels": channels})
    )
    assert owner_email_channels(config) == {"name": ["mail"], "owner": ["mail2"]}

    named = monitored_project(
        tmp_path / "named", ACCOUNTS_WITHOUT_ARR, rules, channels=channels
    )
    result, output = check(named, "validate")
    assert result.exit_code == 0, output
    assert (
        "2 accounts have an owner in column 'name' that is not an email address "
        "('Acme', 'Bo'), but alerts.channels.mail.to sends alerts to the owner"
    ) in output
    assert (
        "2 accounts have an owner in column 'owner' that is not an email address "
        "('al', 'bo'), but alerts.channels.mail2.to sends alerts to the owner"
    ) in output

    unowned = monitored_project(
        tmp_path / "unowned", "account_id,name\na1,Acme\na2,Bo\n", rules,
        channels=channels,
    )  # fmt: skip
    result, output = check(unowned, "validate")
    assert result.exit_code == 1, output
    assert (
        "email channel 'mail2' (alerts.channels.mail2.to) needs column 'owner'"
    ) in output
    assert "email channel 'mail' " not in output
