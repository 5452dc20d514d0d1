"""Read `healthscore.yml`, validate it, and report problems with file, line and key."""

from __future__ import annotations

import difflib
import hashlib
import json
import re
from collections.abc import Iterator, Sequence, Set
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from healthscore.config.errors import (
    ConfigError,
    ConfigIssue,
    KeyPath,
    describe_value,
    format_key,
    format_value,
    line_of,
    plain_message,
)
from healthscore.config.keypaths import (
    error_path,
    field_of,
    model_at,
    union_tags,
    value_in,
)
from healthscore.config.models import DEFER_REFERENCES, ProjectConfig, ScorecardConfig
from healthscore.config.partial import Unparsed, parse_partially
from healthscore.config.privacy import record_project_columns
from healthscore.config.references import (
    metric_closure,
    metric_dependencies,
    reference_issues,
)
from healthscore.config.variables import expand_variables

# The names that the rest of healthscore imports from here; several are defined in
# other modules of this package.
__all__ = [
    "PROJECT_FILE",
    "ConfigError",
    "ConfigIssue",
    "Project",
    "expand_variables",
    "format_key",
    "load_project",
    "metric_dependencies",
]

PROJECT_FILE = "healthscore.yml"


def _by_line(issues: list[ConfigIssue]) -> list[ConfigIssue]:
    """Order problems as they appear in the file; those without a line go first.

    The sort is stable, so problems of one line keep the order they were found in.
    """
    return sorted(issues, key=lambda issue: issue.line or 0)


@dataclass
class Project:
    """A loaded project: its folder and validated settings."""

    root: Path
    config: ProjectConfig
    text: str | None = None
    """Text of the project file that `config` was read from, when it is not `file`,
    as for a configuration kept with a past snapshot."""
    file: Path = field(init=False)

    def __post_init__(self) -> None:
        self.file = self.root / PROJECT_FILE

    def file_text(self) -> str:
        """Return the text of the project file that the settings were read from."""
        if self.text is not None:
            return self.text
        return self.file.read_text(encoding="utf-8")

    def settings_key(self) -> str:
        """Content hash of every setting except `store`: 16 hex digits of a SHA-256.

        Two runs share the key exactly when they were scored under the same
        settings, so it names the project file kept for replaying them.
        """
        settings = self.config.model_dump(mode="json", by_alias=True, exclude={"store"})
        text = json.dumps(settings, sort_keys=True, default=str)
        return hashlib.sha256(text.encode()).hexdigest()[:16]

    def path(self, relative: str) -> Path:
        """Resolve a path from the project file against the project folder.

        `${NAME}` and `${NAME:-default}` are replaced by environment variables, so a
        project can read data kept outside its folder through one setting.
        """
        candidate = Path(expand_variables(relative)).expanduser()
        return candidate if candidate.is_absolute() else self.root / candidate

    def scorecard_version(self, scorecard: ScorecardConfig) -> str:
        """Content hash of a scorecard, the metrics it uses and the bands.

        A metric's `description` is hashed as if it were empty, because editing it
        changes no score. So the alert rules and trends keep comparing across such
        an edit, and a project without descriptions keeps its earlier hash.
        """
        used = {m.metric for c in scorecard.components.values() for m in c.measures}
        metrics = {}
        for name in sorted(metric_closure(self.config.metrics, used)):
            dumped = self.config.metrics[name].model_dump(mode="json")
            if "description" in dumped:
                dumped["description"] = ""
            metrics[name] = dumped
        payload = {
            "scorecard": scorecard.model_dump(mode="json", by_alias=True),
            "metrics": metrics,
            "bands": [band.model_dump(mode="json") for band in self.config.bands],
        }
        digest = hashlib.sha256(
            json.dumps(payload, sort_keys=True).encode()
        ).hexdigest()
        return digest[:12]


