"""Health scores of accounts from their metric values and the project's scorecards.

Each account is scored by the first scorecard whose `when` condition it matches. Its
metric values are normalized to 0-100 measure scores, overrides replace measure
scores, and the measures are weighed into component scores and the score (see
`healthscore.scoring.weights` for how missing measures pass on their weight).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import date
from functools import cached_property

import numpy as np
import pandas as pd
import pyarrow as pa

from healthscore.config.models import (
    BandConfig,
    MeasureConfig,
    ProjectConfig,
    ScorecardConfig,
)
from healthscore.config.overrides import Override
from healthscore.scoring.bands import INSUFFICIENT_DATA, UNSCORED, assign_bands
from healthscore.scoring.normalize import NormalizationError, normalize
from healthscore.scoring.overriding import IgnoredOverride, OverridePlan, plan_overrides
from healthscore.scoring.routing import (
    AccountColumns,
    ScoringInputError,
    route_accounts,
)
from healthscore.scoring.tables import (
    CODE_DTYPE,
    COMPONENT_COLUMNS,
    MEASURE_COLUMNS,
    SCORE_COLUMNS,
    Chunk,
    Coded,
    arrow_columns,
    assemble,
    text_array,
)
from healthscore.scoring.weights import Layout, Weighted, weigh

#: Columns of each table of a ScoreResult, by table name.
TABLE_COLUMNS = {
    "scores": SCORE_COLUMNS,
    "components": COMPONENT_COLUMNS,
    "measures": MEASURE_COLUMNS,
}

# Coverage is a sum of float shares, so a coverage meant to equal `min_coverage` may
# land a rounding error below it: shares 0.1 + 0.1 + 0.7 sum to 0.8999999999999999.
_COVERAGE_TOLERANCE = 1e-9


@dataclass
class ScoreResult:
    """Scores of one as-of date, with the components and measures behind them.

    Attributes
    ----------
    scores
        One row per account of the population, with the columns of
        `SCORE_COLUMNS`. `score` is the final score and `computed_score` the score
        before a score override. Accounts that match no scorecard have band
        `unscored` and NaN scores.
    components
        One row per scored account and component of its scorecard, with the columns
        of `COMPONENT_COLUMNS`. `weight` is the configured share of the score and
        `effective_weight` the share after missing components are left out.
    measures
        One row per scored account and measure of its scorecard, with the columns of
        `MEASURE_COLUMNS`. `weight` is the configured share of the score,
        `effective_weight` the share used, and `contribution` the points the measure
        adds to the computed score.
    ignored_overrides
        Active overrides that did not apply, with the reason.
    """

    scores: pd.DataFrame
    components: pd.DataFrame
    measures: pd.DataFrame
    ignored_overrides: list[IgnoredOverride]

    @property
    def unscored_count(self) -> int:
        """Number of accounts that match no scorecard."""
        return int((self.scores["band"] == UNSCORED).sum())


def score_accounts(
    project_config: ProjectConfig,
    metrics: pd.DataFrame,
    accounts: pd.DataFrame,
    overrides: Iterable[Override],
    as_of: date,
    versions: Mapping[str, str],
) -> ScoreResult:
    """Score every account of `metrics` with its scorecard.

    Parameters
    ----------
    project_config
        Project settings: scorecards, bands and metric definitions.
    metrics
        Metric values indexed by account_id, one column per metric. Its index is
        the population that gets scored.
    accounts
        Account columns indexed by account_id. `when` conditions and `within`
        groupings read them together with the metric columns.
    overrides
        Overrides to apply; expired ones (see `Override.is_active`) are skipped.
    as_of
        The as-of date, stored with each score.
    versions
        Content hash of every scorecard by name, from `Project.scorecard_version`.

    Returns
    -------
    ScoreResult

    Raises
    ------
    ScoringInputError
        On duplicate accounts, a missing metric column or version, a name that is
        both a metric and an account column, or values a method cannot score.

    Notes
    -----
    The band is chosen by the score rounded half up to a whole number (40.5 gives
    41). An account whose present measures cover less than the scorecard's
    `min_coverage` of its weight gets band `insufficient_data` although its score is
    stored, and an account with no present measure has a NaN score. A score
    override sets the score and the band regardless of coverage. Percentile and
    zscore compare an account with the other accounts of the same scorecard. An
    account with an overridden measure still takes part in that comparison with its
    metric value.
    """
    _check_population(metrics)
    columns = AccountColumns(project_config, metrics, accounts)
    # Account ids are text in every table and override, even if the index is not.
    population = metrics.index.astype(str)
    codes = np.zeros(len(metrics), dtype=np.int64)
    scored = _score_rows(
        project_config, columns, population, codes, [as_of], [overrides], versions
    )
    return scored.result


@dataclass
class DatedScores:
    """Scores of many as-of dates, each date's rows together.

    The rows of the `i`-th date are `score_offsets[i]:score_offsets[i + 1]` of the
    scores table, and likewise for components and measures. Within a date, rows
    are in the order `score_accounts` gives for that date alone. The tables are
    kept as column chunks: `result` assembles them into DataFrames and
    `arrow_columns` into Arrow arrays.
    """

    dates: list[date]
    score_offsets: np.ndarray
    component_offsets: np.ndarray
    measure_offsets: np.ndarray
    ignored_overrides: list[IgnoredOverride]
    chunks: dict[str, list[dict[str, Chunk]]]
    """Column chunks of the scores, components and measures tables."""
    orders: dict[str, np.ndarray | None]
    """Row order that puts each table's chunks in date order, None if they are."""

    @cached_property
    def result(self) -> ScoreResult:
        """All dates' tables as DataFrames."""
        frames = {
            name: assemble(TABLE_COLUMNS[name], parts, self.orders[name])
            for name, parts in self.chunks.items()
        }
        return ScoreResult(
            scores=frames["scores"],
            components=frames["components"],
            measures=frames["measures"],
            ignored_overrides=self.ignored_overrides,
        )

    def arrow_columns(self, name: str) -> dict[str, pa.Array | np.ndarray]:
        """Columns of the table `name` for all dates, text as dictionary arrays."""
        return arrow_columns(TABLE_COLUMNS[name], self.chunks[name], self.orders[name])

    def split(self, index: int) -> ScoreResult:
        """Return the result of the `index`-th date, equal to `score_accounts` for it.

        `ignored_overrides` of the split result lists those of every date.
        """
        result = self.result
        return ScoreResult(
            scores=_rows(result.scores, self.score_offsets, index),
            components=_rows(result.components, self.component_offsets, index),
            measures=_rows(result.measures, self.measure_offsets, index),
            ignored_overrides=self.ignored_overrides,
        )


