"""The HTML report and the summaries it shares with the CLI.

The report is rendered from the tiny project of tests/test_cli.py, whose scores are
worked out by hand there: as of 2024-04-01, a1 scores 57.5 (stable), a2 21.25 and a3
0 (at risk). a2's subscription ends on 2024-04-15, before the 1-month horizon ends
on 2024-05-01, so a2 churned and a1 and a3 did not.
"""

from __future__ import annotations

import os
import re
import stat
from datetime import date, datetime
from html import unescape
from html.parser import HTMLParser

import pandas as pd
import plotly.offline
import pytest

from healthscore.config import Project, load_project
from healthscore.config.models import (
    BandConfig,
    ChangeMetric,
    CountMetric,
    MeasureConfig,
    NormalizeConfig,
    OutcomesConfig,
    RateMetric,
    WindowConfig,
    parse_duration,
)
from healthscore.engine import Engine
from healthscore.pipeline import score
from healthscore.report import (
    SECTION_HEADINGS,
    churn_summary,
    from_run,
    from_snapshot,
    read_account_sources,
    render_report,
    write_report,
)
from healthscore.report.methodology import describe_metric, describe_normalization
from healthscore.report.summary import (
    FALLBACK_COLOR,
    band_counts,
    choose_value_column,
    riskiest_accounts,
    safe_color,
    source_summaries,
)
from test_cli import build_project

AS_OF = date(2024, 4, 1)
POINT = datetime(2024, 4, 1)


@pytest.fixture(scope="module")
def engine(tmp_path_factory: pytest.TempPathFactory) -> Engine:
    root = build_project(tmp_path_factory.mktemp("report") / "tiny")
    return Engine.open(load_project(root))


@pytest.fixture(scope="module")
def html(engine: Engine) -> str:
    run = score(engine.project, AS_OF, engine=engine, store=False)
    churn = churn_summary(
        engine.project, engine.sources, run.result.scores, AS_OF, date(2024, 12, 1)
    )
    return render_report(from_run(run), churn)


def section(html: str, anchor: str) -> str:
    """HTML of one `<section id=anchor>`."""
    match = re.search(rf'<section id="{anchor}".*?</section>', html, flags=re.DOTALL)
    assert match is not None, f"no section {anchor!r}"
    return match.group(0)


def cells(row_html: str) -> list[str]:
    """Text of the th and td cells of one table row, tags removed."""
    found = re.findall(r"<t[hd][^>]*>(.*?)</t[hd]>", row_html, flags=re.DOTALL)
    texts = [re.sub(r"<[^>]+>", " ", cell) for cell in found]
    return [" ".join(unescape(text).split()) for text in texts]


def table_rows(html: str, caption: str) -> list[list[str]]:
    """Body rows of the table with `caption`, as lists of cell texts."""
    pattern = rf"<caption>{re.escape(caption)}</caption>.*?<tbody>(.*?)</tbody>"
    match = re.search(pattern, html, flags=re.DOTALL)
    assert match is not None, f"no table {caption!r}"
    rows = re.findall(r"<tr>(.*?)</tr>", match.group(1), flags=re.DOTALL)
    return [cells(row) for row in rows]


class References(HTMLParser):
    """Collects every address an element refers to, and URLs in visible text."""

    ATTRIBUTES = frozenset(
        {"src", "href", "action", "formaction", "srcset", "poster", "data"}
    )

    def __init__(self) -> None:
        super().__init__()
        self.addresses: list[tuple[str, str, str]] = []
        self.text_urls: list[str] = []
        self.styles: list[str] = []
        self.tags: set[str] = set()
        self._in_script = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.add(tag)
        self._in_script = tag == "script"
        for name, value in attrs:
            if name in self.ATTRIBUTES and value is not None:
                self.addresses.append((tag, name, value))
            if name == "style" and value is not None:
                self.styles.append(value)

    def handle_endtag(self, tag: str) -> None:
        if tag == "script":
            self._in_script = False

    def handle_data(self, data: str) -> None:
        if self._in_script:
            return
        self.text_urls.extend(re.findall(r"https?://\S+", data))


# The whole page


def test_report_has_every_section_heading(html):
    headings = re.findall(r"<h2[^>]*>(.*?)</h2>", html)

    assert headings == list(SECTION_HEADINGS)


