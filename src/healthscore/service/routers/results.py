"""The scorecard configuration and the latest stored backtest."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter

from healthscore.models.persist import load_results
from healthscore.pipeline import scorecard_versions
from healthscore.service.auth import AccessDependency
from healthscore.service.context import API_PREFIX
from healthscore.service.errors import not_found

router = APIRouter(prefix=API_PREFIX, tags=["results"])


@router.get("/scorecard")
def get_scorecard(access: AccessDependency) -> dict[str, Any]:
    """Return the scorecards, their content versions and the bands in use."""
    config = access.context.project.config
    return {
        "scorecards": [
            card.model_dump(mode="json", by_alias=True) for card in config.scorecards
        ],
        "versions": scorecard_versions(access.context.project),
        "bands": [band.model_dump(mode="json") for band in config.bands],
    }


@router.get("/backtest")
def get_backtest(access: AccessDependency) -> dict[str, Any]:
    """Return the results of the latest `healthscore backtest` run."""
    stored = load_results(access.context.project, "backtest")
    if stored is None:
        raise not_found(
            "no backtest results are stored; run `healthscore backtest` for the "
            "project first"
        )
    return stored