def _rows(frame: pd.DataFrame, offsets: np.ndarray, index: int) -> pd.DataFrame:
    part = frame.iloc[int(offsets[index]) : int(offsets[index + 1])]
    return part.reset_index(drop=True)


def score_dates(
    project_config: ProjectConfig,
    metrics: pd.DataFrame,
    accounts: pd.DataFrame,
    codes: np.ndarray,
    dates: Sequence[date],
    overrides: Sequence[Iterable[Override]],
    versions: Mapping[str, str],
) -> DatedScores:
    """Score the accounts of many as-of dates in one pass.

    Each date's rows get the scores that `score_accounts` gives them for that date
    alone: percentile and zscore compare an account only with the same date's
    accounts, and each date applies its own overrides.

    Parameters
    ----------
    project_config
        Project settings: scorecards, bands and metric definitions.
    metrics
        Metric values indexed by account_id, one row per date and account, the
        rows of each date together and the dates in the order of `dates`.
    accounts
        Account columns of the same rows, in the same order.
    codes
        Position in `dates` of each row's date; non-decreasing.
    dates
        The as-of dates.
    overrides
        Overrides to apply, one collection per date.
    versions
        Content hash of every scorecard by name.

    Raises
    ------
    ScoringInputError
        As `score_accounts`, and when an account has two rows on one date.
    """
    codes = np.asarray(codes, dtype=np.int64)
    if len(codes) != len(metrics) or len(accounts) != len(metrics):
        raise ValueError(
            f"metrics ({len(metrics)} rows), accounts ({len(accounts)} rows) and "
            f"codes ({len(codes)} values) must have one entry per row"
        )
    if len(overrides) != len(dates):
        raise ValueError(
            f"give one collection of overrides per date: {len(overrides)} for "
            f"{len(dates)} dates"
        )
    if len(codes) and (np.any(np.diff(codes) < 0) or codes[-1] >= len(dates)):
        raise ValueError("codes must be non-decreasing positions in dates")
    population = metrics.index.astype(str)
    _check_dated_population(population, codes, dates)
    positional = pd.RangeIndex(len(metrics))
    account_columns = accounts.set_axis(positional)
    if "account_id" not in account_columns.columns:
        account_columns = account_columns.assign(account_id=population.array)
    columns = AccountColumns(
        project_config, metrics.set_axis(positional), account_columns
    )
    return _score_rows(
        project_config, columns, population, codes, dates, overrides, versions
    )


