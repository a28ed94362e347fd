"""pretrain: the shards and text shards -> a trained model in `final/`.

One unit ("train") under the contract, so fingerprints, --force, resume and the manifest work as for
every stage. Who runs the training is the engine: `local` is the plain single-process loop here
(`train_in_process`), `ray` (the default) is Ray Train (`ray_jobs.pretrain.train_with_ray`). Either
returns the folder of the last checkpoint; the stage copies its model to `final/`, writes the loss
curve and the manifest extra `{"step", "loss_first", "loss_last", "checkpoint", "samples_per_second",
...}`. The stage is expensive: a code change alone never retrains it silently (`Stage.run`).
"""

from __future__ import annotations

import math
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mvlp_core import contract
from mvlp_core.spec import PipelineSpec, fingerprint_config
from mvlp_core.stage import Context, Figure, Needs, Shows, Stage, Table, Work, local_or_ray
from mvlp_core.train import curves

if TYPE_CHECKING:
    from mvlp_core.train.job import TrainJob

FINAL_DIR = "final"
CURVE = "loss_curve.png"

TrainFn = Callable[["TrainJob"], Path]


def default_engine(spec: PipelineSpec) -> str:
    return "ray"


def config(spec: PipelineSpec) -> dict[str, Any]:
    """What the trained model depends on, the data-parallel ranks (the global batch, each rank's
    data and seed) and the precision included: those settings are perf-only for every other use."""
    p = spec.pretrain
    on_ray = (spec.execution.engines.get("pretrain") or default_engine(spec)) == "ray"
    return {
        "pretrain": fingerprint_config(p),
        "model": fingerprint_config(spec.model),
        "languages": spec.languages,
        "ranks": global_batch(spec) // (p.batch_size * p.grad_accum),
        "precision": "bf16" if on_ray and p.use_gpu and p.bf16 else "fp32",
    }


def train_in_process(job: TrainJob, device: str = "cpu") -> Path:
    """One process, no Ray, on `device`: checkpoints under `pretrain/local/`, resumed from the newest."""
    import torch

    from mvlp_core.train import loop
    from mvlp_core.train.job import build

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


def global_batch(spec: PipelineSpec) -> int:
    """Samples per optimizer step: data-parallel ranks x per-rank batch x accumulation."""
    p = spec.pretrain
    on_ray = (spec.execution.engines.get("pretrain") or default_engine(spec)) == "ray"
    return (p.workers if on_ray else 1) * p.batch_size * p.grad_accum


def with_steps_from_epochs(spec: PipelineSpec, images: int) -> PipelineSpec:
    """The spec with max_steps = ceil(epochs x images / global batch) when `pretrain.epochs` is set."""
    epochs = spec.pretrain.epochs
    if epochs is None:
        return spec
    steps = max(1, math.ceil(epochs * images / global_batch(spec)))
    return spec.model_copy(update={"pretrain": spec.pretrain.model_copy(update={"max_steps": steps})})


def plan(ctx: Context) -> Work:
    # torch and the model load only when training runs: listing or checking stages stays fast
    from mvlp_core.train import loop
    from mvlp_core.train.job import prepare

    inputs, out_dir = ctx.inputs, ctx.out_dir
    train_fn: TrainFn = ctx.hook or train_in_process
    shard_manifest = contract.Manifest.load(inputs["shard"])
    spec = with_steps_from_epochs(ctx.spec, shard_manifest.samples_out)
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
        model_files = {str(f.relative_to(out_dir)): 0 for f in sorted(final.rglob("*")) if f.is_file()}
        # the model's files are the stage's content: what iglue-eval's fingerprint depends on
        return contract.UnitResult(files={CURVE: 0, **model_files}, samples_in=n, samples_out=n)

    def finalize(_: Path, records: list[dict[str, Any]]) -> dict[str, Any]:
        if not result:  # the unit was committed by an earlier, interrupted call
            result.update(curves.summary(curves.read_metrics(out_dir / curves.METRICS)))
        return result

    return Work(["train"], process, finalize=finalize)


def shows(spec: PipelineSpec, folder: Path, state: dict[str, Any]) -> Shows:
    if "loss_first" not in state:
        return Shows()
    rows = curves.history(curves.read_metrics(folder / curves.METRICS))
    keys = ["step", "loss", *[k for k in curves.TASK_KEYS if any(k in r for r in rows)], "samples_per_second"]
    final = {k: v for k, v in state.items() if not isinstance(v, dict | list)}
    return Shows(
        lines=(
            f"Pretrain: {state['step']} steps, loss {state['loss_first']:.3f} -> {state['loss_last']:.3f}; "
            f"model {state.get('final')}, curve {folder / CURVE}",
        ),
        tables=(
            Table(
                "pretrain-curve",
                "pretrain: logged steps",
                [
                    {k: round(r[k], 4) if isinstance(r.get(k), float) else r.get(k) for k in keys}
                    for r in rows
                ],
            ),
            Table(
                "pretrain-metrics",
                "pretrain: final metrics (also in `mvlp status --json`)",
                [{"metric": k, "value": v} for k, v in sorted(final.items())],
            ),
        ),
        figures=(Figure("pretrain-loss-curve", f"pretrain loss ({spec.name})", folder / CURVE),),
    )


def needs(spec: PipelineSpec) -> Needs:
    m, p = spec.model, spec.pretrain
    if m.checkpoint:
        loads: tuple[str, ...] = (m.checkpoint,)
    elif m.size == "base" and m.weights == "pretrained":
        loads = (m.vision, m.text_encoder, m.decoder)
    else:
        loads = ()  # built from configs with random weights
    on_ray = (spec.execution.engines.get("pretrain") or default_engine(spec)) == "ray"
    per_rank = f"{p.cpus_per_worker:g} CPU" + (f" + {p.gpus_per_worker:g} GPU" if p.use_gpu else "")
    ranks = f"{p.workers} Ray Train worker(s) x ({per_rank})" if on_ray else "this process, 1 rank"
    steps = f"{p.epochs:g} epochs" if p.epochs else f"{p.max_steps} steps"
    return Needs(loads=loads, resources=f"{ranks}; global batch {global_batch(spec)}; {steps}")


def checks(spec: PipelineSpec) -> list[str]:
    found = []
    if spec.model.checkpoint and not (Path(spec.model.checkpoint) / "unigen.json").is_file():
        found.append(
            f"model.checkpoint {spec.model.checkpoint} holds no unigen.json; give a folder save_pretrained wrote"
        )
    on_ray = (spec.execution.engines.get("pretrain") or default_engine(spec)) == "ray"
    if spec.pretrain.use_gpu and not on_ray:
        found.append(
            "pretrain.use_gpu is set but the local engine trains on the CPU; use execution.engines.pretrain: ray"
        )
    return found


ENGINES = local_or_ray("ray_jobs.pretrain:train_with_ray")
STAGE = Stage(
    "pretrain",
    ("shard", "text-shard"),
    config,
    plan,
    ENGINES,
    default_engine,
    expensive=True,
    shows=shows,
    checks=checks,
    needs=needs,
)
