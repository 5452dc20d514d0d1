"""Validate the parts of a project file that parse when others fail their models.

`load_project` lists the model problems of `healthscore.yml`, such as an unknown
channel type or a missing key, together with the reference problems, such as an
unknown band or metric, of every part that parsed. `parse_partially` builds those
parts. It leaves out each failing entry of a collection (one metric, one alert rule,
one channel), or a failing setting outside any collection, and validates the rest
again until it passes. In the collections of KEPT_ENTRIES an entry stays when only
settings with a default fail in it. Those settings are left out instead, so the
entry's other settings are still checked. `Unparsed` records what was left out, so a
reference to a name whose definition failed is not also reported as unknown.
"""

from __future__ import annotations

import copy
import difflib
from dataclasses import dataclass, field
from typing import Any

from pydantic import BaseModel, Field, ValidationError

from healthscore.config.errors import KeyPath
from healthscore.config.keypaths import (
    error_path,
    field_of,
    model_at,
    unwrap_annotation,
    value_in,
)
from healthscore.config.models import (
    DEFER_REFERENCES,
    ProjectConfig,
    ScorecardConfig,
    SourceConfig,
)

#: Rounds of leaving out failing parts before `parse_partially` gives up. Each round
#: leaves out every part that failed in it. A later round fails only where a
#: collection or section fails as a whole once an entry is gone, as the bands do
#: when the remaining ones leave a gap, and each such round moves one level up. No
#: collection of ProjectConfig lies more than three model levels deep (for example
#: `privacy.pseudonymize.columns`), so 10 rounds is an estimate with room to spare.
MAX_ROUNDS = 10

#: Collections whose entries stay in the partial settings, without the failing
#: settings, when only settings with a default fail in them. The reference checks
#: read each of these entries on its own. The exception is a metric computed from
#: other metrics, whose checks skip it when a base metric is incomplete (see
#: `Unparsed.incomplete_entries`). Sources are not kept this way, because the
#: column checks of every metric read the settings of its source.
KEPT_ENTRIES: frozenset[KeyPath] = frozenset(
    {
        ("metrics",),
        ("scorecards",),
        ("alerts", "rules"),
        ("alerts", "channels"),
        ("playbooks",),
    }
)


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
    defaulted: set[KeyPath] = field(default_factory=set)
    """Key paths of settings left out whose default takes their place, so a check of
    one of them would check the default instead of the file."""
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

    def is_defaulted(self, path: KeyPath) -> bool:
        """Tell whether the file's setting at `path`, or one around it, was replaced
        by its default."""
        return any(path[:end] in self.defaulted for end in range(1, len(path) + 1))

    def incomplete_entries(self) -> set[KeyPath]:
        """Return the file's key paths of the entries kept without some settings."""
        entries = set()
        for path in self.defaulted:
            for collection in KEPT_ENTRIES:
                size = len(collection)
                if path[:size] == collection and len(path) > size + 1:
                    entries.add(path[: size + 1])
        return entries

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
                location = error_path(error["loc"]).key_path
                part = _part_to_leave_out(location, working)
                if part is None:
                    return None
                parts.add(part)
            # Later list entries go first, so earlier indices stay valid, and the
            # settings of an entry go before the entry.
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
    is_unknown_key: bool = False
    """Whether the part is a key that the model does not have."""
    meant: KeyPath | None = None
    """For an unknown key, the setting whose name is closest to it: the settings
    written under the misspelt key count as failed for that setting."""


def _part_to_leave_out(location: KeyPath, working: Any) -> _Part | None:
    """Return the part of `working` to leave out for an error at `location`.

    The part is the first entry of a collection on the way to `location`, so one
    failing metric or rule leaves the others in place, or a setting of that entry
    (see `_part_of_entry`). Outside collections it is the innermost setting that has
    a default, so the default takes its place.
    """
    model: type[BaseModel] = PartialProjectConfig
    fallback: KeyPath | None = None
    for index, key in enumerate(location):
        info = field_of(model, key)
        if info is None:
            return _unknown_key(model, location[: index + 1])
        if not info.is_required():
            fallback = location[: index + 1]
        annotation, container = unwrap_annotation(info.annotation)
        if container:
            if index + 1 < len(location):
                return _part_of_entry(location[: index + 2], location, working)
            return _Part(location[: index + 1], is_entry=False)
        if not (isinstance(annotation, type) and issubclass(annotation, BaseModel)):
            break
        model = annotation
    return None if fallback is None else _Part(fallback, is_entry=False)


def _part_of_entry(entry: KeyPath, location: KeyPath, working: Any) -> _Part:
    """Return the part of collection entry `entry` to leave out for an error at
    `location` inside it.

    In a collection of KEPT_ENTRIES this is an unknown key, or the innermost setting
    on the way to `location` that has a default and lies outside any collection of
    the entry. Otherwise, and when the failing setting is required, it is the entry.

    NOTE: an error of the entry as a whole, such as a playbook without a trigger,
    leaves out the entry, so its other settings are checked once that is fixed.
    """
    model = model_at(entry, working) if entry[:-1] in KEPT_ENTRIES else None
    if model is None:
        return _Part(entry, is_entry=True)
    setting: KeyPath | None = None
    for index in range(len(entry), len(location)):
        info = field_of(model, location[index])
        if info is None:
            return _unknown_key(model, location[: index + 1])
        if not info.is_required():
            setting = location[: index + 1]
        annotation, container = unwrap_annotation(info.annotation)
        if container or not (
            isinstance(annotation, type) and issubclass(annotation, BaseModel)
        ):
            break
        model = annotation
    if setting is None:
        return _Part(entry, is_entry=True)
    return _Part(setting, is_entry=False)


def _unknown_key(model: type[BaseModel], path: KeyPath) -> _Part:
    close = difflib.get_close_matches(str(path[-1]), model.model_fields, n=1)
    meant = (*path[:-1], close[0]) if close else None
    return _Part(path, is_entry=False, is_unknown_key=True, meant=meant)


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
        if not part.is_unknown_key:
            unparsed.defaulted.add(in_file)
        if part.meant is not None:
            meant = unparsed.file_path(part.meant)
            unparsed.whole.add(meant)
            # The misspelt key was meant to set this setting, so its default replaces
            # the value written under the misspelt key.
            if not (isinstance(parent, dict) and part.meant[-1] in parent):
                unparsed.defaulted.add(meant)
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
