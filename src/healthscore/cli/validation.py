"""Validation commands: `backtest`, `learn`, `drivers` and `compare`.

Each reads the stored snapshots of a range of as-of dates, labels them with churn
outcomes and measures how well scores predicted churn on later dates. `backtest` and
`compare` also store their measures under `.healthscore/models/`, where the HTML report
finds them.
"""

from __future__ import annotations

import logging
from datetime import date
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich import box
from rich.table import Table

from healthscore.cli.common import (
    JsonOption,
    ProjectOption,
    VerboseOption,
    add_folded_rows,
    fold_name,
    handle_errors,
    note,
    note_wrapped,
    open_project,
    parse_date,
    plural,
    print_json,
    say,
    say_wrapped,
    stderr_console,
    stdout_console,
    to_json,
)
from healthscore.config import Project
from healthscore.config.models import Duration, parse_duration
from healthscore.models import METHOD_KEYS

# The command bodies import the model modules, because they load scikit-learn and
# every other CLI command would pay for that at start.
# Modules that load pandas, DuckDB or SQLAlchemy are imported inside the functions
# that use them, so that `healthscore --help` does not load them.
if TYPE_CHECKING:
    import pandas as pd

    from healthscore.models.backtest import MethodResult
    from healthscore.models.dataset import Observations

logger = logging.getLogger(__name__)

#: Calibration rule of score probabilities, printed with every backtest.
CALIBRATION_RULE = (
    "Churn probabilities of a score are calibrated on the latest training date, or "
    "on all training dates when it has too few churned or retained rows "
    "(validation.min_churned)."
)

#: File name of the proposed scorecards that `learn` writes beside healthscore.yml.
PROPOSED_FILE = "healthscore.proposed.yml"

#: Exit status of `backtest` and `compare` when the labels have one class only, so
#: nothing was measured. `learn` and `train` fail with the same status then, and a
#: scheduler can tell such a run from a measured one.
NOT_MEASURED_STATUS = 1


def _parse_step(text: str) -> Duration:
    try:
        return parse_duration(text)
    except ValueError as exc:
        raise typer.BadParameter(str(exc)) from None


FromOption = Annotated[
    date | None,
    typer.Option(
        "--from",
        parser=parse_date,
        metavar="DATE",
        help="First as-of date. Default: the first stored snapshot.",
    ),
]
ToOption = Annotated[
    date | None,
    typer.Option(
        "--to",
        parser=parse_date,
        metavar="DATE",
        help="Last as-of date (included). Default: the last stored snapshot.",
    ),
]
EveryOption = Annotated[
    Duration | None,
    typer.Option(
        "--every",
        parser=_parse_step,
        metavar="DURATION",
        help="Step between as-of dates from --from (7d, 1w, 1mo); by default every "
        "stored snapshot in the range.",
    ),
]
BackfillOption = Annotated[
    bool,
    typer.Option(
        "--backfill",
        help="Score and store the dates of --from/--to/--every that have no snapshot.",
    ),
]
HistoryOption = Annotated[
    bool,
    typer.Option(
        "--history",
        help="List the stored runs, oldest first, with the time, scorecard versions "
        "and config key of each and its measures, instead of running. Only the "
        "newest validation.keep_runs runs are kept.",
    ),
]


def select_dates(
    project: Project,
    start: date | None,
    end: date | None,
    every: Duration | None,
    backfill: bool,
) -> list[date]:
    """Return the as-of dates of the options, backfilling missing ones on request.

    Raises
    ------
    typer.BadParameter
        When --from is after --to, --every lacks one of them, or --backfill comes
        without --every.
    ValueError
        When no stored snapshot falls in the range and --every is not given.
    """
    from healthscore.models.dataset import MissingSnapshotsError, snapshot_store_of
    from healthscore.models.errors import UNDATED_LABELS
    from healthscore.models.labels import label_source
    from healthscore.monitoring.backfill import backfill as run_backfill
    from healthscore.monitoring.backfill import backfill_dates

    if start is not None and end is not None and start > end:
        raise typer.BadParameter(
            f"--from {start.isoformat()} is after --to {end.isoformat()}; give a "
            "--from on or before --to"
        )
    if backfill and every is None:
        raise typer.BadParameter(
            "--backfill scores the dates of --from, --to and --every that have no "
            "snapshot, so it needs --every; without --every the stored dates are read "
            "and there is nothing to backfill"
        )
    stored = snapshot_store_of(project).dates()
    if every is None:
        first = start or (stored[0] if stored else None)
        last = end or (stored[-1] if stored else None)
        selected = [
            day
            for day in stored
            if (first is None or first <= day) and (last is None or day <= last)
        ]
        if not stored and label_source(project) == "column":
            raise ValueError(
                f"no snapshots are stored, and {UNDATED_LABELS}. Store one date with "
                "`healthscore score --as-of DATE`."
            )
        if not selected:
            error = MissingSnapshotsError([], stored, start, end)
            raise ValueError(error.describe(backfill_option=True))
        return selected
    if start is None or end is None:
        raise typer.BadParameter("--every needs --from and --to")
    dates = backfill_dates(start, end, every)
    missing = [day for day in dates if day not in set(stored)]
    if missing and backfill:
        note(f"backfilling {len(missing)} as-of dates without a snapshot")
        run_backfill(project, missing)
    return dates


