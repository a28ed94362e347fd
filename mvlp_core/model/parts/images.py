"""The image preprocessing every family shares, split where the work belongs: the loader only
decodes and resizes (RGB, bicubic, to a square) and hands on uint8 pixels, 4x smaller to collate,
pin and copy than floats; the model scales them to [0, 1] and normalises them with its image
encoder's mean and std (`PixelNorm`) on the device it runs on."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import nn


def resize_rgb(size: int) -> Callable:
    """PIL image -> uint8 tensor [3, size, size]: RGB, bicubic resize when the size differs."""

    def transform(image) -> torch.Tensor:
        from PIL import Image

        if image.mode != "RGB":
            image = image.convert("RGB")
        if image.size != (size, size):
            image = image.resize((size, size), Image.BICUBIC)
        pixels = torch.frombuffer(bytearray(image.tobytes()), dtype=torch.uint8)
        return pixels.view(size, size, 3).permute(2, 0, 1)

    return transform


class PixelNorm(nn.Module):
    """uint8 pixels [..., 3, H, W] -> (x / 255 - mean) / std in float32; a floating tensor is taken
    as already normalised (a caller with its own preprocessing, e.g. a Hugging Face image processor)
    and passed through. mean/std are buffers kept out of the state dict: they are the checkpoint's
    preprocessing, not weights."""

    def __init__(self, mean: Sequence[float], std: Sequence[float]) -> None:
        super().__init__()
        self.register_buffer(
            "mean", torch.tensor(tuple(mean), dtype=torch.float32).view(3, 1, 1), persistent=False
        )
        self.register_buffer(
            "std", torch.tensor(tuple(std), dtype=torch.float32).view(3, 1, 1), persistent=False
        )

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        if pixels.is_floating_point():
            return pixels
        if pixels.dtype != torch.uint8:
            raise TypeError(f"pixels of dtype {pixels.dtype}; expected uint8 (0-255) or normalised floats")
        return (pixels.float() / 255.0 - self.mean) / self.std


def stack_images(images: list[torch.Tensor]) -> torch.Tensor:
    """[3,H,W] images -> [B,3,H,W]. `resize_rgb`'s images are views of PIL's interleaved (H,W,3)
    pixels: stacking them in that layout is one contiguous copy each (stacking the [3,H,W] views
    gathers strided bytes, several times slower), and the batch is a channels-last view."""
    return torch.stack([image.permute(1, 2, 0) for image in images]).permute(0, 3, 1, 2)
