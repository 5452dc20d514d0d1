"""Export of everything healthscore holds about an account or a person.

The export answers an access request. It contains the subject's snapshot rows per
as-of date, its rows in every operational table (overrides, alerts, tasks, notes and
the others that exist), its rows in the table exports of the output folders, the
reports that mention it and the paths of earlier exports of it there.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from sqlalchemy import select

from healthscore.config import Project
from healthscore.privacy.erase import read_table_file
from healthscore.privacy.locate import (
    REPORT_SUFFIXES,
    exports_subject,
    frame_row_mask,
    json_records,
    output_files,
    report_mentions,
    state_matches,
)
from healthscore.privacy.subjects import Subject, document_mentions, redact_document
from healthscore.store.snapshots import SnapshotStore
from healthscore.store.state import StateStore


def export_subject(
    project: Project, subject: Subject, output_folders: Sequence[Path] = ()
) -> dict[str, Any]:
    """Collect everything stored about `subject` as a JSON-ready document.

    Parameters
    ----------
    project : Project
        Project whose stores are read.
    subject : Subject
        The account or person.
    output_folders : sequence of Path
        Folders of table exports and reports to search, such as
        ``<project>/output``.

    Returns
    -------
    dict
        ``subject``, ``exported_at``, ``snapshots`` (as-of date to table to rows),
        ``events`` (store source to ``raw`` and ``daily`` rows, and ``origins``,
        the entries of ingested files whose name mentions the subject),
        ``state`` (table to rows), ``files`` (export path to rows), ``reports``
        (paths of reports that mention the subject) and ``exports`` (paths of earlier
        exports of the subject). Dates are ISO text and missing values null.
    """
    # Imported here: the event store's reader imports this package.
    from healthscore.privacy.retention import export_event_store

    store = SnapshotStore(project.path(project.config.store.snapshots))
    with StateStore.open(project.config.store.state, project.root) as state:
        state_rows = _state_rows(state, subject)
    files, reports, exports = _output_rows(output_folders, subject)
    document = {
        "subject": {
            "kind": subject.kind,
            "identifier": subject.identifier,
            "pseudonyms": list(subject.pseudonyms),
        },
        "exported_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "snapshots": _snapshot_rows(store, subject),
        "events": export_event_store(project, subject),
        "state": state_rows,
        "files": files,
        "reports": reports,
        "exports": exports,
    }
    exported: dict[str, Any] = plain(document)
    return exported


def _state_rows(state: StateStore, subject: Subject) -> dict[str, list[dict[str, Any]]]:
    found: dict[str, list[dict[str, Any]]] = {}
    with state.engine.connect() as connection:
        for match in state_matches(connection, subject):
            query = select(match.table).where(match.where)
            found[match.table.name] = [
                dict(row) for row in connection.execute(query).mappings()
            ]
    return found


def write_export(document: dict[str, Any], path: Path) -> Path:
    """Write an export document as indented UTF-8 JSON."""
    path.parent.mkdir(parents=True, exist_ok=True)
    text = json.dumps(document, indent=2, ensure_ascii=False, allow_nan=False)
    path.write_text(text + "\n", encoding="utf-8")
    return path


def _snapshot_rows(
    store: SnapshotStore, subject: Subject
) -> dict[str, dict[str, list[dict[str, Any]]]]:
    found: dict[str, dict[str, list[dict[str, Any]]]] = {}
    for as_of in store.dates():
        tables: dict[str, list[dict[str, Any]]] = {}
        for name in store.tables(as_of):
            frame = store.read(as_of, name)
            rows = frame.loc[frame_row_mask(frame, subject)]
            if len(rows):
                tables[name] = _records(rows)
        if tables:
            found[as_of.isoformat()] = tables
    return found


def _output_rows(
    folders: Sequence[Path], subject: Subject
) -> tuple[dict[str, list[Any]], list[str], list[str]]:
    """Return the rows per table export, the reports and the earlier exports."""
    files: dict[str, list[Any]] = {}
    reports: list[str] = []
    exports: list[str] = []
    for path in output_files(folders):
        suffix = path.suffix.lower()
        if suffix in REPORT_SUFFIXES:
            if report_mentions(path, subject):
                reports.append(str(path))
            continue
        if suffix == ".json":
            document = json.loads(path.read_text(encoding="utf-8"))
            if exports_subject(document, subject):
                # Listed by path only: its rows came from the same stores, and
                # copying them in would repeat them.
                exports.append(str(path))
                continue
            rows = [
                record
                for record in json_records(document)
                if _record_mentions(record, subject)
            ]
        else:
            frame = read_table_file(path)
            rows = _records(frame.loc[frame_row_mask(frame, subject)])
        if rows:
            files[str(path)] = rows
    return files, reports, exports


def _record_mentions(record: Any, subject: Subject) -> bool:
    if subject.kind == "account":
        return document_mentions(record, subject)
    return redact_document(record, subject) != record


def _records(frame: pd.DataFrame) -> list[dict[str, Any]]:
    return [
        {str(key): value for key, value in row.items()}
        for row in frame.to_dict(orient="records")
    ]


def plain(value: Any) -> Any:
    """Convert `value` to JSON types: dates as ISO text, NaN and NaT as null."""
    if isinstance(value, dict):
        return {str(key): plain(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [plain(item) for item in value]
    if isinstance(value, np.generic):
        return plain(value.item())
    if value is pd.NaT or value is pd.NA or value is None:
        return None
    if isinstance(value, float):
        return None if math.isnan(value) or math.isinf(value) else value
    if isinstance(value, date):  # datetime and pandas Timestamp too
        return value.isoformat()
    return value