def load_project(directory: str | Path = ".") -> Project:
    """Load and fully validate the project in `directory`.

    Raises ConfigError listing every problem, each with file, line and key.
    """
    root = Path(directory).resolve()
    file = root / PROJECT_FILE
    if not file.is_file():
        raise ConfigError(
            [
                ConfigIssue(
                    file=str(file),
                    line=None,
                    key="",
                    message="project file not found; run `healthscore init DIR` to "
                    "create a project or pass --project DIR",
                )
            ]
        )
    try:
        text = file.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(
            [
                ConfigIssue(
                    file=str(file),
                    line=None,
                    key="",
                    message=f"the file is not UTF-8 text (byte {exc.start}); save it "
                    "as UTF-8",
                )
            ]
        ) from None
    data, lines, file_issues = _parse_yaml(text, str(file))
    try:
        config = ProjectConfig.model_validate(data, context=DEFER_REFERENCES)
    except ValidationError as exc:
        issues = file_issues + _pydantic_issues(
            exc, str(file), lines, data, {issue.key for issue in file_issues}
        )
        # The parts that parsed are cross-checked too, so one run lists every
        # problem. Names whose definitions failed count as defined.
        partial = parse_partially(data)
        if partial is not None:
            partial_project = Project(root=root, config=partial[0])
            issues += reference_issues(partial_project, lines, partial[1])
        raise ConfigError(_by_line(issues)) from None
    project = Project(root=root, config=config)
    issues = file_issues + list(reference_issues(project, lines, Unparsed()))
    if issues:
        raise ConfigError(_by_line(issues))
    record_project_columns(config)
    return project


_TIMESTAMP_TAG = "tag:yaml.org,2002:timestamp"
# libyaml's parser composes the same nodes, with the same line marks, about ten
# times as fast as the pure Python one (25 ms against 2 ms for a 200-line file).
_Loader: type[yaml.SafeLoader] = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
_MERGE_TAG = "tag:yaml.org,2002:merge"


def _parse_yaml(
    text: str, file: str
) -> tuple[Any, dict[KeyPath, int], list[ConfigIssue]]:
    """Parse `text` into settings, the line of each key path, and file problems.

    The file problems are impossible dates, which are kept as text, keys that
    appear twice in one mapping, and entries of `_NAMED_LISTS` that repeat a name.
    They are listed with the model problems instead of stopping the load, as
    PyYAML's own construction would. Shadow scorecard files are parsed here too, so
    they get the same checks.
    """
    try:
        node, issues, data = _compose(_Loader, text, file)
    except yaml.YAMLError as exc:
        error: yaml.YAMLError | None = exc
        if _Loader is not yaml.SafeLoader:
            # libyaml's messages leave out what PyYAML's name, such as the
            # character or alias at fault, so PyYAML parses a rejected file again
            # and its result or message counts.
            try:
                node, issues, data = _compose(yaml.SafeLoader, text, file)
                error = None
            except yaml.YAMLError as again:
                error = again
        if error is not None:
            raise _yaml_error(error, text, file) from None
    if not isinstance(data, dict):
        raise ConfigError(
            [
                ConfigIssue(
                    file=file, line=1, key="", message="expected a mapping of settings"
                )
            ]
        )
    lines: dict[KeyPath, int] = {}
    _index_lines(node, (), lines)
    issues += _repeated_name_issues(data, file, lines)
    return data, lines, issues


def _compose(
    loader_class: type[yaml.SafeLoader], text: str, file: str
) -> tuple[yaml.Node | None, list[ConfigIssue], Any]:
    """Compose and construct `text` with `loader_class`; raise yaml.YAMLError."""
    loader = loader_class(text)
    try:
        node = loader.get_single_node()
        issues = _node_issues(loader, node, file)
        data = None if node is None else loader.construct_document(node)
    finally:
        loader.dispose()
    return node, issues, data


def _yaml_error(exc: yaml.YAMLError, text: str, file: str) -> ConfigError:
    """Return the ConfigError of a parse error, at its line where it has one."""
    mark = getattr(exc, "problem_mark", None)
    line = mark.line + 1 if mark else None
    problem = getattr(exc, "problem", None) or str(exc)
    if isinstance(exc, yaml.reader.ReaderError):
        # A character that YAML does not allow, found before parsing starts.
        line = text.count("\n", 0, exc.position) + 1
        character = exc.character
        code = f"U+{character:04X}" if isinstance(character, int) else repr(character)
        problem = f"the control character {code} is not allowed in YAML; remove it"
    return ConfigError(
        [ConfigIssue(file=file, line=line, key="", message=f"invalid YAML: {problem}")]
    )


