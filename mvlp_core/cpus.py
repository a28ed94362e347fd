"""How many CPUs this process may use: its CPU affinity, and in a container its cgroup CPU quota
(a Kubernetes pod's CPU limit), which `os.cpu_count()` ignores: a pod limited to 4 CPUs on a
64-core node that started 64 workers would run them at a sixteenth of their speed each."""

from __future__ import annotations

import math
import os
from pathlib import Path

CGROUP = Path("/sys/fs/cgroup")


def available_cpus(cgroup: Path = CGROUP) -> int:
    """CPUs this process may run on, rounded up to whole CPUs where a cgroup quota is smaller."""
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    quota = cgroup_quota(cgroup)
    return max(1, min(cpus, math.ceil(quota))) if quota else cpus


def cgroup_quota(cgroup: Path = CGROUP) -> float | None:
    """The cgroup's CPU quota in CPUs (cgroup v2's `cpu.max`, v1's `cpu.cfs_quota_us` over
    `cpu.cfs_period_us`); None where there is none or it cannot be read."""
    try:
        v2 = cgroup / "cpu.max"
        if v2.is_file():
            quota, period = v2.read_text().split()[:2]
            return None if quota == "max" else int(quota) / int(period)
        v1 = cgroup / "cpu"
        quota_us = int((v1 / "cpu.cfs_quota_us").read_text())
        period_us = int((v1 / "cpu.cfs_period_us").read_text())
        return quota_us / period_us if quota_us > 0 and period_us > 0 else None
    except (OSError, ValueError):
        return None
