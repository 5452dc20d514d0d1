"""Shadow scorecards: proposed scorecards scored beside the live ones, without alerts.

`validation.shadow` lists files that contain a `scorecards:` list, such as the one
`healthscore learn` writes. Every scoring run scores the same metric values with each
file's scorecards and stores the result in the snapshot table `shadow_scores`. Alert
rules and playbooks read only the live scores, so a shadow scorecard raises nothing.
Overrides are not applied to shadow scores, so they show the scorecard alone.
`healthscore validate` checks every file. A scoring run leaves out a file that has
become invalid since, with a warning, and still stores the live scores.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass, replace
from datetime import date
from pathlib import Path

import numpy as np
import pandas as pd
from pydantic import BaseModel, ConfigDict, ValidationError

from healthscore.config import ConfigError, ConfigIssue, Project
from healthscore.config.errors import KeyPath, describe_value, format_key, line_of

# The loader's YAML parser and model error messages, so that a shadow file's
# problems read like those of healthscore.yml.
from healthscore.config.loader import _parse_yaml, _pydantic_issues
from healthscore.config.models import ScorecardConfig
from healthscore.config.partial import Unparsed
from healthscore.config.references import reference_issues
from healthscore.models.backtest import FitContext, Prediction, Split
from healthscore.models.dataset import Observations
from healthscore.models.learned import weigh_card
from healthscore.outcomes import horizon_end
from healthscore.scoring import score_accounts
from healthscore.scoring.bands import assign_bands
from healthscore.store.snapshots import SnapshotStore

__all__ = [
    "SHADOW_COLUMNS",
    "SHADOW_TABLE",
    "ShadowMethod",
    "ShadowScorecards",
    "ShadowScores",
    "check_shadow_files",
    "load_shadow_file",
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
    learned_from: tuple[date, date] | None = None
    """First and last as-of date whose churn outcomes the weights were learned
    from, as the header of a `healthscore learn` proposal names them."""


#: The header line of a `healthscore learn` proposal that names its as-of dates.
_LEARNED_DATES = re.compile(
    r"^#.*learned from the churn outcomes of the as-of dates "
    r"(\d{4}-\d{2}-\d{2}) to (\d{4}-\d{2}-\d{2})",
    re.MULTILINE,
)


def load_shadow_scorecards(project: Project) -> list[ShadowScorecards]:
    """Read and check every file of `validation.shadow`.

    Raises
    ------
    ConfigError
        Listing every problem of every file, each with the file, line and key path.
    """
    loaded = []
    issues: list[ConfigIssue] = []
    for name in project.config.validation.shadow:
        try:
            loaded.append(load_shadow_file(project, name))
        except ConfigError as exc:
            issues += exc.issues
    if issues:
        raise ConfigError(issues)
    return loaded


def check_shadow_files(project: Project) -> list[ConfigIssue]:
    """Return the problems of every file of `validation.shadow`, [] when none."""
    try:
        load_shadow_scorecards(project)
    except ConfigError as exc:
        return exc.issues
    return []


def load_shadow_file(project: Project, name: str) -> ShadowScorecards:
    """Read and check the shadow file `name`, as listed in `validation.shadow`.

    The file's scorecards get the checks of the scorecards in healthscore.yml, and
    every name they use must be one that healthscore.yml defines.

    Raises
    ------
    ConfigError
        Listing every problem found: a missing or unreadable file, invalid YAML,
        no `scorecards` list, invalid scorecards or unknown names.
    """
    path = project.path(name)
    file = str(path)
    text = _read_shadow_text(path)
    data, lines, node_issues = _parse_yaml(text, file)
    shape = _scorecards_shape_problem(data)
    if shape is not None:
        where = ("scorecards",) if "scorecards" in data else ()
        raise ConfigError(
            [
                ConfigIssue(
                    file=file,
                    line=line_of(where, lines) or 1,
                    key=format_key(where),
                    message=shape,
                )
            ]
        )
    try:
        parsed = _ShadowFile.model_validate(data)
    except ValidationError as exc:
        invalid_dates = {issue.key for issue in node_issues}
        issues = node_issues + _pydantic_issues(exc, file, lines, data, invalid_dates)
        raise ConfigError(sorted(issues, key=lambda issue: issue.line or 0)) from None
    issues = node_issues + _reference_issues(project, parsed.scorecards, lines, file)
    if issues:
        raise ConfigError(sorted(issues, key=lambda issue: issue.line or 0))
    return ShadowScorecards(name, path, parsed.scorecards, _learned_dates(text))


class _ShadowFile(BaseModel):
    """The part of a shadow file that scoring reads; other keys are ignored, so a
    copy of healthscore.yml is a valid shadow file too."""

    model_config = ConfigDict(extra="ignore")

    scorecards: list[ScorecardConfig]


def _scorecards_shape_problem(data: dict[str, object]) -> str | None:
    """Describe why `data` has no list of scorecards, or return None."""
    if "scorecards" not in data:
        return (
            "no `scorecards:` list; a shadow file lists scorecards as healthscore.yml "
            "does, such as the file `healthscore learn` writes"
        )
    cards = data["scorecards"]
    if not isinstance(cards, list):
        return f"expected a list of scorecards, got {describe_value(cards)}"
    if not cards:
        return "the list is empty; add at least one scorecard"
    return None


def _read_shadow_text(path: Path) -> str:
    """Read a shadow file, raising ConfigError when it is missing or unreadable."""
    try:
        return path.read_text(encoding="utf-8")
    except FileNotFoundError:
        message = (
            "shadow scorecard file not found; fix validation.shadow in "
            "healthscore.yml or write the file with `healthscore learn`"
        )
    except UnicodeDecodeError as exc:
        message = f"the file is not UTF-8 text (byte {exc.start}); save it as UTF-8"
    except OSError as exc:
        message = f"cannot read the file: {exc.strerror or exc}"
    raise ConfigError([ConfigIssue(file=str(path), line=None, key="", message=message)])


def _reference_issues(
    project: Project,
    scorecards: list[ScorecardConfig],
    lines: dict[KeyPath, int],
    file: str,
) -> list[ConfigIssue]:
    """Check the names that `scorecards` use, with the checks of healthscore.yml.

    The checks run on the project with these scorecards in place of its own, and
    only the problems inside `scorecards` are kept, at the shadow file's lines.
    """
    config = project.config.model_copy(update={"scorecards": scorecards})
    candidate = Project(root=project.root, config=config)
    return [
        replace(issue, file=file)
        for issue in reference_issues(candidate, lines, Unparsed())
        if issue.key.startswith("scorecards[")
    ]


def _learned_dates(text: str) -> tuple[date, date] | None:
    """Read the as-of dates named in a `healthscore learn` header, if any."""
    found = _LEARNED_DATES.search(text)
    if found is None:
        return None
    return date.fromisoformat(found[1]), date.fromisoformat(found[2])


@dataclass
class ShadowScores:
    """The result of scoring the shadow files of one as-of date."""

    table: pd.DataFrame | None
    """SHADOW_COLUMNS, one row per scored shadow file and account; None when no
    file was scored."""
    skipped: list[str]
    """One message per file left out, naming the file and its problems."""


def score_shadow(
    project: Project,
    metrics: pd.DataFrame,
    accounts: pd.DataFrame,
    as_of: date,
) -> ShadowScores:
    """Score the accounts of `metrics` with every valid shadow file.

    A file that is invalid, or whose scorecards fail on this date's metrics, is
    left out with a logged warning, so a shadow file never stops the live scores.
    """
    frames = []
    skipped = []
    for name in project.config.validation.shadow:
        try:
            shadow = load_shadow_file(project, name)
            config = project.config.model_copy(update={"scorecards": shadow.scorecards})
            versions = {card.name: "shadow" for card in shadow.scorecards}
            result = score_accounts(config, metrics, accounts, [], as_of, versions)
        except ConfigError as exc:
            problems = "; ".join(str(issue) for issue in exc.issues)
            skipped.append(_skipped_message(name, as_of, problems))
            continue
        except ValueError as exc:  # ScoringInputError included
            skipped.append(_skipped_message(name, as_of, str(exc)))
            continue
        scores = result.scores[["account_id", "scorecard", "score", "band", "coverage"]]
        frames.append(scores.assign(shadow=shadow.name)[SHADOW_COLUMNS])
    for message in skipped:
        logger.warning("%s", message)
    if not frames:
        return ShadowScores(None, skipped)
    table = pd.concat(frames, ignore_index=True)
    table["shadow"] = table["shadow"].astype(str)
    logger.info("scored %d shadow file(s) as of %s", len(frames), as_of)
    return ShadowScores(table, skipped)


def _skipped_message(name: str, as_of: date, problems: str) -> str:
    return (
        f"shadow scorecard file {name} was not scored as of {as_of}: {problems}. "
        "The live scores are not affected; fix the file or remove it from "
        "validation.shadow, and check it with `healthscore validate`"
    )


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
    score only when the file changes weights alone (as `healthscore learn` proposes).
    A note names the changes that such recomputed scores leave out.

    When the file names the as-of dates its weights were learned from, the method
    is tested only on the splits whose outcomes those dates' outcomes do not
    include, if those splits have churned and retained rows. Otherwise a note states
    that its measures are optimistic.
    """

    explainable = True

    def __init__(self, shadow: ShadowScorecards, stored: pd.DataFrame) -> None:
        self.shadow = shadow
        self.key = f"shadow:{shadow.name}"
        self.stored = stored[stored["shadow"] == shadow.name] if len(stored) else stored

    def select_splits(
        self, project: Project, labelled: Observations, splits: list[Split]
    ) -> tuple[list[Split], list[str]]:
        """Return the splits to test on, leaving out those the weights saw."""
        if self.shadow.learned_from is None:
            return splits, []
        first, last = self.shadow.learned_from
        learned_end = horizon_end(project, last)
        as_of = labelled.frame["as_of"].dt.date.to_numpy()
        labels = labelled.frame["label"].to_numpy(dtype=float)

        # The outcome window of a test date runs from it to its horizon's end, so
        # it shares churn events with the learned dates' windows when they overlap.
        def seen(split: Split) -> bool:
            return any(
                day < learned_end and horizon_end(project, day) > first
                for day in set(as_of[split.test])
            )

        overlapping = [split for split in splits if seen(split)]
        if not overlapping:
            return splits, []
        learned = (
            "its weights were learned from the churn outcomes of the as-of dates "
            f"{first} to {last}"
        )
        seen_dates = _date_range(
            sorted({day for split in overlapping for day in as_of[split.test]})
        )
        unseen = [split for split in splits if not seen(split)]
        unseen_rows = [split.test for split in unseen]
        unseen_labels = labels[np.concatenate(unseen_rows)] if unseen else labels[:0]
        if 0 < np.nansum(unseen_labels) < len(unseen_labels):
            tested_dates = _date_range(
                sorted({day for split in unseen for day in as_of[split.test]})
            )
            return unseen, [
                f"{learned}, which include the outcomes of the test dates "
                f"{seen_dates}. It is tested only on the other test dates, "
                f"{tested_dates}."
            ]
        return splits, [
            f"{learned}, which include the outcomes of the test dates {seen_dates}, "
            "so its measures are optimistic. No other test date has both churned "
            "and retained rows to test it on instead."
        ]

    def fit_predict(
        self, train: pd.DataFrame, test: pd.DataFrame, context: FitContext
    ) -> Prediction:
        train_score, _ = self._scores(train, context)
        test_score, recomputed = self._scores(test, context)
        bands = assign_bands(test_score, context.project.config.bands)
        notes = []
        changes = _score_changes(
            self.shadow.scorecards, context.project.config.scorecards
        )
        if recomputed and changes:
            listed = " and ".join(changes)
            notes.append(
                "no stored shadow scores, so its scores were recomputed from the live "
                f"measure scores, which leave out its changes to {listed}. These "
                "figures are not its own."
            )
        return Prediction(
            100 - train_score, 100 - test_score, test_band=bands, notes=notes
        )

    def _scores(
        self, frame: pd.DataFrame, context: FitContext
    ) -> tuple[np.ndarray, bool]:
        """Return the scores of `frame` and whether any was recomputed."""
        weighed = np.full(len(frame), np.nan)
        for card in self.shadow.scorecards:
            routed = (frame["scorecard"] == card.name).to_numpy()
            if routed.any():
                weighed[routed] = weigh_card(card, frame[routed])
        if self.stored.empty:
            return weighed, len(frame) > 0
        keyed = self.stored.set_index(["as_of", "account_id"])["score"]
        index = pd.MultiIndex.from_frame(frame[["as_of", "account_id"]])
        stored = keyed.reindex(index).to_numpy(dtype=float)
        has_date = frame["as_of"].isin(self.stored["as_of"].unique()).to_numpy()
        return np.where(has_date, stored, weighed), not has_date.all()


