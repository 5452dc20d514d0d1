"""Checks of importer `options`: one run lists every problem of a source.

An unknown or invalid option must not hide the checks of the valid ones, such as a
file option that matches no file or an `email_attribute` that the accounts lack.
"""

from __future__ import annotations

import typing
from pathlib import Path

import pytest

from healthscore.config import ConfigError, ConfigIssue, load_project
from healthscore.config.models import SourceConfig
from healthscore.importers import IMPORTERS
from healthscore.sources.reader import _FILE_FORMATS

ACCOUNTS = "account_id,email_domain\na1,example.com\n"

# Line numbers matter: the tests assert the line of each problem.
PROJECT = """\
name: options
sources:
  accounts:
    kind: accounts
    path: accounts.csv
    attributes: {email_domain: string}
  nps:
    kind: surveys
    format: nps_csv
    path: nps.csv
    options:
      scael: csat
      email_attribute: domain
  zendesk:
    kind: tickets
    format: zendesk
    path: tickets.json
    options:
      ticket_metric: metrics.json
      satisfaction_ratings: ratings.json
metrics:
  nps_90d: {type: nps, source: nps, window: 90d}
scorecards:
  - name: main
    components:
      surveys:
        weight: 1
        measures:
          - {metric: nps_90d, normalize: {method: bounds, min: -100, max: 100}}
"""


def issues_of(root: Path, text: str) -> dict[str, ConfigIssue]:
    root.mkdir(parents=True, exist_ok=True)
    (root / "accounts.csv").write_text(ACCOUNTS, encoding="utf-8")
    (root / "nps.csv").write_text("email,score,date\n", encoding="utf-8")
    (root / "tickets.json").write_text('{"tickets": []}', encoding="utf-8")
    (root / "healthscore.yml").write_text(text, encoding="utf-8")
    with pytest.raises(ConfigError) as caught:
        load_project(root)
    issues = caught.value.issues
    by_key = {issue.key: issue for issue in issues}
    assert len(by_key) == len(issues), [str(issue) for issue in issues]
    return by_key


def test_unknown_option_hides_no_other_check(tmp_path: Path) -> None:
    issues = issues_of(tmp_path, PROJECT)

    assert set(issues) == {
        "sources.nps.options.scael",
        "sources.nps.options.email_attribute",
        "sources.zendesk.options.ticket_metric",
        "sources.zendesk.options.satisfaction_ratings",
    }
    assert issues["sources.nps.options.scael"].line == 12
    assert issues["sources.nps.options.scael"].message == (
        "unknown option of format nps_csv; its options are scale, email_column, "
        "email_attribute"
    )
    assert issues["sources.nps.options.email_attribute"].line == 13
    assert issues["sources.nps.options.email_attribute"].message == (
        "'domain' is not a column of the accounts source 'accounts'; list it under "
        "sources.accounts.attributes"
    )
    assert issues["sources.zendesk.options.ticket_metric"].line == 19
    assert issues["sources.zendesk.options.satisfaction_ratings"].line == 20
    assert issues["sources.zendesk.options.satisfaction_ratings"].message == (
        "no file matches 'ratings.json'"
    )


def test_invalid_option_value_hides_no_other_check(tmp_path: Path) -> None:
    text = PROJECT.replace("scael: csat", "scale: stars")

    issues = issues_of(tmp_path, text)

    assert "sources.nps.options.scale" in issues
    assert issues["sources.nps.options.scale"].line == 12
    assert "sources.nps.options.email_attribute" in issues


def test_valid_options_after_fixes_load(tmp_path: Path) -> None:
    text = (
        PROJECT.replace("scael: csat", "scale: csat")
        .replace("email_attribute: domain", "email_attribute: email_domain")
        .replace("ticket_metric: metrics.json", "ticket_metrics: metrics.json")
    )
    files = {
        "accounts.csv": ACCOUNTS,
        "nps.csv": "email,score,date\n",
        "tickets.json": '{"tickets": []}',
        "metrics.json": '{"ticket_metrics": []}',
        "ratings.json": '{"satisfaction_ratings": []}',
        "healthscore.yml": text,
    }
    for name, content in files.items():
        (tmp_path / name).write_text(content, encoding="utf-8")

    project = load_project(tmp_path)

    assert project.config.sources["nps"].options["email_attribute"] == "email_domain"


def test_source_formats_files_or_importers() -> None:
    """The reader loads the importers only for formats that are not plain files."""
    declared = set(typing.get_args(SourceConfig.model_fields["format"].annotation))
    formats = {arg for member in declared for arg in typing.get_args(member)} | (
        {None} if type(None) in declared else set()
    )
    assert formats == set(IMPORTERS) | set(_FILE_FORMATS)
    assert not set(IMPORTERS) & set(_FILE_FORMATS)
