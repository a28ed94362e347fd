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


def busy_fraction(
    model: torch.nn.Module,
    batches: Iterator[dict[str, Any]],
    device: torch.device,
    bf16: bool,
    steps: int = 5,
) -> float:
    """Device time of the profiled training steps (forward, backward, optimizer) over their wall time."""
    from torch.profiler import ProfilerActivity, profile

    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-5)
    feed = loop.on_device(batches, model, device)
    autocast = loop.autocast_for(model, bf16, device)

    def step() -> None:
        batch, _ = next(feed)
        with autocast():
            loss = model(batch)["loss"]
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    model.train()
    for _ in range(2):
        step()
    _sync(device)
    activity = ProfilerActivity.CUDA if device.type == "cuda" else ProfilerActivity.CPU
    with profile(activities=[activity]) as prof:
        t0 = time.perf_counter()
        for _ in range(steps):
            step()
        _sync(device)
        wall = time.perf_counter() - t0
    events = prof.key_averages()
    busy_us = (
        sum(e.self_device_time_total for e in events)
        if device.type == "cuda"
        else sum(e.self_cpu_time_total for e in events if e.key.startswith("aten::"))
    )
    return busy_us / 1e6 / wall
