"""Learned scorecard weights: a logistic regression on measure scores against churn.

`LearnedWeights` fits an L2-regularized logistic regression of the churn label on the
normalized measure scores (0-100, higher is healthier) of one scorecard. A coefficient
of zero or above means a higher score goes with as much or more churn, and such a
measure cannot get a positive weight in a health score. The measure with the largest
such coefficient is removed and the model fitted again, until every remaining
coefficient is negative. The weights are the
negated coefficients per score point, scaled to sum to 1.

`propose` turns the weights into scorecards: each measure keeps its normalization and
gets its learned weight, each component the sum of its measures' weights, so a
measure's share of the score equals its learned weight. Missing measures pass on their
weight as in any scorecard (see `healthscore.scoring.weights`).
"""

from __future__ import annotations

import difflib
import logging
import textwrap
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import yaml
from sklearn.base import BaseEstimator
from sklearn.linear_model import LogisticRegression

from healthscore.config import Project
from healthscore.config.models import ComponentConfig, ScorecardConfig
from healthscore.models.dataset import Observations
from healthscore.models.errors import InsufficientLabels
from healthscore.scoring.weights import Layout, weigh

__all__ = [
    "LearnedWeights",
    "Proposal",
    "card_measure_columns",
    "proposal_header",
    "propose",
    "scorecard_diff",
    "scorecards_yaml",
    "weigh_card",
    "write_proposal",
]

logger = logging.getLogger(__name__)

#: Decimal places of the weights written to a proposed scorecard, in percent.
WEIGHT_DECIMALS = 2


class LearnedWeights(BaseEstimator):
    """Non-negative weights of measure scores from a regularized logistic regression.

    Parameters
    ----------
    C : float
        Inverse L2 regularization strength on standardized measure scores, as in
        scikit-learn's LogisticRegression.
    min_churned : int
        Churned and retained rows each needed to fit.
    """

    def __init__(self, C: float = 1.0, min_churned: int = 10) -> None:
        self.C = C
        self.min_churned = min_churned

    def fit(self, X: pd.DataFrame, y: Any) -> LearnedWeights:
        """Fit on measure scores `X` (NaN for missing) and churn labels `y` (1/0).

        Missing scores are filled with the column's training mean for the fit only.

        Raises
        ------
        InsufficientLabels
            When churned or retained rows are fewer than `min_churned`.
        ValueError
            When no measure has a negative coefficient, so no weight can be learned.
        """
        labels = np.asarray(y, dtype=float)
        positives = int((labels == 1).sum())
        negatives = int((labels == 0).sum())
        if min(positives, negatives) < self.min_churned:
            raise InsufficientLabels(positives, negatives, self.min_churned, "train")
        self.feature_names_in_ = np.array(list(X.columns), dtype=object)
        means = X.mean()
        self.fill_values_ = means.fillna(50.0)
        filled = X.fillna(self.fill_values_)
        spread = filled.std(ddof=0)
        active = [column for column in X.columns if spread[column] > 0]
        # Measures without a score on any row, and measures with one score on every
        # row that has one, cannot be fitted. The rest of `removed_` have scores
        # that do not fall with churn.
        self.missing_ = [column for column in X.columns if X[column].isna().all()]
        self.constant_ = [
            column
            for column in X.columns
            if column not in active and column not in self.missing_
        ]
        self.removed_ = [column for column in X.columns if column not in active]
        coefficients = pd.Series(dtype=float)
        while active:
            matrix = (filled[active] - filled[active].mean()) / spread[active]
            model = LogisticRegression(C=self.C, max_iter=1000)
            model.fit(matrix.to_numpy(), labels)
            coefficients = pd.Series(model.coef_[0] / spread[active].to_numpy(), active)
            worst = coefficients.idxmax()
            if coefficients[worst] < 0:
                break
            # A higher score goes with more churn: no non-negative weight fits it.
            active.remove(worst)
            self.removed_.append(worst)
            coefficients = pd.Series(dtype=float)
        if coefficients.empty:
            raise ValueError(
                "no measure's score is lower for churned accounts than for retained "
                "ones once the others are accounted for, so no weights can be learned"
            )
        raw = -coefficients
        weights = pd.Series(0.0, index=list(X.columns))
        weights[raw.index] = raw / raw.sum()
        self.weights_ = weights
        self.coefficients_ = coefficients
        return self