def load_observations(
    project: Project,
    start: date | None,
    end: date | None,
    every: Duration | None,
    backfill: bool,
    *,
    note_label_source: bool = True,
    lead_time: bool = True,
) -> Observations:
    """Build the labelled observations of the selected dates and note their counts.

    The note names the label source too, unless `note_label_source` is False for a
    command that prints it with its results. Without `lead_time`, for a command
    that reports no lead time, a note about its absence is left out.
    """
    from healthscore.models.dataset import MissingSnapshotsError, build_observations
    from healthscore.models.labels import LeadTimeNote, describe_label_source

    dates = select_dates(project, start, end, every, backfill)
    try:
        observations = build_observations(project, dates)
    except MissingSnapshotsError as exc:
        step = str(every) if every is not None else None
        raise ValueError(exc.describe(backfill_option=True, every=step)) from None
    for line in observations.notes:
        if lead_time or not isinstance(line, LeadTimeNote):
            note_wrapped(line)
    churned, retained = observations.labelled().label_counts
    unlabelled = len(observations.frame) - churned - retained
    note_wrapped(
        f"{plural(len(observations.frame), 'observation')} on "
        f"{plural(len(_dates_with_accounts(observations)), 'as-of date')}: "
        f"{churned:,} churned, {retained:,} retained, {unlabelled:,} without a label"
    )
    empty = _empty_dates(observations)
    if empty:
        note_wrapped(
            f"{plural(len(empty), 'stored snapshot')} in the range "
            f"{'contains' if len(empty) == 1 else 'contain'} no accounts and "
            f"{'is' if len(empty) == 1 else 'are'} left out: {_dates_text(empty)}."
        )
    if note_label_source:
        note_wrapped(describe_label_source(project))
    return observations


def _dates_with_accounts(observations: Observations) -> list[date]:
    """Return the as-of dates that have at least one observation."""
    return sorted({stamp.date() for stamp in observations.frame["as_of"]})


def _empty_dates(observations: Observations) -> list[date]:
    """Return the selected as-of dates whose stored snapshot contains no accounts."""
    present = set(_dates_with_accounts(observations))
    return [day for day in observations.dates if day not in present]


def _dates_text(days: list[date]) -> str:
    """List dates, or the first and last of more than three with their count."""
    if len(days) <= 3:
        return ", ".join(day.isoformat() for day in days)
    return f"{days[0].isoformat()} to {days[-1].isoformat()} ({len(days):,} dates)"


@handle_errors
def backtest(
    start: FromOption = None,
    end: ToOption = None,
    every: EveryOption = None,
    backfill: BackfillOption = False,
    history: HistoryOption = False,
    project_dir: ProjectOption = Path("."),
    json_output: JsonOption = False,
    verbose: VerboseOption = 0,
) -> None:
    """Measure how well the scorecards predicted churn on later dates.

    The configured scorecards and every shadow scorecard are scored on time-ordered
    splits: each as-of date is predicted from the earlier dates whose outcomes were
    known by then. Each run is stored, and --history lists the stored runs. When no
    labelled observation churned, or none was retained, nothing is measured: the run
    is stored with the reason, which is printed, and the exit status is 1.
    """
    from healthscore.models.dataset import snapshot_store_of
    from healthscore.models.labels import describe_label_source

    if history:
        _reject_with_history(
            {"--from": start, "--to": end, "--every": every, "--backfill": backfill}
        )
        _print_history(open_project(project_dir), "backtest", json_output)
        return
    from healthscore.models.backtest import note_unequal_rows, run_methods
    from healthscore.models.compare import make_method
    from healthscore.models.shadow import (
        ShadowMethod,
        load_shadow_scorecards,
        read_shadow_scores,
    )

    project = open_project(project_dir)
    observations = load_observations(
        project, start, end, every, backfill, note_label_source=json_output
    )
    missing_class = _missing_label_class(observations)
    if missing_class is not None:
        # With one class only, no measure is defined and a band table would only
        # show equal churn rates, so nothing is measured.
        payload, statement = _save_unmeasured(
            project, observations, missing_class, "backtest"
        )
        if json_output:
            print_json(payload)
        else:
            for line in statement:
                say_wrapped(line)
        raise typer.Exit(code=NOT_MEASURED_STATUS)
    store = snapshot_store_of(project)
    stored_shadow = read_shadow_scores(store, observations.dates)
    methods: list[Any] = [make_method("weighted")]
    methods += [
        ShadowMethod(shadow, stored_shadow)
        for shadow in load_shadow_scorecards(project)
    ]
    results, splits = run_methods(project, observations, methods)
    note_unequal_rows(results)
    payload = _payload(results, splits, observations, project)
    _store(project, "backtest", payload, observations)
    if json_output:
        print_json(payload)
        return
    say_wrapped(describe_label_source(project))
    say_wrapped(f"Splits: {splits}.")
    say_wrapped(CALIBRATION_RULE)
    _print_measures(results, "Backtest of the scorecards")
    for result in results:
        _print_detail(result)
    _print_method_notes(results, observations)


