"""Check that the columns the settings read are in the files of their sources.

A standard column such as `seats` or `segment` is optional in a source's files, so
the project file can be valid while a metric, a scorecard, an alert rule or a
playbook reads a column that the files lack. `missing_columns` finds those settings
once the sources are read, so that `validate --data` reports them and scoring stops
before it computes anything or stores a snapshot.

Alert rules and playbooks read these account columns:

- A metric rule's `condition`, an `escalation.when` and a playbook's `when`, whose
  evaluation fails on a column that the accounts lack.
- The fields of a playbook's task `title` and `description`, which fail the same way.
- `renewal_date`, which a `renewal_risk` rule reads.
- An `owner_column` other than `owner`, which fails the rule, and a task `owner`
  other than `owner`, which would leave every task without an owner of its own.
- The default owner column `owner` when an email channel sends a rule's alerts
  `to: owner`, because every one of those emails would fail without an owner.

Otherwise the default owner column `owner` is optional. Without it, alerts have no
owner and tasks take the owner of their alert, as the settings document.
"""

from __future__ import annotations

import csv
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from healthscore.config import Project
from healthscore.config.alerts import EmailChannel, RenewalRiskRule
from healthscore.config.models import (
    STANDARD_COLUMNS,
    AttributeMetric,
    MetricConfig,
    MilestoneMetric,
    ProjectConfig,
)
from healthscore.config.playbooks import TASK_FIELDS, template_fields
from healthscore.expressions import parse_expression
from healthscore.sources.csv_rows import csv_header
from healthscore.sources.reader import LoadedSource

#: Account column of alert and task owners when the settings name none.
DEFAULT_OWNER_COLUMN = "owner"


@dataclass(frozen=True)
class _Reader:
    """A setting that reads a column of a source."""

    subject: str
    """Setting that reads the column, such as "metric 'seats'"."""
    key: str
    """Key path of the setting in the project file."""
    fix: str
    """The change of that setting which stops it reading the column."""
    any_column: bool = False
    """Whether the setting may name a column that the source does not declare,
    because loading the project file does not check the names of this setting."""


def missing_columns(project: Project, loaded: dict[str, LoadedSource]) -> list[str]:
    """Return one message per source column that settings read but the files lack.

    Standard columns are checked for every setting, because an attribute column
    that a file lacks already fails the read of its source. The messages end with
    those of `metric_column_problems`. Owner columns, whose
    names loading the project file does not check, are also reported when they
    are neither a standard column nor an attribute of the accounts source.
    Sources that are not in `loaded` are skipped.
    """
    missing: dict[tuple[str, str], list[_Reader]] = {}
    undeclared: dict[tuple[str, str], list[_Reader]] = {}
    for source, column, reader in _column_readers(project, loaded):
        item = loaded[source]
        if column in item.columns:
            continue
        if column in STANDARD_COLUMNS[item.config.kind]:
            missing.setdefault((source, column), []).append(reader)
        elif reader.any_column:
            undeclared.setdefault((source, column), []).append(reader)
    messages = [
        _message(project, loaded[source], column, found)
        for (source, column), found in missing.items()
    ]
    messages += [
        _undeclared_message(project, loaded[source], column, found)
        for (source, column), found in undeclared.items()
    ]
    return messages + metric_column_problems(project.config.metrics, loaded)


def metric_column_problems(
    metrics: Mapping[str, MetricConfig], loaded: Mapping[str, LoadedSource]
) -> list[str]:
    """Return one message per metric whose `column` its source does not have.

    This covers every metric that reads a column of its source's rows, such as
    the text of a sentiment metric or the values of a sum. Sources that are not
    in `loaded` are skipped.
    """
    problems = []
    for name, metric in metrics.items():
        source = getattr(metric, "source", None)
        column = getattr(metric, "column", None)
        if not isinstance(source, str) or source not in loaded or column is None:
            continue
        have = loaded[source].columns
        if column not in have:
            problems.append(
                f"metric {name!r} reads column {column!r}, which source "
                f"{source!r} does not have (it has {', '.join(have)})"
                f"{_glob_clause(loaded[source], column)}; add "
                f"the column to the source's files, map it in sources."
                f"{source}.columns, or fix metrics.{name}.column"
            )
    return problems


def _glob_clause(source: LoadedSource, column: str) -> str:
    """Return `_glob_note` as a clause to add after a list of columns, or ""."""
    note = _glob_note(source, column)
    return f": {note}" if note else ""


