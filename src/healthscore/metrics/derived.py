"""Metrics computed from other metrics or from subscriptions, per account."""

from __future__ import annotations

from datetime import date, datetime

import numpy as np
import pandas as pd

from healthscore.config import metric_dependencies
from healthscore.config.models import (
    AttributeMetric,
    ChangeMetric,
    FormulaMetric,
    MetricConfig,
    MilestoneMetric,
    RateMetric,
    RatioMetric,
    TenureMetric,
)
from healthscore.expressions import parse_expression
from healthscore.metrics.aggregates import (
    MetricError,
    count_column,
    first_column,
    previous_column,
)
from healthscore.metrics.windows import current_span, previous_span
from healthscore.sources import SourceSet

# Stands for the end of an open subscription; far beyond any as-of date.
_OPEN_END = pd.Timestamp("9999-12-31")

_DERIVED = (
    TenureMetric,
    MilestoneMetric,
    AttributeMetric,
    RatioMetric,
    FormulaMetric,
    ChangeMetric,
    RateMetric,
)


def evaluation_order(metrics: dict[str, MetricConfig]) -> list[str]:
    """Derived metric names, each after the metrics it is computed from."""
    ordered: list[str] = []
    done: set[str] = set()

    def visit(name: str) -> None:
        if name in done:
            return
        done.add(name)
        metric = metrics[name]
        for dependency in metric_dependencies(metric):
            visit(dependency)
        if isinstance(metric, RateMetric) and metric.exposure == "tenure":
            visit(tenure_metric_name(metric, metrics))
        if isinstance(metric, _DERIVED):
            ordered.append(name)

    for name in metrics:
        visit(name)
    return ordered


def tenure_metric_name(metric: RateMetric, metrics: dict[str, MetricConfig]) -> str:
    if metric.tenure_metric:
        return metric.tenure_metric
    return next(name for name, m in metrics.items() if isinstance(m, TenureMetric))


def _subscriptions(sources: SourceSet, name: str, as_of: date) -> pd.DataFrame:
    table = sources.rows(name, datetime(as_of.year, as_of.month, as_of.day))
    columns = ["account_id", "start"] + (["end"] if "end" in table.columns else [])
    frame = table.select(*columns).execute()
    if "end" not in frame:
        frame["end"] = pd.NaT
    frame["start"] = pd.to_datetime(frame["start"]).astype("datetime64[s]")
    frame["end"] = pd.to_datetime(frame["end"]).astype("datetime64[s]")
    return frame


def active_accounts(sources: SourceSet, name: str, as_of: date) -> set[str]:
    """Accounts with a subscription where start <= as_of < end (no end: open)."""
    frame = _subscriptions(sources, name, as_of)
    day = pd.Timestamp(as_of)
    active = (frame["start"] <= day) & (frame["end"].isna() | (frame["end"] > day))
    return set(frame.loc[active, "account_id"])


def tenure(
    sources: SourceSet, metric: TenureMetric, as_of: date, point: datetime
) -> pd.Series:
    """Days from the start of the current run of subscriptions to the as-of point.

    Only accounts active on `as_of` have a value. A run continues across a gap
    between one subscription's end and the next one's start of at most `max_gap`.
    The days are counted to `point`, as `milestone` counts them, so with
    `as_of_point: end_of_day` a subscription that starts on the as-of date has 1.
    """
    frame = _subscriptions(sources, metric.source, as_of)
    frame = frame.sort_values(["account_id", "start"], kind="stable")
    day = pd.Timestamp(as_of)
    max_gap = pd.Timedelta(days=metric.max_gap.days)
    ends = frame["end"].fillna(_OPEN_END)
    covered_until = ends.groupby(frame["account_id"]).cummax()
    previous = covered_until.groupby(frame["account_id"]).shift(1)
    new_run = previous.isna() | (frame["start"] - previous > max_gap)
    run_id = new_run.astype(int).groupby(frame["account_id"]).cumsum()
    frame = frame.assign(run=run_id, covered=covered_until)
    runs = frame.groupby(["account_id", "run"]).agg(
        run_start=("start", "min"), run_end=("covered", "max")
    )
    runs = runs.reset_index()
    current = runs[(runs["run_start"] <= day) & (runs["run_end"] > day)]
    days = (pd.Timestamp(point) - current["run_start"]).dt.days.astype("float64")
    return pd.Series(days.to_numpy(), index=current["account_id"].to_numpy())


