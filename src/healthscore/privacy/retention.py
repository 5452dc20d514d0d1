"""Retention of raw rows in the event store, and the store's part in erasure.

`retain` purges the raw days of each store source that are older than the source's
retention age, where the daily rollup of the day exists and counts the same rows.
Metrics on the rollup source (`<source>_daily`) therefore give the same values
before and after a purge.
"""

from __future__ import annotations

import logging
from collections import Counter
from datetime import date, datetime
from functools import partial
from typing import Any

import pandas as pd

from healthscore.config import Project
from healthscore.config.models import Duration
from healthscore.config.retention import numeric_columns, store_sources
from healthscore.metrics.windows import shift
from healthscore.privacy.locate import frame_row_mask
from healthscore.privacy.subjects import Subject
from healthscore.sources.ingest import event_store
from healthscore.store.events import PurgeResult

logger = logging.getLogger(__name__)

#: Field of an `ingested.json` entry with the name of the ingested file.
ORIGIN_FIELD = "origin"


def cutoff_day(today: date, age: Duration) -> date:
    """Return the first day kept: raw days before it are older than `age`."""
    start = datetime(today.year, today.month, today.day)
    return shift(start, age).date()


def retain(
    project: Project,
    today: date,
    *,
    dry_run: bool = False,
    rebuild_rollups: bool = False,
) -> list[PurgeResult]:
    """Purge raw days older than the retention age of every store source.

    `today` is the current date in the project's time zone. Sources without a
    retention age are left alone. A day whose rollup is missing or counts other
    rows is kept and listed in its result's `kept`, unless `rebuild_rollups`
    computes every raw day's rollup again first.
    """
    config = project.config
    store = event_store(project)
    results = []
    for name in store_sources(config):
        age = config.retention.age(name)
        if age is None:
            continue
        if rebuild_rollups and not dry_run:
            numeric = numeric_columns(config.sources[name])
            for day in store.rebuild_rollups(name, numeric):
                logger.info("computed the rollup of %s on %s again", name, day)
        result = store.purge(name, cutoff_day(today, age), dry_run=dry_run)
        for day, reason in result.kept.items():
            logger.warning("kept raw rows of %s on %s: %s", name, day, reason)
        results.append(result)
    return results


def erase_event_store(
    project: Project, subject: Subject, *, dry_run: bool
) -> tuple[dict[str, dict[str, int]], dict[str, dict[str, int]]]:
    """Delete an account's rows, or erase a person, in the raw rows and rollups.

    Mentions of the subject in the names of ingested files (``origin`` in
    `ingested.json`) are replaced by ERASED. Their content hashes stay, so a file
    ingested again is still recognized and skipped.

    Returns
    -------
    tuple of dict
        Per store source with changes, the raw and rollup (``daily``) rows changed,
        the Segment ``memberships`` dropped and the ingested file names
        (``origins``) changed, the last two only when there were any. Then per
        such source, the columns where the subject was found with their counts,
        over the raw rows, rollups and memberships together, and ``origin`` for
        the file names.
    """
    store = event_store(project)
    counts: dict[str, dict[str, int]] = {}
    fields: dict[str, dict[str, int]] = {}
    for name in _stored_sources(project):
        source = project.config.sources.get(name)
        numeric = numeric_columns(source) if source is not None else []
        found: Counter[str] = Counter()
        edit = partial(_erase_and_count, subject=subject, found=found)
        raw, daily, memberships = store.rewrite(name, edit, numeric, dry_run=dry_run)
        origins = store.rewrite_origins(name, subject.redact_text, dry_run=dry_run)
        if origins:
            found[ORIGIN_FIELD] += origins
        if raw or daily or memberships or origins:
            counts[name] = {"raw": raw, "daily": daily}
            if memberships:
                counts[name]["memberships"] = memberships
            if origins:
                counts[name]["origins"] = origins
            fields[name] = {column: found[column] for column in sorted(found)}
    return counts, fields


def _erase_and_count(
    frame: pd.DataFrame, subject: Subject, found: Counter[str]
) -> tuple[pd.DataFrame, int]:
    """Erase the subject from a frame and add the columns it changed to `found`."""
    # Imported here: erase builds on this module's package.
    from healthscore.privacy.erase import erase_frame_fields

    cleaned, count, columns = erase_frame_fields(frame, subject)
    found.update(columns)
    return cleaned, count


def export_event_store(
    project: Project, subject: Subject
) -> dict[str, dict[str, list[dict[str, Any]]]]:
    """Collect the subject's raw rows, rollup rows and memberships per store source.

    ``memberships`` lists the Segment user-to-account memberships of the account,
    or of the person's user id, which `forget` drops. ``origins`` lists the
    entries of `ingested.json` whose file name mentions the subject, each with its
    ``batch_id`` (the file's SHA-256).
    """
    store = event_store(project)
    found: dict[str, dict[str, list[dict[str, Any]]]] = {}
    for name in _stored_sources(project):
        rows: dict[str, list[dict[str, Any]]] = {}
        for part, table in (
            ("raw", store.read_raw(name)),
            ("daily", store.read_rollup(name)),
            ("memberships", store.read_memberships(name)),
        ):
            if table is None:
                continue
            frame = table.to_pandas()
            selected = frame.loc[frame_row_mask(frame, subject)]
            if len(selected):
                rows[part] = _records(selected)
        origins = _mentioning_origins(store.ingested_batches(name), subject)
        if origins:
            rows["origins"] = origins
        if rows:
            found[name] = rows
    return found


def _mentioning_origins(
    batches: dict[str, dict[str, Any]], subject: Subject
) -> list[dict[str, Any]]:
    """Return the ingested batches whose origin mentions the subject, as records."""
    return [
        {"batch_id": batch_id, **entry}
        for batch_id, entry in sorted(batches.items())
        if subject.mentioned_in(entry.get(ORIGIN_FIELD))
    ]


def _stored_sources(project: Project) -> list[str]:
    """Store sources of the project and any source with data left in the store."""
    names = set(store_sources(project.config)) | set(event_store(project).sources())
    return sorted(names)


def _records(frame: pd.DataFrame) -> list[dict[str, Any]]:
    return [
        {str(key): value for key, value in row.items()}
        for row in frame.to_dict(orient="records")
    ]