def _date_range(days: list[date]) -> str:
    """Write sorted dates as one date, two dates or "first to last (n dates)"."""
    if len(days) == 1:
        return days[0].isoformat()
    if len(days) == 2:
        return f"{days[0]} and {days[1]}"
    return f"{days[0]} to {days[-1]} ({len(days)} dates)"


def _score_changes(
    shadow: list[ScorecardConfig], live: list[ScorecardConfig]
) -> list[str]:
    """Describe what the shadow scorecards change besides weights.

    Recomputing a shadow score from stored measure scores keeps the live routing and
    the live measure scores, so it is right only without these changes.
    """
    live_cards = {card.name: card for card in live}
    changes = []
    for card in shadow:
        current = live_cards.get(card.name)
        if current is None:
            changes.append(f"scorecard {card.name} (not a live scorecard)")
            continue
        if card.when != current.when:
            changes.append(f"the accounts of scorecard {card.name} (its `when`)")
        live_measures = {
            measure.measure_name: measure
            for component in current.components.values()
            for measure in component.measures
        }
        changed = []
        for component in card.components.values():
            for measure in component.measures:
                before = live_measures.get(measure.measure_name)
                if before is None:
                    changed.append(f"{measure.measure_name} (new)")
                    continue
                parts = [
                    label
                    for label, differs in (
                        ("metric", measure.metric != before.metric),
                        ("direction", measure.direction != before.direction),
                        ("normalization", measure.normalize != before.normalize),
                    )
                    if differs
                ]
                if parts:
                    changed.append(f"{measure.measure_name} ({', '.join(parts)})")
        if changed:
            changes.append(f"scorecard {card.name} measures {', '.join(changed)}")
    return changes
