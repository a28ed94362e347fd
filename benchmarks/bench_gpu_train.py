"""Pretraining on a GPU: the base-shaped UniGen (BLIP-2 ViT-g + Q-Former, XLM-R base, GPT-2 with
random weights, `model.weights: random`, the paper's freezing), through the same job and loop the
pipeline runs: under Ray Train with `use_gpu` in bf16 (the pretrain stage's path), then the same
loop in this process in bf16 and in fp32. Rows: bf16 against fp32, Ray against the plain loop
(Ray's overhead), and the ceiling (gpu_ceiling.py).

Samples/s and MFU come from the loop's own metrics (the first window, with CUDA warm-up, is
dropped); Ray start-up, model build and checkpoint writing are not counted. Needs CUDA: on a
machine without it `available()` says why and the harness keeps the figures measured on a GPU
machine before (`benchmarks/gpu_device.sh` runs it on a lent one)."""

from __future__ import annotations

import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING

from benchmarks._metrics import result, steady
from benchmarks.gpu_data import write_shard_stage

if TYPE_CHECKING:
    from mvlp_core.train.job import TrainJob

ROOT = Path(__file__).resolve().parent.parent
STEPS, LOG_EVERY, BATCH = 24, 6, 64
SPEC = ROOT / "data_specs" / "pipelines" / "unigen-cc3m.yaml"


def available() -> str | None:
    import torch

    return None if torch.cuda.is_available() else "needs a CUDA GPU (figures kept from the last GPU run)"


