"""Checks of the benchmark's generator, implementations, result check and runner.

Run with ``.venv/bin/pytest benchmarks`` (the default ``pytest`` run covers tests/
only). pytest puts this folder on sys.path, so the scripts import as modules.
"""

from __future__ import annotations

import argparse
import json
import math
import subprocess
import sys
from datetime import datetime, timedelta
from pathlib import Path

import duckdb
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import generate
import implementations
import process
import run
from metric_set import AS_OF, METRICS, SPAN_DAYS, compare, standardize

BENCHMARKS = Path(__file__).resolve().parent

# Hand-made events around the window edges; the as-of point is 2026-03-01 00:00, the
# 28-day window starts 2026-02-01 00:00 and the 56-day window 2026-01-04 00:00.
HAND_EVENTS = [
    ("acct-a", "2026-01-03 23:59:59", "u1", "login"),  # before both windows
    ("acct-a", "2026-01-04 00:00:00", "u3", "search"),  # first instant of prev 28d
    ("acct-a", "2026-01-31 23:59:59", "u1", "export"),  # last instant of prev 28d
    ("acct-a", "2026-02-01 00:00:00", "u2", "login"),  # first instant of last 28d
    ("acct-a", "2026-02-28 23:59:59", "u1", "login"),
    ("acct-a", "2026-03-01 00:00:00", "u9", "export"),  # at the as-of point: unseen
    ("acct-b", "2026-01-10 12:00:00", "u4", "login"),
    ("acct-c", "2025-12-01 08:00:00", "u5", "login"),
    ("acct-e", "2026-02-15 10:00:00", "u6", "search"),
    ("acct-e", "2026-02-15 11:00:00", "u6", "export"),
    ("acct-e", "2026-02-20 09:00:00", "u6", "search"),
    ("acct-d", "2026-03-05 09:00:00", "u7", "login"),  # after the as-of point
]

NAN = math.nan
# Columns: events_28d, users_28d, event_types_28d, events_prev_28d, events_ratio,
# days_since_last_event (from the date of the last event to 2026-03-01).
HAND_EXPECTED = {
    "acct-a": (2, 2, 1, 2, 1.0, 1),
    "acct-b": (0, 0, 0, 1, 0.0, 50),  # 2026-01-10 to 2026-03-01
    "acct-c": (0, 0, 0, 0, NAN, 90),  # 2025-12-01 to 2026-03-01
    "acct-d": (0, 0, 0, 0, NAN, NAN),
    "acct-e": (3, 1, 2, 0, NAN, 9),
    "acct-f": (0, 0, 0, 0, NAN, NAN),  # no events at all
}

METRIC_IMPLEMENTATIONS = ["duckdb_naive", "duckdb_pruned", "polars", "pandas"]


@pytest.fixture
def hand_data(tmp_path: Path) -> Path:
    """A data folder holding HAND_EVENTS in row groups of two rows, sorted by time."""
    rows = sorted(HAND_EVENTS, key=lambda row: row[1])
    events = pa.table(
        {
            "account_id": [row[0] for row in rows],
            "timestamp": pa.array(
                [datetime.fromisoformat(row[1]) for row in rows], pa.timestamp("us")
            ),
            "user_id": [row[2] for row in rows],
            "event_type": [row[3] for row in rows],
            "value": [1.0] * len(rows),
        },
        schema=generate.EVENTS_SCHEMA,
    )
    pq.write_table(events, tmp_path / "events.parquet", row_group_size=2)
    accounts = pa.table({"account_id": sorted(HAND_EXPECTED)})
    pq.write_table(accounts, tmp_path / "accounts.parquet")
    return tmp_path


