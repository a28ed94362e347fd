"""Pretraining the weakly-supervised mVLP on a GPU: its base shape (ViT-B/16 at 256 px, frozen;
XLM-R base split 6 + 6, its 250k vocabulary; random weights, `model.weights: random`), one step
holding the paper's per-GPU share of its three streams (§4.1: 512 image–caption pairs, 2,048
translation pairs and 2,048 monolingual sentences over 8 GPUs), bf16, in the plain loop: the
loop's MFU (its family's `train_flops`) against the ceiling on the same model, the frozen ViT's
forward alone, and the fraction of a step the device is busy (benchmarks/gpu_ceiling.py).

Trains on the synthetic world's stage outputs (benchmarks/gpu_data.py). Needs CUDA
(`benchmarks/gpu_device.sh wsmvlp` on a lent machine); `measure` runs the same path on CPU at a
small size for the test."""

from __future__ import annotations

import tempfile
from pathlib import Path

from benchmarks import gpu_family
from benchmarks._metrics import result
from benchmarks.bench_gpu_train import available, one_worker_run

ROOT = Path(__file__).resolve().parent.parent
SPEC = ROOT / "data_specs" / "pipelines" / "weakly-supervised.yaml"
STEPS, LOG_EVERY = 24, 6
PER_GPU = {"image": 64, "parallel": 256, "mono": 256}  # the paper's step over 8 GPUs, per GPU

__all__ = ["available", "measure", "run"]


def _overrides(size: str, batch: dict[str, int], device: str, steps: int, log_every: int) -> list[str]:
    streams = [f"model.batch.{stream}={n}" for stream, n in batch.items()]
    return [*one_worker_run(size, device, steps, log_every, True, "gpu-wsmvlp"), *streams]


def measure(
    workdir: Path,
    device: str = "cuda",
    size: str = "base",
    batch: dict[str, int] | None = None,
    steps: int = STEPS,
    log_every: int = LOG_EVERY,
    report: Path | None = None,
) -> dict[str, float]:
    """Train `steps` steps on `device` in this process, then measure its ceiling
    (benchmarks/gpu_family.py)."""
    batch = batch or PER_GPU
    overrides = _overrides(size, batch, device, steps, log_every)
    texts = 2 * max(batch["parallel"], batch["mono"])
    label = f"wsmvlp {size}"
    return gpu_family.measure(
        workdir, SPEC, overrides, 4 * batch["image"], texts, device, batch["image"], report, label
    )


def run(runs: int = 1) -> list[dict]:
    import torch

    from benchmarks import gpu_ceiling

    gpu = torch.cuda.get_device_name(0)
    with tempfile.TemporaryDirectory() as tmp:
        f = measure(Path(tmp), report=gpu_ceiling.PROFILES / "gpu_wsmvlp.txt")
    note = (
        f"{gpu}; base-shaped weakly-supervised mVLP (ViT-B/16 at 256 px frozen, XLM-R base 6 + 6),"
        f" random weights, a step of {PER_GPU['image']} image-caption pairs + {PER_GPU['parallel']}"
        f" translation pairs + {PER_GPU['mono']} sentences, bf16, plain loop, {STEPS} steps, the first"
        f" {LOG_EVERY} dropped; {f['samples_per_second']:.0f} samples/s; frozen ViT forward alone"
        f" {f['vit_seconds'] * 1e3:.0f} ms a batch of {PER_GPU['image']}; busy = profiler kernel time"
        " / wall time over 5 training steps"
    )
    return [
        result(
            "gpu_wsmvlp_train_mfu",
            f["mfu"],
            "MFU",
            "its frozen ViT's forward alone",
            f["vit_mfu"],
            1,
            True,
            note,
        ),
        result("gpu_wsmvlp_step_busy_fraction", f["busy"], "of wall time", "always busy", 1.0, 1, True, note),
    ]


if __name__ == "__main__":
    print(run(1))
