"""SIGKILL the pipeline inside a seeded stage at a seeded point, re-run it, compare with the
uninterrupted reference (`CHAOS_SEEDS`, default 20, sets how many seeds)."""

from __future__ import annotations

import os
import random
import shutil
import signal
from pathlib import Path

import chaos_harness as harness
import pytest

from mvlp_core import contract

pytestmark = pytest.mark.chaos
SEEDS = range(int(os.environ.get("CHAOS_SEEDS", "20")))


@pytest.mark.parametrize("seed", SEEDS)
def test_kill_inside_a_stage_then_resume(seed: int, reference: Path, live: Path, chaos_base: Path) -> None:
    stages = list(harness.CHAOS)
    stage = stages[seed % len(stages)]  # every stage gets seeds; the point inside it is random
    rng = random.Random(seed)
    point = harness.CHAOS[stage].kill(stage, rng, contract.Manifest.load(reference / stage))
    harness.prepare(live, reference, stage)
    log = chaos_base / f"seed-{seed}.log"
    try:
        proc = harness.start_demo(live, log, {contract.CHAOS_ENV: point.env} if point.env else {})
        if point.ready:
            harness.wait_for(lambda: point.ready(live), proc, log, point.label)
            harness.kill_group(proc)
        rc = proc.wait(timeout=600)
        harness.kill_group(proc)
        assert rc == -signal.SIGKILL, f"{point.label}: run was not killed (rc {rc}):\n{harness.log_tail(log)}"
        assert contract.Manifest.load(live / stage) is None, (
            f"{point.label}: {stage} completed before the kill"
        )
        before = harness.unit_records(live)
        resumed_from = max(harness.checkpoints(live), default=None)  # pretrain must resume here, not earlier
        harness.finish(harness.start_demo(live, log), log)
        harness.check_resumed(live, reference, stage, before, resumed_from)
    finally:  # keep each seed's workdir for inspection
        if live.exists():
            shutil.move(live, chaos_base / f"seed-{seed}-{point.label.replace(':', '_')}")
