"""Churn model commands: `train`, `forecast` and `clusters`, and `explain --model`.

`train` fits a calibrated churn classifier (and, with enough churned accounts, a
survival model) on the labelled snapshots and stores them under
`.healthscore/models/`. `forecast` projects scores 30, 60 and 90 days ahead and, with
`--renewals`, the ARR expected to renew per period. `clusters` groups accounts by
their measures.
"""

from __future__ import annotations

import math
import re
import time
from datetime import date
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal

import typer
from rich import box
from rich.table import Table

from healthscore.cli.common import (
    JsonOption,
    ProjectOption,
    VerboseOption,
    handle_errors,
    note_wrapped,
    open_project,
    parse_date,
    plural,
    print_json,
    say,
    say_wrapped,
    stdout_console,
    to_json,
)
from healthscore.cli.display import percent
from healthscore.config import Project
from healthscore.models.errors import UNDATED_LABELS, InsufficientLabels

# Modules that load pandas, DuckDB or SQLAlchemy are imported inside the functions
# that use them, so that `healthscore --help` does not load them.
if TYPE_CHECKING:
    import numpy as np
    import pandas as pd

    from healthscore.models.dataset import Observations
    from healthscore.models.ml import ChurnClassifier

#: Names of the stored models.
CHURN_MODEL = "churn"
SURVIVAL_MODEL = "survival"

#: Share of the labelled rows, from the latest dates, that `train` validates on.
VALIDATION_FRACTION = 0.2

OptionalDateOption = Annotated[
    date | None,
    typer.Option(
        "--as-of",
        parser=parse_date,
        metavar="YYYY-MM-DD",
        help="As-of date; by default the latest stored snapshot.",
    ),
]


# train


@handle_errors
def train(
    as_of: Annotated[
        date | None,
        typer.Option(
            "--as-of",
            parser=parse_date,
            metavar="YYYY-MM-DD",
            help="Train as of this date: only snapshots up to it whose churn outcome "
            "was known by it. By default every labelled snapshot.",
        ),
    ] = None,
    model: Annotated[
        str,
        typer.Option(
            "--model",
            help="Model kind: lightgbm (gradient-boosted trees) or logistic "
            "(L2-regularized logistic regression).",
        ),
    ] = "lightgbm",
    survival_model: Annotated[
        str,
        typer.Option(
            "--survival-model",
            help="Survival model kind: cox (proportional hazards) or weibull (Weibull "
            "accelerated failure time, which extrapolates past the longest observed "
            "duration, as renewal forecasts far ahead need).",
        ),
    ] = "cox",
    project_dir: ProjectOption = Path("."),
    json_output: JsonOption = False,
    verbose: VerboseOption = 0,
) -> None:
    """Train a calibrated churn model on the labelled snapshots and store it."""
    if model not in ("lightgbm", "logistic"):
        raise typer.BadParameter(
            f"unknown model {model!r}; use lightgbm or logistic", param_hint="--model"
        )
    if survival_model not in ("cox", "weibull"):
        raise typer.BadParameter(
            f"unknown survival model {survival_model!r}; use cox or weibull",
            param_hint="--survival-model",
        )
    project = open_project(project_dir)
    observations = _observations(project)
    labelled = _training_rows(project, observations, as_of)
    result = train_models(
        project,
        observations,
        labelled,
        model,  # type: ignore[arg-type]
        survival_model,  # type: ignore[arg-type]
    )
    if json_output:
        print_json(result)
        return
    _print_training(result)


def train_models(
    project: Project,
    observations: Observations,
    labelled: pd.DataFrame,
    kind: Literal["lightgbm", "logistic"],
    survival_kind: Literal["cox", "weibull"] = "cox",
) -> dict[str, Any]:
    """Validate, fit and store the churn model and the survival model.

    Returns the training summary that `train` prints and stores as metadata.

    Raises
    ------
    InsufficientLabels
        When the labelled rows have too few churned or retained rows, with the
        advice for the project's label source.
    """
    from healthscore.models.compare import model_features
    from healthscore.models.ml import ChurnClassifier
    from healthscore.models.persist import save_model

    # The same features as the ml method of `compare`, so that its measurement
    # describes the stored model.
    features = model_features(project, observations)
    if not features:
        raise ValueError(
            "the snapshots hold no measures or metrics to train on; check the "
            "scorecards in healthscore.yml"
        )
    started = time.perf_counter()
    source = observations.labels.source
    validation = _validate(project, labelled, features, kind, source)
    if source == "column":
        # A column label repeats on every date, so the rows of earlier dates are
        # copies of the latest date's accounts with the same labels. In the folds
        # of the fit, a copy would stop the trees and calibrate them on its own
        # account, so only the latest date is fitted on, as `compare` does.
        labelled = labelled[labelled["as_of"] == labelled["as_of"].max()]
        labelled = labelled.reset_index(drop=True)
    final = ChurnClassifier(kind=kind)
    # Stratified folds over every date, as `compare` fits the ml method, so the
    # latest date trains trees too instead of serving only as a hold-out.
    try:
        final.fit(labelled[features], labelled["label"].to_numpy())
    except InsufficientLabels as exc:
        raise exc.with_source(source) from None
    dates = sorted({stamp.date() for stamp in labelled["as_of"]})
    churned = int(labelled["label"].sum())
    metadata: dict[str, Any] = {
        "kind": kind,
        "training_dates": dates,
        "rows": len(labelled),
        "churned": churned,
        "retained": len(labelled) - churned,
        "features": features,
        "calibration": final.calibration_,
        "iterations": final.n_iterations_,
        "validation": validation,
        "notes": list(final.notes_),
        "fit_seconds": round(time.perf_counter() - started, 3),
    }
    folder = save_model(project, CHURN_MODEL, final, metadata)
    metadata["stored_in"] = str(folder)
    metadata["survival"] = _train_survival(
        project, observations, labelled, survival_kind
    )
    return metadata


