"""Score history commands: `backfill` (score a range of dates) and `trend`."""

from __future__ import annotations

import math
import shlex
from datetime import date
from itertools import pairwise
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
    from healthscore.monitoring.coverage import PartialWindows, PurgedWindows
    from healthscore.monitoring.trends import ScoredUnder
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
    source, or reach raw days of the event store that retention purged, because
    their metrics cover only part of the window, and about dates after today,
    whose windows reach past the data.
    """
    from healthscore.monitoring.backfill import BackfillTableError, backfill_dates
    from healthscore.monitoring.backfill import backfill as run_backfill
    from healthscore.monitoring.coverage import find_partial_windows
    from healthscore.pipeline import open_engine

    project = open_project(project_dir)
    dates = backfill_dates(start, end, every)
    _warn_future_dates(project, dates)
    engine = None
    purged: list[dict[str, Any]] | None = None
    # A replay scores each date under the configuration stored with it, whose
    # windows may differ from the current ones, so only a plain backfill is checked.
    if not replay:
        engine = open_engine(project)
        partial = find_partial_windows(project, engine.sources, dates)
        warning = partial_windows_warning(project, partial, len(dates), end)
        if warning is not None:
            note_wrapped(warning)
        purged = report_purged_windows(project, dates)
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
                "purged_windows": purged,
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
    project: Project, partial: list[PartialWindows], total: int, end: date
) -> str | None:
    """Name the dates scored on partial windows or before a source's data, and advise.

    A date whose as-of point is at or before a source's first row comes before
    that source's data: its windows contain no row of it at all, which is reported
    apart from a partial window. Sources of kind `notes` are left out, because a
    CSM writes a note only when there is something to report, so the first note
    marks no start of the data. Returns None when nothing is left to report.

    `end` is the backfill's --to. The advice names a date only when it is on or
    before today. When the first date with complete windows comes after --to, the
    advice requests a later --to, unless the source has no row up to --to.
    """
    from healthscore.report import project_today
    from healthscore.sources import as_of_point

    partial_causes: list[str] = []
    empty_causes: list[str] = []
    partial_dates: set[date] = set()
    empty_dates: set[date] = set()
    started: list[PartialWindows] = []
    late: list[str] = []
    for found in partial:
        if _source_kind(project, found.source) == "notes":
            continue
        within, empty = _split_before_data(project, found)
        first_row = found.first_row.isoformat(" ", "seconds")
        cause = f"for source {found.source}, whose first row is at {first_row}"
        if within:
            partial_causes.append(
                f"{_dates_text(within)} {cause} (longest window {found.longest})"
            )
            partial_dates.update(within)
            started.append(found)
        elif as_of_point(project, end) <= found.first_row:
            late.append(found.source)
        if empty:
            empty_causes.append(f"{_dates_text(empty)} {cause}")
            empty_dates.update(empty)
    sentences = []
    if partial_dates:
        sentences.append(
            f"{_count_of(len(partial_dates), total)} scored on partial windows, "
            "because the longest metric window starts before the first row of a "
            f"source: {'; '.join(partial_causes)}."
        )
    if empty_dates:
        sentences.append(
            f"{_count_of(len(empty_dates), total)} before the first row of a source, "
            "so its windowed metrics read no rows of it there: "
            f"{'; '.join(empty_causes)}."
        )
    if not sentences:
        return None
    if started:
        sentences.append(_complete_windows_advice(started, end, project_today(project)))
    if late:
        sentences.append(
            f"{'Sources' if len(late) > 1 else 'Source'} {', '.join(late)} "
            f"{'have' if len(late) > 1 else 'has'} no row up to --to "
            f"({end.isoformat()}); check --from and --to against the dates of your "
            "data."
        )
    return "warning: " + " ".join(sentences)


def report_purged_windows(project: Project, dates: list[date]) -> list[dict[str, Any]]:
    """Warn on stderr of purged raw days that the metric windows of `dates` reach.

    Returns one entry per store source for the `purged_windows` list of the JSON
    output, with the text of its warning under `message`.
    """
    from healthscore.monitoring.coverage import find_purged_windows

    entries = []
    for found in find_purged_windows(project, dates):
        message = purged_windows_warning(project, found, len(dates))
        note_wrapped(message)
        setting, age = _retention_setting(project, found.source)
        entries.append(
            {
                "source": found.source,
                "setting": setting,
                "age": None if age is None else str(age),
                "first_day": found.days[0],
                "last_day": found.days[-1],
                "days": len(found.days),
                "metrics": found.metrics,
                "derived_metrics": found.derived_metrics,
                "dates": found.dates,
                "message": message,
            }
        )
    return entries


def purged_windows_warning(project: Project, found: PurgedWindows, total: int) -> str:
    """Name the purged raw days that metric windows reach, the metrics, and the setting.

    `total` is the number of as-of dates scored. The metrics that read raw rows
    are computed from the raw rows that are left, because a metric on a store
    source reads only its raw day folders and never the rollups of purged days.
    """
    from healthscore.config.retention import ROLLUP_SUFFIX

    source = found.source
    if total == 1:
        subject = f"the metric windows of {found.dates[0].isoformat()}"
    else:
        subject = (
            f"the metric windows of {len(found.dates)} of the {total} as-of dates "
            f"({_dates_text(found.dates)})"
        )
    setting, age = _retention_setting(project, source)
    if setting is None:
        purged_by = (
            f"purged by `healthscore retain`; no retention age is set for {source} now"
        )
    else:
        purged_by = f"purged by retention ({setting}: {age})"
    single = len(found.metrics) == 1
    sentences = [
        f"warning: {subject} reach {_purged_days_text(source, found.days)}, whose "
        f"raw rows were {purged_by}.",
        f"Only the daily rollups of those days are kept. "
        f"{'Metric' if single else 'Metrics'} {_names_text(found.metrics)} "
        f"{'reads' if single else 'read'} raw rows, so "
        f"{'it is' if single else 'they are'} computed from the rows that are "
        "left, as if those days had no rows, and "
        f"{'its value is' if single else 'their values are'} partial.",
    ]
    if found.derived_metrics:
        derived = found.derived_metrics
        single_derived = len(derived) == 1
        sentences.append(
            f"{'Metric' if single_derived else 'Metrics'} {_names_text(derived)} "
            f"{'is' if single_derived else 'are'} computed from them."
        )
    rollup = source + ROLLUP_SUFFIX
    sentences.append(
        f"Metrics on {rollup} read the rollups and do not change when raw days "
        "are purged. For complete values, score dates whose windows stay within "
        f"the retention age, or compute these metrics on {rollup} where their "
        "type allows it."
    )
    return " ".join(sentences)


def _retention_setting(
    project: Project, source: str
) -> tuple[str | None, Duration | None]:
    """Return the key of the retention age of a store source and the age, if set."""
    retention = project.config.retention
    if source in retention.sources:
        return f"retention.sources.{source}", retention.sources[source]
    if retention.raw_events is not None:
        return "retention.raw_events", retention.raw_events
    return None, None


def _purged_days_text(source: str, days: list[date]) -> str:
    """Describe purged days: one day, a run of days, or days with kept days between."""
    first, last = days[0].isoformat(), days[-1].isoformat()
    if len(days) == 1:
        return f"the raw day {first} of store source {source}"
    if (days[-1] - days[0]).days + 1 == len(days):
        return (
            f"the raw days of store source {source} from {first} to {last} "
            f"({len(days)} days)"
        )
    return f"{len(days)} raw days of store source {source} between {first} and {last}"


def _names_text(names: list[str]) -> str:
    """Join names as `a`, `a and b` or `a, b and c`."""
    if len(names) == 1:
        return names[0]
    return f"{', '.join(names[:-1])} and {names[-1]}"


def _source_kind(project: Project, name: str) -> str | None:
    """Return the kind of a configured or built-in source."""
    from healthscore.config.models import BUILTIN_SOURCES

    source = project.config.sources.get(name)
    return source.kind if source is not None else BUILTIN_SOURCES.get(name)


def _split_before_data(
    project: Project, found: PartialWindows
) -> tuple[list[date], list[date]]:
    """Split the dates into partial ones and those before the first row."""
    from healthscore.sources import as_of_point

    empty = [day for day in found.dates if as_of_point(project, day) <= found.first_row]
    within = [day for day in found.dates if day not in empty]
    return within, empty


def _count_of(count: int, total: int) -> str:
    """Return `3 of the 8 as-of dates are` (or `is` for one)."""
    return f"{count} of the {total} as-of dates {'is' if count == 1 else 'are'}"


def _complete_windows_advice(
    started: list[PartialWindows], end: date, today: date
) -> str:
    """Advise where to start for complete windows, naming no date after today."""
    first = max(found.first_complete for found in started)
    first_complete = first.isoformat()
    if first <= min(end, today):
        return (
            f"Start the backfill at {first_complete} or later (--from "
            f"{first_complete}), the first date whose windows are complete."
        )
    if first <= today:
        return (
            "No date from --from to --to has complete windows, because the first "
            f"date that has them, {first_complete}, is after --to "
            f"({end.isoformat()}). Backfill from {first_complete} on (--from "
            f"{first_complete} and a --to on or after it) for complete windows."
        )
    return (
        "No date up to today has complete windows yet, because the data of these "
        "sources starts less than their longest window before today."
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
    from healthscore.monitoring.trends import compute_trends, scorecards_compared
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
    settings = project.config.history.trend
    trends = compute_trends(store, snapshot, settings, history)
    row = trends[trends["account_id"] == account]
    if row.empty:
        raise ValueError(_no_score_message(account, snapshot, history))
    own = history[(history["account_id"] == account) & (history["as_of"] <= snapshot)]
    data = _trend_json(account, snapshot, own, row.iloc[0].to_dict())
    data["requested_as_of"] = as_of
    groups = scorecards_compared(store, history, account, snapshot, settings)
    data["scored_under"] = [
        {"scorecard": group.scorecard, "version": group.version, "dates": group.dates}
        for group in groups
    ]
    if len(groups) > 1:
        note_wrapped(_mixed_scorecards_warning(project, account, groups))
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
    say(_trend_line(data["trend"], settings.threshold))


def _no_score_message(account: str, as_of: date, history: Any) -> str:
    """Explain why `account` has no trend as of `as_of`, naming a date it was scored."""
    day = as_of.isoformat()
    rows = history[history["account_id"] == account]
    scored = sorted(rows.loc[rows["score"].notna(), "as_of"])
    unscored = rows[(rows["as_of"] == as_of) & rows["score"].isna()]
    if unscored.empty:
        reason = f"account {account!r} is not in the snapshot of {day}"
    else:
        band = unscored["band"].iloc[0]
        reason = f"account {account!r} has no score as of {day} (band {band})"
    earlier = [scored_day for scored_day in scored if scored_day < as_of]
    if earlier:
        last = earlier[-1].isoformat()
        return (
            f"{reason}; its last score is as of {last}, so pass --as-of {last} for "
            "its trend up to that date"
        )
    if scored:
        first = scored[0].isoformat()
        return (
            f"{reason}; its first score is as of {first}, so pass --as-of {first} "
            "or later"
        )
    return (
        f"{reason}, nor has it a score in any stored snapshot; check the id, which "
        "is matched exactly, against the accounts source"
    )


def _mixed_scorecards_warning(
    project: Project, account: str, groups: list[ScoredUnder]
) -> str:
    """Warn that the trend compares scores of different scorecard versions.

    The advice names the dates whose scorecard version differs from the one in
    healthscore.yml now, and the backfill command that rescores exactly those.
    """
    from healthscore.pipeline import scorecard_versions

    parts = []
    for group in groups:
        version = "" if group.version is None else f" version {group.version}"
        parts.append(
            f"{_dates_text(group.dates)} by scorecard {group.scorecard}{version}"
        )
    warning = (
        f"warning: the trend of {account} compares scores from different scorecard "
        f"settings, scored {'; '.join(parts)}. Part of the change comes from the "
        "change of settings, not from the account."
    )
    current = scorecard_versions(project)
    outdated = sorted(
        day
        for group in groups
        if group.version is None or current.get(group.scorecard) != group.version
        for day in group.dates
    )
    if not outdated:
        return (
            f"{warning} Every one of these dates is scored under the scorecards of "
            "the current healthscore.yml, so rescoring them changes nothing."
        )
    listed = _limited_dates(outdated)
    return (
        f"{warning} To compare like with like, rescore the dates scored under "
        f"settings that healthscore.yml no longer contains ({listed}) with "
        f"`{rescore_command(project, outdated)}`. A backfill checks no alert rules, "
        "so it sends no alerts about past dates."
    )


def _limited_dates(dates: list[date], limit: int = 5) -> str:
    """List up to `limit` dates, then the number of the others: `a, b and 3 more`."""
    texts = [day.isoformat() for day in dates]
    if len(texts) > limit:
        return f"{', '.join(texts[:limit])} and {len(texts) - limit} more"
    if len(texts) == 1:
        return texts[0]
    return f"{', '.join(texts[:-1])} and {texts[-1]}"


def rescore_command(project: Project, dates: list[date]) -> str:
    """Return the `healthscore backfill` command that rescores exactly `dates`.

    It rescores under the current healthscore.yml and, unlike `healthscore score`,
    checks no alert rules and opens no playbook tasks. Evenly spaced dates take one
    command with `--every` in days. Other dates take one command each, in a POSIX
    shell loop, because a backfill with a shorter step would store new dates too.
    `--project` is left out when the project is the current folder.
    """
    days = sorted(set(dates))
    words = ["healthscore backfill"]
    if project.root.resolve() != Path.cwd().resolve():
        words.append(f"--project {shlex.quote(str(project.root))}")
    steps = {(later - earlier).days for earlier, later in pairwise(days)}
    if len(steps) <= 1:
        words += [f"--from {days[0].isoformat()}", f"--to {days[-1].isoformat()}"]
        if steps:
            words.append(f"--every {steps.pop()}d")
        return " ".join(words)
    loop = " ".join(day.isoformat() for day in days)
    command = " ".join([*words, '--from "$day" --to "$day"'])
    return f"for day in {loop}; do {command}; done"


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


def _trend_line(trend: dict[str, Any], threshold: float) -> str:
    """Describe the arrow, the changes and the slope on one line.

    The 30-day change decides the arrow against `threshold`, so it is shown with
    as many digits as it takes to stay on the same side of the threshold.
    """

    def shown(key: str) -> str:
        value = trend[key]
        if value is None:
            return "n/a"
        return "0.0" if value == 0 else f"{value:+.1f}"

    change_30d = trend["change_30d"]
    change_text = "n/a" if change_30d is None else _beside(change_30d, threshold)
    return (
        f"Trend: {trend['arrow']} (change 7d {shown('change_7d')}, 30d "
        f"{change_text}, 90d {shown('change_90d')}; slope "
        f"{shown('slope_30d')} points per 30 days)"
    )


def _beside(value: float, threshold: float) -> str:
    """Format `value` with a sign and 1 to 4 decimals, on its side of ±`threshold`.

    For example 4.95 with threshold 5 gives +4.95, not +5.0. When 4 decimals do
    not suffice, the last one is rounded toward the side of `value`.
    """
    if value == 0:
        return "0.0"
    reached = abs(value) >= threshold
    for digits in range(1, 5):
        text = f"{value:+.{digits}f}"
        if (abs(float(text)) >= threshold) == reached:
            return text
    scaled = abs(value) * 10**4
    magnitude = (math.ceil(scaled) if reached else math.floor(scaled)) / 10**4
    return f"{math.copysign(magnitude, value):+.4f}"
