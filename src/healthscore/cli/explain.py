"""The `explain` command: what makes up one account's score, and why it changed."""

from __future__ import annotations

import io
import math
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich import box
from rich.table import Table

from healthscore.cli.common import (
    AsOfOption,
    JsonOption,
    ProjectOption,
    StepProgress,
    VerboseOption,
    handle_errors,
    note,
    open_project,
    parse_date,
    plain_console,
    print_json,
    say,
    say_wrapped,
    stdout_console,
    to_json,
)
from healthscore.cli.display import format_whole, percent
from healthscore.config import Project

# Modules that load pandas, DuckDB or SQLAlchemy are imported inside the functions
# that use them, so that `healthscore --help` does not load them.
if TYPE_CHECKING:
    import pandas as pd

    from healthscore.engine import Engine
    from healthscore.store.snapshots import SnapshotStore


class AccountNotScoredError(ValueError):
    """An account id that has no row in the scores of a date."""


@dataclass
class AccountScore:
    """One account's row of the scores table and its rows of the measures table."""

    account_id: str
    as_of: date
    score: pd.Series
    measures: pd.DataFrame
    stored: bool
    version: str | None = None
    """Version of the scorecard that scored the account (see
    `Project.scorecard_version`); None when the snapshot does not record it."""


def warn_if_outdated(project: Project, store: SnapshotStore, as_of: date) -> None:
    """Say so when a snapshot was scored with scorecards that have changed since.

    The advice is a one-date backfill, because `healthscore score` would also check
    the alert rules and run the playbooks for that past date.
    """
    from healthscore import pipeline
    from healthscore.cli.history import rescore_command

    stored = store.run_info(as_of).get("scorecard_versions", {})
    current = pipeline.scorecard_versions(project)
    if stored != current:
        note(
            f"The snapshot of {as_of.isoformat()} was scored with other scorecards "
            "than healthscore.yml now holds, so it shows the scores as they were; "
            f"run `{rescore_command(project, [as_of])}` to rescore it without "
            "checking alert rules."
        )


def stored_scorecard_versions(run_info: dict[str, Any]) -> dict[str, str]:
    """Return the scorecard versions by name from a snapshot's `run.json` contents.

    The result is empty for a snapshot that records no versions.
    """
    versions = run_info.get("scorecard_versions", {})
    return {str(name): str(value) for name, value in versions.items()}


class ScoreReader:
    """Reads the scores of dates from stored snapshots, computing missing dates.

    A date without a snapshot is scored with `store=False`; the sources are read
    once, however many dates need it.
    """

    def __init__(self, project: Project, show_progress: bool) -> None:
        from healthscore import pipeline

        self.project = project
        self.show_progress = show_progress
        self.store = pipeline.snapshot_store(project)
        self._engine: Engine | None = None

    def account(self, account_id: str, as_of: date) -> AccountScore:
        """Read one account's score and measures as of `as_of`.

        Raises
        ------
        AccountNotScoredError
            When the account is not in the scores of that date, or matches no
            scorecard.
        """
        from healthscore.metrics.membership import describe_outside_population
        from healthscore.scoring import UNSCORED

        scores, measures, stored = self._tables(as_of)
        rows = scores[scores["account_id"] == account_id]
        if rows.empty:
            excluded = self._excluded_account_row(account_id)
            reason = (
                describe_outside_population(
                    self.project, self._engine, account_id, as_of, stored=stored
                )
                if excluded is None
                else f"its row in the accounts source is excluded ({excluded})"
            )
            raise AccountNotScoredError(
                f"account {account_id!r} was not scored as of {as_of.isoformat()}: "
                f"{reason}"
            )
        row = rows.iloc[0]
        if row["band"] == UNSCORED:
            raise AccountNotScoredError(
                f"account {account_id!r} matches no scorecard as of "
                f"{as_of.isoformat()}, so it has no score; check the scorecards' when "
                "conditions"
            )
        own = measures[measures["account_id"] == account_id].reset_index(drop=True)
        version = self._versions(as_of, stored).get(str(row["scorecard"]))
        return AccountScore(account_id, as_of, row, own, stored, version)

    def _versions(self, as_of: date, stored: bool) -> dict[str, str]:
        """Return the scorecard versions that scored `as_of`: stored, or current."""
        from healthscore import pipeline

        if stored:
            return stored_scorecard_versions(self.store.run_info(as_of))
        return pipeline.scorecard_versions(self.project)

    def _excluded_account_row(self, account_id: str) -> str | None:
        """Return the problem of the account's excluded row in the accounts source.

        None when the accounts source has no such row, or cannot be read now.
        """
        from healthscore.config import ConfigError
        from healthscore.errors import SourceError
        from healthscore.pipeline import open_engine

        try:
            if self._engine is None:
                self._engine = open_engine(self.project)
            found = self._engine.sources.account_row_problems([account_id])
        except (SourceError, ConfigError):
            return None
        row = found.get(account_id)
        return None if row is None else str(row)

    def _tables(self, as_of: date) -> tuple[pd.DataFrame, pd.DataFrame, bool]:
        from healthscore import pipeline
        from healthscore.pipeline import open_engine

        if self.store.exists(as_of):
            warn_if_outdated(self.project, self.store, as_of)
            scores = self.store.read(as_of, "scores")
            return scores, self.store.read(as_of, "measures"), True
        note(
            f"No snapshot of {as_of.isoformat()}; computing the scores without storing "
            f"them (run `healthscore score --as-of {as_of.isoformat()}` to store them)."
        )
        with StepProgress(enabled=self.show_progress) as progress:
            if self._engine is None:
                progress("reading sources")
                self._engine = open_engine(self.project)
            run = pipeline.score(
                self.project,
                as_of,
                engine=self._engine,
                store=False,
                progress=progress,
            )
        return run.result.scores, run.result.measures, False


