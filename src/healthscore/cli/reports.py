"""Commands that produce the HTML report: `report` and `demo`."""

from __future__ import annotations

from datetime import date
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

import healthscore
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
    print_json,
    say,
    stdout_console,
)
from healthscore.cli.display import (
    churn_table,
    churn_verdict,
    counted,
    print_sources,
)
from healthscore.cli.explain import warn_if_outdated
from healthscore.cli.output import parse_html_path
from healthscore.config import PROJECT_FILE, Project
from healthscore.config.models import StoreConfig

# Modules that load pandas, DuckDB or SQLAlchemy are imported inside the functions
# that use them, so that `healthscore --help` does not load them.
if TYPE_CHECKING:
    from healthscore.report import ChurnSummary, ScoredDate

#: Folder of the example project, relative to the repository root.
EXAMPLE_FOLDER = Path("examples") / "socialnet"

#: Folder of reports inside a project, unless an output is given.
REPORT_FOLDER = "output"


class ExampleNotFoundError(FileNotFoundError):
    """The socialnet example project is in none of the places the demo looks."""


def default_report_path(folder: Path, as_of: date) -> Path:
    """`<folder>/report-<date>.html`."""
    return folder / f"report-{as_of.isoformat()}.html"


@handle_errors
def report(
    as_of: AsOfOption,
    project_dir: ProjectOption = Path("."),
    output: Annotated[
        Path | None,
        typer.Option(
            "--output",
            parser=parse_html_path,
            metavar="FILE",
            help="HTML file to write.",
            show_default="<project>/output/report-<date>.html",
        ),
    ] = None,
    json_output: JsonOption = False,
    verbose: VerboseOption = 0,
) -> None:
    """Write the self-contained HTML report of the scores as of a date.

    The report reads the stored snapshot of the date. Without one it scores the
    date first, and stores nothing.
    """
    from healthscore import pipeline
    from healthscore.report import render_report, write_report

    project = open_project(project_dir)
    store = pipeline.snapshot_store(project)
    stored = store.exists(as_of)
    if stored:
        warn_if_outdated(project, store, as_of)
    else:
        note(
            f"No snapshot of {as_of.isoformat()}; computing the scores without storing "
            f"them (run `healthscore score --as-of {as_of.isoformat()}` to store them)."
        )
    with StepProgress(enabled=not json_output) as progress:
        scored, churn = _scores_and_churn(project, as_of, stored, progress)
        progress("rendering the report")
        html = render_report(scored, churn)
    target = output or default_report_path(project.root / REPORT_FOLDER, as_of)
    path = write_report(html, target)
    if json_output:
        print_json({"as_of": as_of, "report": path, "snapshot": scored.snapshot})
        return
    say(f"Wrote the report of {as_of.isoformat()} to {path}.")


def _scores_and_churn(
    project: Project, as_of: date, stored: bool, progress: StepProgress
) -> tuple[ScoredDate, ChurnSummary]:
    from healthscore import pipeline
    from healthscore.pipeline import open_engine
    from healthscore.report import (
        churn_summary,
        from_run,
        from_snapshot,
        project_today,
        read_account_sources,
    )

    today = project_today(project)
    if stored:
        progress("reading accounts and subscriptions")
        sources = read_account_sources(project)
        progress("reading the snapshot")
        scored = from_snapshot(project, as_of, sources.accounts())
    else:
        progress("reading sources")
        engine = open_engine(project)
        run = pipeline.score(
            project, as_of, engine=engine, store=False, progress=progress
        )
        scored, sources = from_run(run), engine.sources
    progress("counting churn per band")
    return scored, churn_summary(project, sources, scored.scores, as_of, today)


def find_example() -> Path:
    """Find examples/socialnet in the current folder, else beside the source tree."""
    candidates = [
        Path.cwd() / EXAMPLE_FOLDER,
        Path(healthscore.__file__).resolve().parents[2] / EXAMPLE_FOLDER,
    ]
    for candidate in candidates:
        if (candidate / PROJECT_FILE).is_file():
            return candidate
    raise ExampleNotFoundError(
        f"the socialnet example was not found in {candidates[0]} or {candidates[1]}; "
        "run the demo from the root of the healthscore repository, or pass "
        "--project DIR"
    )