def _missing_label_class(observations: Observations) -> str | None:
    """Return "churned" or "retained" when no labelled observation is of that class."""
    churned, retained = observations.labelled().label_counts
    if churned == 0:
        return "churned"
    if retained == 0:
        return "retained"
    return None


def _save_unmeasured(
    project: Project, observations: Observations, missing: str, command: str
) -> tuple[dict[str, Any], list[str]]:
    """Store the results of a `command` that measured nothing, with the reason.

    Returns the stored payload and the statement of why, one sentence a line.
    """
    statement = _one_class_statement(project, observations, missing)
    payload = _payload([], "none", observations, project)
    payload["note"] = " ".join(statement)
    _store(project, command, payload, observations)
    return payload, statement


#: Endings of the statement of `backtest` and `compare` when the labels have one
#: class only: without any labelled observation, and with labelled observations of
#: one class.
_NOT_MEASURED = (
    "there is nothing to backtest",
    "there is nothing to measure the scores against and no backtest was run",
)

#: Endings of the statement of `learn` when the labels have one class only, as
#: above.
_NOT_LEARNED = (
    "there is nothing to learn scorecard weights from, and no proposal was written",
    "no scorecard weights can be learned, and no proposal was written",
)


#: Endings of the statement of `drivers` when the labels have one class only, as
#: above.
_NOT_COMPARED = (
    "there are no churned and retained accounts to compare",
    "no measure can be compared between churned and retained accounts",
)


def _one_class_statement(
    project: Project,
    observations: Observations,
    missing: str,
    not_done: tuple[str, str] = _NOT_MEASURED,
) -> list[str]:
    """Explain that the labels hold one class only, where they come from, what to do.

    `not_done` gives what the command could not do, as in `_NOT_MEASURED`.
    """
    from healthscore.models.labels import (
        describe_label_source,
        label_source,
        no_label_class_advice,
    )

    churned, retained = observations.labelled().label_counts
    labelled = churned + retained
    counted = plural(labelled, "labelled observation")
    column = label_source(project) == "column"
    horizon = project.config.outcomes.horizon
    # Labels from a column have no dates, so no horizon bounds them.
    within = "" if column else f" within their {horizon} horizon"
    without_labels, with_one_class = not_done
    advice = no_label_class_advice(project, missing)
    if labelled == 0:
        first = (
            "No labelled observations: no observation has a known churn outcome, "
            f"so {without_labels}."
        )
        if column:
            advice = _empty_label_column_advice(project)
    elif missing == "churned":
        first = (
            f"No churned observations: none of the {counted} "
            f"churned{within}, so {with_one_class}."
        )
    else:
        first = (
            f"No retained observations: all {counted} "
            f"churned{within}, so {with_one_class}."
        )
    return [first, describe_label_source(project), advice]


def _empty_label_column_advice(project: Project) -> str:
    """Return what to do when no observation has a value in the label column."""
    setting = project.config.validation.label_column
    column = repr(setting.column) if setting is not None else "the label column"
    return (
        f"No account in the stored snapshots has a value in {column}: fill that "
        "column of the accounts source with each account's churn outcome."
    )


