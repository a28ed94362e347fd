"""The pretrain stage's ray engine (its default): a Ray Train job.

A `TorchTrainer` runs mvlp_core's loop on every worker, data-parallel as `pretrain.grad_sync`
says (mvlp_core/train/grad_sync.py: DDP through `prepare_model` on GPUs, one all-reduce of the
gradients a step on CPUs). Rank 0 saves checkpoints (`save_pretrained` + optimizer and step),
every rank reports at the same steps.

A stage that trains several models (`models`) trains them one after another in one Ray Train run
where they can share its workers (same scaling, local storage: `train_all_with_ray`): every run
starts Ray Train's controller, its helper actors and its workers anew, each a fresh interpreter
importing torch, pandas and Ray Train (benchmarks/README.md). There each model's checkpoints are
copied into its own run folder and pruned there, Ray gets the metrics only, and a restarted
worker group skips the models already at `max_steps` and resumes the next from its newest
checkpoint on disk.

Ray Train V2 (the default in Ray 2.60) restores a run from the checkpoint-manager
snapshot in `storage_path/run_name`: after a worker crash (`FailureConfig.max_failures`) and
when the same run name is launched again. Before launching, the driver loads the newest
checkpoint it finds there, so a corrupt one stops the run with its path and the fix instead of
failing on every retry or being skipped into a fresh start. With local storage a checkpoint is
copied under a temporary name and renamed, and a snapshot torn by a kill is dropped, so a run
killed at any moment resumes (`tests/chaos`).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import ray
import ray.train
import ray.train.torch
import torch

from mvlp_core import atomic, contract
from mvlp_core.spec import PipelineSpec, PretrainSpec
from mvlp_core.train import grad_sync, loop
from mvlp_core.train.job import TrainJob, build
from ray_jobs.connect import connect
from ray_jobs.train_metrics import TrainGauges

SNAPSHOT = "checkpoint_manager_snapshot.json"  # Ray Train's registry of a run's checkpoints
log = logging.getLogger(__name__)


class RayReporter:
    """loop.Reporter over ray.train: report(metrics, checkpoint) and get_checkpoint().

    A worker that dies right after a report can leave its checkpoint persisted in storage but
    not yet registered with the controller, so after the restart `get_checkpoint()` returns an
    older one (or None). With local storage the newest `checkpoint_STEP` folder in the run's
    directory wins instead: a crash never sends training back further than it has to.
    """

    def __init__(self, run_dir: Path | None, gauges: TrainGauges | None = None):
        self.run_dir = run_dir
        self.gauges = gauges  # rank 0's: the run's metrics exported to Prometheus

    def report(self, metrics: dict[str, Any], checkpoint_dir: Path | None) -> None:
        if self.gauges is not None:
            self.gauges.set(metrics)
        ckpt = ray.train.Checkpoint.from_directory(str(checkpoint_dir)) if checkpoint_dir else None
        name = f"checkpoint_{metrics['step']:08d}"
        upload = self.persist if self.run_dir else None
        ray.train.report(metrics, checkpoint=ckpt, checkpoint_dir_name=name, checkpoint_upload_fn=upload)

    def persist(self, checkpoint: ray.train.Checkpoint, name: str) -> ray.train.Checkpoint:
        """Ray's own upload copies into the final folder: a kill midway would leave a
        `checkpoint_*` folder that `restore` picks but cannot load. Copy, then rename."""
        dest = self.run_dir / name
        atomic.copy_tree(Path(checkpoint.path), dest)
        return ray.train.Checkpoint.from_directory(str(dest))

    @contextlib.contextmanager
    def restore(self) -> Iterator[Path | None]:
        ckpt = ray.train.get_checkpoint()
        on_disk = latest_checkpoint(self.run_dir) if self.run_dir else None
        if on_disk is not None and (ckpt is None or on_disk.name > Path(ckpt.path).name):
            yield on_disk
            return
        if ckpt is None:
            yield None
            return
        with ckpt.as_directory() as folder:
            yield Path(folder)


def train_worker(config: dict[str, Any]) -> None:
    job: TrainJob = config["job"]
    ctx = ray.train.get_context()
    rank = ctx.get_world_rank()
    gauges = TrainGauges(job.spec.pretrain.run_name) if rank == 0 else None
    _train(job, rank, ctx.get_world_size(), RayReporter(run_dir(job.spec.pretrain), gauges))


def train_models_worker(config: dict[str, Any]) -> None:
    """Every job of a shared run in turn, skipping those already trained to their `max_steps`
    (the worker group restarted after they finished): all ranks see the same disk, so all skip
    the same ones."""
    ctx = ray.train.get_context()
    rank, world = ctx.get_world_rank(), ctx.get_world_size()
    for job in config["jobs"]:
        cfg = job.spec.pretrain
        if finished_checkpoint(job) is not None:
            continue
        gauges = TrainGauges(cfg.run_name) if rank == 0 else None
        _train(job, rank, world, SharedRunReporter(run_dir(cfg), cfg.keep_checkpoints, gauges))


def _train(job: TrainJob, rank: int, world: int, reporter: loop.Reporter) -> None:
    # one intra-op thread per reserved CPU: more threads than cores makes small models far slower
    torch.set_num_threads(max(1, int(job.spec.pretrain.cpus_per_worker)))
    torch.manual_seed(job.spec.pretrain.seed + rank)
    model, batches = build(job, rank, world)
    device = ray.train.torch.get_device()
    ddp = grad_sync.strategy(job.spec.pretrain.grad_sync, device) == "ddp"
    model = ray.train.torch.prepare_model(
        model,
        parallel_strategy="ddp" if ddp else None,
        parallel_strategy_kwargs=grad_sync.ddp_options(model) if ddp else None,
    )
    sync = grad_sync.AllReduceGradients(model) if not ddp and world > 1 else None
    from mvlp_core.train.data import resumable

    loop.train(
        model,
        resumable(batches, job.spec.pretrain.loader_processes(on_gpu=job.spec.pretrain.use_gpu)),
        job.spec.pretrain,
        reporter,
        rank=rank,
        world=world,
        device=device,
        metrics_path=job.metrics_path if rank == 0 else None,
        fault_marker=job.fault_marker,
        grad_sync=sync,
    )


class SharedRunReporter:
    """loop.Reporter for one model of a shared run: Ray's checkpoint registry belongs to the run
    and would prune one model's checkpoints for another's, so rank 0 copies each checkpoint into
    the model's own run folder (whole, or a temporary name) and keeps its newest `keep` there;
    Ray gets the metrics, and a restart resumes from the newest checkpoint in that folder."""

    def __init__(self, run_dir: Path, keep: int, gauges: TrainGauges | None = None) -> None:
        self.run_dir, self.keep, self.gauges = run_dir, keep, gauges

    def report(self, metrics: dict[str, Any], checkpoint_dir: Path | None) -> None:
        if self.gauges is not None:
            self.gauges.set(metrics)
        if checkpoint_dir is not None:
            atomic.copy_tree(checkpoint_dir, self.run_dir / f"checkpoint_{metrics['step']:08d}")
            for old in checkpoints(self.run_dir)[: -self.keep]:
                shutil.rmtree(old)
        ray.train.report(metrics)

    @contextlib.contextmanager
    def restore(self) -> Iterator[Path | None]:
        yield latest_checkpoint(self.run_dir)


def run_dir(cfg: PretrainSpec) -> Path | None:
    """The run's folder when storage is a local path (None for fsspec URLs)."""
    return None if "://" in cfg.storage_path else Path(cfg.storage_path) / cfg.run_name