def milestone(
    values: pd.DataFrame,
    sources: SourceSet,
    metric: MilestoneMetric,
    name: str,
    point: datetime,
    accounts: pd.DataFrame,
) -> pd.Series:
    """Days from the account's start to its first milestone row (MilestoneMetric)."""
    if metric.start_column:
        starts = pd.to_datetime(accounts[metric.start_column])
    else:
        subscriptions = sources.project.config.sources_of_kind("subscriptions")
        frame = _subscriptions(sources, subscriptions[0], point.date())
        starts = frame.groupby("account_id")["start"].min()
    starts = starts.reindex(values.index)
    first = pd.to_datetime(values[first_column(name)])
    reached = (first - starts).dt.total_seconds() // 86400
    elapsed = (pd.Timestamp(point) - starts).dt.total_seconds() // 86400
    if metric.if_not_reached == "elapsed":
        result = reached.where(first.notna(), elapsed)
    else:
        result = reached
    return result.clip(lower=0).astype("float64")


def ratio(values: pd.DataFrame, metric: RatioMetric) -> pd.Series:
    """Numerator / denominator, missing inputs as 0, `zero_denominator` when it is 0.

    A quotient that is not a finite number, because an input is infinite or the
    quotient is beyond the float64 range, is missing, as in `formula`.
    """
    numerator = values[metric.numerator].astype("float64").fillna(0.0)
    denominator = values[metric.denominator].astype("float64").fillna(0.0)
    fallback = np.nan if metric.zero_denominator is None else metric.zero_denominator
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        result = numerator / denominator.where(denominator != 0)
    result = result.where(np.isfinite(result))
    return result.where(denominator != 0, fallback)


def formula(values: pd.DataFrame, metric: FormulaMetric, name: str) -> pd.Series:
    """Evaluate the formula over metric columns.

    A result that is not a finite number is missing: a division by zero, an infinite
    input, or a result beyond the float64 range.
    """
    expression = parse_expression(metric.expression)
    namespace = {}
    for column in expression.names:
        series = values[column].astype("float64")
        namespace[column] = series.fillna(0.0) if metric.missing_as_zero else series
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        result = expression.evaluate(namespace)
    if not isinstance(result, pd.Series):
        result = pd.Series(float(result), index=values.index)
    return result.astype("float64").replace([np.inf, -np.inf], np.nan)


def change(
    values: pd.DataFrame, metric: ChangeMetric, previous: pd.Series
) -> pd.Series:
    """Compare the current window with the `previous` one (see ChangeMetric).

    In percent the change is (current - previous) / |previous|, so a rise is
    positive whatever the sign of the earlier value. For a positive earlier value
    that equals current / previous - 1. It is missing when the earlier value is 0.
    In either mode a result that is not a finite number is missing, as in
    `formula`: an infinite input, or a result beyond the float64 range.
    """
    current = values[metric.of].astype("float64")
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        if metric.mode == "difference":
            result = current - previous
        else:
            # current / |previous| - sign(previous) is the same quotient, but it
            # never computes current - previous, which can overflow near the
            # float64 limit. For previous > 0 it is exactly current / previous - 1.
            base = previous.where(previous != 0)
            result = current / base.abs() - np.sign(base)
    return result.where(np.isfinite(result))


