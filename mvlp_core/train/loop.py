"""The pretraining loop, nanoGPT-style: one function, read top to bottom.

It knows nothing about Ray: a `Reporter` receives metrics and checkpoints and hands back the
checkpoint to resume from, so the same loop runs under Ray Train (ray_jobs/pretrain.py), plainly
in one process (the benchmark baseline, tests, the pretrain stage's local engine) and data-parallel
(the model passed in may be DDP-wrapped, `unwrap` reaches the module; or `grad_sync` averages
the gradients: mvlp_core/train/grad_sync.py).
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import re
import shutil
import tempfile
import time
from collections import defaultdict
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import torch
import torch.distributed as dist

from mvlp_core.contract import StageError
from mvlp_core.model.parts.frozen_towers import cast_frozen_towers
from mvlp_core.spec import PretrainSpec

TRAIN_STATE = "train_state.pt"
MODEL_DIR = "model"
# dense bf16 peak FLOP/s by device name (vendor datasheets, half their with-sparsity figures): the
# MFU denominator. Matched as whole words, the first that matches wins, so a variant comes before
# its family (the PCIe and NVL cards run slower clocks) and "L4" does not match an L40. A device
# not listed gets no MFU rather than one against the wrong peak.
BF16_PEAK_FLOPS = (
    (r"\bH100\b.*\bPCIe\b", 756e12),
    (r"\bH[12]00 NVL\b", 835e12),
    (r"\bH[12]00\b", 989e12),  # SXM
    (r"\bA100\b", 312e12),
    (r"\bL40S\b", 362e12),
    (r"\bL40\b", 181e12),
    (r"\bL4\b", 121e12),
)


class CheckpointError(StageError):
    """A checkpoint exists but cannot be loaded: resuming must not silently start from step 0."""


class Reporter(Protocol):
    def report(self, metrics: dict[str, Any], checkpoint_dir: Path | None) -> None:
        """Called by every rank at the same steps; only rank 0 passes a checkpoint folder."""

    def restore(self) -> AbstractContextManager[Path | None]:
        """The latest checkpoint folder to resume from, or None for a fresh start."""


class LocalReporter:
    """One process, no Ray: checkpoints are copied to `root/checkpoint_STEP`, the last K kept."""

    def __init__(self, root: Path, keep: int = 2):
        self.root, self.keep = Path(root), keep
        self.history: list[dict[str, Any]] = []

    def report(self, metrics: dict[str, Any], checkpoint_dir: Path | None) -> None:
        self.history.append(dict(metrics))
        if checkpoint_dir is None:
            return
        dest = self.root / f"checkpoint_{metrics['step']:08d}"
        shutil.copytree(checkpoint_dir, dest.with_suffix(".tmp"), dirs_exist_ok=True)
        os.replace(dest.with_suffix(".tmp"), dest)
        for old in self.checkpoints()[: -self.keep]:
            shutil.rmtree(old)

    def checkpoints(self) -> list[Path]:
        return sorted(p for p in self.root.glob("checkpoint_*") if p.is_dir() and p.suffix != ".tmp")

    @contextlib.contextmanager
    def restore(self) -> Iterator[Path | None]:
        found = self.checkpoints()
        yield found[-1] if found else None


def unwrap(model: torch.nn.Module) -> torch.nn.Module:
    return getattr(model, "module", model)


def decay_groups(params: list[torch.nn.Parameter], weight_decay: float) -> list[dict[str, Any]]:
    """Matrices decay; biases, norms and scalars (e.g. the contrastive temperature) do not."""
    return [
        {"params": [p for p in params if p.dim() >= 2], "weight_decay": weight_decay},
        {"params": [p for p in params if p.dim() < 2], "weight_decay": 0.0},
    ]


def param_groups(model: torch.nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    """The model's trainable parameters in `decay_groups`."""
    return decay_groups([p for p in model.parameters() if p.requires_grad], weight_decay)


def warmup_linear(step: int, warmup_steps: int, total_steps: int) -> float:
    """The lr factor at `step`: linear warm-up over `warmup_steps`, then linear decay to 0 at
    `total_steps`."""
    if step < warmup_steps:
        return (step + 1) / warmup_steps
    return max(0.0, 1 - (step - warmup_steps) / max(1, total_steps - warmup_steps))


