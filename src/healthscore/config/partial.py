"""Validate the parts of a project file that parse when others fail their models.

`load_project` lists the model problems of `healthscore.yml`, such as an unknown
channel type or a missing key, together with the reference problems, such as an
unknown band or metric, of every part that parsed. `parse_partially` builds those
parts. It leaves out each failing entry of a collection (one metric, one alert rule,
one channel), or a failing setting outside any collection, and validates the rest
again until it passes. `Unparsed` records what was left out, so a reference to a
name whose definition failed is not also reported as unknown.
"""

from __future__ import annotations

import copy
import difflib
import types
import typing
from dataclasses import dataclass, field
from typing import Any

from pydantic import BaseModel, Field, ValidationError
from pydantic.fields import FieldInfo

from healthscore.config.models import (
    DEFER_REFERENCES,
    ProjectConfig,
    ScorecardConfig,
    SourceConfig,
)

KeyPath = tuple[str | int, ...]

#: Rounds of leaving out failing parts before `parse_partially` gives up. Each round
#: leaves out every part that failed in it. A later round fails only where a
#: collection or section fails as a whole once an entry is gone, as the bands do
#: when the remaining ones leave a gap, and each such round moves one level up. No
#: collection of ProjectConfig lies more than three model levels deep (for example
#: `privacy.pseudonymize.columns`), so 10 rounds is an estimate with room to spare.
MAX_ROUNDS = 10


class PartialProjectConfig(ProjectConfig):
    """ProjectConfig with every top-level key optional, for the parts that parsed."""

    name: str = Field(default="", description="Project name.")
    sources: dict[str, SourceConfig] = Field(
        default_factory=dict, description="Input tables by name."
    )
    scorecards: list[ScorecardConfig] = Field(
        default_factory=list, description="Scorecards."
    )


@dataclass
class Unparsed:
    """The parts of a project file that failed validation and were left out."""

    names: dict[KeyPath, set[str]] = field(default_factory=dict)
    """Names of the entries left out, by the key path of their collection."""
    whole: set[KeyPath] = field(default_factory=set)
    """Key paths of settings left out whole, and of collections with an entry left
    out whose name is unknown."""
    file_indices: dict[KeyPath, list[int]] = field(default_factory=dict)
    """For each list with entries left out, the file's index of each remaining one."""

    def defines(self, collection: KeyPath, name: str) -> bool:
        """Tell whether a left-out entry of `collection` may define `name`."""
        return self.left_out_whole(collection) or name in self.names.get(collection, ())

    def touches(self, collection: KeyPath) -> bool:
        """Tell whether any entry of `collection` was left out."""
        return self.left_out_whole(collection) or bool(self.names.get(collection))

    def left_out_whole(self, path: KeyPath) -> bool:
        """Tell whether the setting at `path`, or one around it, was left out whole."""
        return any(path[:end] in self.whole for end in range(1, len(path) + 1))

    def file_path(self, path: KeyPath) -> KeyPath:
        """Map a key path of the partial settings to the same setting in the file."""
        mapped = list(path)
        for end, part in enumerate(path):
            indices = self.file_indices.get(path[:end])
            if indices is not None and isinstance(part, int) and part < len(indices):
                mapped[end] = indices[part]
        return tuple(mapped)


def parse_partially(data: dict[str, Any]) -> tuple[ProjectConfig, Unparsed] | None:
    """Validate `data` without the parts that fail, and record what was left out.

    Returns None when no valid remainder is found within MAX_ROUNDS rounds.
    """
    working = copy.deepcopy(data)
    unparsed = Unparsed()
    # PartialProjectConfig accepts these missing or empty, but ProjectConfig did not.
    for name, info in ProjectConfig.model_fields.items():
        if info.is_required() and not data.get(name):
            unparsed.whole.add((name,))
    for _ in range(MAX_ROUNDS):
        try:
            config = PartialProjectConfig.model_validate(
                working, context=DEFER_REFERENCES
            )
        except ValidationError as exc:
            parts = set()
            for error in exc.errors():
                part = _part_to_leave_out(tuple(error["loc"]))
                if part is None:
                    return None
                parts.add(part)
            # Later list entries go first, so earlier indices stay valid.
            ordered = sorted(parts, key=lambda part: _sort_key(part.path), reverse=True)
            changed = [_leave_out(working, data, part, unparsed) for part in ordered]
            if not any(changed):
                return None
            continue
        return config, unparsed
    return None


