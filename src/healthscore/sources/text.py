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

VADER's lexicon is English. A text with no word in it, such as most German or
Japanese texts, gets the neutral compound score 0.0. When at least
UNSCORED_WARNING_SHARE of the first texts of a source column have no such word, a
run logs one warning for that column.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import duckdb
import pyarrow as pa
from duckdb.func import FunctionNullHandling, PythonUDFType
from duckdb.sqltypes import DOUBLE, VARCHAR
from vaderSentiment.vaderSentiment import SentimentIntensityAnalyzer

from healthscore.config.models import NpsMetric, ProjectConfig, SentimentMetric
from healthscore.sources.reader import literal, quote

logger = logging.getLogger(__name__)

#: Name of the DuckDB function that returns the VADER compound score of a text. Its
#: arguments are the text and the names of its source and column, which the
#: warning about texts without a scored word names.
COMPOUND_FUNCTION = "healthscore_vader_compound"

#: Compound score at or below which a text counts as negative. The vaderSentiment
#: README (version 3.3.2, "About the Scoring") gives -0.05 and 0.05 as the usual
#: thresholds of negative and positive text.
NEGATIVE_THRESHOLD = -0.05

#: Distinct texts whose scores one engine connection keeps. Past this many, further
#: texts are scored on every read instead of once.
SCORE_CACHE_SIZE = 1_000_000

#: Non-empty texts of a source column that a run reads before it judges whether
#: they are in a language that VADER scores. The judgement is made once per column,
#: on the first batch of texts that reaches this count.
LEXICON_SAMPLE_ROWS = 20

#: Share of those texts without any word in VADER's lexicon from which a run warns.
#: An estimate from few samples: the English ticket texts of the sample that
#: `healthscore init` generates have 6 % such texts and its short ticket subjects
#: 59 %, while the German ticket texts of a test project have 100 %.
UNSCORED_WARNING_SHARE = 0.8


def compound_column(column: str) -> str:
    """Name of the column with the VADER compound score of text column `column`."""
    return f"{column}@compound"


def negative_column(column: str) -> str:
    """Name of the column that is 1.0 where text column `column` is negative."""
    return f"{column}@negative"


def nps_column(column: str) -> str:
    """Name of the column with the NPS category (100, 0, -100) of score `column`."""
    return f"{column}@nps"


@dataclass
class LexiconCheck:
    """Counts of the first non-empty texts of one source column, for the warning."""

    texts: int = 0
    unscored: int = 0
    """Texts without a word in VADER's lexicon."""
    done: bool = False
    """Whether the column was judged, so that later texts are not counted."""


class VaderScorer:
    """VADER compound scores of texts, each distinct text scored once."""

    def __init__(self, cache_size: int = SCORE_CACHE_SIZE) -> None:
        self.cache_size = cache_size
        self._analyzer: SentimentIntensityAnalyzer | None = None
        # Each text's compound score, and whether VADER's lexicon has a word of it.
        self._scores: dict[str, tuple[float | None, bool]] = {}
        self.texts_scored = 0
        """Number of calls to VADER, which the cache keeps to one per text."""
        self.lexicon_checks: dict[tuple[str, str], LexiconCheck] = {}
        """Counts per (source, column) for the warning about unscored texts."""

    def compound(self, text: str | None) -> float | None:
        """Return the compound score of `text`, or None for a missing or blank text.

        A blank text is missing rather than neutral: an empty comment gives no
        opinion, while VADER would score it 0.
        """
        return self._score(text)[0]

    def _score(self, text: str | None) -> tuple[float | None, bool]:
        """Return the compound score of `text` and whether it has a scored word."""
        if text is None:
            return None, False
        if text in self._scores:
            return self._scores[text]
        result: tuple[float | None, bool] = (None, False)
        if text.strip():
            if self._analyzer is None:
                self._analyzer = SentimentIntensityAnalyzer()
            polarity = self._analyzer.polarity_scores(text)
            # VADER gives positive and negative shares of 0 exactly when no word or
            # emoji of the text is in its lexicon.
            scored = polarity["pos"] > 0 or polarity["neg"] > 0
            result = (float(polarity["compound"]), scored)
            self.texts_scored += 1
        if len(self._scores) < self.cache_size:
            self._scores[text] = result
        return result

    def compound_array(
        self,
        texts: pa.Array | pa.ChunkedArray,
        sources: pa.Array | pa.ChunkedArray,
        columns: pa.Array | pa.ChunkedArray,
    ) -> pa.Array:
        """Return the compound scores of an Arrow array of texts (DuckDB's UDF call).

        `sources` and `columns` repeat the names of the texts' source and column.
        """
        results = [self._score(text) for text in texts.to_pylist()]
        if len(results):
            self._check_lexicon(
                str(sources[0].as_py()), str(columns[0].as_py()), texts, results
            )
        return pa.array([score for score, _ in results], pa.float64())

    def _check_lexicon(
        self,
        source: str,
        column: str,
        texts: pa.Array | pa.ChunkedArray,
        results: list[tuple[float | None, bool]],
    ) -> None:
        """Count the batch's texts without a scored word, and warn once per column.

        Only the first batches of a column are counted, until LEXICON_SAMPLE_ROWS
        non-empty texts, because later queries read the same rows again.
        """
        check = self.lexicon_checks.setdefault((source, column), LexiconCheck())
        if check.done:
            return
        for text, (score, scored) in zip(texts.to_pylist(), results, strict=True):
            if score is None or text is None:
                continue
            check.texts += 1
            check.unscored += not scored
        if check.texts < LEXICON_SAMPLE_ROWS:
            return
        check.done = True
        if check.unscored >= UNSCORED_WARNING_SHARE * check.texts:
            logger.warning(
                "sentiment of source %r, column %r: %d of the first %d non-empty "
                "texts contain no word of VADER's lexicon, so each gets the neutral "
                "compound score 0.0. The lexicon is English, so texts in other "
                "languages score as neutral. Translate them to English before they "
                "are read, or leave the sentiment metrics of this column out of the "
                "scorecards.",
                source,
                column,
                check.unscored,
                check.texts,
            )


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
        [VARCHAR, VARCHAR, VARCHAR],
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
            names = f"{literal(source)}, {literal(metric.column)}"
            compound = f"{COMPOUND_FUNCTION}({quote(metric.column)}, {names})"
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
