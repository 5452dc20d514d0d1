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


#: Expected value of a setting, by the type of pydantic's error for a value of the
#: wrong type. Pydantic's own messages ("Input should be a valid number, unable to parse
#: string as a number") leave out the value and the fix.
_EXPECTED = {
    "float_parsing": "a number",
    "float_type": "a number",
    "finite_number": "a finite number",
    "int_parsing": "a whole number",
    "int_type": "a whole number",
    "int_from_float": "a whole number",
    "bool_parsing": "true or false",
    "bool_type": "true or false",
    "string_type": "text",
    "date_parsing": "a date as YYYY-MM-DD",
    "date_type": "a date as YYYY-MM-DD",
    "date_from_datetime_parsing": "a date as YYYY-MM-DD",
    "date_from_datetime_inexact": "a date as YYYY-MM-DD, without a time of day",
    "datetime_parsing": "a date and time as YYYY-MM-DD HH:MM:SS",
    "datetime_type": "a date and time as YYYY-MM-DD HH:MM:SS",
    "datetime_from_date_parsing": "a date and time as YYYY-MM-DD HH:MM:SS",
}

#: Bound checks of numbers, with the words for their limit.
_BOUNDS = {
    "greater_than": ("gt", "greater than {}"),
    "greater_than_equal": ("ge", "of at least {}"),
    "less_than": ("lt", "less than {}"),
    "less_than_equal": ("le", "of at most {}"),
}


def plain_message(error: dict[str, Any], key: str, value: Any) -> str | None:
    """Return the message for one pydantic error in the words of the project file.

    `error` is one item of `ValidationError.errors()`, `key` the setting's key and
    `value` what the file gives for it. Returns None for error types without such a
    message, whose pydantic text is kept.
    """
    kind = error["type"]
    if kind == "missing":
        return f"missing required setting {key!r}"
    if kind in _EXPECTED:
        return f"expected {_EXPECTED[kind]}, got {describe_value(value)}"
    if kind in _BOUNDS:
        name, words = _BOUNDS[kind]
        limit = (error.get("ctx") or {}).get(name)
        if limit is None:
            return None
        if isinstance(limit, float) and limit.is_integer():
            limit = int(limit)
        return f"expected a number {words.format(limit)}, got {describe_value(value)}"
    if kind == "literal_error":
        expected = (error.get("ctx") or {}).get("expected")
        if expected is None:
            return None
        return f"expected {expected}, got {describe_value(value)}"
    return None


def line_of(path: KeyPath, lines: dict[KeyPath, int]) -> int | None:
    """Return the line of `path`, or of the nearest setting around it that has one."""
    for end in range(len(path), -1, -1):
        if path[:end] in lines:
            return lines[path[:end]]
    return None
