"""Implementations of the benchmark's metric set, and the child process that times one.

Each implementation reads a data set made by generate.py and returns the metric set
of metric_set.py as a pandas DataFrame, one row per account. run.py starts::

    python benchmarks/implementations.py NAME DATA_DIR RESULT_FILE

in a fresh process per run, so the peak memory of the process belongs to one
implementation. The child imports the implementation's libraries, times only the
call, writes the result to RESULT_FILE (Parquet) and prints one JSON line with the
wall-clock and CPU seconds on stdout.

When the environment variable BENCH_DUCKDB_MEMORY_LIMIT is set (run.py's
``--memory-limit``), every DuckDB connection, healthscore's included, gets that
memory limit and spills to the folder in BENCH_DUCKDB_TEMP_DIRECTORY.
"""

from __future__ import annotations

import importlib
import inspect
import json
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import TYPE_CHECKING

import pandas as pd

from metric_set import AS_OF, METRICS, window_bounds

if TYPE_CHECKING:
    import duckdb

#: Exit status of a child whose implementation cannot run in this installation,
#: because a module it needs is missing or fails to import.
NOT_AVAILABLE_STATUS = 3

#: Environment variables that carry run.py's `--memory-limit` to the children: the
#: DuckDB memory limit, and the folder that DuckDB spills to.
MEMORY_LIMIT_VARIABLE = "BENCH_DUCKDB_MEMORY_LIMIT"
TEMP_DIRECTORY_VARIABLE = "BENCH_DUCKDB_TEMP_DIRECTORY"

#: Data files of a generated data set, linked into project copies.
DATA_FILES = ("accounts.parquet", "events.parquet")


class NotAvailableError(RuntimeError):
    """An implementation whose code is not present in this installation."""


@dataclass(frozen=True)
class Implementation:
    """A named way to compute the metric set, and the modules it imports untimed."""

    name: str
    compute: Callable[[Path, date], pd.DataFrame]
    modules: tuple[str, ...]
    hand_written: bool


def duckdb_limits() -> dict[str, str]:
    """Return the DuckDB settings that run.py passed through the environment."""
    limit = os.environ.get(MEMORY_LIMIT_VARIABLE)
    if not limit:
        return {}
    settings = {"memory_limit": limit}
    temp_directory = os.environ.get(TEMP_DIRECTORY_VARIABLE)
    if temp_directory:
        settings["temp_directory"] = temp_directory
    return settings


def _duckdb_connect() -> duckdb.DuckDBPyConnection:
    """Open an in-memory DuckDB connection with the limits of duckdb_limits()."""
    import duckdb

    connection = duckdb.connect()
    for name, value in duckdb_limits().items():
        connection.execute(f"SET {name} = ?", [value])
    return connection


def write_project_copy(data: Path, target: Path, engine: dict[str, object]) -> Path:
    """Write a copy of the generated project into `target` with these engine settings.

    The data files are symbolic links, so the copy costs no disk space. The settings
    become the `engine` mapping of the copy's healthscore.yml.
    """
    target.mkdir(parents=True, exist_ok=True)
    for name in DATA_FILES:
        link = target / name
        link.unlink(missing_ok=True)
        link.symlink_to((data / name).resolve())
    text = (data / "healthscore.yml").read_text(encoding="utf-8")
    if engine and any(line.startswith("engine:") for line in text.splitlines()):
        raise ValueError(
            f"{data / 'healthscore.yml'} already sets engine; generate the data set "
            "again with benchmarks/generate.py"
        )
    if engine:
        # JSON is YAML flow syntax, and quotes every string safely.
        text += f"\nengine: {json.dumps(engine)}\n"
    (target / "healthscore.yml").write_text(text, encoding="utf-8")
    return target


@contextmanager
def project_copy(data: Path, engine: dict[str, object]) -> Iterator[Path]:
    """Yield the generated project itself, or a temporary copy with `engine` set."""
    if not engine:
        yield data
        return
    folder = Path(tempfile.mkdtemp(prefix="healthscore-bench-project-"))
    try:
        yield write_project_copy(data, folder, engine)
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def _sql_path(path: Path) -> str:
    return "'" + str(path).replace("'", "''") + "'"


def _sql_timestamp(moment: object) -> str:
    return f"TIMESTAMP '{moment}'"


def _final_select(per_account: str, accounts: Path, as_of: date) -> str:
    """SQL that joins per-account aggregates onto every account."""
    return f"""
        SELECT
            a.account_id,
            coalesce(p.events_28d, 0)::DOUBLE AS events_28d,
            coalesce(p.users_28d, 0)::DOUBLE AS users_28d,
            coalesce(p.event_types_28d, 0)::DOUBLE AS event_types_28d,
            coalesce(p.events_prev_28d, 0)::DOUBLE AS events_prev_28d,
            CASE WHEN coalesce(p.events_prev_28d, 0) = 0 THEN NULL
                 ELSE p.events_28d::DOUBLE / p.events_prev_28d END AS events_ratio,
            date_diff('day', p.last_event::DATE, DATE '{as_of}')::DOUBLE
                AS days_since_last_event
        FROM read_parquet({_sql_path(accounts)}) AS a
        LEFT JOIN ({per_account}) AS p USING (account_id)
        ORDER BY a.account_id
    """


