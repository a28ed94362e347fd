"""available_cpus: the affinity, lowered by a cgroup CPU quota (a pod's CPU limit), rounded up."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from mvlp_core.cpus import available_cpus, cgroup_quota

AFFINITY = len(os.sched_getaffinity(0))


def _v2(root: Path, text: str) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    (root / "cpu.max").write_text(text)
    return root


def _v1(root: Path, quota: int, period: int) -> Path:
    (root / "cpu").mkdir(parents=True)
    (root / "cpu" / "cpu.cfs_quota_us").write_text(f"{quota}\n")
    (root / "cpu" / "cpu.cfs_period_us").write_text(f"{period}\n")
    return root


@pytest.mark.parametrize(
    ("text", "quota"), [("max 100000\n", None), ("50000 100000\n", 0.5), ("150000 100000\n", 1.5)]
)
def test_cgroup_v2_quota(tmp_path: Path, text: str, quota: float | None) -> None:
    root = _v2(tmp_path, text)
    assert cgroup_quota(root) == quota
    assert available_cpus(root) == (AFFINITY if quota is None else min(AFFINITY, 2 if quota > 1 else 1))


def test_cgroup_v1_quota_and_none(tmp_path: Path) -> None:
    assert cgroup_quota(_v1(tmp_path / "a", 100000, 100000)) == 1.0
    assert available_cpus(tmp_path / "a") == 1
    assert cgroup_quota(_v1(tmp_path / "b", -1, 100000)) is None  # v1's "no limit"
    assert cgroup_quota(tmp_path / "nothing") is None and available_cpus(tmp_path / "nothing") == AFFINITY
    assert cgroup_quota(_v2(tmp_path / "c", "garbage")) is None  # unreadable: no limit assumed
