"""Shadow scorecards: proposed scorecards scored beside the live ones, without alerts.

`validation.shadow` lists files that contain a `scorecards:` list, such as the one
`healthscore learn` writes. Every scoring run scores the same metric values with each
file's scorecards and stores the result in the snapshot table `shadow_scores`. Alert
rules and playbooks read only the live scores, so a shadow scorecard raises nothing.
Overrides are not applied to shadow scores, so they show the scorecard alone.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import date
from pathlib import Path

import numpy as np
import pandas as pd
import yaml
from pydantic import TypeAdapter, ValidationError

from healthscore.config import Project
from healthscore.config.models import ScorecardConfig
from healthscore.models.backtest import FitContext, Prediction
from healthscore.models.learned import weigh_card
from healthscore.scoring import score_accounts
from healthscore.scoring.bands import assign_bands
from healthscore.store.snapshots import SnapshotStore

__all__ = [
    "SHADOW_COLUMNS",
    "SHADOW_TABLE",
    "ShadowMethod",
    "ShadowScorecards",
    "load_shadow_scorecards",
    "read_shadow_scores",
    "score_shadow",
]

logger = logging.getLogger(__name__)

#: Snapshot table of the shadow scores.
SHADOW_TABLE = "shadow_scores"

#: Columns of the shadow scores table.
SHADOW_COLUMNS = ["shadow", "account_id", "scorecard", "score", "band", "coverage"]


@dataclass(frozen=True)
class ShadowScorecards:
    """The scorecards of one shadow file."""

    name: str
    """The file's path as written in `validation.shadow`."""
    path: Path
    scorecards: list[ScorecardConfig]


def load_shadow_scorecards(project: Project) -> list[ShadowScorecards]:
    """Read and check every file of `validation.shadow`.

    Raises
    ------
    ValueError
        When a file is missing, is not YAML, has no `scorecards` list, or its
        scorecards are invalid or use metrics the project does not define.
    """
    loaded = []
    for name in project.config.validation.shadow:
        path = project.path(name)
        loaded.append(ShadowScorecards(name, path, _read_scorecards(project, path)))
    return loaded


def _read_scorecards(project: Project, path: Path) -> list[ScorecardConfig]:
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ValueError(
            f"shadow scorecard file {path} not found; fix validation.shadow in "
            "healthscore.yml or write the file with `healthscore learn`"
        ) from None
    except yaml.YAMLError as exc:
        raise ValueError(
            f"shadow scorecard file {path} is not valid YAML: {exc}"
        ) from exc
    if not isinstance(data, dict) or not isinstance(data.get("scorecards"), list):
        raise ValueError(
            f"shadow scorecard file {path} must contain a `scorecards:` list, as "
            "healthscore.yml does"
        )
    try:
        cards = TypeAdapter(list[ScorecardConfig]).validate_python(data["scorecards"])
    except ValidationError as exc:
        raise ValueError(f"invalid scorecards in {path}: {exc}") from exc
    if not cards:
        raise ValueError(f"shadow scorecard file {path} lists no scorecard")
    known = set(project.config.metrics)
    for card in cards:
        for component in card.components.values():
            for measure in component.measures:
                if measure.metric not in known:
                    raise ValueError(
                        f"scorecard {card.name!r} in {path} uses metric "
                        f"{measure.metric!r}, which healthscore.yml does not define"
                    )
    return cards


def score_shadow(
    project: Project,
    metrics: pd.DataFrame,
    accounts: pd.DataFrame,
    as_of: date,
) -> pd.DataFrame | None:
    """Score the accounts of `metrics` with every shadow file (None without any).

    Returns a frame with SHADOW_COLUMNS, one row per shadow file and account.
    """
    shadows = load_shadow_scorecards(project)
    if not shadows:
        return None
    frames = []
    for shadow in shadows:
        config = project.config.model_copy(update={"scorecards": shadow.scorecards})
        versions = {card.name: "shadow" for card in shadow.scorecards}
        result = score_accounts(config, metrics, accounts, [], as_of, versions)
        scores = result.scores[["account_id", "scorecard", "score", "band", "coverage"]]
        frames.append(scores.assign(shadow=shadow.name)[SHADOW_COLUMNS])
    table = pd.concat(frames, ignore_index=True)
    table["shadow"] = table["shadow"].astype(str)
    logger.info("scored %d shadow file(s) as of %s", len(shadows), as_of)
    return table


def read_shadow_scores(store: SnapshotStore, dates: list[date]) -> pd.DataFrame:
    """Read the stored shadow scores of the dates that have them."""
    having = [
        day for day in dates if store.exists(day) and SHADOW_TABLE in store.tables(day)
    ]
    if not having:
        return pd.DataFrame(columns=["as_of", *SHADOW_COLUMNS])
    frame = store.read_many(SHADOW_TABLE, having)
    frame["as_of"] = pd.to_datetime(frame["as_of"]).astype("datetime64[ns]")
    frame["account_id"] = frame["account_id"].astype(str)
    return frame


class ShadowMethod:
    """A shadow file as a backtest method.

    Scores come from the stored `shadow_scores` where a date has them, else from the
    stored measure scores weighed with the file's scorecards, which gives the same
    score when the file changes only weights (as `healthscore learn` proposes).
    """

    explainable = True

    def __init__(self, shadow: ShadowScorecards, stored: pd.DataFrame) -> None:
        self.shadow = shadow
        self.key = f"shadow:{shadow.name}"
        self.stored = stored[stored["shadow"] == shadow.name] if len(stored) else stored

    def fit_predict(
        self, train: pd.DataFrame, test: pd.DataFrame, context: FitContext
    ) -> Prediction:
        train_score, _ = self._scores(train, context)
        test_score, notes = self._scores(test, context)
        bands = assign_bands(test_score, context.project.config.bands)
        return Prediction(
            100 - train_score, 100 - test_score, test_band=bands, notes=notes
        )

    def _scores(
        self, frame: pd.DataFrame, context: FitContext
    ) -> tuple[np.ndarray, list[str]]:
        weighed = np.full(len(frame), np.nan)
        for card in self.shadow.scorecards:
            routed = (frame["scorecard"] == card.name).to_numpy()
            if routed.any():
                weighed[routed] = weigh_card(card, frame[routed])
        if self.stored.empty:
            return weighed, []
        keyed = self.stored.set_index(["as_of", "account_id"])["score"]
        index = pd.MultiIndex.from_frame(frame[["as_of", "account_id"]])
        stored = keyed.reindex(index).to_numpy(dtype=float)
        has_date = frame["as_of"].isin(self.stored["as_of"].unique()).to_numpy()
        return np.where(has_date, stored, weighed), []
