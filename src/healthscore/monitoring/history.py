"""Score history: storing runs with their configuration, replaying past dates.

Each snapshot's `run.json` records the content hash of every scorecard (see
`Project.scorecard_version`) and `config_key`, a hash of all its settings but `store`
(`Project.settings_key`). Beside the snapshots, `configs/<config_key>.yml` keeps the
text of `healthscore.yml` that those settings were read from. `replay` rescores a past
date under that text, so a later change of any setting, such as a scorecard, the
as-of point or a source, does not change a replayed score. Snapshots stored before
`config_key` was recorded name their file by a hash of the scorecard versions alone.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import uuid
from collections.abc import Mapping
from datetime import date
from pathlib import Path

import pandas as pd
import yaml
from pydantic import ValidationError

from healthscore.config import Project
from healthscore.config.models import KEPT_CONFIG, ProjectConfig
from healthscore.config.partial import Unparsed
from healthscore.config.references import reference_issues
from healthscore.engine import Engine
from healthscore.errors import SourceError
from healthscore.pipeline import ScoringRun, score, snapshot_store
from healthscore.store.snapshots import SnapshotNotFoundError, SnapshotStore

__all__ = [
    "CONFIGS_DIR",
    "KeptConfigError",
    "config_key",
    "record_config",
    "record_run_config",
    "replay",
    "replay_project",
    "score_history",
    "store_run",
]

logger = logging.getLogger(__name__)

#: Folder inside the snapshot folder that keeps the project file per configuration.
CONFIGS_DIR = "configs"

#: Columns of `score_history`.
HISTORY_COLUMNS = ["as_of", "account_id", "score", "band", "scorecard"]


def config_key(versions: Mapping[str, str]) -> str:
    """Key of a set of scorecard versions: 16 hex digits of a SHA-256.

    Snapshots stored before `config_key` was recorded in run.json name their kept
    project file by this key.
    """
    text = json.dumps(dict(sorted(versions.items())), sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def config_path(store: SnapshotStore, key: str) -> Path:
    """File that keeps the project text stored under `key`."""
    return store.folder / CONFIGS_DIR / f"{key}.yml"


def record_run_config(run: ScoringRun) -> Path:
    """Keep a copy of the project file of the run's settings.

    Call it after every stored scoring run.
    """
    return record_config(run.project)


def record_config(project: Project) -> Path:
    """Keep a copy of the project file under its settings key, unless one is kept.

    Equal settings give equal keys, so a kept file is never replaced.
    """
    store = snapshot_store(project)
    path = config_path(store, project.settings_key())
    if path.exists():
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    # Write beside the target and rename, so a reader never sees half a file.
    staging = path.with_name(f".{path.name}.{uuid.uuid4().hex}")
    staging.write_text(project.file_text(), encoding="utf-8")
    os.replace(staging, path)
    logger.info("stored the project file of settings %s", path.stem)
    return path


def kept_config_path(project: Project, as_of: date) -> Path:
    """Return the kept project file of the snapshot of `as_of` (it may be missing)."""
    store = snapshot_store(project)
    info = store.run_info(as_of)
    key = info.get("config_key") or config_key(info.get("scorecard_versions", {}))
    return config_path(store, str(key))


def store_run(run: ScoringRun) -> Path:
    """Write the run's snapshot (tables and run.json) and its configuration copy."""
    run.snapshot = snapshot_store(run.project).write(
        run.as_of, run.tables(), run.run_info()
    )
    record_run_config(run)
    return run.snapshot


class KeptConfigError(ValueError):
    """A kept project file that is invalid now, or names a file that is missing now."""