def _glob_note(
    source: LoadedSource, column: str, project: Project | None = None
) -> str:
    """Name the later files of a CSV glob whose header has a column the first lacks.

    A CSV glob takes its columns from its first file, so the values of such a
    column in the later files cannot be read until the first file has it too.
    Returns an empty text for other sources, or when no later header has it.
    """
    config = source.config
    if len(source.files) < 2 or config.resolved_format() != "csv":
        return ""
    expected = config.file_column(column).strip().casefold()
    first, *others = source.files
    having = []
    for file in others:
        try:
            header = csv_header(file, config.delimiter) or []
        except (OSError, EOFError, UnicodeDecodeError, csv.Error):
            continue
        if expected in {name.strip().casefold() for name in header}:
            having.append(file)
    if not having:
        return ""
    if project is not None:
        having = [_describe(project, (file,)) for file in having]
        first = _describe(project, (first,))
    named = having[0] if len(having) == 1 else f"{having[0]} and {len(having) - 1} more"
    verb = "has" if len(having) == 1 else "have"
    return (
        f"{named} {verb} it, but a CSV glob takes its columns from its first "
        f"file, {first}, which lacks it"
    )


def _column_readers(
    project: Project, loaded: dict[str, LoadedSource]
) -> list[tuple[str, str, _Reader]]:
    """List (source, column, reader) for every column that a setting reads."""
    config = project.config
    accounts = config.accounts_source() if config.sources_of_kind("accounts") else None
    found = _metric_readers(config, loaded, accounts)
    if accounts not in loaded:
        return found
    account_readers = [
        *_scorecard_readers(config),
        *_alert_readers(config),
        *_playbook_readers(config),
    ]
    found += [(accounts, column, reader) for column, reader in account_readers]
    return found


def _metric_readers(
    config: ProjectConfig, loaded: dict[str, LoadedSource], accounts: str | None
) -> list[tuple[str, str, _Reader]]:
    """List (source, column, reader) for the columns that metrics read."""
    found: list[tuple[str, str, _Reader]] = []
    for name, metric in config.metrics.items():
        subject = f"metric {name!r}"
        if isinstance(metric, AttributeMetric):
            if accounts in loaded:
                key = f"metrics.{name}.column"
                remove = f"remove metric {name!r}"
                found.append((accounts, metric.column, _Reader(subject, key, remove)))
            continue
        start = getattr(metric, "start_column", None)
        if isinstance(metric, MilestoneMetric) and start and accounts in loaded:
            key = f"metrics.{name}.start_column"
            found.append((accounts, start, _Reader(subject, key, f"change {key}")))
        source = getattr(metric, "source", None)
        if source not in loaded:
            continue
        # `metric_column_problems` reports a missing `column` of a metric that
        # reads rows.
        where = getattr(metric, "where", None)
        if where:
            key = f"metrics.{name}.where"
            for used in sorted(parse_expression(where).names):
                found.append((source, used, _Reader(subject, key, f"change {key}")))
    return found


def _scorecard_readers(config: ProjectConfig) -> list[tuple[str, _Reader]]:
    """List (column, reader) for the account columns that scorecards read."""
    found: list[tuple[str, _Reader]] = []
    for index, scorecard in enumerate(config.scorecards):
        subject = f"scorecard {scorecard.name!r}"
        if scorecard.when:
            key = f"scorecards[{index}].when"
            found += _condition_readers(config, subject, key, scorecard.when)
        for component, settings in scorecard.components.items():
            for position, measure in enumerate(settings.measures):
                within = measure.normalize.within
                if within is None or within in config.metrics:
                    continue
                key = (
                    f"scorecards[{index}].components.{component}.measures"
                    f"[{position}].normalize.within"
                )
                found.append((within, _Reader(subject, key, f"change {key}")))
    return found


def _alert_readers(config: ProjectConfig) -> list[tuple[str, _Reader]]:
    """List (column, reader) for the account columns that alert rules read."""
    found: list[tuple[str, _Reader]] = []
    if not config.alerts.rules:
        return found  # and a run without rules need not load the monitoring package
    # Imported here because the monitoring package imports healthscore.sources.
    from healthscore.monitoring.alerts import RENEWAL_COLUMN

    for index, rule in enumerate(config.alerts.rules):
        subject = f"alert rule {rule.name!r}"
        condition = getattr(rule, "condition", None)
        if condition:
            key = f"alerts.rules[{index}].condition"
            found += _condition_readers(config, subject, key, condition)
        if rule.escalation is not None:
            key = f"alerts.rules[{index}].escalation.when"
            found += _condition_readers(config, subject, key, rule.escalation.when)
        if isinstance(rule, RenewalRiskRule):
            reader = _Reader(subject, f"alerts.rules[{index}]", f"remove {subject}")
            found.append((RENEWAL_COLUMN, reader))
        # Without the default column the rule's alerts have no owner, but a
        # column that the settings name fails the rule.
        if rule.owner_column != DEFAULT_OWNER_COLUMN:
            key = f"alerts.rules[{index}].owner_column"
            reader = _Reader(subject, key, f"change {key}", any_column=True)
            found.append((rule.owner_column, reader))
    found += _owner_email_readers(config)
    return found


