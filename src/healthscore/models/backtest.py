"""Backtests: methods fitted on earlier dates and scored on later ones.

`make_splits` builds the splits. With several labelled as-of dates, each later date is
a test date, and the training dates are the earlier ones whose outcome horizon has
ended by the test date, so no training label comes from the test date's future. With
one labelled date (a data set that is a single snapshot), the rows are split into
stratified folds instead: `validation.folds` of them, or as many as the rarer class
has rows when it has fewer. With fewer than 2 rows of either class there are no
folds, and only the methods whose risk uses no label are measured, on all rows.
Labels from an accounts column (`validation.label_column`) are the same at every
date, so with several dates only the latest one is split into folds.

`run_methods` fits each method on every split's training rows, scores the test rows,
and measures the pooled test predictions (`MethodResult`).
"""

from __future__ import annotations

import logging
import math
import re
import time
import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import date
from typing import Any, Protocol

import numpy as np
import pandas as pd
from sklearn.model_selection import StratifiedKFold

from healthscore.config import Project
from healthscore.config.models import BandConfig
from healthscore.models.dataset import Observations
from healthscore.models.errors import InsufficientLabels
from healthscore.models.evaluation import (
    BandRate,
    ScoreCalibrator,
    band_precision_recall,
    churn_by_band,
    expected_calibration_error,
    lead_times,
    lift,
    reliability_curve,
    roc_auc,
)
from healthscore.models.labels import LeadTimeNote
from healthscore.outcomes import horizon_end

__all__ = [
    "FitContext",
    "Method",
    "MethodResult",
    "Prediction",
    "SharedNote",
    "Split",
    "compact_splits",
    "grouped_notes",
    "make_splits",
    "note_unequal_rows",
    "run_methods",
]

logger = logging.getLogger(__name__)

#: Share of rows in the riskiest part that lift is measured on.
TOP_FRACTION = 0.1

#: Minimum folds of a cross-validation: one part to fit on and one to test on.
MIN_FOLDS = 2

#: Calibration name of a split whose Platt curve fell as the risk rose, so that
#: ScoreCalibrator gave every test row the churn rate of the calibration rows.
CONSTANT_CALIBRATION = "constant churn rate"

#: Keys of the methods whose risk uses no churn label: the red-flag checklist and
#: the configured scorecards. Shadow scorecards (keys "shadow:<file>") use none
#: either. Only these are measured when the labels are too few for any fold.
LABEL_FREE_METHODS = frozenset({"rules", "weighted"})


class SharedNote(str):
    """A method note that several methods may share, such as one about their test
    rows. The CLI prints each distinct one once, after the names of its methods."""


@dataclass
class Split:
    """Training and test rows of one split, as positions in the labelled frame."""

    name: str
    train: np.ndarray
    test: np.ndarray
    calibrate: np.ndarray
    """Training rows that calibrate probabilities: the latest training date when it
    has enough churned and retained rows, else all training rows."""
    held_out: bool = True
    """False when the test rows are the training rows. No method may then fit on
    them, so only label-free methods are measured, and without a calibration."""


@dataclass
class FitContext:
    """Inputs of a method besides the training rows."""

    project: Project
    observations: Observations
    min_churned: int
    split: Split
    random_state: int = 0


@dataclass
class Prediction:
    """A method's output for the training and test rows of one split."""

    train_risk: np.ndarray
    """Risk of each training row, higher for more likely churn. It calibrates the
    probabilities when the method gives none."""
    test_risk: np.ndarray
    test_probability: np.ndarray | None = None
    """Churn probability of the test rows, when the method makes its own."""
    test_band: np.ndarray | None = None
    """Band of each test row, for methods that produce a 0-100 score."""
    notes: list[str] = field(default_factory=list)


class Method(Protocol):
    """A scoring method that can be fitted on a split's training rows."""

    key: str
    explainable: bool

    def fit_predict(
        self, train: pd.DataFrame, test: pd.DataFrame, context: FitContext
    ) -> Prediction: ...