def _training_rows(
    project: Project, observations: Observations, as_of: date | None
) -> pd.DataFrame:
    """Labelled rows; with `as_of`, those whose horizon ended by then."""
    import numpy as np

    from healthscore.outcomes import horizon_end

    labelled = observations.frame[observations.frame["label"].notna()]
    frame = labelled
    if as_of is not None:
        ends = [horizon_end(project, stamp.date()) for stamp in frame["as_of"]]
        frame = frame[np.array([end <= as_of for end in ends], dtype=bool)]
    if not frame.empty:
        return frame.reset_index(drop=True)
    if observations.labels.source == "column":
        raise ValueError(_no_column_labels(project, labelled, as_of))
    horizon = project.config.outcomes.horizon
    backfill = "`healthscore backfill --from DATE --to DATE --every 1mo`"
    if labelled.empty or as_of is None:
        observed = observations.labels.observed_until
        until = f" ({observed.isoformat()})" if observed is not None else ""
        raise ValueError(
            "no stored snapshot has a known churn outcome: the outcome of a "
            f"snapshot is known once its {horizon} horizon (outcomes.horizon) ends "
            f"by the last date the outcomes are complete{until}; store earlier "
            f"dates with {backfill}"
        )
    first_end = min(horizon_end(project, stamp.date()) for stamp in labelled["as_of"])
    raise ValueError(
        f"no stored snapshot has a known churn outcome by {as_of.isoformat()}: "
        "--as-of trains only on snapshots whose "
        f"{horizon} horizon (outcomes.horizon) has ended by that date, and the "
        f"earliest labelled snapshot's ends on {first_end.isoformat()}; give "
        f"--as-of {first_end.isoformat()} or later, leave out --as-of, or store "
        f"earlier dates with {backfill}"
    )


def _no_column_labels(
    project: Project, labelled: pd.DataFrame, as_of: date | None
) -> str:
    """Return why no row can be trained on when labels come from a column.

    `labelled` contains the rows with a label, before the `as_of` filter.
    """
    from healthscore.outcomes import horizon_end

    setting = project.config.validation.label_column
    column = repr(setting.column) if setting is not None else "the label column"
    if labelled.empty or as_of is None:
        return (
            f"no account in the stored snapshots has a value in the label column "
            f"{column} (validation.label_column); fill that column in the accounts "
            "source for the accounts to train on"
        )
    first_end = min(horizon_end(project, stamp.date()) for stamp in labelled["as_of"])
    horizon = project.config.outcomes.horizon
    return (
        f"no stored snapshot has a known churn outcome by {as_of.isoformat()}: the "
        f"label column {column} (validation.label_column) has no dates, so --as-of "
        "counts the outcome of a snapshot as known once its "
        f"{horizon} horizon (outcomes.horizon) has ended, on "
        f"{first_end.isoformat()} for the earliest snapshot; give --as-of "
        f"{first_end.isoformat()} or later, or leave out --as-of"
    )


def _validate(
    project: Project,
    labelled: pd.DataFrame,
    features: list[str],
    kind: str,
    source: str,
) -> dict[str, Any]:
    """Fit on the earlier rows, measure on the latest ones; a note when impossible.

    `source` is where the labels come from, which selects the advice of the note.
    """
    import numpy as np

    from healthscore.models.evaluation import expected_calibration_error, lift, roc_auc
    from healthscore.models.ml import ChurnClassifier

    fit_rows, test_rows, method = _validation_split(project, labelled, source)
    try:
        model = ChurnClassifier(kind=kind)  # type: ignore[arg-type]
        part = labelled.iloc[fit_rows]
        model.fit(part[features], part["label"].to_numpy())
    except InsufficientLabels as exc:
        return {"method": method, "note": f"not validated: {exc.with_source(source)}"}
    test = labelled.iloc[test_rows]
    labels = test["label"].to_numpy(dtype=int)
    probability = model.predict_proba(test[features])[:, 1]
    auc = roc_auc(labels, probability)
    validation: dict[str, Any] = {
        "method": method,
        "notes": list(model.notes_),
        "rows": len(test),
        "churned": int(labels.sum()),
        "roc_auc": auc,
        "lift_top_decile": lift(labels, probability),
        "ece": expected_calibration_error(labels, probability),
        "brier": float(np.mean((probability - labels) ** 2)),
        "mean_probability": float(probability.mean()),
        "churn_rate": float(labels.mean()),
    }
    if auc < 0.5:
        validation["warning"] = (
            f"the validation ROC AUC is {auc:.3f}, below 0.5: the model ranks "
            "retained accounts above churned ones more often than a random order "
            "would, so do not rely on its churn probabilities. Check the features and "
            "the labels, or store more labelled dates with `healthscore backfill`"
        )
    return validation


