"""Score history commands: `backfill` (score a range of dates) and `trend`."""

from __future__ import annotations

import shlex
from datetime import date
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
)
from rich.table import Table

from healthscore.cli.common import (
    AsOfOption,
    JsonOption,
    ProjectOption,
    VerboseOption,
    handle_errors,
    note,
    note_wrapped,
    open_project,
    parse_date,
    plural,
    print_json,
    progress_allowed,
    say,
    say_wrapped,
    stderr_console,
    stdout_console,
)
from healthscore.cli.scoring import table_write_line, warn_future_as_of
from healthscore.config import Project
from healthscore.config.models import Duration, parse_duration

# Modules that load pandas, DuckDB or SQLAlchemy are imported inside the functions
# that use them, so that `healthscore --help` does not load them.
if TYPE_CHECKING:
    from healthscore.monitoring.backfill import BackfillResult
    from healthscore.monitoring.coverage import PartialWindows
    from healthscore.store.snapshot_tables import TableWrite
    from healthscore.store.snapshots import SnapshotStore

WEEKLY = parse_duration("7d")


def _parse_step(text: str) -> Duration:
    try:
        return parse_duration(text)
    except ValueError as exc:
        raise typer.BadParameter(str(exc)) from None


@handle_errors
def backfill(
    start: Annotated[
        date,
        typer.Option("--from", parser=parse_date, metavar="DATE", help="First date."),
    ],
    end: Annotated[
        date,
        typer.Option(
            "--to", parser=parse_date, metavar="DATE", help="Last date (included)."
        ),
    ],
    every: Annotated[
        Duration,
        typer.Option(
            "--every",
            parser=_parse_step,
            metavar="DURATION",
            help="Step between dates: days (7d), weeks (1w) or months (1mo).",
        ),
    ] = WEEKLY,
    replay: Annotated[
        bool,
        typer.Option(
            "--replay",
            help="Rescore only the dates of --from, --to and --every that have a "
            "stored snapshot, each under the configuration stored with it; other "
            "stored dates are left as they are.",
        ),
    ] = False,
    project_dir: ProjectOption = Path("."),
    json_output: JsonOption = False,
    verbose: VerboseOption = 0,
) -> None:
    """Score and store every as-of date from --from to --to, --every apart.

    A backfill checks no alert rules and opens no playbook tasks, so it sends no
    alerts about past dates. `healthscore score` checks them for the date it scores.
    It warns about dates whose metric windows start before the first row of a
    source, because their metrics cover only part of the window, and about dates
    after today, whose windows reach past the data.
    """
    from healthscore.monitoring.backfill import BackfillTableError, backfill_dates
    from healthscore.monitoring.backfill import backfill as run_backfill
    from healthscore.monitoring.coverage import find_partial_windows
    from healthscore.pipeline import open_engine

    project = open_project(project_dir)
    dates = backfill_dates(start, end, every)
    _warn_future_dates(project, dates)
    engine = None
    # A replay scores each date under the configuration stored with it, whose
    # windows may differ from the current ones, so only a plain backfill is checked.
    if not replay:
        engine = open_engine(project)
        partial = find_partial_windows(project, engine.sources, dates)
        if partial:
            note_wrapped(partial_windows_warning(partial, len(dates), end))
    with Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=stderr_console(),
        disable=json_output or not progress_allowed(),
    ) as progress:
        task = progress.add_task("backfilling", total=len(dates))

        def advance(done: int, total: int) -> None:
            progress.update(task, completed=done, total=total)

        try:
            result = run_backfill(
                project, dates, engine=engine, replay=replay, progress=advance
            )
        except BackfillTableError as exc:
            command = rerun_command(
                project_dir, exc.unwritten, (start, end, every), replay
            )
            raise BackfillTableError(
                f"{exc} To do so, run: {command}",
                stored=exc.stored,
                unwritten=exc.unwritten,
                files_only=exc.files_only,
            ) from None
    written = _table_write(project, result)
    if json_output:
        print_json(
            {
                "dates": result.dates,
                "accounts": {day.isoformat(): n for day, n in result.accounts.items()},
                "skipped": result.skipped,
                "seconds": round(result.seconds, 3),
                "snapshot_table": None if written is None else written.to_dict(),
            }
        )
        return
    for skipped in result.skipped:
        note(f"skipped {skipped}: no snapshot is stored to replay")
    if not result.dates:
        say("No snapshots were stored.")
        return
    say(
        f"stored {plural(len(result.dates), 'snapshot')} from {result.dates[0]} to "
        f"{result.dates[-1]} in {result.seconds:.1f} s"
    )
    if written is not None:
        say_wrapped(table_write_line(written, plural(len(result.dates), "date")))
    empty = sorted(day for day, count in result.accounts.items() if count == 0)
    if empty:
        note_wrapped(
            f"warning: {plural(len(empty), 'snapshot')} ({_dates_text(empty)}) "
            f"{'has' if len(empty) == 1 else 'have'} no accounts, because no "
            "account was in the scored population on that date, as before the data "
            "starts or after it ends. Check --from and --to against the dates of "
            "your data."
        )


