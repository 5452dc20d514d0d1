"""Shared fixtures: the repository root, the public data sets, and strict CI skips.

A test that needs something this machine may lack (a server, Java, a browser, a large
public data file) skips with a reason that starts with ``requires:``. With the
environment variable ``HEALTHSCORE_REQUIRE_ALL`` set to a non-empty value other than
``0``, those skips become failures, so CI cannot pass by skipping.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable, Generator, Iterator
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text

pytest_plugins = ["pytester"]

REPO_ROOT = Path(__file__).resolve().parents[1]
REQUIRE_ALL_VARIABLE = "HEALTHSCORE_REQUIRE_ALL"
SHARED_DATA_VARIABLE = "HEALTHSCORE_SHARED_DATA"
REQUIREMENT_PREFIX = "requires:"


@pytest.fixture(scope="session")
def repo_root() -> Path:
    """Root folder of the repository (the one holding pyproject.toml)."""
    return REPO_ROOT


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """Folder of the public data sets, which may not exist on this machine."""
    return shared_data_folder()


@pytest.fixture(scope="session")
def require_shared() -> Callable[[str], Path]:
    """Function that returns a path under the shared data folder or skips the test."""
    return require_shared_file


def shared_data_folder() -> Path:
    """Return ``$HEALTHSCORE_SHARED_DATA``, by default ``shared/data`` beside the repo.

    The folder holds public data sets that are too large to ship in the repository.
    """
    configured = os.environ.get(SHARED_DATA_VARIABLE)
    if configured:
        return Path(configured).expanduser()
    return REPO_ROOT.parent / "shared" / "data"


def require_shared_file(relative_path: str) -> Path:
    """Return a path under the shared data folder; skip the test when it is absent."""
    path = shared_data_folder() / relative_path
    if not path.exists():
        pytest.skip(
            f"{REQUIREMENT_PREFIX} shared data file {relative_path} "
            f"(set {SHARED_DATA_VARIABLE})"
        )
    return path


def require_all() -> bool:
    """Tell whether skips for missing requirements must fail the run."""
    return os.environ.get(REQUIRE_ALL_VARIABLE, "") not in ("", "0")


def requirement_skip_reason(report: pytest.CollectReport | pytest.TestReport) -> str:
    """Return the reason of a ``requires:`` skip, or an empty string otherwise."""
    if not report.skipped or hasattr(report, "wasxfail"):
        return ""
    # pytest stores a skip as (file, line, "Skipped: <reason>").
    if not isinstance(report.longrepr, tuple):
        return ""
    reason = str(report.longrepr[2]).removeprefix("Skipped: ")
    return reason if reason.startswith(REQUIREMENT_PREFIX) else ""


def fail_requirement_skip(report: pytest.CollectReport | pytest.TestReport) -> None:
    """Turn a ``requires:`` skip into a failure when HEALTHSCORE_REQUIRE_ALL is set."""
    reason = requirement_skip_reason(report)
    if not reason or not require_all():
        return
    report.outcome = "failed"
    report.longrepr = (
        f"{reason}\n{REQUIRE_ALL_VARIABLE} is set, so a missing requirement fails the "
        "test instead of skipping it; provide the requirement or unset the variable."
    )


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    report = yield
    fail_requirement_skip(report)
    return report


@pytest.hookimpl(wrapper=True)
def pytest_make_collect_report(
    collector: pytest.Collector,
) -> Generator[None, pytest.CollectReport, pytest.CollectReport]:
    report = yield
    fail_requirement_skip(report)
    return report


# PostgreSQL, for the operational store tests

POSTGRES_SERVER = "postgresql+psycopg://postgres@127.0.0.1:5432/test"


@pytest.fixture(scope="session")
def postgres_server() -> str:
    """URL of the test PostgreSQL server, or a skip when it cannot be used."""
    try:
        import psycopg
    except ImportError:
        pytest.skip(f"{REQUIREMENT_PREFIX} psycopg 3 (pip install 'psycopg[binary]')")
    try:
        psycopg.connect(
            "postgresql://postgres@127.0.0.1:5432/test", connect_timeout=3
        ).close()
    except psycopg.OperationalError as exc:
        pytest.skip(
            f"{REQUIREMENT_PREFIX} PostgreSQL at 127.0.0.1:5432, database test ({exc})"
        )
    return POSTGRES_SERVER


@pytest.fixture
def postgres_schema(postgres_server: str) -> Iterator[str]:
    """Name of a new, empty schema on the test server, dropped afterwards."""
    schema = f"healthscore_test_{uuid.uuid4().hex[:12]}"
    admin = create_engine(postgres_server)
    with admin.begin() as connection:
        connection.execute(text(f'CREATE SCHEMA "{schema}"'))
    try:
        yield schema
    finally:
        with admin.begin() as connection:
            connection.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
        admin.dispose()


@pytest.fixture
def postgres_url(postgres_server: str, postgres_schema: str) -> str:
    """URL of a new, empty schema on the test server, dropped afterwards."""
    return f"{postgres_server}?options=-csearch_path%3D{postgres_schema}"


@pytest.fixture(params=["sqlite", "postgresql"])
def store_url(request: pytest.FixtureRequest) -> str:
    """URL of an operational store: SQLite in the test folder, or PostgreSQL."""
    if request.param == "sqlite":
        return "sqlite:///state/state.db"
    return str(request.getfixturevalue("postgres_url"))