class SplitSelector(Protocol):
    """A method that tests on only some of the splits, such as a shadow scorecard
    whose weights were learned from the outcomes of some test dates."""

    def select_splits(
        self, project: Project, labelled: Observations, splits: list[Split]
    ) -> tuple[list[Split], list[str]]:
        """Return the splits to test on and notes that name them and the reason."""
        ...


@dataclass
class MethodResult:
    """Pooled test predictions of one method and their measures."""

    method: str
    explainable: bool
    roc_auc: float = math.nan
    lift_top_decile: float = math.nan
    ece: float = math.nan
    lead_time_days: float = math.nan
    flagged_churned_share: float = math.nan
    precision_at_risk: float = math.nan
    recall_at_risk: float = math.nan
    fit_seconds: float = 0.0
    rows: int = 0
    churned: int = 0
    splits: list[dict[str, Any]] = field(default_factory=list)
    bands: list[BandRate] = field(default_factory=list)
    band_falls: bool | None = None
    reliability: pd.DataFrame = field(default_factory=pd.DataFrame)
    calibration: str = ""
    notes: list[str] = field(default_factory=list)
    predictions: pd.DataFrame = field(default_factory=pd.DataFrame)
    split_names: list[str] = field(default_factory=list)

    def grouped_notes(self) -> list[str]:
        """Return the notes, with those that differ only in their split merged."""
        return grouped_notes(self.notes, self.split_names)

    @property
    def mean_split_auc(self) -> float:
        """Mean of the ROC AUC of each split's test rows, NaN without one."""
        values = [
            item["roc_auc"] for item in self.splits if item["roc_auc"] is not None
        ]
        return float(np.mean(values)) if values else math.nan

    @property
    def mean_split_count(self) -> int:
        """Number of splits whose ROC AUC enters `mean_split_auc`."""
        return sum(1 for item in self.splits if item["roc_auc"] is not None)

    def to_dict(self) -> dict[str, Any]:
        """Return the measures as JSON types, with None in place of NaN."""
        return {
            "method": self.method,
            "roc_auc": _number(self.roc_auc),
            "roc_auc_mean_split": _number(self.mean_split_auc),
            "roc_auc_mean_split_count": self.mean_split_count,
            "split_count": len(self.split_names),
            "lift_top_decile": _number(self.lift_top_decile),
            "ece": _number(self.ece),
            "lead_time_days": _number(self.lead_time_days),
            "flagged_churned_share": _number(self.flagged_churned_share),
            "precision_at_risk": _number(self.precision_at_risk),
            "recall_at_risk": _number(self.recall_at_risk),
            # A method skipped on every split has no scores to time or explain.
            "fit_seconds": round(self.fit_seconds, 3) if self.rows else None,
            "explainable": self.explainable if self.rows else None,
            "rows": self.rows,
            "churned": self.churned,
            "calibration": self.calibration,
            "band_falls": self.band_falls,
            "bands": [
                {
                    "band": rate.band,
                    "rows": rate.rows,
                    "churned": rate.churned,
                    "rate": _number(rate.rate),
                }
                for rate in self.bands
            ],
            "reliability": [
                {key: _number(value) for key, value in row.items()}
                for row in self.reliability.to_dict("records")
            ],
            "splits": self.splits,
            "note": "; ".join(self.grouped_notes()),
        }


#: A count inside a note: digits, maybe with thousands separators, that are not part
#: of a date (2020-03-01), a decimal (0.35) or a word (30d).
_COUNT = re.compile(r"(?<![\w.\-])\d[\d,]*(?![\w\-]|\.\d)")

#: Runs of at least this many consecutive splits are written as "first to last".
_MIN_RUN = 3