@handle_errors
def compare(
    methods: Annotated[
        str,
        typer.Option(
            "--methods",
            help="Comma-separated methods to compare.",
            show_default=",".join(METHOD_KEYS),
        ),
    ] = ",".join(METHOD_KEYS),
    shadow: Annotated[
        bool,
        typer.Option("--shadow", help="Add every shadow scorecard as a method."),
    ] = False,
    start: FromOption = None,
    end: ToOption = None,
    every: EveryOption = None,
    backfill: BackfillOption = False,
    history: HistoryOption = False,
    project_dir: ProjectOption = Path("."),
    json_output: JsonOption = False,
    verbose: VerboseOption = 0,
) -> None:
    """Compare rules, weighted, learned, ML, hybrid, survival and clusters scores.

    Every method is tested on the same time-ordered splits. With --json, prints a
    list with one object per method (method, roc_auc, roc_auc_mean_split,
    roc_auc_mean_split_count, split_count, lift_top_decile, ece, lead_time_days,
    precision_at_risk, recall_at_risk, rows, churned, fit_seconds, explainable,
    note). roc_auc is the ROC AUC of the pooled test rows. roc_auc_mean_split is
    the mean of each test date's (or fold's) own ROC AUC, over
    roc_auc_mean_split_count of the split_count splits. A split the method was
    skipped on, or whose test rows are of one class, has none. rows and churned
    count the method's test rows, which are fewer for a method skipped on some
    splits. fit_seconds and explainable are null for a method skipped on every
    split. Each run is stored, and --history lists the stored runs. When no
    labelled observation churned, or none was retained, nothing is measured: the run
    is stored with the reason, which is printed, --json prints an empty list, and
    the exit status is 1.
    """
    from healthscore.models.dataset import snapshot_store_of
    from healthscore.models.labels import describe_label_source

    if history:
        _reject_with_history(
            {
                "--methods": methods != ",".join(METHOD_KEYS),
                "--shadow": shadow,
                "--from": start,
                "--to": end,
                "--every": every,
                "--backfill": backfill,
            }
        )
        _print_history(open_project(project_dir), "compare", json_output)
        return
    from healthscore.models.backtest import note_unequal_rows, run_methods
    from healthscore.models.compare import compare_methods
    from healthscore.models.shadow import (
        ShadowMethod,
        load_shadow_scorecards,
        read_shadow_scores,
    )

    keys = _method_keys(methods)
    project = open_project(project_dir)
    observations = load_observations(
        project, start, end, every, backfill, note_label_source=False
    )
    missing_class = _missing_label_class(observations)
    if missing_class is not None:
        # As in `backtest`: with one class only, no measure is defined. The
        # statement names the label source.
        _, statement = _save_unmeasured(project, observations, missing_class, "compare")
        if json_output:
            for line in statement:
                note_wrapped(line)
            print_json([])
        else:
            for line in statement:
                say_wrapped(line)
        raise typer.Exit(code=NOT_MEASURED_STATUS)
    note_wrapped(describe_label_source(project))
    console = stderr_console()
    with console.status("comparing", spinner="dots") as status:
        comparison = compare_methods(
            project, observations, keys, progress=lambda text: status.update(text)
        )
    results = comparison.results
    if shadow:
        stored = read_shadow_scores(snapshot_store_of(project), observations.dates)
        extra = [ShadowMethod(item, stored) for item in load_shadow_scorecards(project)]
        if extra:
            more, _ = run_methods(project, observations, extra)
            results = results + more
    note_unequal_rows(results)
    payload = _payload(results, comparison.splits, observations, project)
    _store(project, "compare", payload, observations)
    if json_output:
        print_json([_compare_row(result) for result in results])
        return
    say_wrapped(f"Splits: {comparison.splits}.")
    _print_measures(results, "Comparison of scoring methods")
    _print_method_notes(results, observations)


def _method_keys(methods: str) -> list[str]:
    """Return the method keys of --methods, each once, in the order given.

    Raises typer.BadParameter, a usage error, when the list names no method or an
    unknown one, before the project's snapshots are read.
    """
    keys = [key.strip() for key in methods.split(",") if key.strip()]
    if not keys:
        raise typer.BadParameter(
            f"the list {methods!r} names no method; give one or more of "
            f"{', '.join(METHOD_KEYS)}, separated by commas",
            param_hint="--methods",
        )
    unknown = [key for key in dict.fromkeys(keys) if key not in METHOD_KEYS]
    if unknown:
        raise typer.BadParameter(
            f"unknown method {', '.join(map(repr, unknown))}; give one or more of "
            f"{', '.join(METHOD_KEYS)}, separated by commas",
            param_hint="--methods",
        )
    return list(dict.fromkeys(keys))


