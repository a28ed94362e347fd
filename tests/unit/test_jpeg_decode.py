"""The loader's image decode (mvlp_core/model/parts/images.py: `decoded`, `RGBSquare.from_jpeg`): a JPEG already at
the model's size goes through libjpeg-turbo into the tensor's own memory and gives PIL's pixels bit
for bit; every other image, and every bad one, goes through PIL, which keeps deciding what is
decoded and what is rejected."""

from __future__ import annotations

import io
import random

import pytest
import simplejpeg
import torch
from PIL import Image

from mvlp_core.model.parts import images
from mvlp_core.model.parts.images import decoded, resize_rgb
from mvlp_core.synth.grammar import random_scene
from mvlp_core.synth.images import render

SIZE = 48


def _scene(size: int = SIZE) -> Image.Image:
    photo = Image.effect_noise((size, size), 40).convert("RGB")
    scene = render(random_scene(random.Random(5)), random.Random(6)).resize((size, size))
    return Image.blend(scene, photo, 0.4)


def _encoded(image: Image.Image, fmt: str = "JPEG", **options) -> bytes:
    buf = io.BytesIO()
    image.save(buf, format=fmt, **options)
    return buf.getvalue()


def _through_pil(data: bytes, size: int = SIZE) -> torch.Tensor:
    with Image.open(io.BytesIO(data)) as img:
        return resize_rgb(size)(img)


@pytest.fixture
def fast_calls(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """How many images took the libjpeg-turbo path."""
    calls: list[int] = []
    decode = simplejpeg.decode_jpeg

    def counted(*args, **kwargs):
        calls.append(1)
        return decode(*args, **kwargs)

    monkeypatch.setattr(images.simplejpeg, "decode_jpeg", counted)
    return calls


@pytest.mark.parametrize(
    "options",
    [
        {"quality": 90},  # 4:2:0, what the download stage writes
        {"quality": 95, "subsampling": 0},  # 4:4:4
        {"quality": 85, "progressive": True},
        {"quality": 90, "grey": True},
    ],
    ids=["420", "444", "progressive", "grey"],
)
def test_a_jpeg_at_the_model_size_decodes_to_pils_pixels_without_pil(
    options: dict, fast_calls: list[int]
) -> None:
    image = _scene()
    if options.pop("grey", False):
        image = image.convert("L")
    data = _encoded(image, **options)
    pixels = decoded(data, resize_rgb(SIZE))
    assert fast_calls == [1]
    assert pixels.dtype == torch.uint8 and tuple(pixels.shape) == (3, SIZE, SIZE)
    assert torch.equal(pixels, _through_pil(data))
    pixels[0, 0, 0] = 7  # its own writable memory, as the PIL path's
    assert pixels[0, 0, 0] == 7


@pytest.mark.parametrize(
    "data",
    [
        _encoded(_scene(SIZE + 8)),  # another size: PIL resizes it
        _encoded(_scene().convert("CMYK")),  # libjpeg cannot give RGB from CMYK; PIL converts it
        _encoded(_scene(), "PNG"),
    ],
    ids=["resized", "cmyk", "png"],
)
def test_other_images_go_through_pil(data: bytes, fast_calls: list[int]) -> None:
    assert torch.equal(decoded(data, resize_rgb(SIZE)), _through_pil(data))
    assert fast_calls == []


@pytest.mark.parametrize(
    "data",
    [_encoded(_scene())[:700], b"", b"\xff\xd8 not a jpeg"],
    ids=["truncated", "empty", "garbage"],
)
def test_bad_bytes_raise_pils_error(data: bytes) -> None:
    with pytest.raises(OSError):
        _through_pil(data)
    with pytest.raises(OSError):
        decoded(data, resize_rgb(SIZE))


def test_transforms_without_decode_get_the_pil_image_in_rgb() -> None:
    seen: list[str] = []

    def transform(img: Image.Image) -> torch.Tensor:
        seen.append(img.mode)
        return torch.zeros(1)

    decoded(_encoded(_scene().convert("L")), transform)
    assert seen == ["RGB"]


def test_the_training_loader_decodes_through_it(fast_calls: list[int]) -> None:
    import json

    from mvlp_core.spec import MixSpec
    from mvlp_core.train import data

    jpg = _encoded(_scene())
    record = {"key": "k0", "captions": {"en": "a red circle", "de": "ein roter Kreis"}, "qa": []}
    sample = {"__key__": "k0", "jpg": jpg, "json": json.dumps(record).encode()}
    skips = data.Skips()
    ex = data.image_example(sample, MixSpec(), ["de"], resize_rgb(SIZE), random.Random(0), skips)
    assert fast_calls == [1] and not skips.counts
    assert torch.equal(ex.image, _through_pil(jpg))
