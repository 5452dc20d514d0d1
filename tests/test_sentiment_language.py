"""The warning about texts that VADER's English lexicon does not score.

The German and Japanese texts below contain no word of VADER's lexicon, so VADER
gives each the compound score 0.0, which the tests check with vaderSentiment itself.
A run warns once per source column when most of its first texts of 4 or more words
contain no such word and no English function word, and keeps the scores as VADER
gives them. Neutral English texts also contain no word of the lexicon, but short
ones are not judged and longer ones contain function words.
"""

from __future__ import annotations

import logging
import re
from datetime import date, timedelta

import duckdb
import pandas as pd
import pytest
from vaderSentiment.vaderSentiment import SentimentIntensityAnalyzer

from healthscore.engine import Engine
from healthscore.metrics import compute_metrics
from healthscore.sources.text import (
    COMPOUND_FUNCTION,
    LEXICON_SAMPLE_ROWS,
    VaderScorer,
    register_functions,
)
from project_factory import ACCOUNTS_CSV, minimal_config, write_project
from test_cli import run, succeeded

ANALYZER = SentimentIntensityAnalyzer()
AS_OF = date(2024, 3, 10)

GERMAN = [
    "Das Produkt ist schrecklich und funktioniert nicht, wir kündigen",
    "Kündigung zum Monatsende bitte bestätigen",
    "Der Export bricht ständig ab",
    "Wir warten seit zwei Wochen auf eine Antwort",
]
ENGLISH = [
    "I love this product, great support!",
    "Terrible outage, very angry.",
    "Thanks, the fix works.",
    "The export is broken and awful.",
]
# Texts without spaces of 10 or more characters, which count as one word that is
# not English.
JAPANESE = [
    "ダッシュボードの読み込みが非常に遅いです",
    "CSVへのエクスポートがタイムアウトします",
    "請求書のライセンス数が実際より多くなっています",
    "二週間前から返事を待っています。至急対応してください",
    "新しいユーザーを招待できません。",
    "CRM連携が昨日から同期されていません",
]
# Japanese texts that are not judged: shorter than 10 characters, or with a space.
SHORT_JAPANESE = ["解約を検討中", "SSO ログインでエラー"]
# Neutral English ticket subjects, most shorter than 4 words.
NEUTRAL_SUBJECTS = [
    "Password reset", "Invoice question", "Add two seats", "API rate limit",
    "SSO setup", "Export to CSV", "Change billing email", "Dashboard filters",
    "Webhook retries", "Remove a user", "Data retention period", "Report schedule",
    "Custom fields", "Plan upgrade", "Billing address on invoice",
    "New admin account", "Time zone setting", "Import from Salesforce",
    "Two-factor login", "Audit log export", "Question about our contract",
    "Move the workspace to EU", "Seat count for next year", "Rename the project",
]  # fmt: skip
NEUTRAL_SENTENCES = [
    "The invoice lists three seats for our team.",
    "Can you add two seats to the current plan?",
    "How do we reset the password for a new user?",
    "Our admin changed the billing email this morning.",
    "Could you send the invoice as a PDF file?",
    "The export to CSV finished at noon.",
    "We moved the workspace to the EU region.",
    "Which time zone does the weekly report use?",
    "The API rate limit is listed in the docs.",
    "The project should get the name Finance Reports.",
    "Our billing address changed after the merger.",
    "When does the contract renew next year?",
    "The webhook sends each event with a signature.",
    "Can you remove the old user from our account?",
    "We need the report every Monday at nine.",
    "The dashboard shows the last thirty days.",
    "Can you move the call to Thursday afternoon?",
    "Our team uses the import from Salesforce.",
    "The new admin account has the same email.",
    "What is the data retention period for events?",
    "The custom fields appear in the account view.",
    "They asked about the seat count for next year.",
    "The address on the invoice is from last year.",
    "The audit log export runs every night.",
]

WARNING = re.compile(
    r"sentiment of source '(\w+)', column '(\w+)': (\d+) of the first (\d+) "
    r"non-empty texts of 4 or more words \(or of 10 or more characters without a "
    r"space\) contain no word of VADER's lexicon and no common English word"
)


