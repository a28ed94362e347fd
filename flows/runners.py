"""Which engine runs a stage: the in-process core function, or a distributed job in ray_jobs.

`RUNNERS` maps a stage to a function that picks by the spec; stages without an entry run
in-process (`pipeline.run_stage`).
"""

from __future__ import annotations

from collections.abc import Callable

from mvlp_core import contract, pipeline
from mvlp_core.spec import PipelineSpec

Runner = Callable[..., contract.Manifest]


def _translate(spec: PipelineSpec, *, force: bool, progress: contract.ProgressFn | None) -> contract.Manifest:
    if spec.translate.engine == "ray":
        from ray_jobs.translate import run_job

        return run_job(spec, force=force, progress=progress)
    return pipeline.run_stage(spec, "translate", force=force, progress=progress)


def _qa(spec: PipelineSpec, *, force: bool, progress: contract.ProgressFn | None) -> contract.Manifest:
    if spec.qa.backend == "vllm":  # vLLM engines run under ray.data.llm
        from ray_jobs.qa import run as run_qa_vllm

        return run_qa_vllm(spec, force=force, progress=progress)
    return pipeline.run_stage(spec, "qa", force=force, progress=progress)


def _pretrain(spec: PipelineSpec, *, force: bool, progress: contract.ProgressFn | None) -> contract.Manifest:
    from ray_jobs.pretrain import run_stage as run_pretrain  # imports ray: only when pretrain runs

    return run_pretrain(spec, force=force, progress=progress)


def _iglue_eval(
    spec: PipelineSpec, *, force: bool, progress: contract.ProgressFn | None
) -> contract.Manifest:
    if spec.iglue.engine == "ray":  # each (task, setting, language) unit a Ray task, retried on failure
        from ray_jobs.iglue_eval import run_stage as run_iglue_ray

        return run_iglue_ray(spec, force=force, progress=progress)
    return pipeline.run_stage(spec, "iglue-eval", force=force, progress=progress)


RUNNERS: dict[str, Runner] = {
    "translate": _translate,
    "qa": _qa,
    "pretrain": _pretrain,
    "iglue-eval": _iglue_eval,
}


def run_stage(
    spec: PipelineSpec, name: str, *, force: bool = False, progress: contract.ProgressFn | None = None
) -> contract.Manifest:
    runner = RUNNERS.get(name)
    if runner is None:
        return pipeline.run_stage(spec, name, force=force, progress=progress)
    return runner(spec, force=force, progress=progress)