def test_report_refers_to_no_outside_address(html):
    parser = References()
    parser.feed(html)

    assert [a for a in parser.addresses if not a[2].startswith("#")] == []
    assert parser.text_urls == []
    assert not [style for style in parser.styles if "url(" in style]
    assert not {"link", "iframe", "img", "object", "embed"} & parser.tags
    inline_css = re.search(r"<style>(.*?)</style>", html, flags=re.DOTALL)
    assert inline_css is not None
    assert "url(" not in inline_css.group(1)
    assert "@import" not in inline_css.group(1)


def test_report_scripts_other_than_plotly_have_no_url(html):
    scripts = re.findall(r"<script[^>]*>(.*?)</script>", html, flags=re.DOTALL)

    assert scripts[0] == plotly.offline.get_plotlyjs()
    for script in scripts[1:]:
        assert re.findall(r"https?://", script) == []
    assert re.findall(r"<script[^>]*\bsrc=", html) == []


def test_report_chart_hides_plotly_logo_link(html):
    assert "Plotly.newPlot" in html
    assert '"displaylogo": false' in html


def test_summary_section(html):
    summary = section(html, "summary")

    assert table_rows(summary, "Accounts per band") == [
        ["At risk", "2", "66.7%"],
        ["Stable", "1", "33.3%"],
        ["Healthy", "0", "0.0%"],
    ]
    assert "3 in the population, 3 with a score" in summary
    sources = table_rows(summary, "Rows per source as of 2024-04-01")
    events = next(row for row in sources if row[0] == "events")
    assert events[:6] == ["events", "events", "12", "9", "1", "2"]
    assert "row 11, column timestamp: value cannot be read as the column" in events[6]


def test_swatches_sit_beside_band_labels(html):
    summary = section(html, "summary")

    assert (
        '<span class="swatch" style="background: #D55E00" aria-hidden="true"></span>'
        "At risk"
    ) in summary


def test_churn_section(html):
    churn = section(html, "churn")

    assert table_rows(churn, "Churn rate per band over 1mo after 2024-04-01") == [
        ["At risk", "2", "1", "50.00%"],
        ["Stable", "1", "0", "0.00%"],
        ["Healthy", "0", "0", "-"],
    ]
    assert "The churn rate falls from each band to the next healthier one." in churn


def test_riskiest_section(html):
    riskiest = section(html, "riskiest")

    rows = table_rows(riskiest, "The 3 riskiest accounts")
    assert [row[0] for row in rows] == ["a2 (Globex)", "a3 (Initech)", "a1 (Acme)"]
    assert rows[0][1:4] == ["9,000", "21.2", "At risk"]
    assert rows[0][4] == (
        "events_28d: value 2, normalized 20.0, 60.0 points lost "
        "logins_28d: value 1, normalized 25.0, 18.8 points lost"
    )
    assert "then highest ARR first, then lowest score first" in riskiest


def test_methodology_section(html):
    method = section(html, "methodology")

    metrics = {row[0]: row for row in table_rows(method, "Metrics as of 2024-04-01")}
    assert metrics["logins_28d"][1:5] == [
        "count",
        "events",
        "event_type == 'login'",
        "28d ending at the as-of point: 2024-03-04 00:00 ≤ t < 2024-04-01 00:00",
    ]
    assert metrics["events_28d"][6] == "Events in the 28 days before the as-of date."
    assert metrics["segment"][5] == "The accounts column segment, as it is."
    measures = table_rows(method, "Measures of scorecard default")
    assert [(row[0], row[4]) for row in measures] == [
        ("events_28d", "75.0%"),
        ("logins_28d", "25.0%"),
    ]
    assert measures[0][6] == (
        "Bounds: linear from 0 (score 0) to 10 (score 100), clipped to 0-100."
    )
    assert table_rows(method, "Score bands")[0] == [
        "At risk",
        "at_risk",
        "0 to 40",
        "#D55E00",
    ]
    assert "Scores every account." in " ".join(method.split())
    assert "The as-of point of date D is D 00:00 (start_of_day)" in method
    assert "For 2024-04-01 the as-of point is 2024-04-01 00:00 UTC." in method
    assert "below the scorecard&#39;s minimum coverage" in method
    assert "Accounts with a subscription in source &#39;subscriptions&#39;" in method