def grouped_notes(notes: list[str], split_names: Sequence[str]) -> list[str]:
    """Merge notes that differ only in their split prefix ("2020-03-01: ...").

    A note without a split prefix is kept once, as the object it was given, so a
    `LeadTimeNote` keeps its type.

    Notes whose texts differ only in counts, such as "found 0 churned and 9
    retained" and "found 1 churned and 18 retained", are merged too, and each count
    that varies becomes a range ("found 0 to 1 churned and 9 to 18 retained"). The
    splits of a merged note are listed compactly, as "2020-03-01 to 2020-05-01
    (9 dates)".
    """
    groups: dict[str, list[tuple[str, list[str]]]] = {}
    plain: dict[str, None] = {}
    order: list[tuple[bool, str]] = []
    for line in notes:
        prefix, _, text = line.partition(": ")
        if text and prefix in split_names:
            template = _COUNT.sub("\0", text)
            if template not in groups:
                groups[template] = []
                order.append((True, template))
            groups[template].append((prefix, _COUNT.findall(text)))
        elif line not in plain:
            plain[line] = None
            order.append((False, line))
    merged = []
    for is_group, key in order:
        if not is_group:
            merged.append(key)
            continue
        members = groups[key]
        pieces = key.split("\0")
        text = pieces[0]
        for position, piece in enumerate(pieces[1:]):
            text += _count_range([numbers[position] for _, numbers in members]) + piece
        where = compact_splits([name for name, _ in members], split_names)
        merged.append(f"{where}: {text}")
    return merged


def _count_range(values: list[str]) -> str:
    """Return the one value of `values`, or "lowest to highest" when they differ."""
    ordered = sorted(set(values), key=lambda value: int(value.replace(",", "")))
    if len(ordered) == 1:
        return ordered[0]
    return f"{ordered[0]} to {ordered[-1]}"


def compact_splits(names: Sequence[str], split_names: Sequence[str]) -> str:
    """List split names, writing runs of consecutive splits as "first to last".

    More than one split gets its count, such as "(14 dates)", or "(10 splits)" when
    the splits are folds rather than dates.
    """
    positions = sorted({split_names.index(name) for name in names})
    runs: list[list[int]] = []
    for position in positions:
        if runs and position == runs[-1][-1] + 1:
            runs[-1].append(position)
        else:
            runs.append([position])
    parts = []
    for run in runs:
        if len(run) >= _MIN_RUN:
            parts.append(f"{split_names[run[0]]} to {split_names[run[-1]]}")
        else:
            parts.extend(split_names[position] for position in run)
    listed = ", ".join(parts)
    if len(positions) == 1:
        return listed
    noun = "dates" if all(_is_date(split_names[i]) for i in positions) else "splits"
    return f"{listed} ({len(positions)} {noun})"


def _is_date(text: str) -> bool:
    try:
        date.fromisoformat(text)
    except ValueError:
        return False
    return True


def make_splits(
    project: Project,
    labelled: Observations,
    min_churned: int,
    folds: int = 10,
    random_state: int = 0,
) -> tuple[list[Split], str, list[str]]:
    """Build the splits of the labelled observations and name the scheme.

    Returns the splits, a sentence that describes them, and notes for every method's
    results, such as why one-date data has fewer folds than `folds`.
    """
    frame = labelled.frame
    dates = sorted({stamp.date() for stamp in frame["as_of"]})
    if len(dates) == 1:
        return _fold_splits(labelled, folds, random_state)
    if labelled.labels.source == "column":
        return _latest_date_folds(labelled, dates, folds, random_state)
    as_of = frame["as_of"].dt.date.to_numpy()
    splits = []
    for test_day in dates[1:]:
        train_days = [day for day in dates if horizon_end(project, day) <= test_day]
        if not train_days:
            continue
        train = np.isin(as_of, train_days)
        test = as_of == test_day
        latest = as_of == max(train_days)
        labels = frame["label"].to_numpy()
        churned = int(labels[latest].sum())
        retained = int(latest.sum()) - churned
        calibrate = latest if min(churned, retained) >= min_churned else train
        splits.append(
            Split(
                test_day.isoformat(),
                np.flatnonzero(train),
                np.flatnonzero(test),
                np.flatnonzero(calibrate),
            )
        )
    first = splits[0].name if splits else "-"
    last = splits[-1].name if splits else "-"
    description = (
        f"time-ordered: {len(splits)} test dates from {first} to {last}, each trained "
        "on the earlier dates whose outcome horizon had ended by the test date"
    )
    return splits, description, []