@dataclass
class Proposal:
    """Learned weights of every scorecard, and the proposed scorecards."""

    scorecards: list[ScorecardConfig]
    weights: pd.DataFrame
    """scorecard, component, measure, current (share), proposed (share), change."""
    dates: list[date]
    """As-of dates with a known churn outcome, which the weights were learned from."""
    notes: list[str] = field(default_factory=list)
    learned: list[str] = field(default_factory=list)
    """Names of the scorecards whose weights were learned. The others keep their
    configured weights, and `notes` gives the reason."""

    @property
    def headline(self) -> str:
        """Sentence that names the scorecards with learned weights."""
        days = f"{self.dates[0]} to {self.dates[-1]}" if self.dates else "-"
        kept = [card.name for card in self.scorecards if card.name not in self.learned]
        if not self.learned:
            return (
                "No weights were learned, so every scorecard keeps its configured "
                f"weights (as-of dates {days})."
            )
        text = (
            f"Weights learned from the churn outcomes of the as-of dates {days}, for "
            f"{', '.join(self.learned)}."
        )
        if kept:
            verb = "keeps its" if len(kept) == 1 else "keep their"
            text += f" {', '.join(kept)} {verb} configured weights."
        return text


def card_measure_columns(card: ScorecardConfig) -> list[str]:
    """Observation columns of the scorecard's measures, in layout order."""
    return [f"measure:{name}" for name in Layout.of(card).measure_names]


def weigh_card(card: ScorecardConfig, frame: pd.DataFrame) -> np.ndarray:
    """Score the rows of `frame` under `card` from their stored measure scores.

    A measure missing from the frame counts as missing for every row.
    """
    layout = Layout.of(card)
    columns = [f"measure:{name}" for name in layout.measure_names]
    matrix = (
        np.column_stack(
            [
                frame[column].to_numpy(dtype=float)
                if column in frame.columns
                else np.full(len(frame), np.nan)
                for column in columns
            ]
        )
        if columns
        else np.empty((len(frame), 0))
    )
    return weigh(layout, matrix).score


def propose(
    project: Project,
    observations: Observations,
    *,
    C: float = 1.0,
) -> Proposal:
    """Learn weights for every scorecard from the labelled observations.

    A scorecard with too few labelled rows, or without a measure that separates
    churned from retained accounts, keeps its current weights, and a note gives the
    reason.
    """
    labelled_observations = observations.labelled()
    labelled = labelled_observations.frame
    minimum = project.config.validation.min_churned
    cards = []
    rows = []
    notes = []
    learned: list[str] = []
    for card in project.config.scorecards:
        routed = labelled[labelled["scorecard"] == card.name]
        columns = card_measure_columns(card)
        current = pd.Series(Layout.of(card).measure_shares, index=columns)
        try:
            model = LearnedWeights(C=C, min_churned=minimum).fit(
                routed.reindex(columns=columns), routed["label"]
            )
        except InsufficientLabels as exc:
            reason = (
                exc.with_action("learn scorecard weights")
                .with_source(observations.labels.source)
                .with_setting("validation.min_churned")
            )
            notes.append(f"scorecard {card.name} keeps its weights: {reason}")
            cards.append(card)
            proposed = current
        except ValueError as exc:
            notes.append(f"scorecard {card.name} keeps its weights: {exc}")
            cards.append(card)
            proposed = current
        else:
            new_card = proposed_card(card, model.weights_)
            cards.append(new_card)
            learned.append(card.name)
            proposed = pd.Series(0.0, index=columns)
            shares = Layout.of(new_card)
            proposed[card_measure_columns(new_card)] = shares.measure_shares
            notes.extend(_zero_weight_notes(card.name, model))
        layout = Layout.of(card)
        for measure, component, column in zip(
            layout.measure_names,
            [layout.component_names[i] for i in layout.measure_component],
            columns,
            strict=True,
        ):
            rows.append(
                {
                    "scorecard": card.name,
                    "component": component,
                    "measure": measure,
                    "current": float(current[column]),
                    "proposed": float(proposed[column]),
                }
            )
    weights = pd.DataFrame(
        rows, columns=["scorecard", "component", "measure", "current", "proposed"]
    )
    weights["change"] = weights["proposed"] - weights["current"]
    return Proposal(cards, weights, list(labelled_observations.dates), notes, learned)