def _node_issues(
    loader: yaml.SafeLoader, root: yaml.Node | None, file: str
) -> list[ConfigIssue]:
    """Find impossible dates and repeated keys in the composed YAML.

    An impossible date such as 2026-13-01 gets the string tag, so it is constructed
    as text and the model reports no second problem for it.
    """
    issues: list[ConfigIssue] = []
    seen: set[int] = set()  # anchors let one node appear at several places

    def visit(node: yaml.Node, path: KeyPath) -> None:
        if id(node) in seen:
            return
        seen.add(id(node))
        line = node.start_mark.line + 1
        if isinstance(node, yaml.ScalarNode) and node.tag == _TIMESTAMP_TAG:
            if not _is_valid_timestamp(loader, node):
                node.tag = "tag:yaml.org,2002:str"
                issues.append(
                    ConfigIssue(
                        file=file,
                        line=line,
                        key=format_key(path),
                        message=f"{node.value!r} is not a valid date; write a real "
                        "date as YYYY-MM-DD, or quote the value if it is text",
                    )
                )
        elif isinstance(node, yaml.MappingNode):
            first_lines: dict[str, int] = {}
            for key_node, value_node in node.value:
                key = key_node.value
                key_path = (*path, key)
                key_line = key_node.start_mark.line + 1
                if isinstance(key_node, yaml.ScalarNode) and key_node.tag != _MERGE_TAG:
                    if key in first_lines:
                        issues.append(
                            ConfigIssue(
                                file=file,
                                line=key_line,
                                key=format_key(key_path),
                                message=f"key {key!r} appears twice, first at line "
                                f"{first_lines[key]}; only the later one would be "
                                "read, so remove or rename one of them",
                            )
                        )
                    else:
                        first_lines[key] = key_line
                visit(key_node, key_path)
                visit(value_node, key_path)
        elif isinstance(node, yaml.SequenceNode):
            for index, item in enumerate(node.value):
                visit(item, (*path, index))

    if root is not None:
        visit(root, ())
    return issues


def _is_valid_timestamp(loader: yaml.SafeLoader, node: yaml.ScalarNode) -> bool:
    if loader.timestamp_regexp.match(node.value) is None:
        return False  # an explicit !!timestamp tag on text of another form
    try:
        loader.construct_yaml_timestamp(node)
    except (ValueError, OverflowError):
        return False
    return True


def _index_lines(
    node: yaml.Node | None,
    path: tuple[str | int, ...],
    lines: dict[tuple[str | int, ...], int],
) -> None:
    if node is None:
        return
    lines.setdefault(path, node.start_mark.line + 1)
    if isinstance(node, yaml.MappingNode):
        for key_node, value_node in node.value:
            key = key_node.value
            lines[(*path, key)] = key_node.start_mark.line + 1
            _index_lines(value_node, (*path, key), lines)
    elif isinstance(node, yaml.SequenceNode):
        for index, item in enumerate(node.value):
            _index_lines(item, (*path, index), lines)


#: Lists whose entries are identified by their `name`, with the noun for an entry.
#: Snapshots store the scorecard and band of each score, and alert rules name bands,
#: so two entries with one name could not be distinguished there.
_NAMED_LISTS: dict[KeyPath, str] = {
    ("scorecards",): "scorecard",
    ("bands",): "band",
    ("alerts", "rules"): "rule",
    ("playbooks",): "playbook",
}


def _repeated_name_issues(
    data: Any, file: str, lines: dict[KeyPath, int]
) -> Iterator[ConfigIssue]:
    """Find entries of `_NAMED_LISTS` whose name an earlier entry already has.

    The file's settings are read as written, so a repeated name is found even when
    one of the two entries fails its model. Each later entry is reported at its
    own line.
    """
    for collection, noun in _NAMED_LISTS.items():
        entries = value_in(data, collection)
        if not isinstance(entries, list):
            continue
        first_index: dict[str, int] = {}
        for index, entry in enumerate(entries):
            name = entry.get("name") if isinstance(entry, dict) else None
            if not isinstance(name, str):
                continue
            if name not in first_index:
                first_index[name] = index
                continue
            first = (*collection, first_index[name], "name")
            path = (*collection, index, "name")
            yield ConfigIssue(
                file=file,
                line=line_of(path, lines),
                key=format_key(path),
                message=f"{noun} name {name!r} is already used by "
                f"{format_key(first[:-1])} at line {line_of(first, lines)}; give "
                f"each {noun} its own name",
            )


