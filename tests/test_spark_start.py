"""Spark masters: the check of `engine.master` and the errors of a failed start.

A master that Spark rejects only once its JVM runs must be rejected by the
configuration check, and a start that fails in the JVM must show the Java
exception's message instead of Py4J's wrapper. The JVM tests start Spark in a
child process, so that no session of other test modules is reused, and skip
where Java 17 or PySpark is missing.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from healthscore.config import ConfigError

# `pytestmark` gives these tests the warning filters of the other Spark tests.
from test_spark import (  # noqa: F401
    SPARK_MISSING,
    pytestmark,
    spark_master_project,
)


@pytest.mark.parametrize(
    ("master", "message"),
    [
        ("local[0]", "invalid Spark master 'local[0]': it runs no threads"),
        ("local[00,2]", "invalid Spark master 'local[00,2]': it runs no threads"),
        (
            "spark://127.0.0.1",
            "invalid Spark master 'spark://127.0.0.1': 127.0.0.1 has no port",
        ),
        (
            "spark://127.0.0.1:7077,127.0.0.2",
            "invalid Spark master 'spark://127.0.0.1:7077,127.0.0.2': 127.0.0.2 has "
            "no port",
        ),
        ("spark://", "invalid Spark master 'spark://'; use local[*], local[N]"),
        ("spark://:7077", "invalid Spark master 'spark://:7077'; use local[*]"),
        ("local-cluster[0,1,1024]", "invalid Spark master 'local-cluster[0,1,1024]'"),
    ],
)
def test_invalid_master_rejected(tmp_path: Path, master: str, message: str) -> None:
    with pytest.raises(ConfigError) as error:
        spark_master_project(tmp_path, master)
    text = " ".join(str(error.value).split())
    assert "engine.master" in text
    assert message in text


@pytest.mark.parametrize(
    "master",
    [
        "local",
        "local[1]",
        "local[*]",
        "local[12,3]",
        "local[*,2]",
        "local-cluster[2,1,1024]",
        "spark://127.0.0.1:7077",
        "spark://127.0.0.1:7077,127.0.0.2:7077",
        "spark://[::1]:7077",
        "yarn",
        "k8s://https://127.0.0.1:6443",
    ],
)
def test_valid_master_accepted(tmp_path: Path, master: str) -> None:
    project = spark_master_project(tmp_path, master)
    assert project.config.engine.master == master


#: Program that starts Spark with the project of argv[1] and each master of
#: argv[2:], which the configuration check would reject, and prints each SourceError.
START_PROGRAM = textwrap.dedent(
    """
    import sys
    from healthscore.config import Project, load_project
    from healthscore.engine import start_spark_session
    from healthscore.sources import SourceError

    project = load_project(sys.argv[1])
    for master in sys.argv[2:]:
        engine = project.config.engine.model_copy(update={"master": master})
        config = project.config.model_copy(update={"engine": engine})
        try:
            start_spark_session(Project(root=project.root, config=config))
        except SourceError as exc:
            print("error:", exc)
        else:
            print("started")
    """
)


def run_start(project_root: Path, *masters: str, **environment: str) -> str:
    if shutil.which("java") is None or importlib.util.find_spec("pyspark") is None:
        pytest.skip(SPARK_MISSING)
    result = subprocess.run(
        [sys.executable, "-c", START_PROGRAM, str(project_root), *masters],
        env={**os.environ, "SPARK_LOCAL_IP": "127.0.0.1", **environment},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    return result.stdout


def test_start_failure_shows_java_message(tmp_path: Path) -> None:
    project = spark_master_project(tmp_path, "local[1]")
    output = run_start(project.root, "local[0]", "spark://127.0.0.1")
    errors = output.splitlines()
    assert len(errors) == 2, output
    assert errors[0].startswith(
        "error: Spark could not start with engine.master 'local[0]': Asked to run "
        "locally with 0 threads."
    )
    assert errors[1].startswith(
        "error: Spark could not start with engine.master 'spark://127.0.0.1': "
        "Invalid master URL: spark://127.0.0.1."
    )
    assert "An error occurred while calling" not in output


def test_yarn_without_hadoop_conf_named(tmp_path: Path) -> None:
    project = spark_master_project(tmp_path, "local[1]")
    if "SPARK_HOME" in os.environ or "SPARK_CONF_DIR" in os.environ:
        pytest.skip("a Spark installation's spark-env.sh may set HADOOP_CONF_DIR")
    with pytest.MonkeyPatch.context() as patch:
        for key in ("HADOOP_CONF_DIR", "YARN_CONF_DIR"):
            patch.delenv(key, raising=False)
        output = run_start(project.root, "yarn")
    assert output.startswith(
        "error: Spark could not start with engine.master 'yarn': Java exited before "
        "Spark started. With master yarn, Spark needs HADOOP_CONF_DIR or "
        "YARN_CONF_DIR"
    ), output
    assert "JAVA_GATEWAY_EXITED" not in output
