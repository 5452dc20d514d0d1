"""Reference checks of a project file: settings that name what others define.

A metric names its source and columns, a scorecard its metrics, an alert rule its
bands and channels, a playbook its alert rule and scorecard measures, and so on.
One model cannot check these names, so `reference_issues` checks them once the
settings are validated, in the parts of the file that passed their models.
"""

from __future__ import annotations

import difflib
import glob
import string
from collections.abc import Callable, Iterator, Set
from dataclasses import replace as replace_fields
from datetime import date, datetime
from typing import TYPE_CHECKING, Any

from healthscore.config.condition_types import VALUE_WORDS, condition_problems
from healthscore.config.errors import ConfigIssue, KeyPath, format_key, line_of
from healthscore.config.importer_options import importer_issues
from healthscore.config.models import (
    BUILTIN_SOURCES,
    STANDARD_COLUMNS,
    WINDOWED_METRICS,
    AggregateMetric,
    AttributeMetric,
    ChangeMetric,
    FormulaMetric,
    LatestMetric,
    MetricConfig,
    MilestoneMetric,
    NpsMetric,
    ProjectConfig,
    RateMetric,
    RatioMetric,
    SentimentMetric,
    SourceConfig,
    SourceMetric,
    TenureMetric,
)
from healthscore.config.partial import Unparsed
from healthscore.config.playbooks import TASK_FIELDS, scorecard_targets
from healthscore.config.privacy import pseudonymize_issues, source_column_types
from healthscore.config.retention import (
    ROLLUP_SUFFIX,
    is_store_source,
    rollup_settings,
    store_issues,
)
from healthscore.config.variables import expand_variables
from healthscore.expressions import literal_comparisons, parse_expression

if TYPE_CHECKING:
    from healthscore.config.loader import Project


def reference_issues(
    project: Project, lines: dict[KeyPath, int], unparsed: Unparsed
) -> Iterator[ConfigIssue]:
    """Cross-reference checks that a single model cannot make.

    `unparsed` lists the parts of the file that failed validation and are missing
    from `project.config`. A name that one of them may define is not reported as
    unknown, and the key paths of the issues are those of the file. A setting that
    failed and was replaced by its default is not checked, nor the whole of an
    entry kept without such a setting, since the check would read the default.
    """
    defaulted = [format_key(path) for path in unparsed.defaulted]
    incomplete = {format_key(path) for path in unparsed.incomplete_entries()}
    for found in _checked_references(project, lines, unparsed):
        if found.key in incomplete:
            continue
        if any(_is_within(found.key, key) for key in defaulted):
            continue
        yield found


def _is_within(key: str, outer: str) -> bool:
    """Tell whether formatted key path `key` is `outer` or a setting inside it."""
    return key == outer or key.startswith((f"{outer}.", f"{outer}["))


def _checked_references(
    project: Project, lines: dict[KeyPath, int], unparsed: Unparsed
) -> Iterator[ConfigIssue]:
    config = project.config
    file = str(project.file)

    def issue(
        path: KeyPath,
        message: str,
        choices: Any = (),
        word: str | None = None,
    ) -> ConfigIssue:
        """Build an issue at `path`, suggesting the choice closest to `word`.

        `word` defaults to the value at `path` when it is text, else the last key.
        """
        bad = str(path[-1]) if path else ""
        value = _value_at(config, path)
        target = word or (value if isinstance(value, str) else bad)
        close = difflib.get_close_matches(target, list(choices), n=1, cutoff=0.6)
        in_file = unparsed.file_path(path)
        return ConfigIssue(
            file=file,
            line=line_of(in_file, lines),
            key=format_key(in_file),
            message=message,
            suggestion=close[0] if close else None,
        )

    sources_left_out = unparsed.touches(("sources",))
    accounts = config.sources_of_kind("accounts")
    # A source that failed validation may be the accounts source.
    if len(accounts) > 1:
        yield issue(
            ("sources",),
            f"exactly one source of kind accounts is required, found "
            f"{len(accounts)}: {', '.join(accounts)}; keep kind accounts on one",
        )
    elif not accounts and not sources_left_out:
        yield issue(
            ("sources",),
            "exactly one source of kind accounts is required, but there is none; "
            "add a source with kind: accounts",
        )
    yield from _source_issues(project, issue)
    yield from _extension_issues(project, issue, unparsed)
    yield from _metric_issues(config, issue, unparsed)
    yield from _metric_kind_issues(config, issue, unparsed)
    yield from _text_metric_issues(config, issue)
    for index, scorecard in enumerate(config.scorecards):
        for component, settings in scorecard.components.items():
            for position, measure in enumerate(settings.measures):
                if measure.metric not in config.metrics and not unparsed.defines(
                    ("metrics",), measure.metric
                ):
                    path = ("scorecards", index, "components", component, "measures",
                            position, "metric")  # fmt: skip
                    yield issue(
                        path,
                        f"unknown metric {measure.metric!r}",
                        config.metrics,
                    )
        yield from _scorecard_column_issues(config, index, issue, unparsed)
        yield from _measure_type_issues(config, index, issue)
    yield from _alert_issues(config, issue, unparsed)
    yield from _guard_issues(config, issue, unparsed)
    yield from _playbook_issues(config, issue, unparsed)
    yield from _validation_issues(project, issue, unparsed)
    if (
        config.scoring.population == "active"
        and not config.sources_of_kind("subscriptions")
        and not sources_left_out
    ):
        yield issue(
            ("scoring", "population"),
            "population active needs a source of kind subscriptions; add one, or "
            "set population: all to score every account",
        )


