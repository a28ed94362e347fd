"""Frozen towers with nothing trainable upstream of them (a frozen ViT), kept as BLIP-2 keeps its
image encoder: in eval mode for good (`model.train()` leaves them there, as LAVIS's `disabled_train`
does), run without an autograd graph, and cast once to the half precision the step runs in (BLIP-2
converts its frozen ViT to fp16). Cast once, autocast no longer re-casts their weights at every
forward (for ViT-g, ~2 GB of bf16 copies a step) and they take half the device memory.

A family lists them in `frozen_towers()` (which follows `requires_grad`, so a fine-tuning run that
unfreezes a tower gets it back in train mode) and mixes in `FrozenTowersStayInEval`.
"""

from __future__ import annotations

import torch
from torch import nn


def is_frozen(module: nn.Module) -> bool:
    """Whether `module` has parameters and none of them is trained."""
    flags = [p.requires_grad for p in module.parameters()]
    return bool(flags) and not any(flags)


class FrozenTowersStayInEval:
    """Mixin for an nn.Module with `frozen_towers()`: `train()` leaves those towers in eval mode."""

    def train(self, mode: bool = True):
        super().train(mode)
        for tower in self.frozen_towers():
            tower.eval()
        return self


def cast_frozen_towers(model: nn.Module, dtype: torch.dtype) -> None:
    """Cast `model`'s frozen towers (its `frozen_towers()`, none without it) to `dtype` in place.
    The towers' outputs are cast back to the rest of the model's dtype by the model (so it runs
    with or without autocast)."""
    for tower in model.frozen_towers() if hasattr(model, "frozen_towers") else []:
        tower.to(dtype)
