"""Settings of the event store and the `retention` section, and their checks.

A source with `path: store` reads the rows that `healthscore ingest` appended to the
project's event store instead of files. Each such source `NAME` also offers the
source `NAME_daily`: one row per account and day with the row count, the sum, minimum
and maximum of every numeric column, and the first and last timestamp. Raw days older
than the retention age are purged, and the daily rollup keeps long windows working.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from pydantic import Field, field_validator

from healthscore.config.models import (
    STANDARD_COLUMNS,
    AggregateMetric,
    ChangeMetric,
    CountMetric,
    DaysSinceMetric,
    Duration,
    MilestoneMetric,
    SourceConfig,
    StrictModel,
    WindowConfig,
    WindowedMetric,
    parse_duration,
)
from healthscore.expressions import parse_expression

if TYPE_CHECKING:
    from healthscore.config.models import ProjectConfig

#: The `path` of a source that reads the product's event store.
STORE_PATH = "store"

#: Suffix of the daily rollup source of a store source.
ROLLUP_SUFFIX = "_daily"

#: Source kinds that can be kept in the event store: those with a timestamp column.
STORE_KINDS = ("events", "tickets", "invoices", "surveys", "notes")

#: Columns of every rollup besides the `<column>_sum`, `_min` and `_max` columns.
ROLLUP_BASE_COLUMNS = {
    "account_id": "string",
    "day": "date",
    "rows": "number",
    "first_timestamp": "timestamp",
    "last_timestamp": "timestamp",
}

#: Statistics kept per numeric column in the rollup.
ROLLUP_STATISTICS = ("sum", "min", "max")


class RetentionSettings(StrictModel):
    """How long raw rows of the event store are kept before only their rollup stays.

    A raw day is purged only when its daily rollup exists and counts the same rows,
    so metrics on the rollup source give the same values before and after a purge.
    """

    raw_events: Duration | None = Field(
        default=None,
        description="Age after which raw days of every store source are purged, "
        "for example `180d`; none keeps them forever. A day is purged when it ends "
        "this long or longer before today in the project's time zone.",
    )
    sources: dict[str, Duration] = Field(
        default_factory=dict,
        description="Age per store source, overriding `raw_events`, for example "
        "`{usage: 90d}`.",
    )
    after_score: bool = Field(
        default=False,
        description="Run `healthscore retain` at the end of every `healthscore "
        "score` that stores a snapshot.",
    )

    @field_validator("raw_events", mode="before")
    @classmethod
    def _parse_age(cls, value: Any) -> Duration | None:
        return None if value is None else parse_duration(value)

    @field_validator("sources", mode="before")
    @classmethod
    def _parse_ages(cls, value: Any) -> Any:
        if not isinstance(value, dict):
            return value
        return {name: parse_duration(age) for name, age in value.items()}

    def age(self, source: str) -> Duration | None:
        """Return the retention age of a store source, or None to keep its rows."""
        return self.sources.get(source, self.raw_events)


def is_store_source(source: SourceConfig) -> bool:
    """Tell whether a source reads the product's event store."""
    return source.path.strip() == STORE_PATH


def store_sources(config: ProjectConfig) -> list[str]:
    """Return the names of the sources that read the event store."""
    return [name for name, src in config.sources.items() if is_store_source(src)]


def numeric_columns(source: SourceConfig) -> list[str]:
    """Return the numeric standard and attribute columns of a source, in order."""
    types = {**STANDARD_COLUMNS[source.kind], **source.attributes}
    return [column for column, kind in types.items() if kind == "number"]


def rollup_columns(source: SourceConfig) -> dict[str, str]:
    """Return the columns of the daily rollup of a store source, with their types."""
    columns = dict(ROLLUP_BASE_COLUMNS)
    for column in numeric_columns(source):
        for statistic in ROLLUP_STATISTICS:
            columns[f"{column}_{statistic}"] = "number"
    return columns


def rollup_source(config: ProjectConfig, name: str) -> tuple[str, SourceConfig] | None:
    """Return the store source and the settings of rollup source `name`, if it is one.

    The rollup is read as a source of the store source's kind. Its `timestamp` is
    the last timestamp of the day, so a window counts a day only when it counts
    every row of that day, and never before the day's last row happened.
    """
    if not name.endswith(ROLLUP_SUFFIX) or name in config.sources:
        return None
    base = name.removesuffix(ROLLUP_SUFFIX)
    source = config.sources.get(base)
    if source is None or not is_store_source(source):
        return None
    attributes = {
        column: kind
        for column, kind in rollup_columns(source).items()
        if column != "account_id"
    }
    settings = SourceConfig.model_validate(
        {"kind": source.kind, "path": STORE_PATH, "attributes": attributes}
    )
    return base, settings


def rollup_settings(config: ProjectConfig, name: str) -> SourceConfig | None:
    """Return the source settings of rollup source `name`, or None for other names."""
    found = rollup_source(config, name)
    return None if found is None else found[1]