def checkpoints(run_dir: Path) -> list[Path]:
    """The run's whole checkpoints, oldest first (a copy cut short keeps its temporary name)."""
    return sorted(
        p
        for p in run_dir.glob("checkpoint_*")
        if atomic.TMP_MARK not in p.name and (p / loop.TRAIN_STATE).exists()
    )


def latest_checkpoint(run_dir: Path) -> Path | None:
    found = checkpoints(run_dir)
    return found[-1] if found else None


def finished_checkpoint(job: TrainJob) -> Path | None:
    """The newest checkpoint of the job's run when it stands at `max_steps` or past it, else None."""
    local = run_dir(job.spec.pretrain)
    newest = latest_checkpoint(local) if local is not None else None
    if newest is None or int(newest.name.removeprefix("checkpoint_")) < job.spec.pretrain.max_steps:
        return None
    return newest


def drop_unusable_snapshot(run_dir: Path) -> None:
    """Ray's snapshot of a run's checkpoints, removed where a relaunch would die on it in the
    controller: torn (Ray rewrites it in place, so a kill can leave it empty or cut short), or
    naming a checkpoint folder that is gone (deleted, as a checkpoint that cannot be loaded tells
    the user to). Without it Ray starts an empty registry (older checkpoints are no longer pruned)
    and `RayReporter.restore` resumes from the newest on disk."""
    path = run_dir / SNAPSHOT
    try:
        snapshot = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return
    except ValueError:
        log.warning("pretrain: %s is torn (a run was killed while Ray wrote it); removing it", path)
        path.unlink()
        return
    results = snapshot.get("checkpoint_results", []) if isinstance(snapshot, dict) else []
    gone = [r["checkpoint_dir_name"] for r in results if not (run_dir / r["checkpoint_dir_name"]).is_dir()]
    if gone:
        log.warning("pretrain: %s names checkpoints that are gone (%s); removing it", path, ", ".join(gone))
        path.unlink()


def check_resumable(job: TrainJob, run_dir: Path) -> None:
    """Load the checkpoint the run will resume from, in the driver: fail once, clearly."""
    ckpt = latest_checkpoint(run_dir)
    if ckpt is None:
        return
    model, _ = build(job, 0, 1)
    optimizer = torch.optim.AdamW(loop.param_groups(model, 0.0))
    loop.load_checkpoint(ckpt, model, optimizer)


