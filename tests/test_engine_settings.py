"""Bounds of the engine settings, checked by validation and by engine.connect."""

from __future__ import annotations

from pathlib import Path

import duckdb
import pytest

from healthscore.config import ConfigError
from healthscore.config.models import EngineConfig
from healthscore.engine import connect
from project_factory import ACCOUNTS_CSV, minimal_config, write_project

EVENTS_CSV = "account_id,timestamp,event_type\na1,2026-01-01 10:00:00,login\n"


def engine_project(tmp_path: Path, **engine: object):
    return write_project(
        tmp_path,
        minimal_config(engine=engine),
        {"accounts.csv": ACCOUNTS_CSV, "events.csv": EVENTS_CSV},
    )


def engine_issue(tmp_path: Path, **engine: object):
    with pytest.raises(ConfigError) as raised:
        engine_project(tmp_path, **engine)
    (issue,) = raised.value.issues
    return issue


def duckdb_accepts(size: str) -> bool:
    con = duckdb.connect()
    try:
        con.execute("SET memory_limit = ?", [size])
    except duckdb.Error:
        return False
    finally:
        con.close()
    return True


def validation_accepts(size: str) -> bool:
    try:
        EngineConfig(memory_limit=size)
    except ValueError:
        return False
    return True


# Sizes at both sides of DuckDB's bounds: 100 % and 2**64 bytes, which is
# 18446744073709551616 B, 18446744.073709551616 TB and 16777216 TiB.
@pytest.mark.parametrize(
    "size",
    [
        "100%",
        "100.0%",
        "100.001%",
        "101%",
        "200%",
        "0.5%",
        "4GB",
        "18446744073709551000B",
        "18446744073709552000B",
        "18446744TB",
        "18446745TB",
        "16777215TiB",
        "16777216TiB",
        "99999999999TB",
    ],
)
def test_memory_limit_bounds_match_duckdb(size):
    assert validation_accepts(size) == duckdb_accepts(size)


@pytest.mark.parametrize("size", ["101%", "200%", "100.5 %"])
def test_memory_limit_percentage_above_100(tmp_path, size):
    issue = engine_issue(tmp_path, memory_limit=size)

    assert issue.key == "engine.memory_limit"
    assert f"{size!r} is more than all of the machine's memory" in issue.message
    assert "at most 100%" in issue.message


def test_memory_limit_size_too_large(tmp_path):
    issue = engine_issue(tmp_path, memory_limit="99999999999TB")

    assert issue.key == "engine.memory_limit"
    assert "'99999999999TB' is larger than DuckDB accepts" in issue.message
    assert "16 EiB" in issue.message


def test_connect_names_rejected_setting(tmp_path):
    project = engine_project(tmp_path, memory_limit="4GB")
    # A value that validation rejects, as a program that builds the settings
    # itself may still pass.
    project.config.engine.memory_limit = "101%"

    with pytest.raises(ConfigError) as raised:
        connect(project)

    (issue,) = raised.value.issues
    assert issue.key == "engine.memory_limit"
    assert issue.file == str(tmp_path / "healthscore.yml")
    assert issue.line is not None
    lines = (tmp_path / "healthscore.yml").read_text().splitlines()
    assert "memory_limit" in lines[issue.line - 1]
    assert issue.message.startswith("DuckDB rejected '101%': ")
    assert "Unable to parse valid percentage" in issue.message
    assert issue.message.endswith("change or remove engine.memory_limit")


def test_connect_applies_threads(tmp_path):
    project = engine_project(tmp_path, threads=3)

    con = connect(project)

    assert con.con.execute("SELECT current_setting('threads')").fetchone() == (3,)


def test_threads_upper_bound(tmp_path):
    issue = engine_issue(tmp_path, threads=100000)

    assert issue.key == "engine.threads"
    assert "100000 threads is more than the maximum of 1024" in issue.message
    assert EngineConfig(threads=1024).threads == 1024


@pytest.mark.parametrize(
    ("master", "port", "address"),
    [
        ("spark://127.0.0.1:0", "0", "127.0.0.1:0"),
        ("spark://127.0.0.1:65536", "65536", "127.0.0.1:65536"),
        ("spark://127.0.0.1:99999", "99999", "127.0.0.1:99999"),
        ("spark://127.0.0.1:7077,[::1]:00000", "00000", "[::1]:00000"),
    ],
)
def test_spark_master_port_out_of_range(tmp_path, master, port, address):
    issue = engine_issue(tmp_path, kind="spark", master=master)

    assert issue.key == "engine.master"
    assert issue.message.startswith(
        f"invalid Spark master {master!r}: port {port} of {address} is not between "
        "1 and 65535"
    )


def test_spark_master_port_bounds_accepted():
    for master in ["spark://127.0.0.1:1", "spark://127.0.0.1:65535"]:
        assert EngineConfig(kind="spark", master=master).master == master


@pytest.mark.parametrize(
    ("key", "setting"), [("spark.master", "master"), ("spark.app.name", "app_name")]
)
def test_spark_conf_rejects_own_settings(tmp_path, key, setting):
    issue = engine_issue(tmp_path, kind="spark", spark_conf={key: "local[2]"})

    assert issue.key == "engine.spark_conf"
    assert issue.message.startswith(f"{key} cannot be set in spark_conf")
    assert f"set engine.{setting} instead" in issue.message


def test_spark_conf_other_settings_kept():
    config = EngineConfig(kind="spark", spark_conf={"spark.executor.memory": "4g"})

    assert config.spark_settings() == {"spark.executor.memory": "4g"}