@handle_errors
def explain(
    account: Annotated[
        str, typer.Argument(metavar="ACCOUNT", help="Account id, as in the accounts.")
    ],
    as_of: AsOfOption,
    compare_to: Annotated[
        date | None,
        typer.Option(
            "--compare-to",
            parser=parse_date,
            metavar="YYYY-MM-DD",
            help="Other date to compare with: the change from its score to the score "
            "as of --as-of is split into one part per measure.",
        ),
    ] = None,
    model: Annotated[
        bool,
        typer.Option(
            "--model",
            help="Show the trained churn model's probability and the features that "
            "move it most, instead of the score (run `healthscore train` first).",
        ),
    ] = False,
    project_dir: ProjectOption = Path("."),
    json_output: JsonOption = False,
    verbose: VerboseOption = 0,
) -> None:
    """Show each measure's value, normalized score, weight and contribution."""
    from healthscore.scoring import explain_account, explain_change

    project = open_project(project_dir)
    if model:
        from healthscore.cli.prediction import explain_model, print_model_explanation

        if compare_to is not None:
            raise typer.BadParameter(
                "--model explains one date; leave out --compare-to",
                param_hint="--compare-to",
            )
        result = explain_model(project, account, as_of)
        if json_output:
            print_json(result)
        else:
            print_model_explanation(result)
        return
    reader = ScoreReader(project, show_progress=not json_output)
    after = reader.account(account, as_of)
    if compare_to is None:
        table = explain_account(after.measures, after.score)
        if json_output:
            print_json(_account_json(after, table))
        else:
            _print_account(project, after, table)
        return
    before = reader.account(account, compare_to)
    parts = explain_change(before.measures, before.score, after.measures, after.score)
    if json_output:
        print_json(_change_json(before, after, parts))
    else:
        _print_change(project, before, after, parts)


# One date


def _print_account(project: Project, scored: AccountScore, table: pd.DataFrame) -> None:
    from healthscore.report.summary import band_style
    from healthscore.scoring import OVERRIDE

    row = scored.score
    label = band_style(project.config.bands).get(str(row["band"]), (row["band"], ""))[0]
    say_wrapped(
        f"Account {scored.account_id} as of {scored.as_of.isoformat()}: score "
        f"{_points(row['score'])}, band {label} (scorecard {row['scorecard']}, "
        f"coverage {percent(_number(row['coverage']))})."
    )
    if _present(row.get("override_reason")):
        computed = _points(row["computed_score"])
        say_wrapped(
            f"The score is set by an override of {row['override_author']}: "
            f"{row['override_reason']} (computed score {computed})."
        )
    stdout_console().print(_account_table(table))
    say_wrapped(
        "Points: what the measure adds to the score (normalized score × weight). "
        "Lost: what it would add at 100, minus Points."
    )
    total = math.fsum(table["contribution"].fillna(0.0).to_numpy(dtype="float64"))
    say_wrapped(
        f"The contributions add up to {total:.2f}; the score is "
        f"{_points(row['score'], 2)}."
    )
    for sentence in _missing_sentences(table[table["kind"] != OVERRIDE]):
        say_wrapped(sentence)