def _latest_date_folds(
    labelled: Observations, dates: list[date], folds: int, random_state: int
) -> tuple[list[Split], str, list[str]]:
    """Cross-validate the latest date of labels that come from an accounts column.

    Such a label is the same at every as-of date, so a split that trains on an
    earlier date and tests on a later one tests accounts whose label it was fitted
    on. The folds therefore hold only the latest date's rows, as positions in the
    whole labelled frame.
    """
    latest = dates[-1]
    as_of = labelled.frame["as_of"].dt.date.to_numpy()
    positions = np.flatnonzero(as_of == latest)
    splits, description, notes = _fold_splits(
        labelled.subset(positions), folds, random_state, which="latest"
    )
    moved = [
        Split(
            split.name,
            positions[split.train],
            positions[split.test],
            positions[split.calibrate],
            split.held_out,
        )
        for split in splits
    ]
    left_out = SharedNote(
        f"only the latest date, {latest.isoformat()}, is measured: the labels come "
        f"from validation.label_column, which has no dates, so the {len(dates) - 1} "
        "earlier dates repeat the same labels, and a split between dates would "
        "test accounts on the labels it was fitted on"
    )
    return moved, description, [left_out, *notes]


def _fold_splits(
    labelled: Observations, folds: int, random_state: int, which: str = "one"
) -> tuple[list[Split], str, list[str]]:
    """Split the rows of one date into stratified folds.

    Every fold's test rows need a row of each class, so the rarer class caps the
    number of folds. Below MIN_FOLDS rows of either class there is one split whose
    test rows are its training rows, which only label-free methods are scored on.
    """
    labels = labelled.frame["label"].to_numpy(dtype=int)
    churned = int(labels.sum())
    retained = len(labels) - churned
    rarer, rarer_name = (
        (churned, "churned") if churned <= retained else (retained, "retained")
    )
    verb = "row is" if rarer == 1 else "rows are"
    counted = f"{rarer:,} labelled {verb} {rarer_name}"
    day = labelled.dates[0].isoformat()
    if rarer < MIN_FOLDS:
        everything = np.arange(len(labels))
        description = (
            f"none, because on the {which} labelled date, {day}, only {counted}, too "
            f"few for {MIN_FOLDS} folds. The methods whose risk uses no label are "
            f"measured on all {len(labels):,} labelled rows, and the fitted methods "
            "are skipped"
        )
        unsplit = Split("all rows", everything, everything, everything, False)
        return [unsplit], description, []
    used = min(folds, rarer)
    splitter = StratifiedKFold(n_splits=used, shuffle=True, random_state=random_state)
    splits = [
        Split(f"fold {index + 1}", train, test, train)
        for index, (train, test) in enumerate(
            splitter.split(np.zeros(len(labels)), labels)
        )
    ]
    description = (
        f"{used}-fold stratified cross-validation on the {which} labelled date, {day}"
    )
    notes: list[str] = []
    if used < folds:
        notes.append(
            SharedNote(
                f"cross-validated with {used} folds, not validation.folds ({folds}), "
                f"because only {counted} and each fold needs one among its test rows"
            )
        )
    return splits, description, notes


def run_methods(
    project: Project,
    observations: Observations,
    methods: Sequence[Method],
    *,
    progress: Callable[[str], None] | None = None,
) -> tuple[list[MethodResult], str]:
    """Fit and score every method on the same splits and measure the results.

    Returns one result per method, in the order given, and the split description.
    A method that fails on a split for too few labels is skipped on that split, and
    its notes record that. Such a failure never stops the other methods. Every
    result also gets the notes of `make_splits`.
    """
    labelled = observations.labelled()
    settings = project.config.validation
    splits, description, split_notes = make_splits(
        project, labelled, settings.min_churned, settings.folds
    )
    dates = sorted({stamp.date() for stamp in labelled.frame["as_of"]})
    if not splits and len(dates) > 1:
        first_end = horizon_end(project, dates[0])
        raise ValueError(
            f"no labelled date has an earlier labelled date whose outcome horizon "
            f"({project.config.outcomes.horizon}) ended by it, so there is nothing to "
            f"train on before a test date: the {len(dates)} dates run from "
            f"{dates[0]} to {dates[-1]}, and the first horizon ends on {first_end}. "
            "Store dates that span more than the horizon (healthscore backfill "
            "--from, --to), or set a shorter outcomes.horizon"
        )
    if not splits:
        raise InsufficientLabels(
            *labelled.label_counts,
            settings.min_churned,
            "split",
            source=labelled.labels.source,
        )
    at_risk = _at_risk_band(project.config.bands)
    band_order = [band.name for band in project.config.bands]
    results = []
    for method in methods:
        if progress:
            progress(f"backtesting {method.key}")
        result = _run_one(project, labelled, method, splits, at_risk, band_order)
        result.notes[:0] = split_notes
        results.append(result)
    return results, description