def _check_dated_population(
    population: pd.Index, codes: np.ndarray, dates: Sequence[date]
) -> None:
    account_codes, _ = pd.factorize(population)
    keys = pd.Series(account_codes.astype(np.int64) * max(len(dates), 1) + codes)
    repeated = keys.duplicated().to_numpy()
    if repeated.any():
        row = int(np.flatnonzero(repeated)[0])
        raise ScoringInputError(
            f"the metrics table lists account_id {population[row]!r} more than once "
            f"as of {dates[int(codes[row])].isoformat()}; each account needs one row "
            "per date"
        )


def _score_rows(
    project_config: ProjectConfig,
    columns: AccountColumns,
    population: pd.Index,
    codes: np.ndarray,
    dates: Sequence[date],
    overrides: Sequence[Iterable[Override]],
    versions: Mapping[str, str],
) -> DatedScores:
    """Score the rows of `columns`; row i belongs to the date `dates[codes[i]]`."""
    scorecards = project_config.scorecards
    _check_versions(scorecards, versions)
    routes = route_accounts(scorecards, columns)
    bounds = np.searchsorted(codes, np.arange(len(dates) + 1))
    plan = _plan_by_date(overrides, dates, population, routes, scorecards, bounds)
    # One date needs no partition, which keeps that path as simple as it was.
    partition = codes if len(dates) > 1 else None
    ids = text_array(population)
    scores = _ScoreColumns(len(population), project_config.bands)
    components: list[dict[str, Chunk]] = []
    measures: list[dict[str, Chunk]] = []
    # Rows per date of each scorecard's chunks of the components and measures tables.
    component_counts: list[np.ndarray] = []
    measure_counts: list[np.ndarray] = []
    for position, scorecard in enumerate(scorecards):
        rows = np.flatnonzero(routes == position)
        if len(rows) == 0:
            continue
        card = _score_scorecard(scorecard, rows, columns, plan, partition)
        scores.fill(card, plan)
        components.append(card.component_chunks(ids))
        measures.append(card.measure_chunks(ids))
        accounts = np.bincount(codes[rows], minlength=len(dates))
        component_counts.append(accounts * len(card.layout.component_names))
        measure_counts.append(accounts * len(card.layout.measures))
    as_of = np.array(list(dates), dtype=object)[codes]
    component_order, component_offsets = _date_order(component_counts, len(dates))
    measure_order, measure_offsets = _date_order(measure_counts, len(dates))
    return DatedScores(
        dates=list(dates),
        score_offsets=bounds,
        component_offsets=component_offsets,
        measure_offsets=measure_offsets,
        ignored_overrides=plan.ignored,
        chunks={
            "scores": [scores.chunks(ids, routes, as_of, scorecards, versions)],
            "components": components,
            "measures": measures,
        },
        orders={
            "scores": None,
            "components": component_order,
            "measures": measure_order,
        },
    )