def test_report_from_snapshot_matches_run(tmp_path):
    project = load_project(build_project(tmp_path / "tiny"))
    run = score(project, AS_OF)
    sources = read_account_sources(project)

    stored = from_snapshot(project, AS_OF, sources.accounts())

    assert stored.summary().bands == from_run(run).summary().bands
    assert stored.summary().riskiest == from_run(run).summary().riskiest
    assert stored.snapshot == run.snapshot
    assert set(sources.loaded) == {"accounts", "subscriptions"}


def test_write_report_leaves_one_readable_file(tmp_path):
    path = tmp_path / "out" / "report.html"
    umask = os.umask(0)
    os.umask(umask)

    write_report("<!DOCTYPE html><title>t</title>", path)

    assert [entry.name for entry in path.parent.iterdir()] == ["report.html"]
    assert stat.S_IMODE(path.stat().st_mode) == 0o666 & ~umask


# Churn outcomes


def test_churn_unavailable_before_horizon_is_observed(engine):
    project = Project(
        root=engine.project.root, config=engine.project.config.model_copy()
    )
    project.config.outcomes = OutcomesConfig(
        horizon=parse_duration("1mo"), observed_until=date(2024, 4, 15)
    )
    scores = pd.DataFrame({"account_id": ["a1"], "band": ["stable"]})

    churn = churn_summary(project, engine.sources, scores, AS_OF, date(2024, 12, 1))

    assert churn.bands == []
    assert churn.falls is None
    assert churn.unavailable == (
        "the 1mo horizon after 2024-04-01 ends on 2024-05-01, after "
        "outcomes.observed_until (2024-04-15), so 1 scored account is "
        "censored (no outcome is known)"
    )


# Subscriptions of the tiny project's accounts in monthly periods. Their latest start,
# 2024-05-01, ends the observed data when outcomes.observed_until is not set. a2 has
# no period active on 2024-05-01, so it churned within the 1mo horizon of 2024-04-01.
MONTHLY_SUBSCRIPTIONS = """account_id,start,end
a1,2024-03-01,2024-04-01
a1,2024-04-01,2024-05-01
a1,2024-05-01,2024-06-01
a2,2024-03-01,2024-04-01
a2,2024-04-01,2024-04-20
a3,2024-03-01,2024-04-01
a3,2024-04-01,2024-05-01
a3,2024-05-01,2024-06-01
"""


@pytest.fixture(scope="module")
def monthly(tmp_path_factory: pytest.TempPathFactory) -> Engine:
    """The tiny project without outcomes.observed_until, on monthly subscriptions."""
    root = build_project(tmp_path_factory.mktemp("report") / "monthly")
    (root / "subscriptions.csv").write_text(MONTHLY_SUBSCRIPTIONS, encoding="utf-8")
    engine = Engine.open(load_project(root))
    engine.project.config.outcomes = OutcomesConfig(horizon=parse_duration("1mo"))
    return engine


def test_churn_censored_after_latest_subscription_start(monthly):
    scores = pd.DataFrame(
        {"account_id": ["a1", "a2", "a3"], "band": ["stable", "stable", "stable"]}
    )

    # The horizon after 2024-04-15 ends on 2024-05-15, after the latest start. Today
    # is long after it, so only the data can censor it.
    churn = churn_summary(
        monthly.project, monthly.sources, scores, date(2024, 4, 15), date(2025, 1, 1)
    )

    assert churn.bands == []
    assert churn.unavailable == (
        "the 1mo horizon after 2024-04-15 ends on 2024-05-15, after the latest "
        "subscription start (2024-05-01) that marks the end of the observed data, so "
        "3 scored accounts are censored (no outcome is known); set "
        "outcomes.observed_until to the last date with complete subscriptions"
    )


def test_churn_observed_up_to_latest_subscription_start(monthly):
    scores = pd.DataFrame(
        {"account_id": ["a1", "a2", "a3"], "band": ["stable", "stable", "stable"]}
    )

    churn = churn_summary(
        monthly.project, monthly.sources, scores, AS_OF, date(2025, 1, 1)
    )

    assert churn.unavailable is None
    stable = [band for band in churn.bands if band.name == "stable"]
    assert [(band.accounts, band.churned) for band in stable] == [(3, 1)]


