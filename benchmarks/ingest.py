"""Measure the service's event ingest, event-to-new-score latency and account reads.

Usage::

    python benchmarks/ingest.py [--rate 1000] [--reads 200] [--duration 30]

The script writes a project to a temporary folder: `--accounts` accounts, a store
source `usage` that takes Segment calls, and yesterday's full run. It starts
`healthscore serve` on it as a Uvicorn subprocess on 127.0.0.1. This process then
drives it with httpx (asyncio):

- ingest: `/v1/batch` requests of `--batch` track calls, paced to `--rate` events
  per second, to the load accounts;
- latency: once a second, one track call to a probe account (a probe account gets
  no other events) with a new `value`. The score of the project is the latest
  `value` over 10, so the probe's new score is known in advance. The script polls
  `GET /api/v1/accounts/{id}` every 50 ms until it shows that score, and records
  the time from sending the event to that read;
- reads: `GET /api/v1/accounts/{id}` of random load accounts at `--reads` per
  second, each with its latency and status.

Targets: event-to-new-score p95 at most 2 s at 1,000 events per second, and reads
p99 at most 50 ms at 200 per second with no errors. It prints a JSON summary, with
the CPU time that the server and its scoring process used during the load (from
/proc, on Linux only), because on a shared machine a server that gets less than the
CPU it needs shows as queueing.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import yaml

PROBES = 10
LATENCY_TARGET_SECONDS = 2.0
READ_TARGET_SECONDS = 0.050


def project_config() -> dict[str, Any]:
    """Return the project settings: one measure, the latest `value` over 10."""
    return {
        "name": "ingest-benchmark",
        "timezone": "UTC",
        "store": {"state": "sqlite:///.healthscore/state.db"},
        "sources": {
            "accounts": {"kind": "accounts", "path": "accounts.csv"},
            "usage": {"kind": "events", "format": "segment", "path": "store"},
        },
        "metrics": {
            "events_28d": {"type": "count", "source": "usage", "window": "28d"},
            "last_value": {
                "type": "latest",
                "source": "usage",
                "column": "value",
                "window": "28d",
            },
        },
        "alerts": {
            "rules": [
                {"name": "score_drop", "kind": "drop", "points": 20, "within": "30d"}
            ]
        },
        "scorecards": [
            {
                "name": "default",
                "components": {
                    "usage": {
                        "weight": 1,
                        "measures": [
                            {
                                "metric": "last_value",
                                "normalize": {
                                    "method": "bounds",
                                    "min": 0,
                                    "max": 1000,
                                },
                            }
                        ],
                    }
                },
            }
        ],
    }


def write_project(root: Path, accounts: int) -> list[str]:
    """Write the project and return the load account ids."""
    root.mkdir(parents=True)
    load = [f"L{i:05d}" for i in range(accounts)]
    probes = [f"P{i:02d}" for i in range(PROBES)]
    lines = ["account_id,name,segment,owner,arr"]
    for index, account in enumerate(load + probes):
        lines.append(
            f"{account},Account {account},smb,owner{index % 20},{1000 + index}"
        )
    (root / "accounts.csv").write_text("\n".join(lines) + "\n")
    (root / "healthscore.yml").write_text(yaml.safe_dump(project_config()))
    return load


def prepare(root: Path) -> str:
    """Store yesterday's full run and return an analyst token."""
    from healthscore.config import load_project
    from healthscore.pipeline import score
    from healthscore.service.tokens import create_token
    from healthscore.store import StateStore

    project = load_project(root)
    score(project, datetime.now(UTC).date() - timedelta(days=1))
    with StateStore.open(project.config.store.state, project.root) as state:
        return create_token(state, role="analyst", name="benchmark").token