def lr_at(step: int, cfg: PretrainSpec) -> float:
    """Linear warm-up from 0 to cfg.lr, then decay to cfg.min_lr at max_steps: linear (UniGen's,
    to 0 by default) or cosine (`lr_schedule`)."""
    if step < cfg.warmup_steps:
        return cfg.lr * (step + 1) / cfg.warmup_steps
    done = min(1.0, (step - cfg.warmup_steps) / max(1, cfg.max_steps - cfg.warmup_steps))
    left = 0.5 * (1 + math.cos(math.pi * done)) if cfg.lr_schedule == "cosine" else 1 - done
    return cfg.min_lr + (cfg.lr - cfg.min_lr) * left


def save_checkpoint(
    folder: Path, model: torch.nn.Module, optimizer: torch.optim.Optimizer, state: dict[str, Any]
) -> None:
    unwrap(model).save_pretrained(folder / MODEL_DIR)
    torch.save({"optimizer": optimizer.state_dict(), **state}, folder / TRAIN_STATE)


def load_checkpoint(folder: Path, model: torch.nn.Module, optimizer: torch.optim.Optimizer) -> dict[str, Any]:
    """Weights (through the model class's from_pretrained), optimizer and counters, or a clear error."""
    try:
        module = unwrap(model)
        loaded = type(module).from_pretrained(folder / MODEL_DIR)
        module.load_state_dict(loaded.state_dict())
        state = torch.load(folder / TRAIN_STATE, map_location="cpu", weights_only=False)
        optimizer.load_state_dict(state.pop("optimizer"))
    except Exception as err:  # any failure here means the run cannot continue where it stopped
        raise CheckpointError(
            f"pretrain: cannot load checkpoint {folder} ({type(err).__name__}: {str(err)[:300]}). "
            "Delete that checkpoint folder to resume from an earlier one, or re-run with --force "
            "to start training from step 0."
        ) from err
    return state


def peak_flops(device: torch.device) -> float | None:
    """The device's dense bf16 peak FLOP/s, or None off CUDA or for a device not in the table."""
    if device.type != "cuda":
        return None
    name = torch.cuda.get_device_name(device)
    return next((peak for pattern, peak in BF16_PEAK_FLOPS if re.search(pattern, name, re.I)), None)


def batch_flops(model: torch.nn.Module, batch: dict[str, Any]) -> float | None:
    """Training FLOPs of a host (CPU) batch from the family's own count (`train_flops`),
    computed before the batch goes to the device: counting needs no device sync. None for a
    family without one; the loop then counts 6 x trainable parameters per token read."""
    module = unwrap(model)
    if hasattr(module, "train_flops"):
        return float(module.train_flops(batch))
    return None


def to_device(batch: dict[str, Any], device: torch.device) -> dict[str, Any]:
    """The batch's tensors on `device`; a family whose batch holds one sub-batch per stream nests
    them. On a GPU the host tensors are pinned first, so the copies run while the device computes."""
    pin = device.type == "cuda"
    return {
        k: to_device(v, device)
        if isinstance(v, dict)
        else (v.pin_memory() if pin and not v.is_pinned() else v).to(device, non_blocking=True)
        if torch.is_tensor(v)
        else v
        for k, v in batch.items()
    }


@dataclass
class HostFigures:
    """What the loop reads from a batch while it is still on the host: samples, the skips so far
    of the loader process that made it (`worker`: each DataLoader worker counts its own) and FLOPs
    (None: counted from tokens at log time)."""

    samples: int
    skipped: int
    flops: float | None
    worker: int = 0


