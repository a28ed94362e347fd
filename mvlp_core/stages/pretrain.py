"""pretrain: final shards (+ text shards when that stage exists) -> a trained UniGen in `final/`.

The stage is one unit ("train") under the contract, so fingerprints, --force, resume and the
manifest work as for every stage. Who runs the training is a parameter: `train_fn(job)` is the
plain single-process loop here (no Ray in mvlp_core); ray_jobs/pretrain.py passes its Ray Train
runner, which the Prefect flow chooses (flows/runners.py). Either returns the folder of the last
checkpoint; the stage copies its model to `final/`, writes the loss curve and the manifest extra
`{"step", "loss_first", "loss_last", "checkpoint", "samples_per_second", ...}`.
"""

from __future__ import annotations

import shutil
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from mvlp_core import contract
from mvlp_core.spec import PipelineSpec, fingerprint_config
from mvlp_core.train import curves, loop
from mvlp_core.train.job import TrainJob, build, prepare

DEPS = ("shard",)
FINAL_DIR = "final"
CURVE = "loss_curve.png"

TrainFn = Callable[[TrainJob], Path]


def config(spec: PipelineSpec) -> dict[str, Any]:
    model = getattr(spec, "model", None)
    return {
        "pretrain": fingerprint_config(spec.pretrain),
        "model": fingerprint_config(model) if model is not None else None,
        "languages": spec.languages,
    }


def train_in_process(job: TrainJob, device: str = "cpu") -> Path:
    """One process, no Ray, on `device`: checkpoints under `pretrain/local/`, resumed from the newest."""
    import torch

    reporter = loop.LocalReporter(job.out_dir / "local", keep=job.spec.pretrain.keep_checkpoints)
    model, batches = build(job, rank=0, world=1)
    loop.train(
        model.to(device),
        iter(batches),
        job.spec.pretrain,
        reporter,
        device=torch.device(device),
        metrics_path=job.metrics_path,
    )
    return reporter.checkpoints()[-1]


def run_pretrain(
    spec: PipelineSpec,
    inputs: dict[str, Path],
    out_dir: Path,
    *,
    force: bool = False,
    progress: contract.ProgressFn | None = None,
    train_fn: TrainFn = train_in_process,
) -> contract.Manifest:
    out_dir = Path(out_dir)
    missing = [d for d in DEPS if d not in inputs]
    if missing:
        raise contract.StageError(f"pretrain needs inputs {list(DEPS)}; missing {missing}")
    fp = contract.stage_fingerprint("pretrain", config(spec), inputs, sys.modules[__name__])
    shard_manifest = contract.Manifest.load(inputs["shard"])
    result: dict[str, Any] = {}

    def process(unit: str) -> contract.UnitResult:
        job = prepare(spec, inputs, out_dir)
        if not job.image_urls:
            raise contract.StageError(
                f"pretrain: no shard-*.tar in {inputs['shard']}; re-run the shard stage"
            )
        checkpoint = Path(train_fn(job))
        final = out_dir / FINAL_DIR
        shutil.rmtree(final, ignore_errors=True)
        shutil.copytree(checkpoint / loop.MODEL_DIR, final.with_name(FINAL_DIR + ".tmp"), dirs_exist_ok=True)
        final.with_name(FINAL_DIR + ".tmp").rename(final)
        rows = curves.read_metrics(job.metrics_path)
        if not curves.history(rows):
            raise contract.StageError(
                f"pretrain: training wrote no metrics to {job.metrics_path}; see the worker logs"
            )
        curves.plot(rows, out_dir / CURVE, title=f"{spec.name}: pretrain loss")
        result.update(curves.summary(rows), checkpoint=str(checkpoint), final=str(final))
        n = shard_manifest.samples_out
        return contract.UnitResult(files={CURVE: 0}, samples_in=n, samples_out=n)

    def finalize(_: Path, records: list[dict[str, Any]]) -> dict[str, Any]:
        if not result:  # the unit was committed by an earlier, interrupted call
            result.update(curves.summary(curves.read_metrics(out_dir / "metrics.jsonl")))
        return result

    return contract.run_units(
        "pretrain", out_dir, fp, ["train"], process, force=force, progress=progress, finalize=finalize
    )