def _value_at(config: ProjectConfig, path: KeyPath) -> Any:
    value: Any = config
    for part in path:
        if isinstance(value, dict):
            value = value.get(part)
        elif isinstance(value, list) and isinstance(part, int):
            value = value[part] if part < len(value) else None
        else:
            value = getattr(value, str(part), None)
    return value


def _source_issues(project: Project, issue: Any) -> Iterator[ConfigIssue]:
    for name, source in project.config.sources.items():
        if is_store_source(source):
            if source.joins:
                yield issue(
                    ("sources", name, "joins"),
                    "joins apply to sources read from files, not to the event store; "
                    "remove joins from this source",
                )
            continue  # read from the event store, not from files
        if source.table is not None:
            # The database is reached only when the data is read or validated.
            try:
                expand_variables(source.connection or "")
            except ValueError as exc:
                yield issue(("sources", name, "connection"), str(exc))
            yield from _lookup_issues(project, name, source, issue)
            continue
        try:
            source.resolved_format()
        except ValueError as exc:
            yield issue(("sources", name, "path"), str(exc))
        try:
            pattern = str(project.path(source.path))
        except ValueError as exc:
            yield issue(("sources", name, "path"), str(exc))
            continue
        if not glob.glob(pattern):
            yield issue(
                ("sources", name, "path"),
                f"no file matches {source.path!r} (relative to {project.root})",
            )
        yield from _lookup_issues(project, name, source, issue)
        yield from _join_issues(project, name, source, issue)


def _join_issues(
    project: Project, name: str, source: SourceConfig, issue: Any
) -> Iterator[ConfigIssue]:
    for index, join in enumerate(source.joins):
        path = ("sources", name, "joins", index, "path")
        try:
            pattern = str(project.path(join.path))
        except ValueError as exc:
            yield issue(path, str(exc))
            continue
        if not glob.glob(pattern):
            yield issue(
                path,
                f"no file matches {join.path!r} (relative to {project.root})",
            )


def _lookup_issues(
    project: Project, name: str, source: SourceConfig, issue: Any
) -> Iterator[ConfigIssue]:
    for column, lookup in source.lookups.items():
        if not project.path(lookup.path).is_file():
            yield issue(
                ("sources", name, "lookups", column, "path"),
                f"lookup file {lookup.path!r} not found (relative to "
                f"{project.root}); fix the path or create the file",
            )


