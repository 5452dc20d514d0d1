"""Relate pydantic error locations and YAML key paths to the settings models.

Inside a union, pydantic adds a step to the location of an error that the file does
not have: the tag of a discriminated union, as in `alerts.rules[3].drop.points`, or
the member type of a plain union, as in `to.list[str]`. `error_path` drops these
steps, so problems are reported at the keys that the user wrote.
"""

from __future__ import annotations

import types
import typing
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Annotated, Any, Union

from pydantic import BaseModel
from pydantic.fields import FieldInfo

from healthscore.config.errors import KeyPath
from healthscore.config.models import ProjectConfig

#: Location step that pydantic adds for an error in the key of a mapping.
_DICT_KEY_STEP = "[key]"


@dataclass(frozen=True)
class ErrorPath:
    """The location of a model error in the settings as the file writes them."""

    key_path: KeyPath
    """Key path of the setting in the file."""
    union_path: KeyPath | None
    """Key path of the innermost plain union whose member label was dropped, if any.

    Pydantic tries each member of a plain union, so one bad value there gives an
    error per member, all with this union path."""


def error_path(location: Sequence[Any]) -> ErrorPath:
    """Return the file's key path for the location of a ProjectConfig error."""
    path: list[str | int] = []
    union_path: KeyPath | None = None
    annotation: Any = ProjectConfig
    for step in location:
        if step == _DICT_KEY_STEP:
            continue
        if annotation is None:  # a shape this walk does not know: keep every step
            path.append(step)
            continue
        annotation, discriminator = _strip(annotation)
        members = _union_members(annotation)
        if members:
            # The step is a union tag or a member label, not a key of the file.
            if discriminator is None:
                union_path = tuple(path)
            annotation = _member_with_tag(members, discriminator, step)
            continue
        path.append(step)
        annotation = _child(annotation, step)
    return ErrorPath(tuple(path), union_path)


def model_at(path: KeyPath, data: Any) -> type[BaseModel] | None:
    """Return the model that the mapping at `path` of the settings `data` is read into.

    A discriminated union, such as the metric types, is resolved by the tag that
    the mapping in `data` has. Returns None where no single model applies.
    """
    annotation: Any = ProjectConfig
    for end in range(len(path) + 1):
        annotation, discriminator = _strip(annotation)
        members = _union_members(annotation)
        if members:
            annotation = _member_in(members, discriminator, data, path[:end])
        if annotation is None:
            return None
        if end < len(path):
            annotation = _child(annotation, path[end])
    return annotation if _is_model(annotation) else None


def union_tags(path: KeyPath, data: Any) -> tuple[str, list[str]] | None:
    """Return the discriminator and allowed tags of the union read at `path`.

    Returns None when the value at `path` is not read into a discriminated union,
    such as the metric types or the alert rule kinds.
    """
    annotation: Any = ProjectConfig
    for end in range(len(path) + 1):
        annotation, discriminator = _strip(annotation)
        members = _union_members(annotation)
        if end == len(path):
            if not members or discriminator is None:
                return None
            tags = [
                tag
                for member in members
                if _is_model(member) and discriminator in member.model_fields
                for tag in typing.get_args(
                    member.model_fields[discriminator].annotation
                )
            ]
            return discriminator, tags
        if members:
            annotation = _member_in(members, discriminator, data, path[:end])
        if annotation is None:
            return None
        annotation = _child(annotation, path[end])
    return None


def field_of(model: type[BaseModel], key: str | int) -> FieldInfo | None:
    """Return the field of `model` that the file writes as `key`, by name or alias."""
    for name, info in model.model_fields.items():
        if key in (name, info.alias):
            return info
    return None


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


def _is_model(annotation: Any) -> bool:
    return isinstance(annotation, type) and issubclass(annotation, BaseModel)


def _strip(annotation: Any) -> tuple[Any, str | None]:
    """Remove `Annotated` and `| None`, and return the discriminator inside them."""
    discriminator = None
    while True:
        origin = typing.get_origin(annotation)
        args = typing.get_args(annotation)
        if origin is Annotated:
            for item in args[1:]:
                if isinstance(item, FieldInfo) and isinstance(item.discriminator, str):
                    discriminator = item.discriminator
            annotation = args[0]
            continue
        if origin is Union or origin is types.UnionType:
            present = [arg for arg in args if arg is not type(None)]
            if len(present) == 1:
                annotation = present[0]
                continue
        return annotation, discriminator


def _union_members(annotation: Any) -> tuple[Any, ...]:
    """Return the members of a union of two or more types, or () for another type."""
    origin = typing.get_origin(annotation)
    if origin is Union or origin is types.UnionType:
        return typing.get_args(annotation)
    return ()


def _member_in(
    members: Sequence[Any], discriminator: str | None, data: Any, path: KeyPath
) -> type[BaseModel] | None:
    """Return the union member that the mapping at `path` of `data` is read into."""
    mapping = value_in(data, path)
    tag = (
        mapping.get(discriminator)
        if isinstance(mapping, dict) and discriminator
        else None
    )
    return _member_with_tag(members, discriminator, tag)


def _member_with_tag(
    members: Sequence[Any], discriminator: str | None, tag: Any
) -> type[BaseModel] | None:
    """Return the model of a discriminated union whose tag field accepts `tag`."""
    if discriminator is None or not isinstance(tag, str):
        return None
    for member in members:
        if not _is_model(member):
            continue
        info = member.model_fields.get(discriminator)
        if info is not None and tag in typing.get_args(info.annotation):
            return typing.cast(type[BaseModel], member)
    return None


def _child(annotation: Any, key: str | int) -> Any:
    """Return the annotation of the value at `key` of a model, list or dict, or None."""
    if _is_model(annotation):
        info = field_of(annotation, key)
        return None if info is None else info.annotation
    if typing.get_origin(annotation) in (list, dict):
        return typing.get_args(annotation)[-1]
    return None
