"""Check that the columns the settings read are in the files of their sources.

A standard column such as `seats` or `segment` is optional in a source's files, so
the project file can be valid while a metric or a scorecard reads a column that the
files lack. `missing_columns` finds those settings once the sources are read, so
that `validate --data` reports them and scoring stops before it computes anything.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from healthscore.config import Project
from healthscore.config.models import (
    STANDARD_COLUMNS,
    AttributeMetric,
    MilestoneMetric,
)
from healthscore.expressions import parse_expression
from healthscore.sources.reader import LoadedSource


@dataclass(frozen=True)
class _Reader:
    """A setting that reads a column of a source."""

    subject: str
    """Metric or scorecard that reads the column, such as "metric 'seats'"."""
    key: str
    """Key path of the setting in the project file."""
    fix: str
    """The change of that setting which stops it reading the column."""


def missing_columns(project: Project, loaded: dict[str, LoadedSource]) -> list[str]:
    """Return one message per source column that settings read but the files lack.

    Only standard columns are checked: an attribute column that a file lacks
    already fails the read of its source. Sources that are not in `loaded` are
    skipped.
    """
    readers: dict[tuple[str, str], list[_Reader]] = {}
    for source, column, reader in _column_readers(project, loaded):
        item = loaded[source]
        standard = STANDARD_COLUMNS[item.config.kind]
        if column in standard and column not in item.columns:
            readers.setdefault((source, column), []).append(reader)
    return [
        _message(project, loaded[source], column, found)
        for (source, column), found in readers.items()
    ]


def _column_readers(
    project: Project, loaded: dict[str, LoadedSource]
) -> list[tuple[str, str, _Reader]]:
    """List (source, column, reader) for every column that a setting reads."""
    config = project.config
    found: list[tuple[str, str, _Reader]] = []
    accounts = config.accounts_source() if config.sources_of_kind("accounts") else None
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
        # `metrics.aggregates.check_columns` reports a missing `column` of a
        # metric that reads rows.
        where = getattr(metric, "where", None)
        if where:
            key = f"metrics.{name}.where"
            for used in sorted(parse_expression(where).names):
                found.append((source, used, _Reader(subject, key, f"change {key}")))
    if accounts not in loaded:
        return found
    for index, scorecard in enumerate(config.scorecards):
        subject = f"scorecard {scorecard.name!r}"
        if scorecard.when:
            key = f"scorecards[{index}].when"
            names = parse_expression(scorecard.when).names
            for used in sorted(names - set(config.metrics)):
                found.append((accounts, used, _Reader(subject, key, f"change {key}")))
        for component, settings in scorecard.components.items():
            for position, measure in enumerate(settings.measures):
                within = measure.normalize.within
                if within is None or within in config.metrics:
                    continue
                key = (
                    f"scorecards[{index}].components.{component}.measures"
                    f"[{position}].normalize.within"
                )
                found.append((accounts, within, _Reader(subject, key, f"change {key}")))
    return found


def _message(
    project: Project, source: LoadedSource, column: str, readers: list[_Reader]
) -> str:
    files = "the file" if len(source.files) == 1 else "the files"
    named = _describe(project, source.files)
    fix = (
        f"add the column to {files}, map a column of {files} to it in "
        f"sources.{source.name}.columns"
    )
    if len(readers) == 1:
        reader = readers[0]
        return (
            f"{reader.subject} ({reader.key}) needs column {column!r} of source "
            f"{source.name!r}, which {named} does not have; {fix}, or {reader.fix}"
        )
    keys = ", ".join(dict.fromkeys(reader.key for reader in readers))
    return (
        f"column {column!r} of source {source.name!r} is not in {named}, but "
        f"{len(readers)} settings read it: {keys}; {fix}, or change those settings"
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
