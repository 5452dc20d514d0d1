"""Survey commands: `nps`, the Net Promoter Score of each segment as of a date."""

from __future__ import annotations

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
    VerboseOption,
    handle_errors,
    note_wrapped,
    open_project,
    plural,
    print_json,
    say_wrapped,
    stdout_console,
)
from healthscore.config import Project
from healthscore.config.models import NpsMetric

# Modules that load pandas, DuckDB or SQLAlchemy are imported inside the functions
# that use them, so that `healthscore --help` does not load them.
if TYPE_CHECKING:
    import pandas as pd


@handle_errors
def nps(
    as_of: AsOfOption,
    metric_name: Annotated[
        str | None,
        typer.Option(
            "--metric",
            metavar="NAME",
            help="Name of the nps metric whose source, filter and window to use; "
            "needed only when the project has more than one.",
        ),
    ] = None,
    by: Annotated[
        str,
        typer.Option(
            "--by",
            metavar="COLUMN",
            help="Account column whose values form the groups, such as owner.",
        ),
    ] = "segment",
    project_dir: ProjectOption = Path("."),
    json_output: JsonOption = False,
    verbose: VerboseOption = 0,
) -> None:
    """Print the NPS of each segment as of a date, with the responses behind it.

    The accounts are those scored as of the date. Every response in the metric's
    window counts once, so a group's NPS is not the mean of its accounts' NPS.
    """
    from healthscore.metrics import population
    from healthscore.metrics.sentiment import nps_by_group
    from healthscore.pipeline import open_engine
    from healthscore.sources import as_of_point

    project = open_project(project_dir)
    name, metric = choose_nps_metric(project, metric_name)
    engine = open_engine(project)
    accounts = population(project, engine.sources, as_of)
    point = as_of_point(project, as_of)
    if by not in accounts.columns:
        default = " (the default of --by)" if by == "segment" else ""
        raise ValueError(
            f"--by: the accounts have no column {by!r}{default}; give --by with one "
            f"of: {', '.join(accounts.columns)}"
        )
    frame = nps_by_group(engine.sources, metric, accounts, point, by=by)
    if json_output:
        print_json(_nps_json(as_of, name, by, frame))
        return
    window = f"the {metric.window.length} before" if metric.window else "before"
    say_wrapped(
        f"NPS by {by} as of {as_of}: metric {name}, responses from source "
        f"{metric.source} {window} the as-of point."
    )
    stdout_console().print(nps_table(frame, by))
    outside = int(frame["out_of_range"].iloc[-1])
    if outside:
        note_wrapped(
            f"warning: {plural(outside, 'row')} of {metric.source} in the window "
            f"{'has' if outside == 1 else 'have'} a {metric.column} outside 0-10 and "
            "did not count as responses; filter them out with the metric's `where`, "
            "or fix the data"
        )


def choose_nps_metric(project: Project, name: str | None) -> tuple[str, NpsMetric]:
    """Return the nps metric called `name`, or the project's only one.

    Raises ValueError when the name is not an nps metric, or when no name is given
    and the project has no nps metric or several.
    """
    metrics = project.config.metrics
    candidates = [key for key, value in metrics.items() if isinstance(value, NpsMetric)]
    if name is not None:
        chosen = metrics.get(name)
        if not isinstance(chosen, NpsMetric):
            listed = ", ".join(candidates) or "none"
            raise ValueError(
                f"{name!r} is not an nps metric of the project; its nps metrics: "
                f"{listed}"
            )
        return name, chosen
    if not candidates:
        raise ValueError(
            "the project has no nps metric; add one under metrics, for example "
            "`nps_90d: {type: nps, source: surveys, window: 90d}`"
        )
    if len(candidates) > 1:
        raise ValueError(
            f"the project has {len(candidates)} nps metrics ({', '.join(candidates)}); "
            "choose one with --metric"
        )
    only = metrics[candidates[0]]
    assert isinstance(only, NpsMetric)
    return candidates[0], only


def nps_table(frame: pd.DataFrame, by: str) -> Table:
    """Groups with their accounts, responses by category and NPS."""
    import pandas as pd

    # Without edge padding, the seven columns fit 80 characters with a negative NPS.
    table = Table(box=box.SIMPLE_HEAD, pad_edge=False)
    table.add_column(by.capitalize(), no_wrap=True)
    counts = ("Accounts", "Responses", "Promoters", "Passives", "Detractors")
    for title in (*counts, "NPS"):
        table.add_column(title, justify="right", no_wrap=True)
    for row in frame.itertuples(index=False):
        score = "-" if pd.isna(row.nps) else f"{row.nps:.1f}"
        table.add_row(
            str(row.group),
            f"{row.accounts:,}",
            f"{row.responses:,}",
            f"{row.promoters:,}",
            f"{row.passives:,}",
            f"{row.detractors:,}",
            score,
        )
    return table


def _nps_json(as_of: date, name: str, by: str, frame: pd.DataFrame) -> dict[str, Any]:
    return {
        "as_of": as_of,
        "metric": name,
        "by": by,
        "groups": frame.to_dict(orient="records"),
    }
