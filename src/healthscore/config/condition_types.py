"""Type mistakes in conditions, found from the column and metric types of a project.

A condition, such as a scorecard's `when` or a metric's `where`, must give true or
false, and each comparison in it must compare values of one kind. The project file
declares the type of every source column, and the type of a metric follows from
its settings, so these mistakes are found before any data is read. Names without a
known type are not checked.
"""

from __future__ import annotations

import ast
from collections.abc import Callable, Iterator, Mapping

from healthscore.expressions import parse_expression

__all__ = ["VALUE_WORDS", "condition_problems"]

#: Words for the values of each column type, as messages name them.
VALUE_WORDS = {
    "string": "text",
    "number": "numbers",
    "boolean": "true or false values",
    "date": "dates",
    "timestamp": "timestamps",
}

#: Types that arithmetic and comparisons with numbers accept.
_NUMERIC = ("number", "boolean")
_DATES = ("date", "timestamp")

#: Names a value in a message, as in "account column 'seats'".
Describe = Callable[[str], str]


def condition_problems(
    text: str, types: Mapping[str, str], describe: Describe
) -> list[str]:
    """Return a message for each type mistake in condition `text`.

    `types` maps the names that the condition reads to their column types
    (`string`, `number`, `boolean`, `date` or `timestamp`), and `describe` names
    one of them in a message.
    """
    tree = parse_expression(text).tree
    problems = []
    kind = _type_of(tree, types)
    if kind is not None and kind != "boolean":
        problems.append(
            f"the condition gives {VALUE_WORDS[kind]} instead of true or false; "
            f"write a comparison, such as {_example(tree, kind)}"
        )
    for node in ast.walk(tree):
        problems.extend(_logic_problems(node, types))
        if isinstance(node, ast.BinOp):
            problems.extend(_arithmetic_problems(node, types))
        if isinstance(node, ast.Compare):
            problems.extend(_comparison_problems(node, types, describe))
    return problems


def _type_of(node: ast.expr, types: Mapping[str, str]) -> str | None:
    """Return the column type of the values that `node` gives, or None if unknown."""
    if isinstance(node, ast.Name):
        return types.get(node.id)
    if isinstance(node, ast.Constant):
        return _literal_type(node.value)
    if isinstance(node, ast.Compare | ast.BoolOp):
        return "boolean"
    if isinstance(node, ast.UnaryOp):
        return "boolean" if isinstance(node.op, ast.Not) else "number"
    if isinstance(node, ast.BinOp):
        left = _type_of(node.left, types)
        right = _type_of(node.right, types)
        return "number" if left in _NUMERIC and right in _NUMERIC else None
    return None


def _literal_type(value: object) -> str | None:
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int | float):
        return "number"
    if isinstance(value, str):
        return "string"
    return None


def _example(node: ast.expr, kind: str) -> str:
    """Return a comparison of `node` that gives true or false, for a message."""
    text = ast.unparse(node)
    if kind == "string":
        return f"{text} == 'value'"
    if kind in _DATES:
        return f"{text} is not None"
    return f"{text} > 0"


def _logic_problems(node: ast.AST, types: Mapping[str, str]) -> Iterator[str]:
    """Find operands of and, or and not that give no true or false values."""
    if isinstance(node, ast.BoolOp):
        operands = node.values
    elif isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.Not):
        operands = [node.operand]
    else:
        return
    for operand in operands:
        kind = _type_of(operand, types)
        if kind is not None and kind != "boolean":
            yield (
                f"{ast.unparse(operand)!r} gives {VALUE_WORDS[kind]}, but and, or and "
                "not need true or false; write a comparison, such as "
                f"{_example(operand, kind)}"
            )


def _arithmetic_problems(node: ast.BinOp, types: Mapping[str, str]) -> Iterator[str]:
    """Find + - * / between a number and a value of another type."""
    kinds = [_type_of(node.left, types), _type_of(node.right, types)]
    if not any(kind in _NUMERIC for kind in kinds):
        return
    for operand, kind in zip((node.left, node.right), kinds, strict=True):
        if kind is not None and kind not in _NUMERIC:
            yield (
                f"{ast.unparse(node)!r} computes with {ast.unparse(operand)!r}, which "
                f"gives {VALUE_WORDS[kind]}; + - * / need numbers"
            )


def _comparison_problems(
    node: ast.Compare, types: Mapping[str, str], describe: Describe
) -> Iterator[str]:
    """Find a comparison of text with a number, or of a date with a number."""
    op = node.ops[0]
    if isinstance(op, ast.Is | ast.IsNot):
        return
    left, right = node.left, node.comparators[0]
    if isinstance(left, ast.Constant) and isinstance(right, ast.Name):
        left, right = right, left
    if isinstance(op, ast.In | ast.NotIn) and isinstance(right, ast.List | ast.Tuple):
        literals = [item for item in right.elts if isinstance(item, ast.Constant)]
    elif isinstance(right, ast.Constant):
        literals = [right]
    else:
        literals = []
    if literals:
        if isinstance(left, ast.Name):
            for literal in literals:
                message = _literal_mismatch(left.id, literal.value, types, describe)
                if message is not None:
                    yield message
        return
    if isinstance(left, ast.Name) and isinstance(right, ast.Name):
        kinds = (types.get(left.id), types.get(right.id))
        if _mismatched(*kinds):
            first, second = (describe(left.id), describe(right.id))
            yield (
                f"{first} holds {VALUE_WORDS[str(kinds[0])]} but is compared with "
                f"{second}, which holds {VALUE_WORDS[str(kinds[1])]}; compare values "
                "of one kind"
            )


def _mismatched(first: str | None, second: str | None) -> bool:
    """Tell whether values of the two types cannot be compared."""
    if first is None or second is None:
        return False
    text = "string" in (first, second)
    dates = first in _DATES or second in _DATES
    numbers = first in _NUMERIC or second in _NUMERIC
    return numbers and (text or dates)


def _literal_mismatch(
    name: str, value: object, types: Mapping[str, str], describe: Describe
) -> str | None:
    """Describe a comparison of column `name` with a literal of another type."""
    kind = types.get(name)
    literal = _literal_type(value)
    if kind is None or literal is None or not _mismatched(kind, literal):
        return None
    if literal == "string":
        advice = "true or false" if kind == "boolean" else "a number"
        return (
            f"{describe(name)} holds {VALUE_WORDS[kind]} but is compared with the "
            f"text {value!r}; compare it with {advice}"
        )
    if kind == "string":
        return (
            f"{describe(name)} holds text but is compared with the number {value!r}; "
            f"quote the value, as in {name} == '{value}'"
        )
    return (
        f"{describe(name)} holds {VALUE_WORDS[kind]} but is compared with the number "
        f"{value!r}; compare it with a date as text, as in {name} > '2026-01-01'"
    )