def owner_email_channels(config: ProjectConfig) -> dict[str, list[str]]:
    """Return, per owner column, the email channels that send alerts to its owners.

    A channel counts for a column when it is an email channel with `to: owner`
    and an alert rule with that `owner_column` sends to it: the rule lists the
    channel, or lists no channels and so sends to all. Columns and channels are
    in the order of the settings.
    """
    settings = config.alerts
    by_column: dict[str, list[str]] = {}
    for name, channel in settings.channels.items():
        if not isinstance(channel, EmailChannel) or channel.to != "owner":
            continue
        for rule in settings.rules:
            if rule.channels is None or name in rule.channels:
                listed = by_column.setdefault(rule.owner_column, [])
                if name not in listed:
                    listed.append(name)
    return by_column


def _owner_email_readers(config: ProjectConfig) -> list[tuple[str, _Reader]]:
    """List each email channel `to: owner` that a rule with the default owner uses.

    Such an email fails for an alert without an owner, and every alert of a rule
    with the default owner column has none when the accounts lack that column.
    """
    found: list[tuple[str, _Reader]] = []
    for name in owner_email_channels(config).get(DEFAULT_OWNER_COLUMN, []):
        key = f"alerts.channels.{name}.to"
        reader = _Reader(f"email channel {name!r}", key, f"list recipients in {key}")
        found.append((DEFAULT_OWNER_COLUMN, reader))
    return found


def _playbook_readers(config: ProjectConfig) -> list[tuple[str, _Reader]]:
    """List (column, reader) for the account columns that playbooks read."""
    found: list[tuple[str, _Reader]] = []
    for index, playbook in enumerate(config.playbooks):
        subject = f"playbook {playbook.name!r}"
        if playbook.when:
            key = f"playbooks[{index}].when"
            found += _condition_readers(config, subject, key, playbook.when)
        task = playbook.task
        for field in ("title", "description"):
            key = f"playbooks[{index}].task.{field}"
            names = set(template_fields(getattr(task, field)))
            for used in sorted(names - set(TASK_FIELDS) - set(config.metrics)):
                found.append((used, _Reader(subject, key, f"change {key}")))
        # Without the default column a task takes the owner of its alert. A
        # column that the settings name and the accounts lack would do the same
        # for every task, silently. Tasks also read metrics, score and band.
        readable = {DEFAULT_OWNER_COLUMN, "score", "band", *config.metrics}
        if task.owner not in readable:
            key = f"playbooks[{index}].task.owner"
            reader = _Reader(subject, key, f"change {key}", any_column=True)
            found.append((task.owner, reader))
    return found


def _condition_readers(
    config: ProjectConfig, subject: str, key: str, condition: str
) -> list[tuple[str, _Reader]]:
    """List (column, reader) for the names of a condition that are not metrics."""
    names = parse_expression(condition).names - set(config.metrics)
    return [(used, _Reader(subject, key, f"change {key}")) for used in sorted(names)]


def _message(
    project: Project, source: LoadedSource, column: str, readers: list[_Reader]
) -> str:
    files = "the file" if len(source.files) == 1 else "the files"
    named = _describe(project, source.files)
    fix = (
        f"add the column to {files}, map a column of {files} to it in "
        f"sources.{source.name}.columns"
    )
    note = _glob_note(source, column, project)
    if len(readers) == 1:
        reader = readers[0]
        lacks = "does not have" if len(source.files) == 1 else "do not have"
        lacking = f"the source lacks: {note}" if note else f"{named} {lacks}"
        return (
            f"{reader.subject} ({reader.key}) needs column {column!r} of source "
            f"{source.name!r}, which {lacking}; {fix}, or {reader.fix}"
        )
    keys = ", ".join(dict.fromkeys(reader.key for reader in readers))
    where = f"the source ({note})" if note else named
    return (
        f"column {column!r} of source {source.name!r} is not in {where}, but "
        f"{len(readers)} settings read it: {keys}; {fix}, or change those settings"
    )


def _undeclared_message(
    project: Project, source: LoadedSource, column: str, readers: list[_Reader]
) -> str:
    problem = (
        "which is neither a standard column nor an attribute of source "
        f"{source.name!r} ({_describe(project, source.files)})"
    )
    fix = f"declare it under sources.{source.name}.attributes"
    if len(readers) == 1:
        reader = readers[0]
        return (
            f"{reader.subject} ({reader.key}) reads column {column!r}, {problem}; "
            f"{fix}, or {reader.fix}"
        )
    keys = ", ".join(dict.fromkeys(reader.key for reader in readers))
    return (
        f"{len(readers)} settings read column {column!r}, {problem}: {keys}; {fix}, "
        "or change those settings"
    )


def _describe(project: Project, files: tuple[str, ...]) -> str:
    """Name up to 3 files, relative to the project folder where they are inside it."""
    root = Path(project.root).resolve()
    shown = []
    for file in files[:3]:
        path = Path(file).resolve()
        shown.append(str(path.relative_to(root)) if path.is_relative_to(root) else file)
    if len(files) > len(shown):
        shown.append(f"{len(files) - len(shown)} more files")
    return " and ".join(shown) if len(shown) <= 2 else ", ".join(shown)
