"""Training image augmentation: RandomResizedCrop, a horizontal flip and RandAugment (Cubuk et
al., 2020), on PIL images, before the uint8 hand-off (`images.RGBSquare`); the pretraining loader
uses it (`model.augment`) and so does IGLUE fine-tuning (`iglue.finetune.augment`).

The weakly-supervised mVLP paper applies RandAugment to its pretraining images (App. B.1.3)
without its settings; its released code (ALBEF's) fills them in, and they are the defaults of
`spec.augment.AugmentSpec`: a crop of 20-100% of the area at aspect 3/4-4/3 resized
(bicubic) to the model's size, a flip with p 0.5, then RandAugment(N=2, M=7): two operations
drawn with replacement from ten, each applied with p 0.5 at magnitude M of 10. The operations and
how a magnitude becomes their argument are the released code's (its `randaugment.py`, cv2 on
arrays): enhancements take factor M/10·1.8+0.1, shears ±M/10·0.3, translations ±M/10·10 pixels,
rotations ±M/10·30 degrees, the sign a coin flip; uncovered pixels are grey (128). Its 10 pixels
are at its 256 px pretraining size; at another size the shift scales with the image, so it stays
the same share of the picture (as torchvision's RandAugment scales it).

Every draw comes from the `random.Random` the caller passes, which the loader seeds from the run's
seed, the step and the sample's key: a resumed run augments a sample as the first run did (a
fine-tune seeds each draw from `iglue.seed`, the epoch and the example's index).
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable, Sequence

import torch
from PIL import Image, ImageEnhance, ImageOps

from mvlp_core.model.parts.images import RGBSquare

MAX_LEVEL = 10
TRANSLATE_PIXELS = 10  # the released code's translate_const: pixels at the top level ...
RELEASED_SIZE = 256  # ... of an image this wide
FILL = (128, 128, 128)


def _signed(value: float, rng: random.Random) -> float:
    return -value if rng.random() < 0.5 else value


def _affine(img: Image.Image, matrix: tuple[float, ...]) -> Image.Image:
    """PIL's affine: `matrix` maps each output pixel back to the input (bilinear, grey outside)."""
    return img.transform(img.size, Image.AFFINE, matrix, resample=Image.BILINEAR, fillcolor=FILL)


def _enhance(kind: type) -> Callable[[Image.Image, int, random.Random], Image.Image]:
    return lambda img, level, rng: kind(img).enhance(level / MAX_LEVEL * 1.8 + 0.1)


def _shear_x(img: Image.Image, level: int, rng: random.Random) -> Image.Image:
    return _affine(img, (1, _signed(level / MAX_LEVEL * 0.3, rng), 0, 0, 1, 0))


def _shear_y(img: Image.Image, level: int, rng: random.Random) -> Image.Image:
    return _affine(img, (1, 0, 0, _signed(level / MAX_LEVEL * 0.3, rng), 1, 0))


def _shift(level: int, extent: int, rng: random.Random) -> float:
    return _signed(level / MAX_LEVEL * TRANSLATE_PIXELS * extent / RELEASED_SIZE, rng)


def _translate_x(img: Image.Image, level: int, rng: random.Random) -> Image.Image:
    return _affine(img, (1, 0, _shift(level, img.width, rng), 0, 1, 0))


def _translate_y(img: Image.Image, level: int, rng: random.Random) -> Image.Image:
    return _affine(img, (1, 0, 0, 0, 1, _shift(level, img.height, rng)))


def _rotate(img: Image.Image, level: int, rng: random.Random) -> Image.Image:
    return img.rotate(_signed(level / MAX_LEVEL * 30, rng), resample=Image.BILINEAR, fillcolor=FILL)


