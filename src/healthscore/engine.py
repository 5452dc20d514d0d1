"""Connections to the engine that computes metrics: DuckDB or Spark, through Ibis.

`engine.kind` in healthscore.yml picks the engine. `Engine.open(project, spark=session)`
runs on a SparkSession that the calling program already has, whatever the setting.
"""

from __future__ import annotations

import logging
import os
import socket
import weakref
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import duckdb
import ibis
from ibis.backends import BaseBackend
from ibis.backends.duckdb import Backend as DuckDBBackend

from healthscore.config import ConfigError, Project
from healthscore.config.errors import ConfigIssue, format_key, line_of
from healthscore.config.loader import _parse_yaml
from healthscore.sources import SourceError, SourceSet, load_sources
from healthscore.sources.reader import _first_line as first_line
from healthscore.store.duckdb_files import register_connection

if TYPE_CHECKING:
    from ibis.backends.pyspark import Backend as PySparkBackend
    from pyspark.sql import SparkSession

logger = logging.getLogger(__name__)

#: Spark master URL and application name when `engine.master` and `engine.app_name`
#: are not set.
DEFAULT_SPARK_MASTER = "local[*]"
DEFAULT_SPARK_APP_NAME = "healthscore"

#: Spark setting for the number of partitions of each shuffle. Spark's default of
#: 200 suits a cluster; in local mode healthscore uses twice the number of CPUs
#: instead. Scoring 2 M events of benchmarks/generate.py as of one date took 49 s
#: with 200 and 18 s with 4 partitions, run back to back in local[2] on 2 CPUs.
SHUFFLE_PARTITIONS = "spark.sql.shuffle.partitions"


#: The DuckDB connection that `connect` opened last, for the advice of errors.
_last_connection: weakref.ref[duckdb.DuckDBPyConnection] | None = None


def connect(project: Project) -> DuckDBBackend:
    """Open an in-process DuckDB connection set up for `project`.

    The session time zone is the project's, never the host's: DuckDB otherwise takes
    the host zone, and naive timestamps and date boundaries would move with it.
    """
    settings = project.config.engine
    # The same as `ibis.duckdb.connect()`, without the lookup of Ibis's backend
    # entry points in every installed package's metadata, which took 0.08 s.
    con = DuckDBBackend().connect()
    raw = con.con
    raw.execute("SET enable_progress_bar = false")
    raw.execute("SET TimeZone = ?", [project.config.timezone])
    if settings.memory_limit:
        _set_engine_setting(
            project, raw, "memory_limit", "SET memory_limit = ?", settings.memory_limit
        )
    if settings.threads:
        _set_engine_setting(
            project, raw, "threads", f"SET threads = {int(settings.threads)}"
        )
    # DuckDB spills to temp_directory when a query needs more than memory_limit.
    # For an in-memory database its default is `.tmp` in the working directory, so
    # the default here is a folder of the project instead. DuckDB 2.0 creates the
    # folder itself on the first spill, but not its parents, and deletes it when the
    # connection closes.
    temp_directory = default_temp_directory(project)
    if settings.temp_directory:
        temp_directory = project.path(settings.temp_directory)
    try:
        temp_directory.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise SourceError(
            f"cannot create {temp_directory.parent}, the folder of DuckDB's spill "
            f"folder: {exc.strerror or exc}; set engine.temp_directory in "
            "healthscore.yml to a folder that can be created"
        ) from None
    raw.execute("SET temp_directory = ?", [str(temp_directory)])
    # A snapshot table in a DuckDB file that a table source attaches is written
    # through this connection, because DuckDB lets no other one write the file.
    register_connection(raw)
    global _last_connection
    _last_connection = weakref.ref(raw)
    logger.debug(
        "opened DuckDB (time zone %s, memory limit %s)",
        project.config.timezone,
        settings.memory_limit or "default",
    )
    return con


def _set_engine_setting(
    project: Project,
    con: duckdb.DuckDBPyConnection,
    name: str,
    statement: str,
    value: str | None = None,
) -> None:
    """Run the SET `statement` of `engine.<name>`, with `value` as its parameter.

    Raises ConfigError naming the setting, its line and DuckDB's reason when DuckDB
    rejects the value.
    """
    try:
        con.execute(statement, [] if value is None else [value])
    except duckdb.Error as exc:
        path = ("engine", name)
        _, lines, _ = _parse_yaml(project.file_text(), str(project.file))
        rejected = getattr(project.config.engine, name)
        issue = ConfigIssue(
            file=str(project.file),
            line=line_of(path, lines),
            key=format_key(path),
            message=f"DuckDB rejected {rejected!r}: {first_line(exc)}; change or "
            f"remove engine.{name}",
        )
        raise ConfigError([issue]) from None