def scan_columns(folder: Path, as_of: date) -> pd.DataFrame:
    """Read every column the metric set needs, with the cheapest aggregates over them.

    This is the floor for any implementation that reads the whole file: the time to
    read and decode the columns, with almost no computation. DuckDB 2.0 computes a
    plain count(*), min or max from the Parquet metadata without reading a row, so
    the string columns go through length() to force a read of every value.
    """
    query = f"""
        SELECT count(*) AS events,
               max(length(account_id)) AS max_account_id_length,
               max(timestamp) AS max_timestamp,
               max(length(user_id)) AS max_user_id_length,
               max(length(event_type)) AS max_event_type_length
        FROM read_parquet({_sql_path(folder / "events.parquet")})
    """
    with _duckdb_connect() as connection:
        return connection.sql(query).df()


def duckdb_naive(folder: Path, as_of: date) -> pd.DataFrame:
    """Compute the metric set with one DuckDB query of FILTER aggregates."""
    point, start_28, start_56 = (_sql_timestamp(t) for t in window_bounds(as_of))
    last_28 = f"timestamp >= {start_28} AND timestamp < {point}"
    prev_28 = f"timestamp >= {start_56} AND timestamp < {start_28}"
    per_account = f"""
        SELECT account_id,
               count(*) FILTER (WHERE {last_28}) AS events_28d,
               count(DISTINCT user_id) FILTER (WHERE {last_28}) AS users_28d,
               count(DISTINCT event_type) FILTER (WHERE {last_28}) AS event_types_28d,
               count(*) FILTER (WHERE {prev_28}) AS events_prev_28d,
               max(timestamp) FILTER (WHERE timestamp < {point}) AS last_event
        FROM read_parquet({_sql_path(folder / "events.parquet")})
        GROUP BY account_id
    """
    with _duckdb_connect() as connection:
        query = _final_select(per_account, folder / "accounts.parquet", as_of)
        return connection.sql(query).df()


def duckdb_pruned(folder: Path, as_of: date) -> pd.DataFrame:
    """Compute the metric set in DuckDB, reading each row group for one purpose only.

    The windowed counts read only rows of the last 56 days, so DuckDB skips the older
    row groups of the time-ordered file by their min/max statistics. The distinct
    counts read only the rows of the last 28 days, in their own aggregation: DuckDB
    counts distinct values of the rows a `WHERE` keeps faster than a
    `COUNT(DISTINCT CASE ...)` over the 56 days. An account with rows in the 56 days
    has its last event there. The other accounts need the older rows, but only their
    account_id and timestamp columns.
    """
    point, start_28, start_56 = (_sql_timestamp(t) for t in window_bounds(as_of))
    events = _sql_path(folder / "events.parquet")
    per_account = f"""
        WITH windowed AS (
            SELECT account_id,
                   count(CASE WHEN timestamp >= {start_28} THEN 1 END) AS events_28d,
                   count(CASE WHEN timestamp < {start_28} THEN 1 END)
                       AS events_prev_28d,
                   max(timestamp) AS last_event
            FROM read_parquet({events})
            WHERE timestamp >= {start_56} AND timestamp < {point}
            GROUP BY account_id
        ),
        distinct_28 AS (
            SELECT account_id, count(DISTINCT user_id) AS users_28d,
                   count(DISTINCT event_type) AS event_types_28d
            FROM read_parquet({events})
            WHERE timestamp >= {start_28} AND timestamp < {point}
            GROUP BY account_id
        ),
        older AS (
            SELECT account_id, max(timestamp) AS last_event
            FROM read_parquet({events})
            WHERE timestamp < {start_56}
            GROUP BY account_id
        )
        SELECT account_id, w.events_28d, d.users_28d, d.event_types_28d,
               w.events_prev_28d, coalesce(w.last_event, o.last_event) AS last_event
        FROM windowed AS w LEFT JOIN distinct_28 AS d USING (account_id)
        FULL OUTER JOIN older AS o USING (account_id)
    """
    with _duckdb_connect() as connection:
        query = _final_select(per_account, folder / "accounts.parquet", as_of)
        return connection.sql(query).df()


