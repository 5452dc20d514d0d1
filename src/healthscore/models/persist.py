"""Trained models and validation results on disk, under `.healthscore/models/`.

Each model folder `<name>/` contains ``model.joblib`` (the fitted estimator,
serialized by joblib) and ``metadata.json`` (training dates, features, metrics,
library versions and the file's SHA-256). A save writes a fresh folder and renames
it into place, so a reader sees the old model or the new one, never a mix.

Loading a joblib file runs pickle, which can execute code stored in the file. So
`load_model` opens only files inside the project's own models folder, reached
without symbolic links, and only when their SHA-256 matches the metadata written
beside them.

`healthscore backtest` and `healthscore compare` store their results as JSON in
`models/` beside the snapshot folder, which is this folder unless `store.snapshots`
moves it (see `save_results`). Each run is stored in
`<command>.runs/<run id>.json`, and the latest run again in `<command>.json`, where
the report and the web service read it. After each run, the oldest run files beyond
`validation.keep_runs` are deleted (see `prune_runs`).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import platform
import re
import shutil
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from importlib import metadata as package_metadata
from pathlib import Path
from typing import Any

import joblib

from healthscore.config import Project

__all__ = [
    "MODELS_DIR",
    "RESULT_NAMES",
    "ModelNotFoundError",
    "StoredModel",
    "library_versions",
    "list_runs",
    "load_model",
    "load_results",
    "models_folder",
    "prune_runs",
    "results_folder",
    "save_model",
    "save_results",
]

logger = logging.getLogger(__name__)

#: Folder of trained models, relative to the project folder.
MODELS_DIR = ".healthscore/models"
MODEL_FILE = "model.joblib"
METADATA_FILE = "metadata.json"

#: Commands whose results `save_results` stores.
RESULT_NAMES = ("backtest", "compare")
#: Suffix of the folder that keeps every run of a command, as in `backtest.runs/`.
#: It contains a dot, which model names cannot, so no model folder has its name.
RUNS_SUFFIX = ".runs"
#: Name of a run file that `save_results` writes: the run id and `.json`. The id is
#: the UTC time to the microsecond and six random hex digits, or `unrecorded` for
#: results stored before runs were kept, so ids sort in the order runs were stored.
_RUN_FILE = re.compile(r"^(?P<id>\d{8}T\d{12}Z-(?:[0-9a-f]{6}|unrecorded))\.json$")

_NAME = re.compile(r"^[a-z][a-z0-9_-]*$")
_LIBRARIES = ("healthscore", "scikit-learn", "lightgbm", "lifelines", "pandas", "numpy")


class ModelNotFoundError(LookupError):
    """A model name with no trained model stored."""


@dataclass
class StoredModel:
    """A model read back from disk with its metadata."""

    estimator: Any
    metadata: dict[str, Any]
    folder: Path


def models_folder(project: Project) -> Path:
    """Return the folder of the project's trained models."""
    return project.root / MODELS_DIR


def library_versions() -> dict[str, str]:
    """Versions of Python and of the libraries a stored model depends on."""
    versions = {"python": platform.python_version()}
    for name in _LIBRARIES:
        try:
            versions[name] = package_metadata.version(name)
        except package_metadata.PackageNotFoundError:
            versions[name] = "not installed"
    return versions


def save_model(
    project: Project, name: str, estimator: Any, metadata: dict[str, Any]
) -> Path:
    """Store `estimator` and `metadata` as the model `name`, replacing an older one.

    The store adds `name`, `saved_at` (UTC), `libraries` and `sha256` to the
    metadata. Returns the model folder.
    """
    _check_name(name)
    root = models_folder(project)
    root.mkdir(parents=True, exist_ok=True)
    staging = root / f".{name}.{uuid.uuid4().hex}"
    staging.mkdir()
    try:
        model_path = staging / MODEL_FILE
        joblib.dump(estimator, model_path)
        info = dict(metadata)
        info.update(
            {
                "name": name,
                "saved_at": datetime.now(UTC).isoformat(timespec="seconds"),
                "libraries": library_versions(),
                "sha256": _sha256(model_path),
            }
        )
        text = json.dumps(info, indent=2, default=_json_default, ensure_ascii=False)
        (staging / METADATA_FILE).write_text(text + "\n", encoding="utf-8")
        target = root / name
        old = root / f".{name}.old.{uuid.uuid4().hex}"
        if target.exists():
            os.replace(target, old)
        os.replace(staging, target)
        if old.exists():
            shutil.rmtree(old)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    logger.info("stored model %s in %s", name, target)
    return target