@handle_errors
def learn(
    output: Annotated[
        Path | None,
        typer.Option(
            "--output",
            metavar="FILE",
            help="File for the proposed scorecards, in an existing folder.",
            show_default=f"<project>/{PROPOSED_FILE}",
        ),
    ] = None,
    start: FromOption = None,
    end: ToOption = None,
    every: EveryOption = None,
    backfill: BackfillOption = False,
    project_dir: ProjectOption = Path("."),
    json_output: JsonOption = False,
    verbose: VerboseOption = 0,
) -> None:
    """Learn scorecard weights from churn outcomes and write them as a proposal.

    Fits a regularized logistic regression of churn on the measure scores of every
    labelled date, turns it into non-negative weights, writes the proposed
    scorecards beside healthscore.yml, and backtests the current and the learned
    weights on the same time-ordered splits. healthscore.yml is not changed: list
    the file under validation.shadow to score it beside the live scorecards, and
    copy its scorecards into healthscore.yml to adopt it.
    """
    from healthscore.models.backtest import run_methods
    from healthscore.models.compare import make_method
    from healthscore.models.errors import InsufficientLabels
    from healthscore.models.labels import describe_label_source
    from healthscore.models.learned import (
        proposal_header,
        propose,
        scorecard_diff,
        write_proposal,
    )

    project = open_project(project_dir)
    path = output or project.root / PROPOSED_FILE
    # Checked before --backfill stores any snapshot.
    _check_output_file(path)
    observations = load_observations(
        project, start, end, every, backfill, note_label_source=False
    )
    missing_class = _missing_label_class(observations)
    if missing_class is not None:
        statement = _one_class_statement(
            project, observations, missing_class, _NOT_LEARNED
        )
        raise ValueError(" ".join(statement))
    note_wrapped(describe_label_source(project))
    proposal = propose(project, observations)
    # The backtest runs first, so a failure leaves no proposal file behind.
    try:
        results, splits = run_methods(
            project, observations, [make_method("weighted"), make_method("learned")]
        )
    except InsufficientLabels as exc:
        raise exc.with_action(
            "backtest the current and the learned scorecard weights"
        ) from None
    write_proposal(proposal, path, proposal_header(project, proposal))
    diff = scorecard_diff(project.config.scorecards, proposal.scorecards)
    if json_output:
        print_json(
            {
                "proposal": str(path),
                "learned": proposal.learned,
                "headline": proposal.headline,
                "weights": to_json(proposal.weights.to_dict("records")),
                "notes": proposal.notes,
                "diff": diff,
                "splits": splits,
                "backtest": [result.to_dict() for result in results],
            }
        )
        return
    say_wrapped(proposal.headline)
    for line in proposal.notes:
        note_wrapped(line)
    stdout_console().print(
        _weights_table(proposal.weights, learned=bool(proposal.learned))
    )
    stdout_console().print(
        diff or "The proposed scorecards equal the current ones.",
        markup=False,
        highlight=False,
    )
    say_wrapped(f"Splits: {splits}.")
    _print_measures(results, "Backtest: current and learned weights")
    _print_method_notes(results, observations)
    say_wrapped(f"Wrote the proposed scorecards to {path}.")


def _check_output_file(path: Path) -> None:
    """Raise a usage error unless `path` names a file in an existing folder."""
    if path.is_dir():
        raise typer.BadParameter(
            f"{path} is a folder; give a file name, such as {path / PROPOSED_FILE}",
            param_hint="--output",
        )
    folder = path.parent
    if folder.exists() and not folder.is_dir():
        raise typer.BadParameter(
            f"{folder}, the folder of {path}, is not a folder; give a file in a folder",
            param_hint="--output",
        )
    if not folder.exists():
        raise typer.BadParameter(
            f"{folder}, the folder of {path}, does not exist; create it first or "
            "give a file in an existing folder",
            param_hint="--output",
        )


def _weights_table(
    weights: pd.DataFrame, width: int | None = None, learned: bool = True
) -> Table:
    """Tabulate the current and proposed weights to fit `width` columns."""
    title = "Learned weights" if learned else "Configured weights, kept"
    table = Table(title=f"{title} (share of the score)")
    for column in ("scorecard", "component", "measure"):
        # Long names break after underscores, hyphens and spaces, not inside words.
        table.add_column(column, overflow="fold")
    for column in ("current", "proposed", "change"):
        table.add_column(column, justify="right", no_wrap=True)
    rows = [
        (
            str(row.scorecard),
            str(row.component),
            str(row.measure),
            f"{row.current:.1%}",
            f"{row.proposed:.1%}",
            f"{row.change:+.1%}",
        )
        for row in weights.itertuples()
    ]
    add_folded_rows(table, rows, width)
    return table


