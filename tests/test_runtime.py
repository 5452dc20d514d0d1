"""Process settings of the command line: Arrow's memory pool and its log lines."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pyarrow as pa
import pytest

from healthscore.runtime import POOL_VARIABLE

# Run in a fresh interpreter, because the pool is a setting of the whole process.
_REPORT_POOL = (
    "import pyarrow as pa\n"
    "from healthscore.runtime import configure_process\n"
    "before = pa.default_memory_pool().backend_name\n"
    "configure_process()\n"
    "print(before, pa.default_memory_pool().backend_name)\n"
)


def _pools(variable: str | None) -> list[str]:
    environment = {k: v for k, v in os.environ.items() if k != POOL_VARIABLE}
    if variable is not None:
        environment[POOL_VARIABLE] = variable
    output = subprocess.run(
        [sys.executable, "-c", _REPORT_POOL],
        env=environment,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return output.split()


@pytest.mark.skipif(
    "jemalloc" not in pa.supported_memory_backends(),
    reason="this pyarrow build has no jemalloc memory pool",
)
def test_default_pool_is_jemalloc():
    _, after = _pools(None)
    assert after == "jemalloc"


def test_user_pool_is_kept():
    assert _pools("system") == ["system", "system"]


_EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "socialnet"


def _validate_log(variable: str | None) -> str:
    """Stderr of `healthscore validate -vv` on the shipped example."""
    environment = {k: v for k, v in os.environ.items() if k != POOL_VARIABLE}
    environment["COLUMNS"] = "200"
    if variable is not None:
        environment[POOL_VARIABLE] = variable
    command = Path(sys.executable).parent / "healthscore"
    return subprocess.run(
        [str(command), "validate", "--project", str(_EXAMPLE), "-vv"],
        env=environment,
        capture_output=True,
        text=True,
        check=True,
    ).stderr


def test_verbose_log_names_chosen_pool():
    log = _validate_log("system")
    assert (
        "Arrow allocates from its system memory pool (ARROW_DEFAULT_MEMORY_POOL)" in log
    )


def test_unknown_pool_warns_with_choices():
    log = " ".join(_validate_log("bogus").split())
    assert "ARROW_DEFAULT_MEMORY_POOL=bogus is not a memory pool" in log
    assert "set it to one of" in log
    assert "system" in log


@pytest.mark.skipif(
    "jemalloc" not in pa.supported_memory_backends(),
    reason="this pyarrow build has no jemalloc memory pool",
)
def test_verbose_log_names_default_pool():
    log = " ".join(_validate_log(None).split())
    assert "Arrow allocates from its jemalloc memory pool" in log
