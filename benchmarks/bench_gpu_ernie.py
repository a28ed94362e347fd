"""Pretraining ERNIE-UniX² on a GPU: its base shape (ViT-B/16 at 224 px, trained; XLM-R base split
6 + 6 with a 6-layer decoder, its 250k vocabulary; random weights, `model.weights: random`), one
task a micro-step drawn uniformly as the paper does, micro-steps of 128 samples (the paper's 4,096
over 32 GPUs without accumulation; the recipe accumulates 8 micro-steps of 16, which a GPU runs
less efficiently: this measures the larger shape), bf16, in the plain loop: the loop's MFU (its family's `train_flops`)
against the ceiling on the same model, the ViT's forward alone, and the fraction of a step the
device is busy (benchmarks/gpu_ceiling.py).

Trains on the synthetic world's stage outputs (benchmarks/gpu_data.py). Needs CUDA
(`benchmarks/gpu_device.sh ernie` on a lent machine); `measure` runs the same path on CPU at a
small size for the test."""

from __future__ import annotations

import tempfile
from pathlib import Path

from benchmarks import gpu_family
from benchmarks._metrics import result
from benchmarks.bench_gpu_train import available, one_worker_run

ROOT = Path(__file__).resolve().parent.parent
SPEC = ROOT / "data_specs" / "pipelines" / "ernie-unix2.yaml"
STEPS, LOG_EVERY = 48, 8  # one task a step: more steps than the other benches, for every task's share
PER_GPU = 128  # 4,096 over 32 GPUs

__all__ = ["available", "measure", "run"]


def measure(
    workdir: Path,
    device: str = "cuda",
    size: str = "base",
    batch: int = PER_GPU,
    steps: int = STEPS,
    log_every: int = LOG_EVERY,
    report: Path | None = None,
) -> dict[str, float]:
    """Train `steps` steps on `device` in this process, then measure its ceiling
    (benchmarks/gpu_family.py)."""
    overrides = [
        *one_worker_run(size, device, steps, log_every, True, "gpu-ernie"),
        f"model.batch={batch}",
        "pretrain.grad_accum=1",
    ]
    return gpu_family.measure(
        workdir, SPEC, overrides, 4 * batch, 2 * batch, device, batch, report, f"ernie {size}"
    )


def run(runs: int = 1) -> list[dict]:
    import torch

    from benchmarks import gpu_ceiling

    gpu = torch.cuda.get_device_name(0)
    with tempfile.TemporaryDirectory() as tmp:
        f = measure(Path(tmp), report=gpu_ceiling.PROFILES / "gpu_ernie.txt")
    note = (
        f"{gpu}; base-shaped ERNIE-UniX² (ViT-B/16 at 224 px, XLM-R base 6 + 6, a 6-layer decoder),"
        f" random weights, micro-steps of {PER_GPU} samples of one task drawn uniformly, bf16, plain"
        f" loop, {STEPS} steps, the first {LOG_EVERY} dropped; {f['samples_per_second']:.0f} samples/s;"
        f" ViT forward alone {f['vit_seconds'] * 1e3:.0f} ms a batch of {PER_GPU}; busy = profiler"
        " kernel time / wall time over 5 training steps"
    )
    return [
        result(
            "gpu_ernie_train_mfu", f["mfu"], "MFU", "its ViT's forward alone", f["vit_mfu"], 1, True, note
        ),
        result("gpu_ernie_step_busy_fraction", f["busy"], "of wall time", "always busy", 1.0, 1, True, note),
    ]


if __name__ == "__main__":
    print(run(1))