@handle_errors
def drivers(
    start: FromOption = None,
    end: ToOption = None,
    every: EveryOption = None,
    backfill: BackfillOption = False,
    project_dir: ProjectOption = Path("."),
    json_output: JsonOption = False,
    verbose: VerboseOption = 0,
) -> None:
    """Show which measures separate churned from retained accounts in each segment.

    AUC is the chance that a retained account scored higher on the measure than a
    churned one: 0.5 means no separation. A segment with fewer than
    validation.min_churned churned or retained observations is left out. When no
    labelled observation churned, or none was retained, or every segment is left
    out, the reason and what to do are printed, and the exit status is 1.
    """
    from healthscore.models.drivers import NoSegmentCompared, segment_drivers

    project = open_project(project_dir)
    observations = load_observations(
        project, start, end, every, backfill, lead_time=False
    )
    missing_class = _missing_label_class(observations)
    if missing_class is not None:
        statement = _one_class_statement(
            project, observations, missing_class, _NOT_COMPARED
        )
        raise ValueError(" ".join(statement))
    try:
        frame, notes = segment_drivers(
            observations, project.config.validation.min_churned
        )
    except NoSegmentCompared as exc:
        for line in exc.notes:
            note_wrapped(line)
        raise
    if json_output:
        print_json({"drivers": to_json(frame.to_dict("records")), "notes": notes})
        return
    for line in notes:
        note_wrapped(line)
    table = Table(title="Measures that separate churned from retained accounts")
    for column in (
        "segment",
        "measure",
        "churned mean",
        "retained mean",
        "difference",
        "AUC",
    ):
        text = column in ("segment", "measure")
        table.add_column(column, justify="left" if text else "right", overflow="fold")
    for row in frame.itertuples():
        table.add_row(
            row.segment,
            row.measure,
            f"{row.churned_mean:.1f}",
            f"{row.retained_mean:.1f}",
            f"{row.difference:+.1f}",
            f"{row.auc:.3f}",
        )
    stdout_console().print(table)


# Stored runs


def _reject_with_history(options: dict[str, object]) -> None:
    """Raise a usage error naming the options given with --history."""
    given_options = ", ".join(name for name, value in options.items() if value)
    if given_options:
        raise typer.BadParameter(
            f"--history lists the stored runs and takes no {given_options}; run the "
            "command without --history to measure again"
        )


def _store(
    project: Project,
    command: str,
    payload: dict[str, Any],
    observations: Observations,
) -> None:
    """Store the results of `command` as a new run, with the versions it measured."""
    from healthscore.models.dataset import snapshot_store_of
    from healthscore.models.persist import save_results

    store = snapshot_store_of(project)
    found: dict[str, set[str]] = {}
    for day in observations.dates:
        try:
            versions = store.run_info(day).get("scorecard_versions") or {}
        except (OSError, ValueError) as exc:
            # The versions are a record only, so a missing run.json stores none.
            logger.warning("no scorecard versions for %s: %s", day, exc)
            continue
        for name, version in versions.items():
            found.setdefault(name, set()).add(version)
    versions_by_card = {name: sorted(found[name]) for name in sorted(found)}
    save_results(project, command, payload, snapshot_versions=versions_by_card)


def _print_history(project: Project, command: str, json_output: bool) -> None:
    """Print the stored runs of `command`, oldest first, with their measures."""
    from healthscore.models.persist import list_runs

    summaries = [_run_summary(stored) for stored in list_runs(project, command)]
    if json_output:
        print_json(summaries)
        return
    if not summaries:
        say(f"No {command} runs are stored; run `healthscore {command}` to store one.")
        return

    # One row per measured method. The first row of a run describes the run on
    # several lines, so the table fits 80 characters.
    table = Table(title=f"Stored {command} runs, oldest first", box=box.SIMPLE_HEAD)
    table.add_column("run", overflow="fold")
    table.add_column("method", overflow="fold")
    for header in ("ROC AUC", "lift top 10%", "ECE"):
        table.add_column(header, justify="right")
    for summary in summaries:
        methods = summary["methods"] or [{"method": "none measured"}]
        for position, method in enumerate(methods):
            table.add_row(
                _run_cell(summary) if position == 0 else "",
                str(method["method"]),
                _stored_number(method.get("roc_auc"), 3),
                _stored_number(method.get("lift_top_decile"), 2),
                _stored_number(method.get("ece"), 4),
                end_section=position == len(methods) - 1,
            )
    stdout_console().print(table)

    for summary in summaries:
        older = _older_snapshot_versions(summary)
        if older:
            note_wrapped(
                f"The run of {_run_time(summary)} measured scores stored under "
                f"other scorecard versions ({older}); rescore those dates with "
                "`healthscore backfill` to measure the configured scorecards."
            )
    if any(summary["unrecorded"] for summary in summaries):
        note_wrapped(
            "Runs with unknown scorecard versions and config key were stored before "
            "each run was kept; their time is the time their file was last written."
        )
    note_wrapped(_kept_runs_statement(project, command, len(summaries)))


def _kept_runs_statement(project: Project, command: str, listed: int) -> str:
    """Return a note on how many runs of `command` are kept, and the setting."""
    keep = project.config.validation.keep_runs
    kept_phrase = (
        f"Only the newest {command} run is kept"
        if keep == 1
        else f"The newest {keep:,} {command} runs are kept"
    )
    statement = (
        f"{kept_phrase}, and older ones are deleted after each run. Set "
        "validation.keep_runs in healthscore.yml to keep more or fewer."
    )
    if listed > keep:
        statement += (
            f" {plural(listed, 'run')} are stored now, more than {keep}, so the next "
            "run deletes the oldest of them."
        )
    return statement


