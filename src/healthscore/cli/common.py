"""Options, consoles, error handling, JSON output and progress shared by the commands.

Results go to stdout, while notes, warnings, progress and logs go to stderr. So with
`--json`, stdout contains nothing but the JSON document.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import logging
import math
import re
import sys
import textwrap
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from datetime import date, datetime
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Annotated, Any, NoReturn, ParamSpec, TypeVar

import typer
from pydantic import BaseModel
from rich.cells import cell_len
from rich.console import Console
from rich.logging import RichHandler
from rich.progress import Progress, SpinnerColumn, TaskID, TextColumn, TimeElapsedColumn
from rich.table import Table
from rich.text import Text

from healthscore.config import ConfigError, Project, load_project
from healthscore.dates import EARLIEST_DATE, LATEST_DATE, iso_date
from healthscore.errors import (
    OverrideNotFoundError,
    ProjectExistsError,
    ScoringInputError,
    SnapshotNotFoundError,
    SnapshotTableError,
    SourceError,
    StateStoreError,
)
from healthscore.runtime import configure_process, log_memory_pool

if TYPE_CHECKING:
    import duckdb

# This module and the command modules import numpy, pandas, DuckDB, SQLAlchemy and
# the healthscore modules built on them inside the functions that use them, so that
# `healthscore --help` does not load them. tests/test_cli_startup.py checks that.

logger = logging.getLogger("healthscore.cli")

#: Errors that a command reports as a message and exit code 1, without a traceback.
#: ValueError covers invalid values met at run time, such as those the stores reject.
HANDLED_ERRORS: tuple[type[Exception], ...] = (
    ConfigError,
    SourceError,
    ScoringInputError,
    StateStoreError,
    SnapshotNotFoundError,
    SnapshotTableError,
    OverrideNotFoundError,
    ProjectExistsError,
    NotADirectoryError,
    ValueError,
    OSError,
)


# Options


def parse_date(text: str) -> date:
    """Parse an ISO date from EARLIEST_DATE to LATEST_DATE.

    Raises typer.BadParameter, a usage error with exit code 2, for any other text.
    """
    day = iso_date(text.strip())
    if day is None:
        raise typer.BadParameter(
            f"{text!r} is not a date in the form YYYY-MM-DD, for example 2020-05-01"
        )
    if not EARLIEST_DATE <= day <= LATEST_DATE:
        raise typer.BadParameter(
            f"{day.isoformat()} is outside the supported range "
            f"{EARLIEST_DATE.isoformat()} to {LATEST_DATE.isoformat()}; "
            "give a date in that range"
        )
    return day


ProjectOption = Annotated[
    Path,
    typer.Option(
        "--project",
        help="Project folder, the one that contains healthscore.yml.",
        show_default="current folder",
        file_okay=False,
    ),
]
JsonOption = Annotated[
    bool,
    typer.Option(
        "--json", help="Print machine-readable JSON on stdout and nothing else there."
    ),
]
VerboseOption = Annotated[
    int,
    typer.Option(
        "--verbose",
        "-v",
        count=True,
        help="Log progress at INFO level to stderr; -vv logs DEBUG messages too.",
    ),
]
AsOfOption = Annotated[
    date,
    typer.Option(
        "--as-of",
        parser=parse_date,
        metavar="YYYY-MM-DD",
        help="As-of date: scores see the data before its as-of point.",
    ),
]


# Consoles and messages


def plain_console(**options: Any) -> Console:
    """Build a Console that prints strings exactly as given.

    Account names, ids and file locations reach the output as strings, so Rich must
    not read `[tag]` as markup or `:name:` as an emoji code, nor highlight numbers.
    `options` are further Console arguments, such as `stderr` or `width`.
    """
    return Console(markup=False, emoji=False, highlight=False, **options)


def stdout_console() -> Console:
    """Console for results on stdout; built per use, so it follows a replaced stdout."""
    return plain_console()


def stderr_console() -> Console:
    """Console for notes, warnings and progress on stderr."""
    return plain_console(stderr=True)


def plural(count: int, noun: str, plural_noun: str | None = None) -> str:
    """Format a count with its noun, such as `1 row` or `1,204 rows`.

    `plural_noun` is the plural form when it is not `noun` + `s`, as for `entries`.
    """
    form = noun if count == 1 else (plural_noun or f"{noun}s")
    return f"{count:,} {form}"


#: File name endings of sources read as CSV, where a data row follows a header line.
CSV_SUFFIXES = (".csv", ".csv.gz", ".tsv", ".tsv.gz")


def row_location(file: str, row: int) -> str:
    """Locate a data row (counted from 1) of a source file for a person to find.

    A CSV file has one header line, so data row N is on line N + 1, which is what
    editors show. Other formats get the row number alone.
    """
    # NOTE: a quoted CSV field that spans lines moves every later row further down,
    # so the line is exact only for files without line breaks inside fields.
    if file.lower().endswith(CSV_SUFFIXES):
        return f"row {row:,} (line {row + 1:,})"
    return f"row {row:,}"


def note(text: str) -> None:
    """Print a note for the user on stderr, as plain text."""
    stderr_console().print(text, markup=False, soft_wrap=True)


def say(text: str) -> None:
    """Print a line of results on stdout, as plain text."""
    stdout_console().print(text, markup=False, soft_wrap=True)


#: Width that sentences of plain output are wrapped to, so they read well in an
#: 80-column terminal and in logs of piped output.
LINE_WIDTH = 80


def wrap(text: str) -> str:
    """Wrap `text` to LINE_WIDTH columns without breaking words, dates or options."""
    return textwrap.fill(
        text, width=LINE_WIDTH, break_long_words=False, break_on_hyphens=False
    )


def say_wrapped(text: str) -> None:
    """Print a sentence of results on stdout, wrapped to LINE_WIDTH columns."""
    say(wrap(text))


def note_wrapped(text: str) -> None:
    """Print a note on stderr, wrapped to LINE_WIDTH columns."""
    note(wrap(text))


#: A piece of a name or sentence that a table cell may end a line after: text up to
#: and including a run of spaces, underscores or hyphens.
_CELL_PIECE = re.compile(r"[^\s_-]*[\s_-]*")


def add_folded_rows(
    table: Table, rows: Sequence[Sequence[str]], width: int | None = None
) -> bool:
    """Add `rows` to `table`, breaking cells after spaces, underscores or hyphens.

    Rich breaks a cell only at spaces and folds a longer word at any letter, as
    `drop_r` and `eview`. Here each column without `no_wrap` gets its longest line
    when the table fits `width` (default: the stdout console's), else its longest
    piece between separators plus a share of the rest, and its cells are broken to
    that width. Rich folds inside a word only when those pieces alone do not fit.
    Cells are added as plain text, not markup. Returns whether the table fits
    `width` with every piece whole; when it does not, Rich cuts cells short.
    """
    columns = table.columns
    texts = [
        [str(column.header), *(row[position] for row in rows)]
        for position, column in enumerate(columns)
    ]
    longest = [max(_line_width(text) for text in column) for column in texts]
    foldable = [not column.no_wrap for column in columns]
    fixed = sum(size for size, fold in zip(longest, foldable, strict=True) if not fold)
    room = (width or stdout_console().width) - _chrome_width(table) - fixed
    folded = [
        (size, max(_piece_width(text) for text in column))
        for size, column, fold in zip(longest, texts, foldable, strict=True)
        if fold
    ]
    shares = _shared_widths(folded, room)
    widths = iter(shares)
    limits = [next(widths) if fold else None for fold in foldable]
    for row in rows:
        table.add_row(
            *(
                Text(cell if limit is None else _fold_cell(cell, limit))
                for cell, limit in zip(row, limits, strict=True)
            )
        )
    return room >= sum(piece for _, piece in folded)


def _chrome_width(table: Table) -> int:
    """Return the width that borders and padding add to a Rich table's cells.

    It follows Rich's layout of `Table.padding`, `pad_edge`, `box` and `show_edge`,
    but ignores `collapse_padding`.
    """
    count = len(table.columns)
    _, right, _, left = table.padding
    width = count * (left + right)
    if not table.pad_edge:
        width -= left + right
    if table.box:
        width += count - 1 + (2 if table.show_edge else 0)
    return width


def _shared_widths(columns: list[tuple[int, int]], room: int) -> list[int]:
    """Share `room` among columns given as (longest line, longest piece) widths."""
    longest = [size for size, _ in columns]
    if sum(longest) <= room:
        return longest
    widths = [piece for _, piece in columns]
    spare = room - sum(widths)
    lacking = [size - piece for size, piece in columns]
    if spare <= 0 or not sum(lacking):
        return widths
    shares = [spare * lack // sum(lacking) for lack in lacking]
    widths = [width + share for width, share in zip(widths, shares, strict=True)]
    # Rounding down leaves fewer characters than there are lacking columns. They go
    # one each to the columns that still lack most.
    leftover = spare - sum(shares)
    order = sorted(range(len(widths)), key=lambda i: widths[i] - longest[i])
    for position in order[:leftover]:
        widths[position] += 1
    return widths


def _line_width(text: str) -> int:
    # Display cells, not characters: a CJK character takes two.
    return max((cell_len(line) for line in text.splitlines()), default=0)


def _pieces(text: str) -> list[str]:
    return [piece for piece in _CELL_PIECE.findall(text) if piece]


def _piece_width(text: str) -> int:
    return max((cell_len(piece.rstrip()) for piece in _pieces(text)), default=0)


#: Pieces of a name such as a scorecard file's: each ends after `:`, `/`, `.`,
#: `_`, `-` or spaces.
_NAME_PIECE = re.compile(r"[^\s_\-.:/]*[\s_\-.:/]*")


def fold_name(text: str, width: int) -> str:
    """Break `text` into lines of at most `width` cells after name separators.

    Names such as `shadow:healthscore.proposed.yml` break after `:`, `/` and `.` as
    well as after spaces, underscores and hyphens. A piece wider than `width` keeps
    a line of its own, which Rich then folds.
    """
    return _fold_cell(text, width, _NAME_PIECE)


def _fold_cell(text: str, width: int, pieces: re.Pattern[str] = _CELL_PIECE) -> str:
    """Break each line of `text` after spaces, underscores or hyphens to fit `width`.

    A piece wider than `width` gets a line of its own. Spaces at a break are dropped.
    """
    lines = []
    for original in text.splitlines() or [""]:
        line = ""
        for piece in (part for part in pieces.findall(original) if part):
            if line and cell_len((line + piece).rstrip()) > width:
                lines.append(line.rstrip())
                line = ""
            line += piece
        lines.append(line.rstrip())
    return "\n".join(lines)


def print_json(data: Any) -> None:
    """Print `data` as JSON on stdout; dates, paths, NaN and dataclasses converted."""
    typer.echo(json.dumps(to_json(data), indent=2, ensure_ascii=False))


def to_json(value: Any) -> Any:
    """Convert `value` to JSON types: NaN becomes null, dates ISO strings."""
    import numpy as np

    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {
            field.name: to_json(getattr(value, field.name))
            for field in dataclasses.fields(value)
        }
    if isinstance(value, BaseModel):
        return to_json(value.model_dump(mode="json"))
    if isinstance(value, dict):
        return {str(key): to_json(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [to_json(item) for item in value]
    if isinstance(value, np.generic):
        return to_json(value.item())
    if isinstance(value, float):
        return None if math.isnan(value) or math.isinf(value) else value
    if isinstance(value, date | datetime):
        return value.isoformat()
    if isinstance(value, Path):
        return str(value)
    return value


# Running a command

P = ParamSpec("P")
R = TypeVar("R")


def handle_errors(function: Callable[P, R]) -> Callable[P, R]:
    """Run a command with logging set up, turning HANDLED_ERRORS into exit code 1.

    The error message goes to stderr. A ConfigError lists every issue on its own
    line as `file:line: key: message (did you mean 'x'?)`. With -vv the traceback
    of a handled error is logged at DEBUG level.
    """

    @functools.wraps(function)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        # Arrow's memory pool is chosen here, before the command's first Arrow
        # allocation, and not at start-up, so that help output does not load pyarrow.
        configure_process()
        verbosity = kwargs.get("verbose", 0)
        with log_to_stderr(verbosity if isinstance(verbosity, int) else 0):
            try:
                return function(*args, **kwargs)
            except HANDLED_ERRORS as exc:
                _fail(exc, str(exc))
            except Exception as exc:
                message = _duckdb_message(exc)
                if message is None:
                    raise
                _fail(exc, message)

    return wrapper


def _duckdb_message(exc: Exception) -> str | None:
    """Return the message of a DuckDB file or memory error, else None."""
    # A DuckDB error exists only once DuckDB is loaded, and importing it to check
    # would slow down every other unhandled error.
    if "duckdb" not in sys.modules:
        return None
    import duckdb

    if isinstance(exc, duckdb.IOException):
        return _duckdb_io_message(exc)
    if isinstance(exc, duckdb.OutOfMemoryException):
        return _duckdb_memory_message(exc)
    return None


def _duckdb_memory_message(exc: duckdb.OutOfMemoryException) -> str:
    """Return the message of a query that ran out of DuckDB's memory limit.

    The advice depends on the limit that DuckDB names: its memory limit, the size
    limit of the spill folder, or a memory limit with spilling off.
    """
    from healthscore.sources.reader import _first_line as first_line

    text = str(exc)
    folder = None
    if "healthscore.engine" in sys.modules:
        from healthscore.engine import spill_folder

        folder = spill_folder()
    message = f"DuckDB ran out of memory while running a query: {first_line(exc)}."
    # The phrases below are those of DuckDB 2.0's out-of-memory errors.
    if "max_temp_directory_size" in text:
        where = f" {folder}" if folder else ""
        return (
            f"{message} DuckDB spilled to disk, and the spill folder{where} reached "
            "its size limit, DuckDB's max_temp_directory_size (by default 90% of "
            "the free disk space there). Free disk space there, set "
            "engine.temp_directory to a folder on a disk with more free space, or "
            "raise engine.memory_limit in healthscore.yml so that less is spilled."
        )
    if "no temporary directory" in text or folder == "":
        return (
            f"{message} Spilling to disk was off, because DuckDB had no spill "
            "folder. Raise engine.memory_limit in healthscore.yml, or set "
            "engine.temp_directory to a folder with free space so that DuckDB can "
            "spill to disk."
        )
    used = re.search(r"/([^/()]+) used\)", text)
    limit = f" of {used.group(1)}" if used else ""
    where = f" to {folder}" if folder else ""
    return (
        f"{message} The query needed more than DuckDB's memory limit{limit} "
        f"(engine.memory_limit). DuckDB could spill{where}, but spilling did not "
        "free enough memory, so the limit is too small for this data: raise "
        "engine.memory_limit in healthscore.yml, or lower engine.threads, which "
        "lowers the memory that a query holds at once."
    )


def _duckdb_io_message(exc: duckdb.IOException) -> str:
    """Return the message of a file error that DuckDB raised while a query ran.

    Source files are opened when the sources are read, so such an error most likely
    concerns DuckDB's spill folder (missing, not writable or full), an estimate.
    """
    return (
        f"DuckDB failed on a file while running a query: {exc}. If the path is "
        "DuckDB's spill folder, set engine.temp_directory in healthscore.yml to a "
        "writable folder with free space, or raise engine.memory_limit so that "
        "less is spilled."
    )


def _fail(exc: Exception, message: str) -> NoReturn:
    logger.debug("%s failed", type(exc).__name__, exc_info=exc)
    stderr_console().print(f"error: {message}", markup=False, soft_wrap=True)
    raise typer.Exit(code=1)


@contextmanager
def log_to_stderr(verbosity: int) -> Iterator[None]:
    """Send healthscore's log records to stderr while a command runs.

    0 logs warnings only, 1 INFO and 2 or more DEBUG. The handler is removed at the
    end, so repeated runs in one process (as in tests) do not pile up handlers.
    """
    level = {0: logging.WARNING, 1: logging.INFO}.get(verbosity, logging.DEBUG)
    package = logging.getLogger("healthscore")
    handler = RichHandler(
        console=stderr_console(), show_path=False, markup=False, rich_tracebacks=False
    )
    handler.setLevel(level)
    previous_level = package.level
    package.addHandler(handler)
    package.setLevel(level)
    log_memory_pool()
    try:
        yield
    finally:
        package.removeHandler(handler)
        package.setLevel(previous_level)


def open_project(directory: Path) -> Project:
    """Load the project in `directory`; raises ConfigError listing every problem."""
    project = load_project(directory)
    logger.info("loaded project %s from %s", project.config.name, project.root)
    return project


def progress_allowed(console: Console | None = None) -> bool:
    """Tell whether progress displays may draw on `console` (default: stderr).

    Rich prints the final frame of a progress display even to a file, so a display
    must be disabled, not merely left to Rich, when the console is not a terminal.
    """
    console = console if console is not None else stderr_console()
    return console.is_terminal


class StepProgress:
    """A spinner per pipeline step on stderr, marked done when the next step starts.

    Pass the instance as the `progress` callback of `healthscore.pipeline.score`,
    which calls it with the name of each step. Nothing is drawn when stderr is not a
    terminal (a file, a pipe or a CI log), where frames would only add noise.
    """

    def __init__(self, enabled: bool = True) -> None:
        console = stderr_console()
        self._progress = Progress(
            SpinnerColumn(finished_text="done"),
            # Step descriptions contain source names, which are not markup.
            TextColumn("{task.description}", markup=False),
            TimeElapsedColumn(),
            console=console,
            disable=not (enabled and progress_allowed(console)),
        )
        self._current: TaskID | None = None

    def __enter__(self) -> StepProgress:
        self._progress.start()
        return self

    def __call__(self, message: str) -> None:
        self._finish_current()
        self._current = self._progress.add_task(message, total=None)

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        # A failed step keeps its spinner state, so the display shows where it stopped.
        if exc_type is None:
            self._finish_current()
        self._progress.stop()

    def _finish_current(self) -> None:
        if self._current is not None:
            self._progress.update(self._current, total=1, completed=1)