@dataclass(frozen=True)
class _Part:
    """A part of the file to leave out."""

    path: KeyPath
    is_entry: bool
    """Whether the part is an entry of a collection, such as one metric."""
    meant: KeyPath | None = None
    """For an unknown key, the setting whose name is closest to it: the settings
    written under the misspelt key count as failed for that setting."""


def _part_to_leave_out(location: KeyPath) -> _Part | None:
    """Return the part of the file to leave out for an error at `location`.

    The part is the first entry of a collection on the way to `location`, so one
    failing metric or rule leaves the others in place. Outside collections it is
    the innermost setting that has a default, so the default takes its place.
    """
    model: type[BaseModel] = PartialProjectConfig
    fallback: KeyPath | None = None
    for index, key in enumerate(location):
        info = _field(model, key)
        if info is None:
            close = difflib.get_close_matches(str(key), model.model_fields, n=1)
            meant = (*location[:index], close[0]) if close else None
            return _Part(location[: index + 1], is_entry=False, meant=meant)
        if not info.is_required():
            fallback = location[: index + 1]
        annotation, container = unwrap_annotation(info.annotation)
        if container:
            if index + 1 < len(location):
                return _Part(location[: index + 2], is_entry=True)
            return _Part(location[: index + 1], is_entry=False)
        if not (isinstance(annotation, type) and issubclass(annotation, BaseModel)):
            break
        model = annotation
    return None if fallback is None else _Part(fallback, is_entry=False)


def _field(model: type[BaseModel], key: str | int) -> FieldInfo | None:
    for name, info in model.model_fields.items():
        if key in (name, info.alias):
            return info
    return None


def _leave_out(working: Any, data: Any, part: _Part, unparsed: Unparsed) -> bool:
    """Delete `part` from `working` and record it in `unparsed`.

    Returns whether anything was deleted. `data` is the file's settings, from which
    the name of a list entry is read.
    """
    path = part.path
    in_file = unparsed.file_path(path)
    parent, key = value_in(working, path[:-1]), path[-1]
    deleted = False
    if isinstance(parent, dict) and key in parent:
        del parent[key]
        deleted = True
    elif isinstance(parent, list) and isinstance(key, int) and key < len(parent):
        indices = unparsed.file_indices.setdefault(path[:-1], list(range(len(parent))))
        del parent[key]
        del indices[key]
        deleted = True
    if not part.is_entry:
        unparsed.whole.add(in_file)
        if part.meant is not None:
            unparsed.whole.add(unparsed.file_path(part.meant))
        return deleted
    name: Any = in_file[-1]
    if isinstance(name, int):
        entry = value_in(data, in_file)
        name = entry.get("name") if isinstance(entry, dict) else None
    if isinstance(name, str):
        unparsed.names.setdefault(in_file[:-1], set()).add(name)
    else:
        unparsed.whole.add(in_file[:-1])
    return deleted


def _sort_key(path: KeyPath) -> tuple[tuple[int, int, str], ...]:
    """Order key paths whose parts mix keys and list indices."""
    return tuple(
        (1, part, "") if isinstance(part, int) else (0, 0, part) for part in path
    )


def unwrap_annotation(annotation: Any) -> tuple[Any, bool]:
    """Return the model inside an optional, list or dict type, and if it was in one."""
    container = False
    while True:
        origin = typing.get_origin(annotation)
        args = [a for a in typing.get_args(annotation) if a is not type(None)]
        if origin in (list, dict):
            annotation, container = args[-1], True
        elif args and origin is not None and not isinstance(origin, type):
            annotation = args[0]  # Optional[X] or X | None
        elif origin is types.UnionType and args:
            annotation = args[0]
        else:
            return annotation, container


def value_in(data: Any, path: KeyPath) -> Any:
    """Return the value at `path` of parsed YAML, or None where the path ends early."""
    for part in path:
        if isinstance(data, dict):
            data = data.get(part)
        elif isinstance(data, list) and isinstance(part, int) and part < len(data):
            data = data[part]
        else:
            return None
    return data
