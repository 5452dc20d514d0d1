"""The methodology section of the report, written from the project's settings.

Every sentence here is generated from `healthscore.yml` and from the same helpers the
engine uses (window spans, weight shares), so the documentation of a report cannot
drift from the scorecard that produced it.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime

from healthscore.config import Project
from healthscore.config.models import (
    AggregateMetric,
    AttributeMetric,
    ChangeMetric,
    CountMetric,
    DaysSinceMetric,
    DistinctCountMetric,
    FormulaMetric,
    LatestMetric,
    MeasureConfig,
    MetricConfig,
    MilestoneMetric,
    NormalizeConfig,
    NpsMetric,
    RateMetric,
    RatioMetric,
    ScorecardConfig,
    SentimentMetric,
    TenureMetric,
    WindowConfig,
)
from healthscore.metrics import sentiment
from healthscore.metrics.windows import Span, current_span, previous_span
from healthscore.report.summary import safe_color
from healthscore.scoring.weights import Layout
from healthscore.sources import as_of_point


@dataclass(frozen=True)
class MetricDoc:
    """One metric: its type, source, filter, window edges and definition."""

    name: str
    type: str
    source: str | None
    filter: str | None
    window: str | None
    definition: str
    description: str


@dataclass(frozen=True)
class ComponentDoc:
    """One component with its configured weight and its share of the score."""

    name: str
    weight: float
    share: float


@dataclass(frozen=True)
class MeasureDoc:
    """One measure with its weight, share of the score and normalization in words."""

    component: str
    measure: str
    metric: str
    weight: float
    share: float
    direction: str
    normalization: str


@dataclass(frozen=True)
class ScorecardDoc:
    """One scorecard: who it scores, its version, coverage rule and weights."""

    name: str
    when: str | None
    label: str | None
    version: str
    min_coverage: float
    components: list[ComponentDoc]
    measures: list[MeasureDoc]


@dataclass(frozen=True)
class BandDoc:
    """One band: its score range and colour."""

    name: str
    label: str
    min: int
    max: int
    color: str


@dataclass(frozen=True)
class Methodology:
    """Everything the methodology section states, for one project and as-of date."""

    timezone: str
    as_of_rule: str
    as_of_point: datetime
    population: str
    metrics: list[MetricDoc]
    scorecards: list[ScorecardDoc]
    bands: list[BandDoc]
    coverage_rule: str
    rounding_rule: str
    override_rule: str
    outcome_rule: str


def describe_project(project: Project, as_of: date) -> Methodology:
    """Describe how `project` scores accounts as of `as_of`."""
    config = project.config
    point = as_of_point(project, as_of)
    return Methodology(
        timezone=config.timezone,
        as_of_rule=_as_of_rule(project),
        as_of_point=point,
        population=_population_rule(project),
        metrics=[
            describe_metric(name, metric, point, config.metrics)
            for name, metric in config.metrics.items()
        ],
        scorecards=[
            _scorecard_doc(card, project.scorecard_version(card))
            for card in config.scorecards
        ],
        bands=[
            BandDoc(band.name, band.label, band.min, band.max, safe_color(band.color))
            for band in config.bands
        ],
        coverage_rule=(
            "A measure without a value is left out, never counted as 0: its weight "
            "goes to the measures of its component that have a value. A component "
            "with no measure that has a value passes its weight to the other "
            "components. Coverage is the share of the scorecard's weight whose "
            "measures have a value; below the scorecard's minimum coverage the "
            "account is banded insufficient data."
        ),
        rounding_rule=(
            "Bands have whole-number edges, so the band is chosen by the score "
            "rounded half up (40.5 counts as 41)."
        ),
        override_rule=(
            "A manual override, set with a reason, an author and an expiry date, "
            "replaces one measure's normalized score or the whole score on every "
            "as-of date up to its expiry; the explanation of a score lists it."
        ),
        outcome_rule=_outcome_rule(project),
    )


def _as_of_rule(project: Project) -> str:
    zone = project.config.timezone
    if project.config.as_of_point == "end_of_day":
        return (
            f"Days are calendar days in the {zone} time zone. The as-of point of date "
            "D is D+1 00:00 (end_of_day), so a score as of D sees the rows of day D "
            "itself."
        )
    return (
        f"Days are calendar days in the {zone} time zone. The as-of point of date D "
        "is D 00:00 (start_of_day), so a score as of D sees rows stamped before that "
        "day and none of day D itself."
    )


def _population_rule(project: Project) -> str:
    mode = project.config.scoring.population
    subscriptions = project.config.sources_of_kind("subscriptions")
    if mode is None:
        mode = "active" if subscriptions else "all"
    if mode == "all":
        return "Every account of the accounts source is scored."
    return (
        f"Accounts with a subscription in source {subscriptions[0]!r} active on the "
        "as-of date (start on or before it, end after it or none) are scored."
    )


def _outcome_rule(project: Project) -> str:
    outcomes = project.config.outcomes
    subscriptions = project.config.sources_of_kind("subscriptions")
    if not subscriptions:
        return "The project has no subscriptions source, so churn is not observed."
    rule = (
        f"An account churned when it had a subscription active on the as-of date "
        f"and none active when the {outcomes.horizon} horizon after it ends."
    )
    if outcomes.observed_until is not None:
        rule += (
            " Subscriptions are complete up to "
            f"{outcomes.observed_until.isoformat()} (outcomes.observed_until)."
        )
    return rule


# Metrics


def describe_metric(
    name: str, metric: MetricConfig, point: datetime, metrics: dict[str, MetricConfig]
) -> MetricDoc:
    """Describe one metric, with its window edges for the as-of point `point`."""
    return MetricDoc(
        name=name,
        type=metric.type,
        source=getattr(metric, "source", None),
        filter=getattr(metric, "where", None),
        window=_window_text(metric, point, metrics),
        definition=_definition(metric),
        description=metric.description,
    )


def _window_text(
    metric: MetricConfig, point: datetime, metrics: dict[str, MetricConfig]
) -> str | None:
    if isinstance(metric, ChangeMetric):
        base_window = getattr(metrics.get(metric.of), "window", None)
        if base_window is None:
            return None
        previous = _edges(previous_span(base_window, point))
        return f"{_span_text(base_window, point)}; compared with {previous}"
    window: WindowConfig | None = getattr(metric, "window", None)
    if window is not None:
        return _span_text(window, point)
    if isinstance(metric, _ROW_METRICS):
        return f"all rows before the as-of point: t < {_moment(point)}"
    return None


# Metrics that read source rows; without a window they see every row before the
# as-of point.
_ROW_METRICS = (
    CountMetric,
    DistinctCountMetric,
    AggregateMetric,
    LatestMetric,
    DaysSinceMetric,
    MilestoneMetric,
    SentimentMetric,
    NpsMetric,
)


def _span_text(window: WindowConfig, point: datetime) -> str:
    edges = _edges(current_span(window, point))
    return f"{window.length} ending at the as-of point: {edges}"


def _edges(span: Span) -> str:
    if span.closed == "left":
        return f"{_moment(span.start)} ≤ t < {_moment(span.end)}"
    if span.end_closed:
        return f"{_moment(span.start)} < t ≤ {_moment(span.end)}"
    return f"{_moment(span.start)} < t < {_moment(span.end)}"


def _moment(value: datetime) -> str:
    return value.strftime("%Y-%m-%d %H:%M")


def _definition(metric: MetricConfig) -> str:
    """Say in words how the metric is computed, from its type and settings."""
    if isinstance(metric, SentimentMetric | NpsMetric):
        return sentiment.definition(metric)
    if isinstance(metric, _ROW_METRICS):
        return _row_definition(metric)
    if isinstance(metric, RateMetric):
        return _rate_definition(metric)
    if isinstance(metric, TenureMetric):
        return (
            "Days since the start of the current run of subscriptions, where a gap "
            f"of up to {metric.max_gap} continues a run; missing without a "
            "subscription active on the as-of date."
        )
    return _derived_definition(metric)


def _row_definition(metric: MetricConfig) -> str:
    """Definition of a metric that aggregates source rows."""
    if isinstance(metric, CountMetric):
        return "Number of rows in the window; 0 when there are none."
    if isinstance(metric, DistinctCountMetric):
        return f"Number of distinct values of {metric.column} in the window."
    if isinstance(metric, AggregateMetric):
        return f"The {_aggregate_word(metric.type)} of {metric.column} in the window."
    if isinstance(metric, LatestMetric):
        return f"{metric.column} on the newest row before the as-of point."
    if isinstance(metric, DaysSinceMetric):
        return (
            "Calendar days from the day of the newest row to the as-of date; missing "
            "when there is no row."
        )
    assert isinstance(metric, MilestoneMetric)
    return _milestone_definition(metric)


def _derived_definition(metric: MetricConfig) -> str:
    """Definition of a metric computed from other metrics or account columns."""
    if isinstance(metric, RatioMetric):
        zero = (
            "missing"
            if metric.zero_denominator is None
            else f"{metric.zero_denominator:g}"
        )
        return (
            f"{metric.numerator} / {metric.denominator}, each missing value counted "
            f"as 0; {zero} when the denominator is 0."
        )
    if isinstance(metric, ChangeMetric):
        if metric.mode == "difference":
            return f"{metric.of} minus its value over the window before."
        return (
            f"({metric.of} - its value over the window before) / the absolute "
            "earlier value; missing when the earlier value is 0."
        )
    if isinstance(metric, FormulaMetric):
        missing = (
            "missing inputs count as 0"
            if metric.missing_as_zero
            else "a missing input makes it missing"
        )
        return f"{metric.expression}; {missing}."
    assert isinstance(metric, AttributeMetric)
    return f"The accounts column {metric.column}, as it is."


def _aggregate_word(kind: str) -> str:
    return {"sum": "sum", "mean": "mean", "min": "minimum", "max": "maximum"}[kind]


def _rate_definition(metric: RateMetric) -> str:
    per = f"{metric.per.days} days"
    if metric.exposure == "window":
        return f"Rows in the window per {metric.per}: count × {per} / window days."
    tenure = f" ({metric.tenure_metric})" if metric.tenure_metric else ""
    text = (
        f"Rows in the window per {metric.per}: count × {per} / the shorter of the "
        f"window and the account's tenure{tenure}, in days"
    )
    if metric.min_tenure is not None:
        text += f"; missing for accounts younger than {metric.min_tenure}"
    return text + "."


def _milestone_definition(metric: MilestoneMetric) -> str:
    start = (
        f"the accounts column {metric.start_column}"
        if metric.start_column
        else "the first subscription start"
    )
    before = (
        "the days elapsed so far" if metric.if_not_reached == "elapsed" else "missing"
    )
    return (
        f"Days from {start} to the first matching row; before that row exists, "
        f"{before}."
    )


# Scorecards and normalization


def _scorecard_doc(card: ScorecardConfig, version: str) -> ScorecardDoc:
    layout = Layout.of(card)
    components = [
        ComponentDoc(name, float(weight), float(share))
        for name, weight, share in zip(
            layout.component_names,
            layout.component_weights,
            layout.component_shares,
            strict=True,
        )
    ]
    measures = [
        MeasureDoc(
            component=layout.component_names[int(owner)],
            measure=measure.measure_name,
            metric=measure.metric,
            weight=float(measure.weight),
            share=float(share),
            direction=measure.direction,
            normalization=describe_normalization(measure),
        )
        for measure, owner, share in zip(
            layout.measures,
            layout.measure_component,
            layout.measure_shares,
            strict=True,
        )
    ]
    return ScorecardDoc(
        name=card.name,
        when=card.when,
        label=card.version,
        version=version,
        min_coverage=card.min_coverage,
        components=components,
        measures=measures,
    )


def describe_normalization(measure: MeasureConfig) -> str:
    """Say in words how a measure's metric value becomes a 0-100 score."""
    config = measure.normalize
    text = _method_text(config, measure.direction)
    if not config.log:
        return text
    prefix = "Values go through log(1 + value) first, with negative values as 0"
    if config.method in ("bounds", "steps", "target"):
        prefix += "; the thresholds below are in original units"
    return f"{prefix}. {text}"