def write_key(root: Path) -> str:
    from healthscore.config import load_project
    from healthscore.service.writekeys import create_write_key
    from healthscore.store import StateStore

    project = load_project(root)
    with StateStore.open(project.config.store.state, project.root) as state:
        return create_write_key(state, project, "usage").key


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def percentile(values: list[float], share: float) -> float | None:
    """Return the nearest-rank percentile (`share` in 0-1) of `values`."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(1, int(-(-share * len(ordered) // 1)))
    return ordered[min(rank, len(ordered)) - 1]


def summary(values: list[float]) -> dict[str, Any]:
    return {
        "count": len(values),
        "p50_ms": _ms(percentile(values, 0.50)),
        "p95_ms": _ms(percentile(values, 0.95)),
        "p99_ms": _ms(percentile(values, 0.99)),
        "max_ms": _ms(max(values) if values else None),
    }


def _ms(value: float | None) -> float | None:
    return None if value is None else round(value * 1000, 1)


def call(account: str, value: int) -> dict[str, Any]:
    return {
        "type": "track",
        "userId": f"user-{account}",
        "event": "Feature Used",
        "timestamp": datetime.now(UTC).isoformat(),
        "properties": {"value": value},
        "context": {"groupId": account},
    }


class Load:
    """The load generator's counters."""

    def __init__(self) -> None:
        self.events_sent = 0
        self.events_stored = 0
        self.ingest_errors: dict[str, int] = {}
        self.ingest_seconds: list[float] = []
        self.read_seconds: list[float] = []
        self.read_errors: dict[str, int] = {}
        self.latencies: list[float] = []
        self.probes_lost = 0


async def paced(rate: float, duration: float, action: Any, limit: int) -> None:
    """Call `action(scheduled)` `rate` times a second for `duration` seconds.

    At most `limit` calls run at once. A call that waits for a free slot keeps its
    scheduled time, so a server that falls behind shows as higher latencies rather
    than as fewer requests (no coordinated omission).
    """
    slots = asyncio.Semaphore(limit)
    tasks: set[asyncio.Task[Any]] = set()

    async def run(scheduled: float) -> None:
        async with slots:
            await action(scheduled)

    start = time.perf_counter()
    count = 0
    while True:
        due = start + count / rate
        if due - start >= duration:
            break
        # Sleeping even when behind lets the other coroutines run.
        await asyncio.sleep(max(0.0, due - time.perf_counter()))
        task = asyncio.create_task(run(due))
        tasks.add(task)
        task.add_done_callback(tasks.discard)
        count += 1
    if tasks:
        await asyncio.gather(*tasks)


