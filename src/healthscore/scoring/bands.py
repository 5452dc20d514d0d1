"""Score bands: the named ranges (at risk, stable, healthy) a score falls in."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from healthscore.config.models import BandConfig

#: Band of an account whose scorecard lacks data for too much of its weight.
INSUFFICIENT_DATA = "insufficient_data"
#: Band of an account that matches no scorecard.
UNSCORED = "unscored"


def round_half_up(scores: np.ndarray) -> np.ndarray:
    """Round scores to whole points, halves upward (40.5 becomes 41)."""
    return np.floor(np.asarray(scores, dtype="float64") + 0.5)


def assign_bands(scores: np.ndarray, bands: Sequence[BandConfig]) -> np.ndarray:
    """Return the band name of each score, None where the score is NaN.

    Bands have whole-number edges, so the band is chosen by the score rounded half up:
    with the default bands 40.4 is `at_risk` and 40.5 is `stable`. `bands` must cover
    0-100 without gaps, as `ProjectConfig` validates.
    """
    ordered = sorted(bands, key=lambda band: band.min)
    starts = np.array([band.min for band in ordered], dtype="float64")
    names = np.array([band.name for band in ordered] + [None], dtype=object)
    rounded = round_half_up(scores)
    missing = np.isnan(rounded)
    positions = (
        np.searchsorted(starts, np.where(missing, 0.0, rounded), side="right") - 1
    )
    positions = np.clip(positions, 0, len(ordered) - 1)
    positions[missing] = len(ordered)
    return names[positions]
