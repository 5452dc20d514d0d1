"""Run a command and write its exit code and peak resident memory to a JSON file.

Usage::

    python benchmarks/peak_memory.py REPORT_FILE COMMAND [ARGUMENT ...]

The report is ``{"exit_code": int, "peak_rss_kib": int}``, where the peak is the
ru_maxrss that wait4 returns for the command's process. The command inherits this
process's stdout and stderr.

Linux carries the resident-memory high-water mark of a process image over into the
image it execs, and a forked child starts with a copy of its parent's pages. A child
of the benchmark runner, which has pandas and the reference result in memory, would
therefore report at least the runner's own memory. This launcher imports only the
standard library, so the children it starts report their own peak to within a few MB.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path


def run_and_measure(command: list[str]) -> dict[str, int]:
    """Run `command` to completion and return its exit code and ru_maxrss in KiB."""
    process = subprocess.Popen(command)
    # Popen.wait would reap the child without returning its resource usage.
    _, status, usage = os.wait4(process.pid, 0)
    process.returncode = os.waitstatus_to_exitcode(status)
    return {"exit_code": process.returncode, "peak_rss_kib": usage.ru_maxrss}


def main(argv: list[str]) -> int:
    if len(argv) < 3:
        print(f"usage: {argv[0]} REPORT_FILE COMMAND [ARGUMENT ...]", file=sys.stderr)
        return 2
    report = run_and_measure(argv[2:])
    Path(argv[1]).write_text(json.dumps(report))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
