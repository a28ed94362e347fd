"""Ray Train's snapshot of a run's checkpoints is removed before a relaunch where the controller
would die on it: torn by a kill, or naming a checkpoint folder that is gone (deleted, as the
error for a checkpoint that cannot be loaded tells the user to). A whole one is kept."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

pytest.importorskip("ray")

from ray_jobs.pretrain import SNAPSHOT, drop_unusable_snapshot  # noqa: E402


def _run(tmp_path: Path, on_disk: list[str], named: list[str]) -> Path:
    for name in on_disk:
        (tmp_path / name).mkdir()
    results = [{"checkpoint_dir_name": n, "metrics": {}} for n in named]
    (tmp_path / SNAPSHOT).write_text(json.dumps({"checkpoint_results": results}), encoding="utf-8")
    return tmp_path / SNAPSHOT


def test_a_snapshot_naming_only_folders_on_disk_is_kept(tmp_path: Path) -> None:
    path = _run(
        tmp_path,
        ["checkpoint_00000003", "checkpoint_00000006"],
        ["checkpoint_00000003", "checkpoint_00000006"],
    )
    drop_unusable_snapshot(tmp_path)
    assert path.exists()


def test_a_snapshot_naming_a_deleted_checkpoint_is_removed(tmp_path: Path, caplog) -> None:
    path = _run(tmp_path, ["checkpoint_00000003"], ["checkpoint_00000003", "checkpoint_00000006"])
    drop_unusable_snapshot(tmp_path)
    assert not path.exists() and "checkpoint_00000006" in caplog.text


def test_a_torn_snapshot_is_removed_and_none_is_nothing_to_do(tmp_path: Path) -> None:
    path = _run(tmp_path, [], [])
    path.write_text('{"checkpoint_res', encoding="utf-8")
    drop_unusable_snapshot(tmp_path)
    assert not path.exists()
    drop_unusable_snapshot(tmp_path)  # no snapshot at all: nothing to do