def rate(
    values: pd.DataFrame,
    metric: RateMetric,
    name: str,
    metrics: dict[str, MetricConfig],
    point: datetime,
) -> pd.Series:
    """Count scaled from the window (or the tenure, if shorter) to `per`."""
    count = values[count_column(name)].astype("float64")
    assert metric.window is not None
    window_days = current_span(metric.window, point).days
    tenure_days = None
    if metric.exposure == "tenure":
        tenure_days = values[tenure_metric_name(metric, metrics)].astype("float64")
    return _scaled_count(count, metric, window_days, tenure_days)


def previous_window(
    values: pd.DataFrame,
    metric: ChangeMetric,
    name: str,
    metrics: dict[str, MetricConfig],
    sources: SourceSet,
    as_of: date,
    point: datetime,
) -> pd.Series:
    """Return the compared metric's value over the window before the current one.

    The scan aggregates that window's rows as the compared metric does, except for
    a rate, whose scan gives the row count. That count is scaled here as `rate`
    scales it on the date whose as-of point ends the earlier window: by that
    window's length, and with `exposure: tenure` by the tenure on that date.
    """
    previous = values[previous_column(name)].astype("float64")
    base = metrics[metric.of]
    if not isinstance(base, RateMetric):
        return previous
    assert base.window is not None
    span = previous_span(base.window, point)
    tenure_days = None
    if base.exposure == "tenure":
        earlier = as_of - (point.date() - span.end.date())
        tenure_metric = metrics[tenure_metric_name(base, metrics)]
        assert isinstance(tenure_metric, TenureMetric)
        tenure_days = tenure(sources, tenure_metric, earlier, span.end)
        tenure_days = tenure_days.reindex(values.index)
    return _scaled_count(previous, base, span.days, tenure_days)


def _scaled_count(
    count: pd.Series,
    metric: RateMetric,
    window_days: float,
    tenure_days: pd.Series | None,
) -> pd.Series:
    """Scale a rate's row count to `per`, over the window or the shorter tenure.

    `tenure_days` is None for `exposure: window`.
    """
    per_days = float(metric.per.days)
    if tenure_days is None:
        return count * per_days / window_days
    exposure = tenure_days.clip(upper=window_days)
    result = count * per_days / exposure.where(exposure > 0)
    if metric.min_tenure is not None:
        result = result.where(tenure_days >= metric.min_tenure.days)
    return result


def attribute(
    accounts: pd.DataFrame, metric: AttributeMetric, name: str, sources: SourceSet
) -> pd.Series:
    """Return the accounts column that an attribute metric reads."""
    if metric.column not in accounts.columns:
        source = sources.accounts_name
        files = ", ".join(sources.loaded[source].files)
        raise MetricError(
            f"metric {name!r} needs column {metric.column!r} of source {source!r}, "
            f"which {files} does not have; add the column to the file, map a column "
            f"of the file to it in sources.{source}.columns, or remove metric {name!r}"
        )
    return accounts[metric.column]


def add_derived(
    values: pd.DataFrame,
    metrics: dict[str, MetricConfig],
    sources: SourceSet,
    accounts: pd.DataFrame,
    as_of: date,
    point: datetime,
) -> None:
    """Add every derived metric to `values`, each after the metrics it reads."""
    index = values.index
    for name in evaluation_order(metrics):
        metric = metrics[name]
        if isinstance(metric, TenureMetric):
            values[name] = tenure(sources, metric, as_of, point).reindex(index)
        elif isinstance(metric, MilestoneMetric):
            values[name] = milestone(values, sources, metric, name, point, accounts)
        elif isinstance(metric, AttributeMetric):
            values[name] = attribute(accounts, metric, name, sources)
        elif isinstance(metric, RatioMetric):
            values[name] = ratio(values, metric)
        elif isinstance(metric, FormulaMetric):
            values[name] = formula(values, metric, name)
        elif isinstance(metric, ChangeMetric):
            previous = previous_window(
                values, metric, name, metrics, sources, as_of, point
            )
            values[name] = change(values, metric, previous)
        elif isinstance(metric, RateMetric):
            values[name] = rate(values, metric, name, metrics, point)
