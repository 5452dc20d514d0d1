"""Page routes of the dashboard: portfolio, accounts, account, alerts, tasks, model."""

from __future__ import annotations

from typing import Annotated, Literal, get_args

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import HTMLResponse

from healthscore.service.auth import Access
from healthscore.service.dashboard.views import (
    account_view,
    accounts_view,
    alerts_view,
    model_view,
    portfolio_view,
    tasks_view,
)
from healthscore.service.dashboard.web import DashboardRoute, render, require_access
from healthscore.service.schemas import DateText
from healthscore.service.views import SortKey

router = APIRouter(route_class=DashboardRoute, include_in_schema=False)

PageAccess = Annotated[Access, Depends(require_access)]
AlertState = Literal["open", "acknowledged", "resolved"]
TaskState = Literal["open", "completed", "dismissed"]


@router.get("/", response_class=HTMLResponse)
def portfolio_page(request: Request, access: PageAccess) -> HTMLResponse:
    """Render the portfolio: bands now and over time, distribution, at-risk list."""
    return render(request, "portfolio.html", portfolio_view(access), access=access)


@router.get("/accounts", response_class=HTMLResponse)
def accounts_page(
    request: Request,
    access: PageAccess,
    sort: Annotated[SortKey, Query()] = "score",
    as_of: Annotated[DateText | None, Query()] = None,
    band: Annotated[str | None, Query()] = None,
) -> HTMLResponse:
    """Render the visible accounts as of a stored date in one sortable table.

    Without `as_of`, the table is the latest stored date's. `band` keeps the
    accounts of one band, validated as `GET /api/v1/accounts` validates it.
    """
    values = accounts_view(access, sort, as_of=as_of, band=band)
    values["sort_keys"] = get_args(SortKey)
    return render(request, "accounts.html", values, access=access)


@router.get("/accounts/{account_id:account}", response_class=HTMLResponse)
def account_page(
    request: Request,
    account_id: str,
    access: PageAccess,
    as_of: Annotated[DateText | None, Query()] = None,
) -> HTMLResponse:
    """Render one account: history, components, last change, forecast, work, notes.

    Without `as_of`, the page shows the latest date on which the account was scored.
    """
    values = account_view(access, account_id, as_of)
    return render(request, "account.html", values, access=access)


@router.get("/alerts", response_class=HTMLResponse)
def alerts_page(
    request: Request,
    access: PageAccess,
    state: Annotated[AlertState | None, Query()] = None,
) -> HTMLResponse:
    """Render the alerts, newest first, with acknowledge and resolve buttons."""
    values = alerts_view(access, state)
    values["states"] = get_args(AlertState)
    return render(request, "alerts.html", values, access=access)


@router.get("/tasks", response_class=HTMLResponse)
def tasks_page(
    request: Request,
    access: PageAccess,
    state: Annotated[TaskState | None, Query()] = "open",
) -> HTMLResponse:
    """Render the tasks by due date (open ones by default) with their actions."""
    values = tasks_view(access, state)
    values["states"] = get_args(TaskState)
    return render(request, "tasks.html", values, access=access)


@router.get("/model", response_class=HTMLResponse)
def model_page(request: Request, access: PageAccess) -> HTMLResponse:
    """Render the scorecards, the stored backtest and the method comparison."""
    return render(request, "model.html", model_view(access), access=access)
