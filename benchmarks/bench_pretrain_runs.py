"""The pretrain stage's models in one Ray Train run (`ray_jobs.pretrain.train_all_with_ray`, what
the stage does) against a Ray Train run each, side by side on the same local Ray, alternating
which goes first: the demo's models (UniGen, the weakly-supervised mVLP, ERNIE-UniX²) on its data,
with shorter schedules, since what differs is the runs' fixed cost, not the steps."""

from __future__ import annotations

import shutil
import statistics
import tempfile
import time
from pathlib import Path

from benchmarks._metrics import result
from benchmarks._world import demo_data

ROOT = Path(__file__).resolve().parents[1]
STEPS = {"unigen": 150, "wsmvlp": 60, "ernie": 150}  # the demo's 1,500, 600 and 1,500, a tenth


def _jobs(spec, workdir: Path, folder: Path) -> list:
    from mvlp_core.train.job import prepare

    jobs = []
    for name, sub in spec.trained_models():
        pretrain = sub.pretrain.model_copy(
            update={"max_steps": STEPS[name], "checkpoint_every": 50, "storage_path": str(folder / "ray")}
        )
        inputs = {stage: workdir / stage for stage in ("shard", "text-shard")}
        jobs.append(prepare(sub.model_copy(update={"pretrain": pretrain}), inputs, folder / name))
    return jobs


def run(runs: int = 3) -> list[dict]:
    import ray

    from mvlp_core.spec import load_spec
    from ray_jobs.connect import connect
    from ray_jobs.pretrain import train_all_with_ray, train_with_ray

    shared, apart = [], []
    with tempfile.TemporaryDirectory(prefix="mvlp-bench-runs-") as tmp:
        workdir = Path(tmp) / "demo"
        demo_data(workdir)
        spec = load_spec(ROOT / "data_specs/pipelines/demo.yaml", workdir=workdir)
        connect(spec, num_cpus=spec.pretrain.workers + 1)
        for i in range(runs):
            for together in (i % 2 == 0, i % 2 == 1):
                folder = Path(tmp) / f"{'shared' if together else 'apart'}-{i}"
                jobs = _jobs(spec, workdir, folder)
                t0 = time.perf_counter()
                if together:
                    train_all_with_ray(jobs)
                else:
                    for job in jobs:
                        train_with_ray(job)
                (shared if together else apart).append(time.perf_counter() - t0)
                shutil.rmtree(folder)
        ray.shutdown()
    note = (
        f"the demo's {len(STEPS)} models on its data, "
        + ", ".join(f"{n} {s} steps" for n, s in STEPS.items())
        + " (a tenth of the demo's), 2 Ray Train CPU workers on one local Ray started before timing;"
        " each pair's order alternates; the difference is the runs' start-up and end: Ray Train's"
        " controller, its helper actors and both workers importing torch, pandas and Ray Train, once"
        " a run"
    )
    ratio = statistics.median(s / a for s, a in zip(shared, apart))
    return [
        result(
            "pretrain_models_in_one_ray_run",
            statistics.median(shared),
            "s",
            "a Ray Train run per model",
            statistics.median(apart),
            runs,
            False,
            note,
            ratio=ratio,
        )
    ]


if __name__ == "__main__":
    print(run(1))