def _metric_issues(
    config: ProjectConfig, issue: Any, unparsed: Unparsed
) -> Iterator[ConfigIssue]:
    metrics = config.metrics
    for name, metric in metrics.items():
        source_name = getattr(metric, "source", None)
        if source_name is not None:
            source = (
                config.sources.get(source_name)
                or _builtin_source(source_name)
                or rollup_settings(config, source_name)
            )
            if source is None and _source_left_out(source_name, unparsed):
                continue  # its columns are unknown too
            if source is None:
                yield issue(
                    ("metrics", name, "source"),
                    f"unknown source {source_name!r}",
                    config.sources,
                )
                continue
            columns = set(STANDARD_COLUMNS[source.kind]) | set(source.attribute_types())
            where = getattr(metric, "where", None)
            if where:
                for unknown in sorted(parse_expression(where).names - columns):
                    yield issue(
                        ("metrics", name, "where"),
                        f"unknown column {unknown!r} of source {source_name!r}",
                        columns,
                        word=unknown,
                    )
                types = {**STANDARD_COLUMNS[source.kind], **source.attribute_types()}
                for message in condition_problems(where, types, _column_words):
                    yield issue(("metrics", name, "where"), message)
            column = getattr(metric, "column", None)
            if column is not None and column not in columns:
                yield issue(
                    ("metrics", name, "column"),
                    f"unknown column {column!r} of source {source_name!r}",
                    columns,
                )
            if isinstance(metric, TenureMetric) and source.kind != "subscriptions":
                subscriptions = config.sources_of_kind("subscriptions")
                hint = (
                    f"use {', '.join(subscriptions)}"
                    if subscriptions
                    else "add a source of kind subscriptions"
                )
                yield issue(
                    ("metrics", name, "source"),
                    f"tenure needs a subscriptions source; {hint}",
                    subscriptions,
                    word=source_name,
                )
        for key, referenced in _metric_references(metric):
            if referenced not in metrics and not unparsed.defines(
                ("metrics",), referenced
            ):
                yield issue(
                    ("metrics", name, key), f"unknown metric {referenced!r}", metrics
                )
        if getattr(metric, "type", None) == "attribute":
            accounts = (
                config.sources.get(config.accounts_source())
                if config.sources_of_kind("accounts")
                else None
            )
            column = metric.column  # type: ignore[union-attr]
            if accounts is not None and column not in (
                set(STANDARD_COLUMNS["accounts"]) | set(accounts.attribute_types())
            ):
                yield issue(
                    ("metrics", name, "column"),
                    f"unknown column {column!r} of the accounts source",
                    set(STANDARD_COLUMNS["accounts"]) | set(accounts.attribute_types()),
                )
    cycle = _find_cycle(metrics)
    if cycle:
        yield issue(("metrics", cycle[0]), "metrics refer to each other in a cycle: "
                    + " -> ".join(cycle))  # fmt: skip
    for name, metric in metrics.items():
        if isinstance(metric, RateMetric) and metric.exposure == "tenure":
            tenures = [n for n, m in metrics.items() if isinstance(m, TenureMetric)]
            # A metric that failed validation may be the one tenure metric, and a
            # tenure_metric that failed may name one.
            unclear = (
                not tenures and unparsed.touches(("metrics",))
            ) or unparsed.is_defaulted(("metrics", name, "tenure_metric"))
            if metric.tenure_metric is None and len(tenures) != 1 and not unclear:
                hint = (
                    f"set tenure_metric to one of: {', '.join(tenures)}"
                    if tenures
                    else "add a metric of type tenure"
                )
                yield issue(
                    ("metrics", name, "exposure"),
                    "exposure tenure needs exactly one tenure metric, or "
                    f"tenure_metric; {hint}",
                )


def _metric_kind_issues(
    config: ProjectConfig, issue: Any, unparsed: Unparsed
) -> Iterator[ConfigIssue]:
    """Find metrics whose source, column or base metric is of a kind they cannot use.

    These settings name things that exist, so `_metric_issues` passes them, but
    scoring fails on them.
    """
    for name, metric in config.metrics.items():
        yield from _source_kind_issues(config, name, metric, issue)
        if isinstance(metric, ChangeMetric):
            base = config.metrics.get(metric.of)
            if base is None or _reads_incomplete_metric(config, name, unparsed):
                continue  # _metric_issues reports an unknown metric
            windowed = isinstance(base, WINDOWED_METRICS) and base.window is not None
            if not windowed:
                fitting = sorted(
                    other
                    for other, candidate in config.metrics.items()
                    if isinstance(candidate, WINDOWED_METRICS)
                    and candidate.window is not None
                )
                problem = (
                    "has no window"
                    if isinstance(base, WINDOWED_METRICS)
                    else f"is of type {base.type}"
                )
                examples = ", ".join(fitting[:5]) + (", ..." if fitting[5:] else "")
                yield issue(
                    ("metrics", name, "of"),
                    f"metric {metric.of!r} {problem}, but change compares a count, "
                    "distinct_count, sum, mean, min, max, rate, sentiment or nps "
                    "metric with a window against the window before; name such a "
                    f"metric ({examples or 'the project has none'})",
                )
        if isinstance(metric, MilestoneMetric) and metric.start_column is not None:
            yield from _start_column_issues(config, name, metric, issue, unparsed)
        if isinstance(
            metric, FormulaMetric | RatioMetric
        ) and not _reads_incomplete_metric(config, name, unparsed):
            yield from _derived_input_issues(config, name, metric, issue)


def _source_kind_issues(
    config: ProjectConfig, name: str, metric: MetricConfig, issue: Any
) -> Iterator[ConfigIssue]:
    """Find a row metric on the accounts source, or an aggregate of a text column."""
    if not isinstance(metric, SourceMetric):
        return
    source = (
        config.sources.get(metric.source)
        or _builtin_source(metric.source)
        or rollup_settings(config, metric.source)
    )
    if source is None:
        return  # _metric_issues reports an unknown source
    if source.kind == "accounts" and not isinstance(metric, TenureMetric):
        yield issue(
            ("metrics", name, "source"),
            f"source {metric.source!r} is the accounts source, which has one row per "
            f"account and no rows over time, so a {metric.type} metric cannot read "
            "it; read a source of another kind, or use type attribute to take an "
            "accounts column as it is",
        )
    if isinstance(metric, AggregateMetric):
        types = {**STANDARD_COLUMNS[source.kind], **source.attribute_types()}
        if types.get(metric.column) == "string":
            numbers = sorted(c for c, kind in types.items() if kind == "number")
            hint = (
                f"use one of: {', '.join(numbers)}"
                if numbers
                else "declare a column of type number under attributes of the source"
            )
            yield issue(
                ("metrics", name, "column"),
                f"column {metric.column!r} of source {metric.source!r} contains "
                f"text, but {metric.type} needs a number column; {hint}",
            )


