"""Trained models on disk: `<project>/.healthscore/models/<name>/`.

Each model folder contains ``model.joblib`` (the fitted estimator, serialized by
joblib) and ``metadata.json`` (training dates, features, metrics, library versions
and the file's SHA-256). A save writes a fresh folder and renames it into place, so
a reader sees the old model or the new one, never a mix.

Loading a joblib file runs pickle, which can execute code stored in the file. So
`load_model` opens only files inside the project's own models folder, reached
without symbolic links, and only when their SHA-256 matches the metadata written
beside them.
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
from dataclasses import dataclass
from datetime import UTC, datetime
from importlib import metadata as package_metadata
from pathlib import Path
from typing import Any

import joblib

from healthscore.config import Project

__all__ = [
    "MODELS_DIR",
    "ModelNotFoundError",
    "StoredModel",
    "library_versions",
    "load_model",
    "models_folder",
    "save_model",
]

logger = logging.getLogger(__name__)

#: Folder of trained models, relative to the project folder.
MODELS_DIR = ".healthscore/models"
MODEL_FILE = "model.joblib"
METADATA_FILE = "metadata.json"

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
