"""Settings of the score history: the trend rule."""

from __future__ import annotations

from pydantic import Field

from healthscore.config.models import StrictModel


class TrendConfig(StrictModel):
    """How a trend arrow is read from the score history.

    The arrow is `up` when the 30-day change is at least `threshold` points and the
    slope is positive, `down` when the change is at most `-threshold` and the slope
    is negative, and `flat` otherwise, so changes smaller than `threshold` never
    give an arrow.
    """

    threshold: float = Field(
        default=5.0,
        gt=0,
        description="Score points the 30-day change must reach for an up or down "
        "arrow.",
    )
    slope_snapshots: int = Field(
        default=4,
        ge=2,
        description="Number of latest snapshots the slope is fitted to.",
    )


class HistoryConfig(StrictModel):
    """Score history settings."""

    trend: TrendConfig = Field(
        default_factory=TrendConfig, description="Trend arrow rule."
    )