def _derived_input_issues(
    config: ProjectConfig,
    name: str,
    metric: FormulaMetric | RatioMetric,
    issue: Any,
) -> Iterator[ConfigIssue]:
    """Find metrics of a formula or ratio that give text or dates.

    Scoring converts every input of a formula or ratio to a number, so such an
    input fails every run, whichever operator the formula applies to it.
    """
    rule = (
        "a formula computes with numbers"
        if isinstance(metric, FormulaMetric)
        else "a ratio divides numbers"
    )
    for key, referenced in _metric_references(metric):
        base = config.metrics.get(referenced)
        if base is None:
            continue  # _metric_issues reports an unknown metric
        found = _metric_value_type(config, base)
        if found is None or found[0] in ("number", "boolean"):
            continue
        kind, origin = found
        hint = (
            "declare the column as number if it holds numbers, or score the text "
            "in a scorecard with method categories"
            if kind == "string"
            else "compute a number of days instead, such as a days_since metric"
        )
        yield issue(
            ("metrics", name, key),
            f"metric {referenced!r} contains {VALUE_WORDS[kind]} ({origin}), but "
            f"{rule}; {hint}",
        )


def _start_column_issues(
    config: ProjectConfig,
    name: str,
    metric: MilestoneMetric,
    issue: Any,
    unparsed: Unparsed,
) -> Iterator[ConfigIssue]:
    """Find a `start_column` that is no date or timestamp column of the accounts."""
    if not config.sources_of_kind("accounts"):
        return  # reported as a missing accounts source
    accounts = config.sources[config.accounts_source()]
    types = {**STANDARD_COLUMNS["accounts"], **accounts.attribute_types()}
    dates = sorted(c for c, kind in types.items() if kind in ("date", "timestamp"))
    column = metric.start_column
    found = types.get(str(column))
    path = ("metrics", name, "start_column")
    if found is None and not unparsed.touches(("sources",)):
        yield issue(
            path,
            f"unknown column {column!r} of the accounts source; start_column needs "
            f"a date or timestamp column of it ({', '.join(dates)})",
            dates,
        )
    elif found is not None and found not in ("date", "timestamp"):
        yield issue(
            path,
            f"column {column!r} of the accounts source is of type {found}, but "
            f"start_column needs a date or timestamp column; use one of: "
            f"{', '.join(dates)}, or declare the column as date under attributes",
        )


def _guard_issues(
    config: ProjectConfig, issue: Any, unparsed: Unparsed
) -> Iterator[ConfigIssue]:
    """Find sources in `alerts.guard.max_age` that are unknown or have no dates."""
    for name in config.alerts.guard.max_age:
        path = ("alerts", "guard", "max_age", name)
        source = config.sources.get(name)
        if source is None and not unparsed.defines(("sources",), name):
            yield issue(
                path,
                f"unknown source {name!r}; max_age takes the sources "
                f"{', '.join(config.sources)}",
                config.sources,
                word=name,
            )
        elif source is not None and source.kind == "accounts":
            yield issue(
                path,
                f"source {name!r} is the accounts source, whose rows have no date; "
                "list a source with timestamps or subscription starts",
            )


def _validation_issues(
    project: Project, issue: Any, unparsed: Unparsed
) -> Iterator[ConfigIssue]:
    """Find missing shadow scorecard files and an unknown label column."""
    settings = project.config.validation
    for index, shadow in enumerate(settings.shadow):
        try:
            found = project.path(shadow).is_file()
        except ValueError as exc:
            yield issue(("validation", "shadow", index), str(exc))
            continue
        if not found:
            yield issue(
                ("validation", "shadow", index),
                f"shadow scorecard file {shadow!r} not found (relative to "
                f"{project.root}); write it with `healthscore learn` or fix the path",
            )
    label = settings.label_column
    config = project.config
    if label is None or not config.sources_of_kind("accounts"):
        return
    if unparsed.touches(("sources",)):
        return  # a source that failed may have declared the column
    accounts = config.sources[config.accounts_source()]
    columns = set(STANDARD_COLUMNS["accounts"]) | set(accounts.attribute_types())
    if label.column not in columns:
        yield issue(
            ("validation", "label_column", "column"),
            f"unknown column {label.column!r} of the accounts source; name a "
            "standard column or declare it under attributes of the accounts source",
            columns,
        )


