"""Values of the dashboard pages, read through the same functions as the API routes.

Each function returns the dictionary one template renders. Tables come from
`healthscore.service.views` and the API route functions (which apply the token's
account visibility), and charts from the report's chart builders.
"""

from __future__ import annotations

import logging
from datetime import date
from typing import Any

import pandas as pd
from markupsafe import Markup

from healthscore.config.models import BandConfig
from healthscore.monitoring.notes import list_notes
from healthscore.monitoring.outbox import AlertRecord, list_alerts
from healthscore.monitoring.playbooks import Task, list_tasks
from healthscore.report.charts import score_histogram
from healthscore.report.history import account_history_chart, band_history_chart
from healthscore.report.models import models_section
from healthscore.report.summary import band_style, choose_value_column
from healthscore.scoring import overriding
from healthscore.service.auth import Access
from healthscore.service.errors import ApiError
from healthscore.service.routers import accounts as account_routes
from healthscore.service.routers import results as result_routes
from healthscore.service.serialize import alert_json, jsonable
from healthscore.service.views import (
    account_table,
    applying_overrides,
    filter_accounts,
    sort_accounts,
)

logger = logging.getLogger(__name__)
# Messages of value column errors logged already, so each is logged once.
_logged_value_errors: set[str] = set()

#: Rows of the at-risk list on the portfolio page.
AT_RISK_ROWS = 25
#: Days ahead of the forecasts shown on the account page.
FORECAST_HORIZONS = (30, 60, 90)


def band_tones(bands: list[BandConfig]) -> dict[str, dict[str, str]]:
    """Label, colour and tone (low, middle, high) of every band name.

    The tone picks the band's icon and fill pattern, so bands differ by shape and
    text as well as by colour.
    """
    ordered = sorted(bands, key=lambda band: band.min)
    styles = band_style(bands)
    tones: dict[str, dict[str, str]] = {}
    for name, (label, color) in styles.items():
        tones[name] = {"label": label, "color": color, "tone": "other"}
    for index, band in enumerate(ordered):
        if index == 0:
            tone = "low"
        elif index == len(ordered) - 1:
            tone = "high"
        else:
            tone = "middle"
        tones[band.name]["tone"] = tone
    return tones


def at_risk_band(bands: list[BandConfig]) -> str:
    """Return the band named at_risk, else the lowest band (as the portfolio does)."""
    names = [band.name for band in bands]
    if "at_risk" in names:
        return "at_risk"
    return min(bands, key=lambda band: band.min).name


def portfolio_view(access: Access) -> dict[str, Any]:
    """Return band counts now and over time, the distribution and the at-risk list."""
    context = access.context
    bands = context.project.config.bands
    day = context.data.resolve_as_of(None)
    table = account_table(access, day)
    tones = band_tones(bands)
    counts = []
    for name, tone in tones.items():
        rows = table[table["band"] == name]
        if name not in {band.name for band in bands} and rows.empty:
            continue
        counts.append(
            {
                "band": name,
                "accounts": len(rows),
                "arr": rows["arr"].sum(min_count=1),
                **tone,
            }
        )

    history = context.data.history()
    history = history[access.filter_ids(history["account_id"].astype(str))]
    band_chart = None
    if not history.empty:
        band_chart = Markup(band_history_chart(history, bands, "band-history"))

    value_column = at_risk_value_column(access)
    risky = table[table["band"] == at_risk_band(bands)]
    risky = riskiest_first(with_values(risky, access, value_column))
    risky = risky.head(AT_RISK_ROWS)
    return {
        "as_of": day,
        "total": len(table),
        "counts": counts,
        "tones": tones,
        "band_chart": band_chart,
        "histogram": Markup(score_histogram(table, bands, "score-distribution")),
        "at_risk": risky.to_dict(orient="records"),
        "at_risk_label": tones[at_risk_band(bands)]["label"],
        "at_risk_value": None if value_column is None else value_column.upper(),
        "dates": len(history["as_of"].unique()),
    }


def at_risk_value_column(access: Access) -> str | None:
    """Return the account column that orders the at-risk list: arr, mrr or None.

    The choice is the HTML report's (`report.value_column`, else ARR, else MRR). A
    configured column that the accounts source lacks gives None, so the list is
    ordered by score alone, where the report fails instead.
    """
    config = access.context.project.config
    columns = access.context.data.accounts().columns
    try:
        return choose_value_column(config, columns)
    except ValueError as error:
        message = str(error)
        if message not in _logged_value_errors:
            _logged_value_errors.add(message)
            logger.warning("the at-risk list is ordered by score only: %s", message)
        return None


def with_values(
    accounts: pd.DataFrame, access: Access, value_column: str | None
) -> pd.DataFrame:
    """Add the column `value`: each account's `value_column`, missing without one."""
    if value_column is None:
        return accounts.assign(value=float("nan"))
    values = access.context.data.accounts()[value_column]
    mapped = accounts["account_id"].map(values)
    return accounts.assign(value=pd.to_numeric(mapped, errors="coerce"))


def riskiest_first(accounts: pd.DataFrame) -> pd.DataFrame:
    """Sort accounts by `value` (highest first, missing last), then lowest score.

    The report's list of the riskiest accounts orders each band the same way, so
    without any value the accounts with the lowest scores come first.
    """
    return accounts.sort_values(
        ["value", "score", "account_id"],
        ascending=[False, True, True],
        na_position="last",
        kind="stable",
    )


