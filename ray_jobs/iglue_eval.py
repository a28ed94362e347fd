"""iglue-eval units as Ray tasks: the English fine-tunes first (one task each, in parallel), then
every (task, setting, language) test unit, retried by Ray when a worker fails. Passed to
``run_iglue_eval`` as ``units_fn`` (the Prefect flow picks it through flows/runners.py), or run
alone: ``python -m ray_jobs.iglue_eval --spec SPEC --workdir DIR``.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import ray

from mvlp_core import pipeline
from mvlp_core.eval.units import Unit, compute_unit
from mvlp_core.spec import PipelineSpec, load_spec


@ray.remote(max_retries=2, retry_exceptions=True)
def _unit(spec: PipelineSpec, model_dir: str, out_dir: str, name: str) -> str:
    compute_unit(spec, model_dir, out_dir, name)
    return name


def run_units_with_ray(spec: PipelineSpec, model_dir: str, out_dir: str, names: list[str]) -> None:
    if not ray.is_initialized():
        ray.init(num_cpus=spec.iglue.workers, include_dashboard=False, log_to_driver=False)
    remote = _unit.options(num_cpus=1)
    finetunes = [n for n in names if Unit.parse(n).setting == "finetune"]
    ray.get([remote.remote(spec, model_dir, out_dir, n) for n in finetunes])
    ray.get([remote.remote(spec, model_dir, out_dir, n) for n in names if n not in finetunes])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--spec", required=True)
    parser.add_argument("--workdir")
    parser.add_argument("--force", action="store_true")
    args = parser.parse_args()
    spec = load_spec(args.spec, [], args.workdir)
    from mvlp_core.stages.iglue_eval import run_iglue_eval

    m = run_iglue_eval(spec, {"pretrain": Path(spec.workdir) / "pretrain"},
                       pipeline.stage_dir(spec, "iglue-eval") if "iglue-eval" in pipeline.DAG
                       else Path(spec.workdir) / "iglue-eval",
                       force=args.force, units_fn=run_units_with_ray)
    print(m.extra["results"])


if __name__ == "__main__":
    main()
