"""Rescore notices: each is written whole and synced to disk before it is read."""

from __future__ import annotations

import json
import os
import stat
from datetime import UTC, date, datetime

import pytest

from healthscore.service.handoff import Notice, take_notices, write_notice

MOMENT = datetime(2026, 3, 1, 9, 30, tzinfo=UTC)


def sample_notice() -> Notice:
    return Notice(
        queued_at=MOMENT,
        accounts=["a2", "a1"],
        rollups={"usage": [date(2026, 2, 28), date(2026, 3, 1)]},
    )


def expected_body() -> dict:
    return {
        "queued_at": "2026-03-01T09:30:00+00:00",
        "accounts": ["a2", "a1"],
        "rollups": {"usage": ["2026-02-28", "2026-03-01"]},
    }


def test_notice_complete_and_no_temporary(tmp_path):
    folder = tmp_path / "notices"

    target = write_notice(folder, sample_notice())

    assert target.parent == folder
    assert os.listdir(folder) == [target.name]
    assert json.loads(target.read_text(encoding="utf-8")) == expected_body()
    (notice,) = take_notices(folder)
    assert notice.accounts == ["a2", "a1"]
    assert notice.rollups == {"usage": [date(2026, 2, 28), date(2026, 3, 1)]}


def test_notice_file_and_folder_fsynced(tmp_path, monkeypatch):
    folder = tmp_path / "notices"
    folder.mkdir()
    synced: list[dict] = []
    real_fsync = os.fsync

    def recording_fsync(descriptor: int) -> None:
        info = os.fstat(descriptor)
        synced.append(
            {
                "inode": info.st_ino,
                "is_folder": stat.S_ISDIR(info.st_mode),
                "size": info.st_size,
                "names": sorted(os.listdir(folder)),
            }
        )
        real_fsync(descriptor)

    monkeypatch.setattr(os, "fsync", recording_fsync)

    target = write_notice(folder, sample_notice())

    assert len(synced) == 2
    file_sync, folder_sync = synced
    # The file is synced under its temporary name, with its whole content.
    assert file_sync["is_folder"] is False
    assert file_sync["inode"] == target.stat().st_ino
    assert file_sync["size"] == target.stat().st_size
    assert file_sync["names"] == [f".{target.name}.tmp"]
    # The folder is synced after the rename.
    assert folder_sync["is_folder"] is True
    assert folder_sync["inode"] == folder.stat().st_ino
    assert folder_sync["names"] == [target.name]


def test_failed_fsync_leaves_no_file(tmp_path, monkeypatch):
    folder = tmp_path / "notices"

    def failing_fsync(descriptor: int) -> None:
        raise OSError(5, "Input/output error")

    monkeypatch.setattr(os, "fsync", failing_fsync)

    with pytest.raises(OSError, match="Input/output error"):
        write_notice(folder, sample_notice())

    assert os.listdir(folder) == []
    assert take_notices(folder) == []
