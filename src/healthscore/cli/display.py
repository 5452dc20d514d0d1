"""Rich tables and lines that show run summaries in the terminal.

Every colour swatch has its band label beside it, so nothing depends on telling
colours apart.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from rich import box
from rich.console import Console
from rich.errors import StyleSyntaxError
from rich.style import Style
from rich.table import Table
from rich.text import Text

from healthscore.cli.common import row_location, wrap

# Imported for type checking only, so that `healthscore --help` does not load pandas.
if TYPE_CHECKING:
    from healthscore.report.outcomes import ChurnSummary
    from healthscore.report.summary import (
        BandCount,
        Coverage,
        Driver,
        RiskyAccount,
        ScoreSummary,
        SourceSummary,
    )


def swatch(label: str, color: str) -> Text:
    """Return a colour block followed by the label.

    The block has no colour when Rich cannot parse the band's CSS colour.
    """
    try:
        style = Style.parse(color.lower())
    except StyleSyntaxError:
        style = Style()
    text = Text("██", style=style)
    text.append(f" {label}")
    return text


def percent(value: float | None, digits: int = 1) -> str:
    """Format a share such as 0.123 as `12.3%`; a dash when missing."""
    return "-" if value is None else f"{value * 100:.{digits}f}%"


#: Smallest magnitude that `format_whole` prints with 4 significant digits. A float
#: can have up to 309 digits, which would fill many lines of a table column.
COMPACT_FROM = 1e15


def format_whole(value: float) -> str:
    """Format `value` rounded to a whole number with thousands separators: 1,234.

    Magnitudes from COMPACT_FROM, inf and NaN print with 4 significant digits
    instead, such as -1e+300.
    """
    if abs(value) < COMPACT_FROM:
        return f"{value:,.0f}"
    return f"{value:,.4g}"


def band_table(bands: Sequence[BandCount], title: str) -> Table:
    """Accounts per band with their share of all accounts."""
    table = Table(title=title, box=box.SIMPLE_HEAD, title_justify="left")
    table.add_column("Band", no_wrap=True)
    table.add_column("Accounts", justify="right", no_wrap=True)
    table.add_column("Share", justify="right", no_wrap=True)
    for band in bands:
        table.add_row(
            swatch(band.label, band.color), f"{band.count:,}", percent(band.share)
        )
    return table


def churn_table(bands: Sequence[BandCount], churn: ChurnSummary) -> Table:
    """Accounts per band next to how many of them churned over the horizon.

    `With outcome` counts the accounts whose outcome is known: those with a
    subscription active on the as-of date.
    """
    outcomes = {row.name: row for row in churn.bands}
    table = Table(box=box.SIMPLE_HEAD)
    table.add_column("Band", no_wrap=True)
    for column in ("Accounts", "Share", "With outcome", "Churned", "Churn rate"):
        table.add_column(column, justify="right", no_wrap=True)
    for band in bands:
        outcome = outcomes.get(band.name)
        measured = "-" if outcome is None else f"{outcome.accounts:,}"
        churned = "-" if outcome is None else f"{outcome.churned:,}"
        rate = "-" if outcome is None else percent(outcome.rate, 2)
        table.add_row(
            swatch(band.label, band.color),
            f"{band.count:,}",
            percent(band.share),
            measured,
            churned,
            rate,
        )
    return table


def churn_verdict(churn: ChurnSummary) -> str:
    """Say in one sentence whether the churn rate falls from band to band."""
    rates = " > ".join(
        f"{band.label} {percent(band.rate, 2)}"
        for band in churn.bands
        if band.rate is not None and band.name != "insufficient_data"
    )
    if churn.falls is None:
        return "Too few bands have accounts to compare churn rates."
    if churn.falls:
        return f"Churn rate falls from band to band: {rates}."
    return (
        "Churn rate does not fall from every band to the next healthier one: "
        f"{rates.replace(' > ', ', ')}."
    )


def riskiest_table(summary: ScoreSummary) -> Table:
    """Tabulate the riskiest accounts with score, band and top drivers."""
    value = summary.value_column.upper() if summary.value_column else None
    order = f"by {value}, then score" if value else "by score"
    table = Table(
        title=f"Riskiest accounts (lowest band first, then {order})",
        box=box.SIMPLE_HEAD,
        title_justify="left",
    )
    table.add_column("Account", min_width=14, overflow="fold")
    if value:
        table.add_column(value, justify="right", no_wrap=True)
    table.add_column("Score", justify="right", no_wrap=True)
    table.add_column("Band", no_wrap=True)
    # No minimum width: when the columns' minimums exceed the terminal, Rich
    # narrows the column below its minimum and crops a letter of each folded line.
    table.add_column("Top drivers (points lost)", overflow="fold")
    for account in summary.riskiest:
        table.add_row(*_risky_row(account, value is not None))
    return table


def _risky_row(account: RiskyAccount, with_value: bool) -> list[Text | str]:
    name = f" {account.name}" if account.name else ""
    cells: list[Text | str] = [f"{account.account_id}{name}"]
    if with_value:
        cells.append("-" if account.value is None else format_whole(account.value))
    cells.append(f"{account.score:.1f}")
    cells.append(swatch(account.band_label, account.color))
    # One driver per line, so that a name and its points stay together.
    cells.append("\n".join(_driver_text(driver) for driver in account.drivers) or "-")
    return cells


def _driver_text(driver: Driver) -> str:
    return f"{driver.measure} ({driver.points_lost:.1f})"


def counted(count: int, noun: str) -> str:
    """Format `3 accounts` or `1 account`."""
    return f"{count:,} {noun}{'' if count == 1 else 's'}"


def coverage_lines(coverage: Coverage) -> list[str]:
    """Coverage, insufficient data, unscored accounts and score overrides."""
    insufficient = coverage.insufficient_data
    verb = "has" if insufficient == 1 else "have"
    lines = [
        f"Coverage: {percent(coverage.mean_coverage)} of the scorecard weight had "
        f"data on average; {counted(insufficient, 'account')} {verb} insufficient "
        "data."
    ]
    if coverage.unscored:
        verb = "matches" if coverage.unscored == 1 else "match"
        lines.append(
            f"{counted(coverage.unscored, 'account')} {verb} no scorecard (unscored)."
        )
    if coverage.score_overrides:
        verb = "is" if coverage.score_overrides == 1 else "are"
        lines.append(
            f"{counted(coverage.score_overrides, 'score')} {verb} set by an override."
        )
    return lines


def source_table(sources: Sequence[SourceSummary], as_of: str) -> Table:
    """Rows read, used, later than the as-of date and excluded, per source."""
    table = Table(
        title=f"Source rows as of {as_of}", box=box.SIMPLE_HEAD, title_justify="left"
    )
    # Source names and reasons fold, so a narrow terminal narrows these columns
    # instead of cropping the ends of their lines.
    # Source names stay whole up to 20 letters.
    longest = max((len(source.source) for source in sources), default=6)
    table.add_column("Source", min_width=min(longest, 20), overflow="fold")
    # The numbers never wrap, so the long header takes two lines instead.
    for column in ("Read", "Used", "Later than\nas-of", "Excluded"):
        table.add_column(column, justify="right", no_wrap=True)
    table.add_column("Why excluded", min_width=12, overflow="fold")
    for source in sources:
        reasons = "; ".join(
            f"{count:,} {label}" for label, count in source.problems.items()
        )
        table.add_row(
            source.source,
            f"{source.rows_read:,}",
            f"{source.rows_used:,}",
            f"{source.later:,}",
            f"{source.rows_with_problems:,}",
            reasons or "-",
        )
    return table


def print_sources(
    console: Console, sources: Sequence[SourceSummary], as_of: str
) -> None:
    """Print the source table, then up to 3 example rows per source with problems."""
    console.print(source_table(sources, as_of))
    for source in sources:
        for example in source.examples:
            console.print(
                f"  {source.source}: {example.file}, "
                f"{row_location(example.file, example.row)}, column "
                f"{example.column}: {example.reason}",
                markup=False,
                soft_wrap=True,
            )
    later = sum(source.later for source in sources)
    if later:
        rows = "1 row is" if later == 1 else f"{later:,} rows are"
        console.print(
            wrap(
                f"{rows} later than the as-of date: valid, left for later dates, not "
                "errors."
            ),
            markup=False,
            soft_wrap=True,
        )