def spill_folder() -> str | None:
    """Return the spill folder of the DuckDB connection that `connect` opened last.

    Returns None when that connection is closed or none was opened, and an empty
    text when its spilling is off.
    """
    con = _last_connection() if _last_connection is not None else None
    if con is None:
        return None
    try:
        cursor = con.cursor()
    except duckdb.ConnectionException:
        return None  # the connection is closed
    try:
        ((folder,),) = cursor.execute(
            "SELECT current_setting('temp_directory')"
        ).fetchall()
    finally:
        cursor.close()
    return str(folder)


def default_temp_directory(project: Project) -> Path:
    """Return DuckDB's spill folder when `engine.temp_directory` is not set.

    It is `tmp` beside the snapshot folder, so `.healthscore/tmp` by default, and it
    follows the snapshots when a command moves them (`healthscore demo --store-dir`).
    """
    return project.path(project.config.store.snapshots).parent / "tmp"


def start_spark_session(project: Project) -> SparkSession:
    """Start the SparkSession of `engine.master`, `engine.app_name` and `spark_conf`.

    When the process already has an active session, Spark returns it and applies
    only the settings that can change at run time. With a `spark://` master, a TCP
    connection to the master is tried first, and SourceError names the URL when no
    master of it accepts one.
    """
    settings = project.config.engine
    SparkSession = _import_spark()
    master = (settings.master or DEFAULT_SPARK_MASTER).strip()
    if master.startswith("spark://"):
        check_master_reachable(master)
    builder = SparkSession.builder.master(master)
    builder = builder.appName(settings.app_name or DEFAULT_SPARK_APP_NAME)
    # Spark's progress bars would interleave with the command's own output.
    builder = builder.config("spark.ui.showConsoleProgress", "false")
    conf = settings.spark_settings()
    if master.startswith("local") and SHUFFLE_PARTITIONS not in conf:
        conf[SHUFFLE_PARTITIONS] = str(2 * (os.cpu_count() or 1))
    for key, value in conf.items():
        builder = builder.config(key, value)
    try:
        return builder.getOrCreate()
    except Exception as exc:  # Py4J, PySpark and JVM errors alike
        logger.debug("starting Spark failed", exc_info=exc)
        raise SourceError(
            f"Spark could not start with engine.master {master!r}: "
            f"{_start_failure(exc, master)}. Check engine.master (local[*], "
            "local[N], spark://host:port, yarn), that the master is reachable, and "
            "that Java 17 is installed (JAVA_HOME)."
        ) from None


def _start_failure(exc: Exception, master: str) -> str:
    """Describe why starting Spark failed, in Java's words where Java failed.

    Py4J's own message only names the Java call ("An error occurred while calling
    None.org.apache.spark.api.java.JavaSparkContext"), so the Java exception's
    message is shown instead.
    """
    java_exception = getattr(exc, "java_exception", None)
    if java_exception is not None:
        return _java_message(exc, java_exception).rstrip(".")
    error_class = getattr(exc, "getCondition", getattr(exc, "getErrorClass", None))
    if callable(error_class) and error_class() == "JAVA_GATEWAY_EXITED":
        # The JVM wrote its error to this process's stderr, which is not captured.
        reason = "Java exited before Spark started; its output above names the cause"
        if master == "yarn" and not (
            os.environ.get("HADOOP_CONF_DIR") or os.environ.get("YARN_CONF_DIR")
        ):
            reason = (
                "Java exited before Spark started. With master yarn, Spark needs "
                "HADOOP_CONF_DIR or YARN_CONF_DIR set to the folder of the "
                "cluster's Hadoop configuration, and neither is set here"
            )
        return reason
    return first_line(exc).rstrip(".")