def on_device(
    batches: Iterator[dict[str, Any]], model: torch.nn.Module, device: torch.device
) -> Iterator[tuple[dict[str, Any], HostFigures]]:
    """(batch on `device`, its host figures), one batch ahead: the next batch is counted, pinned
    and its copy queued before the current one is handed out, so on a GPU that host work overlaps
    the device's previous step. The copy itself runs on the step's stream, ahead of the current
    step's kernels (a 224 px batch of 64: ~10 MB, well under a millisecond)."""

    def prepared() -> tuple[dict[str, Any], HostFigures]:
        batch = next(batches)
        skipped = int(batch.pop("skipped", 0))
        worker = int(batch.pop("loader_worker", 0))
        samples = int(batch.pop("n_samples")) if "n_samples" in batch else len(batch["task"])
        flops = batch_flops(model, batch) if device.type == "cuda" else None
        return to_device(batch, device), HostFigures(samples, skipped, flops, worker)

    ahead = prepared()
    while True:
        current = ahead
        try:
            ahead = prepared()
        except StopIteration:
            yield current
            return
        yield current


def loss_presence(model: torch.nn.Module, out: dict[str, Any]) -> dict[str, torch.Tensor]:
    """Each `loss_<task>` of a forward's output with a 0-d tensor on its device saying whether
    this step measured it: the model says where it returns a placeholder for an absent task
    (`loss_presence`), else every one counts. Kept on the device: logging needs no sync a step."""
    module = unwrap(model)
    if hasattr(module, "loss_presence"):
        return module.loss_presence(out)
    return {k: torch.ones((), device=v.device) for k, v in out.items() if k.startswith("loss_")}


class Window:
    """Sums over the steps since the last log. Device values (losses, tokens) stay tensors on the
    device, added without a sync; host values (micro-batches, samples, FLOPs) are plain numbers.
    `read` fetches the device sums in one transfer."""

    def __init__(self) -> None:
        self.device: dict[str, torch.Tensor] = {}
        self.host: dict[str, float] = defaultdict(float)

    def add(self, key: str, value: torch.Tensor) -> None:
        value = value.detach().float()
        self.device[key] = self.device[key] + value if key in self.device else value

    def read(self) -> dict[str, float]:
        keys = list(self.device)
        values = torch.stack([self.device[k] for k in keys]).tolist() if keys else []
        return {**dict(zip(keys, values)), **self.host}


def _all_sum(values: list[float], device: torch.device) -> list[float]:
    if not (dist.is_available() and dist.is_initialized()):
        return values
    t = torch.tensor(values, dtype=torch.float64, device=device)
    dist.all_reduce(t)
    return t.tolist()


def autocast_for(model: torch.nn.Module, bf16: bool, device: torch.device) -> Callable[[], Any]:
    """The step's precision: bf16 autocast with `bf16` (`pretrain.bf16`) on CUDA, full precision
    elsewhere. With bf16 the model's frozen towers are cast to it here, once
    (parts/frozen_towers.py): autocast would otherwise re-cast their fp32 weights every forward."""
    if not (bf16 and device.type == "cuda"):
        return contextlib.nullcontext
    cast_frozen_towers(unwrap(model), torch.bfloat16)
    return lambda: torch.autocast("cuda", dtype=torch.bfloat16)