def _warn_future_dates(project: Project, dates: list[date]) -> None:
    """Warn on stderr when the last of `dates` is after today, as `score` does.

    The dates are still scored and stored. More than one date after today is
    counted, because the warning names the last one only.
    """
    from healthscore.report import project_today

    if not dates:
        return
    warn_future_as_of(project, dates[-1], stored=True)
    future = [day for day in dates if day > project_today(project)]
    if len(future) > 1:
        note_wrapped(
            f"{len(future)} dates of the backfill, from {future[0].isoformat()} to "
            f"{future[-1].isoformat()}, are after today."
        )


def _table_write(project: Project, result: BackfillResult) -> TableWrite | None:
    """Describe the rows that a backfill wrote into `store.snapshot_table`.

    A backfill writes one row per scored account of each stored date, and it
    stores a date only once its rows are written.
    """
    from healthscore.store.snapshot_tables import table_write

    settings = project.config.store.snapshot_table
    if settings is None or not result.dates:
        return None
    rows = sum(result.accounts[day] for day in result.dates)
    return table_write(project, settings, rows, result.pending)


def rerun_command(
    project_dir: Path,
    unwritten: list[date],
    span: tuple[date, date, Duration],
    replay: bool,
) -> str:
    """Return the `healthscore backfill` command that scores `unwritten` again.

    `span` is the --from, --to and --every of the failed run. The command starts
    at the first unwritten date when its dates include every unwritten one.
    Otherwise it keeps the run's own --from, because a step in months can give
    other days from a later start. For example, monthly from 31 January gives
    29 February and 31 March, but from 29 February it gives 29 March.
    """
    from healthscore.monitoring.backfill import backfill_dates

    start, end, every = span
    first = min(unwritten)
    if not set(unwritten) <= set(backfill_dates(first, end, every)):
        first = start
    words = [
        "healthscore backfill",
        f"--project {shlex.quote(str(project_dir))}",
        f"--from {first.isoformat()}",
        f"--to {end.isoformat()}",
        f"--every {every}",
    ]
    if replay:
        words.append("--replay")
    return " ".join(words)


def partial_windows_warning(
    partial: list[PartialWindows], total: int, end: date
) -> str:
    """Name the dates scored on partial windows, the sources, and where to start.

    `end` is the backfill's --to. When the first date with complete windows comes
    after it, no --from within the range helps, so the warning also requests a
    later --to.
    """
    count = len({day for found in partial for day in found.dates})
    first = max(found.first_complete for found in partial)
    first_complete = first.isoformat()
    causes = "; ".join(
        f"{_dates_text(found.dates)} for source {found.source}, whose first row is "
        f"at {found.first_row.isoformat(' ', 'seconds')} (longest window "
        f"{found.longest})"
        for found in partial
    )
    if first > end:
        advice = (
            "No date from --from to --to has complete windows, because the first "
            f"date that has them, {first_complete}, is after --to "
            f"({end.isoformat()}). Backfill from {first_complete} on (--from "
            f"{first_complete} and a --to on or after it) for complete windows."
        )
    else:
        advice = (
            f"Start the backfill at {first_complete} or later (--from "
            f"{first_complete}), the first date whose windows are complete."
        )
    return (
        f"warning: {count} of the {total} as-of dates "
        f"{'is' if count == 1 else 'are'} scored on partial windows, because the "
        f"longest metric window starts before the first row of a source: {causes}. "
        f"{advice}"
    )