def _pydantic_issues(
    exc: ValidationError,
    file: str,
    lines: dict[KeyPath, int],
    data: Any,
    invalid_dates: Set[str] = frozenset(),
) -> list[ConfigIssue]:
    """Turn model errors into issues at the key paths of the file.

    `invalid_dates` contains the keys whose impossible dates `_parse_yaml` reported,
    so the model's failure to parse them as dates is left out.
    """
    issues = []
    for path, errors in _union_errors_merged(exc.errors()):
        error = errors[0]
        if format_key(path) in invalid_dates and error["type"].startswith(
            ("date", "time")
        ):
            continue
        message = _joined_message(errors)
        if error["type"] == "extra_forbidden":
            message = "unknown key"
            suggestion = _suggest_key(path, data)
        elif error["type"] == "union_tag_not_found":
            message = _missing_tag_message(path, data, message)
            suggestion = None
        else:
            plain = None
            if len(errors) == 1 and path:
                plain = plain_message(error, str(path[-1]), value_in(data, path))
            if len(errors) == 1 and error["type"] in _SHAPE_MESSAGES:
                message = (
                    f"{_SHAPE_MESSAGES[error['type']]}, got "
                    f"{describe_value(value_in(data, path))}"
                )
            elif plain is not None:
                message = plain
            elif error["type"] == "value_error":
                message += _named_settings(path, data, message)
            choices = (_suggest_choice(each) for each in errors)
            suggestion = next((choice for choice in choices if choice), None)
        issues.append(
            ConfigIssue(
                file=file,
                line=line_of(path, lines),
                key=format_key(path),
                message=message,
                suggestion=suggestion,
            )
        )
    return issues


#: Messages of the model errors for a value of the wrong shape, by error type. The
#: value that the file gives is added to them, because pydantic's own message
#: leaves it out.
_SHAPE_MESSAGES = {
    "model_type": "expected a mapping of settings",
    "model_attributes_type": "expected a mapping of settings",
    "dict_type": "expected a mapping",
    "list_type": "expected a list",
}


def _named_settings(path: KeyPath, data: Any, message: str) -> str:
    """Show the settings of the entry at `path` that a check's `message` is about.

    A check of a whole entry, such as "bounds needs min and max", is reported at the
    entry. So the settings that the message names, or whose value or keys it
    quotes, are added with their values. When none of them is set, the keys that the
    message names are listed as not set. `name` is left out, because the key path
    already identifies the entry. Returns "" when the message concerns no setting.
    """
    if not path:  # a check of the whole file, which is no entry
        return ""
    model = model_at(path, data)
    entry = value_in(data, path)
    if model is None or not isinstance(entry, dict):
        return ""
    words = {word.strip(".:") for word in re.split(r"[\s,;()'\"]+", message)}
    quoted = set(re.findall(r"'([^']*)'", message))
    named = [
        key
        for key in entry
        if key != "name"
        and field_of(model, key) is not None
        and (key in words or _quotes_value(quoted, entry[key]))
    ]
    if named:
        settings = ", ".join(f"{key}: {format_value(entry[key])}" for key in named)
        return f" (the entry sets {settings})"
    written = [info.alias or name for name, info in model.model_fields.items()]
    unset = [
        key for key in written if key in words and key != "name" and key not in entry
    ]
    return f" (the entry sets no {_joined(unset)})" if unset else ""


def _quotes_value(quoted: set[str], value: Any) -> bool:
    """Return whether `value`, or a key or item of it one level down, is in `quoted`."""
    if isinstance(value, dict):
        items = [*value, *value.values()]
    elif isinstance(value, list):
        items = value
    else:
        items = [value]
    return any(
        isinstance(item, str | int | float) and str(item) in quoted for item in items
    )


