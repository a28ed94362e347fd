"""Attention implementation: every Hugging Face tower runs PyTorch's fused scaled-dot-product
attention (flash / memory-efficient kernels on GPUs). Pinned explicitly, so a tower without SDPA
support fails when built instead of silently running the eager path."""

from __future__ import annotations

from transformers import PreTrainedModel

SDPA = "sdpa"


def pin_sdpa(*towers: PreTrainedModel) -> None:
    for tower in towers:
        tower.set_attn_implementation(SDPA)