def polars_lazy(folder: Path, as_of: date) -> pd.DataFrame:
    """Compute the metric set with one Polars lazy query."""
    import polars as pl

    point, start_28, start_56 = window_bounds(as_of)
    timestamp = pl.col("timestamp")
    last_28 = timestamp >= start_28
    prev_28 = (timestamp >= start_56) & (timestamp < start_28)

    per_account = (
        pl.scan_parquet(folder / "events.parquet")
        .filter(timestamp < point)
        .group_by("account_id")
        .agg(
            last_28.sum().alias("events_28d"),
            pl.col("user_id").filter(last_28).n_unique().alias("users_28d"),
            pl.col("event_type").filter(last_28).n_unique().alias("event_types_28d"),
            prev_28.sum().alias("events_prev_28d"),
            timestamp.max().alias("last_event"),
        )
    )
    counts = ["events_28d", "users_28d", "event_types_28d", "events_prev_28d"]
    result = (
        pl.scan_parquet(folder / "accounts.parquet")
        .select("account_id")
        .join(per_account, on="account_id", how="left")
        .with_columns(pl.col(counts).fill_null(0).cast(pl.Float64))
        .with_columns(
            pl.when(pl.col("events_prev_28d") > 0)
            .then(pl.col("events_28d") / pl.col("events_prev_28d"))
            .alias("events_ratio"),
            (pl.lit(as_of) - pl.col("last_event").dt.date())
            .dt.total_days()
            .cast(pl.Float64)
            .alias("days_since_last_event"),
        )
        .select("account_id", *METRICS)
        .sort("account_id")
        .collect()
    )
    return result.to_pandas()


def pandas_pyarrow(folder: Path, as_of: date) -> pd.DataFrame:
    """Compute the metric set with pandas, reading the needed columns with pyarrow.

    The account column is factorized once, so every group-by runs over integer
    codes. Reading the strings as Arrow dictionaries instead (`read_dictionary`, then
    categoricals) took about 40 s on the 20 M event file against about 5 s for this
    read, in one measurement with pyarrow 26.
    """
    point, start_28, start_56 = (pd.Timestamp(t) for t in window_bounds(as_of))
    events = pd.read_parquet(
        folder / "events.parquet",
        engine="pyarrow",
        columns=["account_id", "user_id", "event_type", "timestamp"],
    )
    codes, account_ids = pd.factorize(events["account_id"])
    events["account"] = codes

    # Masks rather than a filtered copy of the whole frame, to keep memory down.
    timestamp = events["timestamp"]
    seen = timestamp < point
    prev_28 = (timestamp >= start_56) & (timestamp < start_28)
    last_28 = events[(timestamp >= start_28) & seen].groupby("account")
    per_account = pd.DataFrame(
        {
            "events_28d": last_28.size(),
            "users_28d": last_28["user_id"].nunique(),
            "event_types_28d": last_28["event_type"].nunique(),
            "events_prev_28d": prev_28.groupby(codes).sum(),
            "last_event": timestamp[seen].groupby(codes[seen.to_numpy()]).max(),
        }
    )
    per_account.index = account_ids[per_account.index]

    accounts = pd.read_parquet(folder / "accounts.parquet", columns=["account_id"])
    return _pandas_final(per_account, accounts["account_id"], as_of)


def _pandas_final(
    per_account: pd.DataFrame, account_ids: pd.Series, as_of: date
) -> pd.DataFrame:
    """Give every account a row, then derive the ratio and the days since."""
    result = per_account.reindex(pd.Index(account_ids, name="account_id"))
    counts = ["events_28d", "users_28d", "event_types_28d", "events_prev_28d"]
    result[counts] = result[counts].fillna(0).astype("float64")

    previous = result["events_prev_28d"]
    result["events_ratio"] = (result["events_28d"] / previous).where(previous > 0)
    last_day = result["last_event"].dt.floor("D")
    result["days_since_last_event"] = (pd.Timestamp(as_of) - last_day).dt.days
    return result.loc[:, list(METRICS)].reset_index()


def healthscore_pipeline(folder: Path, as_of: date) -> pd.DataFrame:
    """Compute metrics and scores with healthscore on the generated healthscore.yml.

    This is `healthscore.pipeline.score` without writing the snapshot: reading the
    sources, the metrics, the overrides lookup and the scoring step are all timed.
    """
    score = _healthscore_entry_point()
    from healthscore.config import load_project

    with project_copy(folder, dict(duckdb_limits())) as project_folder:
        project = load_project(project_folder)
        run = score(project, as_of, store=False)
        return _healthscore_metrics(run)


#: Engine settings of the `healthscore_spark` implementation: Spark in local mode on
#: every CPU of the machine, in one JVM.
SPARK_ENGINE: dict[str, object] = {"kind": "spark", "master": "local[*]"}