def rollup_column_names(config: ProjectConfig, name: str) -> set[str] | None:
    """Return the columns a metric on rollup source `name` may read, else None."""
    found = rollup_source(config, name)
    if found is None:
        return None
    base, _ = found
    return set(rollup_columns(config.sources[base])) | {"timestamp"}


def store_issues(config: ProjectConfig) -> Iterator[tuple[tuple[str | int, ...], str]]:
    """Yield (key path, message) for invalid store and retention settings."""
    stored = set(store_sources(config))
    for name in stored:
        source = config.sources[name]
        if source.kind not in STORE_KINDS:
            yield (
                ("sources", name, "path"),
                f"sources of kind {source.kind} cannot be read from the event store "
                "because their rows have no timestamp; the store keeps "
                f"{', '.join(STORE_KINDS)} sources",
            )
        if name + ROLLUP_SUFFIX in config.sources:
            yield (
                ("sources", name + ROLLUP_SUFFIX),
                f"the name is taken by the daily rollup of store source {name!r}; "
                "rename this source",
            )
    for name in config.retention.sources:
        if name not in stored:
            yield (
                ("retention", "sources", name),
                f"{name!r} is not a source with path: {STORE_PATH}, so it has no "
                "raw rows to purge",
            )
    yield from _metric_reach_issues(config)
    yield from _rollup_metric_issues(config)


def _rollup_metric_issues(
    config: ProjectConfig,
) -> Iterator[tuple[tuple[str | int, ...], str]]:
    """Columns of raw rows that a metric on a daily rollup source reads."""
    for name, metric in config.metrics.items():
        source = getattr(metric, "source", None)
        known = rollup_column_names(config, source) if source else None
        if known is None:
            continue
        used: dict[str, set[str]] = {}
        column = getattr(metric, "column", None)
        if column is not None:
            used["column"] = {column}
        where = getattr(metric, "where", None)
        if where:
            used["where"] = set(parse_expression(where).names)
        for key, names in used.items():
            for unknown in sorted(names - known):
                yield (
                    ("metrics", name, key),
                    f"{unknown!r} is not a column of the daily rollup {source!r}; "
                    f"it has {', '.join(sorted(known))}",
                )


def _metric_reach_issues(
    config: ProjectConfig,
) -> Iterator[tuple[tuple[str | int, ...], str]]:
    """Metrics on raw store rows whose window reaches past the retention age."""
    for name, metric in config.metrics.items():
        reach, based_on = _metric_reach(config, metric)
        if based_on is None:
            continue
        age = config.retention.age(based_on)
        if age is None:
            continue
        if reach is None:
            text = "reads every row before the as-of point"
        elif _exceeds(reach, age):
            text = f"reads {reach} back from the as-of point"
        else:
            continue
        advice = "; or ".join(_reach_advice(config, metric, based_on, age, reach))
        yield (
            ("metrics", name),
            f"metric {name!r} {text}, but raw rows of store source {based_on!r} "
            f"are purged after {age}; {advice}",
        )


def _reach_advice(
    config: ProjectConfig,
    metric: Any,
    source_name: str,
    age: Duration,
    reach: _Reach | None,
) -> list[str]:
    """Return the changes that let a metric read only rows that retention keeps.

    A `change` reads two windows of the metric it compares, so the advice is about
    that metric. Only keys the metric's type has are advised: `days_since` and
    `days_to_milestone` take no window.
    """
    windowed = metric
    subject, where_of = "it", "its where"
    windows = 1
    if isinstance(metric, ChangeMetric):
        windowed = config.metrics[metric.of]
        subject, where_of = repr(metric.of), f"the where of {metric.of!r}"
        windows = 2
    advice = []
    where = getattr(windowed, "where", None)
    # The rollup has no columns to filter by, but a store source of only the rows
    # that `where` selects has a rollup of only those rows.
    rollup_of = "<source>" if where else source_name
    rollup = _rollup_metric(config, windowed, source_name, rollup_of)
    if rollup is not None and not where:
        advice.append(f"compute {subject} on the daily rollup as {rollup}")
    elif rollup is not None and where:
        dropped = _where_columns_not_in_rollup(config, where, source_name)
        advice.append(
            f"keep the rows that {where_of} selects in a store source of their "
            f"own, and compute {subject} on that source's daily rollup as "
            f"{rollup}, because {source_name + ROLLUP_SUFFIX!r} keeps no {dropped}"
        )
    if isinstance(windowed, WindowedMetric):
        longest = _longest_window(age, windows)
        if longest is not None:
            advice.append(f"give {subject} a window of at most {longest}")
    if reach is not None:
        needed = Duration(
            amount=reach.length.amount * reach.count, unit=reach.length.unit
        )
        advice.append(
            f"keep the raw rows of {source_name!r} for {needed} or longer "
            f"(retention.sources.{source_name}: {needed})"
        )
    if not advice:
        advice.append(
            f"keep the rows {subject} reads in a store source that has no retention age"
        )
    return advice