def _zero_weight_notes(card: str, model: LearnedWeights) -> list[str]:
    """Return why each measure that `model` removed gets the weight 0."""
    unfitted = set(model.missing_) | set(model.constant_)
    falling = [name for name in model.removed_ if name not in unfitted]
    reasons = [
        (model.missing_, "whose scores are missing on every labelled row"),
        (model.constant_, "whose scores do not vary across the labelled rows"),
        (falling, "whose scores do not fall with churn once the other measures are "
         "accounted for"),
    ]  # fmt: skip
    notes = []
    for names, reason in reasons:
        if names:
            listed = ", ".join(name.removeprefix("measure:") for name in names)
            notes.append(f"scorecard {card}: weight 0 for {listed}, {reason}")
    return notes


def proposed_card(card: ScorecardConfig, weights: pd.Series) -> ScorecardConfig:
    """Return `card` with learned measure weights (shares summing to 1).

    Weights are written in percent with WEIGHT_DECIMALS decimals. Measures whose
    rounded weight is 0 are removed, and so are components left without measures.
    The card keeps its name, condition and `version` label. The content hash stored
    with each score still tells the new weights apart from the old ones.
    """
    components = {}
    for name, component in card.components.items():
        measures = []
        for measure in component.measures:
            share = float(weights.get(f"measure:{measure.measure_name}", 0.0))
            percent = round(100 * share, WEIGHT_DECIMALS)
            if percent > 0:
                measures.append(measure.model_copy(update={"weight": percent}))
        if measures:
            total = round(sum(measure.weight for measure in measures), WEIGHT_DECIMALS)
            components[name] = ComponentConfig(weight=total, measures=measures)
    return card.model_copy(update={"components": components})


def scorecards_yaml(cards: list[ScorecardConfig]) -> str:
    """Return the `scorecards:` list of `cards` as YAML."""
    data = [
        card.model_dump(mode="json", by_alias=True, exclude_defaults=True)
        for card in cards
    ]
    text: str = yaml.safe_dump({"scorecards": data}, sort_keys=False, width=88)
    return text


def scorecard_diff(
    current: list[ScorecardConfig], proposed: list[ScorecardConfig]
) -> str:
    """Return a unified diff from the current scorecards to the proposed ones."""
    before = scorecards_yaml(current).splitlines(keepends=True)
    after = scorecards_yaml(proposed).splitlines(keepends=True)
    return "".join(
        difflib.unified_diff(before, after, "current scorecards", "proposed scorecards")
    )


def proposal_header(project: Project, proposal: Proposal) -> list[str]:
    """Return the comment lines that head the proposal file of `project`.

    They state whether any weight was learned, with the reason each scorecard kept
    its configured weights, and how to use the file.
    """
    lines = [
        "Scorecards proposed by `healthscore learn` for project "
        f"{project.config.name}.",
        # One line, because shadow scoring reads the dates back from it.
        proposal.headline,
    ]
    for note in proposal.notes:
        lines.extend(
            textwrap.wrap(note, width=86, initial_indent="- ", subsequent_indent="  ")
        )
    if proposal.learned:
        lines += [
            "Review the diff. List this file under validation.shadow to score it "
            "beside",
            "the live scorecards, or copy its scorecards into healthscore.yml to "
            "adopt it.",
        ]
    return lines


def write_proposal(proposal: Proposal, path: Path, header: list[str]) -> Path:
    """Write the proposed scorecards to `path`, with `header` lines as comments.

    The text is written to a temporary file beside `path`, which then replaces
    `path`, so no reader sees half a file. The folder of `path` must exist, and it
    is not created.

    Raises
    ------
    OSError
        When the file cannot be written, such as when `path` is a folder. The
        temporary file is removed first, as on any other failure.
    """
    text = "".join(f"# {line}\n" for line in header)
    text += scorecards_yaml(proposal.scorecards)
    temporary = path.with_name(f".{path.name}.tmp")
    try:
        temporary.write_text(text, encoding="utf-8")
        temporary.replace(path)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise
    logger.info("wrote proposed scorecards to %s", path)
    return path