def _java_message(exc: Exception, java_exception: Any) -> str:
    """Return the message of the Java exception of a Py4JJavaError."""
    try:
        message = java_exception.getMessage()
    except Exception:  # the JVM is gone; its text is in Py4J's message
        message = None
    if message:
        return str(message).strip().splitlines()[0]
    # Py4J's message is "An error occurred while calling X.\n: class: message".
    for line in str(exc).splitlines():
        if line.startswith(": "):
            return line.removeprefix(": ").strip()
    return first_line(exc)


#: Seconds to wait for a TCP connection to a standalone Spark master. An estimate of
#: a slow but working link, not a measured figure.
MASTER_CONNECT_TIMEOUT = 5


def check_master_reachable(master: str) -> None:
    """Raise SourceError unless some master of a `spark://` URL accepts a connection.

    When no standalone master responds, Spark retries registering for 60 s before
    it fails: 3 attempts of 20 s, constants of StandaloneAppClient in spark-core
    4.0.5 with no setting to change them. A TCP connection to each master of the
    URL is tried first instead, and one that accepts is enough. A URL without a
    host or a port is left for Spark to report.
    """
    addresses: list[tuple[str | None, int | None]] = []
    for address in master.removeprefix("spark://").split(","):
        try:
            parts = urlsplit(f"spark://{address}")
            addresses.append((parts.hostname, parts.port))
        except ValueError:  # a port that is not a number
            addresses.append((None, None))
    if not all(host and port for host, port in addresses):
        return
    failures = []
    for host, port in addresses:
        endpoint = f"[{host}]:{port}" if ":" in str(host) else f"{host}:{port}"
        try:
            with socket.create_connection((host, port), timeout=MASTER_CONNECT_TIMEOUT):
                return
        except TimeoutError:
            failures.append(f"{endpoint} (timed out after {MASTER_CONNECT_TIMEOUT} s)")
        except OSError as exc:
            failures.append(f"{endpoint} ({exc.strerror or exc})")
    raise SourceError(
        f"Spark master {master!r} is not reachable: connecting to "
        f"{', '.join(failures)} failed. Check that the Spark master is running and "
        "listens on that host and port (its web UI, on port 8080 by default, shows "
        "its spark:// URL), that engine.master in healthscore.yml names it, and "
        "that no firewall blocks the port."
    )


def connect_spark(
    project: Project, session: SparkSession | None = None
) -> PySparkBackend:
    """Open an Ibis connection on a Spark session set up for `project`.

    healthscore works in a new session of the same SparkContext where Spark allows it
    (`SparkSession.newSession`), so its temporary views and its time zone stay out of
    the caller's session. Spark Connect sessions have no `newSession`, so there the
    caller's session is used and its time zone changes.
    """
    if session is None:
        session = start_spark_session(project)
    else:
        _import_spark()
    try:
        own = session.newSession()
    except NotImplementedError:
        own = session
    # Ibis sets the session time zone to UTC. The project's zone replaces it, so that
    # text timestamps are read, and wall-clock times kept, in that zone.
    con = ibis.pyspark.connect(
        own, **{"spark.sql.session.timeZone": project.config.timezone}
    )
    logger.debug(
        "opened Spark (master %s, time zone %s)",
        own.sparkContext.master,
        project.config.timezone,
    )
    return con


def _import_spark() -> Any:
    try:
        from pyspark.sql import SparkSession
    except ImportError:
        raise SourceError(
            "engine kind spark needs PySpark, which is not installed; install it "
            "with pip install 'healthscore[spark]' or set engine: duckdb"
        ) from None
    return SparkSession


@dataclass
class Engine:
    """An engine connection with the project's sources read into it."""

    project: Project
    con: BaseBackend
    """Ibis backend: DuckDB, or PySpark with engine kind spark."""
    sources: SourceSet

    @classmethod
    def open(cls, project: Project, *, spark: SparkSession | None = None) -> Engine:
        """Connect and read every source of `project`; raises SourceError.

        With `spark`, the sources are read into that SparkSession (see
        `connect_spark`), whatever `engine.kind` is.
        """
        if spark is not None or project.config.engine.kind == "spark":
            # Imported here, so that DuckDB projects run without PySpark.
            from healthscore.sources.spark_reader import (
                check_supported,
                load_spark_sources,
            )

            # Checked before the session starts, which takes seconds.
            check_supported(project)
            spark_con = connect_spark(project, spark)
            return cls(project, spark_con, load_spark_sources(project, spark_con))
        con = connect(project)
        return cls(project, con, load_sources(project, con))
