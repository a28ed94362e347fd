"""SIGKILL the pipeline inside a seeded stage at a seeded point, re-run it, compare with the
uninterrupted reference (`CHAOS_SEEDS`, default 20, sets how many seeds)."""

from __future__ import annotations

import os
import random
import shutil
import signal
from pathlib import Path

import pytest
from chaos_harness import (
    CHAOS,
    check_resumed,
    checkpoints,
    finish,
    kill_group,
    log_tail,
    prepare,
    start_demo,
    unit_records,
    wait_for,
)

from mvlp_core import contract

pytestmark = pytest.mark.chaos
SEEDS = range(int(os.environ.get("CHAOS_SEEDS", "20")))


@pytest.mark.parametrize("seed", SEEDS)
def test_kill_inside_a_stage_then_resume(seed: int, reference: Path, live: Path, chaos_base: Path) -> None:
    stages = list(CHAOS)
    stage = stages[seed % len(stages)]  # every stage gets seeds; the point inside it is random
    rng = random.Random(seed)
    point = CHAOS[stage].kill(stage, rng, contract.Manifest.load(reference / stage))
    prepare(live, reference, stage)
    log = chaos_base / f"seed-{seed}.log"
    try:
        proc = start_demo(live, log, {contract.CHAOS_ENV: point.env} if point.env else {})
        if point.ready:
            wait_for(lambda: point.ready(live), proc, log, point.label)
            kill_group(proc)
        rc = proc.wait(timeout=600)
        kill_group(proc)
        assert rc == -signal.SIGKILL, f"{point.label}: run was not killed (rc {rc}):\n{log_tail(log)}"
        assert contract.Manifest.load(live / stage) is None, (
            f"{point.label}: {stage} completed before the kill"
        )
        before = unit_records(live)
        resumed_from = max(checkpoints(live), default=None)  # pretrain must resume here, not earlier
        finish(start_demo(live, log), log)
        check_resumed(live, reference, stage, before, resumed_from)
    finally:  # keep each seed's workdir for inspection
        if live.exists():
            shutil.move(live, chaos_base / f"seed-{seed}-{point.label.replace(':', '_')}")
