"""What the per-family GPU benches share (bench_gpu_wsmvlp, bench_gpu_ernie): train a recipe's
base shape with random weights in the plain loop on the synthetic world's stage outputs
(benchmarks/gpu_data.py), then measure the ceiling on the same model and data: its ViT's forward
alone and the fraction of a step the device is busy (benchmarks/gpu_ceiling.py)."""

from __future__ import annotations

import time
from pathlib import Path

from benchmarks._metrics import steady
from benchmarks.gpu_data import write_shard_stage, write_text_shard_stage


def measure(
    workdir: Path,
    spec_path: Path,
    overrides: list[str],
    images: int,
    texts: int,
    device: str,
    vit_batch: int,
    report: Path | None,
    label: str,
) -> dict[str, float]:
    """Write `images` image records and `texts` text records a stream, train the spec (with
    `overrides`) on `device` in this process, then measure the ceiling (built again from the job's
    initial weights): the loop's steady samples/s (and MFU where the device's peak is known), the
    ViT's forward of `vit_batch` images alone (seconds, MFU) and the busy fraction of a step (its
    profile to `report`)."""
    import torch

    from benchmarks import gpu_ceiling
    from mvlp_core.spec import load_spec
    from mvlp_core.stages.pretrain import train_in_process
    from mvlp_core.train.data import loader
    from mvlp_core.train.job import build, prepare

    write_shard_stage(workdir / "shard", images)
    write_text_shard_stage(workdir / "text-shard", texts)
    spec = load_spec(spec_path, overrides, workdir)
    job = prepare(
        spec, {"shard": workdir / "shard", "text-shard": workdir / "text-shard"}, workdir / "pretrain"
    )
    t0 = time.perf_counter()
    train_in_process(job, device=device)
    keys = ("samples_per_second", "loss") + (("mfu",) if device == "cuda" else ())
    figures = steady(job.metrics_path, keys, 1)
    print(f"{label} on {device}: {figures} ({time.perf_counter() - t0:.0f} s)", flush=True)

    target = torch.device(device)
    model, dataset = build(job, rank=0, world=1)
    model = model.to(target)
    vit = gpu_ceiling.vit_forward(model, vit_batch, target, bf16=True)
    batches = loader(dataset, job.spec.pretrain.loader_processes(on_gpu=device == "cuda"))
    busy = gpu_ceiling.busy_fraction(model, batches, target, bf16=True, report=report)
    return {**figures, "vit_seconds": vit["seconds"], "vit_mfu": vit["mfu"], "busy": busy}