def vader_scored(text: str) -> bool:
    """Whether VADER finds a word of its lexicon in `text`."""
    scores = ANALYZER.polarity_scores(text)
    return scores["pos"] > 0 or scores["neg"] > 0


def test_example_texts_as_vader_scores_them():
    for text in GERMAN + JAPANESE + SHORT_JAPANESE:
        assert ANALYZER.polarity_scores(text)["compound"] == 0.0
        assert not vader_scored(text)
    for text in NEUTRAL_SUBJECTS + NEUTRAL_SENTENCES:
        assert not vader_scored(text), text
    for text in ENGLISH:
        assert vader_scored(text)


def lexicon_warnings(caplog: pytest.LogCaptureFixture) -> list[re.Match[str]]:
    found = [WARNING.search(record.getMessage()) for record in caplog.records]
    return [match for match in found if match is not None]


def scored_batch(texts: list[str | None]) -> list[float | None]:
    """Score `texts` through the DuckDB function in one query."""
    return scored_with_scorer(texts)[0]


def scored_with_scorer(
    texts: list[str | None],
) -> tuple[list[float | None], VaderScorer]:
    """Score `texts` in one query, and return the scores and the scorer."""
    con = duckdb.connect()
    scorer = register_functions(con)
    con.register("texts", pd.DataFrame({"text": pd.Series(texts, dtype=object)}))
    query = f"SELECT {COMPOUND_FUNCTION}(text, 'tickets', 'text') FROM texts"
    return [row[0] for row in con.execute(query).fetchall()], scorer


@pytest.mark.parametrize(("german", "warned"), [(16, True), (15, False)])
def test_warning_share_edge(caplog, german, warned):
    # 20 non-empty texts: 16 without a scored word are 80 %, 15 are 75 %.
    english = LEXICON_SAMPLE_ROWS - german
    texts: list[str | None] = [GERMAN[i % 4] for i in range(german)]
    texts += [ENGLISH[i % 4] for i in range(english)]
    # Missing and blank texts are not counted.
    texts += [None, "  "]

    with caplog.at_level(logging.WARNING, logger="healthscore"):
        scores = scored_batch(texts)

    assert scores[:german] == [0.0] * german
    assert scores[-2:] == [None, None]
    matches = lexicon_warnings(caplog)
    if warned:
        assert len(matches) == 1
        assert matches[0].groups() == ("tickets", "text", str(german), "20")
    else:
        assert matches == []


def test_few_texts_give_no_warning(caplog):
    with caplog.at_level(logging.WARNING, logger="healthscore"):
        scored_batch(GERMAN * 4)

    # 16 texts are fewer than LEXICON_SAMPLE_ROWS, so nothing is judged.
    assert lexicon_warnings(caplog) == []


def test_neutral_english_subjects_do_not_warn(caplog):
    with caplog.at_level(logging.WARNING, logger="healthscore"):
        scores, scorer = scored_with_scorer(list(NEUTRAL_SUBJECTS))

    assert scores == [0.0] * len(NEUTRAL_SUBJECTS)
    assert lexicon_warnings(caplog) == []
    # 4 subjects have 4 or more words. Of those, "Billing address on invoice" and
    # "Seat count for next year" contain no word of ENGLISH_FUNCTION_WORDS.
    check = scorer.lexicon_checks[("tickets", "text")]
    assert check.texts == 4
    assert check.not_english == 2
    assert check.done is False


def test_neutral_english_sentences_do_not_warn(caplog):
    with caplog.at_level(logging.WARNING, logger="healthscore"):
        scores, scorer = scored_with_scorer(list(NEUTRAL_SENTENCES))

    assert scores == [0.0] * len(NEUTRAL_SENTENCES)
    assert lexicon_warnings(caplog) == []
    check = scorer.lexicon_checks[("tickets", "text")]
    assert check.done is True
    assert check.texts == len(NEUTRAL_SENTENCES)
    assert check.not_english == 0


def test_japanese_texts_warn(caplog):
    # 24 long texts and 4 short ones, which are not counted.
    texts: list[str | None] = JAPANESE * 4 + SHORT_JAPANESE * 2

    with caplog.at_level(logging.WARNING, logger="healthscore"):
        scores = scored_batch(texts)

    assert scores == [0.0] * len(texts)
    matches = lexicon_warnings(caplog)
    assert len(matches) == 1
    assert matches[0].groups() == ("tickets", "text", "24", "24")


