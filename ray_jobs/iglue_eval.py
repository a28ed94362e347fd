"""iglue-eval units as Ray tasks: the English fine-tunes first (one task each, in parallel), then
every (task, setting, language) test unit, retried by Ray when a worker fails. Passed to
``run_iglue_eval`` as ``units_fn`` (the Prefect flow picks it through flows/runners.py), or run
alone: ``python -m ray_jobs.iglue_eval --spec SPEC --workdir DIR [--set a.b=v]``.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import ray

from mvlp_core import contract, pipeline
from mvlp_core.eval.units import Unit, compute_unit
from mvlp_core.spec import PipelineSpec
from mvlp_core.stages.iglue_eval import run_iglue_eval
from ray_jobs import entrypoint

ROOT = Path(__file__).resolve().parents[1]


@ray.remote(max_retries=2, retry_exceptions=True)
def _unit(spec: PipelineSpec, model_dir: str, out_dir: str, name: str) -> str:
    compute_unit(spec, model_dir, out_dir, name)
    return name


def run_units_with_ray(spec: PipelineSpec, model_dir: str, out_dir: str, names: list[str]) -> None:
    if not ray.is_initialized():  # RAY_ADDRESS (a cluster) when set, else local with `workers` CPUs
        address = os.environ.get("RAY_ADDRESS")
        paths = [str(ROOT), *filter(None, os.environ.get("PYTHONPATH", "").split(os.pathsep))]
        env = {"PYTHONPATH": os.pathsep.join(dict.fromkeys(paths))}
        if address:
            ray.init(address=address, runtime_env={"env_vars": env}, log_to_driver=False)
        else:
            os.environ["PYTHONPATH"] = env["PYTHONPATH"]  # local workers inherit the driver's environment
            ray.init(num_cpus=spec.iglue.workers, include_dashboard=False, log_to_driver=False)
    remote = _unit.options(num_cpus=1)
    finetunes = [n for n in names if Unit.parse(n).setting == "finetune"]
    ray.get([remote.remote(spec, model_dir, out_dir, n) for n in finetunes])
    ray.get([remote.remote(spec, model_dir, out_dir, n) for n in names if n not in finetunes])


def run_stage(
    spec: PipelineSpec, *, force: bool = False, progress: contract.ProgressFn | None = None
) -> contract.Manifest:
    """The iglue-eval stage with its units as Ray tasks (what flows/runners.py maps it to when
    ``iglue.engine`` is ``ray``)."""
    name = "iglue-eval"
    return run_iglue_eval(
        spec,
        pipeline.inputs_for(spec, name),
        pipeline.stage_dir(spec, name),
        force=force,
        progress=progress,
        units_fn=run_units_with_ray,
    )


if __name__ == "__main__":
    sys.exit(
        entrypoint.main(
            "iglue-eval", run_stage, summary=lambda _, m: json.dumps(m.extra["results"], indent=2)
        )
    )
