"""The iglue-eval stage's ray engine: every model's units as Ray tasks in one submission, each
retried when a worker fails and writing its result file, which the stage's units then read.

The English fine-tunes go first, the costliest first (epochs x training items), so a long one does
not start last and leave the other workers idle; each (task, setting, language) test unit waits on
its own task's fine-tune only (its reference is an argument), so tests run while other fine-tunes
still train and one model's units fill the workers another model's leave free.

Each task asks Ray for one CPU and one more per fine-tuning loader process (``iglue.loader_workers``)
and, when ``iglue.device`` is a GPU, ``iglue.gpus_per_unit`` GPUs:
Ray sets ``CUDA_VISIBLE_DEVICES`` to the GPUs a task was given, so a task that asks for none sees
no GPU at all (with ``RAY_ACCEL_ENV_VAR_OVERRIDE_ON_ZERO``, which ray_jobs/connect.py sets)."""

from __future__ import annotations

import math

import ray

from mvlp_core.eval.selection import ModelUnits, Unit, finetune_settings, unit_resources
from mvlp_core.eval.units import compute_unit
from mvlp_core.spec import PipelineSpec
from ray_jobs.connect import connect


@ray.remote(max_retries=2, retry_exceptions=True)
def _unit(spec: PipelineSpec, model_dir: str, out_dir: str, name: str, after: str | None = None) -> str:
    """`after`: the unit's fine-tune (Ray resolves the reference before the task starts)."""
    compute_unit(spec, model_dir, out_dir, name)
    return name


def _cost(units: ModelUnits, name: str) -> float:
    """Epochs x training items (all of the task's items, uncapped, count as the most)."""
    ft = finetune_settings(units.spec.iglue, Unit.parse(name).task)
    return ft.epochs * (ft.max_train_items or math.inf) if ft.epochs else 0.0


def run_units_with_ray(models: list[ModelUnits]) -> None:
    if not models:
        return
    # a local Ray: room for `workers` units side by side, fine-tunes with their loader processes
    connect(
        models[0].spec,
        num_cpus=max(m.spec.iglue.workers * unit_resources(m.spec.iglue)["num_cpus"] for m in models),
    )
    nodes = [n["Resources"] for n in ray.nodes() if n["Alive"]]

    def asks(spec: PipelineSpec) -> dict[str, float]:
        """The unit's resources, its CPUs cut to those of the largest node that has the GPUs it
        asks for (a Ray already running, e.g. pretraining's, may be smaller than loader processes
        ask for: a task no node can hold would wait forever; its loader processes then share the
        CPUs it gets). No such node yet (an autoscaling cluster): asked for as they are."""
        res = unit_resources(spec.iglue)
        fit = [n.get("CPU", 0) for n in nodes if n.get("GPU", 0) >= res["num_gpus"]]
        largest = max(fit, default=0)
        return {**res, "num_cpus": min(res["num_cpus"], largest)} if largest >= 1 else res

    finetunes = sorted(
        ((m, n) for m in models for n in m.names if Unit.parse(n).setting == "finetune"),
        key=lambda pair: _cost(*pair),
        reverse=True,
    )
    tuned: dict[tuple[str, str], ray.ObjectRef] = {}
    for m, name in finetunes:
        remote = _unit.options(**asks(m.spec))
        tuned[(m.out_dir, Unit.parse(name).task)] = remote.remote(m.spec, m.model_dir, m.out_dir, name)
    tests = [
        _unit.options(**asks(m.spec)).remote(
            m.spec, m.model_dir, m.out_dir, name, tuned.get((m.out_dir, Unit.parse(name).task))
        )
        for m in models
        for name in m.names
        if Unit.parse(name).setting != "finetune"
    ]
    ray.get([*tuned.values(), *tests])