def _missing_sentences(measures: pd.DataFrame) -> list[str]:
    """Describe where the weight of the measures without a value went.

    A measure's weight goes to the measures of its component that have a value,
    and the weight of a component with none goes to the other components.
    """
    import numpy as np
    import pandas as pd

    missing = measures[measures["normalized"].isna()]
    with_value = set(measures.loc[measures["normalized"].notna(), "component"])
    sentences = []
    infinite: list[str] = []
    if "value" in missing:
        numbers = pd.to_numeric(missing["value"], errors="coerce").to_numpy("float64")
        infinite = list(missing.loc[np.isinf(numbers), "measure"])
    if infinite:
        # Scoring leaves out values beyond the float64 range, as missing ones.
        one = len(infinite) == 1
        subject, verb, pronoun = (
            ("value", "is", "it") if one else ("values", "are", "them")
        )
        sentences.append(
            f"The {subject} of {_joined(infinite)} {verb} infinite, beyond the "
            f"float64 range, so scoring leaves {pronoun} out as missing."
        )
    if len(missing) and not with_value:
        return [
            *sentences,
            "No measure has a value, so the scorecard computes no score.",
        ]
    partly = missing[missing["component"].isin(with_value)]
    for component, rows in partly.groupby("component", sort=False):
        names = _joined(rows["measure"])
        if len(rows) == 1:
            sentences.append(
                f"Measure {names} has no value, so its weight went to the other "
                f"measures of component {component}."
            )
        else:
            sentences.append(
                f"Measures {names} have no value, so their weight went to the other "
                f"measures of component {component}."
            )
    empty = list(
        dict.fromkeys(missing.loc[~missing["component"].isin(with_value), "component"])
    )
    if len(empty) == 1:
        sentences.append(
            f"Component {empty[0]} has no measure with a value, so its weight went "
            "to the other components."
        )
    elif empty:
        sentences.append(
            f"Components {_joined(empty)} have no measure with a value, so their "
            "weight went to the other components."
        )
    return sentences


def _joined(names: Any) -> str:
    """Join names as `a`, `a and b` or `a, b and c`."""
    texts = [str(name) for name in names]
    if len(texts) == 1:
        return texts[0]
    return f"{', '.join(texts[:-1])} and {texts[-1]}"


#: Longer measure names are folded, so that the number columns keep their room.
_MAX_NAME_WIDTH = 30
#: Width that the Value column keeps at least; longer values wrap.
_VALUE_WIDTH = 8


def _account_table(table: pd.DataFrame, width: int | None = None) -> Table:
    from healthscore.scoring import OVERRIDE

    rows: list[tuple[str, ...]] = []
    for row in table.itertuples():
        if row.kind == OVERRIDE:
            rows.append((
                "score override", "-", _points(row.normalized), "-",
                _signed(row.contribution), _points(row.points_lost),
            ))  # fmt: skip
            continue
        marker = " (overridden)" if bool(row.overridden) else ""
        rows.append(
            (
                f"{row.measure}{marker}",
                _value(row.value, row.value_text),
                _points(row.normalized),
                _weight(row.weight, row.effective_weight),
                _points(row.contribution, 2),
                _points(row.points_lost),
            )
        )
    numbers = ("Normalized", "Weight", "Points", "Lost")
    title = "Measures, largest points lost first"
    return _fitted(title, numbers, rows, 16, width)