def _text_metric_issues(config: ProjectConfig, issue: Any) -> Iterator[ConfigIssue]:
    """Find sentiment metrics on a non-text column and NPS on a non-numeric one."""
    words = {"string": "text", "number": "numbers"}
    for name, metric in config.metrics.items():
        if isinstance(metric, SentimentMetric):
            needed, rule = "string", "sentiment scores text"
        elif isinstance(metric, NpsMetric):
            needed, rule = "number", "nps needs numeric 0-10 scores"
        else:
            continue
        source = config.sources.get(metric.source) or _builtin_source(metric.source)
        if source is None:
            continue  # _metric_issues reports the unknown source
        types = {**STANDARD_COLUMNS[source.kind], **source.attribute_types()}
        found = types.get(metric.column)
        if found is None or found == needed:
            continue  # _metric_issues reports an unknown column
        fitting = [
            column
            for column, kind in types.items()
            if kind == needed and column != "account_id"
        ]
        hint = (
            f"use a column of type {needed}: {', '.join(fitting)}"
            if fitting
            else f"declare a column of type {needed} under attributes of the source"
        )
        yield issue(
            ("metrics", name, "column"),
            f"column {metric.column!r} of source {metric.source!r} contains "
            f"{words.get(found, found + ' values')}, but {rule}; {hint}",
        )


def _account_and_metric_names(config: ProjectConfig) -> set[str]:
    """Names that conditions over accounts can read: account columns and metrics."""
    names = set(config.metrics) | {"score", "band"}
    if config.sources_of_kind("accounts"):
        accounts = config.sources[config.accounts_source()]
        names |= set(STANDARD_COLUMNS["accounts"]) | set(accounts.attribute_types())
    return names


def _unknown_names(
    config: ProjectConfig, used: Set[str], known: Set[str], unparsed: Unparsed
) -> list[str]:
    """Return the account columns or metrics in `used` that the project lacks.

    `known` contains the names that the parsed settings define. A name is left out
    when a metric or source that failed validation may define it.
    """
    if not config.sources_of_kind("accounts") and unparsed.touches(("sources",)):
        return []  # the accounts source failed, so its columns are unknown
    return sorted(
        name for name in used - known if not unparsed.defines(("metrics",), name)
    )


#: Band of an account with too few measures, besides the configured bands.
_INSUFFICIENT_DATA = "insufficient_data"


def _band_literal_issues(
    config: ProjectConfig, text: str, path: KeyPath, issue: Any, unparsed: Unparsed
) -> Iterator[ConfigIssue]:
    """Report a condition that compares `band` with a name that is not a band.

    `band != 'healty'` would hold for every account, so the misspelling is an error.
    """
    if "band" in config.metrics:
        return  # a metric named band is compared with its own values
    bands = [band.name for band in config.bands] + [_INSUFFICIENT_DATA]
    for name, value in literal_comparisons(parse_expression(text)):
        if name != "band" or not isinstance(value, str) or value in bands:
            continue
        if unparsed.defines(("bands",), value):
            continue
        yield issue(
            path,
            f"compares band with {value!r}, which is not a band; the bands are "
            f"{', '.join(bands)}",
            bands,
            word=value,
        )


def _alert_issues(
    config: ProjectConfig, issue: Any, unparsed: Unparsed
) -> Iterator[ConfigIssue]:
    """Bands, channels and names in alert rules that the project does not define."""
    bands = {band.name for band in config.bands}
    names = _account_and_metric_names(config)
    types, describe = _condition_types(config, run_columns=True)
    channels = config.alerts.channels
    for index, rule in enumerate(config.alerts.rules):
        for attribute, key in (("to", "to"), ("from_band", "from"), ("band", "band")):
            value = getattr(rule, attribute, None)
            if (
                value is not None
                and value not in bands
                and not unparsed.defines(("bands",), value)
            ):
                yield issue(
                    ("alerts", "rules", index, key),
                    f"unknown band {value!r}; the bands are {', '.join(sorted(bands))}",
                    bands,
                    word=value,
                )
        for position, channel in enumerate(rule.channels or []):
            if channel not in channels and not unparsed.defines(
                ("alerts", "channels"), channel
            ):
                yield issue(
                    ("alerts", "rules", index, "channels", position),
                    f"unknown channel {channel!r}; the channels are "
                    f"{', '.join(channels) or 'none'}",
                    channels,
                )
        conditions: list[tuple[tuple[str, ...], str | None]] = [
            (("condition",), getattr(rule, "condition", None))
        ]
        if rule.escalation is not None:
            conditions.append((("escalation", "when"), rule.escalation.when))
        for keys, text in conditions:
            path: tuple[str | int, ...] = ("alerts", "rules", index, *keys)
            used = parse_expression(text).names if text else set()
            for name in _unknown_names(config, used, names, unparsed):
                yield issue(
                    path,
                    f"unknown account column or metric {name!r}",
                    names,
                    word=name,
                )
            if text:
                yield from _band_literal_issues(config, text, path, issue, unparsed)
                for message in condition_problems(text, types, describe):
                    yield issue(path, message)