def replay_project(project: Project, as_of: date) -> Project:
    """The project as configured for the stored snapshot of `as_of`.

    The stored settings replace the current ones except `store`, so that a replayed
    run reads and writes the current snapshot and state stores. The references of
    the kept settings are checked as `load_project` checks them, so a source file
    renamed since the date was scored is reported here, before any date is scored.

    Raises
    ------
    SnapshotNotFoundError
        When no snapshot of `as_of` is stored, or no project file is kept for its
        scorecard versions.
    KeptConfigError
        When the kept project file is no longer valid, or names a file that is
        missing now.
    """
    path = kept_config_path(project, as_of)
    if not path.is_file():
        raise SnapshotNotFoundError(
            f"no project file is kept for the snapshot of {as_of.isoformat()} "
            f"(expected {path}); it was stored before configurations were kept, so "
            f"run `healthscore backfill` or `healthscore score --as-of "
            f"{as_of.isoformat()}` to store it again"
        )
    text = path.read_text(encoding="utf-8")
    try:
        data = yaml.safe_load(text)
        config = ProjectConfig.model_validate(data, context=KEPT_CONFIG)
    except (yaml.YAMLError, ValidationError) as exc:
        raise KeptConfigError(
            f"the project file kept in {path} is no longer valid: {exc}; delete it "
            "and score the date again to keep the current configuration"
        ) from exc
    config = config.model_copy(update={"store": project.config.store})
    replayed = Project(root=project.root, config=config, text=text)
    problems = [
        f"{issue.key}: {issue.message}" if issue.key else issue.message
        for issue in reference_issues(replayed, {}, Unparsed())
    ]
    if problems:
        day = as_of.isoformat()
        raise KeptConfigError(
            f"cannot replay {day}: the configuration kept for it in {path}, which "
            f"was in force when {day} was scored, has "
            f"{'a problem' if len(problems) == 1 else f'{len(problems)} problems'} "
            f"now: {'; '.join(problems)}. A replay reads that file, not "
            "healthscore.yml, so a fix in healthscore.yml does not reach it. Restore "
            "what it names, such as a renamed file under its old name, or score the "
            "date under the current configuration with "
            f"`healthscore score --as-of {day}` (or `healthscore backfill` without "
            "--replay)."
        )
    return replayed


def replay(
    project: Project,
    as_of: date,
    *,
    engine: Engine | None = None,
    store: bool = True,
) -> ScoringRun:
    """Rescore `as_of` under the configuration stored with its snapshot.

    Parameters
    ----------
    project : Project
        The current project; its snapshot store holds the date to replay.
    as_of : date
        A date with a stored snapshot.
    engine : Engine, optional
        An engine opened for the stored configuration; by default one is opened.
    store : bool
        Replace the snapshot of `as_of` with the replayed run.

    Raises
    ------
    SnapshotNotFoundError
        When the date or its project file is not stored.
    KeptConfigError
        When the kept project file is no longer valid or names a missing file.
    SourceError
        When a source of the kept configuration cannot be read; the message names
        the date and the kept file.
    """
    replayed = replay_project(project, as_of)
    try:
        run = score(replayed, as_of, engine=engine, store=False)
    except SourceError as exc:
        day = as_of.isoformat()
        reason = str(exc).rstrip(".")
        raise SourceError(
            f"cannot replay {day} under the configuration kept for it in "
            f"{kept_config_path(project, as_of)}: {reason}. The settings named are "
            "those of that file, not of healthscore.yml. To use the current ones, "
            f"score the date with `healthscore score --as-of {day}`."
        ) from exc
    if store:
        store_run(run)
    return run


def score_history(
    store: SnapshotStore, account_ids: list[str] | None = None
) -> pd.DataFrame:
    """Scores of every stored date, oldest first, with the columns HISTORY_COLUMNS.

    Raises SnapshotNotFoundError when no snapshot is stored.
    """
    scores = store.read_many("scores")
    if account_ids is not None:
        scores = scores[scores["account_id"].isin(account_ids)]
    frame = scores[HISTORY_COLUMNS].copy()
    frame["as_of"] = pd.to_datetime(frame["as_of"]).dt.date
    return frame.sort_values(["as_of", "account_id"], kind="stable").reset_index(
        drop=True
    )