def _validation_split(
    project: Project, labelled: pd.DataFrame, source: str | None = None
) -> tuple[np.ndarray, np.ndarray, str]:
    """Rows to fit and rows to validate on, and how they were chosen.

    With several as-of dates the latest dates holding about VALIDATION_FRACTION of
    the rows are validated on, and the model is fitted on the dates whose outcome
    was known by the first of them, as it would have been in use. Labels from an
    accounts column (`source` "column") have no dates and repeat on every date, so
    a split between dates would test accounts on the labels it was fitted on. With
    them, only the latest date's rows are split, into a stratified hold-out.
    """
    import numpy as np
    import pandas as pd

    from healthscore.outcomes import horizon_end

    rows = np.arange(len(labelled))
    stamps = labelled["as_of"]
    distinct = np.sort(stamps.unique())
    if source == "column" and len(distinct) > 1:
        latest = rows[(stamps == distinct[-1]).to_numpy()]
        fit_rows, test_rows = _stratified_hold_out(labelled.iloc[latest])
        day = pd.Timestamp(distinct[-1]).date().isoformat()
        return (
            latest[fit_rows],
            latest[test_rows],
            f"latest as-of date, {day}: stratified random 20 % hold-out, because "
            "labels from validation.label_column repeat on every date",
        )
    if len(distinct) > 1:
        counts = stamps.value_counts()
        chosen: list[Any] = []
        held_count = 0
        for stamp in distinct[::-1]:
            if (
                held_count >= VALIDATION_FRACTION * len(labelled)
                or len(chosen) == len(distinct) - 1
            ):
                break
            chosen.append(stamp)
            held_count += int(counts[stamp])
        test = stamps.isin(chosen).to_numpy()
        first = pd.Timestamp(min(chosen)).date()
        known = np.array(
            [horizon_end(project, stamp.date()) <= first for stamp in stamps],
            dtype=bool,
        )
        return (
            rows[known & ~test],
            rows[test],
            f"time-ordered: fit on outcomes known by {first.isoformat()}, test from it",
        )
    fit_rows, test_rows = _stratified_hold_out(labelled)
    return fit_rows, test_rows, "one as-of date: stratified random 20 % hold-out"


