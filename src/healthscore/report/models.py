"""The report's models section: the stored backtest and comparison of scoring methods.

`healthscore backtest` and `healthscore compare` store their measures as JSON (see
`healthscore.models.persist.save_results`). This module reads the latest run of each
and draws the charts: the reliability curve and churn per band of the configured
scorecards, with the test rows banded insufficient data as a band of their own, and
ROC AUC and lift per method. Without stored results the section is left out, and a
chart that the stored results cannot draw is replaced by a note saying why. The
notes that each command printed are stored with its run and shown with its table.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import plotly.graph_objects as go
import plotly.io
from markupsafe import Markup

from healthscore.config import Project
from healthscore.models.persist import load_results
from healthscore.report.charts import CHART_CONFIG
from healthscore.scoring import INSUFFICIENT_DATA

__all__ = ["ModelsSection", "band_rows", "models_section", "stored_notes"]


@dataclass(frozen=True)
class ModelsSection:
    """Tables and charts of the stored validation results."""

    backtest: dict[str, Any] | None
    compare: dict[str, Any] | None
    charts: dict[str, Markup]
    #: Why a chart of a stored result is missing, keyed like `charts`: the page shows
    #: the note in place of the chart.
    missing: dict[str, str]

    @property
    def backtest_rows(self) -> list[dict[str, str]]:
        """Rows of the backtest table, formatted for display."""
        methods = self.backtest["methods"] if self.backtest else []
        return [_display(method) for method in methods]

    @property
    def compare_rows(self) -> list[dict[str, str]]:
        """Rows of the comparison table, formatted for display."""
        methods = self.compare["methods"] if self.compare else []
        return [_display(method) for method in methods]

    @property
    def backtest_notes(self) -> list[str]:
        """Notes that `healthscore backtest` printed with the stored run."""
        return stored_notes(self.backtest)

    @property
    def compare_notes(self) -> list[str]:
        """Notes that `healthscore compare` printed with the stored run."""
        return stored_notes(self.compare)


def stored_notes(stored: dict[str, Any] | None) -> list[str]:
    """Return the notes of a stored backtest or comparison, as the command printed.

    These are the notes of the labels, the reason why nothing was measured, and the
    notes of the methods, such as unreliable measures, constant probabilities or
    fewer test rows. Runs stored without `method_notes` give each method's stored
    `note` after its name.
    """
    if stored is None:
        return []
    lines = [str(line) for line in stored.get("notes") or []]
    if stored.get("note"):
        lines.append(str(stored["note"]))
    if "method_notes" in stored:
        lines += [str(line) for line in stored["method_notes"]]
        return lines
    for method in stored.get("methods") or []:
        if method.get("note"):
            lines.append(f"{method['method']}: {method['note']}")
    return lines


def _display(method: dict[str, Any]) -> dict[str, str]:
    """Format a stored method's measures for display.

    `test_rows` is the number of the method's test rows, "-" for a method skipped
    on every split.
    """

    def fixed(key: str, digits: int) -> str:
        value = method.get(key)
        return "-" if value is None else f"{value:.{digits}f}"

    def percent(key: str) -> str:
        value = method.get(key)
        return "-" if value is None else f"{value:.1%}"

    return {
        "method": str(method["method"]),
        "test_rows": _test_rows(method),
        "roc_auc": fixed("roc_auc", 3),
        "lift": fixed("lift_top_decile", 2),
        "ece": fixed("ece", 4),
        "lead_time": fixed("lead_time_days", 1),
        "precision": percent("precision_at_risk"),
        "recall": percent("recall_at_risk"),
        "fit_seconds": fixed("fit_seconds", 1),
        "explainable": _yes_no(method.get("explainable")),
    }


def _test_rows(method: dict[str, Any]) -> str:
    """Show the number of a method's test rows, "-" for a method never measured."""
    rows = int(method.get("rows") or 0)
    return f"{rows:,}" if rows else "-"


def _yes_no(value: Any) -> str:
    """Show a flag as yes or no, and "-" for a method skipped on every split."""
    if value is None:
        return "-"
    return "yes" if value else "no"


def models_section(project: Project) -> ModelsSection | None:
    """Return the section from the stored results, or None when there are none."""
    backtest = load_results(project, "backtest")
    compare = load_results(project, "compare")
    if backtest is None and compare is None:
        return None
    charts: dict[str, Markup] = {}
    missing: dict[str, str] = {}
    if backtest is not None:
        methods = backtest.get("methods") or []
        live: dict[str, Any] = methods[0] if methods else {}
        if live.get("reliability"):
            charts["reliability"] = _reliability_chart(live)
        else:
            missing["reliability"] = _missing_reliability_note(live)
        if live.get("bands"):
            charts["bands"] = _band_chart(live)
        else:
            missing["bands"] = (
                "No chart of churn per band, because the backtest stored no churned "
                "or retained rows per band."
            )
    if compare is not None:
        if compare.get("methods"):
            charts["compare"] = _compare_chart(compare["methods"])
        else:
            missing["compare"] = (
                "No comparison chart, because the stored comparison has no measured "
                "methods."
            )
    return ModelsSection(backtest, compare, charts, missing)