def _fitted(
    title: str,
    numbers: tuple[str, ...],
    rows: list[tuple[str, ...]],
    value_width: int,
    width: int | None,
) -> Table:
    """Return the table of Measure, Value and the `numbers` columns that fits `width`.

    Rich folds a name without spaces at any letter once its column is too narrow,
    and when a table is too wide it narrows the widest column first and may crop
    the last one. So this lays the table out with the Measure column at the
    longest name's width (16 to 30) and the Value column at `value_width`, then
    narrower ones, until every column header shows whole within `width`. The
    number columns never wrap.
    """

    def build(measure: int, value: int) -> Table:
        view = Table(title=title, box=box.SIMPLE_HEAD, title_justify="left")
        view.add_column("Measure", min_width=measure, overflow="fold")
        view.add_column("Value", max_width=value, overflow="fold", justify="right")
        for column in numbers:
            view.add_column(column, justify="right", no_wrap=True)
        for cells in rows:
            view.add_row(*cells)
        return view

    if width is None:
        width = stdout_console().width
    longest = max([16, *(len(line) for row in rows for line in row[0].splitlines())])
    view = build(16, _VALUE_WIDTH)
    for measure in range(min(longest, _MAX_NAME_WIDTH), 15, -1):
        for value in range(value_width, _VALUE_WIDTH - 1, -1):
            view = build(measure, value)
            if _headers_fit(view, width):
                return view
    return view


def _headers_fit(view: Table, width: int) -> bool:
    """Tell whether every column header of `view` shows whole at `width`."""
    console = plain_console(width=width, file=io.StringIO(), record=True)
    console.print(view)
    lines = console.export_text().splitlines()
    header = next((line for line in lines if line.split()[:1] == ["Measure"]), "")
    return all(str(column.header) in header for column in view.columns)


def _weight(configured: Any, effective: Any) -> str:
    """Effective share of the score, with the configured one when they differ."""
    used = _number(effective)
    planned = _number(configured)
    if used is None or planned is None or math.isclose(used, planned):
        return percent(used)
    # Two lines keep the column narrow, which leaves more width for the names.
    return f"{percent(used)}\n(of {percent(planned)})"


def _account_json(scored: AccountScore, table: pd.DataFrame) -> dict[str, Any]:
    row = scored.score
    return {
        "account_id": scored.account_id,
        "as_of": scored.as_of,
        "stored": scored.stored,
        "scorecard": row["scorecard"],
        "score": row["score"],
        "computed_score": row["computed_score"],
        "band": row["band"],
        "coverage": row["coverage"],
        "override_reason": _optional(row.get("override_reason")),
        "override_author": _optional(row.get("override_author")),
        "measures": to_json(table.to_dict(orient="records")),
    }


# Change between two dates


def _print_change(
    project: Project, before: AccountScore, after: AccountScore, parts: pd.DataFrame
) -> None:
    from healthscore.scoring import change_total

    change = float(after.score["score"]) - float(before.score["score"])
    say_wrapped(
        f"Account {after.account_id}: score {_points(before.score['score'], 2)} as of "
        f"{before.as_of.isoformat()}, {_points(after.score['score'], 2)} as of "
        f"{after.as_of.isoformat()}."
    )
    changed = _scorecard_change(before, after)
    if changed is not None:
        say_wrapped(changed)
    stdout_console().print(_change_table(parts))
    if _has_absent_measure(parts):
        say_wrapped(
            "n/a: the measure is not in the account's scorecard on that date. -: the "
            "measure has no value."
        )
    say(f"Sum of the parts: {change_total(parts):+.2f}")
    say(f"Change of the score: {change:+.2f}")


def _scorecard_change(before: AccountScore, after: AccountScore) -> str | None:
    """Describe how the account's scorecard differs between the dates, or return None.

    A scorecard of the same name differs when its version does, that is when its
    measures, weights, metrics or the bands changed.
    """
    old = str(before.score["scorecard"])
    new = str(after.score["scorecard"])
    first = before.as_of.isoformat()
    second = after.as_of.isoformat()
    if old != new:
        return (
            f"The scorecard changed: {old} scored the account as of {first} and {new} "
            f"as of {second}, so part of the change comes from the change of "
            "scorecard, not from the account."
        )
    if before.version is None or after.version is None:
        return None
    if before.version != after.version:
        return (
            f"Scorecard {new} changed between the dates (version {before.version} as "
            f"of {first}, {after.version} as of {second}), so part of the change comes "
            "from its new settings, not from the account."
        )
    return None


