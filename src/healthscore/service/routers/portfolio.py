"""Portfolio summary: accounts, scores, ARR and bands per group over time."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query

from healthscore.service.auth import AccessDependency
from healthscore.service.context import API_PREFIX
from healthscore.service.errors import ApiError
from healthscore.service.schemas import DateText
from healthscore.service.serialize import jsonable
from healthscore.service.views import PortfolioGroup, portfolio_table

router = APIRouter(prefix=API_PREFIX, tags=["portfolio"])


@router.get("/portfolio")
def get_portfolio(
    access: AccessDependency,
    by: Annotated[
        PortfolioGroup,
        Query(description="Group accounts by band, segment or owner (CSM book)."),
    ] = "band",
    start: Annotated[
        DateText | None,
        Query(alias="from", description="First as-of date included."),
    ] = None,
    end: Annotated[
        DateText | None, Query(alias="to", description="Last as-of date included.")
    ] = None,
) -> dict[str, Any]:
    """Summarize each stored date per group: accounts, mean score, ARR, band counts.

    With `by=owner` each group is one CSM's book of business. Accounts are grouped
    by their current segment and owner, because the accounts source keeps no earlier
    values.
    """
    if start is not None and end is not None and end < start:
        message = (
            f"the range ends ({end}) before it starts ({start}); "
            "give `to` on or after `from`"
        )
        raise ApiError(
            422, message, details=[{"location": "query.to", "message": message}]
        )
    table = portfolio_table(access, by, start, end)
    return {"by": by, "rows": jsonable(table)}
