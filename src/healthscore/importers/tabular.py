"""CSV exports whose columns have fixed names in the exporting tool."""

from __future__ import annotations

from typing import Any

from healthscore.config.models import REQUIRED_COLUMNS, STANDARD_COLUMNS
from healthscore.importers.records import ImportContext, read_csv_file


def column_map(
    context: ImportContext,
    header: list[str],
    file: str,
    defaults: dict[str, str],
    chosen: dict[str, str],
    optional: tuple[str, ...] = (),
) -> dict[str, str]:
    """Standard column to CSV column for one file.

    `defaults` are the tool's own column names and are used when the file has them.
    `chosen` (from options) and the source's `columns` override them and must exist,
    as must the required columns of the kind.
    """
    mapping = {**defaults, **chosen, **context.source.columns}
    insisted = set(chosen) | set(context.source.columns)
    insisted |= set(REQUIRED_COLUMNS[context.source.kind]) - set(optional)
    present = {}
    for standard, column in mapping.items():
        if standard not in STANDARD_COLUMNS[context.source.kind]:
            continue
        if column in header:
            present[standard] = column
        elif standard in insisted:
            raise context.error(
                f"column {column!r} for {standard!r} not found in {file}; it has "
                f"{', '.join(header)}. Fix sources.{context.name}.columns."
            )
    for attribute in context.source.attributes:
        if attribute not in header:
            raise context.error(
                f"attribute column {attribute!r} not found in {file}; it has "
                f"{', '.join(header)}. Fix sources.{context.name}.attributes."
            )
    return present


def csv_records(
    context: ImportContext,
    defaults: dict[str, str],
    chosen: dict[str, str],
    extras: tuple[str, ...] = (),
    optional: tuple[str, ...] = (),
) -> tuple[list[str], list[tuple[str, int, dict[str, Any]]]]:
    """Read every file of the source as standard values.

    Values of the CSV columns named in `extras` are added under the key
    `csv:<column>` when the file has them. Required columns named in `optional` may
    be absent, because the importer fills them itself.

    Returns the standard columns that every file provides, in standard order, and
    per data row its file, row number and values. Row 1 is the first row after the
    header, as in reports of plain CSV sources.
    """
    common: set[str] | None = None
    records: list[tuple[str, int, dict[str, Any]]] = []
    for file in context.files:
        header, rows = read_csv_file(context, file)
        mapping = column_map(context, header, file, defaults, chosen, optional)
        common = set(mapping) if common is None else common & set(mapping)
        for number, row in enumerate(rows, start=1):
            values: dict[str, Any] = {
                standard: row.get(column) for standard, column in mapping.items()
            }
            values.update({name: row.get(name) for name in context.source.attributes})
            values.update({f"csv:{name}": row.get(name) for name in extras})
            records.append((file, number, values))
    columns = [
        column
        for column in STANDARD_COLUMNS[context.source.kind]
        if column in (common or set())
    ]
    return columns, records