def _ready(job: TrainJob) -> None:
    """Before a run on local storage: its folder, no torn Ray snapshot, a loadable checkpoint."""
    local = run_dir(job.spec.pretrain)
    if local is not None:
        local.parent.mkdir(parents=True, exist_ok=True)
        drop_unusable_snapshot(local)
        check_resumable(job, local)


def _fit(
    train_fn: Callable[[dict[str, Any]], None],
    config: dict[str, Any],
    spec: PipelineSpec,
    name: str,
    num_to_keep: int | None,
) -> ray.train.Result:
    """One Ray Train run of `train_fn` on the workers `spec.pretrain` asks for; a clear error when
    it fails for good."""
    cfg = spec.pretrain
    connect(spec, num_cpus=max(os.cpu_count() or 1, int(cfg.workers * cfg.cpus_per_worker) + 1))
    trainer = ray.train.torch.TorchTrainer(
        train_fn,
        train_loop_config=config,
        scaling_config=ray.train.ScalingConfig(
            num_workers=cfg.workers,
            use_gpu=cfg.use_gpu,
            resources_per_worker={
                "CPU": cfg.cpus_per_worker,
                **({"GPU": cfg.gpus_per_worker} if cfg.use_gpu else {}),
            },
        ),
        run_config=ray.train.RunConfig(
            name=name,
            storage_path=cfg.storage_path,
            checkpoint_config=ray.train.CheckpointConfig(num_to_keep=num_to_keep),
            failure_config=ray.train.FailureConfig(max_failures=cfg.max_failures),
        ),
    )
    try:
        return trainer.fit()
    except ray.train.TrainingFailedError as err:
        raise contract.StageError(
            f"pretrain: the Ray Train run {name} failed after {cfg.max_failures} retries: {err}. "
            f"Worker logs: the Ray session logs; checkpoints: {cfg.storage_path}/{name}"
        ) from err


def train_with_ray(job: TrainJob) -> Path:
    """Run the TorchTrainer; returns the folder of the final checkpoint."""
    _ready(job)
    return _run_alone(job)


def _run_alone(job: TrainJob) -> Path:
    cfg = job.spec.pretrain
    local = run_dir(cfg)
    result = _fit(train_worker, {"job": job}, job.spec, cfg.run_name, cfg.keep_checkpoints)
    # the newest on disk, as `restore` chose: a run resumed at max_steps reports no checkpoint,
    # and one persisted just before a kill may never have reached Ray's registry
    newest = latest_checkpoint(local) if local is not None else None
    if newest is not None:
        return newest
    if result.checkpoint is None:
        raise contract.StageError(
            f"pretrain: the run {cfg.run_name} reported no checkpoint; see the worker logs"
        )
    if local is None:  # remote storage (its checkpoint's path has no scheme): fetch it next to the stage
        return Path(result.checkpoint.to_directory(str(job.out_dir / "final-checkpoint")))
    return Path(result.checkpoint.path)


def _share_a_run(jobs: list[TrainJob]) -> bool:
    """Jobs on the same workers (count, CPUs, GPUs) and the same local storage can share a run."""

    def shape(job: TrainJob) -> tuple[Any, ...]:
        p = job.spec.pretrain
        return p.workers, p.cpus_per_worker, p.use_gpu, p.gpus_per_worker if p.use_gpu else 0, p.storage_path

    return all(run_dir(j.spec.pretrain) is not None and shape(j) == shape(jobs[0]) for j in jobs)


def train_all_with_ray(jobs: list[TrainJob]) -> list[Path]:
    """Each job's final checkpoint, the jobs trained one after another in one Ray Train run where
    they can share it (`_share_a_run`), else in a run each. A job already at its `max_steps`
    starts nothing; the shared run's name joins its models' run names."""
    if len(jobs) < 2 or not _share_a_run(jobs):
        return [train_with_ray(job) for job in jobs]
    for job in jobs:
        _ready(job)
    todo = [job for job in jobs if finished_checkpoint(job) is None]
    if len(todo) == 1:
        _run_alone(todo[0])
    elif todo:
        cfg = todo[0].spec.pretrain
        name = "+".join(job.spec.pretrain.run_name for job in todo)
        drop_unusable_snapshot(Path(cfg.storage_path) / name)
        _fit(train_models_worker, {"jobs": todo}, todo[0].spec, name, None)
    done = []
    for job in jobs:
        newest = finished_checkpoint(job)
        if newest is None:
            raise contract.StageError(
                f"pretrain: the run {job.spec.pretrain.run_name} ended before max_steps "
                f"{job.spec.pretrain.max_steps}; see the worker logs"
            )
        done.append(newest)
    return done


class RayEngine:
    """The pretrain stage's ray engine: one model (`train_with_ray`), or the stage's models
    together (`train_all_with_ray`), which the stage asks for before its units."""

    def __call__(self, job: TrainJob) -> Path:
        return train_with_ray(job)

    def together(self, jobs: list[TrainJob]) -> list[Path]:
        return train_all_with_ray(jobs)


ENGINE = RayEngine()
