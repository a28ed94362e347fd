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


def one_worker_run(
    size: str, device: str, steps: int, log_every: int, bf16: bool, run_name: str
) -> list[str]:
    """The overrides every GPU bench's training run shares: a random-weight `size` model on one
    Ray Train worker (or the plain loop) on `device`, half this machine's CPUs, one checkpoint."""
    cpus = max(1, (os.cpu_count() or 2) // 2)
    return [
        f"model.size={size}",
        "model.weights=random",
        f"pretrain.use_gpu={str(device == 'cuda').lower()}",
        "pretrain.workers=1",
        f"pretrain.cpus_per_worker={cpus}",
        f"pretrain.loader.num_workers={min(4, cpus) if device == 'cuda' else 0}",  # CPU: the test's size
        f"pretrain.max_steps={steps}",
        f"pretrain.log_every={log_every}",
        f"pretrain.checkpoint_every={steps}",
        "pretrain.warmup_steps=4",
        f"pretrain.bf16={str(bf16).lower()}",
        "pretrain.keep_checkpoints=1",
        f"pretrain.run_name={run_name}",
    ]


def _overrides(
    bf16: bool,
    run_name: str,
    size: str = "base",
    device: str = "cuda",
    steps: int = STEPS,
    batch: int = BATCH,
) -> list[str]:
    log_every = LOG_EVERY if steps > LOG_EVERY else steps // 2
    return [*one_worker_run(size, device, steps, log_every, bf16, run_name), f"pretrain.batch_size={batch}"]


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


def _train(job: TrainJob, how: str, device: str = "cuda") -> None:
    if how == "plain":
        from mvlp_core.stages.pretrain import train_in_process

        train_in_process(job, device=device)
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


Figures = dict[tuple[str, bool], list[dict[str, float]]]


def measure(
    workdir: Path,
    runs: int = 1,
    how: str = "ray",
    device: str = "cuda",
    size: str = "base",
    steps: int = STEPS,
    batch: int = BATCH,
    report: Path | None = None,
) -> tuple[Figures, dict[str, float]]:
    """Each variant's steady figures over `runs` runs in `workdir` (runner `how`: Ray Train first,
    whose workers need a GPU this process has not used yet; then the plain loop in bf16 and fp32),
    and the ceiling measured after the first plain bf16 run, before fp32, the least needed. Each
    run's figures are printed as they come, so a call cut short keeps them in its log. `device`
    cpu and a small `size` run the same path in the tests."""
    from mvlp_core.spec import load_spec
    from mvlp_core.train.job import prepare

    variants = ([("ray", True)] if how == "ray" else []) + [("plain", True), ("plain", False)]
    figures: Figures = {v: [] for v in variants}
    keys = ("samples_per_second", "loss") + (("mfu",) if device == "cuda" else ())
    ceiling: dict[str, float] = {}
    write_shard_stage(workdir / "shard", 4 * batch)
    for i in range(runs):
        for runner_name, bf16 in variants:
            name = f"gpu-{i}-{runner_name}-{int(bf16)}"
            spec = load_spec(SPEC, _overrides(bf16, name, size, device, steps, batch), workdir)
            job = prepare(spec, {"shard": workdir / "shard"}, workdir / "pretrain")  # the init is built once
            job.metrics_path.unlink(missing_ok=True)
            t0 = time.perf_counter()
            _train(job, runner_name, device)
            got = steady(job.metrics_path, keys, 1)
            figures[(runner_name, bf16)].append(got)
            print(f"{runner_name} bf16={bf16}: {got} ({time.perf_counter() - t0:.0f} s)", flush=True)
            shutil.rmtree(workdir / "pretrain" / "ray", ignore_errors=True)  # ~10 GB of checkpoints
            shutil.rmtree(workdir / "pretrain" / "local", ignore_errors=True)
            _release_ray()
            if i == 0 and (runner_name, bf16) == ("plain", True):
                ceiling = _ceiling(job, device, batch, report)
                print(f"ceiling: {ceiling}", flush=True)
    return figures, ceiling


def run(runs: int = 1) -> list[dict]:
    import torch

    gpu, how = torch.cuda.get_device_name(0), runner()
    with tempfile.TemporaryDirectory() as tmp:
        figures, ceiling = measure(Path(tmp), runs, how)
    return rows(figures, ceiling, gpu, runs)


def rows(figures: Figures, ceiling: dict[str, float], gpu: str, runs: int) -> list[dict]:
    """The harness rows of `measure`'s figures on the device named `gpu` (Ray's row where Ray ran)."""

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
    out = [
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
    ray_run = ("ray", True)
    if figures.get(ray_run):  # Ray's overhead: the pretrain stage's path against the same loop without it
        out.append(
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
    return out


def _release_ray() -> None:
    """Shut Ray down so that the next run in this process has the GPU to itself."""
    if "ray" in sys.modules and sys.modules["ray"].is_initialized():
        sys.modules["ray"].shutdown()


def _ceiling(
    job: TrainJob, device: str = "cuda", batch: int = BATCH, report: Path | None = None
) -> dict[str, float]:
    """The frozen ViT's forward alone and the device-busy fraction of a training step, in this
    process (benchmarks/gpu_ceiling.py), on the model and data the runs trained; the step profile
    goes to `report` (default: benchmarks/profiles/gpu_train_unigen.txt)."""
    import torch

    from benchmarks import gpu_ceiling
    from mvlp_core.train.data import loader
    from mvlp_core.train.job import build

    _release_ray()  # the GPU is this process's now
    target = torch.device(device, 0) if device == "cuda" else torch.device(device)
    model, dataset = build(job, rank=0, world=1)
    model = model.to(target)
    vit = gpu_ceiling.vit_forward(model, batch, target, bf16=True)
    batches = loader(dataset, job.spec.pretrain.loader_processes(on_gpu=device == "cuda"))
    report = report or gpu_ceiling.PROFILES / "gpu_train_unigen.txt"
    busy = gpu_ceiling.busy_fraction(model, batches, target, bf16=True, report=report)
    return {"vit_seconds": vit["seconds"], "vit_mfu": vit["mfu"], "busy": busy}


if __name__ == "__main__":
    print(run(1))