def _date_order(
    counts: list[np.ndarray], count: int
) -> tuple[np.ndarray | None, np.ndarray]:
    """Row order that sorts the scorecards' chunks by date, and each date's offsets.

    `counts[k]` gives the rows of each date in the `k`-th chunk, whose rows are in
    date order. The order keeps the chunks' order within a date, as a stable sort
    by date would, and is None when the chunks are in date order already. It is
    built from the runs of rows that each chunk has for each date, so no row is
    sorted.
    """
    if not counts:
        return None, np.zeros(count + 1, dtype=np.int64)
    # lengths[d, k]: rows of date d in chunk k.
    lengths = np.stack(counts, axis=1).astype(np.int64)
    offsets = np.zeros(count + 1, dtype=np.int64)
    np.cumsum(lengths.sum(axis=1), out=offsets[1:])
    # Where each run starts in the concatenated chunks, and in the sorted rows.
    chunk_starts = np.cumsum(lengths.sum(axis=0)) - lengths.sum(axis=0)
    within_chunk = np.cumsum(lengths, axis=0) - lengths
    sources = (chunk_starts[None, :] + within_chunk).ravel()
    runs = lengths.ravel()
    targets = np.cumsum(runs) - runs
    used = runs > 0
    if np.array_equal(sources[used], targets[used]):
        return None, offsets
    order = np.repeat(sources[used] - targets[used], runs[used])
    order += np.arange(len(order), dtype=np.int64)
    return order, offsets


def _plan_by_date(
    overrides: Sequence[Iterable[Override]],
    dates: Sequence[date],
    population: pd.Index,
    routes: np.ndarray,
    scorecards: Sequence[ScorecardConfig],
    bounds: np.ndarray,
) -> OverridePlan:
    """Plan each date's overrides over its rows, with positions in all rows."""
    plan = OverridePlan()
    for index, (items, as_of) in enumerate(zip(overrides, dates, strict=True)):
        listed = list(items)
        if not listed:
            continue
        start, stop = int(bounds[index]), int(bounds[index + 1])
        part = plan_overrides(
            listed, as_of, population[start:stop], routes[start:stop], scorecards
        )
        for (position, measure), override in part.measures.items():
            plan.measures[(position + start, measure)] = override
        for position, override in part.scores.items():
            plan.scores[position + start] = override
        plan.ignored.extend(part.ignored)
    return plan


def _check_population(metrics: pd.DataFrame) -> None:
    if not metrics.index.is_unique:
        duplicate = metrics.index[metrics.index.duplicated()][0]
        raise ScoringInputError(
            f"the metrics table lists account_id {duplicate!r} more than once; "
            "each account needs one row"
        )


def _check_versions(
    scorecards: Sequence[ScorecardConfig], versions: Mapping[str, str]
) -> None:
    missing = [card.name for card in scorecards if card.name not in versions]
    if missing:
        raise ScoringInputError(
            f"no version for scorecard {missing[0]!r}; pass the content hash of every "
            "scorecard, as given by Project.scorecard_version"
        )


@dataclass
class _ScorecardScores:
    """Results of one scorecard; matrices have one row per account of `rows`."""

    scorecard: ScorecardConfig
    layout: Layout
    #: Population positions of the accounts, ascending.
    rows: np.ndarray
    #: Metric values as numbers, NaN for missing and text values.
    values: np.ndarray
    #: Metric values that are text, as codes into `text_labels` (0 for none).
    text_codes: np.ndarray
    text_labels: list[str | None]
    normalized: np.ndarray
    overridden: np.ndarray
    #: Measure override of each overridden cell, by (row, column).
    overrides: dict[tuple[int, int], Override]
    weighted: Weighted

    def component_chunks(self, ids: pa.Array) -> dict[str, Chunk]:
        count, width = self.weighted.component_scores.shape
        return {
            "account_id": Coded.of(ids, np.repeat(self.rows.astype(CODE_DTYPE), width)),
            "scorecard": Coded.repeat(self.scorecard.name, count * width),
            "component": Coded.of(
                self.layout.component_names,
                np.tile(np.arange(width, dtype=CODE_DTYPE), count),
            ),
            "score": self.weighted.component_scores.ravel(),
            "weight": np.tile(self.layout.component_shares, count),
            "effective_weight": self.weighted.component_effective_weights.ravel(),
        }

    def measure_chunks(self, ids: pa.Array) -> dict[str, Chunk]:
        count, width = self.normalized.shape
        layout = self.layout
        # One array of measure positions serves the measure and metric columns, so
        # that `assemble` can share their text when the names are the same.
        measure_codes = np.tile(np.arange(width, dtype=CODE_DTYPE), count)
        reasons, authors = self._override_notes()
        return {
            "account_id": Coded.of(ids, np.repeat(self.rows.astype(CODE_DTYPE), width)),
            "scorecard": Coded.repeat(self.scorecard.name, count * width),
            "component": Coded.of(
                layout.component_names,
                layout.measure_component.astype(CODE_DTYPE)[measure_codes],
            ),
            "measure": Coded.of(layout.measure_names, measure_codes),
            "metric": Coded.of([m.metric for m in layout.measures], measure_codes),
            "value": self.values.ravel(),
            "value_text": Coded.of(self.text_labels, self.text_codes.ravel()),
            "normalized": self.normalized.ravel(),
            "weight": np.tile(layout.measure_shares, count),
            "effective_weight": self.weighted.effective_weights.ravel(),
            "contribution": self.weighted.contributions.ravel(),
            "overridden": self.overridden.ravel(),
            "override_reason": reasons,
            "override_author": authors,
        }

    def _override_notes(self) -> tuple[Coded, Coded]:
        """Reason and author of each cell's measure override, missing elsewhere."""
        width = self.normalized.shape[1]
        codes = np.zeros(self.normalized.size, dtype=CODE_DTYPE)
        reasons: list[str | None] = [None]
        authors: list[str | None] = [None]
        for (row, column), override in self.overrides.items():
            codes[row * width + column] = len(reasons)
            reasons.append(override.reason)
            authors.append(override.author)
        return Coded.of(reasons, codes), Coded.of(authors, codes)


