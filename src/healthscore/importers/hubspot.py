"""HubSpot company exports (CSV) as an accounts source.

The default columns are those of HubSpot's company export with English property
labels. The options `segment` and `seats` name the CSV columns for those standard
columns; the source's `columns` overrides any other, for example `arr` when the
contract value lives in a custom property instead of "Annual Revenue".
"""

from __future__ import annotations

import duckdb

from healthscore.importers.records import ImportContext, ImporterOptions, RecordTable
from healthscore.importers.tabular import csv_records

DEFAULT_COLUMNS = {
    "account_id": "Record ID",
    "name": "Company name",
    "arr": "Annual Revenue",
    "owner": "Company owner",
    "contract_start": "Create Date",
    "segment": "Type",
}


class CrmOptions(ImporterOptions):
    """Settings of the hubspot and salesforce formats."""

    segment: str | None = None
    """CSV column read as the segment, for example `Industry`."""
    seats: str | None = None
    """CSV column read as seats, for example the number of employees."""

    def chosen(self) -> dict[str, str]:
        """Standard column to CSV column for the settings that are given."""
        pairs = {"segment": self.segment, "seats": self.seats}
        return {standard: column for standard, column in pairs.items() if column}


def read(con: duckdb.DuckDBPyConnection, context: ImportContext) -> RecordTable:
    """Read company rows as accounts."""
    return read_accounts(context, DEFAULT_COLUMNS)


def read_accounts(context: ImportContext, defaults: dict[str, str]) -> RecordTable:
    """Read a CRM account export with the tool's default column names."""
    options = context.options(CrmOptions)
    columns, records = csv_records(context, defaults, options.chosen())
    table = context.table(columns)
    for file, number, values in records:
        table.add(file, number, values)
    return table
