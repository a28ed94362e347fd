"""The image preprocessing every family shares: RGB, bicubic resize to a square, scaled to [0, 1]
and normalised with the image encoder's mean and std (each family passes its checkpoint's)."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import torch


def resize_normalise(size: int, mean: Sequence[float], std: Sequence[float]) -> Callable:
    """PIL image -> float tensor [3, size, size]."""
    mean_t = torch.tensor(tuple(mean), dtype=torch.float32).view(3, 1, 1)
    std_t = torch.tensor(tuple(std), dtype=torch.float32).view(3, 1, 1)

    def transform(image) -> torch.Tensor:
        from PIL import Image

        image = image.convert("RGB")
        if image.size != (size, size):
            image = image.resize((size, size), Image.BICUBIC)
        array = torch.from_numpy(np.asarray(image, dtype=np.float32) / 255.0).permute(2, 0, 1)
        return (array - mean_t) / std_t

    return transform
