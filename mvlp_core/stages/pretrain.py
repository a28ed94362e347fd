"""pretrain: the shards and text shards -> a trained model in `final/`.

One unit ("train") under the contract, so fingerprints, --force, resume and the manifest work as for
every stage. Who runs the training is the engine: `local` is the plain single-process loop here
(`train_in_process`), `ray` (the default) is Ray Train (`ray_jobs.pretrain.ENGINE`: with `models`,
every model in one Ray Train run where they can share one). Either returns the folder of the last
checkpoint; the stage copies its model to `final/`, writes the loss curve and the manifest extra
`{"step", "loss_first", "loss_last", "checkpoint", "samples_per_second", ...}`. The stage is
expensive: a code change alone never retrains it silently (`Stage.run`).
"""

from __future__ import annotations

import math
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mvlp_core import contract
from mvlp_core.model.families import CONFIG_FILES
from mvlp_core.spec import PipelineSpec, fingerprint_config
from mvlp_core.stage import Context, Figure, Needs, Shows, Stage, Table, Work, local_or_ray
from mvlp_core.train import curves

if TYPE_CHECKING:
    from mvlp_core.train.job import TrainJob

FINAL_DIR = "final"
UNIT = "train"  # the one unit of a spec with one `model`; with `models`, one unit per name
CURVE = "loss_curve.png"

TrainFn = Callable[["TrainJob"], Path]


def default_engine(spec: PipelineSpec) -> str:
    return "ray"


def config(spec: PipelineSpec) -> dict[str, Any]:
    """What the trained model depends on, the data-parallel ranks (the global batch, each rank's
    data and seed) and the precision included: those settings are perf-only for every other use.
    With `models`, one such entry per model."""
    runs = spec.trained_models()
    if len(runs) == 1 and runs[0][0] is None:
        return _model_config(spec)
    return {"models": {name: _model_config(sub) for name, sub in runs}}


def _model_config(spec: PipelineSpec) -> dict[str, Any]:
    p = spec.pretrain
    on_ray = (spec.execution.engines.get("pretrain") or default_engine(spec)) == "ray"
    return {
        "pretrain": fingerprint_config(p),
        "model": fingerprint_config(spec.model),
        "languages": spec.languages,
        "ranks": ranks(spec),
        "precision": "bf16" if on_ray and p.use_gpu and p.bf16 else "fp32",
    }


def model_dir(pretrain_dir: Path, name: str | None) -> Path:
    """Where a trained model is: `final/`, or `<name>/final/` for a `models` entry."""
    return Path(pretrain_dir) / FINAL_DIR if name is None else Path(pretrain_dir) / name / FINAL_DIR


def train_in_process(job: TrainJob, device: str = "cpu") -> Path:
    """One process, no Ray, on `device`: checkpoints under `pretrain/local/`, resumed from the newest."""
    import torch

    from mvlp_core.train import loop
    from mvlp_core.train.data import resumable
    from mvlp_core.train.job import build

    reporter = loop.LocalReporter(job.out_dir / "local", keep=job.spec.pretrain.keep_checkpoints)
    model, batches = build(job, rank=0, world=1)
    loop.train(
        model.to(device),
        resumable(batches, job.spec.pretrain.loader_processes(on_gpu=device.startswith("cuda"))),
        job.spec.pretrain,
        reporter,
        device=torch.device(device),
        metrics_path=job.metrics_path,
    )
    return reporter.checkpoints()[-1]


def ranks(spec: PipelineSpec) -> int:
    """Data-parallel ranks: the Ray Train workers, or the one process of the local engine."""
    on_ray = (spec.execution.engines.get("pretrain") or default_engine(spec)) == "ray"
    return spec.pretrain.workers if on_ray else 1