def _run_summary(stored: dict[str, Any]) -> dict[str, Any]:
    """Return the run information and headline measures of one stored run."""
    run = stored["run"]
    dates = stored.get("dates") or []
    return {
        "id": run["id"],
        "created_at": run["created_at"],
        "scorecard_versions": run["scorecard_versions"],
        "config_key": run["config_key"],
        "healthscore_version": run["healthscore_version"],
        "snapshot_scorecard_versions": run.get("snapshot_scorecard_versions"),
        "unrecorded": run["config_key"] is None,
        "first_date": dates[0] if dates else None,
        "last_date": dates[-1] if dates else None,
        "date_count": len(dates),
        "churned": stored.get("churned"),
        "retained": stored.get("retained"),
        "splits": stored.get("splits"),
        "methods": [
            {
                key: method.get(key)
                for key in ("method", "roc_auc", "lift_top_decile", "ece", "rows")
            }
            for method in stored.get("methods") or []
        ],
        "note": stored.get("note"),
    }


def _run_time(summary: dict[str, Any]) -> str:
    """Return the UTC time of a run to the second, as `2026-06-01 12:00:00 UTC`."""
    return summary["created_at"][:19].replace("T", " ") + " UTC"


def _run_cell(summary: dict[str, Any]) -> str:
    """Describe a run on lines: time, config key, scorecard versions, as-of dates."""
    versions = summary["scorecard_versions"]
    lines = [_run_time(summary), f"config key {summary['config_key'] or 'unknown'}"]
    if versions is None:
        lines.append("scorecard versions unknown")
    else:
        lines += [f"{name} {version}" for name, version in versions.items()]
    if summary["date_count"]:
        lines.append(
            f"{summary['first_date']} to {summary['last_date']} "
            f"({plural(summary['date_count'], 'date')})"
        )
    return "\n".join(lines)


def _older_snapshot_versions(summary: dict[str, Any]) -> str:
    """Name the versions of a run's snapshots that differ from its configured ones.

    Returns "" when every snapshot the run measured was scored under the scorecard
    versions configured at the run, or when the run did not record them.
    """
    configured = summary["scorecard_versions"] or {}
    stored = summary["snapshot_scorecard_versions"] or {}
    other = [
        f"{name} {version}"
        for name, versions in stored.items()
        for version in versions
        if version != configured.get(name)
    ]
    return ", ".join(other)


def _stored_number(value: float | None, digits: int) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


# Output


def _payload(
    results: list[MethodResult],
    splits: str,
    observations: Observations,
    project: Project,
) -> dict[str, Any]:
    """Return the results to store and print as JSON.

    `dates` lists the as-of dates with accounts, and `empty_dates` the selected
    dates whose stored snapshot contains none. `notes` are the notes of the labels
    and `method_notes` those of the methods, as the command prints them, so the
    report and the dashboard show the same notes.
    """
    from healthscore.models.labels import describe_label_source, label_source

    churned, retained = observations.labelled().label_counts
    return {
        "splits": splits,
        "dates": [day.isoformat() for day in _dates_with_accounts(observations)],
        "empty_dates": [day.isoformat() for day in _empty_dates(observations)],
        "label_source": label_source(project),
        "labels": describe_label_source(project),
        "churned": churned,
        "retained": retained,
        "notes": observations.notes,
        "method_notes": method_note_lines(results, observations),
        "methods": [result.to_dict() for result in results],
    }


def _compare_row(result: MethodResult) -> dict[str, Any]:
    data = result.to_dict()
    keys = (
        "method",
        "roc_auc",
        "roc_auc_mean_split",
        "roc_auc_mean_split_count",
        "split_count",
        "lift_top_decile",
        "ece",
        "lead_time_days",
        "precision_at_risk",
        "recall_at_risk",
        "rows",
        "churned",
        "fit_seconds",
        "explainable",
        "note",
    )
    return {key: data[key] for key in keys}


def _measure_row(result: MethodResult, test_rows: bool = False) -> tuple[str, ...]:
    """Return the cells of one method's row in the measures table.

    With `test_rows`, the second cell is the number of the method's test rows.
    """
    # A method skipped on every split has no scores to time or explain.
    fit, explainable = "-", "-"
    if result.rows:
        fit = f"{result.fit_seconds:.2f}"
        explainable = "yes" if result.explainable else "no"
    counted = (f"{result.rows:,}" if result.rows else "-",) if test_rows else ()
    return (
        result.method,
        *counted,
        _fixed(result.roc_auc, 3),
        _fixed(result.lift_top_decile, 2),
        _fixed(result.ece, 4),
        _fixed(result.lead_time_days, 1),
        _percent(result.precision_at_risk),
        _percent(result.recall_at_risk),
        fit,
        explainable,
    )


