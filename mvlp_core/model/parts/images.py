"""The image preprocessing every family shares, split where the work belongs: the loader only
decodes and resizes (RGB, bicubic, to a square) and hands on uint8 pixels, 4x smaller to collate,
pin and copy than floats; the model scales them to [0, 1] and normalises them with its image
encoder's mean and std (`PixelNorm`) on the device it runs on."""

from __future__ import annotations

import io
from collections.abc import Callable, Sequence

import numpy as np
import simplejpeg
import torch
from torch import nn

# libjpeg-turbo converts these to RGB exactly as PIL does (CMYK and YCCK PIL converts itself)
JPEG_FAST_COLORSPACES = ("YCbCr", "Gray")


class RGBSquare:
    """PIL image -> uint8 tensor [3, size, size]: RGB, bicubic resize when the size differs.

    `from_jpeg` takes encoded bytes instead. A baseline or progressive JPEG already `size` x
    `size` in YCbCr or grey, what the shard stage writes for training, is decoded by libjpeg-turbo
    (simplejpeg) straight into the tensor's memory: the same library and settings as PIL's decoder
    (accurate DCT, smooth upsampling), so the same pixels, without PIL's copies out of its own
    image memory (three of the image per sample). Anything else, a corrupt or truncated JPEG
    included, is left to PIL (`decoded`), so what is decoded or rejected and why stays PIL's."""

    def __init__(self, size: int) -> None:
        self.size = size

    def __call__(self, image) -> torch.Tensor:
        from PIL import Image

        size = self.size
        if image.mode != "RGB":
            image = image.convert("RGB")
        if image.size != (size, size):
            image = image.resize((size, size), Image.BICUBIC)
        pixels = torch.frombuffer(bytearray(image.tobytes()), dtype=torch.uint8)
        return pixels.view(size, size, 3).permute(2, 0, 1)

    def from_jpeg(self, data: bytes) -> torch.Tensor | None:
        """The image in `data` when it is such a JPEG, else None (PIL's to decode)."""
        try:
            height, width, colorspace, _ = simplejpeg.decode_jpeg_header(data)
            if (height, width) != (self.size, self.size) or colorspace not in JPEG_FAST_COLORSPACES:
                return None
            pixels = np.empty((self.size, self.size, 3), dtype=np.uint8)
            # strict (simplejpeg's default): a libjpeg warning raises, and PIL then decides
            simplejpeg.decode_jpeg(data, colorspace="RGB", buffer=pixels)
        except (ValueError, TypeError):
            return None
        return torch.from_numpy(pixels).permute(2, 0, 1)


def resize_rgb(size: int) -> RGBSquare:
    """The loader's image transform: RGB at `size` x `size`, uint8 (`RGBSquare`)."""
    return RGBSquare(size)


def decoded(data: bytes, transform: Callable) -> torch.Tensor:
    """`transform` applied to the image in `data`: straight from the bytes where the transform
    can (`RGBSquare.from_jpeg`), else on the PIL image (RGB). Raises what PIL raises for
    unreadable bytes."""
    from_jpeg = getattr(transform, "from_jpeg", None)
    pixels = from_jpeg(data) if from_jpeg is not None else None
    if pixels is not None:
        return pixels
    from PIL import Image

    with Image.open(io.BytesIO(data)) as img:
        return transform(img if img.mode == "RGB" else img.convert("RGB"))


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
    """[3,H,W] images -> [B,3,H,W]. `RGBSquare`'s images are views of interleaved (H,W,3)
    pixels: stacking them in that layout is one contiguous copy each (stacking the [3,H,W] views
    gathers strided bytes, several times slower), and the batch is a channels-last view."""
    return torch.stack([image.permute(1, 2, 0) for image in images]).permute(0, 3, 1, 2)