def _run_one(
    project: Project,
    labelled: Observations,
    method: Method,
    splits: list[Split],
    at_risk: str,
    band_order: list[str],
) -> MethodResult:
    frame = labelled.frame
    result = MethodResult(method.key, method.explainable)
    result.split_names = [split.name for split in splits]
    min_churned = project.config.validation.min_churned
    tested = splits
    if hasattr(method, "select_splits"):
        selector: SplitSelector = method  # type: ignore[assignment]
        tested, selection_notes = selector.select_splits(project, labelled, splits)
        result.notes.extend(selection_notes)
    pieces = []
    calibrations = set()
    for split in tested:
        train = frame.iloc[split.train]
        test = frame.iloc[split.test]
        if not split.held_out:
            result.notes.append(_unsplit_note(method, labelled))
            if _uses_labels(method):
                continue
        context = FitContext(project, labelled, min_churned, split)
        started = time.perf_counter()
        try:
            prediction = method.fit_predict(train, test, context)
        except InsufficientLabels as exc:
            reason = exc.with_source(labelled.labels.source)
            result.notes.append(f"{split.name}: skipped, {reason}")
            continue
        except ValueError as exc:
            result.notes.append(f"{split.name}: skipped, {exc}")
            continue
        except ImportError as exc:
            result.notes.append(f"not available in this installation ({exc})")
            return result
        result.fit_seconds += time.perf_counter() - started
        result.notes.extend(f"{split.name}: {note}" for note in prediction.notes)
        piece = test[["account_id", "as_of", "label", "churn_date", "band"]].copy()
        piece["split"] = split.name
        piece["risk"] = prediction.test_risk
        probability, calibration = _probability(prediction, train, split, context)
        if calibration is not None:
            calibrations.add(calibration)
        elif split.held_out:
            result.notes.append(
                f"{split.name}: no churn probability, because the training rows have "
                f"fewer than {context.min_churned} churned or retained rows to "
                "calibrate on"
            )
        piece["probability"] = probability
        piece["method_band"] = (
            prediction.test_band if prediction.test_band is not None else None
        )
        piece["flagged"] = _flagged(prediction, train, test, at_risk)
        pieces.append(piece)
        split_auc = _number(
            roc_auc(piece["label"].to_numpy(), piece["risk"].to_numpy())
        )
        if split_auc is None:
            result.notes.append(
                f"{split.name}: no ROC AUC of its own, because its test rows are all "
                "churned or all retained, so roc_auc_mean_split leaves it out"
            )
        result.splits.append(
            {
                "split": split.name,
                "train_rows": len(train),
                "train_churned": int(train["label"].sum()),
                "test_rows": len(test),
                "test_churned": int(test["label"].sum()),
                "roc_auc": split_auc,
            }
        )
    if not pieces:
        result.notes.append("no split could be scored, so there are no measures")
        return result
    predictions = pd.concat(pieces, ignore_index=True)
    result.predictions = predictions
    _measure(result, predictions, at_risk, band_order)
    _note_test_rows(result, predictions, min_churned)
    result.calibration = " and ".join(sorted(calibrations))
    return result


def _uses_labels(method: Method) -> bool:
    """Return whether the method's risk comes from a fit to churn labels."""
    return method.key not in LABEL_FREE_METHODS and not method.key.startswith("shadow:")


