"""Importers: read the export formats of common SaaS tools as healthscore sources.

A source whose `format` names an importer (for example `format: segment`) is read in
Python by that importer instead of by DuckDB's file scanners. The importer maps the
export's records onto the standard columns of the source's kind and registers the
rows as the relation `source_<name>`, with the `_file`, `_row` and `_problem` columns
that `SourceSet.report` reads. docs/importers.md describes every format.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import duckdb

from healthscore.config import Project
from healthscore.config.models import SourceConfig
from healthscore.importers import hubspot, nps_csv, salesforce, segment, stripe, zendesk
from healthscore.importers.records import ImportContext, RecordTable
from healthscore.privacy.pseudonymize import pseudonymize_select
from healthscore.sources.reader import LoadedSource, quote, resolve_files

__all__ = ["IMPORTERS", "Importer", "is_importer", "read_with_importer"]


@dataclass(frozen=True)
class Importer:
    """One export format: the source kinds it can fill and its reader."""

    kinds: tuple[str, ...]
    read: Callable[[duckdb.DuckDBPyConnection, ImportContext], RecordTable]


IMPORTERS: dict[str, Importer] = {
    "segment": Importer(("events",), segment.read),
    # RudderStack event payloads follow the Segment spec field for field.
    "rudderstack": Importer(("events",), segment.read),
    "stripe": Importer(("subscriptions", "invoices", "events"), stripe.read),
    "zendesk": Importer(("tickets",), zendesk.read),
    "hubspot": Importer(("accounts",), hubspot.read),
    "salesforce": Importer(("accounts",), salesforce.read),
    "nps_csv": Importer(("surveys",), nps_csv.read),
}


def is_importer(file_format: str | None) -> bool:
    """Tell whether a source `format` names an importer."""
    return file_format in IMPORTERS


def read_with_importer(
    con: duckdb.DuckDBPyConnection, project: Project, name: str, source: SourceConfig
) -> LoadedSource:
    """Read one source with the importer of its format into `source_<name>`.

    Raises SourceError when the files cannot be read at all or the settings do not
    fit the format.
    """
    importer = IMPORTERS[str(source.format)]
    context = ImportContext(
        project, name, source, tuple(resolve_files(project, name, source))
    )
    if source.kind not in importer.kinds:  # load_project reports this too
        raise context.error(
            f"format {source.format} reads {' or '.join(importer.kinds)} sources, "
            f"not {source.kind}; change sources.{name}.kind or format"
        )
    table = importer.read(con, context)
    relation = f"source_{name}"
    table.register(con, relation)
    _pseudonymize_relation(con, project, relation, table.types)
    return LoadedSource(name, source, relation, context.files, table.types)


def _pseudonymize_relation(
    con: duckdb.DuckDBPyConnection,
    project: Project,
    relation: str,
    columns: dict[str, str],
) -> None:
    """Replace the pseudonymized columns of an imported relation by pseudonyms."""
    select = f"SELECT * FROM {quote(relation)}"
    hashed = pseudonymize_select(con, project, columns, select)
    if hashed == select:
        return
    staged = f"{relation}_pseudonymized"
    con.execute(f"CREATE OR REPLACE TEMP TABLE {quote(staged)} AS {hashed}")
    con.execute(f"DROP TABLE {quote(relation)}")
    con.execute(f"ALTER TABLE {quote(staged)} RENAME TO {quote(relation)}")