def test_churn_unobserved_horizon_ending_today(monthly):
    scores = pd.DataFrame({"account_id": ["a1"], "band": ["stable"]})

    churn = churn_summary(
        monthly.project, monthly.sources, scores, AS_OF, date(2024, 5, 1)
    )

    assert churn.unavailable == (
        "the 1mo horizon after 2024-04-01 ends on 2024-05-01, which is not in the "
        "past, so 1 scored account is censored (no outcome is known); set "
        "outcomes.observed_until to the last date with complete subscriptions"
    )


def test_churn_observed_until_after_subscriptions(engine):
    project = Project(
        root=engine.project.root, config=engine.project.config.model_copy()
    )
    # The tiny project's subscriptions end on 2024-07-01 at the latest.
    project.config.outcomes = OutcomesConfig(
        horizon=parse_duration("1mo"), observed_until=date(2024, 9, 30)
    )
    scores = pd.DataFrame({"account_id": ["a1"], "band": ["stable"]})

    churn = churn_summary(project, engine.sources, scores, AS_OF, date(2024, 12, 1))

    assert churn.bands == []
    assert churn.unavailable is not None
    assert churn.unavailable.startswith(
        "outcomes.observed_until (2024-09-30) is later than the last start or end "
        "date in the subscriptions (2024-07-01)"
    )


def test_churn_without_subscriptions_source(engine):
    config = engine.project.config.model_copy(
        update={"sources": {"accounts": engine.project.config.sources["accounts"]}}
    )
    project = Project(root=engine.project.root, config=config)
    scores = pd.DataFrame({"account_id": ["a1"], "band": ["stable"]})

    churn = churn_summary(project, None, scores, AS_OF, date(2024, 12, 1))

    assert churn.unavailable == (
        "the project has no source of kind subscriptions, so churn cannot be observed"
    )


def test_report_says_why_churn_is_missing(engine):
    project = Project(
        root=engine.project.root, config=engine.project.config.model_copy()
    )
    project.config.outcomes = OutcomesConfig(
        horizon=parse_duration("1mo"), observed_until=date(2024, 4, 15)
    )
    run = score(project, AS_OF, engine=engine, store=False)
    churn = churn_summary(
        project, engine.sources, run.result.scores, AS_OF, date(2024, 12, 1)
    )

    page = render_report(from_run(run), churn)

    assert (
        "<p>No churn rates for 2024-04-01: the 1mo horizon after 2024-04-01 ends on "
        "2024-05-01, after outcomes.observed_until (2024-04-15), so 3 scored "
        "accounts are censored (no outcome is known).</p>"
    ) in section(page, "churn")


# Summaries


BANDS = [
    BandConfig(name="at_risk", label="At risk", min=0, max=40, color="#D55E00"),
    BandConfig(name="healthy", label="Healthy", min=41, max=100, color="#0072B2"),
]


def test_band_counts_add_special_bands_when_present():
    scores = pd.DataFrame(
        {"band": ["at_risk", "insufficient_data", "at_risk", "unscored"]}
    )

    counts = band_counts(scores, BANDS)

    assert [(row.name, row.count, row.share) for row in counts] == [
        ("at_risk", 2, 0.5),
        ("healthy", 0, 0.0),
        ("insufficient_data", 1, 0.25),
        ("unscored", 1, 0.25),
    ]
    assert counts[2].label == "Insufficient data"


def test_riskiest_orders_band_then_value_then_score():
    scores = pd.DataFrame(
        {
            "account_id": ["h1", "r1", "r2", "r3", "r4", "i1"],
            "score": [90.0, 30.0, 10.0, 20.0, 35.0, 15.0],
            "band": ["healthy", "at_risk", "at_risk", "at_risk", "at_risk",
                     "insufficient_data"],
        }
    )  # fmt: skip
    accounts = pd.DataFrame(
        {"arr": [5.0, 100.0, 100.0, None, 50.0, 1000.0]},
        index=["h1", "r1", "r2", "r3", "r4", "i1"],
    )
    measures = pd.DataFrame(
        columns=["account_id", "component", "measure", "metric", "value",
                 "value_text", "normalized", "effective_weight"]
    )  # fmt: skip

    ranked = riskiest_accounts(scores, measures, BANDS, accounts, "arr", limit=10)

    # Equal ARR (r1, r2) goes to the lower score; a missing ARR (r3) comes last in
    # its band; insufficient data is left out.
    assert [account.account_id for account in ranked] == ["r2", "r1", "r4", "r3", "h1"]
    assert ranked[3].value is None
    assert (
        riskiest_accounts(scores, measures, BANDS, accounts, "arr", limit=2)[
            -1
        ].account_id
        == "r1"
    )


