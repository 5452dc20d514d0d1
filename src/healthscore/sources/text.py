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
Japanese texts, gets the neutral compound score 0.0. A run judges the first texts of
a source column that are long enough (`is_judged_text`) and counts those that
contain neither a word of the lexicon nor a common English function word. When at
least NOT_ENGLISH_WARNING_SHARE of them seem not to be English in this way, it logs
one warning for that column. Short English texts such as "Password reset" contain
neither kind of word, which is why shorter texts are left out.
"""

from __future__ import annotations

import logging
import string
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
#: warning about texts that seem not to be English names.
COMPOUND_FUNCTION = "healthscore_vader_compound"

#: Compound score at or below which a text counts as negative. The vaderSentiment
#: README (version 3.3.2, "About the Scoring") gives -0.05 and 0.05 as the usual
#: thresholds of negative and positive text.
NEGATIVE_THRESHOLD = -0.05

#: Distinct texts whose scores one engine connection keeps. Past this many, further
#: texts are scored on every read instead of once.
SCORE_CACHE_SIZE = 1_000_000

#: Judged texts of a source column that a run reads before it judges whether they
#: are in a language that VADER scores. The judgement is made once per column, on
#: the first batch of texts that reaches this count.
LEXICON_SAMPLE_ROWS = 20

#: Non-empty texts of a column read before the check gives up when fewer than
#: LEXICON_SAMPLE_ROWS of them are long enough to judge.
LEXICON_READ_LIMIT = 1000

#: Words (separated by whitespace) from which a text is judged. Shorter English
#: texts, such as the ticket subjects "Password reset" or "API rate limit", often
#: contain no word of VADER's lexicon and no function word.
MIN_JUDGED_WORDS = 4

#: Characters from which a text without whitespace and with a character outside
#: ASCII is judged, as one word that is not English. Japanese and Chinese are
#: written without spaces. An ASCII text without spaces, such as a URL or
#: "Cancellation", is not judged.
MIN_UNSPACED_CHARACTERS = 10

#: Common English function words, any one of which marks a judged text as English.
#: Words that are also common in German, Dutch, French, Spanish, Italian,
#: Portuguese, Danish, Norwegian or Polish are left out, for example "a", "an",
#: "in", "is", "of", "on", "to", "we", "was", "do", "for", "no", "i" and "my".
ENGLISH_FUNCTION_WORDS = frozenset({
    "the", "and", "with", "this", "that", "these", "those", "it", "its", "are",
    "were", "be", "been", "being", "has", "had", "does", "did", "not", "but", "or",
    "from", "you", "your", "our", "us", "they", "their", "them", "she", "his",
    "can", "could", "would", "should", "please", "there", "what", "which", "who",
    "when", "how", "why", "where", "about", "into", "than", "then", "only", "more",
    "out", "up", "hi", "hello", "i'm", "i've", "it's", "that's", "there's",
    "let's", "we're", "we've", "we'll", "you're", "don't", "doesn't", "didn't",
    "isn't", "aren't", "wasn't", "can't", "won't",
})  # fmt: skip

#: Share of the judged texts that contain neither a word of VADER's lexicon nor an
#: English function word, from which a run warns. Measured with vaderSentiment
#: 3.3.2 on the English texts that Hutto and Gilbert (ICWSM 2014) rated, such texts
#: were 1.0 % of the tweets and 1.7 % of the Amazon review snippets. They were
#: 1.3 % of the movie review snippets and 1.5 % of the NYT editorial snippets.
#: The ticket texts of the sample that `healthscore init` generates have 0 %, and
#: its ticket subjects 14 % (1 of 7). Of 6 to 12 hand-written ticket texts per
#: language, 100 % of the French, Dutch, Italian, Portuguese, Polish, Danish and
#: Japanese ones count, 92 % of the German and 62 % of the Spanish ones.
#: NOTE: VADER scores some words of other languages by their English meaning, such
#: as Spanish "no" and German "die", so a column in such a language may stay below
#: this share and get no warning.
NOT_ENGLISH_WARNING_SHARE = 0.8

_PUNCTUATION = string.punctuation + "\u2018\u2019\u201c\u201d"


def compound_column(column: str) -> str:
    """Name of the column with the VADER compound score of text column `column`."""
    return f"{column}@compound"


def negative_column(column: str) -> str:
    """Name of the column that is 1.0 where text column `column` is negative."""
    return f"{column}@negative"


def nps_column(column: str) -> str:
    """Name of the column with the NPS category (100, 0, -100) of score `column`."""
    return f"{column}@nps"


def is_judged_text(text: str) -> bool:
    """Return True when `text` is long enough to judge whether it is English.

    That is a text of at least MIN_JUDGED_WORDS words, or one word without
    whitespace of at least MIN_UNSPACED_CHARACTERS characters, not all ASCII.
    """
    words = text.split()
    if len(words) >= MIN_JUDGED_WORDS:
        return True
    return (
        len(words) == 1
        and len(words[0]) >= MIN_UNSPACED_CHARACTERS
        and not words[0].isascii()
    )


def has_english_function_word(text: str) -> bool:
    """Return True when a word of `text`, compared without case and surrounding
    punctuation, is in ENGLISH_FUNCTION_WORDS."""
    words = text.lower().replace("\u2019", "'").split()
    return any(word.strip(_PUNCTUATION) in ENGLISH_FUNCTION_WORDS for word in words)


@dataclass
class LexiconCheck:
    """Counts of the first judged texts of one source column, for the warning."""

    read: int = 0
    """Non-empty texts counted so far, judged or not."""
    texts: int = 0
    """Non-empty texts that `is_judged_text` accepts."""
    not_english: int = 0
    """Of those, texts without a word in VADER's lexicon or an English function
    word."""
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
        """Counts per (source, column) for the warning about texts that seem not to be
        English."""

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
        """Count the batch's judged texts that seem not to be English, and warn once
        per column.

        Only the first batches of a column are counted, until LEXICON_SAMPLE_ROWS
        judged texts, because later queries read the same rows again.
        """
        check = self.lexicon_checks.setdefault((source, column), LexiconCheck())
        if check.done:
            return
        for text, (score, scored) in zip(texts.to_pylist(), results, strict=True):
            if score is None or text is None:
                continue
            check.read += 1
            if not is_judged_text(text):
                continue
            check.texts += 1
            check.not_english += not scored and not has_english_function_word(text)
        if check.read >= LEXICON_READ_LIMIT and check.texts < LEXICON_SAMPLE_ROWS:
            # A column of short texts, such as subjects, is not judged, and its
            # later rows are not counted either.
            check.done = True
            return
        if check.texts < LEXICON_SAMPLE_ROWS:
            return
        check.done = True
        if check.not_english >= NOT_ENGLISH_WARNING_SHARE * check.texts:
            logger.warning(
                "sentiment of source %r, column %r: %d of the first %d non-empty "
                "texts of %d or more words (or of %d or more characters without a "
                "space) contain no word of VADER's lexicon and no common English "
                "word such as 'the' or 'with', so they seem not to be English and "
                "each gets the neutral compound score 0.0. The lexicon is English, "
                "so texts in other languages score as neutral. Translate them to "
                "English before they are read, or leave the sentiment metrics of "
                "this column out of the scorecards.",
                source,
                column,
                check.not_english,
                check.texts,
                MIN_JUDGED_WORDS,
                MIN_UNSPACED_CHARACTERS,
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
