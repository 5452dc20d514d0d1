"""HubSpot company exports (CSV) as an accounts source.

The default columns are those of HubSpot's company export with English property
labels. The options `segment` and `seats` name the CSV columns for those standard
columns; the source's `columns` overrides any other, for example `arr` when the
contract value lives in a custom property instead of "Annual Revenue".
"""

from __future__ import annotations

import duckdb

from healthscore.config.importer_options import CrmOptions
from healthscore.importers.records import ImportContext, RecordTable
from healthscore.importers.tabular import csv_records

DEFAULT_COLUMNS = {
    "account_id": "Record ID",
    "name": "Company name",
    "arr": "Annual Revenue",
    "owner": "Company owner",
    "contract_start": "Create Date",
    "segment": "Type",
}


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
