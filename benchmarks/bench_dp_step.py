"""A training step of the demo's models on two CPU ranks, the ways of averaging gradients side by
side (mvlp_core/train/grad_sync.py): DistributedDataParallel with the options the GPU path uses
against one all-reduce after the backward pass, the CPU path. And UniGen's step with GPT-2's
`gelu_new` as transformers writes it (six ops) against the one fused op the model now uses.

Both comparisons run in the same processes, alternating in short stretches (the pairs' order
alternates too), so the VM's drifting speed falls on both alike; the ratio is the median of the
pairs'."""

from __future__ import annotations

import json
import os
import socket
import statistics
import tempfile
import time
from pathlib import Path

from benchmarks._metrics import result
from benchmarks._world import demo_data

ROOT = Path(__file__).resolve().parents[1]
STEPS = 40  # steps per stretch


def _batches(workdir: Path, name: str, rank: int, world: int):
    from mvlp_core.spec import load_spec
    from mvlp_core.train.data import resumable
    from mvlp_core.train.job import build, prepare

    spec = load_spec(ROOT / "data_specs/pipelines/demo.yaml", workdir=workdir)
    sub = dict(spec.trained_models())[name]
    inputs = {stage: workdir / stage for stage in ("shard", "text-shard")}
    job = prepare(sub, inputs, workdir / "bench" / name)
    model, data = build(job, rank, world)
    return model, resumable(data, 0)(0)


def _step(forward, model, batch, optimizer, sync=None) -> None:
    import torch

    batch = {k: v for k, v in batch.items() if k not in ("skipped", "n_samples")}
    forward(batch)["loss"].backward()
    if sync is not None:
        sync()
    torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)


def _ranks(rank: int, workdir: str, name: str, chunks: int, port: int, out: str) -> None:
    import torch
    import torch.distributed as dist

    from mvlp_core.train.grad_sync import AllReduceGradients, ddp_options

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=2)
    model, batches = _batches(Path(workdir), name, rank, 2)
    ddp = torch.nn.parallel.DistributedDataParallel(model, **ddp_options(model))
    arms = {"ddp": (ddp, None), "allreduce": (model, AllReduceGradients(model))}
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-5, fused=True)
    times: dict[str, list[float]] = {"ddp": [], "allreduce": []}
    for c in range(chunks):
        for arm in ("ddp", "allreduce") if c % 2 == 0 else ("allreduce", "ddp"):
            forward, sync = arms[arm]
            dist.barrier()
            t = time.perf_counter()
            for _ in range(STEPS):
                _step(forward, model, next(batches), optimizer, sync)
            times[arm].append((time.perf_counter() - t) / STEPS)
    if rank == 0:
        Path(out).write_text(json.dumps(times))
    dist.barrier()
    dist.destroy_process_group()
    os._exit(0)  # gloo's threads can abort the interpreter's own teardown (tests/unit/test_grad_sync.py)


def _gelu(_: int, workdir: str, chunks: int, out: str) -> None:
    import torch
    from transformers.activations import ACT2FN, NewGELUActivation

    torch.set_num_threads(1)
    torch.manual_seed(0)
    model, batches = _batches(Path(workdir), "unigen", 0, 2)
    acts = [m for m in model.decoder.modules() if hasattr(m, "act")]
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-5, fused=True)
    held = [next(batches) for _ in range(STEPS)]
    times: dict[str, list[float]] = {"fused": [], "six_ops": []}
    for c in range(chunks):
        for arm in ("fused", "six_ops") if c % 2 == 0 else ("six_ops", "fused"):
            for m in acts:
                m.act = ACT2FN["gelu_pytorch_tanh"] if arm == "fused" else NewGELUActivation()
            t = time.perf_counter()
            for batch in held:
                _step(model, model, batch, optimizer)
            times[arm].append((time.perf_counter() - t) / STEPS)
    Path(out).write_text(json.dumps(times))


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _pairs(times: dict[str, list[float]], new: str, old: str) -> tuple[float, float, float]:
    ratio = statistics.median(n / o for n, o in zip(times[new], times[old]))
    return statistics.median(times[new]) * 1000, statistics.median(times[old]) * 1000, ratio


def run(runs: int = 3) -> list[dict]:
    import torch.multiprocessing as mp

    chunks = 2 * runs + 2
    rows = []
    with tempfile.TemporaryDirectory(prefix="mvlp-bench-dp-") as tmp:
        workdir = Path(tmp) / "demo"
        demo_data(workdir)
        for name in ("unigen", "wsmvlp"):  # each model's initial weights, once, before the ranks read them
            _batches(workdir, name, 0, 1)
        per_step = {"unigen": "32 samples a step (16 a rank)", "wsmvlp": "48 samples a step (24 a rank)"}
        for name in ("unigen", "wsmvlp"):
            out = Path(tmp) / f"{name}.json"
            mp.start_processes(
                _ranks, args=(str(workdir), name, chunks, _port(), str(out)), nprocs=2, start_method="spawn"
            )
            new, old, ratio = _pairs(json.loads(out.read_text()), "allreduce", "ddp")
            note = (
                f"the demo's {name} on its data, {per_step[name]}, 2 gloo ranks of one thread;"
                f" {chunks} stretches of {STEPS} steps each way, alternating; DDP with"
                " find_unused_parameters, no buffer broadcast (grad_sync.ddp_options)"
            )
            rows.append(
                result(
                    f"dp_step_{name}_allreduce_vs_ddp", new, "ms/step", "DDP", old, runs, False, note, ratio
                )
            )
        out = Path(tmp) / "gelu.json"
        mp.start_processes(_gelu, args=(str(workdir), chunks, str(out)), nprocs=1, start_method="spawn")
        fused, six, ratio = _pairs(json.loads(out.read_text()), "fused", "six_ops")
        note = (
            f"the demo's UniGen on its data, one rank's 16 samples, one thread, the same {STEPS} batches"
            f" each way, {chunks} stretches alternating; decoder MLP activation only differs"
        )
        rows.append(
            result(
                "unigen_step_fused_gelu",
                fused,
                "ms/step",
                "gelu_new as six ops",
                six,
                runs,
                False,
                note,
                ratio,
            )
        )
    return rows


if __name__ == "__main__":
    print(run(1))
