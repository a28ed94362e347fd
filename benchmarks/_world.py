"""Shared set-up for benchmarks: a synthetic-world run prepared stage by stage, without Prefect."""

from __future__ import annotations

import contextlib
import json
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

from mvlp_core import pipeline
from mvlp_core.imageserver import ImageServer
from mvlp_core.spec import PipelineSpec, load_spec
from mvlp_core.synth.world import ensure_world


def median_seconds(fn: Callable[[], object], runs: int) -> float:
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


@contextlib.contextmanager
def served_run(workdir: Path, samples: int, overrides: list[str] = ()) -> Iterator[PipelineSpec]:
    """The demo spec on a world of `samples` images, served on loopback for the download stage."""
    ensure_world(workdir / "world", samples, 0)
    with ImageServer(workdir / "world") as server:
        mirror = json.dumps({"http://images.synthetic.mvlp/": server.url})
        yield load_spec(
            "demo",
            [f"dataset.samples={samples}", f"download.mirrors={mirror}", *overrides],
            workdir,
        )


def demo_data(workdir: Path) -> None:
    """The demo's shards and text shards in `workdir`, made as a user makes them (`mvlp demo --to
    text-shard` in a fresh interpreter): what the pretraining benchmarks train on."""
    subprocess.run(
        [sys.executable, "-m", "flows.cli", "demo", "--workdir", str(workdir), "--to", "text-shard"],
        check=True,
        capture_output=True,
    )


def run_stages(spec: PipelineSpec, names: list[str]) -> None:
    for name in names:
        pipeline.run_stage(spec, name)
