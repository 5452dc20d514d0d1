"""Survey answers from a CSV file: NPS (0-10) or CSAT (1-5) scores.

A row names its account directly (`account_id`) or through the respondent's email
address: with the option `email_attribute`, the domain of the address is matched
against that column of the accounts source, for example `email_domain`. A domain that
matches no account, or more than one, leaves the row unmapped.
"""

from __future__ import annotations

from typing import Any

import duckdb

from healthscore.config.importer_options import NpsOptions
from healthscore.config.models import STANDARD_COLUMNS
from healthscore.importers.records import (
    ImportContext,
    InvalidValue,
    RecordTable,
    convert,
    is_blank,
)
from healthscore.importers.tabular import csv_records
from healthscore.sources.reader import quote, read_source

DEFAULT_COLUMNS = {
    "account_id": "account_id",
    "timestamp": "date",
    "score": "score",
    "comment": "comment",
    "respondent": "email",
}

SCALES = {"nps": (0.0, 10.0), "csat": (1.0, 5.0)}


def read(con: duckdb.DuckDBPyConnection, context: ImportContext) -> RecordTable:
    """Read survey rows, mapping email domains to accounts when configured."""
    options = context.options(NpsOptions)
    columns, records = csv_records(
        context,
        DEFAULT_COLUMNS,
        {},
        extras=(options.email_column,),
        optional=("account_id",) if options.email_attribute else (),
    )
    domains = account_domains(con, context, options.email_attribute)
    table = context.table(list(dict.fromkeys([*columns, "account_id", "survey_type"])))
    for file, number, values in records:
        values["survey_type"] = options.scale
        email = values.pop(f"csv:{options.email_column}", None)
        if is_blank(values.get("account_id")) and not is_blank(email):
            values["account_id"] = domains.get(_domain(str(email)))
        table.add(file, number, values, _problem(context, values, options))
    return table


def _problem(
    context: ImportContext, values: dict[str, Any], options: NpsOptions
) -> str | None:
    if is_blank(values.get("account_id")):
        return "unmapped_account:account_id"
    try:
        score = convert(values.get("score"), "number", context.zone)
    except InvalidValue:
        # The row table reports it as unparseable_value:score.
        return None
    low, high = SCALES[options.scale]
    if score is not None and not low <= score <= high:
        return "out_of_range:score"
    return None


def account_domains(
    con: duckdb.DuckDBPyConnection, context: ImportContext, attribute: str | None
) -> dict[str, str]:
    """Email domain to account id, from a column of the accounts source.

    Domains shared by several accounts are left out, so their answers stay unmapped
    instead of going to an arbitrary account.
    """
    if attribute is None:
        return {}
    config = context.project.config
    accounts = config.accounts_source()
    accounts_config = config.sources[accounts]
    known = set(STANDARD_COLUMNS["accounts"]) | set(accounts_config.attributes)
    if attribute not in known:
        raise context.error(
            f"email_attribute {attribute!r} is not a column of the accounts source "
            f"{accounts!r}; list it under sources.{accounts}.attributes"
        )
    relation = f"source_{accounts}"
    if not _exists(con, relation):
        # The accounts source is declared later; read it now; load_sources reads it
        # again in its turn, which replaces it with the same rows.
        read_source(con, context.project, accounts, accounts_config)
    rows = con.execute(
        f"SELECT lower(trim(CAST({quote(attribute)} AS VARCHAR))), "
        f"min(account_id), count(DISTINCT account_id) FROM {quote(relation)} "
        f"WHERE _problem IS NULL AND {quote(attribute)} IS NOT NULL GROUP BY 1"
    ).fetchall()
    return {
        str(domain).removeprefix("@"): str(account)
        for domain, account, count in rows
        if count == 1
    }


def _exists(con: duckdb.DuckDBPyConnection, relation: str) -> bool:
    found = con.execute(
        "SELECT count(*) FROM duckdb_tables() WHERE table_name = ?", [relation]
    ).fetchone()
    return bool(found and found[0])


def _domain(email: str) -> str:
    return email.strip().rsplit("@", 1)[-1].lower()
