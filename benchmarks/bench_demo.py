"""`mvlp demo` end to end: its wall time on a fresh workdir, and the no-op re-run.

The re-run's baseline is the full run measured just before it; the full run's baseline is the
time budget its issue set (the demo must finish within it on 2 cores).
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchmarks._metrics import result

BUDGET_SECONDS = 8 * 60  # issue 20: every stage, both models the demo trains, under 8 minutes on 2 cores


def _demo(workdir: Path) -> float:
    t0 = time.perf_counter()
    subprocess.run(
        [sys.executable, "-m", "flows.cli", "demo", "--workdir", str(workdir)],
        check=True,
        capture_output=True,
    )
    return time.perf_counter() - t0


def run(runs: int = 1) -> list[dict]:
    walls, reruns = [], []
    for _ in range(runs):
        with tempfile.TemporaryDirectory(prefix="mvlp-bench-demo-") as tmp:
            walls.append(_demo(Path(tmp) / "demo"))
            reruns.append(_demo(Path(tmp) / "demo"))
    wall, rerun = sorted(walls)[len(walls) // 2], sorted(reruns)[len(reruns) // 2]
    return [
        result(
            "demo_wall",
            wall,
            "s",
            "time budget",
            BUDGET_SECONDS,
            runs,
            False,
            "fresh workdir, every stage of the demo spec, both models (UniGen 1,500 steps, "
            "the weakly-supervised mVLP 600 steps) pretrained and IGLUE-evaluated",
        ),
        result(
            "demo_rerun",
            rerun,
            "s",
            "the full demo run",
            wall,
            runs,
            False,
            "same workdir again: nothing to recompute",
        ),
    ]