def _method_text(config: NormalizeConfig, direction: str) -> str:
    reverse = (
        " Lower is better, so the score is reversed (100 - score)."
        if direction == "lower"
        else ""
    )
    if config.method == "bounds":
        return (
            f"Bounds: linear from {config.min:g} (score 0) to {config.max:g} "
            f"(score 100), clipped to 0-100.{reverse}"
        )
    if config.method == "percentile":
        return (
            "Percentile: mid-rank percentile 100 × (rank - 0.5) / n among the "
            f"accounts of the scorecard{_within(config)}; ties share a score."
            f"{reverse}"
        )
    if config.method == "zscore":
        return _zscore_text(config) + reverse
    if config.method == "steps":
        steps = ", ".join(
            f"from {step.start:g}: {step.score:g}" for step in config.steps
        )
        return (
            f"Steps: {steps}; values below the first step score "
            f"{config.steps[0].score:g}."
        )
    if config.method == "target":
        assert config.target is not None
        if direction == "lower":
            return (
                f"Target {config.target:g}, lower is better: 100 at or below the "
                f"target, above it {config.target:g} / value × 100."
            )
        return (
            f"Target {config.target:g}: share of the target reached, "
            f"min(value / {config.target:g}, 1) × 100, and 0 for negative values."
        )
    return _categories_text(config)


def _within(config: NormalizeConfig) -> str:
    return f" with the same {config.within}" if config.within else ""


def _zscore_text(config: NormalizeConfig) -> str:
    mean = (
        f"{config.mean:g}"
        if config.mean is not None
        else f"the mean of the accounts{_within(config)}"
    )
    std = (
        f"{config.std:g}"
        if config.std is not None
        else f"the standard deviation of the accounts{_within(config)}"
    )
    return (
        "Z-score: 100 / (1 + e^(-z)) with z = (value - mean) / std, where mean is "
        f"{mean} and std is {std}; no spread scores 50."
    )


def _categories_text(config: NormalizeConfig) -> str:
    listed = ", ".join(f"{key} → {score:g}" for key, score in config.scores.items())
    other = (
        f"other values score {config.default:g}"
        if config.default is not None
        else "other values have no score"
    )
    return f"Categories: {listed}; {other}."
