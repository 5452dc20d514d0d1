"""Salesforce Account exports (CSV, API field names) as an accounts source.

Data Loader and Data Export write API field names as the header. Owner is OwnerId,
the id of a Salesforce user. Settings are those of the hubspot format.
"""

from __future__ import annotations

import duckdb

from healthscore.importers.hubspot import read_accounts
from healthscore.importers.records import ImportContext, RecordTable

DEFAULT_COLUMNS = {
    "account_id": "Id",
    "name": "Name",
    "arr": "AnnualRevenue",
    "owner": "OwnerId",
    "contract_start": "CreatedDate",
    "segment": "Type",
}


def read(con: duckdb.DuckDBPyConnection, context: ImportContext) -> RecordTable:
    """Read Account rows as accounts."""
    return read_accounts(context, DEFAULT_COLUMNS)