async def drive(
    url: str, token: str, key: str, load_ids: list[str], args: argparse.Namespace
) -> Load:
    load = Load()
    auth = httpx.BasicAuth(key, "")
    headers = {"Authorization": f"Bearer {token}"}
    limits = httpx.Limits(max_connections=150, max_keepalive_connections=150)
    async with (
        httpx.AsyncClient(base_url=url, limits=limits, timeout=30) as client,
        httpx.AsyncClient(base_url=url, timeout=30) as probe_client,
    ):

        async def ingest(scheduled: float) -> None:
            calls = [
                call(random.choice(load_ids), random.randint(0, 1000))
                for _ in range(args.batch)
            ]
            load.events_sent += len(calls)
            try:
                response = await client.post(
                    "/v1/batch", json={"batch": calls}, auth=auth
                )
            except httpx.HTTPError as exc:
                name = type(exc).__name__
                load.ingest_errors[name] = load.ingest_errors.get(name, 0) + 1
                return
            load.ingest_seconds.append(time.perf_counter() - scheduled)
            if response.status_code == 200:
                load.events_stored += response.json()["stored"]
            else:
                status = str(response.status_code)
                load.ingest_errors[status] = load.ingest_errors.get(status, 0) + 1

        async def read(scheduled: float) -> None:
            account = random.choice(load_ids)
            try:
                response = await client.get(
                    f"/api/v1/accounts/{account}", headers=headers
                )
            except httpx.HTTPError as exc:
                name = type(exc).__name__
                load.read_errors[name] = load.read_errors.get(name, 0) + 1
                return
            load.read_seconds.append(time.perf_counter() - scheduled)
            if response.status_code != 200:
                status = str(response.status_code)
                load.read_errors[status] = load.read_errors.get(status, 0) + 1

        probe_number = 0

        async def probe(scheduled: float) -> None:
            nonlocal probe_number
            probe_number += 1
            account = f"P{probe_number % PROBES:02d}"
            # Each probe account's values go up by 1, so each is new to it.
            value = 1 + probe_number
            expected = value / 10
            try:
                sent = scheduled
                response = await probe_client.post(
                    "/v1/track", json=call(account, value), auth=auth
                )
                if response.status_code != 200:
                    load.probes_lost += 1
                    return
                deadline = sent + args.probe_timeout
                while time.perf_counter() < deadline:
                    found = await probe_client.get(
                        f"/api/v1/accounts/{account}", headers=headers
                    )
                    score = found.json().get("score") if found.is_success else None
                    # The score is a float, so 0.3 may read 0.30000000000000004.
                    if score is not None and abs(score - expected) < 1e-6:
                        load.latencies.append(time.perf_counter() - sent)
                        return
                    await asyncio.sleep(0.05)
            except httpx.HTTPError:
                pass
            load.probes_lost += 1

        await asyncio.gather(
            paced(args.rate / args.batch, args.duration, ingest, 50),
            paced(args.reads, args.duration, read, 100),
            paced(1.0, args.duration, probe, PROBES),
        )
    return load


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rate", type=float, default=1000, help="events per second")
    parser.add_argument("--batch", type=int, default=50, help="events per request")
    parser.add_argument("--reads", type=float, default=200, help="reads per second")
    parser.add_argument("--duration", type=float, default=30, help="seconds of load")
    parser.add_argument("--accounts", type=int, default=1000, help="load accounts")
    parser.add_argument(
        "--probe-timeout", type=float, default=15, help="seconds a probe waits"
    )
    parser.add_argument("--keep", action="store_true", help="keep the project folder")
    args = parser.parse_args()

    folder = Path(tempfile.mkdtemp(prefix="healthscore-ingest-bench-"))
    root = folder / "project"
    load_ids = write_project(root, args.accounts)
    token = prepare(root)
    key = write_key(root)
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    log = open(folder / "server.log", "w")  # noqa: SIM115 - open while it runs
    server = subprocess.Popen(
        [
            str(Path(sys.executable).parent / "healthscore"),
            "serve",
            "--project",
            str(root),
            "--port",
            str(port),
        ],
        stdout=subprocess.DEVNULL,
        stderr=log,
    )
    try:
        _wait_until_up(url)
        load_before = os.getloadavg()
        cpu_before = process_tree_cpu(server.pid)
        started = time.perf_counter()
        load = asyncio.run(drive(url, token, key, load_ids, args))
        elapsed = time.perf_counter() - started
        cpu_after = process_tree_cpu(server.pid)
        load_after = os.getloadavg()
    finally:
        server.terminate()
        server.wait(timeout=60)
        log.close()
    latency = summary(load.latencies)
    reads = summary(load.read_seconds)
    read_errors = sum(load.read_errors.values())
    result = {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "command": " ".join(["python", "benchmarks/ingest.py", *sys.argv[1:]]),
        "accounts": args.accounts + PROBES,
        "seconds": round(elapsed, 1),
        "events_sent": load.events_sent,
        "events_stored": load.events_stored,
        "ingest_events_per_second": round(load.events_stored / elapsed, 1),
        "ingest_requests": summary(load.ingest_seconds),
        "ingest_errors": load.ingest_errors,
        "event_to_score": latency,
        "probes_lost": load.probes_lost,
        "reads": reads,
        "read_errors": load.read_errors,
        "server_cpu_seconds": None
        if cpu_before is None or cpu_after is None
        else round(cpu_after - cpu_before, 1),
        "load_average_before": [round(v, 2) for v in load_before],
        "load_average_after": [round(v, 2) for v in load_after],
        "latency_target_met": latency["p95_ms"] is not None
        and load.probes_lost == 0
        and latency["p95_ms"] <= LATENCY_TARGET_SECONDS * 1000,
        "read_target_met": reads["p99_ms"] is not None
        and read_errors == 0
        and reads["p99_ms"] <= READ_TARGET_SECONDS * 1000,
    }
    print(json.dumps(result, indent=2))
    if args.keep:
        print(f"project and server log kept in {folder}", file=sys.stderr)
    else:
        shutil.rmtree(folder, ignore_errors=True)


def process_tree_cpu(pid: int) -> float | None:
    """Return the user and system CPU seconds of `pid` and its live children.

    Read from /proc, so None on systems without it. A child that ended during the
    load is not counted.
    """
    ticks = os.sysconf("SC_CLK_TCK")
    total = 0.0
    pending = [pid]
    try:
        while pending:
            current = pending.pop()
            fields = Path(f"/proc/{current}/stat").read_text().rsplit(")", 1)[1].split()
            # utime and stime are fields 14 and 15 of stat, 12 and 13 after the name.
            total += (int(fields[11]) + int(fields[12])) / ticks
            for task in Path(f"/proc/{current}/task").iterdir():
                children = (task / "children").read_text().split()
                pending += [int(child) for child in children]
    except (OSError, ValueError, IndexError):
        return None
    return total


def _wait_until_up(url: str) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{url}/health", timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise SystemExit(f"the service at {url} did not start within 60 s")


if __name__ == "__main__":
    main()
