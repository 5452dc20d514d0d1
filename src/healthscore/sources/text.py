"""Per-row scores of text and survey responses, added to the rows that metrics read.

A source read by a `sentiment` or `nps` metric gets extra columns in its view of
usable rows, one set per scored column:

- `<column>@compound`: the VADER compound score of a text, from -1 (most negative)
  to 1 (most positive), missing for a missing or blank text;
- `<column>@negative`: 1.0 when that compound score is at most -0.05, 0.0 when it
  is higher, and missing where it is missing;
- `<column>@nps`: 100 for a promoter (score 9-10), 0 for a passive (7-8), -100 for
  a detractor (0-6), missing for a missing score or one outside 0-10.

The mean of a column over a window is then the metric: the mean compound score, the
share of negative texts, or the NPS. DuckDB computes a column only for the queries
that read it, so a source pays for VADER only when a metric uses its text.
"""

from __future__ import annotations

import duckdb
import pyarrow as pa
from duckdb.func import FunctionNullHandling, PythonUDFType
from duckdb.sqltypes import DOUBLE, VARCHAR
from vaderSentiment.vaderSentiment import SentimentIntensityAnalyzer

from healthscore.config.models import NpsMetric, ProjectConfig, SentimentMetric
from healthscore.sources.reader import quote

#: Name of the DuckDB function that returns the VADER compound score of a text.
COMPOUND_FUNCTION = "healthscore_vader_compound"

#: Compound score at or below which a text counts as negative. The vaderSentiment
#: README (version 3.3.2, "About the Scoring") gives -0.05 and 0.05 as the usual
#: thresholds of negative and positive text.
NEGATIVE_THRESHOLD = -0.05

#: Distinct texts whose scores one engine connection keeps. Past this many, further
#: texts are scored on every read instead of once.
SCORE_CACHE_SIZE = 1_000_000


def compound_column(column: str) -> str:
    """Name of the column with the VADER compound score of text column `column`."""
    return f"{column}@compound"


def negative_column(column: str) -> str:
    """Name of the column that is 1.0 where text column `column` is negative."""
    return f"{column}@negative"


def nps_column(column: str) -> str:
    """Name of the column with the NPS category (100, 0, -100) of score `column`."""
    return f"{column}@nps"


class VaderScorer:
    """VADER compound scores of texts, each distinct text scored once."""

    def __init__(self, cache_size: int = SCORE_CACHE_SIZE) -> None:
        self.cache_size = cache_size
        self._analyzer: SentimentIntensityAnalyzer | None = None
        self._scores: dict[str, float | None] = {}
        self.texts_scored = 0
        """Number of calls to VADER, which the cache keeps to one per text."""

    def compound(self, text: str | None) -> float | None:
        """Return the compound score of `text`, or None for a missing or blank text.

        A blank text is missing rather than neutral: an empty comment gives no
        opinion, while VADER would score it 0.
        """
        if text is None:
            return None
        if text in self._scores:
            return self._scores[text]
        score: float | None = None
        if text.strip():
            if self._analyzer is None:
                self._analyzer = SentimentIntensityAnalyzer()
            score = float(self._analyzer.polarity_scores(text)["compound"])
            self.texts_scored += 1
        if len(self._scores) < self.cache_size:
            self._scores[text] = score
        return score

    def compound_array(self, texts: pa.Array | pa.ChunkedArray) -> pa.Array:
        """Return the compound scores of an Arrow array of texts (DuckDB's UDF call)."""
        return pa.array([self.compound(t) for t in texts.to_pylist()], pa.float64())


def register_functions(raw: duckdb.DuckDBPyConnection) -> VaderScorer:
    """Register COMPOUND_FUNCTION on the connection and return its scorer.

    The scorer, and so its cache, lives as long as the connection: one scoring run
    or one backfill.
    """
    scorer = VaderScorer()
    # SPECIAL null handling passes NULL texts to the function and lets it return
    # NULL, which it does for blank texts too.
    raw.create_function(
        COMPOUND_FUNCTION,
        scorer.compound_array,
        [VARCHAR],
        DOUBLE,
        type=PythonUDFType.ARROW,
        null_handling=FunctionNullHandling.SPECIAL,
    )
    return scorer


def score_columns(config: ProjectConfig, source: str) -> dict[str, str]:
    """SQL of the score columns that the metrics of `config` read from `source`.

    Returns column name to SQL expression, in the order of the metrics.
    """
    columns: dict[str, str] = {}
    for metric in config.metrics.values():
        if getattr(metric, "source", None) != source:
            continue
        if isinstance(metric, SentimentMetric):
            compound = f"{COMPOUND_FUNCTION}({quote(metric.column)})"
            columns[compound_column(metric.column)] = compound
            # The comparison is NULL for a missing score, so the share leaves it out.
            columns[negative_column(metric.column)] = (
                f"CAST({compound} <= CAST({NEGATIVE_THRESHOLD} AS DOUBLE) AS DOUBLE)"
            )
        elif isinstance(metric, NpsMetric):
            columns[nps_column(metric.column)] = _nps_sql(quote(metric.column))
    return columns


def _nps_sql(score: str) -> str:
    # Categories of the 0-10 response: detractors 0-6, passives 7-8, promoters 9-10.
    # A fractional score between 6 and 9 is a passive. A missing score, NaN (which
    # DuckDB sorts above every number) and a score outside 0-10 match no branch and
    # give NULL, so they are not responses. The cast keeps DuckDB from typing the
    # result as DECIMAL(4,1), whose mean it would round to one decimal.
    return (
        f"CAST(CASE WHEN {score} >= 9 AND {score} <= 10 THEN 100 "
        f"WHEN {score} > 6 AND {score} < 9 THEN 0 "
        f"WHEN {score} >= 0 AND {score} <= 6 THEN -100 END AS DOUBLE)"
    )
