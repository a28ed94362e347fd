"""Shared by the model tests: synthetic-world texts and examples, tokenizers trained once per
session, and a small random-init model spec."""

from __future__ import annotations

import functools
import random
import tempfile
from pathlib import Path

import pytest
import torch

from mvlp_core.model.unigen import Example, Tokenizers, build_tokenizers, image_transform
from mvlp_core.spec import ModelSpec
from mvlp_core.synth.grammar import LANGS, caption, random_scene
from mvlp_core.synth.images import render


def scenes(n: int, seed: int = 0) -> list:
    rng = random.Random(seed)
    return [random_scene(rng) for _ in range(n)]


def world_texts(n: int = 120) -> list[str]:
    texts = [caption(s, lang) for s in scenes(n) for lang in LANGS]
    return texts + ["what colour is the circle?", "red", "green", "blue", "two", "three"]


@pytest.fixture(scope="module", autouse=True)
def single_thread():
    """One torch thread: on 2 shared cores, two threads per process oversubscribe and run the tiny
    model ~20x slower. Imported by each model test module (autouse there)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@functools.cache
def tokenizers() -> Tokenizers:
    return build_tokenizers(
        ModelSpec(size="small"), world_texts(), Path(tempfile.mkdtemp(prefix="mvlp-tok-"))
    )


def tiny_spec(**kw) -> ModelSpec:
    return ModelSpec(**{"size": "small", **kw})


def examples(spec: ModelSpec, n: int, seed: int = 0, tasks=("cap", "trans", "qus", "match")) -> list[Example]:
    """n examples cycling through `tasks`; every image-bearing one has a caption (for ITC/match)."""
    transform = image_transform(spec)
    out = []
    for i, scene in enumerate(scenes(n, seed)):
        task = tasks[i % len(tasks)]
        lang = LANGS[1 + i % (len(LANGS) - 1)]
        image = None if task == "trans" else transform(render(scene, random.Random(seed * 1000 + i)))
        source = {
            "cap": "",
            "trans": caption(scene, lang),
            "qus": "what colour is the circle?",
            "match": caption(scene, lang),
        }[task]
        target = {"cap": caption(scene), "trans": caption(scene), "qus": "red", "match": "yes"}[task]
        out.append(
            Example(
                task,
                image,
                source,
                lang,
                target,
                caption(scene, LANGS[i % len(LANGS)]) if image is not None else None,
            )
        )
    return out


def tiny_blip2(opt_width: int = 16, opt_layers: int = 1, opt_vocab: int = 50):
    """A random Blip2ForConditionalGeneration: 32-wide ViT (1 layer, 32 px) and Q-Former (2
    layers, 4 queries) before an OPT of the given size."""
    from transformers import Blip2Config, Blip2ForConditionalGeneration, OPTConfig

    torch.manual_seed(0)
    layers = dict(hidden_size=32, intermediate_size=64, num_attention_heads=2)  # ViT and Q-Former alike
    vision = dict(layers, num_hidden_layers=1, image_size=32, patch_size=8)
    qformer = dict(layers, num_hidden_layers=2, encoder_hidden_size=32, vocab_size=100)
    text = OPTConfig(
        hidden_size=opt_width,
        ffn_dim=2 * opt_width,
        num_hidden_layers=opt_layers,
        num_attention_heads=2,
        vocab_size=opt_vocab,
        word_embed_proj_dim=opt_width,
    ).to_dict()
    return Blip2ForConditionalGeneration(
        Blip2Config(vision_config=vision, qformer_config=qformer, text_config=text, num_query_tokens=4)
    )
