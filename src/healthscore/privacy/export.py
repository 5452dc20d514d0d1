"""Export of everything healthscore holds about an account or a person.

The export answers an access request. It contains the subject's snapshot rows per
as-of date, its rows in the event store, its rows in every operational table
(overrides, alerts, tasks, notes and the others that exist), its rows in the table
exports of the output folders, the reports that mention it and the paths of earlier
exports of it there. Files in the output folders that could not be searched are
listed with the reason and logged as warnings.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Sequence
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from sqlalchemy import select

from healthscore.config import Project
from healthscore.privacy.locate import (
    exports_subject,
    frame_row_mask,
    json_records,
    report_mentions,
    state_matches,
)
from healthscore.privacy.outputs import (
    UNREADABLE_FILE_ERRORS,
    UNSEARCHED_REASON,
    output_files,
    output_format,
    read_json_file,
    read_table_file,
    unsearched_files,
)
from healthscore.privacy.subjects import Subject, document_mentions, redact_document
from healthscore.store.snapshots import SnapshotStore
from healthscore.store.state import StateStore

logger = logging.getLogger(__name__)


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
        ``events`` (store source to ``raw`` and ``daily`` rows, Segment
        ``memberships``, and ``origins``, the entries of ingested files whose name
        mentions the subject), ``state`` (table to rows), ``files`` (export path
        to rows), ``reports`` (paths of reports that mention the subject),
        ``exports`` (paths of earlier exports of the subject) and
        ``skipped_files`` (path to the reason it was not searched). Dates are ISO
        text and missing values null.
    """
    # Imported here: the event store's reader imports this package.
    from healthscore.privacy.retention import export_event_store

    store = SnapshotStore(project.path(project.config.store.snapshots))
    with StateStore.open(project.config.store.state, project.root) as state:
        state_rows = _state_rows(state, subject)
    files, reports, exports, skipped = _output_rows(output_folders, subject)
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
        "skipped_files": skipped,
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
) -> tuple[dict[str, list[Any]], list[str], list[str], dict[str, str]]:
    """Return the rows per export file, the reports, the earlier exports and the
    files not searched with the reason of each, which are logged as warnings."""
    files: dict[str, list[Any]] = {}
    reports: list[str] = []
    exports: list[str] = []
    skipped: dict[str, str] = {}
    for path in output_files(folders):
        try:
            rows = _file_rows(path, subject, reports, exports)
        except UNREADABLE_FILE_ERRORS as exc:
            reason = str(exc).strip().splitlines()[0]
            skipped[str(path)] = f"{reason}; look for the subject in it yourself"
            continue
        if rows:
            files[str(path)] = rows
    for path in unsearched_files(folders):
        skipped[str(path)] = f"{UNSEARCHED_REASON}; look for the subject in it yourself"
    for path_text, reason in skipped.items():
        logger.warning("%s was not searched for the export: %s", path_text, reason)
    return files, reports, exports, skipped


def _file_rows(
    path: Path, subject: Subject, reports: list[str], exports: list[str]
) -> list[Any]:
    """Return the subject's rows in one output file, adding reports and exports."""
    found = output_format(path)
    assert found is not None
    if found.kind == "report":
        if report_mentions(path, subject):
            reports.append(str(path))
        return []
    if found.kind in ("json", "jsonl"):
        document = read_json_file(path)
        if exports_subject(document, subject):
            # Listed by path only: its rows came from the same stores, and copying
            # them in would repeat them.
            exports.append(str(path))
            return []
        return [
            record
            for record in json_records(document)
            if _record_mentions(record, subject)
        ]
    frame = read_table_file(path)
    return _records(frame.loc[frame_row_mask(frame, subject)])


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