def accounts_view(
    access: Access,
    sort: account_routes.SortKey,
    *,
    as_of: date | None = None,
    band: str | None = None,
) -> dict[str, Any]:
    """Return the visible accounts as of `as_of` (default the latest stored date).

    Each row has score, band, trend and owner. With `band`, only that band's
    accounts are listed. An unknown band gives 422 and a date without stored
    scores 404 (ApiError), as in the API.
    """
    if band is not None:
        account_routes.check_band(access, band)
    day = access.context.data.resolve_as_of(as_of)
    table = filter_accounts(account_table(access, day), band=band)
    table = sort_accounts(table, sort)
    return {
        "as_of": day,
        "accounts": table.to_dict(orient="records"),
        "sort": sort,
        "band": band,
        # The date of the query, kept by the sort form; None means the latest.
        "requested_as_of": as_of,
        "tones": band_tones(access.context.project.config.bands),
    }


def account_view(
    access: Access, account_id: str, as_of: date | None = None
) -> dict[str, Any]:
    """Everything the account page shows as of `as_of`; 404 (ApiError) when not visible.

    Without `as_of`, the page shows the latest stored date on which the account was
    scored, so an account missing from the latest snapshot (a churned account, or
    any account after an empty snapshot) still has a page. So does an account
    removed from the accounts source that a stored snapshot scored.
    """
    context = access.context
    access.check_readable(account_id)
    latest = context.data.resolve_as_of(None)
    history = context.data.history()
    all_own = history[history["account_id"].astype(str) == account_id]
    if as_of is None and not all_own.empty:
        as_of = max(all_own["as_of"])
    account = account_routes.get_account(account_id, access, as_of=as_of)
    day = date.fromisoformat(account["as_of"])
    own = all_own[all_own["as_of"] <= day].sort_values("as_of")

    alerts = account_alerts(access, account_id)
    alert_frame = pd.DataFrame(
        [
            {
                "account_id": record.alert.account_id,
                "as_of": record.alert.as_of,
                "title": record.alert.title,
                "severity": record.alert.severity,
            }
            for record in alerts
        ],
        columns=["account_id", "as_of", "title", "severity"],
    )
    chart = account_history_chart(own, [account_id], alert_frame, "account-history")

    components = account_routes.get_components(account_id, access, as_of=day)
    today = context.local_now().date()
    overrides = context.state.list_overrides(False, as_of=today, account_id=account_id)
    return {
        "account": account,
        "as_of": day,
        "latest": latest,
        "scored_latest": bool((all_own["as_of"] == latest).any()),
        "tones": band_tones(context.project.config.bands),
        "history_chart": Markup(chart),
        "history": own.to_dict(orient="records"),
        "components": components["components"],
        "change": _last_change(access, account_id, own, day),
        "forecast": _forecast(access, account_id, day),
        "horizons": FORECAST_HORIZONS,
        "alerts": [alert_json(record) for record in alerts],
        "tasks": jsonable(list_tasks(context.state, account_id=account_id)),
        "notes": list_notes(context.state, account_id),
        "overrides": overrides,
        "applying_overrides": applying_overrides(overrides, today),
        "measures": measure_names(access, account_id),
        "today": today,
    }


def _last_change(
    access: Access, account_id: str, own: pd.DataFrame, day: date
) -> dict[str, Any]:
    """Explain the change of the score since the account's previous stored date."""
    earlier = [value for value in own["as_of"] if value < day]
    if not earlier:
        return {"message": "There is no earlier score to compare with."}
    try:
        return account_routes.get_explanation(
            account_id, access, as_of=day, compare_to=earlier[-1]
        )
    except ApiError as error:
        return {"message": error.message}


def _forecast(access: Access, account_id: str, day: date) -> dict[str, Any]:
    try:
        return account_routes.get_forecast(account_id, access, as_of=day)
    except ApiError as error:
        return {"message": error.message}


def account_alerts(access: Access, account_id: str) -> list[AlertRecord]:
    """List the account's alerts, newest first."""
    records = list_alerts(access.context.state)
    return [record for record in records if record.alert.account_id == account_id]


def measure_names(access: Access, account_id: str) -> list[str]:
    """Return the measures that the override form offers for the account.

    These are the measures of the scorecard that scored the account on the latest
    stored date, none when it matched no scorecard, and those of every scorecard
    when its scorecard is not known.
    """
    found = account_routes.account_scorecard(access, account_id)
    if found is None:
        return overriding.measure_names(access.context.project.config.scorecards)
    _day, scorecard = found
    return [] if scorecard is None else overriding.measure_names([scorecard])


def alerts_view(access: Access, state: str | None) -> dict[str, Any]:
    """List the alerts the token may see, newest first, optionally of one state."""
    visible = access.visible_ids()
    records = list_alerts(access.context.state, state)
    if visible is not None:
        records = [item for item in records if item.alert.account_id in visible]
    return {"alerts": [alert_json(record) for record in records], "state": state}


def tasks_view(access: Access, state: str | None) -> dict[str, Any]:
    """List the tasks the token may see, by due date, optionally of one state."""
    found = list_tasks(access.context.state, task_state=state)
    keep = access.filter_ids(task.account_id for task in found)
    visible: list[Task] = [task for task, ok in zip(found, keep, strict=True) if ok]
    return {"tasks": jsonable(visible), "state": state}


def model_view(access: Access) -> dict[str, Any]:
    """The stored backtest and method comparison, and the scorecards in use."""
    project = access.context.project
    scorecard = result_routes.get_scorecard(access)
    return {
        "section": models_section(project),
        "scorecards": project.config.scorecards,
        "versions": scorecard["versions"],
        "tones": band_tones(project.config.bands),
        "bands": project.config.bands,
    }
