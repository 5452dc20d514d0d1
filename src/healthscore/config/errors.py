"""Problems found in a project file, each with its file, line and key path."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import yaml

KeyPath = tuple[str | int, ...]

#: Maximum length of a value shown in a message. A longer value is cut and ends
#: in "...".
VALUE_LIMIT = 80


@dataclass(frozen=True)
class ConfigIssue:
    """One problem found in a project file."""

    file: str
    line: int | None
    key: str
    message: str
    suggestion: str | None = None

    def __str__(self) -> str:
        where = f"{self.file}:{self.line}" if self.line else self.file
        text = (
            f"{where}: {self.key}: {self.message}"
            if self.key
            else f"{where}: {self.message}"
        )
        if self.suggestion:
            text += f" (did you mean {self.suggestion!r}?)"
        return text

    def to_dict(self) -> dict[str, Any]:
        return {
            "file": self.file,
            "line": self.line,
            "key": self.key,
            "message": self.message,
            "suggestion": self.suggestion,
        }


class ConfigError(Exception):
    """A project whose files are missing or invalid; `issues` lists every problem."""

    def __init__(self, issues: list[ConfigIssue]):
        self.issues = issues
        count = len(issues)
        lines = "\n".join(f"  {issue}" for issue in issues)
        super().__init__(
            f"{count} problem{'s' if count != 1 else ''} in the project:\n{lines}"
        )


def format_key(path: KeyPath) -> str:
    """Format a key path as in healthscore.yml: ``privacy.pseudonymize.columns[1]``."""
    text = ""
    for part in path:
        if isinstance(part, int):
            text += f"[{part}]"
        elif text:
            text += f".{part}"
        else:
            text = part
    return text


def format_value(value: Any, limit: int = VALUE_LIMIT) -> str:
    """Format a value as YAML on one line, as the user would write it in the file.

    Mappings and lists use flow style (``{kind: drop, points: 5}``), and text longer
    than `limit` characters is cut and ends in "...".
    """
    text = yaml.safe_dump(
        value, default_flow_style=True, sort_keys=False, allow_unicode=True, width=2**31
    ).strip()
    text = text.removesuffix("\n...").strip()
    if len(text) > limit:
        text = text[: limit - 3].rstrip() + "..."
    return text


def describe_value(value: Any) -> str:
    """Describe what a setting was given, for "expected X, got ..." messages."""
    if value is None:
        return "an empty value"
    if isinstance(value, str):
        cut = len(value) > VALUE_LIMIT
        return f"the text {value[: VALUE_LIMIT - 3] + '...' if cut else value!r}"
    if isinstance(value, bool):
        return f"the value {format_value(value)}"
    if isinstance(value, int | float):
        return f"the number {format_value(value)}"
    if isinstance(value, list):
        return f"a list: {format_value(value)}"
    if isinstance(value, dict):
        return f"a mapping: {format_value(value)}"
    return f"the value {format_value(value)}"


def line_of(path: KeyPath, lines: dict[KeyPath, int]) -> int | None:
    """Return the line of `path`, or of the nearest setting around it that has one."""
    for end in range(len(path), -1, -1):
        if path[:end] in lines:
            return lines[path[:end]]
    return None