def test_choose_value_column(engine):
    config = engine.project.config.model_copy(deep=True)

    assert choose_value_column(config, ["name", "arr", "mrr"]) == "arr"
    assert choose_value_column(config, ["name", "mrr"]) == "mrr"
    assert choose_value_column(config, ["name"]) is None
    config.report.value_column = "mrr"
    assert choose_value_column(config, ["arr", "mrr"]) == "mrr"
    with pytest.raises(
        ValueError,
        match=r"^report.value_column is 'mrr' but the accounts source 'accounts' has "
        r"no mrr column; map it under sources.accounts.columns or remove "
        r"report.value_column$",
    ):
        choose_value_column(config, ["arr"])


def test_source_summaries_keep_later_rows_apart():
    example = {"file": "e.csv", "column": "timestamp"}
    report = {
        "source": "events",
        "kind": "events",
        "files": ["e.csv"],
        "rows_read": 20,
        "rows_used": 10,
        "excluded": {"after_as_of:timestamp": 6, "unparseable_value:timestamp": 4},
        "examples": [
            {**example, "row": 2, "reason": "after_as_of"},
            *(
                {**example, "row": row, "reason": "unparseable_value"}
                for row in range(3, 8)
            ),
        ],
    }  # fmt: skip

    (summary,) = source_summaries([report])

    assert summary.later == 6
    assert summary.problems == {
        "value cannot be read as the column's type (timestamp)": 4
    }
    assert summary.rows_with_problems == 4
    assert [example.row for example in summary.examples] == [3, 4, 5]


@pytest.mark.parametrize(
    ("color", "expected"),
    [
        ("#D55E00", "#D55E00"),
        ("steelblue", "steelblue"),
        ("rgb(0, 114, 178)", "rgb(0, 114, 178)"),
        ("red; background: url(https://example.org/x.png)", FALLBACK_COLOR),
        ('"><script>', FALLBACK_COLOR),
    ],
)
def test_safe_color(color, expected):
    assert safe_color(color) == expected


# Methodology text


def measure(direction: str = "higher", **normalize: object) -> MeasureConfig:
    return MeasureConfig(
        metric="m",
        direction=direction,
        normalize=NormalizeConfig.model_validate(normalize),
    )


@pytest.mark.parametrize(
    ("config", "text"),
    [
        (
            measure("lower", method="bounds", min=0, max=28),
            "Bounds: linear from 0 (score 0) to 28 (score 100), clipped to 0-100. "
            "Lower is better, so the score is reversed (100 - score).",
        ),
        (
            measure(method="percentile", within="segment", log=True),
            "Values go through log(1 + value) first, with negative values as 0. "
            "Percentile: mid-rank percentile "
            "100 × (rank - 0.5) / n among the accounts of the scorecard with the same "
            "segment; ties share a score.",
        ),
        (
            measure(method="bounds", min=1, max=100, log=True),
            "Values go through log(1 + value) first, with negative values as 0; the "
            "thresholds below are in original units. Bounds: linear from 1 (score 0) "
            "to 100 (score 100), clipped to 0-100.",
        ),
        (
            measure(method="zscore", mean=3, std=2),
            "Z-score: 100 / (1 + e^(-z)) with z = (value - mean) / std, where mean is "
            "3 and std is 2; no spread scores 50.",
        ),
        (
            measure(
                method="steps",
                steps=[{"from": 0, "score": 0}, {"from": 5, "score": 60}],
            ),
            "Steps: from 0: 0, from 5: 60; values below the first step score 0.",
        ),
        (
            measure("lower", method="target", target=2),
            "Target 2, lower is better: 100 at or below the target, above it 2 / value "
            "× 100.",
        ),
        (
            measure(method="target", target=8),
            "Target 8: share of the target reached, min(value / 8, 1) × 100, and 0 for "
            "negative values.",
        ),
        (
            measure(method="categories", scores={"engaged": 100, "none": 30}),
            "Categories: engaged → 100, none → 30; other values have no score.",
        ),
    ],
)  # fmt: skip
def test_describe_normalization(config, text):
    assert describe_normalization(config) == text


