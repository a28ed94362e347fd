"""torch.compile of the towers (`pretrain.compile`, inductor) against the same model eager: the
base-shaped UniGen of `bench_gpu_train`, bf16, on one GPU, in the plain loop (the model's step is
what differs; Ray Train would run the same loop around it).

Samples/s and MFU come from the loop's own metrics with the first window dropped: the compiled
run's first steps wait for inductor, and dynamo recompiles once more when a second batch shape
makes it treat the batch dimension as dynamic, so the run is longer than bench_gpu_train's. Needs
CUDA (`benchmarks/gpu_device.sh compile` on a lent machine, after `run`)."""

from __future__ import annotations

import shutil
import tempfile
import time
from pathlib import Path

from benchmarks._metrics import result, steady
from benchmarks.bench_gpu_train import BATCH, SPEC, _overrides, available
from benchmarks.gpu_data import write_shard_stage

STEPS, LOG_EVERY = 36, 6
VARIANTS = {"eager": [], "compiled": ["pretrain.compile=true"]}

__all__ = ["available", "run"]


def run(runs: int = 1) -> list[dict]:
    import torch

    from mvlp_core.spec import load_spec
    from mvlp_core.stages.pretrain import train_in_process
    from mvlp_core.train.job import prepare

    gpu = torch.cuda.get_device_name(0)
    figures: dict[str, dict[str, float]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        wd = Path(tmp)
        write_shard_stage(wd / "shard", 4 * BATCH)
        for name, extra in VARIANTS.items():
            longer = [f"pretrain.max_steps={STEPS}", f"pretrain.log_every={LOG_EVERY}"]
            spec = load_spec(SPEC, [*_overrides(True, f"compile-{name}"), *longer, *extra], wd)
            job = prepare(spec, {"shard": wd / "shard"}, wd / "pretrain")  # the init is built once
            job.metrics_path.unlink(missing_ok=True)
            t0 = time.perf_counter()
            train_in_process(job, device="cuda")
            figures[name] = steady(job.metrics_path, ("samples_per_second", "mfu"), 1)
            print(f"{name}: {figures[name]} ({time.perf_counter() - t0:.0f} s)", flush=True)
            shutil.rmtree(wd / "pretrain" / "local", ignore_errors=True)  # next run starts fresh
    eager, compiled = figures["eager"], figures["compiled"]
    return [
        result(
            "gpu_train_compiled_vs_eager",
            compiled["samples_per_second"],
            "samples/s",
            "the same model eager",
            eager["samples_per_second"],
            runs,
            True,
            f"{gpu}; base-shaped UniGen, random weights, 224 px, batch {BATCH}, bf16, plain loop;"
            f" pretrain.compile (inductor, mode default) on its four towers; {STEPS} steps, the first"
            f" {LOG_EVERY} dropped; MFU compiled {compiled['mfu']:.1%}, eager {eager['mfu']:.1%}",
        )
    ]


if __name__ == "__main__":
    print(run(1))
