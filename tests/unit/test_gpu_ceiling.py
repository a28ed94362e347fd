"""The GPU bench's ceiling measurements (benchmarks/gpu_ceiling.py) run their code paths on CPU at
the tiny size: the ViT's forward FLOPs as the convention counts them, no MFU off a known GPU, and a
busy fraction of a real profiled step."""

from __future__ import annotations

import math

import torch
from _model_world import examples, single_thread, tiny_spec, tokenizers  # noqa: F401

from benchmarks import gpu_ceiling
from mvlp_core.model.unigen import build_model, collate


def test_vit_forward_alone_counts_its_flops_and_gives_no_mfu_on_cpu() -> None:
    model = build_model(tiny_spec(), tokenizers())
    vit = model.image_encoder.vision_model
    out = gpu_ceiling.vit_forward(model, batch_size=4, device=torch.device("cpu"), bf16=True, steps=2)
    patches = (model.spec.image_size // vit.config.patch_size) ** 2 + 1
    matmul = sum(m.weight.numel() for m in vit.modules() if isinstance(m, (torch.nn.Linear, torch.nn.Conv2d)))
    layers, width = vit.config.num_hidden_layers, vit.config.hidden_size
    assert out["flops"] == 2 * matmul * 4 * patches + 4 * layers * width * 4 * patches**2
    assert out["seconds"] > 0 and math.isnan(out["mfu"])


def test_busy_fraction_of_a_profiled_step() -> None:
    spec = tiny_spec()
    model = build_model(spec, tokenizers())
    batches = iter([collate(examples(spec, 8, seed=s), tokenizers(), spec) for s in range(8)])
    busy = gpu_ceiling.busy_fraction(model, batches, torch.device("cpu"), bf16=False, steps=3)
    assert 0.05 < busy <= 1.05  # one thread: operator time cannot much exceed the wall time
