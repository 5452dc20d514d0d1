"""CSV exports of the accounts, score history, tasks and alerts a token can read."""

from __future__ import annotations

import json
from dataclasses import fields
from typing import Annotated, Any

import pandas as pd
from fastapi import APIRouter, Query
from fastapi.responses import Response

from healthscore.monitoring.outbox import list_alerts
from healthscore.monitoring.playbooks import Task, list_tasks
from healthscore.service.auth import AccessDependency
from healthscore.service.context import API_PREFIX
from healthscore.service.csv_export import csv_response
from healthscore.service.routers.accounts import check_band
from healthscore.service.schemas import DateText
from healthscore.service.serialize import alert_json, jsonable
from healthscore.service.views import (
    SortKey,
    account_table,
    filter_accounts,
    sort_accounts,
)

router = APIRouter(prefix=f"{API_PREFIX}/exports", tags=["exports"])

_CSV: dict[int | str, dict[str, Any]] = {
    200: {"content": {"text/csv": {}}, "description": "A CSV file."}
}


@router.get("/accounts.csv", response_class=Response, responses=_CSV)
def export_accounts(
    access: AccessDependency,
    as_of: Annotated[DateText | None, Query(description="Stored as-of date.")] = None,
    band: Annotated[str | None, Query(description="Only this band.")] = None,
    segment: Annotated[str | None, Query(description="Only this segment.")] = None,
    owner: Annotated[str | None, Query(description="Only this owner.")] = None,
    sort: Annotated[SortKey, Query(description="Sort column.")] = "score",
) -> Response:
    """Export the accounts list (every row, no pages) as CSV.

    An unknown band gives 422, as in `GET /api/v1/accounts`.
    """
    if band is not None:
        check_band(access, band)
    day = access.context.data.resolve_as_of(as_of)
    table = filter_accounts(
        account_table(access, day), band=band, segment=segment, owner=owner
    )
    return csv_response(sort_accounts(table, sort), f"accounts-{day.isoformat()}.csv")


@router.get("/history.csv", response_class=Response, responses=_CSV)
def export_history(access: AccessDependency) -> Response:
    """Export the score and band of every account on every stored date as CSV."""
    history = access.context.data.history()
    history = history[access.filter_ids(history["account_id"].astype(str))]
    columns = ["as_of", "account_id", "score", "band", "scorecard"]
    return csv_response(history[columns], "history.csv")


@router.get("/tasks.csv", response_class=Response, responses=_CSV)
def export_tasks(access: AccessDependency) -> Response:
    """Export every task the token can read, in every state, as CSV."""
    found = list_tasks(access.context.state)
    keep = access.filter_ids(task.account_id for task in found)
    rows = jsonable([task for task, ok in zip(found, keep, strict=True) if ok])
    frame = pd.DataFrame(rows, columns=[field.name for field in fields(Task)])
    return csv_response(frame, "tasks.csv")


@router.get("/alerts.csv", response_class=Response, responses=_CSV)
def export_alerts(access: AccessDependency) -> Response:
    """Export every alert the token can read as CSV, without delivery details."""
    records = list_alerts(access.context.state)
    keep = access.filter_ids(item.alert.account_id for item in records)
    rows = [alert_json(item) for item, ok in zip(records, keep, strict=True) if ok]
    for row in rows:
        row.pop("deliveries", None)
        row["details"] = json.dumps(row.get("details"), sort_keys=True)
    return csv_response(pd.DataFrame(rows), "alerts.csv")
