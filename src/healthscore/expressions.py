"""Restricted expressions used in `where:` filters, formulas and scorecard conditions.

An expression is a Python-syntax string limited to names, literals, arithmetic,
comparisons, `and`/`or`/`not`, `in`/`not in` against a literal list, and
`is None`/`is not None`. It is parsed once, checked, and evaluated against a mapping
of names to column objects. The same evaluator works for Ibis columns and pandas
Series because both overload the operators used here.
"""

from __future__ import annotations

import ast
import io
import operator
import tokenize
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

_BINARY: dict[type[ast.operator], Callable[[Any, Any], Any]] = {
    ast.Add: operator.add,
    ast.Sub: operator.sub,
    ast.Mult: operator.mul,
    ast.Div: operator.truediv,
}

_COMPARE: dict[type[ast.cmpop], Callable[[Any, Any], Any]] = {
    ast.Eq: operator.eq,
    ast.NotEq: operator.ne,
    ast.Lt: operator.lt,
    ast.LtE: operator.le,
    ast.Gt: operator.gt,
    ast.GtE: operator.ge,
}


class ExpressionError(ValueError):
    """An expression that cannot be parsed or uses something that is not allowed."""


@dataclass(frozen=True)
class Expression:
    """A parsed, checked expression and the names it reads."""

    text: str
    tree: ast.expr
    names: frozenset[str]

    def evaluate(self, namespace: Mapping[str, Any]) -> Any:
        """Evaluate against `namespace`, which maps every name to a column or value."""
        missing = sorted(self.names - set(namespace))
        if missing:
            raise ExpressionError(
                f"unknown name {missing[0]!r} in {self.text!r}; "
                f"available: {', '.join(sorted(namespace)) or 'none'}"
            )
        return _evaluate(self.tree, namespace)


def parse_expression(text: str) -> Expression:
    """Parse `text` and reject any construct outside the allowed subset."""
    try:
        tree = ast.parse(text.strip(), mode="eval").body
    except SyntaxError as exc:
        message = f"invalid expression {text!r}: {exc.msg}"
        if _has_assignment(text):
            # Python's own hint for `(a = 1)` also offers `:=`, which is not allowed.
            message = (
                f"invalid expression {text!r}: invalid syntax. Use == to compare, not ="
            )
        raise ExpressionError(message) from None
    names: set[str] = set()
    _check(tree, text, names)
    return Expression(text=text, tree=tree, names=frozenset(names))


def _has_assignment(text: str) -> bool:
    """Return whether `text` has a single `=` outside string literals."""
    tokens = tokenize.generate_tokens(io.StringIO(text.strip()).readline)
    try:
        return any(
            token.type == tokenize.OP and token.string == "=" for token in tokens
        )
    except (tokenize.TokenError, SyntaxError):
        # An unclosed bracket or string ends the token stream early.
        return False


def _check(node: ast.AST, text: str, names: set[str]) -> None:
    if isinstance(node, ast.Name):
        names.add(node.id)
        return
    if isinstance(node, ast.Constant):
        if not isinstance(node.value, int | float | str | bool | type(None)):
            raise ExpressionError(f"unsupported literal in {text!r}")
        return
    if isinstance(node, ast.BinOp) and type(node.op) in _BINARY:
        _check(node.left, text, names)
        _check(node.right, text, names)
        return
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub | ast.Not):
        _check(node.operand, text, names)
        return
    if isinstance(node, ast.BoolOp):
        for value in node.values:
            _check(value, text, names)
        return
    if isinstance(node, ast.Compare):
        _check_compare(node, text, names)
        return
    raise ExpressionError(
        f"unsupported syntax {ast.unparse(node)!r} in {text!r}; use names, numbers, "
        "strings, + - * /, comparisons, and/or/not, in [...], is None"
    )


def _check_compare(node: ast.Compare, text: str, names: set[str]) -> None:
    if len(node.ops) != 1:
        raise ExpressionError(f"chained comparison in {text!r}; use 'and' instead")
    _check(node.left, text, names)
    op, right = node.ops[0], node.comparators[0]
    if isinstance(op, ast.In | ast.NotIn):
        if not isinstance(right, ast.List | ast.Tuple) or not all(
            isinstance(item, ast.Constant) for item in right.elts
        ):
            raise ExpressionError(f"'in' needs a list of literals in {text!r}")
        return
    if isinstance(op, ast.Is | ast.IsNot):
        if not (isinstance(right, ast.Constant) and right.value is None):
            raise ExpressionError(f"'is' compares only with None in {text!r}")
        return
    if type(op) not in _COMPARE:
        raise ExpressionError(f"unsupported comparison in {text!r}")
    _check(right, text, names)


def _evaluate(node: ast.expr, namespace: Mapping[str, Any]) -> Any:
    if isinstance(node, ast.Name):
        return namespace[node.id]
    if isinstance(node, ast.Constant):
        return node.value
    if isinstance(node, ast.BinOp):
        left = _evaluate(node.left, namespace)
        right = _evaluate(node.right, namespace)
        return _BINARY[type(node.op)](left, right)
    if isinstance(node, ast.UnaryOp):
        operand = _evaluate(node.operand, namespace)
        return -operand if isinstance(node.op, ast.USub) else ~operand
    if isinstance(node, ast.BoolOp):
        values = [_evaluate(value, namespace) for value in node.values]
        combine = operator.and_ if isinstance(node.op, ast.And) else operator.or_
        result = values[0]
        for value in values[1:]:
            result = combine(result, value)
        return result
    assert isinstance(node, ast.Compare)
    return _evaluate_compare(node, namespace)


def _evaluate_compare(node: ast.Compare, namespace: Mapping[str, Any]) -> Any:
    left = _evaluate(node.left, namespace)
    op, right = node.ops[0], node.comparators[0]
    if isinstance(op, ast.In | ast.NotIn):
        assert isinstance(right, ast.List | ast.Tuple)
        values = [item.value for item in right.elts if isinstance(item, ast.Constant)]
        member = left.isin(values)
        return member if isinstance(op, ast.In) else ~member
    if isinstance(op, ast.Is):
        return left.isnull()
    if isinstance(op, ast.IsNot):
        return left.notnull()
    return _COMPARE[type(op)](left, _evaluate(right, namespace))


def literal_comparisons(expression: Expression) -> list[tuple[str, Any]]:
    """Pairs of (name, literal) that the expression compares directly.

    `x == 'a'` and `x in ['a', 'b']` give ('x', 'a') (and ('x', 'b')), so a caller that
    knows column types can reject a comparison of a number with text before running.
    """
    pairs: list[tuple[str, Any]] = []
    for node in ast.walk(expression.tree):
        if not isinstance(node, ast.Compare) or isinstance(
            node.ops[0], ast.Is | ast.IsNot
        ):
            continue
        left, right = node.left, node.comparators[0]
        if isinstance(right, ast.Name) and isinstance(left, ast.Constant):
            left, right = right, left
        if not isinstance(left, ast.Name):
            continue
        if isinstance(right, ast.Constant):
            pairs.append((left.id, right.value))
        elif isinstance(right, ast.List | ast.Tuple):
            pairs.extend(
                (left.id, item.value)
                for item in right.elts
                if isinstance(item, ast.Constant)
            )
    return pairs