def test_window_edges_right_closed_and_months():
    right = CountMetric(
        type="count", source="e", window=WindowConfig(length="84d", closed="right")
    )
    month = CountMetric(type="count", source="e", window=WindowConfig(length="1mo"))

    assert describe_metric("r", right, POINT, {}).window == (
        "84d ending at the as-of point: 2024-01-08 00:00 < t < 2024-04-01 00:00"
    )
    assert describe_metric("m", month, datetime(2024, 3, 31), {}).window == (
        "1mo ending at the as-of point: 2024-02-29 00:00 ≤ t < 2024-03-31 00:00"
    )


def test_change_metric_shows_both_windows():
    base = CountMetric(type="count", source="e", window=WindowConfig(length="28d"))
    change = ChangeMetric(type="change", of="base")

    doc = describe_metric("c", change, POINT, {"base": base, "c": change})

    assert doc.window == (
        "28d ending at the as-of point: 2024-03-04 00:00 ≤ t < 2024-04-01 00:00; "
        "compared with 2024-02-05 00:00 ≤ t < 2024-03-04 00:00"
    )
    assert doc.definition == (
        "(base - its value over the window before) / the absolute earlier value; "
        "missing when the earlier value is 0."
    )


def test_right_closed_change_keeps_earlier_end():
    base = CountMetric(
        type="count", source="e", window=WindowConfig(length="28d", closed="right")
    )
    change = ChangeMetric(type="change", of="base")

    doc = describe_metric("c", change, POINT, {"base": base, "c": change})

    assert doc.window == (
        "28d ending at the as-of point: 2024-03-04 00:00 < t < 2024-04-01 00:00; "
        "compared with 2024-02-05 00:00 < t ≤ 2024-03-04 00:00"
    )


def test_rate_over_window_definition():
    rate = RateMetric(
        type="rate", source="e", window=WindowConfig(length="84d"), per="28d"
    )

    assert describe_metric("r", rate, POINT, {}).definition == (
        "Rows in the window per 28d: count × 28 days / window days."
    )


def test_rate_with_tenure_exposure_definition():
    rate = RateMetric(
        type="rate",
        source="e",
        window=WindowConfig(length="84d"),
        per=parse_duration("28d"),
        exposure="tenure",
        min_tenure=parse_duration("14d"),
    )

    assert describe_metric("r", rate, POINT, {}).definition == (
        "Rows in the window per 28d: count × 28 days / the shorter of the window and "
        "the account's tenure, in days; missing for accounts younger than 14d."
    )


# Models section


def test_models_section_without_calibration(tmp_path):
    """A backtest too short to calibrate leaves notes where its charts would be."""
    import json

    from test_cli import run, succeeded

    root = tmp_path / "demo"
    succeeded(run("init", root))
    # Three monthly scores give two backtest splits, each with too few churned rows
    # in its training part to fit a calibration.
    for as_of in ("2026-04-01", "2026-05-01", "2026-06-01"):
        succeeded(run("score", "--project", root, "--as-of", as_of))
    succeeded(run("backtest", "--project", root))
    stored = json.loads(
        (root / ".healthscore" / "models" / "backtest.json").read_text("utf-8")
    )
    assert stored["methods"][0]["reliability"] == []
    assert stored["methods"][0]["calibration"] == ""

    succeeded(run("report", "--project", root, "--as-of", "2026-06-01"))
    page = (root / "output" / "report-2026-06-01.html").read_text("utf-8")
    models = section(page, "models")
    assert 'id="models-reliability"' not in models
    missing = re.search(
        r'<p class="note" id="models-reliability-missing">(.*?)</p>', models
    )
    assert missing is not None
    assert missing.group(1).startswith("No reliability curve, because")
    assert "fewer than 10 churned or retained rows" in unescape(missing.group(1))
    # The churn rates per band do not depend on a calibration, so their chart stays.
    assert 'id="models-bands"' in models
    assert "models-bands-missing" not in models
    # No comparison was stored, so the page has no comparison part at all.
    assert "models-compare" not in models
    assert "Calibration of the churn probabilities of a score: none," in models


