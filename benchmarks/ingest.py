"""Measure the service's event ingest, event-to-new-score latency and account reads.

Usage::

    python benchmarks/ingest.py [--rate 1000] [--reads 200] [--duration 30]

The script writes a project to a temporary folder: `--accounts` accounts, a store
source `usage` that takes Segment calls, and yesterday's full run. It starts
`healthscore serve` on it as a Uvicorn subprocess on 127.0.0.1. This process then
drives it over kept-alive HTTP/1.1 connections (asyncio streams, see `Connections`):

- ingest: `/v1/batch` requests of `--batch` track calls, paced to `--rate` events
  per second, to the load accounts;
- latency: once a second, one track call to a probe account (a probe account gets
  no other events) with a new `value`. The score of the project is the latest
  `value` over 10, so the probe's new score is known in advance. The script polls
  `GET /api/v1/accounts/{id}` every `--poll` seconds (default 0.1) until it shows
  that score, and records the time from sending the event to that read. These
  polls are reads beyond `--reads`: with 10 probes waiting at once, 100 a second;
- reads: `GET /api/v1/accounts/{id}` of random load accounts at `--reads` per
  second, each with its latency and status.

`--rate 0` or `--reads 0` leaves that stream out, so ingest and reads can be
measured alone as well as together. The same load runs for `--warmup` seconds
first without being recorded, which opens the connections and fills the service's
caches.

Targets: event-to-new-score p95 at most 2 s at 1,000 events per second, and reads
p99 at most 50 ms at 200 per second with no errors. It prints a JSON summary, with
the CPU time that the server and its scoring process used during the load (from
/proc, on Linux only), because on a shared machine a server that gets less than the
CPU it needs shows as queueing.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
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
#: Seconds after which the client stops reusing an idle connection, below the
#: 5 s after which Uvicorn closes one (its `timeout_keep_alive` default).
KEEP_ALIVE_SECONDS = 4.0
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


class HttpError(Exception):
    """A request that got no complete response: refused, reset or timed out."""


class Connections:
    """A pool of kept-alive HTTP/1.1 connections to one server, on asyncio streams.

    The load generator shares the 2 CPUs with the server it measures. httpx spent
    several milliseconds of CPU per request at 200 requests a second, enough to
    queue requests in the client. This pool writes each request as bytes and reads
    the response by its Content-Length, which costs a fraction of that. It takes
    only what the service sends: no redirects, no chunked bodies, no TLS.
    """

    def __init__(self, host: str, port: int, size: int, timeout: float) -> None:
        self.host = host
        self.port = port
        self.timeout = timeout
        # Last in, first out: the connection used last is the one least likely to
        # have been closed by the server's keep-alive timeout (5 s in Uvicorn).
        # Each entry is (reader, writer, time of its last response), or None.
        self._idle: asyncio.LifoQueue[tuple[Any, Any, float] | None] = (
            asyncio.LifoQueue()
        )
        for _ in range(size):
            self._idle.put_nowait(None)

    async def request(
        self,
        method: str,
        path: str,
        headers: dict[str, str],
        body: Any = None,
    ) -> tuple[int, Any]:
        """Send one request; return the status and the JSON body (None if empty)."""
        payload = b"" if body is None else json.dumps(body).encode()
        lines = [f"{method} {path} HTTP/1.1", f"Host: {self.host}:{self.port}"]
        lines += [f"{name}: {value}" for name, value in headers.items()]
        if body is not None:
            lines.append("Content-Type: application/json")
        lines.append(f"Content-Length: {len(payload)}")
        message = ("\r\n".join(lines) + "\r\n\r\n").encode() + payload

        entry = await self._idle.get()
        connection = None if entry is None else (entry[0], entry[1])
        if entry is not None and time.monotonic() - entry[2] > KEEP_ALIVE_SECONDS:
            # The server may close it at any moment now: open a new one instead.
            entry[1].close()
            connection = None
        # The server closes a kept-alive connection that stays idle, so a request
        # on it ends before the response starts. Such a request is sent once more
        # on a new connection, as HTTP clients do.
        for reused in (connection is not None, False):
            try:
                if connection is None:
                    connection = await asyncio.open_connection(self.host, self.port)
                reader, writer = connection
                writer.write(message)
                status, content = await asyncio.wait_for(
                    self._response(reader), self.timeout
                )
            except (TimeoutError, OSError, asyncio.IncompleteReadError) as exc:
                if connection is not None:
                    connection[1].close()
                connection = None

                closed_idle = isinstance(exc, asyncio.IncompleteReadError) and (
                    not exc.partial
                )
                if reused and closed_idle:
                    continue
                self._idle.put_nowait(None)
                raise HttpError(type(exc).__name__) from exc
            self._idle.put_nowait((*connection, time.monotonic()))
            return status, json.loads(content) if content else None
        raise AssertionError("unreachable")

    @staticmethod
    async def _response(reader: asyncio.StreamReader) -> tuple[int, bytes]:
        head = await reader.readuntil(b"\r\n\r\n")
        status_line, *header_lines = head.decode("latin-1").split("\r\n")
        length = 0
        for line in header_lines:
            name, _, value = line.partition(":")
            if name.strip().lower() == "content-length":
                length = int(value)
        content = await reader.readexactly(length) if length else b""
        return int(status_line.split()[1]), content

    async def close(self) -> None:
        while not self._idle.empty():
            entry = self._idle.get_nowait()
            if entry is not None:
                entry[1].close()


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
        # Set around the measured load, after the warm-up.
        self.seconds = 0.0
        self.server_cpu_seconds: float | None = None
        self.load_average_before: tuple[float, ...] = ()
        self.load_average_after: tuple[float, ...] = ()


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
    port: int,
    token: str,
    key: str,
    load_ids: list[str],
    args: argparse.Namespace,
    server_pid: int,
) -> Load:
    load = Load()
    credentials = base64.b64encode(f"{key}:".encode()).decode()
    auth = {"Authorization": f"Basic {credentials}"}
    headers = {"Authorization": f"Bearer {token}"}
    client = Connections("127.0.0.1", port, size=150, timeout=30)
    probe_client = Connections("127.0.0.1", port, size=PROBES, timeout=30)

    async def ingest(scheduled: float) -> None:
        calls = [
            call(random.choice(load_ids), random.randint(0, 1000))
            for _ in range(args.batch)
        ]
        load.events_sent += len(calls)
        try:
            status, body = await client.request(
                "POST", "/v1/batch", auth, {"batch": calls}
            )
        except HttpError as exc:
            name = str(exc)
            load.ingest_errors[name] = load.ingest_errors.get(name, 0) + 1
            return
        load.ingest_seconds.append(time.perf_counter() - scheduled)
        if status == 200:
            load.events_stored += body["stored"]
        else:
            load.ingest_errors[str(status)] = load.ingest_errors.get(str(status), 0) + 1

    async def read(scheduled: float) -> None:
        account = random.choice(load_ids)
        try:
            status, _ = await client.request(
                "GET", f"/api/v1/accounts/{account}", headers
            )
        except HttpError as exc:
            name = str(exc)
            load.read_errors[name] = load.read_errors.get(name, 0) + 1
            return
        load.read_seconds.append(time.perf_counter() - scheduled)
        if status != 200:
            load.read_errors[str(status)] = load.read_errors.get(str(status), 0) + 1

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
            status, _ = await probe_client.request(
                "POST", "/v1/track", auth, call(account, value)
            )
            if status != 200:
                load.probes_lost += 1
                return
            deadline = sent + args.probe_timeout
            while time.perf_counter() < deadline:
                status, found = await probe_client.request(
                    "GET", f"/api/v1/accounts/{account}", headers
                )
                score = found.get("score") if status == 200 else None
                # The score is a float, so 0.3 may read 0.30000000000000004.
                if score is not None and abs(score - expected) < 1e-6:
                    load.latencies.append(time.perf_counter() - sent)
                    return
                await asyncio.sleep(args.poll)
        except HttpError:
            pass
        load.probes_lost += 1

    def streams(duration: float) -> list[Any]:
        # A rate of 0 leaves that stream out, to measure ingest or reads alone.
        found = [paced(1.0, duration, probe, PROBES)]
        if args.rate > 0:
            found.append(paced(args.rate / args.batch, duration, ingest, 50))
        if args.reads > 0:
            found.append(paced(args.reads, duration, read, 100))
        return found

    try:
        if args.warmup > 0:
            # The same load, not recorded: it opens the connections and fills the
            # service's caches, which took about a second at the first requests.
            await asyncio.gather(*streams(args.warmup))
            load = Load()
        load.load_average_before = os.getloadavg()
        cpu_before = process_tree_cpu(server_pid)
        started = time.perf_counter()
        await asyncio.gather(*streams(args.duration))
        load.seconds = time.perf_counter() - started
        cpu_after = process_tree_cpu(server_pid)
        load.load_average_after = os.getloadavg()
        if cpu_before is not None and cpu_after is not None:
            load.server_cpu_seconds = cpu_after - cpu_before
    finally:
        await client.close()
        await probe_client.close()
    return load


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rate", type=float, default=1000, help="events per second")
    parser.add_argument("--batch", type=int, default=50, help="events per request")
    parser.add_argument("--reads", type=float, default=200, help="reads per second")
    parser.add_argument("--duration", type=float, default=30, help="seconds of load")
    parser.add_argument(
        "--warmup",
        type=float,
        default=5,
        help="seconds of the same load before the measured part, not recorded",
    )
    parser.add_argument("--accounts", type=int, default=1000, help="load accounts")
    parser.add_argument(
        "--probe-timeout", type=float, default=15, help="seconds a probe waits"
    )
    parser.add_argument(
        "--poll", type=float, default=0.1, help="seconds between a probe's reads"
    )
    parser.add_argument(
        "--workers", type=int, default=1, help="request processes of the service"
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
            "--workers",
            str(args.workers),
        ],
        stdout=subprocess.DEVNULL,
        stderr=log,
    )
    try:
        _wait_until_up(url)
        load = asyncio.run(drive(port, token, key, load_ids, args, server.pid))
        elapsed = load.seconds
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
        if load.server_cpu_seconds is None
        else round(load.server_cpu_seconds, 1),
        "load_average_before": [round(v, 2) for v in load.load_average_before],
        "load_average_after": [round(v, 2) for v in load.load_average_after],
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