def _joined(words: list[str]) -> str:
    """Join words as "a", "a or b" or "a, b or c"."""
    if len(words) == 1:
        return words[0]
    return f"{', '.join(words[:-1])} or {words[-1]}"


def _union_errors_merged(errors: Sequence[Any]) -> list[tuple[KeyPath, list[Any]]]:
    """Group model errors by the file's key path, one group per problem.

    A value that fits no member of a plain union, such as `to` of an email channel
    (a list or `owner`), gets an error per member. They become one group. When the
    value has the shape of one member and fails inside it, as a list with a number
    in it does, only the errors inside are kept.
    """
    located = [(error_path(error["loc"]), error) for error in errors]
    inside = {
        where.union_path
        for where, _ in located
        if where.union_path is not None and where.key_path != where.union_path
    }
    groups: dict[KeyPath, list[Any]] = {}
    result: list[tuple[KeyPath, list[Any]]] = []
    for where, error in located:
        at_union = where.union_path is not None and where.key_path == where.union_path
        if at_union and where.union_path in inside:
            continue
        if at_union and where.key_path in groups:
            groups[where.key_path].append(error)
            continue
        group = [error]
        if at_union:
            groups[where.key_path] = group
        result.append((where.key_path, group))
    return result


def _joined_message(errors: list[Any]) -> str:
    """Return the message of one model error, or one message for a union's errors."""
    messages = [error["msg"].removeprefix("Value error, ") for error in errors]
    prefix = "Input should be "
    if len(messages) > 1 and all(text.startswith(prefix) for text in messages):
        expected = [text.removeprefix(prefix) for text in messages]
        return prefix + ", ".join(expected[:-1]) + " or " + expected[-1]
    return "; ".join(dict.fromkeys(messages))


def _missing_tag_message(path: KeyPath, data: Any, message: str) -> str:
    """Explain an entry without the key that chooses its kind, such as a rule's."""
    found = union_tags(path, data)
    if found is None:
        return message
    key, tags = found
    text = f"missing key {key!r}; set it to one of {', '.join(tags)}"
    entry = value_in(data, path)
    if isinstance(entry, dict):
        # A common slip: the kind written under another key, such as `type`.
        written = [
            name
            for name, value in entry.items()
            if name != "name" and isinstance(value, str) and value in tags
        ]
        # Settings nested under the kind's name, as in `drop: {points: 5}`.
        nested = [
            name
            for name, value in entry.items()
            if name in tags and isinstance(value, dict) and value
        ]
        if written:
            text += (
                f" (the entry has {written[0]}: {entry[written[0]]}; rename the key)"
            )
        elif nested:
            inner = ", ".join(str(name) for name in entry[nested[0]])
            text += (
                f" (the entry nests {inner} under {nested[0]}; write {key}: "
                f"{nested[0]} and move them up one level)"
            )
        elif entry:
            settings = ", ".join(
                f"{name}: {format_value(value)}" for name, value in entry.items()
            )
            text += f" (the entry sets {settings})"
    return text


def _suggest_choice(error: Any) -> str | None:
    """Return the allowed value closest to a value that is not one of the choices.

    Pydantic lists the choices of a Literal field (`expected`) or of a metric type
    (`expected_tags`) as quoted words.
    """
    if error["type"] not in ("literal_error", "union_tag_invalid"):
        return None
    context = error.get("ctx") or {}
    choices = re.findall(r"'([^']*)'", str(context.get("expected_tags") or ""))
    word = context.get("tag")
    if not choices:
        choices = re.findall(r"'([^']*)'", str(context.get("expected") or ""))
        word = error.get("input")
    if not isinstance(word, str):
        return None
    close = difflib.get_close_matches(word, choices, n=1, cutoff=0.6)
    return close[0] if close else None


def _suggest_key(path: KeyPath, data: Any) -> str | None:
    model = model_at(path[:-1], data)
    if model is None:
        return None
    allowed = list(model.model_fields) + [
        f.alias for f in model.model_fields.values() if f.alias
    ]
    close = difflib.get_close_matches(str(path[-1]), allowed, n=1, cutoff=0.6)
    return close[0] if close else None