def test_band_rows_add_insufficient_data():
    from healthscore.report.models import _band_chart, band_rows

    stored = {
        "rows": 3543,
        "churned": 57,
        "bands": [
            {"band": "at_risk", "rows": 122, "churned": 34, "rate": 34 / 122},
            {"band": "stable", "rows": 1748, "churned": 23, "rate": 23 / 1748},
            {"band": "healthy", "rows": 1666, "churned": 0, "rate": 0.0},
        ],
    }

    rows = band_rows(stored)

    assert [row["band"] for row in rows] == [
        "at_risk",
        "stable",
        "healthy",
        "insufficient_data",
    ]
    # 3543 - 122 - 1748 - 1666 = 7 test rows, none of them churned.
    assert rows[-1] == {
        "band": "insufficient_data",
        "rows": 7,
        "churned": 0,
        "rate": 0.0,
    }
    assert "insufficient_data" in _band_chart(stored)


def test_band_rows_without_other_rows():
    from healthscore.report.models import band_rows

    stored = {
        "rows": 10,
        "churned": 2,
        "bands": [{"band": "at_risk", "rows": 10, "churned": 2, "rate": 0.2}],
    }
    assert [row["band"] for row in band_rows(stored)] == ["at_risk"]


def test_skipped_method_shows_no_claim():
    from healthscore.report.models import _display

    skipped = {"method": "ml", "explainable": None, "fit_seconds": None}
    shown = _display(skipped)

    assert shown["explainable"] == "-"
    assert shown["fit_seconds"] == "-"
    assert _display({"method": "rules", "explainable": False})["explainable"] == "no"


def test_compare_table_shows_test_rows_and_notes(tmp_path):
    from healthscore.models.persist import save_results

    project = load_project(build_project(tmp_path / "tiny"))
    tested_on = (
        "tested on 120 of the 300 test rows, so its measures are not directly "
        "comparable with those of methods tested on more rows"
    )
    skipped = "2024-03-01: skipped, too few labelled rows to train a churn model"
    measured = {"roc_auc": 0.7, "lift_top_decile": 2.0, "ece": 0.05}
    unmeasured = dict.fromkeys(measured)
    save_results(
        project,
        "compare",
        {
            "splits": "time-ordered: 2 test dates",
            "methods": [
                {"method": "weighted", "rows": 300, "note": "", **measured},
                {"method": "survival", "rows": 120, "note": tested_on, **measured},
                {"method": "ml", "rows": 0, "note": skipped, **unmeasured},
            ],
        },
    )
    run = score(project, AS_OF, store=False)
    churn = churn_summary(project, None, run.result.scores, AS_OF, date(2024, 12, 1))

    models = section(render_report(from_run(run), churn), "models")

    table = re.search(r"Scoring methods fitted.*?</table>", models, re.DOTALL)
    assert table is not None
    assert '<th scope="col">Test rows</th>' in table.group(0)
    rows = re.findall(r"<tr>(.*?)</tr>", table.group(0).split("<tbody>")[1], re.DOTALL)
    assert [cells(row)[:2] for row in rows] == [
        ["weighted", "300"],
        ["survival", "120"],
        ["ml", "-"],
    ]
    notes = re.search(
        r'<ul class="note" id="models-compare-notes">(.*?)</ul>', models, re.DOTALL
    )
    assert notes is not None
    items = [
        " ".join(unescape(item).split())
        for item in re.findall(r"<li>(.*?)</li>", notes.group(1), re.DOTALL)
    ]
    assert items == [f"survival: {tested_on}", f"ml: {skipped}"]
    # The chart labels each method with its test rows. Plotly writes "<br>" into
    # its JSON as "\u003cbr\u003e".
    assert r"survival\u003cbr\u003e120 test rows" in models
    assert r"ml\u003cbr\u003enot measured" in models