def _score_scorecard(
    scorecard: ScorecardConfig,
    rows: np.ndarray,
    columns: AccountColumns,
    plan: OverridePlan,
    partition: np.ndarray | None = None,
) -> _ScorecardScores:
    """Normalize, override and weigh the measures of the accounts at `rows`.

    `partition` gives each row of `columns` a population (such as its as-of date)
    that percentile and zscore compare it within.
    """
    layout = Layout.of(scorecard)
    inputs = [
        _metric_column(scorecard, measure, columns).iloc[rows]
        for measure in layout.measures
    ]
    values, text_codes, text_labels = _metric_matrix(inputs)
    parts = None if partition is None else partition[rows]
    normalized = _normalized_matrix(scorecard, layout, inputs, rows, columns, parts)
    overridden = np.zeros(normalized.shape, dtype=bool)
    cells = dict(_measure_override_cells(layout, rows, plan))
    for (row, column), override in cells.items():
        normalized[row, column] = override.score
        overridden[row, column] = True
    return _ScorecardScores(
        scorecard=scorecard,
        layout=layout,
        rows=rows,
        values=values,
        text_codes=text_codes,
        text_labels=text_labels,
        normalized=normalized,
        overridden=overridden,
        overrides=cells,
        weighted=weigh(layout, normalized),
    )


def _measure_override_cells(
    layout: Layout, rows: np.ndarray, plan: OverridePlan
) -> Iterator[tuple[tuple[int, int], Override]]:
    """Matrix cell (row, column) of each measure override of the accounts at `rows`."""
    columns = {name: position for position, name in enumerate(layout.measure_names)}
    for (position, measure), override in plan.measures.items():
        row = int(np.searchsorted(rows, position))
        if row < len(rows) and rows[row] == position:
            yield (row, columns[measure]), override


def _metric_matrix(
    inputs: Sequence[pd.Series],
) -> tuple[np.ndarray, np.ndarray, list[str | None]]:
    """Metric values as numbers, and text values as codes into a label list."""
    shape = (len(inputs[0]), len(inputs))
    values = np.full(shape, np.nan)
    text_codes = np.zeros(shape, dtype=CODE_DTYPE)
    text_labels: list[str | None] = [None]
    for column, series in enumerate(inputs):
        numbers = _numbers_or_none(series)
        if numbers is not None:
            values[:, column] = numbers
            continue
        codes, uniques = pd.factorize(series, use_na_sentinel=True)
        text_codes[:, column] = np.where(codes >= 0, codes + len(text_labels), 0)
        text_labels.extend(str(unique) for unique in uniques)
    return values, text_codes, text_labels


def _numbers_or_none(series: pd.Series) -> np.ndarray | None:
    """Return the values as float64 when they are all numbers, else None."""
    if pd.api.types.is_bool_dtype(series) or pd.api.types.is_numeric_dtype(series):
        return series.astype("float64").to_numpy(na_value=np.nan)
    try:
        numbers = pd.to_numeric(series, errors="raise")
    except (ValueError, TypeError):
        return None
    return numbers.astype("float64").to_numpy(na_value=np.nan)