def _print_measures(results: list[MethodResult], title: str) -> None:
    """Print the measures table, with a column of test rows when they differ."""
    test_rows = len({result.rows for result in results if result.rows}) > 1
    headers = (
        "method",
        *(("test rows",) if test_rows else ()),
        "ROC AUC",
        "lift top 10%",
        "ECE",
        "lead time (days)",
        "at-risk precision",
        "at-risk recall",
        "fit (s)",
        "explainable",
    )
    rows = [_measure_row(result, test_rows) for result in results]
    # Each column is as wide as its longest value or header word, so the headers
    # wrap by word and the table fits 80 characters without cutting a method name.
    # The column of test rows takes the room of one padding space per column.
    table = Table(
        title=title,
        box=box.SIMPLE_HEAD,
        padding=(0, 0 if test_rows else 1, 0, 0),
        pad_edge=False,
    )
    widths = [
        max(
            [len(word) for word in header.split()]
            + [len(row[position]) for row in rows]
        )
        for position, header in enumerate(headers)
    ]
    # A long method name, such as a shadow scorecard's, folds within the room that
    # the number columns leave. The separators take one character per column and
    # one more at the edge. Without the column of test rows, every column but the
    # last also takes one character of padding.
    console = stdout_console()
    spacing = len(widths) + 1 if test_rows else 2 * len(widths)
    room = console.width - sum(widths[1:]) - spacing
    widths[0] = max(8, min(widths[0], room))
    for position, header in enumerate(headers):
        table.add_column(
            header,
            justify="left" if position == 0 else "right",
            width=widths[position],
            overflow="fold",
        )
    for row in rows:
        table.add_row(fold_name(row[0], widths[0]), *row[1:])
    console.print(table)


def _print_detail(result: MethodResult) -> None:
    if result.bands:
        table = Table(title=f"Churn per band: {result.method}")
        for header in ("band", "observations", "churned", "churn rate"):
            table.add_column(header, justify="left" if header == "band" else "right")
        for rate in result.bands:
            table.add_row(
                rate.band, f"{rate.rows:,}", f"{rate.churned:,}", _percent(rate.rate)
            )
        stdout_console().print(table)
        if result.band_falls is True:
            say("The churn rate falls from each band to the next healthier one.")
        elif result.band_falls is False:
            say(
                "The churn rate does not fall from each band to the next healthier one."
            )
    if not result.reliability.empty:
        table = Table(title=f"Reliability of {result.method} ({result.calibration})")
        for header in (
            "probability bin",
            "observations",
            "mean probability",
            "churn rate",
        ):
            table.add_column(header, justify="right")
        for row in result.reliability.itertuples():
            table.add_row(
                f"{row.lower:.1f}-{row.upper:.1f}",
                f"{row.rows:,}",
                _percent(row.predicted),
                _percent(row.observed),
            )
        stdout_console().print(table)


def _print_method_notes(
    results: list[MethodResult], observations: Observations
) -> None:
    """Print the notes of every method, as `method_note_lines` returns them."""
    for line in method_note_lines(results, observations):
        note_wrapped(line)


def method_note_lines(
    results: list[MethodResult], observations: Observations
) -> list[str]:
    """Return the notes of every method, each after the names of its methods.

    A `SharedNote`, such as one about the test rows, comes once after the names of
    the methods that have it.

    When the labels' own notes, printed with the observation counts, already explain
    the missing lead time, the methods' lead-time notes are left out. Otherwise each
    distinct lead-time note comes once, after the names of its methods.
    """
    from healthscore.models.backtest import SharedNote
    from healthscore.models.labels import LeadTimeNote

    explained = any(isinstance(line, LeadTimeNote) for line in observations.notes)
    lines: list[str] = []
    lead_time: dict[str, list[str]] = {}
    shared: dict[str, list[str]] = {}
    for result in results:
        for line in result.grouped_notes():
            if isinstance(line, LeadTimeNote):
                lead_time.setdefault(line, []).append(result.method)
            elif isinstance(line, SharedNote):
                shared.setdefault(line, []).append(result.method)
            else:
                lines.append(f"{result.method}: {line}")
    for line, methods in shared.items():
        lines.append(f"{', '.join(methods)}: {line}")
    if explained:
        return lines
    for line, methods in lead_time.items():
        lines.append(f"{', '.join(methods)}: {line}")
    return lines


def _fixed(value: float, digits: int) -> str:
    return "-" if value != value else f"{value:.{digits}f}"


def _percent(value: float) -> str:
    return "-" if value != value else f"{value:.1%}"