def _rollup_metric(
    config: ProjectConfig, metric: Any, source_name: str, rollup_of: str
) -> str | None:
    """Return the metric on a daily rollup that gives `metric`'s values, as YAML.

    `metric` reads store source `source_name`, and the metric returned reads the
    rollup of store source `rollup_of`. None for the types the rollup cannot
    give: it keeps per account and day only the row count, the first and last
    timestamp, and sums, minimums and maximums.
    """
    rollup = rollup_of + ROLLUP_SUFFIX
    columns = rollup_columns(config.sources[source_name])
    window = getattr(metric, "window", None)
    if isinstance(metric, CountMetric):
        keys = {"type": "sum", "source": rollup, "column": "rows"}
    elif isinstance(metric, AggregateMetric) and metric.type != "mean":
        column = f"{metric.column}_{metric.type}"
        if column not in columns:
            return None
        keys = {"type": metric.type, "source": rollup, "column": column}
    elif isinstance(metric, DaysSinceMetric):
        keys = {"type": "days_since", "source": rollup}
    elif isinstance(metric, MilestoneMetric) and _starts_at_midnight(config, metric):
        keys = {"type": "days_to_milestone", "source": rollup}
        if metric.start_column is not None:
            keys["start_column"] = metric.start_column
        if metric.if_not_reached != "elapsed":
            keys["if_not_reached"] = metric.if_not_reached
    else:
        return None
    # NOTE: with `closed: right`, a day with rows stamped exactly at the window's
    # start and later rows counts whole on the rollup, while the raw window leaves
    # out the rows at the start. Left-closed windows give the same values.
    fields = [f"{key}: {value}" for key, value in keys.items()]
    if window is not None:
        fields.append(f"window: {_window_text(window)}")
    return "{" + ", ".join(fields) + "}"


def _starts_at_midnight(config: ProjectConfig, metric: MilestoneMetric) -> bool:
    """Tell whether a milestone's start is a date, so that the rollup gives its days.

    The rollup's timestamp of a day is the day's last row, and whole days counted
    from a midnight start are the same for every row of the day.
    """
    if metric.start_column is None:
        return True  # the first subscription start, a date
    accounts = config.sources[config.accounts_source()]
    types = {**STANDARD_COLUMNS["accounts"], **accounts.attributes}
    return types.get(metric.start_column) == "date"


def _where_columns_not_in_rollup(
    config: ProjectConfig, where: str, source_name: str
) -> str:
    """Return the columns that `where` reads and the daily rollup lacks, as text."""
    known = rollup_column_names(config, source_name + ROLLUP_SUFFIX) or set()
    missing = sorted(set(parse_expression(where).names) - known)
    return ", ".join(missing) if missing else "single rows to filter"


def _window_text(window: WindowConfig) -> str:
    if window.closed == "left":
        return str(window.length)
    return f"{{length: {window.length}, closed: {window.closed}}}"


def _longest_window(age: Duration, count: int) -> Duration | None:
    """Return the longest window whose `count` windows stay within `age`, if any."""
    if count == 1:
        return age
    shortest = {"days": 1, "weeks": 7, "months": 28}[age.unit]
    days = age.amount * shortest // count
    return Duration(amount=days, unit="days") if days >= 1 else None


def _metric_reach(
    config: ProjectConfig, metric: Any
) -> tuple[_Reach | None, str | None]:
    """Return how far back a metric reads raw store rows, and from which source.

    The reach is None when the metric has no window. The source is None when the
    metric does not read a store source's raw rows.
    """
    if isinstance(metric, ChangeMetric):
        base = config.metrics.get(metric.of)
        if base is None:
            return None, None
        reach, based_on = _metric_reach(config, base)
        # A change compares the window with the window before it.
        return (None if reach is None else reach.twice()), based_on
    source_name = getattr(metric, "source", None)
    source = config.sources.get(source_name) if source_name else None
    if source is None or not is_store_source(source):
        return None, None
    window = getattr(metric, "window", None)
    if window is None:
        return None, source_name
    return _Reach(window.length), source_name


class _Reach:
    """A look-back of one or more whole windows of one length."""

    def __init__(self, length: Duration, count: int = 1) -> None:
        self.length = length
        self.count = count

    def twice(self) -> _Reach:
        return _Reach(self.length, self.count * 2)

    def __str__(self) -> str:
        if self.count == 1:
            return str(self.length)
        return f"{self.count} windows of {self.length}"


def _exceeds(reach: _Reach, age: Duration) -> bool:
    """Tell whether `reach` may start before `age`; months count as 28 to 31 days."""
    if reach.length.unit == "months" and age.unit == "months":
        return reach.length.amount * reach.count > age.amount
    longest = {"days": 1, "weeks": 7, "months": 31}[reach.length.unit]
    shortest = {"days": 1, "weeks": 7, "months": 28}[age.unit]
    return reach.length.amount * reach.count * longest > age.amount * shortest