def _dates_text(dates: list[date]) -> str:
    """List up to five dates, or the first three and the last of more."""
    texts = [day.isoformat() for day in dates]
    if len(texts) == 1:
        return texts[0]
    if len(texts) <= 5:
        return f"{', '.join(texts[:-1])} and {texts[-1]}"
    return f"{', '.join(texts[:3])} ... {texts[-1]} ({len(texts)} dates)"


@handle_errors
def trend(
    account: Annotated[str, typer.Argument(help="Account id.")],
    as_of: AsOfOption,
    project_dir: ProjectOption = Path("."),
    json_output: JsonOption = False,
    verbose: VerboseOption = 0,
) -> None:
    """Print an account's score history up to a date, and its trend.

    The trend is that of the latest snapshot on or before --as-of.
    """
    from healthscore.monitoring.history import score_history
    from healthscore.monitoring.trends import compute_trends
    from healthscore.pipeline import snapshot_store

    project = open_project(project_dir)
    store = snapshot_store(project)
    snapshot = _snapshot_on_or_before(store, as_of)
    if snapshot != as_of:
        note(
            f"no snapshot for {as_of.isoformat()}; showing the latest snapshot "
            f"before it, {snapshot.isoformat()}"
        )
    history = score_history(store)
    trends = compute_trends(store, snapshot, project.config.history.trend, history)
    row = trends[trends["account_id"] == account]
    if row.empty:
        raise ValueError(
            f"account {account!r} has no score as of {snapshot.isoformat()}; check "
            "the id with `healthscore explain` or score that date"
        )
    own = history[(history["account_id"] == account) & (history["as_of"] <= snapshot)]
    data = _trend_json(account, snapshot, own, row.iloc[0].to_dict())
    data["requested_as_of"] = as_of
    if json_output:
        print_json(data)
        return
    table = Table(title=f"Score history of {account}")
    for column in ("as of", "score", "band"):
        table.add_column(column, justify="right" if column == "score" else "left")
    for point in data["history"]:
        score = "" if point["score"] is None else f"{point['score']:.0f}"
        table.add_row(str(point["as_of"]), score, str(point["band"]))
    stdout_console().print(table)
    say(_trend_line(data["trend"]))


def _snapshot_on_or_before(store: SnapshotStore, as_of: date) -> date:
    """Return the latest stored as-of date on or before `as_of`.

    Raises
    ------
    SnapshotNotFoundError
        When no snapshot is on or before `as_of`.
    """
    from healthscore.store.snapshots import SnapshotNotFoundError

    found = store.latest(on_or_before=as_of)
    if found is not None:
        return found
    dates = store.dates()
    if not dates:
        raise SnapshotNotFoundError(
            f"no snapshot is stored in {store.folder}; run `healthscore score` first"
        )
    raise SnapshotNotFoundError(
        f"no snapshot on or before {as_of.isoformat()} in {store.folder}; the "
        f"earliest is {dates[0].isoformat()}, so pass --as-of "
        f"{dates[0].isoformat()} or later"
    )


def _trend_json(
    account: str, as_of: date, history: Any, trend: dict[str, Any]
) -> dict[str, Any]:
    points = [
        {"as_of": row.as_of, "score": _number(row.score), "band": row.band}
        for row in history.itertuples()
    ]
    return {
        "account_id": account,
        "as_of": as_of,
        "history": points,
        "trend": {key: _number(value) for key, value in trend.items()},
    }


def _number(value: Any) -> Any:
    if isinstance(value, float) and value != value:
        return None
    return value


def _trend_line(trend: dict[str, Any]) -> str:
    def shown(key: str) -> str:
        value = trend[key]
        return "n/a" if value is None else f"{value:+.1f}"

    return (
        f"Trend: {trend['arrow']} (change 7d {shown('change_7d')}, 30d "
        f"{shown('change_30d')}, 90d {shown('change_90d')}; slope "
        f"{shown('slope_30d')} points per 30 days)"
    )
