"""Plotly charts of the report, rendered as HTML fragments without plotly.js itself.

The report inlines plotly.js once (see `healthscore.report.html`), so each chart is a
`<div>` and a script that draws into it. The chart configuration turns off the Plotly
logo link, so the page contains no link to an outside site.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd
import plotly.graph_objects as go
import plotly.io

from healthscore.config.models import BandConfig
from healthscore.report.summary import band_style

#: Width of a histogram bin, in score points.
BIN_WIDTH = 5

#: Plotly options that keep the chart offline: no logo link, no cloud export.
CHART_CONFIG = {
    "displaylogo": False,
    "showSendToCloud": False,
    "responsive": True,
}


def score_histogram(
    scores: pd.DataFrame, bands: Sequence[BandConfig], div_id: str
) -> str:
    """Render the score distribution as stacked 5-point bins, one colour per band.

    Bins are [0, 5), [5, 10), ..., [95, 100]. Accounts without a score are not
    drawn. Each band is a legend entry, so every colour has its label beside it.
    """
    edges = np.arange(0, 100 + BIN_WIDTH, BIN_WIDTH, dtype="float64")
    centers = edges[:-1] + BIN_WIDTH / 2
    styles = band_style(bands)
    figure = go.Figure()
    scored = scores[scores["score"].notna()]
    for band, rows in scored.groupby("band", sort=False):
        counts, _ = np.histogram(rows["score"].to_numpy(dtype="float64"), edges)
        label, color = styles.get(str(band), (str(band), "#999999"))
        ranges = [f"{low:g}-{low + BIN_WIDTH:g}" for low in edges[:-1]]
        figure.add_trace(
            go.Bar(
                x=centers,
                y=counts,
                width=BIN_WIDTH,
                name=label,
                marker={"color": color, "line": {"color": "#333333", "width": 0.5}},
                customdata=ranges,
                hovertemplate=f"{label}: %{{y}} accounts scoring %{{customdata}}"
                "<extra></extra>",
            )
        )
    _order_traces(figure, [styles[band.name][0] for band in bands])
    figure.update_layout(
        barmode="stack",
        xaxis={"title": {"text": "Score"}, "range": [0, 100], "dtick": 10},
        yaxis={"title": {"text": "Accounts"}},
        legend={"title": {"text": "Band"}},
        margin={"l": 60, "r": 20, "t": 20, "b": 50},
        height=360,
        template="plotly_white",
    )
    return plotly.io.to_html(
        figure,
        full_html=False,
        include_plotlyjs=False,
        include_mathjax=False,
        config=CHART_CONFIG,
        div_id=div_id,
    )


def _order_traces(figure: go.Figure, labels: list[str]) -> None:
    """Put the traces in band order, so the legend reads from low to high."""
    position = {label: index for index, label in enumerate(labels)}
    figure.data = tuple(
        sorted(figure.data, key=lambda trace: position.get(trace.name, len(labels)))
    )