def global_batch(spec: PipelineSpec) -> int:
    """Image samples per optimizer step (what epochs count): data-parallel ranks x per-rank batch x
    accumulation, or what a multi-stream family's spec says its steps read (`images_per_step`)."""
    per_step = getattr(spec.model, "images_per_step", None)
    if per_step is not None:
        return per_step(ranks(spec) * spec.pretrain.grad_accum)
    p = spec.pretrain
    return ranks(spec) * p.batch_size * p.grad_accum


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
    runs = {
        name or UNIT: with_steps_from_epochs(sub, shard_manifest.samples_out)
        for name, sub in ctx.spec.trained_models()
    }
    named = list(runs) != [UNIT]
    results: dict[str, dict[str, Any]] = {}
    trained: dict[str, Path] = {}
    jobs: dict[str, TrainJob] = {}

    def job_of(unit: str) -> TrainJob:
        if unit not in jobs:
            jobs[unit] = prepare(runs[unit], inputs, out_dir / unit if named else out_dir)
        if not jobs[unit].image_urls:
            raise contract.StageError(
                f"pretrain: no shard-*.tar in {inputs['shard']}; re-run the shard stage"
            )
        return jobs[unit]

    def before(pending: list[str]) -> None:
        """Where the engine trains several models at once (`together`), it trains them all here."""
        together = getattr(train_fn, "together", None)
        if together is not None and len(pending) > 1:
            trained.update(zip(pending, map(Path, together([job_of(u) for u in pending])), strict=True))

    def process(unit: str) -> contract.UnitResult:
        spec = runs[unit]
        folder = out_dir / unit if named else out_dir
        job = job_of(unit)
        checkpoint = trained.pop(unit, None) or Path(train_fn(job))
        final = model_dir(out_dir, unit if named else None)
        shutil.rmtree(final, ignore_errors=True)
        shutil.copytree(checkpoint / loop.MODEL_DIR, final.with_name(FINAL_DIR + ".tmp"), dirs_exist_ok=True)
        final.with_name(FINAL_DIR + ".tmp").rename(final)
        rows = curves.read_metrics(job.metrics_path)
        if not curves.history(rows):
            raise contract.StageError(
                f"pretrain: training wrote no metrics to {job.metrics_path}; see the worker logs"
            )
        title = f"{spec.name}: pretrain loss" + (f" ({unit}, {spec.model.family})" if named else "")
        curves.plot(rows, folder / CURVE, title=title)
        results[unit] = {**curves.summary(rows), "checkpoint": str(checkpoint), "final": str(final)}
        n = shard_manifest.samples_out
        written = [folder / CURVE, *sorted(f for f in final.rglob("*") if f.is_file())]
        # the model's files are the stage's content: what iglue-eval's fingerprint depends on
        return contract.UnitResult(
            files={str(f.relative_to(out_dir)): 0 for f in written}, samples_in=n, samples_out=n
        )

    def finalize(_: Path, records: list[dict[str, Any]]) -> dict[str, Any]:
        for unit in runs:  # a unit committed by an earlier, interrupted call
            if unit not in results:
                folder = out_dir / unit if named else out_dir
                final = model_dir(out_dir, unit if named else None)
                results[unit] = {
                    **curves.summary(curves.read_metrics(folder / curves.METRICS)),
                    "final": str(final),
                }
        if not named:
            return results[UNIT]
        return {"models": {unit: {**r, "family": runs[unit].model.family} for unit, r in results.items()}}

    return Work(list(runs), process, before=before, finalize=finalize)


def shows(spec: PipelineSpec, folder: Path, state: dict[str, Any]) -> Shows:
    if "models" in state:
        per = [(name, folder / name, s) for name, s in state["models"].items() if "loss_first" in s]
    else:
        per = [(None, folder, state)] if "loss_first" in state else []
    lines, tables, figures = [], [], []
    for name, where, s in per:
        rows = curves.history(curves.read_metrics(where / curves.METRICS))
        keys = ["step", "loss", *curves.task_keys(rows), "samples_per_second"]
        final = {k: v for k, v in s.items() if not isinstance(v, dict | list)}
        label, suffix = (f" {name} ({s.get('family')})", f"-{name}") if name else ("", "")
        lines.append(
            f"Pretrain{label}: {s['step']} steps, loss {s['loss_first']:.3f} -> {s['loss_last']:.3f}; "
            f"model {s.get('final')}, curve {where / CURVE}"
        )
        tables += [
            Table(
                f"pretrain-curve{suffix}",
                f"pretrain{label}: logged steps",
                [
                    {k: round(r[k], 4) if isinstance(r.get(k), float) else r.get(k) for k in keys}
                    for r in rows
                ],
            ),
            Table(
                f"pretrain-metrics{suffix}",
                f"pretrain{label}: final metrics (also in `mvlp status --json`)",
                [{"metric": k, "value": v} for k, v in sorted(final.items())],
            ),
        ]
        figures.append(
            Figure(f"pretrain-loss-curve{suffix}", f"pretrain loss ({spec.name}{label})", where / CURVE)
        )
    return Shows(lines=tuple(lines), tables=tuple(tables), figures=tuple(figures))


def needs(spec: PipelineSpec) -> Needs:
    runs = spec.trained_models()
    loads = tuple(dict.fromkeys(c for _, sub in runs for c in sub.model.checkpoints()))  # random: none
    parts = [_resources(sub) + (f" ({name}, {sub.model.family})" if name else "") for name, sub in runs]
    return Needs(loads=loads, resources="; then ".join(parts))


def _resources(spec: PipelineSpec) -> str:
    p = spec.pretrain
    on_ray = (spec.execution.engines.get("pretrain") or default_engine(spec)) == "ray"
    per_rank = f"{p.cpus_per_worker:g} CPU" + (f" + {p.gpus_per_worker:g} GPU" if p.use_gpu else "")
    ranks = f"{p.workers} Ray Train worker(s) x ({per_rank})" if on_ray else "this process, 1 rank"
    steps = f"{p.epochs:g} epochs" if p.epochs else f"{p.max_steps} steps"
    if hasattr(spec.model, "images_per_step"):  # a multi-stream family: its steps also read text
        return f"{ranks}; {global_batch(spec)} image samples a step; {steps}"
    return f"{ranks}; global batch {global_batch(spec)}; {steps}"


def checks(spec: PipelineSpec) -> list[str]:
    found = []
    for name, sub in spec.trained_models():
        field = f"models[{name}]" if name else "model"
        ckpt = sub.model.checkpoint
        if ckpt and not any((Path(ckpt) / f).is_file() for f in CONFIG_FILES):
            found.append(
                f"{field}.checkpoint {ckpt} holds no saved model ({' or '.join(CONFIG_FILES)});"
                " give a folder save_pretrained wrote"
            )
    on_ray = (spec.execution.engines.get("pretrain") or default_engine(spec)) == "ray"
    if spec.pretrain.use_gpu and not on_ray:
        found.append(
            "pretrain.use_gpu is set but the local engine trains on the CPU; use execution.engines.pretrain: ray"
        )
    return found


ENGINES = local_or_ray("ray_jobs.pretrain:ENGINE")
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