def train(
    model: torch.nn.Module,
    batches: Iterator[dict[str, Any]] | Callable[[int], Iterator[dict[str, Any]]],
    cfg: PretrainSpec,
    reporter: Reporter,
    *,
    rank: int = 0,
    world: int = 1,
    device: torch.device | None = None,
    metrics_path: Path | None = None,
    fault_marker: Path | None = None,
    grad_sync: Callable[[], None] | None = None,
) -> dict[str, Any]:
    """Train until cfg.max_steps, resuming from the reporter's checkpoint. Returns the last metrics.
    `batches` may be a function of the step training starts at (data/streams `resumable`): a
    resumed run then continues the data where its checkpoint stood. `grad_sync` averages the
    gradients over data-parallel ranks after a step's backward passes where the model is not
    DDP-wrapped (grad_sync.AllReduceGradients)."""
    device = device or torch.device("cpu")
    optimizer = torch.optim.AdamW(
        param_groups(model, cfg.weight_decay),
        lr=cfg.lr,
        betas=tuple(cfg.betas),
        fused=True,
    )
    step, samples_seen, restored_from = 0, 0, None
    with reporter.restore() as ckpt:
        if ckpt is not None:
            state = load_checkpoint(Path(ckpt), model, optimizer)
            step, samples_seen, restored_from = state["step"], state["samples"], state["step"]
    if restored_from is not None and metrics_path is not None:
        _append(metrics_path, {"event": "resume", "step": step})
    if callable(batches):
        batches = batches(step * cfg.grad_accum)  # the data counts micro-batches

    autocast = autocast_for(model, cfg.bf16, device)
    is_ddp = hasattr(model, "no_sync")
    trainable = sum(p.numel() for p in unwrap(model).parameters() if p.requires_grad)
    peak = peak_flops(device)
    feed = on_device(batches, model, device)
    window = Window()
    skipped: dict[int, int] = {}  # each loader worker's skips so far, on this rank
    last: dict[str, Any] = {}
    model.train()
    t0 = time.perf_counter()
    while step < cfg.max_steps:
        if fault_marker is not None and cfg.fail_at_step == step and rank == min(1, world - 1):
            if not fault_marker.exists():
                fault_marker.write_text(str(step))
                os._exit(1)  # a real worker death, not an exception Ray could catch
        lr = lr_at(step, cfg)
        for group in optimizer.param_groups:
            group["lr"] = lr
        for micro in range(cfg.grad_accum):
            batch, host = next(feed)
            sync = not is_ddp or micro == cfg.grad_accum - 1
            with contextlib.nullcontext() if sync else model.no_sync(), autocast():
                out = model(batch)
                loss = out["loss"] / cfg.grad_accum
            loss.backward()
            window.add("loss", out["loss"])
            window.add("tokens", out["tokens"] if "tokens" in out else torch.zeros((), device=device))
            for key, present in loss_presence(model, out).items():
                window.add(key, torch.where(present.bool(), out[key].detach().float(), 0.0))
                window.add(f"n_{key}", present)
            window.host["micro"] += 1
            window.host["samples"] += host.samples
            window.host["flops"] += host.flops or 0.0
            window.host["micro_without_flops"] += host.flops is None
            skipped[host.worker] = host.skipped
        if grad_sync is not None:
            grad_sync()
        if cfg.grad_clip:
            torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        step += 1

        checkpoint_now = step % cfg.checkpoint_every == 0 or step == cfg.max_steps
        if step % cfg.log_every == 0 or checkpoint_now:
            read = window.read()  # waits for the device: the window's last step is then counted
            elapsed = time.perf_counter() - t0
            if read["micro_without_flops"]:  # a family without its own count: 6·N per token read
                share = read["micro_without_flops"] / read["micro"]
                read["flops"] += 6.0 * trainable * read["tokens"] * share
            loss_sum, micro, samples, tokens, flops, skips = _all_sum(
                [
                    read["loss"],
                    read["micro"],
                    read["samples"],
                    read["tokens"],
                    read["flops"],
                    sum(skipped.values()),
                ],
                device,
            )
            samples_seen += int(samples)
            metrics = {
                "step": step,
                "lr": lr,
                "loss": loss_sum / max(micro, 1),
                "samples": samples_seen,
                "samples_per_second": samples / elapsed,
                "tokens_per_second": tokens / elapsed,
                "skipped": int(skips),  # every rank's loader workers
                "restored_from": restored_from,
                "world": world,
            }
            for key in [k for k in read if k.startswith("loss_")]:
                if read[f"n_{key}"]:  # a task no step of the window measured is not logged
                    metrics[key] = read[key] / read[f"n_{key}"]
            if peak is not None:
                metrics["mfu"] = flops / elapsed / (peak * world)
            if metrics_path is not None:
                _append(metrics_path, metrics)
            with tempfile.TemporaryDirectory(prefix="mvlp-ckpt-") as tmp:
                folder = None
                if checkpoint_now and rank == 0:
                    folder = Path(tmp)
                    save_checkpoint(folder, model, optimizer, {"step": step, "samples": samples_seen})
                reporter.report(metrics, folder if checkpoint_now and rank == 0 else None)
            last = metrics
            window = Window()
            t0 = time.perf_counter()
    return last


def _append(path: Path, row: dict[str, Any]) -> None:
    with open(path, "a", encoding="utf-8") as f:
        f.write(
            json.dumps(row, default=lambda v: None if isinstance(v, float) and math.isnan(v) else v) + "\n"
        )