def _overrides(bf16: bool, run_name: str) -> list[str]:
    cpus = max(1, (os.cpu_count() or 2) // 2)
    return [
        "model.size=base",
        "model.weights=random",
        "pretrain.use_gpu=true",
        "pretrain.workers=1",
        f"pretrain.cpus_per_worker={cpus}",
        f"pretrain.loader.num_workers={min(4, cpus)}",
        f"pretrain.batch_size={BATCH}",
        f"pretrain.max_steps={STEPS}",
        f"pretrain.log_every={LOG_EVERY}",
        f"pretrain.checkpoint_every={STEPS}",
        "pretrain.warmup_steps=4",
        f"pretrain.bf16={str(bf16).lower()}",
        f"pretrain.run_name={run_name}",
        "pretrain.keep_checkpoints=1",
    ]


def runner() -> str:
    """`ray` (Ray Train, use_gpu), or `plain` (the same loop in this process) where Ray is missing
    or GPU_RUNNER=plain says it cannot start on that machine."""
    if os.environ.get("GPU_RUNNER", "ray") == "plain":
        return "plain"
    try:
        import ray  # noqa: F401
    except ImportError as err:
        print(f"Ray unavailable ({err}): the plain loop on cuda", file=sys.stderr)
        return "plain"
    return "ray"


def _train(job: TrainJob, how: str) -> None:
    if how == "plain":
        from mvlp_core.stages.pretrain import train_in_process

        train_in_process(job, device="cuda")
        return
    import ray
    import torch

    from ray_jobs.pretrain import train_with_ray

    if not ray.is_initialized():  # say how many GPUs there are instead of relying on detection
        ray.init(
            num_cpus=os.cpu_count(),
            num_gpus=torch.cuda.device_count(),
            include_dashboard=False,
            log_to_driver=True,
            runtime_env={"env_vars": {"PYTHONPATH": os.environ.get("PYTHONPATH", "")}},
        )
    train_with_ray(job)


def run(runs: int = 1) -> list[dict]:
    import torch

    from mvlp_core.spec import load_spec
    from mvlp_core.train.job import prepare

    gpu, how = torch.cuda.get_device_name(0), runner()
    # (runner, bf16): Ray Train first (its workers need the GPU this process has not touched yet);
    # each run's figures are printed as they come, so a call cut short keeps them in its log
    variants = ([("ray", True)] if how == "ray" else []) + [("plain", True), ("plain", False)]
    figures: dict[tuple[str, bool], list[dict[str, float]]] = {v: [] for v in variants}
    with tempfile.TemporaryDirectory() as tmp:
        wd = Path(tmp)
        write_shard_stage(wd / "shard", 4 * BATCH)
        for i in range(runs):
            for runner_name, bf16 in variants:
                spec = load_spec(SPEC, _overrides(bf16, f"gpu-{i}-{runner_name}-{int(bf16)}"), wd)
                job = prepare(spec, {"shard": wd / "shard"}, wd / "pretrain")  # the init is built once
                job.metrics_path.unlink(missing_ok=True)
                t0 = time.perf_counter()
                _train(job, runner_name)
                got = steady(job.metrics_path, ("samples_per_second", "mfu", "loss"), 1)
                figures[(runner_name, bf16)].append(got)
                print(f"{runner_name} bf16={bf16}: {got} ({time.perf_counter() - t0:.0f} s)", flush=True)
                shutil.rmtree(wd / "pretrain" / "ray", ignore_errors=True)  # ~10 GB of checkpoints
                shutil.rmtree(wd / "pretrain" / "local", ignore_errors=True)
                _release_ray()
                if i == 0 and (runner_name, bf16) == ("plain", True):  # before fp32, the least needed
                    ceiling = _ceiling(job)
                    print(f"ceiling: {ceiling}", flush=True)

    def med(variant: tuple[str, bool], key: str) -> float:
        return statistics.median(f[key] for f in figures[variant])

    bf16, fp32 = ("plain", True), ("plain", False)
    ceiling_note = (
        f"{gpu}; the same base-shaped UniGen in this process, bf16 autocast, batch {BATCH}; frozen ViT"
        f" forward alone {ceiling['vit_seconds'] * 1e3:.0f} ms a batch; busy = profiler kernel time /"
        " wall time over 5 training steps (forward, backward, AdamW)"
    )
    shape = (
        f"{gpu}; base-shaped UniGen (ViT-g frozen, decoder middle frozen), random weights, 224 px, "
        f"32 queries, batch {BATCH}, {STEPS} steps, first {LOG_EVERY} steps dropped"
    )
    rows = [
        result(
            "gpu_train_bf16_vs_fp32",
            med(bf16, "samples_per_second"),
            "samples/s",
            "same run in fp32 (no autocast)",
            med(fp32, "samples_per_second"),
            runs,
            True,
            f"{shape}, plain loop; MFU vs the device's dense bf16 peak: bf16 {med(bf16, 'mfu'):.1%}, "
            f"fp32 {med(fp32, 'mfu'):.1%}",
        ),
        result(
            "gpu_vit_forward_mfu",
            ceiling["vit_mfu"],
            "MFU",
            "training step MFU (bf16)",
            med(bf16, "mfu"),
            1,
            True,
            ceiling_note,
        ),
        result(
            "gpu_step_busy_fraction",
            ceiling["busy"],
            "of wall time",
            "always busy",
            1.0,
            1,
            True,
            ceiling_note,
        ),
    ]
    if how == "ray":  # Ray's overhead: the pretrain stage's path against the same loop without it
        ray_run = ("ray", True)
        rows.append(
            result(
                "gpu_train_ray_vs_plain",
                med(ray_run, "samples_per_second"),
                "samples/s",
                "the same loop in one process, no Ray",
                med(bf16, "samples_per_second"),
                runs,
                True,
                f"{shape}, bf16; 1 Ray Train worker with use_gpu (the pretrain stage's path); MFU Ray "
                f"{med(ray_run, 'mfu'):.1%}, plain {med(bf16, 'mfu'):.1%}",
            )
        )
    return rows


def _release_ray() -> None:
    """Shut Ray down so that the next run in this process has the GPU to itself."""
    if "ray" in sys.modules and sys.modules["ray"].is_initialized():
        sys.modules["ray"].shutdown()


def _ceiling(job: TrainJob) -> dict[str, float]:
    """The frozen ViT's forward alone and the device-busy fraction of a training step, in this
    process on the first GPU (benchmarks/gpu_ceiling.py), on the model and data the runs trained."""
    import torch

    from benchmarks import gpu_ceiling
    from mvlp_core.train.data import loader
    from mvlp_core.train.job import build

    _release_ray()  # the GPU is this process's now
    device = torch.device("cuda", 0)
    model, dataset = build(job, rank=0, world=1)
    model = model.to(device)
    vit = gpu_ceiling.vit_forward(model, BATCH, device, bf16=True)
    batches = loader(dataset, job.spec.pretrain.loader_processes(on_gpu=True))
    report = gpu_ceiling.PROFILES / "gpu_train_unigen.txt"
    busy = gpu_ceiling.busy_fraction(model, batches, device, bf16=True, report=report)
    return {"vit_seconds": vit["seconds"], "vit_mfu": vit["mfu"], "busy": busy}


if __name__ == "__main__":
    print(run(1))