def healthscore_spark(folder: Path, as_of: date) -> pd.DataFrame:
    """Compute metrics and scores with healthscore on Spark in local mode.

    The same run as `healthscore`, on a copy of the generated project whose
    healthscore.yml sets `engine: {kind: spark, master: "local[*]"}`. Starting the
    JVM and the SparkSession is part of the timed call, as it is for a scoring run.
    """
    score = _healthscore_entry_point()
    from healthscore.config import ConfigError, load_project

    with project_copy(folder, SPARK_ENGINE) as project_folder:
        try:
            project = load_project(project_folder)
        except ConfigError as exc:
            raise NotAvailableError(
                f"this healthscore does not accept engine kind spark: {exc}"
            ) from None
        try:
            run = score(project, as_of, store=False)
        finally:
            _stop_spark()
        return _healthscore_metrics(run)


def _stop_spark() -> None:
    """Stop the active SparkSession, so the JVM exits with the child."""
    try:
        from pyspark.sql import SparkSession
    except ImportError:
        return
    session = SparkSession.getActiveSession()
    if session is not None:
        session.stop()


def _healthscore_entry_point() -> Callable[..., object]:
    """Return healthscore.pipeline.score, or raise NotAvailableError."""
    try:
        pipeline = importlib.import_module("healthscore.pipeline")
    except ModuleNotFoundError as exc:
        raise NotAvailableError(
            f"healthscore has no pipeline module ({exc}); the healthscore entry "
            "needs healthscore.pipeline.score(project, as_of, store=False)"
        ) from None
    score = getattr(pipeline, "score", None)
    if score is None or "store" not in inspect.signature(score).parameters:
        raise NotAvailableError(
            "healthscore.pipeline has no score(project, as_of, store=False); update "
            "healthscore_pipeline() in benchmarks/implementations.py"
        )
    _configure_like_the_command_line()
    return score


def _configure_like_the_command_line() -> None:
    """Apply the process settings that the `healthscore` command applies first."""
    try:
        runtime = importlib.import_module("healthscore.runtime")
    except ModuleNotFoundError:
        return  # an older healthscore, whose command changes no process setting
    runtime.configure_process()


def _healthscore_metrics(run: object) -> pd.DataFrame:
    """Return the metric values (index account_id) of a healthscore scoring run."""
    values = getattr(getattr(run, "metrics", None), "values", None)
    if not isinstance(values, pd.DataFrame):
        raise NotAvailableError(
            f"healthscore.pipeline.score returned {type(run).__name__} without "
            "metrics.values; update _healthscore_metrics() in "
            "benchmarks/implementations.py"
        )
    return values


IMPLEMENTATIONS = {
    implementation.name: implementation
    for implementation in (
        Implementation("scan", scan_columns, ("duckdb",), hand_written=False),
        Implementation("duckdb_naive", duckdb_naive, ("duckdb",), hand_written=True),
        Implementation("duckdb_pruned", duckdb_pruned, ("duckdb",), hand_written=True),
        Implementation("polars", polars_lazy, ("polars", "pyarrow"), hand_written=True),
        Implementation(
            "pandas", pandas_pyarrow, ("pyarrow.parquet",), hand_written=True
        ),
        Implementation(
            "healthscore",
            healthscore_pipeline,
            ("healthscore.config", "healthscore.pipeline"),
            hand_written=False,
        ),
        Implementation(
            "healthscore_spark",
            healthscore_spark,
            ("healthscore.config", "healthscore.pipeline", "pyspark.sql"),
            hand_written=False,
        ),
    )
}


def run_child(name: str, folder: Path, result_file: Path) -> int:
    """Time one implementation, write its result and print the seconds as JSON."""
    implementation = IMPLEMENTATIONS[name]
    for module in implementation.modules:
        try:
            importlib.import_module(module)
        except ImportError as exc:
            print(f"cannot import {module}: {exc}", file=sys.stderr)
            return NOT_AVAILABLE_STATUS

    started = time.perf_counter()
    # CPU time of all threads: less affected than wall time by other processes.
    cpu_started = time.process_time()
    try:
        result = implementation.compute(folder, AS_OF)
    except NotAvailableError as exc:
        print(str(exc), file=sys.stderr)
        return NOT_AVAILABLE_STATUS
    seconds = time.perf_counter() - started
    cpu_seconds = time.process_time() - cpu_started

    result.to_parquet(result_file)
    print(json.dumps({"seconds": seconds, "cpu_seconds": cpu_seconds}))
    return 0


if __name__ == "__main__":
    if len(sys.argv) != 4 or sys.argv[1] not in IMPLEMENTATIONS:
        names = ", ".join(IMPLEMENTATIONS)
        print(f"usage: {sys.argv[0]} {{{names}}} DATA_DIR RESULT_FILE", file=sys.stderr)
        sys.exit(2)
    sys.exit(run_child(sys.argv[1], Path(sys.argv[2]), Path(sys.argv[3])))
