"""Training throughput: Ray Train (TorchTrainer, 2 CPU workers, DDP) samples/s next to a plain
single-process loop, same tiny UniGen, same per-step batch per worker, same loader, both through
mvlp_core's `loop.train` (so the difference is Ray Train + DDP, not the loop).

Measured from the loop's own samples/s (logged every step, warm-up steps dropped), so Ray's
start-up and worker-group creation are not counted. The base-shaped bf16 run with MFU needs a
GPU: see benchmarks/README.md."""

from __future__ import annotations

import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

from benchmarks._metrics import result, steady

ROOT = Path(__file__).resolve().parent.parent
STEPS, WARM = 12, 2
SPEC = [
    "model.size=tiny",
    "pretrain.batch_size=16",
    "pretrain.log_every=1",
    f"pretrain.checkpoint_every={STEPS}",
    f"pretrain.max_steps={STEPS}",
    "pretrain.warmup_steps=2",
]


def run(runs: int = 3) -> list[dict]:
    import ray

    sys.path.insert(0, str(ROOT / "tests" / "integration"))
    from test_pretrain_ray import write_shard_stage

    from mvlp_core.spec import load_spec
    from mvlp_core.stages.pretrain import train_in_process
    from mvlp_core.train.job import prepare
    from ray_jobs.pretrain import train_with_ray

    os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))
    ray.init(num_cpus=os.cpu_count() + 1, include_dashboard=False, log_to_driver=False)
    plain, distributed = [], []
    try:
        for _ in range(runs):
            with tempfile.TemporaryDirectory() as tmp:
                wd = Path(tmp)
                write_shard_stage(wd / "shard", 256)
                spec = load_spec(ROOT / "data_specs/pipelines/demo.yaml", [*SPEC, "pretrain.workers=2"], wd)
                job = prepare(spec, {"shard": wd / "shard"}, wd / "pretrain")
                train_with_ray(job)
                distributed.append(
                    steady(job.metrics_path, ("samples_per_second",), WARM)["samples_per_second"]
                )
                job.metrics_path.unlink()
                job.spec.pretrain.workers = 1
                train_in_process(job)
                plain.append(steady(job.metrics_path, ("samples_per_second",), WARM)["samples_per_second"])
    finally:
        ray.shutdown()
    v, b = statistics.median(distributed), statistics.median(plain)
    baseline = "plain single-process loop, same model and per-worker batch"
    note = (
        f"tiny UniGen (hidden 64), batch 16 per worker, {STEPS} steps, first {WARM} dropped; "
        f"{os.cpu_count()} cores: Ray runs 1 thread per worker, the plain loop uses torch's default threads"
    )
    return [result("train_ray_vs_plain_loop", v, "samples/s", baseline, b, runs, True, note)]


if __name__ == "__main__":
    t0 = time.time()
    print(run(1), f"{time.time() - t0:.0f}s")