def test_ascii_word_without_spaces_not_judged(caplog):
    # 20 ASCII words of 10 or more characters, which a run does not judge, then
    # 20 German texts.
    texts: list[str | None] = ["Cancellation", "https://example.com/export"] * 10
    texts += [GERMAN[i % 4] for i in range(LEXICON_SAMPLE_ROWS)]

    with caplog.at_level(logging.WARNING, logger="healthscore"):
        scored_batch(texts)

    matches = lexicon_warnings(caplog)
    assert len(matches) == 1
    assert matches[0].groups() == ("tickets", "text", "20", "20")


def german_tickets(accounts: int, per_account: int) -> list[dict[str, str]]:
    rows = []
    for account in range(1, accounts + 1):
        for i in range(per_account):
            stamp = AS_OF - timedelta(days=2 + i)
            rows.append(
                {
                    "account_id": f"a{account}",
                    "timestamp": f"{stamp.isoformat()}T10:00:00",
                    "text": GERMAN[(account + i) % len(GERMAN)],
                }
            )
    return rows


def ticket_project(root, tickets):
    config = minimal_config()
    config["sources"]["tickets"] = {"kind": "tickets", "path": "tickets.jsonl"}
    config["metrics"]["tone_28d"] = {
        "type": "sentiment",
        "source": "tickets",
        "column": "text",
        "window": "28d",
    }
    config["metrics"]["negative_28d"] = {
        "type": "sentiment",
        "source": "tickets",
        "column": "text",
        "statistic": "negative_share",
        "window": "28d",
    }
    files = {
        "accounts.csv": ACCOUNTS_CSV,
        "events.csv": "account_id,timestamp\n",
        "tickets.jsonl": tickets,
    }
    return write_project(root, config, files)


def test_german_tickets_warn_and_keep_scores(tmp_path, caplog):
    # 3 accounts with 8 German tickets each in the 28-day window.
    project = ticket_project(tmp_path, german_tickets(3, 8))

    with caplog.at_level(logging.WARNING, logger="healthscore"):
        values = compute_metrics(project, Engine.open(project).sources, AS_OF).values

    matches = lexicon_warnings(caplog)
    assert len(matches) == 1
    source, column, unscored, texts = matches[0].groups()
    assert (source, column) == ("tickets", "text")
    assert unscored == texts
    assert int(texts) >= LEXICON_SAMPLE_ROWS
    assert "The lexicon is English" in caplog.text
    for account in ("a1", "a2", "a3"):
        assert values.loc[account, "tone_28d"] == 0.0
        assert values.loc[account, "negative_28d"] == 0.0


def test_english_tickets_do_not_warn(tmp_path, caplog):
    tickets = german_tickets(3, 8)
    for number, row in enumerate(tickets):
        row["text"] = ENGLISH[number % len(ENGLISH)]
    project = ticket_project(tmp_path, tickets)

    with caplog.at_level(logging.WARNING, logger="healthscore"):
        compute_metrics(project, Engine.open(project).sources, AS_OF)

    assert lexicon_warnings(caplog) == []


def test_backfill_warns_once(tmp_path):
    project = ticket_project(tmp_path, german_tickets(3, 8))

    result = succeeded(
        run(
            "backfill",
            "--project",
            project.root,
            "--from",
            "2024-03-08",
            "--to",
            "2024-03-10",
            "--every",
            "1d",
        )
    )

    text = " ".join(result.stderr.split())
    assert text.count("contain no word of VADER's lexicon") == 1


def test_short_texts_stop_the_check() -> None:
    import pyarrow as pa

    from healthscore.sources.text import LEXICON_READ_LIMIT, VaderScorer

    scorer = VaderScorer()
    subjects = pa.array(["Password reset", "API limit"] * (LEXICON_READ_LIMIT // 2))
    names = pa.array(["tickets"] * len(subjects))
    columns = pa.array(["subject"] * len(subjects))

    scorer.compound_array(subjects, names, columns)

    check = scorer.lexicon_checks[("tickets", "subject")]
    assert check.done
    assert check.texts == 0
    assert check.read == LEXICON_READ_LIMIT