def _stratified_hold_out(labelled: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    """Split row positions into VALIDATION_FRACTION to test on and the rest to fit.

    The split keeps the churn rate in both parts, unless a class has too few rows
    to stratify, and then it is plain random.
    """
    import numpy as np
    from sklearn.model_selection import train_test_split

    rows = np.arange(len(labelled))
    labels = labelled["label"].to_numpy(dtype=int)
    try:
        fit_rows, test_rows = train_test_split(
            rows, test_size=VALIDATION_FRACTION, stratify=labels, random_state=0
        )
    except ValueError:
        fit_rows, test_rows = train_test_split(
            rows, test_size=VALIDATION_FRACTION, random_state=0
        )
    return np.sort(fit_rows), np.sort(test_rows)


#: Names of the survival model kinds in the command's output.
_SURVIVAL_NAMES = {"cox": "Cox", "weibull": "Weibull"}


def _train_survival(
    project: Project,
    observations: Observations,
    labelled: pd.DataFrame,
    kind: Literal["cox", "weibull"] = "cox",
) -> dict[str, Any]:
    """Fit and store the survival model on the measures; a note when impossible."""
    import numpy as np

    from healthscore.models.labels import horizon_days
    from healthscore.models.persist import save_model
    from healthscore.models.survival import ChurnSurvival, survival_data

    columns = observations.measure_columns
    if not columns:
        return {"note": "not trained: the snapshots hold no measures"}
    days = np.array(
        [horizon_days(project, stamp.date()) for stamp in labelled["as_of"]]
    )
    durations, events, rows = survival_data(labelled, int(days.max()))
    retained = events == 0
    durations[retained] = days[rows][retained]
    try:
        model = ChurnSurvival(model=kind).fit(
            labelled.iloc[rows][columns].reset_index(drop=True), durations, events
        )
    except InsufficientLabels as exc:
        reason = exc.with_source(observations.labels.source)
        return {"note": f"not trained: {reason}"}
    except ValueError as exc:
        return {"note": f"not trained: {exc}"}
    info: dict[str, Any] = {
        "model": model.model,
        # The measures the model was fitted on: a measure that does not vary on
        # the training rows is left out, and a note names it.
        "features": [column for column in columns if column not in model.left_out_],
        "rows": len(rows),
        "churned": int(events.sum()),
        "concordance": model.concordance_,
        "longest_duration_days": model.max_duration_,
        "notes": list(model.notes_),
    }
    info["stored_in"] = str(save_model(project, SURVIVAL_MODEL, model, info))
    return info


def _print_training(result: dict[str, Any]) -> None:
    validation = result["validation"]
    say_wrapped(
        f"Trained a {result['kind']} churn model on {plural(result['rows'], 'row')} "
        f"({result['churned']:,} churned) from {len(result['training_dates'])} as-of "
        f"dates, {result['training_dates'][0]} to {result['training_dates'][-1]}."
    )
    say_wrapped(
        f"Calibration: {result['calibration'] or 'none'}; "
        f"{result['iterations']} iterations."
    )
    if "note" in validation:
        note_wrapped(f"Validation: {validation['note']}")
    else:
        table = Table(
            title=f"Validation ({validation['method']})",
            box=box.SIMPLE_HEAD,
            title_justify="left",
        )
        for column in ("rows", "churned", "ROC AUC", "lift top 10 %", "ECE", "Brier"):
            table.add_column(column, justify="right")
        table.add_row(
            f"{validation['rows']:,}",
            f"{validation['churned']:,}",
            _fixed(validation["roc_auc"], 3),
            _fixed(validation["lift_top_decile"], 2),
            _fixed(validation["ece"], 4),
            _fixed(validation["brier"], 4),
        )
        stdout_console().print(table)
        if "warning" in validation:
            note_wrapped(f"Warning: {validation['warning']}")
        for line in _counted_notes("Validation model", validation["notes"]):
            note_wrapped(line)
    for line in _counted_notes("Note", result["notes"]):
        note_wrapped(line)
    say(f"Stored in {result['stored_in']}.")
    survival = result["survival"]
    if "note" in survival:
        note_wrapped(f"Survival model {survival['note']}")
    else:
        say_wrapped(
            f"Survival model ({_SURVIVAL_NAMES[survival['model']]}, "
            f"{len(survival['features'])} measures): "
            f"concordance {survival['concordance']:.3f}; stored in "
            f"{survival['stored_in']}."
        )
        for line in survival["notes"]:
            note_wrapped(f"Survival model: {line}")


#: A count inside a model note, such as the 7 of "7 churned": digits, maybe with
#: thousands separators, that are not part of a date, a decimal or a word.
_NOTE_COUNT = re.compile(r"(?<![\w.\-])\d[\d,]*(?![\w\-]|\.\d)")


def _counted_notes(label: str, lines: list[str]) -> list[str]:
    """Return each distinct note once after `label`, in order of first appearance.

    A model fits one part per hold-out fold, and each fit may add a note. Notes
    that differ only in their counts are merged, as `compare` merges them, and each
    count that varies becomes a range ("5 to 7 churned"). The label of a note that
    several fits gave names their number, as in "Validation model (4 fits): ...".
    """
    groups: dict[str, list[list[str]]] = {}
    for line in lines:
        template = _NOTE_COUNT.sub("\0", line)
        groups.setdefault(template, []).append(_NOTE_COUNT.findall(line))
    merged = []
    for template, members in groups.items():
        pieces = template.split("\0")
        text = pieces[0]
        for position, piece in enumerate(pieces[1:]):
            values = {numbers[position] for numbers in members}
            text += _count_range(values) + piece
        where = label if len(members) == 1 else f"{label} ({len(members)} fits)"
        merged.append(f"{where}: {text}")
    return merged


def _count_range(values: set[str]) -> str:
    """Return the one count of `values`, or "lowest to highest" when they differ."""
    ordered = sorted(values, key=lambda value: int(value.replace(",", "")))
    if len(ordered) == 1:
        return ordered[0]
    return f"{ordered[0]} to {ordered[-1]}"


# forecast


@handle_errors
def forecast(
    account: Annotated[
        str | None,
        typer.Option("--account", metavar="ID", help="Show only this account."),
    ] = None,
    as_of: OptionalDateOption = None,
    renewals: Annotated[
        bool,
        typer.Option(
            "--renewals",
            help="Forecast renewals instead: ARR up for renewal per period and the "
            "ARR expected to renew, from the trained survival model.",
        ),
    ] = False,
    period: Annotated[
        str,
        typer.Option("--period", help="Renewal period: month, quarter or year."),
    ] = "month",
    limit: Annotated[
        int,
        typer.Option(
            "--limit",
            min=1,
            help="Accounts shown in the table, earliest crossing first.",
        ),
    ] = 20,
    project_dir: ProjectOption = Path("."),
    json_output: JsonOption = False,
    verbose: VerboseOption = 0,
) -> None:
    """Forecast scores 30, 60 and 90 days ahead, or renewals with --renewals."""
    from healthscore.models.dataset import snapshot_store_of

    if period not in ("month", "quarter", "year"):
        raise typer.BadParameter(
            f"unknown period {period!r}; use month, quarter or year",
            param_hint="--period",
        )
    project = open_project(project_dir)
    if renewals:
        _forecast_renewals(project, as_of, period, json_output)
        return
    from healthscore.models.forecast import forecast_scores
    from healthscore.monitoring.history import score_history

    store = snapshot_store_of(project)
    if not store.dates():
        raise ValueError(_no_snapshots(store.folder))
    day = as_of or store.dates()[-1]
    if not store.exists(day):
        raise ValueError(
            f"no snapshot is stored for {day.isoformat()}; run `healthscore score "
            f"--as-of {day.isoformat()}` or `healthscore backfill` first"
        )
    table = forecast_scores(score_history(store), bands=project.config.bands, as_of=day)
    if account is not None:
        table = table[table["account_id"] == account]
        if table.empty:
            raise ValueError(
                f"account {account!r} has no score as of {day.isoformat()}; check the "
                "id, or pick another date with --as-of"
            )
    if json_output:
        print_json(to_json(table.to_dict(orient="records")))
        return
    _print_forecast(table, limit, account is not None, _reads_dated_rows(project))


def _forecast_renewals(
    project: Project, as_of: date | None, period: str, json_output: bool
) -> None:
    from healthscore.models.dataset import snapshot_store_of
    from healthscore.models.labels import label_source

    stored = _load(project, SURVIVAL_MODEL)
    model = stored.estimator
    store = snapshot_store_of(project)
    day = as_of or (store.dates()[-1] if store.dates() else None)
    if day is None:
        raise ValueError(_no_snapshots(store.folder, label_source(project)))
    frame = _observations(project, [day]).frame
    if frame["renewal_date"].isna().all():
        raise ValueError(
            "no account has a renewal date; add a renewal_date column (and arr) to "
            "the accounts source to forecast renewals"
        )

    table = model.renewal_forecast(frame, period=period)
    notes = [*_left_out_renewals(frame, day), *getattr(model, "notes_", [])]
    if json_output:
        print_json(
            {
                "as_of": day,
                "period": period,
                "renewals": to_json(table.to_dict(orient="records")),
                "notes": notes,
            }
        )
        return
    _print_renewals(table, day, period)
    for line in notes:
        note_wrapped(f"Note: {line}")


def _left_out_renewals(frame: pd.DataFrame, day: date) -> list[str]:
    """Say which accounts the renewal forecast leaves out, and why."""
    import pandas as pd

    renewal = pd.to_datetime(frame["renewal_date"])
    arr = pd.to_numeric(frame.get("arr"), errors="coerce")
    reasons = [
        (renewal.isna(), "without a renewal date"),
        (renewal.notna() & (renewal < pd.Timestamp(day)), f"renewing before {day}"),
        (renewal.notna() & (renewal >= pd.Timestamp(day)) & arr.isna(), "without ARR"),
    ]
    parts = [
        f"{plural(int(mask.sum()), 'account')} {reason}"
        for mask, reason in reasons
        if mask.any()
    ]
    if not parts:
        return []
    return [f"left out of the forecast: {', '.join(parts)}"]


def _print_renewals(table: pd.DataFrame, day: date, period: str) -> None:
    view = Table(
        title=f"Renewals after {day.isoformat()}, per {period} (90 % interval)",
        box=box.SIMPLE_HEAD,
        title_justify="left",
    )
    columns = ("Period", "Accounts", "ARR up", "Expected churn", "Expected ARR kept")
    for column in (*columns, "Interval"):
        view.add_column(column, justify="left" if column == "Period" else "right")
    for row in table.itertuples():
        view.add_row(
            str(row.period),
            f"{row.accounts:,}",
            f"{row.arr_up_for_renewal:,.0f}",
            f"{row.expected_churned_accounts:,.1f} accounts",
            f"{row.expected_retained_arr:,.0f}",
            f"{row.retained_arr_low:,.0f} - {row.retained_arr_high:,.0f}",
        )
    stdout_console().print(view)


def _print_forecast(table: pd.DataFrame, limit: int, single: bool, dated: bool) -> None:
    """Print the forecast table, or why a horizon has no forecast.

    `dated` is true when the scores read rows with dates, so that they can change
    from one as-of date to the next (see `_reads_dated_rows`).
    """
    from healthscore.models.forecast import MIN_EXAMPLES

    if table.empty:
        say_wrapped("No account has a score to forecast.")
        return
    requested = [
        int(column.removeprefix("score_").removesuffix("d"))
        for column in table.columns
        if column.startswith("score_")
    ]
    horizons = [days for days in requested if table[f"score_{days}d"].notna().any()]
    missing = [days for days in requested if days not in horizons]
    # `method` is "learned from history", then "; " and the reasons for the
    # horizons without a forecast.
    method = str(table["method"].iloc[0])
    reason = method.split(";", 1)[1].strip() if ";" in method else ""
    day = table["as_of"].iloc[0]
    if not horizons:
        say_wrapped(
            f"No score forecast as of {day} for {plural(len(table), 'account')}: "
            f"{reason}."
        )
        if not dated:
            say_wrapped(
                f"{UNDATED_SCORES} Snapshots of more dates would only repeat them "
                "and give a flat forecast. A forecast needs scores that change over "
                "time. Measure metrics of a source with dated rows, such as events "
                f"or subscriptions, and store snapshots at least {min(missing)} "
                "days apart as that data grows."
            )
            return
        say_wrapped(
            f"A forecast {min(missing)} days ahead learns from accounts scored on two "
            f"snapshots {min(missing)} days apart and needs {MIN_EXAMPLES} such "
            "examples. Store more dates with `healthscore backfill --from DATE --to "
            "DATE --every 7d`, then run `healthscore forecast` again."
        )
        return
    if not dated:
        note_wrapped(
            f"Note: {UNDATED_SCORES} The forecast repeats the scores of {day}."
        )

    crossing = table[table["at_risk_date"].notna()].sort_values("at_risk_date")
    shown = table if single else crossing.head(limit)
    if not single:
        say_wrapped(
            f"{plural(len(crossing), 'account')} of {len(table):,} are expected to "
            f"cross into at risk within {max(horizons)} days of {day}."
        )
    if missing:
        say_wrapped(f"No forecast {_days(missing)} ahead: {reason}.")
    if shown.empty:
        return

    view = Table(
        title=f"Score forecast as of {day} (80 % interval)",
        box=box.SIMPLE_HEAD,
        title_justify="left",
    )
    view.add_column("Account")
    view.add_column("Score", justify="right")
    for days in horizons:
        view.add_column(f"In {days} days", justify="right")
    view.add_column("At risk from", justify="right")
    for row in shown.to_dict(orient="records"):
        cells = [str(row["account_id"]), _fixed(row["score"], 1)]
        for days in horizons:
            cells.append(_forecast_cell(row, days))
        crossing_date = row["at_risk_date"]
        cells.append(crossing_date.isoformat() if crossing_date else "-")
        view.add_row(*cells)
    stdout_console().print(view)


#: Reason that a project whose scorecards read no dated rows gets the same scores
#: on every as-of date.
UNDATED_SCORES = (
    "The scorecards read only columns of the accounts source, which have no dates, "
    "so every as-of date gives the same scores."
)


def _reads_dated_rows(project: Project) -> bool:
    """Tell whether a scorecard reads a metric of rows with dates.

    Only metrics of a source, such as event counts or subscription tenure, change
    with the as-of date. Attribute metrics, and ratios and formulas of them, read
    columns of the accounts source, which have no dates.
    """
    from healthscore.config.models import SourceMetric
    from healthscore.config.references import metric_closure
    from healthscore.expressions import parse_expression

    metrics = project.config.metrics
    used: set[str] = set()
    for scorecard in project.config.scorecards:
        for component in scorecard.components.values():
            used |= {measure.metric for measure in component.measures}
        if scorecard.when:
            used |= parse_expression(scorecard.when).names & set(metrics)
    return any(
        isinstance(metrics.get(name), SourceMetric)
        for name in metric_closure(metrics, used)
    )


def _days(horizons: list[int]) -> str:
    """Join horizons as "30 days" or "60 and 90 days"."""
    numbers = [str(days) for days in horizons]
    if len(numbers) == 1:
        return f"{numbers[0]} days"
    return f"{', '.join(numbers[:-1])} and {numbers[-1]} days"


# clusters


@handle_errors
def clusters(
    as_of: Annotated[
        date | None,
        typer.Option(
            "--as-of",
            parser=parse_date,
            metavar="YYYY-MM-DD",
            help="As-of date; by default the latest stored snapshot whose churn "
            "outcomes are known, or the latest stored snapshot when none are known.",
        ),
    ] = None,
    method: Annotated[
        str,
        typer.Option(
            "--method",
            help="kmeans (k chosen by silhouette) or gmm (Gaussian mixture, k chosen "
            "by BIC).",
        ),
    ] = "kmeans",
    max_clusters: Annotated[
        int, typer.Option("--max-clusters", min=2, help="Largest number of clusters.")
    ] = 8,
    project_dir: ProjectOption = Path("."),
    json_output: JsonOption = False,
    verbose: VerboseOption = 0,
) -> None:
    """Group accounts by their measures; show each group's name, size and churn rate.

    By default the clusters are of the latest snapshot whose churn outcomes are
    known, so each cluster's churn rate can be shown. Clustering uses no label, so
    without known outcomes the clusters are of the latest snapshot, without churn
    rates.
    """
    import numpy as np
    import pandas as pd

    if method not in ("kmeans", "gmm"):
        raise typer.BadParameter(
            f"unknown method {method!r}; use kmeans or gmm", param_hint="--method"
        )
    from healthscore.models.clusters import BehaviorClusters
    from healthscore.models.labels import observed_until_problem

    project = open_project(project_dir)
    # Clusters need no labels, but with this setting wrong their churn rates would
    # be too, so it stops clusters as it stops backtest.
    problem = observed_until_problem(project)
    if problem is not None:
        raise ValueError(problem)
    observations = _observations(project, require_labels=False)
    frame = observations.frame
    no_outcome = _no_outcome_imported(project)
    if no_outcome:
        # With outcomes.observed_until set, the labels count every account whose
        # horizon ended by then as retained, although no imported outcome records it.
        frame = frame.assign(label=np.nan)
    day = pd.Timestamp(as_of) if as_of is not None else _latest_labelled(frame)
    rows = frame[frame["as_of"] == day]
    if rows.empty:
        raise ValueError(
            f"no snapshot is stored for {day.date().isoformat()}; pick a stored date"
        )
    columns = observations.measure_columns
    if not columns:
        raise ValueError("the snapshots hold no measures to cluster")
    labels = rows["label"].to_numpy(dtype="float64")
    model = BehaviorClusters(
        method=method,  # type: ignore[arg-type]
        max_clusters=max_clusters,
    ).fit(rows[columns], labels if (~np.isnan(labels)).any() else None)
    summary = model.summary()
    criterion = "silhouette" if method == "kmeans" else "BIC"
    unmeasured = _unmeasured_rates_note(frame, labels, no_outcome)
    notes = [unmeasured] if unmeasured else []
    notes += model.notes_
    if json_output:
        print_json(
            {
                "as_of": day.date(),
                "method": method,
                "criterion": criterion,
                "scores": {str(k): v for k, v in model.scores_.items()},
                "clusters": to_json(summary.to_dict(orient="records")),
                "notes": notes,
            }
        )
        return
    say_wrapped(
        f"{model.n_clusters_} clusters of {len(rows):,} accounts as of "
        f"{day.date().isoformat()}, chosen by {criterion} among 2 to "
        f"{max(model.scores_)}."
    )
    view = Table(box=box.SIMPLE_HEAD)
    for column in ("Cluster", "Name", "Accounts", "Share", "Churn rate"):
        view.add_column(column, justify="left" if column == "Name" else "right")
    for row in summary.itertuples():
        view.add_row(
            str(row.cluster),
            str(row.name),
            f"{row.size:,}",
            percent(row.share),
            "-" if math.isnan(row.churn_rate) else percent(row.churn_rate),
        )
    stdout_console().print(view)
    for line in notes:
        note_wrapped(line)


#: Note of `clusters` when the labels come from imported outcomes and none is
#: imported.
NO_OUTCOME_RATES = (
    "Churn rates are not measured because no outcome is imported. Import the churn "
    "outcomes with `healthscore outcomes import FILE`."
)


def _unmeasured_rates_note(
    frame: pd.DataFrame, labels: np.ndarray, no_outcome: bool
) -> str | None:
    """Return why the clusters have no churn rates, or None when they have them.

    `frame` contains the observations of every stored date, `labels` the labels of
    the clustered date, and `no_outcome` is true when no outcome is imported.
    """
    import numpy as np

    if no_outcome:
        return NO_OUTCOME_RATES
    if frame["label"].isna().all():
        return "Churn rates are missing: no stored snapshot has a known churn outcome."
    if np.isnan(labels).all():
        return "Churn rates are missing: the outcomes of this date are not known yet."
    return None


def _no_outcome_imported(project: Project) -> bool:
    """Check whether the labels come from imported outcomes and none is imported."""
    from sqlalchemy import func, select

    from healthscore.models.labels import label_source
    from healthscore.store.state import StateStore
    from healthscore.store.tables_tasks import outcomes

    if label_source(project) != "outcomes":
        return False
    query = select(func.count()).select_from(outcomes)
    with (
        StateStore.open(project.config.store.state, project.root) as state,
        state.engine.connect() as connection,
    ):
        count = connection.execute(query).scalar_one()
    return count == 0


def _forecast_cell(row: dict[str, Any], days: int) -> str:
    predicted = row[f"score_{days}d"]
    if predicted is None or math.isnan(predicted):
        return "-"
    low = _fixed(row[f"lower_{days}d"], 0)
    high = _fixed(row[f"upper_{days}d"], 0)
    return f"{predicted:.1f} ({low}-{high})"


def _latest_labelled(frame: pd.DataFrame) -> pd.Timestamp:
    import pandas as pd

    known = frame[frame["label"].notna()]
    if known.empty:
        return pd.Timestamp(frame["as_of"].max())
    return pd.Timestamp(known["as_of"].max())


# explain --model


def explain_model(project: Project, account_id: str, as_of: date) -> dict[str, Any]:
    """Compute the stored model's churn probability and contributions for one account.

    Raises
    ------
    ModelNotFoundError
        When no churn model is trained.
    ValueError
        When the account has no row in the snapshot of `as_of`.
    """
    stored = _load(project, CHURN_MODEL)
    model: ChurnClassifier = stored.estimator
    frame = _observations(project, [as_of]).frame
    row = frame[frame["account_id"] == account_id]
    if row.empty:
        raise ValueError(
            f"account {account_id!r} is not in the snapshot of {as_of.isoformat()}; "
            "check the id or the date"
        )
    # NOTE: a feature the model was trained on but this date lacks (such as a
    # category no account has on this date) is passed as missing, not as 0.
    features = row.reindex(columns=list(model.feature_names_in_))
    probability = float(model.predict_proba(features)[0, 1])
    parts = model.contributions(features).iloc[0]
    bias = float(parts.pop("bias"))
    values = features.iloc[0]
    order = parts.abs().sort_values(ascending=False, kind="stable").index
    contributions = [
        {
            "feature": str(name),
            "value": values[name],
            "contribution": float(parts[name]),
        }
        for name in order
    ]
    return {
        "account_id": account_id,
        "as_of": as_of,
        "model": stored.metadata.get("kind"),
        "trained_on": stored.metadata.get("training_dates", []),
        "calibration": stored.metadata.get("calibration"),
        "churn_probability": probability,
        "margin": float(parts.sum() + bias),
        "bias": bias,
        "contributions": contributions,
    }


def print_model_explanation(result: dict[str, Any], top: int = 10) -> None:
    """Print the output of `explain_model` as a sentence and a table."""
    trained = result["trained_on"]
    period = f"{trained[0]} to {trained[-1]}" if trained else "unknown dates"
    calibration = result["calibration"] or "none"
    say_wrapped(
        f"Account {result['account_id']} as of {result['as_of'].isoformat()}: churn "
        f"probability {percent(result['churn_probability'])} from the "
        f"{result['model']} model trained on {period} (calibration: {calibration})."
    )
    view = Table(
        title="Features that move the churn risk most (log-odds, before calibration)",
        box=box.SIMPLE_HEAD,
        title_justify="left",
    )
    view.add_column("Feature", overflow="fold")
    view.add_column("Value", justify="right")
    view.add_column("Contribution", justify="right")
    for item in result["contributions"][:top]:
        view.add_row(
            item["feature"], _value(item["value"]), f"{item['contribution']:+.3f}"
        )
    stdout_console().print(view)
    say_wrapped(
        f"Base log-odds {result['bias']:+.3f} plus the contributions of all "
        f"{len(result['contributions'])} features give {result['margin']:+.3f}; "
        "positive contributions raise the churn risk."
    )


# Helpers


def _observations(
    project: Project, dates: list[date] | None = None, require_labels: bool = True
) -> Observations:
    from healthscore.models.dataset import (
        MissingSnapshotsError,
        build_observations,
        snapshot_store_of,
    )
    from healthscore.models.labels import LeadTimeNote, label_source

    store = snapshot_store_of(project)
    if not store.dates():
        raise ValueError(_no_snapshots(store.folder, label_source(project)))
    try:
        observations = build_observations(project, dates, require_labels=require_labels)
    except MissingSnapshotsError as exc:
        raise ValueError(str(exc)) from None
    for line in observations.notes:
        # These commands report no lead time, so a note about its absence is noise.
        if not isinstance(line, LeadTimeNote):
            note_wrapped(line)
    return observations


def _load(project: Project, name: str) -> Any:
    from healthscore.models.persist import ModelNotFoundError, load_model

    try:
        return load_model(project, name)
    except ModelNotFoundError as exc:
        raise ValueError(str(exc)) from None


def _no_snapshots(folder: Path, source: str | None = None) -> str:
    """Return the error that `folder` contains no snapshots, with how to store them.

    `source` is where the project's labels come from. Labels from an accounts
    column are the same on every date, so the advice for them is one scored date.
    """
    if source == "column":
        return (
            f"no snapshots are stored in {folder}, and {UNDATED_LABELS}; store one "
            "date with `healthscore score --as-of DATE` first"
        )
    return (
        f"no snapshots are stored in {folder}; run `healthscore backfill --from DATE "
        "--to DATE --every 1mo` first"
    )


def _fixed(value: Any, digits: int) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    return f"{float(value):.{digits}f}"


def _value(value: Any) -> str:
    import numpy as np

    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "missing"
    if isinstance(value, int | float | np.number):
        number = float(value)
        return f"{number:,.0f}" if number.is_integer() else f"{number:,.4g}"
    return str(value)
