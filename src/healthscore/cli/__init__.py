"""The `healthscore` command line.

Every command takes `--project DIR` (default: the current folder) and `-v` for log
messages on stderr; the commands that list or report take `--json`. Known errors
(invalid settings, unreadable sources, invalid values) print a message on stderr and
exit with code 1; usage errors, such as a malformed date, exit with code 2.
"""

from __future__ import annotations

import typer

from healthscore.cli.alerts import alerts_app
from healthscore.cli.events import compact_command, ingest, retain_command
from healthscore.cli.explain import explain
from healthscore.cli.history import backfill, trend
from healthscore.cli.overrides import override_app
from healthscore.cli.prediction import clusters, forecast, train
from healthscore.cli.privacy import export_subject_command, forget_command
from healthscore.cli.project import init, validate
from healthscore.cli.reports import demo, report
from healthscore.cli.scoring import metrics, score
from healthscore.cli.service import register as register_service
from healthscore.cli.surveys import nps
from healthscore.cli.tasks import register as register_tasks
from healthscore.cli.validation import backtest, compare, drivers, learn

__all__ = ["app", "main"]

app = typer.Typer(
    name="healthscore",
    help="Explainable 0-100 customer health scores from your account data.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
app.command()(init)
app.command()(validate)
app.command()(score)
app.command()(metrics)
app.command()(explain)
app.add_typer(override_app, name="override")
app.add_typer(alerts_app, name="alerts")
app.command()(report)
app.command()(demo)
app.command()(backfill)
app.command()(trend)
app.command()(nps)
register_tasks(app)
app.command("forget")(forget_command)
app.command("export-subject")(export_subject_command)
app.command()(ingest)
app.command("retain")(retain_command)
app.command("compact")(compact_command)
app.command()(backtest)
app.command()(learn)
app.command()(drivers)
app.command()(compare)
app.command()(train)
app.command()(forecast)
app.command()(clusters)
register_service(app)


def main() -> None:
    """Run the command line (the `healthscore` console script).

    Each command sets Arrow's memory pool when it starts (see `handle_errors`).
    """
    app(prog_name="healthscore")