def load_model(project: Project, name: str) -> StoredModel:
    """Read the model `name` of `project`.

    Raises
    ------
    ModelNotFoundError
        When no model of that name is stored.
    ValueError
        When the model files are outside the models folder, or the model file does
        not match the SHA-256 in its metadata.
    """
    _check_name(name)
    root = models_folder(project).resolve()
    folder = root / name
    model_path = folder / MODEL_FILE
    metadata_path = folder / METADATA_FILE
    if not model_path.is_file() or not metadata_path.is_file():
        raise ModelNotFoundError(
            f"no trained {name} model in {root}; run `healthscore train` first"
        )
    for path in (folder, model_path, metadata_path):
        if path.is_symlink() or not path.resolve().is_relative_to(root):
            raise ValueError(
                f"{path} is a symbolic link or lies outside {root}; models are only "
                "read from the project's own models folder, so run "
                "`healthscore train` to store the model again"
            )
    try:
        info: dict[str, Any] = json.loads(metadata_path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise ValueError(
            f"{metadata_path} is not valid JSON ({exc}); run `healthscore train` to "
            "store the model again"
        ) from exc
    if info.get("sha256") != _sha256(model_path):
        raise ValueError(
            f"{model_path} does not match the SHA-256 in {metadata_path}, so it is not "
            "loaded; run `healthscore train` to store the model again"
        )
    estimator = joblib.load(model_path)
    stored = info.get("libraries", {})
    current = library_versions()
    changed = [
        f"{library} {stored[library]} -> {current[library]}"
        for library in ("healthscore", "scikit-learn", "lightgbm", "lifelines")
        if library in stored and stored[library] != current.get(library)
    ]
    if changed:
        logger.warning(
            "model %s was trained with other library versions (%s); train it again "
            "if its results look wrong",
            name,
            ", ".join(changed),
        )
    return StoredModel(estimator, info, folder)


def results_folder(project: Project) -> Path:
    """Folder of stored validation results: `models/` beside the snapshot folder."""
    return project.path(project.config.store.snapshots).parent / "models"


def save_results(
    project: Project,
    name: str,
    payload: dict[str, Any],
    snapshot_versions: Mapping[str, list[str]] | None = None,
) -> Path:
    """Store `payload` as a new run of the command `name` and as its latest results.

    The run is written to `<results folder>/<name>.runs/<run id>.json`, and then
    replaces `<name>.json`. Both contain `payload` and a `run` key. It records the
    run id, the command, `created_at` (UTC), the versions of the configured
    scorecards, the config key (see `Project.settings_key`) and the healthscore
    version. Its `snapshot_scorecard_versions` is `snapshot_versions`: the versions
    of each scorecard that scored the snapshots the run measured.

    Latest results stored before runs were kept are first copied into the runs
    folder, so they count as a run. Then the oldest runs beyond
    `validation.keep_runs` are deleted (see `prune_runs`), never the new one.
    Returns the path of the run file.
    """
    from healthscore import __version__

    _check_result_name(name)
    folder = results_folder(project)
    runs = folder / f"{name}{RUNS_SUFFIX}"
    runs.mkdir(parents=True, exist_ok=True)
    latest = folder / f"{name}.json"
    _keep_unrecorded_latest(latest, runs, name)
    now = datetime.now(UTC)
    run_id = f"{now:%Y%m%dT%H%M%S%fZ}-{uuid.uuid4().hex[:6]}"
    stored = dict(payload)
    stored["run"] = {
        "id": run_id,
        "command": name,
        "created_at": now.isoformat(timespec="microseconds"),
        "scorecard_versions": {
            card.name: project.scorecard_version(card)
            for card in project.config.scorecards
        },
        "config_key": project.settings_key(),
        "healthscore_version": __version__,
        "snapshot_scorecard_versions": (
            None if snapshot_versions is None else dict(snapshot_versions)
        ),
    }
    path = runs / f"{run_id}.json"
    _write_json(path, stored)
    _write_json(latest, stored)
    logger.info("stored %s run %s in %s", name, run_id, path)
    prune_runs(project, name, keep_current=run_id)
    return path


def load_results(project: Project, name: str) -> dict[str, Any] | None:
    """Read the latest stored results of the command `name`, or None when none are.

    Raises ValueError when the file is not valid JSON.
    """
    _check_result_name(name)
    path = results_folder(project) / f"{name}.json"
    if not path.is_file():
        return None
    return _read_json(path, name)


def list_runs(project: Project, name: str) -> list[dict[str, Any]]:
    """Read every stored run of the command `name`, oldest first.

    Only files of the runs folder named like a run id are read, so other files
    there are left out.

    Latest results stored before runs were kept, and not yet copied into the runs
    folder by a later run, are listed too, with the `run` key that such a copy
    would get (see `save_results`).

    Raises ValueError when a run file is not valid JSON or has no `run` key.
    """
    _check_result_name(name)
    folder = results_folder(project)
    stored = [_read_run(path, name) for path in _run_files(folder, name)]
    latest = folder / f"{name}.json"
    if latest.is_file():
        data = _read_json(latest, name)
        if "run" not in data:
            data["run"] = _unrecorded_run(latest, name)
            stored.append(data)
    return sorted(
        stored, key=lambda data: (data["run"]["created_at"], data["run"]["id"])
    )


def prune_runs(project: Project, name: str, keep_current: str | None = None) -> int:
    """Delete the oldest runs of the command `name` until `validation.keep_runs` remain.

    Only files named like a run id, whose JSON records that run id and `name` as
    its command, count as runs and may be deleted. Other files in the runs folder
    stay. A run file that cannot be read is skipped with a warning: it is neither
    counted nor deleted. The run `keep_current` is kept and counts as one of the
    runs that remain, even when its id is not the newest, as after the clock was
    set back. `<name>.json`, the latest results, lies outside the runs folder and
    is never deleted.

    Each run is one file, and the runs are deleted one `unlink` at a time, oldest
    first. So an interrupted prune leaves whole runs, only more of them than the
    setting, and the next run deletes the rest. Returns the number of runs deleted.
    """
    _check_result_name(name)
    keep = project.config.validation.keep_runs
    runs = [
        path
        for path in _run_files(results_folder(project), name)
        if path.stem != keep_current and _is_stored_run(path, name)
    ]
    if keep_current is not None:
        keep -= 1
    deleted = 0
    for path in runs[: max(len(runs) - keep, 0)]:
        try:
            path.unlink(missing_ok=True)
        except OSError as exc:
            logger.warning(
                "failed to delete the old %s run %s (%s); delete it by hand, or "
                "leave it for the next run to delete",
                name,
                path,
                exc,
            )
            continue
        deleted += 1
    if deleted:
        logger.info(
            "deleted %d old %s runs to keep the newest %d (validation.keep_runs)",
            deleted,
            name,
            project.config.validation.keep_runs,
        )
    return deleted


def _run_files(folder: Path, name: str) -> list[Path]:
    """Return the files of `<name>.runs/` named like a run id, oldest id first."""
    runs = folder / f"{name}{RUNS_SUFFIX}"
    if not runs.is_dir():
        return []
    return sorted(
        (path for path in runs.iterdir() if _RUN_FILE.match(path.name)),
        key=lambda path: path.name,
    )


def _is_stored_run(path: Path, name: str) -> bool:
    """Tell whether `path` is a run of `name` that `save_results` wrote, warning if not.

    Returns False without a warning when another process deleted the file meanwhile.
    """
    if path.is_symlink() or not path.is_file():
        if path.exists() or path.is_symlink():
            logger.warning(
                "skipped %s while deleting old %s runs: it is not a regular file, "
                "so healthscore did not write it; move it out of %s",
                path,
                name,
                path.parent,
            )
        return False
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return False
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        logger.warning(
            "skipped %s while deleting old %s runs: it cannot be read as JSON (%s), "
            "so it may be half written; delete it if its run is not needed",
            path,
            name,
            exc,
        )
        return False
    run = data.get("run") if isinstance(data, dict) else None
    if (
        not isinstance(run, dict)
        or run.get("id") != path.stem
        or run.get("command") != name
    ):
        logger.warning(
            "skipped %s while deleting old %s runs: its `run` key does not record "
            "run id %s of %s, so healthscore did not write it there; move it out "
            "of %s",
            path,
            name,
            path.stem,
            name,
            path.parent,
        )
        return False
    return True


def _keep_unrecorded_latest(latest: Path, runs: Path, name: str) -> None:
    """Copy latest results stored before runs were kept into the runs folder."""
    if not latest.is_file():
        return
    data = _read_json(latest, name)
    if "run" in data:
        return
    data["run"] = _unrecorded_run(latest, name)
    _write_json(runs / f"{data['run']['id']}.json", data)


def _unrecorded_run(path: Path, name: str) -> dict[str, Any]:
    """Return the `run` key of results stored without one, from the file's time."""
    modified = datetime.fromtimestamp(path.stat().st_mtime, UTC)
    return {
        "id": f"{modified:%Y%m%dT%H%M%S%fZ}-unrecorded",
        "command": name,
        "created_at": modified.isoformat(timespec="microseconds"),
        "scorecard_versions": None,
        "config_key": None,
        "healthscore_version": None,
        "snapshot_scorecard_versions": None,
        "note": "stored before each run was kept, so the scorecard versions and the "
        "config key are unknown and created_at is the file's modification time",
    }


def _read_run(path: Path, name: str) -> dict[str, Any]:
    """Read a run file, raising ValueError unless it has the `run` key of a run."""
    data = _read_json(path, name)
    run = data.get("run") if isinstance(data, dict) else None
    if not isinstance(run, dict) or not {"id", "created_at"} <= run.keys():
        raise ValueError(
            f"{path} has no `run` key with an id and created_at, so it is not a "
            f"stored {name} run; move it out of {path.parent}"
        )
    return data


def _read_json(path: Path, name: str) -> dict[str, Any]:
    try:
        data: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise ValueError(
            f"{path} is not valid JSON ({exc}); delete it, and run `healthscore "
            f"{name}` to store the results again"
        ) from None
    return data


def _write_json(path: Path, data: dict[str, Any]) -> None:
    """Write `data` to `path` through a temporary file, so readers never see half."""
    temporary = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
    try:
        temporary.write_text(
            json.dumps(data, indent=2, allow_nan=False, default=str) + "\n",
            encoding="utf-8",
        )
        temporary.replace(path)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise


def _check_result_name(name: str) -> None:
    if name not in RESULT_NAMES:
        raise ValueError(
            f"unknown results {name!r}; stored results are {', '.join(RESULT_NAMES)}"
        )


def _check_name(name: str) -> None:
    if not _NAME.match(name):
        raise ValueError(
            f"invalid model name {name!r}; use lowercase letters, digits, _ and -"
        )


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _json_default(value: object) -> Any:
    if hasattr(value, "isoformat"):
        return value.isoformat()
    if hasattr(value, "item"):
        return value.item()
    raise TypeError(f"cannot store {type(value).__name__} in model metadata")
