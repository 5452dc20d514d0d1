"""Parse errors of restricted expressions, as `where:` and `when:` report them."""

from __future__ import annotations

import pytest

from healthscore.config import ConfigError
from healthscore.expressions import ExpressionError, parse_expression
from project_factory import minimal_config, write_project

HINT = "Use == to compare, not ="


def parse_error(text: str) -> str:
    with pytest.raises(ExpressionError) as raised:
        parse_expression(text)
    return str(raised.value)


@pytest.mark.parametrize(
    "text",
    [
        "segment = 'enterprise'",
        "arr > 10 and segment = 'smb'",
        "(segment = 'smb')",
    ],
)
def test_single_equals_gets_hint(text: str) -> None:
    message = parse_error(text)
    assert message.startswith(f"invalid expression {text!r}: invalid syntax")
    assert HINT in message


def test_equals_in_string_gets_no_hint() -> None:
    message = parse_error("segment == 'a = b' and")
    assert "invalid syntax" in message
    assert HINT not in message


def test_comparisons_still_parse() -> None:
    expression = parse_expression("segment == 'a = b' and arr >= 10")
    assert expression.names == frozenset({"segment", "arr"})


def test_scorecard_when_gets_hint(tmp_path) -> None:
    config = minimal_config()
    config["scorecards"][0]["when"] = "segment = 'enterprise'"
    with pytest.raises(ConfigError) as raised:
        write_project(tmp_path, config, {"accounts.csv": "account_id\na1\n"})
    assert "scorecards[0].when" in str(raised.value)
    assert HINT in str(raised.value)