def _missing_reliability_note(method: dict[str, Any]) -> str:
    """Return the note on why the backtest of `method` has no reliability curve."""
    text = (
        "No reliability curve, because the backtest computed no churn probabilities "
        "for the configured scorecards"
    )
    note = method.get("note")
    return f"{text} ({note})." if note else f"{text}."


def _reliability_chart(method: dict[str, Any]) -> Markup:
    rows = method["reliability"]
    figure = go.Figure()
    figure.add_trace(
        go.Scatter(
            x=[0, 1],
            y=[0, 1],
            mode="lines",
            name="Perfect calibration",
            line={"dash": "dash", "color": "#999999"},
        )
    )
    figure.add_trace(
        go.Scatter(
            x=[row["predicted"] for row in rows],
            y=[row["observed"] for row in rows],
            mode="lines+markers",
            name="Observed churn rate",
            marker={"size": 8, "color": "#0072B2"},
            customdata=[row["rows"] for row in rows],
            hovertemplate="predicted %{x:.1%}, observed %{y:.1%}, %{customdata} "
            "observations<extra></extra>",
        )
    )
    figure.update_layout(
        xaxis={
            "title": {"text": "Mean predicted churn probability"},
            "tickformat": ".0%",
        },
        yaxis={"title": {"text": "Observed churn rate"}, "tickformat": ".0%"},
        height=360,
        margin={"l": 60, "r": 20, "t": 20, "b": 50},
        template="plotly_white",
    )
    return _html(figure, "models-reliability")


def band_rows(method: dict[str, Any]) -> list[dict[str, Any]]:
    """Return the stored churn per band of `method`, with its other test rows.

    A stored backtest counts only the configured bands. The labelled test rows
    (`rows`, `churned`) outside them get their own `insufficient_data` row, because
    every other account is in one of the configured bands.
    """
    bands = [dict(row) for row in method.get("bands") or []]
    rows = int(method.get("rows") or 0) - sum(int(row["rows"]) for row in bands)
    churned = int(method.get("churned") or 0) - sum(
        int(row["churned"]) for row in bands
    )
    if rows > 0:
        bands.append(
            {
                "band": INSUFFICIENT_DATA,
                "rows": rows,
                "churned": churned,
                "rate": churned / rows,
            }
        )
    return bands


def _band_chart(method: dict[str, Any]) -> Markup:
    bands = [row for row in band_rows(method) if row["rows"]]
    figure = go.Figure(
        go.Bar(
            x=[row["band"] for row in bands],
            y=[row["rate"] for row in bands],
            marker={"color": "#D55E00"},
            customdata=[[row["churned"], row["rows"]] for row in bands],
            hovertemplate="%{x}: %{customdata[0]} of %{customdata[1]} churned "
            "(%{y:.1%})<extra></extra>",
        )
    )
    figure.update_layout(
        xaxis={"title": {"text": "Band"}},
        yaxis={"title": {"text": "Churn rate on test dates"}, "tickformat": ".1%"},
        height=320,
        margin={"l": 60, "r": 20, "t": 20, "b": 50},
        template="plotly_white",
    )
    return _html(figure, "models-bands")


def _compare_chart(methods: list[dict[str, Any]]) -> Markup:
    # Each method's label carries its test rows, because methods skipped on some
    # splits are measured on fewer rows, and a method skipped on every split has no
    # bars at all.
    names = []
    for method in methods:
        rows = _test_rows(method)
        counted = "not measured" if rows == "-" else f"{rows} test rows"
        names.append(f"{method['method']}<br>{counted}")
    figure = go.Figure()
    figure.add_trace(
        go.Bar(
            x=names,
            y=[method["roc_auc"] for method in methods],
            name="ROC AUC",
            marker={"color": "#0072B2"},
        )
    )
    figure.add_trace(
        go.Bar(
            x=names,
            y=[method["lift_top_decile"] for method in methods],
            name="Lift in the riskiest 10%",
            marker={"color": "#E69F00"},
            yaxis="y2",
        )
    )
    figure.update_layout(
        barmode="group",
        yaxis={"title": {"text": "ROC AUC"}, "range": [0, 1]},
        yaxis2={"title": {"text": "Lift"}, "overlaying": "y", "side": "right"},
        height=360,
        margin={"l": 60, "r": 60, "t": 20, "b": 50},
        legend={"orientation": "h", "y": -0.2},
        template="plotly_white",
    )
    return _html(figure, "models-compare")


def _html(figure: go.Figure, div_id: str) -> Markup:
    return Markup(
        plotly.io.to_html(
            figure,
            full_html=False,
            include_plotlyjs=False,
            include_mathjax=False,
            config=CHART_CONFIG,
            div_id=div_id,
        )
    )