def _unsplit_note(method: Method, labelled: Observations) -> str:
    """Explain what was done with `method` when the labels are too few for folds."""
    churned, retained = labelled.label_counts
    found = (
        f"found {churned:,} churned and {retained:,} retained labelled rows, and "
        f"{MIN_FOLDS}-fold cross-validation needs at least {MIN_FOLDS} of each"
    )
    if _uses_labels(method):
        return f"skipped, because it is fitted on churn labels: {found}"
    return SharedNote(
        f"measured on all {churned + retained:,} labelled rows without folds, "
        f"because its risk uses no label: {found}. It has no churn probability or "
        "ECE, because a calibration would be fitted on the rows it is measured on"
    )


def _probability(
    prediction: Prediction,
    train: pd.DataFrame,
    split: Split,
    context: FitContext,
) -> tuple[np.ndarray, str | None]:
    """Return the test rows' churn probabilities and the calibration's name.

    The name is None when too few labels leave the risk uncalibrated, or when the
    split holds out no rows to calibrate on (all NaN). It is CONSTANT_CALIBRATION
    when the Platt curve fell, so every test row gets the churn rate of the
    calibration rows.
    """
    if prediction.test_probability is not None:
        return np.asarray(prediction.test_probability, dtype=float), "the method's own"
    if not split.held_out:
        return np.full(len(prediction.test_risk), np.nan), None
    # Rows of the calibration part, as positions inside the training part.
    calibrate = np.isin(split.train, split.calibrate)
    risk = np.asarray(prediction.train_risk, dtype=float)
    labels = train["label"].to_numpy(dtype=float)
    calibrator = ScoreCalibrator("auto", context.min_churned)
    try:
        calibrator.fit(risk[calibrate], labels[calibrate])
    except InsufficientLabels:
        try:
            calibrator.fit(risk, labels)
        except InsufficientLabels:
            nan = np.full(len(prediction.test_risk), np.nan)
            return nan, None
    if calibrator.method_ == "isotonic":
        name = "isotonic"
    elif calibrator.constant_ is not None:
        name = CONSTANT_CALIBRATION
    else:
        name = "Platt (sigmoid)"
    return calibrator.predict(prediction.test_risk), name


def _flagged(
    prediction: Prediction, train: pd.DataFrame, test: pd.DataFrame, at_risk: str
) -> np.ndarray:
    """Flag the test rows that a method counts as at risk.

    A method with bands flags the rows in the at-risk band. Without bands, each test
    date flags its riskiest rows. Their number is the share of the training rows that
    the live scorecard banded at risk, times the date's rows, rounded half up. So
    precision, recall and lead time compare with those of the bands, and no test
    label is used. Rows without a finite risk are never flagged. Ties at the cut are
    broken by the CRC-32 of the account id, then by the id, which is deterministic
    and unrelated to the order in which accounts were created.
    """
    if prediction.test_band is not None:
        return np.asarray(prediction.test_band, dtype=object) == at_risk
    banded = int((train["band"] == at_risk).sum())
    risk = np.asarray(prediction.test_risk, dtype=float)
    ids = test["account_id"].astype(str).to_numpy()
    as_of = test["as_of"].to_numpy()
    flagged = np.zeros(len(risk), dtype=bool)
    for day in np.unique(as_of):
        rows = np.flatnonzero((as_of == day) & np.isfinite(risk))
        # banded / len(train) * day_rows, rounded half up in integers.
        day_rows = int((as_of == day).sum())
        count = (2 * banded * day_rows + len(train)) // (2 * len(train))
        hashes = np.array([zlib.crc32(ids[row].encode()) for row in rows])
        # np.lexsort sorts by its last key first: highest risk, then the hash.
        order = np.lexsort((ids[rows], hashes, -risk[rows]))
        flagged[rows[order[:count]]] = True
    return flagged


