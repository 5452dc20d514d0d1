"""Skips for missing requirements, which HEALTHSCORE_REQUIRE_ALL turns into failures."""

from __future__ import annotations

from pathlib import Path

import pytest

CONFTEST = Path(__file__).with_name("conftest.py")

SKIPPING_TESTS = """
import pytest

def test_needs_server():
    pytest.skip("requires: PostgreSQL at 127.0.0.1:5432")

@pytest.mark.skipif(True, reason="requires: Java 17")
def test_needs_java():
    pass

def test_other_skip():
    pytest.skip("not relevant on this platform")

@pytest.mark.xfail(reason="requires: a known bug fixed")
def test_expected_failure():
    assert False

def test_shared_file(require_shared):
    require_shared("no-such-folder/data.csv")
"""

MODULE_SKIP = """
import pytest

pytest.skip("requires: a browser", allow_module_level=True)

def test_page():
    pass
"""


@pytest.fixture
def suite(pytester: pytest.Pytester, tmp_path: Path) -> pytest.Pytester:
    """A pytester folder with the project conftest and an empty shared data folder."""
    pytester.makeconftest(CONFTEST.read_text(encoding="utf-8"))
    pytester.makepyfile(test_skips=SKIPPING_TESTS)
    return pytester


def test_skips_without_variable(
    suite: pytest.Pytester, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.delenv("HEALTHSCORE_REQUIRE_ALL", raising=False)
    monkeypatch.setenv("HEALTHSCORE_SHARED_DATA", str(tmp_path / "shared"))

    result = suite.runpytest_inprocess("-rs")

    result.assert_outcomes(skipped=4, xfailed=1)
    result.stdout.fnmatch_lines(
        [
            "*requires: shared data file no-such-folder/data.csv "
            "(set HEALTHSCORE_SHARED_DATA)*"
        ]
    )


@pytest.mark.parametrize("value", ["", "0"])
def test_variable_off_values(
    suite: pytest.Pytester, monkeypatch: pytest.MonkeyPatch, tmp_path: Path, value: str
) -> None:
    monkeypatch.setenv("HEALTHSCORE_REQUIRE_ALL", value)
    monkeypatch.setenv("HEALTHSCORE_SHARED_DATA", str(tmp_path / "shared"))

    result = suite.runpytest_inprocess()

    result.assert_outcomes(skipped=4, xfailed=1)


def test_variable_fails_requirement_skips(
    suite: pytest.Pytester, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("HEALTHSCORE_REQUIRE_ALL", "1")
    monkeypatch.setenv("HEALTHSCORE_SHARED_DATA", str(tmp_path / "shared"))

    result = suite.runpytest_inprocess()

    # The skip marker is evaluated at setup, so that test reports an error.
    result.assert_outcomes(failed=2, errors=1, skipped=1, xfailed=1)
    result.stdout.fnmatch_lines(
        ["*HEALTHSCORE_REQUIRE_ALL is set, so a missing requirement fails the test*"]
    )
    assert result.ret == pytest.ExitCode.TESTS_FAILED


def test_variable_fails_module_skip(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    pytester.makeconftest(CONFTEST.read_text(encoding="utf-8"))
    pytester.makepyfile(test_page=MODULE_SKIP)
    monkeypatch.setenv("HEALTHSCORE_REQUIRE_ALL", "1")

    result = pytester.runpytest_inprocess()

    result.assert_outcomes(errors=1)
    result.stdout.fnmatch_lines(["*requires: a browser*"])


def test_shared_file_found(
    suite: pytest.Pytester, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    shared = tmp_path / "shared"
    (shared / "no-such-folder").mkdir(parents=True)
    (shared / "no-such-folder" / "data.csv").write_text("a\n1\n", encoding="utf-8")
    monkeypatch.setenv("HEALTHSCORE_REQUIRE_ALL", "1")
    monkeypatch.setenv("HEALTHSCORE_SHARED_DATA", str(shared))

    result = suite.runpytest_inprocess()

    result.assert_outcomes(passed=1, failed=1, errors=1, skipped=1, xfailed=1)
