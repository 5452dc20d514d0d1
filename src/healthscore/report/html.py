"""Render the self-contained HTML report of one scored date.

The page works offline: plotly.js is inlined from the installed plotly package, the
styles are inline, and no element loads anything from another address.
"""

from __future__ import annotations

import math
import os
import uuid
from datetime import UTC, datetime
from pathlib import Path

import plotly.offline
from jinja2 import Environment, PackageLoader, StrictUndefined
from markupsafe import Markup

from healthscore import __version__
from healthscore.report.charts import score_histogram
from healthscore.report.history import history_charts, score_stability
from healthscore.report.inputs import ScoredDate
from healthscore.report.methodology import describe_project
from healthscore.report.models import models_section
from healthscore.report.outcomes import ChurnSummary

#: Headings of the report's sections, in page order.
SECTION_HEADINGS = (
    "Summary",
    "Score distribution",
    "Churn rate per band",
    "Riskiest accounts",
    "Methodology",
)

#: Element id of each section, in the order of SECTION_HEADINGS.
SECTION_IDS = ("summary", "distribution", "churn", "riskiest", "methodology")

#: Heading and element id of the score history section, shown with two or more
#: stored dates.
HISTORY_HEADING = ("history", "Score history")

#: Heading and element id of the models section, shown when `healthscore backtest`
#: or `healthscore compare` stored results.
MODELS_HEADING = ("models", "Backtest and scoring methods")

TEMPLATE = "report.html"


def render_report(
    scored: ScoredDate, churn: ChurnSummary, generated_at: datetime | None = None
) -> str:
    """Render the report of `scored` as one HTML document.

    Parameters
    ----------
    scored
        The scores of the date, from a run or a stored snapshot.
    churn
        Churn per band over the horizon after the date, or why it is unknown.
    generated_at
        Time stamp printed in the header; by default now (UTC).

    Raises
    ------
    ValueError
        When `report.value_column` names a column the accounts lack.
    """
    project = scored.project
    stamp = generated_at or datetime.now(UTC)
    summary = scored.summary()
    headings = dict(zip(SECTION_IDS, SECTION_HEADINGS, strict=True))
    riskiest = [account.account_id for account in summary.riskiest]
    history = history_charts(project, scored.as_of, riskiest)
    if history is not None:
        headings = _with_history_heading(headings)
        history = {name: Markup(chart) for name, chart in history.items()}
    models = models_section(project)
    if models is not None:
        headings = _with_models_heading(headings)
    context = {
        "models": models,
        "project": project.config.name,
        "as_of": scored.as_of.isoformat(),
        "generated_at": stamp.isoformat(timespec="seconds"),
        "version": __version__,
        "headings": headings,
        "history": history,
        "stability": score_stability(project, scored.as_of, scored.scores),
        "summary": summary,
        "riskiest_rule": riskiest_rule(summary.value_column),
        "churn": churn,
        "method": describe_project(project, scored.as_of),
        "histogram": Markup(
            score_histogram(scored.scores, project.config.bands, "score-histogram")
        ),
        "plotly_js": Markup(plotly.offline.get_plotlyjs()),
    }
    return _environment().get_template(TEMPLATE).render(context)


def _with_history_heading(headings: dict[str, str]) -> dict[str, str]:
    """Insert the history heading before the methodology, as the page orders them."""
    items = list(headings.items())
    items.insert(len(items) - 1, HISTORY_HEADING)
    return dict(items)


def _with_models_heading(headings: dict[str, str]) -> dict[str, str]:
    """Insert the models heading before the methodology, as the page orders them."""
    items = list(headings.items())
    items.insert(len(items) - 1, MODELS_HEADING)
    return dict(items)


def write_report(html: str, path: Path) -> Path:
    """Write `html` to `path` through a temporary file, so no half file is left."""
    path.parent.mkdir(parents=True, exist_ok=True)
    # A new file (mode "x") gets the usual permissions from the umask, unlike the
    # private files of tempfile.mkstemp.
    temporary = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
    try:
        with open(temporary, "x", encoding="utf-8") as file:
            file.write(html)
        os.replace(temporary, path)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise
    return path


def riskiest_rule(value_column: str | None) -> str:
    """Say how the riskiest accounts are ordered."""
    if value_column is None:
        return (
            "Accounts with a score, lowest band first, then lowest score first; the "
            "accounts have no ARR or MRR column to rank them by value."
        )
    return (
        f"Accounts with a score, lowest band first, then highest "
        f"{value_column.upper()} first, then lowest score first."
    )


def _environment() -> Environment:
    environment = Environment(
        loader=PackageLoader("healthscore", "templates"),
        autoescape=True,
        undefined=StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    environment.filters["percent"] = format_percent
    environment.filters["points"] = format_points
    environment.filters["count"] = format_count
    environment.filters["number"] = format_number
    return environment


def format_percent(value: float | None, digits: int = 1) -> str:
    """Format a share such as 0.123 as `12.3%`; a dash when missing."""
    if value is None or math.isnan(value):
        return "-"
    return f"{value * 100:.{digits}f}%"


def format_points(value: float | None) -> str:
    """Format a score or points with one decimal; a dash when missing."""
    if value is None or math.isnan(value):
        return "-"
    return f"{value:.1f}"


def format_count(value: int) -> str:
    """Format a count with thousands separators."""
    return f"{value:,}"


def format_number(value: float | None) -> str:
    """Format a metric value or an amount compactly; a dash when missing."""
    if value is None or math.isnan(value):
        return "-"
    if float(value).is_integer() and abs(value) < 1e15:
        return f"{int(value):,}"
    return f"{value:,.4g}" if abs(value) < 1000 else f"{value:,.0f}"
