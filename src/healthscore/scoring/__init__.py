"""Scoring: normalization of metric values, scorecards, overrides and explanations.

`score_accounts` turns a metrics table into scores, component scores and measure
contributions. `explain_account`, `explain_change` and `top_drivers` read those tables
back to show why a score is what it is.
"""

from healthscore.scoring.bands import (
    INSUFFICIENT_DATA,
    UNSCORED,
    assign_bands,
    round_half_up,
)
from healthscore.scoring.explain import (
    MEASURE,
    OVERRIDE,
    change_total,
    explain_account,
    explain_change,
    top_drivers,
)
from healthscore.scoring.normalize import NormalizationError, normalize
from healthscore.scoring.overriding import IgnoredOverride
from healthscore.scoring.routing import ScoringInputError
from healthscore.scoring.scorecard import ScoreResult, score_accounts
from healthscore.scoring.tables import (
    COMPONENT_COLUMNS,
    MEASURE_COLUMNS,
    SCORE_COLUMNS,
)

__all__ = [
    "COMPONENT_COLUMNS",
    "INSUFFICIENT_DATA",
    "MEASURE",
    "MEASURE_COLUMNS",
    "OVERRIDE",
    "SCORE_COLUMNS",
    "UNSCORED",
    "IgnoredOverride",
    "NormalizationError",
    "ScoreResult",
    "ScoringInputError",
    "assign_bands",
    "change_total",
    "explain_account",
    "explain_change",
    "normalize",
    "round_half_up",
    "score_accounts",
    "top_drivers",
]
