"""The loader hands on uint8 pixels and the model normalises them (mvlp_core/model/parts/images.py):
the values the towers see are bit-identical to normalising float pixels on the host, every family
normalises with its own checkpoint's mean/std, and a floating tensor passes through untouched."""

from __future__ import annotations

import random

import numpy as np
import pytest
import torch
from _model_world import single_thread, tiny_spec, tokenizers, world_texts  # noqa: F401
from PIL import Image

from mvlp_core.model.parts.images import PixelNorm, resize_rgb
from mvlp_core.model.vision import IMAGE_MEAN, IMAGE_STD
from mvlp_core.synth.grammar import random_scene
from mvlp_core.synth.images import render


def host_normalised(image: Image.Image, size: int, mean, std) -> torch.Tensor:
    """What the loader computed before the split: float pixels normalised on the host."""
    image = image.convert("RGB").resize((size, size), Image.BICUBIC)
    array = torch.from_numpy(np.asarray(image, dtype=np.float32) / 255.0).permute(2, 0, 1)
    return (array - torch.tensor(mean).view(3, 1, 1)) / torch.tensor(std).view(3, 1, 1)


def test_uint8_then_pixel_norm_equals_host_normalisation_bit_for_bit() -> None:
    image = render(random_scene(random.Random(3)), random.Random(4))
    pixels = resize_rgb(24)(image)
    assert pixels.dtype == torch.uint8 and tuple(pixels.shape) == (3, 24, 24)
    out = PixelNorm(IMAGE_MEAN, IMAGE_STD)(pixels.unsqueeze(0))[0]
    assert out.dtype == torch.float32
    assert torch.equal(out, host_normalised(image, 24, IMAGE_MEAN, IMAGE_STD))


def test_non_rgb_images_are_converted_and_floats_pass_through() -> None:
    grey = Image.new("L", (10, 10), 200)
    assert resize_rgb(10)(grey).tolist() == torch.full((3, 10, 10), 200, dtype=torch.uint8).tolist()
    floats = torch.randn(2, 3, 4, 4)
    assert PixelNorm((0.5,) * 3, (0.5,) * 3)(floats) is floats
    with pytest.raises(TypeError, match="uint8"):
        PixelNorm((0.5,) * 3, (0.5,) * 3)(torch.zeros(1, 3, 4, 4, dtype=torch.int32))


def test_pixel_norm_is_not_saved_with_the_weights() -> None:
    assert PixelNorm(IMAGE_MEAN, IMAGE_STD).state_dict() == {}


def test_unigen_encoder_reads_uint8_as_its_normalised_floats() -> None:
    from mvlp_core.model.unigen import build_model

    spec = tiny_spec()
    model = build_model(spec, tokenizers()).eval()
    image = render(random_scene(random.Random(5)), random.Random(6))
    pixels = resize_rgb(spec.image_size)(image).unsqueeze(0)
    floats = host_normalised(image, spec.image_size, IMAGE_MEAN, IMAGE_STD).unsqueeze(0)
    with torch.no_grad():
        assert torch.equal(model.image_features(pixels)[1], model.image_features(floats)[1])


def test_wsmvlp_normalises_with_the_mean_and_std_in_its_config() -> None:
    from mvlp_core.model.wsmvlp.build import build
    from mvlp_core.model.wsmvlp.model import WsmvlpModel
    from mvlp_core.spec.model_wsmvlp import WsmvlpModelSpec

    spec = WsmvlpModelSpec(size="micro")
    built = build(spec, world_texts())
    mean, std = [0.4, 0.45, 0.5], [0.2, 0.25, 0.3]  # not the random sizes' 0.5/0.5
    model = WsmvlpModel({**built.config, "image_mean": mean, "image_std": std}, built.tokenizer)
    model.load_state_dict(built.state_dict())
    model.eval()
    image = render(random_scene(random.Random(7)), random.Random(8))
    pixels = model.image_transform()(image).unsqueeze(0)
    floats = host_normalised(image, spec.image_size, mean, std).unsqueeze(0)
    with torch.no_grad():
        assert torch.equal(model.image_features(pixels), model.image_features(floats))
        assert not torch.equal(built.eval().image_features(pixels), model.image_features(pixels))