def _normalized_matrix(
    scorecard: ScorecardConfig,
    layout: Layout,
    inputs: Sequence[pd.Series],
    rows: np.ndarray,
    columns: AccountColumns,
    partition: np.ndarray | None,
) -> np.ndarray:
    normalized = np.empty((len(rows), len(layout.measures)))
    for column, (measure, values) in enumerate(
        zip(layout.measures, inputs, strict=True)
    ):
        context = f"measure {measure.measure_name!r} of scorecard {scorecard.name!r}"
        groups = None
        if measure.normalize.within is not None:
            within = columns.column(measure.normalize.within, f"{context} (within)")
            groups = within.iloc[rows]
        try:
            scores = normalize(
                values, measure.normalize, measure.direction, groups, partition
            )
        except NormalizationError as exc:
            raise ScoringInputError(f"{context}: {exc}") from None
        normalized[:, column] = scores.to_numpy()
    return normalized


def _metric_column(
    scorecard: ScorecardConfig, measure: MeasureConfig, columns: AccountColumns
) -> pd.Series:
    if measure.metric not in columns.metrics.columns:
        raise ScoringInputError(
            f"metric {measure.metric!r} of measure {measure.measure_name!r} in "
            f"scorecard {scorecard.name!r} is missing from the metrics table; compute "
            "every metric that the scorecards use"
        )
    return columns.metrics[measure.metric]


class _ScoreColumns:
    """Score-level arrays over the whole population, filled scorecard by scorecard."""

    def __init__(self, count: int, bands: Sequence[BandConfig]) -> None:
        self.bands = bands
        self.score = np.full(count, np.nan)
        self.computed = np.full(count, np.nan)
        self.coverage = np.full(count, np.nan)
        self.band = np.full(count, UNSCORED, dtype=object)
        self.override_codes = np.zeros(count, dtype=CODE_DTYPE)
        self.reasons: list[str | None] = [None]
        self.authors: list[str | None] = [None]

    def fill(self, card: _ScorecardScores, plan: OverridePlan) -> None:
        """Store the scores and bands of one scorecard's accounts."""
        rows = card.rows
        computed = card.weighted.score
        coverage = card.weighted.coverage
        final = computed.copy()
        overridden = np.zeros(len(rows), dtype=bool)
        for position, override in plan.scores.items():
            row = int(np.searchsorted(rows, position))
            if row == len(rows) or rows[row] != position:
                continue
            final[row] = override.score
            overridden[row] = True
            self.override_codes[position] = len(self.reasons)
            self.reasons.append(override.reason)
            self.authors.append(override.author)
        bands = assign_bands(final, self.bands)
        minimum = card.scorecard.min_coverage - _COVERAGE_TOLERANCE
        short = (coverage < minimum) | np.isnan(computed)
        bands[short & ~overridden] = INSUFFICIENT_DATA
        self.computed[rows] = computed
        self.coverage[rows] = coverage
        self.score[rows] = final
        self.band[rows] = bands

    def chunks(
        self,
        ids: pa.Array,
        routes: np.ndarray,
        as_of: np.ndarray,
        scorecards: Sequence[ScorecardConfig],
        versions: Mapping[str, str],
    ) -> dict[str, Chunk]:
        codes = routes + 1
        count = len(routes)
        versions_list = [versions[card.name] for card in scorecards]
        labels = [card.version for card in scorecards]
        chunks: dict[str, Chunk] = {
            "account_id": Coded.of(ids, np.arange(count)),
            "as_of": as_of,
            "scorecard": Coded.of([None, *(c.name for c in scorecards)], codes),
            "scorecard_version": Coded.of([None, *versions_list], codes),
            "scorecard_label": Coded.of([None, *labels], codes),
            "score": self.score,
            "band": _band_chunk(self.band),
            "coverage": self.coverage,
            "override_reason": Coded.of(self.reasons, self.override_codes),
            "override_author": Coded.of(self.authors, self.override_codes),
            "computed_score": self.computed,
        }
        return chunks


def _band_chunk(bands: np.ndarray) -> Coded:
    codes, uniques = pd.factorize(bands)
    return Coded.of([str(unique) for unique in uniques], codes)