def _playbook_issues(
    config: ProjectConfig, issue: Any, unparsed: Unparsed
) -> Iterator[ConfigIssue]:
    """Alert rules, names, addresses and template fields in playbooks that do not
    exist."""
    # Rules left out for a problem of their own still count as written.
    rules = [rule.name for rule in config.alerts.rules]
    rules += sorted(unparsed.names.get(("alerts", "rules"), ()))
    names = _account_and_metric_names(config)
    types, describe = _condition_types(config, run_columns=True)
    fields = names | set(TASK_FIELDS)
    targets = scorecard_targets(config.scorecards)
    for index, playbook in enumerate(config.playbooks):
        on_alert = playbook.on_alert
        if (
            on_alert is not None
            and on_alert not in rules
            and not unparsed.defines(("alerts", "rules"), on_alert)
        ):
            yield issue(
                ("playbooks", index, "on_alert"),
                f"unknown alert rule {on_alert!r}; the rules are "
                f"{', '.join(dict.fromkeys(rules)) or 'none'}",
                rules,
                word=on_alert,
            )
        if playbook.when:
            used = parse_expression(playbook.when).names
            for name in _unknown_names(config, used, names, unparsed):
                yield issue(
                    ("playbooks", index, "when"),
                    f"unknown account column or metric {name!r}",
                    names,
                    word=name,
                )
            yield from _band_literal_issues(
                config, playbook.when, ("playbooks", index, "when"), issue, unparsed
            )
            for message in condition_problems(playbook.when, types, describe):
                yield issue(("playbooks", index, "when"), message)
        for position, target in enumerate(playbook.addresses):
            # A scorecard that failed validation may hold the target.
            if target not in targets and not unparsed.touches(("scorecards",)):
                yield issue(
                    ("playbooks", index, "addresses", position),
                    f"{target!r} is not a measure or component of any scorecard; "
                    f"use one of: {', '.join(sorted(targets))}",
                    targets,
                )
        for key in ("title", "description"):
            template = getattr(playbook.task, key)
            parts = string.Formatter().parse(template)
            placeholders = {part[1] for part in parts if part[1]}
            for name in _unknown_names(config, placeholders, fields, unparsed):
                yield issue(
                    ("playbooks", index, "task", key),
                    f"unknown template field {{{name}}}",
                    fields,
                    word=name,
                )
            problem = template_format_problem(template, _template_samples(types))
            if problem:
                yield issue(("playbooks", index, "task", key), problem)


#: A value of each column type as a run gives it to a task template. Numbers are
#: floats because the readers cast them to DOUBLE, and dates are pandas Timestamps,
#: which format like `datetime`.
_TYPE_SAMPLES: dict[str, Any] = {
    "string": "text",
    "number": 1234.5,
    "boolean": True,
    "date": datetime(2026, 1, 31),
    "timestamp": datetime(2026, 1, 31, 12, 30),
}

#: Values of the fields that every task has, of the types that a run gives them.
_TASK_FIELD_SAMPLES: dict[str, Any] = {
    "account_id": "A1",
    "score": 55.5,
    "band": "stable",
    "owner": "ana@example.com",
    "playbook": "playbook",
    "as_of": date(2026, 1, 31),
    "due_on": date(2026, 2, 14),
    "alert_title": "Alert title",
}


class _AnyValue:
    """A template value of unknown type: it takes every format spec, attribute and
    item, so the check reports no problem that the real value may not have."""

    def __format__(self, spec: str) -> str:
        return ""

    def __getattr__(self, name: str) -> _AnyValue:
        return self

    def __getitem__(self, key: Any) -> _AnyValue:
        return self


def _template_samples(types: dict[str, str]) -> dict[str, Any]:
    """Return a value of the right type for each template field whose type is known.

    `types` maps account columns and metrics to their column types, a metric's
    winning over a column of the same name, as in a run. The task fields win
    over both, as in `monitoring.playbooks`.
    """
    samples = {
        name: _TYPE_SAMPLES[kind]
        for name, kind in types.items()
        if kind in _TYPE_SAMPLES
    }
    samples.update(_TASK_FIELD_SAMPLES)
    return samples


class _SampleFormatter(string.Formatter):
    def __init__(self, samples: dict[str, Any]) -> None:
        self.samples = samples

    def get_value(self, key: int | str, args: Any, kwargs: Any) -> Any:
        return self.samples.get(str(key), _AnyValue())