@pytest.fixture(scope="module")
def small_data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A generated data set of 30 000 events and 400 accounts."""
    folder = tmp_path_factory.mktemp("small")
    generate.generate(folder, events=30_000, accounts=400, seed=3, row_group_size=4_000)
    return folder


def hand_expected() -> pd.DataFrame:
    frame = pd.DataFrame.from_dict(HAND_EXPECTED, orient="index", columns=METRICS)
    return standardize(frame.rename_axis("account_id"))


@pytest.mark.parametrize("name", METRIC_IMPLEMENTATIONS)
def test_implementation_matches_hand_values(hand_data: Path, name: str) -> None:
    result = implementations.IMPLEMENTATIONS[name].compute(hand_data, AS_OF)

    assert compare(standardize(result), hand_expected()) == []


def test_scan_counts_every_event(hand_data: Path) -> None:
    result = implementations.scan_columns(hand_data, AS_OF)

    assert result["events"].iloc[0] == len(HAND_EVENTS)
    assert result["max_event_type_length"].iloc[0] == len("search")


@pytest.mark.parametrize("name", METRIC_IMPLEMENTATIONS)
def test_implementations_agree_on_generated_data(small_data: Path, name: str) -> None:
    reference = standardize(implementations.duckdb_naive(small_data, AS_OF))
    result = implementations.IMPLEMENTATIONS[name].compute(small_data, AS_OF)

    assert compare(standardize(result), reference) == []


def test_compare_reports_changed_value() -> None:
    reference = hand_expected()
    candidate = reference.copy()
    candidate.loc["acct-b", "events_prev_28d"] = 2.0

    assert compare(candidate, reference) == [
        "events_prev_28d of acct-b: 2.0, expected 1.0"
    ]


def test_compare_reports_value_for_missing() -> None:
    reference = hand_expected()
    candidate = reference.copy()
    candidate.loc["acct-d", "days_since_last_event"] = 0.0

    assert compare(candidate, reference) == [
        "days_since_last_event of acct-d: 0.0, expected nan"
    ]


def test_compare_reports_missing_account() -> None:
    reference = hand_expected()

    problems = compare(reference.drop(index="acct-f"), reference)

    assert problems == ["1 accounts missing, e.g. acct-f"]


def test_compare_tolerates_rounding_only() -> None:
    reference = hand_expected()
    close = reference.copy()
    close.loc["acct-a", "events_ratio"] = 1.0 + 5e-10
    far = reference.copy()
    far.loc["acct-a", "events_ratio"] = 1.0 + 5e-9

    assert compare(close, reference) == []
    assert len(compare(far, reference)) == 1


def test_daily_counts_add_up_exactly() -> None:
    counts = generate.daily_event_counts(1_000_003, AS_OF)

    assert counts.sum() == 1_000_003
    assert len(counts) == SPAN_DAYS
    # 2026-02-28 is a Saturday, 2026-02-27 a Friday.
    assert counts[-1] < counts[-2]


def test_generated_events_are_time_ordered(small_data: Path) -> None:
    events = pq.read_table(small_data / "events.parquet").to_pandas()
    as_of_point = pd.Timestamp(AS_OF)

    assert len(events) == 30_000
    assert events["timestamp"].is_monotonic_increasing
    assert events["timestamp"].min() >= as_of_point - timedelta(days=SPAN_DAYS)
    assert events["timestamp"].max() < as_of_point
    assert events["event_type"].nunique() == len(generate.EVENT_TYPES)


def test_generated_row_groups_have_requested_size(small_data: Path) -> None:
    metadata = pq.ParquetFile(small_data / "events.parquet").metadata
    sizes = [metadata.row_group(i).num_rows for i in range(metadata.num_row_groups)]

    assert sizes == [4_000] * 7 + [2_000]
    assert metadata.row_group(0).column(0).compression == "ZSTD"


def test_generated_accounts_vary_in_activity(small_data: Path) -> None:
    accounts = pd.read_parquet(small_data / "accounts.parquet")
    metrics = standardize(implementations.duckdb_naive(small_data, AS_OF))
    quiet = metrics["days_since_last_event"] > 14

    assert len(accounts) == 400
    assert set(accounts["segment"]) == set(generate.SEGMENTS)
    assert metrics["days_since_last_event"].isna().sum() > 0
    assert quiet.sum() > 0
    assert metrics["events_28d"].max() > 20 * metrics["events_28d"].median()


def test_generation_is_deterministic(tmp_path: Path) -> None:
    for name in ("first", "second"):
        generate.generate(tmp_path / name, events=5_000, accounts=50, seed=11)
    generate.generate(tmp_path / "other", events=5_000, accounts=50, seed=12)

    first = (tmp_path / "first" / "events.parquet").read_bytes()
    assert (tmp_path / "second" / "events.parquet").read_bytes() == first
    assert (tmp_path / "other" / "events.parquet").read_bytes() != first


def test_generated_project_loads(small_data: Path) -> None:
    from healthscore.config import load_project

    project = load_project(small_data)

    assert set(METRICS) <= set(project.config.metrics)
    assert generate.read_manifest(small_data) == generate.Manifest(
        events=30_000,
        accounts=400,
        seed=3,
        as_of=AS_OF.isoformat(),
        span_days=SPAN_DAYS,
        row_group_size=4_000,
    )


def test_generate_rejects_zero_accounts(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"^--accounts must be at least 1, got 0$"):
        generate.generate(tmp_path, events=10, accounts=0)


def test_peak_memory_isolates_the_child(tmp_path: Path) -> None:
    # This test process has imported pandas, pyarrow and DuckDB: well over 100 MiB.
    report = tmp_path / "report.json"
    command = [sys.executable, str(BENCHMARKS / "peak_memory.py"), str(report)]
    allocate = "b = bytearray(300 * 2**20)"

    subprocess.run([*command, sys.executable, "-c", "pass"], check=True)
    small = json.loads(report.read_text())
    subprocess.run([*command, sys.executable, "-c", allocate], check=True)
    large = json.loads(report.read_text())

    assert small["exit_code"] == 0
    assert small["peak_rss_kib"] < 64 * 1024
    assert large["peak_rss_kib"] > 300 * 1024


def test_peak_memory_passes_exit_code(tmp_path: Path) -> None:
    report = tmp_path / "report.json"
    command = [sys.executable, str(BENCHMARKS / "peak_memory.py"), str(report)]

    subprocess.run([*command, sys.executable, "-c", "raise SystemExit(7)"], check=True)

    assert json.loads(report.read_text())["exit_code"] == 7


def test_check_result_flags_wrong_result(hand_data: Path, tmp_path: Path) -> None:
    reference = hand_expected()
    wrong = reference.copy()
    wrong.loc["acct-e", "users_28d"] = 3.0
    result_file = tmp_path / "wrong.parquet"
    wrong.reset_index().to_parquet(result_file)

    verdict = run.check_result("polars", result_file, reference, events=12)

    assert verdict == "users_28d of acct-e: 3.0, expected 1.0"


def test_run_writes_json_records(tmp_path: Path) -> None:
    output = tmp_path / "results.json"
    data = ["--events", "30000", "--accounts", "400", "--data-dir", str(tmp_path)]
    options = ["--repeat", "2", "--only", "scan,polars", "--json", str(output)]

    status = run.main([*data, *options])
    records = {
        record["implementation"]: record for record in json.loads(output.read_text())
    }

    assert status == 0
    assert list(records) == ["scan", "duckdb_naive", "polars"]
    assert records["polars"]["check"] == "ok"
    assert records["scan"]["check"] == "ok"
    assert len(records["polars"]["runs"]) == 2
    assert records["polars"]["median_seconds"] == np.median(records["polars"]["runs"])
    assert records["polars"]["median_cpu_seconds"] > 0
    assert records["polars"]["peak_rss_mb"] > 0
    assert records["polars"]["events"] == 30_000


def test_run_rejects_unknown_implementation(capsys: pytest.CaptureFixture[str]) -> None:
    status = run.main(["--events", "10", "--accounts", "2", "--only", "spark"])

    assert status == 2
    assert "error: unknown implementation spark; choose from scan," in (
        capsys.readouterr().err
    )


def test_pruned_window_skips_old_row_groups(small_data: Path) -> None:
    path = small_data / "events.parquet"
    start_56 = datetime.combine(AS_OF, datetime.min.time()) - timedelta(days=56)
    metadata = pq.ParquetFile(path).metadata
    newer = sum(
        metadata.row_group(i).column(1).statistics.max >= start_56
        for i in range(metadata.num_row_groups)
    )
    query = f"""
        EXPLAIN ANALYZE SELECT count(*) FROM read_parquet('{path}')
        WHERE timestamp >= TIMESTAMP '{start_56}'
    """

    plan = duckdb.execute(query).fetchall()[0][1]

    assert 0 < newer < metadata.num_row_groups
    assert f"Row Groups Scanned: {newer} / {metadata.num_row_groups}" in plan


def test_check_result_without_reference(hand_data: Path, tmp_path: Path) -> None:
    result_file = tmp_path / "result.parquet"
    hand_expected().reset_index().to_parquet(result_file)

    verdict = run.check_result("pandas", result_file, None, events=12)

    assert verdict == "unchecked: duckdb_naive produced no result"


def test_run_records_backfill_and_default_accounts(tmp_path: Path) -> None:
    output = tmp_path / "results.json"
    data = ["--events", "30000", "--data-dir", str(tmp_path)]
    only = f"healthscore,{run.ONE_DATE},{run.BACKFILL}"
    options = ["--repeat", "1", "--only", only, "--json", str(output)]

    status = run.main([*data, *options])
    records = {
        record["implementation"]: record for record in json.loads(output.read_text())
    }

    assert status == 0
    assert run.BACKFILL == "healthscore_backfill_52"
    assert records["healthscore"]["accounts"] == 300
    assert records[run.ONE_DATE]["check"] == "ok"
    assert records[run.BACKFILL]["check"] == "ok"
    assert records[run.BACKFILL]["median_seconds"] > 0
    assert records[run.BACKFILL]["peak_rss_mb"] > 100
    assert records[run.BACKFILL]["median_cpu_seconds"] > 0


def test_snapshot_check_counts_dates(tmp_path: Path) -> None:
    for day in ("2026-02-22", "2026-03-01"):
        partition = tmp_path / ".healthscore" / "snapshots" / f"as_of={day}"
        partition.mkdir(parents=True)
        (partition / "scores.parquet").write_bytes(b"")

    assert run.check_snapshots(tmp_path, 2) == "ok"
    assert run.check_snapshots(tmp_path, 52) == "stored 2 snapshots of 52"


def test_memory_limit_reaches_duckdb(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv(implementations.MEMORY_LIMIT_VARIABLE, "300MB")
    monkeypatch.setenv(implementations.TEMP_DIRECTORY_VARIABLE, str(tmp_path / "spill"))

    with implementations._duckdb_connect() as connection:
        limit = connection.execute("SELECT current_setting('memory_limit')").fetchone()
        folder = connection.execute(
            "SELECT current_setting('temp_directory')"
        ).fetchone()

    assert limit == ("286.1 MiB",)
    assert folder == (str(tmp_path / "spill"),)


def test_project_copy_sets_engine(small_data: Path, tmp_path: Path) -> None:
    from healthscore.config import load_project

    engine: dict[str, object] = {
        "memory_limit": "3GB",
        "temp_directory": str(tmp_path / "spill"),
    }

    copy = implementations.write_project_copy(small_data, tmp_path / "copy", engine)
    project = load_project(copy)

    assert project.config.engine.memory_limit == "3GB"
    assert project.config.engine.temp_directory == str(tmp_path / "spill")
    assert (copy / "events.parquet").resolve() == small_data / "events.parquet"


def test_runs_of_rejects_bad_counts() -> None:
    assert run.parse_runs_of("pandas=1, healthscore_spark=2") == {
        "pandas": 1,
        "healthscore_spark": 2,
    }
    with pytest.raises(ValueError, match="unknown implementation 'spark'"):
        run.parse_runs_of("spark=1")
    with pytest.raises(ValueError, match="needs a whole number of runs"):
        run.parse_runs_of("pandas=0")


def test_sampler_sees_child_memory_and_folder(tmp_path: Path) -> None:
    # The child allocates 200 MiB and writes a 1 MiB file, then waits to be sampled.
    script = (
        "import pathlib, sys, time\n"
        "b = bytearray(200 * 2**20)\n"
        "pathlib.Path(sys.argv[1]).write_bytes(b'x' * 2**20)\n"
        "time.sleep(1.5)\n"
    )
    folder = tmp_path / "spill"
    folder.mkdir()
    launcher = "import subprocess, sys; subprocess.run(sys.argv[1:])"
    child = [sys.executable, "-c", script, str(folder / "file")]
    parent = subprocess.Popen([sys.executable, "-c", launcher, *child])
    sampler = run.Sampler(parent.pid, folder)
    sampler.start()
    parent.wait()
    sampler.stop()

    assert sampler.peak_rss_bytes > 200 * 2**20
    assert sampler.peak_folder_bytes >= 2**20


def test_plot_skips_failed_records(tmp_path: Path) -> None:
    import plot

    records = [
        {"implementation": "polars", "events": 10, "status": "ok"}
        | {"median_seconds": 1.0, "peak_rss_mb": 200.0},
        {"implementation": "polars", "events": 100, "status": "ok"}
        | {"median_seconds": 4.0, "peak_rss_mb": 300.0},
        {"implementation": "pandas", "events": 100, "status": "failed"}
        | {"median_seconds": None, "peak_rss_mb": 900.0},
        {"implementation": "scan", "events": 100, "status": "wrong_result"}
        | {"median_seconds": 0.5, "peak_rss_mb": 100.0},
    ]
    results = tmp_path / "results.json"
    results.write_text(json.dumps(records))
    out = tmp_path / "plot.png"

    series = plot.read_series([results])
    status = plot.main([str(results), "--out", str(out)])

    assert series == {"polars": {10: (1.0, 200.0, True), 100: (4.0, 300.0, True)}}
    assert status == 0
    assert out.read_bytes().startswith(b"\x89PNG")


def test_plot_reads_run_results_beside_backfill_results(tmp_path: Path) -> None:
    import plot

    record = {"implementation": "polars", "events": 10, "status": "ok"} | {
        "median_seconds": 1.0,
        "peak_rss_mb": 200.0,
    }
    (tmp_path / "2M.json").write_text(json.dumps([record]))
    (tmp_path / "backfill-2M-20k.json").write_text(json.dumps({"ratio": 8.0}))

    files = plot.result_files(tmp_path)

    assert [path.name for path in files] == ["2M.json"]
    assert plot.read_series(files) == {"polars": {10: (1.0, 200.0, True)}}


def test_error_summary_keeps_exception_line() -> None:
    stderr = "\n".join(
        [
            "Traceback (most recent call last):",
            '  File "x.py", line 1, in <module>',
            "_duckdb.OutOfMemoryException: Out of Memory Error: failed to allocate",
            "",
            "Possible solutions:",
            "* Reducing the number of threads (SET threads=X)",
            "* Increasing the memory limit (SET memory_limit='...GB')",
        ]
    )

    summary = run.error_summary(stderr)

    assert summary.startswith("_duckdb.OutOfMemoryException: Out of Memory Error")
    assert len(summary.splitlines()) == 5


def test_backfill_timing_reads_both_formats() -> None:
    assert run.backfill_timing(["2.5", "3.25"]) == {
        "seconds": 3.25,
        "cpu_seconds": 2.5,
    }
    assert run.backfill_timing(["3.25"]) == {"seconds": 3.25, "cpu_seconds": None}


def test_run_rejects_zero_events(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as caught:
        run.main(["--events", "0"])

    assert caught.value.code == 2
    assert "argument --events: must be at least 1, got 0" in capsys.readouterr().err


def test_run_checks_results_file_first(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    missing = tmp_path / "no-such-folder" / "results.json"
    status = run.main(["--events", "10", "--accounts", "2", "--json", str(missing)])

    assert status == 2
    error = capsys.readouterr().err
    assert f"error: --json {missing}: cannot write the results there" in error
    # Nothing was generated or run before the check.
    assert not (tmp_path / "no-such-folder").exists()


def test_child_environment_caches_bytecode(monkeypatch):
    monkeypatch.setenv("PYTHONDONTWRITEBYTECODE", "1")
    monkeypatch.setenv("HEALTHSCORE_BENCH_MARKER", "kept")

    environment = process.child_environment()

    assert "PYTHONDONTWRITEBYTECODE" not in environment
    assert environment["HEALTHSCORE_BENCH_MARKER"] == "kept"


@pytest.mark.parametrize("text", ["0", "-3"])
def test_positive_int_rejects_counts_below_one(text):
    with pytest.raises(argparse.ArgumentTypeError, match="must be at least 1"):
        process.positive_int(text)