def _measure(
    result: MethodResult, predictions: pd.DataFrame, at_risk: str, band_order: list[str]
) -> None:
    labels = predictions["label"].to_numpy(dtype=float)
    risk = predictions["risk"].to_numpy(dtype=float)
    result.rows = len(predictions)
    result.churned = int(np.nansum(labels))
    result.roc_auc = roc_auc(labels, risk)
    result.lift_top_decile = lift(labels, risk, TOP_FRACTION)
    probability = predictions["probability"].to_numpy(dtype=float)
    if np.isfinite(probability).any():
        result.ece = expected_calibration_error(labels, probability)
        result.reliability = reliability_curve(labels, probability)
    flagged = predictions["flagged"].to_numpy(dtype=bool)
    result.precision_at_risk, result.recall_at_risk = band_precision_recall(
        labels, flagged
    )
    bands = predictions["method_band"]
    if bands.notna().any():
        result.bands, result.band_falls = churn_by_band(
            labels, bands.to_numpy(dtype=object), band_order
        )
    leads = lead_times(predictions[["account_id", "as_of", "flagged", "churn_date"]])
    churned_accounts = predictions.loc[
        predictions["churn_date"].notna(), "account_id"
    ].nunique()
    if not churned_accounts:
        result.notes.append(LeadTimeNote("no churn dates, so no lead time"))
        return
    result.flagged_churned_share = len(leads) / churned_accounts
    result.lead_time_days = float(leads.median()) if len(leads) else math.nan
    if len(leads) and predictions["as_of"].nunique() == 1:
        day = pd.Timestamp(predictions["as_of"].iloc[0]).date().isoformat()
        result.notes.append(
            SharedNote(
                f"the lead time counts from the one test date, {day}, because no "
                "earlier test date shows when the accounts were first flagged"
            )
        )


def _note_test_rows(
    result: MethodResult, predictions: pd.DataFrame, min_churned: int
) -> None:
    """Note measures that the pooled test rows cannot support."""
    if result.churned < min_churned:
        if result.churned == 0:
            counted = "no churned test row"
        elif result.churned == 1:
            counted = "only 1 churned test row"
        else:
            counted = f"only {result.churned:,} churned test rows"
        result.notes.append(
            SharedNote(
                f"{counted}, fewer than validation.min_churned ({min_churned}), so "
                "the measures of the test rows are unreliable"
            )
        )
    # The calibration of a risk that ranks churn the wrong way round is flat (see
    # ScoreCalibrator), and then the ECE of the one probability is near 0 whatever
    # the ranking.
    pooled = _constant_probability(predictions["probability"])
    if pooled is not None:
        result.notes.append(
            f"the calibrated churn probabilities are constant: every test row gets "
            f"{pooled:.1%}, so the ECE says nothing about how the method ranks "
            "accounts"
        )
        return
    for split, part in predictions.groupby("split", sort=False):
        if _constant_probability(part["probability"]) is not None:
            result.notes.append(
                f"{split}: the calibrated churn probabilities are constant, one "
                "value for every test row, so the ECE says nothing about how the "
                "method ranks accounts"
            )


def _constant_probability(probability: pd.Series) -> float | None:
    """Return the one finite value of `probability` when there are several rows."""
    values = probability.to_numpy(dtype=float)
    finite = values[np.isfinite(values)]
    if finite.size > 1 and np.ptp(finite) < 1e-12:
        return float(finite[0])
    return None


def note_unequal_rows(results: Sequence[MethodResult]) -> None:
    """Note, on each method tested on fewer rows than another, that its measures
    are not directly comparable with those of the methods tested on more."""
    scored = [result for result in results if result.rows]
    if not scored:
        return
    most = max(result.rows for result in scored)
    for result in scored:
        if result.rows < most:
            result.notes.append(
                SharedNote(
                    f"tested on {result.rows:,} of the {most:,} test rows, so its "
                    "measures are not directly comparable with those of methods "
                    "tested on more rows"
                )
            )


def _at_risk_band(bands: list[BandConfig]) -> str:
    """Return the name of the lowest band, which backtests treat as at risk."""
    return min(bands, key=lambda band: band.min).name


def _number(value: Any) -> Any:
    if isinstance(value, float | np.floating) and not math.isfinite(float(value)):
        return None
    if isinstance(value, np.floating):
        return float(value)
    if isinstance(value, np.integer):
        return int(value)
    return value