def use_store_folder(project: Project, folder: Path) -> None:
    """Point the project's snapshots and operational store into `folder`."""
    folder = folder.resolve()
    project.config.store = StoreConfig(
        snapshots=str(folder / "snapshots"),
        state=f"sqlite:///{folder / 'state.db'}",
    )


@handle_errors
def demo(
    project_dir: Annotated[
        Path | None,
        typer.Option(
            "--project",
            help="Project to run the demo on.",
            show_default="examples/socialnet",
            file_okay=False,
        ),
    ] = None,
    output_dir: Annotated[
        Path | None,
        typer.Option(
            "--output-dir",
            help="Folder of the report.",
            show_default="<project>/output",
            file_okay=False,
        ),
    ] = None,
    store_dir: Annotated[
        Path | None,
        typer.Option(
            "--store-dir",
            help="Folder for the snapshot and the operational store instead of the "
            "ones in healthscore.yml.",
            file_okay=False,
        ),
    ] = None,
    as_of: Annotated[
        date | None,
        typer.Option(
            "--as-of",
            parser=parse_date,
            metavar="YYYY-MM-DD",
            help="As-of date to score.",
            show_default="the latest date whose churn horizon is fully observed",
        ),
    ] = None,
    json_output: JsonOption = False,
    verbose: VerboseOption = 0,
) -> None:
    """Score the socialnet example, compare bands with real churn, write the report.

    By default the as-of date is the latest one whose following churn horizon is
    fully observed (outcomes.observed_until), so each band's churn rate is known.
    """
    from healthscore import pipeline
    from healthscore.outcomes import last_complete_as_of
    from healthscore.pipeline import open_engine
    from healthscore.report import (
        churn_summary,
        from_run,
        project_today,
        render_report,
        write_report,
    )

    project = open_project(project_dir or find_example())
    if store_dir is not None:
        use_store_folder(project, store_dir)
    if as_of is None:
        as_of = last_complete_as_of(project)
    with StepProgress(enabled=not json_output) as progress:
        progress("reading sources")
        engine = open_engine(project)
        run = pipeline.score(project, as_of, engine=engine, progress=progress)
        scored = from_run(run)
        progress("counting churn per band")
        today = project_today(project)
        churn = churn_summary(project, engine.sources, scored.scores, as_of, today)
        progress("rendering the report")
        html = render_report(scored, churn)
    folder = output_dir or project.root / REPORT_FOLDER
    path = write_report(html, default_report_path(folder, as_of))
    if json_output:
        print_json(_demo_json(scored, churn, path))
        return
    _print_demo(scored, churn, path)


def _print_demo(scored: ScoredDate, churn: ChurnSummary, path: Path) -> None:
    summary = scored.summary()
    say(
        f"Scored {counted(summary.accounts, 'account')} of "
        f"{scored.project.config.name} as of "
        f"{scored.as_of.isoformat()}."
    )
    say(
        f"Accounts per band and their churn over the {churn.horizon} after "
        f"{scored.as_of.isoformat()} (until {churn.horizon_end.isoformat()}):"
    )
    console = stdout_console()
    console.print(churn_table(summary.bands, churn))
    if churn.unavailable:
        say(f"No churn rates: {churn.unavailable}.")
    else:
        say(churn_verdict(churn))
    say(f"Stored the snapshot in {scored.snapshot}.")
    print_sources(console, summary.sources, scored.as_of.isoformat())
    say(f"Wrote the report to {path}")


def _demo_json(scored: ScoredDate, churn: ChurnSummary, path: Path) -> dict[str, Any]:
    summary = scored.summary()
    return {
        "project": scored.project.config.name,
        "as_of": scored.as_of,
        "accounts": summary.accounts,
        "bands": summary.bands,
        "churn": churn,
        "churn_falls": churn.falls,
        "snapshot": scored.snapshot,
        "report": path,
    }
