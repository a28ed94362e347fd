"""What bounds a family's training MFU on a GPU, measured beside the training figures
(bench_gpu_train): the frozen ViT's forward alone (the largest single piece of a base-shaped step,
and a plain stack of big matrix multiplies: what the device reaches on this model's shapes), and
the fraction of a training step's wall time the device is busy (torch.profiler's kernel time over
the step's wall time; the rest is the host: Python, launches, synchronisations, the loader).

Device-agnostic so that tests run it on CPU at the tiny size; on CPU "busy" is the profiler's
CPU operator time and no MFU is given."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import torch

from mvlp_core.model.parts.flops import attention, weights
from mvlp_core.train import loop


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _vision(model: Any) -> tuple[torch.nn.Module, torch.nn.Module, Callable[[torch.Tensor], Any]]:
    """The model's ViT, its pixel normalisation, and its forward alone on normalised pixels: UniGen's
    under the Q-Former, the weakly-supervised model's as its image tower runs it."""
    if hasattr(model, "image_encoder"):
        vit = model.image_encoder.vision_model
        return vit, model.image_encoder.pixel_norm, lambda x: vit(pixel_values=x)
    return model.vision, model.pixel_norm, model.encode_image


def vit_forward(
    model: Any, batch_size: int, device: torch.device, bf16: bool, steps: int = 10
) -> dict[str, float]:
    """Seconds per forward of `batch_size` images through the model's ViT, its FLOPs and MFU."""
    vit, norm, forward = _vision(model)
    model.train()  # the modes a training step runs in: a frozen ViT in eval (no dropout), as there
    size = model.spec.image_size
    pixels = norm(torch.randint(0, 256, (batch_size, 3, size, size), dtype=torch.uint8).to(device))
    patches = (size // vit.config.patch_size) ** 2 + 1
    counted = weights([vit])
    flops = 2.0 * (counted.trained + counted.frozen) * batch_size * patches
    flops += attention(
        vit.config.num_hidden_layers, vit.config.hidden_size, batch_size * patches**2, grad=False
    )
    autocast = loop.autocast_for(model, bf16, device)  # a frozen ViT cast to bf16 once, as in training
    with torch.no_grad(), autocast():
        for _ in range(2):  # warm-up: kernels chosen, memory pooled
            forward(pixels)
        _sync(device)
        t0 = time.perf_counter()
        for _ in range(steps):
            forward(pixels)
        _sync(device)
    seconds = (time.perf_counter() - t0) / steps
    peak = loop.peak_flops(device)
    return {"seconds": seconds, "flops": flops, "mfu": flops / seconds / peak if peak else float("nan")}


# where the GPU benches write their step profiles (write_report); gpu_device.sh brings them back
PROFILES = Path(__file__).resolve().parent / "profiles"
# what a step asks of the host, per step: kernel launches, and the calls where the host waits on
# the device (a copy to the host, a stream or device synchronisation, a tensor read as a number; a
# read of a CPU tensor, e.g. fused AdamW's step count on CPU, waits on nothing: the CUDA calls tell)
HOST_EVENTS = (
    "cudaLaunchKernel",
    "cudaLaunchKernelExC",
    "cuLaunchKernel",
    "cudaStreamSynchronize",
    "cudaDeviceSynchronize",
    "cudaMemcpyAsync",
    "aten::_local_scalar_dense",
    "aten::nonzero",
)


def _training_step(
    model: torch.nn.Module, batches: Iterator[dict[str, Any]], device: torch.device, bf16: bool
) -> Callable[[], None]:
    """One training step (forward, backward, AdamW) on the next batch, as the loop runs it."""
    optimizer = torch.optim.AdamW(loop.param_groups(model, 0.05), lr=1e-5, fused=True)
    feed = loop.on_device(batches, model, device)
    autocast = loop.autocast_for(model, bf16, device)

    def step() -> None:
        batch, _ = next(feed)
        with autocast():
            loss = model(batch)["loss"]
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    return step


def busy_fraction(
    model: torch.nn.Module,
    batches: Iterator[dict[str, Any]],
    device: torch.device,
    bf16: bool,
    steps: int = 5,
    report: Path | None = None,
) -> float:
    """Device time of the profiled training steps (forward, backward, optimizer) over their wall
    time. With `report`, two more steps are profiled on the host and the device together and their
    breakdown written there (`write_report`): what to fix first when the device is idle."""
    from torch.profiler import ProfilerActivity

    step = _training_step(model, batches, device, bf16)
    model.train()
    for _ in range(2):
        step()
    _sync(device)
    activity = ProfilerActivity.CUDA if device.type == "cuda" else ProfilerActivity.CPU
    events, wall = _profiled(step, device, [activity], steps)
    busy_us = (
        sum(e.self_device_time_total for e in events)
        if device.type == "cuda"
        else sum(e.self_cpu_time_total for e in events if e.key.startswith("aten::"))
    )
    if report is not None:
        write_report(step, device, report)
    return busy_us / 1e6 / wall


def _profiled(
    step: Callable[[], None], device: torch.device, activities: list, steps: int
) -> tuple[Any, float]:
    """(the profiler's events by operator, wall seconds) of `steps` steps."""
    from torch.profiler import profile

    with profile(activities=activities) as prof:
        t0 = time.perf_counter()
        for _ in range(steps):
            step()
        _sync(device)
        wall = time.perf_counter() - t0
    return prof.key_averages(), wall


def write_report(step: Callable[[], None], device: torch.device, path: Path, steps: int = 2) -> None:
    """Profile `steps` steps on host and device and write to `path`: per step, the kernel launches
    and host waits (HOST_EVENTS), then the operators by device time and by host time."""
    from torch.profiler import ProfilerActivity

    cuda = device.type == "cuda"
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if cuda else [])
    events, wall = _profiled(step, device, activities, steps)
    counts = {e.key: e.count / steps for e in events if e.key in HOST_EVENTS}
    lines = [
        f"{steps} profiled steps on {device} ({torch.cuda.get_device_name(device) if cuda else 'CPU'}),"
        f" {wall / steps * 1e3:.1f} ms a step under the profiler",
        "per step: " + ", ".join(f"{k} {v:g}" for k, v in sorted(counts.items())),
        "",
    ]
    if cuda:
        lines += ["by device time", events.table(sort_by="self_device_time_total", row_limit=30), ""]
    lines += ["by host time", events.table(sort_by="self_cpu_time_total", row_limit=30)]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n")