OPS: dict[str, Callable[[Image.Image, int, random.Random], Image.Image]] = {
    "Identity": lambda img, level, rng: img,
    "AutoContrast": lambda img, level, rng: ImageOps.autocontrast(img),
    "Equalize": lambda img, level, rng: ImageOps.equalize(img),
    "Brightness": _enhance(ImageEnhance.Brightness),
    "Sharpness": _enhance(ImageEnhance.Sharpness),
    "Color": _enhance(ImageEnhance.Color),
    "Contrast": _enhance(ImageEnhance.Contrast),
    "Solarize": lambda img, level, rng: ImageOps.solarize(img, int(level / MAX_LEVEL * 256)),
    "Posterize": lambda img, level, rng: ImageOps.posterize(img, max(1, int(level / MAX_LEVEL * 4))),
    "ShearX": _shear_x,
    "ShearY": _shear_y,
    "TranslateX": _translate_x,
    "TranslateY": _translate_y,
    "Rotate": _rotate,
}


def rand_augment(
    img: Image.Image, rng: random.Random, ops: Sequence[str], n: int, magnitude: int, prob: float
) -> Image.Image:
    """`n` operations drawn with replacement from `ops`, each applied with probability `prob`."""
    for name in [rng.choice(ops) for _ in range(n)]:
        if rng.random() < prob:
            img = OPS[name](img, magnitude, rng)
    return img


def crop_box(
    width: int, height: int, scale: tuple[float, float], rng: random.Random, ratio=(3 / 4, 4 / 3)
) -> tuple[int, int, int, int]:
    """RandomResizedCrop's box (left, top, right, bottom): an area share in `scale` and a
    log-uniform aspect in `ratio`, ten tries, then the whole image cut to the nearest allowed
    aspect (torchvision's rule)."""
    area = width * height
    log_ratio = (math.log(ratio[0]), math.log(ratio[1]))
    for _ in range(10):
        target = area * rng.uniform(*scale)
        aspect = math.exp(rng.uniform(*log_ratio))
        w = round(math.sqrt(target * aspect))
        h = round(math.sqrt(target / aspect))
        if 0 < w <= width and 0 < h <= height:
            left, top = rng.randint(0, width - w), rng.randint(0, height - h)
            return left, top, left + w, top + h
    in_ratio = width / height
    if in_ratio < ratio[0]:
        w, h = width, round(width / ratio[0])
    elif in_ratio > ratio[1]:
        w, h = round(height * ratio[1]), height
    else:
        w, h = width, height
    left, top = (width - w) // 2, (height - h) // 2
    return left, top, left + w, top + h


class AugmentedSquare:
    """PIL image and a seeded `random.Random` -> uint8 tensor [3, size, size]: crop, flip and
    RandAugment (module docstring), then `RGBSquare`. `needs_rng` tells the loader to pass one."""

    needs_rng = True

    def __init__(
        self,
        size: int,
        *,
        crop_scale: tuple[float, float],
        hflip: bool,
        ops: Sequence[str],
        n_ops: int,
        magnitude: int,
        prob: float,
    ) -> None:
        unknown = sorted(set(ops) - set(OPS))
        if unknown:
            raise ValueError(f"unknown RandAugment operation(s) {unknown}; known: {', '.join(OPS)}")
        self.size, self.crop_scale, self.hflip = size, crop_scale, hflip
        self.ops, self.n_ops, self.magnitude, self.prob = list(ops), n_ops, magnitude, prob
        self._square = RGBSquare(size)

    def __call__(self, image: Image.Image, rng: random.Random) -> torch.Tensor:
        if image.mode != "RGB":
            image = image.convert("RGB")
        box = crop_box(image.width, image.height, self.crop_scale, rng)
        image = image.resize((self.size, self.size), Image.BICUBIC, box=box)
        if self.hflip and rng.random() < 0.5:
            image = image.transpose(Image.FLIP_LEFT_RIGHT)
        if self.ops and self.n_ops:
            image = rand_augment(image, rng, self.ops, self.n_ops, self.magnitude, self.prob)
        return self._square(image)
