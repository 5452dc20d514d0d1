"""Rebuilding the service's cached tables once while requests keep reading."""

from __future__ import annotations

import threading
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


def test_reader_gets_stale_value_during_rebuild(data):
    assert data._current("k", 1, lambda: "old") == "old"
    started = threading.Event()
    release = threading.Event()

    def compute() -> str:
        started.set()
        release.wait(10)
        return "new"

    results: list[str] = []
    builder = threading.Thread(
        target=lambda: results.append(data._current("k", 2, compute))
    )
    builder.start()
    assert started.wait(10)

    during = data._current("k", 2, lambda: "second build")

    release.set()
    builder.join(10)
    assert during == "old"
    assert results == ["new"]
    assert data._current("k", 2, lambda: "third build") == "new"


def test_new_snapshot_rebuilds_account_table(data):
    latest = DATES[-1]
    before = data.account_frame(latest)
    assert data.account_frame(latest) is before

    score(data.project, latest)

    after = data.account_frame(latest)
    assert after is not before
    assert after["score"].tolist() == before["score"].tolist()