def scorecard_change_fields(
    before: AccountScore, after: AccountScore
) -> dict[str, Any]:
    """Return the scorecards of both dates, their versions and `scorecard_changed`.

    `scorecard_changed` is true when the text output describes a change of scorecard
    (see `_scorecard_change`). The API's explanation returns the same fields.
    """
    return {
        "scorecard": str(after.score["scorecard"]),
        "compare_scorecard": str(before.score["scorecard"]),
        "scorecard_version": after.version,
        "compare_scorecard_version": before.version,
        "scorecard_changed": _scorecard_change(before, after) is not None,
    }


def _has_absent_measure(parts: pd.DataFrame) -> bool:
    """Tell whether a measure part is missing from the scorecard of either date."""
    from healthscore.scoring import MEASURE

    measures = parts[parts["kind"] == MEASURE]
    absent = measures["component_before"].isna() | measures["component_after"].isna()
    return bool(absent.any())


def _change_table(parts: pd.DataFrame, width: int | None = None) -> Table:
    from healthscore.scoring import OVERRIDE

    rows: list[tuple[str, ...]] = []
    for row in parts.itertuples():
        if row.kind == OVERRIDE:
            rows.append((
                "score override", "-", "-",
                _arrow(row.contribution_before, row.contribution_after, 2),
                _signed(row.change),
            ))  # fmt: skip
            continue
        in_before = _present(row.component_before)
        in_after = _present(row.component_after)
        rows.append(
            (
                _part_name(row),
                f"{_side(_value(row.value_before, row.value_text_before), in_before)}"
                f" → {_side(_value(row.value_after, row.value_text_after), in_after)}",
                f"{_side(_points(row.normalized_before), in_before)} → "
                f"{_side(_points(row.normalized_after), in_after)}",
                f"{_side(_points(row.contribution_before, 2), in_before)} → "
                f"{_side(_points(row.contribution_after, 2), in_after)}",
                _signed(row.change),
            )
        )
    numbers = ("Normalized", "Points", "Change")
    return _fitted("Change per measure, largest first", numbers, rows, 20, width)


def _part_name(row: Any) -> str:
    """Name a measure part, with its component or metric on a second line when
    they differ between the dates."""
    name = str(row.measure)
    if not (_present(row.component_before) and _present(row.component_after)):
        return name
    moves = []
    if row.component_before != row.component_after:
        moves.append(f"(component {row.component_before} → {row.component_after})")
    if row.metric_before != row.metric_after:
        moves.append(f"(metric {row.metric_before} → {row.metric_after})")
    return "\n".join([name, *moves])


def _side(text: str, in_scorecard: bool) -> str:
    """Return `text`, or n/a for a measure that is not in the scorecard."""
    return text if in_scorecard else "n/a"


def _change_json(
    before: AccountScore, after: AccountScore, parts: pd.DataFrame
) -> dict[str, Any]:
    from healthscore.scoring import change_total

    return {
        "account_id": after.account_id,
        "as_of": after.as_of,
        "compare_to": before.as_of,
        **scorecard_change_fields(before, after),
        "score": after.score["score"],
        "compare_score": before.score["score"],
        "change": float(after.score["score"]) - float(before.score["score"]),
        "sum_of_parts": change_total(parts),
        "parts": to_json(parts.to_dict(orient="records")),
    }


# Formatting


def _number(value: Any) -> float | None:
    return None if not _present(value) else float(value)


def _present(value: Any) -> bool:
    import pandas as pd

    return value is not None and not (pd.api.types.is_scalar(value) and pd.isna(value))


def _optional(value: Any) -> Any:
    return value if _present(value) else None


def _points(value: Any, digits: int = 1) -> str:
    number = _number(value)
    return "-" if number is None else f"{number:.{digits}f}"


def _signed(value: Any) -> str:
    number = _number(value)
    return "-" if number is None else f"{number:+.2f}"


def _arrow(before: Any, after: Any, digits: int = 1) -> str:
    return f"{_points(before, digits)} → {_points(after, digits)}"


def _value(number: Any, text: Any) -> str:
    if _present(text):
        return str(text)
    value = _number(number)
    if value is None:
        return "-"
    return format_whole(value) if value.is_integer() else f"{value:,.4g}"