def template_format_problem(template: str, samples: dict[str, Any]) -> str | None:
    """Fill each field of a task template with a sample value; describe the first
    that fails, else return None.

    A format spec that does not fit the field's type, such as `{score:.0q}` or
    `{name:.0f}`, fails for every account whose value is not missing, so it is
    found here instead of in the scoring run. Fields not in `samples` take any
    spec. A value that is missing in a run shows as `n/a` whatever the spec.
    """
    formatter = _SampleFormatter(samples)
    for _text, field, spec, conversion in formatter.parse(template):
        # NOTE: a spec with a nested field, as in `{score:.{digits}f}`, is not
        # checked, because the nested field's value is not known here.
        if field is None or "{" in (spec or ""):
            continue
        written = "{" + field + (f"!{conversion}" if conversion else "")
        written += (f":{spec}" if spec else "") + "}"
        try:
            formatter.format(written)
        except (ValueError, TypeError, AttributeError, IndexError, KeyError) as exc:
            return (
                f"invalid format spec in {written}: {exc}; correct the spec, for "
                "example {score:.0f} for a number, "
                "{name:>20} for text or {as_of:%Y-%m-%d} for a date"
            )
    return None


def _scorecard_column_issues(
    config: ProjectConfig, index: int, issue: Any, unparsed: Unparsed
) -> Iterator[ConfigIssue]:
    """Names in a scorecard's `when` and `within` that match no column."""
    if not config.sources_of_kind("accounts"):
        return
    accounts = config.sources[config.accounts_source()]
    known = set(STANDARD_COLUMNS["accounts"]) | set(accounts.attribute_types())
    known |= set(config.metrics)
    scorecard = config.scorecards[index]
    if scorecard.when:
        used = parse_expression(scorecard.when).names
        for name in _unknown_names(config, used, known, unparsed):
            yield issue(
                ("scorecards", index, "when"),
                f"unknown account column or metric {name!r}",
                known,
                word=name,
            )
        types, describe = _condition_types(config, run_columns=False)
        for message in condition_problems(scorecard.when, types, describe):
            yield issue(("scorecards", index, "when"), message)
    for component, settings in scorecard.components.items():
        for position, measure in enumerate(settings.measures):
            within = measure.normalize.within
            if within is not None and _unknown_names(config, {within}, known, unparsed):
                path = ("scorecards", index, "components", component, "measures",
                        position, "normalize", "within")  # fmt: skip
                yield issue(path, f"unknown account column or metric {within!r}", known)


#: Normalization methods that compute with the values, so they need numbers.
_NUMERIC_METHODS = ("bounds", "percentile", "zscore", "target", "steps")


def _measure_type_issues(
    config: ProjectConfig, index: int, issue: Any
) -> Iterator[ConfigIssue]:
    """Find measures that normalize text or dates with a method that needs numbers."""
    scorecard = config.scorecards[index]
    for component, settings in scorecard.components.items():
        for position, measure in enumerate(settings.measures):
            method = measure.normalize.method
            if method not in _NUMERIC_METHODS:
                continue
            metric = config.metrics.get(measure.metric)
            if metric is None:
                continue  # reported as an unknown metric
            found = _metric_value_type(config, metric)
            if found is None or found[0] in ("number", "boolean"):
                continue
            kind, origin = found
            hint = (
                "use method categories with a score for each value, or declare the "
                "column as number if it holds numbers"
                if kind == "string"
                else "score a number of days instead, such as a days_since metric"
            )
            path = ("scorecards", index, "components", component, "measures",
                    position, "normalize", "method")  # fmt: skip
            yield issue(
                path,
                f"metric {measure.metric!r} contains {VALUE_WORDS[kind]} ({origin}), "
                f"but method {method} needs numbers; {hint}",
            )


def _metric_value_type(
    config: ProjectConfig, metric: MetricConfig
) -> tuple[str, str] | None:
    """Return the column type of a metric's values and, for a copied column, its origin.

    Attribute and latest metrics give the values of the column they read, and the
    origin names that column and its type. An aggregate of a date column is not
    known. Every other metric gives numbers, with an empty origin. Returns None when
    the type is not known.
    """
    if isinstance(metric, AttributeMetric):
        if not config.sources_of_kind("accounts"):
            return None
        source_name = config.accounts_source()
        source: SourceConfig | None = config.sources[source_name]
    elif isinstance(metric, LatestMetric | AggregateMetric):
        source_name = metric.source
        source = (
            config.sources.get(source_name)
            or _builtin_source(source_name)
            or rollup_settings(config, source_name)
        )
    else:
        return "number", ""
    if source is None:
        return None
    kind = {**STANDARD_COLUMNS[source.kind], **source.attribute_types()}.get(
        metric.column
    )
    if kind is None:
        return None
    if isinstance(metric, AggregateMetric):
        return ("number", "") if kind in ("number", "boolean") else None
    origin = f"column {metric.column!r} of source {source_name!r} is of type {kind}"
    return kind, origin


