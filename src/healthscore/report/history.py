"""Score history in the report: band counts over time, riskiest accounts over time.

Both charts and the score stability (PSI against the previous snapshot) are read
from the snapshot store, and the alerts from the operational store, so a report
rendered again from stored snapshots shows the same history.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date
from typing import Any

import pandas as pd
import plotly.graph_objects as go
import plotly.io

from healthscore.config import Project
from healthscore.config.models import BandConfig
from healthscore.monitoring.guard import (
    bin_counts,
    population_stability_index,
    score_distribution,
)
from healthscore.monitoring.history import score_history
from healthscore.monitoring.outbox import list_alerts
from healthscore.pipeline import snapshot_store
from healthscore.report.charts import CHART_CONFIG, _order_traces
from healthscore.report.summary import band_style
from healthscore.store.state import StateStore


@dataclass(frozen=True)
class ScoreStability:
    """The date's 10-bin score distribution and its PSI against the snapshot before."""

    distribution: list[dict[str, Any]]
    """Rows of `healthscore.monitoring.guard.score_distribution`."""
    previous_as_of: date | None
    psi: float | None


def score_stability(
    project: Project, as_of: date, scores: pd.DataFrame
) -> ScoreStability:
    """Compare `scores` with the newest stored snapshot before `as_of`."""
    store = snapshot_store(project)
    earlier = [day for day in store.dates() if day < as_of]
    distribution = score_distribution(scores["score"])
    if not earlier:
        return ScoreStability(distribution, None, None)
    previous = store.read(earlier[-1], "scores")
    psi = population_stability_index(
        bin_counts(previous["score"]), bin_counts(scores["score"])
    )
    return ScoreStability(distribution, earlier[-1], psi)


def history_charts(
    project: Project, as_of: date, account_ids: Sequence[str]
) -> dict[str, str] | None:
    """Render the history charts up to `as_of`; None with fewer than two dates stored.

    Returns the HTML fragments under `bands` and `accounts` (the second is empty
    when `account_ids` is).
    """
    store = snapshot_store(project)
    if len([day for day in store.dates() if day <= as_of]) < 2:
        return None
    history = score_history(store)
    history = history[history["as_of"] <= as_of]
    charts = {
        "bands": band_history_chart(history, project.config.bands, "band-history")
    }
    charts["accounts"] = ""
    if account_ids:
        picked = history[history["account_id"].isin(account_ids)]
        alerts = account_alerts(project, account_ids)
        charts["accounts"] = account_history_chart(
            picked, list(account_ids), alerts, "account-history"
        )
    return charts


def account_alerts(project: Project, account_ids: Sequence[str]) -> pd.DataFrame:
    """List the stored alerts of the accounts (account_id, as_of, title, severity)."""
    wanted = set(account_ids)
    state_url = project.config.store.state
    with StateStore.open(state_url, project.root) as state:
        records = list_alerts(state)
    rows = [
        {
            "account_id": record.alert.account_id,
            "as_of": record.alert.as_of,
            "title": record.alert.title,
            "severity": record.alert.severity,
        }
        for record in records
        if record.alert.account_id in wanted
    ]
    return pd.DataFrame(rows, columns=["account_id", "as_of", "title", "severity"])


def band_history_chart(
    history: pd.DataFrame, bands: Sequence[BandConfig], div_id: str
) -> str:
    """Render the accounts per band at every stored date as stacked bars."""
    styles = band_style(bands)
    counts = history.groupby(["as_of", "band"]).size().unstack(fill_value=0)
    figure = go.Figure()
    for band in counts.columns:
        label, color = styles.get(str(band), (str(band), "#999999"))
        figure.add_trace(
            go.Bar(
                x=[day.isoformat() for day in counts.index],
                y=counts[band].tolist(),
                name=label,
                marker={"color": color},
                hovertemplate=f"{label}: %{{y}} accounts as of %{{x}}<extra></extra>",
            )
        )
    _order_traces(figure, [styles[band.name][0] for band in bands])
    figure.update_layout(
        barmode="stack",
        xaxis={"title": {"text": "As-of date"}, "type": "category"},
        yaxis={"title": {"text": "Accounts"}},
        legend={"title": {"text": "Band"}},
        **_LAYOUT,
    )
    return _to_html(figure, div_id)


def account_history_chart(
    history: pd.DataFrame, account_ids: list[str], alerts: pd.DataFrame, div_id: str
) -> str:
    """Render each account's score over time, with a marker on each alert's date.

    The x axis is a category axis in date order over every date of `history`.
    Without the order, Plotly lays categories out as the traces first name them,
    so an account whose history starts later would put its dates first.
    """
    figure = go.Figure()
    for account in account_ids:
        rows = history[history["account_id"] == account].sort_values("as_of")
        days = [day.isoformat() for day in rows["as_of"]]
        figure.add_trace(
            go.Scatter(
                x=days,
                y=rows["score"].tolist(),
                mode="lines+markers",
                name=account,
                legendgroup=account,
                hovertemplate=f"{account}: %{{y:.1f}} as of %{{x}}<extra></extra>",
            )
        )
        marked = alerts[alerts["account_id"] == account]
        scores = dict(zip(days, rows["score"].tolist(), strict=True))
        points = [
            (day.isoformat(), title)
            for day, title in zip(marked["as_of"], marked["title"], strict=True)
            if day.isoformat() in scores
        ]
        if points:
            figure.add_trace(
                go.Scatter(
                    x=[day for day, _ in points],
                    y=[scores[day] for day, _ in points],
                    mode="markers",
                    name=f"{account} alerts",
                    legendgroup=account,
                    marker={"symbol": "x", "size": 12, "color": "#b00020"},
                    customdata=[title for _, title in points],
                    hovertemplate="alert %{customdata} as of %{x}<extra></extra>",
                )
            )
    dates = sorted({day.isoformat() for day in history["as_of"]})
    figure.update_layout(
        xaxis={
            "title": {"text": "As-of date"},
            "type": "category",
            "categoryorder": "array",
            "categoryarray": dates,
        },
        yaxis={"title": {"text": "Score"}, "range": [0, 100]},
        legend={"title": {"text": "Account"}},
        **_LAYOUT,
    )
    return _to_html(figure, div_id)


_LAYOUT: dict[str, Any] = {
    "margin": {"l": 60, "r": 20, "t": 20, "b": 50},
    "height": 360,
    "template": "plotly_white",
}


def _to_html(figure: go.Figure, div_id: str) -> str:
    return plotly.io.to_html(
        figure,
        full_html=False,
        include_plotlyjs=False,
        include_mathjax=False,
        config=CHART_CONFIG,
        div_id=div_id,
    )
