"""Output files of the commands: tables as CSV, JSON or Parquet, chosen by extension."""

from __future__ import annotations

from datetime import date
from pathlib import Path
from typing import TYPE_CHECKING

import typer

# Imported for type checking only, so that `healthscore --help` does not load pandas.
if TYPE_CHECKING:
    import pandas as pd

#: File extension of each table format.
TABLE_FORMATS = {".csv": "CSV", ".json": "JSON", ".parquet": "Parquet"}


def parse_table_path(text: str) -> Path:
    """Return the path if it ends in .csv, .json or .parquet; else a usage error."""
    path = Path(text)
    if path.suffix.lower() not in TABLE_FORMATS:
        raise typer.BadParameter(
            f"unsupported extension {path.suffix or '(none)'!r} of {text}; use .csv, "
            ".json or .parquet"
        )
    return path


def parse_html_path(text: str) -> Path:
    """Return the path if it ends in .html or .htm, else raise a usage error."""
    path = Path(text)
    if path.suffix.lower() not in (".html", ".htm"):
        raise typer.BadParameter(
            f"unsupported extension {path.suffix or '(none)'!r} of {text}; the report "
            "is HTML, so use .html"
        )
    return path


def write_table(frame: pd.DataFrame, path: Path) -> Path:
    """Write `frame` in the format that the extension of `path` names.

    CSV and JSON (a list of records) write dates as ISO text and missing values as
    empty cells or null. Parquet keeps the column types.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    suffix = path.suffix.lower()
    if suffix == ".parquet":
        frame.to_parquet(path, index=False)
        return path
    text_frame = _dates_as_text(frame)
    if suffix == ".csv":
        text_frame.to_csv(path, index=False)
    else:
        text_frame.to_json(
            path, orient="records", indent=2, force_ascii=False, date_format="iso"
        )
    return path


def _dates_as_text(frame: pd.DataFrame) -> pd.DataFrame:
    """Replace columns of `datetime.date` objects with their ISO text."""
    converted = frame.copy()
    for column in converted.columns:
        series = converted[column]
        if series.dtype != object:
            continue
        # Date columns hold only dates, so the first value decides; this keeps
        # the check cheap on long tables.
        present = series.dropna()
        if len(present) and isinstance(present.iloc[0], date):
            converted[column] = series.map(_iso_or_same)
    return converted


def _iso_or_same(value: object) -> object:
    return value.isoformat() if isinstance(value, date) else value
