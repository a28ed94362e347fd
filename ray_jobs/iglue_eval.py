"""The iglue-eval stage's ray engine: the English fine-tunes first (one Ray task each, in parallel),
then every (task, setting, language) test unit, each a Ray task retried when a worker fails; each
writes its result file, which the stage's units then read.

Each task asks Ray for one CPU and, when ``iglue.device`` is a GPU, ``iglue.gpus_per_unit`` GPUs:
Ray sets ``CUDA_VISIBLE_DEVICES`` to the GPUs a task was given, so a task that asks for none sees
no GPU at all."""

from __future__ import annotations

import ray

from mvlp_core.eval.selection import Unit, unit_resources
from mvlp_core.eval.units import compute_unit
from mvlp_core.spec import PipelineSpec
from ray_jobs.connect import connect


@ray.remote(max_retries=2, retry_exceptions=True)
def _unit(spec: PipelineSpec, model_dir: str, out_dir: str, name: str) -> str:
    compute_unit(spec, model_dir, out_dir, name)
    return name


def run_units_with_ray(spec: PipelineSpec, model_dir: str, out_dir: str, names: list[str]) -> None:
    connect(spec, num_cpus=spec.iglue.workers)
    remote = _unit.options(**unit_resources(spec.iglue))
    finetunes = [n for n in names if Unit.parse(n).setting == "finetune"]
    ray.get([remote.remote(spec, model_dir, out_dir, n) for n in finetunes])
    ray.get([remote.remote(spec, model_dir, out_dir, n) for n in names if n not in finetunes])
