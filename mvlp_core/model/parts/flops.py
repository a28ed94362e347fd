"""FLOP counting for MFU by the PaLM / Megatron convention, shared by the families' counts
(mvlp_core/model/<family>/flops.py):

- matrix multiplies only (embedding lookups, norms and element-wise ops excluded); a weight
  matrix of N entries costs 2·N per token it is applied to in the forward pass;
- a trained weight costs 3x that (forward, input gradient, weight gradient): 6·N; a frozen weight
  that gradients pass through 2x (forward, input gradient): 4·N; a frozen weight with nothing
  trainable upstream 1x: 2·N; a pass under no_grad 1x;
- attention: 4·d·L per token and layer in the forward pass for a row of L tokens (scores and the
  weighted sum), 3x when gradients flow through it;
- tokens as the masks count them: padding is not useful work and is not counted.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn
from transformers.pytorch_utils import Conv1D

_MATMUL = (nn.Linear, Conv1D, nn.Conv2d)


@dataclass(frozen=True)
class Weights:
    """Matrix-multiply weight entries of a module, trainable and frozen."""

    trained: int
    frozen: int

    def flops(self, tokens: float, grad_through: bool, no_grad: bool = False) -> float:
        """FLOPs of applying these weights to `tokens` tokens in one training step."""
        if no_grad:
            return 2.0 * (self.trained + self.frozen) * tokens
        frozen_factor = 4.0 if grad_through or self.trained else 2.0
        return (6.0 * self.trained + frozen_factor * self.frozen) * tokens


def weights(modules: list[nn.Module], where: Callable[[str], bool] = lambda name: True) -> Weights:
    """Weights of the matmul layers in `modules` whose qualified name `where` accepts."""
    trained = frozen = 0
    for module in modules:
        for name, layer in module.named_modules():
            if isinstance(layer, _MATMUL) and where(name):
                if layer.weight.requires_grad:
                    trained += layer.weight.numel()
                else:
                    frozen += layer.weight.numel()
    return Weights(trained, frozen)


def attention(layers: int, width: int, sum_sq_len: float, grad: bool) -> float:
    """Attention FLOPs of rows whose squared lengths sum to `sum_sq_len`."""
    return 4.0 * layers * width * sum_sq_len * (3.0 if grad else 1.0)


@dataclass(frozen=True)
class Rows:
    """Rows through one tower: their token count and the sum of their squared lengths."""

    tokens: float
    sum_sq: float

    @staticmethod
    def of(lengths: torch.Tensor) -> Rows:
        lengths = lengths.double()
        return Rows(float(lengths.sum()), float((lengths * lengths).sum()))

    def __add__(self, other: Rows) -> Rows:
        return Rows(self.tokens + other.tokens, self.sum_sq + other.sum_sq)
