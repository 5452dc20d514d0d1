"""Process settings of the command line: Arrow's memory pool."""

from __future__ import annotations

import os
import subprocess
import sys

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