def _condition_types(
    config: ProjectConfig, run_columns: bool
) -> tuple[dict[str, str], Callable[[str], str]]:
    """Return the column types of the names that account conditions read.

    The function returned with them names one of them in a message. A metric's
    type wins over an account column of the same name, as when the condition is
    evaluated. With `run_columns`, the run's `score` and `band` are included, which
    alert rules and playbooks read but scorecards cannot.
    """
    types: dict[str, str] = {}
    words: dict[str, str] = {}
    if config.sources_of_kind("accounts"):
        accounts = config.sources[config.accounts_source()]
        columns = {**STANDARD_COLUMNS["accounts"], **accounts.attribute_types()}
        types.update(columns)
        words.update(dict.fromkeys(columns, "account column"))
    for name, metric in config.metrics.items():
        found = _metric_value_type(config, metric)
        types.pop(name, None)
        if found is not None:
            types[name] = found[0]
        words[name] = "metric"
    if run_columns:
        types.update(score="number", band="string")
        words.update(score="column", band="column")
    return types, lambda name: f"{words.get(name, 'column')} {name!r}"


def _column_words(name: str) -> str:
    return f"column {name!r}"


def _builtin_source(name: str) -> SourceConfig | None:
    kind = BUILTIN_SOURCES.get(name)
    if kind is None:
        return None
    return SourceConfig.model_validate({"kind": kind, "path": "operational store"})


def _metric_references(metric: MetricConfig) -> list[tuple[str, str]]:
    if isinstance(metric, RatioMetric):
        return [("numerator", metric.numerator), ("denominator", metric.denominator)]
    if isinstance(metric, ChangeMetric):
        return [("of", metric.of)]
    if isinstance(metric, FormulaMetric):
        return [
            ("expression", name)
            for name in sorted(parse_expression(metric.expression).names)
        ]
    if isinstance(metric, RateMetric) and metric.tenure_metric:
        return [("tenure_metric", metric.tenure_metric)]
    return []


def metric_dependencies(metric: MetricConfig) -> list[str]:
    """Names of the metrics that `metric` is computed from."""
    return [name for _, name in _metric_references(metric)]


def _find_cycle(metrics: dict[str, MetricConfig]) -> list[str] | None:
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(name: str) -> list[str] | None:
        state[name] = 1
        stack.append(name)
        for dependency in metric_dependencies(metrics[name]):
            if dependency not in metrics:
                continue
            if state.get(dependency) == 1:
                return [*stack[stack.index(dependency) :], dependency]
            if dependency not in state:
                found = visit(dependency)
                if found:
                    return found
        stack.pop()
        state[name] = 2
        return None

    for name in metrics:
        if name not in state:
            found = visit(name)
            if found:
                return found
    return None


def metric_closure(metrics: dict[str, MetricConfig], names: set[str]) -> set[str]:
    """Return the metrics of `names` and all metrics they are computed from."""
    result: set[str] = set()
    pending = [name for name in names if name in metrics]
    while pending:
        name = pending.pop()
        if name in result:
            continue
        result.add(name)
        pending.extend(d for d in metric_dependencies(metrics[name]) if d in metrics)
    return result


def _source_left_out(name: str, unparsed: Unparsed) -> bool:
    """Tell whether source `name`, or the store source it is the rollup of, failed."""
    return unparsed.defines(("sources",), name) or (
        name.endswith(ROLLUP_SUFFIX)
        and unparsed.defines(("sources",), name.removesuffix(ROLLUP_SUFFIX))
    )


def _extension_issues(
    project: Project, issue: Any, unparsed: Unparsed
) -> Iterator[ConfigIssue]:
    """Importer options, pseudonymized columns, the event store and retention."""
    config = project.config
    for path, message in importer_issues(config, project.path):
        yield issue(path, message)
    # A column that no parsed source has may be one of a source that failed.
    columns = source_column_types(config)
    listed = config.privacy.pseudonymize.columns if config.privacy.pseudonymize else []
    for path, message, suggestion in pseudonymize_issues(config):
        if listed[int(path[-1])] not in columns and unparsed.touches(("sources",)):
            continue
        yield replace_fields(issue(path, message), suggestion=suggestion)
    for path, message in store_issues(config):
        retained = path[:2] == ("retention", "sources")
        if retained and _source_left_out(str(path[2]), unparsed):
            continue
        # How far back a metric reads depends on the windows of its base metrics.
        if path[:1] == ("metrics",) and _reads_incomplete_metric(
            config, str(path[1]), unparsed
        ):
            continue
        yield issue(path, message)


def _reads_incomplete_metric(
    config: ProjectConfig, name: str, unparsed: Unparsed
) -> bool:
    """Tell whether metric `name` is computed from a metric that lost a setting.

    Such a base metric was kept in the partial settings with the default of a
    setting that failed, such as no window, so a check of `name` that reads the
    base's settings would read the default.
    """
    incomplete = {
        str(path[1]) for path in unparsed.incomplete_entries() if path[0] == "metrics"
    }
    metric = config.metrics.get(name)
    if not incomplete or metric is None:
        return False
    bases = metric_closure(config.metrics, set(metric_dependencies(metric)))
    return bool(bases & incomplete)
