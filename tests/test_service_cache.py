"""Rebuilding the service's cached tables once, for every request that needs them."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from healthscore.pipeline import score
from healthscore.service.data import ProjectData
from service_project import DATES, service_project


@pytest.fixture
def data(tmp_path: Path) -> ProjectData:
    project = service_project(tmp_path / "project", f"sqlite:///{tmp_path}/state.db")
    return ProjectData(project)


def test_waiting_readers_share_one_build(data):
    started = threading.Event()
    release = threading.Event()
    builds: list[int] = []

    def compute() -> str:
        builds.append(1)
        started.set()
        release.wait(10)
        return "built"

    results: list[str] = []
    readers = [
        threading.Thread(target=lambda: results.append(data._current("k", 1, compute)))
        for _ in range(4)
    ]
    readers[0].start()
    assert started.wait(10)
    for reader in readers[1:]:
        reader.start()
    release.set()
    for reader in readers:
        reader.join(10)

    assert results == ["built"] * 4
    assert len(builds) == 1


def test_reader_during_rebuild_gets_previous(data):
    assert data._current("k", 1, lambda: "old") == "old"
    started = threading.Event()
    release = threading.Event()
    builds: list[int] = []

    def compute() -> str:
        builds.append(1)
        started.set()
        release.wait(10)
        return "new"

    results: list[str] = []
    first = threading.Thread(
        target=lambda: results.append(data._current("k", 2, compute))
    )
    first.start()
    assert started.wait(10)
    # A read while another rebuilds gets the value from before the change.
    during = data._current("k", 2, compute)
    release.set()
    first.join(10)

    assert during == "old"
    assert results == ["new"]
    assert data._current("k", 2, compute) == "new"
    assert builds == [1]


def test_failed_rebuild_keeps_value_and_retries(data, caplog):
    assert data._current("k", 1, lambda: "old") == "old"

    def broken() -> str:
        raise OSError("disk went away")

    with caplog.at_level(logging.ERROR, "healthscore.service.data"):
        assert data._current("k", 2, broken) == "old"
    assert "disk went away" in caplog.text
    assert data._current("k", 2, lambda: "new") == "new"


def test_failed_first_build_raises(data):
    def broken() -> str:
        raise OSError("disk went away")

    with pytest.raises(OSError, match="disk went away"):
        data._current("k", 1, broken)


def test_rebuild_reads_nested_values_fresh(data):
    assert data._current("inner", 1, lambda: "inner old") == "inner old"
    assert data._current("outer", 1, lambda: "outer old") == "outer old"

    def outer() -> str:
        return "outer from " + data._current("inner", 2, lambda: "inner new")

    assert data._current("outer", 2, outer) == "outer from inner new"


def test_nested_failure_not_built_from_old(data, caplog):
    assert data._current("inner", 1, lambda: "inner old") == "inner old"
    assert data._current("outer", 1, lambda: "outer old") == "outer old"

    def broken() -> str:
        raise OSError("disk went away")

    def outer() -> str:
        return "outer from " + data._current("inner", 2, broken)

    with caplog.at_level(logging.ERROR, "healthscore.service.data"):
        assert data._current("outer", 2, outer) == "outer old"
    # The failed build cached nothing, so the next read builds both anew.
    rebuilt = data._current(
        "outer", 2, lambda: "outer from " + data._current("inner", 2, lambda: "new")
    )
    assert rebuilt == "outer from new"


def test_new_snapshot_rebuilds_account_table(data):
    latest = DATES[-1]
    before = data.account_frame(latest)
    assert data.account_frame(latest) is before

    score(data.project, latest)

    # The first read after the change gets the rebuilt table.
    after = data.account_frame(latest)
    assert after is not before
    assert data.account_frame(latest) is after
    assert after["score"].tolist() == before["score"].tolist()


def wait_for(condition: Callable[[], bool], seconds: float = 10.0) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.01)
    return condition()
