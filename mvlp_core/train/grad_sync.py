"""How data-parallel ranks average their gradients.

Two ways, the same average:

- ``ddp``: PyTorch's DistributedDataParallel, whose bucketed all-reduces run while the backward
  pass is still computing the earlier layers' gradients: on GPUs, where communication overlaps the
  compute, the right choice. A step may leave parameters without a gradient (a text-only batch
  never runs the image tower; UniGen's multi-image heads run only in fine-tuning), so DDP finds
  them from each step's autograd graph (`find_unused_parameters`) and all-reduces which ones were
  used, rather than each model adding a zero-weighted use of every parameter.
- ``allreduce``: after the step's last micro-batch, every trainable parameter's gradient (zeros
  where the step left one without) in one flat all-reduce, divided by the ranks. On CPU workers
  nothing overlaps, and DDP's per-step extras cost time of their own: the walk of each step's
  autograd graph for unused parameters and the all-reduce of what it found, one more point
  where both ranks wait for the slower one (benchmarks/README.md: `bench_dp_step`).

`auto` (the spec's default) picks ``ddp`` on GPUs and ``allreduce`` on CPUs.
"""

from __future__ import annotations

import inspect
from typing import Any, Literal

import torch
import torch.distributed as dist

Strategy = Literal["ddp", "allreduce"]


def strategy(setting: str, device: torch.device) -> Strategy:
    """The spec's `pretrain.grad_sync` (auto, ddp, allreduce) for a worker on `device`."""
    if setting == "auto":
        return "ddp" if device.type == "cuda" else "allreduce"
    return setting  # type: ignore[return-value]


def ddp_options(model: torch.nn.Module) -> dict[str, Any]:
    """DistributedDataParallel's options for `model`. Buffers are broadcast from rank 0 before
    every forward only where training changes them (normalisation running statistics): the
    families' buffers are constants (position ids), and each broadcast is a collective."""
    running = any(getattr(m, "track_running_stats", False) for m in model.modules())
    params = inspect.signature(torch.nn.parallel.DistributedDataParallel.__init__).parameters
    # torch 2.13 renamed the forward-time broadcast; a GPU machine's own torch may be older
    sync = "forward_sync_buffers" if "forward_sync_buffers" in params else "broadcast_buffers"
    return {"find_unused_parameters": True, sync: running}


class AllReduceGradients:
    """Call after the step's backward passes, before clipping and the optimizer: each trainable
    parameter's `.grad` becomes the mean over ranks, as DDP's is. A parameter without a gradient
    on this rank counts as zeros; one no rank used keeps no gradient, so the optimizer leaves it
    alone (no weight decay, no momentum step), as after DDP. Whether each rank used each parameter
    travels in the same all-reduce as the gradients. On construction rank 0's parameters and
    buffers are sent to every rank, as DDP does, so all ranks start from the same weights."""

    def __init__(self, model: torch.nn.Module) -> None:
        self.by_dtype: dict[torch.dtype, list[torch.nn.Parameter]] = {}  # one all-reduce per dtype
        for p in model.parameters():
            if p.requires_grad:
                self.by_dtype.setdefault(p.dtype, []).append(p)
        self.world = dist.get_world_size()
        with torch.no_grad():
            for t in [*model.parameters(), *model.buffers()]:
                dist.broadcast(t.data, src=0)

    def __call__(self) -> None:
        for params in self.by_dtype.values():
            grads = [(p.grad if p.grad is not None else torch.zeros_like(p)).reshape(-1) for p in params]
            used = torch.tensor([p.grad is not None for p in params], dtype=params[0].dtype)
            flat = torch.cat([*grads, used.to(params[0].device)])
            dist.all_reduce(flat)
            flat.div_(self.world)
            anywhere = (flat[-len(params) :] > 0).tolist()
            offset = 0
            for p, any_rank in zip(params, anywhere, strict=True):
                p.grad = flat[offset : offset + p.numel()].view_as(p) if any_rank else None
                offset += p.numel()
