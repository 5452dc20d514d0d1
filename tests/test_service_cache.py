"""Rebuilding the service's cached tables once while requests keep reading."""

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


def test_stale_value_returned_while_rebuilding(data):
    assert data._current("k", 1, lambda: "old") == "old"
    started = threading.Event()
    release = threading.Event()
    builds: list[int] = []

    def compute() -> str:
        builds.append(1)
        started.set()
        release.wait(10)
        return "new"

    first = data._current("k", 2, compute)
    assert started.wait(10)
    during = data._current("k", 2, compute)
    release.set()

    assert first == "old"
    assert during == "old"
    assert wait_for(lambda: data._current("k", 2, compute) == "new")
    assert builds == [1]


def test_failed_rebuild_keeps_value_and_retries(data, caplog):
    assert data._current("k", 1, lambda: "old") == "old"

    def broken() -> str:
        raise OSError("disk went away")

    with caplog.at_level(logging.ERROR, "healthscore.service.data"):
        assert data._current("k", 2, broken) == "old"
        assert wait_for(lambda: "disk went away" in caplog.text)
    assert wait_for(lambda: data._current("k", 2, lambda: "new") == "new")


def test_rebuild_reads_nested_values_fresh(data):
    assert data._current("inner", 1, lambda: "inner old") == "inner old"
    assert data._current("outer", 1, lambda: "outer old") == "outer old"

    def outer() -> str:
        return "outer from " + data._current("inner", 2, lambda: "inner new")

    assert data._current("outer", 2, outer) == "outer old"
    assert wait_for(lambda: data._current("outer", 2, outer) == "outer from inner new")


def test_new_snapshot_rebuilds_account_table(data):
    latest = DATES[-1]
    before = data.account_frame(latest)
    assert data.account_frame(latest) is before

    score(data.project, latest)

    # The first read after the change starts the rebuild and gets the old table.
    assert data.account_frame(latest) is before
    assert wait_for(lambda: data.account_frame(latest) is not before)
    after = data.account_frame(latest)
    assert after["score"].tolist() == before["score"].tolist()


def wait_for(condition: Callable[[], bool], seconds: float = 10.0) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.01)
    return condition()
